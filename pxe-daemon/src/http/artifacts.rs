//! Artifacts (kernels, initramfs, images, NBPs for HTTP Boot) from the artifact root: path
//! safety, validators, conditional and range requests, and the sendfile body.

use std::{
    fs::File,
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Empty};
use hyper::{
    body::Frame,
    header::{self, HeaderMap, HeaderValue},
    Method, Response, StatusCode,
};
use percent_encoding::percent_decode_str;

use super::io::{SendfileJob, SendfileQueue, PLACEHOLDER, PLACEHOLDER_BYTES};

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not valid percent-encoding / UTF-8, a NUL, or a backslash.
    #[error("path is not a clean UTF-8 path")]
    Encoding,
    /// A `..` component (after decoding).
    #[error("path climbs out of the root with '..'")]
    Traversal,
    /// Resolves (through a symlink) to somewhere outside the root.
    #[error("path leads outside the root")]
    Escapes,
    /// Nothing there, or not a regular file (directories are never listed).
    #[error("no such file")]
    NotFound,
}

/// Turns a request path into a file under `root` (an absolute, canonical directory), refusing
/// `..`, encoded `..`, and symlinks that lead out.
pub fn resolve(root: &Path, request_path: &str) -> Result<PathBuf, PathError> {
    let decoded = percent_decode_str(request_path)
        .decode_utf8()
        .map_err(|_| PathError::Encoding)?;
    if decoded.contains(['\0', '\\']) {
        return Err(PathError::Encoding);
    }
    let mut path = root.to_path_buf();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::Traversal),
            p => {
                // A part like "C:" or with a separator cannot appear after the split, but make
                // sure each part is one normal component.
                let mut comps = Path::new(p).components();
                match (comps.next(), comps.next()) {
                    (Some(Component::Normal(_)), None) => path.push(p),
                    _ => return Err(PathError::Encoding),
                }
            }
        }
    }
    let real = path.canonicalize().map_err(|_| PathError::NotFound)?;
    if !real.starts_with(root) {
        return Err(PathError::Escapes);
    }
    if !real.is_file() {
        return Err(PathError::NotFound);
    }
    Ok(real)
}

/// Content-Type by extension; boot files are mostly binary.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "ipxe" | "cfg" | "txt" | "conf" | "sh" => "text/plain; charset=utf-8",
        "json" | "ign" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "html" | "htm" => "text/html; charset=utf-8",
        "efi" => "application/efi",
        "gz" | "tgz" => "application/gzip",
        "xz" => "application/x-xz",
        "zst" => "application/zstd",
        "iso" => "application/x-iso9660-image",
        _ => "application/octet-stream",
    }
}

/// The response body type of the HTTP server.
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

/// A body of placeholder bytes (see `io`), handed out in slices that the connection replaces
/// with sendfile(2) output. Its exact size is known, so hyper sends Content-Length framing.
#[derive(Debug)]
struct PlaceholderBody {
    remaining: u64,
}

impl hyper::body::Body for PlaceholderBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(PLACEHOLDER_BYTES as u64);
        self.remaining -= n;
        let data = Bytes::from_static(&PLACEHOLDER[..n as usize]);
        std::task::Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

fn placeholder_body(len: u64) -> Body {
    PlaceholderBody { remaining: len }.boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().boxed()
}

/// Validators of a file: a strong ETag and Last-Modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// `"<size hex>-<mtime ns hex>"`.
    pub etag: String,
    /// The file's mtime.
    pub modified: SystemTime,
}

impl Validators {
    fn of(meta: &std::fs::Metadata) -> Validators {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let nanos = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Validators {
            etag: format!("\"{:x}-{:x}\"", meta.len(), nanos),
            modified,
        }
    }

    /// Whether the request's If-None-Match / If-Modified-Since say the client's copy is fresh.
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        if let Some(inm) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        {
            return inm
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == self.etag);
        }
        if let Some(ims) = headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        {
            // HTTP dates have whole seconds.
            let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            return secs(self.modified) <= secs(ims);
        }
        false
    }

    /// Whether an If-Range precondition (if any) holds.
    fn if_range_holds(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(v) if v.starts_with('"') => v == self.etag,
            Some(v) => httpdate::parse_http_date(v)
                .map(|d| httpdate::fmt_http_date(d) == httpdate::fmt_http_date(self.modified))
                .unwrap_or(false),
        }
    }
}

/// A parsed `Range` header against a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range: send everything (also for multi-range requests).
    Full,
    /// One satisfiable range, inclusive.
    Bytes(u64, u64),
    /// Outside the file: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range. Anything this server does not serve as a range (other
/// units, several ranges, nonsense) means the whole file, as RFC 9110 allows.
pub fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    match (start.parse::<u64>(), end.parse::<u64>()) {
        // bytes=-N: the last N bytes.
        (Err(_), Ok(n)) if start.is_empty() => {
            if n == 0 || len == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(len.saturating_sub(n), len - 1)
            }
        }
        (Ok(s), Err(_)) if end.is_empty() => {
            if s >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(s, len - 1)
            }
        }
        (Ok(s), Ok(e)) if s <= e => {
            if s >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(s, e.min(len - 1))
            }
        }
        _ => RangeSpec::Full,
    }
}

