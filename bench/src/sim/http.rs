//! The HTTP/1.1 client of a simulated machine (iPXE or UEFI HTTP Boot): GET over one
//! keep-alive connection from the machine's own address, redirects, `503` with `Retry-After`
//! retried as iPXE does, bodies either kept (scripts) or dropped in the kernel (images:
//! `recv(MSG_TRUNC)`, no copy), every wait bounded.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    time::Duration,
};

use nix::sys::socket::{recv, MsgFlags};
use tokio::{
    io::{AsyncWriteExt as _, Interest},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

/// Longest response head read.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest body kept (a script).
const MAX_KEPT_BODY_BYTES: usize = 1 << 20;
/// Redirects followed at most.
const MAX_REDIRECTS: u32 = 5;
/// `503` answers retried at most (iPXE retries a busy server).
const MAX_BUSY_RETRIES: u32 = 20;
/// Wait after a `503` without a `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Bytes read per call when a body is dropped.
const DISCARD_CHUNK_BYTES: usize = 1 << 20;

/// Why a GET failed; `kind` is a short, bounded reason for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    /// Bounded reason (`connect refused`, `timeout`, `http 404`, ...).
    pub kind: String,
}

impl HttpError {
    fn new(kind: impl Into<String>) -> HttpError {
        HttpError { kind: kind.into() }
    }

    fn io(what: &str, e: &io::Error) -> HttpError {
        let reason = match e.kind() {
            io::ErrorKind::ConnectionRefused => "refused",
            io::ErrorKind::ConnectionReset => "reset",
            io::ErrorKind::UnexpectedEof => "closed early",
            io::ErrorKind::TimedOut => "timeout",
            _ => "error",
        };
        HttpError::new(format!("{what} {reason}"))
    }
}

/// A parsed `http://a.b.c.d[:port]/path` (addresses only: a boot network needs no DNS here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Server.
    pub addr: SocketAddrV4,
    /// `Host` header value.
    pub host: String,
    /// Path and query.
    pub path: String,
}

/// Reads `text` as an http:// URL with a numeric host.
pub(crate) fn parse_url(text: &str) -> Result<Url, HttpError> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::new("not an http:// URL"))?;
    let (host, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (ip, port) = match host.rsplit_once(':') {
        Some((ip, port)) => (
            ip,
            port.parse::<u16>()
                .map_err(|_| HttpError::new("bad port in URL"))?,
        ),
        None => (host, 80),
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| HttpError::new("URL host is not an IPv4 address"))?;
    Ok(Url {
        addr: SocketAddrV4::new(ip, port),
        host: host.to_owned(),
        path: path.to_owned(),
    })
}

/// Bounds on the waits of one machine's HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connecting (the kernel retransmits SYNs meanwhile).
    pub connect: Duration,
    /// Longest time without a byte moving while a response is awaited or read.
    pub idle: Duration,
}

/// One machine's HTTP client: its address and its keep-alive connection.
#[derive(Debug)]
pub(crate) struct Client {
    local: Ipv4Addr,
    user_agent: &'static str,
    limits: Limits,
    conn: Option<(SocketAddrV4, TcpStream)>,
    /// Connections opened.
    pub connects: u32,
    /// `503` answers waited out.
    pub busy_retries: u32,
}

/// A response's body: kept, or only counted.
#[derive(Debug)]
pub(crate) struct Response {
    /// Bytes of the body.
    pub len: u64,
    /// The body when asked to keep it.
    pub body: Option<Vec<u8>>,
    /// The URL finally fetched (after redirects).
    pub url: String,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    close: bool,
    location: Option<String>,
    retry_after: Option<Duration>,
}

impl Client {
    /// A client for a machine at `local`.
    pub(crate) fn new(local: Ipv4Addr, user_agent: &'static str, limits: Limits) -> Client {
        Client {
            local,
            user_agent,
            limits,
            conn: None,
            connects: 0,
            busy_retries: 0,
        }
    }

    /// The machine's address changed (a new lease): later connections use it.
    pub(crate) fn set_local(&mut self, local: Ipv4Addr) {
        if local != self.local {
            self.local = local;
            self.conn = None;
        }
    }

