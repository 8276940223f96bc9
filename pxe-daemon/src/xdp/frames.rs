//! Ethernet frames for running the XDP program as data: the fixture tables of the tests and
//! the per-class cost benchmark (`pxe-bench xdp-cost`) build their frames here, so both run the
//! program on the same bytes.

use pxe_common::firmware;

/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// Source MAC of every frame built here (a QEMU-style locally administered address).
pub const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Option 60 of a BIOS PXE ROM.
pub const PXE_BIOS: &[u8] = firmware::BIOS_PXE.vendor_class.as_bytes();
/// Option 93 of a BIOS PXE ROM.
pub const PXE_BIOS_ARCH: [u8; 2] = firmware::BIOS_PXE.arch_bytes();
/// Option 60 of UEFI HTTP Boot on x64.
pub const HTTP_BOOT: &[u8] = firmware::UEFI_X64_HTTP.vendor_class.as_bytes();
/// Option 93 of UEFI HTTP Boot on x64.
pub const HTTP_BOOT_ARCH: [u8; 2] = firmware::UEFI_X64_HTTP.arch_bytes();

/// Builds Ethernet (optional 802.1Q tag) / IPv4 / UDP frames; every field can be bent to make
/// a malformed one.
#[derive(Clone, Debug)]
pub struct Frame {
    /// 802.1Q tag control information, if tagged.
    pub vlan: Option<u16>,
    /// EtherType after the tag (0x0800 for IPv4).
    pub ethertype: u16,
    /// IPv4 version field.
    pub version: u8,
    /// IPv4 header length in 32-bit words (5 without options).
    pub ihl_words: u8,
    /// IPv4 flags and fragment offset.
    pub frag: u16,
    /// IPv4 protocol (17 UDP, 6 TCP).
    pub proto: u8,
    /// UDP destination port.
    pub dst_port: u16,
    /// IPv4 destination.
    pub dst_ip: [u8; 4],
    /// UDP payload length, as zeros, when `data` is `None`.
    pub payload: usize,
    /// UDP payload bytes, instead of `payload` zeros.
    pub data: Option<Vec<u8>>,
    /// Cut the frame to this many bytes.
    pub truncate_to: Option<usize>,
}

impl Frame {
    /// A broadcast UDP datagram from port 68 to `dst_port` with 300 zero bytes of payload.
    pub fn udp(dst_port: u16) -> Frame {
        Frame {
            vlan: None,
            ethertype: 0x0800,
            version: 4,
            ihl_words: 5,
            frag: 0,
            proto: 17,
            dst_port,
            dst_ip: [255, 255, 255, 255],
            payload: 300,
            data: None,
            truncate_to: None,
        }
    }

    /// A DHCPDISCOVER from `chaddr` with `options` (code, value) after the message type.
    pub fn dhcp(chaddr: [u8; 6], options: &[(u8, &[u8])]) -> Frame {
        let mut d = vec![0u8; 236];
        d[0] = 1;
        d[1] = 1;
        d[2] = 6;
        d[28..34].copy_from_slice(&chaddr);
        d.extend_from_slice(&[99, 130, 83, 99]);
        d.extend_from_slice(&[53, 1, 1]);
        for (code, value) in options {
            d.push(*code);
            d.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
            d.extend_from_slice(value);
        }
        d.push(255);
        d.resize(d.len().max(300), 0);
        Frame {
            data: Some(d),
            ..Frame::udp(67)
        }
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&BROADCAST_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        let ihl = usize::from(self.ihl_words) * 4;
        let payload = self.data.as_ref().map_or(self.payload, Vec::len);
        let total = u16::try_from(ihl.max(20) + 8 + payload).unwrap_or(u16::MAX);
        let mut ip = vec![0u8; ihl.max(20)];
        ip[0] = (self.version << 4) | self.ihl_words;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&[0, 0, 0, 0]);
        ip[16..20].copy_from_slice(&self.dst_ip);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&68u16.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        let udp_len = u16::try_from(8 + payload).unwrap_or(u16::MAX);
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        match &self.data {
            Some(d) => f.extend_from_slice(d),
            None => f.extend(std::iter::repeat_n(0u8, payload)),
        }
        if let Some(n) = self.truncate_to {
            f.truncate(n);
        }
        f
    }
}
