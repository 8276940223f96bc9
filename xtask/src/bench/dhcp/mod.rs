//! `cargo xtask bench dhcp`: perfdhcp against pxe-daemon and against dnsmasq, in proxy mode and
//! in full (four-way) mode, one after the other on the same veth, at a series of rates.
//!
//! Every step starts the server fresh (an empty lease store), runs perfdhcp from the client
//! namespace at one rate for a fixed period, and reads the server's CPU time (`/proc/PID/stat`)
//! before and after, perfdhcp's own CPU time (`getrusage` of the reaped child), the machine's
//! busy time and each namespace's UDP receive-buffer drops. A server that loses 1% or more at a
//! rate (twice: a failing step is run once more, the machine is shared) is not driven faster.

mod report;
pub(crate) mod servers;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use pxe_tests::TestNet;
use servers::{Addressing, Mode, Running, Server, Setting};

use crate::{
    bench::{
        cpu::{self, MachineTime},
        perfdhcp::{self, Load},
        results,
        run_info::{self, first_line, last_word},
        snmp::UdpCounters,
    },
    cmd, workspace,
};

/// Loss at or above which a rate counts as not sustained.
pub(crate) const LOSS_LIMIT: f64 = 0.01;
/// Rates of the full run, new exchanges per second. perfdhcp saturates near 70k answers/s on
/// the project's 2 cores; dnsmasq's full mode with its lease file on disk loses at 5k/s.
const RATES: &[u32] = &[
    500, 1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 50_000, 60_000,
];
/// Seconds each rate runs for in the full run.
const STEP_SECS: f64 = 5.0;
/// The one rate of `--quick`.
const QUICK_RATE: u32 = 2_000;
/// Seconds of each `--quick` step.
const QUICK_STEP_SECS: f64 = 2.0;
/// Attempts at a rate before it counts as not sustained.
const ATTEMPTS: u32 = 2;
/// Distinct clients (MACs) perfdhcp simulates: below the pool's 65,279 addresses, so a full
/// server never runs dry, and many enough that most exchanges of a step are new clients.
const CLIENTS: u32 = 50_000;
/// Bound on one perfdhcp run beyond its period.
const PERFDHCP_SLACK: Duration = Duration::from_secs(30);
/// Pause after a server stops, so the next one starts on a quiet link.
const SETTLE: Duration = Duration::from_millis(300);
/// perfdhcp sent fewer than this share of the exchanges asked for: the client was the limit.
const CLIENT_BOUND_SHARE: f64 = 0.97;
/// Before a step, the rest of the machine counts as quiet below this share of one core.
const QUIET_BUSY_SHARE: f64 = 0.5;
/// Window over which the machine's busy time is sampled before a step.
const QUIET_SAMPLE: Duration = Duration::from_millis(500);
/// Longest wait for a quiet machine before a step, by default (then it runs anyway, and says
/// so).
const QUIET_WAIT_SECS_DEFAULT: u64 = 30;
/// Tag of the namespaces (`pxet-dhcpbnch-s`, `pxet-dhcpbnch-c`).
const NET_TAG: &str = "dhcpbnch";
/// Section of bench/RESULTS.md.
const SECTION: &str = "dhcp";

/// Options of `cargo xtask bench dhcp`.
#[derive(Debug, clap::Args)]
pub(crate) struct DhcpArgs {
    /// A short run (one rate per mode, 2 s each, about 20 s in all) that only prints its table
    /// and fails if a server answers nothing; bench/RESULTS.md is left alone.
    #[arg(long)]
    quick: bool,
    /// Rates to try, new exchanges per second, comma-separated [default: 500 to 60000].
    #[arg(long, value_delimiter = ',', value_name = "RATE,...")]
    rates: Option<Vec<u32>>,
    /// Seconds each rate runs for [default: 5; --quick: 2].
    #[arg(long, value_name = "SECS")]
    step_secs: Option<f64>,
    /// Modes to measure [default: proxy,full].
    #[arg(long, value_delimiter = ',', value_enum, value_name = "MODE,...")]
    modes: Option<Vec<ModeArg>>,
    /// Longest wait, before each step, for other work on the machine to fall under half a core
    /// [default: 30; --quick: 0].
    #[arg(long, value_name = "SECS")]
    quiet_wait_secs: Option<u64>,
    /// `--xdp-mode` of pxe-daemon (auto, driver, skb, off).
    #[arg(long, default_value = "auto")]
    xdp_mode: String,
}