    /// GETs `url`, following redirects and waiting out `503`s; keeps the body if `keep`.
    pub(crate) async fn get(&mut self, url: &str, keep: bool) -> Result<Response, HttpError> {
        let mut url = url.to_owned();
        let mut redirects = 0;
        let mut busy = 0;
        loop {
            let parsed = parse_url(&url)?;
            let idle = self.limits.idle;
            let (head, stream) = self.request(&parsed).await?;
            match head.status {
                200..=299 => {
                    let (len, body) = read_body(stream, head.framing, keep, idle).await;
                    let result = match (len, body) {
                        (Ok(len), body) => Ok(Response {
                            len,
                            body,
                            url: url.clone(),
                        }),
                        (Err(e), _) => Err(e),
                    };
                    if result.is_err() || head.close || head.framing == Framing::UntilClose {
                        self.conn = None;
                    }
                    return result;
                }
                301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                    let location = head.location.ok_or_else(|| {
                        HttpError::new(format!("http {} without Location", head.status))
                    })?;
                    self.finish_unwanted(head.framing, head.close).await;
                    url = super::ipxe::resolve(&url, &location);
                    redirects += 1;
                }
                503 if busy < MAX_BUSY_RETRIES => {
                    let wait = head
                        .retry_after
                        .unwrap_or(DEFAULT_RETRY_AFTER)
                        .min(MAX_RETRY_AFTER);
                    self.finish_unwanted(head.framing, head.close).await;
                    busy += 1;
                    self.busy_retries += 1;
                    tokio::time::sleep(wait).await;
                }
                status => {
                    self.finish_unwanted(head.framing, head.close).await;
                    return Err(HttpError::new(format!("http {status}")));
                }
            }
        }
    }

    /// Reads and drops the body of a response not wanted, keeping the connection if it can.
    async fn finish_unwanted(&mut self, framing: Framing, close: bool) {
        if close || framing == Framing::UntilClose {
            self.conn = None;
            return;
        }
        if let Some((_, stream)) = self.conn.as_mut() {
            if read_body(stream, framing, false, self.limits.idle)
                .await
                .0
                .is_err()
            {
                self.conn = None;
            }
        }
    }

    /// Sends the request (on the kept connection, or a new one if it was closed) and reads
    /// the head. Returns the stream positioned at the body.
    async fn request(&mut self, url: &Url) -> Result<(Head, &mut TcpStream), HttpError> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nConnection: keep-alive\r\n\r\n",
            url.path, url.host, self.user_agent
        );
        // A kept connection the server closed meanwhile fails at once: try a fresh one once.
        for attempt in 0..2 {
            let reused = matches!(&self.conn, Some((to, _)) if *to == url.addr);
            if !reused {
                self.conn = Some((url.addr, self.connect(url.addr).await?));
            }
            let Some((_, stream)) = self.conn.as_mut() else {
                return Err(HttpError::new("no connection"));
            };
            let sent = timeout(self.limits.idle, stream.write_all(request.as_bytes())).await;
            let head = match sent {
                Ok(Ok(())) => read_head(stream, self.limits.idle).await,
                Ok(Err(e)) => Err(HttpError::io("send", &e)),
                Err(_) => Err(HttpError::new("send timeout")),
            };
            match head {
                Ok(head) => {
                    let Some((_, stream)) = self.conn.as_mut() else {
                        return Err(HttpError::new("no connection"));
                    };
                    return Ok((head, stream));
                }
                Err(e) if reused && attempt == 0 && e.kind != "timeout" => {
                    self.conn = None;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Err(HttpError::new("connection lost"))
    }

    async fn connect(&mut self, to: SocketAddrV4) -> Result<TcpStream, HttpError> {
        let socket = TcpSocket::new_v4().map_err(|e| HttpError::io("socket", &e))?;
        socket
            .bind(SocketAddrV4::new(self.local, 0).into())
            .map_err(|e| HttpError::io("bind", &e))?;
        self.connects += 1;
        match timeout(self.limits.connect, socket.connect(to.into())).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(HttpError::io("connect", &e)),
            Err(_) => Err(HttpError::new("connect timeout")),
        }
    }
}

