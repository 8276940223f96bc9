//! Ethernet, IPv4 and UDP framing for the DHCP frames the simulated machines send and receive on
//! one AF_PACKET socket. Pure functions over bytes.

use std::net::Ipv4Addr;

/// EtherType of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethernet header length (no VLAN tag: the simulator sends untagged frames).
pub(crate) const ETH_HEADER_LEN: usize = 14;
/// IPv4 header length without options.
const IPV4_HEADER_LEN: usize = 20;
/// UDP header length.
const UDP_HEADER_LEN: usize = 8;
/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;
/// TTL of the frames sent (as firmware does: 64 or more; the value does not matter on a link).
const TTL: u8 = 64;
/// The broadcast MAC address.
pub(crate) const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// One UDP datagram in an Ethernet frame, as sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UdpFrame<'a> {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Writes `frame` as Ethernet + IPv4 + UDP into `out` (cleared first), with both checksums.
pub(crate) fn build(frame: &UdpFrame<'_>, ip_id: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&frame.dst_mac);
    out.extend_from_slice(&frame.src_mac);
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let udp_len = UDP_HEADER_LEN + frame.payload.len();
    let total_len = u16::try_from(IPV4_HEADER_LEN + udp_len).unwrap_or(u16::MAX);
    let ip_at = out.len();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total_len.to_be_bytes());
    out.extend_from_slice(&ip_id.to_be_bytes());
    out.extend_from_slice(&[0, 0, TTL, IPPROTO_UDP, 0, 0]);
    out.extend_from_slice(&frame.src_ip.octets());
    out.extend_from_slice(&frame.dst_ip.octets());
    let ip_sum = checksum(&[&out[ip_at..ip_at + IPV4_HEADER_LEN]]);
    out[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp_at = out.len();
    let udp_len16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
    out.extend_from_slice(&frame.src_port.to_be_bytes());
    out.extend_from_slice(&frame.dst_port.to_be_bytes());
    out.extend_from_slice(&udp_len16.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(frame.payload);
    debug_assert_eq!(udp_at, UDP_AT);
    refresh_udp_checksum(out);
}

/// Where the UDP header starts in a frame [`build`] wrote (untagged, IPv4 without options).
const UDP_AT: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN;

/// Recomputes the UDP checksum of a frame [`build`] wrote, after its payload was changed in
/// place (the load generator patches MACs and transaction ids into a template).
pub(crate) fn refresh_udp_checksum(frame: &mut [u8]) {
    if frame.len() < UDP_AT + UDP_HEADER_LEN {
        return;
    }
    let ip = &frame[ETH_HEADER_LEN..UDP_AT];
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&frame[UDP_AT + 4..UDP_AT + 6]);
    frame[UDP_AT + 6..UDP_AT + 8].copy_from_slice(&[0, 0]);
    let mut sum = checksum(&[&pseudo, &frame[UDP_AT..]]);
    if sum == 0 {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        sum = 0xffff;
    }
    frame[UDP_AT + 6..UDP_AT + 8].copy_from_slice(&sum.to_be_bytes());
}

/// Reads an Ethernet frame carrying IPv4/UDP (not a fragment); `None` for anything else or a
/// frame cut short. Checksums are not verified: the kernel's filter already chose the frames,
/// and a veth or NIC with checksum offload may deliver them unfilled.
pub(crate) fn parse(bytes: &[u8]) -> Option<UdpFrame<'_>> {
    let eth = bytes.get(..ETH_HEADER_LEN)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &bytes[ETH_HEADER_LEN..];
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_HEADER_LEN || ip.len() < ihl + UDP_HEADER_LEN {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    // More-fragments set or a non-zero offset: a fragment.
    if ip[9] != IPPROTO_UDP || frag & 0x3fff != 0 || total_len > ip.len() || total_len < ihl {
        return None;
    }
    let udp = &ip[ihl..total_len];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return None;
    }
    let mac = |at: usize| -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&eth[at..at + 6]);
        m
    };
    Some(UdpFrame {
        dst_mac: mac(0),
        src_mac: mac(6),
        src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[UDP_HEADER_LEN..udp_len],
    })
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A classic BPF program for `SO_ATTACH_FILTER` that keeps only untagged IPv4/UDP frames, not
/// fragments, to UDP port `dst_port` (68: DHCP replies). Every other frame the interface
/// carries (the TFTP and HTTP traffic of the simulated machines) never reaches the socket.
pub(crate) fn udp_port_filter(dst_port: u16) -> [libc::sock_filter; 11] {
    const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
    const LD_H_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        // 0: EtherType IPv4?
        op(LD_H_ABS, 0, 0, 12),
        op(JEQ_K, 0, 8, u32::from(ETHERTYPE_IPV4)),
        // 2: protocol UDP?
        op(LD_B_ABS, 0, 0, 23),
        op(JEQ_K, 0, 6, u32::from(IPPROTO_UDP)),
        // 4: no fragment (offset or more-fragments)?
        op(LD_H_ABS, 0, 0, 20),
        op(JSET_K, 4, 0, 0x3fff),
        // 6: X = IP header length; the UDP destination port at 14 + X + 2.
        op(LDX_MSH, 0, 0, 14),
        op(LD_H_IND, 0, 0, 16),
        op(JEQ_K, 0, 1, u32::from(dst_port)),
        // 9: accept the whole frame; 10: drop it.
        op(RET_K, 0, 0, u32::MAX),
        op(RET_K, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_round_trips_with_valid_checksums() {
        let payload = b"hello dhcp";
        let frame = UdpFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: BROADCAST_MAC,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
            payload,
        };
        let mut out = Vec::new();
        build(&frame, 7, &mut out);
        assert_eq!(out.len(), 14 + 20 + 8 + payload.len());
        // The IPv4 header sums to zero with its checksum in place.
        assert_eq!(checksum(&[&out[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&frame.src_ip.octets());
        pseudo[4..8].copy_from_slice(&frame.dst_ip.octets());
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &out[34..]]), 0, "UDP checksum");
        assert_eq!(parse(&out), Some(frame));
    }

    #[test]
    fn a_patched_payload_gets_its_checksum_refreshed() {
        let mut frame = UdpFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: BROADCAST_MAC,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
            payload: b"first payload",
        };
        let mut patched = Vec::new();
        build(&frame, 7, &mut patched);
        patched[UDP_AT + 8..].copy_from_slice(b"other payload");
        refresh_udp_checksum(&mut patched);
        let mut fresh = Vec::new();
        frame.payload = b"other payload";
        build(&frame, 7, &mut fresh);
        assert_eq!(patched, fresh);
    }

    #[test]
    fn parse_refuses_fragments_and_short_frames() {
        let mut out = Vec::new();
        let frame = UdpFrame {
            src_mac: [2; 6],
            dst_mac: [4; 6],
            src_ip: Ipv4Addr::new(198, 18, 0, 1),
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            src_port: 67,
            dst_port: 68,
            payload: &[1, 2, 3],
        };
        build(&frame, 1, &mut out);
        assert!(parse(&out[..30]).is_none());
        let mut frag = out.clone();
        frag[20] = 0x20; // more fragments
        assert!(parse(&frag).is_none());
        let mut arp = out.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(parse(&arp).is_none());
    }
}
