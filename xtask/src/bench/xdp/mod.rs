//! `cargo xtask bench xdp`: what the XDP fast path buys, in one run:
//!
//! a. the XDP program's cost per frame by class (`pxe-bench xdp-cost`: BPF_PROG_TEST_RUN with
//!    repeat), as `--datapath kernel` and `--datapath xdp` set it up;
//! b. DHCP answers per second under 1% loss and server CPU per answer: pxe-daemon `--datapath
//!    kernel`, `--datapath xdp` and dnsmasq, proxy and full mode (`pxe-bench dhcp-load`);
//! c. TFTP aggregate throughput at 1,000 clients: `--datapath xdp`, `--datapath kernel` and
//!    tftpd-hpa (`cargo xtask bench tftp`'s cells);
//! d. on demand (`--parts xsk`): our AF_XDP binding against xdpilone ([`xsk`], its own section).
//!
//! A datapath the daemon does not offer yet is a "not available: <reason>" row, not a failure.

mod dhcp;
mod xsk;

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use dhcp::{Contender, Step};
use serde_json::Value;

use crate::bench::{
    dhcp::servers::Mode,
    results::{self, table},
    run_info,
    tftp::{self, Row as TftpRow, Server as TftpServer},
};

/// Section of bench/RESULTS.md.
const SECTION: &str = "xdp";
/// The heading's anchor in bench/README.md.
const METHOD_ANCHOR: &str = "xdp-report";
/// BPF_PROG_TEST_RUN repeats per frame: full run and `--quick`.
const COST_REPEAT: u32 = 1_000_000;
const COST_REPEAT_QUICK: u32 = 100_000;
/// Seconds of sending per DHCP step: full run and `--quick`.
const STEP_SECS: f64 = 3.0;
const STEP_SECS_QUICK: f64 = 1.0;
/// Longest wait for a quiet machine before each DHCP step and TFTP cell (full run; `--quick`
/// waits less): short, so that the run stays within about 10 minutes on a shared machine; each
/// step says whether it began on a busy machine.
const QUIET_WAIT: Duration = Duration::from_secs(2);
const TFTP_QUIET_WAIT: Duration = Duration::from_secs(5);
/// TFTP cells (clients, windowsize): full run and `--quick`.
const TFTP_CELLS: &[(u32, u16)] = &[(1000, 1), (1000, 4)];
const TFTP_CELLS_QUICK: &[(u32, u16)] = &[(100, 4)];
/// Runs of each of our datapaths per cell (the median is shown).
const TFTP_REPEATS: usize = 3;
/// Goals: XDP program ns per passed frame, DHCP CPU per answer against dnsmasq's
/// (at most this share), TFTP throughput against the kernel datapath's (at least this many
/// times).
const GOAL_PASS_NS: f64 = 100.0;
const GOAL_DHCP_CPU_SHARE: f64 = 0.2;
const GOAL_TFTP_RATIO: f64 = 2.0;

/// Options of `cargo xtask bench xdp`.
#[derive(Debug, clap::Args)]
pub(super) struct XdpArgs {
    /// A short run (100,000 repeats, two DHCP rates of 1 s, TFTP at 100 clients) that prints
    /// its section and leaves bench/RESULTS.md alone.
    #[arg(long)]
    quick: bool,
    /// Parts to run [default: cost,dhcp,tftp; xsk only when named].
    #[arg(long, value_delimiter = ',', value_enum, value_name = "PART,...")]
    parts: Option<Vec<Part>>,
    /// DHCP rates to step through, new exchanges per second, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "RATE,...")]
    rates: Option<Vec<u32>>,
}

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// a: the XDP program's ns per frame.
    Cost,
    /// b: DHCP rate and CPU per answer.
    Dhcp,
    /// c: TFTP throughput at 1,000 clients.
    Tftp,
    /// d: our AF_XDP binding against xdpilone (its own section of bench/RESULTS.md).
    Xsk,
}

/// What the built daemon offers: whether it has `--datapath`.
#[derive(Debug)]
pub(super) struct Datapaths {
    /// `pxe-daemon run --help` lists `--datapath`.
    flag: bool,
}

