//! Configuration: a TOML file (optional) plus command-line overrides, validated into [`Config`].
//!
//! Two tiers, as in dora: the file is read into a [`wire::WireConfig`] that mirrors what was
//! written (with spans), then `TryFrom` turns it into the validated [`Config`] the daemon runs
//! with. Every refusal names the file, the line and the reason.

pub mod wire;

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use pxe_common::{TFTP_TRANSFER_PORT_MAX_DEFAULT, TFTP_TRANSFER_PORT_MIN_DEFAULT};
use serde::Deserialize;
use toml::Spanned;

use wire::WireConfig;

use crate::{
    boot::{parse_mac_bytes, Arch, Firmware, Group, MacAddr, Selectors},
    dhcp::{Reservation, SubnetConfig},
    http::{scripts::Profile, HttpLimits},
};

/// Default HTTP listener: every address, port 80 (what a datacenter's boot network expects).
pub const HTTP_LISTEN_DEFAULT: &str = "0.0.0.0:80";
/// Default seconds given to open transfers to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT_SECS_DEFAULT: u64 = 10;
/// Default DHCP/4011 frames per second per client MAC: far above what a booting machine sends
/// (a handful per boot stage), far below a flood.
pub const XDP_RATE_LIMIT_PPS_DEFAULT: u32 = 20;
/// Default burst above the rate.
pub const XDP_RATE_BURST_DEFAULT: u32 = 40;
/// Default log filter.
pub const LOG_LEVEL_DEFAULT: &str = "info";
/// Default TFTP request listener: every address, port 69.
pub const TFTP_LISTEN_DEFAULT: &str = "0.0.0.0:69";
/// Default cap on TFTP transfers in flight.
pub const TFTP_MAX_TRANSFERS_DEFAULT: usize = 10_000;
/// Most `tftp.max_transfers` may be.
pub const TFTP_MAX_TRANSFERS_LIMIT: u64 = 1_000_000;
/// Default largest block size: a DATA datagram fills a 1500-byte Ethernet MTU exactly.
pub const TFTP_MAX_BLKSIZE_DEFAULT: u16 = 1468;
/// Default largest window (tftp-hpa's cap; gains level off near it).
pub const TFTP_MAX_WINDOWSIZE_DEFAULT: u16 = 64;
/// Most `tftp.max_windowsize` may be: a window stays far below the 65536 block numbers.
pub const TFTP_MAX_WINDOWSIZE_LIMIT: u64 = 1024;
/// Default retransmit timeout, milliseconds.
pub const TFTP_TIMEOUT_MS_DEFAULT: u64 = 1000;
/// Allowed `tftp.timeout_ms`.
pub const TFTP_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 10..=255_000;
/// Default retransmits before a transfer is given up.
pub const TFTP_RETRIES_DEFAULT: u8 = 5;
/// Allowed `tftp.retries`.
pub const TFTP_RETRIES_RANGE: RangeInclusive<u64> = 0..=50;
/// Default size of the hot-file cache: 64 MiB.
pub const TFTP_CACHE_BYTES_DEFAULT: u64 = 64 << 20;
/// Most `tftp.cache_bytes` may be: 16 GiB.
pub const TFTP_CACHE_BYTES_LIMIT: u64 = 16 << 30;

/// How the XDP program is attached to the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Driver (native) mode, else skb (generic) mode, else run without XDP, with a warning.
    #[default]
    Auto,
    /// Driver mode or refuse to start.
    Driver,
    /// Generic (skb) mode or refuse to start.
    Skb,
    /// Do not load the XDP program.
    Off,
}

/// Which datapath serves DHCP (and, once its service exists, TFTP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatapathSetting {
    /// AF_XDP where the XDP program attaches and the sockets bind, else kernel sockets with a
    /// warning.
    Auto,
    /// AF_XDP or refuse to start.
    Xdp,
    /// Ordinary kernel sockets.
    #[default]
    Kernel,
}

/// How an AF_XDP socket binds to its queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XskBindSetting {
    /// Zero-copy where the driver supports it, else copy mode.
    #[default]
    Auto,
    /// Zero-copy or refuse to start.
    Zerocopy,
    /// Copy mode (frames copied between the driver's buffers and ours).
    Copy,
}

/// What the DHCP server does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Proxy-DHCP: boot information for PXE, HTTP Boot and iPXE clients; the site's DHCP
    /// server gives the addresses.
    #[default]
    Proxy,
    /// The DHCP server of a provisioning network: addresses from `[[dhcp.subnet]]` pools, and
    /// boot information.
    Full,
    /// No DHCP (another server hands out boot information).
    Off,
}

/// Whether the daemon sends IPv6 router advertisements on the boot interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RouterAdvertisement {
    /// None (the default): the network's routers, if any, advertise.
    #[default]
    Off,
    /// Answer router solicitations with "no IPv6 router here" (router lifetime 0, no prefix,
    /// no DHCPv6), which ends iPXE's wait for IPv6 autoconfiguration on IPv4-only networks.
    NoRouter,
}

/// Default lease time of full mode, seconds.
pub const LEASE_TIME_SECS_DEFAULT: u32 = 3600;
/// Default lease journal of full mode.
pub const LEASE_FILE_DEFAULT: &str = "/var/lib/pxe-daemon/leases.journal";

