//! The requests of the probe: a DHCPDISCOVER as each kind of boot firmware sends it, and the
//! boot-server DHCPREQUEST a PXE client sends to port 4011 after a proxy offer without a boot file.
//!
//! Pure functions over values: no sockets, so the bytes are unit-tested (see `tests` below).

use std::net::Ipv4Addr;

use dhcproto::{
    v4::{Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption},
    Encodable as _, Encoder,
};
use pxe_common::firmware::{self, Persona};
use serde::Serialize;

/// The firmware kinds the probe can pretend to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareKind {
    /// A BIOS PXE ROM (PXE 2.1, client architecture 0).
    Bios,
    /// UEFI PXE on x64 (EDK2 style, client architecture 7).
    UefiX64,
    /// UEFI HTTP Boot on x64 (client architecture 16).
    UefiHttp,
    /// iPXE (here the BIOS build, undionly.kpxe) asking again after it was chainloaded.
    Ipxe,
}

impl FirmwareKind {
    /// Every kind, in the order the probe sends them by default.
    pub const ALL: [FirmwareKind; 4] = [
        FirmwareKind::Bios,
        FirmwareKind::UefiX64,
        FirmwareKind::UefiHttp,
        FirmwareKind::Ipxe,
    ];

    /// The name used on the command line, in the table and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            FirmwareKind::Bios => "bios",
            FirmwareKind::UefiX64 => "uefi-x64",
            FirmwareKind::UefiHttp => "uefi-http",
            FirmwareKind::Ipxe => "ipxe",
        }
    }

    /// What this firmware puts in its requests.
    pub fn persona(self) -> &'static Persona {
        match self {
            FirmwareKind::Bios => &firmware::BIOS_PXE,
            FirmwareKind::UefiX64 => &firmware::UEFI_X64_PXE,
            FirmwareKind::UefiHttp => &firmware::UEFI_X64_HTTP,
            FirmwareKind::Ipxe => &firmware::IPXE_PCBIOS,
        }
    }

    /// Whether this firmware goes on to port 4011 when an offer names no boot file (PXE does;
    /// HTTP Boot does not).
    pub fn does_boot_server_discovery(self) -> bool {
        !matches!(self, FirmwareKind::UefiHttp)
    }

    /// Position in [`FirmwareKind::ALL`], used to make each kind's MAC address distinct.
    fn index(self) -> u8 {
        match self {
            FirmwareKind::Bios => 0,
            FirmwareKind::UefiX64 => 1,
            FirmwareKind::UefiHttp => 2,
            FirmwareKind::Ipxe => 3,
        }
    }
}

impl std::fmt::Display for FirmwareKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// PXE vendor sub-option 71 (inside option 43): the boot item a client asks a boot server for.
pub const PXE_SUBOPT_BOOT_ITEM: u8 = 71;

/// The MAC address the probe uses for `kind`: the interface's, with the locally administered
/// bit set (and the group bit clear) and the last two octets changed per kind, so every kind is
/// a different client to the server and none is the interface itself.
pub fn probe_mac(interface_mac: [u8; 6], kind: FirmwareKind) -> [u8; 6] {
    let mut mac = interface_mac;
    mac[0] = (mac[0] | 0x02) & !0x01;
    // 'P' flipped into octet 4 keeps every kind away from the interface's own address.
    mac[4] ^= b'P';
    mac[5] = mac[5].wrapping_add(kind.index() + 1);
    mac
}

/// Option 97 (client machine identifier): type 0 and a 16-byte GUID, fixed per MAC so the
/// server's logs show the same machine on every run.
pub fn client_guid(mac: [u8; 6]) -> [u8; 17] {
    let mut id = [0u8; 17];
    id[1..11].copy_from_slice(b"pxe-probe\0");
    id[11..].copy_from_slice(&mac);
    id
}

/// The options every request of `kind` carries (all but 53).
fn firmware_options(msg: &mut Message, kind: FirmwareKind, mac: [u8; 6]) {
    let persona = kind.persona();
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MaxMessageSize(persona.max_message_bytes));
    opts.insert(DhcpOption::ParameterRequestList(
        persona
            .parameter_request_list
            .iter()
            .map(|&code| OptionCode::from(code))
            .collect(),
    ));
    opts.insert(DhcpOption::ClassIdentifier(
        persona.vendor_class.as_bytes().to_vec(),
    ));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
        persona.arch,
    )));
    let [undi_type, major, minor] = persona.ndi;
    opts.insert(DhcpOption::ClientNetworkInterface(undi_type, major, minor));
    opts.insert(DhcpOption::ClientMachineIdentifier(
        client_guid(mac).to_vec(),
    ));
    if let Some(user_class) = persona.user_class {
        let mut client_id = vec![1]; // htype Ethernet
        client_id.extend_from_slice(&mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::UserClass(user_class.to_vec()));
    }
    if let Some(encapsulated) = persona.ipxe_encapsulated {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(firmware::OPTION_IPXE_ENCAP),
            encapsulated.to_vec(),
        )));
    }
}

