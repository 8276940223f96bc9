//! The rack section of bench/RESULTS.md: the run's facts, the table, the verdicts and the
//! plots. How it is made fair and how to read it is bench/README.md's.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context as _;

use super::{
    mode_name, Env, RackArgs, RunResult, Target, GC_THRESH, NBP_BIOS_BYTES, NBP_EFI_BYTES,
    SITE_RCVBUF_BYTES,
};
use crate::bench::{results, run_info};

/// The heading's anchor in bench/README.md.
const METHOD_ANCHOR: &str = "rack-report";

/// A summary field of a report.
fn field<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &report["summary"][name]
}

fn secs(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.2} s"))
}

/// The markdown section: the run's facts, the table, the verdicts, the plots.
pub(super) fn section(
    args: &RackArgs,
    env: &Env<'_>,
    results: &[RunResult],
    plots: &[(String, PathBuf)],
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "## Rack boot: pxe-daemon against dnsmasq + nginx\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench rack --machines {} --dhcp-mode {} --mix {} --spread-secs {}` on {}, \
         commit {}; {}. A {} MiB kernel and a {} MiB initrd; NBPs of {NBP_BIOS_BYTES} bytes \
         (BIOS) and {NBP_EFI_BYTES} bytes (UEFI); the machines' addresses in {}.{}.0.0/16; \
         neighbour table thresholds raised to {:?} during the run; the site DHCP server's \
         sockets given a {} MiB receive buffer. Every report, plot and the daemon's metrics \
         after each run are left in `target/rack-bench/`. {}\n",
        args.machines
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.dhcp_mode.join(","),
        args.mix,
        args.spread_secs,
        run_info::date_utc(),
        run_info::commit(),
        run_info::machine(),
        args.kernel_mib,
        args.initrd_mib,
        env.pool[0],
        env.pool[1],
        GC_THRESH,
        SITE_RCVBUF_BYTES >> 20,
        results::method_link(METHOD_ANCHOR),
    );
    let _ = writeln!(
        s,
        "| DHCP | N | servers | booted | failed | all booted | p99 dhcp | p99 nbp | p99 ipxe_dhcp | p99 script | p99 kernel | p99 initrd | p99 total | DHCP resends | server CPU | drops: site / tested / simulator | simulator CPU per machine | others' CPU meanwhile |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut failures = String::new();
    let mut reports = Vec::new();
    for r in results {
        let text = std::fs::read_to_string(&r.report)
            .with_context(|| format!("reading {}", r.report.display()))?;
        let report: serde_json::Value = serde_json::from_str(&text).context("a rack report")?;
        let p99 = |stage: &str| {
            field(&report, "stages")
                .as_array()
                .and_then(|a| a.iter().find(|st| st["stage"] == stage))
                .map_or_else(|| "-".to_owned(), |st| secs(&st["p99"]))
        };
        let all = match field(&report, "all_booted_secs").as_f64() {
            Some(t) => format!("**{t:.2} s**"),
            None => format!(
                "not all (last at {})",
                secs(field(&report, "last_booted_secs"))
            ),
        };
        let site = if r.full {
            "-".to_owned()
        } else {
            r.site_udp_drops.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {all} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {site} / {} / {} | {:.2} ms | {:.0} s in {:.0} s |",
            mode_name(r.full),
            r.machines,
            r.target.label(),
            field(&report, "booted"),
            field(&report, "failed"),
            p99("dhcp"),
            p99("nbp"),
            p99("ipxe_dhcp"),
            p99("script"),
            p99("kernel"),
            p99("initrd"),
            p99("total"),
            field(&report, "dhcp_resends"),
            r.server_cpu_secs,
            r.target_udp_drops,
            r.client_udp_drops + report["summary"]["simulator"]["packet_drops"].as_u64().unwrap_or(0),
            field(&report, "simulator_cpu_ms_per_machine")
                .as_f64()
                .unwrap_or(0.0),
            r.others_cpu_secs,
            report["summary"]["simulator"]["wall_secs"]
                .as_f64()
                .unwrap_or(0.0),
        );
        for f in field(&report, "failures").as_array().into_iter().flatten() {
            let _ = writeln!(
                failures,
                "- {} DHCP, N = {}, {}: {} machines failed in `{}`: {}",
                mode_name(r.full),
                r.machines,
                r.target.label(),
                f["count"],
                f["stage"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            );
        }
        if !r.exit.contains("exit status: 0") && !r.exit.contains("exit status: 1") {
            let _ = writeln!(
                failures,
                "- {} DHCP, N = {}, {}: the simulator ended with {}",
                mode_name(r.full),
                r.machines,
                r.target.label(),
                r.exit
            );
        }
        reports.push((r, report));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Verdicts (the goal: every machine boots against pxe-daemon, in at most half the time dnsmasq + nginx take):\n");
    for (r, ours) in reports.iter().filter(|(r, _)| r.target.is_ours()) {
        let Some((_, theirs)) = reports.iter().find(|(o, _)| {
            o.target == Target::Dnsmasq && o.machines == r.machines && o.full == r.full
        }) else {
            continue;
        };
        let ours_all = field(ours, "all_booted_secs").as_f64();
        let theirs_all = field(theirs, "all_booted_secs").as_f64();
        let ours_label = r.target.label();
        let verdict = match (ours_all, theirs_all) {
            (Some(a), Some(b)) => format!(
                "{ours_label} {a:.2} s, dnsmasq + nginx {b:.2} s: {:.2}x as fast{}",
                b / a,
                if a * 2.0 <= b { " (goal met)" } else { " (goal: 2x, not met)" }
            ),
            (Some(a), None) => format!(
                "{ours_label} booted all in {a:.2} s; dnsmasq + nginx booted {} of {} (the last at {}): not all, so the goal is met",
                field(theirs, "booted"),
                field(theirs, "machines"),
                secs(field(theirs, "last_booted_secs"))
            ),
            (None, _) => format!(
                "{ours_label} did not boot every machine ({} of {}): goal not met",
                field(ours, "booted"),
                field(ours, "machines")
            ),
        };
        let _ = writeln!(
            s,
            "- {} DHCP, N = {}: {verdict}.",
            mode_name(r.full),
            r.machines
        );
    }
    let _ = writeln!(s);
    if !failures.is_empty() {
        let _ = writeln!(s, "Failures by stage and reason:\n\n{failures}");
    }
    for (name, _) in plots {
        let _ = writeln!(s, "![{name}: machines booted over time]({name})\n");
    }
    Ok(s)
}