impl Datapaths {
    fn probe(daemon: &Path) -> Datapaths {
        let help = std::process::Command::new(daemon)
            .args(["run", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Datapaths {
            flag: help.contains("--datapath"),
        }
    }

    /// Flags that select the kernel datapath (none on a daemon that has only that one).
    pub(super) fn kernel_args(&self) -> Vec<&'static str> {
        if self.flag {
            vec!["--datapath", "kernel"]
        } else {
            Vec::new()
        }
    }

    /// Flags that select AF_XDP, or why it is not available.
    pub(super) fn xdp_args(&self) -> Result<Vec<&'static str>, String> {
        if self.flag {
            Ok(vec!["--datapath", "xdp"])
        } else {
            Err(
                "this pxe-daemon has no --datapath flag (the AF_XDP datapath is not in this \
                 build)"
                    .to_owned(),
            )
        }
    }
}

/// Runs the benchmark.
pub(super) fn run(args: &XdpArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "cargo xtask bench xdp needs root (BPF_PROG_TEST_RUN, namespaces, raw sockets)"
    );
    let parts = args
        .parts
        .clone()
        .unwrap_or_else(|| vec![Part::Cost, Part::Dhcp, Part::Tftp]);
    let started = Instant::now();
    let loadavg = run_info::loadavg();
    let date = run_info::date_utc();
    let bins = tftp::Bins::build()?;
    if parts.contains(&Part::Xsk) {
        xsk::run(&bins.generator, args.quick)?;
        if parts.iter().all(|&p| p == Part::Xsk) {
            return Ok(());
        }
    }
    let datapaths = Datapaths::probe(&bins.daemon);
    let mut out = String::from("## XDP fast path: program cost, DHCP and TFTP by datapath\n\n");
    writeln!(
        out,
        "Made by `{}` on {date}, commit {}{}; {}; load average at the start {loadavg}. \
         Datapaths: {}. {}\n",
        run_info::command_line(),
        run_info::commit(),
        if args.quick {
            " (--quick: short steps; not a measurement to quote)"
        } else {
            ""
        },
        run_info::machine(),
        if datapaths.flag {
            "`--datapath kernel` and `--datapath xdp` both offered by this build"
        } else {
            "this build has no `--datapath` flag: the kernel rows run the daemon as it is \
             (kernel sockets), the XDP rows are not available"
        },
        results::method_link(METHOD_ANCHOR),
    )?;

    if parts.contains(&Part::Cost) {
        println!("== a. XDP program cost per frame (BPF_PROG_TEST_RUN)");
        let repeat = if args.quick {
            COST_REPEAT_QUICK
        } else {
            COST_REPEAT
        };
        out.push_str(&cost_section(&bins.generator, repeat)?);
    }
    if parts.contains(&Part::Dhcp) {
        println!("== b. DHCP: pxe-dhcp-load against each datapath and dnsmasq");
        let rates = args.rates.clone().unwrap_or_else(|| {
            if args.quick {
                dhcp::QUICK_RATES.to_vec()
            } else {
                dhcp::RATES.to_vec()
            }
        });
        let plan = dhcp::Plan {
            rates: &rates,
            step_secs: if args.quick {
                STEP_SECS_QUICK
            } else {
                STEP_SECS
            },
            attempts: if args.quick { 1 } else { 2 },
            quiet_wait: if args.quick {
                Duration::ZERO
            } else {
                QUIET_WAIT
            },
            generator: &bins.generator,
            daemon: &bins.daemon,
            datapaths: &datapaths,
        };
        let outcome = dhcp::run(&plan)?;
        out.push_str(&dhcp_section(&plan, &outcome));
    }
    if parts.contains(&Part::Tftp) {
        println!("== c. TFTP: each datapath and tftpd-hpa");
        out.push_str(&tftp_section(bins, &datapaths, args.quick)?);
    }
    println!("\n{out}");
    println!(
        "== XDP benchmark done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.quick {
        println!("(--quick: {} left alone)", results::RESULTS_FILE);
    } else {
        let path = results::write_section(SECTION, &out)?;
        println!("== wrote the XDP section of {}", path.display());
    }
    Ok(())
}

