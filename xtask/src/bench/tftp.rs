//! `cargo xtask bench tftp`: our daemon, tftpd-hpa and dnsmasq's TFTP, one after the other on
//! the same veth pair, each read by `pxe-bench tftp-load` (N concurrent clients fetching a
//! 1 MiB file with blksize 1468, windowsize 1 and 4) at N = 100 and 1,000. Each server's CPU
//! time is read from a cgroup made for it (so the children of forking tftpd-hpa count); the
//! table goes to `bench/RESULTS.md` between the TFTP markers. `--quick` is the ~15 s check:
//! N = 100, windowsize 4, our daemon and tftpd-hpa, failing on any failed transfer.
//!
//! Why a cgroup: tftpd-hpa forks a child per transfer and ignores SIGCHLD, so its children are
//! reaped by the kernel and their time never reaches the parent's `cutime`/`cstime` in
//! `/proc/PID/stat`. A cgroup counts every process in it, forked children included, while
//! they run and after they exit.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use pxe_tests::tftp::{pattern, BootRoot};
use pxe_tests::{NsChild, TestNet};
use serde_json::Value;

use crate::{setup, workspace};

/// Name of the file every client reads.
const FILE_NAME: &str = "bench-1m.bin";
/// Its size: an NBP-sized file.
const FILE_BYTES: usize = 1 << 20;
/// Seed of its bytes (pxe-tests' pattern, so a misplaced block shows).
const FILE_SEED: u32 = 7;
/// Block size asked for: fills a 1500-byte MTU.
const BLKSIZE: u16 = 1468;
/// Tag of the namespaces (`pxet-tftpb-s`, `pxet-tftpb-c`).
const NET_TAG: &str = "tftpb";
/// Client counts of the full run.
const CLIENT_COUNTS: [u32; 2] = [100, 1000];
/// Windows asked for in the full run.
const WINDOWSIZES: [u16; 2] = [1, 4];
/// The quick run's one cell.
const QUICK_CLIENTS: u32 = 100;
const QUICK_WINDOWSIZE: u16 = 4;
/// Each client's retransmit timeout and retries, as a patient ROM's.
const CLIENT_TIMEOUT_MS: u64 = 1000;
const CLIENT_RETRIES: u32 = 5;
/// The generator's own hard limit per cell, and ours on top of it.
const GENERATOR_MAX_SECS: u64 = 240;
/// Generator threads: one thread saturates a core before the AF_XDP datapath does (seen with
/// perf: the generator at 100% of a core, the server's thread at 18%, a core idle).
const GENERATOR_THREADS: u32 = 2;
const GENERATOR_KILL_AFTER: Duration = Duration::from_secs(GENERATOR_MAX_SECS + 30);
/// How long a server gets to bind port 69.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long forking servers' children get to exit after a cell (a lost last ACK keeps one
/// retransmitting for a few seconds).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause before each cell, so the previous one's stragglers are gone.
const SETTLE_PAUSE: Duration = Duration::from_millis(500);
/// Before each cell the benchmark waits (at most this long, `--quick` at most
/// [`QUIET_WAIT_QUICK`]) for the rest of the machine to use less than [`QUIET_CORES`]: the
/// 2 cores are shared, and a build running beside the benchmark halves what it measures.
const QUIET_WAIT: Duration = Duration::from_secs(30);
const QUIET_WAIT_QUICK: Duration = Duration::from_secs(3);
const QUIET_CORES: f64 = 0.3;
/// How long one look at the machine's load lasts.
const QUIET_SAMPLE: Duration = Duration::from_secs(1);
/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(50);
/// dnsmasq's `--tftp-max` (its default is 50).
const DNSMASQ_TFTP_MAX: u32 = 2048;
/// Our daemon's `[tftp]`: the defaults, written out.
const OUR_MAX_TRANSFERS: u32 = 10_000;
const OUR_PORT_RANGE: (u16, u16) = (30_000, 30_999);
/// Open files the servers may need (a socket per transfer or per port).
const NOFILE_LIMIT: u64 = 16_384;
/// Where the results go, relative to the workspace root.
const RESULTS_FILE: &str = "bench/RESULTS.md";
const BEGIN_MARKER: &str = "<!-- tftp:begin -->";
const END_MARKER: &str = "<!-- tftp:end -->";
/// Prefix of the cgroups made for the servers.
const CGROUP_PREFIX: &str = "pxe-bench-tftp-";
/// The goal of issue #4: our aggregate throughput over tftpd-hpa's, in the same run.
const GOAL_RATIO: f64 = 3.0;