thread_local! {
    /// The read buffer every connection of this thread shares: a read never awaits while it
    /// holds it.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
    /// The length bound of a discarding read (MSG_TRUNC): the kernel never writes to it, so its
    /// zeroed pages are never touched.
    static DISCARD: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; DISCARD_CHUNK_BYTES]);
}

/// Bytes read from the stream beyond a response head, kept for the body: a per-connection
/// leftover is rare (the head and the first body bytes in one segment), so the head reader
/// peeks instead of reading past the head.
async fn read_head(stream: &mut TcpStream, idle: Duration) -> Result<Head, HttpError> {
    let mut head = Vec::with_capacity(512);
    loop {
        match timeout(idle, stream.readable()).await {
            Err(_) => return Err(HttpError::new("timeout")),
            Ok(Err(e)) => return Err(HttpError::io("read", &e)),
            Ok(Ok(())) => {}
        }
        // Peek, find the end of the head, then consume exactly the head.
        let peeked = SCRATCH.with_borrow_mut(|buf| {
            stream.try_io(Interest::READABLE, || {
                let fd = stream.as_raw_fd();
                let n = recv(fd, buf, MsgFlags::MSG_PEEK)?;
                if n == 0 {
                    return Ok(None);
                }
                let seen = head.len();
                let take = n.min(MAX_HEAD_BYTES.saturating_sub(seen));
                // The end may straddle what was already consumed and what is peeked.
                let mut joined = head[seen.saturating_sub(3)..].to_vec();
                joined.extend_from_slice(&buf[..take]);
                let end = find_head_end(&joined).map(|e| e - seen.min(3));
                let consume = end.unwrap_or(take);
                let got = recv(fd, &mut buf[..consume], MsgFlags::empty())?;
                head.extend_from_slice(&buf[..got]);
                Ok(Some(end.is_some()))
            })
        });
        match peeked {
            Ok(None) => return Err(HttpError::new("closed before answering")),
            Ok(Some(true)) => return parse_head(&head),
            Ok(Some(false)) if head.len() >= MAX_HEAD_BYTES => {
                return Err(HttpError::new("response head too long"))
            }
            Ok(Some(false)) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(HttpError::io("read", &e)),
        }
    }
}

/// Index just past the `\r\n\r\n` ending a head.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn parse_head(bytes: &[u8]) -> Result<Head, HttpError> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| HttpError::new("bad status line"))?;
    let mut head = Head {
        status,
        framing: Framing::UntilClose,
        close: version == "HTTP/1.0",
        location: None,
        retry_after: None,
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<u64>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    head.close = true;
                } else if v.contains("keep-alive") {
                    head.close = false;
                }
            }
            "location" => head.location = Some(value.to_owned()),
            "retry-after" => head.retry_after = value.parse::<u64>().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    head.framing = if chunked {
        Framing::Chunked
    } else if let Some(len) = length {
        Framing::Length(len)
    } else if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    Ok(head)
}

/// Reads a body; returns its length (or why it failed) and the body if `keep`.
async fn read_body(
    stream: &mut TcpStream,
    framing: Framing,
    keep: bool,
    idle: Duration,
) -> (Result<u64, HttpError>, Option<Vec<u8>>) {
    let mut kept = keep.then(Vec::new);
    let result = match framing {
        Framing::Length(len) => read_exact_or_drop(stream, len, kept.as_mut(), idle).await,
        Framing::UntilClose => read_until_close(stream, kept.as_mut(), idle).await,
        Framing::Chunked => read_chunked(stream, kept.as_mut(), idle).await,
    };
    (result, kept)
}

