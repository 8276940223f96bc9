//! pxe-daemon: an XDP-accelerated network boot server.
//!
//! The library owns serving; `main` owns binding and signals (mini-redis style): [`run`] takes
//! already-bound [`Listeners`] and a shutdown future, so tests can bind where they like
//! (`tests/run.rs` runs it on loopback without root). [`daemon`] starts and stops the
//! subsystems; the module map is in docs/architecture.md.

pub mod afxdp;
pub mod boot;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod dhcp;
pub mod http;
pub mod metrics;
pub mod netif;
pub mod probe;
pub mod ra;
pub mod tftp;
pub mod timeline;
pub mod xdp;

use std::net::UdpSocket;

pub use config::Config;
pub use daemon::run;
use tokio::net::TcpListener;

/// Sockets bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP listener (scripts, artifacts, `/metrics`, `/healthz`).
    pub http: TcpListener,
    /// The DHCP sockets (67 and 4011), unless DHCP is off.
    pub dhcp: Option<dhcp::kernel::DhcpSockets>,
    /// The TFTP request listener (port 69); transfer ports are bound by the server.
    pub tftp: UdpSocket,
    /// The raw ICMPv6 socket for router advertisements, when they are on.
    pub ra: Option<ra::server::RaSocket>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration lacks something `run` needs.
    #[error("configuration: {0}")]
    Config(String),
    /// The metrics registry could not be built.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The lease journal could not be opened.
    #[error("lease journal: {0}")]
    Leases(#[from] dhcp::leases::StoreError),
    /// A directory for state could not be made.
    #[error("creating {path}: {source}")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A profile's template does not compile.
    #[error(transparent)]
    Template(#[from] http::scripts::TemplateError),
    /// The XDP program could not be loaded or attached in the required mode.
    #[error(transparent)]
    Xdp(#[from] xdp::XdpLoadError),
    /// The AF_XDP datapath was required (`--datapath xdp`) and could not start.
    #[error("AF_XDP datapath: {0}")]
    Datapath(String),
    /// The TFTP server could not start.
    #[error(transparent)]
    Tftp(#[from] tftp::ServerError),
    /// A subsystem ended before the shutdown: the daemon stops rather than serve half a boot.
    #[error("{subsystem} stopped: {reason}")]
    Stopped {
        /// Which one (`http`, `dhcp`, `tftp`, `ra`, `afxdp`).
        subsystem: &'static str,
        /// Its error, or that it ended without one.
        reason: String,
    },
    /// A server's thread could not start.
    #[error("starting the {name} thread: {source}")]
    Thread {
        /// The thread.
        name: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
}
