//! The BOOTP/DHCP wire layout (RFC 2131, 2132): header sizes and offsets, the magic cookie and
//! the option codes. The request reader and the reply writer both import it; it imports nothing.

use std::net::Ipv4Addr;

pub use pxe_common::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_BOOT_SERVER_PORT};

/// Fixed BOOTP header plus the magic cookie.
pub const DHCP_MIN_BYTES: usize = 240;
/// Largest request accepted: an Ethernet MTU's worth. Real clients stay far below.
pub const DHCP_MAX_REQUEST_BYTES: usize = 1500;
/// RFC 2131 magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the magic cookie.
pub const MAGIC_OFFSET: usize = 236;
/// Ethernet hardware type and address length: the only link this server boots.
pub const HTYPE_ETHERNET: u8 = 1;
pub const HLEN_ETHERNET: u8 = 6;
/// Offsets of the BOOTP header fields read and written (RFC 2131 2), requests and replies.
pub const XID_OFFSET: usize = 4;
pub const FLAGS_OFFSET: usize = 10;
pub const CIADDR_OFFSET: usize = 12;
pub const YIADDR_OFFSET: usize = 16;
pub const SIADDR_OFFSET: usize = 20;
pub const GIADDR_OFFSET: usize = 24;
pub const CHADDR_OFFSET: usize = 28;
pub const FILE_OFFSET: usize = 108;
/// op of a client's message.
pub const BOOTREQUEST: u8 = 1;
/// Option code: Requested IP address.
pub const OPTION_REQUESTED_IP: u8 = 50;
/// Option code: Client identifier.
pub const OPTION_CLIENT_ID: u8 = 61;
/// Option code: User class (iPXE says `iPXE` here).
pub const OPTION_USER_CLASS: u8 = 77;
/// Option code: Client system architecture (RFC 4578).
pub const OPTION_CLIENT_ARCH: u8 = 93;
/// Option 175: iPXE's encapsulated options; only iPXE sends it (and a full server's offer to
/// iPXE).
pub const OPTION_IPXE_ENCAP: u8 = 175;
/// Option 82's sub-options: agent circuit id and remote id (RFC 3046).
pub const RELAY_CIRCUIT_ID: u8 = 1;
pub const RELAY_REMOTE_ID: u8 = 2;

/// Longest boot file name the BOOTP `file` field holds (128 bytes with its NUL).
pub const FILE_FIELD_MAX: usize = 127;
/// op of a server's message.
pub const BOOTREPLY: u8 = 2;
/// flags with the broadcast bit.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Option code: Subnet mask.
pub const OPTION_SUBNET_MASK: u8 = 1;
/// Option code: Routers.
pub const OPTION_ROUTER: u8 = 3;
/// Option code: Name servers.
pub const OPTION_DNS: u8 = 6;
/// Option code: Host name.
pub const OPTION_HOSTNAME: u8 = 12;
/// Option code: Domain name.
pub const OPTION_DOMAIN_NAME: u8 = 15;
/// Option code: Vendor-specific information (PXE sub-options).
pub const OPTION_VENDOR_EXTENSIONS: u8 = 43;
/// Option code: Lease time, seconds.
pub const OPTION_LEASE_TIME: u8 = 51;
/// Option code: DHCP message type.
pub const OPTION_MESSAGE_TYPE: u8 = 53;
/// Option code: Server identifier.
pub const OPTION_SERVER_ID: u8 = 54;
/// Option code: Message (why a NAK).
pub const OPTION_MESSAGE: u8 = 56;
/// Option code: Renewal (T1) time, seconds.
pub const OPTION_RENEWAL_TIME: u8 = 58;
/// Option code: Rebinding (T2) time, seconds.
pub const OPTION_REBINDING_TIME: u8 = 59;
/// Option code: Vendor class identifier.
pub const OPTION_VENDOR_CLASS: u8 = 60;
/// Option code: TFTP server name.
pub const OPTION_TFTP_SERVER: u8 = 66;
/// Option code: Boot file name.
pub const OPTION_BOOTFILE: u8 = 67;
/// Option code: Relay agent information (RFC 3046).
pub const OPTION_RELAY_AGENT_INFO: u8 = 82;
/// Option code: Client machine identifier (the GUID).
pub const OPTION_CLIENT_MACHINE_ID: u8 = 97;

/// The address at `at` in a BOOTP header (`bytes` holds at least the fixed header).
pub fn header_ip(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}
