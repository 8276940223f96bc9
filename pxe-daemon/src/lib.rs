//! pxe-daemon: an XDP-accelerated network boot server.
//!
//! The library owns serving; `main` owns binding and signals (mini-redis style): [`run`] takes
//! already-bound [`Listeners`] and a shutdown future, so tests can bind where they like.

pub mod afxdp;
pub mod boot;
pub mod cli;
pub mod config;
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

use std::{future::Future, sync::Arc};

use std::net::UdpSocket;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

/// Sockets bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP listener (scripts, artifacts, `/metrics`, `/healthz`).
    pub http: TcpListener,
    /// The DHCP sockets (67 and 4011), unless DHCP is off.
    pub dhcp: Option<dhcp::server::DhcpSockets>,
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
    /// A server's thread could not start.
    #[error("starting the {name} thread: {source}")]
    Thread {
        /// The thread.
        name: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
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
    let program_config = xdp::program_config(
        &config.tftp_ports,
        config
            .dhcp
            .server_address
            .or_else(|| netif::ipv4_of(&interface)),
        config.dhcp.mode == config::DhcpMode::Full,
        config.xdp_rate_limit_pps,
        config.xdp_rate_burst,
    );
    let mut xdp = xdp::XdpAttachment::load(&interface, config.xdp_mode, program_config, debug_log)?;
    if let Some(xdp) = &xdp {
        metrics.set_xdp_attach_mode(xdp.mode());
        metrics.register(Box::new(xdp.counters()))?;
    }

    let token = CancellationToken::new();
    let policy = Arc::new(boot::BootPolicy::new(
        config.root.as_deref(),
        config.boot.arch_defaults.clone(),
        config.boot.groups.clone(),
        config.boot.http_base_url.clone(),
        config.http_listen.port(),
    ));
    let timeline = timeline::Timeline::new(
        policy.clone(),
        timeline::TimelineMetrics::new(metrics.registry())?,
        config.timeline_max_machines,
        config.timeline_stuck_after,
    );
    metrics.register(Box::new(timeline::CensusCollector::new(timeline.clone())?))?;
    let tftp_metrics = tftp::TftpMetrics::register(&metrics)?;
    let mtu = netif::mtu(&interface);
    // One file store (and cache of hot boot files) for both datapaths.
    let files = tftp::open_files(&root, config.tftp.cache_bytes)?;
    let tftp_mapper: Arc<dyn tftp::PathMapper> = Arc::new(tftp::PolicyMapper::new(
        root.clone(),
        config.tftp.rewrites.clone(),
        policy.clone(),
    ));
    let server_address = config
        .dhcp
        .server_address
        .or_else(|| netif::ipv4_of(&interface));
    let (handler, dhcp_sockets) = match listeners.dhcp {
        Some(sockets) => {
            let server = server_address.ok_or_else(|| {
                RunError::Config(format!(
                    "interface {interface} has no IPv4 address to announce as DHCP server: \
                     give it one or set dhcp.server_address"
                ))
            })?;
            let (mode, commit) = match config.dhcp.mode {
                config::DhcpMode::Full => {
                    let (full, store) = open_full_dhcp(&config, &metrics).await?;
                    (dhcp::Mode::Full(Box::new(full)), Some(lease_commit(store)))
                }
                _ => (dhcp::Mode::Proxy, None),
            };
            let core = dhcp::DhcpCore::new(
                mode,
                policy.clone(),
                server,
                config.dhcp.ignore_macs.clone(),
            );
            let dhcp_metrics = dhcp::metrics::DhcpMetrics::new(metrics.registry())?;
            let options = dhcp::server::ServeOptions {
                reply_delay: config.dhcp.reply_delay,
                timeline: Some(timeline.clone()),
            };
            info!(%server, mode = ?config.dhcp.mode, "DHCP server address");
            let handler = dhcp::server::RequestHandler::new(core, dhcp_metrics, commit, options);
            (Some(handler), Some(sockets))
        }
        None => (None, None),
    };
    let tftp_settings = tftp::ServerSettings {
        config: &config.tftp,
        ports: config.tftp_ports.clone(),
        files,
        mtu,
        mapper: tftp_mapper,
        timeline: Some(timeline.clone()),
    };
    let xdp_tftp = tftp_settings.table(config.tftp_ports.len(), tftp_metrics.clone());
    let (afxdp, handler) = match start_afxdp(
        &config,
        &interface,
        server_address,
        xdp.as_mut(),
        handler,
        xdp_tftp,
        &metrics,
    )? {
        // The kernel DHCP sockets are not needed: DHCP frames are steered to AF_XDP.
        Ok(datapath) => (Some(datapath), None),
        Err(handler) => (None, handler),
    };
    let dhcp_task = match (handler, dhcp_sockets) {
        (Some(handler), Some(sockets)) => Some(
            spawn_on_own_thread(
                "pxe-dhcp",
                dhcp::server::serve(handler, sockets, token.child_token()),
            )
            .map_err(|source| RunError::Thread {
                name: "pxe-dhcp",
                source,
            })?,
        ),
        _ => None,
    };

    let ra_task = match listeners.ra {
        Some(socket) => {
            let ra_metrics = ra::metrics::RaMetrics::new(metrics.registry())?;
            Some(tokio::spawn(ra::server::serve(
                socket,
                ra_metrics,
                token.child_token(),
            )))
        }
        None => None,
    };

    // Also beside the AF_XDP datapath: it answers what is not steered (other addresses of
    // the host, queues without a socket).
    let tftp = tftp::Server::new(tftp_settings, listeners.tftp, tftp_metrics)?;
    let tftp_thread = tftp.spawn(token.child_token(), config.drain_timeout)?;
    let state = Arc::new(http::HttpState {
        metrics: metrics.clone(),
        http_metrics: http::metrics::HttpMetrics::new(metrics.registry())?,
        artifact_root: config.http.artifact_root.clone(),
        scripts: http::scripts::Scripts::new(
            config.http.profiles.clone(),
            config.http.default_profile.clone(),
            policy.clone(),
        )?,
        base_url: config.boot.http_base_url.clone(),
        limits: config.http.limits.clone(),
        timeline: Some(timeline.clone()),
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
    if let Some(datapath) = afxdp {
        // Steering off first: no frame may be steered to a socket that is closing.
        if let Some(xdp) = xdp.as_mut() {
            if let Err(e) = xdp.set_steering(0) {
                tracing::error!(error = %e, "clearing XDP steering");
            }
        }
        datapath.stop(xdp.as_mut(), AFXDP_STOP_TIMEOUT).await;
    }
    token.cancel();
    if let Err(e) = http_task.await {
        tracing::error!(error = %e, "HTTP task failed");
    }
    if let Some(task) = dhcp_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "DHCP server failed"),
            Err(e) => tracing::error!(error = %e, "DHCP task failed"),
        }
    }
    if let Some(task) = ra_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "router advertisements failed"),
            Err(e) => tracing::error!(error = %e, "router advertisement task failed"),
        }
    }
    match tokio::task::spawn_blocking(move || tftp_thread.join()).await {
        Ok(Ok(())) => {}
        _ => tracing::error!("TFTP thread failed"),
    }
    drop(xdp);
    info!("pxe-daemon stopped");
    Ok(())
}

