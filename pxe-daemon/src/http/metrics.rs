//! HTTP metrics: requests by route and status, bytes, connections, latency, downloads.

use std::{collections::HashSet, sync::Mutex};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::metrics::{MetricsError, NAMESPACE};

/// Most distinct artifacts counted by name; more are counted as `other` (bounded cardinality).
pub const ARTIFACT_LABELS_MAX: usize = 256;
/// Response time buckets, seconds: scripts in microseconds to images in minutes.
const RESPONSE_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// The HTTP server's metrics.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    response_bytes: IntCounterVec,
    /// Bytes the sockets actually took (headers and bodies, sendfile included).
    pub sent_bytes: IntCounter,
    /// Open connections.
    pub connections: IntGauge,
    /// Connections refused with 503 at the cap.
    pub refused: IntCounter,
    seconds: HistogramVec,
    downloads: IntCounterVec,
    artifact_names: Mutex<HashSet<String>>,
}

impl HttpMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> Result<HttpMetrics, MetricsError> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);
        let m = HttpMetrics {
            requests: IntCounterVec::new(
                opts("http_requests_total", "HTTP requests, by route and status code."),
                &["route", "status"],
            )?,
            response_bytes: IntCounterVec::new(
                opts(
                    "http_response_body_bytes_total",
                    "Body bytes of HTTP responses, by route (as planned; see pxe_http_sent_bytes_total).",
                ),
                &["route"],
            )?,
            sent_bytes: IntCounter::with_opts(opts(
                "http_sent_bytes_total",
                "Bytes written to HTTP sockets, headers and sendfile(2) bodies included.",
            ))?,
            connections: IntGauge::with_opts(opts(
                "http_connections",
                "HTTP connections open now.",
            ))?,
            refused: IntCounter::with_opts(opts(
                "http_connections_refused_total",
                "HTTP connections answered 503 because http.max_connections were open.",
            ))?,
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "http_response_duration_seconds",
                    "Time from request to response head, by route (bodies stream after).",
                )
                .namespace(NAMESPACE)
                .buckets(RESPONSE_SECONDS_BUCKETS.to_vec()),
                &["route"],
            )?,
            downloads: IntCounterVec::new(
                opts(
                    "http_artifact_downloads_total",
                    "Whole-file artifact responses, by artifact path (at most 256 names, then 'other').",
                ),
                &["artifact"],
            )?,
            artifact_names: Mutex::new(HashSet::new()),
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.response_bytes.clone()))?;
        registry.register(Box::new(m.sent_bytes.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.downloads.clone()))?;
        Ok(m)
    }

    /// Counts one response.
    pub fn response(&self, route: &'static str, status: u16, body_bytes: u64, seconds: f64) {
        self.requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        self.response_bytes
            .with_label_values(&[route])
            .inc_by(body_bytes);
        self.seconds.with_label_values(&[route]).observe(seconds);
    }

    /// Counts a whole download of `artifact`.
    pub fn download(&self, artifact: &str) {
        let mut names = self
            .artifact_names
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let label = if names.contains(artifact) {
            artifact
        } else if names.len() < ARTIFACT_LABELS_MAX {
            names.insert(artifact.to_owned());
            artifact
        } else {
            "other"
        };
        self.downloads.with_label_values(&[label]).inc();
    }
}

/// Status codes as static labels (bounded).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        206 => "206",
        304 => "304",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        416 => "416",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
