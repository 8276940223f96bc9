//! Checking and reading one DHCP request: bytes in, a [`Request`] or a [`DropReason`] out.

use std::net::Ipv4Addr;

use super::wire::*;
use crate::boot::{arch_from_vendor_class, classify_firmware, Arch, MacAddr, Machine};

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

/// A checked client request, read in place: the BOOTP header fields and the options the
/// server looks at, borrowed from the datagram. Reading one allocates nothing but what the
/// [`Machine`] keeps (option 97 and the relay's sub-options, when sent) and the value of an
/// option sent in parts; a rack's DISCOVERs are read on the datapath thread at line rate.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    bytes: &'a [u8],
    options: Options<'a>,
    /// Option 53.
    pub kind: RequestType,
    /// What it says about the machine.
    pub machine: Machine,
}

/// Where the options sit in a request, by code. An option sent more than once is one value,
/// its parts joined in order (RFC 3396: a relay's long option 82, a long vendor class).
#[derive(Clone, Debug)]
struct Options<'a> {
    /// For each code, where its (first) value starts in `opts` (0: not sent; a value never
    /// starts at 0, its code and length come first). The length is the byte before.
    at: [u16; 256],
    opts: &'a [u8],
    /// The joined values of codes sent more than once (empty, unallocated, in the usual
    /// request).
    joined: Vec<(u8, Vec<u8>)>,
}

impl<'a> Options<'a> {
    /// Walks the option area: each option must fit in the packet (a decoder that stops quietly
    /// at a cut option would read half a request as a whole one). A list that fills the packet
    /// exactly but lacks option 255 is accepted, as other servers do.
    fn index(opts: &'a [u8]) -> Result<Options<'a>, DropReason> {
        let mut at = [0u16; 256];
        let mut joined: Vec<(u8, Vec<u8>)> = Vec::new();
        // One pass, whatever the request repeats: a code's parts are appended as they come.
        let mut joined_at = [u8::MAX; 256];
        for (code, start, len) in walk(opts) {
            let code = code?;
            let slot = &mut at[usize::from(code)];
            if *slot == 0 {
                // Fits: a request is at most DHCP_MAX_REQUEST_BYTES long.
                *slot = u16::try_from(start).unwrap_or(u16::MAX);
                continue;
            }
            let part = &opts[start..start + len];
            match joined_at[usize::from(code)] {
                u8::MAX => {
                    // The first repeat: the value so far is the first part.
                    let first = usize::from(*slot);
                    let first = &opts[first..first + usize::from(opts[first - 1])];
                    // At most 254 codes repeat (0 and 255 carry no value).
                    joined_at[usize::from(code)] = u8::try_from(joined.len()).unwrap_or(0);
                    joined.push((code, [first, part].concat()));
                }
                i => joined[usize::from(i)].1.extend_from_slice(part),
            }
        }
        Ok(Options { at, opts, joined })
    }

    fn get(&self, code: u8) -> Option<&[u8]> {
        let start = usize::from(self.at[usize::from(code)]);
        if start == 0 {
            return None;
        }
        if !self.joined.is_empty() {
            if let Some((_, value)) = self.joined.iter().find(|(c, _)| *c == code) {
                return Some(value);
            }
        }
        let len = usize::from(self.opts[start - 1]);
        self.opts.get(start..start + len)
    }

    /// An address option: absent, or exactly four bytes (else the request is malformed).
    fn ip(&self, code: u8) -> Result<Option<Ipv4Addr>, DropReason> {
        match self.get(code) {
            None => Ok(None),
            Some(&[a, b, c, d]) => Ok(Some(Ipv4Addr::new(a, b, c, d))),
            Some(_) => Err(DropReason::BadOptions),
        }
    }
}

/// The options of `opts` as (code, value start, value length), up to option 255 or the end;
/// a cut option ends the walk with `Err(BadOptions)` as its code.
fn walk(opts: &[u8]) -> impl Iterator<Item = (Result<u8, DropReason>, usize, usize)> + '_ {
    const PAD: u8 = 0;
    const END: u8 = 255;
    let mut i = 0;
    std::iter::from_fn(move || loop {
        let code = *opts.get(i)?;
        match code {
            END => return None,
            PAD => i += 1,
            _ => {
                let start = i + 2;
                let Some(len) = opts.get(i + 1).map(|l| usize::from(*l)) else {
                    i = opts.len();
                    return Some((Err(DropReason::BadOptions), 0, 0));
                };
                if start + len > opts.len() {
                    i = opts.len();
                    return Some((Err(DropReason::BadOptions), 0, 0));
                }
                i = start + len;
                return Some((Ok(code), start, len));
            }
        }
    })
}

