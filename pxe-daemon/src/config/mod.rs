//! Configuration: a TOML file (optional) plus command-line overrides, validated into [`Config`].
//!
//! Two tiers, as in dora: the file is read into a [`wire::WireConfig`] that mirrors what was
//! written (with spans), then `TryFrom` turns it into the validated [`Config`] the daemon runs
//! with. Every refusal names the file, the line and the reason.

pub mod wire;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use wire::WireConfig;

use crate::{
    afxdp, boot,
    boot::{parse_mac_bytes, Arch, Firmware, Group, MacAddr, Selectors},
    datapath, dhcp,
    dhcp::{
        settings::{LEASE_FILE_DEFAULT, LEASE_TIME_SECS_DEFAULT},
        DhcpMode, Reservation, SubnetConfig,
    },
    http,
    http::scripts::Profile,
    ra,
    ra::RouterAdvertisement,
    tftp, timeline, xdp,
};

/// Default seconds given to open transfers to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT_SECS_DEFAULT: u64 = 10;
/// Default DHCP/4011 frames per second per client MAC: far above what a booting machine sends
/// (a handful per boot stage), far below a flood.
pub const XDP_RATE_LIMIT_PPS_DEFAULT: u32 = 20;
/// Default burst above the rate.
pub const XDP_RATE_BURST_DEFAULT: u32 = 40;
/// Default log filter.
pub const LOG_LEVEL_DEFAULT: &str = "info";
/// Most `tftp.max_transfers` may be.
pub const TFTP_MAX_TRANSFERS_LIMIT: u64 = 1_000_000;
/// Most `tftp.max_windowsize` may be: a window stays far below the 65536 block numbers.
pub const TFTP_MAX_WINDOWSIZE_LIMIT: u64 = 1024;
/// Allowed `tftp.timeout_ms`.
pub const TFTP_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 10..=255_000;
/// Allowed `tftp.retries`.
pub const TFTP_RETRIES_RANGE: RangeInclusive<u64> = 0..=50;
/// Most `tftp.cache_bytes` may be: 16 GiB.
pub const TFTP_CACHE_BYTES_LIMIT: u64 = 16 << 30;

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

/// `[server]`: what the daemon itself is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Interface facing the machines to boot; `run` refuses to start without one.
    pub interface: Option<String>,
    /// Boot root (an existing directory, made absolute).
    pub root: Option<PathBuf>,
    /// Which datapath serves DHCP and TFTP.
    pub datapath: datapath::Choice,
    /// Time given to open transfers after a shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            interface: None,
            root: None,
            datapath: datapath::Choice::default(),
            drain_timeout: Duration::from_secs(DRAIN_TIMEOUT_SECS_DEFAULT),
        }
    }
}

/// `[xdp]`: the XDP program's and the AF_XDP sockets' settings (two subsystems share the
/// table, so config holds it, of their types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpSettings {
    /// How to attach the XDP program.
    pub mode: xdp::AttachPolicy,
    /// How AF_XDP sockets bind (zero-copy or copy).
    pub bind: afxdp::BindMode,
    /// DHCP and 4011 frames per second one client MAC may send before the XDP program drops
    /// them (0: no limit).
    pub rate_limit_pps: u32,
    /// Frames a client may send in a burst above its rate.
    pub rate_burst: u32,
}

impl Default for XdpSettings {
    fn default() -> XdpSettings {
        XdpSettings {
            mode: xdp::AttachPolicy::default(),
            bind: afxdp::BindMode::default(),
            rate_limit_pps: XDP_RATE_LIMIT_PPS_DEFAULT,
            rate_burst: XDP_RATE_BURST_DEFAULT,
        }
    }
}

/// `[log]`: what `main` sets logging up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Log filter directives.
    pub level: String,
    /// Log format.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            level: LOG_LEVEL_DEFAULT.to_owned(),
            format: LogFormat::default(),
        }
    }
}

