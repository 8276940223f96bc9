//! The running daemon, in mini-redis's shape: [`run`] starts the subsystems
//! ([`Daemon::start`]), waits for the shutdown or for a subsystem that ends on its own, then
//! drains and joins them ([`Daemon::stop`]).
//!
//! A subsystem that ends before the shutdown (an error, a panicked thread) ends the daemon with
//! [`RunError::Stopped`], naming it: a boot server that silently lost TFTP or DHCP would answer
//! half a boot, and the service manager restarts a process that exits non-zero.

use std::{
    future::Future,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    afxdp, boot, datapath, dhcp, http, metrics, netif, ra, tftp, timeline, xdp, Config, Listeners,
    RunError,
};

/// Longest wait for the AF_XDP thread to stop (it polls with a 50 ms timeout).
const AFXDP_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the AF_XDP thread (a plain thread, not a task) is checked for having ended.
const AFXDP_LIVENESS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the daemon until `shutdown` completes, then drains for at most
/// `config.server.drain_timeout` and detaches the XDP program. Fails at start, or when a
/// subsystem ends before `shutdown`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let mut daemon = Daemon::start(config, listeners).await?;
    let result = tokio::select! {
        () = shutdown => Ok(()),
        exit = daemon.exited() => {
            let reason = exit.reason();
            error!(subsystem = exit.subsystem, reason, "a subsystem stopped; stopping the daemon");
            Err(RunError::Stopped { subsystem: exit.subsystem, reason })
        }
    };
    daemon.stop().await;
    result
}

/// Which datapath moves DHCP and TFTP: the choice, made once at start.
#[derive(Debug)]
pub enum Datapath {
    /// AF_XDP sockets on every queue, fed by the XDP program's steering; the DHCP handler (if
    /// DHCP runs) lives on the datapath thread.
    AfXdp(afxdp::AfXdp),
    /// Kernel sockets; the DHCP handler, if DHCP runs, for the kernel DHCP task.
    Kernel(Option<dhcp::handler::RequestHandler>),
}

/// A subsystem that ended, and its error if it failed.
#[derive(Debug)]
pub struct Exit {
    /// Which one (`http`, `dhcp`, `tftp`, `ra`, `afxdp`, `boot-root`).
    pub subsystem: &'static str,
    /// Its error; `None` when it ended without one.
    pub error: Option<String>,
}

impl Exit {
    /// Why it ended, as said when that was before the shutdown.
    pub fn reason(&self) -> String {
        self.error
            .clone()
            .unwrap_or_else(|| "it ended by itself".to_owned())
    }
}

/// The subsystems' tasks: each reports its end on a channel, so the first to end is seen at
/// once, and all are joined in order at the stop.
#[derive(Debug)]
struct Tasks {
    running: Vec<(&'static str, JoinHandle<()>)>,
    exits: mpsc::UnboundedReceiver<Exit>,
    exit_tx: mpsc::UnboundedSender<Exit>,
}

impl Tasks {
    fn new() -> Tasks {
        let (exit_tx, exits) = mpsc::unbounded_channel();
        Tasks {
            running: Vec::new(),
            exits,
            exit_tx,
        }
    }

    /// Runs `task` as `subsystem` on the runtime.
    fn spawn<E: std::fmt::Display>(
        &mut self,
        subsystem: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let exits = self.exit_tx.clone();
        let handle = tokio::spawn(async move {
            let error = task.await.err().map(|e| e.to_string());
            let _ = exits.send(Exit { subsystem, error });
        });
        self.running.push((subsystem, handle));
    }

    /// Waits for a subsystem's thread (which ends when the shutdown token is cancelled).
    fn watch_thread(&mut self, subsystem: &'static str, thread: std::thread::JoinHandle<()>) {
        self.spawn(subsystem, async move {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err("its thread panicked"),
            }
        });
    }

