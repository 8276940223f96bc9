//! Running the cells: the fixture (file, boot root, namespaces), each server started in turn
//! with its CPU meter, the generator run against it with the CPU times around it.

use std::{
    fs,
    net::SocketAddrV4,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use pxe_tests::{
    tftp::{pattern, BootRoot},
    NsChild, TestNet,
};
use serde_json::Value;

use super::{
    render, rounds_for, Bins, Cell, Commands, Row, Server, BLKSIZE, CLIENT_RETRIES,
    CLIENT_TIMEOUT_MS, FILE_BYTES, FILE_NAME, GENERATOR_THREADS, OUR_MAX_TRANSFERS, OUR_PORT_RANGE,
    QUIET_CORES, QUIET_SAMPLE,
};
use crate::{
    bench::{
        cpu::{self, CpuMeter, MachineTime, Quiet},
        peers::{self, daemon, dnsmasq::Dnsmasq, tftpd, Host},
        snmp::UdpCounters,
    },
    workspace,
};

/// Seed of the file's bytes (pxe-tests' pattern, so a misplaced block shows).
const FILE_SEED: u32 = 7;
/// Tag of the namespaces (`pxet-tftpb-s`, `pxet-tftpb-c`).
const NET_TAG: &str = "tftpb";
/// Port of our daemon's HTTP (its metrics).
const OUR_HTTP_PORT: u16 = 8080;
/// The generator's own hard limit per cell, and ours on top of it.
const GENERATOR_MAX_SECS: u64 = 240;
const GENERATOR_KILL_AFTER: Duration = Duration::from_secs(GENERATOR_MAX_SECS + 30);
/// How long a server gets to bind port 69.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long forking servers' children get to exit after a cell (a lost last ACK keeps one
/// retransmitting for a few seconds).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause before each cell, so the previous one's stragglers are gone.
const SETTLE_PAUSE: Duration = Duration::from_millis(500);
/// dnsmasq's `--tftp-max` (its default is 50).
const DNSMASQ_TFTP_MAX: u32 = 2048;
/// Open files the servers may need (a socket per transfer or per port).
const NOFILE_LIMIT: u64 = 16_384;

/// The file, the boot root and the namespaces a run serves from.
#[derive(Debug)]
pub(crate) struct Fixture {
    boot: BootRoot,
    /// The namespaces.
    pub net: TestNet,
    bins: Bins,
}

impl Fixture {
    /// Writes the file into a fresh boot root and makes the namespaces.
    pub(crate) fn new(bins: Bins) -> anyhow::Result<Fixture> {
        raise_nofile_limit();
        CpuMeter::remove_stale();
        let content = pattern(FILE_BYTES, FILE_SEED);
        let boot = BootRoot::new(&[(FILE_NAME, &content)]);
        open_to_all(&boot)?;
        let net = TestNet::new(NET_TAG);
        println!(
            "== TFTP benchmark: {} (server {}) and {} (clients), {} MiB file, blksize {BLKSIZE}",
            net.server_ns(),
            net.server_ip(),
            net.client_ns(),
            FILE_BYTES >> 20
        );
        Ok(Fixture { boot, net, bins })
    }

    /// The cells' runner, waiting up to `quiet_wait` for a quiet machine before each.
    pub(crate) fn bench(&self, quiet_wait: Duration) -> Bench<'_> {
        Bench {
            net: &self.net,
            boot: &self.boot,
            bins: &self.bins,
            quiet: Quiet {
                below_cores: QUIET_CORES,
                sample: QUIET_SAMPLE,
                wait: quiet_wait,
            },
        }
    }
}

/// What every cell shares.
#[derive(Debug)]
pub(crate) struct Bench<'a> {
    net: &'a TestNet,
    boot: &'a BootRoot,
    bins: &'a Bins,
    /// The quiet machine each cell waits for.
    quiet: Quiet,
}

/// A server running in the server namespace, with its CPU meter.
struct Running {
    server: Server,
    command: String,
    // Dropped in this order: the process, then its cgroup (which kills what is left in it).
    child: NsChild,
    meter: CpuMeter,
}

impl Running {
    fn stop(self) {
        let Running {
            server,
            child,
            meter,
            ..
        } = self;
        let status = child.stop();
        println!(
            "   {} stopped ({status}); CPU measured {}",
            server.name(),
            meter.method()
        );
        drop(meter);
    }
}