/// The validated configuration the daemon runs with: one field per table of the file. A table
/// one subsystem reads is that subsystem's `Settings`, built here; the tables of the daemon
/// itself (`[server]`, `[log]`) and `[xdp]` (the program and the AF_XDP sockets) are config's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[http]` and the `[[profile]]`s.
    pub http: http::Settings,
    /// `[tftp]`.
    pub tftp: tftp::Settings,
    /// `[dhcp]`.
    pub dhcp: dhcp::Settings,
    /// `[boot]` and the `[[group]]`s.
    pub boot: boot::Settings,
    /// `[xdp]`.
    pub xdp: XdpSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[timeline]`.
    pub timeline: timeline::Settings,
    /// `[ipv6]`: router advertisements on the boot interface.
    pub ipv6: ra::Settings,
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
    pub xdp_mode: Option<xdp::AttachPolicy>,
    /// `--datapath`.
    pub datapath: Option<datapath::Choice>,
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

        let server = build_server(server, &overrides, src)?;
        let http = build_http(
            &http,
            profile,
            server.root.as_deref(),
            overrides.http_listen,
            src,
        )?;
        let tftp = build_tftp(&tftp, overrides.tftp_listen, src)?;
        let xdp = build_xdp(xdp, overrides.xdp_mode, src)?;
        let log = build_log(log, overrides.log_level, overrides.log_format, src)?;
        let ipv6 = ra::Settings {
            router_advertisement: pick(
                overrides.ipv6_ra,
                "--ipv6-ra",
                ipv6.router_advertisement,
                src,
            )
            .map(|(ra, _)| ra)
            .unwrap_or_default(),
        };
        let dhcp = build_dhcp(dhcp, src, overrides.dhcp_mode)?;
        let boot = build_boot(boot, group, src)?;
        if let Some(src) = src {
            check_profile_refs(&boot, &http, src)?;
        }
        let timeline = build_timeline(&timeline, src)?;

        Ok(Config {
            server,
            http,
            tftp,
            dhcp,
            boot,
            xdp,
            log,
            timeline,
            ipv6,
        })
    }
}

/// Picks the flag if given, else the file's value with its origin.
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

/// Validates `[server]` with `--interface`, `--root` and `--datapath` on top.
fn build_server(
    server: wire::WireServer,
    overrides: &Overrides,
    src: Option<&SourceFile<'_>>,
) -> Result<ServerSettings, ConfigError> {
    let interface = match pick(
        overrides.interface.clone(),
        "--interface",
        server.interface,
        src,
    ) {
        Some((name, origin)) => Some(validate_interface(name, &origin)?),
        None => None,
    };

    let root = match pick(overrides.root.clone(), "--root", server.root, src) {
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

    let datapath = pick(overrides.datapath, "--datapath", server.datapath, src)
        .map(|(d, _)| d)
        .unwrap_or_default();

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

    Ok(ServerSettings {
        interface,
        root,
        datapath,
        drain_timeout: Duration::from_secs(drain_timeout_secs),
    })
}

/// Validates `[xdp]` with `--xdp-mode` on top.
fn build_xdp(
    xdp: wire::WireXdp,
    mode_flag: Option<xdp::AttachPolicy>,
    src: Option<&SourceFile<'_>>,
) -> Result<XdpSettings, ConfigError> {
    let mode = pick(mode_flag, "--xdp-mode", xdp.mode, src)
        .map(|(m, _)| m)
        .unwrap_or_default();
    let bind = xdp.bind.map(Spanned::into_inner).unwrap_or_default();
    let rate_limit_pps = xdp
        .rate_limit_pps
        .map_or(XDP_RATE_LIMIT_PPS_DEFAULT, Spanned::into_inner);
    let rate_burst = match (xdp.rate_burst, src) {
        (Some(b), Some(src)) if *b.get_ref() > 1_000_000 => {
            return Err(Origin::File(src, b.span())
                .error(format!("xdp.rate_burst {} is above 1000000", b.get_ref())))
        }
        (Some(b), _) => b.into_inner(),
        (None, _) => XDP_RATE_BURST_DEFAULT,
    };
    Ok(XdpSettings {
        mode,
        bind,
        rate_limit_pps,
        rate_burst,
    })
}

/// Validates `[log]` with `--log-level` and `--log-format` on top.
fn build_log(
    log: wire::WireLog,
    level_flag: Option<String>,
    format_flag: Option<LogFormat>,
    src: Option<&SourceFile<'_>>,
) -> Result<LogSettings, ConfigError> {
    let level = match pick(level_flag, "--log-level", log.level, src) {
        Some((level, origin)) => {
            tracing_subscriber::EnvFilter::builder()
                .parse(&level)
                .map_err(|e| origin.error(format!("log level {level:?}: {e}")))?;
            level
        }
        None => LOG_LEVEL_DEFAULT.to_owned(),
    };
    let format = pick(format_flag, "--log-format", log.format, src)
        .map(|(f, _)| f)
        .unwrap_or_default();
    Ok(LogSettings { level, format })
}

/// Validates `[dhcp]` with `--dhcp-mode` on top.
fn build_dhcp(
    wire: wire::WireDhcp,
    src: Option<&SourceFile<'_>>,
    mode_flag: Option<DhcpMode>,
) -> Result<dhcp::Settings, ConfigError> {
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
    Ok(dhcp::Settings {
        mode,
        server_address: wire.server_address,
        reply_delay: Duration::from_millis(reply_delay_ms),
        ignore_macs,
        lease_file,
        subnets,
        reservations,
    })
}

/// Validates `[http]` and the `[[profile]]`s with `--http-listen` on top.
fn build_http(
    w: &wire::WireHttp,
    profiles: Vec<Spanned<wire::WireProfile>>,
    boot_root: Option<&Path>,
    listen_flag: Option<SocketAddr>,
    src: Option<&SourceFile<'_>>,
) -> Result<http::Settings, ConfigError> {
    let mut settings = http::Settings {
        artifact_root: boot_root.map(Path::to_path_buf),
        ..http::Settings::default()
    };
    settings.listen = match (listen_flag, &w.listen, src) {
        (Some(addr), _, _) => addr,
        (None, Some(s), Some(src)) => s.get_ref().parse().map_err(|e| {
            Origin::File(src, s.span()).error(format!(
                "http.listen {:?} is not an address:port ({e})",
                s.get_ref()
            ))
        })?,
        _ => settings.listen,
    };
    let Some(src) = src else {
        return Ok(settings);
    };
    let limits = &mut settings.limits;
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
    if let Some(dir) = &w.artifact_root {
        let origin = Origin::File(src, dir.span());
        let path = config_dir.join(dir.get_ref());
        settings.artifact_root = Some(validate_root(&path, &origin)?);
    }
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
            http::scripts::check_template(&text)
                .map_err(|e| fail(format!("{kind} template {}: {e}", path.display())))?;
            Ok(Some(text))
        };
        http::scripts::check_template(&w.args).map_err(|e| fail(format!("args: {e}")))?;
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
    settings.default_profile = match &w.default_profile {
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
    settings.profiles = out;
    Ok(settings)
}

/// Validates `[timeline]`.
fn build_timeline(
    w: &wire::WireTimeline,
    src: Option<&SourceFile<'_>>,
) -> Result<timeline::Settings, ConfigError> {
    let mut settings = timeline::Settings::default();
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
            settings.max_machines = *m.get_ref();
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
            settings.stuck_after = Duration::from_secs(*s.get_ref());
        }
    }
    Ok(settings)
}

/// Every group's profile must exist.
fn check_profile_refs(
    boot: &boot::Settings,
    http: &http::Settings,
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

/// Validates `[boot]` and the `[[group]]`s.
fn build_boot(
    wire: wire::WireBoot,
    groups: Vec<Spanned<wire::WireGroup>>,
    src: Option<&SourceFile<'_>>,
) -> Result<boot::Settings, ConfigError> {
    let Some(src) = src else {
        return Ok(boot::Settings::default());
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
    Ok(boot::Settings {
        http_base_url,
        arch_defaults,
        groups: out,
    })
}

/// Validates `[tftp]` with `--tftp-listen` on top.
fn build_tftp(
    wire: &wire::WireTftp,
    listen_flag: Option<SocketAddr>,
    src: Option<&SourceFile<'_>>,
) -> Result<tftp::Settings, ConfigError> {
    let mut c = tftp::Settings::default();
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
    let blksize = u64::from(tftp::MIN_BLKSIZE)..=u64::from(tftp::MAX_BLKSIZE);
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
            if let Err(reason) = tftp::check_rewrite_template(&w.to) {
                return Err(src.error(
                    Some(r.span()),
                    format!("tftp.rewrite {:?}: {reason}", w.file),
                ));
            }
            let file = w.file.trim_start_matches('/').to_owned();
            c.rewrites.push((file, w.to.clone()));
        }
    }
    if let (Some(s), Some(src)) = (&wire.port_range, src) {
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
        c.ports = first..=last;
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
        assert_eq!(
            c.http.listen,
            http::settings::HTTP_LISTEN_DEFAULT.parse().unwrap()
        );
        assert_eq!(c.tftp.ports, 30_000..=30_999);
        assert_eq!(c.xdp.mode, xdp::AttachPolicy::Auto);
        assert_eq!(
            c.server.drain_timeout,
            Duration::from_secs(DRAIN_TIMEOUT_SECS_DEFAULT)
        );
        assert_eq!(c.server.interface, None);
        assert_eq!(c.tftp, tftp::Settings::default());
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
            tftp::Settings {
                listen: "127.0.0.1:6969".parse().unwrap(),
                ports: 30_000..=30_999,
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
            c.server.root,
            Some(dir.path().join("boot").canonicalize().unwrap())
        );
        assert_eq!(c.server.interface.as_deref(), Some("eth1"));
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
        assert_eq!(c.ipv6.router_advertisement, RouterAdvertisement::Off);
        let text = "[ipv6]\nrouter_advertisement = \"no-router\"\n";
        let c = Config::from_toml(path, text, Overrides::default()).unwrap();
        assert_eq!(c.ipv6.router_advertisement, RouterAdvertisement::NoRouter);
        let flag = Overrides {
            ipv6_ra: Some(RouterAdvertisement::Off),
            ..Overrides::default()
        };
        assert_eq!(
            Config::from_toml(path, text, flag)
                .unwrap()
                .ipv6
                .router_advertisement,
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
        assert!(c.server.root.is_some());
    }
}
