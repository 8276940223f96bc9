//! Byte-level fixtures: what each firmware sends, and the exact reply it must get.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
};

use super::*;
use crate::boot::{BootPolicy, Group, Selectors};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const XID: u32 = 0x1234_5678;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUID: [u8; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const FROM_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
const NOW: u64 = 1_800_000_000;

/// Option 60 of each firmware kind, from the table the probe and the simulator ask with.
const BIOS_VENDOR: &[u8] = pxe_common::firmware::BIOS_PXE.vendor_class.as_bytes();
const UEFI_VENDOR: &[u8] = pxe_common::firmware::UEFI_X64_PXE.vendor_class.as_bytes();
const HTTP_VENDOR: &[u8] = pxe_common::firmware::UEFI_X64_HTTP.vendor_class.as_bytes();

/// A BOOTP/DHCP message laid out by hand, independent of the encoder under test.
struct Raw {
    op: u8,
    htype: u8,
    hlen: u8,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: [u8; 6],
    file: &'static str,
    magic: [u8; 4],
    /// (code, value), written in this order, then 255.
    options: Vec<(u8, Vec<u8>)>,
}

impl Raw {
    fn request(options: Vec<(u8, Vec<u8>)>) -> Raw {
        Raw {
            op: 1,
            htype: 1,
            hlen: 6,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: MAC,
            file: "",
            magic: wire::MAGIC_COOKIE,
            options,
        }
    }

    fn reply(options: Vec<(u8, Vec<u8>)>) -> Raw {
        Raw {
            op: 2,
            ..Raw::request(options)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![self.op, self.htype, self.hlen, 0];
        b.extend_from_slice(&XID.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&[0; 64]);
        let mut file = [0u8; 128];
        file[..self.file.len()].copy_from_slice(self.file.as_bytes());
        b.extend_from_slice(&file);
        b.extend_from_slice(&self.magic);
        for (code, value) in &self.options {
            b.push(*code);
            b.push(u8::try_from(value.len()).unwrap());
            b.extend_from_slice(value);
        }
        b.push(255);
        b
    }
}

fn opt(code: u8, value: &[u8]) -> (u8, Vec<u8>) {
    (code, value.to_vec())
}

/// The options a PXE ROM sends in a DISCOVER (or REQUEST), as seen from real firmware.
fn pxe_options(msg_type: u8, arch: u16, vendor: &[u8]) -> Vec<(u8, Vec<u8>)> {
    vec![
        opt(53, &[msg_type]),
        opt(57, &1260u16.to_be_bytes()),
        opt(93, &arch.to_be_bytes()),
        opt(94, &[1, 2, 1]),
        opt(97, &GUID),
        opt(60, vendor),
        opt(
            55,
            &[1, 3, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135],
        ),
    ]
}

fn policy() -> Arc<BootPolicy> {
    Arc::new(BootPolicy::new(BTreeMap::new(), vec![], None, 80))
}

fn proxy_core() -> DhcpCore {
    DhcpCore::new(Mode::Proxy, policy(), SERVER, vec![])
}

/// The boot file field without its NUL padding.
fn fname(msg: &dhcproto::v4::Message) -> &[u8] {
    let f = msg.fname().unwrap_or_default();
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    &f[..end]
}

fn reply_of(outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Reply(r, _) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn assert_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "reply differs at byte {first:?} (lengths {} vs {})\n got: {got:02x?}\nwant: {want:02x?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn bios_pxe_discover_gets_a_proxy_offer_with_the_nbp() {
    let req = Raw::request(pxe_options(1, 0, BIOS_VENDOR)).bytes();
    let (outcome, info) = proxy_core().handle(&req, FROM_CLIENT, 67, NOW);
    let reply = reply_of(outcome);
    assert_eq!(reply.to, Destination::Broadcast);
    assert_eq!(
        info.unwrap().1.firmware,
        Some(crate::boot::Firmware::BiosPxe)
    );
    let want = Raw {
        siaddr: SERVER,
        file: "undionly.kpxe",
        ..Raw::reply(vec![
            opt(43, &[6, 1, 8, 255]),
            opt(53, &[2]),
            opt(54, &SERVER.octets()),
            opt(60, b"PXEClient"),
            opt(66, b"198.18.0.1"),
            opt(67, b"undionly.kpxe"),
            opt(97, &GUID),
        ])
    };
    assert_bytes(&reply.bytes, &want.bytes());
}

#[test]
fn uefi_x64_discover_gets_ipxe_efi_and_no_option_43() {
    let req = Raw::request(pxe_options(1, 7, UEFI_VENDOR)).bytes();
    let reply = reply_of(proxy_core().handle(&req, FROM_CLIENT, 67, NOW).0);
    let want = Raw {
        siaddr: SERVER,
        file: "ipxe.efi",
        ..Raw::reply(vec![
            opt(53, &[2]),
            opt(54, &SERVER.octets()),
            opt(60, b"PXEClient"),
            opt(66, b"198.18.0.1"),
            opt(67, b"ipxe.efi"),
            opt(97, &GUID),
        ])
    };
    assert_bytes(&reply.bytes, &want.bytes());
}

#[test]
fn boot_server_request_on_4011_gets_an_ack_to_its_source() {
    let client = Ipv4Addr::new(198, 18, 0, 50);
    let req = Raw {
        ciaddr: client,
        flags: 0,
        ..Raw::request(pxe_options(3, 7, UEFI_VENDOR))
    }
    .bytes();
    let src = SocketAddrV4::new(client, 4011);
    let reply = reply_of(proxy_core().handle(&req, src, 4011, NOW).0);
    assert_eq!(reply.to, Destination::Unicast(src));
    let want = Raw {
        flags: 0,
        siaddr: SERVER,
        file: "ipxe.efi",
        ..Raw::reply(vec![
            opt(53, &[5]),
            opt(54, &SERVER.octets()),
            opt(60, b"PXEClient"),
            opt(66, b"198.18.0.1"),
            opt(67, b"ipxe.efi"),
            opt(97, &GUID),
        ])
    };
    assert_bytes(&reply.bytes, &want.bytes());
    // The same REQUEST on port 67 is the site server's business.
    let (outcome, _) = proxy_core().handle(&req, src, 67, NOW);
    assert!(
        matches!(outcome, Outcome::Ignored(Ignored::NotForProxy)),
        "{outcome:?}"
    );
}

#[test]
fn uefi_http_boot_gets_an_http_url_and_httpclient() {
    let req = Raw::request(pxe_options(1, 16, HTTP_VENDOR)).bytes();
    let reply = reply_of(proxy_core().handle(&req, FROM_CLIENT, 67, NOW).0);
    let url = "http://198.18.0.1/ipxe.efi";
    let want = Raw {
        siaddr: SERVER,
        file: url,
        ..Raw::reply(vec![
            opt(53, &[2]),
            opt(54, &SERVER.octets()),
            opt(60, b"HTTPClient"),
            opt(67, url.as_bytes()),
            opt(97, &GUID),
        ])
    };
    assert_bytes(&reply.bytes, &want.bytes());
}

#[test]
fn ipxe_gets_its_script_url_never_the_nbp() {
    for (arch, vendor) in [(0u16, BIOS_VENDOR), (7, UEFI_VENDOR)] {
        let mut options = pxe_options(1, arch, vendor);
        options.push(opt(77, b"iPXE"));
        options.push(opt(175, &[19, 1, 1]));
        let req = Raw::request(options).bytes();
        let reply = reply_of(proxy_core().handle(&req, FROM_CLIENT, 67, NOW).0);
        let url = "http://198.18.0.1/boot.ipxe";
        let want = Raw {
            // iPXE's `dhcp_has_pxeopts`: a proxy offer without siaddr carries no boot
            // information for iPXE, however good its option 67 (found booting QEMU's iPXE ROM).
            siaddr: SERVER,
            file: url,
            ..Raw::reply(vec![
                opt(53, &[2]),
                opt(54, &SERVER.octets()),
                opt(60, b"PXEClient"),
                opt(67, url.as_bytes()),
                opt(97, &GUID),
            ])
        };
        assert_bytes(&reply.bytes, &want.bytes());
    }
    // iPXE recognised by option 77 alone (no option 175), too.
    let mut options = pxe_options(1, 0, BIOS_VENDOR);
    options.push(opt(77, b"iPXE"));
    let reply = reply_of(
        proxy_core()
            .handle(&Raw::request(options).bytes(), FROM_CLIENT, 67, NOW)
            .0,
    );
    let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).unwrap();
    assert_eq!(fname(&msg), b"http://198.18.0.1/boot.ipxe");
}

/// iPXE's ProxyDHCPREQUEST: after the site server's ACK it asks the proxy on port 4011 from its
/// new address and port 68. It takes the ACK only from port 4011 with siaddr and a boot file
/// (`dhcp_proxy_rx` and `dhcp_has_pxeopts` in iPXE's dhcp.c).
#[test]
fn ipxe_proxy_request_on_4011_gets_an_ack_with_next_server_and_script() {
    let client = Ipv4Addr::new(198, 18, 0, 124);
    let mut options = pxe_options(3, 0, BIOS_VENDOR);
    options.push(opt(77, b"iPXE"));
    options.push(opt(175, &[19, 1, 1]));
    let req = Raw {
        ciaddr: client,
        flags: 0,
        ..Raw::request(options)
    }
    .bytes();
    let src = SocketAddrV4::new(client, 68);
    let reply = reply_of(proxy_core().handle(&req, src, 4011, NOW).0);
    assert_eq!(reply.to, Destination::Unicast(src));
    let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).unwrap();
    assert_eq!(msg.opts().msg_type(), Some(dhcproto::v4::MessageType::Ack));
    assert_eq!(msg.siaddr(), SERVER);
    assert_eq!(fname(&msg), b"http://198.18.0.1/boot.ipxe");
}

