//! The config file as written: every key optional, spans kept for error messages.
//!
//! [`super::Config`] is built from this (one `build_*` per table, beside the file's flags);
//! nothing outside `config` reads it.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::Spanned;

use super::LogFormat;
use crate::{
    afxdp::BindMode, datapath, dhcp::DhcpMode, ra::RouterAdvertisement, xdp::AttachPolicy,
};

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
    /// `[[profile]]`: what a group boots, rendered by the HTTP server.
    #[serde(default)]
    pub profile: Vec<Spanned<WireProfile>>,
    /// `[timeline]`: following machines' boots.
    #[serde(default)]
    pub timeline: WireTimeline,
    /// `[ipv6]`: router advertisements.
    #[serde(default)]
    pub ipv6: WireIpv6,
}

/// `[timeline]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTimeline {
    /// Machines remembered at most.
    pub max_machines: Option<Spanned<usize>>,
    /// Seconds in one stage after which a machine counts as stuck.
    pub stuck_after_secs: Option<Spanned<u64>>,
}

/// `[ipv6]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireIpv6 {
    /// `off` or `no-router`.
    pub router_advertisement: Option<Spanned<RouterAdvertisement>>,
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
    /// `auto`, `xdp` or `kernel`: which datapath serves DHCP and TFTP.
    pub datapath: Option<Spanned<datapath::Choice>>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHttp {
    /// `address:port` of the HTTP listener.
    pub listen: Option<Spanned<String>>,
    /// Directory of artifacts (default: the boot root).
    pub artifact_root: Option<Spanned<PathBuf>>,
    /// Profile for machines no group gives one.
    pub default_profile: Option<Spanned<String>>,
    /// Open connections at most.
    pub max_connections: Option<Spanned<usize>>,
    /// Seconds to send request headers.
    pub header_timeout_secs: Option<Spanned<u64>>,
    /// Seconds without progress before a connection is cut.
    pub idle_timeout_secs: Option<Spanned<u64>>,
    /// Headers per request at most.
    pub max_headers: Option<Spanned<usize>>,
    /// Bytes of a request head at most.
    pub max_head_bytes: Option<Spanned<usize>>,
    /// Per-connection send cap, bytes per second (0: none).
    pub rate_limit_bytes_per_sec: Option<Spanned<u64>>,
}

/// `[[profile]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireProfile {
    /// Name.
    pub name: String,
    /// Kernel path or URL.
    pub kernel: Option<String>,
    /// Initrd paths or URLs.
    #[serde(default)]
    pub initrd: Vec<String>,
    /// Kernel arguments (a template).
    #[serde(default)]
    pub args: String,
    /// iPXE template file.
    pub ipxe_template: Option<PathBuf>,
    /// GRUB template file.
    pub grub_template: Option<PathBuf>,
    /// Plain-text template file.
    pub generic_template: Option<PathBuf>,
    /// Variables.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// `[tftp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTftp {
    /// `[first, last]` UDP ports used as server ports of transfers.
    pub port_range: Option<Spanned<[u16; 2]>>,
    /// `address:port` of the TFTP request listener.
    pub listen: Option<Spanned<String>>,
    /// Most transfers in flight at once; requests beyond are refused.
    pub max_transfers: Option<Spanned<u64>>,
    /// Largest block size offered (also capped by the interface MTU).
    pub max_blksize: Option<Spanned<u64>>,
    /// Largest window size offered.
    pub max_windowsize: Option<Spanned<u64>>,
    /// Retransmit timeout when the client asks for none, in milliseconds.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Retransmits before a transfer is given up.
    pub retries: Option<Spanned<u64>>,
    /// Bytes of the in-memory cache of hot files.
    pub cache_bytes: Option<Spanned<u64>>,
    /// `[[tftp.rewrite]]`: per-machine names for requested files.
    #[serde(default)]
    pub rewrite: Vec<Spanned<WireRewrite>>,
}

/// `[[tftp.rewrite]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRewrite {
    /// The name clients request.
    pub file: String,
    /// The per-machine name served instead, when it exists: a template over `{ip}`, `{ip_hex}`,
    /// `{mac}`, `{mac_hexhyp}`, `{group}`.
    pub to: String,
}

/// `[xdp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireXdp {
    /// How to attach the XDP program.
    pub mode: Option<Spanned<AttachPolicy>>,
    /// How AF_XDP sockets bind: `auto`, `zerocopy` or `copy`.
    pub bind: Option<Spanned<BindMode>>,
    /// DHCP and 4011 frames per second one client MAC may send (0: no limit).
    pub rate_limit_pps: Option<Spanned<u32>>,
    /// Frames a client may send in a burst above its rate.
    pub rate_burst: Option<Spanned<u32>>,
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