    /// The first subsystem to end (pending while all run).
    async fn first_exit(&mut self) -> Exit {
        match self.exits.recv().await {
            Some(exit) => exit,
            // Never: `exit_tx` lives as long as `self`.
            None => std::future::pending().await,
        }
    }

    /// Waits for every task, in the order they started; errors are logged by their subsystem.
    async fn join(self) {
        drop(self.exit_tx);
        for (subsystem, handle) in self.running {
            if let Err(e) = handle.await {
                error!(subsystem, error = %e, "task failed");
            }
        }
        let mut exits = self.exits;
        while let Ok(exit) = exits.try_recv() {
            if let Some(error) = exit.error {
                error!(subsystem = exit.subsystem, error, "stopped with an error");
            }
        }
    }
}

/// The started daemon: what [`Daemon::stop`] must stop, in order.
#[derive(Debug)]
pub struct Daemon {
    token: CancellationToken,
    xdp: Option<xdp::XdpAttachment>,
    afxdp: Option<afxdp::AfXdp>,
    tasks: Tasks,
    drain: Duration,
}

impl Daemon {
    /// Starts every subsystem on `listeners` as `config` says; the first failure is returned
    /// (what was started is dropped, which stops it).
    pub async fn start(config: Config, listeners: Listeners) -> Result<Daemon, RunError> {
        let interface = config.server.interface.clone().ok_or_else(|| {
            RunError::Config("no interface: give --interface or server.interface".into())
        })?;
        let root = config.server.root.clone().ok_or_else(|| {
            RunError::Config(
                "no boot root: TFTP serves files from it; give --root or server.root".into(),
            )
        })?;
        let metrics = metrics::Metrics::new()?;
        let server_address = config
            .dhcp
            .server_address
            .or_else(|| netif::ipv4_of(&interface));
        let mut xdp = attach_xdp(&config, &interface, server_address, &metrics)?;

        let token = CancellationToken::new();
        let mut tasks = Tasks::new();
        let policy = Arc::new(boot::BootPolicy::new(
            config.boot.arch_defaults.clone(),
            config.boot.groups.clone(),
            config.boot.http_base_url.clone(),
            config.http.listen.port(),
        ));
        look_at_boot_root(&policy, &root);
        let watch = (policy.clone(), root.clone(), token.child_token());
        tasks.spawn("boot-root", async move {
            let (policy, root, stop) = watch;
            // The first look was just taken: the next one is an interval away.
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + boot::ROOT_REFRESH_INTERVAL,
                boot::ROOT_REFRESH_INTERVAL,
            );
            loop {
                tokio::select! {
                    _ = tick.tick() => look_at_boot_root(&policy, &root),
                    () = stop.cancelled() => return Ok::<(), std::convert::Infallible>(()),
                }
            }
        });
        // The kernel's neighbour table, asked for TFTP and HTTP clients not seen in DHCP.
        let neighbours: Arc<dyn timeline::Neighbours> = Arc::new(netif::neighbour_mac);
        let timeline = timeline::Timeline::new(
            policy.clone(),
            neighbours.clone(),
            timeline::TimelineMetrics::new(metrics.registry())?,
            config.timeline.max_machines,
            config.timeline.stuck_after,
        );
        metrics.register(Box::new(timeline::CensusCollector::new(timeline.clone())?))?;

