//! Parsing a DHCP answer (OFFER, or the ACK of a port-4011 request) into what an operator checks:
//! who answered, the address offered, the next server, the boot file and the PXE options.
//!
//! Pure functions over bytes. A datagram that is not a well-formed BOOTREPLY is an
//! [`AnswerError`], never a panic: before dhcproto decodes the options, [`check_framing`] walks
//! them, because dhcproto stops silently at a broken option and asserts (in debug builds) on the
//! length of a few fixed-size ones.

use std::net::Ipv4Addr;

use dhcproto::{
    v4::{DhcpOption, DhcpOptions, Message, MessageType, OptionCode, MAGIC},
    Decodable as _, Decoder,
};
use serde::Serialize;

use super::request::BootItem;

/// Length of the fixed BOOTP header, up to the magic cookie.
const HEADER_BYTES: usize = 236;
/// Offset of the first option (after the magic cookie).
const OPTIONS_AT: usize = HEADER_BYTES + MAGIC.len();
/// The `sname` field.
const SNAME: std::ops::Range<usize> = 44..108;
/// The `file` field.
const FILE: std::ops::Range<usize> = 108..236;
/// BOOTREPLY in the `op` field.
const OP_BOOTREPLY: u8 = 2;
/// Option 52 bit: the `file` field carries options.
const OVERLOAD_FILE: u8 = 1;
/// Option 52 bit: the `sname` field carries options.
const OVERLOAD_SNAME: u8 = 2;
/// How many bytes of an undecoded option 43 the table shows.
const VENDOR_HEX_SHOWN_BYTES: usize = 32;
/// The vendor string Raspberry Pi network boot requires in option 43.
pub const RASPBERRY_PI_VENDOR: &str = "Raspberry Pi Boot";

/// PXE sub-options of option 43 (PXE spec 2.1, table 2-1).
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_BOOT_SERVERS: u8 = 8;
const PXE_BOOT_MENU: u8 = 9;
const PXE_MENU_PROMPT: u8 = 10;
const PXE_BOOT_ITEM: u8 = 71;

/// Why a datagram on port 68 is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Shorter than a BOOTP header and the magic cookie.
    #[error("{0} bytes, shorter than a DHCP message (240)")]
    TooShort(usize),
    /// A BOOTREQUEST (another client's), or garbage.
    #[error("op {0} is not BOOTREPLY (2)")]
    NotReply(u8),
    /// Bytes 236-239 are not 99.130.83.99: BOOTP without DHCP options, or garbage.
    #[error("no DHCP magic cookie (bytes 236-239 are {0:?})")]
    NoMagicCookie([u8; 4]),
    /// An option runs past the end of its area, or has a length its type does not allow.
    #[error("malformed options: {0}")]
    BadOptions(String),
    /// dhcproto refused the message.
    #[error("undecodable: {0}")]
    Undecodable(String),
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Option 53; `None` for a BOOTP reply.
    pub message_type: Option<MessageType>,
    /// Transaction id.
    pub xid: u32,
    /// The first six bytes of `chaddr`.
    pub chaddr: [u8; 6],
    /// Where the datagram came from.
    pub source: Ipv4Addr,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// `yiaddr`.
    pub yiaddr: Ipv4Addr,
    /// `siaddr`.
    pub siaddr: Ipv4Addr,
    /// Option 66.
    pub tftp_server_name: Option<String>,
    /// The `file` field, unless option 52 gave it to options.
    pub file_field: Option<String>,
    /// Option 67.
    pub bootfile_option: Option<String>,
    /// Option 60.
    pub vendor_class: Option<String>,
    /// Option 43, decoded when it can be.
    pub vendor: Option<VendorOptions>,
    /// Things worth a remark (e.g. options dhcproto could not decode).
    pub notes: Vec<String>,
}

/// Option 43.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum VendorOptions {
    /// PXE vendor sub-options.
    Pxe(PxeOptions),
    /// The string a Raspberry Pi needs to boot from the network.
    RaspberryPi {
        /// The string as sent (often with trailing spaces).
        text: String,
    },
    /// Anything else, shown as hex.
    Other {
        /// The bytes in hex.
        hex: String,
    },
}

