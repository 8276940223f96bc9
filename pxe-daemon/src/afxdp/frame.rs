//! Ethernet / IPv4 / UDP framing, sans-IO: received frames into [`Datagram`]s, and the headers
//! of reply frames around a payload already written in place.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::datapath::{Datagram, MacAddr, Route};

/// Ethernet header bytes (no VLAN tag).
pub const ETH_HEADER_BYTES: usize = 14;
/// IPv4 header bytes without options (what we send).
pub const IPV4_HEADER_BYTES: usize = 20;
/// UDP header bytes.
pub const UDP_HEADER_BYTES: usize = 8;
/// Bytes before the UDP payload in a frame we build.
pub const REPLY_HEADER_BYTES: usize = ETH_HEADER_BYTES + IPV4_HEADER_BYTES + UDP_HEADER_BYTES;
/// TTL of the frames we send.
pub const TTL: u8 = 64;
/// Where the device starts summing when it completes a frame's UDP checksum: the UDP header.
pub const UDP_CHECKSUM_START: u16 = (ETH_HEADER_BYTES + IPV4_HEADER_BYTES) as u16;
/// Where in the UDP header the device puts the checksum.
pub const UDP_CHECKSUM_OFFSET: u16 = 6;

/// Who computes a sent frame's UDP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpChecksum {
    /// We do, over the whole datagram.
    Full,
    /// The device (or the kernel for it), as for a kernel socket's CHECKSUM_PARTIAL frame:
    /// the checksum field holds the pseudo-header's sum, which the device's sum from
    /// [`UDP_CHECKSUM_START`] to the end takes in, and the result goes at
    /// [`UDP_CHECKSUM_OFFSET`]. Saves summing every byte of a TFTP block twice (here, and
    /// again in the receiver's stack on a veth).
    Device,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// Why a received frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the headers it announces.
    Truncated,
    /// Not IPv4 (ARP, IPv6...).
    NotIpv4,
    /// 802.1Q/802.1ad-tagged: for a VLAN interface above this one, not ours to answer (the
    /// XDP program passes such frames to the kernel; one that comes anyway is not answered
    /// untagged on the wrong network).
    Tagged,
    /// IPv4 version, header length or total length not valid, or a wrong header checksum.
    BadIpHeader,
    /// An IPv4 fragment: not reassembled here.
    Fragment,
    /// Not UDP.
    NotUdp,
    /// UDP length not consistent with the IPv4 packet.
    BadUdpLength,
}

impl Malformed {
    /// Every reason, for exporting all label values.
    pub const ALL: [Malformed; 7] = [
        Malformed::Truncated,
        Malformed::NotIpv4,
        Malformed::Tagged,
        Malformed::BadIpHeader,
        Malformed::Fragment,
        Malformed::NotUdp,
        Malformed::BadUdpLength,
    ];

    /// Label value in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::NotIpv4 => "not_ipv4",
            Malformed::Tagged => "vlan_tagged",
            Malformed::BadIpHeader => "bad_ip_header",
            Malformed::Fragment => "fragment",
            Malformed::NotUdp => "not_udp",
            Malformed::BadUdpLength => "bad_udp_length",
        }
    }
}

