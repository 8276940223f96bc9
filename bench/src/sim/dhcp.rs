//! DHCP as boot firmware speaks it, sans-IO: the requests of each firmware stage byte for byte,
//! a reply read into what a client acts on, and the client's choice of what to boot from the
//! offers it has (a full DHCP server's offer, or an address offer plus a proxy offer).

use std::net::Ipv4Addr;

use pxe_common::{
    firmware::{self, Persona},
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
};

use super::frame::{self, UdpFrame};

/// Length of the fixed BOOTP header.
const HEADER_LEN: usize = 236;
/// The DHCP magic cookie.
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Shortest message sent: old relays drop BOOTP messages under 300 bytes (RFC 1542).
const MIN_MESSAGE_LEN: usize = 300;
/// `sname` and `file` in the header.
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

/// DHCP message types the simulator sends or reads.
pub(crate) mod msg {
    /// DHCPDISCOVER.
    pub(crate) const DISCOVER: u8 = 1;
    /// DHCPOFFER.
    pub(crate) const OFFER: u8 = 2;
    /// DHCPREQUEST.
    pub(crate) const REQUEST: u8 = 3;
    /// DHCPACK.
    pub(crate) const ACK: u8 = 5;
    /// DHCPNAK.
    pub(crate) const NAK: u8 = 6;
}

/// The boot firmware of a simulated machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Firmware {
    /// A BIOS PXE ROM (PXE 2.1, arch 0), which then runs undionly.kpxe.
    Bios,
    /// UEFI PXE on x64 (EDK2, arch 7), which then runs ipxe.efi.
    UefiX64,
    /// UEFI HTTP Boot on x64 (arch 16), which fetches ipxe.efi over HTTP.
    UefiHttp,
}

impl Firmware {
    /// Every kind, in the order of the `--mix` names.
    pub(crate) const ALL: [Firmware; 3] = [Firmware::Bios, Firmware::UefiX64, Firmware::UefiHttp];

    /// Name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::UefiX64 => "uefi",
            Firmware::UefiHttp => "uefi-http",
        }
    }

    /// The kind called `name`.
    pub(crate) fn from_name(name: &str) -> Option<Firmware> {
        Firmware::ALL.into_iter().find(|f| f.name() == name)
    }

    /// iPXE's `${buildarch}` and `${platform}` once this machine runs iPXE.
    pub(crate) fn ipxe_build(self) -> (&'static str, &'static str) {
        match self {
            Firmware::Bios => ("i386", "pcbios"),
            Firmware::UefiX64 | Firmware::UefiHttp => ("x86_64", "efi"),
        }
    }
}

/// Who sends a DHCP message: the firmware itself, or iPXE once chainloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asker {
    /// The ROM or UEFI firmware.
    Rom(Firmware),
    /// iPXE (the BIOS or the EFI build, by the firmware that loaded it).
    Ipxe(Firmware),
}

impl Asker {
    /// What this asker puts in its requests: the firmware table the probe and the tests share.
    fn persona(self) -> &'static Persona {
        match self {
            Asker::Rom(Firmware::Bios) => &firmware::BIOS_PXE,
            Asker::Rom(Firmware::UefiX64) => &firmware::UEFI_X64_PXE,
            Asker::Rom(Firmware::UefiHttp) => &firmware::UEFI_X64_HTTP,
            Asker::Ipxe(Firmware::Bios) => &firmware::IPXE_PCBIOS,
            Asker::Ipxe(_) => &firmware::IPXE_EFI_X64,
        }
    }

    /// Whether this asker is a PXE client that may go on to a boot server on port 4011.
    fn is_pxe(self) -> bool {
        !matches!(self, Asker::Rom(Firmware::UefiHttp))
    }
}

/// One request to encode.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// DISCOVER or REQUEST.
    pub message_type: u8,
    /// Who asks.
    pub asker: Asker,
    /// The machine's MAC.
    pub mac: [u8; 6],
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the machine started asking (the `secs` field).
    pub secs: u16,
    /// The address the client holds (port-4011 requests), else unspecified.
    pub ciaddr: Ipv4Addr,
    /// Option 50: the address asked for (a REQUEST after an offer).
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server chosen (a REQUEST after an offer).
    pub server_id: Option<Ipv4Addr>,
    /// PXE boot item (option 43.71) for a boot-server request after a menu.
    pub boot_item: Option<u16>,
}

