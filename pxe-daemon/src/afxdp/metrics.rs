//! Counters of the AF_XDP datapath: frames received and sent per service, frames dropped by
//! reason, the sockets open per bind mode, and frames whose checksum the device finished.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::frame::Malformed;
use crate::metrics::{MetricsError, NAMESPACE};

/// Drop reasons besides [`Malformed`] ones.
pub const DROP_NO_SERVICE: &str = "no_service";
/// A receive descriptor outside the socket's receive frames.
pub const DROP_BAD_DESCRIPTOR: &str = "bad_descriptor";
/// No free transmit frame or ring slot.
pub const DROP_TX_FULL: &str = "tx_full";
/// A payload larger than a frame holds.
pub const DROP_TOO_LARGE: &str = "too_large";

/// The frame counters of one service, looked up once (not per frame).
#[derive(Clone, Debug)]
pub struct ServiceCounters {
    /// Frames received for the service.
    pub rx: IntCounter,
    /// Frames the service sent.
    pub tx: IntCounter,
}

/// The AF_XDP datapath's metrics.
#[derive(Clone, Debug)]
pub struct AfXdpMetrics {
    frames: IntCounterVec,
    dropped: IntCounterVec,
    sockets: IntGaugeVec,
    /// Frames sent with their UDP checksum left to the device.
    pub device_checksum: IntCounter,
}

impl AfXdpMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<AfXdpMetrics, MetricsError> {
        let frames = IntCounterVec::new(
            Opts::new(
                "afxdp_frames_total",
                "Frames moved by the AF_XDP datapath, by direction (rx, tx) and service.",
            )
            .namespace(NAMESPACE),
            &["direction", "service"],
        )?;
        registry.register(Box::new(frames.clone()))?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "afxdp_dropped_total",
                "Frames the AF_XDP datapath dropped, by reason.",
            )
            .namespace(NAMESPACE),
            &["reason"],
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let sockets = IntGaugeVec::new(
            Opts::new(
                "afxdp_sockets",
                "AF_XDP sockets open (one per receive queue), by bind mode (copy, zerocopy).",
            )
            .namespace(NAMESPACE),
            &["mode"],
        )?;
        registry.register(Box::new(sockets.clone()))?;
        let device_checksum = IntCounter::with_opts(
            Opts::new(
                "afxdp_device_checksum_frames_total",
                "Frames sent with their UDP checksum left to the device (AF_XDP TX metadata, \
                 copy mode; TFTP data).",
            )
            .namespace(NAMESPACE),
        )?;
        registry.register(Box::new(device_checksum.clone()))?;
        for reason in Malformed::ALL.iter().map(|m| m.label()).chain([
            DROP_NO_SERVICE,
            DROP_BAD_DESCRIPTOR,
            DROP_TX_FULL,
            DROP_TOO_LARGE,
        ]) {
            dropped.with_label_values(&[reason]);
        }
        Ok(AfXdpMetrics {
            frames,
            dropped,
            sockets,
            device_checksum,
        })
    }

    /// The counters of `service`.
    pub fn service(&self, service: &str) -> ServiceCounters {
        ServiceCounters {
            rx: self.frames.with_label_values(&["rx", service]),
            tx: self.frames.with_label_values(&["tx", service]),
        }
    }

    /// One frame dropped for `reason`.
    pub fn dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    /// Sockets open in copy and zero-copy mode.
    pub fn set_sockets(&self, copy: usize, zero_copy: usize) {
        let set = |mode: &str, n: usize| {
            self.sockets
                .with_label_values(&[mode])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("copy", copy);
        set("zerocopy", zero_copy);
    }
}
