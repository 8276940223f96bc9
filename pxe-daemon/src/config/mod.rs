//! Configuration: a TOML file (optional) plus command-line overrides, validated into [`Config`].
//!
//! Two tiers, as in dora: the file is read into a [`wire::WireConfig`] that mirrors what was
//! written (with spans), then [`Config::load`] builds the validated [`Config`] the daemon runs
//! with. Every refusal names the file, the line, the column and the reason ([`ConfigError`]).
//!
//! One file per table, each with that table's build function: `server.rs`, `http.rs`,
//! `tftp.rs`, `dhcp.rs`, `boot.rs` (`[boot]`, `[[group]]`, `[[profile]]`), `xdp.rs`, `log.rs`,
//! `timeline.rs`, `ipv6.rs`; `error.rs` turns a value's span (or flag) into the refusal. A
//! table one subsystem reads becomes that subsystem's `Settings`, with its defaults beside it
//! (`tftp::Settings`, `dhcp::Settings`, ...): config depends on the subsystems, never the other
//! way. The tables of the daemon itself (`[server]`, `[log]`) and `[xdp]` (shared by the XDP
//! program and the AF_XDP sockets) are config's own, of the subsystems' types.

mod boot;
mod dhcp;
mod error;
mod http;
mod ipv6;
mod log;
mod server;
mod tftp;
mod timeline;
pub mod wire;
mod xdp;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

pub use error::ConfigError;
pub use log::{LogFormat, LogSettings, LOG_LEVEL_DEFAULT};
pub use server::{ServerSettings, DRAIN_TIMEOUT_SECS_DEFAULT};
pub use tftp::{
    TFTP_CACHE_BYTES_LIMIT, TFTP_MAX_TRANSFERS_LIMIT, TFTP_MAX_WINDOWSIZE_LIMIT,
    TFTP_RETRIES_RANGE, TFTP_TIMEOUT_MS_RANGE,
};
use wire::WireConfig;
pub use xdp::{XdpSettings, XDP_RATE_BURST_DEFAULT, XDP_RATE_LIMIT_PPS_DEFAULT};

use self::{
    boot::{build_boot, build_profiles, check_profile_refs},
    dhcp::build_dhcp,
    error::{Origin, SourceFile},
    http::build_http,
    ipv6::build_ipv6,
    log::build_log,
    server::build_server,
    tftp::build_tftp,
    timeline::build_timeline,
    xdp::build_xdp,
};
use crate::{dhcp::DhcpMode, ra::RouterAdvertisement};

/// The validated configuration the daemon runs with: one field per table of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[http]` and the `[[profile]]`s.
    pub http: crate::http::Settings,
    /// `[tftp]`.
    pub tftp: crate::tftp::Settings,
    /// `[dhcp]`.
    pub dhcp: crate::dhcp::Settings,
    /// `[boot]` and the `[[group]]`s.
    pub boot: crate::boot::Settings,
    /// `[xdp]`.
    pub xdp: XdpSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[timeline]`.
    pub timeline: crate::timeline::Settings,
    /// `[ipv6]`: router advertisements on the boot interface.
    pub ipv6: crate::ra::Settings,
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
    pub xdp_mode: Option<crate::xdp::AttachPolicy>,
    /// `--datapath`.
    pub datapath: Option<crate::datapath::Choice>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--dhcp-mode`.
    pub dhcp_mode: Option<DhcpMode>,
    /// `--ipv6-ra`.
    pub ipv6_ra: Option<RouterAdvertisement>,
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
        let profiles = build_profiles(profile, src)?;
        let http = build_http(
            &http,
            profiles,
            server.root.as_deref(),
            overrides.http_listen,
            src,
        )?;
        let tftp = build_tftp(&tftp, overrides.tftp_listen, src)?;
        let xdp = build_xdp(xdp, overrides.xdp_mode, src)?;
        let log = build_log(log, overrides.log_level, overrides.log_format, src)?;
        let ipv6 = build_ipv6(ipv6, overrides.ipv6_ra, src);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            crate::http::settings::HTTP_LISTEN_DEFAULT.parse().unwrap()
        );
        assert_eq!(c.tftp.ports, 30_000..=30_999);
        assert_eq!(c.xdp.mode, crate::xdp::AttachPolicy::Auto);
        assert_eq!(
            c.server.drain_timeout,
            Duration::from_secs(DRAIN_TIMEOUT_SECS_DEFAULT)
        );
        assert_eq!(c.server.interface, None);
        assert_eq!(c.tftp, crate::tftp::Settings::default());
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
            crate::tftp::Settings {
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
