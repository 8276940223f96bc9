//! The XDP program's per-CPU class counters, summed over CPUs and exported as
//! `pxe_xdp_frames_total{class}` at scrape time.

use std::sync::{Arc, Mutex};

use aya::{
    maps::{MapData, PerCpuArray},
    Ebpf,
};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounterVec, Opts,
};
use pxe_common::{PacketClass, Verdict, CLASS_COUNTERS_MAP, VERDICT_COUNT, VERDICT_COUNTERS_MAP};

use super::{map_error, XdpLoadError};
use crate::metrics::NAMESPACE;

/// Shared handle to the counter map; cheap to clone.
#[derive(Clone)]
pub struct XdpCounters {
    map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    exported: IntCounterVec,
    verdict_map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    verdicts: IntCounterVec,
}

impl std::fmt::Debug for XdpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpCounters").finish_non_exhaustive()
    }
}

impl XdpCounters {
    /// Takes the counter map out of a loaded object.
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<XdpCounters, XdpLoadError> {
        let map: PerCpuArray<MapData, u64> = ebpf
            .take_map(CLASS_COUNTERS_MAP)
            .ok_or_else(|| map_error(CLASS_COUNTERS_MAP, "missing from the object"))?
            .try_into()
            .map_err(|e| map_error(CLASS_COUNTERS_MAP, e))?;
        let exported = IntCounterVec::new(
            Opts::new(
                "xdp_frames_total",
                "Frames seen by the XDP program on the boot interface, by class.",
            )
            .namespace(NAMESPACE),
            &["class"],
        )
        .expect("metric name and labels are valid constants");
        let verdict_map: PerCpuArray<MapData, u64> = ebpf
            .take_map(VERDICT_COUNTERS_MAP)
            .ok_or_else(|| map_error(VERDICT_COUNTERS_MAP, "missing from the object"))?
            .try_into()
            .map_err(|e| map_error(VERDICT_COUNTERS_MAP, e))?;
        let verdicts = IntCounterVec::new(
            Opts::new(
                "xdp_verdicts_total",
                "Frames by class and what the XDP program did: pass (to the kernel), steer (to \
                 AF_XDP, or passed when the queue has no socket), rate_limited (dropped).",
            )
            .namespace(NAMESPACE),
            &["class", "verdict"],
        )
        .expect("metric name and labels are valid constants");
        Ok(XdpCounters {
            map: Arc::new(Mutex::new(map)),
            exported,
            verdict_map: Arc::new(Mutex::new(verdict_map)),
            verdicts,
        })
    }

    /// Frames of `class` counted so far, summed over all CPUs.
    pub fn get(&self, class: PacketClass) -> u64 {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(class as u32), 0) {
            Ok(values) => values.iter().sum(),
            Err(e) => {
                tracing::warn!(class = class.label(), error = %e, "reading XDP counter");
                0
            }
        }
    }
}

impl XdpCounters {
    /// Frames of `class` that got `verdict`, summed over all CPUs.
    pub fn verdict(&self, class: PacketClass, verdict: Verdict) -> u64 {
        let map = self.verdict_map.lock().unwrap_or_else(|p| p.into_inner());
        let index = class as u32 * VERDICT_COUNT + verdict as u32;
        match map.get(&index, 0) {
            Ok(values) => values.iter().sum(),
            Err(e) => {
                tracing::warn!(class = class.label(), error = %e, "reading XDP verdict counter");
                0
            }
        }
    }
}

impl Collector for XdpCounters {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.exported.desc();
        d.extend(self.verdicts.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for class in PacketClass::ALL {
            let counter = self.exported.with_label_values(&[class.label()]);
            // The map only grows, so the difference brings the exported counter up to it.
            let total = self.get(class);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        for class in PacketClass::ALL {
            for verdict in Verdict::ALL {
                let counter = self
                    .verdicts
                    .with_label_values(&[class.label(), verdict.label()]);
                let total = self.verdict(class, verdict);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let mut families = self.exported.collect();
        families.extend(self.verdicts.collect());
        families
    }
}
