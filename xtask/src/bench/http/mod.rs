//! `cargo xtask bench http`: pxe-daemon against nginx (sendfile on) on the same files, in the
//! test harness's namespaces, one server after the other in one run.
//!
//! 1. Large: 100 keep-alive connections download a 200 MiB file over and over for a fixed time
//!    (`pxe-bench http-load`, which drops body bytes in the kernel so the client stays cheap):
//!    aggregate throughput, server CPU time per GB, peak RSS of each server.
//! 2. Small: wrk keep-alive at a few concurrency levels on pxe-daemon's per-machine iPXE script
//!    (`/ipxe?mac=...`, rendered from a profile on every request) and on nginx serving a static
//!    file with the same bytes (nginx cannot render): requests/s, latency p50/p99, CPU per
//!    request.
//!
//! Around every run the server's CPU time (`/proc/PID/stat`, nginx's master and workers), the
//! load generator's (the reaped child's rusage) and the machine's (`/proc/stat`) are read: the
//! machine has 2 cores shared by everything, so CPU per byte or per request is the fairer
//! figure when the client saturates first. Each server's bytes are checked once against the
//! file before any run. The full run writes its section of bench/RESULTS.md; `--quick` only
//! prints.

mod load;
mod report;
mod servers;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, LazyLock,
    },
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};
use load::{LargeRun, SmallRun};
use pxe_tests::TestNet;
use report::{Info, Results};
use servers::{Fixture, Server};

use super::results;
use crate::workspace;

/// Concurrent connections of the large-download runs (the figure).
const LARGE_CONNECTIONS: u32 = 100;
/// Seconds of each large-download run, full and `--quick`.
const LARGE_SECS: (f64, f64) = (10.0, 3.0);
/// Rounds, full and `--quick`: each server runs each load once per round, and who goes first
/// alternates, so that the other engineers' load on the machine falls on both alike.
const ROUNDS: (u32, u32) = (3, 1);
/// wrk connection counts, full and `--quick`.
const SMALL_CONNECTIONS: (&[u32], &[u32]) = (&[16, 64, 256], &[64]);
/// Seconds of each wrk run, full and `--quick`.
const SMALL_SECS: (u64, u64) = (4, 2);
/// Tag of the namespaces (`pxet-httpbnch-s`, `pxet-httpbnch-c`).
const NET_TAG: &str = "httpbnch";
/// Section of bench/RESULTS.md.
const SECTION: &str = "http";

/// Options of `cargo xtask bench http`.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    /// A short run (about 15 s of load) that checks both servers serve the right bytes and
    /// fails if one serves nothing; prints its table, leaves bench/RESULTS.md alone.
    #[arg(long)]
    quick: bool,
    /// Seconds of each large-download run [default: 10; --quick: 3].
    #[arg(long, value_name = "SECS")]
    large_secs: Option<f64>,
    /// Rounds: each server runs each load once per round, who goes first alternating
    /// [default: 3; --quick: 1].
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// wrk connection counts, comma-separated [default: 16,64,256; --quick: 64].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    small_connections: Option<Vec<u32>>,
    /// Seconds of each wrk run [default: 4; --quick: 2].
    #[arg(long, value_name = "SECS")]
    small_secs: Option<u64>,
}

/// The run's parameters, defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `--quick`.
    pub quick: bool,
    /// Length of each large run.
    pub large: Duration,
    /// Rounds of every load.
    pub rounds: u32,
    /// wrk connection counts.
    pub small_connections: Vec<u32>,
    /// Length of each wrk run.
    pub small: Duration,
}

impl Plan {
    fn from_args(args: &HttpArgs) -> anyhow::Result<Plan> {
        fn pick<T>(quick: bool, (full, short): (T, T)) -> T {
            if quick {
                short
            } else {
                full
            }
        }
        let q = args.quick;
        let large_secs = args.large_secs.unwrap_or(pick(q, LARGE_SECS));
        let plan = Plan {
            quick: args.quick,
            large: Duration::try_from_secs_f64(large_secs)
                .ok()
                .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(600))
                .context("--large-secs must be 1 to 600")?,
            rounds: args.rounds.unwrap_or(pick(q, ROUNDS)),
            small_connections: args
                .small_connections
                .clone()
                .unwrap_or_else(|| pick(q, SMALL_CONNECTIONS).to_vec()),
            small: Duration::from_secs(args.small_secs.unwrap_or(pick(q, SMALL_SECS))),
        };
        ensure!((1..=10).contains(&plan.rounds), "--rounds must be 1 to 10");
        ensure!(
            !plan.small_connections.is_empty()
                && plan
                    .small_connections
                    .iter()
                    .all(|c| (1..=10_000).contains(c)),
            "--small-connections must be 1 to 10000 each"
        );
        ensure!(
            (1..=600).contains(&plan.small.as_secs()),
            "--small-secs must be 1 to 600"
        );
        Ok(plan)
    }
}

/// Set by SIGINT or SIGTERM: the run stops after the step under way and cleans up.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// Lets SIGINT and SIGTERM end the run through the normal error path, so that the namespaces,
/// servers and files are removed (the default action would kill xtask without its destructors).
fn catch_interrupts() -> anyhow::Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED))
            .with_context(|| format!("catching signal {signal}"))?;
    }
    Ok(())
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

