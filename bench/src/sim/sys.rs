//! The kernel interfaces of the simulator: the AF_PACKET socket that carries every machine's
//! DHCP, the port-68 sink, the netlink socket that puts each machine's address on the
//! interface, and the process's limits and CPU time.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    time::Duration,
};

use nix::{
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{
        self, recvmmsg, sendmmsg, setsockopt, sockopt, AddressFamily, ControlMessage, MsgFlags,
        MultiHeaders, SockFlag, SockProtocol, SockType, SockaddrIn,
    },
};

use super::frame;

/// Receive buffer asked for the AF_PACKET socket: a rack's offers arrive in one burst.
const PACKET_RCVBUF_BYTES: usize = 32 << 20;
/// Send buffer of the AF_PACKET socket.
const PACKET_SNDBUF_BYTES: usize = 8 << 20;
/// Most frames one [`PacketSocket::send_batch`] or [`PacketSocket::recv_batch`] moves.
pub(crate) const MAX_BATCH: usize = 64;

/// Sets a socket option no crate has a typed setter for (classic BPF filters and the
/// AF_PACKET options).
fn setsockopt_raw<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points to a live T of `len` bytes for the duration of the call, and
    // `fd` is an open socket.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The interface the machines boot on.
#[derive(Clone, Debug)]
pub(crate) struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
}

impl Interface {
    /// Looks `name` up.
    pub(crate) fn find(name: &str) -> io::Result<Interface> {
        let index = nix::net::if_::if_nametoindex(name)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))?;
        // AF_PACKET with Ethernet headers needs an Ethernet interface.
        let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
        if parse_mac(text.trim()).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{name} is not an Ethernet interface (address {:?})",
                    text.trim()
                ),
            ));
        }
        Ok(Interface {
            name: name.to_owned(),
            index,
        })
    }
}

/// `aa:bb:cc:dd:ee:ff` into bytes.
pub(crate) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An AF_PACKET socket on one interface that sends Ethernet frames as given (any source MAC)
/// and receives only IPv4/UDP frames to port 68, non-blocking.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens it on `iface`. Needs CAP_NET_RAW.
    pub(crate) fn open(iface: &Interface) -> io::Result<PacketSocket> {
        // Protocol 0 until the filter is attached, so nothing unfiltered is queued.
        let fd = socket::socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let filter = frame::udp_port_filter(pxe_common::DHCP_CLIENT_PORT);
        let prog = libc::sock_fprog {
            len: u16::try_from(filter.len()).unwrap_or(0),
            filter: filter.as_ptr().cast_mut(),
        };
        setsockopt_raw(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        // FORCE as root past rmem_max; the plain option otherwise.
        if setsockopt(&fd, sockopt::RcvBufForce, &PACKET_RCVBUF_BYTES).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &PACKET_RCVBUF_BYTES);
        }
        let _ = setsockopt(&fd, sockopt::SndBufForce, &PACKET_SNDBUF_BYTES);
        // Our own frames (and the host's) are never replies to us.
        let _ = setsockopt_raw(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        );
        let ifindex = libc::c_int::try_from(iface.index).unwrap_or(0);
        // Frames to the machines' MACs, on a NIC that filters by MAC.
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: u16::try_from(libc::PACKET_MR_PROMISC).unwrap_or(1),
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt_raw(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )?;
        let addr = libc::sockaddr_ll {
            sll_family: u16::try_from(libc::AF_PACKET).unwrap_or(17),
            sll_protocol: frame::ETHERTYPE_IPV4.to_be(),
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0);
        // SAFETY: addr is a valid sockaddr_ll of `len` bytes (nix and rustix build no link-layer
        // address), `fd` an open AF_PACKET socket.
        let ret = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one frame; `WouldBlock` when the socket's buffer is full.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        socket::send(self.fd.as_raw_fd(), frame, MsgFlags::MSG_DONTWAIT)?;
        Ok(())
    }

    /// Receives one frame into `buf`; `WouldBlock` when none is queued.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(socket::recv(
            self.fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT,
        )?)
    }
}

