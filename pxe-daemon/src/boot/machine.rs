//! What a request tells about the machine that sent it: MAC, architecture, firmware, GUID, relay.

use std::net::Ipv4Addr;

pub use pxe_common::MacAddr;

/// Why a text is not a MAC address (or prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (six hex bytes separated by ':' or '-')")]
pub struct MacParseError(pub String);

/// Parses 1 to 6 hex bytes separated by `:` or `-` (a whole MAC or a prefix).
pub fn parse_mac_bytes(text: &str) -> Result<Vec<u8>, MacParseError> {
    let mut bytes = [0u8; 6];
    pxe_common::mac::parse_mac_prefix(text, &mut bytes)
        .map(|n| bytes[..n].to_vec())
        .map_err(|_| MacParseError(text.to_owned()))
}

/// The firmware stage a request comes from; it decides what kind of boot file fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// A BIOS PXE ROM (option 60 `PXEClient`, arch 0): wants a TFTP NBP such as undionly.kpxe.
    BiosPxe,
    /// UEFI PXE (option 60 `PXEClient`, an EFI arch): wants an EFI NBP such as ipxe.efi.
    UefiPxe,
    /// UEFI HTTP Boot (option 60 `HTTPClient`): wants an http:// URL.
    UefiHttp,
    /// iPXE (option 77 `iPXE` or option 175): wants the URL of its script, never the NBP again.
    Ipxe,
}

impl Firmware {
    /// Every kind, for metrics.
    pub const ALL: [Firmware; 4] = [
        Firmware::BiosPxe,
        Firmware::UefiPxe,
        Firmware::UefiHttp,
        Firmware::Ipxe,
    ];

    /// Name used in config files and metric labels.
    pub const fn label(self) -> &'static str {
        match self {
            Firmware::BiosPxe => "bios",
            Firmware::UefiPxe => "uefi",
            Firmware::UefiHttp => "uefi-http",
            Firmware::Ipxe => "ipxe",
        }
    }

    /// Parses a config name (`bios`, `uefi`, `uefi-http`, `ipxe`).
    pub fn from_label(s: &str) -> Option<Firmware> {
        Firmware::ALL.into_iter().find(|f| f.label() == s)
    }
}

/// Client system architecture, option 93 (RFC 4578 and the IANA registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch(pub u16);

impl Arch {
    /// x86 BIOS.
    pub const BIOS: Arch = Arch(0);
    /// UEFI IA32.
    pub const EFI_IA32: Arch = Arch(6);
    /// UEFI x64.
    pub const EFI_X64: Arch = Arch(7);
    /// UEFI x64 as many firmwares send it (RFC 4578 errata: 9 is "EFI x86-64").
    pub const EFI_X64_ALT: Arch = Arch(9);
    /// UEFI ARM32.
    pub const EFI_ARM32: Arch = Arch(10);
    /// UEFI ARM64.
    pub const EFI_ARM64: Arch = Arch(11);
    /// UEFI HTTP Boot IA32.
    pub const HTTP_IA32: Arch = Arch(15);
    /// UEFI HTTP Boot x64.
    pub const HTTP_X64: Arch = Arch(16);
    /// UEFI HTTP Boot ARM64.
    pub const HTTP_ARM64: Arch = Arch(19);
    /// UEFI RISC-V 64.
    pub const EFI_RISCV64: Arch = Arch(27);

    /// The CPU family this arch boots, which decides the binary: `x86`, `x64`, `arm32`,
    /// `arm64`, `riscv64`, or `other`. Bounded: used as a metric label.
    pub const fn family(self) -> &'static str {
        match self.0 {
            0 | 6 | 15 => "x86",
            7 | 9 | 16 => "x64",
            10 | 18 => "arm32",
            11 | 19 => "arm64",
            27 | 28 => "riscv64",
            _ => "other",
        }
    }

    /// A short, bounded label: `bios`, `efi-x64`, `http-arm64`, ...; `other` beyond the table.
    pub const fn label(self) -> &'static str {
        match self.0 {
            0 => "bios",
            6 => "efi-ia32",
            7 | 9 => "efi-x64",
            10 => "efi-arm32",
            11 => "efi-arm64",
            15 => "http-ia32",
            16 => "http-x64",
            18 => "http-arm32",
            19 => "http-arm64",
            27 => "efi-riscv64",
            28 => "http-riscv64",
            _ => "other",
        }
    }

    /// Whether this arch is an HTTP Boot client.
    pub const fn is_http(self) -> bool {
        matches!(self.0, 15 | 16 | 18 | 19 | 28)
    }
}