/// Options of `cargo xtask bench tftp`.
#[derive(Debug, clap::Args)]
pub struct TftpArgs {
    /// The ~15 s check: 100 clients, windowsize 4, our daemon and tftpd-hpa; fails if any
    /// transfer fails or returns wrong bytes. Leaves bench/RESULTS.md alone.
    #[arg(long)]
    quick: bool,
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// pxe-daemon with the XDP program off (this benchmark's own rows).
    Ours,
    /// pxe-daemon `--datapath kernel` (XDP program attached as by default: counts, passes).
    OursKernel,
    /// pxe-daemon `--datapath xdp`: TFTP over AF_XDP.
    OursXdp,
    /// tftpd-hpa.
    TftpdHpa,
    /// dnsmasq's TFTP.
    Dnsmasq,
}

impl Server {
    /// Name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Server::Ours => "pxe-daemon",
            Server::OursKernel => "pxe-daemon --datapath kernel",
            Server::OursXdp => "pxe-daemon --datapath xdp",
            Server::TftpdHpa => "tftpd-hpa",
            Server::Dnsmasq => "dnsmasq",
        }
    }

    fn is_ours(self) -> bool {
        matches!(self, Server::Ours | Server::OursKernel | Server::OursXdp)
    }
}

/// One measurement: a server under one load.
#[derive(Debug)]
pub struct Cell {
    /// The server.
    pub server: Server,
    /// Concurrent clients.
    pub clients: u32,
    /// Window asked for.
    pub windowsize: u16,
    rounds: u32,
}

/// Transfers per client: about 500 MiB per cell at 100 clients, 1000 MiB at 1,000 (one
/// storm: every client starts at once).
fn rounds_for(clients: u32) -> u32 {
    if clients >= 1000 {
        1
    } else {
        5
    }
}

/// What one cell measured.
#[derive(Debug)]
pub struct Row {
    /// What was measured.
    pub cell: Cell,
    /// The generator's JSON report.
    pub report: Value,
    /// The server's CPU time (user + system, children included) during the cell.
    pub server_cpu: Duration,
    /// Our daemon: TFTP frames its XDP program steered to AF_XDP during the cell (`None`: no
    /// such metric, the program is not attached).
    pub steered: Option<f64>,
    /// CPU time of the kernel's softirq threads (`ksoftirqd/N`) during the cell: network
    /// receive work the kernel deferred from the senders' context (either side's).
    softirqd_cpu: Duration,
    /// CPU time of everything else on the machine during the cell.
    others_cpu: Duration,
    /// The window the CPU times were taken over.
    window: Duration,
    /// Datagrams the kernel dropped for a full socket receive buffer (`UdpRcvbufErrors`),
    /// in the server's and the clients' namespace.
    drops: (u64, u64),
}

impl Row {
    fn num(&self, path: &[&str]) -> f64 {
        path.iter()
            .fold(&self.report, |v, k| &v[*k])
            .as_f64()
            .unwrap_or(f64::NAN)
    }

    /// Aggregate MB/s of completed transfers.
    pub fn mb_per_sec(&self) -> f64 {
        self.num(&["aggregate_mb_per_sec"])
    }

    /// Failed transfers.
    pub fn failed(&self) -> u64 {
        self.report["failed"].as_u64().unwrap_or(u64::MAX)
    }

    /// Server CPU seconds per 10^9 bytes delivered.
    pub fn server_cpu_per_gb(&self) -> f64 {
        let gb = self.report["bytes"].as_f64().unwrap_or(0.0) / 1e9;
        if gb > 0.0 {
            self.server_cpu.as_secs_f64() / gb
        } else {
            f64::NAN
        }
    }

    /// The generator's CPU time over the run's wall time, in cores.
    pub fn generator_cores(&self) -> f64 {
        self.num(&["generator_cpu", "total_secs"]) / self.num(&["wall_secs"])
    }

    /// The window most transfers used.
    pub fn windowsize_used(&self) -> Option<u64> {
        self.report["negotiated"]
            .as_array()?
            .iter()
            .max_by_key(|n| n["transfers"].as_u64().unwrap_or(0))
            .and_then(|n| n["windowsize"].as_u64())
    }

    /// Failed transfers with their reasons.
    pub fn failures_text(&self) -> String {
        let Some(map) = self.report["failures"].as_object() else {
            return "?".into();
        };
        let reasons: Vec<String> = map
            .iter()
            .map(|(reason, v)| format!("{reason} {}", v["count"]))
            .collect();
        if reasons.is_empty() {
            "0".into()
        } else {
            format!("{} ({})", self.failed(), reasons.join(", "))
        }
    }
}