/// The DHCPDISCOVER `kind` broadcasts from `mac`, with transaction id `xid`. The broadcast flag
/// is set: the probe holds no address, so answers must come back as broadcasts.
pub fn discover(kind: FirmwareKind, mac: [u8; 6], xid: u32) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(
        xid,
        unspecified,
        unspecified,
        unspecified,
        unspecified,
        &mac,
    );
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    firmware_options(&mut msg, kind, mac);
    msg
}

/// A PXE boot item (PXE sub-option 71): the server type chosen from the menu, and the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BootItem {
    /// Boot server type (PXE spec table 2-3; dnsmasq numbers its `pxe-service` entries).
    pub server_type: u16,
    /// Layer; 0 is the first.
    pub layer: u16,
}

/// The DHCPREQUEST a PXE client unicasts to a boot server on port 4011 after an offer without a
/// boot file: from `ciaddr` (the address it holds), with its firmware options and, when the offer
/// carried a boot menu, option 43 asking for `item`.
pub fn boot_server_request(
    kind: FirmwareKind,
    mac: [u8; 6],
    xid: u32,
    ciaddr: Ipv4Addr,
    item: Option<BootItem>,
) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, ciaddr, unspecified, unspecified, unspecified, &mac);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    firmware_options(&mut msg, kind, mac);
    if let Some(item) = item {
        let mut vendor = vec![PXE_SUBOPT_BOOT_ITEM, 4];
        vendor.extend_from_slice(&item.server_type.to_be_bytes());
        vendor.extend_from_slice(&item.layer.to_be_bytes());
        vendor.push(u8::from(OptionCode::End));
        msg.opts_mut().insert(DhcpOption::VendorExtensions(vendor));
    }
    msg
}