/// A mode on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Proxy,
    Full,
}

/// One server at one rate.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    /// Proxy or full.
    pub mode: Mode,
    /// Which server.
    pub server: Server,
    /// New exchanges per second asked of perfdhcp.
    pub rate: u32,
    /// perfdhcp's test period.
    pub period: Duration,
    /// What perfdhcp reported.
    pub report: perfdhcp::Report,
    /// The server's CPU time during the run.
    pub server_cpu: Duration,
    /// perfdhcp's CPU time.
    pub perfdhcp_cpu: Duration,
    /// Wall time of the perfdhcp run (period and exit wait).
    pub wall: Duration,
    /// Busy CPU time of the whole machine during the run.
    pub machine_busy: Duration,
    /// Datagrams the server's namespace dropped for a full socket buffer.
    pub server_rcvbuf_drops: u64,
    /// Datagrams perfdhcp's namespace dropped for a full socket buffer.
    pub client_rcvbuf_drops: u64,
    /// Full mode: bytes in the server's lease file after the run (`None`: no file).
    pub lease_file_bytes: Option<u64>,
    /// Which attempt at this rate this is (1 or 2).
    pub attempt: u32,
    /// Whether the rest of the machine was still busy when the step began (after waiting up to
    /// the pace's quiet wait): other engineers' work competed with it.
    pub busy_start: bool,
}

impl Step {
    /// Exchanges that completed per second of the period.
    pub(crate) fn answered_per_sec(&self) -> f64 {
        self.report.completed() as f64 / self.period.as_secs_f64()
    }

    /// Exchanges perfdhcp began per second of the period.
    pub(crate) fn sent_per_sec(&self) -> f64 {
        self.report.started() as f64 / self.period.as_secs_f64()
    }

    /// Whether the loss stayed under [`LOSS_LIMIT`].
    pub(crate) fn sustained(&self) -> bool {
        self.report.started() > 0 && self.report.loss() < LOSS_LIMIT
    }

    /// Whether perfdhcp could not send at the rate asked (the client, not the server, limited).
    pub(crate) fn client_bound(&self) -> bool {
        self.sent_per_sec() < f64::from(self.rate) * CLIENT_BOUND_SHARE
    }

    /// Server CPU time per completed exchange.
    pub(crate) fn server_cpu_per_exchange(&self) -> Option<Duration> {
        per(self.server_cpu, self.report.completed())
    }

    /// Busy CPU time of everything but the server and perfdhcp (other engineers' work, kernel
    /// threads, softirq time charged to no process), as a share of one core.
    pub(crate) fn rest_of_machine(&self) -> f64 {
        let rest = self
            .machine_busy
            .saturating_sub(self.server_cpu + self.perfdhcp_cpu);
        rest.as_secs_f64() / self.wall.as_secs_f64()
    }
}

fn per(time: Duration, count: u64) -> Option<Duration> {
    u32::try_from(count)
        .ok()
        .filter(|&c| c > 0)
        .map(|c| time / c)
}

/// How long each step runs, how often a failing rate is tried, how long a step waits for the
/// machine to quiet down.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// perfdhcp's test period.
    period: Duration,
    /// Attempts at a rate before it counts as not sustained.
    attempts: u32,
    /// Longest wait for a quiet machine before each step.
    quiet_wait: Duration,
}

