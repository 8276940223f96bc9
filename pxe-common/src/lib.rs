//! Types shared by the XDP program (`pxe-ebpf`) and the daemon (`pxe-daemon`).
//!
//! The map types are `#[repr(C)]` with no implicit padding, so that the eBPF side and userspace
//! agree on the bytes of every map key and value. [`firmware`] is the table of what each kind
//! of boot firmware puts in its DHCP requests; [`MacAddr`] the one MAC address type.
#![no_std]

pub mod firmware;
pub mod mac;

pub use mac::MacAddr;

/// UDP port a DHCP server listens on.
pub const DHCP_SERVER_PORT: u16 = 67;
/// UDP port a DHCP client listens on.
pub const DHCP_CLIENT_PORT: u16 = 68;
/// UDP port of PXE boot-server discovery (the proxy-DHCP second step).
pub const PXE_BOOT_SERVER_PORT: u16 = 4011;
/// UDP port of TFTP read/write requests.
pub const TFTP_PORT: u16 = 69;

/// First port of the default TFTP transfer port range (one server port per transfer).
pub const TFTP_TRANSFER_PORT_MIN_DEFAULT: u16 = 30_000;
/// Last port of the default TFTP transfer port range.
pub const TFTP_TRANSFER_PORT_MAX_DEFAULT: u16 = 30_999;

/// What the XDP program decided a frame is. The discriminant is the index into the
/// [`CLASS_COUNTERS_MAP`] per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// UDP to port 67: DHCP from clients (or relays).
    Dhcp = 0,
    /// UDP to port 4011: PXE boot-server discovery.
    PxeDiscovery = 1,
    /// UDP to port 69: TFTP read/write requests.
    Tftp = 2,
    /// UDP to a port of the configured TFTP transfer range: ACKs and errors of transfers.
    TftpTransfer = 3,
    /// Anything else: other protocols, other ports, non-first IPv4 fragments.
    Other = 4,
    /// A frame too short for the headers it announces, or an IPv4 header that is not valid.
    Malformed = 5,
}

/// Number of [`PacketClass`] values: the size of the class counter array.
pub const PACKET_CLASS_COUNT: u32 = 6;

impl PacketClass {
    /// Every class, in counter-index order.
    pub const ALL: [PacketClass; PACKET_CLASS_COUNT as usize] = [
        PacketClass::Dhcp,
        PacketClass::PxeDiscovery,
        PacketClass::Tftp,
        PacketClass::TftpTransfer,
        PacketClass::Other,
        PacketClass::Malformed,
    ];

    /// The label value used for this class in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            PacketClass::Dhcp => "dhcp",
            PacketClass::PxeDiscovery => "pxe_discovery",
            PacketClass::Tftp => "tftp",
            PacketClass::TftpTransfer => "tftp_transfer",
            PacketClass::Other => "other",
            PacketClass::Malformed => "malformed",
        }
    }
}

/// What the XDP program did with a frame. With the class, it indexes [`VERDICT_COUNTERS_MAP`]
/// (`class * VERDICT_COUNT + verdict`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passed to the kernel's stack.
    Pass = 0,
    /// Steered to the daemon's AF_XDP socket of the receiving queue (or passed, if that queue
    /// has no socket: the XSKMAP falls back to XDP_PASS).
    Steer = 1,
    /// Dropped: the sender's MAC is over its rate (storm shedding).
    RateLimited = 2,
}

/// Number of [`Verdict`] values.
pub const VERDICT_COUNT: u32 = 3;

impl Verdict {
    /// Every verdict, in counter-index order.
    pub const ALL: [Verdict; VERDICT_COUNT as usize] =
        [Verdict::Pass, Verdict::Steer, Verdict::RateLimited];

    /// The label value used for this verdict in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Steer => "steer",
            Verdict::RateLimited => "rate_limited",
        }
    }
}

/// Name of the per-CPU array of `u64` counters per (class, verdict).
pub const VERDICT_COUNTERS_MAP: &str = "VERDICT_COUNTERS";
/// Name of the XSKMAP: receive queue index to AF_XDP socket.
pub const XSKS_MAP: &str = "XSKS";
/// Entries of the XSKMAP: receive queues served at most.
pub const XSKS_MAX_QUEUES: u32 = 64;
/// Name of the LRU map of per-MAC token buckets.
pub const RATE_MAP: &str = "RATE";
/// Entries of the rate map: senders tracked at once (the least recently seen are forgotten).
pub const RATE_MAP_ENTRIES: u32 = 65_536;