/// DHCP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpSettings {
    /// Proxy, full or off.
    pub mode: DhcpMode,
    /// Address announced as server and next-server; default: the interface's.
    pub server_address: Option<Ipv4Addr>,
    /// Wait before each reply.
    pub reply_delay: Duration,
    /// MACs and MAC prefixes never answered.
    pub ignore_macs: Vec<Vec<u8>>,
    /// Lease journal (full mode).
    pub lease_file: PathBuf,
    /// Pools (full mode).
    pub subnets: Vec<SubnetConfig>,
    /// Fixed addresses (full mode).
    pub reservations: Vec<Reservation>,
}

/// HTTP settings beyond the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Artifact root (absolute, canonical); default: the boot root.
    pub artifact_root: Option<PathBuf>,
    /// Profiles, with their template sources read in.
    pub profiles: Vec<Profile>,
    /// Profile for machines no group gives one.
    pub default_profile: Option<String>,
    /// Limits.
    pub limits: HttpLimits,
}

/// Default cap on open HTTP connections.
pub const HTTP_MAX_CONNECTIONS_DEFAULT: usize = 4096;
/// Default seconds to send request headers.
pub const HTTP_HEADER_TIMEOUT_SECS_DEFAULT: u64 = 10;
/// Default seconds without progress before a connection is cut.
pub const HTTP_IDLE_TIMEOUT_SECS_DEFAULT: u64 = 60;
/// Default cap on headers per request.
pub const HTTP_MAX_HEADERS_DEFAULT: usize = 64;
/// Default cap on a request head, bytes (hyper's minimum is 8192).
pub const HTTP_MAX_HEAD_BYTES_DEFAULT: usize = 16 * 1024;

/// Boot policy settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootSettings {
    /// Base of the URLs handed out; default `http://<server>:<http port>`.
    pub http_base_url: Option<String>,
    /// NBP per option-93 value.
    pub arch_defaults: BTreeMap<u16, String>,
    /// Groups, first match wins.
    pub groups: Vec<Group>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The TFTP server's settings (its transfer port range is [`Config::tftp_ports`], which the
/// XDP program reads too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TftpConfig {
    /// Address of the request listener (port 69).
    pub listen: SocketAddr,
    /// Most transfers in flight; requests beyond are refused with an ERROR.
    pub max_transfers: usize,
    /// Largest block size offered; the interface MTU caps it further.
    pub max_blksize: u16,
    /// Largest window size offered.
    pub max_windowsize: u16,
    /// Retransmit timeout when the client asks for none.
    pub timeout: Duration,
    /// Retransmits before a transfer is given up.
    pub retries: u8,
    /// Bytes of the hot-file cache (0: no cache; every file is read block by block).
    pub cache_bytes: u64,
    /// Per-machine names: (requested name, template of the name served when it exists).
    pub rewrites: Vec<(String, String)>,
}

impl Default for TftpConfig {
    fn default() -> TftpConfig {
        TftpConfig {
            listen: TFTP_LISTEN_DEFAULT
                .parse()
                .expect("TFTP_LISTEN_DEFAULT is a valid socket address"),
            max_transfers: TFTP_MAX_TRANSFERS_DEFAULT,
            max_blksize: TFTP_MAX_BLKSIZE_DEFAULT,
            max_windowsize: TFTP_MAX_WINDOWSIZE_DEFAULT,
            timeout: Duration::from_millis(TFTP_TIMEOUT_MS_DEFAULT),
            retries: TFTP_RETRIES_DEFAULT,
            cache_bytes: TFTP_CACHE_BYTES_DEFAULT,
            rewrites: Vec::new(),
        }
    }
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Interface facing the machines to boot; `run` refuses to start without one.
    pub interface: Option<String>,
    /// Boot root (an existing directory, made absolute).
    pub root: Option<PathBuf>,
    /// Address of the HTTP listener.
    pub http_listen: SocketAddr,
    /// UDP ports used as the server side of TFTP transfers.
    pub tftp_ports: RangeInclusive<u16>,
    /// The TFTP server.
    pub tftp: TftpConfig,
    /// How to attach the XDP program.
    pub xdp_mode: XdpModeSetting,
    /// Which datapath serves DHCP.
    pub datapath: DatapathSetting,
    /// How AF_XDP sockets bind (zero-copy or copy).
    pub xsk_bind: XskBindSetting,
    /// DHCP and 4011 frames per second one client MAC may send before the XDP program drops
    /// them (0: no limit).
    pub xdp_rate_limit_pps: u32,
    /// Frames a client may send in a burst above its rate.
    pub xdp_rate_burst: u32,
    /// Time given to open transfers after a shutdown signal.
    pub drain_timeout: Duration,
    /// Log filter directives.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// DHCP.
    pub dhcp: DhcpSettings,
    /// Boot policy.
    pub boot: BootSettings,
    /// HTTP.
    pub http: HttpSettings,
    /// Machines remembered by the boot timeline at most.
    pub timeline_max_machines: usize,
    /// Time in one stage after which a machine counts as stuck.
    pub timeline_stuck_after: Duration,
    /// IPv6 router advertisements on the boot interface.
    pub ipv6_ra: RouterAdvertisement,
}

