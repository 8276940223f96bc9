//! Configuration: a TOML file (optional) plus command-line overrides, validated into [`Config`].
//!
//! Two tiers, as in dora: the file is read into a [`wire::WireConfig`] that mirrors what was
//! written (with spans), then `TryFrom` turns it into the validated [`Config`] the daemon runs
//! with. Every refusal names the file, the line and the reason.

pub mod wire;

use std::{
    fmt,
    net::SocketAddr,
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use pxe_common::{TFTP_TRANSFER_PORT_MAX_DEFAULT, TFTP_TRANSFER_PORT_MIN_DEFAULT};
use serde::Deserialize;
use toml::Spanned;

use wire::WireConfig;

/// Default HTTP listener: every address, port 80 (what a datacenter's boot network expects).
pub const HTTP_LISTEN_DEFAULT: &str = "0.0.0.0:80";
/// Default seconds given to open transfers to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT_SECS_DEFAULT: u64 = 10;
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
    /// Time given to open transfers after a shutdown signal.
    pub drain_timeout: Duration,
    /// Log filter directives.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
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
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
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

        Ok(Config {
            interface,
            root,
            http_listen,
            tftp_ports,
            tftp: tftp_settings,
            xdp_mode,
            drain_timeout: Duration::from_secs(drain_timeout_secs),
            log_level,
            log_format,
        })
    }
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
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pxe-daemon.toml");
        let c = Config::load(Some(&path), Overrides::default()).expect("example config is valid");
        assert!(c.root.is_some());
    }
}
