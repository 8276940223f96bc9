//! The HTTP benchmark's section of bench/RESULTS.md.

use std::{fmt::Write as _, time::Duration};

use super::{
    load::{LargeRun, Others, SmallRun, Usage, WRK_THREADS},
    servers::{self, Kind, NGINX_WORKERS},
    Plan, LARGE_CONNECTIONS,
};
use crate::bench::{
    results::method_link,
    run_info::{self, first_line},
};

/// The heading's anchor in bench/README.md.
const METHOD_ANCHOR: &str = "http-report";

/// What the run was, for the report.
#[derive(Debug)]
pub(super) struct Info {
    command: String,
    date: String,
    commit: String,
    machine: String,
    loadavg: String,
    nginx: String,
    wrk: String,
    tmp_fs: String,
}

impl Info {
    /// Reads the date, commit, machine and peers' versions.
    pub(super) fn collect() -> anyhow::Result<Info> {
        Ok(Info {
            command: run_info::command_line(),
            date: run_info::date_utc(),
            commit: run_info::commit(),
            machine: run_info::machine(),
            loadavg: run_info::loadavg(),
            nginx: first_line(&["nginx", "-v"]).replace("nginx version: ", ""),
            wrk: first_line(&["wrk", "-v"])
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_owned(),
            tmp_fs: first_line(&[
                "findmnt",
                "--noheadings",
                "--output",
                "FSTYPE",
                "--target",
                &std::env::temp_dir().to_string_lossy(),
            ]),
        })
    }
}

/// What the run measured.
#[derive(Debug)]
pub(super) struct Results {
    /// Size of the rendered script (and of nginx's static copy).
    pub script_bytes: usize,
    /// Every large-download run.
    pub large: Vec<LargeRun>,
    /// Every wrk run.
    pub small: Vec<SmallRun>,
    /// Peak RSS after the large runs, KiB: [pxe-daemon, nginx].
    pub rss_after_large_kib: [u64; 2],
    /// Peak RSS at the end, KiB: [pxe-daemon, nginx].
    pub rss_at_end_kib: [u64; 2],
}

/// One server's large runs summed.
#[derive(Debug, Default, Clone, Copy)]
struct LargeTotal {
    bytes: u64,
    responses: u64,
    secs: f64,
    usage: Usage,
}

impl LargeTotal {
    fn of(runs: &[LargeRun], kind: Kind) -> LargeTotal {
        let mut total = LargeTotal::default();
        for run in runs.iter().filter(|r| r.kind == kind) {
            total.bytes += run.bytes;
            total.responses += run.responses;
            total.secs += run.secs;
            total.usage.add(run.usage);
        }
        total
    }

    fn gb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs.max(1e-9) / 1e9
    }

    fn cpu_secs_per_gb(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / (self.bytes as f64 / 1e9).max(1e-9)
    }
}

/// One server's wrk runs at one concurrency summed over the rounds.
#[derive(Debug, Default, Clone, Copy)]
struct SmallTotal {
    connections: u32,
    requests: u64,
    /// wrk's own run time, summed (requests over its Requests/sec).
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    usage: Usage,
}

impl SmallTotal {
    fn of(runs: &[SmallRun], kind: Kind, connections: u32) -> Option<SmallTotal> {
        let runs: Vec<&SmallRun> = runs
            .iter()
            .filter(|r| r.kind == kind && r.connections == connections)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let mut total = SmallTotal {
            connections,
            ..SmallTotal::default()
        };
        for run in &runs {
            total.requests += run.requests;
            total.secs += run.requests as f64 / run.per_sec.max(1e-9);
            total.p50_ms += run.p50_ms / runs.len() as f64;
            total.p99_ms += run.p99_ms / runs.len() as f64;
            total.usage.add(run.usage);
        }
        Some(total)
    }

    fn per_sec(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.2}", ours / theirs)
    } else {
        "—".to_owned()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "no"
    }
}