/// The message headers of one thread's batches on a [`PacketSocket`], allocated once: a batch
/// allocates nothing.
#[derive(Debug)]
pub(crate) struct Batch {
    headers: MultiHeaders<()>,
}

impl Batch {
    /// Headers for batches of up to [`MAX_BATCH`] frames.
    pub(crate) fn new() -> Batch {
        Batch {
            headers: MultiHeaders::preallocate(MAX_BATCH, None),
        }
    }
}

impl PacketSocket {
    /// Hands frames straight to the driver, past the interface's queueing discipline
    /// (PACKET_QDISC_BYPASS): a load generator's frames need no traffic control. Best effort.
    pub(crate) fn bypass_qdisc(&self) {
        let _ = setsockopt_raw(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        );
    }

    /// Sends up to [`MAX_BATCH`] of `frames` with one sendmmsg(2); returns how many the kernel
    /// took (`WouldBlock` when none: the socket's send buffer is full).
    pub(crate) fn send_batch(&self, batch: &mut Batch, frames: &[&[u8]]) -> io::Result<usize> {
        const NO_ADDRESS: [Option<()>; MAX_BATCH] = [None; MAX_BATCH];
        let n = frames.len().min(MAX_BATCH);
        let mut iovs = [[IoSlice::new(&[])]; MAX_BATCH];
        for (iov, frame) in iovs.iter_mut().zip(frames) {
            *iov = [IoSlice::new(frame)];
        }
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            self.fd.as_raw_fd(),
            &mut batch.headers,
            &iovs[..n],
            &NO_ADDRESS[..n],
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(sent.count())
    }

