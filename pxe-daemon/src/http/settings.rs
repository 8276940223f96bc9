//! `[http]` and the `[[profile]]`s: what the HTTP server is told, with its defaults (config
//! builds it).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::scripts::Profile;

/// Default HTTP listener: every address, port 80 (what a datacenter's boot network expects).
pub const HTTP_LISTEN_DEFAULT: &str = "0.0.0.0:80";
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

/// The HTTP server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Address of the listener.
    pub listen: SocketAddr,
    /// Artifact root (absolute, canonical); default: the boot root.
    pub artifact_root: Option<PathBuf>,
    /// Profiles, with their template sources read in.
    pub profiles: Vec<Profile>,
    /// Profile for machines no group gives one.
    pub default_profile: Option<String>,
    /// Limits.
    pub limits: HttpLimits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: HTTP_LISTEN_DEFAULT
                .parse()
                .expect("HTTP_LISTEN_DEFAULT is a valid socket address"),
            artifact_root: None,
            profiles: Vec::new(),
            default_profile: None,
            limits: HttpLimits::default(),
        }
    }
}

/// Limits of the HTTP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most; more get a 503.
    pub max_connections: usize,
    /// Time a client gets to send a request's headers (slowloris guard).
    pub header_timeout: Duration,
    /// Cut a connection when no byte moves either way for this long.
    pub idle_timeout: Duration,
    /// Headers per request at most.
    pub max_headers: usize,
    /// Bytes of a request head at most.
    pub max_head_bytes: usize,
    /// Per-connection send rate cap, bytes per second.
    pub rate_bytes_per_sec: Option<u64>,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: HTTP_MAX_CONNECTIONS_DEFAULT,
            header_timeout: Duration::from_secs(HTTP_HEADER_TIMEOUT_SECS_DEFAULT),
            idle_timeout: Duration::from_secs(HTTP_IDLE_TIMEOUT_SECS_DEFAULT),
            max_headers: HTTP_MAX_HEADERS_DEFAULT,
            max_head_bytes: HTTP_MAX_HEAD_BYTES_DEFAULT,
            rate_bytes_per_sec: None,
        }
    }
}
