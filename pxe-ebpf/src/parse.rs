//! Bounds-checked header parsing: Ethernet (one 802.1Q/802.1ad tag), IPv4, UDP.
//!
//! Every access goes through [`ptr_at`], which the verifier can prove stays inside the frame.

use core::mem;

use aya_ebpf::programs::XdpContext;
use pxe_common::{classify_udp_dst, PacketClass, XdpConfig};

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;
const IPV4_MIN_HDR_LEN: usize = 20;
/// More-fragments flag and fragment offset bits of the IPv4 flags/offset field.
const IPV4_FRAG_MASK: u16 = 0x3FFF;
const UDP_HDR_LEN: usize = 8;

/// Why a frame could not be parsed.
#[derive(Clone, Copy)]
pub(crate) enum ParseError {
    /// The frame ends before the Ethernet header (and tag) does.
    TruncatedEthernet,
    /// The frame ends before the IPv4 header does.
    TruncatedIpv4,
    /// IPv4 ethertype but version is not 4, or header length below 20 bytes.
    BadIpv4Header,
    /// The frame ends before the UDP header does.
    TruncatedUdp,
}

impl ParseError {
    /// A short text for the debug log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            ParseError::TruncatedEthernet => "truncated ethernet header",
            ParseError::TruncatedIpv4 => "truncated ipv4 header",
            ParseError::BadIpv4Header => "bad ipv4 version or header length",
            ParseError::TruncatedUdp => "truncated udp header",
        }
    }
}

/// Returns a pointer to a `T` at `offset` into the frame, or `None` when it would reach past the
/// end of the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a big-endian u16 at `offset`.
#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: ptr_at checked that both bytes are inside the frame.
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// Reads the byte at `offset`.
#[inline(always)]
fn u8_at(ctx: &XdpContext, offset: usize) -> Option<u8> {
    let p = ptr_at::<u8>(ctx, offset)?;
    // SAFETY: ptr_at checked that the byte is inside the frame.
    Some(unsafe { *p })
}

/// What the program needs to know of a frame.
#[derive(Clone, Copy)]
pub(crate) struct Frame {
    /// Its class.
    pub class: PacketClass,
    /// IPv4 destination, as in the header (network byte order read as-is).
    pub dst_ip_be: u32,
    /// Offset of the UDP payload (0 when not UDP).
    pub payload: usize,
    /// It carries an 802.1Q/802.1ad tag: it belongs to a VLAN on top of this interface, not
    /// to the network the daemon serves here.
    pub tagged: bool,
}

const BOOTP_CHADDR_OFFSET: usize = 28;
const BOOTP_OPTIONS_OFFSET: usize = 240;
/// Bytes of a marker: option code, length, four bytes of value.
const MARKER_BYTES: usize = 6;
/// Bytes of options copied out of the frame to walk (a power of two: indexes are masked).
const OPTIONS_COPIED: usize = 256;
const OPTIONS_INDEX_MASK: usize = OPTIONS_COPIED - 1;
const OPT_VENDOR_CLASS: u8 = 60;
const OPT_USER_CLASS: u8 = 77;
/// `PXEC`, `HTTP`, `iPXE` as big-endian u32.
const PREFIX_PXE: u32 = u32::from_be_bytes(*b"PXEC");
const PREFIX_HTTP: u32 = u32::from_be_bytes(*b"HTTP");
const PREFIX_IPXE: u32 = u32::from_be_bytes(*b"iPXE");

/// The client hardware address of a BOOTP/DHCP payload at `payload`, as a u64 (low 48 bits).
#[inline(always)]
pub(crate) fn chaddr(ctx: &XdpContext, payload: usize) -> Option<u64> {
    let p = ptr_at::<[u8; 6]>(ctx, payload + BOOTP_CHADDR_OFFSET)?;
    // SAFETY: ptr_at checked that the six bytes are inside the frame.
    let m = unsafe { *p };
    Some(u64::from_be_bytes([
        0, 0, m[0], m[1], m[2], m[3], m[4], m[5],
    ]))
}