/// Longest wait for the AF_XDP thread to stop (it polls with a 50 ms timeout).
const AFXDP_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the AF_XDP datapath when `config.datapath` asks for it: sockets on every queue, the
/// DHCP service (when DHCP runs) and the TFTP service on the datapath thread, then steering
/// on. Returns the DHCP handler back (`Ok(Err(handler))`) when everything stays on kernel
/// sockets: `kernel`, or `auto` where AF_XDP does not work (with a warning). With `xdp`, a
/// failure is an error.
fn start_afxdp(
    config: &Config,
    interface: &str,
    address: Option<std::net::Ipv4Addr>,
    xdp: Option<&mut xdp::XdpAttachment>,
    handler: Option<dhcp::server::RequestHandler>,
    tftp: tftp::table::TableSettings,
    metrics: &metrics::Metrics,
) -> Result<Result<afxdp::AfXdp, Option<dhcp::server::RequestHandler>>, RunError> {
    let required = match config.datapath {
        config::DatapathSetting::Kernel => return Ok(Err(handler)),
        config::DatapathSetting::Xdp => true,
        config::DatapathSetting::Auto => false,
    };
    let fail = |handler, reason: String| {
        if required {
            Err(RunError::Datapath(reason))
        } else {
            tracing::warn!(
                interface,
                reason,
                "AF_XDP datapath not available; DHCP and TFTP on kernel sockets"
            );
            metrics.set_datapath(metrics::Datapath::Kernel);
            Ok(Err(handler))
        }
    };
    let Some(xdp) = xdp else {
        return fail(
            handler,
            format!("the XDP program is not attached to {interface} (xdp.mode = off, or attaching failed)"),
        );
    };
    let Some(address) = address else {
        return fail(
            handler,
            format!("interface {interface} has no IPv4 address to send from (or set dhcp.server_address)"),
        );
    };
    let waker = match afxdp::Waker::new() {
        Ok(w) => w,
        Err(e) => return fail(handler, format!("eventfd: {e}")),
    };
    let afxdp_metrics = afxdp::AfxdpMetrics::new(metrics.registry())?;
    let settings = afxdp::Settings {
        interface: interface.to_owned(),
        address,
        mtu: netif::mtu(interface),
        bind: config.xsk_bind,
    };
    // Sockets first: if they do not bind, the handler is still here for the kernel path.
    let bound = match afxdp::BoundSockets::bind(&settings, xdp) {
        Ok(b) => b,
        Err(e) => return fail(handler, e.to_string()),
    };
    let mut services: Vec<afxdp::BoxedService> = Vec::new();
    let mut steering = pxe_common::XDP_FLAG_STEER_TFTP;
    if let Some(handler) = handler {
        services.push(Box::new(dhcp::frames::DhcpFrameService::new(
            handler,
            waker.clone(),
        )));
        steering |= pxe_common::XDP_FLAG_STEER_DHCP;
    }
    services.push(Box::new(tftp::frames::TftpFrameService::new(
        tftp,
        config.tftp_ports.clone(),
    )));
    let datapath = bound
        .serve(services, waker, afxdp_metrics)
        .map_err(|e| RunError::Datapath(e.to_string()))?;
    xdp.set_steering(steering)?;
    let vlans = netif::vlan_uppers(interface);
    if !vlans.is_empty() {
        warn!(
            interface,
            vlans = vlans.join(","),
            "VLAN interfaces sit on the AF_XDP interface: their tagged frames pass to the kernel, \
             but a NIC that strips tags (rx VLAN offload) shows them untagged to XDP, and their \
             PXE requests would be answered here, untagged; turn it off (ethtool -K {interface} \
             rxvlan off) or use --datapath kernel"
        );
    }
    metrics.set_datapath(metrics::Datapath::Xdp);
    info!(
        interface,
        dhcp = steering & pxe_common::XDP_FLAG_STEER_DHCP != 0,
        tftp = true,
        "on the AF_XDP datapath"
    );
    Ok(Ok(datapath))
}

