//! Building replies: the BOOTP fields and the PXE options every mode shares.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::{
    v4::{DhcpOption, Message, MessageType, Opcode, UnknownOption},
    Encodable, Encoder,
};

use super::request::Request;
use crate::boot::{BootSpec, BootTarget, Firmware, MacAddr};

/// DHCP client port.
pub const DHCP_CLIENT_PORT: u16 = 68;
/// DHCP server (and relay) port.
pub const DHCP_SERVER_PORT: u16 = 67;
/// Longest boot file name the BOOTP `file` field holds (128 bytes with its NUL).
const FILE_FIELD_MAX: usize = 127;

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
/// Option 175: iPXE's encapsulated options.
const IPXE_ENCAPSULATED_OPTION: u8 = 175;
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

/// Starts a reply to `req`: BOOTREPLY with the request's xid, flags, giaddr and chaddr, options
/// 53 and 54, and option 82 echoed to the relay.
pub fn base_reply(req: &Request, kind: MessageType, server: Ipv4Addr) -> Message {
    let r = &req.msg;
    let mut m = Message::new_with_id(
        r.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        r.giaddr(),
        &r.chaddr()[..6],
    );
    m.set_opcode(Opcode::BootReply).set_flags(r.flags());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    if let Some(info) = req.relay_info() {
        m.opts_mut().insert(info.clone());
    }
    m
}

/// Adds what the firmware needs to boot `spec`: next-server (always), boot file (field and
/// option 67), option 66 (TFTP targets), option 60 as the client kind expects, option 97
/// echoed, option 43 where needed. `proxy` says the reply is a proxy-DHCP one (no address).
pub fn add_boot(m: &mut Message, req: &Request, spec: &BootSpec, server: Ipv4Addr, proxy: bool) {
    let firmware = req.machine.firmware;
    let file = spec.target.as_boot_file();
    // Next-server even when the boot file is a URL: iPXE takes a proxy offer (and a port-4011
    // ACK) as carrying boot information only when siaddr is set AND a boot file is named
    // (`dhcp_has_pxeopts`); without siaddr it asks on 4011 again and again, rejects every ACK
    // and ends with "Nothing to boot". dnsmasq sets it on every PXE reply too.
    m.set_siaddr(server);
    if let BootTarget::Tftp(_) = spec.target {
        m.opts_mut()
            .insert(DhcpOption::TFTPServerName(dotted_quad(server)));
    }
    if file.len() <= FILE_FIELD_MAX {
        m.set_fname_str(file);
    }
    m.opts_mut()
        .insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));

    let vendor: Option<&[u8]> = match firmware {
        Some(Firmware::UefiHttp) => Some(b"HTTPClient"),
        Some(Firmware::BiosPxe | Firmware::UefiPxe) => Some(b"PXEClient"),
        // iPXE only needs it to recognise a proxy offer.
        Some(Firmware::Ipxe) if proxy => Some(b"PXEClient"),
        _ => None,
    };
    if let Some(v) = vendor {
        m.opts_mut().insert(DhcpOption::ClassIdentifier(v.to_vec()));
    }
    if let Some(guid) = &req.machine.guid {
        m.opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
    }
    match firmware {
        Some(Firmware::BiosPxe) if is_raspberry_pi(req.machine.mac) => {
            m.opts_mut()
                .insert(DhcpOption::VendorExtensions(RPI_OPT43.to_vec()));
        }
        // A BIOS ROM takes the boot file from the offer when told so. UEFI PXE gets no
        // option 43: EDK2 then asks the proxy on port 4011, which answers with the file.
        Some(Firmware::BiosPxe) => {
            m.opts_mut().insert(DhcpOption::VendorExtensions(
                PXE_OPT43_USE_BOOT_FILE.to_vec(),
            ));
        }
        // A full server's offer to iPXE is the whole answer. Without this iPXE waits for
        // ProxyDHCP offers (DHCP_DISC_PROXY_TIMEOUT_SEC: about 3 s under QEMU) before it asks
        // for the address; 175.176 is iPXE's documented `ipxe.no-pxedhcp`.
        Some(Firmware::Ipxe) if !proxy => {
            m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                IPXE_ENCAPSULATED_OPTION.into(),
                IPXE_NO_PXEDHCP.to_vec(),
            )));
        }
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
pub fn destination(req: &Request, src: SocketAddrV4, local_port: u16) -> Destination {
    let giaddr = req.msg.giaddr();
    if !giaddr.is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(giaddr, DHCP_SERVER_PORT));
    }
    if local_port != DHCP_SERVER_PORT && !src.ip().is_unspecified() {
        return Destination::Unicast(src);
    }
    let ciaddr = req.msg.ciaddr();
    if !ciaddr.is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(ciaddr, DHCP_CLIENT_PORT));
    }
    Destination::Broadcast
}

/// Encodes `m` into a reply to `to`.
pub fn finish(m: &Message, kind: MessageType, to: Destination) -> Reply {
    let mut bytes = Vec::with_capacity(512);
    // Encoding into a Vec cannot fail: nothing here is longer than an option can hold.
    if let Err(e) = m.encode(&mut Encoder::new(&mut bytes)) {
        tracing::error!(error = %e, "encoding DHCP reply");
    }
    Reply { bytes, to, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

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
