//! The kernel interfaces of the simulator: the AF_PACKET socket that carries every machine's
//! DHCP, the port-68 sink, the netlink socket that puts each machine's address on the
//! interface, and the process's limits and CPU time.

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::frame;

/// Receive buffer asked for the AF_PACKET socket: a rack's offers arrive in one burst.
const PACKET_RCVBUF_BYTES: libc::c_int = 32 << 20;
/// Send buffer of the AF_PACKET socket.
const PACKET_SNDBUF_BYTES: libc::c_int = 8 << 20;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points to a live T of `len` bytes for the duration of the call.
    cvt(unsafe { libc::setsockopt(fd, level, name, std::ptr::from_ref(value).cast(), len) })
        .map(drop)
}

/// The interface the machines boot on.
#[derive(Clone, Debug)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
}

impl Interface {
    /// Looks `name` up.
    pub fn find(name: &str) -> io::Result<Interface> {
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {name}"),
            ));
        }
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
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
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
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens it on `iface`. Needs CAP_NET_RAW.
    pub fn open(iface: &Interface) -> io::Result<PacketSocket> {
        // Protocol 0 until the filter is attached, so nothing unfiltered is queued.
        // SAFETY: plain socket(2).
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let filter = frame::udp_port_filter(pxe_common::DHCP_CLIENT_PORT);
        let prog = libc::sock_fprog {
            len: u16::try_from(filter.len()).unwrap_or(0),
            filter: filter.as_ptr().cast_mut(),
        };
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog,
        )?;
        // FORCE as root past rmem_max; the plain option otherwise.
        if setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &PACKET_RCVBUF_BYTES,
        )
        .is_err()
        {
            let _ = setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &PACKET_RCVBUF_BYTES,
            );
        }
        let _ = setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &PACKET_SNDBUF_BYTES,
        );
        // Our own frames (and the host's) are never replies to us.
        let _ = setsockopt(
            fd.as_raw_fd(),
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
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )?;
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
        addr.sll_protocol = frame::ETHERTYPE_IPV4.to_be();
        addr.sll_ifindex = ifindex;
        let len = libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0);
        // SAFETY: addr is a valid sockaddr_ll of `len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) })?;
        Ok(PacketSocket { fd })
    }

    /// Sends one frame; `WouldBlock` when the socket's buffer is full.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is a valid buffer; the socket is bound to the interface.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame into `buf`; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

/// One `mmsghdr` per iovec, each pointing to its iovec (valid while `iovs` lives unmoved).
fn mmsghdrs(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: msghdr is plain data; zeroed is a valid start.
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_iov = std::ptr::from_mut(iov);
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect()
}

impl PacketSocket {
    /// Hands frames straight to the driver, past the interface's queueing discipline
    /// (PACKET_QDISC_BYPASS): a load generator's frames need no traffic control. Best effort.
    pub fn bypass_qdisc(&self) {
        let _ = setsockopt(
            self.fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        );
    }

    /// Sends `frames` with one sendmmsg(2); returns how many the kernel took (`WouldBlock` when
    /// none: the socket's send buffer is full).
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs = mmsghdrs(&mut iovs);
        let count = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every mmsghdr points to one live iovec over a live frame; the socket is bound.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                count,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Receives up to `bufs.len()` frames with one recvmmsg(2), each into its buffer, and
    /// writes their lengths into `lens`; `WouldBlock` when none is queued.
    pub fn recv_batch(&self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs = mmsghdrs(&mut iovs);
        let count = libc::c_uint::try_from(msgs.len().min(lens.len())).unwrap_or(0);
        // SAFETY: every mmsghdr points to one live iovec over a live, writable buffer.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                count,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (len, msg) in lens.iter_mut().zip(&msgs).take(n) {
            *len = msg.msg_len as usize;
        }
        Ok(n)
    }

    /// Waits until a frame is queued or `timeout` passes; whether one is.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        self.wait(libc::POLLIN, timeout)
    }

    /// Waits until the socket takes frames again or `timeout` passes.
    pub fn wait_writable(&self, timeout: Duration) -> bool {
        self.wait(libc::POLLOUT, timeout)
    }

    fn wait(&self, events: libc::c_short, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }

    /// Frames the kernel dropped because this socket's buffer was full, since the last call
    /// (PACKET_STATISTICS resets on read).
    pub fn drops(&self) -> u64 {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = libc::socklen_t::try_from(mem::size_of::<libc::tpacket_stats>()).unwrap_or(0);
        // SAFETY: stats is a valid tpacket_stats of `len` bytes.
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
pub fn port68_sink(iface: &Interface) -> Option<OwnedFd> {
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
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
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &prog,
    )
    .ok()?;
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &1 as &libc::c_int,
    )
    .ok()?;
    let name = iface.name.as_bytes();
    // SAFETY: name is valid for its length.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            libc::socklen_t::try_from(name.len()).unwrap_or(0),
        )
    })
    .ok()?;
    let addr = libc::sockaddr_in {
        sin_family: u16::try_from(libc::AF_INET).unwrap_or(2),
        sin_port: pxe_common::DHCP_CLIENT_PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_in>()).unwrap_or(0);
    // SAFETY: addr is a valid sockaddr_in.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) }).ok()?;
    Some(fd)
}

/// A NETLINK_ROUTE socket that adds and removes IPv4 addresses on one interface.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    ifindex: u32,
    seq: u32,
}

/// Netlink attribute types of `ifaddrmsg`.
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

impl Netlink {
    /// Opens it for the interface `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<Netlink> {
        // SAFETY: plain socket(2).
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout,
        )?;
        Ok(Netlink {
            fd,
            ifindex,
            seq: 0,
        })
    }

    /// Adds `ip/prefix_len` to the interface (replacing it if present).
    pub fn add(&mut self, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let flags =
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        self.request(libc::RTM_NEWADDR, flags, ip, prefix_len)
    }

    /// Removes `ip/prefix_len` from the interface; an address already gone is fine.
    pub fn remove(&mut self, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
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
        // SAFETY: msg is a valid buffer; an unconnected netlink socket sends to the kernel.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
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

/// Raises the open-file limit to its hard limit (each machine holds a socket or two).
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// CPU time of this process so far (user, system), all threads, and its peak RSS in KiB.
pub fn cpu_usage() -> (Duration, Duration, u64) {
    // SAFETY: getrusage with a valid struct.
    let ru = unsafe {
        let mut ru: libc::rusage = mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (
        tv(ru.ru_utime),
        tv(ru.ru_stime),
        u64::try_from(ru.ru_maxrss).unwrap_or(0),
    )
}

/// The prefix length of a subnet mask (contiguous ones), if it is one.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
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
