//! The config file as written: every key optional, spans kept for error messages.
//!
//! [`super::Config`] is built from this with `TryFrom`; nothing outside `config` reads it.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::Spanned;

use super::{DhcpMode, LogFormat, XdpModeSetting};

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    /// `[server]`: where the daemon serves.
    #[serde(default)]
    pub server: WireServer,
    /// `[http]`: the HTTP listener (scripts, artifacts, metrics).
    #[serde(default)]
    pub http: WireHttp,
    /// `[tftp]`: the TFTP server.
    #[serde(default)]
    pub tftp: WireTftp,
    /// `[xdp]`: the XDP program.
    #[serde(default)]
    pub xdp: WireXdp,
    /// `[log]`: logging.
    #[serde(default)]
    pub log: WireLog,
    /// `[dhcp]`: proxy or full DHCP.
    #[serde(default)]
    pub dhcp: WireDhcp,
    /// `[boot]`: per-arch defaults of the boot policy.
    #[serde(default)]
    pub boot: WireBoot,
    /// `[[group]]`: groups of machines and what they boot, first match wins.
    #[serde(default)]
    pub group: Vec<Spanned<WireGroup>>,
}

/// `[dhcp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDhcp {
    /// `proxy`, `full` or `off`.
    pub mode: Option<Spanned<DhcpMode>>,
    /// Address announced as DHCP server and next-server (default: the interface's).
    pub server_address: Option<Ipv4Addr>,
    /// Milliseconds to wait before each reply.
    pub reply_delay_ms: Option<Spanned<u64>>,
    /// MACs or MAC prefixes never answered.
    pub ignore_macs: Option<Vec<Spanned<String>>>,
    /// Lease journal of full mode.
    pub lease_file: Option<Spanned<PathBuf>>,
    /// `[[dhcp.subnet]]`: address pools of full mode.
    #[serde(default)]
    pub subnet: Vec<Spanned<WireSubnet>>,
    /// `[[dhcp.reservation]]`: fixed addresses by MAC.
    #[serde(default)]
    pub reservation: Vec<Spanned<WireReservation>>,
}

/// `[[dhcp.subnet]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSubnet {
    /// e.g. `198.18.0.0/24`.
    pub network: Ipv4Net,
    /// `[first, last]` dynamic addresses.
    pub range: [Ipv4Addr; 2],
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 51, seconds.
    pub lease_time_secs: Option<u32>,
}

/// `[[dhcp.reservation]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReservation {
    /// The machine.
    pub mac: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Option 12.
    pub hostname: Option<String>,
}

/// `[boot]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBoot {
    /// Base of the URLs handed to iPXE and HTTP Boot clients (default `http://<server>:<port>`).
    pub http_base_url: Option<Spanned<String>>,
    /// `[boot.arch]`: option-93 value (as a string key) to NBP path in the root.
    #[serde(default)]
    pub arch: BTreeMap<String, Spanned<String>>,
}

/// `[[group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGroup {
    /// Name.
    pub name: String,
    /// Exact MACs.
    #[serde(default)]
    pub mac: Vec<String>,
    /// MAC prefixes.
    #[serde(default)]
    pub mac_prefix: Vec<String>,
    /// Option 93 values.
    #[serde(default)]
    pub arch: Vec<u16>,
    /// `bios`, `uefi`, `uefi-http`, `ipxe`.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// Networks of the relay (giaddr).
    #[serde(default)]
    pub relay: Vec<Ipv4Net>,
    /// NBP for PXE ROMs.
    pub boot_file: Option<String>,
    /// What UEFI HTTP Boot gets.
    pub http_boot_file: Option<String>,
    /// What iPXE gets.
    pub script: Option<String>,
    /// Profile for the HTTP server.
    pub profile: Option<String>,
    /// Template variables.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireServer {
    /// Network interface that faces the machines to boot.
    pub interface: Option<Spanned<String>>,
    /// Boot root: the directory TFTP and HTTP serve from.
    pub root: Option<Spanned<PathBuf>>,
    /// Seconds to let transfers finish after SIGTERM before they are cut.
    pub drain_timeout_secs: Option<Spanned<u64>>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHttp {
    /// `address:port` of the HTTP listener.
    pub listen: Option<Spanned<String>>,
}

/// `[tftp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTftp {
    /// `[first, last]` UDP ports used as server ports of transfers.
    pub port_range: Option<Spanned<[u16; 2]>>,
}

/// `[xdp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireXdp {
    /// How to attach the XDP program.
    pub mode: Option<Spanned<XdpModeSetting>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLog {
    /// A tracing filter: a level (`info`) or directives (`pxe_daemon=debug,info`).
    pub level: Option<Spanned<String>>,
    /// `human` or `json`.
    pub format: Option<Spanned<LogFormat>>,
}
