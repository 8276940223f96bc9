//! The kernel-socket datapath of DHCP: UDP sockets on 67 and 4011, bound to the boot interface,
//! feeding [`DhcpCore`] and sending what it answers.

use std::{
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    metrics::DhcpMetrics, reply::DHCP_CLIENT_PORT, Destination, DhcpCore, LeaseEvent, Outcome,
    Reply,
};

/// Largest datagram read; longer ones are cut and then dropped as oversized.
const RECV_BUFFER_BYTES: usize = 2048;
/// Receive buffer of the DHCP sockets: a rack powering up sends its DISCOVERs (and then its
/// REQUESTs) within a second, and the kernel's default (208 KiB, about 300 datagrams) drops
/// most of such a burst before the loop reads it (seen with `pxe-bench rack`).
const DHCP_RCVBUF_BYTES: usize = 8 << 20;
/// How often the pool gauges are refreshed.
const POOL_GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Makes a lease change durable; resolves when it is (or fails).
pub type LeaseCommit = Arc<
    dyn Fn(LeaseEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// The two DHCP sockets, bound by the caller.
#[derive(Debug)]
pub struct DhcpSockets {
    /// Port 67: DISCOVER, REQUEST, ... from clients and relays.
    pub dhcp: std::net::UdpSocket,
    /// Port 4011: PXE boot-server discovery.
    pub pxe: std::net::UdpSocket,
}

/// Binds a UDP socket on `0.0.0.0:port` that only sees `interface` and may broadcast, as a
/// DHCP server needs (clients have no address yet; a namespace may have no default route).
pub fn bind(interface: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    set_rcvbuf(&socket, DHCP_RCVBUF_BYTES);
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(socket.into())
}

/// Sets the receive buffer to `bytes`: past `net.core.rmem_max` when allowed (root,
/// SO_RCVBUFFORCE), else as far as the limit lets. A smaller buffer is not an error.
fn set_rcvbuf(socket: &Socket, bytes: usize) {
    use std::os::fd::AsRawFd as _;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket and a c_int option value of the stated size.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    } == 0;
    if !forced {
        if let Err(e) = socket.set_recv_buffer_size(bytes) {
            debug!(error = %e, "DHCP receive buffer left at the default");
        }
    }
}

/// Settings of the datapath.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Wait before each reply (dnsmasq's dhcp-reply-delay): for firmware that fails when a proxy
    /// reply comes before the router's offer.
    pub reply_delay: Duration,
    /// Where machines' boots are followed.
    pub timeline: Option<crate::timeline::Timeline>,
}