/// The PXE sub-options of option 43 the probe decodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PxeOptions {
    /// 43.6: bit 0 no broadcast discovery, bit 1 no multicast discovery, bit 2 only the boot
    /// servers of 43.8, bit 3 boot the file in this answer without discovery.
    pub discovery_control: Option<u8>,
    /// 43.8: boot servers by type.
    pub boot_servers: Vec<BootServers>,
    /// 43.9: the boot menu.
    pub menu: Vec<MenuItem>,
    /// 43.10: seconds before the first menu item is taken (255: wait), and the prompt.
    pub prompt: Option<(u8, String)>,
    /// 43.71: the boot item an ACK answers.
    pub boot_item: Option<BootItem>,
    /// Codes of the other sub-options present.
    pub other: Vec<u8>,
}

/// One entry of 43.8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootServers {
    /// Boot server type.
    pub server_type: u16,
    /// Its addresses.
    pub addrs: Vec<Ipv4Addr>,
}

/// One entry of 43.9.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MenuItem {
    /// Boot server type this item boots from.
    pub server_type: u16,
    /// The text shown.
    pub description: String,
}

impl Answer {
    /// The server that answered: option 54, else the source address.
    pub fn server(&self) -> Ipv4Addr {
        self.server_id.unwrap_or(self.source)
    }

    /// The address offered; `None` for a proxy answer (yiaddr 0.0.0.0).
    pub fn your_ip(&self) -> Option<Ipv4Addr> {
        (!self.yiaddr.is_unspecified()).then_some(self.yiaddr)
    }

    /// The next server: `siaddr`, and option 66 when present.
    pub fn next_server(&self) -> Option<String> {
        let siaddr = (!self.siaddr.is_unspecified()).then_some(self.siaddr);
        match (siaddr, &self.tftp_server_name) {
            (Some(ip), Some(name)) if name != &ip.to_string() => Some(format!("{ip} (66: {name})")),
            (Some(ip), _) => Some(ip.to_string()),
            (None, Some(name)) => Some(name.clone()),
            (None, None) => None,
        }
    }

    /// The boot file: option 67, else the `file` field (firmware prefers the option).
    pub fn boot_file(&self) -> Option<&str> {
        self.bootfile_option
            .as_deref()
            .or(self.file_field.as_deref())
    }

    /// The PXE sub-options of option 43, if it carried them.
    pub fn pxe(&self) -> Option<&PxeOptions> {
        match &self.vendor {
            Some(VendorOptions::Pxe(pxe)) => Some(pxe),
            _ => None,
        }
    }

    /// Whether this is a PXE answer (option 60 `PXEClient`), which PXE firmware may follow to
    /// a boot server on port 4011.
    pub fn is_pxe(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|class| class.starts_with("PXEClient"))
    }

    /// The boot item a PXE client takes from this answer's menu (the first, layer 0), and the
    /// boot server it asks: the first listed for that type, else option 54, else `siaddr`,
    /// else the source address.
    pub fn boot_server(&self) -> (Ipv4Addr, Option<BootItem>) {
        let item = self
            .pxe()
            .and_then(|pxe| pxe.menu.first())
            .map(|m| BootItem {
                server_type: m.server_type,
                layer: 0,
            });
        let listed = item.and_then(|item| {
            self.pxe()?
                .boot_servers
                .iter()
                .find(|s| s.server_type == item.server_type)?
                .addrs
                .first()
                .copied()
        });
        let siaddr = (!self.siaddr.is_unspecified()).then_some(self.siaddr);
        let server = listed.or(self.server_id).or(siaddr).unwrap_or(self.source);
        (server, item)
    }

    /// The notable options, one readable item each: 60, then 43 decoded, then notes.
    pub fn notable_options(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(class) = &self.vendor_class {
            out.push(format!("60={class}"));
        }
        match &self.vendor {
            Some(VendorOptions::Pxe(pxe)) => out.extend(pxe.describe()),
            Some(VendorOptions::RaspberryPi { text }) => out.push(format!("43={text:?}")),
            Some(VendorOptions::Other { hex }) => out.push(format!("43=0x{hex}")),
            None => {}
        }
        if self.bootfile_option.is_some() {
            if let Some(file) = &self.file_field {
                if Some(file) != self.bootfile_option.as_ref() {
                    out.push(format!("file-field={file}"));
                }
            }
        }
        out
    }
}

