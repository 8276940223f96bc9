//! The XDP program as data, katran style: each fixture is a frame and the class it must be
//! counted as, run through the kernel with BPF_PROG_TEST_RUN. Needs root (CAP_BPF).

use pxe_common::{
    PacketClass, Verdict, XdpConfig, XDP_FLAG_FULL_DHCP, XDP_FLAG_STEER_DHCP, XDP_FLAG_STEER_TFTP,
};

use super::{
    frames::{Frame, HTTP_BOOT, HTTP_BOOT_ARCH, PXE_BIOS, PXE_BIOS_ARCH},
    XdpAttachment,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const SERVER: [u8; 4] = [198, 18, 0, 1];

fn fixtures() -> Vec<(&'static str, Vec<u8>, PacketClass)> {
    let udp = Frame::udp;
    vec![
        (
            "DHCP DISCOVER to port 67",
            udp(67).bytes(),
            PacketClass::Dhcp,
        ),
        (
            "boot-server discovery to 4011",
            udp(4011).bytes(),
            PacketClass::PxeDiscovery,
        ),
        ("TFTP RRQ to port 69", udp(69).bytes(), PacketClass::Tftp),
        (
            "TFTP ACK to first transfer port",
            udp(40_000).bytes(),
            PacketClass::TftpTransfer,
        ),
        (
            "TFTP ACK to last transfer port",
            udp(40_010).bytes(),
            PacketClass::TftpTransfer,
        ),
        (
            "UDP just past the transfer range",
            udp(40_011).bytes(),
            PacketClass::Other,
        ),
        (
            "default range not used once configured",
            udp(30_000).bytes(),
            PacketClass::Other,
        ),
        (
            "DHCP reply to the client port 68",
            udp(68).bytes(),
            PacketClass::Other,
        ),
        ("DNS", udp(53).bytes(), PacketClass::Other),
        (
            "TCP to port 67",
            Frame {
                proto: 6,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Other,
        ),
        (
            "ARP",
            Frame {
                ethertype: 0x0806,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Other,
        ),
        (
            "IPv6",
            Frame {
                ethertype: 0x86DD,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Other,
        ),
        (
            "802.1Q-tagged DHCP",
            Frame {
                vlan: Some(100),
                ..udp(67)
            }
            .bytes(),
            PacketClass::Dhcp,
        ),
        (
            "802.1Q-tagged TFTP",
            Frame {
                vlan: Some(7),
                ..udp(69)
            }
            .bytes(),
            PacketClass::Tftp,
        ),
        (
            "IPv4 options (IHL 6) DHCP",
            Frame {
                ihl_words: 6,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Dhcp,
        ),
        (
            "IPv4 options (IHL 15) TFTP",
            Frame {
                ihl_words: 15,
                ..udp(69)
            }
            .bytes(),
            PacketClass::Tftp,
        ),
        (
            "first fragment (MF) to 67",
            Frame {
                frag: 0x2000,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Other,
        ),
        (
            "later fragment to 67",
            Frame {
                frag: 0x0010,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Other,
        ),
        (
            "DF flag is not a fragment",
            Frame {
                frag: 0x4000,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Dhcp,
        ),
        (
            "truncated IPv4 header",
            Frame {
                truncate_to: Some(14 + 10),
                ..udp(67)
            }
            .bytes(),
            PacketClass::Malformed,
        ),
        (
            "truncated UDP header",
            Frame {
                truncate_to: Some(14 + 20 + 4),
                ..udp(67)
            }
            .bytes(),
            PacketClass::Malformed,
        ),
        (
            "UDP header cut by IP options",
            Frame {
                ihl_words: 15,
                truncate_to: Some(14 + 60 + 2),
                ..udp(67)
            }
            .bytes(),
            PacketClass::Malformed,
        ),
        (
            "IPv4 ethertype, version 6",
            Frame {
                version: 6,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Malformed,
        ),
        (
            "IHL below 5",
            Frame {
                ihl_words: 4,
                ..udp(67)
            }
            .bytes(),
            PacketClass::Malformed,
        ),
        (
            "802.1Q tag cut short",
            Frame {
                vlan: Some(1),
                truncate_to: Some(16),
                ..udp(67)
            }
            .bytes(),
            PacketClass::Malformed,
        ),
    ]
}

#[tokio::test]
async fn every_fixture_is_counted_in_its_class_and_passed() {
    let config = XdpConfig {
        tftp_port_min: 40_000,
        tftp_port_max: 40_010,
        ..XdpConfig::DEFAULT
    };
    let mut xdp = XdpAttachment::load_object("test-run", config, false)
        .expect("loading the XDP program (these tests need root)");
    let counters = xdp.counters();

    for (description, frame, expected) in fixtures() {
        let before: Vec<u64> = PacketClass::ALL.iter().map(|c| counters.get(*c)).collect();
        let run = xdp
            .test_run(&frame, 1)
            .unwrap_or_else(|e| panic!("{description}: {e}"));
        assert_eq!(run.action, XDP_PASS, "{description}: action");
        for (i, class) in PacketClass::ALL.iter().enumerate() {
            let grew = counters.get(*class) - before[i];
            let want = u64::from(*class == expected);
            assert_eq!(
                grew, want,
                "{description}: counter {} grew by {grew}, expected {want} (frame counted as {:?}?)",
                class.label(),
                expected
            );
        }
    }
}

const ROM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

/// Runs `frame` and returns the action and the verdict it was counted under.
fn verdict_of(
    xdp: &mut XdpAttachment,
    description: &str,
    frame: &[u8],
    class: PacketClass,
) -> (u32, Verdict) {
    let counters = xdp.counters();
    let before: Vec<u64> = Verdict::ALL
        .iter()
        .map(|v| counters.verdict(class, *v))
        .collect();
    let run = xdp
        .test_run(frame, 1)
        .unwrap_or_else(|e| panic!("{description}: {e}"));
    let grown: Vec<Verdict> = Verdict::ALL
        .iter()
        .enumerate()
        .filter(|(i, v)| counters.verdict(class, **v) > before[*i])
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        grown.len(),
        1,
        "{description}: verdict counters that grew: {grown:?} (class {class:?})"
    );
    (run.action, grown[0])
}

#[tokio::test]
async fn pxe_dhcp_and_tftp_to_the_server_are_steered_the_rest_passes() {
    let steer = XdpConfig {
        flags: XDP_FLAG_STEER_DHCP | XDP_FLAG_STEER_TFTP,
        server_ip_be: u32::from_ne_bytes(SERVER),
        ..XdpConfig::DEFAULT
    };
    let mut xdp = XdpAttachment::load_object("test-steer", steer, false)
        .expect("loading the XDP program (these tests need root)");
    let to_server = |f: Frame| Frame {
        dst_ip: SERVER,
        ..f
    };
    let elsewhere = |f: Frame| Frame {
        dst_ip: [198, 18, 0, 9],
        ..f
    };
    let cases: Vec<(&str, Vec<u8>, PacketClass, Verdict)> = vec![
        (
            "BIOS PXE DISCOVER, broadcast",
            Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS), (93, &PXE_BIOS_ARCH)]).bytes(),
            PacketClass::Dhcp,
            Verdict::Steer,
        ),
        (
            "UEFI HTTP Boot DISCOVER",
            Frame::dhcp(ROM_MAC, &[(93, &HTTP_BOOT_ARCH), (60, HTTP_BOOT)]).bytes(),
            PacketClass::Dhcp,
            Verdict::Steer,
        ),
        (
            "iPXE DISCOVER (option 77)",
            Frame::dhcp(
                ROM_MAC,
                &[(57, &[5, 192]), (77, b"iPXE"), (175, &[19, 1, 1])],
            )
            .bytes(),
            PacketClass::Dhcp,
            Verdict::Steer,
        ),
        (
            "PXE marker after padding",
            Frame::dhcp(
                ROM_MAC,
                &[(0, &[]), (12, b"host-name-of-a-machine"), (60, PXE_BIOS)],
            )
            .bytes(),
            PacketClass::Dhcp,
            Verdict::Steer,
        ),
        (
            "plain DHCP client",
            Frame::dhcp(ROM_MAC, &[(60, b"MSFT 5.0"), (12, b"laptop")]).bytes(),
            PacketClass::Dhcp,
            Verdict::Pass,
        ),
        (
            "DHCP without options",
            Frame::dhcp(ROM_MAC, &[]).bytes(),
            PacketClass::Dhcp,
            Verdict::Pass,
        ),
        (
            "PXE DHCP to another server",
            elsewhere(Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)])).bytes(),
            PacketClass::Dhcp,
            Verdict::Pass,
        ),
        (
            "relayed PXE DHCP to the server",
            to_server(Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)])).bytes(),
            PacketClass::Dhcp,
            Verdict::Steer,
        ),
        (
            "4011 to the server",
            to_server(Frame {
                dst_port: 4011,
                ..Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)])
            })
            .bytes(),
            PacketClass::PxeDiscovery,
            Verdict::Steer,
        ),
        (
            "4011 elsewhere",
            elsewhere(Frame {
                dst_port: 4011,
                ..Frame::dhcp(ROM_MAC, &[])
            })
            .bytes(),
            PacketClass::PxeDiscovery,
            Verdict::Pass,
        ),
        (
            "TFTP RRQ to the server",
            to_server(Frame::udp(69)).bytes(),
            PacketClass::Tftp,
            Verdict::Steer,
        ),
        (
            "TFTP RRQ elsewhere",
            elsewhere(Frame::udp(69)).bytes(),
            PacketClass::Tftp,
            Verdict::Pass,
        ),
        (
            "TFTP ACK to a transfer port",
            to_server(Frame::udp(30_500)).bytes(),
            PacketClass::TftpTransfer,
            Verdict::Steer,
        ),
        (
            "802.1Q-tagged BIOS PXE DISCOVER (another VLAN's)",
            Frame {
                vlan: Some(100),
                ..Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS), (93, &PXE_BIOS_ARCH)])
            }
            .bytes(),
            PacketClass::Dhcp,
            Verdict::Pass,
        ),
        (
            "802.1Q-tagged TFTP RRQ to the server's address",
            to_server(Frame {
                vlan: Some(7),
                ..Frame::udp(69)
            })
            .bytes(),
            PacketClass::Tftp,
            Verdict::Pass,
        ),
        (
            "DNS to the server",
            to_server(Frame::udp(53)).bytes(),
            PacketClass::Other,
            Verdict::Pass,
        ),
        (
            "TCP to the server",
            to_server(Frame {
                proto: 6,
                ..Frame::udp(80)
            })
            .bytes(),
            PacketClass::Other,
            Verdict::Pass,
        ),
        (
            "truncated DHCP options",
            {
                let mut b = Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)]).bytes();
                b.truncate(14 + 20 + 8 + 243);
                b
            },
            PacketClass::Dhcp,
            Verdict::Pass,
        ),
    ];
    for (description, frame, class, want) in &cases {
        let (action, verdict) = verdict_of(&mut xdp, description, frame, *class);
        assert_eq!(verdict, *want, "{description}");
        // No AF_XDP socket is bound in a test run: a steered frame falls back to XDP_PASS.
        assert_eq!(action, XDP_PASS, "{description}: action");
    }

    // Full-DHCP mode steers every DHCP request to the server.
    xdp.set_config(XdpConfig {
        flags: XDP_FLAG_STEER_DHCP | XDP_FLAG_STEER_TFTP | XDP_FLAG_FULL_DHCP,
        ..steer
    })
    .unwrap();
    let plain = Frame::dhcp(ROM_MAC, &[(60, b"MSFT 5.0")]).bytes();
    assert_eq!(
        verdict_of(&mut xdp, "plain DHCP, full mode", &plain, PacketClass::Dhcp).1,
        Verdict::Steer
    );
}