/// Runs the benchmark: setup, release build, the cells, the report.
pub fn run(args: &TftpArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "the TFTP benchmark makes network namespaces and cgroups and binds port 69: run it as root"
    );
    setup::run()?;
    let bins = Bins::build()?;

    let (servers, cells): (&[Server], Vec<(u32, u16)>) = if args.quick {
        (
            &[Server::Ours, Server::TftpdHpa],
            vec![(QUICK_CLIENTS, QUICK_WINDOWSIZE)],
        )
    } else {
        (
            &[Server::Ours, Server::TftpdHpa, Server::Dnsmasq],
            CLIENT_COUNTS
                .iter()
                .flat_map(|&n| WINDOWSIZES.iter().map(move |&w| (n, w)))
                .collect(),
        )
    };
    let started = Instant::now();
    let fixture = Fixture::new(bins)?;
    let bench = fixture.bench(if args.quick {
        QUIET_WAIT_QUICK
    } else {
        QUIET_WAIT
    });
    let (rows, commands) = bench.run_servers(servers, &cells)?;
    let table = render(&rows, &commands, args.quick, &fixture.net)?;
    println!("\n{table}");
    println!(
        "== TFTP benchmark done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.quick {
        return check_quick(&rows);
    }
    let path = workspace::root().join(RESULTS_FILE);
    write_section(&path, &table)?;
    println!("== wrote the TFTP section of {}", path.display());
    Ok(())
}

/// Each server's command line, as shown in the results.
pub type Commands = Vec<(Server, String)>;

/// The binaries run.
#[derive(Debug)]
pub struct Bins {
    /// The release pxe-daemon.
    pub daemon: PathBuf,
    /// The release pxe-bench.
    pub generator: PathBuf,
    in_tftpd: PathBuf,
    dnsmasq: PathBuf,
}

impl Bins {
    /// Builds the release daemon and generator and finds the peers.
    pub fn build() -> anyhow::Result<Bins> {
        let release = workspace::build_release_bins()?;
        Ok(Bins {
            daemon: release.join("pxe-daemon"),
            generator: release.join("pxe-bench"),
            in_tftpd: find_sbin("in.tftpd")?,
            dnsmasq: find_sbin("dnsmasq")?,
        })
    }
}

/// The file, the boot root and the namespaces a run serves from.
pub struct Fixture {
    boot: BootRoot,
    /// The namespaces.
    pub net: TestNet,
    bins: Bins,
}

impl Fixture {
    /// Writes the file into a fresh boot root and makes the namespaces.
    pub fn new(bins: Bins) -> anyhow::Result<Fixture> {
        raise_nofile_limit();
        remove_stale_cgroups();
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
    pub fn bench(&self, quiet_wait: Duration) -> Bench<'_> {
        Bench {
            net: &self.net,
            boot: &self.boot,
            bins: &self.bins,
            quiet_wait,
        }
    }
}