fn be16(b: &[u8], at: usize) -> Result<u16, Malformed> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(Malformed::Truncated)
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Parses an untagged Ethernet frame carrying IPv4 (options allowed, no fragments) and UDP.
/// Bytes after the IPv4 total length (Ethernet padding) are ignored.
pub fn parse(frame: &[u8]) -> Result<Datagram<'_>, Malformed> {
    let l3 = ETH_HEADER_BYTES;
    let ethertype = be16(frame, 12)?;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        return Err(Malformed::Tagged);
    }
    if ethertype != ETHERTYPE_IPV4 {
        return Err(Malformed::NotIpv4);
    }
    let ip = frame.get(l3..).ok_or(Malformed::Truncated)?;
    if ip.len() < IPV4_HEADER_BYTES {
        return Err(Malformed::Truncated);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_HEADER_BYTES {
        return Err(Malformed::BadIpHeader);
    }
    let total = usize::from(be16(ip, 2)?);
    if total < ihl {
        return Err(Malformed::BadIpHeader);
    }
    if total > ip.len() {
        return Err(Malformed::Truncated);
    }
    if checksum(&ip[..ihl], 0) != 0 {
        return Err(Malformed::BadIpHeader);
    }
    // More-fragments flag or a fragment offset.
    if be16(ip, 6)? & 0x3fff != 0 {
        return Err(Malformed::Fragment);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(Malformed::NotUdp);
    }
    let udp = &ip[ihl..total];
    if udp.len() < UDP_HEADER_BYTES {
        return Err(Malformed::Truncated);
    }
    let udp_len = usize::from(be16(udp, 4)?);
    if udp_len < UDP_HEADER_BYTES || udp_len > udp.len() {
        return Err(Malformed::BadUdpLength);
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    Ok(Datagram {
        src_mac: MacAddr(src_mac),
        src: SocketAddrV4::new(ipv4_at(ip, 12), be16(udp, 0)?),
        dst: SocketAddrV4::new(ipv4_at(ip, 16), be16(udp, 2)?),
        payload: &udp[UDP_HEADER_BYTES..udp_len],
    })
}

/// The sum of `bytes` as big-endian 16-bit words (odd length padded with zero), plus
/// `initial`, folded and complemented: the Internet checksum. Over a header that carries its
/// own correct checksum it is 0.
pub fn checksum(bytes: &[u8], initial: u32) -> u16 {
    // Big-endian 32-bit words summed into 64 bits, folded at the end: the same ones'
    // complement sum as 16-bit words (2^16 is 1 modulo 0xffff), a quarter of the additions.
    let mut sum = u64::from(initial);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut pairs = words.remainder().chunks_exact(2);
    for c in &mut pairs {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Who sends the frames: the interface's MAC and IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    /// Ethernet source.
    pub mac: MacAddr,
    /// IPv4 source.
    pub ip: Ipv4Addr,
}

/// Writes the Ethernet, IPv4 and UDP headers of a frame into `frame[..REPLY_HEADER_BYTES]`,
/// around the `payload_len` bytes already at `frame[REPLY_HEADER_BYTES..]`: the IPv4 checksum,
/// and the UDP checksum as `udp_checksum` says. Returns the frame's length. `frame` must hold
/// the headers and the payload.
pub fn write_headers(
    frame: &mut [u8],
    sender: Sender,
    route: Route,
    payload_len: usize,
    udp_checksum: UdpChecksum,
) -> usize {
    let udp_len = UDP_HEADER_BYTES + payload_len;
    let ip_len = IPV4_HEADER_BYTES + udp_len;
    let frame_len = ETH_HEADER_BYTES + ip_len;
    let frame = &mut frame[..frame_len];

    frame[0..6].copy_from_slice(&route.mac.0);
    frame[6..12].copy_from_slice(&sender.mac.0);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    let dst_ip = route.to.ip().octets();
    let src_ip = sender.ip.octets();
    let ip = &mut frame[ETH_HEADER_BYTES..ETH_HEADER_BYTES + IPV4_HEADER_BYTES];
    ip[0] = 0x45;
    ip[1] = 0;
    // Fits: a frame buffer is far smaller than 64 KiB.
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0u16.to_be_bytes());
    // Don't fragment.
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = TTL;
    ip[9] = IPPROTO_UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&dst_ip);
    let ip_sum = checksum(ip, 0);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let udp = &mut frame[ETH_HEADER_BYTES + IPV4_HEADER_BYTES..];
    udp[0..2].copy_from_slice(&route.from_port.to_be_bytes());
    udp[2..4].copy_from_slice(&route.to.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    // Pseudo-header: addresses, protocol, UDP length.
    let pseudo = [
        u32::from(u16::from_be_bytes([src_ip[0], src_ip[1]])),
        u32::from(u16::from_be_bytes([src_ip[2], src_ip[3]])),
        u32::from(u16::from_be_bytes([dst_ip[0], dst_ip[1]])),
        u32::from(u16::from_be_bytes([dst_ip[2], dst_ip[3]])),
        u32::from(IPPROTO_UDP),
        udp_len as u32,
    ]
    .iter()
    .sum();
    let udp_sum = match udp_checksum {
        // The pseudo-header's sum, folded, not complemented: checksum() complements.
        UdpChecksum::Device => !checksum(&[], pseudo),
        UdpChecksum::Full => match checksum(udp, pseudo) {
            // 0 means "no checksum" in UDP over IPv4; all ones is the same value.
            0 => 0xffff,
            s => s,
        },
    };
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    frame_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::BROADCAST_MAC;

    const CLIENT_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

    /// A DHCP-like request frame, written out by hand: Ethernet, IPv4 (checksum 0x7acd,
    /// computed apart from this code), UDP 68 -> 67 with no checksum, payload "hello".
    fn request() -> Vec<u8> {
        let mut f = vec![];
        f.extend_from_slice(&BROADCAST_MAC.0);
        f.extend_from_slice(&CLIENT_MAC.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0x00, 0x00, 0x21, // version/IHL, TOS, total length 33
            0x00, 0x00, 0x00, 0x00, // id, flags/fragment
            0x40, 0x11, 0x7a, 0xcd, // TTL 64, UDP, checksum
            0, 0, 0, 0, // src 0.0.0.0
            255, 255, 255, 255, // dst broadcast
        ]);
        f.extend_from_slice(&[0, 68, 0, 67, 0, 13, 0, 0]);
        f.extend_from_slice(b"hello");
        f
    }

    #[test]
    fn parses_a_broadcast_request() {
        let f = request();
        let d = parse(&f).unwrap();
        assert_eq!(d.src_mac, CLIENT_MAC);
        assert_eq!(d.src, "0.0.0.0:68".parse().unwrap());
        assert_eq!(d.dst, "255.255.255.255:67".parse().unwrap());
        assert_eq!(d.payload, b"hello");
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = request();
        f.extend_from_slice(&[0; 20]);
        assert_eq!(parse(&f).unwrap().payload, b"hello");
    }

    #[test]
    fn ip_options_are_skipped() {
        let plain = request();
        let mut f = plain[..14].to_vec();
        // IHL 6: one word of options (NOPs + end), total length 37.
        let mut ip = plain[14..34].to_vec();
        ip[0] = 0x46;
        ip[3] = 37;
        ip.extend_from_slice(&[1, 1, 1, 0]);
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&plain[34..]);
        let d = parse(&f).unwrap();
        assert_eq!(d.payload, b"hello");
        assert_eq!(d.dst.port(), 67);
    }

    #[test]
    fn malformed_frames_are_refused_by_reason() {
        let good = request();
        let with = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = good.clone();
            edit(&mut f);
            parse(&f).map(|_| ()).unwrap_err()
        };
        let fix_ip_sum = |f: &mut Vec<u8>| {
            f[24..26].copy_from_slice(&[0, 0]);
            let s = checksum(&f[14..34], 0);
            f[24..26].copy_from_slice(&s.to_be_bytes());
        };
        assert_eq!(parse(&good[..10]).unwrap_err(), Malformed::Truncated);
        assert_eq!(parse(&good[..30]).unwrap_err(), Malformed::Truncated);
        assert_eq!(with(&|f| f[12] = 0x86), Malformed::NotIpv4);
        assert_eq!(
            with(&|f| f
                .splice(12..12, [0x81, 0, 0, 1, 0x81, 0, 0, 2])
                .for_each(drop)),
            Malformed::Tagged,
            "two VLAN tags"
        );
        assert_eq!(
            with(&|f| f.splice(12..12, [0x81, 0, 0, 10]).for_each(drop)),
            Malformed::Tagged,
            "one 802.1Q tag"
        );
        assert_eq!(
            with(&|f| f.splice(12..12, [0x88, 0xa8, 0, 10]).for_each(drop)),
            Malformed::Tagged,
            "an 802.1ad tag"
        );
        assert_eq!(
            with(&|f| f[14] = 0x65),
            Malformed::BadIpHeader,
            "IPv6 version"
        );
        assert_eq!(with(&|f| f[14] = 0x44), Malformed::BadIpHeader, "IHL 4");
        assert_eq!(with(&|f| f[25] ^= 1), Malformed::BadIpHeader, "checksum");
        assert_eq!(
            with(&|f| {
                f[17] = 60;
                fix_ip_sum(f)
            }),
            Malformed::Truncated,
            "total length past the frame"
        );
        assert_eq!(
            with(&|f| {
                f[20] = 0x20;
                fix_ip_sum(f)
            }),
            Malformed::Fragment,
            "more fragments"
        );
        assert_eq!(
            with(&|f| {
                f[21] = 8;
                fix_ip_sum(f)
            }),
            Malformed::Fragment,
            "offset"
        );
        assert_eq!(
            with(&|f| {
                f[23] = 6;
                fix_ip_sum(f)
            }),
            Malformed::NotUdp
        );
        assert_eq!(with(&|f| f[39] = 40), Malformed::BadUdpLength);
        assert_eq!(with(&|f| f[39] = 4), Malformed::BadUdpLength);
    }

    #[test]
    fn checksum_agrees_with_the_16_bit_sum_at_every_length() {
        // RFC 1071 word by word, the plain way.
        let reference = |bytes: &[u8], initial: u32| {
            let mut sum = u64::from(initial);
            for c in bytes.chunks(2) {
                sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            !(sum as u16)
        };
        let mut x = 0x2545_f491_u32;
        let data: Vec<u8> = (0..2100)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        for len in 0..data.len() {
            for initial in [0, 0x1_2345, 0xffff_ffff] {
                assert_eq!(
                    checksum(&data[..len], initial),
                    reference(&data[..len], initial),
                    "len {len} initial {initial:#x}"
                );
            }
        }
        let ones = vec![0xff; 1500];
        assert_eq!(checksum(&ones, 0), reference(&ones, 0));
    }

    #[test]
    fn checksum_of_known_headers() {
        // The IPv4 header of the request above carries 0x7acd.
        let f = request();
        let mut ip = f[14..34].to_vec();
        ip[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(checksum(&ip, 0), 0x7acd);
        // Odd length pads with a zero byte.
        assert_eq!(checksum(&[0x01], 0), !0x0100);
    }

    #[test]
    fn reply_frame_byte_for_byte() {
        let sender = Sender {
            mac: SERVER_MAC,
            ip: Ipv4Addr::new(198, 18, 0, 1),
        };
        let route = Route {
            mac: CLIENT_MAC,
            to: "198.18.0.50:68".parse().unwrap(),
            from_port: 67,
        };
        let mut frame = vec![0xaa; 128];
        frame[REPLY_HEADER_BYTES..REPLY_HEADER_BYTES + 5].copy_from_slice(b"hello");
        let len = write_headers(&mut frame, sender, route, 5, UdpChecksum::Full);
        assert_eq!(len, 47);
        // Checksums computed apart from this code (a few lines of Python): IPv4 over the
        // header, UDP over the pseudo-header, the UDP header and "hello" padded to even.
        let want: Vec<u8> = [
            &CLIENT_MAC.0[..],
            &SERVER_MAC.0,
            &[0x08, 0x00],
            &[0x45, 0x00, 0x00, 0x21, 0, 0, 0x40, 0x00, 64, 17],
            &[0xae, 0x74],
            &[198, 18, 0, 1, 198, 18, 0, 50],
            &[0, 67, 0, 68, 0, 13],
            &[0x2f, 0x23],
            b"hello",
        ]
        .concat();
        assert_eq!(&frame[..len], &want[..]);
        // The receiver's view: both checksums verify, and the frame parses back.
        assert_eq!(checksum(&frame[14..34], 0), 0);
        let d = parse(&frame[..len]).unwrap();
        assert_eq!(d.src, "198.18.0.1:67".parse().unwrap());
        assert_eq!(d.dst, route.to);
        assert_eq!(d.src_mac, SERVER_MAC);
        assert_eq!(d.payload, b"hello");
    }

    /// What a device (or the kernel's skb_checksum_help) does with a frame whose UDP checksum
    /// is left to it: sum from the start offset to the end, complement, store at the offset.
    fn complete_as_a_device(frame: &mut [u8]) {
        let start = usize::from(UDP_CHECKSUM_START);
        let at = start + usize::from(UDP_CHECKSUM_OFFSET);
        let sum = checksum(&frame[start..], 0);
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn a_checksum_left_to_the_device_comes_out_as_ours() {
        let sender = Sender {
            mac: SERVER_MAC,
            ip: Ipv4Addr::new(198, 19, 99, 1),
        };
        // Odd and even payload lengths, a TFTP block's among them, and varied addresses.
        for (len, to) in [
            (5, "198.18.0.50:68"),
            (516, "198.19.3.207:1069"),
            (1472, "198.19.255.254:30999"),
            (1473, "198.18.1.1:40000"),
        ] {
            let route = Route {
                mac: CLIENT_MAC,
                to: to.parse().unwrap(),
                from_port: 30_123,
            };
            let mut ours = vec![0u8; REPLY_HEADER_BYTES + len];
            for (i, b) in ours[REPLY_HEADER_BYTES..].iter_mut().enumerate() {
                *b = (i * 7 + len) as u8;
            }
            let mut device = ours.clone();
            let n = write_headers(&mut ours, sender, route, len, UdpChecksum::Full);
            assert_eq!(
                write_headers(&mut device, sender, route, len, UdpChecksum::Device),
                n
            );
            assert_ne!(
                ours, device,
                "{len}: the field holds only the pseudo-header's sum"
            );
            complete_as_a_device(&mut device);
            // A computed 0 leaves as 0 from a device, as all ones from us: the same value.
            if device[40..42] == [0, 0] {
                device[40..42].copy_from_slice(&[0xff, 0xff]);
            }
            assert_eq!(ours, device, "{len} bytes to {to}");
            assert_eq!(parse(&device[..n]).unwrap().payload.len(), len);
        }
    }
}
