//! The raw ICMPv6 socket on the boot interface: router solicitations in (the all-routers group
//! joined, every other ICMPv6 type filtered out by the kernel), advertisements out to all nodes.

use std::{
    io::{self, IoSliceMut},
    net::{Ipv6Addr, SocketAddrV6},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::Ipv6RecvHopLimit, ControlMessageOwned, MsgFlags, SockaddrIn6,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    metrics::RaMetrics,
    packet::{self, NDP_HOP_LIMIT, ROUTER_SOLICITATION},
    Pacer, MAX_RA_DELAY,
};

/// All-routers link-local multicast group: where solicitations go.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// All-nodes link-local multicast group: where advertisements go.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// `ICMP6_FILTER` (netinet/icmp6.h), which the libc crate does not name.
const ICMP6_FILTER: libc::c_int = 1;
/// Largest datagram read: a solicitation is a few dozen bytes.
const RECV_BUFFER_BYTES: usize = 1500;

/// The bound socket and what `serve` needs to know about the interface.
#[derive(Debug)]
pub struct RaSocket {
    socket: Socket,
    ifindex: u32,
    mac: pxe_common::MacAddr,
}

/// Opens the raw ICMPv6 socket on `interface` (needs CAP_NET_RAW): bound to the interface,
/// member of the all-routers group there, receiving only router solicitations with their hop
/// limit, sending with hop limit 255. Fails when the interface has IPv6 disabled.
pub fn bind(interface: &str) -> io::Result<RaSocket> {
    let ifindex = crate::netif::index_of(interface)?;
    let mac = crate::netif::mac_of(interface).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("interface {interface} has no Ethernet address"),
        )
    })?;
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
    socket.set_multicast_if_v6(ifindex)?;
    socket.set_multicast_hops_v6(u32::from(NDP_HOP_LIMIT))?;
    socket.set_unicast_hops_v6(u32::from(NDP_HOP_LIMIT))?;
    socket.set_multicast_loop_v6(false)?;
    setsockopt(&socket, Ipv6RecvHopLimit, &true)?;
    // Block every ICMPv6 type but router solicitations (a set bit blocks its type).
    let mut filter = [u32::MAX; 8];
    filter[usize::from(ROUTER_SOLICITATION >> 5)] &= !(1u32 << (ROUTER_SOLICITATION & 31));
    set_icmp6_filter(&socket, &filter)?;
    Ok(RaSocket {
        socket,
        ifindex,
        mac,
    })
}

/// Sets `ICMP6_FILTER`, which nix does not name (nor socket2).
fn set_icmp6_filter(socket: &Socket, filter: &[u32; 8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of_val(filter)).expect("32 bytes");
    // SAFETY: `filter` points to `len` readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            std::ptr::from_ref(filter).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram: its ICMPv6 bytes, source address and IPv6 hop limit.
struct Received {
    len: usize,
    from: Option<Ipv6Addr>,
    hop_limit: Option<u8>,
}

/// `recvmsg` with the hop limit from its control message; `control` is the room for it
/// (`cmsg_space!(libc::c_int)`).
fn receive(socket: &Socket, buf: &mut [u8], control: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let hop_limit = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv6HopLimit(value) => u8::try_from(value).ok(),
        _ => None,
    });
    Ok(Received {
        len: msg.bytes,
        from: msg.address.map(|a| a.ip()),
        hop_limit,
    })
}

/// Answers router solicitations on `socket` until `shutdown` is cancelled.
pub async fn serve(
    socket: RaSocket,
    metrics: RaMetrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let RaSocket {
        socket,
        ifindex,
        mac,
    } = socket;
    let advertisement = packet::no_router_advertisement(mac);
    let all_nodes = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    // SAFETY: the socket owns its fd, which stays open and the same for as long as the socket
    // lives, and the AsyncFd owns the socket.
    let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
    let mut pacer = Pacer::default();
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut control = nix::cmsg_space!(libc::c_int);
    info!(
        ifindex,
        "IPv6 router advertisements: answering solicitations with 'no router'"
    );
    loop {
        let due = pacer.due();
        let wait_due = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = fd.readable() => {
                let mut guard = guard?;
                loop {
                    match guard.try_io(|s| receive(s.get_ref(), &mut buf, &mut control)) {
                        Ok(Ok(got)) => handle(&got, &buf, &mut pacer, &metrics),
                        Ok(Err(e)) => {
                            warn!(error = %e, "receiving ICMPv6");
                            break;
                        }
                        Err(_would_block) => break,
                    }
                }
            }
            () = wait_due => {
                match fd.get_ref().send_to(&advertisement, &all_nodes) {
                    Ok(_) => {
                        metrics.advertised();
                        debug!("router advertisement sent (no router)");
                    }
                    Err(e) => {
                        metrics.send_error();
                        warn!(error = %e, "sending a router advertisement (has the interface an IPv6 link-local address?)");
                    }
                }
                pacer.sent(Instant::now());
            }
            () = shutdown.cancelled() => break,
        }
    }
    info!("IPv6 router advertisements stopped");
    Ok(())
}

fn handle(got: &Received, buf: &[u8], pacer: &mut Pacer, metrics: &RaMetrics) {
    let from_unspecified = got.from.is_none_or(|a| a.is_unspecified());
    match packet::parse_solicitation(&buf[..got.len], got.hop_limit, from_unspecified) {
        Ok(rs) => {
            metrics.solicited();
            let delay_ms = rand::random_range(0..=MAX_RA_DELAY.as_millis());
            let delay = Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
            let at = pacer.solicited(Instant::now(), delay);
            debug!(
                from = ?got.from,
                mac = ?rs.source_link_layer,
                in_ms = at.saturating_duration_since(Instant::now()).as_millis(),
                "router solicitation"
            );
        }
        Err(reason) => {
            metrics.invalid(reason);
            debug!(from = ?got.from, reason = reason.label(), "invalid router solicitation dropped");
        }
    }
}
