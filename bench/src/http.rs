//! HTTP/1.1 load client for large downloads, and a checked single download.
//!
//! `http-load` keeps N keep-alive connections each downloading one URL over and over for a
//! fixed time and counts the body bytes received. It is meant to cost the client as little as
//! possible, so that on a small machine the server, not the client, is what is measured: one
//! blocking thread per connection, and body bytes are dropped in the kernel with
//! `recv(MSG_TRUNC)` (TCP frees them without copying them to userspace) unless `--copy` asks
//! for an ordinary read into a buffer. Every response must be `200` with the expected
//! `Content-Length`; anything else counts as an error.
//!
//! `http-get` downloads a URL once, reading every byte, and compares the body with a file.

use std::{
    fs::File,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use nix::sys::socket::{recv, MsgFlags};

/// How long a blocking read waits before the deadline is checked again.
const READ_POLL: Duration = Duration::from_millis(200);
/// Bound on connecting and on writing a request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Bytes asked of one body `recv`: with MSG_TRUNC nothing is copied, so large is cheap.
const RECV_CHUNK_BYTES: usize = 4 << 20;
/// Errors after which a connection's thread gives up (the run then fails).
const MAX_ERRORS_PER_CONN: u64 = 5;
/// Pause after an error before reconnecting.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// An `http://a.b.c.d:port/path` URL.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    /// Parses `http://<IPv4 or [IPv6]>:<port><path>`; names are not resolved.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| format!("{url}: host must be address:port ({e})"))?;
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }

    fn request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pxe-bench\r\nAccept: */*\r\n\r\n",
            self.path, self.host
        )
        .into_bytes()
    }
}

/// What one `http-load` run asks for.
#[derive(Clone, Debug)]
pub(crate) struct LoadSpec {
    /// The URL every connection downloads.
    pub target: Target,
    /// Concurrent connections.
    pub connections: usize,
    /// How long the run lasts.
    pub duration: Duration,
    /// The body length every response must have.
    pub expect_length: u64,
    /// Copy body bytes to userspace instead of dropping them in the kernel.
    pub copy: bool,
}

/// What one connection (or, summed, the run) did.
#[derive(Clone, Debug, Default)]
pub(crate) struct LoadStats {
    /// Body bytes received, partial responses at the deadline included.
    pub bytes: u64,
    /// Whole responses received.
    pub responses: u64,
    /// Failed responses (wrong status or length, resets, timeouts).
    pub errors: u64,
    /// Connections opened again after the server closed an idle keep-alive connection.
    pub reconnects: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

impl LoadStats {
    fn add(&mut self, other: LoadStats) {
        self.bytes += other.bytes;
        self.responses += other.responses;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Runs the load: one thread per connection until the deadline. Returns the sum and the time
/// from start until the last thread ended.
pub(crate) fn load(spec: &LoadSpec) -> (LoadStats, Duration) {
    let start = Instant::now();
    let deadline = start + spec.duration;
    let request = spec.target.request();
    let handles: Vec<_> = (0..spec.connections)
        .map(|_| {
            let spec = spec.clone();
            let request = request.clone();
            thread::spawn(move || connection(&spec, &request, deadline))
        })
        .collect();
    let mut total = LoadStats::default();
    for handle in handles {
        match handle.join() {
            Ok(stats) => total.add(stats),
            Err(_) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| "a connection thread panicked".to_owned());
            }
        }
    }
    (total, start.elapsed())
}

/// How a response ended.
enum Outcome {
    /// Received whole.
    Done,
    /// The deadline passed first.
    Deadline,
    /// The server had closed the connection before answering (keep-alive limit).
    Closed,
}

/// One connection's loop: request, read the head, drop the body, again.
fn connection(spec: &LoadSpec, request: &[u8], deadline: Instant) -> LoadStats {
    let mut stats = LoadStats::default();
    // Bytes asked of each recv; never touched when dropping in the kernel, so never faulted in.
    let mut body_buf = vec![0u8; RECV_CHUNK_BYTES];
    let mut stream: Option<TcpStream> = None;
    while Instant::now() < deadline && stats.errors < MAX_ERRORS_PER_CONN {
        let conn = match stream.as_mut() {
            Some(conn) => conn,
            None => match connect(spec.target.addr) {
                Ok(conn) => stream.insert(conn),
                Err(e) => {
                    fail(
                        &mut stats,
                        format!("connecting to {}: {e}", spec.target.addr),
                    );
                    continue;
                }
            },
        };
        match response(conn, request, spec, &mut body_buf, deadline, &mut stats) {
            Ok(Outcome::Done) => stats.responses += 1,
            Ok(Outcome::Deadline) => break,
            Ok(Outcome::Closed) => {
                stats.reconnects += 1;
                stream = None;
            }
            Err(e) => {
                fail(&mut stats, e);
                stream = None;
            }
        }
    }
    stats
}

fn fail(stats: &mut LoadStats, why: String) {
    stats.errors += 1;
    stats.first_error.get_or_insert(why);
    thread::sleep(ERROR_PAUSE);
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    Ok(stream)
}

/// One request and its response on `conn`.
fn response(
    conn: &mut TcpStream,
    request: &[u8],
    spec: &LoadSpec,
    body_buf: &mut [u8],
    deadline: Instant,
    stats: &mut LoadStats,
) -> Result<Outcome, String> {
    conn.write_all(request)
        .map_err(|e| format!("sending the request: {e}"))?;
    let head = match read_head(conn, deadline)? {
        HeadRead::Head(head) => head,
        HeadRead::Deadline => return Ok(Outcome::Deadline),
        HeadRead::Closed => return Ok(Outcome::Closed),
    };
    if head.length != spec.expect_length {
        return Err(format!(
            "Content-Length {} where {} was expected",
            head.length, spec.expect_length
        ));
    }
    let early = head.body_start.len() as u64;
    if early > head.length {
        return Err(format!("{early} body bytes arrived for {}", head.length));
    }
    stats.bytes += early;
    let mut remaining = head.length - early;
    let flags = if spec.copy {
        MsgFlags::empty()
    } else {
        MsgFlags::MSG_TRUNC
    };
    while remaining > 0 {
        let want = body_buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        // With MSG_TRUNC the kernel writes nothing to the buffer.
        match recv(conn.as_raw_fd(), &mut body_buf[..want], flags).map_err(io::Error::from) {
            Ok(0) => {
                return Err(format!(
                    "connection closed with {remaining} body bytes left"
                ))
            }
            Ok(n) => {
                let n = n as u64;
                stats.bytes += n;
                remaining -= n.min(remaining);
                // A download in progress does not outlast the run.
                if remaining > 0 && Instant::now() >= deadline {
                    return Ok(Outcome::Deadline);
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    if Instant::now() >= deadline {
                        return Ok(Outcome::Deadline);
                    }
                }
                io::ErrorKind::Interrupted => {}
                _ => return Err(format!("reading the body: {e}")),
            },
        }
    }
    Ok(Outcome::Done)
}

/// A parsed `200` response head.
struct Head {
    length: u64,
    /// Body bytes read together with the head.
    body_start: Vec<u8>,
}

enum HeadRead {
    Head(Head),
    Deadline,
    Closed,
}

/// Reads and checks a response head: status 200 and a Content-Length.
fn read_head(conn: &mut TcpStream, deadline: Instant) -> Result<HeadRead, String> {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| "response head is not UTF-8".to_owned())?;
            let length = check_head(head)?;
            return Ok(HeadRead::Head(Head {
                length,
                body_start: buf[end + 4..filled].to_vec(),
            }));
        }
        if filled == buf.len() {
            return Err(format!("response head longer than {MAX_HEAD_BYTES} bytes"));
        }
        match conn.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(HeadRead::Closed),
            Ok(0) => return Err("connection closed inside the response head".to_owned()),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Ok(HeadRead::Deadline);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if filled == 0 && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(HeadRead::Closed)
            }
            Err(e) => return Err(format!("reading the response head: {e}")),
        }
    }
}

/// The Content-Length of a `200` head; an error for any other status or no length.
fn check_head(head: &str) -> Result<u64, String> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1);
    if code != Some("200") {
        return Err(format!("status line {status:?}, not 200"));
    }
    lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .ok_or_else(|| "no Content-Length".to_owned())?
        .1
        .trim()
        .parse()
        .map_err(|e| format!("Content-Length: {e}"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Downloads `target` once, reading every byte, and checks the body equals the file at
/// `expected`. Returns the body length.
pub(crate) fn get_and_compare(
    target: &Target,
    expected: &Path,
    timeout: Duration,
) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    let mut file = File::open(expected).map_err(|e| format!("{}: {e}", expected.display()))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", expected.display()))?
        .len();
    let mut conn = connect(target.addr).map_err(|e| format!("connecting: {e}"))?;
    conn.write_all(&target.request())
        .map_err(|e| format!("sending the request: {e}"))?;
    let head = match read_head(&mut conn, deadline)? {
        HeadRead::Head(head) => head,
        HeadRead::Deadline => return Err(format!("no response within {timeout:?}")),
        HeadRead::Closed => return Err("closed without a response".to_owned()),
    };
    if head.length != file_len {
        return Err(format!(
            "Content-Length {} but {} has {file_len} bytes",
            head.length,
            expected.display()
        ));
    }
    let mut got = head.body_start;
    let mut offset = 0u64;
    let mut want = vec![0u8; 1 << 20];
    loop {
        if !got.is_empty() {
            let want = &mut want[..got.len()];
            file.read_exact(want)
                .map_err(|e| format!("{}: {e}", expected.display()))?;
            if let Some(i) = want.iter().zip(&got).position(|(a, b)| a != b) {
                return Err(format!(
                    "body differs from {} at byte {}",
                    expected.display(),
                    offset + i as u64
                ));
            }
            offset += got.len() as u64;
        }
        if offset == file_len {
            return Ok(offset);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {offset} of {file_len} bytes within {timeout:?}"
            ));
        }
        let left = usize::try_from(file_len - offset).unwrap_or(usize::MAX);
        got.resize(left.min(1 << 20), 0);
        match conn.read(&mut got) {
            Ok(0) => return Err(format!("closed after {offset} of {file_len} bytes")),
            Ok(n) => got.truncate(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                got.clear();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => got.clear(),
            Err(e) => return Err(format!("reading the body: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_heads_parse() {
        let t = Target::parse("http://198.18.0.1:8080/assets/big.img").unwrap();
        assert_eq!(t.addr, "198.18.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/assets/big.img");
        assert_eq!(Target::parse("http://127.0.0.1:80").unwrap().path, "/");
        assert!(Target::parse("https://127.0.0.1:80/").is_err());
        assert!(Target::parse("http://localhost:80/").is_err());

        let head = "HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 42";
        assert_eq!(check_head(head), Ok(42));
        assert!(check_head("HTTP/1.1 404 Not Found\r\nContent-Length: 3").is_err());
        assert!(check_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
    }
}