impl<'a> Request<'a> {
    /// Checks and reads `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Request<'a>, DropReason> {
        if bytes.len() < DHCP_MIN_BYTES {
            return Err(DropReason::Truncated);
        }
        if bytes.len() > DHCP_MAX_REQUEST_BYTES {
            return Err(DropReason::Oversized);
        }
        if bytes[0] != BOOTREQUEST {
            return Err(DropReason::WrongOp);
        }
        if bytes[1] != HTYPE_ETHERNET || bytes[2] != HLEN_ETHERNET {
            return Err(DropReason::WrongHlen);
        }
        if bytes[MAGIC_OFFSET..DHCP_MIN_BYTES] != MAGIC_COOKIE {
            return Err(DropReason::BadMagic);
        }
        let options = Options::index(&bytes[DHCP_MIN_BYTES..])?;
        let kind = match options.get(OPTION_MESSAGE_TYPE) {
            None => return Err(DropReason::NoMessageType),
            Some([1]) => RequestType::Discover,
            Some([3]) => RequestType::Request,
            Some([4]) => RequestType::Decline,
            Some([7]) => RequestType::Release,
            Some([8]) => RequestType::Inform,
            Some([_]) => return Err(DropReason::UnexpectedMessageType),
            Some(_) => return Err(DropReason::BadOptions),
        };
        // The addresses the lease logic reads must be whole: a cut server identifier would
        // make an answer to another server's offer look like a rebooting client's request.
        options.ip(OPTION_REQUESTED_IP)?;
        options.ip(OPTION_SERVER_ID)?;
        let mut req = Request {
            bytes,
            options,
            kind,
            // Read from the request just made, below.
            machine: Machine::known_by_mac(MacAddr([0; 6])),
        };
        req.machine = req.machine_of();
        Ok(req)
    }

    /// The transaction id.
    pub fn xid(&self) -> u32 {
        let b = &self.bytes[XID_OFFSET..];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The flags field (bit 15: broadcast).
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.bytes[FLAGS_OFFSET], self.bytes[FLAGS_OFFSET + 1]])
    }

    /// The client's address, when it has one.
    pub fn ciaddr(&self) -> Ipv4Addr {
        header_ip(self.bytes, CIADDR_OFFSET)
    }

    /// The relay's address, when relayed.
    pub fn giaddr(&self) -> Ipv4Addr {
        header_ip(self.bytes, GIADDR_OFFSET)
    }

    /// The client's hardware address (chaddr's first six bytes: Ethernet, checked at parse).
    pub fn chaddr(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.bytes[CHADDR_OFFSET..CHADDR_OFFSET + 6]);
        mac
    }

    /// Option 60, if sent.
    pub fn vendor_class(&self) -> Option<&[u8]> {
        self.options.get(OPTION_VENDOR_CLASS)
    }

    /// Option 50, if sent (four bytes long: checked at parse).
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.options.ip(OPTION_REQUESTED_IP).ok().flatten()
    }

    /// Option 54, if sent (four bytes long: checked at parse).
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.options.ip(OPTION_SERVER_ID).ok().flatten()
    }

    /// Option 61, if sent.
    pub fn client_id(&self) -> Option<&[u8]> {
        self.options.get(OPTION_CLIENT_ID)
    }

    /// Option 12, if sent and text.
    pub fn hostname(&self) -> Option<&str> {
        std::str::from_utf8(self.options.get(OPTION_HOSTNAME)?).ok()
    }

    /// Option 82's value as received, to echo it to the relay.
    pub fn relay_info(&self) -> Option<&[u8]> {
        self.options.get(OPTION_RELAY_AGENT_INFO)
    }

    fn machine_of(&self) -> Machine {
        let opts = &self.options;
        let vendor = opts.get(OPTION_VENDOR_CLASS);
        let user_class = opts.get(OPTION_USER_CLASS);
        // RFC 4578: a list of 16-bit types; the first is the one the firmware runs.
        let arch = match opts.get(OPTION_CLIENT_ARCH) {
            Some([hi, lo, ..]) => Some(Arch(u16::from_be_bytes([*hi, *lo]))),
            _ => vendor.and_then(arch_from_vendor_class),
        };
        let has_ipxe = opts.get(OPTION_IPXE_ENCAP).is_some();
        let (mut circuit_id, mut remote_id) = (None, None);
        if let Some(info) = self.relay_info() {
            for (code, value) in sub_options(info) {
                match code {
                    RELAY_CIRCUIT_ID if circuit_id.is_none() => circuit_id = Some(value.to_vec()),
                    RELAY_REMOTE_ID if remote_id.is_none() => remote_id = Some(value.to_vec()),
                    _ => {}
                }
            }
        }
        let giaddr = self.giaddr();
        Machine {
            mac: MacAddr(self.chaddr()),
            arch,
            firmware: classify_firmware(vendor, user_class, has_ipxe, arch),
            guid: opts.get(OPTION_CLIENT_MACHINE_ID).map(<[u8]>::to_vec),
            relay: (!giaddr.is_unspecified()).then_some(giaddr),
            circuit_id,
            remote_id,
        }
    }
}

/// The (code, value) sub-options of an encapsulated option such as 82; stops at the first
/// one that does not fit.
fn sub_options(mut value: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || match value {
        [code, len, rest @ ..] if usize::from(*len) <= rest.len() => {
            let (v, tail) = rest.split_at(usize::from(*len));
            value = tail;
            Some((*code, v))
        }
        _ => None,
    })
}
