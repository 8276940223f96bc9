//! What each kind of boot firmware says about itself in its DHCP requests: one table, used by
//! the daemon's probe, its XDP test frames, the integration tests' clients and the rack
//! simulator, so that all of them ask exactly as the firmware does.
//!
//! Values as the firmware sends them: EDK2's UEFI PXE and HTTP Boot drivers (OVMF), a PXE 2.1
//! BIOS ROM, and iPXE (its `pcbios` and `efi` `dhcparch.h`).

/// The options by which a DHCP server tells one kind of firmware from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persona {
    /// Option 60, the vendor class identifier, exactly as the firmware sends it.
    pub vendor_class: &'static str,
    /// Option 93, the client system architecture (RFC 4578).
    pub arch: u16,
    /// Option 94, the client network interface identifier: type 1 (UNDI), major, minor; the
    /// same version as the `UNDI:` part of option 60.
    pub ndi: [u8; 3],
    /// Option 55, the parameter request list, in the firmware's order.
    pub parameter_request_list: &'static [u8],
    /// Option 57, the largest DHCP message the firmware accepts, in bytes.
    pub max_message_bytes: u16,
    /// Option 77, the user class, where the firmware sends one (iPXE). Such a firmware also
    /// sends option 61, the client identifier (type 1 and its MAC address).
    pub user_class: Option<&'static [u8]>,
    /// Option 175, iPXE's encapsulated options, where the firmware sends them.
    pub ipxe_encapsulated: Option<&'static [u8]>,
}

impl Persona {
    /// Option 93's value on the wire (big-endian).
    pub const fn arch_bytes(&self) -> [u8; 2] {
        self.arch.to_be_bytes()
    }
}

/// Option 93 of a BIOS x86 PXE client.
pub const ARCH_BIOS_X86: u16 = 0;
/// Option 93 of a UEFI x64 PXE client.
pub const ARCH_UEFI_X64: u16 = 7;
/// Option 93 of a UEFI x64 HTTP Boot client.
pub const ARCH_UEFI_HTTP_X64: u16 = 16;

/// Option 57 of PXE 2.1 ROMs.
pub const MAX_MESSAGE_BYTES_PXE_ROM: u16 = 1260;
/// Option 57 of UEFI and iPXE: an Ethernet MTU less the IPv4 and UDP headers.
pub const MAX_MESSAGE_BYTES_ETHERNET: u16 = 1472;

/// Option 55 of a PXE 2.1 BIOS ROM: the usual network parameters, 43 (PXE vendor options),
/// 60, 66, 67, and 128-135 (the PXE "vendor specific" range).
const PRL_BIOS_PXE: &[u8] = &[
    1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130, 131, 132, 133,
    134, 135,
];
/// Option 55 of EDK2's UEFI PXE driver.
const PRL_UEFI_PXE: &[u8] = &[
    1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66,
    67, 97, 128, 129, 130, 131, 132, 133, 134, 135,
];
/// Option 55 of EDK2's HTTP Boot driver (no 66/128-135: it wants a URL in 67).
const PRL_UEFI_HTTP: &[u8] = &[
    1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 67,
    97,
];
/// Option 55 of iPXE: 175 and 203 are its own (encapsulated options, iSCSI initiator IQN).
const PRL_IPXE: &[u8] = &[
    1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175,
    203,
];

/// Option 77 of iPXE: the bare string, without RFC 3004 length prefixes, as iPXE sends it.
pub const IPXE_USER_CLASS: &[u8] = b"iPXE";
/// iPXE's encapsulated options (option 175).
pub const OPTION_IPXE_ENCAP: u8 = 175;
/// Option 175 as iPXE sends it: feature flags (each sub-option = 1) for PXE extensions (16),
/// HTTP (19), TFTP (21), DNS (23), PXE images (33), then the bus id (177: PCI, vendor 8086,
/// device 100e, an e1000) and the version (235: 1.21.1).
pub const IPXE_ENCAPSULATED: &[u8] = &[
    16, 1, 2, // PXE extensions, version 2
    19, 1, 1, // HTTP
    21, 1, 1, // TFTP
    23, 1, 1, // DNS
    33, 1, 1, // PXE images
    177, 5, 1, 0x80, 0x86, 0x10, 0x0e, // bus id: PCI 8086:100e
    235, 3, 1, 21, 1, // version 1.21.1
];

