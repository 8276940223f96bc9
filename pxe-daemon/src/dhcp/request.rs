//! Checking and reading one DHCP request: bytes in, a [`Request`] or a [`DropReason`] out.

use std::net::Ipv4Addr;

use dhcproto::{
    v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode},
    Decodable, Decoder,
};

use crate::boot::{arch_from_vendor_class, classify_firmware, Arch, MacAddr, Machine};

/// Fixed BOOTP header plus the magic cookie.
pub const DHCP_MIN_BYTES: usize = 240;
/// Largest request accepted: an Ethernet MTU's worth. Real clients stay far below.
pub const DHCP_MAX_REQUEST_BYTES: usize = 1500;
/// RFC 2131 magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the magic cookie.
const MAGIC_OFFSET: usize = 236;
/// Ethernet hardware type and address length: the only link this server boots.
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;
/// Option 175: iPXE's encapsulated options; only iPXE sends it.
const OPTION_IPXE_ENCAP: u8 = 175;

/// Why a datagram was dropped without an answer. Bounded: used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the BOOTP header and magic cookie.
    Truncated,
    /// Longer than [`DHCP_MAX_REQUEST_BYTES`].
    Oversized,
    /// op is not BOOTREQUEST (a reply, or garbage).
    WrongOp,
    /// htype/hlen is not Ethernet's 1/6.
    WrongHlen,
    /// No RFC 2131 magic cookie.
    BadMagic,
    /// An option runs past the end of the packet, or cannot be decoded.
    BadOptions,
    /// No option 53.
    NoMessageType,
    /// Option 53 holds a type a server does not take (OFFER, ACK, ...) or an unknown one.
    UnexpectedMessageType,
}

impl DropReason {
    /// Every reason, for metrics.
    pub const ALL: [DropReason; 8] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::WrongOp,
        DropReason::WrongHlen,
        DropReason::BadMagic,
        DropReason::BadOptions,
        DropReason::NoMessageType,
        DropReason::UnexpectedMessageType,
    ];

    /// Metric label.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::WrongOp => "wrong_op",
            DropReason::WrongHlen => "wrong_hlen",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadOptions => "bad_options",
            DropReason::NoMessageType => "no_message_type",
            DropReason::UnexpectedMessageType => "unexpected_message_type",
        }
    }
}

/// The client message types a server handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// DHCPDISCOVER.
    Discover,
    /// DHCPREQUEST.
    Request,
    /// DHCPDECLINE.
    Decline,
    /// DHCPRELEASE.
    Release,
    /// DHCPINFORM.
    Inform,
}

impl RequestType {
    /// Every type, for metrics.
    pub const ALL: [RequestType; 5] = [
        RequestType::Discover,
        RequestType::Request,
        RequestType::Decline,
        RequestType::Release,
        RequestType::Inform,
    ];

    /// Metric label.
    pub const fn label(self) -> &'static str {
        match self {
            RequestType::Discover => "discover",
            RequestType::Request => "request",
            RequestType::Decline => "decline",
            RequestType::Release => "release",
            RequestType::Inform => "inform",
        }
    }
}

/// A checked client request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The decoded message.
    pub msg: Message,
    /// Option 53.
    pub kind: RequestType,
    /// What it says about the machine.
    pub machine: Machine,
}

