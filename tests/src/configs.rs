//! Daemon config files the tests share.

use std::path::{Path, PathBuf};

use crate::TestNet;

/// Writes `<dir>/full.toml`: full DHCP on the test /24, addresses `.first` to `.last`, the lease
/// journal in `dir`, `extra` appended (more TOML). Returns its path.
pub fn full_dhcp_config(
    net: &TestNet,
    dir: &Path,
    (first, last): (u8, u8),
    lease_secs: u32,
    extra: &str,
) -> PathBuf {
    let [a, b, c, _] = net.server_ip().octets();
    let text = format!(
        "[dhcp]\nmode = \"full\"\nlease_file = \"{journal}\"\n\n[[dhcp.subnet]]\n\
         network = \"{a}.{b}.{c}.0/24\"\nrange = [\"{a}.{b}.{c}.{first}\", \"{a}.{b}.{c}.{last}\"]\n\
         router = \"{a}.{b}.{c}.1\"\nlease_time_secs = {lease_secs}\n{extra}",
        journal = dir.join("leases.journal").display()
    );
    let path = dir.join("full.toml");
    std::fs::write(&path, text).expect("writing the full-DHCP config");
    path
}