/// Whether the DHCP request at `payload` comes from a PXE ROM, UEFI HTTP Boot or iPXE: option
/// 60 starting `PXEC(lient)` or `HTTP(Client)`, or option 77 `iPXE` (iPXE also sends option
/// 175, but always with option 77). The options are first copied to the stack
/// (bpf_xdp_load_bytes), so the scan indexes a fixed buffer with masked indexes instead of
/// packet pointers at variable offsets.
#[inline(always)]
pub(crate) fn dhcp_is_pxe(ctx: &XdpContext, payload: usize) -> bool {
    let start = payload + BOOTP_OPTIONS_OFFSET;
    let avail = ctx.data_end().saturating_sub(ctx.data() + start);
    if avail == 0 {
        return false;
    }
    // 1..=256 in a form the verifier can see (a zero-length copy is refused).
    let len = ((avail.min(OPTIONS_COPIED) - 1) & OPTIONS_INDEX_MASK) + 1;
    let mut buf = [0u8; OPTIONS_COPIED];
    // SAFETY: the helper copies `len` (1..=256) bytes at `start` of this frame into `buf`,
    // which has room for 256; it fails rather than read past the frame.
    let copied = unsafe {
        aya_ebpf::helpers::bpf_xdp_load_bytes(
            ctx.ctx,
            start as u32,
            buf.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if copied != 0 {
        return false;
    }
    let at = |i: usize| buf[i & OPTIONS_INDEX_MASK];
    // A scan for the markers rather than a walk from option to option: the index does not
    // depend on the data, so the verifier checks each step once instead of every path through
    // option lengths. A marker inside another option's value would be a harmless false positive
    // (the daemon decides for itself); options past the first 256 bytes are not looked at.
    let mut j = 0;
    while j < OPTIONS_COPIED - MARKER_BYTES {
        if j + MARKER_BYTES > len {
            return false;
        }
        let code = at(j);
        if code == OPT_VENDOR_CLASS || code == OPT_USER_CLASS {
            let head = u32::from_be_bytes([at(j + 2), at(j + 3), at(j + 4), at(j + 5)]);
            let long_enough = at(j + 1) >= 4;
            let vendor = code == OPT_VENDOR_CLASS && (head == PREFIX_PXE || head == PREFIX_HTTP);
            let user = code == OPT_USER_CLASS && head == PREFIX_IPXE;
            if long_enough && (vendor || user) {
                return true;
            }
        }
        j += 1;
    }
    false
}

/// Classifies one frame.
#[inline(always)]
pub(crate) fn classify(ctx: &XdpContext, config: &XdpConfig) -> Result<Frame, ParseError> {
    let mut l3 = ETH_HDR_LEN;
    let mut ethertype = be16_at(ctx, 12).ok_or(ParseError::TruncatedEthernet)?;
    let tagged = ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD;
    let other = |dst| Frame {
        class: PacketClass::Other,
        dst_ip_be: dst,
        payload: 0,
        tagged,
    };
    if tagged {
        ethertype = be16_at(ctx, l3 + 2).ok_or(ParseError::TruncatedEthernet)?;
        l3 += VLAN_HDR_LEN;
    }
    if ethertype != ETH_P_IPV4 {
        return Ok(other(0));
    }

    // Version/IHL, then the fixed part of the header must be there.
    ptr_at::<[u8; IPV4_MIN_HDR_LEN]>(ctx, l3).ok_or(ParseError::TruncatedIpv4)?;
    let ver_ihl = u8_at(ctx, l3).ok_or(ParseError::TruncatedIpv4)?;
    let ihl = usize::from(ver_ihl & 0x0F) * 4;
    if ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HDR_LEN {
        return Err(ParseError::BadIpv4Header);
    }
    let frag = be16_at(ctx, l3 + 6).ok_or(ParseError::TruncatedIpv4)?;
    let proto = u8_at(ctx, l3 + 9).ok_or(ParseError::TruncatedIpv4)?;
    let dst = ptr_at::<[u8; 4]>(ctx, l3 + 16).ok_or(ParseError::TruncatedIpv4)?;
    // SAFETY: ptr_at checked the four bytes.
    let dst_ip_be = u32::from_ne_bytes(unsafe { *dst });
    if proto != IPPROTO_UDP {
        return Ok(other(dst_ip_be));
    }
    // Fragments go to the kernel, which reassembles them: the first one alone is not a whole
    // DHCP or TFTP message, and later ones carry no UDP header at all.
    if frag & IPV4_FRAG_MASK != 0 {
        return Ok(other(dst_ip_be));
    }

    let l4 = l3 + ihl;
    ptr_at::<[u8; UDP_HDR_LEN]>(ctx, l4).ok_or(ParseError::TruncatedUdp)?;
    let dst_port = be16_at(ctx, l4 + 2).ok_or(ParseError::TruncatedUdp)?;
    Ok(Frame {
        class: classify_udp_dst(dst_port, config),
        dst_ip_be,
        payload: l4 + UDP_HDR_LEN,
        tagged,
    })
}
