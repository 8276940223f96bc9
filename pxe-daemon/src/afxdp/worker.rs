//! The datapath thread: polls every socket and the wake eventfd, hands received datagrams to
//! the service that wants their port, runs services' timers, and sends what they answer.

use std::{
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    frame::{self, Sender, REPLY_HEADER_BYTES},
    metrics::{
        AfXdpMetrics, ServiceCounters, DROP_BAD_DESCRIPTOR, DROP_NO_SERVICE, DROP_TOO_LARGE,
        DROP_TX_FULL,
    },
    socket::{XskSocket, XskTx, RX_BATCH},
};
use crate::datapath::{Datagram, FrameService, Route, TxError, UdpTx, Waker};

/// Longest the thread sleeps in `poll` without a reason: bounds how long a shutdown waits.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Sleep while transmit kicks are deferred (the kernel said EAGAIN/ENOBUFS).
const RETRY_POLL: Duration = Duration::from_millis(1);
/// After a round that found frames but not a full batch, the thread waits this long before it
/// looks again, so that a steady stream is taken several frames per wake-up and answered with
/// one transmit kick, instead of one `poll`, one wake-up and one kick per frame (interrupt
/// moderation, as NICs do). An idle thread still sleeps in `poll` and wakes on the first frame.
/// Not while a service says it is in lock-step exchanges ([`FrameService::coalesce`]).
const COALESCE: Duration = Duration::from_micros(500);

/// A frame service the thread drives.
pub type BoxedService = Box<dyn FrameService + Send>;

/// Everything the thread owns.
pub struct Worker {
    /// One socket per receive queue.
    pub sockets: Vec<XskSocket>,
    /// The services, asked in order which one wants a port.
    pub services: Vec<BoxedService>,
    /// Source addresses of sent frames.
    pub sender: Sender,
    /// Largest UDP payload sent.
    pub max_payload: usize,
    /// Counters.
    pub metrics: AfXdpMetrics,
    /// The eventfd services (and the tokio side) use to wake the thread.
    pub waker: Waker,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("sockets", &self.sockets.len())
            .field(
                "services",
                &self.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

/// The [`UdpTx`] the thread lends a service: frames on one socket's TX ring.
struct FrameTx<'a> {
    tx: &'a mut XskTx,
    sender: Sender,
    max_payload: usize,
    metrics: &'a AfXdpMetrics,
    sent_frames: &'a IntCounter,
    /// The service lets the device finish UDP checksums ([`FrameService::device_checksum`]).
    device_checksum: bool,
}

impl UdpTx for FrameTx<'_> {
    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn send(
        &mut self,
        route: Route,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), TxError> {
        if len > self.max_payload {
            self.metrics.dropped(DROP_TOO_LARGE);
            return Err(TxError::TooLarge(len));
        }
        let sender = self.sender;
        let (checksum, request) = self.tx.udp_checksum(self.device_checksum);
        let mut build = |buf: &mut [u8]| {
            fill(&mut buf[REPLY_HEADER_BYTES..REPLY_HEADER_BYTES + len]);
            frame::write_headers(buf, sender, route, len, checksum)
        };
        let mut sent = self.tx.send(request, &mut build);
        if !sent {
            // A TFTP window can outrun the ring within one step: send what waits, take the
            // sent frames back, and try once more.
            self.tx.kick();
            self.tx.reclaim();
            sent = self.tx.send(request, &mut build);
        }
        if sent {
            self.sent_frames.inc();
            if request.is_some() {
                self.metrics.device_checksum.inc();
            }
            Ok(())
        } else {
            self.metrics.dropped(DROP_TX_FULL);
            Err(TxError::Full)
        }
    }
}