impl Request {
    /// Checks and decodes `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Request, DropReason> {
        if bytes.len() < DHCP_MIN_BYTES {
            return Err(DropReason::Truncated);
        }
        if bytes.len() > DHCP_MAX_REQUEST_BYTES {
            return Err(DropReason::Oversized);
        }
        if bytes[0] != 1 {
            return Err(DropReason::WrongOp);
        }
        if bytes[1] != HTYPE_ETHERNET || bytes[2] != HLEN_ETHERNET {
            return Err(DropReason::WrongHlen);
        }
        if bytes[MAGIC_OFFSET..DHCP_MIN_BYTES] != MAGIC_COOKIE {
            return Err(DropReason::BadMagic);
        }
        check_options(&bytes[DHCP_MIN_BYTES..])?;
        let msg = Message::decode(&mut Decoder::new(bytes)).map_err(|_| DropReason::BadOptions)?;
        if msg.opcode() != Opcode::BootRequest {
            return Err(DropReason::WrongOp);
        }
        let kind = match msg.opts().msg_type() {
            None => return Err(DropReason::NoMessageType),
            Some(MessageType::Discover) => RequestType::Discover,
            Some(MessageType::Request) => RequestType::Request,
            Some(MessageType::Decline) => RequestType::Decline,
            Some(MessageType::Release) => RequestType::Release,
            Some(MessageType::Inform) => RequestType::Inform,
            Some(_) => return Err(DropReason::UnexpectedMessageType),
        };
        let machine = machine_of(&msg);
        Ok(Request { msg, kind, machine })
    }

    /// Option 60, if sent.
    pub fn vendor_class(&self) -> Option<&[u8]> {
        match self.msg.opts().get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(v),
            _ => None,
        }
    }

    /// Option 50, if sent.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// Option 54, if sent.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// Option 61, if sent.
    pub fn client_id(&self) -> Option<&[u8]> {
        match self.msg.opts().get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) => Some(id),
            _ => None,
        }
    }

    /// Option 12, if sent.
    pub fn hostname(&self) -> Option<&str> {
        match self.msg.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(h),
            _ => None,
        }
    }

    /// Option 82 as received, to echo it to the relay.
    pub fn relay_info(&self) -> Option<&DhcpOption> {
        self.msg.opts().get(OptionCode::RelayAgentInformation)
    }
}

/// Walks the options: each must fit in the packet (a decoder that stops quietly at a cut
/// option would read half a request as a whole one). A list that fills the packet exactly but
/// lacks option 255 is accepted, as other servers do.
fn check_options(mut opts: &[u8]) -> Result<(), DropReason> {
    const PAD: u8 = 0;
    const END: u8 = 255;
    loop {
        match opts {
            [] | [END, ..] => return Ok(()),
            [PAD, rest @ ..] => opts = rest,
            [_, len, rest @ ..] if usize::from(*len) <= rest.len() => {
                opts = &rest[usize::from(*len)..];
            }
            _ => return Err(DropReason::BadOptions),
        }
    }
}

fn machine_of(msg: &Message) -> Machine {
    let opts = msg.opts();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let vendor = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.as_slice()),
        _ => None,
    };
    let user_class = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(u)) => Some(u.as_slice()),
        _ => None,
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(Arch(u16::from(*a))),
        _ => vendor.and_then(arch_from_vendor_class),
    };
    let has_ipxe = opts.get(OptionCode::from(OPTION_IPXE_ENCAP)).is_some();
    let guid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(g)) => Some(g.clone()),
        _ => None,
    };
    let (circuit_id, remote_id) = match opts.get(OptionCode::RelayAgentInformation) {
        Some(DhcpOption::RelayAgentInformation(info)) => {
            use v4::relay::{RelayCode, RelayInfo};
            let circuit = match info.get(RelayCode::AgentCircuitId) {
                Some(RelayInfo::AgentCircuitId(c)) => Some(c.clone()),
                _ => None,
            };
            let remote = match info.get(RelayCode::AgentRemoteId) {
                Some(RelayInfo::AgentRemoteId(r)) => Some(r.clone()),
                _ => None,
            };
            (circuit, remote)
        }
        _ => (None, None),
    };
    let giaddr = msg.giaddr();
    Machine {
        mac: MacAddr(mac),
        arch,
        firmware: classify_firmware(vendor, user_class, has_ipxe, arch),
        guid,
        relay: (!giaddr.is_unspecified()).then_some(giaddr),
        circuit_id,
        remote_id,
    }
}
