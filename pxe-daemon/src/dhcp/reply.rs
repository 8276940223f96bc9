//! Building replies: the BOOTP fields and the PXE options every mode shares.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::MessageType;

use super::{request::Request, wire::*};
use crate::boot::{BootSpec, BootTarget, Firmware, MacAddr};

/// PXE vendor sub-option 6, PXE_DISCOVERY_CONTROL, value 8: "a boot file name is present in
/// this offer: download it, no discovery or menu".
const PXE_OPT43_USE_BOOT_FILE: &[u8] = &[6, 1, 8, 255];
/// What a Raspberry Pi's boot ROM looks for in option 43 (the string `Raspberry Pi Boot` in a
/// PXE boot menu item), laid out as dnsmasq's `pxe-service=0,"Raspberry Pi Boot"` does:
/// discovery control 3, menu prompt (timeout 0, "PXE"), menu item type 0 with the string.
const RPI_OPT43: &[u8] = &[
    6, 1, 3, // PXE_DISCOVERY_CONTROL: no broadcast or multicast discovery
    10, 4, 0, b'P', b'X', b'E', // PXE_MENU_PROMPT
    9, 20, 0, 0, 17, b'R', b'a', b's', b'p', b'b', b'e', b'r', b'r', b'y', b' ', b'P', b'i', b' ',
    b'B', b'o', b'o', b't', // PXE_BOOT_MENU: type 0, "Raspberry Pi Boot"
    255,
];
/// In option 175: sub-option 176 (`no-pxedhcp`), length 1, value 1: "do not wait for ProxyDHCP".
const IPXE_NO_PXEDHCP: &[u8] = &[176, 1, 1];
/// OUIs of the Raspberry Pi Foundation / Raspberry Pi Trading.
const RPI_OUIS: [[u8; 3]; 6] = [
    [0xb8, 0x27, 0xeb],
    [0xdc, 0xa6, 0x32],
    [0xe4, 0x5f, 0x01],
    [0x28, 0xcd, 0xc1],
    [0xd8, 0x3a, 0xdd],
    [0x2c, 0xcf, 0x67],
];

/// Whether `mac` belongs to a Raspberry Pi.
pub fn is_raspberry_pi(mac: MacAddr) -> bool {
    RPI_OUIS.iter().any(|oui| mac.0.starts_with(oui))
}

/// Where a reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To this address and port (a relay, a client that has an address, a 4011 client).
    Unicast(SocketAddrV4),
    /// To 255.255.255.255:68 on the boot interface: the client has no address yet.
    Broadcast,
}

/// A reply ready to send.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Encoded DHCP message.
    pub bytes: Vec<u8>,
    /// Where it goes.
    pub to: Destination,
    /// Its message type.
    pub kind: MessageType,
}

/// A reply being built: the BOOTP header as it goes on the wire, and the options kept in the
/// order they are sent (by code, option 82 last as RFC 3046 asks). Encoded once, by [`finish`];
/// an answer to a rack's DISCOVER is built without a map of options or a value per option.
#[derive(Clone, Debug)]
pub struct ReplyMessage {
    kind: MessageType,
    /// op through the magic cookie.
    header: [u8; DHCP_MIN_BYTES],
    /// (code, start and length of its value in `values`), in sending order, one per code.
    options: Vec<(u8, usize, usize)>,
    values: Vec<u8>,
}

impl ReplyMessage {
    /// Sets yiaddr, the address given.
    pub fn set_yiaddr(&mut self, ip: Ipv4Addr) {
        self.header[YIADDR_OFFSET..YIADDR_OFFSET + 4].copy_from_slice(&ip.octets());
    }

    /// Sets siaddr, the next server.
    pub fn set_siaddr(&mut self, ip: Ipv4Addr) {
        self.header[SIADDR_OFFSET..SIADDR_OFFSET + 4].copy_from_slice(&ip.octets());
    }

    /// Sets the flags field.
    pub fn set_flags(&mut self, flags: u16) {
        self.header[FLAGS_OFFSET..FLAGS_OFFSET + 2].copy_from_slice(&flags.to_be_bytes());
    }

    /// Sets the BOOTP `file` field; a name it cannot hold with its NUL is left out.
    pub fn set_file(&mut self, file: &str) {
        if file.len() <= FILE_FIELD_MAX {
            let field = &mut self.header[FILE_OFFSET..FILE_OFFSET + FILE_FIELD_MAX + 1];
            field.fill(0);
            field[..file.len()].copy_from_slice(file.as_bytes());
        }
    }

    /// Sets option `code` to `value`, replacing what it held.
    pub fn insert(&mut self, code: u8, value: &[u8]) {
        let start = self.values.len();
        self.values.extend_from_slice(value);
        let entry = (code, start, value.len());
        let key = |c: u8| {
            if c == OPTION_RELAY_AGENT_INFO {
                256
            } else {
                u16::from(c)
            }
        };
        let at = self.options.partition_point(|o| key(o.0) < key(code));
        match self.options.get_mut(at) {
            Some(o) if o.0 == code => *o = entry,
            _ => self.options.insert(at, entry),
        }
    }

