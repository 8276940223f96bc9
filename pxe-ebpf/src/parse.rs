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
pub enum ParseError {
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
    pub fn reason(self) -> &'static str {
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

/// Classifies one frame.
#[inline(always)]
pub fn classify(ctx: &XdpContext, config: &XdpConfig) -> Result<PacketClass, ParseError> {
    let mut l3 = ETH_HDR_LEN;
    let mut ethertype = be16_at(ctx, 12).ok_or(ParseError::TruncatedEthernet)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16_at(ctx, l3 + 2).ok_or(ParseError::TruncatedEthernet)?;
        l3 += VLAN_HDR_LEN;
    }
    if ethertype != ETH_P_IPV4 {
        return Ok(PacketClass::Other);
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
    if proto != IPPROTO_UDP {
        return Ok(PacketClass::Other);
    }
    // Fragments go to the kernel, which reassembles them: the first one alone is not a whole
    // DHCP or TFTP message, and later ones carry no UDP header at all.
    if frag & IPV4_FRAG_MASK != 0 {
        return Ok(PacketClass::Other);
    }

    let l4 = l3 + ihl;
    ptr_at::<[u8; UDP_HDR_LEN]>(ctx, l4).ok_or(ParseError::TruncatedUdp)?;
    let dst_port = be16_at(ctx, l4 + 2).ok_or(ParseError::TruncatedUdp)?;
    Ok(classify_udp_dst(dst_port, config))
}