/// Waits until the stream is readable, within `idle`.
async fn wait_readable(stream: &TcpStream, idle: Duration) -> Result<(), HttpError> {
    match timeout(idle, stream.readable()).await {
        Err(_) => Err(HttpError::new("timeout")),
        Ok(Err(e)) => Err(HttpError::io("read", &e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// One non-blocking read of at most `max` bytes: into `kept` (bounded), or dropped in the
/// kernel. `Ok(0)` is the end of the stream; `WouldBlock` means wait again.
fn read_some(stream: &TcpStream, max: usize, kept: Option<&mut Vec<u8>>) -> io::Result<usize> {
    stream.try_io(Interest::READABLE, || {
        let fd = stream.as_raw_fd();
        match kept {
            Some(body) => SCRATCH.with_borrow_mut(|buf| {
                let want = max.min(buf.len());
                let got = recv(fd, &mut buf[..want], MsgFlags::empty())?;
                if body.len() + got > MAX_KEPT_BODY_BYTES {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
                }
                body.extend_from_slice(&buf[..got]);
                Ok(got)
            }),
            // MSG_TRUNC on TCP discards up to the length given: the kernel writes nothing to
            // the buffer, which only bounds the length.
            None => DISCARD.with_borrow_mut(|buf| {
                let want = max.min(buf.len());
                Ok(recv(fd, &mut buf[..want], MsgFlags::MSG_TRUNC)?)
            }),
        }
    })
}

async fn read_exact_or_drop(
    stream: &TcpStream,
    len: u64,
    mut kept: Option<&mut Vec<u8>>,
    idle: Duration,
) -> Result<u64, HttpError> {
    let mut left = len;
    while left > 0 {
        wait_readable(stream, idle).await?;
        loop {
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            match read_some(stream, max, kept.as_deref_mut()) {
                Ok(0) => return Err(HttpError::new("body closed early")),
                Ok(n) => {
                    left -= n as u64;
                    if left == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(HttpError::io("body", &e)),
            }
        }
    }
    Ok(len)
}

async fn read_until_close(
    stream: &TcpStream,
    mut kept: Option<&mut Vec<u8>>,
    idle: Duration,
) -> Result<u64, HttpError> {
    let mut total = 0u64;
    loop {
        wait_readable(stream, idle).await?;
        loop {
            match read_some(stream, usize::MAX, kept.as_deref_mut()) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(HttpError::io("body", &e)),
            }
        }
    }
}

/// A chunked body, read through a small buffer (chunked bodies are scripts in practice).
async fn read_chunked(
    stream: &TcpStream,
    mut kept: Option<&mut Vec<u8>>,
    idle: Duration,
) -> Result<u64, HttpError> {
    let mut raw = Vec::new();
    loop {
        if let Some(total) = dechunk(&raw, kept.as_deref_mut())? {
            return Ok(total);
        }
        wait_readable(stream, idle).await?;
        loop {
            match read_some(stream, 64 * 1024, Some(&mut raw)) {
                Ok(0) => return Err(HttpError::new("body closed early")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(HttpError::io("body", &e)),
            }
        }
    }
}

/// The decoded length of a complete chunked body in `raw` (its data appended to `kept`), or
/// `None` while it is incomplete.
fn dechunk(raw: &[u8], kept: Option<&mut Vec<u8>>) -> Result<Option<u64>, HttpError> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&raw[at..at + line_end]);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| HttpError::new("bad chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            if raw[at..].windows(2).any(|w| w == b"\r\n") {
                let total = data.len() as u64;
                if let Some(k) = kept {
                    k.extend_from_slice(&data);
                }
                return Ok(Some(total));
            }
            return Ok(None);
        }
        if raw.len() < at + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_heads_and_chunks() {
        let u = parse_url("http://198.18.0.1:8080/ipxe?mac=1").unwrap();
        assert_eq!(u.addr, "198.18.0.1:8080".parse().unwrap());
        assert_eq!(u.path, "/ipxe?mac=1");
        assert_eq!(parse_url("http://198.18.0.1").unwrap().path, "/");
        assert!(parse_url("http://boot.example/x").is_err());
        assert!(parse_url("tftp://198.18.0.1/x").is_err());

        let h = parse_head(b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(h.status, 503);
        assert_eq!(h.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(h.framing, Framing::Length(0));
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.close);
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));

        let mut kept = Vec::new();
        assert_eq!(
            dechunk(b"5\r\nhello\r\n0\r\n", Some(&mut kept)).unwrap(),
            None
        );
        assert_eq!(
            dechunk(
                b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n",
                Some(&mut kept)
            )
            .unwrap(),
            Some(11)
        );
        assert_eq!(kept, b"hello world");
    }
}