/// [`XdpConfig::flags`]: steer DHCP (port 67, PXE requests only unless
/// [`XDP_FLAG_FULL_DHCP`]) and port 4011 to the AF_XDP sockets.
pub const XDP_FLAG_STEER_DHCP: u32 = 1;
/// [`XdpConfig::flags`]: full-DHCP mode, steer every DHCP request (not only PXE ones).
pub const XDP_FLAG_FULL_DHCP: u32 = 2;
/// [`XdpConfig::flags`]: steer TFTP (port 69 and the transfer port range) to the AF_XDP sockets.
pub const XDP_FLAG_STEER_TFTP: u32 = 4;

/// A per-MAC token bucket (value of [`RATE_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenBucket {
    /// Tokens left, in thousandths of a frame.
    pub milli_tokens: u64,
    /// When the bucket was last refilled, ns since boot.
    pub last_ns: u64,
}

/// Name of the per-CPU array of `u64` frame counters, indexed by [`PacketClass`].
pub const CLASS_COUNTERS_MAP: &str = "CLASS_COUNTERS";
/// Name of the one-entry array holding the [`XdpConfig`] the daemon writes at start.
pub const CONFIG_MAP: &str = "CONFIG";
/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "pxe_xdp";

/// Settings the daemon hands the XDP program through [`CONFIG_MAP`] (index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// First UDP port of the TFTP transfer range (host byte order).
    pub tftp_port_min: u16,
    /// Last UDP port of the TFTP transfer range, inclusive (host byte order).
    pub tftp_port_max: u16,
    /// [`XDP_FLAG_STEER_DHCP`], [`XDP_FLAG_STEER_TFTP`], [`XDP_FLAG_FULL_DHCP`] (u32, not
    /// bools: no padding).
    pub flags: u32,
    /// The server's IPv4 address, network byte order as in the header (0: any).
    pub server_ip_be: u32,
    /// DHCP and 4011 frames a MAC may send per second before they are dropped (0: no limit).
    pub rate_per_sec: u32,
    /// Frames a MAC may send in a burst above its rate.
    pub rate_burst: u32,
    /// Reserved (keeps the struct a multiple of 8 bytes).
    pub reserved: u32,
}

impl XdpConfig {
    /// The configuration used until the daemon writes one: the default transfer range.
    pub const DEFAULT: XdpConfig = XdpConfig {
        tftp_port_min: TFTP_TRANSFER_PORT_MIN_DEFAULT,
        tftp_port_max: TFTP_TRANSFER_PORT_MAX_DEFAULT,
        flags: 0,
        server_ip_be: 0,
        rate_per_sec: 0,
        rate_burst: 0,
        reserved: 0,
    };
}

/// Classifies a UDP datagram by its destination port. Shared by the XDP program and the
/// userspace tests so that both agree on the rules.
#[inline(always)]
pub fn classify_udp_dst(dst_port: u16, config: &XdpConfig) -> PacketClass {
    match dst_port {
        DHCP_SERVER_PORT => PacketClass::Dhcp,
        PXE_BOOT_SERVER_PORT => PacketClass::PxeDiscovery,
        TFTP_PORT => PacketClass::Tftp,
        p if p >= config.tftp_port_min && p <= config.tftp_port_max => PacketClass::TftpTransfer,
        _ => PacketClass::Other,
    }
}

#[cfg(feature = "user")]
// SAFETY: XdpConfig is repr(C), has no padding (u16 + u16 + 5 x u32) and every bit pattern is
// valid.
unsafe impl aya::Pod for XdpConfig {}

#[cfg(feature = "user")]
// SAFETY: TokenBucket is repr(C), two u64, no padding, every bit pattern valid.
unsafe impl aya::Pod for TokenBucket {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn classifies_by_destination_port() {
        let c = XdpConfig::DEFAULT;
        assert_eq!(classify_udp_dst(67, &c), PacketClass::Dhcp);
        assert_eq!(classify_udp_dst(4011, &c), PacketClass::PxeDiscovery);
        assert_eq!(classify_udp_dst(69, &c), PacketClass::Tftp);
        assert_eq!(classify_udp_dst(30_000, &c), PacketClass::TftpTransfer);
        assert_eq!(classify_udp_dst(30_999, &c), PacketClass::TftpTransfer);
        assert_eq!(classify_udp_dst(31_000, &c), PacketClass::Other);
        assert_eq!(classify_udp_dst(68, &c), PacketClass::Other);
    }

    #[test]
    fn class_indices_match_all_order() {
        for (i, class) in PacketClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
        assert_eq!(core::mem::size_of::<XdpConfig>(), 24);
        assert_eq!(core::mem::size_of::<TokenBucket>(), 16);
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
    }
}