/// Serves DHCP on `sockets` until `shutdown` is cancelled.
pub async fn serve(
    mut core: DhcpCore,
    sockets: DhcpSockets,
    metrics: DhcpMetrics,
    commit: Option<LeaseCommit>,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let dhcp = Arc::new(UdpSocket::from_std(sockets.dhcp)?);
    let pxe = Arc::new(UdpSocket::from_std(sockets.pxe)?);
    let (dhcp_port, pxe_port) = (dhcp.local_addr()?.port(), pxe.local_addr()?.port());
    info!(
        dhcp_port,
        pxe_port,
        full = core.full().is_some(),
        "DHCP serving"
    );
    let mut buf_dhcp = vec![0u8; RECV_BUFFER_BYTES];
    let mut buf_pxe = vec![0u8; RECV_BUFFER_BYTES];
    let mut gauges = tokio::time::interval(POOL_GAUGE_INTERVAL);
    loop {
        let (len, src, local_port, socket, buf) = tokio::select! {
            r = dhcp.recv_from(&mut buf_dhcp) => match r {
                Ok((len, src)) => (len, src, dhcp_port, &dhcp, &buf_dhcp),
                Err(e) => { warn!(error = %e, "DHCP receive"); continue; }
            },
            r = pxe.recv_from(&mut buf_pxe) => match r {
                Ok((len, src)) => (len, src, pxe_port, &pxe, &buf_pxe),
                Err(e) => { warn!(error = %e, "PXE 4011 receive"); continue; }
            },
            _ = gauges.tick() => {
                if let Some(full) = core.full() { metrics.pools(full); }
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let received = Instant::now();
        let SocketAddr::V4(src) = src else { continue };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (outcome, request) = core.handle(&buf[..len], src, local_port, now_unix);
        if let Some((kind, machine)) = &request {
            metrics.request(*kind, machine);
            if let Some(timeline) = &options.timeline {
                follow(timeline, *kind, machine, &outcome, src);
            }
        }
        match outcome {
            Outcome::Dropped(reason) => {
                debug!(%src, len, reason = reason.label(), "malformed DHCP datagram dropped");
                metrics.dropped(reason);
            }
            Outcome::Ignored(reason) => {
                let mac = request.as_ref().map(|(_, m)| m.mac.to_string());
                debug!(%src, mac, reason = reason.label(), "DHCP request not answered");
                metrics.ignored(reason);
            }
            Outcome::NoReply(event) => {
                if let (Some(event), Some(commit)) = (event, &commit) {
                    let (commit, metrics) = (commit.clone(), metrics.clone());
                    tokio::spawn(async move {
                        if let Err(e) = commit(event).await {
                            warn!(error = %e, "recording a lease change");
                            metrics.commit_error();
                        }
                    });
                }
            }
            Outcome::Reply(reply, event) => {
                let socket = socket.clone();
                let mac = request.map(|(_, m)| m.mac);
                let delay = options.reply_delay;
                match (event, &commit) {
                    // Nothing to make durable and no delay: answer from this loop, no task.
                    (None, _) | (Some(_), None) if delay.is_zero() => {
                        send(&socket, &reply, received, &metrics).await;
                    }
                    (event, commit) => {
                        let (commit, metrics) = (commit.clone(), metrics.clone());
                        tokio::spawn(async move {
                            if let (Some(event), Some(commit)) = (event, commit) {
                                if let Err(e) = commit(event).await {
                                    warn!(mac = ?mac.map(|m| m.to_string()), error = %e, "lease not recorded; ACK withheld");
                                    metrics.commit_error();
                                    return;
                                }
                            }
                            // The timer is only armed for a delay: with none the ACK leaves as
                            // soon as its lease is durable.
                            let latency_start = received + delay;
                            if !delay.is_zero() {
                                tokio::time::sleep_until(latency_start.into()).await;
                            }
                            send(&socket, &reply, latency_start, &metrics).await;
                        });
                    }
                }
            }
        }
    }
    info!("DHCP stopped");
    Ok(())
}

/// Tells the timeline about a request: a DISCOVER starts (or restarts) a boot, an answer moves
/// it on.
fn follow(
    timeline: &crate::timeline::Timeline,
    kind: super::RequestType,
    machine: &crate::boot::Machine,
    outcome: &Outcome,
    src: SocketAddrV4,
) {
    use crate::timeline::Event;
    let reply = match outcome {
        Outcome::Reply(r, _) => Some(r),
        _ => None,
    };
    // yiaddr of the reply (BOOTP offset 16), else the address a local client sent from (a
    // relayed request's source is the relay).
    let given = reply
        .and_then(|r| r.bytes.get(16..20))
        .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        .filter(|ip| !ip.is_unspecified());
    let from = Some(*src.ip()).filter(|ip| !ip.is_unspecified() && machine.relay.is_none());
    let ip = given.or(from);
    let answered = reply.is_some_and(|r| {
        matches!(
            r.kind,
            dhcproto::v4::MessageType::Offer | dhcproto::v4::MessageType::Ack
        )
    });
    if kind == super::RequestType::Discover {
        timeline.record(Event::Dhcp {
            machine,
            ip: None,
            answered: false,
        });
    }
    if answered
        && matches!(
            kind,
            super::RequestType::Discover | super::RequestType::Request
        )
    {
        timeline.record(Event::Dhcp {
            machine,
            ip,
            answered: true,
        });
    }
}

async fn send(socket: &UdpSocket, reply: &Reply, since: Instant, metrics: &DhcpMetrics) {
    let to = match reply.to {
        Destination::Unicast(addr) => addr,
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
    };
    match socket.send_to(&reply.bytes, to).await {
        Ok(_) => metrics.replied(
            message_type_label(reply.kind),
            since.elapsed().as_secs_f64(),
        ),
        Err(e) => {
            debug!(%to, error = %e, "sending DHCP reply");
            metrics.send_error();
        }
    }
}

fn message_type_label(kind: dhcproto::v4::MessageType) -> &'static str {
    use dhcproto::v4::MessageType as M;
    match kind {
        M::Offer => "offer",
        M::Ack => "ack",
        M::Nak => "nak",
        _ => "other",
    }
}
