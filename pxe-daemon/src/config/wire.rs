//! The config file as written: every key optional, spans kept for error messages.
//!
//! [`super::Config`] is built from this with `TryFrom`; nothing outside `config` reads it.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{LogFormat, XdpModeSetting};

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