/// Option 97: type 0 and a GUID fixed by the MAC.
fn client_guid(mac: [u8; 6]) -> [u8; 17] {
    let mut id = [0u8; 17];
    id[1..11].copy_from_slice(b"pxe-bench\0");
    id[11..].copy_from_slice(&mac);
    id
}

/// Encodes `req` into `out` (cleared first).
pub(crate) fn encode(req: &Request, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[1, 1, 6, 0]);
    out.extend_from_slice(&req.xid.to_be_bytes());
    out.extend_from_slice(&req.secs.to_be_bytes());
    // The broadcast flag, unless the client holds an address: answers come back as broadcasts,
    // so a server needs no ARP entry for a client that has no address yet.
    let flags: u16 = if req.ciaddr.is_unspecified() {
        0x8000
    } else {
        0
    };
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&req.ciaddr.octets());
    out.extend_from_slice(&[0; 12]); // yiaddr, siaddr, giaddr
    out.extend_from_slice(&req.mac);
    out.resize(HEADER_LEN, 0); // chaddr padding, sname, file
    out.extend_from_slice(&MAGIC);
    let mut opt = |code: u8, value: &[u8]| {
        out.push(code);
        out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(value);
    };
    opt(53, &[req.message_type]);
    if let Some(ip) = req.requested_ip {
        opt(50, &ip.octets());
    }
    if let Some(ip) = req.server_id {
        opt(54, &ip.octets());
    }
    let persona = req.asker.persona();
    opt(57, &persona.max_message_bytes.to_be_bytes());
    opt(55, persona.parameter_request_list);
    opt(60, persona.vendor_class.as_bytes());
    opt(93, &persona.arch_bytes());
    opt(94, &persona.ndi);
    opt(97, &client_guid(req.mac));
    if let Some(user_class) = persona.user_class {
        let mut client_id = [1u8; 7];
        client_id[1..].copy_from_slice(&req.mac);
        opt(61, &client_id);
        opt(77, user_class);
    }
    if let Some(encapsulated) = persona.ipxe_encapsulated {
        opt(firmware::OPTION_IPXE_ENCAP, encapsulated);
    }
    if let Some(item) = req.boot_item {
        let mut vendor = [71, 4, 0, 0, 0, 0, 255];
        vendor[2..4].copy_from_slice(&item.to_be_bytes());
        opt(43, &vendor);
    }
    out.push(255);
    if out.len() < MIN_MESSAGE_LEN {
        out.resize(MIN_MESSAGE_LEN, 0);
    }
}

/// A client's broadcast of `payload` from `mac`: 0.0.0.0:68 to 255.255.255.255:67, as a
/// client without an address sends its DISCOVER and REQUEST.
pub(crate) fn broadcast_frame(mac: [u8; 6], payload: &[u8]) -> UdpFrame<'_> {
    UdpFrame {
        src_mac: mac,
        dst_mac: frame::BROADCAST_MAC,
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: DHCP_CLIENT_PORT,
        dst_port: DHCP_SERVER_PORT,
        payload,
    }
}

/// The transaction id of a BOOTREPLY, without reading the rest.
pub(crate) fn reply_xid(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= HEADER_LEN && bytes[0] == 2)
        .then(|| u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]))
}

/// A DHCP reply, read into what a booting client acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Option 53 (0 for a BOOTP reply).
    pub message_type: u8,
    /// Transaction id.
    pub xid: u32,
    /// Client hardware address.
    pub chaddr: [u8; 6],
    /// Address offered (unspecified in a proxy offer).
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 60.
    pub vendor_class: Option<String>,
    /// Option 67, else the `file` field.
    pub boot_file: Option<String>,
    /// Option 66, else the `sname` field.
    pub server_name: Option<String>,
    /// Whether option 43 was present.
    pub has_vendor_options: bool,
    /// PXE sub-option 6.
    pub discovery_control: Option<u8>,
    /// PXE sub-option 8: (server type, first address).
    pub boot_servers: Vec<(u16, Ipv4Addr)>,
    /// PXE sub-option 9: the first menu item's server type.
    pub first_menu_item: Option<u16>,
}

/// Why a datagram is not a reply the client can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// Shorter than a DHCP message or not a BOOTREPLY.
    NotReply,
    /// No magic cookie.
    NoMagic,
    /// An option runs past the end.
    BadOptions,
}

/// A NUL-terminated string field, `None` when empty.
fn cstr(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
}

