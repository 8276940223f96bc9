//! The TFTP server's metrics, registered once in the daemon's registry.
//!
//! Started transfers end in exactly one of completed, probe-aborted or failed{reason}; until
//! then they are in flight: `started = completed + probe_aborted + sum(failed) + in_flight`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use super::transfer::{FailReason, Outcome};
use crate::metrics::{Metrics, MetricsError, NAMESPACE};

/// Subsystem part of every name: `pxe_tftp_...`.
const SUBSYSTEM: &str = "tftp";

/// Why a request was refused before a transfer started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// ERROR 1.
    NotFound,
    /// ERROR 2: traversal, symlink escape, not a regular file, permissions.
    AccessViolation,
    /// ERROR 2: write requests are not served.
    WriteRequest,
    /// `tftp.max_transfers` transfers in flight.
    Busy,
    /// The file could not be read.
    ReadError,
}

impl Refusal {
    /// Every refusal, for exporting all label values.
    pub const ALL: [Refusal; 5] = [
        Refusal::NotFound,
        Refusal::AccessViolation,
        Refusal::WriteRequest,
        Refusal::Busy,
        Refusal::ReadError,
    ];

    /// Label value.
    pub const fn label(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::AccessViolation => "access_violation",
            Refusal::WriteRequest => "write_request",
            Refusal::Busy => "busy",
            Refusal::ReadError => "read_error",
        }
    }
}

/// The metrics of the TFTP server.
#[derive(Clone, Debug)]
pub struct TftpMetrics {
    pub(crate) started: IntCounter,
    pub(crate) completed: IntCounter,
    pub(crate) probe_aborted: IntCounter,
    pub(crate) failed: IntCounterVec,
    pub(crate) refused: IntCounterVec,
    pub(crate) in_flight: IntGauge,
    pub(crate) data_bytes: IntCounter,
    pub(crate) retransmits: IntCounter,
    pub(crate) duplicate_acks: IntCounter,
    pub(crate) malformed: IntCounter,
    pub(crate) unknown_tid: IntCounter,
    pub(crate) send_errors: IntCounter,
    pub(crate) duration: Histogram,
    pub(crate) blksize: Histogram,
    pub(crate) windowsize: Histogram,
    pub(crate) cache_hits: IntCounter,
    pub(crate) cache_fills: IntCounter,
    pub(crate) cache_bytes: IntGauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
        .namespace(NAMESPACE)
        .subsystem(SUBSYSTEM)
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace(NAMESPACE)
            .subsystem(SUBSYSTEM)
            .buckets(buckets.to_vec()),
    )
}