impl Bench<'_> {
    /// Runs every `(clients, windowsize)` cell against each server in turn (one server
    /// running at a time); returns the rows and each server's command line as shown.
    pub(crate) fn run_servers(
        &self,
        servers: &[Server],
        cells: &[(u32, u16)],
    ) -> anyhow::Result<(Vec<Row>, Commands)> {
        let mut rows = Vec::new();
        let mut commands = Vec::new();
        for &server in servers {
            let running = self.start(server)?;
            commands.push((server, self.shown(&running.command)));
            for &(clients, windowsize) in cells {
                let cell = Cell {
                    server,
                    clients,
                    windowsize,
                    rounds: rounds_for(clients),
                };
                let row = self.measure(&running, cell)?;
                println!("   {}", render::summary_line(&row));
                rows.push(row);
            }
            running.stop();
        }
        Ok((rows, commands))
    }

    /// `command` with the run's temporary paths replaced by names that read well.
    fn shown(&self, command: &str) -> String {
        let root = self.boot.root();
        let base = root
            .parent()
            .unwrap_or(&root)
            .to_string_lossy()
            .into_owned();
        let workspace = format!("{}/", workspace::root().display());
        command
            .replace(&format!("{base}/pxe-daemon.toml"), "BENCH.toml")
            .replace(&format!("{base}/root"), "ROOT")
            .replace(&format!("{base}/outside"), "TMP")
            .replace(&workspace, "")
    }

    /// Our daemon's HTTP address (its metrics).
    fn our_http(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.net.server_ip(), OUR_HTTP_PORT)
    }

    /// Starts `server`, waits until it has bound port 69, puts it in a cgroup of its own.
    fn start(&self, server: Server) -> anyhow::Result<Running> {
        let host = Host::Server(self.net);
        let bound = peers::udp_sockets_on(host, 69);
        ensure!(
            bound.is_empty(),
            "UDP port 69 is already taken in {} before {} starts: {bound}",
            self.net.server_ns(),
            server.name()
        );
        let ip = self.net.server_ip();
        let root = self.boot.root();
        let (mut child, command) = match server {
            Server::Ours | Server::OursKernel | Server::OursXdp => {
                let config = self.boot.config(&format!(
                    "[tftp]\nlisten = \"{ip}:69\"\nmax_transfers = {OUR_MAX_TRANSFERS}\n\
                     port_range = [{}, {}]\n",
                    OUR_PORT_RANGE.0, OUR_PORT_RANGE.1
                ));
                let datapath: &[&str] = match server {
                    Server::OursKernel => &["--datapath", "kernel"],
                    Server::OursXdp => &["--datapath", "xdp"],
                    _ => &["--xdp-mode", "off"],
                };
                let args: Vec<&str> = ["--dhcp-mode", "off"]
                    .into_iter()
                    .chain(datapath.iter().copied())
                    .collect();
                let daemon = daemon::Daemon::start(
                    self.net,
                    &daemon::Options {
                        bin: &self.bins.daemon,
                        config: &config,
                        root: Some(&root),
                        http: self.our_http(),
                        log_level: daemon::LOG_LEVEL,
                        args: &args,
                    },
                )?;
                let command = daemon.command().to_owned();
                (daemon.into_child(), command)
            }
            Server::TftpdHpa => tftpd::start(self.net, ip, &root)?,
            Server::Dnsmasq => {
                let options = [
                    "enable-tftp".to_owned(),
                    format!("tftp-root={}", root.display()),
                    format!("tftp-max={DNSMASQ_TFTP_MAX}"),
                ];
                let dnsmasq = Dnsmasq::start(host, &self.boot.outside(), &options, 69)?;
                let command = dnsmasq.command().to_owned();
                (dnsmasq.into_child(), command)
            }
        };
        println!("== {}: {command}", server.name());
        peers::wait_udp_bound(host, &mut child, server.name(), 69, SERVER_READY_TIMEOUT)?;
        let meter = CpuMeter::attach(child.id(), server.name());
        Ok(Running {
            server,
            command,
            child,
            meter,
        })
    }

    /// The generator's command line for `cell`.
    fn generator_argv(&self, cell: &Cell) -> Vec<String> {
        let expect = self.boot.root().join(FILE_NAME);
        [
            self.bins.generator.to_string_lossy().as_ref(),
            "tftp-load",
            "--server",
            &self.net.server_ip().to_string(),
            "--file",
            FILE_NAME,
            "--clients",
            &cell.clients.to_string(),
            "--threads",
            &GENERATOR_THREADS.to_string(),
            "--blksize",
            &BLKSIZE.to_string(),
            "--windowsize",
            &cell.windowsize.to_string(),
            "--rounds",
            &cell.rounds.to_string(),
            "--timeout-ms",
            &CLIENT_TIMEOUT_MS.to_string(),
            "--retries",
            &CLIENT_RETRIES.to_string(),
            "--max-secs",
            &GENERATOR_MAX_SECS.to_string(),
            "--expect-file",
            &expect.to_string_lossy(),
            "--label",
            cell.server.name(),
            "--json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Runs the generator against `running` for `cell` and takes the CPU times around it.
    fn measure(&self, running: &Running, cell: Cell) -> anyhow::Result<Row> {
        thread::sleep(SETTLE_PAUSE);
        running.meter.wait_idle(SETTLE_TIMEOUT);
        cpu::wait_quiet(self.quiet, Some(&running.meter))?;
        let argv = self.generator_argv(&cell);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let udp_before = (
            UdpCounters::read(self.net, true)?,
            UdpCounters::read(self.net, false)?,
        );
        let steered_before = self.steered_tftp_frames(running.server);
        let cpu_before = running.meter.usage()?;
        let softirqd_before = cpu::softirq_time().unwrap_or_default();
        let machine_before = MachineTime::now()?;
        let t0 = Instant::now();
        let out = self.net.client_timeout(&args, GENERATOR_KILL_AFTER);
        running.meter.wait_idle(SETTLE_TIMEOUT);
        let window = t0.elapsed();
        let server_cpu = running.meter.usage()?.saturating_sub(cpu_before);
        let machine = MachineTime::now()?.since(machine_before).not_idle();
        let softirqd_cpu = cpu::softirq_time()
            .unwrap_or_default()
            .saturating_sub(softirqd_before);
        let drops = (
            UdpCounters::read(self.net, true)?
                .since(&udp_before.0)
                .rcvbuf_errors,
            UdpCounters::read(self.net, false)?
                .since(&udp_before.1)
                .rcvbuf_errors,
        );
        let steered = self
            .steered_tftp_frames(running.server)
            .zip(steered_before)
            .map(|(after, before)| after - before);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit status 3 is a run with failed transfers: reported, not an error of the bench.
        let ran = out.status.success() || out.status.code() == Some(3);
        let report: Value = match stdout.lines().last().map(serde_json::from_str) {
            Some(Ok(report)) if ran => report,
            _ => bail!(
                "pxe-bench tftp-load against {} ({} clients, windowsize {}) failed ({}):\n\
                 {stdout}{stderr}\n--- {} log ---\n{}",
                cell.server.name(),
                cell.clients,
                cell.windowsize,
                out.status,
                cell.server.name(),
                running.child.log()
            ),
        };
        let generator_cpu = Duration::from_secs_f64(
            report["generator_cpu"]["total_secs"]
                .as_f64()
                .unwrap_or(0.0),
        );
        let others_cpu = machine
            .saturating_sub(server_cpu)
            .saturating_sub(generator_cpu)
            .saturating_sub(softirqd_cpu);
        Ok(Row {
            cell,
            report,
            server_cpu,
            steered,
            softirqd_cpu,
            others_cpu,
            window,
            drops,
        })
    }

    /// Our daemon's TFTP frames (requests and transfer traffic) steered to AF_XDP so far, from
    /// its metrics; `None` for the peers or without the metric.
    fn steered_tftp_frames(&self, server: Server) -> Option<f64> {
        if !server.is_ours() {
            return None;
        }
        let text = daemon::metrics(self.net, self.our_http())?;
        let steered = |class: &str| {
            pxe_tests::metric_value(
                &text,
                "pxe_xdp_verdicts_total",
                &[("class", class), ("verdict", "steer")],
            )
        };
        Some(steered("tftp")? + steered("tftp_transfer")?)
    }
}

/// tftpd-hpa serves as user `tftp` and dnsmasq as `nobody`: the boot root (a private temp
/// dir) must be readable by them.
fn open_to_all(boot: &BootRoot) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let root = boot.root();
    let mut dirs = vec![root.clone()];
    dirs.extend(root.parent().map(Path::to_path_buf));
    for dir in dirs {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {} to the servers' users", dir.display()))?;
    }
    let file = root.join(FILE_NAME);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("opening {} to the servers' users", file.display()))?;
    Ok(())
}

/// Raises the soft limit of open files (inherited by the servers): dnsmasq opens a socket per
/// transfer, our daemon one per transfer port.
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let want = limit
        .maximum
        .map_or(NOFILE_LIMIT, |max| NOFILE_LIMIT.min(max));
    if limit.current.is_some_and(|current| current < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        );
    }
}
