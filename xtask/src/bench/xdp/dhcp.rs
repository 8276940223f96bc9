//! Part b of `cargo xtask bench xdp`: DHCP answers per second and CPU per answer, pxe-daemon
//! `--datapath kernel`, `--datapath xdp` and dnsmasq, proxy and full mode, driven by
//! `pxe-bench dhcp-load` at rates stepped up until loss reaches 1%.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use pxe_tests::{metric_value, TestNet};
use serde_json::Value;

use super::Datapaths;
use crate::bench::{
    cpu,
    dhcp::{
        quiet_machine,
        servers::{Addressing, Mode, Running, Server, Setting},
    },
};

/// Loss at or above which a rate counts as not sustained.
pub(super) const LOSS_LIMIT: f64 = 0.01;
/// Rates of the full run, new exchanges per second.
pub(super) const RATES: &[u32] = &[
    1_000, 5_000, 10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 130_000, 160_000, 200_000,
    250_000, 300_000,
];
/// Rates of `--quick`.
pub(super) const QUICK_RATES: &[u32] = &[2_000, 20_000];
/// Distinct clients the generator cycles through: within the pool of the /16.
pub(super) const CLIENTS: u32 = 60_000;
/// How long the generator waits for answers after its last DISCOVER.
const WAIT_MS: u64 = 1000;
/// Bound on a generator run beyond its sending and waiting.
const GENERATOR_SLACK: Duration = Duration::from_secs(30);
/// The generator sent fewer than this share of the rate asked: it, not the server, limited.
const CLIENT_BOUND_SHARE: f64 = 0.97;
/// Tag of the namespaces.
const NET_TAG: &str = "xdpbd";

/// A DHCP server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Contender {
    /// pxe-daemon on kernel sockets.
    Kernel,
    /// pxe-daemon on AF_XDP.
    Xdp,
    /// dnsmasq.
    Dnsmasq,
}

impl Contender {
    /// In the order each mode runs them.
    pub(super) const ALL: [Contender; 3] = [Contender::Kernel, Contender::Xdp, Contender::Dnsmasq];

    /// Name in the tables.
    pub(super) const fn label(self) -> &'static str {
        match self {
            Contender::Kernel => "pxe-daemon --datapath kernel",
            Contender::Xdp => "pxe-daemon --datapath xdp",
            Contender::Dnsmasq => "dnsmasq",
        }
    }
}

/// One generator run against one server.
#[derive(Debug)]
pub(super) struct Step {
    /// Proxy or full.
    pub mode: Mode,
    /// Which server.
    pub server: Contender,
    /// Rate asked.
    pub rate: u32,
    /// Attempt at this rate (1 or 2).
    pub attempt: u32,
    /// The generator's JSON report.
    pub report: Value,
    /// The server's CPU time over the generator's run.
    pub server_cpu: Duration,
    /// DHCP frames the XDP program steered to AF_XDP during the step (`None`: no XDP metrics).
    pub steered: Option<f64>,
    /// Whether other work kept the machine busy when the step began.
    pub busy_start: bool,
}

impl Step {
    fn num(&self, key: &str) -> f64 {
        self.report[key].as_f64().unwrap_or(f64::NAN)
    }

    /// Answers counted (OFFERs in proxy mode, ACKs in full mode).
    pub(super) fn answered(&self) -> u64 {
        self.report["answered"].as_u64().unwrap_or(0)
    }

    /// Answers per second of sending.
    pub(super) fn answered_per_sec(&self) -> f64 {
        self.num("answered_per_sec")
    }

    /// Exchanges begun per second.
    pub(super) fn sent_per_sec(&self) -> f64 {
        self.num("sent_per_sec")
    }

    /// 1 - answered / sent.
    pub(super) fn loss(&self) -> f64 {
        self.num("loss")
    }

    /// Whether the loss stayed under [`LOSS_LIMIT`].
    pub(super) fn sustained(&self) -> bool {
        self.answered() > 0 && self.loss() < LOSS_LIMIT
    }

    /// Whether the generator could not send at the rate asked.
    pub(super) fn client_bound(&self) -> bool {
        self.sent_per_sec() < f64::from(self.rate) * CLIENT_BOUND_SHARE
    }