/// Part a: runs `pxe-bench xdp-cost --json` and tables it.
fn cost_section(generator: &Path, repeat: u32) -> anyhow::Result<String> {
    let output = std::process::Command::new(generator)
        .args(["xdp-cost", "--json", "--repeat", &repeat.to_string()])
        .output()
        .context("running pxe-bench xdp-cost")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pxe-bench xdp-cost failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("reading pxe-bench xdp-cost's JSON: {stdout}"))?;
    let cell = |c: &Value| -> String {
        format!(
            "{:.0} ({}, {})",
            c["ns_per_frame"].as_f64().unwrap_or(f64::NAN),
            c["verdict"].as_str().unwrap_or("?"),
            c["action"].as_str().unwrap_or("?")
        )
    };
    let mut rows = Vec::new();
    let mut passed_max = 0.0f64;
    let mut passed_rows = 0;
    for row in report["rows"].as_array().map_or(&[][..], Vec::as_slice) {
        let cells = row["cells"].as_array().map_or(&[][..], Vec::as_slice);
        let by = |setup: &str| cells.iter().find(|c| c["setup"] == setup);
        for c in cells {
            // "Passed traffic": frames the program hands to the kernel as they are.
            if c["verdict"] == "pass" && row["class"] != "dhcp" && row["class"] != "pxe_discovery" {
                passed_max = passed_max.max(c["ns_per_frame"].as_f64().unwrap_or(f64::NAN));
                passed_rows += 1;
            }
        }
        let storm = by("storm");
        rows.push(vec![
            row["frame"].as_str().unwrap_or("?").to_owned(),
            format!("`{}`", row["class"].as_str().unwrap_or("?")),
            row["bytes"].to_string(),
            by("kernel").map_or_else(|| "-".to_owned(), cell),
            by("xdp").or(storm).map_or_else(|| "-".to_owned(), cell),
        ]);
    }
    let mut s = String::from("### a. The XDP program's cost per frame\n\n");
    writeln!(
        s,
        "`pxe-bench xdp-cost --repeat {repeat}`: mean ns per run reported by \
         BPF_PROG_TEST_RUN, median of {} trials. In each cell: ns per frame (verdict counted, \
         XDP action).\n",
        report["trials"]
    )?;
    s.push_str(&table(
        &[
            "frame",
            "class",
            "bytes",
            "ns: --datapath kernel",
            "ns: --datapath xdp",
        ],
        &rows,
    ));
    writeln!(
        s,
        "\nGoal (XDP fast path): under {GOAL_PASS_NS:.0} ns per frame for passed traffic (non-DHCP frames: TCP, \
         ARP, DNS, fragments, malformed): {} (slowest of {passed_rows} cells: \
         {passed_max:.0} ns).\n",
        if passed_rows > 0 && passed_max < GOAL_PASS_NS {
            "met"
        } else {
            "NOT met"
        }
    )?;
    Ok(s)
}

fn us(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".to_owned()
    }
}

/// The highest sustained step of `server` in `mode`.
fn best(steps: &[Step], mode: Mode, server: Contender) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.mode == mode && s.server == server && s.sustained())
        .max_by_key(|s| s.rate)
}