        let handler = match listeners.dhcp {
            Some(_) => Some(
                dhcp_handler(
                    &config,
                    &interface,
                    server_address,
                    &policy,
                    &timeline,
                    &metrics,
                )
                .await?,
            ),
            None => None,
        };
        let scripts = Arc::new(http::scripts::Scripts::new(
            config.http.profiles.clone(),
            config.http.default_profile.clone(),
            policy.clone(),
        )?);
        let grub = grub_renderer(&config, server_address, &scripts, &timeline);
        let tftp_metrics = tftp::TftpMetrics::register(&metrics)?;
        let tftp_settings = tftp::ServerSettings {
            config: &config.tftp,
            // One file store (and cache of hot boot files) for both datapaths.
            files: tftp::open_files(&root, config.tftp.cache_bytes)?,
            mtu: netif::mtu(&interface),
            mapper: Arc::new(tftp::PolicyMapper::new(
                root.clone(),
                config.tftp.rewrites.clone(),
                policy.clone(),
                neighbours,
                grub,
            )),
            timeline: Some(timeline.clone()),
        };
        let xdp_tftp = tftp_settings.table(config.tftp.ports.len(), tftp_metrics.clone());
        let datapath = Datapath::choose(
            &config,
            &interface,
            server_address,
            xdp.as_mut(),
            handler,
            xdp_tftp,
            &metrics,
        )?;
        let afxdp = match datapath {
            // The kernel DHCP sockets are not needed: DHCP frames are steered to AF_XDP.
            Datapath::AfXdp(afxdp) => Some(afxdp),
            Datapath::Kernel(handler) => {
                if let (Some(handler), Some(sockets)) = (handler, listeners.dhcp) {
                    let serve = dhcp::kernel::serve(handler, sockets, token.child_token());
                    let dhcp = spawn_on_own_thread("pxe-dhcp", serve).map_err(|source| {
                        RunError::Thread {
                            name: "pxe-dhcp",
                            source,
                        }
                    })?;
                    tasks.spawn("dhcp", async move { dhcp.await? });
                }
                None
            }
        };

        if let Some(socket) = listeners.ra {
            let ra_metrics = ra::metrics::RaMetrics::new(metrics.registry())?;
            tasks.spawn(
                "ra",
                ra::server::serve(socket, ra_metrics, token.child_token()),
            );
        }

        // Also beside the AF_XDP datapath: it answers what is not steered (other addresses of
        // the host, queues without a socket).
        let tftp = tftp::Server::new(tftp_settings, listeners.tftp, tftp_metrics)?;
        tasks.watch_thread(
            "tftp",
            tftp.spawn(token.child_token(), config.server.drain_timeout)?,
        );

        let artifact_root = config.http.artifact_root.clone();
        announce_own_boot_ipxe(artifact_root.as_ref());
        let state = Arc::new(http::HttpState {
            metrics: metrics.clone(),
            http_metrics: http::metrics::HttpMetrics::new(metrics.registry())?,
            artifact_root,
            scripts,
            base_url: config.boot.http_base_url.clone(),
            limits: config.http.limits.clone(),
            timeline: Some(timeline.clone()),
        });
        let http = http::serve(
            listeners.http,
            state,
            token.child_token(),
            config.server.drain_timeout,
        );
        tasks.spawn("http", async move {
            http.await;
            Ok::<(), std::convert::Infallible>(())
        });

        info!(
            interface,
            root = ?config.server.root,
            http = %config.http.listen,
            tftp = %config.tftp.listen,
            "pxe-daemon running"
        );
        Ok(Daemon {
            token,
            xdp,
            afxdp,
            tasks,
            drain: config.server.drain_timeout,
        })
    }

    /// The first subsystem that ends on its own (pending while all run).
    pub async fn exited(&mut self) -> Exit {
        let afxdp = self.afxdp.as_ref();
        let afxdp_ended = async {
            let Some(afxdp) = afxdp else {
                return std::future::pending().await;
            };
            let mut tick = tokio::time::interval(AFXDP_LIVENESS_INTERVAL);
            loop {
                tick.tick().await;
                if afxdp.has_ended() {
                    return Exit {
                        subsystem: "afxdp",
                        error: Some("the AF_XDP datapath thread ended".into()),
                    };
                }
            }
        };
        tokio::select! {
            exit = self.tasks.first_exit() => exit,
            exit = afxdp_ended => exit,
        }
    }

    /// Stops in order: AF_XDP steering and thread, then every task (draining transfers for at
    /// most the drain timeout), then the XDP program.
    pub async fn stop(mut self) {
        info!(drain = ?self.drain, "shutting down");
        if let Some(datapath) = self.afxdp.take() {
            // Steering off first: no frame may be steered to a socket that is closing.
            if let Some(xdp) = self.xdp.as_mut() {
                if let Err(e) = xdp.set_steering(0) {
                    error!(error = %e, "clearing XDP steering");
                }
            }
            datapath.stop(self.xdp.as_mut(), AFXDP_STOP_TIMEOUT).await;
        }
        self.token.cancel();
        self.tasks.join().await;
        drop(self.xdp);
        info!("pxe-daemon stopped");
    }
}