#[test]
fn raspberry_pi_gets_its_vendor_string() {
    let req = Raw {
        chaddr: [0xdc, 0xa6, 0x32, 1, 2, 3],
        ..Raw::request(vec![opt(53, &[1]), opt(93, &[0, 0]), opt(60, BIOS_VENDOR)])
    }
    .bytes();
    let reply = reply_of(proxy_core().handle(&req, FROM_CLIENT, 67, NOW).0);
    let mut pi43 = vec![6, 1, 3, 10, 4, 0, b'P', b'X', b'E', 9, 20, 0, 0, 17];
    pi43.extend_from_slice(b"Raspberry Pi Boot");
    pi43.push(255);
    let want = Raw {
        chaddr: [0xdc, 0xa6, 0x32, 1, 2, 3],
        siaddr: SERVER,
        file: "undionly.kpxe",
        ..Raw::reply(vec![
            opt(43, &pi43),
            opt(53, &[2]),
            opt(54, &SERVER.octets()),
            opt(60, b"PXEClient"),
            opt(66, b"198.18.0.1"),
            opt(67, b"undionly.kpxe"),
        ])
    };
    assert_bytes(&reply.bytes, &want.bytes());
}

/// A DISCOVER with `options` from `relay` (giaddr set, no broadcast flag) to a proxy core:
/// the outcome and the machine it read.
fn through_relay(relay: Ipv4Addr, options: Vec<(u8, Vec<u8>)>) -> (Outcome, crate::boot::Machine) {
    let req = Raw {
        giaddr: relay,
        flags: 0,
        ..Raw::request(options)
    }
    .bytes();
    let (outcome, info) = proxy_core().handle(&req, SocketAddrV4::new(relay, 67), 67, NOW);
    (outcome, info.expect("read").1)
}