/// Part b's report.
fn dhcp_section(plan: &dhcp::Plan<'_>, o: &dhcp::Outcome) -> String {
    let mut s = String::from("### b. DHCP answers per second and CPU per answer\n\n");
    let _ = writeln!(
        s,
        "`pxe-bench dhcp-load`, {} clients in turn; each server on {}/16; rates {:?}/s, {} s \
         each; a rate that loses 1% or more {} is the server's last.\n",
        dhcp::CLIENTS,
        o.addressing
            .map_or_else(|| "?".to_owned(), |a| a.server.to_string()),
        plan.rates,
        plan.step_secs,
        if plan.attempts > 1 {
            "twice (the second time on a restarted server)"
        } else {
            "once"
        },
    );
    let mut rows = Vec::new();
    for mode in Mode::ALL {
        for server in Contender::ALL {
            if let Some(u) = o
                .unavailable
                .iter()
                .find(|u| u.mode == mode && u.server == server)
            {
                rows.push(vec![
                    mode.label().to_owned(),
                    server.label().to_owned(),
                    format!("not available: {}", u.reason),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
                continue;
            }
            let tried: Vec<&Step> = o
                .steps
                .iter()
                .filter(|s| s.mode == mode && s.server == server)
                .collect();
            if tried.is_empty() {
                continue;
            }
            let last = tried.last().copied();
            let stop = last.map_or_else(String::new, |l| {
                if l.sustained() && l.client_bound() {
                    format!(" (the generator topped out at {:.0}/s)", l.sent_per_sec())
                } else if l.sustained() {
                    " (highest rate tried)".to_owned()
                } else {
                    format!(" (at {}/s: {:.1}% lost)", l.rate, l.loss() * 100.0)
                }
            });
            match best(&o.steps, mode, server) {
                Some(b) => rows.push(vec![
                    mode.label().to_owned(),
                    server.label().to_owned(),
                    format!("{}{stop}", b.rate),
                    format!("{:.0}", b.answered_per_sec()),
                    format!("{:.2} / {:.2}", b.latency_ms("p50"), b.latency_ms("p99")),
                    us(b.cpu_us_per_answer()),
                    format!("{:.2}", b.generator_cores()),
                    b.steered
                        .map_or_else(|| "-".to_owned(), |n| format!("{n:.0}")),
                ]),
                None => rows.push(vec![
                    mode.label().to_owned(),
                    server.label().to_owned(),
                    format!("none{stop}"),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]),
            }
        }
    }
    s.push_str(&table(
        &[
            "mode",
            "server",
            "highest rate under 1% loss /s",
            "answered /s",
            "latency p50 / p99 ms",
            "server CPU µs / answer",
            "generator CPU (cores)",
            "frames steered to AF_XDP",
        ],
        &rows,
    ));
    // Ratios at the highest rate every measured server sustained in a mode: CPU per answer
    // falls with the rate (wake-ups are shared), so it is compared at one rate. When a server
    // sustained none, at the lowest rate all were run at (its CPU per answer counted then).
    s.push_str("\nRatios, per mode, at the highest rate all measured servers sustained:\n\n");
    let mut goals = Vec::new();
    for mode in Mode::ALL {
        let ran = |server: Contender, rate: u32, sustained: bool| {
            o.steps.iter().find(|s| {
                s.mode == mode
                    && s.server == server
                    && s.rate == rate
                    && (s.sustained() || !sustained)
            })
        };
        let measured: Vec<Contender> = Contender::ALL
            .into_iter()
            .filter(|&c| o.steps.iter().any(|s| s.mode == mode && s.server == c))
            .collect();
        if measured.is_empty() {
            continue;
        }
        let all_at =
            |r: u32, sustained: bool| measured.iter().all(|&c| ran(c, r, sustained).is_some());
        let (rate, sustained) = match plan
            .rates
            .iter()
            .copied()
            .filter(|&r| all_at(r, true))
            .max()
        {
            Some(r) => (r, true),
            None => match plan.rates.iter().copied().find(|&r| all_at(r, false)) {
                Some(r) => (r, false),
                None => continue,
            },
        };
        let cpu = |c: Contender| ran(c, rate, sustained).map_or(f64::NAN, Step::cpu_us_per_answer);
        let mut parts = Vec::new();
        for c in &measured {
            parts.push(format!("{} {} µs", c.label(), us(cpu(*c))));
        }
        let _ = writeln!(
            s,
            "- {} at {rate}/s{}: CPU per answer {}; xdp / dnsmasq {}, kernel / dnsmasq {}, xdp / \
             kernel {}.",
            mode.label(),
            if sustained {
                ""
            } else {
                " (not every server sustained it: per answer that came)"
            },
            parts.join(", "),
            ratio(cpu(Contender::Xdp), cpu(Contender::Dnsmasq)),
            ratio(cpu(Contender::Kernel), cpu(Contender::Dnsmasq)),
            ratio(cpu(Contender::Xdp), cpu(Contender::Kernel)),
        );
        let share = cpu(Contender::Xdp) / cpu(Contender::Dnsmasq);
        let xdp_rate = best(&o.steps, mode, Contender::Xdp).map(|b| b.rate);
        let dnsmasq_rate = best(&o.steps, mode, Contender::Dnsmasq).map_or(0, |b| b.rate);
        goals.push(vec![
            format!(
                "{}: XDP CPU per answer at most a fifth of dnsmasq's",
                mode.label()
            ),
            ratio(cpu(Contender::Xdp), cpu(Contender::Dnsmasq)),
            verdict(share.is_finite().then_some(share <= GOAL_DHCP_CPU_SHARE)),
        ]);
        goals.push(vec![
            format!(
                "{}: XDP's highest rate under 1% loss above dnsmasq's",
                mode.label()
            ),
            format!(
                "{} vs {dnsmasq_rate}/s",
                xdp_rate.map_or_else(|| "-".to_owned(), |r| format!("{r}/s"))
            ),
            verdict(xdp_rate.map(|r| r > dnsmasq_rate)),
        ]);
    }
    s.push_str("\nGoals (XDP fast path):\n\n");
    s.push_str(&table(&["goal", "result", "met"], &goals));
    s.push_str("\nEvery step:\n\n");
    let steps: Vec<Vec<String>> = o
        .steps
        .iter()
        .map(|st| {
            vec![
                st.mode.label().to_owned(),
                st.server.label().to_owned(),
                format!(
                    "{}{}",
                    st.rate,
                    if st.attempt > 1 { " (again)" } else { "" }
                ),
                format!("{:.0}", st.sent_per_sec()),
                format!("{:.0}", st.answered_per_sec()),
                format!("{:.2}", st.loss() * 100.0),
                format!("{:.2} / {:.2}", st.latency_ms("p50"), st.latency_ms("p99")),
                us(st.cpu_us_per_answer()),
                format!("{:.2}", st.generator_cores()),
                st.steered
                    .map_or_else(|| "-".to_owned(), |n| format!("{n:.0}")),
                if st.busy_start { "busy" } else { "quiet" }.to_owned(),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "mode",
            "server",
            "rate asked /s",
            "sent /s",
            "answered /s",
            "loss %",
            "p50 / p99 ms",
            "server µs / answer",
            "generator cores",
            "steered",
            "machine at start",
        ],
        &steps,
    ));
    s.push('\n');
    s
}

fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "-".to_owned()
    }
}

