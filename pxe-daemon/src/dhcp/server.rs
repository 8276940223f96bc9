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

/// Serves DHCP on `sockets` with `handler` until `shutdown` is cancelled.
pub async fn serve(
    mut handler: RequestHandler,
    sockets: DhcpSockets,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let dhcp = Arc::new(UdpSocket::from_std(sockets.dhcp)?);
    let pxe = Arc::new(UdpSocket::from_std(sockets.pxe)?);
    let (dhcp_port, pxe_port) = (dhcp.local_addr()?.port(), pxe.local_addr()?.port());
    // Lease changes without a reply are recorded on the runtime this loop runs on (its own
    // thread's), like the ACKs' commits.
    handler.runtime = tokio::runtime::Handle::current();
    info!(
        dhcp_port,
        pxe_port,
        full = handler.core.full().is_some(),
        datapath = "kernel",
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
                handler.refresh_gauges();
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let received = Instant::now();
        let SocketAddr::V4(src) = src else { continue };
        match handler.handle(&buf[..len], src, local_port, received) {
            Action::None => {}
            Action::Send(reply) => send(socket, &reply, received, handler.metrics()).await,
            Action::Later(later) => {
                let (socket, metrics) = (socket.clone(), handler.metrics().clone());
                tokio::spawn(async move {
                    let Some(reply) = later.commit(&metrics).await else {
                        return;
                    };
                    // The timer is only armed for a delay: with none the ACK leaves as soon
                    // as its lease is durable.
                    if later.ready_at > Instant::now() {
                        tokio::time::sleep_until(later.ready_at.into()).await;
                    }
                    send(&socket, &reply, later.ready_at, &metrics).await;
                });
            }
        }
    }
    info!("DHCP stopped");
    Ok(())
}

/// The per-datagram handling every DHCP datapath shares: the core, request metrics, the
/// timeline, dropped and ignored requests, and lease changes that need no reply. What is left
/// to the datapath is sending, now or once a lease change is durable.
pub struct RequestHandler {
    core: DhcpCore,
    metrics: DhcpMetrics,
    commit: Option<LeaseCommit>,
    options: ServeOptions,
    runtime: tokio::runtime::Handle,
}

/// What the datapath does with a request's outcome.
#[derive(Debug)]
pub enum Action {
    /// Nothing to send.
    None,
    /// Send this reply now.
    Send(Reply),
    /// Send this reply once its lease change is durable ([`Later::commit`]) and not before
    /// [`Later::ready_at`] (the reply delay).
    Later(Later),
}

/// A reply that waits for a lease commit, a reply delay, or both.
pub struct Later {
    reply: Reply,
    commit: Option<(LeaseEvent, LeaseCommit)>,
    mac: Option<crate::boot::MacAddr>,
    /// When the reply may leave: the request's arrival plus the reply delay. Reply latency is
    /// measured from here.
    pub ready_at: Instant,
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Later")
            .field("reply", &self.reply)
            .field("commit", &self.commit.as_ref().map(|(e, _)| e))
            .field("ready_at", &self.ready_at)
            .finish()
    }
}

impl Later {
    /// Makes the lease change durable, if there is one; returns the reply to send, or `None`
    /// (logged and counted) when the change could not be recorded: the ACK is withheld.
    pub async fn commit(&self, metrics: &DhcpMetrics) -> Option<Reply> {
        if let Some((event, commit)) = &self.commit {
            if let Err(e) = commit(event.clone()).await {
                warn!(mac = ?self.mac.map(|m| m.to_string()), error = %e, "lease not recorded; ACK withheld");
                metrics.commit_error();
                return None;
            }
        }
        Some(self.reply.clone())
    }

    /// Whether a lease change must be made durable before the reply leaves.
    pub fn needs_commit(&self) -> bool {
        self.commit.is_some()
    }

    /// The reply (to send once [`Later::commit`] succeeded, or at once when there is nothing
    /// to commit).
    pub fn reply(&self) -> &Reply {
        &self.reply
    }
}

