//! DHCP metrics: requests, replies, drops, silences, reply latency, pool usage.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::{DropReason, FullDhcp, Ignored, RequestType};
use crate::{
    boot::{Firmware, Machine},
    metrics::{MetricsError, NAMESPACE},
};

/// Reply latency buckets, seconds: from well under a millisecond to a firmware's patience.
const REPLY_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 4.0,
];

/// The DHCP subsystem's metrics.
#[derive(Clone, Debug)]
pub struct DhcpMetrics {
    requests: IntCounterVec,
    replies: IntCounterVec,
    dropped: IntCounterVec,
    ignored: IntCounterVec,
    reply_seconds: HistogramVec,
    leases: IntGaugeVec,
    send_errors: IntCounter,
    commit_errors: IntCounter,
}

impl DhcpMetrics {
    /// Creates and registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<DhcpMetrics, MetricsError> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);
        let m = DhcpMetrics {
            requests: IntCounterVec::new(
                opts(
                    "dhcp_requests_total",
                    "Well-formed DHCP requests, by message type, client arch and firmware.",
                ),
                &["type", "arch", "firmware"],
            )?,
            replies: IntCounterVec::new(
                opts("dhcp_replies_total", "DHCP replies sent, by message type."),
                &["type"],
            )?,
            dropped: IntCounterVec::new(
                opts(
                    "dhcp_dropped_total",
                    "Malformed DHCP datagrams dropped, by reason.",
                ),
                &["reason"],
            )?,
            ignored: IntCounterVec::new(
                opts(
                    "dhcp_ignored_total",
                    "Well-formed DHCP requests left unanswered, by reason.",
                ),
                &["reason"],
            )?,
            reply_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "dhcp_reply_duration_seconds",
                    "Time from receiving a request to sending its reply (ACKs include the \
                     durable lease write; a configured reply delay is not included).",
                )
                .namespace(NAMESPACE)
                .buckets(REPLY_SECONDS_BUCKETS.to_vec()),
                &["type"],
            )?,
            leases: IntGaugeVec::new(
                opts(
                    "dhcp_pool_addresses",
                    "Addresses of each full-DHCP pool, by state (in_use: bound or offered).",
                ),
                &["pool", "state"],
            )?,
            send_errors: IntCounter::with_opts(opts(
                "dhcp_send_errors_total",
                "DHCP replies the kernel refused to send.",
            ))?,
            commit_errors: IntCounter::with_opts(opts(
                "dhcp_lease_commit_errors_total",
                "Lease changes that could not be made durable (their ACK was not sent).",
            ))?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.replies.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.ignored.clone()))?;
        registry.register(Box::new(m.reply_seconds.clone()))?;
        registry.register(Box::new(m.leases.clone()))?;
        registry.register(Box::new(m.send_errors.clone()))?;
        registry.register(Box::new(m.commit_errors.clone()))?;
        // Every drop and silence reason shows from the start, at 0.
        for r in DropReason::ALL {
            m.dropped.with_label_values(&[r.label()]);
        }
        for r in Ignored::ALL {
            m.ignored.with_label_values(&[r.label()]);
        }
        Ok(m)
    }

    /// Counts a well-formed request.
    pub fn request(&self, kind: RequestType, machine: &Machine) {
        let arch = machine.arch.map_or("none", |a| a.label());
        let firmware = machine.firmware.map_or("none", Firmware::label);
        self.requests
            .with_label_values(&[kind.label(), arch, firmware])
            .inc();
    }

    /// Counts a reply sent `seconds` after its request arrived.
    pub fn replied(&self, kind: &'static str, seconds: f64) {
        self.replies.with_label_values(&[kind]).inc();
        self.reply_seconds
            .with_label_values(&[kind])
            .observe(seconds);
    }

    /// Counts a malformed datagram.
    pub fn dropped(&self, reason: DropReason) {
        self.dropped.with_label_values(&[reason.label()]).inc();
    }

    /// Counts an unanswered request.
    pub fn ignored(&self, reason: Ignored) {
        self.ignored.with_label_values(&[reason.label()]).inc();
    }

    /// Counts a failed send.
    pub fn send_error(&self) {
        self.send_errors.inc();
    }

    /// Counts a failed lease commit.
    pub fn commit_error(&self) {
        self.commit_errors.inc();
    }

    /// Updates the pool gauges from `full`.
    pub fn pools(&self, full: &FullDhcp) {
        for u in full.usage() {
            let pool = u.network.to_string();
            self.leases
                .with_label_values(&[&pool, "in_use"])
                .set(i64::try_from(u.in_use).unwrap_or(i64::MAX));
            self.leases
                .with_label_values(&[&pool, "free"])
                .set(i64::try_from(u.free).unwrap_or(i64::MAX));
        }
    }
}

/// The lease store's counters, read at scrape time.
#[derive(Clone)]
pub struct LeaseStoreCollector {
    store: super::leases::LeaseStore,
    counters: IntCounterVec,
    fsync_seconds: prometheus::Counter,
    gauges: IntGaugeVec,
}

impl std::fmt::Debug for LeaseStoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStoreCollector")
            .finish_non_exhaustive()
    }
}

impl LeaseStoreCollector {
    /// A collector over `store`.
    pub fn new(store: super::leases::LeaseStore) -> Result<LeaseStoreCollector, MetricsError> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);
        Ok(LeaseStoreCollector {
            store,
            counters: IntCounterVec::new(
                opts(
                    "lease_store_events_total",
                    "Lease journal events: records written, group commits (batches), fsyncs, \
                     compactions, compaction failures, commits refused on a full queue.",
                ),
                &["event"],
            )?,
            fsync_seconds: prometheus::Counter::with_opts(opts(
                "lease_store_fsync_seconds_total",
                "Time spent in fsync/fdatasync by the lease journal.",
            ))?,
            gauges: IntGaugeVec::new(
                opts(
                    "lease_store_state",
                    "Lease journal state: journal_bytes, live_bytes, live_leases, queue_len.",
                ),
                &["what"],
            )?,
        })
    }
}

impl prometheus::core::Collector for LeaseStoreCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.counters.desc();
        d.extend(self.fsync_seconds.desc());
        d.extend(self.gauges.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let s = self.store.stats();
        for (event, total) in [
            ("records_written", s.records_written),
            ("batches", s.batches_written),
            ("fsyncs", s.fsyncs),
            ("compactions", s.compactions),
            ("compaction_failures", s.compaction_failures),
            ("queue_full", s.queue_full),
        ] {
            let c = self.counters.with_label_values(&[event]);
            // The store's totals only grow; bring the exported counter up to them.
            c.inc_by(total.saturating_sub(c.get()));
        }
        let behind = s.fsync_seconds - self.fsync_seconds.get();
        if behind > 0.0 {
            self.fsync_seconds.inc_by(behind);
        }
        for (what, value) in [
            ("journal_bytes", s.journal_bytes),
            ("live_bytes", s.live_bytes),
            ("live_leases", s.live_leases),
            ("queue_len", s.queue_len),
        ] {
            self.gauges
                .with_label_values(&[what])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let mut families = self.counters.collect();
        families.extend(self.fsync_seconds.collect());
        families.extend(self.gauges.collect());
        families
    }
}
