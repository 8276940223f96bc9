//! Router advertisement metrics.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::packet::Invalid;
use crate::metrics::{MetricsError, NAMESPACE};

/// Solicitations heard, advertisements sent.
#[derive(Clone, Debug)]
pub struct RaMetrics {
    solicitations: IntCounter,
    invalid: IntCounterVec,
    advertisements: IntCounter,
    send_errors: IntCounter,
}

impl RaMetrics {
    /// Creates and registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<RaMetrics, MetricsError> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);
        let m = RaMetrics {
            solicitations: IntCounter::with_opts(opts(
                "ipv6_router_solicitations_total",
                "Valid IPv6 router solicitations received on the boot interface.",
            ))?,
            invalid: IntCounterVec::new(
                opts(
                    "ipv6_router_solicitations_invalid_total",
                    "ICMPv6 datagrams dropped as invalid router solicitations, by reason.",
                ),
                &["reason"],
            )?,
            advertisements: IntCounter::with_opts(opts(
                "ipv6_router_advertisements_total",
                "'No router' advertisements sent (router lifetime 0, no prefix, no DHCPv6).",
            ))?,
            send_errors: IntCounter::with_opts(opts(
                "ipv6_router_advertisement_send_errors_total",
                "Router advertisements the kernel refused to send.",
            ))?,
        };
        registry.register(Box::new(m.solicitations.clone()))?;
        registry.register(Box::new(m.invalid.clone()))?;
        registry.register(Box::new(m.advertisements.clone()))?;
        registry.register(Box::new(m.send_errors.clone()))?;
        for reason in Invalid::ALL {
            m.invalid.with_label_values(&[reason.label()]);
        }
        Ok(m)
    }

    /// Counts a valid solicitation.
    pub fn solicited(&self) {
        self.solicitations.inc();
    }

    /// Counts an invalid one.
    pub fn invalid(&self, reason: Invalid) {
        self.invalid.with_label_values(&[reason.label()]).inc();
    }

    /// Counts an advertisement sent.
    pub fn advertised(&self) {
        self.advertisements.inc();
    }

    /// Counts one the kernel refused.
    pub fn send_error(&self) {
        self.send_errors.inc();
    }
}
