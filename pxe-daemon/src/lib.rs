//! pxe-daemon: an XDP-accelerated network boot server.
//!
//! The library owns serving; `main` owns binding and signals (mini-redis style): [`run`] takes
//! already-bound [`Listeners`] and a shutdown future, so tests can bind where they like.

pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod xdp;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

/// Sockets bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP listener (scripts, artifacts, `/metrics`, `/healthz`).
    pub http: TcpListener,
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
    let metrics = metrics::Metrics::new()?;

    // The program's debug records cost a ring-buffer write per malformed frame: only when shown.
    let debug_log = tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG;
    let xdp = xdp::XdpAttachment::load(&interface, config.xdp_mode, &config.tftp_ports, debug_log)?;
    if let Some(xdp) = &xdp {
        metrics.set_xdp_attach_mode(xdp.mode());
        metrics.register(Box::new(xdp.counters()))?;
    }

    let token = CancellationToken::new();
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
        "pxe-daemon running"
    );
    shutdown.await;
    info!(drain = ?config.drain_timeout, "shutting down");
    token.cancel();
    if let Err(e) = http_task.await {
        tracing::error!(error = %e, "HTTP task failed");
    }
    drop(xdp);
    info!("pxe-daemon stopped");
    Ok(())
}