fn verdict(met: Option<bool>) -> String {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
    .to_owned()
}

/// Whether `server` is the XDP datapath and it turned out not to be available.
fn missing_xdp(server: TftpServer, missing: &[String]) -> bool {
    server == TftpServer::OursXdp && !missing.is_empty()
}

/// The cell key: server, clients, windowsize.
type CellKey = (TftpServer, u32, u16);

/// The median run (by MB/s) of each cell, in first-run order, and every run's MB/s by cell.
fn medians(runs: Vec<TftpRow>) -> (Vec<TftpRow>, Vec<(CellKey, Vec<f64>)>) {
    let key = |r: &TftpRow| (r.cell.server, r.cell.clients, r.cell.windowsize);
    let mut by_cell: Vec<(CellKey, Vec<TftpRow>)> = Vec::new();
    for r in runs {
        let k = key(&r);
        match by_cell.iter_mut().find(|(c, _)| *c == k) {
            Some((_, v)) => v.push(r),
            None => by_cell.push((k, vec![r])),
        }
    }
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for (k, mut v) in by_cell {
        all.push((k, v.iter().map(TftpRow::mb_per_sec).collect()));
        v.sort_by(|a, b| a.mb_per_sec().total_cmp(&b.mb_per_sec()));
        let mid = v.len() / 2;
        if let Some(row) = v.into_iter().nth(mid) {
            rows.push(row);
        }
    }
    (rows, all)
}

