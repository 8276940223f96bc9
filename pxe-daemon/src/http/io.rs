//! The connection IO under hyper: where hyper's HTTP/1 meets sendfile(2).
//!
//! hyper writes every response through [`ConnIo`]. An artifact's body is handed to hyper as
//! slices of [`PLACEHOLDER`], a static zero buffer that is never read; the artifact handler queues
//! a [`SendfileJob`] for the same number of bytes. When hyper asks [`ConnIo`] to write a
//! placeholder slice, it calls sendfile(2) from the file instead and reports that many bytes as
//! written, so the file's bytes go from the page cache to the socket without passing through
//! userspace, while hyper keeps doing the HTTP: headers, keep-alive, HEAD, pipelining. hyper must
//! queue body buffers rather than copy them (`http1::Builder::writev(true)`), which keeps their
//! addresses; a placeholder slice that arrives with no job queued is an error, never zeros on
//! the wire.
//!
//! [`ConnIo`] also enforces the idle timeout (no progress either way: a stalled reader or an
//! idle keep-alive connection is cut) and the optional per-connection rate cap.

use std::{
    collections::VecDeque,
    fs::File,
    future::Future as _,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use nix::sys::sendfile::sendfile;
use prometheus::IntCounter;
use tokio::{io::Interest, net::TcpStream, time::Sleep};

/// Size of the placeholder buffer; bodies are handed to hyper in slices of at most this.
pub const PLACEHOLDER_BYTES: usize = 1 << 20;
/// Zeros standing for file bytes that sendfile(2) sends. Never read, so never faulted in.
pub static PLACEHOLDER: [u8; PLACEHOLDER_BYTES] = [0; PLACEHOLDER_BYTES];
/// Largest single sendfile(2) call.
const SENDFILE_MAX_BYTES: usize = 4 << 20;

/// TCP_CORK on or off: while a body is sent with sendfile(2), only full segments leave (as
/// nginx's `tcp_nopush`); uncorking at its end pushes the last partial one. A failure only
/// costs the optimisation.
fn set_cork(stream: &TcpStream, on: bool) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_cork(on) {
        tracing::debug!(error = %e, on, "TCP_CORK");
    }
}

fn is_placeholder(slice: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = slice.as_ptr() as usize;
    !slice.is_empty() && p >= start && p + slice.len() <= start + PLACEHOLDER_BYTES
}

/// File bytes to send in place of the next placeholder bytes hyper writes.
#[derive(Debug)]
pub struct SendfileJob {
    /// The open file.
    pub file: Arc<File>,
    /// Where to start in it.
    pub offset: u64,
    /// How many bytes.
    pub remaining: u64,
}

/// Jobs of one connection, in response order.
#[derive(Debug, Default)]
pub struct SendfileQueue(Mutex<VecDeque<SendfileJob>>);