#[test]
fn relayed_request_is_answered_to_the_relay_with_option_82() {
    let relay = Ipv4Addr::new(198, 19, 9, 1);
    // Sub-options out of order and one this server does not know: echoed as they came.
    let option82 = vec![
        2, 3, b's', b'w', b'1', 9, 1, 0xab, 1, 4, b'p', b'o', b'r', b't',
    ];
    let mut options = pxe_options(1, 0, BIOS_VENDOR);
    options.push((82, option82.clone()));
    let (outcome, machine) = through_relay(relay, options);
    assert_eq!(machine.relay, Some(relay));
    assert_eq!(machine.circuit_id.as_deref(), Some(&b"port"[..]));
    assert_eq!(machine.remote_id.as_deref(), Some(&b"sw1"[..]));
    let reply = reply_of(outcome);
    assert_eq!(reply.to, Destination::Unicast(SocketAddrV4::new(relay, 67)));
    let want = Raw {
        flags: 0,
        giaddr: relay,
        siaddr: SERVER,
        file: "undionly.kpxe",
        ..Raw::reply(vec![
            opt(43, &[6, 1, 8, 255]),
            opt(53, &[2]),
            opt(54, &SERVER.octets()),
            opt(60, b"PXEClient"),
            opt(66, b"198.18.0.1"),
            opt(67, b"undionly.kpxe"),
            opt(97, &GUID),
            // RFC 3046: the relay agent option goes last.
            (82, option82),
        ])
    };
    assert_bytes(&reply.bytes, &want.bytes());
}

#[test]
fn an_option_sent_in_parts_is_read_and_echoed_whole() {
    // RFC 3396: a relay's long option 82 and the vendor class, each split in two.
    let relay = Ipv4Addr::new(198, 19, 9, 1);
    let option82 = [&[1, 6][..], b"port-7", &[2, 3], b"sw1"].concat();
    let (first, second) = option82.split_at(5);
    let mut options = vec![opt(53, &[1])];
    options.push(opt(82, first));
    options.push(opt(60, &BIOS_VENDOR[..12]));
    options.push(opt(93, &[0, 0]));
    options.push(opt(60, &BIOS_VENDOR[12..]));
    options.push(opt(82, second));
    let (outcome, machine) = through_relay(relay, options);
    assert_eq!(machine.firmware, Some(crate::boot::Firmware::BiosPxe));
    assert_eq!(machine.circuit_id.as_deref(), Some(&b"port-7"[..]));
    assert_eq!(machine.remote_id.as_deref(), Some(&b"sw1"[..]));
    let reply = reply_of(outcome);
    let tail = [&[82, option82.len() as u8][..], &option82, &[255]].concat();
    assert!(reply.bytes.ends_with(&tail), "{:02x?}", reply.bytes);
}

#[test]
fn options_repeated_in_turns_are_each_joined_in_order() {
    // Two codes split in three and two parts, interleaved: 60 reads PXEClient:Arch:00007 and
    // 77 reads iPXE, so the machine is iPXE (never the ROM's NBP again).
    let options = vec![
        opt(53, &[1]),
        opt(60, b"PXE"),
        opt(77, b"i"),
        opt(60, b"Client"),
        opt(77, b"PXE"),
        opt(60, b":Arch:00007"),
    ];
    let bytes = Raw::request(options).bytes();
    let req = request::Request::parse(&bytes).unwrap();
    assert_eq!(req.vendor_class(), Some(&b"PXEClient:Arch:00007"[..]));
    assert_eq!(req.machine.firmware, Some(crate::boot::Firmware::Ipxe));
    assert_eq!(req.machine.arch, Some(crate::boot::Arch::EFI_X64));
}

