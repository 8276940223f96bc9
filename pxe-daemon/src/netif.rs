//! Facts about network interfaces the datapaths need.

use std::{ffi::CStr, net::Ipv4Addr};

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

/// The MAC the kernel's neighbour (ARP) table holds for `ip`, if any.
pub fn neighbour_mac(ip: Ipv4Addr) -> Option<crate::boot::MacAddr> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp_table(&table, ip)
}

/// Finds `ip` in the text of /proc/net/arp (header line, then
/// `IP HWtype Flags HWaddress Mask Device`); incomplete entries (flags 0x0) do not count.
fn parse_arp_table(table: &str, ip: Ipv4Addr) -> Option<crate::boot::MacAddr> {
    let wanted = ip.to_string();
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let (addr, _hw, flags, mac) = (cols.next()?, cols.next()?, cols.next()?, cols.next()?);
        (addr == wanted && flags != "0x0")
            .then(|| mac.parse().ok())
            .flatten()
    })
}

/// The Ethernet address of `interface` (from sysfs), if it has one.
pub fn mac_of(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    let bytes = crate::boot::parse_mac_bytes(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_table_lookup() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     198.18.0.2       0x1         0x2         52:54:00:12:34:56     *        veth0\n\
                     198.18.0.3       0x1         0x0         00:00:00:00:00:00     *        veth0\n";
        let mac = parse_arp_table(table, Ipv4Addr::new(198, 18, 0, 2)).unwrap();
        assert_eq!(mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(parse_arp_table(table, Ipv4Addr::new(198, 18, 0, 3)), None);
        assert_eq!(parse_arp_table(table, Ipv4Addr::new(198, 18, 0, 4)), None);
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
