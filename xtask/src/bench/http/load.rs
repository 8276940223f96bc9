//! The two loads, run from the client namespace against one server at a time, and what is
//! measured around each: `pxe-bench http-load` (large downloads) and wrk (small requests).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use pxe_tests::TestNet;

use super::servers::{Kind, Server};
use crate::bench::cpu;

/// Bound on a load run beyond its own duration (start, connection teardown, exit).
const RUN_SLACK: Duration = Duration::from_secs(30);
/// wrk threads: one per core of the machine.
pub(super) const WRK_THREADS: u32 = 2;
/// wrk's per-request timeout.
const WRK_TIMEOUT: &str = "5s";

/// CPU and wall time around one load run.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Usage {
    /// The server's processes' user + system time during the run.
    pub server_cpu: Duration,
    /// The load generator's user + system time.
    pub client_cpu: Duration,
    /// The kernel's softirq threads' time (the network receive path deferred to them).
    pub softirq_cpu: Duration,
    /// The whole machine's busy and kernel time.
    pub machine: cpu::MachineTime,
    /// Wall time of the run, load generator start to exit.
    pub wall: Duration,
}

impl Usage {
    /// Adds another run's figures (for totals over rounds).
    pub(super) fn add(&mut self, other: Usage) {
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
        self.softirq_cpu += other.softirq_cpu;
        self.machine.busy += other.machine.busy;
        self.machine.kernel += other.machine.kernel;
        self.wall += other.wall;
    }