#[test]
fn proxy_ignores_plain_dhcp_clients_and_ignored_macs() {
    let plain = Raw::request(vec![opt(53, &[1]), opt(60, b"MSFT 5.0")]).bytes();
    let (outcome, _) = proxy_core().handle(&plain, FROM_CLIENT, 67, NOW);
    assert!(
        matches!(outcome, Outcome::Ignored(Ignored::NotPxe)),
        "{outcome:?}"
    );

    let pxe = Raw::request(pxe_options(1, 0, BIOS_VENDOR)).bytes();
    let mut core = DhcpCore::new(Mode::Proxy, policy(), SERVER, vec![vec![0x52, 0x54, 0x00]]);
    let (outcome, _) = core.handle(&pxe, FROM_CLIENT, 67, NOW);
    assert!(
        matches!(outcome, Outcome::Ignored(Ignored::IgnoredMac)),
        "{outcome:?}"
    );
}

#[test]
fn groups_choose_the_boot_file() {
    let group = Group {
        name: "rack1".into(),
        selectors: Selectors {
            macs: vec![crate::boot::MacAddr(MAC)],
            ..Selectors::default()
        },
        boot_file: Some("rack1/undionly.kpxe".into()),
        ..Group::default()
    };
    let policy = Arc::new(BootPolicy::new(BTreeMap::new(), vec![group], None, 80));
    let mut core = DhcpCore::new(Mode::Proxy, policy, SERVER, vec![]);
    let req = Raw::request(pxe_options(1, 0, BIOS_VENDOR)).bytes();
    let reply = reply_of(core.handle(&req, FROM_CLIENT, 67, NOW).0);
    let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).unwrap();
    assert_eq!(fname(&msg), b"rack1/undionly.kpxe");
}

#[test]
fn malformed_datagrams_are_dropped_by_reason() {
    let good = Raw::request(pxe_options(1, 0, BIOS_VENDOR));
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        (
            "header cut",
            good.bytes()[..200].to_vec(),
            DropReason::Truncated,
        ),
        (
            "oversized",
            {
                let mut b = good.bytes();
                b.resize(wire::DHCP_MAX_REQUEST_BYTES + 1, 0);
                b
            },
            DropReason::Oversized,
        ),
        (
            "a reply",
            Raw {
                op: 2,
                ..Raw::request(pxe_options(1, 0, BIOS_VENDOR))
            }
            .bytes(),
            DropReason::WrongOp,
        ),
        (
            "op 7",
            Raw {
                op: 7,
                ..Raw::request(pxe_options(1, 0, BIOS_VENDOR))
            }
            .bytes(),
            DropReason::WrongOp,
        ),
        (
            "hlen 16",
            Raw {
                hlen: 16,
                ..Raw::request(pxe_options(1, 0, BIOS_VENDOR))
            }
            .bytes(),
            DropReason::WrongHlen,
        ),
        (
            "htype 6",
            Raw {
                htype: 6,
                ..Raw::request(pxe_options(1, 0, BIOS_VENDOR))
            }
            .bytes(),
            DropReason::WrongHlen,
        ),
        (
            "no magic",
            Raw {
                magic: [0; 4],
                ..Raw::request(pxe_options(1, 0, BIOS_VENDOR))
            }
            .bytes(),
            DropReason::BadMagic,
        ),
        (
            "option overflows the packet",
            {
                let mut b = Raw::request(vec![opt(53, &[1])]).bytes();
                b.pop();
                b.extend_from_slice(&[60, 200, b'P', b'X']);
                b
            },
            DropReason::BadOptions,
        ),
        (
            "option length byte missing",
            {
                let mut b = Raw::request(vec![opt(53, &[1])]).bytes();
                b.pop();
                b.push(60);
                b
            },
            DropReason::BadOptions,
        ),
        (
            "no message type",
            Raw::request(vec![opt(60, BIOS_VENDOR)]).bytes(),
            DropReason::NoMessageType,
        ),
        (
            "OFFER from a client",
            Raw::request(vec![opt(53, &[2])]).bytes(),
            DropReason::UnexpectedMessageType,
        ),
        (
            "unknown message type 99",
            Raw::request(vec![opt(53, &[99])]).bytes(),
            DropReason::UnexpectedMessageType,
        ),
        (
            "message type two bytes long",
            Raw::request(vec![opt(53, &[1, 0])]).bytes(),
            DropReason::BadOptions,
        ),
        (
            "server identifier cut to three bytes",
            Raw::request(vec![opt(53, &[3]), opt(54, &[198, 18, 0])]).bytes(),
            DropReason::BadOptions,
        ),
        (
            "requested address five bytes long",
            Raw::request(vec![opt(53, &[3]), opt(50, &[198, 18, 0, 9, 9])]).bytes(),
            DropReason::BadOptions,
        ),
    ];
    for (name, bytes, want) in cases {
        let (outcome, info) = proxy_core().handle(&bytes, FROM_CLIENT, 67, NOW);
        match outcome {
            Outcome::Dropped(r) => assert_eq!(r, want, "{name}"),
            other => panic!("{name}: expected a drop, got {other:?}"),
        }
        assert!(info.is_none(), "{name}");
    }
}

