//! Facts about network interfaces the datapaths need.

use std::{
    collections::BTreeMap,
    ffi::CStr,
    net::Ipv4Addr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long a snapshot of the neighbour table answers lookups.
const NEIGHBOUR_SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(500);
/// A lookup that misses reads the table again, at most this often.
const NEIGHBOUR_REREAD_MIN_INTERVAL: Duration = Duration::from_millis(20);

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

/// A parsed copy of /proc/net/arp and when it was read.
struct NeighbourSnapshot {
    read_at: Option<Instant>,
    macs: BTreeMap<Ipv4Addr, crate::boot::MacAddr>,
}

/// The process's snapshot of the neighbour table. Reading /proc/net/arp costs time in
/// proportion to the table, which holds a rack's machines: reading it per request made TFTP and
/// the timeline quadratic in a rack's size (2,000 machines: half the daemon's CPU, seen with
/// `pxe-bench rack`).
static NEIGHBOURS: Mutex<NeighbourSnapshot> = Mutex::new(NeighbourSnapshot {
    read_at: None,
    macs: BTreeMap::new(),
});

/// The MAC the kernel's neighbour (ARP) table holds for `ip`, if any: from a snapshot at most
/// [`NEIGHBOUR_SNAPSHOT_MAX_AGE`] old; a miss reads the table again, at most every
/// [`NEIGHBOUR_REREAD_MIN_INTERVAL`] (a machine's entry appears when it first ARPs for us).
pub fn neighbour_mac(ip: Ipv4Addr) -> Option<crate::boot::MacAddr> {
    let mut snapshot = NEIGHBOURS.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let age = snapshot.read_at.map(|t| now.saturating_duration_since(t));
    if age.is_some_and(|a| a < NEIGHBOUR_SNAPSHOT_MAX_AGE) {
        if let Some(mac) = snapshot.macs.get(&ip) {
            return Some(*mac);
        }
    }
    if age.is_none_or(|a| a >= NEIGHBOUR_REREAD_MIN_INTERVAL) {
        let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        snapshot.macs = parse_arp_entries(&table);
        snapshot.read_at = Some(now);
    }
    snapshot.macs.get(&ip).copied()
}

/// Every complete entry of the text of /proc/net/arp.
fn parse_arp_entries(table: &str) -> BTreeMap<Ipv4Addr, crate::boot::MacAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let (addr, _hw, flags, mac) = (cols.next()?, cols.next()?, cols.next()?, cols.next()?);
            if flags == "0x0" {
                return None;
            }
            Some((addr.parse().ok()?, mac.parse().ok()?))
        })
        .collect()
}

/// Finds `ip` in the text of /proc/net/arp (header line, then
/// `IP HWtype Flags HWaddress Mask Device`); incomplete entries (flags 0x0) do not count.
#[cfg(test)]
fn parse_arp_table(table: &str, ip: Ipv4Addr) -> Option<crate::boot::MacAddr> {
    parse_arp_entries(table).get(&ip).copied()
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