/// Values given on the command line (or their environment variables); they win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--interface`.
    pub interface: Option<String>,
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--http-listen`.
    pub http_listen: Option<SocketAddr>,
    /// `--tftp-listen`.
    pub tftp_listen: Option<SocketAddr>,
    /// `--xdp-mode`.
    pub xdp_mode: Option<XdpModeSetting>,
    /// `--datapath`.
    pub datapath: Option<DatapathSetting>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--dhcp-mode`.
    pub dhcp_mode: Option<DhcpMode>,
    /// `--ipv6-ra`.
    pub ipv6_ra: Option<RouterAdvertisement>,
}

/// Why a configuration was refused. Displays as `file:line:column: reason`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A value in the file is wrong (syntax, type, unknown key or a refused value).
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A value given on the command line (or its environment variable) is wrong.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, e.g. `--root`.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a value came from, so that a refusal can point at it.
#[derive(Clone, Debug)]
enum Origin<'a> {
    /// A span in the config file.
    File(&'a SourceFile<'a>, Range<usize>),
    /// A command-line flag.
    Flag(&'static str),
}

/// The config file's path and text, for turning spans into line and column.
#[derive(Debug)]
struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl SourceFile<'_> {
    fn error(&self, span: Option<Range<usize>>, reason: impl fmt::Display) -> ConfigError {
        let offset = span.map_or(0, |s| s.start).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            reason: reason.to_string(),
        }
    }
}

impl Origin<'_> {
    fn error(&self, reason: impl fmt::Display) -> ConfigError {
        match self {
            Origin::File(src, span) => src.error(Some(span.clone()), reason),
            Origin::Flag(flag) => ConfigError::Flag {
                flag,
                reason: reason.to_string(),
            },
        }
    }
}

impl Config {
    /// Reads and validates `path` (if any), applying `overrides` on top.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(path, &text, overrides)
            }
            None => Self::build(WireConfig::default(), None, overrides),
        }
    }

    /// Validates the TOML `text` of the file at `path` (used to resolve relative paths).
    pub fn from_toml(path: &Path, text: &str, overrides: Overrides) -> Result<Config, ConfigError> {
        let src = SourceFile { path, text };
        let wire: WireConfig =
            toml::from_str(text).map_err(|e| src.error(e.span(), e.message()))?;
        Self::build(wire, Some(&src), overrides)
    }

    fn build(
        wire: WireConfig,
        src: Option<&SourceFile<'_>>,
        overrides: Overrides,
    ) -> Result<Config, ConfigError> {
        // Picks the flag if given, else the file's value with its origin.
        fn pick<'a, T>(
            flag: Option<T>,
            flag_name: &'static str,
            file: Option<Spanned<T>>,
            src: Option<&'a SourceFile<'a>>,
        ) -> Option<(T, Origin<'a>)> {
            match (flag, file, src) {
                (Some(v), _, _) => Some((v, Origin::Flag(flag_name))),
                (None, Some(s), Some(src)) => {
                    let span = s.span();
                    Some((s.into_inner(), Origin::File(src, span)))
                }
                _ => None,
            }
        }

        let WireConfig {
            server,
            http,
            tftp,
            xdp,
            log,
            dhcp,
            boot,
            group,
            profile,
            timeline,
            ipv6,
        } = wire;

        let interface = match pick(overrides.interface, "--interface", server.interface, src) {
            Some((name, origin)) => Some(validate_interface(name, &origin)?),
            None => None,
        };

        let root = match pick(overrides.root, "--root", server.root, src) {
            Some((dir, origin)) => {
                // A relative root in a file is relative to the file, as an operator reads it.
                let dir = match (&origin, src) {
                    (Origin::File(..), Some(src)) if dir.is_relative() => src
                        .path
                        .parent()
                        .map_or_else(|| dir.clone(), |p| p.join(&dir)),
                    _ => dir,
                };
                Some(validate_root(&dir, &origin)?)
            }
            None => None,
        };

        let http_settings = build_http(&http, profile, root.as_deref(), src)?;
        let http_listen = match (overrides.http_listen, http.listen, src) {
            (Some(addr), _, _) => addr,
            (None, Some(s), Some(src)) => {
                let origin = Origin::File(src, s.span());
                s.get_ref().parse().map_err(|e| {
                    origin.error(format!(
                        "http.listen {:?} is not an address:port ({e})",
                        s.get_ref()
                    ))
                })?
            }
            _ => HTTP_LISTEN_DEFAULT
                .parse()
                .expect("HTTP_LISTEN_DEFAULT is a valid socket address"),
        };

        let tftp_settings = build_tftp(&tftp, overrides.tftp_listen, src)?;

        let tftp_ports = match (tftp.port_range, src) {
            (Some(s), Some(src)) => {
                let [first, last] = *s.get_ref();
                let origin = Origin::File(src, s.span());
                if first > last {
                    return Err(origin.error(format!(
                        "tftp.port_range [{first}, {last}]: the first port is above the last"
                    )));
                }
                if first < 1024 {
                    return Err(origin.error(format!(
                        "tftp.port_range [{first}, {last}]: transfer ports must be 1024 or above \
                         (below are well-known services, e.g. 67, 69, 4011)"
                    )));
                }
                first..=last
            }
            _ => TFTP_TRANSFER_PORT_MIN_DEFAULT..=TFTP_TRANSFER_PORT_MAX_DEFAULT,
        };

        let xdp_mode = pick(overrides.xdp_mode, "--xdp-mode", xdp.mode, src)
            .map(|(m, _)| m)
            .unwrap_or_default();
        let datapath = pick(overrides.datapath, "--datapath", server.datapath, src)
            .map(|(d, _)| d)
            .unwrap_or_default();
        let xsk_bind = xdp.bind.map(Spanned::into_inner).unwrap_or_default();
        let xdp_rate_limit_pps = xdp
            .rate_limit_pps
            .map_or(XDP_RATE_LIMIT_PPS_DEFAULT, Spanned::into_inner);
        let xdp_rate_burst = match (xdp.rate_burst, src) {
            (Some(b), Some(src)) if *b.get_ref() > 1_000_000 => {
                return Err(Origin::File(src, b.span())
                    .error(format!("xdp.rate_burst {} is above 1000000", b.get_ref())))
            }
            (Some(b), _) => b.into_inner(),
            (None, _) => XDP_RATE_BURST_DEFAULT,
        };

        let drain_timeout_secs = match (server.drain_timeout_secs, src) {
            (Some(s), Some(src)) => {
                let secs = *s.get_ref();
                if secs > 3600 {
                    return Err(Origin::File(src, s.span()).error(format!(
                        "server.drain_timeout_secs {secs} is above one hour"
                    )));
                }
                secs
            }
            _ => DRAIN_TIMEOUT_SECS_DEFAULT,
        };

        let log_level = match pick(overrides.log_level, "--log-level", log.level, src) {
            Some((level, origin)) => {
                tracing_subscriber::EnvFilter::builder()
                    .parse(&level)
                    .map_err(|e| origin.error(format!("log level {level:?}: {e}")))?;
                level
            }
            None => LOG_LEVEL_DEFAULT.to_owned(),
        };
        let log_format = pick(overrides.log_format, "--log-format", log.format, src)
            .map(|(f, _)| f)
            .unwrap_or_default();

        let ipv6_ra = pick(
            overrides.ipv6_ra,
            "--ipv6-ra",
            ipv6.router_advertisement,
            src,
        )
        .map(|(ra, _)| ra)
        .unwrap_or_default();

        let dhcp = build_dhcp(dhcp, src, overrides.dhcp_mode)?;
        let boot = build_boot(boot, group, src)?;
        if let Some(src) = src {
            check_profile_refs(&boot, &http_settings, src)?;
        }

        let (timeline_max_machines, timeline_stuck_after) = build_timeline(&timeline, src)?;

        Ok(Config {
            timeline_max_machines,
            timeline_stuck_after,
            http: http_settings,
            dhcp,
            boot,
            interface,
            root,
            http_listen,
            tftp_ports,
            tftp: tftp_settings,
            xdp_mode,
            datapath,
            xsk_bind,
            xdp_rate_limit_pps,
            xdp_rate_burst,
            drain_timeout: Duration::from_secs(drain_timeout_secs),
            log_level,
            log_format,
            ipv6_ra,
        })
    }
}

