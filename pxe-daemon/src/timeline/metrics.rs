//! Boot metrics for dashboards, with bounded labels (stage, arch label, group name; no MAC).

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::{Stage, Timeline};
use crate::metrics::{MetricsError, NAMESPACE};

/// Stage duration buckets, seconds: a DHCP exchange in milliseconds to a slow image in minutes.
const STAGE_SECONDS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Counters and histograms fed as stages end.
#[derive(Clone, Debug)]
pub struct TimelineMetrics {
    stage_seconds: HistogramVec,
    completed: IntCounterVec,
    failed: IntCounterVec,
}

impl TimelineMetrics {
    /// Creates and registers them.
    pub fn new(registry: &Registry) -> Result<TimelineMetrics, MetricsError> {
        let m = TimelineMetrics {
            stage_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "boot_stage_duration_seconds",
                    "Time machines spent in each boot stage, by stage, arch and group.",
                )
                .namespace(NAMESPACE)
                .buckets(STAGE_SECONDS_BUCKETS.to_vec()),
                &["stage", "arch", "group"],
            )?,
            completed: IntCounterVec::new(
                Opts::new(
                    "boots_completed_total",
                    "Boots that reached the last artifact of their profile, by arch and group.",
                )
                .namespace(NAMESPACE),
                &["arch", "group"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "boots_failed_total",
                    "Boot steps that failed (TFTP transfer failed, HTTP 4xx/5xx), by stage.",
                )
                .namespace(NAMESPACE),
                &["stage"],
            )?,
        };
        registry.register(Box::new(m.stage_seconds.clone()))?;
        registry.register(Box::new(m.completed.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        for s in Stage::ALL {
            m.failed.with_label_values(&[s.label()]);
        }
        Ok(m)
    }

    pub(super) fn stage_ended(&self, stage: Stage, arch: &str, group: &str, seconds: f64) {
        self.stage_seconds
            .with_label_values(&[stage.label(), arch, group])
            .observe(seconds);
    }

    pub(super) fn completed(&self, arch: &str, group: &str) {
        self.completed.with_label_values(&[arch, group]).inc();
    }

    pub(super) fn failed(&self, stage: Stage) {
        self.failed.with_label_values(&[stage.label()]).inc();
    }
}

/// The gauges computed at scrape time: machines per stage, stuck machines per stage.
#[derive(Clone, Debug)]
pub struct CensusCollector {
    timeline: Timeline,
    machines: IntGaugeVec,
    stuck: IntGaugeVec,
}

impl CensusCollector {
    /// A collector over `timeline`.
    pub fn new(timeline: Timeline) -> Result<CensusCollector, MetricsError> {
        Ok(CensusCollector {
            timeline,
            machines: IntGaugeVec::new(
                Opts::new(
                    "boot_machines",
                    "Machines whose latest boot is in each stage now (remembered machines only).",
                )
                .namespace(NAMESPACE),
                &["stage"],
            )?,
            stuck: IntGaugeVec::new(
                Opts::new(
                    "boot_stuck_machines",
                    "Machines in a stage other than done for longer than timeline.stuck_after_secs.",
                )
                .namespace(NAMESPACE),
                &["stage"],
            )?,
        })
    }
}

impl Collector for CensusCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.machines.desc();
        d.extend(self.stuck.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (current, stuck) = self.timeline.census();
        for s in Stage::ALL {
            self.machines
                .with_label_values(&[s.label()])
                .set(current.get(&s).copied().unwrap_or(0));
            if s != Stage::Done {
                self.stuck
                    .with_label_values(&[s.label()])
                    .set(stuck.get(&s).copied().unwrap_or(0));
            }
        }
        let mut out = self.machines.collect();
        out.extend(self.stuck.collect());
        out
    }
}