impl PxeOptions {
    /// One readable item per sub-option.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(control) = self.discovery_control {
            out.push(format!(
                "43.6={control} ({})",
                discovery_control_words(control)
            ));
        }
        if !self.menu.is_empty() {
            let items: Vec<String> = self
                .menu
                .iter()
                .map(|m| format!("{} {:?}", m.server_type, m.description))
                .collect();
            out.push(format!("43.9=[{}]", items.join(", ")));
        }
        if !self.boot_servers.is_empty() {
            let servers: Vec<String> = self
                .boot_servers
                .iter()
                .map(|s| {
                    let addrs: Vec<String> = s.addrs.iter().map(Ipv4Addr::to_string).collect();
                    format!("{} {}", s.server_type, addrs.join(" "))
                })
                .collect();
            out.push(format!("43.8=[{}]", servers.join(", ")));
        }
        if let Some((timeout, prompt)) = &self.prompt {
            let wait = if *timeout == u8::MAX {
                "wait".to_owned()
            } else {
                format!("{timeout}s")
            };
            out.push(format!("43.10=[{wait} {prompt:?}]"));
        }
        if let Some(item) = self.boot_item {
            out.push(format!("43.71={}/{}", item.server_type, item.layer));
        }
        for code in &self.other {
            out.push(format!("43.{code}"));
        }
        out
    }
}

/// The bits of PXE discovery control (43.6) in words.
fn discovery_control_words(control: u8) -> String {
    const BITS: [(u8, &str); 4] = [
        (1, "no broadcast"),
        (2, "no multicast"),
        (4, "listed servers only"),
        (8, "boot file here"),
    ];
    let words: Vec<&str> = BITS
        .iter()
        .filter(|(bit, _)| control & bit != 0)
        .map(|(_, word)| *word)
        .collect();
    if words.is_empty() {
        "discover".to_owned()
    } else {
        words.join(", ")
    }
}

/// Parses a datagram received on port 68 from `source`.
pub fn parse(bytes: &[u8], source: Ipv4Addr) -> Result<Answer, AnswerError> {
    if bytes.len() < OPTIONS_AT {
        return Err(AnswerError::TooShort(bytes.len()));
    }
    if bytes[0] != OP_BOOTREPLY {
        return Err(AnswerError::NotReply(bytes[0]));
    }
    let cookie = [bytes[236], bytes[237], bytes[238], bytes[239]];
    if cookie != MAGIC {
        return Err(AnswerError::NoMagicCookie(cookie));
    }
    let main = check_framing(&bytes[OPTIONS_AT..], "options")?;
    let overload = main
        .iter()
        .find(|(code, _)| *code == u8::from(OptionCode::OptionOverload))
        .and_then(|(_, value)| value.first().copied())
        .unwrap_or(0);
    let mut walked: Vec<u8> = main.iter().map(|(code, _)| *code).collect();
    if overload & OVERLOAD_FILE != 0 {
        walked.extend(
            check_framing(&bytes[FILE], "file field")?
                .iter()
                .map(|o| o.0),
        );
    }
    if overload & OVERLOAD_SNAME != 0 {
        walked.extend(
            check_framing(&bytes[SNAME], "sname field")?
                .iter()
                .map(|o| o.0),
        );
    }

    let msg = Message::decode(&mut Decoder::new(bytes))
        .map_err(|e| AnswerError::Undecodable(e.to_string()))?;
    let mut opts = msg.opts().clone();
    // Options carried in `file` and `sname` (RFC 2132 option 52), framing checked above.
    for (flag, field) in [(OVERLOAD_FILE, FILE), (OVERLOAD_SNAME, SNAME)] {
        if overload & flag != 0 {
            if let Ok(more) = DhcpOptions::decode(&mut Decoder::new(&bytes[field])) {
                for (_, opt) in more {
                    if !opts.contains(OptionCode::from(&opt)) {
                        opts.insert(opt);
                    }
                }
            }
        }
    }

    let mut notes = Vec::new();
    let mut lost: Vec<u8> = walked
        .into_iter()
        .filter(|&code| !opts.contains(OptionCode::from(code)))
        .collect();
    lost.sort_unstable();
    lost.dedup();
    if !lost.is_empty() {
        let codes: Vec<String> = lost.iter().map(u8::to_string).collect();
        notes.push(format!("options not decoded: {}", codes.join(", ")));
    }

    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(text(v)),
        _ => None,
    };
    let vendor = match opts.get(OptionCode::VendorExtensions) {
        Some(DhcpOption::VendorExtensions(v)) => Some(decode_vendor(v, vendor_class.as_deref())),
        _ => None,
    };
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&bytes[28..34]);
    Ok(Answer {
        message_type: opts.msg_type(),
        xid: msg.xid(),
        chaddr,
        source,
        server_id: match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        },
        yiaddr: msg.yiaddr(),
        siaddr: msg.siaddr(),
        tftp_server_name: match opts.get(OptionCode::TFTPServerName) {
            Some(DhcpOption::TFTPServerName(v)) => non_empty(text(v)),
            _ => None,
        },
        // dhcproto drops a name that fills the field without a NUL: read the field itself.
        file_field: if overload & OVERLOAD_FILE == 0 {
            non_empty(text(&bytes[FILE]))
        } else {
            None
        },
        bootfile_option: match opts.get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(v)) => non_empty(text(v)),
            _ => None,
        },
        vendor_class,
        vendor,
        notes,
    })
}