    /// `time` as a share of one core over the wall time, in percent.
    pub(super) fn percent_of_core(&self, time: Duration) -> f64 {
        100.0 * time.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Server, client and softirq threads: all the CPU time the transfer itself took.
    pub(super) fn transfer_cpu(&self) -> Duration {
        self.server_cpu + self.client_cpu + self.softirq_cpu
    }

    /// Busy time of everything but the server, the client and the softirq threads (other
    /// engineers' work, other kernel threads).
    pub(super) fn rest_of_machine(&self) -> Duration {
        self.machine.busy.saturating_sub(self.transfer_cpu())
    }
}

/// How many of the busiest other processes a run names.
const BUSIEST_SHOWN: usize = 3;

/// Processes other than the server, the client and the softirq threads that took CPU time
/// during a run, busiest first (at most [`BUSIEST_SHOWN`]): what "rest of machine" was.
pub(super) type Others = Vec<(String, Duration)>;

/// Runs `argv` in the client namespace, bounded by `timeout`, measuring the server and the
/// client. The client's CPU time is that of the reaped child (no other child ends meanwhile).
fn measured(
    net: &TestNet,
    server: &Server,
    argv: &[&str],
    timeout: Duration,
) -> anyhow::Result<(std::process::Output, Usage, Others)> {
    let threads_before = cpu::thread_times()?;
    let server_before = server.cpu_time()?;
    let softirq_before = cpu::softirq_time()?;
    let machine_before = cpu::MachineTime::now()?;
    let client_before = cpu::reaped_children_time();
    let start = Instant::now();
    let out = net.client_timeout(argv, timeout);
    let wall = start.elapsed();
    let usage = Usage {
        client_cpu: cpu::reaped_children_time().saturating_sub(client_before),
        machine: cpu::MachineTime::now()?.since(machine_before),
        softirq_cpu: cpu::softirq_time()?.saturating_sub(softirq_before),
        server_cpu: server.cpu_time()?.saturating_sub(server_before),
        wall,
    };
    // The client has been reaped, so it is not among them; nor is this process's own work.
    let mut mine = server.thread_ids()?;
    mine.extend(cpu::threads_of(std::process::id()));
    let mut others = cpu::busiest(
        &threads_before,
        &cpu::thread_times()?,
        &mine,
        &["ksoftirqd"],
    );
    others.truncate(BUSIEST_SHOWN);
    ensure!(
        out.status.success(),
        "`{}` failed ({}): {}{}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out, usage, others))
}

/// Downloads the large file once from the client namespace with `pxe-bench http-get` and
/// compares it with `file` byte for byte.
pub(super) fn verify_download(
    net: &TestNet,
    client_bin: &Path,
    server: &Server,
    path: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let url = server.url(path);
    let out = net.client_timeout(
        &[
            &client_bin.to_string_lossy(),
            "http-get",
            "--url",
            &url,
            "--expect-file",
            &file.to_string_lossy(),
        ],
        RUN_SLACK + Duration::from_secs(30),
    );
    ensure!(
        out.status.success(),
        "{} served wrong bytes for {url} ({}): {}",
        server.kind().name(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// One large-download run against one server.
#[derive(Clone, Debug)]
pub(super) struct LargeRun {
    /// Which server.
    pub kind: Kind,
    /// Body bytes received.
    pub bytes: u64,
    /// Whole responses.
    pub responses: u64,
    /// Failed responses.
    pub errors: u64,
    /// The client's own measure of its run.
    pub secs: f64,
    /// CPU and wall time.
    pub usage: Usage,
    /// The busiest other processes during the run.
    pub others: Others,
}

/// `pxe-bench http-load` with `connections` connections for `duration` against `server`.
pub(super) fn large(
    net: &TestNet,
    client_bin: &Path,
    server: &Server,
    path: &str,
    expect_length: u64,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<LargeRun> {
    let url = server.url(path);
    let (connections, secs, length) = (
        connections.to_string(),
        format!("{:.3}", duration.as_secs_f64()),
        expect_length.to_string(),
    );
    let argv = [
        &*client_bin.to_string_lossy(),
        "http-load",
        "--url",
        &url,
        "--connections",
        &connections,
        "--duration-secs",
        &secs,
        "--expect-length",
        &length,
    ];
    let (out, usage, others) = measured(net, server, &argv, duration + RUN_SLACK)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> anyhow::Result<&str> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key}= in pxe-bench's output: {stdout}"))
    };
    let run = LargeRun {
        kind: server.kind(),
        bytes: field("bytes")?.parse()?,
        responses: field("responses")?.parse()?,
        errors: field("errors")?.parse()?,
        secs: field("secs")?.parse()?,
        usage,
        others,
    };
    ensure!(
        run.bytes > 0 && run.errors == 0,
        "{} under {connections} connections: {} bytes, {} errors: {}",
        server.kind().name(),
        run.bytes,
        run.errors,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(run)
}

/// One wrk run against one server.
#[derive(Clone, Debug)]
pub(super) struct SmallRun {
    /// Which server.
    pub kind: Kind,
    /// wrk's connections.
    pub connections: u32,
    /// Requests completed.
    pub requests: u64,
    /// wrk's Requests/sec.
    pub per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
    /// CPU and wall time.
    pub usage: Usage,
    /// The busiest other processes during the run.
    pub others: Others,
}

/// wrk with `connections` keep-alive connections on `path` of `server` for `duration`.
pub(super) fn small(
    net: &TestNet,
    server: &Server,
    path: &str,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<SmallRun> {
    let url = server.url(path);
    let threads = WRK_THREADS.min(connections).to_string();
    let conns = connections.to_string();
    let secs = format!("{}s", duration.as_secs().max(1));
    let argv = [
        "wrk",
        "-t",
        &threads,
        "-c",
        &conns,
        "-d",
        &secs,
        "--timeout",
        WRK_TIMEOUT,
        "--latency",
        &url,
    ];
    let (out, usage, others) = measured(net, server, &argv, duration + RUN_SLACK)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report = parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))?;
    let run = SmallRun {
        kind: server.kind(),
        connections,
        requests: report.requests,
        per_sec: report.per_sec,
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
        errors: report.errors,
        usage,
        others,
    };
    ensure!(
        run.requests > 0 && run.errors == 0,
        "{} under wrk -c{connections}: {} requests, {} errors (socket errors or non-2xx):\n{text}",
        server.kind().name(),
        run.requests,
        run.errors
    );
    Ok(run)
}

/// What is read from wrk's report.
#[derive(Debug, PartialEq)]
struct WrkReport {
    requests: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Reads wrk 4's text report (`--latency`).
fn parse_wrk(text: &str) -> anyhow::Result<WrkReport> {
    let after = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .context("no `N requests in` line")?
        .parse()?;
    let per_sec = after("Requests/sec:").context("no Requests/sec")?.parse()?;
    let p50_ms = latency_ms(after("50%").context("no 50% latency")?)?;
    let p99_ms = latency_ms(after("99%").context("no 99% latency")?)?;
    let mut errors = 0;
    if let Some(socket) = after("Socket errors:") {
        // `connect 0, read 0, write 0, timeout 0`
        for part in socket.split(',') {
            let count = part.split_whitespace().nth(1).context("socket errors")?;
            errors += count.parse::<u64>()?;
        }
    }
    if let Some(non2xx) = after("Non-2xx or 3xx responses:") {
        errors += non2xx.parse::<u64>()?;
    }
    Ok(WrkReport {
        requests,
        per_sec,
        p50_ms,
        p99_ms,
        errors,
    })
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.5m` in milliseconds.
fn latency_ms(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency {value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("latency {value:?}"))?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => bail!("latency {value:?}: unknown unit {unit:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "\
Running 2s test @ http://198.18.1.1:8080/ipxe?mac=52-54-00-12-34-56
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.41ms    1.02ms  21.36ms   88.24%
    Req/Sec    13.46k     1.10k   15.40k    70.00%
  Latency Distribution
     50%    2.24ms
     75%    2.69ms
     90%    3.27ms
     99%  612.00us
  53577 requests in 2.00s, 22.43MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  26779.38
Transfer/sec:     11.21MB
";

    #[test]
    fn wrk_report_is_read() {
        let report = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(
            report,
            WrkReport {
                requests: 53577,
                per_sec: 26779.38,
                p50_ms: 2.24,
                p99_ms: 0.612,
                errors: 7,
            }
        );
        let clean = WRK_OUTPUT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse_wrk(&clean).unwrap().errors, 0);
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(latency_ms("1.50s").unwrap(), 1500.0);
    }
}