/// Receive buffer wanted for sockets that do not ask for one: perfdhcp's. With the default
/// (208 KiB) perfdhcp's own socket overflows whenever the busy machine keeps it off the CPU for a
/// few milliseconds, and those drops would be counted as the server's loss.
const CLIENT_RCVBUF_BYTES: u64 = 4 << 20;

/// `net.core.rmem_default` raised for the run (it is not per network namespace on this kernel)
/// and put back when dropped, also when the run fails.
struct RmemDefault {
    before: Option<u64>,
    now: u64,
}

impl RmemDefault {
    const PATH: &'static str = "/proc/sys/net/core/rmem_default";
    const MAX_PATH: &'static str = "/proc/sys/net/core/rmem_max";

    fn read(path: &str) -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Raises the default to `want` (no higher than `rmem_max`), never lowers it.
    fn raise(want: u64) -> RmemDefault {
        let before = Self::read(Self::PATH);
        let target = want.min(Self::read(Self::MAX_PATH).unwrap_or(want));
        match before {
            Some(b) if b < target => {
                if std::fs::write(Self::PATH, target.to_string()).is_ok() {
                    return RmemDefault {
                        before,
                        now: target,
                    };
                }
                RmemDefault {
                    before: None,
                    now: b,
                }
            }
            b => RmemDefault {
                before: None,
                now: b.unwrap_or(0),
            },
        }
    }

    fn in_effect(&self) -> u64 {
        self.now
    }
}

impl Drop for RmemDefault {
    fn drop(&mut self) {
        if let Some(before) = self.before {
            let _ = std::fs::write(Self::PATH, before.to_string());
        }
    }
}

/// What the run was, for the report.
#[derive(Debug)]
pub(crate) struct RunInfo {
    /// The command line that made it.
    pub command: String,
    /// Whether it was `--quick`.
    pub quick: bool,
    /// Seconds per step.
    pub step_secs: f64,
    /// Longest wait for a quiet machine before each step, seconds.
    pub quiet_wait_secs: u64,
    /// Distinct clients.
    pub clients: u32,
    /// The benchmark's addresses.
    pub addressing: Addressing,
    /// Our daemon's XDP attach mode.
    pub xdp_attach_mode: String,
    /// Filesystem of the lease files (`stat -f`).
    pub lease_fs: String,
    /// `net.core.rmem_default` during the run, bytes.
    pub rcvbuf_default: u64,
    /// Load average at the start.
    pub loadavg: String,
    /// When it started, UTC.
    pub date: String,
    /// The commit measured (`+ changes` when the tree was dirty).
    pub commit: String,
    /// CPUs, model, kernel.
    pub machine: String,
    /// perfdhcp's and dnsmasq's versions.
    pub peers: String,
}