/// Each steering flag steers its own service's classes and nothing else, so DHCP can run over
/// AF_XDP while TFTP stays on kernel sockets (and the other way round).
#[tokio::test]
async fn each_steer_flag_steers_only_its_services_classes() {
    let base = XdpConfig {
        server_ip_be: u32::from_ne_bytes(SERVER),
        ..XdpConfig::DEFAULT
    };
    let mut xdp = XdpAttachment::load_object("test-flags", base, false)
        .expect("loading the XDP program (these tests need root)");
    let to_server = |f: Frame| Frame {
        dst_ip: SERVER,
        ..f
    };
    let frames: Vec<(&str, Vec<u8>, PacketClass)> = vec![
        (
            "PXE DISCOVER",
            Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)]).bytes(),
            PacketClass::Dhcp,
        ),
        (
            "4011 request",
            to_server(Frame {
                dst_port: 4011,
                ..Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)])
            })
            .bytes(),
            PacketClass::PxeDiscovery,
        ),
        (
            "TFTP RRQ",
            to_server(Frame::udp(69)).bytes(),
            PacketClass::Tftp,
        ),
        (
            "TFTP ACK",
            to_server(Frame::udp(30_500)).bytes(),
            PacketClass::TftpTransfer,
        ),
    ];
    let dhcp_class = |c: PacketClass| matches!(c, PacketClass::Dhcp | PacketClass::PxeDiscovery);
    type Steered<'a> = &'a dyn Fn(PacketClass) -> bool;
    let table: [(&str, u32, Steered<'_>); 3] = [
        ("no flag", 0, &|_| false),
        ("DHCP flag", XDP_FLAG_STEER_DHCP, &dhcp_class),
        ("TFTP flag", XDP_FLAG_STEER_TFTP, &|c| !dhcp_class(c)),
    ];
    for (flag_name, flags, steered) in table {
        xdp.set_config(XdpConfig { flags, ..base }).unwrap();
        for (description, frame, class) in &frames {
            let what = format!("{flag_name}: {description}");
            let (_, verdict) = verdict_of(&mut xdp, &what, frame, *class);
            let want = if steered(*class) {
                Verdict::Steer
            } else {
                Verdict::Pass
            };
            assert_eq!(verdict, want, "{what}");
        }
    }
}

