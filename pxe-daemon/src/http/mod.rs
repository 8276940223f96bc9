//! The HTTP server: iPXE scripts rendered per machine, artifacts sent with sendfile(2),
//! `/metrics` and `/healthz`. hyper is the HTTP/1 stack; [`io::ConnIo`] is where it meets
//! sendfile (see there).

pub mod artifacts;
pub mod io;
pub mod metrics;
pub mod scripts;
pub mod settings;

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::{rt::TokioTimer, server::graceful::GracefulShutdown};
pub use settings::{HttpLimits, Settings};
use tokio::{io::AsyncWriteExt as _, net::TcpListener};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::{
    artifacts::Body,
    io::{ConnIo, ConnLimits, SendfileQueue},
    metrics::HttpMetrics,
    scripts::{MachineQuery, ScriptError, ScriptKind, Scripts},
};
use crate::metrics::Metrics;

/// The 503 written to a connection over the cap (hyper is not started for it).
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 43\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver busy: too many connections, retry.\r\n";

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct HttpState {
    /// The registry served on `/metrics`.
    pub metrics: Metrics,
    /// HTTP metrics.
    pub http_metrics: HttpMetrics,
    /// The artifact root (absolute, canonical), if any.
    pub artifact_root: Option<PathBuf>,
    /// Script rendering.
    pub scripts: Arc<Scripts>,
    /// Base URL for links in scripts; default from the request's Host.
    pub base_url: Option<String>,
    /// Limits.
    pub limits: HttpLimits,
    /// Machines' boots, followed and served on `/api/machines`.
    pub timeline: Option<crate::timeline::Timeline>,
}

/// Serves `listener` until `shutdown` is cancelled, then lets open connections finish for at
/// most `drain`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    info!(addr = ?listener.local_addr().ok(), "HTTP listening");
    let conn_limits = ConnLimits {
        idle_timeout: state.limits.idle_timeout,
        rate_bytes_per_sec: state.limits.rate_bytes_per_sec,
    };
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. EMFILE: keep serving the connections we have; try again shortly.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let open = state.http_metrics.connections.get();
        if usize::try_from(open).unwrap_or(usize::MAX) >= state.limits.max_connections {
            state.http_metrics.refused.inc();
            debug!(%peer, open, "HTTP connection over the cap: 503");
            tokio::spawn(async move {
                let write = stream.write_all(BUSY_RESPONSE);
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            continue;
        }
        // Where the client reached us: the address a request without a Host header is
        // answered with (an accepted socket always has one).
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let jobs = Arc::new(SendfileQueue::default());
        let io = ConnIo::new(
            stream,
            jobs.clone(),
            conn_limits,
            state.http_metrics.sent_bytes.clone(),
        );
        let conn_state = state.clone();
        let service =
            service_fn(move |req| handle(req, conn_state.clone(), jobs.clone(), peer, local));
        let conn = http1::Builder::new()
            // Firmware HTTP clients match header names literally: GRUB 2.06 looks for
            // `Content-Length: ` and `Transfer-Encoding: chunked` in that case, and never learns
            // a body's length from hyper's lower-case names.
            .title_case_headers(true)
            .timer(TokioTimer::new())
            .header_read_timeout(state.limits.header_timeout)
            .max_buf_size(state.limits.max_head_bytes)
            .max_headers(state.limits.max_headers)
            // Queue body buffers instead of copying them: ConnIo recognises the placeholder
            // slices of artifact bodies by their address.
            .writev(true)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        let metrics = state.clone();
        metrics.http_metrics.connections.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            metrics.http_metrics.connections.dec();
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => debug!("HTTP connections drained"),
        () = tokio::time::sleep(drain) => warn!(?drain, "HTTP drain deadline passed; cutting open connections"),
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<HttpState>,
    jobs: Arc<SendfileQueue>,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let (route, response, download) = route(&req, &state, &jobs, &path, local);
    let status = response.status().as_u16();
    let body_bytes = if req.method() == Method::HEAD {
        0
    } else {
        hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0)
    };
    state
        .http_metrics
        .response(route, status, body_bytes, started.elapsed().as_secs_f64());
    if let Some(artifact) = download {
        state.http_metrics.download(&artifact);
    }
    if let (Some(timeline), std::net::IpAddr::V4(ip)) = (&state.timeline, peer.ip()) {
        use crate::timeline::{Event, Stage};
        let stage = match route {
            "boot_ipxe" | "ipxe" | "grub" | "generic" => Some(Stage::Script),
            "artifact" => Some(state.scripts.artifact_stage(&path)),
            _ => None,
        };
        if let Some(stage) = stage {
            let mac = MachineQuery::parse(req.uri().query()).ok().map(|q| q.mac);
            timeline.record(Event::Http {
                ip,
                mac,
                stage,
                path: &path,
                status,
            });
        }
    }
    debug!(method = %req.method(), path, route, status, "HTTP request");
    Ok(response)
}