    /// Sets option `code` to an address.
    pub fn insert_ip(&mut self, code: u8, ip: Ipv4Addr) {
        self.insert(code, &ip.octets());
    }

    /// Sets option `code` to a list of addresses.
    pub fn insert_ips(&mut self, code: u8, ips: &[Ipv4Addr]) {
        let value: Vec<u8> = ips.iter().flat_map(|ip| ip.octets()).collect();
        self.insert(code, &value);
    }

    /// Sets option `code` to a 32-bit number (a time in seconds).
    pub fn insert_u32(&mut self, code: u8, value: u32) {
        self.insert(code, &value.to_be_bytes());
    }

    /// Option `code`'s value, if set.
    #[cfg(test)]
    fn get(&self, code: u8) -> Option<&[u8]> {
        let &(_, start, len) = self.options.iter().find(|o| o.0 == code)?;
        Some(&self.values[start..start + len])
    }

    /// The message on the wire: header, options (a value longer than 255 bytes split over
    /// several options of the same code, RFC 3396), option 255.
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(DHCP_MIN_BYTES + self.values.len() + 3 * self.options.len() + 1);
        out.extend_from_slice(&self.header);
        for &(code, start, len) in &self.options {
            let value = &self.values[start..start + len];
            if value.is_empty() {
                out.extend_from_slice(&[code, 0]);
            }
            for chunk in value.chunks(usize::from(u8::MAX)) {
                out.push(code);
                // Chunks are at most 255 bytes long.
                out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(chunk);
            }
        }
        out.push(u8::MAX);
        out
    }
}

/// Starts a reply to `req`: BOOTREPLY with the request's xid, flags, giaddr and chaddr, options
/// 53 and 54, and option 82 echoed to the relay as it came.
pub fn base_reply(req: &Request<'_>, kind: MessageType, server: Ipv4Addr) -> ReplyMessage {
    let mut header = [0u8; DHCP_MIN_BYTES];
    header[..4].copy_from_slice(&[BOOTREPLY, HTYPE_ETHERNET, HLEN_ETHERNET, 0]);
    header[XID_OFFSET..XID_OFFSET + 4].copy_from_slice(&req.xid().to_be_bytes());
    header[FLAGS_OFFSET..FLAGS_OFFSET + 2].copy_from_slice(&req.flags().to_be_bytes());
    header[GIADDR_OFFSET..GIADDR_OFFSET + 4].copy_from_slice(&req.giaddr().octets());
    header[CHADDR_OFFSET..CHADDR_OFFSET + 6].copy_from_slice(&req.chaddr());
    header[MAGIC_OFFSET..].copy_from_slice(&MAGIC_COOKIE);
    let mut m = ReplyMessage {
        kind,
        header,
        options: Vec::with_capacity(16),
        values: Vec::with_capacity(128),
    };
    m.insert(OPTION_MESSAGE_TYPE, &[u8::from(kind)]);
    m.insert_ip(OPTION_SERVER_ID, server);
    if let Some(info) = req.relay_info() {
        m.insert(OPTION_RELAY_AGENT_INFO, info);
    }
    m
}

/// Adds what the firmware needs to boot `spec`: next-server (always), boot file (field and
/// option 67), option 66 (TFTP targets), option 60 as the client kind expects, option 97
/// echoed, option 43 where needed. `proxy` says the reply is a proxy-DHCP one (no address).
pub fn add_boot(
    m: &mut ReplyMessage,
    req: &Request<'_>,
    spec: &BootSpec,
    server: Ipv4Addr,
    proxy: bool,
) {
    let firmware = req.machine.firmware;
    let file = spec.target.as_boot_file();
    // Next-server even when the boot file is a URL: iPXE takes a proxy offer (and a port-4011
    // ACK) as carrying boot information only when siaddr is set AND a boot file is named
    // (`dhcp_has_pxeopts`); without siaddr it asks on 4011 again and again, rejects every ACK
    // and ends with "Nothing to boot". dnsmasq sets it on every PXE reply too.
    m.set_siaddr(server);
    if let BootTarget::Tftp(_) = spec.target {
        m.insert(OPTION_TFTP_SERVER, &dotted_quad(server));
    }
    m.set_file(file);
    m.insert(OPTION_BOOTFILE, file.as_bytes());

    let vendor: Option<&[u8]> = match firmware {
        Some(Firmware::UefiHttp) => Some(b"HTTPClient"),
        Some(Firmware::BiosPxe | Firmware::UefiPxe) => Some(b"PXEClient"),
        // iPXE only needs it to recognise a proxy offer.
        Some(Firmware::Ipxe) if proxy => Some(b"PXEClient"),
        _ => None,
    };
    if let Some(v) = vendor {
        m.insert(OPTION_VENDOR_CLASS, v);
    }
    if let Some(guid) = &req.machine.guid {
        m.insert(OPTION_CLIENT_MACHINE_ID, guid);
    }
    match firmware {
        Some(Firmware::BiosPxe) if is_raspberry_pi(req.machine.mac) => {
            m.insert(OPTION_VENDOR_EXTENSIONS, RPI_OPT43);
        }
        // A BIOS ROM takes the boot file from the offer when told so. UEFI PXE gets no
        // option 43: EDK2 then asks the proxy on port 4011, which answers with the file.
        Some(Firmware::BiosPxe) => m.insert(OPTION_VENDOR_EXTENSIONS, PXE_OPT43_USE_BOOT_FILE),
        // A full server's offer to iPXE is the whole answer. Without this iPXE waits for
        // ProxyDHCP offers (DHCP_DISC_PROXY_TIMEOUT_SEC: about 3 s under QEMU) before it asks
        // for the address; 175.176 is iPXE's documented `ipxe.no-pxedhcp`.
        Some(Firmware::Ipxe) if !proxy => m.insert(OPTION_IPXE_ENCAP, IPXE_NO_PXEDHCP),
        _ => {}
    }
}