    /// Server CPU µs per answer.
    pub(super) fn cpu_us_per_answer(&self) -> f64 {
        let n = self.answered();
        if n == 0 {
            f64::NAN
        } else {
            self.server_cpu.as_secs_f64() * 1e6 / n as f64
        }
    }

    /// Latency quantile `q` ("p50", "p99") in ms.
    pub(super) fn latency_ms(&self, q: &str) -> f64 {
        self.report["latency_ms"][q].as_f64().unwrap_or(f64::NAN)
    }

    /// The generator's CPU, in cores.
    pub(super) fn generator_cores(&self) -> f64 {
        self.report["generator_cpu"]["cores"]
            .as_f64()
            .unwrap_or(f64::NAN)
    }
}

/// A server that could not be measured, and why.
#[derive(Debug)]
pub(super) struct Unavailable {
    /// Proxy or full.
    pub mode: Mode,
    /// Which server.
    pub server: Contender,
    /// Why.
    pub reason: String,
}

/// What part b measured.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Every step.
    pub steps: Vec<Step>,
    /// Servers not measured.
    pub unavailable: Vec<Unavailable>,
    /// The benchmark's addresses, for the report.
    pub addressing: Option<Addressing>,
}

impl Outcome {
    /// Records (and prints) that `server` could not be measured in `mode`.
    fn not_available(&mut self, mode: Mode, server: Contender, reason: String) {
        println!(
            "   {:<5} {}: not available: {reason}",
            mode.label(),
            server.label()
        );
        self.unavailable.push(Unavailable {
            mode,
            server,
            reason,
        });
    }
}

/// How part b runs.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    /// Rates to step through.
    pub rates: &'a [u32],
    /// Seconds of sending per step.
    pub step_secs: f64,
    /// Attempts at a rate before it counts as not sustained.
    pub attempts: u32,
    /// Longest wait for a quiet machine before a step.
    pub quiet_wait: Duration,
    /// The release pxe-bench.
    pub generator: &'a Path,
    /// The release pxe-daemon.
    pub daemon: &'a Path,
    /// What the daemon offers.
    pub datapaths: &'a Datapaths,
}

/// Runs part b.
pub(super) fn run(plan: &Plan<'_>) -> anyhow::Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("pxe-bench-xdp-dhcp-")
        .tempdir()
        .context("creating a temporary directory for configs and lease files")?;
    let net = TestNet::new(NET_TAG);
    let addressing = Addressing::beside(&net);
    addressing.add_to(&net)?;
    let mut out = Outcome {
        addressing: Some(addressing),
        ..Outcome::default()
    };
    for mode in Mode::ALL {
        for server in Contender::ALL {
            let daemon_args: Vec<&str> = match server {
                Contender::Kernel => plan.datapaths.kernel_args(),
                Contender::Xdp => match plan.datapaths.xdp_args() {
                    Ok(args) => args,
                    Err(reason) => {
                        out.not_available(mode, server, reason);
                        continue;
                    }
                },
                Contender::Dnsmasq => Vec::new(),
            };
            let setting = Setting {
                net: &net,
                daemon_bin: plan.daemon,
                addressing,
                dir: dir.path(),
                xdp_mode: "auto",
                daemon_args: &daemon_args,
            };
            if let Some(reason) = run_server(plan, &setting, mode, server, &mut out.steps)? {
                out.not_available(mode, server, reason);
            }
        }
    }
    Ok(out)
}

fn peer(server: Contender) -> Server {
    match server {
        Contender::Kernel | Contender::Xdp => Server::Ours,
        Contender::Dnsmasq => Server::Dnsmasq,
    }
}