/// Picks the route and answers. Returns the route label, the response, and the artifact name
/// of a whole download.
fn route(
    req: &Request<Incoming>,
    state: &HttpState,
    jobs: &Arc<SendfileQueue>,
    path: &str,
    local: std::net::SocketAddr,
) -> (&'static str, Response<Body>, Option<String>) {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut r = artifacts::status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return ("other", r, None);
    }
    match path {
        "/metrics" => (
            "metrics",
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics.render(),
            ),
            None,
        ),
        "/healthz" => (
            "healthz",
            text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            None,
        ),
        "/api/machines" => ("api", machines_json(state, None), None),
        p if p.starts_with("/api/machines/") => (
            "api",
            machines_json(state, Some(&p["/api/machines/".len()..])),
            None,
        ),
        "/boot.ipxe" => match state
            .artifact_root
            .as_deref()
            .filter(|r| has_own_boot_ipxe(r))
        {
            // The operator's own entry script wins over the generated one.
            Some(root) => (
                "boot_ipxe",
                artifacts::serve(root, method, path, req.headers(), jobs).0,
                None,
            ),
            None => (
                "boot_ipxe",
                script(state.scripts.boot_ipxe(&base_url(req, state, local))),
                None,
            ),
        },
        "/ipxe" | "/grub" | "/generic" => {
            let (route, kind) = match path {
                "/ipxe" => ("ipxe", ScriptKind::Ipxe),
                "/grub" => ("grub", ScriptKind::Grub),
                _ => ("generic", ScriptKind::Generic),
            };
            let rendered = MachineQuery::parse(req.uri().query())
                .map(|mut q| {
                    // A fetch that does not say the arch (GRUB, curl) gets the one the
                    // machine's DHCP said: the same group, the same profile.
                    if q.arch.is_none() {
                        q.arch = state.timeline.as_ref().and_then(|t| t.arch_of(q.mac));
                    }
                    q
                })
                .and_then(|q| state.scripts.render(kind, &q, &base_url(req, state, local)));
            (route, script(rendered), None)
        }
        _ => match &state.artifact_root {
            Some(root) => {
                let (r, served) = artifacts::serve(root, method, path, req.headers(), jobs);
                let download = served.filter(|s| s.whole).map(|s| s.artifact);
                ("artifact", r, download)
            }
            None => (
                "artifact",
                artifacts::status(StatusCode::NOT_FOUND, "no artifact root configured\n"),
                None,
            ),
        },
    }
}

/// The name of the entry script iPXE clients are sent to, in the artifact root.
pub const BOOT_IPXE_FILE: &str = "boot.ipxe";

/// Whether the operator put a `boot.ipxe` of their own in `root`: `/boot.ipxe` then serves that
/// file as it is (looked up per request, so adding or removing it needs no restart).
pub fn has_own_boot_ipxe(root: &std::path::Path) -> bool {
    root.join(BOOT_IPXE_FILE).is_file()
}

/// The timelines as JSON: all machines, or the one whose MAC is `mac` (colon or hyphen form).
fn machines_json(state: &HttpState, mac: Option<&str>) -> Response<Body> {
    let Some(timeline) = &state.timeline else {
        return artifacts::status(StatusCode::NOT_FOUND, "no timeline\n");
    };
    let body = match mac {
        None => serde_json::to_string_pretty(&timeline.machines()),
        Some(m) => match m.parse::<crate::boot::MacAddr>() {
            Err(e) => return artifacts::status(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            Ok(mac) => match timeline.machine(mac) {
                None => {
                    return artifacts::status(
                        StatusCode::NOT_FOUND,
                        &format!("machine {mac} has not been seen (or was forgotten)\n"),
                    )
                }
                Some(t) => serde_json::to_string_pretty(&t),
            },
        },
    };
    match body {
        Ok(json) => text(StatusCode::OK, "application/json", json + "\n"),
        Err(e) => artifacts::status(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

/// `http://<Host>` of the request (what the client used to reach us), unless configured.
/// The base of the URLs a script hands out: `http.base_url` if set, else what the client asked
/// for (its Host header), else the address it reached us at on this connection (HTTP/1.0 and
/// some firmware send no Host): never a name the client cannot reach, such as localhost.
fn base_url(req: &Request<Incoming>, state: &HttpState, local: std::net::SocketAddr) -> String {
    if let Some(base) = &state.base_url {
        return base.clone();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", host_of(local)),
    }
}

/// `local` as a URL's host and port: IPv4 for an IPv4-mapped address, IPv6 in brackets, the
/// port left out when it is 80.
fn host_of(local: std::net::SocketAddr) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    let host = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    match local.port() {
        80 => host,
        port => format!("{host}:{port}"),
    }
}

fn script(rendered: Result<String, ScriptError>) -> Response<Body> {
    match rendered {
        Ok(s) => text(StatusCode::OK, "text/plain; charset=utf-8", s),
        Err(ScriptError::BadRequest(why)) => {
            artifacts::status(StatusCode::BAD_REQUEST, &format!("{why}\n"))
        }
        Err(ScriptError::NoMatch(why)) => artifacts::status(StatusCode::NOT_FOUND, &why),
        Err(e @ ScriptError::Render { .. }) => {
            warn!(error = %e, "script render failed");
            artifacts::status(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_local_address_as_a_url_host() {
        assert_eq!(host_of("198.18.0.1:80".parse().unwrap()), "198.18.0.1");
        assert_eq!(
            host_of("198.18.0.1:8080".parse().unwrap()),
            "198.18.0.1:8080"
        );
        assert_eq!(
            host_of("[::ffff:198.18.0.1]:80".parse().unwrap()),
            "198.18.0.1"
        );
        assert_eq!(
            host_of("[2001:db8::1]:8080".parse().unwrap()),
            "[2001:db8::1]:8080"
        );
    }
}