fn build_dhcp(
    wire: wire::WireDhcp,
    src: Option<&SourceFile<'_>>,
    mode_flag: Option<DhcpMode>,
) -> Result<DhcpSettings, ConfigError> {
    // Without a file, only the mode can be set (by flag); everything else is default.
    let err_at = |span: Range<usize>, reason: String| match src {
        Some(src) => src.error(Some(span), reason),
        None => ConfigError::Flag {
            flag: "--config",
            reason,
        },
    };
    let mode_span = wire.mode.as_ref().map(|m| m.span());
    let mode = mode_flag
        .or(wire.mode.map(Spanned::into_inner))
        .unwrap_or_default();
    let reply_delay_ms = match wire.reply_delay_ms {
        Some(d) if *d.get_ref() > 10_000 => {
            return Err(err_at(
                d.span(),
                format!(
                    "dhcp.reply_delay_ms {} is above 10000 (firmware gives up long before)",
                    d.get_ref()
                ),
            ))
        }
        Some(d) => d.into_inner(),
        None => 0,
    };
    let mut ignore_macs = Vec::new();
    for m in wire.ignore_macs.unwrap_or_default() {
        let bytes = parse_mac_bytes(m.get_ref())
            .map_err(|e| err_at(m.span(), format!("dhcp.ignore_macs: {e}")))?;
        ignore_macs.push(bytes);
    }
    let lease_file = match (wire.lease_file, src) {
        (Some(f), Some(src)) if f.get_ref().is_relative() => src
            .path
            .parent()
            .map_or_else(|| f.get_ref().clone(), |p| p.join(f.get_ref())),
        (Some(f), _) => f.into_inner(),
        (None, _) => PathBuf::from(LEASE_FILE_DEFAULT),
    };

    let mut subnets: Vec<SubnetConfig> = Vec::new();
    for s in wire.subnet {
        let span = s.span();
        let w = s.into_inner();
        let [first, last] = w.range;
        let net = w.network.trunc();
        if !net.contains(&first) || !net.contains(&last) || u32::from(first) > u32::from(last) {
            return Err(err_at(
                span,
                format!("dhcp.subnet {net}: range [{first}, {last}] must be inside the network, first <= last"),
            ));
        }
        if subnets
            .iter()
            .any(|o| o.network.contains(&net.network()) || net.contains(&o.network.network()))
        {
            return Err(err_at(
                span,
                format!("dhcp.subnet {net} overlaps another subnet"),
            ));
        }
        subnets.push(SubnetConfig {
            network: net,
            range: (first, last),
            router: w.router,
            dns: w.dns,
            domain: w.domain,
            lease_secs: w.lease_time_secs.unwrap_or(LEASE_TIME_SECS_DEFAULT).max(60),
        });
    }
    let mut reservations: Vec<Reservation> = Vec::new();
    for r in wire.reservation {
        let span = r.span();
        let w = r.into_inner();
        let mac: MacAddr = w
            .mac
            .parse()
            .map_err(|e| err_at(span.clone(), format!("dhcp.reservation: {e}")))?;
        if !subnets.iter().any(|s| s.network.contains(&w.ip)) {
            return Err(err_at(
                span,
                format!("dhcp.reservation {mac}: {} is in no dhcp.subnet", w.ip),
            ));
        }
        if reservations.iter().any(|o| o.mac == mac || o.ip == w.ip) {
            return Err(err_at(
                span,
                format!(
                    "dhcp.reservation {mac} {}: MAC or address reserved twice",
                    w.ip
                ),
            ));
        }
        reservations.push(Reservation {
            mac,
            ip: w.ip,
            hostname: w.hostname,
        });
    }
    if mode == DhcpMode::Full && subnets.is_empty() {
        let reason = "dhcp.mode = \"full\" needs at least one [[dhcp.subnet]]".to_owned();
        return Err(match (mode_span, src) {
            (Some(span), Some(src)) => src.error(Some(span), reason),
            _ => ConfigError::Flag {
                flag: "--dhcp-mode",
                reason,
            },
        });
    }
    Ok(DhcpSettings {
        mode,
        server_address: wire.server_address,
        reply_delay: Duration::from_millis(reply_delay_ms),
        ignore_macs,
        lease_file,
        subnets,
        reservations,
    })
}