/// Opens the lease journal of full mode and rebuilds the lease table from it.
async fn open_full_dhcp(
    config: &Config,
    metrics: &metrics::Metrics,
) -> Result<(dhcp::FullDhcp, dhcp::leases::LeaseStore), RunError> {
    let path = &config.dhcp.lease_file;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| RunError::StateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let (store, recovered) =
        dhcp::leases::LeaseStore::open(path, dhcp::leases::StoreOptions::default()).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut full = dhcp::FullDhcp::new(
        config.dhcp.subnets.clone(),
        config.dhcp.reservations.clone(),
    );
    for lease in &recovered.leases {
        full.restore(
            boot::MacAddr(lease.mac),
            lease.ip,
            lease.expires_at_unix_secs,
            now,
        );
    }
    for d in &recovered.declined {
        full.restore_declined(d.ip, d.until_unix_secs, now);
    }
    info!(
        journal = %path.display(),
        leases = recovered.leases.len(),
        declined = recovered.declined.len(),
        torn_tail_bytes = recovered.torn_tail_bytes,
        "lease journal opened"
    );
    metrics.register(Box::new(dhcp::metrics::LeaseStoreCollector::new(
        store.clone(),
    )?))?;
    Ok((full, store))
}

/// Runs `serve` on a thread of its own under a single-threaded runtime, and returns a task of
/// the caller's runtime that ends with it. DHCP under a storm is a stream of small tasks (a
/// reply, an ACK waiting for its lease to be durable): on one thread they never wake workers of
/// another, and they do not queue behind HTTP transfers.
fn spawn_on_own_thread(
    name: &str,
    serve: impl Future<Output = std::io::Result<()>> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = done.send(runtime.block_on(serve));
        })?;
    let name = name.to_owned();
    Ok(tokio::spawn(async move {
        finished
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other(format!("thread {name} panicked"))))
    }))
}

/// Makes the core's lease changes durable in `store`.
fn lease_commit(store: dhcp::leases::LeaseStore) -> dhcp::server::LeaseCommit {
    use dhcp::leases::{Lease, LeaseRecord};
    Arc::new(move |event: dhcp::LeaseEvent| {
        let store = store.clone();
        Box::pin(async move {
            let record = match event {
                dhcp::LeaseEvent::Bound {
                    mac,
                    ip,
                    expires_unix,
                    client_id,
                    hostname,
                } => LeaseRecord::Bind(Lease {
                    mac: mac.0,
                    ip,
                    expires_at_unix_secs: expires_unix,
                    // The journal bounds both; longer ones are not worth refusing a lease for.
                    client_id: client_id.filter(|c| c.len() <= dhcp::leases::MAX_CLIENT_ID_BYTES),
                    hostname: hostname.filter(|h| h.len() <= dhcp::leases::MAX_HOSTNAME_BYTES),
                }),
                dhcp::LeaseEvent::Released { mac, ip } => LeaseRecord::Release { mac: mac.0, ip },
                dhcp::LeaseEvent::Declined { ip, until_unix } => LeaseRecord::Declined {
                    ip,
                    until_unix_secs: until_unix,
                },
            };
            store.commit(record).await.map_err(|e| e.to_string())
        })
    })
}