/// The transaction id of a datagram too broken to parse, if it is long enough to have one.
pub fn peek_xid(bytes: &[u8]) -> Option<u32> {
    let xid: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    Some(u32::from_be_bytes(xid))
}

/// Walks the options in `area` (up to End, or its end): `(code, value)` with runs of the same
/// code concatenated (RFC 3396). Refuses an option that runs past the area, and lengths that
/// the option's type does not allow where dhcproto would otherwise assert or underflow.
fn check_framing<'a>(area: &'a [u8], what: &str) -> Result<Vec<(u8, Vec<u8>)>, AnswerError> {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut last: Option<u8> = None;
    let mut at = 0;
    while let Some(&code) = area.get(at) {
        match code {
            0 => {
                at += 1;
                last = None;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = area.get(at + 1) else {
            return Err(AnswerError::BadOptions(format!(
                "{what}: option {code} has no length byte"
            )));
        };
        let value: &'a [u8] = area.get(at + 2..at + 2 + usize::from(len)).ok_or_else(|| {
            AnswerError::BadOptions(format!(
                "{what}: option {code} (length {len}) runs past the end"
            ))
        })?;
        match out.last_mut() {
            Some((prev, data)) if last == Some(code) && *prev == code => {
                data.extend_from_slice(value)
            }
            _ => out.push((code, value.to_vec())),
        }
        last = Some(code);
        at += 2 + usize::from(len);
    }
    for (code, value) in &out {
        let allowed = match code {
            80 => value.is_empty(),
            94 => value.len() == 3,
            152..=155 => value.len() == 4,
            151 => !value.is_empty(),
            81 => value.len() >= 3,
            _ => true,
        };
        if !allowed {
            return Err(AnswerError::BadOptions(format!(
                "{what}: option {code} has length {}",
                value.len()
            )));
        }
    }
    Ok(out)
}