impl Datapath {
    /// Starts the AF_XDP datapath when `config.server.datapath` asks for it: sockets on every
    /// queue, the DHCP service (when DHCP runs) and the TFTP service on the datapath thread,
    /// then steering on. Stays on kernel sockets for `kernel`, or for `auto` where AF_XDP does
    /// not work (with a warning); with `xdp`, a failure is an error.
    fn choose(
        config: &Config,
        interface: &str,
        address: Option<Ipv4Addr>,
        xdp: Option<&mut xdp::XdpAttachment>,
        handler: Option<dhcp::handler::RequestHandler>,
        tftp: tftp::table::TableSettings,
        metrics: &metrics::Metrics,
    ) -> Result<Datapath, RunError> {
        let required = match config.server.datapath {
            datapath::Choice::Kernel => return Ok(Datapath::Kernel(handler)),
            datapath::Choice::Xdp => true,
            datapath::Choice::Auto => false,
        };
        let fail = |handler, reason: String| {
            if required {
                Err(RunError::Datapath(reason))
            } else {
                warn!(
                    interface,
                    reason, "AF_XDP datapath not available; DHCP and TFTP on kernel sockets"
                );
                metrics.set_datapath(metrics::Datapath::Kernel);
                Ok(Datapath::Kernel(handler))
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
        let waker = match datapath::Waker::new() {
            Ok(w) => w,
            Err(e) => return fail(handler, format!("eventfd: {e}")),
        };
        let afxdp_metrics = afxdp::AfXdpMetrics::new(metrics.registry())?;
        let settings = afxdp::Settings {
            interface: interface.to_owned(),
            address,
            mtu: netif::mtu(interface),
            bind: config.xdp.bind,
        };
        // Sockets first: if they do not bind, the handler is still here for the kernel path.
        let bound = match afxdp::BoundSockets::bind(&settings, xdp) {
            Ok(b) => b,
            Err(e) => return fail(handler, e.to_string()),
        };
        let mut services: Vec<afxdp::BoxedService> = Vec::new();
        let mut steering = pxe_common::XDP_FLAG_STEER_TFTP;
        if let Some(handler) = handler {
            services.push(Box::new(dhcp::afxdp::DhcpFrameService::new(
                handler,
                waker.clone(),
            )));
            steering |= pxe_common::XDP_FLAG_STEER_DHCP;
        }
        services.push(Box::new(tftp::afxdp::TftpFrameService::new(
            tftp,
            config.tftp.ports.clone(),
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
                "VLAN interfaces sit on the AF_XDP interface: their tagged frames pass to the \
                 kernel, but a NIC that strips tags (rx VLAN offload) shows them untagged to XDP, \
                 and their PXE requests would be answered here, untagged; turn it off (ethtool -K \
                 {interface} rxvlan off) or use --datapath kernel"
            );
        }
        metrics.set_datapath(metrics::Datapath::Xdp);
        info!(
            interface,
            dhcp = steering & pxe_common::XDP_FLAG_STEER_DHCP != 0,
            tftp = true,
            "on the AF_XDP datapath"
        );
        Ok(Datapath::AfXdp(datapath))
    }
}

/// Loads and attaches the XDP program as `config.xdp.mode` says, exporting its mode and
/// counters; `None` when it is off or could not attach where that is allowed.
fn attach_xdp(
    config: &Config,
    interface: &str,
    server_address: Option<Ipv4Addr>,
    metrics: &metrics::Metrics,
) -> Result<Option<xdp::XdpAttachment>, RunError> {
    // The program's debug records cost a ring-buffer write per malformed frame: only when shown.
    let debug_log = tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG;
    let program_config = xdp::program_config(
        &config.tftp.ports,
        server_address,
        config.dhcp.mode == dhcp::DhcpMode::Full,
        config.xdp.rate_limit_pps,
        config.xdp.rate_burst,
    );
    let xdp = xdp::XdpAttachment::load(interface, config.xdp.mode, program_config, debug_log)?;
    let attach_mode = xdp::AttachModeGauge::register(metrics.registry())?;
    if let Some(xdp) = &xdp {
        attach_mode.set(xdp.mode());
        metrics.register(Box::new(xdp.counters()))?;
    }
    Ok(xdp)
}

/// The DHCP request handler both datapaths share: the core in the configured mode (full mode
/// opens the lease journal), its metrics and the timeline.
async fn dhcp_handler(
    config: &Config,
    interface: &str,
    server_address: Option<Ipv4Addr>,
    policy: &Arc<boot::BootPolicy>,
    timeline: &timeline::Timeline,
    metrics: &metrics::Metrics,
) -> Result<dhcp::handler::RequestHandler, RunError> {
    let server = server_address.ok_or_else(|| {
        RunError::Config(format!(
            "interface {interface} has no IPv4 address to announce as DHCP server: \
             give it one or set dhcp.server_address"
        ))
    })?;
    let (mode, commit) = match config.dhcp.mode {
        dhcp::DhcpMode::Full => {
            let (full, store) = open_full_dhcp(config, metrics).await?;
            let commit: Arc<dyn dhcp::handler::LeaseCommit> = Arc::new(store);
            (dhcp::Mode::Full(Box::new(full)), Some(commit))
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
    let options = dhcp::handler::ServeOptions {
        reply_delay: config.dhcp.reply_delay,
        timeline: Some(timeline.clone()),
    };
    info!(%server, mode = ?config.dhcp.mode, "DHCP server address");
    Ok(dhcp::handler::RequestHandler::new(
        core,
        dhcp_metrics,
        commit,
        options,
    ))
}

/// What renders a machine's GRUB config for TFTP (GRUB's `grub.cfg-01-<mac>` search): its
/// profile, as `/grub?mac=` renders it, with URLs on `boot.http_base_url` or on the server
/// address and the HTTP port. None without an address to put in them.
fn grub_renderer(
    config: &Config,
    server_address: Option<Ipv4Addr>,
    scripts: &Arc<http::scripts::Scripts>,
    timeline: &timeline::Timeline,
) -> Option<tftp::files::GrubRenderer> {
    let base = config.boot.http_base_url.clone().or_else(|| {
        server_address.map(|ip| match config.http.listen.port() {
            80 => format!("http://{ip}"),
            port => format!("http://{ip}:{port}"),
        })
    })?;
    let (scripts, timeline) = (scripts.clone(), timeline.clone());
    Some(Arc::new(move |mac| {
        let query = http::scripts::MachineQuery {
            mac,
            // The arch the machine's DHCP said, as for an HTTP fetch without one.
            arch: timeline.arch_of(mac),
            buildarch: None,
            platform: None,
        };
        scripts
            .render(http::scripts::ScriptKind::Grub, &query, &base)
            .ok()
    }))
}

/// Shows the policy which NBPs the boot root holds now (a `stat` per candidate).
fn look_at_boot_root(policy: &boot::BootPolicy, root: &Path) {
    policy.root_view().refresh(|c| root.join(c).is_file());
}

/// Says at start when the operator's own `boot.ipxe` replaces the generated entry script.
fn announce_own_boot_ipxe(artifact_root: Option<&PathBuf>) {
    if let Some(root) = artifact_root.filter(|r| http::has_own_boot_ipxe(r)) {
        info!(
            path = %root.join(http::BOOT_IPXE_FILE).display(),
            "serving the boot root's own boot.ipxe at /boot.ipxe instead of the generated chain script"
        );
    }
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
