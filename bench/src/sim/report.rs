//! The rack's report: per-stage percentiles, time until every machine booted, failures by stage
//! and reason, the simulator's own cost; as text and as JSON.

use std::{collections::BTreeMap, fmt::Write as _, sync::atomic::Ordering, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    dhcp::Firmware,
    machine::{Outcome, Stage},
    Progress, RackArgs,
};

/// Percentiles of one stage's durations, in seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StageStats {
    /// Stage name.
    pub stage: String,
    /// Machines that completed it.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// Failures of one (stage, reason).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FailureCount {
    /// Stage.
    pub stage: String,
    /// Reason.
    pub reason: String,
    /// Machines.
    pub count: usize,
}

/// What the simulator itself cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SimulatorCost {
    /// Wall time of the run.
    pub wall_secs: f64,
    /// User CPU.
    pub user_secs: f64,
    /// System CPU.
    pub system_secs: f64,
    /// Peak resident memory.
    pub peak_rss_kib: u64,
    /// Event-loop threads.
    pub threads: u32,
    /// Frames received that were for no machine (other clients, or unreadable).
    pub stray_frames: u64,
    /// DHCP frames the kernel dropped before the simulator read them (its socket full): not
    /// zero means the simulator, not the servers, lost answers.
    pub packet_drops: u64,
}

/// The headline numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Name of the servers under test.
    pub label: String,
    /// Machines.
    pub machines: usize,
    /// Machines per firmware.
    pub mix: BTreeMap<String, usize>,
    /// Power-on spread asked for.
    pub spread_secs: f64,
    /// Machines booted.
    pub booted: usize,
    /// Machines failed.
    pub failed: usize,
    /// Seconds from the rack's start until the last machine booted; `None` unless all did.
    pub all_booted_secs: Option<f64>,
    /// Seconds until the last of those that booted did.
    pub last_booted_secs: Option<f64>,
    /// Per stage, plus `total` (power-on to booted).
    pub stages: Vec<StageStats>,
    /// Failures by stage and reason, most first.
    pub failures: Vec<FailureCount>,
    /// DHCP requests resent after a timeout, all machines.
    pub dhcp_resends: u64,
    /// NAKs that made machines start DHCP over, all machines.
    pub dhcp_naks: u64,
    /// TFTP packets resent after a timeout, all machines.
    pub tftp_resends: u64,
    /// HTTP `503`s waited out, all machines.
    pub http_busy_retries: u64,
    /// Bytes received, all machines.
    pub bytes: u64,
    /// The simulator's cost.
    pub simulator: SimulatorCost,
    /// The simulator's CPU (user + system) per machine, in milliseconds.
    pub simulator_cpu_ms_per_machine: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    /// Headline numbers.
    pub summary: Summary,
    /// Seconds after the rack's start at which each booted machine finished, sorted: the
    /// completion curve.
    pub completions: Vec<f64>,
    /// Every machine.
    #[serde(skip_deserializing)]
    pub machines: Vec<Outcome>,
}

/// The `q` quantile (nearest rank) of sorted `v`.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn stats(stage: &str, mut v: Vec<f64>) -> StageStats {
    v.sort_by(f64::total_cmp);
    StageStats {
        stage: stage.to_owned(),
        count: v.len(),
        p50: quantile(&v, 0.50),
        p90: quantile(&v, 0.90),
        p99: quantile(&v, 0.99),
        max: v.last().copied().unwrap_or(0.0),
    }
}