/// `ip` as the text `a.b.c.d`, written digit by digit: this runs on every boot offer, where
/// `to_string` would go through the formatting machinery.
fn dotted_quad(ip: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::with_capacity(15);
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
    out
}

/// Where a reply to `req` goes (RFC 2131 4.1): to the relay's server port if relayed; to the
/// source of a port-4011 request; to `ciaddr` when the client has an address; else broadcast
/// (unicast to an address the client does not have yet would need an ARP entry we cannot add
/// from a kernel socket; the AF_XDP datapath sends such frames to the MAC directly).
pub fn destination(req: &Request<'_>, src: SocketAddrV4, local_port: u16) -> Destination {
    let giaddr = req.giaddr();
    if !giaddr.is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(giaddr, DHCP_SERVER_PORT));
    }
    if local_port != DHCP_SERVER_PORT && !src.ip().is_unspecified() {
        return Destination::Unicast(src);
    }
    let ciaddr = req.ciaddr();
    if !ciaddr.is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(ciaddr, DHCP_CLIENT_PORT));
    }
    Destination::Broadcast
}

/// Encodes `m` into a reply to `to`.
pub fn finish(m: &ReplyMessage, to: Destination) -> Reply {
    Reply {
        bytes: m.encode(),
        to,
        kind: m.kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to a bare DISCOVER, with options set out of order, one twice, 82 among them.
    fn built() -> ReplyMessage {
        let mut req = vec![0u8; DHCP_MIN_BYTES];
        req[..3].copy_from_slice(&[1, HTYPE_ETHERNET, HLEN_ETHERNET]);
        req[DHCP_MIN_BYTES - 4..].copy_from_slice(&MAGIC_COOKIE);
        req.extend_from_slice(&[53, 1, 1, 82, 3, 1, 1, b'p', 255]);
        let req = Request::parse(&req).unwrap();
        let mut m = base_reply(&req, MessageType::Offer, Ipv4Addr::new(198, 18, 0, 1));
        m.insert(OPTION_VENDOR_CLASS, b"first");
        m.insert(OPTION_BOOTFILE, &[b'x'; 300]);
        m.insert(OPTION_SUBNET_MASK, &[255, 255, 0, 0]);
        m.insert(OPTION_VENDOR_CLASS, b"PXEClient");
        m
    }

    #[test]
    fn options_go_out_by_code_once_each_with_82_last() {
        let bytes = finish(&built(), Destination::Broadcast).bytes;
        let mut codes = Vec::new();
        let mut at = DHCP_MIN_BYTES;
        while bytes[at] != 255 {
            codes.push(bytes[at]);
            at += 2 + usize::from(bytes[at + 1]);
        }
        assert_eq!(at, bytes.len() - 1, "option 255 ends the message");
        assert_eq!(codes, [1, 53, 54, 60, 67, 67, 82]);
        assert_eq!(built().get(OPTION_VENDOR_CLASS), Some(&b"PXEClient"[..]));
    }

    #[test]
    fn a_value_over_255_bytes_is_split_and_decodes_whole() {
        let bytes = finish(&built(), Destination::Broadcast).bytes;
        use dhcproto::Decodable as _;
        let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&bytes)).unwrap();
        match msg.opts().get(dhcproto::v4::OptionCode::BootfileName) {
            Some(dhcproto::v4::DhcpOption::BootfileName(f)) => assert_eq!(f, &[b'x'; 300]),
            other => panic!("option 67: {other:?}"),
        }
        match msg
            .opts()
            .get(dhcproto::v4::OptionCode::RelayAgentInformation)
        {
            Some(dhcproto::v4::DhcpOption::RelayAgentInformation(_)) => {}
            other => panic!("option 82: {other:?}"),
        }
    }

    #[test]
    fn dotted_quad_matches_display_for_every_octet_value() {
        for v in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(v, 0, 9, 255),
                Ipv4Addr::new(198, v, 10, 1),
                Ipv4Addr::new(7, 99, v, 100),
                Ipv4Addr::new(0, 250, 19, v),
            ] {
                assert_eq!(dotted_quad(ip), ip.to_string().into_bytes(), "{ip}");
            }
        }
    }
}