fn ipv4(value: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = value.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Reads a reply. Never panics on malformed input.
pub(crate) fn parse_reply(bytes: &[u8]) -> Result<Reply, ReplyError> {
    if bytes.len() < HEADER_LEN + MAGIC.len() || bytes[0] != 2 {
        return Err(ReplyError::NotReply);
    }
    if bytes[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return Err(ReplyError::NoMagic);
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&bytes[28..34]);
    let mut reply = Reply {
        message_type: 0,
        xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        chaddr,
        yiaddr: ipv4(&bytes[16..20]).unwrap_or(Ipv4Addr::UNSPECIFIED),
        siaddr: ipv4(&bytes[20..24]).unwrap_or(Ipv4Addr::UNSPECIFIED),
        server_id: None,
        subnet_mask: None,
        vendor_class: None,
        boot_file: None,
        server_name: None,
        has_vendor_options: false,
        discovery_control: None,
        boot_servers: Vec::new(),
        first_menu_item: None,
    };
    let mut overload = 0u8;
    let mut at = HEADER_LEN + MAGIC.len();
    while at < bytes.len() {
        let code = bytes[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*bytes.get(at + 1).ok_or(ReplyError::BadOptions)?);
        let value = bytes
            .get(at + 2..at + 2 + len)
            .ok_or(ReplyError::BadOptions)?;
        match code {
            1 => reply.subnet_mask = ipv4(value),
            43 => {
                reply.has_vendor_options = true;
                read_pxe_options(value, &mut reply);
            }
            52 => overload = value.first().copied().unwrap_or(0),
            53 => reply.message_type = value.first().copied().unwrap_or(0),
            54 => reply.server_id = ipv4(value),
            60 => reply.vendor_class = Some(String::from_utf8_lossy(value).into_owned()),
            66 => reply.server_name = cstr(value),
            67 => reply.boot_file = cstr(value),
            _ => {}
        }
        at += 2 + len;
    }
    // The header fields hold options instead when overloaded (option 52).
    if reply.boot_file.is_none() && overload & 1 == 0 {
        reply.boot_file = cstr(&bytes[FILE]);
    }
    if reply.server_name.is_none() && overload & 2 == 0 {
        reply.server_name = cstr(&bytes[SNAME]);
    }
    Ok(reply)
}

/// PXE sub-options of option 43 (PXE spec 2.1, table 2-1); anything unreadable is ignored.
fn read_pxe_options(value: &[u8], reply: &mut Reply) {
    let mut at = 0;
    while at < value.len() {
        let code = value[at];
        if code == 0 {
            at += 1;
            continue;
        }
        if code == 255 {
            return;
        }
        let Some(&len) = value.get(at + 1) else {
            return;
        };
        let Some(v) = value.get(at + 2..at + 2 + usize::from(len)) else {
            return;
        };
        match code {
            6 => reply.discovery_control = v.first().copied(),
            8 => {
                // Repeated: type (2), count (1), count addresses.
                let mut i = 0;
                while i + 3 <= v.len() {
                    let server_type = u16::from_be_bytes([v[i], v[i + 1]]);
                    let count = usize::from(v[i + 2]);
                    if let Some(addr) = v.get(i + 3..).and_then(ipv4) {
                        reply.boot_servers.push((server_type, addr));
                    }
                    i += 3 + 4 * count;
                }
            }
            9 if v.len() >= 3 && reply.first_menu_item.is_none() => {
                reply.first_menu_item = Some(u16::from_be_bytes([v[0], v[1]]));
            }
            _ => {}
        }
        at += 2 + usize::from(len);
    }
}

impl Reply {
    /// The server to answer to: option 54, else `fallback` (the sender).
    pub(crate) fn server(&self, fallback: Ipv4Addr) -> Ipv4Addr {
        self.server_id.unwrap_or(fallback)
    }

    /// Whether this offer carries an address.
    pub(crate) fn has_address(&self) -> bool {
        !self.yiaddr.is_unspecified()
    }

    /// The next server for TFTP: siaddr, else option 66 as an address, else option 54.
    fn next_server(&self, source: Ipv4Addr) -> Ipv4Addr {
        if !self.siaddr.is_unspecified() {
            return self.siaddr;
        }
        self.server_name
            .as_deref()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| self.server(source))
    }
}

