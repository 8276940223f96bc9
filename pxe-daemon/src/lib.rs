//! pxe-daemon: an XDP-accelerated network boot server.
//!
//! The library owns serving; `main` owns binding and signals (mini-redis style): [`run`] takes
//! already-bound [`Listeners`] and a shutdown future, so tests can bind where they like.

pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod tftp;
pub mod xdp;

use std::{future::Future, sync::Arc};

use std::net::UdpSocket;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

/// Sockets bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP listener (scripts, artifacts, `/metrics`, `/healthz`).
    pub http: TcpListener,
    /// The TFTP request listener (port 69); transfer ports are bound by the server.
    pub tftp: UdpSocket,
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
    /// The XDP program could not be loaded or attached in the required mode.
    #[error(transparent)]
    Xdp(#[from] xdp::XdpLoadError),
    /// The TFTP server could not start.
    #[error(transparent)]
    Tftp(#[from] tftp::ServerError),
}

/// MTU assumed when the interface's cannot be read.
const MTU_FALLBACK: u32 = 1500;

/// The MTU of `interface` (from sysfs), or [`MTU_FALLBACK`] with a warning.
fn interface_mtu(interface: &str) -> u32 {
    let path = format!("/sys/class/net/{interface}/mtu");
    match std::fs::read_to_string(&path).map(|s| s.trim().parse::<u32>()) {
        Ok(Ok(mtu)) => mtu,
        other => {
            tracing::warn!(
                interface,
                ?other,
                fallback = MTU_FALLBACK,
                "cannot read the interface MTU"
            );
            MTU_FALLBACK
        }
    }
}

/// Runs the daemon until `shutdown` completes, then drains for at most `config.drain_timeout`
/// and detaches the XDP program.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let interface = config.interface.clone().ok_or_else(|| {
        RunError::Config("no interface: give --interface or server.interface".into())
    })?;
    let root = config.root.clone().ok_or_else(|| {
        RunError::Config(
            "no boot root: TFTP serves files from it; give --root or server.root".into(),
        )
    })?;
    let metrics = metrics::Metrics::new()?;

    // The program's debug records cost a ring-buffer write per malformed frame: only when shown.
    let debug_log = tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG;
    let xdp = xdp::XdpAttachment::load(&interface, config.xdp_mode, &config.tftp_ports, debug_log)?;
    if let Some(xdp) = &xdp {
        metrics.set_xdp_attach_mode(xdp.mode());
        metrics.register(Box::new(xdp.counters()))?;
    }

    let token = CancellationToken::new();
    let tftp_metrics = tftp::TftpMetrics::register(&metrics)?;
    let tftp = tftp::Server::new(
        tftp::ServerSettings {
            config: &config.tftp,
            ports: config.tftp_ports.clone(),
            root: &root,
            mtu: interface_mtu(&interface),
            mapper: Arc::new(tftp::AsRequested),
        },
        listeners.tftp,
        tftp_metrics,
    )?;
    let tftp_thread = tftp.spawn(token.child_token(), config.drain_timeout)?;
    let state = Arc::new(http::HttpState {
        metrics: metrics.clone(),
    });
    let http_task = tokio::spawn(http::serve(
        listeners.http,
        state,
        token.child_token(),
        config.drain_timeout,
    ));

    info!(
        interface,
        root = ?config.root,
        http = %config.http_listen,
        tftp = %config.tftp.listen,
        "pxe-daemon running"
    );
    shutdown.await;
    info!(drain = ?config.drain_timeout, "shutting down");
    token.cancel();
    if let Err(e) = http_task.await {
        tracing::error!(error = %e, "HTTP task failed");
    }
    match tokio::task::spawn_blocking(move || tftp_thread.join()).await {
        Ok(Ok(())) => {}
        _ => tracing::error!("TFTP thread failed"),
    }
    drop(xdp);
    info!("pxe-daemon stopped");
    Ok(())
}
