//! Command line (clap). Every flag also reads a `PXE_*` environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{builder::BoolishValueParser, Args, Parser, Subcommand};

use crate::{
    config::{LogFormat, Overrides},
    datapath,
    dhcp::DhcpMode,
    probe::{FirmwareKind, ProbeOptions, PROBE_TIMEOUT_MS_DEFAULT, PROBE_TIMEOUT_MS_MAX},
    ra::RouterAdvertisement,
    xdp::AttachPolicy,
};

/// XDP-accelerated network boot server: PXE DHCP, TFTP and HTTP.
#[derive(Debug, Parser)]
#[command(name = "pxe-daemon", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: `pxe-daemon run --interface IF --root DIR` is enough for proxy-DHCP, TFTP and HTTP.
    Run(RunArgs),
    /// Check a config file and exit: 0 if valid, 2 (with file:line: reason) if not.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Broadcast PXE DISCOVERs as BIOS, UEFI x64, UEFI HTTP Boot and iPXE firmware on an
    /// interface and print every answer. Exit status: 0 every kind answered, 1 some kinds got
    /// no answer, 3 nobody answered, 4 the probe could not run.
    Probe(ProbeArgs),
    /// Show every machine's boot, stage by stage, from a running daemon's HTTP API.
    Status(StatusArgs),
}

/// Flags of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The daemon's HTTP listener.
    #[arg(long, env = "PXE_STATUS_URL", default_value = STATUS_URL_DEFAULT)]
    pub url: String,
    /// One machine (MAC, colon or hyphen form), with all its stages.
    #[arg(long, env = "PXE_STATUS_MAC")]
    pub mac: Option<String>,
    /// The timeline as JSON, as the daemon serves it.
    #[arg(long, env = "PXE_STATUS_JSON")]
    pub json: bool,
}

/// Default daemon URL of `status`: the daemon on this machine.
pub const STATUS_URL_DEFAULT: &str = "http://127.0.0.1:80";

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file for everything beyond the flags (see docs/config.md).
    #[arg(long, env = "PXE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Interface facing the machines to boot.
    #[arg(long, short = 'i', env = "PXE_INTERFACE")]
    pub interface: Option<String>,
    /// Boot root served over TFTP and HTTP.
    #[arg(long, env = "PXE_ROOT")]
    pub root: Option<PathBuf>,
    /// Address:port of the HTTP listener [default: 0.0.0.0:80].
    #[arg(long, env = "PXE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Address:port of the TFTP request listener [default: 0.0.0.0:69].
    #[arg(long, env = "PXE_TFTP_LISTEN")]
    pub tftp_listen: Option<SocketAddr>,
    /// How to attach the XDP program [default: auto].
    #[arg(long, env = "PXE_XDP_MODE", value_enum)]
    pub xdp_mode: Option<AttachPolicy>,
    /// Datapath of DHCP and TFTP: `xdp` (AF_XDP, or refuse to start), `auto` (AF_XDP where it
    /// works, else kernel sockets) or `kernel` [default: kernel].
    #[arg(long, env = "PXE_DATAPATH", value_enum)]
    pub datapath: Option<datapath::Choice>,
    /// Log level or tracing directives, e.g. `debug` or `pxe_daemon=debug,info` [default: info].
    #[arg(long, env = "PXE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: human].
    #[arg(long, env = "PXE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// DHCP mode: proxy beside the site's DHCP server, full DHCP server, or off [default: proxy].
    #[arg(long, env = "PXE_DHCP_MODE", value_enum)]
    pub dhcp_mode: Option<DhcpMode>,
    /// IPv6 router advertisements: `no-router` answers router solicitations with "no IPv6
    /// router here", which ends iPXE's IPv6 wait on IPv4-only networks [default: off].
    #[arg(long, env = "PXE_IPV6_RA", value_enum)]
    pub ipv6_ra: Option<RouterAdvertisement>,
}

impl RunArgs {
    /// The flags that override the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            interface: self.interface.clone(),
            root: self.root.clone(),
            http_listen: self.http_listen,
            tftp_listen: self.tftp_listen,
            xdp_mode: self.xdp_mode,
            datapath: self.datapath,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            dhcp_mode: self.dhcp_mode,
            ipv6_ra: self.ipv6_ra,
        }
    }
}

/// Flags of `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Interface on the boot network to probe from (needs root: UDP port 68).
    #[arg(long, short = 'i', env = "PXE_PROBE_INTERFACE")]
    pub interface: String,
    /// Firmware kinds to pretend to be, comma-separated.
    #[arg(
        long,
        env = "PXE_PROBE_KINDS",
        value_enum,
        value_delimiter = ',',
        default_value = "bios,uefi-x64,uefi-http,ipxe"
    )]
    pub kinds: Vec<FirmwareKind>,
    /// How long to listen for answers, in milliseconds.
    #[arg(
        long,
        env = "PXE_PROBE_TIMEOUT_MS",
        default_value_t = PROBE_TIMEOUT_MS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(1..=PROBE_TIMEOUT_MS_MAX)
    )]
    pub timeout_ms: u64,
    /// Print JSON lines instead of the table.
    #[arg(long, env = "PXE_PROBE_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Follow an offer that names no boot file to its boot server on UDP port 4011, as PXE
    /// firmware does, and report the ACK (`--follow-4011=false` to not).
    #[arg(
        long = "follow-4011",
        env = "PXE_PROBE_FOLLOW_4011",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub follow_4011: bool,
}

impl ProbeArgs {
    /// The probe's options: kinds without repeats, in the order given.
    pub fn options(&self) -> ProbeOptions {
        let mut kinds: Vec<FirmwareKind> = Vec::with_capacity(self.kinds.len());
        for kind in &self.kinds {
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        ProbeOptions {
            interface: self.interface.clone(),
            kinds,
            timeout: Duration::from_millis(self.timeout_ms),
            follow_4011: self.follow_4011,
        }
    }
}
