//! The TFTP section of bench/RESULTS.md: the run's facts, the table, the ratio to tftpd-hpa
//! and the goal. How it is measured and how to read it is bench/README.md's.

use std::fmt::Write as _;

use anyhow::ensure;
use pxe_tests::TestNet;

use super::{
    rounds_for, Row, Server, BLKSIZE, CLIENT_RETRIES, CLIENT_TIMEOUT_MS, FILE_BYTES,
    GENERATOR_THREADS, GOAL_RATIO, OUR_MAX_TRANSFERS, OUR_PORT_RANGE, QUIET_CORES, QUIET_WAIT,
    QUIET_WAIT_QUICK,
};
use crate::bench::{results, run_info};

/// The heading's anchor in bench/README.md.
const METHOD_ANCHOR: &str = "tftp-report";

/// The rows as a Markdown section: what ran, the table, the ratio to tftpd-hpa, the goal.
pub(super) fn section(
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
        "`{command}` on {date}, commit {commit}; {machine}.\n",
        date = run_info::date_utc(),
        commit = run_info::commit(),
        machine = run_info::machine(),
    )?;
    writeln!(
        s,
        "N clients (`pxe-bench tftp-load`, {GENERATOR_THREADS} threads) read a {mib} MiB file \
         with `tsize 0 blksize {BLKSIZE}` (and `windowsize 4` in the W=4 rows), {r100} transfers \
         each at N = 100 and {r1000} at N = 1,000; timeout {CLIENT_TIMEOUT_MS} ms, \
         {CLIENT_RETRIES} retries; each cell first waited up to {quiet} s for other work to fall \
         under {QUIET_CORES} cores. Servers in `{sns}`, clients in `{cns}`, one server at a \
         time. {method}\n",
        mib = FILE_BYTES >> 20,
        r100 = rounds_for(100),
        r1000 = rounds_for(1000),
        quiet = if quick { QUIET_WAIT_QUICK } else { QUIET_WAIT }.as_secs(),
        sns = net.server_ns(),
        cns = net.client_ns(),
        method = results::method_link(METHOD_ANCHOR),
    )?;
    for (server, command) in commands {
        if server.is_ours() {
            writeln!(
                s,
                "- {}: `{command}` (release build; `BENCH.toml` is `[tftp] listen = \"{}:69\", \
                 max_transfers = {OUR_MAX_TRANSFERS}, port_range = [{}, {}]`)",
                server.name(),
                net.server_ip(),
                OUR_PORT_RANGE.0,
                OUR_PORT_RANGE.1
            )?;
        } else {
            writeln!(s, "- {}: `{command}`", server.name())?;
        }
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
            row.server_cpu_per_gb(),
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
            "Goal (TFTP at rack scale): no failed transfer at N = 1,000: {}; at least {GOAL_RATIO:.0}x tftpd-hpa's \
             throughput at N = 1,000: {} (best {best_1000:.2}x).",
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

/// One line per cell for the console.
pub(super) fn summary_line(row: &Row) -> String {
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

/// The quick run's verdict: every transfer completed with the right bytes.
pub(super) fn check_quick(rows: &[Row]) -> anyhow::Result<()> {
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