    /// Receives up to `bufs.len()` frames (at most [`MAX_BATCH`]) with one recvmmsg(2), each
    /// into its buffer, and writes their lengths into `lens`; `WouldBlock` when none is queued.
    pub(crate) fn recv_batch(
        &self,
        batch: &mut Batch,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let n = bufs.len().min(lens.len()).min(MAX_BATCH);
        let mut bufs = bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; MAX_BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                bufs.next().map_or(&mut [][..], Vec::as_mut_slice),
            )]
        });
        let received = recvmmsg(
            self.fd.as_raw_fd(),
            &mut batch.headers,
            iovs[..n].iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut count = 0;
        for (len, msg) in lens.iter_mut().zip(received) {
            *len = msg.bytes;
            count += 1;
        }
        Ok(count)
    }

    /// Waits until a frame is queued or `timeout` passes; whether one is.
    pub(crate) fn wait_readable(&self, timeout: Duration) -> bool {
        self.wait(PollFlags::POLLIN, timeout)
    }

    /// Waits until the socket takes frames again or `timeout` passes.
    pub(crate) fn wait_writable(&self, timeout: Duration) -> bool {
        self.wait(PollFlags::POLLOUT, timeout)
    }

    fn wait(&self, events: PollFlags, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), events)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        poll(&mut fds, timeout).is_ok_and(|n| n > 0)
    }

    /// Frames the kernel dropped because this socket's buffer was full, since the last call
    /// (PACKET_STATISTICS resets on read).
    pub(crate) fn drops(&self) -> u64 {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len =
            libc::socklen_t::try_from(std::mem::size_of::<libc::tpacket_stats>()).unwrap_or(0);
        // SAFETY: stats is a valid tpacket_stats of `len` bytes (no crate reads
        // PACKET_STATISTICS), `fd` an open AF_PACKET socket.
        let ret = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut stats).cast(),
                &mut len,
            )
        };
        if ret == 0 {
            u64::from(stats.tp_drops)
        } else {
            0
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A UDP socket on port 68 of the interface that drops every datagram (a filter that accepts
/// nothing): DHCP answers unicast to a machine's address then find a socket, and the kernel
/// sends no ICMP port-unreachable back to the server. `None` when port 68 is taken by a
/// program that does not share it.
pub(crate) fn port68_sink(iface: &Interface) -> Option<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let drop_all = [libc::sock_filter {
        code: u16::try_from(libc::BPF_RET | libc::BPF_K).unwrap_or(6),
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_ptr().cast_mut(),
    };
    setsockopt_raw(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).ok()?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).ok()?;
    setsockopt(&fd, sockopt::BindToDevice, &iface.name.clone().into()).ok()?;
    let addr = SockaddrIn::new(0, 0, 0, 0, pxe_common::DHCP_CLIENT_PORT);
    socket::bind(fd.as_raw_fd(), &addr).ok()?;
    Some(fd)
}

/// A NETLINK_ROUTE socket that adds and removes IPv4 addresses on one interface.
#[derive(Debug)]
pub(crate) struct Netlink {
    fd: OwnedFd,
    ifindex: u32,
    seq: u32,
}

/// Netlink attribute types of `ifaddrmsg`.
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

impl Netlink {
    /// Opens it for the interface `ifindex`.
    pub(crate) fn open(ifindex: u32) -> io::Result<Netlink> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )?;
        Ok(Netlink {
            fd,
            ifindex,
            seq: 0,
        })
    }

    /// Adds `ip/prefix_len` to the interface (replacing it if present).
    pub(crate) fn add(&mut self, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let flags =
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        self.request(libc::RTM_NEWADDR, flags, ip, prefix_len)
    }

    /// Removes `ip/prefix_len` from the interface; an address already gone is fine.
    pub(crate) fn remove(&mut self, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        match self.request(
            libc::RTM_DELADDR,
            libc::NLM_F_REQUEST | libc::NLM_F_ACK,
            ip,
            prefix_len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other,
        }
    }

    fn request(
        &mut self,
        kind: u16,
        flags: libc::c_int,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(48);
        // nlmsghdr: len (filled below), type, flags, seq, pid.
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&u16::try_from(flags).unwrap_or(0).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        // ifaddrmsg: family, prefixlen, flags, scope, index.
        msg.push(u8::try_from(libc::AF_INET).unwrap_or(2));
        msg.push(prefix_len);
        msg.push(0);
        msg.push(0); // RT_SCOPE_UNIVERSE
        msg.extend_from_slice(&self.ifindex.to_ne_bytes());
        for attr in [IFA_LOCAL, IFA_ADDRESS] {
            msg.extend_from_slice(&8u16.to_ne_bytes());
            msg.extend_from_slice(&attr.to_ne_bytes());
            msg.extend_from_slice(&ip.octets());
        }
        let len = u32::try_from(msg.len()).unwrap_or(0);
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        // An unconnected netlink socket sends to the kernel.
        socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut buf = [0u8; 1024];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            if n < 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short netlink answer",
                ));
            }
            let mtype = u16::from_ne_bytes([buf[4], buf[5]]);
            let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
            if seq != self.seq {
                continue;
            }
            if mtype == u16::try_from(libc::NLMSG_ERROR).unwrap_or(2) {
                let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
                return if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-errno))
                };
            }
        }
    }
}

/// Raises the open-file limit to its hard limit (each machine holds a socket or two);
/// returns the limit in effect.
pub(crate) fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

/// CPU time of this process so far (user, system), all threads, and its peak RSS in KiB.
pub(crate) fn cpu_usage() -> (Duration, Duration, u64) {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return (Duration::ZERO, Duration::ZERO, 0);
    };
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    (
        time(usage.user_time()),
        time(usage.system_time()),
        u64::try_from(usage.max_rss()).unwrap_or(0),
    )
}

/// The prefix length of a subnet mask (contiguous ones), if it is one.
pub(crate) fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap_or(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_masks() {
        assert_eq!(
            parse_mac("02:50:0a:00:00:ff"),
            Some([2, 0x50, 10, 0, 0, 255])
        );
        assert_eq!(parse_mac("02:50:0a:00:00"), None);
        assert_eq!(parse_mac("02:50:0a:00:00:ff:01"), None);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 0, 0)), Some(16));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