/// Decodes option 43 as its vendor class suggests: the Raspberry Pi string, PXE sub-options
/// (`PXEClient`/`HTTPClient` answers, or none named), else hex.
fn decode_vendor(value: &[u8], vendor_class: Option<&str>) -> VendorOptions {
    let as_text = String::from_utf8_lossy(value);
    if as_text.contains(RASPBERRY_PI_VENDOR) {
        return VendorOptions::RaspberryPi {
            text: as_text.trim_end_matches('\0').to_owned(),
        };
    }
    let pxe_class =
        vendor_class.is_none_or(|c| c.starts_with("PXEClient") || c.starts_with("HTTPClient"));
    if pxe_class {
        if let Some(pxe) = decode_pxe(value) {
            return VendorOptions::Pxe(pxe);
        }
    }
    let shown = &value[..value.len().min(VENDOR_HEX_SHOWN_BYTES)];
    let mut hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    if value.len() > shown.len() {
        hex.push_str("...");
    }
    VendorOptions::Other { hex }
}

/// PXE sub-options, or `None` if `value` is not a well-formed list of them.
fn decode_pxe(value: &[u8]) -> Option<PxeOptions> {
    let mut pxe = PxeOptions::default();
    for (code, data) in check_framing(value, "option 43").ok()? {
        match code {
            PXE_DISCOVERY_CONTROL if data.len() == 1 => pxe.discovery_control = Some(data[0]),
            PXE_BOOT_SERVERS => {
                let mut rest = data.as_slice();
                while rest.len() >= 3 {
                    let server_type = u16::from_be_bytes([rest[0], rest[1]]);
                    let count = usize::from(rest[2]);
                    let addrs = rest.get(3..3 + 4 * count)?;
                    pxe.boot_servers.push(BootServers {
                        server_type,
                        addrs: addrs
                            .chunks_exact(4)
                            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                            .collect(),
                    });
                    rest = &rest[3 + 4 * count..];
                }
            }
            PXE_BOOT_MENU => {
                let mut rest = data.as_slice();
                while rest.len() >= 3 {
                    let server_type = u16::from_be_bytes([rest[0], rest[1]]);
                    let len = usize::from(rest[2]);
                    let description = rest.get(3..3 + len)?;
                    pxe.menu.push(MenuItem {
                        server_type,
                        description: text(description),
                    });
                    rest = &rest[3 + len..];
                }
            }
            PXE_MENU_PROMPT if !data.is_empty() => {
                pxe.prompt = Some((data[0], text(&data[1..])));
            }
            PXE_BOOT_ITEM if data.len() == 4 => {
                pxe.boot_item = Some(BootItem {
                    server_type: u16::from_be_bytes([data[0], data[1]]),
                    layer: u16::from_be_bytes([data[2], data[3]]),
                });
            }
            other => pxe.other.push(other),
        }
    }
    Some(pxe)
}