/// Runs the benchmark: setup, release build, then every mode, rate and server.
pub(crate) fn run(args: &DhcpArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "the DHCP benchmark makes network namespaces: run it as root"
    );
    cmd::run(workspace::cargo().args(["build", "--release", "-p", "pxe-daemon"]))
        .context("building the release pxe-daemon for the benchmark")?;
    let daemon = workspace::release_daemon_bin(&workspace::target_dir()?);
    ensure!(daemon.is_file(), "no daemon at {}", daemon.display());

    let (rates, step_secs) = if args.quick {
        (
            args.rates.clone().unwrap_or_else(|| vec![QUICK_RATE]),
            args.step_secs.unwrap_or(QUICK_STEP_SECS),
        )
    } else {
        (
            args.rates.clone().unwrap_or_else(|| RATES.to_vec()),
            args.step_secs.unwrap_or(STEP_SECS),
        )
    };
    ensure!(
        !rates.is_empty() && rates.iter().all(|&r| r > 0),
        "--rates needs positive rates"
    );
    ensure!(
        step_secs > 0.0 && step_secs <= 600.0,
        "--step-secs must be in (0, 600]"
    );
    let modes: Vec<Mode> = match &args.modes {
        None => Mode::ALL.to_vec(),
        Some(m) => m
            .iter()
            .map(|m| match m {
                ModeArg::Proxy => Mode::Proxy,
                ModeArg::Full => Mode::Full,
            })
            .collect(),
    };
    let pace = Pace {
        period: Duration::from_secs_f64(step_secs),
        attempts: if args.quick { 1 } else { ATTEMPTS },
        // --quick must stay short: it does not wait for the machine to quiet down.
        quiet_wait: Duration::from_secs(args.quiet_wait_secs.unwrap_or(if args.quick {
            0
        } else {
            QUIET_WAIT_SECS_DEFAULT
        })),
    };

    // Configs and lease files, in the default temporary directory: the root filesystem here,
    // where a production lease file would be.
    let dir = tempfile::Builder::new()
        .prefix("pxe-bench-dhcp-")
        .tempdir()
        .context("creating a temporary directory for configs and lease files")?;
    let net = TestNet::new(NET_TAG);
    let rmem = RmemDefault::raise(CLIENT_RCVBUF_BYTES);
    let addressing = Addressing::beside(&net);
    addressing.add_to(&net)?;
    let setting = Setting {
        net: &net,
        daemon_bin: &daemon,
        addressing,
        dir: dir.path(),
        xdp_mode: &args.xdp_mode,
        daemon_args: &[],
    };
    let mut info = RunInfo {
        command: run_info::command_line(),
        quick: args.quick,
        step_secs,
        quiet_wait_secs: pace.quiet_wait.as_secs(),
        clients: CLIENTS,
        addressing,
        xdp_attach_mode: String::from("?"),
        lease_fs: lease_fs(dir.path()),
        rcvbuf_default: rmem.in_effect(),
        loadavg: run_info::loadavg(),
        date: run_info::date_utc(),
        commit: run_info::commit(),
        machine: run_info::machine(),
        peers: format!(
            "perfdhcp {}, dnsmasq {}",
            last_word(&first_line(&["perfdhcp", "-v"])),
            last_word(
                first_line(&["dnsmasq", "--version"])
                    .split("Copyright")
                    .next()
                    .unwrap_or_default()
            )
        ),
    };
    println!(
        "== DHCP benchmark: servers on {} ({}/{}), perfdhcp on {}, rates {rates:?}/s for {step_secs} s each",
        net.server_ns(),
        addressing.server,
        Addressing::PREFIX_LEN,
        addressing.client,
    );

    let started = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    for &mode in &modes {
        let mut done = [false; 2];
        for &rate in &rates {
            for server in Server::ALL {
                if done[server.index()] {
                    continue;
                }
                let mut attempt = 1;
                let step = loop {
                    let step = measure(&setting, server, mode, rate, &pace, attempt, &mut info)?;
                    println!("   {}", report::step_line(&step));
                    if step.sustained() || attempt >= pace.attempts {
                        break step;
                    }
                    attempt += 1;
                };
                done[server.index()] = !step.sustained();
                steps.push(step);
            }
        }
    }
    println!(
        "== measured {} steps in {:.0} s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );

    let section = report::render(&info, &steps);
    println!("\n{section}");
    if args.quick {
        println!("(--quick: {} left alone)", results::RESULTS_FILE);
    } else {
        let path = results::write_section(SECTION, &section)?;
        println!("== wrote {}", path.display());
    }
    Ok(())
}