impl std::fmt::Debug for RequestHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHandler")
            .field("core", &self.core)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RequestHandler {
    /// A handler over `core`. Call from within the tokio runtime: lease changes are made
    /// durable on it, also when the handler runs on a datapath thread.
    pub fn new(
        core: DhcpCore,
        metrics: DhcpMetrics,
        commit: Option<LeaseCommit>,
        options: ServeOptions,
    ) -> RequestHandler {
        RequestHandler {
            core,
            metrics,
            commit,
            options,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The DHCP metrics.
    pub fn metrics(&self) -> &DhcpMetrics {
        &self.metrics
    }

    /// The runtime lease commits run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Refreshes the pool gauges (full mode).
    pub fn refresh_gauges(&self) {
        if let Some(full) = self.core.full() {
            self.metrics.pools(full);
        }
    }

    /// Handles one datagram that arrived on `local_port` from `src` at `received`.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        src: SocketAddrV4,
        local_port: u16,
        received: Instant,
    ) -> Action {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (outcome, request) = self.core.handle(bytes, src, local_port, now_unix);
        if let Some((kind, machine)) = &request {
            self.metrics.request(*kind, machine);
            if let Some(timeline) = &self.options.timeline {
                follow(timeline, *kind, machine, &outcome, src);
            }
        }
        match outcome {
            Outcome::Dropped(reason) => {
                debug!(%src, len = bytes.len(), reason = reason.label(), "malformed DHCP datagram dropped");
                self.metrics.dropped(reason);
                Action::None
            }
            Outcome::Ignored(reason) => {
                let mac = request.as_ref().map(|(_, m)| m.mac.to_string());
                debug!(%src, mac, reason = reason.label(), "DHCP request not answered");
                self.metrics.ignored(reason);
                Action::None
            }
            Outcome::NoReply(event) => {
                if let (Some(event), Some(commit)) = (event, &self.commit) {
                    let (commit, metrics) = (commit.clone(), self.metrics.clone());
                    self.runtime.spawn(async move {
                        if let Err(e) = commit(event).await {
                            warn!(error = %e, "recording a lease change");
                            metrics.commit_error();
                        }
                    });
                }
                Action::None
            }
            Outcome::Reply(reply, event) => {
                let commit = match (event, &self.commit) {
                    (Some(event), Some(commit)) => Some((event, commit.clone())),
                    _ => None,
                };
                let delay = self.options.reply_delay;
                if commit.is_none() && delay.is_zero() {
                    // Nothing to make durable and no delay: answer at once.
                    Action::Send(reply)
                } else {
                    Action::Later(Later {
                        reply,
                        commit,
                        mac: request.map(|(_, m)| m.mac),
                        ready_at: received + delay,
                    })
                }
            }
        }
    }
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
    // yiaddr of the reply (every reply holds the whole BOOTP header), else the address a
    // local client sent from (a relayed request's source is the relay).
    let given = reply
        .map(|r| super::request::header_ip(&r.bytes, super::request::YIADDR_OFFSET))
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

/// The address and port a reply goes to.
pub fn reply_address(to: Destination) -> SocketAddrV4 {
    match to {
        Destination::Unicast(addr) => addr,
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
    }
}

/// Counts a reply that left (with its latency since `since`), or one that could not be sent.
pub fn record_send<E: std::fmt::Display>(
    metrics: &DhcpMetrics,
    reply: &Reply,
    since: Instant,
    result: Result<(), E>,
) {
    match result {
        Ok(()) => metrics.replied(
            message_type_label(reply.kind),
            since.elapsed().as_secs_f64(),
        ),
        Err(e) => {
            debug!(to = ?reply.to, error = %e, "sending DHCP reply");
            metrics.send_error();
        }
    }
}

async fn send(socket: &UdpSocket, reply: &Reply, since: Instant, metrics: &DhcpMetrics) {
    let result = socket
        .send_to(&reply.bytes, reply_address(reply.to))
        .await
        .map(drop);
    record_send(metrics, reply, since, result);
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
