//! The raw ICMPv6 socket on the boot interface: router solicitations in (the all-routers group
//! joined, every other ICMPv6 type filtered out by the kernel), advertisements out to all nodes.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv6Addr, SocketAddrV6},
    os::fd::AsRawFd,
    time::{Duration, Instant},
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
    mac: [u8; 6],
}

/// Opens the raw ICMPv6 socket on `interface` (needs CAP_NET_RAW): bound to the interface,
/// member of the all-routers group there, receiving only router solicitations with their hop
/// limit, sending with hop limit 255. Fails when the interface has IPv6 disabled.
pub fn bind(interface: &str) -> io::Result<RaSocket> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
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
    set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
    // Block every ICMPv6 type but router solicitations (a set bit blocks its type).
    let mut filter = [u32::MAX; 8];
    filter[usize::from(ROUTER_SOLICITATION >> 5)] &= !(1u32 << (ROUTER_SOLICITATION & 31));
    set_option(&socket, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
    Ok(RaSocket {
        socket,
        ifindex,
        mac,
    })
}

fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_option(socket, level, name, &value)
}

fn set_option<T>(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("a small option");
    // SAFETY: `value` points to `len` readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
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

/// `recvmsg` with the hop limit from its control message.
fn receive(socket: &Socket, buf: &mut [u8]) -> io::Result<Received> {
    let mut from = MaybeUninit::<libc::sockaddr_in6>::zeroed();
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = from.as_mut_ptr().cast();
    msg.msg_namelen = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in6>())
        .expect("a small address");
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points to live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut hop_limit = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IPV6 && (*cmsg).cmsg_type == libc::IPV6_HOPLIMIT
            {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                hop_limit = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // SAFETY: recvmsg wrote a sockaddr_in6 (an AF_INET6 socket) or left it zeroed.
    let from = unsafe { from.assume_init() };
    let from = (i32::from(from.sin6_family) == libc::AF_INET6)
        .then(|| Ipv6Addr::from(from.sin6_addr.s6_addr));
    Ok(Received {
        len,
        from,
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
                    match guard.try_io(|s| receive(s.get_ref(), &mut buf)) {
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