mod full {
    use super::*;
    use crate::dhcp::full::{LeaseEvent, Reservation, SubnetConfig};

    fn full_core(range: (u8, u8)) -> DhcpCore {
        let subnet = SubnetConfig {
            network: "198.18.0.0/24".parse().unwrap(),
            range: (
                Ipv4Addr::new(198, 18, 0, range.0),
                Ipv4Addr::new(198, 18, 0, range.1),
            ),
            router: Some(SERVER),
            dns: vec![SERVER],
            domain: Some("boot.test".into()),
            lease_secs: 3600,
        };
        let reservation = Reservation {
            mac: crate::boot::MacAddr([0x52, 0x54, 0, 0, 0, 0x99]),
            ip: Ipv4Addr::new(198, 18, 0, 5),
            hostname: Some("node99".into()),
        };
        DhcpCore::new(
            Mode::Full(Box::new(FullDhcp::new(vec![subnet], vec![reservation]))),
            policy(),
            SERVER,
            vec![],
        )
    }

    fn decode(reply: &Reply) -> dhcproto::v4::Message {
        dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).unwrap()
    }

    fn discover(mac: [u8; 6]) -> Vec<u8> {
        Raw {
            chaddr: mac,
            ..Raw::request(pxe_options(1, 0, BIOS_VENDOR))
        }
        .bytes()
    }

    fn select(mac: [u8; 6], ip: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        let mut o = pxe_options(3, 0, BIOS_VENDOR);
        o.push(opt(50, &ip.octets()));
        o.push(opt(54, &server.octets()));
        Raw {
            chaddr: mac,
            ..Raw::request(o)
        }
        .bytes()
    }

    #[test]
    fn discover_offer_request_ack_binds_a_lease() {
        let mut core = full_core((100, 110));
        let offer = reply_of(core.handle(&discover(MAC), FROM_CLIENT, 67, NOW).0);
        let o = decode(&offer);
        let ip = o.yiaddr();
        assert_eq!(ip, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(o.siaddr(), SERVER);
        assert_eq!(fname(&o), b"undionly.kpxe");
        assert_eq!(o.opts().msg_type(), Some(dhcproto::v4::MessageType::Offer));
        assert!(matches!(
            o.opts().get(dhcproto::v4::OptionCode::AddressLeaseTime),
            Some(dhcproto::v4::DhcpOption::AddressLeaseTime(3600))
        ));
        // Nothing is durable before the ACK.
        assert!(core
            .full()
            .unwrap()
            .lease_of(crate::boot::MacAddr(MAC))
            .is_none());

        let (outcome, _) = core.handle(&select(MAC, ip, SERVER), FROM_CLIENT, 67, NOW);
        let Outcome::Reply(
            ack,
            Some(LeaseEvent::Bound {
                ip: bound,
                expires_unix,
                ..
            }),
        ) = outcome
        else {
            panic!("expected an ACK with a lease to commit, got {outcome:?}");
        };
        assert_eq!(bound, ip);
        assert_eq!(expires_unix, NOW + 3600);
        assert_eq!(
            decode(&ack).opts().msg_type(),
            Some(dhcproto::v4::MessageType::Ack)
        );
        assert_eq!(decode(&ack).yiaddr(), ip);

        // Renewal: unicast from the bound address.
        let mut o = vec![opt(53, &[3])];
        o.push(opt(61, &[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        let renew = Raw {
            ciaddr: ip,
            flags: 0,
            ..Raw::request(o)
        }
        .bytes();
        let (outcome, _) = core.handle(&renew, SocketAddrV4::new(ip, 68), 67, NOW + 1800);
        let Outcome::Reply(ack, Some(LeaseEvent::Bound { expires_unix, .. })) = outcome else {
            panic!("renewal: {outcome:?}");
        };
        assert_eq!(expires_unix, NOW + 1800 + 3600);
        assert_eq!(ack.to, Destination::Unicast(SocketAddrV4::new(ip, 68)));

        // A second DISCOVER from the same machine gets the same address.
        let again = reply_of(core.handle(&discover(MAC), FROM_CLIENT, 67, NOW + 1900).0);
        assert_eq!(decode(&again).yiaddr(), ip);
    }

    /// Found booting QEMU: iPXE waited about 3 s for ProxyDHCP offers after every offer of the
    /// full server. Its offer and ACK now carry 175.176 = 1 (`no-pxedhcp`); PXE ROMs get none.
    #[test]
    fn ipxe_is_told_not_to_wait_for_proxy_offers() {
        let no_pxedhcp = |reply: &Reply| {
            decode(reply)
                .opts()
                .get(dhcproto::v4::OptionCode::Unknown(175))
                .map(|o| match o {
                    dhcproto::v4::DhcpOption::Unknown(u) => u.data().to_vec(),
                    other => panic!("option 175 decoded as {other:?}"),
                })
        };
        let mut core = full_core((100, 110));
        let mut options = pxe_options(1, 0, BIOS_VENDOR);
        options.push(opt(77, b"iPXE"));
        let ipxe = Raw::request(options).bytes();
        let offer = reply_of(core.handle(&ipxe, FROM_CLIENT, 67, NOW).0);
        assert_eq!(no_pxedhcp(&offer), Some(vec![176, 1, 1]));
        assert_eq!(fname(&decode(&offer)), b"http://198.18.0.1/boot.ipxe");
        let ip = decode(&offer).yiaddr();
        let mut options = pxe_options(3, 0, BIOS_VENDOR);
        options.push(opt(77, b"iPXE"));
        options.push(opt(50, &ip.octets()));
        options.push(opt(54, &SERVER.octets()));
        let ack = reply_of(
            core.handle(&Raw::request(options).bytes(), FROM_CLIENT, 67, NOW)
                .0,
        );
        assert_eq!(
            decode(&ack).opts().msg_type(),
            Some(dhcproto::v4::MessageType::Ack)
        );
        assert_eq!(no_pxedhcp(&ack), Some(vec![176, 1, 1]));
        // A PXE ROM's offer does not carry iPXE's options, nor does a proxy offer.
        let rom = reply_of(
            core.handle(&discover([2, 0, 0, 0, 0, 1]), FROM_CLIENT, 67, NOW)
                .0,
        );
        assert_eq!(no_pxedhcp(&rom), None);
        let mut options = pxe_options(1, 0, BIOS_VENDOR);
        options.push(opt(77, b"iPXE"));
        let proxied = reply_of(
            proxy_core()
                .handle(&Raw::request(options).bytes(), FROM_CLIENT, 67, NOW)
                .0,
        );
        assert_eq!(no_pxedhcp(&proxied), None);
    }

    #[test]
    fn naks_requests_for_addresses_not_theirs() {
        let mut core = full_core((100, 110));
        let other = [0x52, 0x54, 0, 0, 0, 1];
        let offer = reply_of(core.handle(&discover(other), FROM_CLIENT, 67, NOW).0);
        let taken = decode(&offer).yiaddr();
        core.handle(&select(other, taken, SERVER), FROM_CLIENT, 67, NOW);

        // INIT-REBOOT asking for the other machine's address.
        let mut o = vec![opt(53, &[3])];
        o.push(opt(50, &taken.octets()));
        let request = Raw {
            flags: 0,
            ..Raw::request(o)
        };
        let (outcome, _) = core.handle(&request.bytes(), FROM_CLIENT, 67, NOW);
        let nak = reply_of(outcome);
        assert_eq!(nak.to, Destination::Broadcast);
        let msg = decode(&nak);
        assert_eq!(msg.opts().msg_type(), Some(dhcproto::v4::MessageType::Nak));
        assert!(
            msg.flags().broadcast(),
            "RFC 2131 4.3.2: a NAK is broadcast"
        );
        match msg.opts().get(dhcproto::v4::OptionCode::Message) {
            Some(dhcproto::v4::DhcpOption::Message(why)) => {
                assert_eq!(
                    why,
                    "address belongs to another client or is not ours to give"
                );
            }
            other => panic!("option 56: {other:?}"),
        }
        // The same through a relay: to the relay, broadcast bit set for it to broadcast.
        let relay = Ipv4Addr::new(198, 18, 0, 254);
        let relayed = Raw {
            giaddr: relay,
            ..request
        };
        let nak = reply_of(core.handle(&relayed.bytes(), FROM_CLIENT, 67, NOW).0);
        assert_eq!(nak.to, Destination::Unicast(SocketAddrV4::new(relay, 67)));
        assert!(decode(&nak).flags().broadcast(), "relayed NAK");

        // INIT-REBOOT asking for an address of another network.
        let mut o = vec![opt(53, &[3])];
        o.push(opt(50, &[198, 19, 1, 7]));
        let nak = reply_of(
            core.handle(&Raw::request(o).bytes(), FROM_CLIENT, 67, NOW)
                .0,
        );
        assert_eq!(
            decode(&nak).opts().msg_type(),
            Some(dhcproto::v4::MessageType::Nak)
        );

        // SELECTING an address it was not offered.
        let nak = reply_of(
            core.handle(
                &select(MAC, Ipv4Addr::new(198, 18, 0, 107), SERVER),
                FROM_CLIENT,
                67,
                NOW,
            )
            .0,
        );
        assert_eq!(
            decode(&nak).opts().msg_type(),
            Some(dhcproto::v4::MessageType::Nak)
        );
    }

    #[test]
    fn choosing_another_server_frees_the_offer() {
        let mut core = full_core((100, 100));
        let offer = reply_of(core.handle(&discover(MAC), FROM_CLIENT, 67, NOW).0);
        let ip = decode(&offer).yiaddr();
        let (outcome, _) = core.handle(
            &select(MAC, ip, Ipv4Addr::new(198, 18, 0, 254)),
            FROM_CLIENT,
            67,
            NOW,
        );
        assert!(
            matches!(outcome, Outcome::Ignored(Ignored::OtherServer)),
            "{outcome:?}"
        );
        // The one address is free again for the next machine.
        let next = reply_of(
            core.handle(&discover([0x52, 0x54, 0, 0, 0, 2]), FROM_CLIENT, 67, NOW)
                .0,
        );
        assert_eq!(decode(&next).yiaddr(), ip);
    }

    #[test]
    fn pool_exhaustion_then_expiry_reclaims() {
        let mut core = full_core((100, 101));
        for i in 0..2u8 {
            reply_of(
                core.handle(&discover([0x52, 0x54, 0, 0, 1, i]), FROM_CLIENT, 67, NOW)
                    .0,
            );
        }
        let (outcome, _) = core.handle(&discover([0x52, 0x54, 0, 0, 1, 9]), FROM_CLIENT, 67, NOW);
        assert!(
            matches!(outcome, Outcome::Ignored(Ignored::PoolExhausted)),
            "{outcome:?}"
        );
        // Offers not taken run out after OFFER_HOLD_SECS.
        let later = NOW + crate::dhcp::full::OFFER_HOLD_SECS + 1;
        let offer = reply_of(
            core.handle(&discover([0x52, 0x54, 0, 0, 1, 9]), FROM_CLIENT, 67, later)
                .0,
        );
        assert_eq!(decode(&offer).yiaddr(), Ipv4Addr::new(198, 18, 0, 100));
    }

    #[test]
    fn reservation_decline_release_and_inform() {
        let mut core = full_core((100, 110));
        let reserved = [0x52, 0x54, 0, 0, 0, 0x99];
        let offer = reply_of(core.handle(&discover(reserved), FROM_CLIENT, 67, NOW).0);
        let o = decode(&offer);
        assert_eq!(o.yiaddr(), Ipv4Addr::new(198, 18, 0, 5));
        assert!(
            matches!(o.opts().get(dhcproto::v4::OptionCode::Hostname), Some(dhcproto::v4::DhcpOption::Hostname(h)) if h == "node99")
        );

        // DECLINE: the address leaves the pool; the client gets another one next time.
        let offer = reply_of(core.handle(&discover(MAC), FROM_CLIENT, 67, NOW).0);
        let ip = decode(&offer).yiaddr();
        core.handle(&select(MAC, ip, SERVER), FROM_CLIENT, 67, NOW);
        let mut o = vec![
            opt(53, &[4]),
            opt(50, &ip.octets()),
            opt(54, &SERVER.octets()),
        ];
        o.push(opt(61, &[1]));
        let (outcome, _) = core.handle(&Raw::request(o).bytes(), FROM_CLIENT, 67, NOW);
        assert!(
            matches!(outcome, Outcome::NoReply(Some(LeaseEvent::Declined { ip: d, .. })) if d == ip),
            "{outcome:?}"
        );
        let offer = reply_of(core.handle(&discover(MAC), FROM_CLIENT, 67, NOW).0);
        let second = decode(&offer).yiaddr();
        assert_ne!(second, ip);

        // RELEASE.
        core.handle(&select(MAC, second, SERVER), FROM_CLIENT, 67, NOW);
        let release = Raw {
            ciaddr: second,
            ..Raw::request(vec![opt(53, &[7]), opt(54, &SERVER.octets())])
        }
        .bytes();
        let (outcome, _) = core.handle(&release, SocketAddrV4::new(second, 68), 67, NOW);
        assert!(
            matches!(outcome, Outcome::NoReply(Some(LeaseEvent::Released { ip: r, .. })) if r == second),
            "{outcome:?}"
        );
        assert!(core
            .full()
            .unwrap()
            .lease_of(crate::boot::MacAddr(MAC))
            .is_none());

        // INFORM: options, no address, no lease.
        let client = Ipv4Addr::new(198, 18, 0, 77);
        let inform = Raw {
            ciaddr: client,
            flags: 0,
            ..Raw::request(vec![opt(53, &[8])])
        }
        .bytes();
        let (outcome, _) = core.handle(&inform, SocketAddrV4::new(client, 68), 67, NOW);
        let Outcome::Reply(ack, None) = outcome else {
            panic!("inform: {outcome:?}")
        };
        let m = decode(&ack);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m
            .opts()
            .get(dhcproto::v4::OptionCode::AddressLeaseTime)
            .is_none());
        assert_eq!(ack.to, Destination::Unicast(SocketAddrV4::new(client, 68)));
    }

    #[test]
    fn restored_leases_are_kept_for_their_owner() {
        let mut core = full_core((100, 101));
        let owner = crate::boot::MacAddr([0x52, 0x54, 0, 0, 7, 7]);
        core.full_mut()
            .unwrap()
            .restore(owner, Ipv4Addr::new(198, 18, 0, 100), NOW + 100, NOW);
        let offer = reply_of(core.handle(&discover(MAC), FROM_CLIENT, 67, NOW).0);
        assert_eq!(decode(&offer).yiaddr(), Ipv4Addr::new(198, 18, 0, 101));
        let offer = reply_of(core.handle(&discover(owner.0), FROM_CLIENT, 67, NOW).0);
        assert_eq!(decode(&offer).yiaddr(), Ipv4Addr::new(198, 18, 0, 100));
    }

    /// Sends of a frame service, recorded.
    #[derive(Default)]
    struct RecordingTx {
        sent: Vec<(crate::datapath::Route, Vec<u8>)>,
    }

    impl crate::datapath::UdpTx for RecordingTx {
        fn max_payload(&self) -> usize {
            1472
        }

        fn send(
            &mut self,
            route: crate::datapath::Route,
            len: usize,
            fill: &mut dyn FnMut(&mut [u8]),
        ) -> Result<(), crate::datapath::TxError> {
            let mut buf = vec![0; len];
            fill(&mut buf);
            self.sent.push((route, buf));
            Ok(())
        }
    }

    /// Over AF_XDP, the ACK of a lease leaves only once the lease is durable, and nothing on the
    /// datapath thread waits for that: the commit runs on the runtime and the reply comes back
    /// through the service's channel on a later tick.
    #[tokio::test]
    async fn frame_service_sends_the_ack_only_after_its_commit() {
        use crate::{
            datapath::{Datagram, FrameService as _, BROADCAST_MAC},
            dhcp::{
                afxdp::DhcpFrameService,
                handler::{CommitError, CommitFuture, LeaseCommit, RequestHandler, ServeOptions},
                metrics::DhcpMetrics,
            },
        };

        /// A commit that completes once the test lets it through.
        struct Gated(Arc<tokio::sync::Semaphore>);
        impl LeaseCommit for Gated {
            fn commit(&self, _event: crate::dhcp::LeaseEvent) -> CommitFuture {
                let gate = self.0.clone();
                Box::pin(async move {
                    gate.acquire()
                        .await
                        .map(|p| p.forget())
                        .map_err(|e| CommitError::Other(e.to_string()))
                })
            }
        }
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let commit: Arc<dyn LeaseCommit> = Arc::new(Gated(gate.clone()));
        let handler = RequestHandler::new(
            full_core((100, 110)),
            DhcpMetrics::new(&prometheus::Registry::new()).unwrap(),
            Some(commit),
            ServeOptions {
                reply_delay: std::time::Duration::ZERO,
                timeline: None,
            },
        );
        let mut service = DhcpFrameService::new(handler, crate::datapath::Waker::new().unwrap());
        let mut tx = RecordingTx::default();
        /// A broadcast request to port 67 from the test client.
        fn datagram(payload: &[u8]) -> Datagram<'_> {
            Datagram {
                src_mac: crate::datapath::MacAddr(MAC),
                src: FROM_CLIENT,
                dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
                payload,
            }
        }

        let now = std::time::Instant::now();
        let discover = discover(MAC);
        service.on_datagram(&datagram(&discover), now, &mut tx);
        assert_eq!(tx.sent.len(), 1, "the OFFER leaves at once");
        assert_eq!(tx.sent[0].0.mac, BROADCAST_MAC);
        assert_eq!(tx.sent[0].0.from_port, 67);
        let offer = Reply {
            bytes: tx.sent[0].1.clone(),
            to: Destination::Broadcast,
            kind: dhcproto::v4::MessageType::Offer,
        };
        let ip = decode(&offer).yiaddr();

        let request = select(MAC, ip, SERVER);
        service.on_datagram(&datagram(&request), now, &mut tx);
        for _ in 0..5 {
            tokio::task::yield_now().await;
            service.on_tick(std::time::Instant::now(), &mut tx);
        }
        assert_eq!(
            tx.sent.len(),
            1,
            "the ACK left before its lease was durable"
        );

        gate.add_permits(1);
        for _ in 0..200 {
            if tx.sent.len() > 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            service.on_tick(std::time::Instant::now(), &mut tx);
        }
        assert_eq!(tx.sent.len(), 2, "the ACK did not leave after the commit");
        let ack = Reply {
            bytes: tx.sent[1].1.clone(),
            to: Destination::Broadcast,
            kind: dhcproto::v4::MessageType::Ack,
        };
        assert_eq!(
            decode(&ack).opts().msg_type(),
            Some(dhcproto::v4::MessageType::Ack)
        );
        assert_eq!(decode(&ack).yiaddr(), ip);
    }
}

use dhcproto::Decodable as _;
