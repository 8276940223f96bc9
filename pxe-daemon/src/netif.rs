//! Facts about network interfaces the datapaths need.

use std::{ffi::CStr, net::Ipv4Addr, time::Duration};

/// The first IPv4 address of `interface`, if it has one.
pub fn ipv4_of(interface: &str) -> Option<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if name.to_bytes() == interface.as_bytes() && family == libc::AF_INET {
            // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

/// Where the kernel shows network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// The VLAN interfaces stacked on `interface` (`eth0.100` on `eth0`), from sysfs: its
/// `upper_*` links whose device type is `vlan`.
pub fn vlan_uppers(interface: &str) -> Vec<String> {
    vlan_uppers_in(std::path::Path::new(SYS_CLASS_NET), interface)
}

fn vlan_uppers_in(sys_class_net: &std::path::Path, interface: &str) -> Vec<String> {
    let dir = sys_class_net.join(interface);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut uppers: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_prefix("upper_").map(str::to_owned))
        .filter(|upper| {
            std::fs::read_to_string(dir.join(format!("upper_{upper}/uevent")))
                .is_ok_and(|u| u.lines().any(|l| l == "DEVTYPE=vlan"))
        })
        .collect();
    uppers.sort();
    uppers
}

/// The kernel driver behind `interface` (`virtio_net`, `ice`, ...), from sysfs; `None` for a
/// virtual device without one (veth, bridge, ...).
pub fn driver_of(interface: &str) -> Option<String> {
    driver_in(std::path::Path::new(SYS_CLASS_NET), interface)
}

fn driver_in(sys_class_net: &std::path::Path, interface: &str) -> Option<String> {
    let link = std::fs::read_link(sys_class_net.join(interface).join("device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// How long a neighbour lookup waits for the kernel's answer.
const NETLINK_TIMEOUT: Duration = Duration::from_millis(200);
/// Receive buffer of a lookup: one route or neighbour message (a few hundred bytes).
const NETLINK_REPLY_BYTES: usize = 8192;
/// `struct rtmsg` and `struct ndmsg` are both 12 bytes.
const RT_HEADER_BYTES: usize = 12;
/// `struct nlmsghdr`.
const NLMSG_HEADER_BYTES: usize = 16;
/// Neighbour states with a usable link-layer address (the kernel's `NUD_VALID`).
const NUD_VALID: u16 = libc::NUD_PERMANENT
    | libc::NUD_NOARP
    | libc::NUD_REACHABLE
    | libc::NUD_PROBE
    | libc::NUD_STALE
    | libc::NUD_DELAY;

/// The MAC the kernel's neighbour (ARP) table holds for `ip`, if any. Asked of the kernel for
/// this one address over rtnetlink: the route to `ip` names the interface, then the neighbour
/// entry on it (`ip route get`, `ip neigh get`), in time independent of the table's size.
/// Reading /proc/net/arp instead costs time in proportion to the table, which holds a rack's
/// machines: 15 ms per read at 5,000 entries, on the TFTP thread and under the timeline's lock,
/// for every machine's first TFTP request in proxy mode (seen with `pxe-bench rack`).
pub fn neighbour_mac(ip: Ipv4Addr) -> Option<crate::boot::MacAddr> {
    let socket = RouteSocket::open().ok()?;
    let mut route = [0u8; RT_HEADER_BYTES];
    route[0] = libc::AF_INET as u8;
    route[1] = 32; // rtm_dst_len: a host route lookup.
    let reply = socket
        .ask(libc::RTM_GETROUTE, 1, &route, libc::RTA_DST, ip)
        .ok()?;
    let ifindex = route_oif(&reply)?;
    let mut neigh = [0u8; RT_HEADER_BYTES];
    neigh[0] = libc::AF_INET as u8;
    neigh[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let reply = socket
        .ask(libc::RTM_GETNEIGH, 2, &neigh, libc::NDA_DST, ip)
        .ok()?;
    neighbour_lladdr(&reply)
}

/// A NETLINK_ROUTE socket for one lookup; closed on drop.
struct RouteSocket(std::os::fd::OwnedFd);

impl RouteSocket {
    fn open() -> std::io::Result<RouteSocket> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: socket returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let socket = RouteSocket(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: NETLINK_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt reads a timeval from a valid pointer of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(socket)
    }

    /// Sends one request and returns the kernel's first reply datagram.
    fn ask(
        &self,
        kind: u16,
        seq: u32,
        header: &[u8],
        attr: u16,
        ip: Ipv4Addr,
    ) -> std::io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd as _;
        let request = netlink_request(kind, seq, header, attr, ip);
        // SAFETY: sockaddr_nl is plain data; zeroed with the family set addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut reply = vec![0u8; NETLINK_REPLY_BYTES];
        // SAFETY: `reply` is valid for its length.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                reply.as_mut_ptr().cast(),
                reply.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        reply.truncate(n as usize);
        Ok(reply)
    }
}

/// A netlink request: header, the message's fixed part, one attribute holding `ip`.
fn netlink_request(kind: u16, seq: u32, header: &[u8], attr: u16, ip: Ipv4Addr) -> Vec<u8> {
    let attr_len: u16 = 4 + 4;
    let len = NLMSG_HEADER_BYTES + header.len() + usize::from(attr_len);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(header);
    b.extend_from_slice(&attr_len.to_ne_bytes());
    b.extend_from_slice(&attr.to_ne_bytes());
    b.extend_from_slice(&ip.octets());
    b
}

/// The payload of the first message of `reply` if it is of type `kind` (an error, ENOENT or
/// ENETUNREACH, is `None`).
fn netlink_payload(reply: &[u8], kind: u16) -> Option<&[u8]> {
    let len = u32::from_ne_bytes(reply.get(0..4)?.try_into().ok()?) as usize;
    let got = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if got != kind || len < NLMSG_HEADER_BYTES {
        return None;
    }
    reply.get(NLMSG_HEADER_BYTES..len)
}

/// The attributes after a message's fixed part: (type, value), each 4-byte aligned.
fn netlink_attrs(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(rest.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?);
        let value = rest.get(4..len)?;
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind & 0x3fff, value))
    })
}