/// Runs one step: a fresh server, perfdhcp at `rate` for the pace's period, the figures around
/// it.
fn measure(
    s: &Setting<'_>,
    server: Server,
    mode: Mode,
    rate: u32,
    pace: &Pace,
    attempt: u32,
    info: &mut RunInfo,
) -> anyhow::Result<Step> {
    let period = pace.period;
    let quiet = cpu::wait_quiet(quiet_machine(pace.quiet_wait), None)?;
    let mut running = Running::start(server, mode, s)?;
    if let Some(xdp) = running.xdp_attach_mode() {
        xdp.clone_into(&mut info.xdp_attach_mode);
    }
    let load = Load {
        exchange: mode.exchange(),
        rate,
        period,
        clients: CLIENTS,
        local: s.addressing.client,
        server: s.addressing.server,
    };
    let argv = load.argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();

    let pid = running.pid();
    let server_udp = UdpCounters::read(s.net, true)?;
    let client_udp = UdpCounters::read(s.net, false)?;
    let children_before = cpu::reaped_children_time();
    let machine_before = MachineTime::now()?;
    let server_before = cpu::process_time(pid)?;
    let wall_start = Instant::now();
    let out = s
        .net
        .client_timeout(&argv, period + perfdhcp::EXIT_WAIT + PERFDHCP_SLACK);
    let wall = wall_start.elapsed();
    let server_after = cpu::process_time(pid);
    let machine_after = MachineTime::now()?;
    let perfdhcp_cpu = cpu::reaped_children_time().saturating_sub(children_before);
    let server_rcvbuf_drops = UdpCounters::read(s.net, true)?
        .since(&server_udp)
        .rcvbuf_errors;
    let client_rcvbuf_drops = UdpCounters::read(s.net, false)?
        .since(&client_udp)
        .rcvbuf_errors;

    let alive = running.alive();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fail = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{what}\n+ {}\n--- perfdhcp stdout ---\n{stdout}--- perfdhcp stderr ---\n{}\
             --- {} log ---\n{}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr),
            server.label(),
            running.log()
        )
    };
    if !alive {
        return Err(fail(format!(
            "{} died during the {} step at {rate}/s",
            server.label(),
            mode.label()
        )));
    }
    // perfdhcp exits 3 when some exchanges did not complete: that is a result, not a failure.
    if !matches!(out.status.code(), Some(0 | 3)) {
        return Err(fail(format!("perfdhcp failed ({})", out.status)));
    }
    let report = perfdhcp::Report::parse(&stdout);
    if report.started() == 0 {
        return Err(fail("perfdhcp reported no exchange sent".into()));
    }
    if report.completed() == 0 {
        return Err(fail(format!(
            "{} answered nothing in {} mode at {rate}/s",
            server.label(),
            mode.label()
        )));
    }
    let server_cpu = server_after
        .with_context(|| format!("{} CPU time after the step", server.label()))?
        .saturating_sub(server_before);
    let lease_file_bytes = match mode {
        Mode::Proxy => None,
        Mode::Full => std::fs::metadata(servers::lease_file(server, s.dir))
            .ok()
            .map(|m| m.len()),
    };
    running.stop();
    std::thread::sleep(SETTLE);
    Ok(Step {
        mode,
        server,
        rate,
        period,
        report,
        server_cpu,
        perfdhcp_cpu,
        wall,
        machine_busy: machine_after.since(machine_before).not_idle(),
        server_rcvbuf_drops,
        client_rcvbuf_drops,
        lease_file_bytes,
        attempt,
        busy_start: !quiet,
    })
}

/// The quiet machine a step waits for (up to `wait`): other work under [`QUIET_BUSY_SHARE`]
/// of one core over [`QUIET_SAMPLE`]. The servers of the last step are stopped by then.
pub(crate) fn quiet_machine(wait: Duration) -> cpu::Quiet {
    cpu::Quiet {
        below_cores: QUIET_BUSY_SHARE,
        sample: QUIET_SAMPLE,
        wait,
    }
}

/// The filesystem type of `dir`, as `df` names it.
pub(crate) fn lease_fs(dir: &std::path::Path) -> String {
    let dir = dir.to_string_lossy();
    let out = std::process::Command::new("df")
        .args(["--output=fstype,target", &dir])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .map(|l| {
                let mut words = l.split_whitespace();
                let fs = words.next().unwrap_or("?");
                let mount = words.next().unwrap_or("?");
                format!("{fs} (mounted on {mount})")
            })
            .unwrap_or_else(|| String::from("?")),
        _ => String::from("?"),
    }
}