impl TftpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Result<TftpMetrics, MetricsError> {
        let m = TftpMetrics {
            started: IntCounter::with_opts(opts(
                "transfers_started_total",
                "Read transfers started (a request accepted and answered).",
            ))?,
            completed: IntCounter::with_opts(opts(
                "transfers_completed_total",
                "Read transfers whose last block was acknowledged.",
            ))?,
            probe_aborted: IntCounter::with_opts(opts(
                "transfers_probe_aborted_total",
                "Transfers the client aborted after reading the OACK of a tsize probe, as ROMs do before the real request (not failures).",
            ))?,
            failed: IntCounterVec::new(
                opts("transfers_failed_total", "Transfers that failed, by reason."),
                &["reason"],
            )?,
            refused: IntCounterVec::new(
                opts(
                    "requests_refused_total",
                    "Requests answered with an ERROR instead of a transfer, by reason.",
                ),
                &["reason"],
            )?,
            in_flight: IntGauge::with_opts(opts(
                "transfers_in_flight",
                "Transfers started and not yet ended.",
            ))?,
            data_bytes: IntCounter::with_opts(opts(
                "data_sent_bytes_total",
                "File bytes sent in DATA packets, retransmits included.",
            ))?,
            retransmits: IntCounter::with_opts(opts(
                "retransmits_total",
                "Datagrams sent again after a timeout or a client's partial window ACK.",
            ))?,
            duplicate_acks: IntCounter::with_opts(opts(
                "duplicate_acks_total",
                "Duplicate or stale ACKs, ignored (never a retransmit).",
            ))?,
            malformed: IntCounter::with_opts(opts(
                "malformed_packets_total",
                "Datagrams that are not valid TFTP packets, dropped.",
            ))?,
            unknown_tid: IntCounter::with_opts(opts(
                "unknown_tid_packets_total",
                "Datagrams to a transfer port from an address with no transfer there (answered with ERROR 5).",
            ))?,
            send_errors: IntCounter::with_opts(opts(
                "send_errors_total",
                "Datagrams the kernel refused to send.",
            ))?,
            duration: histogram(
                "transfer_duration_seconds",
                "Time from request to last ACK of completed transfers.",
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            )?,
            blksize: histogram(
                "negotiated_blksize_bytes",
                "Block size in force for each started transfer.",
                &[512.0, 1024.0, 1428.0, 1432.0, 1456.0, 1468.0, 4096.0, 8192.0, 16384.0, 65464.0],
            )?,
            windowsize: histogram(
                "negotiated_windowsize_blocks",
                "Window size in force for each started transfer.",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            )?,
            cache_hits: IntCounter::with_opts(opts(
                "cache_hits_total",
                "Requests served from the in-memory file cache.",
            ))?,
            cache_fills: IntCounter::with_opts(opts(
                "cache_fills_total",
                "Files read into the cache (first request, or the file changed).",
            ))?,
            cache_bytes: IntGauge::with_opts(opts(
                "cache_bytes",
                "Bytes of file data held by the cache.",
            ))?,
        };
        for reason in FailReason::ALL {
            m.failed.with_label_values(&[reason.label()]);
        }
        for refusal in Refusal::ALL {
            m.refused.with_label_values(&[refusal.label()]);
        }
        registry.register(Box::new(m.started.clone()))?;
        registry.register(Box::new(m.completed.clone()))?;
        registry.register(Box::new(m.probe_aborted.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.data_bytes.clone()))?;
        registry.register(Box::new(m.retransmits.clone()))?;
        registry.register(Box::new(m.duplicate_acks.clone()))?;
        registry.register(Box::new(m.malformed.clone()))?;
        registry.register(Box::new(m.unknown_tid.clone()))?;
        registry.register(Box::new(m.send_errors.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.blksize.clone()))?;
        registry.register(Box::new(m.windowsize.clone()))?;
        registry.register(Box::new(m.cache_hits.clone()))?;
        registry.register(Box::new(m.cache_fills.clone()))?;
        registry.register(Box::new(m.cache_bytes.clone()))?;
        Ok(m)
    }

    /// Counts a transfer's end.
    pub fn ended(&self, outcome: Outcome, seconds: f64) {
        match outcome {
            Outcome::Completed => {
                self.completed.inc();
                self.duration.observe(seconds);
            }
            Outcome::ProbeAborted => self.probe_aborted.inc(),
            Outcome::Failed(reason) => self.failed.with_label_values(&[reason.label()]).inc(),
        }
    }

    /// Counts a refused request.
    pub fn refused(&self, refusal: Refusal) {
        self.refused.with_label_values(&[refusal.label()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let registry = Metrics::new().unwrap();
        let m = TftpMetrics::register(&registry).unwrap();
        m.started.inc();
        m.ended(Outcome::Completed, 0.2);
        m.ended(Outcome::Failed(FailReason::Timeout), 0.0);
        m.refused(Refusal::Busy);
        let text = registry.render();
        for line in [
            "pxe_tftp_transfers_started_total 1",
            "pxe_tftp_transfers_completed_total 1",
            "pxe_tftp_transfers_failed_total{reason=\"timeout\"} 1",
            "pxe_tftp_transfers_failed_total{reason=\"client_error\"} 0",
            "pxe_tftp_requests_refused_total{reason=\"busy\"} 1",
            "pxe_tftp_transfer_duration_seconds_count 1",
            "pxe_tftp_transfers_in_flight 0",
            "# TYPE pxe_tftp_negotiated_blksize_bytes histogram",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