/// Steps `server` up the rates; `Some(reason)` when it cannot be measured.
fn run_server(
    plan: &Plan<'_>,
    s: &Setting<'_>,
    mode: Mode,
    server: Contender,
    steps: &mut Vec<Step>,
) -> anyhow::Result<Option<String>> {
    let mut running = Running::start(peer(server), mode, s)?;
    if server == Contender::Xdp {
        let metrics = running.metrics().unwrap_or_default();
        if metric_value(&metrics, "pxe_datapath_info", &[("datapath", "xdp")]) != Some(1.0) {
            let log = running.log();
            running.stop();
            let why: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(2)
                .collect();
            return Ok(Some(format!(
                "started with --datapath xdp, the daemon's pxe_datapath_info does not say xdp ({})",
                if why.is_empty() {
                    "no warning logged".to_owned()
                } else {
                    why.join(" / ")
                }
            )));
        }
    }
    for &rate in plan.rates {
        let mut attempt = 1;
        let step = loop {
            let step = measure(plan, s, &mut running, mode, server, rate, attempt)?;
            println!("   {}", step_line(&step));
            if step.sustained() || attempt >= plan.attempts {
                break step;
            }
            // Again on a fresh server: what the lossy run queued must not weigh on the retry.
            attempt += 1;
            running.stop();
            running = Running::start(peer(server), mode, s)?;
        };
        let stop = !step.sustained() || step.client_bound();
        steps.push(step);
        if stop {
            break;
        }
    }
    running.stop();
    Ok(None)
}

/// Steered DHCP frames so far (port 67 and 4011), from our daemon's metrics.
fn steered(running: &Running<'_>) -> Option<f64> {
    let text = running.metrics()?;
    let v = |class: &str| {
        metric_value(
            &text,
            "pxe_xdp_verdicts_total",
            &[("class", class), ("verdict", "steer")],
        )
    };
    Some(v("dhcp")? + v("pxe_discovery").unwrap_or(0.0))
}

fn measure(
    plan: &Plan<'_>,
    s: &Setting<'_>,
    running: &mut Running<'_>,
    mode: Mode,
    server: Contender,
    rate: u32,
    attempt: u32,
) -> anyhow::Result<Step> {
    let quiet = cpu::wait_quiet(quiet_machine(plan.quiet_wait), None)?;
    let generator = plan.generator.to_string_lossy();
    let rate_arg = rate.to_string();
    let secs = plan.step_secs.to_string();
    let clients = CLIENTS.to_string();
    let wait = WAIT_MS.to_string();
    let argv = [
        &*generator,
        "dhcp-load",
        "--interface",
        s.net.client_if(),
        "--mode",
        mode.label(),
        "--rate",
        &rate_arg,
        "--secs",
        &secs,
        "--clients",
        &clients,
        "--wait-ms",
        &wait,
        "--json",
    ];
    let pid = running.pid();
    let steered_before = steered(running);
    let before = cpu::process_time(pid)?;
    let started = Instant::now();
    let out = s.net.client_timeout(
        &argv,
        Duration::from_secs_f64(plan.step_secs) + Duration::from_millis(WAIT_MS) + GENERATOR_SLACK,
    );
    let after = cpu::process_time(pid);
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !running.alive() {
        bail!(
            "{} died during the {} step at {rate}/s\n--- log ---\n{}",
            server.label(),
            mode.label(),
            running.log()
        );
    }
    let report: Value = match stdout.lines().last().map(serde_json::from_str) {
        Some(Ok(v)) if out.status.success() => v,
        _ => bail!(
            "pxe-bench dhcp-load failed ({}) after {:.1} s: {}\n{stdout}{}",
            out.status,
            elapsed.as_secs_f64(),
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    let server_cpu = after
        .with_context(|| format!("{} CPU time after the step", server.label()))?
        .saturating_sub(before);
    let steered = steered(running).zip(steered_before).map(|(a, b)| a - b);
    Ok(Step {
        mode,
        server,
        rate,
        attempt,
        report,
        server_cpu,
        steered,
        busy_start: !quiet,
    })
}

/// One console line per step.
pub(super) fn step_line(s: &Step) -> String {
    format!(
        "{:<5} {:<28} {:>7}/s{}: sent {:.0}/s, answered {:.0}/s, loss {:.2}%, p50 {:.2} ms, p99 \
         {:.2} ms; server {:.1} µs/answer; generator {:.2} cores{}",
        s.mode.label(),
        s.server.label(),
        s.rate,
        if s.attempt > 1 { " (again)" } else { "" },
        s.sent_per_sec(),
        s.answered_per_sec(),
        s.loss() * 100.0,
        s.latency_ms("p50"),
        s.latency_ms("p99"),
        s.cpu_us_per_answer(),
        s.generator_cores(),
        s.steered.map_or_else(String::new, |n| format!(
            "; {n:.0} frames steered to AF_XDP"
        )),
    )
}