fn build_http(
    w: &wire::WireHttp,
    profiles: Vec<Spanned<wire::WireProfile>>,
    boot_root: Option<&Path>,
    src: Option<&SourceFile<'_>>,
) -> Result<HttpSettings, ConfigError> {
    let mut limits = HttpLimits {
        max_connections: HTTP_MAX_CONNECTIONS_DEFAULT,
        header_timeout: Duration::from_secs(HTTP_HEADER_TIMEOUT_SECS_DEFAULT),
        idle_timeout: Duration::from_secs(HTTP_IDLE_TIMEOUT_SECS_DEFAULT),
        max_headers: HTTP_MAX_HEADERS_DEFAULT,
        max_head_bytes: HTTP_MAX_HEAD_BYTES_DEFAULT,
        rate_bytes_per_sec: None,
    };
    let Some(src) = src else {
        return Ok(HttpSettings {
            artifact_root: boot_root.map(Path::to_path_buf),
            profiles: Vec::new(),
            default_profile: None,
            limits,
        });
    };
    // A number in [lo, hi], or an error at its line.
    fn bounded<T: Copy + PartialOrd + fmt::Display>(
        v: &Option<Spanned<T>>,
        key: &str,
        lo: T,
        hi: T,
        src: &SourceFile<'_>,
    ) -> Result<Option<T>, ConfigError> {
        match v {
            Some(s) if *s.get_ref() < lo || *s.get_ref() > hi => Err(src.error(
                Some(s.span()),
                format!("http.{key} {} is outside {lo}..={hi}", s.get_ref()),
            )),
            Some(s) => Ok(Some(*s.get_ref())),
            None => Ok(None),
        }
    }
    if let Some(v) = bounded(&w.max_connections, "max_connections", 1, 1_000_000, src)? {
        limits.max_connections = v;
    }
    if let Some(v) = bounded(&w.header_timeout_secs, "header_timeout_secs", 1, 300, src)? {
        limits.header_timeout = Duration::from_secs(v);
    }
    if let Some(v) = bounded(&w.idle_timeout_secs, "idle_timeout_secs", 1, 3600, src)? {
        limits.idle_timeout = Duration::from_secs(v);
    }
    if let Some(v) = bounded(&w.max_headers, "max_headers", 8, 1024, src)? {
        limits.max_headers = v;
    }
    if let Some(v) = bounded(&w.max_head_bytes, "max_head_bytes", 8192, 1 << 20, src)? {
        limits.max_head_bytes = v;
    }
    if let Some(v) = bounded(
        &w.rate_limit_bytes_per_sec,
        "rate_limit_bytes_per_sec",
        0,
        u64::MAX,
        src,
    )? {
        limits.rate_bytes_per_sec = (v > 0).then_some(v);
    }
    let config_dir = src.path.parent().unwrap_or(Path::new("."));
    let artifact_root = match &w.artifact_root {
        Some(dir) => {
            let origin = Origin::File(src, dir.span());
            let path = config_dir.join(dir.get_ref());
            Some(validate_root(&path, &origin)?)
        }
        None => boot_root.map(Path::to_path_buf),
    };
    let mut out: Vec<Profile> = Vec::new();
    for p in profiles {
        let span = p.span();
        let w = p.into_inner();
        let fail = |reason: String| {
            src.error(
                Some(span.clone()),
                format!("profile {:?}: {reason}", w.name),
            )
        };
        if out.iter().any(|o| o.name == w.name) {
            return Err(fail("a profile of that name exists already".into()));
        }
        let read = |file: &Option<PathBuf>, kind: &str| -> Result<Option<String>, ConfigError> {
            let Some(file) = file else { return Ok(None) };
            let path = config_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(format!("{kind} template {}: {e}", path.display())))?;
            crate::http::scripts::check_template(&text)
                .map_err(|e| fail(format!("{kind} template {}: {e}", path.display())))?;
            Ok(Some(text))
        };
        crate::http::scripts::check_template(&w.args).map_err(|e| fail(format!("args: {e}")))?;
        out.push(Profile {
            ipxe_template: read(&w.ipxe_template, "ipxe")?,
            grub_template: read(&w.grub_template, "grub")?,
            generic_template: read(&w.generic_template, "generic")?,
            name: w.name.clone(),
            kernel: w.kernel.clone(),
            initrd: w.initrd.clone(),
            args: w.args.clone(),
            vars: w.vars.clone(),
        });
    }
    let default_profile = match &w.default_profile {
        Some(d) if !out.iter().any(|p| &p.name == d.get_ref()) => {
            return Err(src.error(
                Some(d.span()),
                format!(
                    "http.default_profile {:?} is not a [[profile]]",
                    d.get_ref()
                ),
            ))
        }
        Some(d) => Some(d.get_ref().clone()),
        None => None,
    };
    Ok(HttpSettings {
        artifact_root,
        profiles: out,
        default_profile,
        limits,
    })
}

