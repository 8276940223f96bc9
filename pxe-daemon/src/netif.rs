//! Facts about network interfaces the datapaths need.

use std::{io, net::Ipv4Addr, time::Duration};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily, RouteNetlinkMessage,
};
use nix::sys::{
    socket::{setsockopt, sockopt::ReceiveTimeout},
    time::{TimeVal, TimeValLike as _},
};
use pxe_common::MacAddr;

/// The first IPv4 address of `interface`, if it has one.
pub fn ipv4_of(interface: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == interface)
        .find_map(|a| Some(a.address?.as_sockaddr_in()?.ip()))
}

/// The kernel's index of `interface` (`if_nametoindex`).
pub fn index_of(interface: &str) -> io::Result<u32> {
    Ok(nix::net::if_::if_nametoindex(interface)?)
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
pub fn neighbour_mac(ip: Ipv4Addr) -> Option<MacAddr> {
    let socket = RouteSocket::open().ok()?;
    let reply = socket.ask(route_request(ip), 1).ok()?;
    let ifindex = route_oif(&reply)?;
    let reply = socket.ask(neighbour_request(ip, ifindex), 2).ok()?;
    neighbour_lladdr(&reply)
}

/// `RTM_GETROUTE` for the host route to `ip`.
fn route_request(ip: Ipv4Addr) -> RouteNetlinkMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.destination_prefix_length = 32;
    route
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(ip)));
    RouteNetlinkMessage::GetRoute(route)
}

/// `RTM_GETNEIGH` for `ip` on interface `ifindex`.
fn neighbour_request(ip: Ipv4Addr, ifindex: u32) -> RouteNetlinkMessage {
    let mut neighbour = NeighbourMessage::default();
    neighbour.header.family = AddressFamily::Inet;
    neighbour.header.ifindex = ifindex;
    neighbour
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    RouteNetlinkMessage::GetNeighbour(neighbour)
}

/// A NETLINK_ROUTE socket for one lookup; closed on drop.
struct RouteSocket(netlink_sys::Socket);

impl RouteSocket {
    fn open() -> io::Result<RouteSocket> {
        let socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        let timeout = TimeVal::microseconds(NETLINK_TIMEOUT.as_micros() as i64);
        setsockopt(&socket, ReceiveTimeout, &timeout)?;
        Ok(RouteSocket(socket))
    }

    /// Sends one request and returns the kernel's first reply datagram.
    fn ask(&self, message: RouteNetlinkMessage, seq: u32) -> io::Result<Vec<u8>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        let kernel = netlink_sys::SocketAddr::new(0, 0);
        self.0.send_to(&bytes, &kernel, 0)?;
        let mut reply = Vec::with_capacity(NETLINK_REPLY_BYTES);
        self.0.recv(&mut reply, 0)?;
        Ok(reply)
    }
}

/// The message of `reply`, if it decodes (an error answer, ENOENT or ENETUNREACH, is `None`).
fn netlink_message(reply: &[u8]) -> Option<RouteNetlinkMessage> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply)
        .ok()?
        .payload
    {
        NetlinkPayload::InnerMessage(message) => Some(message),
        _ => None,
    }
}

/// The output interface of an `RTM_NEWROUTE` answer.
fn route_oif(reply: &[u8]) -> Option<u32> {
    let RouteNetlinkMessage::NewRoute(route) = netlink_message(reply)? else {
        return None;
    };
    route.attributes.into_iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(index),
        _ => None,
    })
}

/// The link-layer address of an `RTM_NEWNEIGH` answer, if its state makes it usable
/// (incomplete and failed entries do not count).
fn neighbour_lladdr(reply: &[u8]) -> Option<MacAddr> {
    let RouteNetlinkMessage::NewNeighbour(neighbour) = netlink_message(reply)? else {
        return None;
    };
    if u16::from(neighbour.header.state) & NUD_VALID == 0 {
        return None;
    }
    neighbour.attributes.into_iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => Some(MacAddr(mac.try_into().ok()?)),
        _ => None,
    })
}

/// MTU assumed when the interface's cannot be read.
const MTU_FALLBACK: u32 = 1500;

/// The MTU of `interface` (from sysfs), or [`MTU_FALLBACK`] with a warning.
pub fn mtu(interface: &str) -> u32 {
    let path = format!("{SYS_CLASS_NET}/{interface}/mtu");
    match std::fs::read_to_string(&path).map(|s| s.trim().parse::<u32>()) {
        Ok(Ok(mtu)) => mtu,
        other => {
            tracing::warn!(
                interface,
                ?other,
                fallback = MTU_FALLBACK,
                "cannot read the interface MTU"
            );
            MTU_FALLBACK
        }
    }
}

/// Receive queues of `interface`: the `queues/rx-*` entries in sysfs (at least 1, at most
/// the XSKS map's size).
pub fn rx_queue_count(interface: &str) -> u32 {
    let dir = format!("{SYS_CLASS_NET}/{interface}/queues");
    let n = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1);
    u32::try_from(n)
        .unwrap_or(u32::MAX)
        .clamp(1, pxe_common::XSKS_MAX_QUEUES)
}

/// The link-layer type of `interface` (`ARPHRD_*`: 1 for Ethernet, 772 for the loopback), from
/// sysfs; `None` if there is no such interface.
pub fn link_type(interface: &str) -> Option<u16> {
    let text = std::fs::read_to_string(format!("{SYS_CLASS_NET}/{interface}/type")).ok()?;
    text.trim().parse().ok()
}

/// The Ethernet address of `interface` (from sysfs), if it has one.
pub fn mac_of(interface: &str) -> Option<MacAddr> {
    let text = std::fs::read_to_string(format!("{SYS_CLASS_NET}/{interface}/address")).ok()?;
    text.trim().parse::<MacAddr>().ok()
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
        // After `struct nlmsghdr`, 16 bytes.
        let mut b = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
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
        let answer = socket.ask(route_request(Ipv4Addr::LOCALHOST), 1).unwrap();
        assert_eq!(route_oif(&answer), Some(index_of("lo").unwrap()));
        // The loopback resolves no neighbours.
        assert_eq!(neighbour_mac(Ipv4Addr::LOCALHOST), None);
    }

    #[test]
    fn loopback_has_127_0_0_1() {
        assert_eq!(ipv4_of("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_of("no-such-if0"), None);
    }

    #[test]
    fn loopback_facts() {
        assert_eq!(link_type("lo"), Some(772));
        assert_eq!(link_type("no-such-if0"), None);
        assert_eq!(rx_queue_count("lo"), 1);
        assert_eq!(mtu("no-such-if0"), MTU_FALLBACK);
        assert_eq!(index_of("lo").unwrap(), 1);
        assert!(index_of("no-such-if0").is_err());
    }

    #[test]
    fn loopback_has_a_zero_mac() {
        assert_eq!(mac_of("lo"), Some(MacAddr([0; 6])));
        assert_eq!(mac_of("no-such-if0"), None);
    }
}