impl Worker {
    /// Runs until `shutdown` is cancelled; returns within about [`IDLE_POLL`] of it.
    pub fn run(self, shutdown: CancellationToken) {
        let Worker {
            mut sockets,
            mut services,
            sender,
            max_payload,
            metrics,
            waker,
        } = self;
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| s.as_raw_fd())
            .chain([waker.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let counters: Vec<ServiceCounters> =
            services.iter().map(|s| metrics.service(s.name())).collect();
        info!(sockets = sockets.len(), "AF_XDP datapath running");
        let mut busy = false;
        let mut coalesce = false;
        while !shutdown.is_cancelled() {
            let now = Instant::now();
            let deferred = sockets.iter().any(|s| s.tx.pending());
            let timeout = if busy {
                Duration::ZERO
            } else {
                let until_deadline = services
                    .iter()
                    .filter_map(|s| s.next_deadline())
                    .min()
                    .map_or(IDLE_POLL, |d| d.saturating_duration_since(now));
                let cap = if deferred { RETRY_POLL } else { IDLE_POLL };
                until_deadline.min(cap)
            };
            if coalesce && !busy && timeout >= COALESCE {
                std::thread::sleep(COALESCE);
            }
            poll(&mut fds, timeout);
            busy = false;
            coalesce = false;

            for socket in &mut sockets {
                socket.tx.reclaim();
                let XskSocket { rx, tx, .. } = socket;
                let taken = rx.receive(|bytes| {
                    dispatch(
                        bytes,
                        &mut services,
                        &counters,
                        tx,
                        sender,
                        max_payload,
                        &metrics,
                    );
                });
                busy |= taken == RX_BATCH;
                coalesce |= taken > 0;
                tx.kick();
            }

            // No service in a lock-step exchange: a steady stream is taken in batches.
            coalesce &= services.iter().all(|s| s.coalesce());

            let woken = fds.last().is_some_and(|p| p.revents & libc::POLLIN != 0);
            if woken {
                waker.drain();
            }
            let now = Instant::now();
            if let Some(first) = sockets.first_mut() {
                for (service, counters) in services.iter_mut().zip(&counters) {
                    if woken || service.next_deadline().is_some_and(|d| d <= now) {
                        let mut tx = FrameTx {
                            tx: &mut first.tx,
                            sender,
                            max_payload,
                            metrics: &metrics,
                            sent_frames: &counters.tx,
                            device_checksum: service.device_checksum(),
                        };
                        service.on_tick(now, &mut tx);
                    }
                }
                first.tx.kick();
            }
        }
        info!("AF_XDP datapath stopped");
    }
}

/// Hands one received frame to the service that wants it.
#[allow(
    clippy::too_many_arguments,
    reason = "the loop's state, borrowed field by field"
)]
fn dispatch(
    bytes: Option<&[u8]>,
    services: &mut [BoxedService],
    counters: &[ServiceCounters],
    tx: &mut XskTx,
    sender: Sender,
    max_payload: usize,
    metrics: &AfXdpMetrics,
) {
    let Some(bytes) = bytes else {
        metrics.dropped(DROP_BAD_DESCRIPTOR);
        return;
    };
    let datagram: Datagram<'_> = match frame::parse(bytes) {
        Ok(d) => d,
        Err(reason) => {
            debug!(
                len = bytes.len(),
                reason = reason.label(),
                "AF_XDP frame dropped"
            );
            metrics.dropped(reason.label());
            return;
        }
    };
    let port = datagram.dst.port();
    let Some(index) = services.iter().position(|s| s.wants(port)) else {
        debug!(port, src = %datagram.src, "AF_XDP frame for no service dropped");
        metrics.dropped(DROP_NO_SERVICE);
        return;
    };
    let (service, counters) = (&mut services[index], &counters[index]);
    counters.rx.inc();
    let mut tx = FrameTx {
        tx,
        sender,
        max_payload,
        metrics,
        sent_frames: &counters.tx,
        device_checksum: service.device_checksum(),
    };
    service.on_datagram(&datagram, Instant::now(), &mut tx);
}

/// `poll(2)` on `fds` for at most `timeout` (rounded up to a millisecond); an error other
/// than EINTR is logged and treated as a timeout.
fn poll(fds: &mut [libc::pollfd], timeout: Duration) {
    let ms = if timeout.is_zero() {
        0
    } else {
        libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    };
    for p in fds.iter_mut() {
        p.revents = 0;
    }
    // SAFETY: `fds` is a live, writable array of pollfd of the length passed.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            warn!(error = %e, "AF_XDP poll");
            std::thread::sleep(timeout.min(IDLE_POLL));
        }
    }
}