fn build_timeline(
    w: &wire::WireTimeline,
    src: Option<&SourceFile<'_>>,
) -> Result<(usize, Duration), ConfigError> {
    use crate::timeline::{MAX_MACHINES_DEFAULT, STUCK_AFTER_SECS_DEFAULT};
    let mut max = MAX_MACHINES_DEFAULT;
    let mut stuck = STUCK_AFTER_SECS_DEFAULT;
    if let Some(src) = src {
        if let Some(m) = &w.max_machines {
            if !(1..=1_000_000).contains(m.get_ref()) {
                return Err(src.error(
                    Some(m.span()),
                    format!(
                        "timeline.max_machines {} is outside 1..=1000000",
                        m.get_ref()
                    ),
                ));
            }
            max = *m.get_ref();
        }
        if let Some(s) = &w.stuck_after_secs {
            if !(1..=86_400).contains(s.get_ref()) {
                return Err(src.error(
                    Some(s.span()),
                    format!(
                        "timeline.stuck_after_secs {} is outside 1..=86400",
                        s.get_ref()
                    ),
                ));
            }
            stuck = *s.get_ref();
        }
    }
    Ok((max, Duration::from_secs(stuck)))
}

/// Every group's profile must exist.
fn check_profile_refs(
    boot: &BootSettings,
    http: &HttpSettings,
    src: &SourceFile<'_>,
) -> Result<(), ConfigError> {
    for g in &boot.groups {
        if let Some(p) = &g.profile {
            if !http.profiles.iter().any(|q| &q.name == p) {
                // The group's span is gone by now; find its name in the text for the line.
                let at = src.text.find(&format!("\"{}\"", g.name));
                return Err(src.error(
                    at.map(|a| a..a),
                    format!("group {:?}: profile {p:?} is not a [[profile]]", g.name),
                ));
            }
        }
    }
    Ok(())
}

