//! The XDP program as data, katran style: each fixture is a frame and the class it must be
//! counted as, run through the kernel with BPF_PROG_TEST_RUN. Needs root (CAP_BPF).

use aya::programs::{TestRun as _, TestRunOptions};
use pxe_common::PacketClass;

use super::XdpAttachment;

const XDP_PASS: u32 = 2;
const BROADCAST: [u8; 6] = [0xff; 6];
const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Builds Ethernet (optional 802.1Q tag) / IPv4 / UDP frames for the fixtures.
#[derive(Clone)]
struct Frame {
    vlan: Option<u16>,
    ethertype: u16,
    version: u8,
    ihl_words: u8,
    frag: u16,
    proto: u8,
    dst_port: u16,
    payload: usize,
    truncate_to: Option<usize>,
}

impl Frame {
    fn udp(dst_port: u16) -> Frame {
        Frame {
            vlan: None,
            ethertype: 0x0800,
            version: 4,
            ihl_words: 5,
            frag: 0,
            proto: 17,
            dst_port,
            payload: 300,
            truncate_to: None,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&BROADCAST);
        f.extend_from_slice(&CLIENT_MAC);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        let ihl = usize::from(self.ihl_words) * 4;
        let total = (ihl.max(20) + 8 + self.payload) as u16;
        let mut ip = vec![0u8; ihl.max(20)];
        ip[0] = (self.version << 4) | self.ihl_words;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&[0, 0, 0, 0]);
        ip[16..20].copy_from_slice(&[255, 255, 255, 255]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&68u16.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&((8 + self.payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend(std::iter::repeat_n(0u8, self.payload));
        if let Some(n) = self.truncate_to {
            f.truncate(n);
        }
        f
    }
}

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
    let mut xdp = XdpAttachment::load_object("test-run", &(40_000..=40_010), false)
        .expect("loading the XDP program (these tests need root)");
    let counters = xdp.counters();
    let program = xdp.program().expect("program in object");

    for (description, frame, expected) in fixtures() {
        let before: Vec<u64> = PacketClass::ALL.iter().map(|c| counters.get(*c)).collect();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("{description}: BPF_PROG_TEST_RUN failed: {e}"));
        assert_eq!(result.return_value, XDP_PASS, "{description}: action");
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