/// What a client does next to get its boot program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BootTarget {
    /// Fetch `file` from the TFTP server `server`.
    Tftp {
        /// TFTP server.
        server: Ipv4Addr,
        /// File name.
        file: String,
    },
    /// Fetch this http:// URL.
    Url(String),
    /// Ask the boot server on port 4011 (PXE boot server discovery, or iPXE's ProxyDHCPREQUEST),
    /// for the menu item if there was a menu.
    BootServer {
        /// The boot server.
        server: Ipv4Addr,
        /// Its menu item (PXE option 43.71), if the offer had a menu.
        item: Option<u16>,
    },
}

/// What `asker` does with `reply` (an offer, or the ACK of a port-4011 request) that came from
/// `source`: `None` when it names nothing to boot for this client.
///
/// The rules of the firmware: a PXE client takes the boot file of an offer that carries an
/// address (full DHCP), or of a proxy offer that says "boot the file in this offer" (PXE
/// discovery control bit 3); a proxy offer with a boot menu, or one without PXE options, sends
/// it to the boot server on port 4011 (EDK2 and PXE ROMs), except that iPXE takes any proxy
/// offer that has PXE options. HTTP Boot takes only an `HTTPClient` offer with a URL.
pub(crate) fn boot_target(
    asker: Asker,
    reply: &Reply,
    source: Ipv4Addr,
    from_4011: bool,
) -> Option<BootTarget> {
    let file = reply.boot_file.as_deref().filter(|f| !f.is_empty());
    let class = reply.vendor_class.as_deref().unwrap_or("");
    if asker == Asker::Rom(Firmware::UefiHttp) {
        return match file {
            Some(url) if class.starts_with("HTTPClient") && is_url(url) => {
                Some(BootTarget::Url(url.to_owned()))
            }
            _ => None,
        };
    }
    let target_of = |file: &str| {
        if is_url(file) {
            BootTarget::Url(file.to_owned())
        } else {
            BootTarget::Tftp {
                server: reply.next_server(source),
                file: file.to_owned(),
            }
        }
    };
    let proxy = !reply.has_address() && class.starts_with("PXEClient");
    if from_4011 || !proxy {
        // A full DHCP server's offer (with or without PXE options), or a boot server's ACK.
        return file.map(target_of);
    }
    if !asker.is_pxe() {
        return None;
    }
    let boot_file_here = reply.discovery_control.is_some_and(|c| c & 0x08 != 0);
    match (file, asker) {
        (Some(f), Asker::Ipxe(_)) if reply.has_vendor_options => Some(target_of(f)),
        (Some(f), Asker::Rom(_)) if boot_file_here => Some(target_of(f)),
        _ => {
            let item = reply.first_menu_item;
            let listed = item.and_then(|t| {
                reply
                    .boot_servers
                    .iter()
                    .find(|(ty, _)| *ty == t)
                    .map(|(_, a)| *a)
            });
            let server = listed.unwrap_or_else(|| reply.server(source));
            Some(BootTarget::BootServer { server, item })
        }
    }
}

