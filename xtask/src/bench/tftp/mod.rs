//! `cargo xtask bench tftp`: our daemon, tftpd-hpa and dnsmasq's TFTP, one after the other on
//! the same veth pair, each read by `pxe-bench tftp-load` (N concurrent clients fetching a
//! 1 MiB file with blksize 1468, windowsize 1 and 4) at N = 100 and 1,000. Each server's CPU
//! time is read from a cgroup made for it ([`cpu::CpuMeter`]), so the children of forking
//! tftpd-hpa count. `--quick` is the ~15 s check: N = 100, windowsize 4, our daemon and
//! tftpd-hpa, failing on any failed transfer.
//!
//! [`cpu::CpuMeter`]: crate::bench::cpu::CpuMeter

mod render;
mod run;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::ensure;
pub(crate) use run::Fixture;
use serde_json::Value;

use super::{peers, results};
use crate::{setup, workspace};

/// Name of the file every client reads.
const FILE_NAME: &str = "bench-1m.bin";
/// Its size: an NBP-sized file.
const FILE_BYTES: usize = 1 << 20;
/// Block size asked for: fills a 1500-byte MTU.
const BLKSIZE: u16 = 1468;
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
/// Generator threads: one thread saturates a core before the AF_XDP datapath does (seen with
/// perf: the generator at 100% of a core, the server's thread at 18%, a core idle).
const GENERATOR_THREADS: u32 = 2;
/// Before each cell the benchmark waits (at most this long, `--quick` at most
/// [`QUIET_WAIT_QUICK`]) for the rest of the machine to use less than [`QUIET_CORES`]: the
/// 2 cores are shared, and a build running beside the benchmark halves what it measures.
const QUIET_WAIT: Duration = Duration::from_secs(30);
const QUIET_WAIT_QUICK: Duration = Duration::from_secs(3);
const QUIET_CORES: f64 = 0.3;
/// How long one look at the machine's load lasts.
const QUIET_SAMPLE: Duration = Duration::from_secs(1);
/// Our daemon's `[tftp]`: the defaults, written out.
const OUR_MAX_TRANSFERS: u32 = 10_000;
const OUR_PORT_RANGE: (u16, u16) = (30_000, 30_999);
/// Section of bench/RESULTS.md.
const SECTION: &str = "tftp";
/// The goal: our aggregate throughput over tftpd-hpa's, in the same run.
const GOAL_RATIO: f64 = 3.0;

/// Options of `cargo xtask bench tftp`.
#[derive(Debug, clap::Args)]
pub(crate) struct TftpArgs {
    /// The ~15 s check: 100 clients, windowsize 4, our daemon and tftpd-hpa; fails if any
    /// transfer fails or returns wrong bytes. Leaves bench/RESULTS.md alone.
    #[arg(long)]
    quick: bool,
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
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
    pub(crate) fn name(self) -> &'static str {
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
pub(crate) struct Cell {
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
pub(crate) struct Row {
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
    pub(crate) fn mb_per_sec(&self) -> f64 {
        self.num(&["aggregate_mb_per_sec"])
    }

    /// Failed transfers.
    pub(crate) fn failed(&self) -> u64 {
        self.report["failed"].as_u64().unwrap_or(u64::MAX)
    }

    /// Server CPU seconds per 10^9 bytes delivered.
    pub(crate) fn server_cpu_per_gb(&self) -> f64 {
        let gb = self.report["bytes"].as_f64().unwrap_or(0.0) / 1e9;
        if gb > 0.0 {
            self.server_cpu.as_secs_f64() / gb
        } else {
            f64::NAN
        }
    }

    /// The generator's CPU time over the run's wall time, in cores.
    pub(crate) fn generator_cores(&self) -> f64 {
        self.num(&["generator_cpu", "total_secs"]) / self.num(&["wall_secs"])
    }

    /// The window most transfers used.
    pub(crate) fn windowsize_used(&self) -> Option<u64> {
        self.report["negotiated"]
            .as_array()?
            .iter()
            .max_by_key(|n| n["transfers"].as_u64().unwrap_or(0))
            .and_then(|n| n["windowsize"].as_u64())
    }

    /// Failed transfers with their reasons.
    pub(crate) fn failures_text(&self) -> String {
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
pub(crate) fn run(args: &TftpArgs) -> anyhow::Result<()> {
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
    let section = render::section(&rows, &commands, args.quick, &fixture.net)?;
    println!("\n{section}");
    println!(
        "== TFTP benchmark done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.quick {
        return render::check_quick(&rows);
    }
    let path = results::write_section(SECTION, &section)?;
    println!("== wrote the TFTP section of {}", path.display());
    Ok(())
}

/// Each server's command line, as shown in the results.
pub(crate) type Commands = Vec<(Server, String)>;

/// The binaries run.
#[derive(Debug)]
pub(crate) struct Bins {
    /// The release pxe-daemon.
    pub daemon: PathBuf,
    /// The release pxe-bench.
    pub generator: PathBuf,
}

impl Bins {
    /// Builds the release daemon and generator and checks the peers are installed.
    pub(crate) fn build() -> anyhow::Result<Bins> {
        let release = workspace::build_release_bins()?;
        for peer in ["in.tftpd", "dnsmasq"] {
            peers::find_sbin(peer)?;
        }
        Ok(Bins {
            daemon: release.join("pxe-daemon"),
            generator: release.join("pxe-bench"),
        })
    }
}