/// Bytes as text, up to the first NUL (servers often NUL-terminate names for old ROMs).
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
    pub(crate) const CLIENT_MAC: [u8; 6] = [0x56, 0x54, 0x00, 0x12, 0x64, 0x57];

    /// A BOOTREPLY as servers send it: header fields given, then `options` and End.
    pub(crate) fn reply(
        xid: u32,
        yiaddr: Ipv4Addr,
        siaddr: Ipv4Addr,
        file: &str,
        options: &[(u8, &[u8])],
    ) -> Vec<u8> {
        let mut b = vec![0u8; OPTIONS_AT];
        b[0] = OP_BOOTREPLY;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[10] = 0x80;
        b[16..20].copy_from_slice(&yiaddr.octets());
        b[20..24].copy_from_slice(&siaddr.octets());
        b[28..34].copy_from_slice(&CLIENT_MAC);
        b[FILE.start..FILE.start + file.len()].copy_from_slice(file.as_bytes());
        b[236..240].copy_from_slice(&MAGIC);
        for (code, value) in options {
            b.push(*code);
            b.push(u8::try_from(value.len()).expect("option length"));
            b.extend_from_slice(value);
        }
        b.push(255);
        b.resize(b.len().max(300), 0);
        b
    }

    /// A full DHCP offer for a BIOS client: an address, next server and file.
    pub(crate) fn full_offer(xid: u32) -> Vec<u8> {
        reply(
            xid,
            Ipv4Addr::new(198, 18, 7, 50),
            SERVER,
            "undionly.kpxe",
            &[
                (53, &[2]),
                (54, &SERVER.octets()),
                (51, &3600u32.to_be_bytes()),
                (1, &[255, 255, 255, 0]),
                (60, b"PXEClient"),
                (43, &[6, 1, 8, 10, 4, 0, b'P', b'X', b'E', 255]),
            ],
        )
    }

    /// dnsmasq's proxy offer to a BIOS client: no address, no file, a menu and boot servers.
    pub(crate) fn proxy_offer(xid: u32) -> Vec<u8> {
        let mut vendor = vec![6, 1, 3];
        vendor.extend_from_slice(&[8, 7, 0x80, 0x00, 1]);
        vendor.extend_from_slice(&SERVER.octets());
        vendor.extend_from_slice(&[9, 12, 0x80, 0x00, 9]);
        vendor.extend_from_slice(b"Boot BIOS");
        vendor.extend_from_slice(&[10, 4, 0, b'P', b'X', b'E', 255]);
        reply(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            "",
            &[
                (53, &[2]),
                (54, &SERVER.octets()),
                (60, b"PXEClient"),
                (97, &[0; 17]),
                (43, &vendor),
            ],
        )
    }

    #[test]
    fn full_offer_gives_address_next_server_and_file() {
        let a = parse(&full_offer(42), SERVER).expect("a valid offer");
        assert_eq!(a.message_type, Some(MessageType::Offer));
        assert_eq!(a.xid, 42);
        assert_eq!(a.chaddr, CLIENT_MAC);
        assert_eq!(a.server(), SERVER);
        assert_eq!(a.your_ip(), Some(Ipv4Addr::new(198, 18, 7, 50)));
        assert_eq!(a.next_server().as_deref(), Some("198.18.7.1"));
        assert_eq!(a.boot_file(), Some("undionly.kpxe"));
        assert!(a.is_pxe());
        let pxe = a.pxe().expect("PXE sub-options");
        assert_eq!(pxe.discovery_control, Some(8));
        assert_eq!(pxe.prompt, Some((0, "PXE".to_owned())));
        assert_eq!(
            a.notable_options(),
            [
                "60=PXEClient",
                "43.6=8 (boot file here)",
                "43.10=[0s \"PXE\"]"
            ]
        );
        assert!(a.notes.is_empty(), "{:?}", a.notes);
    }

    #[test]
    fn proxy_offer_decodes_menu_and_boot_servers() {
        let a = parse(&proxy_offer(7), SERVER).expect("a valid proxy offer");
        assert_eq!(a.your_ip(), None);
        assert_eq!(a.next_server(), None);
        assert_eq!(a.boot_file(), None);
        let pxe = a.pxe().expect("PXE sub-options");
        assert_eq!(pxe.discovery_control, Some(3));
        assert_eq!(
            pxe.menu,
            [MenuItem {
                server_type: 0x8000,
                description: "Boot BIOS".into()
            }]
        );
        assert_eq!(pxe.boot_servers[0].addrs, [SERVER]);
        let (server, item) = a.boot_server();
        assert_eq!(server, SERVER);
        assert_eq!(
            item,
            Some(BootItem {
                server_type: 0x8000,
                layer: 0
            })
        );
        let options = a.notable_options().join(" ");
        assert!(
            options.contains("43.6=3 (no broadcast, no multicast)")
                && options.contains("43.9=[32768 \"Boot BIOS\"]")
                && options.contains("43.8=[32768 198.18.7.1]"),
            "{options}"
        );
    }

    #[test]
    fn option_67_wins_over_the_file_field_and_nuls_are_trimmed() {
        let bytes = reply(
            1,
            Ipv4Addr::new(198, 18, 7, 50),
            SERVER,
            "old.0",
            &[
                (53, &[2]),
                (67, b"http://198.18.7.1/boot.ipxe\0"),
                (66, b"tftp.example\0"),
            ],
        );
        let a = parse(&bytes, SERVER).expect("valid");
        assert_eq!(a.boot_file(), Some("http://198.18.7.1/boot.ipxe"));
        assert_eq!(
            a.next_server().as_deref(),
            Some("198.18.7.1 (66: tftp.example)")
        );
        assert!(a.notable_options().contains(&"file-field=old.0".to_owned()));
    }

    #[test]
    fn no_magic_cookie_is_an_error_not_a_panic() {
        let mut bytes = full_offer(1);
        bytes[236..240].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            parse(&bytes, SERVER),
            Err(AnswerError::NoMagicCookie([0, 0, 0, 0]))
        );
    }

    #[test]
    fn broken_datagrams_are_errors() {
        assert_eq!(parse(&[2; 10], SERVER), Err(AnswerError::TooShort(10)));
        let mut request = full_offer(1);
        request[0] = 1;
        assert_eq!(parse(&request, SERVER), Err(AnswerError::NotReply(1)));
        // An option whose length runs past the end of the datagram.
        let mut cut = full_offer(1);
        cut.truncate(OPTIONS_AT + 3);
        cut.extend_from_slice(&[67, 200, b'x']);
        assert!(matches!(
            parse(&cut, SERVER),
            Err(AnswerError::BadOptions(_))
        ));
        // Lengths dhcproto would assert on.
        for (code, value) in [(94u8, &[1u8][..]), (80, &[1]), (152, &[0, 0])] {
            let bytes = reply(1, SERVER, SERVER, "", &[(53, &[2]), (code, value)]);
            assert!(
                matches!(parse(&bytes, SERVER), Err(AnswerError::BadOptions(_))),
                "option {code}"
            );
        }
    }

    #[test]
    fn every_truncation_of_an_offer_parses_or_errs() {
        for bytes in [full_offer(3), proxy_offer(3)] {
            for len in 0..bytes.len() {
                let _ = parse(&bytes[..len], SERVER);
            }
            // And every single-byte corruption of the options.
            for at in OPTIONS_AT..bytes.len() {
                for value in [0u8, 1, 2, 3, 4, 255] {
                    let mut b = bytes.clone();
                    b[at] = value;
                    let _ = parse(&b, SERVER);
                }
            }
        }
    }

    #[test]
    fn random_corruptions_parse_or_err() {
        // A fixed linear congruential generator: the same corruptions on every run.
        let mut state: u64 = 0x5eed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for round in 0..5000 {
            let mut bytes = if round % 2 == 0 {
                full_offer(1)
            } else {
                proxy_offer(1)
            };
            for _ in 0..1 + next() % 8 {
                let at = OPTIONS_AT + next() % (bytes.len() - OPTIONS_AT);
                bytes[at] = (next() % 256) as u8;
            }
            let cut = bytes.len() - next() % 40;
            let _ = parse(&bytes[..cut], SERVER);
        }
    }

    #[test]
    fn raspberry_pi_vendor_string_is_recognised() {
        let bytes = reply(
            1,
            Ipv4Addr::UNSPECIFIED,
            SERVER,
            "",
            &[
                (53, &[2]),
                (60, b"PXEClient"),
                (43, b"Raspberry Pi Boot   "),
            ],
        );
        let a = parse(&bytes, SERVER).expect("valid");
        assert_eq!(
            a.vendor,
            Some(VendorOptions::RaspberryPi {
                text: "Raspberry Pi Boot   ".into()
            })
        );
        assert!(a
            .notable_options()
            .contains(&"43=\"Raspberry Pi Boot   \"".to_owned()));
    }

    #[test]
    fn overloaded_file_field_carries_options() {
        let mut bytes = reply(
            1,
            Ipv4Addr::new(198, 18, 7, 50),
            SERVER,
            "",
            &[(53, &[2]), (52, &[1])],
        );
        let file = [
            67u8, 9, b'i', b'p', b'x', b'e', b'.', b'e', b'f', b'i', 0, 255,
        ];
        bytes[FILE.start..FILE.start + file.len()].copy_from_slice(&file);
        let a = parse(&bytes, SERVER).expect("valid");
        assert_eq!(a.boot_file(), Some("ipxe.efi"));
        assert_eq!(a.file_field, None);
    }

    #[test]
    fn peek_xid_reads_what_it_can() {
        assert_eq!(peek_xid(&full_offer(0x0102_0304)), Some(0x0102_0304));
        assert_eq!(peek_xid(&[0; 7]), None);
    }
}