/// What every cell shares.
pub struct Bench<'a> {
    net: &'a TestNet,
    boot: &'a BootRoot,
    bins: &'a Bins,
    /// How long to wait for a quiet machine before each cell.
    quiet_wait: Duration,
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
    pub fn run_servers(
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
                println!("   {}", summary_line(&row));
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

    fn argv(&self, server: Server) -> Vec<String> {
        let ip = self.net.server_ip();
        let root = self.boot.root().to_string_lossy().into_owned();
        match server {
            Server::Ours | Server::OursKernel | Server::OursXdp => {
                let config = self.boot.config(&format!(
                    "[tftp]\nlisten = \"{ip}:69\"\nmax_transfers = {OUR_MAX_TRANSFERS}\n\
                     port_range = [{}, {}]\n",
                    OUR_PORT_RANGE.0, OUR_PORT_RANGE.1
                ));
                vec![
                    self.bins.daemon.to_string_lossy().into_owned(),
                    "run".into(),
                    "--interface".into(),
                    self.net.server_if().into(),
                    "--root".into(),
                    root,
                    "--config".into(),
                    config.to_string_lossy().into_owned(),
                    "--dhcp-mode".into(),
                    "off".into(),
                    "--http-listen".into(),
                    format!("{ip}:8080"),
                ]
                .into_iter()
                .chain(
                    match server {
                        Server::OursKernel => ["--datapath", "kernel"],
                        Server::OursXdp => ["--datapath", "xdp"],
                        _ => ["--xdp-mode", "off"],
                    }
                    .map(String::from),
                )
                .collect()
            }
            Server::TftpdHpa => vec![
                self.bins.in_tftpd.to_string_lossy().into_owned(),
                "--foreground".into(),
                "--secure".into(),
                "--address".into(),
                format!("{ip}:69"),
                root,
            ],
            Server::Dnsmasq => vec![
                self.bins.dnsmasq.to_string_lossy().into_owned(),
                "--keep-in-foreground".into(),
                "--conf-file=/dev/null".into(),
                "--port=0".into(),
                "--enable-tftp".into(),
                format!("--tftp-root={root}"),
                format!("--tftp-max={DNSMASQ_TFTP_MAX}"),
                format!("--interface={}", self.net.server_if()),
                "--bind-interfaces".into(),
                format!(
                    "--pid-file={}",
                    self.boot.outside().join("dnsmasq.pid").display()
                ),
                "--log-facility=-".into(),
            ],
        }
    }

    /// Starts `server`, puts it in a cgroup of its own, waits until it has bound port 69.
    fn start(&self, server: Server) -> anyhow::Result<Running> {
        let bound = udp_port_69_sockets(self.net);
        ensure!(
            bound.is_empty(),
            "UDP port 69 is already taken in {} before {} starts: {bound}",
            self.net.server_ns(),
            server.name()
        );
        let argv = self.argv(server);
        let command = argv.join(" ");
        println!("== {}: {command}", server.name());
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = self.net.spawn_server(&args);
        let tag: String = server
            .name()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let meter = CpuMeter::attach(child.id(), &tag);
        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait() {
                bail!(
                    "{} exited with {status} before it bound port 69:\n{}",
                    server.name(),
                    child.log()
                );
            }
            if !udp_port_69_sockets(self.net).is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not bind UDP port 69 within {} s:\n{}",
                    server.name(),
                    SERVER_READY_TIMEOUT.as_secs(),
                    child.log()
                );
            }
            thread::sleep(POLL);
        }
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
        wait_quiet(&running.meter, self.quiet_wait)?;
        let argv = self.generator_argv(&cell);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let drops_before = (
            udp_rcvbuf_errors(self.net, true),
            udp_rcvbuf_errors(self.net, false),
        );
        let steered_before = self.steered_tftp_frames(running.server);
        let cpu_before = running.meter.usage()?;
        let softirqd_before = softirqd_busy();
        let machine_before = machine_busy()?;
        let t0 = Instant::now();
        let out = self.net.client_timeout(&args, GENERATOR_KILL_AFTER);
        running.meter.wait_idle(SETTLE_TIMEOUT);
        let window = t0.elapsed();
        let server_cpu = running.meter.usage()?.saturating_sub(cpu_before);
        let machine = machine_busy()?.saturating_sub(machine_before);
        let softirqd_cpu = softirqd_busy().saturating_sub(softirqd_before);
        let drops = (
            udp_rcvbuf_errors(self.net, true).saturating_sub(drops_before.0),
            udp_rcvbuf_errors(self.net, false).saturating_sub(drops_before.1),
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
}

