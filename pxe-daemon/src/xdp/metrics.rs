//! The XDP subsystem's own gauge: `pxe_xdp_attach_mode{mode}`, 1 for the mode in use (`none`
//! until the program is attached, and when it is not).

use prometheus::{IntGaugeVec, Opts, Registry};

use super::AttachMode;
use crate::metrics::{MetricsError, NAMESPACE};

/// `pxe_xdp_attach_mode`: how the XDP program is attached.
#[derive(Clone, Debug)]
pub struct AttachModeGauge(IntGaugeVec);

impl AttachModeGauge {
    /// Registers the gauge in `registry`, showing [`AttachMode::None`].
    pub fn register(registry: &Registry) -> Result<AttachModeGauge, MetricsError> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "xdp_attach_mode",
                "How the XDP program is attached to the interface: 1 for the active mode.",
            )
            .namespace(NAMESPACE),
            &["mode"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        let gauge = AttachModeGauge(gauge);
        gauge.set(AttachMode::None);
        Ok(gauge)
    }

    /// Marks `active` as the attach mode in use.
    pub fn set(&self, active: AttachMode) {
        for m in AttachMode::ALL {
            self.0
                .with_label_values(&[m.label()])
                .set(i64::from(m == active));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn exports_none_until_attached_then_the_active_mode() {
        let m = Metrics::new().unwrap();
        let gauge = AttachModeGauge::register(m.registry()).unwrap();
        let text = m.render();
        assert!(
            text.contains("pxe_xdp_attach_mode{mode=\"none\"} 1"),
            "{text}"
        );
        gauge.set(AttachMode::Skb);
        let text = m.render();
        assert!(
            text.contains("pxe_xdp_attach_mode{mode=\"skb\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pxe_xdp_attach_mode{mode=\"driver\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("pxe_xdp_attach_mode{mode=\"none\"} 0"),
            "{text}"
        );
    }
}