/// Whether a boot file is an http:// URL.
pub(crate) fn is_url(file: &str) -> bool {
    file.starts_with("http://") || file.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0x50, 0, 0, 0, 9];
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn request(asker: Asker) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Request {
                message_type: msg::DISCOVER,
                asker,
                mac: MAC,
                xid: 0x0102_0304,
                secs: 3,
                ciaddr: Ipv4Addr::UNSPECIFIED,
                requested_ip: None,
                server_id: None,
                boot_item: None,
            },
            &mut out,
        );
        out
    }

    /// A reply with `options` (code, value) after the cookie.
    fn reply(yiaddr: Ipv4Addr, file: &str, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = 2;
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[16..20].copy_from_slice(&yiaddr.octets());
        b[20..24].copy_from_slice(&SERVER.octets());
        b[28..34].copy_from_slice(&MAC);
        b[FILE][..file.len()].copy_from_slice(file.as_bytes());
        b.extend_from_slice(&MAGIC);
        for (code, value) in options {
            b.push(*code);
            b.push(u8::try_from(value.len()).unwrap());
            b.extend_from_slice(value);
        }
        b.push(255);
        b
    }

    #[test]
    fn discover_is_a_padded_broadcast_bootrequest_with_firmware_options() {
        let b = request(Asker::Rom(Firmware::UefiX64));
        assert!(b.len() >= 300);
        assert_eq!(&b[..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[10..12], &[0x80, 0]);
        assert_eq!(&b[28..34], &MAC);
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains("PXEClient:Arch:00007:UNDI:003016"));
        let ipxe = request(Asker::Ipxe(Firmware::Bios));
        assert!(String::from_utf8_lossy(&ipxe).contains("iPXE"));
        let http = request(Asker::Rom(Firmware::UefiHttp));
        assert!(String::from_utf8_lossy(&http).contains("HTTPClient:Arch:00016"));
    }

    #[test]
    fn full_offer_boots_its_file_over_tftp() {
        let bytes = reply(
            Ipv4Addr::new(198, 18, 0, 50),
            "undionly.kpxe",
            &[(53, &[2]), (54, &SERVER.octets()), (1, &[255, 255, 255, 0])],
        );
        let r = parse_reply(&bytes).unwrap();
        assert_eq!(r.message_type, msg::OFFER);
        assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(
            boot_target(Asker::Rom(Firmware::Bios), &r, SERVER, false),
            Some(BootTarget::Tftp {
                server: SERVER,
                file: "undionly.kpxe".into()
            })
        );
    }

    #[test]
    fn proxy_offers_follow_the_firmware_rules() {
        let unspec = Ipv4Addr::UNSPECIFIED;
        // Discovery control 8: boot the file in this offer.
        let direct = parse_reply(&reply(
            unspec,
            "undionly.kpxe",
            &[(53, &[2]), (60, b"PXEClient"), (43, &[6, 1, 8, 255])],
        ))
        .unwrap();
        assert!(matches!(
            boot_target(Asker::Rom(Firmware::Bios), &direct, SERVER, false),
            Some(BootTarget::Tftp { .. })
        ));
        // No option 43: EDK2 asks the proxy on port 4011.
        let bare = parse_reply(&reply(unspec, "", &[(53, &[2]), (60, b"PXEClient")])).unwrap();
        assert_eq!(
            boot_target(Asker::Rom(Firmware::UefiX64), &bare, SERVER, false),
            Some(BootTarget::BootServer {
                server: SERVER,
                item: None
            })
        );
        // dnsmasq's menu: boot servers of type 0x8000 at .9, first menu item 0x8000.
        let menu_43 = [
            6, 1, 3, 8, 7, 0x80, 0, 1, 198, 18, 0, 9, 9, 6, 0x80, 0, 3, b'P', b'X', b'E', 255,
        ];
        let menu = parse_reply(&reply(
            unspec,
            "",
            &[(53, &[2]), (60, b"PXEClient"), (43, &menu_43)],
        ))
        .unwrap();
        assert_eq!(
            boot_target(Asker::Rom(Firmware::Bios), &menu, SERVER, false),
            Some(BootTarget::BootServer {
                server: Ipv4Addr::new(198, 18, 0, 9),
                item: Some(0x8000)
            })
        );
        // iPXE takes a proxy offer that has PXE options; without them it asks on 4011.
        let url = "http://198.18.0.1/boot.ipxe";
        let ipxe = parse_reply(&reply(
            unspec,
            url,
            &[(53, &[2]), (60, b"PXEClient"), (43, &[6, 1, 8, 255])],
        ))
        .unwrap();
        assert_eq!(
            boot_target(Asker::Ipxe(Firmware::Bios), &ipxe, SERVER, false),
            Some(BootTarget::Url(url.into()))
        );
        // HTTP Boot: only an HTTPClient offer with a URL.
        let http = parse_reply(&reply(unspec, url, &[(53, &[2]), (60, b"HTTPClient")])).unwrap();
        assert_eq!(
            boot_target(Asker::Rom(Firmware::UefiHttp), &http, SERVER, false),
            Some(BootTarget::Url(url.into()))
        );
        assert_eq!(
            boot_target(Asker::Rom(Firmware::UefiHttp), &direct, SERVER, false),
            None
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert_eq!(parse_reply(&[2; 10]), Err(ReplyError::NotReply));
        let mut b = reply(Ipv4Addr::UNSPECIFIED, "", &[(53, &[2])]);
        b.truncate(b.len() - 1);
        b.extend_from_slice(&[67, 40, b'x']);
        assert_eq!(parse_reply(&b), Err(ReplyError::BadOptions));
        let mut nomagic = reply(Ipv4Addr::UNSPECIFIED, "", &[]);
        nomagic[HEADER_LEN] = 0;
        assert_eq!(parse_reply(&nomagic), Err(ReplyError::NoMagic));
    }
}