/// What was served, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The file, relative to the root.
    pub artifact: String,
    /// Body bytes planned.
    pub bytes: u64,
    /// Whether the whole file was sent (a download).
    pub whole: bool,
}

/// Serves `path` (resolved under `root`) to a GET or HEAD, queueing the body on `jobs`.
pub fn serve(
    root: &Path,
    method: &Method,
    request_path: &str,
    headers: &HeaderMap,
    jobs: &Arc<SendfileQueue>,
) -> (Response<Body>, Option<Served>) {
    let path = match resolve(root, request_path) {
        Ok(p) => p,
        Err(e @ (PathError::Traversal | PathError::Escapes | PathError::Encoding)) => {
            tracing::debug!(path = request_path, error = %e, "HTTP path refused");
            return (status(StatusCode::FORBIDDEN, &format!("{e}\n")), None);
        }
        Err(PathError::NotFound) => {
            return (status(StatusCode::NOT_FOUND, "no such file\n"), None);
        }
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "opening artifact");
            return (status(StatusCode::NOT_FOUND, "no such file\n"), None);
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reading artifact metadata");
            return (
                status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n"),
                None,
            );
        }
    };
    let len = meta.len();
    let v = Validators::of(&meta);
    let artifact = path
        .strip_prefix(root)
        .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());

    let mut builder = Response::builder()
        .header(header::ETAG, &v.etag)
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(v.modified))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, content_type(&path));

    if v.not_modified(headers) {
        let r = builder
            .status(StatusCode::NOT_MODIFIED)
            .body(empty())
            .expect("static headers are valid");
        return (r, None);
    }

    let range = match headers.get(header::RANGE).and_then(|h| h.to_str().ok()) {
        Some(r) if v.if_range_holds(headers) => parse_range(r, len),
        _ => RangeSpec::Full,
    };
    let (status_code, start, count) = match range {
        RangeSpec::Full => (StatusCode::OK, 0, len),
        RangeSpec::Bytes(s, e) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{len}"));
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        RangeSpec::Unsatisfiable => {
            let r = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(empty())
                .expect("static headers are valid");
            return (r, None);
        }
    };
    builder = builder
        .status(status_code)
        .header(header::CONTENT_LENGTH, count);
    let body = if *method == Method::HEAD || count == 0 {
        empty()
    } else {
        jobs.push(SendfileJob {
            file: Arc::new(file),
            offset: start,
            remaining: count,
        });
        placeholder_body(count)
    };
    let served = Served {
        artifact,
        bytes: if *method == Method::HEAD { 0 } else { count },
        whole: status_code == StatusCode::OK && *method == Method::GET,
    };
    (
        builder.body(body).expect("static headers are valid"),
        Some(served),
    )
}

/// A small text response.
pub fn status(code: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::copy_from_slice(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), RangeSpec::Bytes(0, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeSpec::Bytes(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Full);
        assert_eq!(parse_range("bytes=9-1", 100), RangeSpec::Full);
        assert_eq!(parse_range("bytes=x-1", 100), RangeSpec::Full);
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("../pxe-outside-secret"), b"s").ok();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        std::os::unix::fs::symlink("sub/vmlinuz", root.join("kernel")).unwrap();

        assert_eq!(
            resolve(&root, "/sub/vmlinuz").unwrap(),
            root.join("sub/vmlinuz")
        );
        assert_eq!(
            resolve(&root, "/sub/./vmlinuz").unwrap(),
            root.join("sub/vmlinuz")
        );
        assert_eq!(resolve(&root, "/kernel").unwrap(), root.join("sub/vmlinuz"));
        assert_eq!(
            resolve(&root, "/sub%2Fvmlinuz").unwrap(),
            root.join("sub/vmlinuz")
        );
        assert_eq!(resolve(&root, "/../etc/passwd"), Err(PathError::Traversal));
        assert_eq!(
            resolve(&root, "/sub/../../etc/passwd"),
            Err(PathError::Traversal)
        );
        assert_eq!(
            resolve(&root, "/%2e%2e/etc/passwd"),
            Err(PathError::Traversal)
        );
        assert_eq!(
            resolve(&root, "/sub%2f%2e%2e%2f%2e%2e%2fetc"),
            Err(PathError::Traversal)
        );
        assert_eq!(resolve(&root, "/passwd"), Err(PathError::Escapes));
        assert_eq!(resolve(&root, "/sub"), Err(PathError::NotFound));
        assert_eq!(resolve(&root, "/nope"), Err(PathError::NotFound));
        assert_eq!(resolve(&root, "/a%00b"), Err(PathError::Encoding));
        assert_eq!(resolve(&root, "/a\\..\\b"), Err(PathError::Encoding));
    }
}