/// Runs setup's packages, builds the release daemon and pxe-bench, then the benchmark.
pub(crate) fn run(args: &HttpArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "the HTTP benchmark makes network namespaces: run it as root"
    );
    let plan = Plan::from_args(args)?;
    crate::setup::run()?;
    let release = workspace::build_release_bins()?;
    let (daemon_bin, client_bin) = (release.join("pxe-daemon"), release.join("pxe-bench"));
    for bin in [&daemon_bin, &client_bin] {
        ensure!(bin.is_file(), "no binary at {}", bin.display());
    }
    catch_interrupts()?;
    let info = Info::collect()?;
    let results = measure(&plan, &daemon_bin, &client_bin)?;
    let markdown = report::markdown(&info, &plan, &results);
    println!("\n{markdown}");
    if plan.quick {
        println!("(--quick: bench/RESULTS.md left alone)");
    } else {
        let path = results::write_section(SECTION, &markdown)?;
        println!("written to {}", path.display());
    }
    Ok(())
}

/// Starts both servers in fresh namespaces, checks their bytes, runs every load.
fn measure(plan: &Plan, daemon_bin: &Path, client_bin: &Path) -> anyhow::Result<Results> {
    let net = TestNet::new(NET_TAG);
    println!(
        "== namespaces {} ({}) and {} ({})",
        net.server_ns(),
        net.server_ip(),
        net.client_ns(),
        net.client_ip()
    );
    let fixture = Fixture::new(net.server_ip())?;
    let ours = Server::start_ours(&net, &fixture, daemon_bin)?;
    let script = render_script(&net, &ours)?;
    std::fs::write(fixture.static_script(), &script).context("writing nginx's static script")?;
    let nginx = Server::start_nginx(&net, &fixture)?;
    println!(
        "== pxe-daemon on {}, nginx on {}; checking each one's bytes",
        ours.url(""),
        nginx.url("")
    );
    for server in [&ours, &nginx] {
        load::verify_download(
            &net,
            client_bin,
            server,
            servers::BIG_PATH,
            &fixture.big_file(),
        )?;
    }
    load::verify_download(
        &net,
        client_bin,
        &nginx,
        servers::STATIC_SCRIPT_PATH,
        &fixture.static_script(),
    )?;

    let mut large = Vec::new();
    for round in 0..plan.rounds {
        for server in in_turn(round, [&ours, &nginx]) {
            check_interrupted()?;
            let run = load::large(
                &net,
                client_bin,
                server,
                servers::BIG_PATH,
                servers::BIG_BYTES,
                LARGE_CONNECTIONS,
                plan.large,
            )?;
            print_large(round + 1, &run);
            large.push(run);
        }
    }
    let rss_after_large = [ours.peak_rss_kib()?, nginx.peak_rss_kib()?];

    let mut small = Vec::new();
    for &connections in &plan.small_connections {
        for round in 0..plan.rounds {
            let turns = [
                (&ours, servers::SCRIPT_QUERY_PATH),
                (&nginx, servers::STATIC_SCRIPT_PATH),
            ];
            for (server, path) in in_turn(round, turns) {
                check_interrupted()?;
                let run = load::small(&net, server, path, connections, plan.small)?;
                print_small(round + 1, &run);
                small.push(run);
            }
        }
    }
    let rss_at_end = [ours.peak_rss_kib()?, nginx.peak_rss_kib()?];
    ours.stop()?;
    nginx.stop()?;
    Ok(Results {
        script_bytes: script.len(),
        large,
        small,
        rss_after_large_kib: rss_after_large,
        rss_at_end_kib: rss_at_end,
    })
}

/// The pair in round `round`'s order: as given in even rounds, swapped in odd ones.
fn in_turn<T>(round: u32, [first, second]: [T; 2]) -> [T; 2] {
    if round.is_multiple_of(2) {
        [first, second]
    } else {
        [second, first]
    }
}

/// GETs pxe-daemon's rendered script from the client namespace and checks it is the profile's
/// Longest the script fetch may take, seconds.
const SCRIPT_MAX_TIME_SECS: u64 = 5;

/// iPXE script for the machine asked about.
fn render_script(net: &TestNet, ours: &Server) -> anyhow::Result<Vec<u8>> {
    let url = ours.url(servers::SCRIPT_QUERY_PATH);
    let (code, body) = pxe_tests::curl_get(net, net.client_ns(), &url, SCRIPT_MAX_TIME_SECS);
    ensure!(code != 0, "GET {url} got no answer: {body}");
    let kernel = format!("kernel {}", ours.url("/assets/vmlinuz"));
    ensure!(
        code == 200
            && body.starts_with(&format!("#!ipxe\n{kernel}"))
            && body.contains("mac=52:54:00:12:34:56")
            && body.ends_with("boot\n"),
        "GET {url}: {code}, not the profile's script:\n{body}"
    );
    Ok(body.as_bytes().to_vec())
}

fn print_large(round: u32, run: &LargeRun) {
    let u = &run.usage;
    println!(
        "   large round {round} {:<10} {:>5.2} GB/s, CPU % of a core: server {:.0}, client {:.0}, \
         ksoftirqd {:.0}, rest of machine {:.0}",
        run.kind.name(),
        run.bytes as f64 / run.secs / 1e9,
        u.percent_of_core(u.server_cpu),
        u.percent_of_core(u.client_cpu),
        u.percent_of_core(u.softirq_cpu),
        u.percent_of_core(u.rest_of_machine()),
    );
}

fn print_small(round: u32, run: &SmallRun) {
    let u = &run.usage;
    println!(
        "   small round {round} -c{:<4} {:<10} {:>6.0} req/s, p50 {:.2} ms, p99 {:.2} ms, CPU % of a core: \
         server {:.0}, wrk {:.0}, ksoftirqd {:.0}, rest of machine {:.0}",
        run.connections,
        run.kind.name(),
        run.per_sec,
        run.p50_ms,
        run.p99_ms,
        u.percent_of_core(u.server_cpu),
        u.percent_of_core(u.client_cpu),
        u.percent_of_core(u.softirq_cpu),
        u.percent_of_core(u.rest_of_machine()),
    );
}
