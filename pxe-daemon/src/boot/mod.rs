//! The boot policy: one place decides what each machine boots (pixiecore's `Booter`).
//!
//! DHCP asks it which boot file or URL to hand out, TFTP which group a machine's rewritten
//! names use, HTTP which script, profile and variables a machine gets. Protocol code only
//! carries the decision out.

mod machine;
mod policy;
mod settings;

pub use machine::{
    arch_from_vendor_class, classify_firmware, parse_mac_bytes, Arch, Firmware, MacAddr,
    MacParseError, Machine,
};
pub use policy::{
    BootPolicy, BootSpec, BootTarget, Group, RootView, Selectors, IPXE_SCRIPT_PATH,
    ROOT_REFRESH_INTERVAL,
};
pub use settings::Settings;