/// The section's markdown.
pub(super) fn markdown(info: &Info, plan: &Plan, results: &Results) -> String {
    let mut md = String::new();
    let big_mib = servers::BIG_BYTES >> 20;
    let large_secs = plan.large.as_secs_f64();
    let small_secs = plan.small.as_secs();
    let levels = plan
        .small_connections
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        md,
        "\
## HTTP: pxe-daemon against nginx (sendfile), large downloads and small scripts

Made by `{command}` on {date}, commit {commit}; {machine}; load average at the start \
{loadavg}; temporary files on {tmp_fs}. pxe-daemon (release build, port {ours_port}, \
`--dhcp-mode off --xdp-mode off --log-level info`) and nginx {nginx} (port {nginx_port}, \
`worker_processes {workers}`) serve the same {big_mib} MiB file and script. Large: \
`pxe-bench http-load`, {conns} keep-alive connections, {large_secs:.0} s per run. Small: wrk {wrk} \
(`-t{wrk_threads} -cN -d{small_secs}s --latency`), N = {levels}, on pxe-daemon's rendered \
`{script_path}` and nginx's static `{static_path}` ({script_bytes} bytes each). {rounds} \
round(s), who goes first alternating. {method}
",
        command = info.command,
        date = info.date,
        commit = info.commit,
        machine = info.machine,
        loadavg = info.loadavg,
        tmp_fs = info.tmp_fs,
        ours_port = servers::OURS_PORT,
        nginx_port = servers::NGINX_PORT,
        workers = NGINX_WORKERS,
        nginx = info.nginx,
        conns = LARGE_CONNECTIONS,
        rounds = plan.rounds,
        wrk = info.wrk,
        wrk_threads = WRK_THREADS,
        script_path = servers::SCRIPT_QUERY_PATH,
        static_path = servers::STATIC_SCRIPT_PATH,
        script_bytes = results.script_bytes,
        method = method_link(METHOD_ANCHOR),
    );

    let ours = LargeTotal::of(&results.large, Kind::Ours);
    let nginx = LargeTotal::of(&results.large, Kind::Nginx);
    let _ = writeln!(
        md,
        "\n### Large: {big_mib} MiB to {LARGE_CONNECTIONS} connections ({} s per server)\n\n\
| figure | pxe-daemon | nginx | pxe-daemon / nginx |\n|---|---|---|---|",
        f64::from(plan.rounds) * large_secs
    );
    let per_gb = |t: &LargeTotal, f: fn(&Usage) -> Duration| t.cpu_secs_per_gb(f(&t.usage));
    let pct = |t: &LargeTotal, f: fn(&Usage) -> Duration| t.usage.percent_of_core(f(&t.usage));
    let rows: [(&str, f64, f64, usize); 13] = [
        (
            "aggregate throughput, GB/s",
            ours.gb_per_sec(),
            nginx.gb_per_sec(),
            2,
        ),
        (
            "server CPU per GB, s",
            per_gb(&ours, |u| u.server_cpu),
            per_gb(&nginx, |u| u.server_cpu),
            3,
        ),
        (
            "server + ksoftirqd CPU per GB, s",
            per_gb(&ours, |u| u.server_cpu + u.softirq_cpu),
            per_gb(&nginx, |u| u.server_cpu + u.softirq_cpu),
            3,
        ),
        (
            "whole transfer CPU per GB (server + client + ksoftirqd), s",
            per_gb(&ours, Usage::transfer_cpu),
            per_gb(&nginx, Usage::transfer_cpu),
            3,
        ),
        (
            "machine kernel time per GB (system + irq + softirq of /proc/stat, others' included), s",
            per_gb(&ours, |u| u.machine.kernel),
            per_gb(&nginx, |u| u.machine.kernel),
            3,
        ),
        (
            "peak RSS during the large runs, MiB",
            mib(results.rss_after_large_kib[0]),
            mib(results.rss_after_large_kib[1]),
            1,
        ),
        (
            "server CPU, % of a core",
            pct(&ours, |u| u.server_cpu),
            pct(&nginx, |u| u.server_cpu),
            0,
        ),
        (
            "client CPU, % of a core",
            pct(&ours, |u| u.client_cpu),
            pct(&nginx, |u| u.client_cpu),
            0,
        ),
        (
            "ksoftirqd CPU, % of a core",
            pct(&ours, |u| u.softirq_cpu),
            pct(&nginx, |u| u.softirq_cpu),
            0,
        ),
        (
            "rest of machine, % of a core",
            pct(&ours, Usage::rest_of_machine),
            pct(&nginx, Usage::rest_of_machine),
            0,
        ),
        (
            "client CPU per GB, s",
            per_gb(&ours, |u| u.client_cpu),
            per_gb(&nginx, |u| u.client_cpu),
            3,
        ),
        (
            "ksoftirqd CPU per GB, s",
            per_gb(&ours, |u| u.softirq_cpu),
            per_gb(&nginx, |u| u.softirq_cpu),
            3,
        ),
        (
            "whole downloads (no errors)",
            ours.responses as f64,
            nginx.responses as f64,
            0,
        ),
    ];
    for (name, o, n, digits) in rows {
        let _ = writeln!(
            md,
            "| {name} | {o:.digits$} | {n:.digits$} | {} |",
            ratio(o, n)
        );
    }

    let _ = writeln!(
        md,
        "\n### Small: rendered script against a static file of the same size ({small_secs} s each)\n\n\
| connections | figure | pxe-daemon (rendered) | nginx (static) | pxe-daemon / nginx |\n|---|---|---|---|---|"
    );
    for &connections in &plan.small_connections {
        let (Some(o), Some(n)) = (
            &SmallTotal::of(&results.small, Kind::Ours, connections),
            &SmallTotal::of(&results.small, Kind::Nginx, connections),
        ) else {
            continue;
        };
        let per_req =
            |r: &SmallTotal, d: Duration| d.as_secs_f64() * 1e6 / r.requests.max(1) as f64;
        let pct = |r: &SmallTotal, f: fn(&Usage) -> Duration| r.usage.percent_of_core(f(&r.usage));
        let rows: [(&str, f64, f64, usize); 8] = [
            ("requests/s", o.per_sec(), n.per_sec(), 0),
            ("latency p50, ms (mean of the runs)", o.p50_ms, n.p50_ms, 2),
            ("latency p99, ms (mean of the runs)", o.p99_ms, n.p99_ms, 2),
            (
                "server CPU per request, µs",
                per_req(o, o.usage.server_cpu),
                per_req(n, n.usage.server_cpu),
                1,
            ),
            (
                "server + ksoftirqd CPU per request, µs",
                per_req(o, o.usage.server_cpu + o.usage.softirq_cpu),
                per_req(n, n.usage.server_cpu + n.usage.softirq_cpu),
                1,
            ),
            (
                "server CPU, % of a core",
                pct(o, |u| u.server_cpu),
                pct(n, |u| u.server_cpu),
                0,
            ),
            (
                "wrk CPU, % of a core",
                pct(o, |u| u.client_cpu),
                pct(n, |u| u.client_cpu),
                0,
            ),
            (
                "rest of machine, % of a core",
                pct(o, Usage::rest_of_machine),
                pct(n, Usage::rest_of_machine),
                0,
            ),
        ];
        for (name, ov, nv, digits) in rows {
            let _ = writeln!(
                md,
                "| {connections} | {name} | {ov:.digits$} | {nv:.digits$} | {} |",
                ratio(ov, nv)
            );
        }
    }
    let _ = writeln!(
        md,
        "\nPeak RSS at the end (after the small runs too): pxe-daemon {:.1} MiB, nginx {:.1} MiB.",
        mib(results.rss_at_end_kib[0]),
        mib(results.rss_at_end_kib[1]),
    );

    let best = plan
        .small_connections
        .iter()
        .filter_map(|&c| SmallTotal::of(&results.small, Kind::Ours, c))
        .max_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
    let server_gb = |t: &LargeTotal| per_gb(t, |u| u.server_cpu + u.softirq_cpu);
    let _ = writeln!(
        md,
        "\n### Goals: nginx's throughput and CPU per byte, 20,000 scripts/s\n\n| goal | result | met |\n|---|---|---|\n\
| at least nginx's throughput on large files | {:.2} vs {:.2} GB/s | {} |\n\
| no more server CPU per byte than nginx (server + ksoftirqd) | {:.3} vs {:.3} s/GB | {} |\n\
| at least 20,000 rendered scripts per second | {} | {} |",
        ours.gb_per_sec(),
        nginx.gb_per_sec(),
        yes_no(ours.gb_per_sec() >= nginx.gb_per_sec()),
        server_gb(&ours),
        server_gb(&nginx),
        yes_no(server_gb(&ours) <= server_gb(&nginx)),
        best.map_or("no run".to_owned(), |b| format!(
            "{:.0}/s (wrk -c{})",
            b.per_sec(),
            b.connections
        )),
        yes_no(best.is_some_and(|b| b.per_sec() >= 20_000.0)),
    );

    let _ = writeln!(
        md,
        "\n### Every run\n\n\
| run | load | server | GB/s or requests/s | server CPU % of a core | client CPU % | ksoftirqd % | rest of machine % | busiest others, % of a core |\n\
|---|---|---|---|---|---|---|---|---|"
    );
    let mut n = 0;
    for run in &results.large {
        n += 1;
        let u = &run.usage;
        let _ = writeln!(
            md,
            "| {n} | large, {LARGE_CONNECTIONS} connections | {} | {:.2} GB/s | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            run.kind.name(),
            run.bytes as f64 / run.secs.max(1e-9) / 1e9,
            u.percent_of_core(u.server_cpu),
            u.percent_of_core(u.client_cpu),
            u.percent_of_core(u.softirq_cpu),
            u.percent_of_core(u.rest_of_machine()),
            others(&run.others, u),
        );
    }
    for run in &results.small {
        n += 1;
        let u = &run.usage;
        let _ = writeln!(
            md,
            "| {n} | wrk -c{} | {} | {:.0}/s | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            run.connections,
            run.kind.name(),
            run.per_sec,
            u.percent_of_core(u.server_cpu),
            u.percent_of_core(u.client_cpu),
            u.percent_of_core(u.softirq_cpu),
            u.percent_of_core(u.rest_of_machine()),
            others(&run.others, u),
        );
    }
    md
}

/// `rustc 45, qemu-system-x86 20` (% of a core over the run).
fn others(others: &Others, usage: &Usage) -> String {
    others
        .iter()
        .map(|(name, time)| format!("{name} {:.0}", usage.percent_of_core(*time)))
        .collect::<Vec<_>>()
        .join(", ")
}