/// Part c: the TFTP benchmark's cells against each datapath and tftpd-hpa.
fn tftp_section(bins: tftp::Bins, datapaths: &Datapaths, quick: bool) -> anyhow::Result<String> {
    let cells = if quick { TFTP_CELLS_QUICK } else { TFTP_CELLS };
    let mut servers = Vec::new();
    let mut missing = Vec::new();
    match datapaths.xdp_args() {
        Ok(_) => servers.push(TftpServer::OursXdp),
        Err(reason) => missing.push(reason),
    }
    servers.push(if datapaths.flag {
        TftpServer::OursKernel
    } else {
        TftpServer::Ours
    });
    servers.push(TftpServer::TftpdHpa);
    let fixture = tftp::Fixture::new(bins)?;
    let bench = fixture.bench(if quick {
        Duration::from_secs(3)
    } else {
        TFTP_QUIET_WAIT
    });
    // Cells of a few seconds on a shared 2-core machine vary by a third from one run to the
    // next: our two datapaths run in alternation, TFTP_REPEATS times, and the median run of
    // each cell is shown (with every run's MB/s). tftpd-hpa (slow, far behind) runs once.
    let repeats = if quick { 1 } else { TFTP_REPEATS };
    let mut runs: Vec<TftpRow> = Vec::new();
    let mut commands: Vec<(TftpServer, String)> = Vec::new();
    for round in 0..repeats {
        for &server in &servers {
            if round > 0 && (server == TftpServer::TftpdHpa || missing_xdp(server, &missing)) {
                continue;
            }
            match bench.run_servers(&[server], cells) {
                Ok((r, c)) => {
                    runs.extend(r);
                    for (server, command) in c {
                        if !commands.iter().any(|(s, _)| *s == server) {
                            commands.push((server, command));
                        }
                    }
                }
                // A datapath the daemon refuses is a row saying so; the peers must run.
                Err(e) if server == TftpServer::OursXdp => {
                    let first = format!("{e:#}");
                    missing.push(format!(
                        "the daemon did not serve: {}",
                        first.lines().next().unwrap_or("?")
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
    let (rows, all_runs) = medians(runs);
    let mut s = String::from("### c. TFTP aggregate throughput by datapath\n\n");
    let _ = writeln!(
        s,
        "The cells of `cargo xtask bench tftp`, one server at a time; our two datapaths \
         {repeats} times in alternation, the median run shown:\n"
    );
    for (server, command) in &commands {
        let _ = writeln!(s, "- {}: `{command}`", server.name());
    }
    for reason in &missing {
        let _ = writeln!(s, "- pxe-daemon --datapath xdp: not available: {reason}");
    }
    s.push('\n');
    let row_cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r: &TftpRow| {
            vec![
                r.cell.server.name().to_owned(),
                r.cell.clients.to_string(),
                format!(
                    "{} / {}",
                    r.cell.windowsize,
                    r.windowsize_used()
                        .map_or_else(|| "-".to_owned(), |w| w.to_string())
                ),
                format!("{:.1}", r.mb_per_sec()),
                r.failures_text(),
                format!("{:.1}", r.server_cpu_per_gb()),
                format!("{:.2}", r.generator_cores()),
                match (r.cell.server, r.steered) {
                    (TftpServer::OursXdp, None | Some(0.0)) => {
                        "0: served by kernel sockets (this build steers no TFTP)".to_owned()
                    }
                    (_, n) => n.map_or_else(|| "-".to_owned(), |n| format!("{n:.0}")),
                },
                all_runs
                    .iter()
                    .find(|(c, _)| *c == (r.cell.server, r.cell.clients, r.cell.windowsize))
                    .map_or_else(String::new, |(_, v)| {
                        v.iter()
                            .map(|x| format!("{x:.0}"))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    }),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "server",
            "N",
            "W asked / used",
            "MB/s",
            "failed",
            "server CPU s/GB",
            "generator CPU (cores)",
            "TFTP frames steered to AF_XDP",
            "MB/s of every run",
        ],
        &row_cells,
    ));
    let mut goal = Vec::new();
    for &(n, w) in cells {
        let mbps = |server: TftpServer| {
            rows.iter()
                .find(|r| r.cell.server == server && r.cell.clients == n && r.cell.windowsize == w)
                .map(TftpRow::mb_per_sec)
        };
        let kernel = mbps(TftpServer::OursKernel).or_else(|| mbps(TftpServer::Ours));
        // Only a run in which TFTP went through AF_XDP measures the XDP datapath.
        let xdp = rows
            .iter()
            .find(|r| {
                r.cell.server == TftpServer::OursXdp
                    && r.cell.clients == n
                    && r.cell.windowsize == w
                    && r.steered.is_some_and(|s| s > 0.0)
            })
            .map(TftpRow::mb_per_sec);
        let ratio_text = match (xdp, kernel) {
            (Some(x), Some(k)) if k > 0.0 => format!("{:.2}x", x / k),
            _ => "-".to_owned(),
        };
        let met = xdp.zip(kernel).map(|(x, k)| x >= GOAL_TFTP_RATIO * k);
        goal.push(vec![
            format!("N={n} W={w}: xdp at least {GOAL_TFTP_RATIO:.0}x kernel"),
            ratio_text,
            verdict(met),
        ]);
    }
    s.push_str("\nGoal (XDP fast path):\n\n");
    s.push_str(&table(&["goal", "xdp / kernel MB/s", "met"], &goal));
    Ok(s)
}