fn build_boot(
    wire: wire::WireBoot,
    groups: Vec<Spanned<wire::WireGroup>>,
    src: Option<&SourceFile<'_>>,
) -> Result<BootSettings, ConfigError> {
    let Some(src) = src else {
        return Ok(BootSettings::default());
    };
    let http_base_url = match wire.http_base_url {
        Some(u) if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) => {
            return Err(src.error(
                Some(u.span()),
                format!(
                    "boot.http_base_url {:?} is not an http:// or https:// URL",
                    u.get_ref()
                ),
            ))
        }
        Some(u) => Some(u.into_inner()),
        None => None,
    };
    let mut arch_defaults = BTreeMap::new();
    for (key, file) in wire.arch {
        let arch: u16 = key.parse().map_err(|_| {
            src.error(Some(file.span()), format!("boot.arch key {key:?} is not an option-93 number (0 BIOS, 7 UEFI x64, 11 UEFI ARM64, ...)"))
        })?;
        arch_defaults.insert(arch, file.into_inner());
    }
    let mut out = Vec::new();
    for g in groups {
        let span = g.span();
        let w = g.into_inner();
        let fail =
            |reason: String| src.error(Some(span.clone()), format!("group {:?}: {reason}", w.name));
        let macs = w
            .mac
            .iter()
            .map(|m| m.parse::<MacAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let mac_prefixes = w
            .mac_prefix
            .iter()
            .map(|m| parse_mac_bytes(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let firmware = w
            .firmware
            .iter()
            .map(|f| {
                Firmware::from_label(f).ok_or_else(|| {
                    fail(format!(
                        "firmware {f:?} is not one of bios, uefi, uefi-http, ipxe"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if out.iter().any(|o: &Group| o.name == w.name) {
            return Err(fail("a group of that name exists already".into()));
        }
        out.push(Group {
            name: w.name.clone(),
            selectors: Selectors {
                macs,
                mac_prefixes,
                archs: w.arch.iter().map(|a| Arch(*a)).collect(),
                firmware,
                relays: w.relay.iter().map(|n| n.trunc()).collect(),
            },
            boot_file: w.boot_file,
            http_boot_file: w.http_boot_file,
            script: w.script,
            profile: w.profile,
            vars: w.vars,
        });
    }
    Ok(BootSettings {
        http_base_url,
        arch_defaults,
        groups: out,
    })
}

/// Validates `[tftp]` (all but `port_range`) with `--tftp-listen` on top.
fn build_tftp(
    wire: &wire::WireTftp,
    listen_flag: Option<SocketAddr>,
    src: Option<&SourceFile<'_>>,
) -> Result<TftpConfig, ConfigError> {
    let mut c = TftpConfig::default();
    // A numeric key within `range`, or its default; a refusal points at the value.
    let number = |value: &Option<Spanned<u64>>,
                  key: &str,
                  range: RangeInclusive<u64>|
     -> Result<Option<u64>, ConfigError> {
        match (value, src) {
            (Some(v), Some(src)) => {
                let n = *v.get_ref();
                if !range.contains(&n) {
                    return Err(Origin::File(src, v.span()).error(format!(
                        "tftp.{key} {n} is outside {}..={}",
                        range.start(),
                        range.end()
                    )));
                }
                Ok(Some(n))
            }
            _ => Ok(None),
        }
    };
    c.listen = match (listen_flag, &wire.listen, src) {
        (Some(addr), _, _) => addr,
        (None, Some(s), Some(src)) => s.get_ref().parse().map_err(|e| {
            Origin::File(src, s.span()).error(format!(
                "tftp.listen {:?} is not an address:port ({e})",
                s.get_ref()
            ))
        })?,
        _ => c.listen,
    };
    if let Some(n) = number(
        &wire.max_transfers,
        "max_transfers",
        1..=TFTP_MAX_TRANSFERS_LIMIT,
    )? {
        c.max_transfers = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let blksize = u64::from(crate::tftp::MIN_BLKSIZE)..=u64::from(crate::tftp::MAX_BLKSIZE);
    if let Some(n) = number(&wire.max_blksize, "max_blksize", blksize)? {
        c.max_blksize = u16::try_from(n).unwrap_or(u16::MAX);
    }
    if let Some(n) = number(
        &wire.max_windowsize,
        "max_windowsize",
        1..=TFTP_MAX_WINDOWSIZE_LIMIT,
    )? {
        c.max_windowsize = u16::try_from(n).unwrap_or(u16::MAX);
    }
    if let Some(n) = number(&wire.timeout_ms, "timeout_ms", TFTP_TIMEOUT_MS_RANGE)? {
        c.timeout = Duration::from_millis(n);
    }
    if let Some(n) = number(&wire.retries, "retries", TFTP_RETRIES_RANGE)? {
        c.retries = u8::try_from(n).unwrap_or(u8::MAX);
    }
    if let Some(n) = number(&wire.cache_bytes, "cache_bytes", 0..=TFTP_CACHE_BYTES_LIMIT)? {
        c.cache_bytes = n;
    }
    if let Some(src) = src {
        for r in &wire.rewrite {
            let w = r.get_ref();
            if let Err(reason) = crate::tftp::check_rewrite_template(&w.to) {
                return Err(src.error(
                    Some(r.span()),
                    format!("tftp.rewrite {:?}: {reason}", w.file),
                ));
            }
            let file = w.file.trim_start_matches('/').to_owned();
            c.rewrites.push((file, w.to.clone()));
        }
    }
    Ok(c)
}

/// Maximum length of a Linux interface name (IFNAMSIZ less the NUL).
const IFNAME_MAX_LEN: usize = 15;

fn validate_interface(name: String, origin: &Origin<'_>) -> Result<String, ConfigError> {
    if name.is_empty() || name.len() > IFNAME_MAX_LEN || name.contains(['/', ' ', '\0']) {
        return Err(origin.error(format!(
            "interface {name:?} is not a valid interface name (1-{IFNAME_MAX_LEN} characters, no '/' or spaces)"
        )));
    }
    Ok(name)
}

fn validate_root(dir: &Path, origin: &Origin<'_>) -> Result<PathBuf, ConfigError> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| origin.error(format!("boot root {}: {e}", dir.display())))?;
    if !canonical.is_dir() {
        return Err(origin.error(format!("boot root {} is not a directory", dir.display())));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/pxe/test.toml"), text, Overrides::default())
    }

    fn invalid(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line,
                column,
                reason,
                ..
            }) => (line, column, reason),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.http_listen, HTTP_LISTEN_DEFAULT.parse().unwrap());
        assert_eq!(c.tftp_ports, 30_000..=30_999);
        assert_eq!(c.xdp_mode, XdpModeSetting::Auto);
        assert_eq!(
            c.drain_timeout,
            Duration::from_secs(DRAIN_TIMEOUT_SECS_DEFAULT)
        );
        assert_eq!(c.interface, None);
        assert_eq!(c.tftp, TftpConfig::default());
        assert_eq!(c.tftp.listen, "0.0.0.0:69".parse().unwrap());
        assert_eq!(c.tftp.max_transfers, 10_000);
    }

    #[test]
    fn tftp_keys_are_read_and_checked() {
        let c = parse(
            "[tftp]\nlisten = \"127.0.0.1:6969\"\nmax_transfers = 5\nmax_blksize = 1432\n\
             max_windowsize = 8\ntimeout_ms = 250\nretries = 2\ncache_bytes = 0\n",
        )
        .unwrap();
        assert_eq!(
            c.tftp,
            TftpConfig {
                listen: "127.0.0.1:6969".parse().unwrap(),
                max_transfers: 5,
                max_blksize: 1432,
                max_windowsize: 8,
                timeout: Duration::from_millis(250),
                retries: 2,
                cache_bytes: 0,
                rewrites: Vec::new(),
            }
        );
        for (text, needle) in [
            (
                "[tftp]\n\nmax_blksize = 65465\n",
                "tftp.max_blksize 65465 is outside 8..=65464",
            ),
            ("[tftp]\n\nmax_blksize = 7\n", "outside"),
            ("[tftp]\n\nmax_transfers = 0\n", "tftp.max_transfers 0"),
            ("[tftp]\n\nmax_windowsize = 5000\n", "tftp.max_windowsize"),
            ("[tftp]\n\ntimeout_ms = 1\n", "tftp.timeout_ms"),
            ("[tftp]\n\nretries = 99\n", "tftp.retries"),
            (
                "[tftp]\n\nlisten = \"x\"\n",
                "tftp.listen \"x\" is not an address:port",
            ),
        ] {
            let (line, _, reason) = invalid(text);
            assert_eq!(line, 3, "{text}");
            assert!(reason.contains(needle), "{reason}");
        }
        let c = Config::from_toml(
            Path::new("/etc/pxe/test.toml"),
            "[tftp]\nlisten = \"127.0.0.1:6969\"\n",
            Overrides {
                tftp_listen: Some("127.0.0.2:69".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.tftp.listen, "127.0.0.2:69".parse().unwrap());
    }

    #[test]
    fn type_error_names_line_and_reason() {
        let (line, column, reason) = invalid("[server]\n\n[http]\nlisten = 42\n");
        assert_eq!((line, column), (4, 10));
        assert!(reason.contains("invalid type"), "{reason}");
    }

    #[test]
    fn tftp_rewrite_templates_are_checked() {
        let (line, _, reason) =
            invalid("[tftp]\n\n[[tftp.rewrite]]\nfile = \"a\"\nto = \"b/{serial}\"\n");
        assert_eq!(line, 3);
        assert!(reason.contains("placeholder"), "{reason}");
        let c =
            parse("[[tftp.rewrite]]\nfile = \"/a.cfg\"\nto = \"m/{mac_hexhyp}.cfg\"\n").unwrap();
        assert_eq!(
            c.tftp.rewrites,
            vec![("a.cfg".into(), "m/{mac_hexhyp}.cfg".into())]
        );
    }

    #[test]
    fn unknown_key_is_refused() {
        let (line, _, reason) = invalid("[tftp]\nport_rnage = [1, 2]\n");
        assert_eq!(line, 2);
        assert!(reason.contains("unknown field"), "{reason}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let (line, _, reason) = invalid("[tftp]\nport_range = [40000, 30000]\n");
        assert_eq!(line, 2);
        assert!(reason.contains("above the last"), "{reason}");

        let (line, _, reason) = invalid("\n[http]\nlisten = \"not an address\"\n");
        assert_eq!(line, 3);
        assert!(reason.contains("not an address:port"), "{reason}");

        let (line, _, reason) = invalid("[xdp]\nmode = \"turbo\"\n");
        assert_eq!(line, 2);
        assert!(reason.contains("unknown variant"), "{reason}");

        let (line, _, reason) = invalid("[server]\ninterface = \"a/b\"\n");
        assert_eq!(line, 2);
        assert!(reason.contains("not a valid interface name"), "{reason}");

        let (line, _, reason) = invalid("[server]\nroot = \"/nonexistent/boot\"\n");
        assert_eq!(line, 2);
        assert!(reason.contains("/nonexistent/boot"), "{reason}");
    }

    #[test]
    fn relative_root_is_relative_to_the_file_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        let file = dir.path().join("pxe.toml");
        let c = Config::from_toml(
            &file,
            "[server]\nroot = \"boot\"\ninterface = \"eth0\"\n",
            Overrides {
                interface: Some("eth1".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.root,
            Some(dir.path().join("boot").canonicalize().unwrap())
        );
        assert_eq!(c.interface.as_deref(), Some("eth1"));
    }

    #[test]
    fn bad_flag_names_the_flag() {
        let err = Config::load(
            None,
            Overrides {
                root: Some("/nonexistent/boot".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("--root: "), "{err}");
    }

    #[test]
    fn router_advertisements_from_file_and_flag() {
        let path = Path::new("/etc/pxe/pxe-daemon.toml");
        let c = Config::from_toml(path, "", Overrides::default()).unwrap();
        assert_eq!(c.ipv6_ra, RouterAdvertisement::Off);
        let text = "[ipv6]\nrouter_advertisement = \"no-router\"\n";
        let c = Config::from_toml(path, text, Overrides::default()).unwrap();
        assert_eq!(c.ipv6_ra, RouterAdvertisement::NoRouter);
        let flag = Overrides {
            ipv6_ra: Some(RouterAdvertisement::Off),
            ..Overrides::default()
        };
        assert_eq!(
            Config::from_toml(path, text, flag).unwrap().ipv6_ra,
            RouterAdvertisement::Off
        );
        let err = Config::from_toml(
            path,
            "[ipv6]\nrouter_advertisement = \"yes\"\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("/etc/pxe/pxe-daemon.toml:2:"), "{err}");
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pxe-daemon.toml");
        let c = Config::load(Some(&path), Overrides::default()).expect("example config is valid");
        assert!(c.root.is_some());
    }
}