/// The wire bytes of `msg`.
pub fn encode(msg: &Message) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    let mut buf = Vec::with_capacity(dhcproto::v4::MIN_PACKET_SIZE);
    msg.encode(&mut Encoder::new(&mut buf))?;
    // Old relays and servers drop BOOTP messages shorter than 300 bytes (RFC 1542): pad as
    // firmware does.
    if buf.len() < dhcproto::v4::MIN_PACKET_SIZE {
        buf.resize(dhcproto::v4::MIN_PACKET_SIZE, 0);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IFACE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    /// Offset of the options (after the fixed header and the magic cookie).
    const OPTIONS_AT: usize = 240;

    /// Walks the options of an encoded message: (code, value) in wire order, up to End.
    fn wire_options(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        assert_eq!(&bytes[236..240], &[99, 130, 83, 99], "magic cookie");
        let mut out = Vec::new();
        let mut at = OPTIONS_AT;
        loop {
            let code = bytes[at];
            match code {
                0 => at += 1,
                255 => return out,
                _ => {
                    let len = usize::from(bytes[at + 1]);
                    out.push((code, bytes[at + 2..at + 2 + len].to_vec()));
                    at += 2 + len;
                }
            }
        }
    }

    fn option(options: &[(u8, Vec<u8>)], code: u8) -> Option<&[u8]> {
        options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    fn discover_bytes(kind: FirmwareKind, xid: u32) -> Vec<u8> {
        encode(&discover(kind, probe_mac(IFACE_MAC, kind), xid)).expect("encoding a DISCOVER")
    }

    #[test]
    fn header_is_a_broadcast_bootrequest_from_the_kind_mac() {
        for kind in FirmwareKind::ALL {
            let bytes = discover_bytes(kind, 0x1234_5678);
            assert!(bytes.len() >= 300, "{kind}: {} bytes", bytes.len());
            assert_eq!(&bytes[0..4], &[1, 1, 6, 0], "{kind}: op htype hlen hops");
            assert_eq!(&bytes[4..8], &[0x12, 0x34, 0x56, 0x78], "{kind}: xid");
            assert_eq!(&bytes[10..12], &[0x80, 0x00], "{kind}: broadcast flag");
            assert_eq!(
                &bytes[12..28],
                &[0; 16],
                "{kind}: ciaddr yiaddr siaddr giaddr"
            );
            let mac = probe_mac(IFACE_MAC, kind);
            assert_eq!(&bytes[28..34], &mac, "{kind}: chaddr");
            assert_eq!(&bytes[34..44], &[0; 10], "{kind}: chaddr padding");
            assert_eq!(&bytes[44..236], &[0; 192], "{kind}: sname and file empty");
        }
    }

    #[test]
    fn macs_are_locally_administered_unicast_and_distinct() {
        let macs: Vec<[u8; 6]> = FirmwareKind::ALL
            .iter()
            .map(|&k| probe_mac(IFACE_MAC, k))
            .collect();
        for (i, mac) in macs.iter().enumerate() {
            assert_eq!(
                mac[0] & 0x03,
                0x02,
                "{mac:02x?}: locally administered unicast"
            );
            assert_ne!(*mac, IFACE_MAC);
            for other in &macs[i + 1..] {
                assert_ne!(mac, other);
            }
        }
        // Already locally administered (a veth): still not the interface's own address.
        let veth = [0x06, 0, 0, 0, 0, 0];
        for kind in FirmwareKind::ALL {
            assert_ne!(probe_mac(veth, kind), veth);
        }
    }

    #[test]
    fn bios_discover_carries_the_pxe_rom_options() {
        let options = wire_options(&discover_bytes(FirmwareKind::Bios, 1));
        assert_eq!(options[0], (53, vec![1]), "message type first: DISCOVER");
        assert_eq!(
            option(&options, 60),
            Some(&b"PXEClient:Arch:00000:UNDI:002001"[..])
        );
        assert_eq!(option(&options, 93), Some(&[0, 0][..]));
        assert_eq!(option(&options, 94), Some(&[1, 2, 1][..]));
        assert_eq!(option(&options, 57), Some(&1260u16.to_be_bytes()[..]));
        let guid = option(&options, 97).expect("option 97");
        assert_eq!(guid.len(), 17);
        assert_eq!(guid[0], 0, "GUID type 0");
        let prl = option(&options, 55).expect("option 55");
        for code in [1, 3, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135] {
            assert!(prl.contains(&code), "55 lacks {code}: {prl:?}");
        }
        for absent in [61, 77, 175] {
            assert_eq!(option(&options, absent), None, "BIOS ROMs send no {absent}");
        }
    }

    #[test]
    fn uefi_x64_discover_says_arch_7() {
        let options = wire_options(&discover_bytes(FirmwareKind::UefiX64, 1));
        assert_eq!(
            option(&options, 60),
            Some(&b"PXEClient:Arch:00007:UNDI:003016"[..])
        );
        assert_eq!(option(&options, 93), Some(&[0, 7][..]));
        assert_eq!(option(&options, 94), Some(&[1, 3, 16][..]));
        assert_eq!(option(&options, 57), Some(&1472u16.to_be_bytes()[..]));
        let prl = option(&options, 55).expect("option 55");
        for code in [43, 60, 66, 67, 97, 128, 135] {
            assert!(prl.contains(&code), "55 lacks {code}: {prl:?}");
        }
        assert_eq!(option(&options, 77), None);
    }

    #[test]
    fn uefi_http_discover_is_an_httpclient_arch_16() {
        let options = wire_options(&discover_bytes(FirmwareKind::UefiHttp, 1));
        assert_eq!(
            option(&options, 60),
            Some(&b"HTTPClient:Arch:00016:UNDI:003001"[..])
        );
        assert_eq!(option(&options, 93), Some(&[0, 16][..]));
        assert_eq!(option(&options, 94), Some(&[1, 3, 1][..]));
        let prl = option(&options, 55).expect("option 55");
        assert!(prl.contains(&67) && prl.contains(&60), "{prl:?}");
    }

    #[test]
    fn ipxe_discover_has_user_class_and_encapsulated_options() {
        let kind = FirmwareKind::Ipxe;
        let options = wire_options(&discover_bytes(kind, 1));
        assert_eq!(option(&options, 77), Some(&b"iPXE"[..]));
        assert_eq!(
            option(&options, 60),
            Some(&b"PXEClient:Arch:00000:UNDI:002001"[..])
        );
        assert_eq!(option(&options, 93), Some(&[0, 0][..]));
        let mut client_id = vec![1];
        client_id.extend_from_slice(&probe_mac(IFACE_MAC, kind));
        assert_eq!(option(&options, 61), Some(&client_id[..]));
        let encap = option(&options, 175).expect("option 175");
        // Walk the sub-options: well formed, with the HTTP feature (19) and the bus id (177).
        let mut at = 0;
        let mut codes = Vec::new();
        while at < encap.len() {
            codes.push(encap[at]);
            at += 2 + usize::from(encap[at + 1]);
        }
        assert_eq!(at, encap.len(), "175 sub-options fill it exactly");
        assert!(codes.contains(&19) && codes.contains(&177), "{codes:?}");
        let prl = option(&options, 55).expect("option 55");
        assert!(prl.contains(&175), "{prl:?}");
    }

    #[test]
    fn boot_server_request_is_unicast_from_ciaddr_with_the_boot_item() {
        let kind = FirmwareKind::Bios;
        let mac = probe_mac(IFACE_MAC, kind);
        let ciaddr = Ipv4Addr::new(198, 18, 0, 2);
        let item = BootItem {
            server_type: 0x8000,
            layer: 0,
        };
        let bytes = encode(&boot_server_request(kind, mac, 7, ciaddr, Some(item)))
            .expect("encoding a REQUEST");
        assert_eq!(&bytes[10..12], &[0, 0], "no broadcast flag");
        assert_eq!(&bytes[12..16], &ciaddr.octets(), "ciaddr");
        let options = wire_options(&bytes);
        assert_eq!(option(&options, 53), Some(&[3][..]), "DHCPREQUEST");
        assert_eq!(
            option(&options, 43),
            Some(&[71, 4, 0x80, 0x00, 0, 0, 255][..])
        );
        assert_eq!(
            option(&options, 60),
            Some(kind.persona().vendor_class.as_bytes())
        );

        let bytes = encode(&boot_server_request(
            FirmwareKind::UefiX64,
            mac,
            7,
            ciaddr,
            None,
        ))
        .expect("encoding a REQUEST");
        assert_eq!(option(&wire_options(&bytes), 43), None);
    }
}