/// The output interface of an `RTM_NEWROUTE` answer.
fn route_oif(reply: &[u8]) -> Option<u32> {
    let payload = netlink_payload(reply, libc::RTM_NEWROUTE)?;
    netlink_attrs(payload.get(RT_HEADER_BYTES..)?)
        .find(|(kind, _)| *kind == libc::RTA_OIF)
        .and_then(|(_, v)| Some(u32::from_ne_bytes(v.try_into().ok()?)))
}

/// The link-layer address of an `RTM_NEWNEIGH` answer, if its state makes it usable
/// (incomplete and failed entries do not count).
fn neighbour_lladdr(reply: &[u8]) -> Option<crate::boot::MacAddr> {
    let payload = netlink_payload(reply, libc::RTM_NEWNEIGH)?;
    let state = u16::from_ne_bytes(payload.get(8..10)?.try_into().ok()?);
    if state & NUD_VALID == 0 {
        return None;
    }
    netlink_attrs(payload.get(RT_HEADER_BYTES..)?)
        .find(|(kind, _)| *kind == libc::NDA_LLADDR)
        .and_then(|(_, v)| Some(crate::boot::MacAddr(v.try_into().ok()?)))
}

/// The Ethernet address of `interface` (from sysfs), if it has one.
pub fn mac_of(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("{SYS_CLASS_NET}/{interface}/address")).ok()?;
    let bytes = crate::boot::parse_mac_bytes(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_uppers_and_the_driver_come_from_sysfs() {
        // sysfs as the kernel lays it out: eth0 with a VLAN and a bond above it.
        let sys = tempfile::tempdir().unwrap();
        let dev = |name: &str, devtype: Option<&str>| {
            std::fs::create_dir(sys.path().join(name)).unwrap();
            let uevent = devtype.map_or(String::new(), |t| format!("DEVTYPE={t}\n"));
            let uevent = format!("{uevent}INTERFACE={name}\nIFINDEX=7\n");
            std::fs::write(sys.path().join(name).join("uevent"), uevent).unwrap();
        };
        dev("eth0", None);
        dev("eth0.100", Some("vlan"));
        dev("eth0.7", Some("vlan"));
        dev("bond0", Some("bond"));
        for upper in ["eth0.100", "eth0.7", "bond0"] {
            std::os::unix::fs::symlink(
                format!("../{upper}"),
                sys.path().join("eth0").join(format!("upper_{upper}")),
            )
            .unwrap();
        }
        assert_eq!(vlan_uppers_in(sys.path(), "eth0"), ["eth0.100", "eth0.7"]);
        // The driver, where the device has one (not a veth).
        std::fs::create_dir_all(sys.path().join("virtio0")).unwrap();
        std::os::unix::fs::symlink("../virtio0", sys.path().join("eth0/device")).unwrap();
        std::os::unix::fs::symlink(
            "../../bus/virtio/drivers/virtio_net",
            sys.path().join("virtio0/driver"),
        )
        .unwrap();
        assert_eq!(driver_in(sys.path(), "eth0").as_deref(), Some("virtio_net"));
        assert_eq!(driver_in(sys.path(), "eth0.100"), None);
        assert!(vlan_uppers_in(sys.path(), "eth0.100").is_empty());
        assert!(vlan_uppers_in(sys.path(), "missing").is_empty());
    }

    /// A reply as the kernel writes it: header, fixed part, attributes.
    fn reply(kind: u16, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = fixed.to_vec();
        for (t, v) in attrs {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut b = ((NLMSG_HEADER_BYTES + body.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&body);
        b
    }

    fn ndmsg(state: u16) -> [u8; 12] {
        let mut m = [0u8; 12];
        m[0] = libc::AF_INET as u8;
        m[4..8].copy_from_slice(&3i32.to_ne_bytes());
        m[8..10].copy_from_slice(&state.to_ne_bytes());
        m
    }

    #[test]
    fn neighbour_answers_are_read() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let dst = [198, 18, 0, 2];
        let attrs: [(u16, &[u8]); 3] = [
            (libc::NDA_DST, &dst),
            (libc::NDA_LLADDR, &mac),
            (libc::NDA_PROBES, &[0, 0, 0, 0]),
        ];
        let stale = reply(libc::RTM_NEWNEIGH, &ndmsg(libc::NUD_STALE), &attrs);
        assert_eq!(
            neighbour_lladdr(&stale).map(|m| m.to_string()).as_deref(),
            Some("52:54:00:12:34:56")
        );
        // An entry still resolving has no usable address; an error answer is no address.
        let incomplete = reply(libc::RTM_NEWNEIGH, &ndmsg(libc::NUD_INCOMPLETE), &attrs);
        assert_eq!(neighbour_lladdr(&incomplete), None);
        let error = reply(
            libc::NLMSG_ERROR as u16,
            &(-libc::ENOENT).to_ne_bytes(),
            &[],
        );
        assert_eq!(neighbour_lladdr(&error), None);
        // Cut short anywhere: no address, no panic.
        for cut in 0..stale.len() {
            let _ = neighbour_lladdr(&stale[..cut]);
        }
        let mut route = [0u8; 12];
        route[0] = libc::AF_INET as u8;
        let answer = reply(
            libc::RTM_NEWROUTE,
            &route,
            &[(libc::RTA_DST, &dst), (libc::RTA_OIF, &7u32.to_ne_bytes())],
        );
        assert_eq!(route_oif(&answer), Some(7));
        assert_eq!(route_oif(&stale), None);
    }

    #[test]
    fn the_kernel_names_the_interface_of_a_route() {
        // The lookup's first step, live: 127.0.0.1 is reached through the loopback.
        let socket = RouteSocket::open().unwrap();
        let mut route = [0u8; RT_HEADER_BYTES];
        route[0] = libc::AF_INET as u8;
        route[1] = 32;
        let answer = socket
            .ask(
                libc::RTM_GETROUTE,
                1,
                &route,
                libc::RTA_DST,
                Ipv4Addr::LOCALHOST,
            )
            .unwrap();
        // SAFETY: the name is a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_eq!(route_oif(&answer), Some(lo));
        // The loopback resolves no neighbours.
        assert_eq!(neighbour_mac(Ipv4Addr::LOCALHOST), None);
    }

    #[test]
    fn loopback_has_127_0_0_1() {
        assert_eq!(ipv4_of("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_of("no-such-if0"), None);
    }

    #[test]
    fn loopback_has_a_zero_mac() {
        assert_eq!(mac_of("lo"), Some([0; 6]));
        assert_eq!(mac_of("no-such-if0"), None);
    }
}