/// A BIOS PXE ROM (PXE 2.1, client architecture 0).
pub const BIOS_PXE: Persona = Persona {
    vendor_class: "PXEClient:Arch:00000:UNDI:002001",
    arch: ARCH_BIOS_X86,
    ndi: [1, 2, 1],
    parameter_request_list: PRL_BIOS_PXE,
    max_message_bytes: MAX_MESSAGE_BYTES_PXE_ROM,
    user_class: None,
    ipxe_encapsulated: None,
};

/// UEFI PXE on x64 (EDK2, client architecture 7).
pub const UEFI_X64_PXE: Persona = Persona {
    vendor_class: "PXEClient:Arch:00007:UNDI:003016",
    arch: ARCH_UEFI_X64,
    ndi: [1, 3, 16],
    parameter_request_list: PRL_UEFI_PXE,
    max_message_bytes: MAX_MESSAGE_BYTES_ETHERNET,
    user_class: None,
    ipxe_encapsulated: None,
};

/// UEFI HTTP Boot on x64 (EDK2, client architecture 16).
pub const UEFI_X64_HTTP: Persona = Persona {
    vendor_class: "HTTPClient:Arch:00016:UNDI:003001",
    arch: ARCH_UEFI_HTTP_X64,
    ndi: [1, 3, 1],
    parameter_request_list: PRL_UEFI_HTTP,
    max_message_bytes: MAX_MESSAGE_BYTES_ETHERNET,
    user_class: None,
    ipxe_encapsulated: None,
};

/// iPXE's BIOS build (`undionly.kpxe`, `ipxe.pxe`), asking again once chainloaded.
pub const IPXE_PCBIOS: Persona = Persona {
    vendor_class: "PXEClient:Arch:00000:UNDI:002001",
    arch: ARCH_BIOS_X86,
    ndi: [1, 2, 1],
    parameter_request_list: PRL_IPXE,
    max_message_bytes: MAX_MESSAGE_BYTES_ETHERNET,
    user_class: Some(IPXE_USER_CLASS),
    ipxe_encapsulated: Some(IPXE_ENCAPSULATED),
};

/// iPXE's x64 EFI build (`ipxe.efi`, `snponly.efi`), asking again once chainloaded.
pub const IPXE_EFI_X64: Persona = Persona {
    vendor_class: "PXEClient:Arch:00007:UNDI:003010",
    arch: ARCH_UEFI_X64,
    ndi: [1, 3, 10],
    parameter_request_list: PRL_IPXE,
    max_message_bytes: MAX_MESSAGE_BYTES_ETHERNET,
    user_class: Some(IPXE_USER_CLASS),
    ipxe_encapsulated: Some(IPXE_ENCAPSULATED),
};

/// Every persona of the table.
pub const ALL: [&Persona; 5] = [
    &BIOS_PXE,
    &UEFI_X64_PXE,
    &UEFI_X64_HTTP,
    &IPXE_PCBIOS,
    &IPXE_EFI_X64,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_60_agrees_with_options_93_and_94() {
        for p in ALL {
            let (class, rest) = p.vendor_class.split_once(":Arch:").unwrap();
            assert!(class == "PXEClient" || class == "HTTPClient", "{p:?}");
            let (arch, undi) = rest.split_once(":UNDI:").unwrap();
            assert_eq!(arch.parse::<u16>().unwrap(), p.arch, "{p:?}");
            assert_eq!(undi[..3].parse::<u8>().unwrap(), p.ndi[1], "{p:?}");
            assert_eq!(undi[3..].parse::<u8>().unwrap(), p.ndi[2], "{p:?}");
            assert_eq!(p.ndi[0], 1, "UNDI: {p:?}");
            assert_eq!(p.user_class.is_some(), p.ipxe_encapsulated.is_some());
        }
    }
}