impl SendfileQueue {
    /// Queues a job for the response being built.
    pub fn push(&self, job: SendfileJob) {
        self.lock().push_back(job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SendfileJob>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Cut the connection when neither side moves a byte for this long.
    pub idle_timeout: Duration,
    /// Bytes per second this connection may send, if capped.
    pub rate_bytes_per_sec: Option<u64>,
}

/// The socket under hyper (see the module docs).
#[derive(Debug)]
pub struct ConnIo {
    io: TokioIo<TcpStream>,
    jobs: Arc<SendfileQueue>,
    limits: ConnLimits,
    idle: Pin<Box<Sleep>>,
    rate_start: Instant,
    rate_sent: u64,
    /// Whether TCP_CORK is on (while a body is sent with sendfile).
    corked: bool,
    rate_wait: Option<Pin<Box<Sleep>>>,
    sent_bytes: IntCounter,
}

impl ConnIo {
    /// Wraps `stream`; `jobs` is shared with the handlers of this connection's requests.
    pub fn new(
        stream: TcpStream,
        jobs: Arc<SendfileQueue>,
        limits: ConnLimits,
        sent_bytes: IntCounter,
    ) -> ConnIo {
        ConnIo {
            io: TokioIo::new(stream),
            jobs,
            limits,
            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            rate_start: Instant::now(),
            rate_sent: 0,
            corked: false,
            rate_wait: None,
            sent_bytes,
        }
    }

    fn progress(&mut self) {
        let deadline = tokio::time::Instant::now() + self.limits.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        ready!(self.idle.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress for {:?}", self.limits.idle_timeout),
        ))
    }

    /// Bytes the rate cap allows now (at least 1 once allowed), or Pending until some are.
    fn poll_allowance(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        let Some(rate) = self.limits.rate_bytes_per_sec else {
            return Poll::Ready(want);
        };
        loop {
            if let Some(wait) = &mut self.rate_wait {
                ready!(wait.as_mut().poll(cx));
                self.rate_wait = None;
            }
            let elapsed = self.rate_start.elapsed().as_secs_f64();
            // A burst of a tenth of a second's worth keeps writes from becoming tiny.
            let budget = (rate as f64 * (elapsed + 0.1)) as u64;
            let allowed = budget.saturating_sub(self.rate_sent);
            if allowed > 0 {
                return Poll::Ready(want.min(usize::try_from(allowed).unwrap_or(usize::MAX)));
            }
            let needed = (self.rate_sent + 1) as f64 / rate as f64 - 0.1;
            let at = self.rate_start + Duration::from_secs_f64(needed.max(0.0));
            self.rate_wait = Some(Box::pin(tokio::time::sleep_until(at.into())));
        }
    }

    fn sent(&mut self, n: usize) {
        self.rate_sent += n as u64;
        self.sent_bytes.inc_by(n as u64);
        self.progress();
    }

    /// Sends up to `len` bytes of the front job with sendfile(2).
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        let len = ready!(self.poll_allowance(cx, len.min(SENDFILE_MAX_BYTES)));
        loop {
            let (file, mut offset, count) = {
                let jobs = self.jobs.lock();
                let Some(job) = jobs.front() else {
                    return Poll::Ready(Err(io::Error::other(
                        "placeholder body bytes with no sendfile job queued",
                    )));
                };
                let count = len.min(usize::try_from(job.remaining).unwrap_or(usize::MAX));
                (Arc::clone(&job.file), job.offset as libc::off_t, count)
            };
            let stream = self.io.inner();
            ready!(stream.poll_write_ready(cx))?;
            if !self.corked {
                set_cork(stream, true);
                self.corked = true;
            }
            let result = stream.try_io(Interest::WRITABLE, || {
                Ok(sendfile(stream, &*file, Some(&mut offset), count)?)
            });
            match result {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "artifact shrank while being sent",
                    )))
                }
                Ok(n) => {
                    let mut jobs = self.jobs.lock();
                    let mut done = false;
                    if let Some(job) = jobs.front_mut() {
                        job.offset += n as u64;
                        job.remaining -= n as u64;
                        if job.remaining == 0 {
                            jobs.pop_front();
                            done = true;
                        }
                    }
                    drop(jobs);
                    if done {
                        set_cork(stream, false);
                        self.corked = false;
                    }
                    self.sent(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Read for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => match this.check_idle(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl ConnIo {
    fn poll_write_inner(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().position(|b| !b.is_empty());
        let Some(first) = first else {
            return Poll::Ready(Ok(0));
        };
        if is_placeholder(&bufs[first]) {
            return self.poll_sendfile(cx, bufs[first].len());
        }
        // Ordinary bytes (headers, scripts): up to the first placeholder slice.
        let end = bufs[first..]
            .iter()
            .position(|b| is_placeholder(b))
            .map_or(bufs.len(), |i| first + i);
        let total: usize = bufs[first..end].iter().map(|b| b.len()).sum();
        let allowed = ready!(self.poll_allowance(cx, total));
        let n = if allowed < total {
            // Rate-capped: write a prefix of the first slice only.
            let len = allowed.min(bufs[first].len());
            ready!(Pin::new(&mut self.io).poll_write(cx, &bufs[first][..len]))?
        } else {
            ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &bufs[first..end]))?
        };
        self.sent(n);
        Poll::Ready(Ok(n))
    }
}

impl Write for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_write_inner(cx, &[IoSlice::new(buf)]) {
            Poll::Pending => match this.check_idle(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            r => r,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_write_inner(cx, bufs) {
            Poll::Pending => match this.check_idle(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            r => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slices_of_the_placeholder_are_placeholders() {
        assert!(is_placeholder(&PLACEHOLDER[..10]));
        assert!(is_placeholder(&PLACEHOLDER[100..PLACEHOLDER_BYTES]));
        assert!(!is_placeholder(&PLACEHOLDER[..0]));
        let zeros = vec![0u8; 10];
        assert!(!is_placeholder(&zeros));
    }
}