#[tokio::test]
async fn one_mac_flooding_is_limited_others_pass() {
    let limited = XdpConfig {
        rate_per_sec: 1,
        rate_burst: 2,
        ..XdpConfig::DEFAULT
    };
    let mut xdp = XdpAttachment::load_object("test-rate", limited, false)
        .expect("loading the XDP program (these tests need root)");
    let flood = Frame::dhcp(ROM_MAC, &[(60, PXE_BIOS)]).bytes();
    // A fresh bucket holds the burst plus one: three frames go through, the fourth is dropped.
    for i in 0..3 {
        let (action, verdict) =
            verdict_of(&mut xdp, &format!("frame {i}"), &flood, PacketClass::Dhcp);
        assert_eq!((action, verdict), (XDP_PASS, Verdict::Pass), "frame {i}");
    }
    for i in 3..6 {
        let (action, verdict) =
            verdict_of(&mut xdp, &format!("frame {i}"), &flood, PacketClass::Dhcp);
        assert_eq!(
            (action, verdict),
            (XDP_DROP, Verdict::RateLimited),
            "frame {i}"
        );
    }
    // Another client is not held back by the flood; relayed frames are keyed by chaddr, so
    // the relay's own MAC does not matter.
    let other = Frame::dhcp([0x52, 0x54, 0, 0, 0, 2], &[(60, PXE_BIOS)]).bytes();
    assert_eq!(
        verdict_of(&mut xdp, "other client", &other, PacketClass::Dhcp),
        (XDP_PASS, Verdict::Pass)
    );
    // TFTP is not rate limited.
    let tftp = Frame::udp(69).bytes();
    assert_eq!(
        verdict_of(&mut xdp, "tftp", &tftp, PacketClass::Tftp),
        (XDP_PASS, Verdict::Pass)
    );
}
