//! The Prometheus registry of the daemon: every metric is typed and registered here once.

use prometheus::{core::Collector, Encoder as _, IntGaugeVec, Opts, Registry, TextEncoder};

/// Prefix of every metric name.
pub const NAMESPACE: &str = "pxe";

/// Which datapath moves packets between the wire and the protocol cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    /// Ordinary kernel sockets.
    Kernel,
    /// AF_XDP sockets fed by the XDP program.
    Xdp,
}

impl Datapath {
    const ALL: [Datapath; 2] = [Datapath::Kernel, Datapath::Xdp];

    /// Label value.
    pub const fn label(self) -> &'static str {
        match self {
            Datapath::Kernel => "kernel",
            Datapath::Xdp => "xdp",
        }
    }
}

/// Errors of the metrics registry.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a bug: names are constants).
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// The daemon's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    datapath: IntGaugeVec,
}

impl Metrics {
    /// Creates the registry with the process-wide metrics.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();

        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build of the running pxe-daemon; always 1.")
                .namespace(NAMESPACE),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;

        let datapath = IntGaugeVec::new(
            Opts::new(
                "datapath_info",
                "Datapath in use for DHCP and TFTP: 1 for the active one.",
            )
            .namespace(NAMESPACE),
            &["datapath"],
        )?;
        registry.register(Box::new(datapath.clone()))?;

        let metrics = Metrics { registry, datapath };
        metrics.set_datapath(Datapath::Kernel);
        Ok(metrics)
    }

    /// Marks `active` as the datapath in use.
    pub fn set_datapath(&self, active: Datapath) {
        for d in Datapath::ALL {
            self.datapath
                .with_label_values(&[d.label()])
                .set(i64::from(d == active));
        }
    }

    /// The registry, for subsystems that register typed metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector owned by a subsystem (e.g. the XDP counters).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        Ok(self.registry.register(collector)?)
    }

    /// Removes a collector registered earlier (when its subsystem stops).
    pub fn unregister(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        Ok(self.registry.unregister(collector)?)
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_build_info_and_the_active_datapath() {
        let m = Metrics::new().unwrap();
        let text = m.render();
        assert!(text.contains("pxe_build_info{version=\""), "{text}");
        assert!(
            text.contains("pxe_datapath_info{datapath=\"kernel\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pxe_datapath_info{datapath=\"xdp\"} 0"),
            "{text}"
        );
    }
}