impl Report {
    /// Builds the report of a run.
    pub(crate) fn new(
        args: &RackArgs,
        mix: &[(Firmware, u32)],
        machines: Vec<Outcome>,
        cost: SimulatorCost,
    ) -> Report {
        let mut mix_count: BTreeMap<String, usize> =
            mix.iter().map(|(f, _)| (f.name().to_owned(), 0)).collect();
        for m in &machines {
            *mix_count.entry(m.firmware.to_owned()).or_default() += 1;
        }
        let mut stages: Vec<StageStats> = Stage::ALL
            .iter()
            .map(|s| {
                stats(
                    s.name(),
                    machines
                        .iter()
                        .filter_map(|m| m.stages.get(s.name()).copied())
                        .collect(),
                )
            })
            .collect();
        stages.push(stats(
            "total",
            machines
                .iter()
                .filter_map(|m| m.booted_at_secs.map(|b| b - m.power_on_secs))
                .collect(),
        ));
        let mut completions: Vec<f64> = machines.iter().filter_map(|m| m.booted_at_secs).collect();
        completions.sort_by(f64::total_cmp);
        let mut failures: BTreeMap<(String, String), usize> = BTreeMap::new();
        for m in &machines {
            if let Some(f) = &m.failure {
                *failures
                    .entry((f.stage.name().to_owned(), f.reason.clone()))
                    .or_default() += 1;
            }
        }
        let mut failures: Vec<FailureCount> = failures
            .into_iter()
            .map(|((stage, reason), count)| FailureCount {
                stage,
                reason,
                count,
            })
            .collect();
        failures.sort_by_key(|f| std::cmp::Reverse(f.count));
        let booted = completions.len();
        let failed = machines.len() - booted;
        let sum = |f: fn(&Outcome) -> u64| machines.iter().map(f).sum::<u64>();
        let cpu = cost.user_secs + cost.system_secs;
        let summary = Summary {
            label: args.label.clone(),
            machines: machines.len(),
            mix: mix_count,
            spread_secs: args.spread_secs,
            booted,
            failed,
            all_booted_secs: (failed == 0).then(|| completions.last().copied().unwrap_or(0.0)),
            last_booted_secs: completions.last().copied(),
            stages,
            failures,
            dhcp_resends: sum(|m| u64::from(m.dhcp_resends)),
            dhcp_naks: sum(|m| u64::from(m.dhcp_naks)),
            tftp_resends: sum(|m| u64::from(m.tftp_resends)),
            http_busy_retries: sum(|m| u64::from(m.http_busy_retries)),
            bytes: sum(|m| m.bytes),
            simulator_cpu_ms_per_machine: cpu * 1000.0 / machines.len().max(1) as f64,
            simulator: cost,
        };
        Report {
            summary,
            completions,
            machines,
        }
    }

    /// The human report.
    pub(crate) fn text(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let mix: Vec<String> = s.mix.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "rack: {} machines ({}), power-on spread {} s, against {}",
            s.machines,
            mix.join(", "),
            s.spread_secs,
            s.label
        );
        let _ = writeln!(
            out,
            "{:<10} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "STAGE", "DONE", "P50", "P90", "P99", "MAX"
        );
        for st in &s.stages {
            let _ = writeln!(
                out,
                "{:<10} {:>6} {:>8.3}s {:>8.3}s {:>8.3}s {:>8.3}s",
                st.stage, st.count, st.p50, st.p90, st.p99, st.max
            );
        }
        for f in &s.failures {
            let _ = writeln!(out, "failed: {} in {}: {}", f.count, f.stage, f.reason);
        }
        let _ = writeln!(
            out,
            "resends: dhcp {} (and {} NAKs started over), tftp {}; http 503 waits {}; {:.1} MiB received",
            s.dhcp_resends,
            s.dhcp_naks,
            s.tftp_resends,
            s.http_busy_retries,
            s.bytes as f64 / (1024.0 * 1024.0)
        );
        let c = &s.simulator;
        let _ = writeln!(
            out,
            "simulator: {:.2} s CPU ({:.2} user, {:.2} system) in {:.1} s on {} thread(s): {:.3} ms CPU per machine, peak RSS {} MiB, {} DHCP frames dropped unread",
            c.user_secs + c.system_secs,
            c.user_secs,
            c.system_secs,
            c.wall_secs,
            c.threads,
            s.simulator_cpu_ms_per_machine,
            c.peak_rss_kib / 1024,
            c.packet_drops
        );
        match s.all_booted_secs {
            Some(t) => {
                let _ = writeln!(out, "all {} machines booted in {t:.2} s", s.machines);
            }
            None => {
                let _ = writeln!(
                    out,
                    "{} of {} machines booted ({} failed){}",
                    s.booted,
                    s.machines,
                    s.failed,
                    s.last_booted_secs
                        .map(|t| format!("; the last at {t:.2} s"))
                        .unwrap_or_default()
                );
            }
        }
        out
    }
}

/// One progress line: a bar (on a terminal) or plain counts.
pub(crate) fn progress_line(p: &Progress, total: usize, elapsed: Duration, bar: bool) -> String {
    let booted = p.booted.load(Ordering::Relaxed);
    let failed = p.failed.load(Ordering::Relaxed);
    let on = p.powered_on.load(Ordering::Relaxed);
    let stages: Vec<String> = Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {}", s.name(), p.in_stage[i].load(Ordering::Relaxed)))
        .collect();
    let counts = format!(
        "{booted}/{total} booted, {failed} failed, {on} on | {} | {:.1}s",
        stages.join(" "),
        elapsed.as_secs_f64()
    );
    if !bar {
        return format!("rack: {counts}");
    }
    const WIDTH: usize = 30;
    let filled = (booted + failed) * WIDTH / total.max(1);
    let ok = booted * WIDTH / total.max(1);
    let mut b = String::with_capacity(WIDTH);
    for i in 0..WIDTH {
        b.push(if i < ok {
            '#'
        } else if i < filled {
            'x'
        } else {
            '.'
        });
    }
    format!("[{b}] {counts}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
        assert_eq!(quantile(&[], 0.9), 0.0);
    }
}