/// What the daemon knows of a machine from one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Hardware address (chaddr).
    pub mac: MacAddr,
    /// Option 93, if sent.
    pub arch: Option<Arch>,
    /// The firmware stage, if the request is a PXE, HTTP Boot or iPXE one.
    pub firmware: Option<Firmware>,
    /// Option 97 (client machine identifier, usually type 0 + a 16-byte GUID), as sent.
    pub guid: Option<Vec<u8>>,
    /// giaddr, when the request came through a relay.
    pub relay: Option<Ipv4Addr>,
    /// Option 82 sub-option 1, when the relay added it.
    pub circuit_id: Option<Vec<u8>>,
    /// Option 82 sub-option 2, when the relay added it.
    pub remote_id: Option<Vec<u8>>,
}

impl Machine {
    /// A machine known by its MAC alone (a TFTP or HTTP client whose requests say no more).
    pub fn known_by_mac(mac: MacAddr) -> Machine {
        Machine {
            mac,
            arch: None,
            firmware: None,
            guid: None,
            relay: None,
            circuit_id: None,
            remote_id: None,
        }
    }

    /// The machine's family for choosing binaries; BIOS when no option 93 was sent.
    pub fn arch_or_bios(&self) -> Arch {
        self.arch.unwrap_or(Arch::BIOS)
    }
}

/// Derives the firmware kind from option 60 (vendor class), option 77 (user class), whether
/// option 175 (iPXE encapsulated options) is present, and option 93.
pub fn classify_firmware(
    vendor_class: Option<&[u8]>,
    user_class: Option<&[u8]>,
    has_ipxe_options: bool,
    arch: Option<Arch>,
) -> Option<Firmware> {
    // iPXE first: it also sends PXEClient in option 60, and answering it like a ROM makes the
    // machine chainload iPXE forever.
    let is_ipxe = has_ipxe_options || user_class.is_some_and(|u| contains(u, b"iPXE"));
    if is_ipxe {
        return Some(Firmware::Ipxe);
    }
    let vendor = vendor_class?;
    if vendor.starts_with(b"HTTPClient") {
        return Some(Firmware::UefiHttp);
    }
    if vendor.starts_with(b"PXEClient") {
        let arch = arch.or_else(|| arch_from_vendor_class(vendor));
        return Some(match arch {
            Some(a) if a.is_http() => Firmware::UefiHttp,
            Some(a) if a != Arch::BIOS => Firmware::UefiPxe,
            _ => Firmware::BiosPxe,
        });
    }
    None
}

/// Reads `Arch:xxxxx` from a `PXEClient:Arch:00007:UNDI:003016` vendor class.
pub fn arch_from_vendor_class(vendor: &[u8]) -> Option<Arch> {
    let text = std::str::from_utf8(vendor).ok()?;
    let mut parts = text.split(':');
    while let Some(p) = parts.next() {
        if p == "Arch" {
            return parts.next()?.parse().ok().map(Arch);
        }
    }
    None
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_from_options() {
        let bios = b"PXEClient:Arch:00000:UNDI:002001";
        let uefi = b"PXEClient:Arch:00007:UNDI:003016";
        let http = b"HTTPClient:Arch:00016:UNDI:003001";
        assert_eq!(
            classify_firmware(Some(bios), None, false, Some(Arch::BIOS)),
            Some(Firmware::BiosPxe)
        );
        assert_eq!(
            classify_firmware(Some(uefi), None, false, Some(Arch::EFI_X64)),
            Some(Firmware::UefiPxe)
        );
        // Arch taken from option 60 when option 93 is missing.
        assert_eq!(
            classify_firmware(Some(uefi), None, false, None),
            Some(Firmware::UefiPxe)
        );
        assert_eq!(
            classify_firmware(Some(http), None, false, Some(Arch::HTTP_X64)),
            Some(Firmware::UefiHttp)
        );
        // iPXE wins over its PXEClient vendor class: never hand it the NBP again.
        assert_eq!(
            classify_firmware(Some(bios), Some(b"iPXE"), false, Some(Arch::BIOS)),
            Some(Firmware::Ipxe)
        );
        assert_eq!(
            classify_firmware(Some(uefi), None, true, Some(Arch::EFI_X64)),
            Some(Firmware::Ipxe)
        );
        assert_eq!(
            classify_firmware(Some(b"MSFT 5.0"), None, false, None),
            None
        );
        assert_eq!(classify_firmware(None, None, false, None), None);
    }

    #[test]
    fn macs_parse_and_print() {
        let mac: MacAddr = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        assert_eq!("52-54-00-ab-cd-01".parse::<MacAddr>().unwrap(), mac);
        assert!("52:54:00".parse::<MacAddr>().is_err());
        assert_eq!(parse_mac_bytes("52:54:00").unwrap(), vec![0x52, 0x54, 0]);
        assert!(parse_mac_bytes("5:54").is_err());
        assert!(parse_mac_bytes("").is_err());
    }
}