impl Bench<'_> {
    /// Our daemon's TFTP frames (requests and transfer traffic) steered to AF_XDP so far, from
    /// its metrics (fetched inside the server namespace); `None` for the peers or without the
    /// metric.
    fn steered_tftp_frames(&self, server: Server) -> Option<f64> {
        if !server.is_ours() {
            return None;
        }
        let url = format!("http://{}:8080/metrics", self.net.server_ip());
        let out = self.net.server(&["curl", "-s", "--max-time", "5", &url]);
        let text = String::from_utf8_lossy(&out.stdout);
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

fn summary_line(row: &Row) -> String {
    format!(
        "{:<10} N={:<5} W={}: {:>7.1} MB/s, p50 {:.0} ms, p99 {:.0} ms, failed {}, server CPU {:.2} s, generator CPU {:.2} s",
        row.cell.server.name(),
        row.cell.clients,
        row.cell.windowsize,
        row.mb_per_sec(),
        row.num(&["transfer_ms", "p50"]),
        row.num(&["transfer_ms", "p99"]),
        row.failures_text(),
        row.server_cpu.as_secs_f64(),
        row.num(&["generator_cpu", "total_secs"]),
    )
}

/// `ss` lines of UDP sockets on port 69 in the server namespace.
fn udp_port_69_sockets(net: &TestNet) -> String {
    let out = net.server(&["ss", "-H", "-u", "-a", "-n", "sport = :69"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `UdpRcvbufErrors` of the server's (or the clients') namespace so far.
fn udp_rcvbuf_errors(net: &TestNet, server: bool) -> u64 {
    let argv = ["cat", "/proc/net/snmp"];
    let out = if server {
        net.server(&argv)
    } else {
        net.client(&argv)
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `name` from /usr/sbin or /sbin (sbin may not be on PATH), else PATH.
fn find_sbin(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .with_context(|| format!("looking for {name}"))?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        !found.is_empty(),
        "{name} not found (cargo xtask setup installs it)"
    );
    Ok(PathBuf::from(found))
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
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            let want = NOFILE_LIMIT.min(limit.rlim_max);
            if limit.rlim_cur < want {
                limit.rlim_cur = want;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

/// CPU time (all CPUs, busy states) of the whole machine so far, from /proc/stat.
fn machine_busy() -> anyhow::Result<Duration> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Ok(ticks(busy))
}

/// Waits (at most `budget`) until the machine, the idle server aside, uses less than
/// [`QUIET_CORES`]; says so when it gives up.
fn wait_quiet(server: &CpuMeter, budget: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let machine = machine_busy()?;
        let own = server.usage()?;
        thread::sleep(QUIET_SAMPLE);
        let others = machine_busy()?
            .saturating_sub(machine)
            .saturating_sub(server.usage()?.saturating_sub(own));
        let cores = others.as_secs_f64() / QUIET_SAMPLE.as_secs_f64();
        if cores < QUIET_CORES {
            return Ok(());
        }
        if start.elapsed() >= budget {
            println!(
                "   (other work uses {cores:.2} cores after {} s of waiting for a quiet \
                 machine; measuring anyway)",
                budget.as_secs()
            );
            return Ok(());
        }
    }
}

/// CPU time (user + system) of the kernel's `ksoftirqd/N` threads so far.
fn softirqd_busy() -> Duration {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.contains("(ksoftirqd/") {
            continue;
        }
        // utime and stime are fields 14 and 15 (11 and 12 after the command).
        total += rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    ticks(total)
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

fn ticks(n: u64) -> Duration {
    let hz = clock_ticks_per_sec();
    Duration::from_secs(n / hz) + Duration::from_nanos((n % hz) * 1_000_000_000 / hz)
}

/// How a server's CPU time is read.
#[derive(Debug)]
enum CpuMeter {
    /// A cgroup v2 made for it: `cpu.stat` `usage_usec` (every process in it, ever).
    Cgroup2(PathBuf),
    /// A cgroup v1 `cpuacct` group: `cpuacct.usage` (ns).
    Cgroup1(PathBuf),
    /// No cgroup could be made: utime + stime + cutime + cstime of the process, which misses
    /// children the kernel reaps itself (tftpd-hpa's).
    Proc(u32),
}

impl CpuMeter {
    /// Moves `pid` (just started, before it serves anything) into a new cgroup.
    fn attach(pid: u32, name: &str) -> CpuMeter {
        let group = format!("{CGROUP_PREFIX}{}-{name}", std::process::id());
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mount = |want: &dyn Fn(&str, &str) -> bool| {
            mounts.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && want(f[2], f[3])).then(|| PathBuf::from(f[1]))
            })
        };
        let tries = [
            (
                mount(&|fstype, _| fstype == "cgroup2"),
                CpuMeter::Cgroup2 as fn(PathBuf) -> CpuMeter,
            ),
            (
                mount(&|fstype, opts| {
                    fstype == "cgroup" && opts.split(',').any(|o| o == "cpuacct")
                }),
                CpuMeter::Cgroup1,
            ),
        ];
        for (mount, make) in tries {
            let Some(mount) = mount else { continue };
            let dir = mount.join(&group);
            let moved = fs::create_dir(&dir)
                .and_then(|()| fs::write(dir.join("cgroup.procs"), pid.to_string()));
            let meter = make(dir.clone());
            if moved.is_ok() && meter.usage().is_ok() {
                return meter;
            }
            let _ = fs::remove_dir(&dir);
        }
        CpuMeter::Proc(pid)
    }

    fn method(&self) -> String {
        match self {
            CpuMeter::Cgroup2(dir) => format!("by cgroup v2 {}", dir.display()),
            CpuMeter::Cgroup1(dir) => format!("by cgroup v1 {}", dir.display()),
            CpuMeter::Proc(pid) => format!("from /proc/{pid}/stat (no cgroup could be made)"),
        }
    }

    /// CPU time so far.
    fn usage(&self) -> anyhow::Result<Duration> {
        match self {
            CpuMeter::Cgroup2(dir) => {
                let path = dir.join("cpu.stat");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let usec = text
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                    .with_context(|| format!("no usage_usec in {}", path.display()))?;
                Ok(Duration::from_micros(usec))
            }
            CpuMeter::Cgroup1(dir) => {
                let path = dir.join("cpuacct.usage");
                let ns = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .parse()
                    .with_context(|| format!("parsing {}", path.display()))?;
                Ok(Duration::from_nanos(ns))
            }
            CpuMeter::Proc(pid) => {
                let path = format!("/proc/{pid}/stat");
                let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                // Fields after the command (which may hold spaces) start at field 3.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .map(|v| v.parse().unwrap_or(0))
                    .collect();
                // utime, stime, cutime, cstime are fields 14-17 (11-14 after the command).
                let sum: u64 = f.get(11..15).map_or(0, |v| v.iter().sum());
                Ok(ticks(sum))
            }
        }
    }

    /// Processes in the group (1 for a server with no child at work).
    fn procs(&self) -> Vec<i32> {
        let dir = match self {
            CpuMeter::Cgroup2(dir) | CpuMeter::Cgroup1(dir) => dir,
            CpuMeter::Proc(_) => return Vec::new(),
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Waits (bounded) until no forked child is still at work.
    fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.procs().len() > 1 && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        let dir = match self {
            CpuMeter::Cgroup2(dir) | CpuMeter::Cgroup1(dir) => dir.clone(),
            CpuMeter::Proc(_) => return,
        };
        // Whatever is left in the group (a forking server's children) goes with it.
        for _ in 0..40 {
            let procs = self.procs();
            if procs.is_empty() && fs::remove_dir(&dir).is_ok() {
                return;
            }
            for pid in procs {
                // SAFETY: kill has no memory effects; these are the benchmark's servers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(POLL);
        }
        eprintln!("warning: could not remove cgroup {}", dir.display());
    }
}

/// Removes empty cgroups a killed earlier run left.
fn remove_stale_cgroups() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !f[2].starts_with("cgroup") {
            continue;
        }
        let Ok(entries) = fs::read_dir(f[1]) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(CGROUP_PREFIX)
            {
                // Fails (harmlessly) if processes are still in it.
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
}

/// The rows as a Markdown section: what ran, the table, the ratio to tftpd-hpa, the goal.
fn render(
    rows: &[Row],
    commands: &[(Server, String)],
    quick: bool,
    net: &TestNet,
) -> anyhow::Result<String> {
    let mut s = String::new();
    let command = if quick {
        "cargo xtask bench tftp --quick"
    } else {
        "cargo xtask bench tftp"
    };
    writeln!(s, "## TFTP\n")?;
    writeln!(
        s,
        "`{command}` on {date}, commit {commit}; {cpus} CPUs ({model}), kernel {kernel}.\n",
        date = command_line_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit = git_commit(),
        cpus = thread::available_parallelism().map_or(0, |n| n.get()),
        model = cpu_model(),
        kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    )?;
    writeln!(
        s,
        "N clients (`pxe-bench tftp-load`, {GENERATOR_THREADS} threads, one socket per client \
         and transfer) \
         read a {mib} MiB file with `tsize 0 blksize {BLKSIZE}` (and `windowsize 4` in the W=4 \
         rows), {r100} transfers each at N = 100 and {r1000} at N = 1,000 (all clients start at \
         once: a boot storm); timeout {CLIENT_TIMEOUT_MS} ms, {CLIENT_RETRIES} retries. Each \
         client's first transfer is compared byte for byte, every transfer's length. Servers in \
         `{sns}`, clients in `{cns}`, joined by a veth pair; one server at a time:\n",
        mib = FILE_BYTES >> 20,
        r100 = rounds_for(100),
        r1000 = rounds_for(1000),
        sns = net.server_ns(),
        cns = net.client_ns(),
    )?;
    for (server, command) in commands {
        let note = match server {
            Server::Ours | Server::OursKernel | Server::OursXdp => format!(
                "release build; `BENCH.toml` is `[tftp] listen = \"{}:69\", max_transfers = \
                 {OUR_MAX_TRANSFERS}, port_range = [{}, {}]`",
                net.server_ip(),
                OUR_PORT_RANGE.0,
                OUR_PORT_RANGE.1
            ),
            Server::TftpdHpa => "forks a process per transfer; ignores windowsize".to_owned(),
            Server::Dnsmasq => "one process; no windowsize".to_owned(),
        };
        writeln!(s, "- {}: `{command}` ({note})", server.name())?;
    }
    writeln!(s)?;
    writeln!(
        s,
        "| server | N | W asked / used | MB/s | p50 ms | p99 ms | max ms | completed | failed | \
         server CPU (cores) | server CPU s/GB | generator CPU (cores) | ksoftirqd (cores) | \
         others' CPU (cores) | rcvbuf drops server / clients |"
    )?;
    writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    )?;
    for row in rows {
        let wall = row.num(&["wall_secs"]);
        let gb = row.report["bytes"].as_f64().unwrap_or(0.0) / 1e9;
        let window = row.window.as_secs_f64();
        writeln!(
            s,
            "| {} | {} | {} / {} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {} / {} |",
            row.cell.server.name(),
            row.cell.clients,
            row.cell.windowsize,
            row.windowsize_used()
                .map_or_else(|| "-".to_owned(), |w| w.to_string()),
            row.mb_per_sec(),
            row.num(&["transfer_ms", "p50"]),
            row.num(&["transfer_ms", "p99"]),
            row.num(&["transfer_ms", "max"]),
            row.report["completed"],
            row.failures_text(),
            row.server_cpu.as_secs_f64() / window,
            if gb > 0.0 {
                row.server_cpu.as_secs_f64() / gb
            } else {
                f64::NAN
            },
            row.num(&["generator_cpu", "total_secs"]) / wall,
            row.softirqd_cpu.as_secs_f64() / window,
            row.others_cpu.as_secs_f64() / window,
            row.drops.0,
            row.drops.1,
        )?;
    }
    writeln!(s)?;
    for row in rows {
        let Some(map) = row.report["failures"].as_object() else {
            continue;
        };
        for (reason, v) in map {
            writeln!(
                s,
                "- {} N={} W={}: {} {reason}, the first: {}",
                row.cell.server.name(),
                row.cell.clients,
                row.cell.windowsize,
                v["count"],
                v["first"].as_str().unwrap_or("?"),
            )?;
        }
    }
    if rows.iter().any(|r| r.failed() > 0) {
        writeln!(s)?;
    }
    let ratios = ratios(rows);
    if !ratios.is_empty() {
        let text: Vec<String> = ratios
            .iter()
            .map(|(n, w, r)| format!("N={n} W={w}: {r:.2}x"))
            .collect();
        writeln!(
            s,
            "pxe-daemon / tftpd-hpa aggregate throughput, same run: {}.\n",
            text.join("; ")
        )?;
    }
    if !quick {
        let ours_failed_1000: u64 = rows
            .iter()
            .filter(|r| r.cell.server == Server::Ours && r.cell.clients >= 1000)
            .map(Row::failed)
            .sum();
        let best_1000 = ratios
            .iter()
            .filter(|(n, _, _)| *n >= 1000)
            .map(|(_, _, r)| *r)
            .fold(f64::NAN, f64::max);
        writeln!(
            s,
            "Goal (issue #4): no failed transfer at N = 1,000: {}; at least {GOAL_RATIO:.0}x \
             tftpd-hpa's throughput at N = 1,000: {} (best {best_1000:.2}x).\n",
            if ours_failed_1000 == 0 {
                "met".to_owned()
            } else {
                format!("NOT met ({ours_failed_1000} failed)")
            },
            if best_1000 >= GOAL_RATIO {
                "met"
            } else {
                "NOT met"
            },
        )?;
    }
    writeln!(
        s,
        "How to read it: MB/s is 10^6 bytes of completed transfers per second of the run (first \
         request to last block); p50/p99/max are per-transfer times, request to last block. CPU \
         columns are CPU time over the run's wall time (1.00 = one core busy): the server's from \
         a cgroup made for it (forked children included), the generator's from getrusage, \
         ksoftirqd's (network receive work the kernel deferred from either side) from its \
         threads' /proc stat, others' = the rest of the machine's busy time (other work sharing \
         the 2 cores; each cell first waits up to {quiet} s for it to fall under {QUIET_CORES} \
         cores). Server CPU \
         s/GB (CPU seconds per 10^9 bytes delivered) is the figure other load disturbs least. \
         On a veth pair the sender's CPU also carries the receiver's side of the stack (softirq \
         in the sending task), so each side's CPU includes delivering its datagrams to the \
         other. Rcvbuf drops are datagrams the kernel dropped for a full socket buffer \
         (`UdpRcvbufErrors`) in each namespace: on the server's side, a listener that does not \
         keep up with the storm of requests. tftpd-hpa and dnsmasq do not implement windowsize: \
         their W=4 rows are windowsize-1 transfers (W used).",
        quiet = if quick { QUIET_WAIT_QUICK } else { QUIET_WAIT }.as_secs(),
    )?;
    Ok(s)
}

/// (clients, windowsize, ours / tftpd-hpa MB/s) for every cell both ran.
fn ratios(rows: &[Row]) -> Vec<(u32, u16, f64)> {
    rows.iter()
        .filter(|r| r.cell.server == Server::Ours)
        .filter_map(|ours| {
            let hpa = rows.iter().find(|r| {
                r.cell.server == Server::TftpdHpa
                    && r.cell.clients == ours.cell.clients
                    && r.cell.windowsize == ours.cell.windowsize
            })?;
            Some((
                ours.cell.clients,
                ours.cell.windowsize,
                ours.mb_per_sec() / hpa.mb_per_sec(),
            ))
        })
        .collect()
}

/// The quick run's verdict: every transfer completed with the right bytes.
fn check_quick(rows: &[Row]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for row in rows {
        let expected = u64::from(row.cell.clients) * u64::from(row.cell.rounds);
        let completed = row.report["completed"].as_u64().unwrap_or(0);
        let verified = row.report["verified"].as_u64().unwrap_or(0);
        if row.failed() != 0 || completed != expected || verified != u64::from(row.cell.clients) {
            problems.push(format!(
                "{}: {completed} of {expected} transfers completed, {verified} of {} compared \
                 byte for byte, failed: {}",
                row.cell.server.name(),
                row.cell.clients,
                row.failures_text()
            ));
        }
    }
    ensure!(
        problems.is_empty(),
        "TFTP benchmark (quick) FAILED:\n  {}",
        problems.join("\n  ")
    );
    println!("== quick TFTP benchmark passed: every transfer completed with the right bytes");
    Ok(())
}

/// Replaces the TFTP section of `path` (between the markers), creating the file with its
/// header if missing and appending the section if it has none; other sections stay as they are.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => results_header(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let block = format!("{BEGIN_MARKER}\n{}\n{END_MARKER}", section.trim_end());
    let updated = match (text.find(BEGIN_MARKER), text.find(END_MARKER)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{block}{}",
            &text[..begin],
            &text[end + END_MARKER.len()..]
        ),
        (None, None) => format!("{}\n\n{block}\n", text.trim_end()),
        _ => bail!(
            "{} has a broken TFTP section (markers {BEGIN_MARKER} and {END_MARKER} out of \
             order or alone): fix it by hand",
            path.display()
        ),
    };
    let tmp = path.with_extension("md.tmp");
    fs::write(&tmp, updated).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn results_header() -> String {
    "# Benchmark results\n\n\
     Written by `cargo xtask bench <name>`: each benchmark replaces its own section (between \
     its markers) and leaves the rest of the file alone.\n\n\
     The machine: 2 cores shared with other work (each section says how much CPU the rest of \
     the machine used during its run), Debian 12. Servers run in one network namespace and the \
     load generator (`pxe-bench`, release build) in another, joined by a veth pair on \
     198.18.0.0/15, so servers, generator and both ends of the network stack share the same \
     two cores.\n"
        .to_owned()
}

fn command_line_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

fn git_commit() -> String {
    let root = workspace::root().to_string_lossy().into_owned();
    let commit = command_line_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    // The results file itself does not make the code dirty.
    let status = command_line_output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            ".",
            &format!(":!{RESULTS_FILE}"),
        ],
    );
    let dirty = !status.is_empty();
    if dirty {
        format!("{commit} (with uncommitted changes)")
    } else {
        commit
    }
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "?".to_owned(), |(_, m)| m.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_only_its_markers() {
        let dir = std::env::temp_dir().join(format!("xtask-tftp-results-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("RESULTS.md");
        let _ = fs::remove_file(&path);
        write_section(&path, "one").unwrap();
        let first = fs::read_to_string(&path).unwrap();
        assert!(first.starts_with("# Benchmark results"));
        assert!(first.contains(&format!("{BEGIN_MARKER}\none\n{END_MARKER}")));
        let other = "<!-- dhcp:begin -->\nkeep me\n<!-- dhcp:end -->\n";
        fs::write(&path, format!("{first}\n{other}")).unwrap();
        write_section(&path, "two").unwrap();
        let second = fs::read_to_string(&path).unwrap();
        assert!(second.contains(&format!("{BEGIN_MARKER}\ntwo\n{END_MARKER}")));
        assert!(!second.contains("\none\n"));
        assert!(second.contains(other));
        fs::remove_dir_all(&dir).unwrap();
    }
}
