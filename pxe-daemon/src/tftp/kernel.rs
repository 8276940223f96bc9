//! The kernel-socket datapath: one thread, one io_uring, the port-69 listener and one socket per
//! port of the transfer range. It only moves datagrams between the sockets and the sans-IO
//! transfer table ([`Transfers`]), and fills DATA from the shared file store.
//!
//! A transfer is identified by its server port and its client's address, so transfers of
//! different clients share ports (round robin over the range): the range does not cap the
//! number of transfers, `tftp.max_transfers` does.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, RawFd},
    time::{Duration, Instant},
};

use nix::sys::socket::sockopt::{RcvBuf, RcvBufForce, SndBuf, SndBufForce};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    files::Source,
    metrics::TftpMetrics,
    options::Limits,
    packet::{write_data_header, DATA_HEADER_BYTES},
    recv::{RecvBatch, SLOT_BYTES as RECV_SLOT_BYTES},
    setup::{ServerError, ServerSettings},
    table::{Entry, Peer, TransferIo, Transfers},
    transfer::Outgoing,
    uring::{FileBlock, SendRing, MAX_GSO_BYTES, MAX_GSO_SEGMENTS},
};
use crate::datapath::force_buffer;

/// Datagrams in flight at once (each holds a buffer of up to 4 + blksize bytes).
pub const MAX_SENDS_IN_FLIGHT: usize = 1024;
/// Datagrams read from one socket per loop turn before the others get their turn.
const RECV_BUDGET: usize = 256;
/// Longest sleep of the loop: how soon a shutdown is noticed.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Receive buffer of the request listener: a boot storm's requests arrive at once.
const LISTENER_RCVBUF_BYTES: usize = 8 << 20;
/// Send buffer of each transfer socket: windows of many transfers share one.
const TRANSFER_SNDBUF_BYTES: usize = 1 << 20;
/// How long the last datagrams (shutdown errors) get to leave after the drain.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Index of the listener among the sockets.
const LISTENER: usize = 0;

/// The TFTP server on kernel sockets.
#[derive(Debug)]
pub struct Server {
    /// `[listener, transfer ports...]`; the index is also the ring's watch index.
    sockets: Vec<UdpSocket>,
    fds: Vec<RawFd>,
    table: Transfers,
    ring: SendRing,
    recv_batch: RecvBatch,
    /// Sockets not read to the end in their turn.
    carry: Vec<usize>,
}

/// The [`TransferIo`] of the kernel datapath: sends queued on the io_uring.
struct KernelIo<'a> {
    ring: &'a mut SendRing,
    fds: &'a [RawFd],
}

impl TransferIo for KernelIo<'_> {
    fn packet(&mut self, port: usize, peer: &Peer, bytes: &[u8]) {
        let Some(&fd) = self.fds.get(port) else {
            return;
        };
        if let Err(e) = self
            .ring
            .send(fd, peer.addr, |b| b.extend_from_slice(bytes))
        {
            warn!(error = %e, "queueing a TFTP datagram");
        }
    }

    fn transfer(
        &mut self,
        entry: &Entry,
        token: u64,
        sends: &mut [Outgoing],
        metrics: &TftpMetrics,
    ) {
        let ring = &mut *self.ring;
        let Some(&fd) = self.fds.get(entry.port) else {
            return;
        };
        let client = entry.peer.addr;
        let mut next = 0;
        while next < sends.len() {
            // Blocks of a cached file that follow each other in the output (a window) leave
            // as one segmented send: one pass down the stack instead of one per block.
            if let (Source::Cached(data), true) = (&entry.source, ring.segmentation()) {
                let run = segment_run(&sends[next..], data.len());
                if run > 1 {
                    let run_sends = &sends[next..next + run];
                    let queued = queue_segments(ring, fd, client, data, run_sends, metrics);
                    if let Err(e) = queued {
                        warn!(error = %e, "queueing TFTP datagrams");
                    }
                    next += run;
                    continue;
                }
            }
            let send = std::mem::replace(&mut sends[next], Outgoing::Packet(Vec::new()));
            next += 1;
            let queued = match send {
                Outgoing::Packet(bytes) => ring.send(fd, client, |b| b.extend_from_slice(&bytes)),
                Outgoing::Data { block, offset, len } => {
                    metrics.data_bytes.inc_by(u64::from(len));
                    let mut header = [0u8; DATA_HEADER_BYTES];
                    write_data_header(block, &mut header);
                    match &entry.source {
                        Source::Cached(data) => {
                            let start = usize::try_from(offset).unwrap_or(usize::MAX);
                            let end = start.saturating_add(len as usize);
                            ring.send(fd, client, |b| {
                                b.extend_from_slice(&header);
                                if let Some(payload) = data.get(start..end) {
                                    b.extend_from_slice(payload);
                                }
                            })
                        }
                        Source::Disk { file, .. } => ring.send_file_block(
                            fd,
                            client,
                            &header,
                            FileBlock {
                                file,
                                offset,
                                len,
                                token,
                            },
                        ),
                    }
                }
            };
            if let Err(e) = queued {
                warn!(error = %e, "queueing a TFTP datagram");
            }
        }
    }
}

impl Server {
    /// Sets the server up on `listener` (bound by the caller): opens the root, binds the
    /// transfer ports on the listener's address, creates the ring.
    pub fn new(
        settings: ServerSettings<'_>,
        listener: UdpSocket,
        metrics: TftpMetrics,
    ) -> Result<Server, ServerError> {
        listener
            .set_nonblocking(true)
            .map_err(ServerError::Listener)?;
        force_buffer(&listener, RcvBufForce, RcvBuf, LISTENER_RCVBUF_BYTES);
        let ip = listener.local_addr().map_err(ServerError::Listener)?.ip();
        let mut sockets = vec![listener];
        let mut last_error = None;
        for port in settings.config.ports.clone() {
            match UdpSocket::bind((ip, port)).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                Ok(s) => {
                    force_buffer(&s, SndBufForce, SndBuf, TRANSFER_SNDBUF_BYTES);
                    sockets.push(s);
                }
                Err(e) => {
                    debug!(port, error = %e, "TFTP transfer port not usable");
                    last_error = Some(e);
                }
            }
        }
        let (first, last) = (*settings.config.ports.start(), *settings.config.ports.end());
        if sockets.len() == 1 {
            return Err(ServerError::Ports {
                ip,
                first,
                last,
                source: last_error.unwrap_or_else(|| io::Error::other("empty port range")),
            });
        }
        if let Some(e) = last_error {
            warn!(
                bound = sockets.len() - 1,
                range = %format!("{first}-{last}"),
                error = %e,
                "some TFTP transfer ports are in use; serving on the others"
            );
        }
        let mut ring = SendRing::new(MAX_SENDS_IN_FLIGHT).map_err(ServerError::Uring)?;
        let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
        for &fd in &fds {
            ring.watch(fd).map_err(ServerError::Uring)?;
        }
        let table = Transfers::new(settings.table(sockets.len() - 1, metrics));
        Ok(Server {
            sockets,
            fds,
            table,
            ring,
            recv_batch: RecvBatch::new(),
            carry: Vec::new(),
        })
    }

    /// The block size and window offered at most.
    pub fn limits(&self) -> Limits {
        self.table.limits()
    }

    /// Runs the server on a thread of its own until `shutdown` is cancelled and the drain
    /// (at most `drain`) is over.
    pub fn spawn(
        self,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> Result<std::thread::JoinHandle<()>, ServerError> {
        std::thread::Builder::new()
            .name("pxe-tftp".into())
            .spawn(move || self.run(&shutdown, drain))
            .map_err(ServerError::Thread)
    }

    /// The loop: timers, one submission of every queued send, completions, datagrams.
    pub fn run(mut self, shutdown: &CancellationToken, drain: Duration) {
        let limits = self.table.limits();
        info!(
            listen = ?self.sockets[LISTENER].local_addr().ok(),
            transfer_ports = self.sockets.len() - 1,
            root = %self.table.files().root().display(),
            max_blksize = limits.max_blksize,
            max_windowsize = limits.max_windowsize,
            max_transfers = self.table.max_transfers(),
            "TFTP serving"
        );
        let mut drain_until: Option<Instant> = None;
        let start_drain = |drain_until: &mut Option<Instant>, live: usize| {
            if drain_until.is_none() && shutdown.is_cancelled() {
                info!(in_flight = live, ?drain, "TFTP draining: no new requests");
                *drain_until = Some(Instant::now() + drain);
            }
        };
        loop {
            let now = Instant::now();
            start_drain(&mut drain_until, self.table.live());
            if let Some(until) = drain_until {
                if self.table.live() == 0 {
                    break;
                }
                if now >= until {
                    warn!(
                        in_flight = self.table.live(),
                        "TFTP drain deadline passed; ending transfers"
                    );
                    let mut io = KernelIo {
                        ring: &mut self.ring,
                        fds: &self.fds,
                    };
                    self.table.abort_all(&mut io);
                    self.flush();
                    break;
                }
            }
            let wait = if self.carry.is_empty() {
                self.table
                    .next_deadline()
                    .map_or(MAX_WAIT, |t| t.saturating_duration_since(now))
                    .min(MAX_WAIT)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.ring.wait(wait) {
                warn!(error = %e, "TFTP io_uring wait failed");
                std::thread::sleep(MAX_WAIT);
            }
            // Checked again after the wait: a request read after the shutdown is not served.
            start_drain(&mut drain_until, self.table.live());
            let events = self.ring.take_events();
            self.table.metrics().send_errors.inc_by(events.send_errors);
            if events.segmentation_refused > 0 {
                warn!(
                    refused = events.segmentation_refused,
                    "the kernel refused segmented TFTP sends (UDP GSO): one datagram per send \
                     from now on; the timeout resends what was lost"
                );
            }
            for token in events.read_failures {
                let mut io = KernelIo {
                    ring: &mut self.ring,
                    fds: &self.fds,
                };
                self.table.read_failed(token, &mut io);
            }
            // Transfer sockets before the listener: a client's abort (ERROR 8) is handled
            // before the request it sends right after it.
            let mut ready = std::mem::take(&mut self.carry);
            ready.extend(events.readable);
            ready.sort_unstable_by_key(|&i| (i == LISTENER, i));
            ready.dedup();
            for index in ready {
                if index == LISTENER && drain_until.is_some() {
                    continue;
                }
                self.read_socket(index);
            }
            // Timers fire after the datagrams that are in are read: a loop turn slowed down
            // (a rack's thousands of transfers on a busy machine) would otherwise resend
            // blocks whose ACKs already wait in the sockets, and every spurious resend draws a
            // duplicate ACK, more work still (seen with `pxe-bench rack`: 73,000 resends for
            // 5,000 transfers, none lost).
            let mut io = KernelIo {
                ring: &mut self.ring,
                fds: &self.fds,
            };
            self.table.fire_timers(Instant::now(), &mut io);
            self.table.update_gauges();
        }
        self.table.update_gauges();
        info!("TFTP stopped");
    }

    /// Reads up to [`RECV_BUDGET`] datagrams from socket `index`, a batch per call, then
    /// re-arms its poll.
    fn read_socket(&mut self, index: usize) {
        let mut batch = std::mem::take(&mut self.recv_batch);
        let mut drained = false;
        let mut read = 0;
        while read < RECV_BUDGET {
            match batch.recv(self.fds[index]) {
                Ok(n) => {
                    let now = Instant::now();
                    let mut io = KernelIo {
                        ring: &mut self.ring,
                        fds: &self.fds,
                    };
                    for i in 0..n {
                        match batch.datagram(i) {
                            Some((bytes, addr)) => {
                                let peer = Peer {
                                    addr,
                                    mac: Default::default(),
                                };
                                if index == LISTENER {
                                    self.table.on_request(peer, bytes, now, &mut io);
                                } else {
                                    self.table
                                        .on_transfer_datagram(index, peer, bytes, now, &mut io);
                                }
                            }
                            None => {
                                self.table.metrics().malformed.inc();
                                debug!(
                                    socket = index,
                                    max_bytes = RECV_SLOT_BYTES,
                                    "TFTP datagram too long (or from no IP address) dropped"
                                );
                            }
                        }
                    }
                    read += n;
                    // A short batch: the kernel met an empty socket.
                    if n < batch.capacity() {
                        drained = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    debug!(socket = index, error = %e, "TFTP receive failed");
                    drained = true;
                    break;
                }
            }
        }
        self.recv_batch = batch;
        if drained {
            if let Err(e) = self.ring.arm(index) {
                warn!(error = %e, "re-arming a TFTP socket poll");
                self.carry.push(index);
            }
        } else {
            self.carry.push(index);
        }
    }

    /// Waits (bounded) for queued datagrams to leave.
    fn flush(&mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while self.ring.in_flight() > 0 && Instant::now() < deadline {
            if self.ring.wait(Duration::from_millis(10)).is_err() {
                break;
            }
            self.ring.take_events();
        }
    }
}

/// How many sends at the start of `sends` can leave as one segmented send: DATA blocks within
/// the file (of `file_len` bytes), all as long as the first but the last, which may be
/// shorter, at most [`MAX_GSO_SEGMENTS`] and [`MAX_GSO_BYTES`]. 0 if the first is no DATA.
fn segment_run(sends: &[Outgoing], file_len: usize) -> usize {
    let in_file = |offset: u64, len: u32| {
        offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= file_len as u64)
    };
    let Some(&Outgoing::Data {
        offset, len: full, ..
    }) = sends.first()
    else {
        return 0;
    };
    if !in_file(offset, full) {
        return 0;
    }
    let segment = DATA_HEADER_BYTES + full as usize;
    let max = MAX_GSO_SEGMENTS.min(MAX_GSO_BYTES / segment);
    let mut count = 1;
    for send in sends.iter().take(max).skip(1) {
        match *send {
            Outgoing::Data { offset, len, .. } if len <= full && in_file(offset, len) => {
                count += 1;
                // Only the last segment may be shorter.
                if len < full {
                    break;
                }
            }
            _ => break,
        }
    }
    count
}

/// Queues `run` (from [`segment_run`]) of a cached file as one segmented send.
fn queue_segments(
    ring: &mut SendRing,
    fd: RawFd,
    to: SocketAddr,
    data: &[u8],
    run: &[Outgoing],
    metrics: &TftpMetrics,
) -> io::Result<()> {
    let Some(Outgoing::Data { len: first, .. }) = run.first() else {
        return Ok(());
    };
    let segment = u16::try_from(DATA_HEADER_BYTES + *first as usize)
        .map_err(|_| io::Error::other("block larger than a datagram"))?;
    ring.send_segments(fd, to, segment, |b| {
        for send in run {
            let Outgoing::Data { block, offset, len } = *send else {
                continue;
            };
            metrics.data_bytes.inc_by(u64::from(len));
            let mut header = [0u8; DATA_HEADER_BYTES];
            write_data_header(block, &mut header);
            b.extend_from_slice(&header);
            // In the file: checked by segment_run, so every segment has its length.
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            if let Some(payload) = data.get(start..start.saturating_add(len as usize)) {
                b.extend_from_slice(payload);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    //! The datapath on loopback, with a client written against the RFCs.

    use std::sync::Arc;

    use super::*;
    use crate::{
        metrics::Metrics,
        tftp::{
            open_files,
            packet::{ack, request, Opcode, Packet},
            AsRequested, Settings,
        },
    };

    /// Bound on every receive of the test client.
    const RECV_TIMEOUT: Duration = Duration::from_secs(3);

    struct Running {
        addr: SocketAddr,
        registry: Metrics,
        token: CancellationToken,
        thread: Option<std::thread::JoinHandle<()>>,
        _root: tempfile::TempDir,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.token.cancel();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A server on 127.0.0.1 with a boot root holding `files`, transfer ports from a range
    /// picked by `salt` and the pid (tests on one host must not collide).
    fn serve(salt: u16, files: &[(&str, Vec<u8>)], config: Settings) -> Running {
        let root = tempfile::tempdir().unwrap();
        for (name, data) in files {
            std::fs::write(root.path().join(name), data).unwrap();
        }
        let registry = Metrics::new().unwrap();
        let metrics = TftpMetrics::register(&registry).unwrap();
        let base = 20_000 + (std::process::id() % 900) as u16 * 40 + salt * 4;
        let config = Settings {
            ports: base..=base + 3,
            ..config
        };
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(
            ServerSettings {
                config: &config,
                files: open_files(&root.path().canonicalize().unwrap(), config.cache_bytes)
                    .unwrap(),
                mtu: 1500,
                mapper: Arc::new(AsRequested),
                timeline: None,
            },
            listener,
            metrics,
        )
        .unwrap();
        let token = CancellationToken::new();
        let thread = server.spawn(token.clone(), Duration::from_secs(1)).unwrap();
        Running {
            addr,
            registry,
            token,
            thread: Some(thread),
            _root: root,
        }
    }

    fn client() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
        s
    }

    fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = s.recv_from(&mut buf).expect("a reply within the timeout");
        buf.truncate(n);
        (buf, from)
    }

    /// Reads `file` with `options`, ACKing each window's last block (RFC 7440); returns the
    /// bytes.
    fn fetch(server: SocketAddr, file: &str, options: &[(&str, &str)]) -> Vec<u8> {
        let c = client();
        c.send_to(&request(Opcode::Rrq, file, "octet", options), server)
            .unwrap();
        let mut blksize = 512usize;
        let mut windowsize = 1usize;
        let mut in_window = 0usize;
        let mut data = Vec::new();
        let mut expected: u16 = 1;
        for _ in 0..1_000_000 {
            let (pkt, from) = recv(&c);
            match Packet::parse(&pkt).unwrap() {
                Packet::Oack(opts) => {
                    for (k, v) in opts {
                        match k {
                            "blksize" => blksize = v.parse().unwrap(),
                            "windowsize" => windowsize = v.parse().unwrap(),
                            _ => {}
                        }
                    }
                    c.send_to(&ack(0), from).unwrap();
                }
                Packet::Data { block, payload } => {
                    assert_eq!(block, expected, "in order on loopback");
                    data.extend_from_slice(payload);
                    expected = expected.wrapping_add(1);
                    in_window += 1;
                    let last = payload.len() < blksize;
                    if in_window == windowsize || last {
                        c.send_to(&ack(block), from).unwrap();
                        in_window = 0;
                    }
                    if last {
                        return data;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("transfer did not end");
    }

    fn data(block: u16, len: u32) -> Outgoing {
        Outgoing::Data {
            block,
            offset: u64::from(block - 1) * 1468,
            len,
        }
    }

    #[test]
    fn windows_of_cached_blocks_are_cut_into_segment_runs() {
        let file = 1468 * 10 + 100;
        // A full window, then the next; a short last block ends a run.
        let sends = [data(1, 1468), data(2, 1468), data(3, 1468), data(4, 1468)];
        assert_eq!(segment_run(&sends, file), 4);
        let last = [data(10, 1468), data(11, 100)];
        assert_eq!(segment_run(&last, file), 2);
        // Blocks as long as the first make a run (the first sets the segment size).
        let equal = [data(11, 100), data(12, 100)];
        assert_eq!(segment_run(&equal, 1 << 20), 2);
        let short_then_full = [data(1, 1468), data(2, 100), data(3, 1468)];
        assert_eq!(segment_run(&short_then_full, file), 2);
        // An OACK or ERROR is not DATA; a block beyond the file is sent on its own.
        assert_eq!(segment_run(&[Outgoing::Packet(vec![0, 6])], file), 0);
        assert_eq!(
            segment_run(&[data(1, 1468), Outgoing::Packet(vec![0, 5])], file),
            1
        );
        assert_eq!(segment_run(&[data(1, 1468), data(12, 1468)], file), 1);
        assert_eq!(segment_run(&[], file), 0);
        // At most 64 segments and 65,000 bytes.
        let many: Vec<Outgoing> = (1..=100).map(|b| data(b, 512)).collect();
        assert_eq!(segment_run(&many, 1 << 20), MAX_GSO_SEGMENTS);
        let big: Vec<Outgoing> = (1..=64).map(|b| data(b, 1468)).collect();
        assert_eq!(segment_run(&big, 1468 * 64), 65_000 / 1472);
    }

    fn metric(r: &Running, line: &str) -> bool {
        r.registry.render().lines().any(|l| l == line)
    }

    fn wait_for(r: &Running, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !metric(r, line) {
            assert!(
                Instant::now() < deadline,
                "{line} never showed:\n{}",
                r.registry.render()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn serves_files_with_and_without_options() {
        let small: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + 1) as u8).collect();
        // A 64 KiB cache: "big" is read block by block through linked io_uring reads.
        let config = Settings {
            cache_bytes: 64 << 10,
            ..Settings::default()
        };
        let r = serve(0, &[("small", small.clone()), ("big", big.clone())], config);
        assert_eq!(fetch(r.addr, "small", &[]), small);
        assert_eq!(
            fetch(
                r.addr,
                "small",
                &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]
            ),
            small
        );
        assert_eq!(fetch(r.addr, "big", &[("blksize", "1432")]), big);
        assert_eq!(
            fetch(r.addr, "/big", &[("blksize", "9000"), ("windowsize", "64")]),
            big
        );
        wait_for(&r, "pxe_tftp_transfers_completed_total 4");
        wait_for(&r, "pxe_tftp_transfers_in_flight 0");
        assert!(metric(&r, "pxe_tftp_cache_fills_total 1"));
        assert!(metric(&r, "pxe_tftp_cache_hits_total 1"));
    }

    #[test]
    fn refuses_writes_missing_files_traversal_and_unknown_tids() {
        let r = serve(1, &[("f", b"data".to_vec())], Settings::default());
        let c = client();
        let expect_error = |bytes: &[u8], code: u16| {
            c.send_to(bytes, r.addr).unwrap();
            let (pkt, _) = recv(&c);
            match Packet::parse(&pkt).unwrap() {
                Packet::Error { code: got, .. } => assert_eq!(got, code, "{bytes:?}"),
                other => panic!("expected ERROR {code}, got {other:?}"),
            }
        };
        expect_error(&request(Opcode::Wrq, "f", "octet", &[]), 2);
        expect_error(&request(Opcode::Rrq, "nope", "octet", &[]), 1);
        expect_error(&request(Opcode::Rrq, "../etc/passwd", "octet", &[]), 2);
        expect_error(&request(Opcode::Rrq, "/etc/passwd", "octet", &[]), 1);
        // Malformed requests are dropped without an answer.
        c.send_to(b"\x00\x01no-terminator", r.addr).unwrap();
        // A datagram to a transfer port with no transfer gets ERROR 5.
        let port = 20_000 + (std::process::id() % 900) as u16 * 40 + 4;
        c.send_to(&ack(1), ("127.0.0.1", port)).unwrap();
        let (pkt, from) = recv(&c);
        assert_eq!(from.port(), port);
        assert_eq!(
            Packet::parse(&pkt).unwrap(),
            Packet::Error {
                code: 5,
                message: "unknown transfer ID".into()
            }
        );
        wait_for(&r, "pxe_tftp_malformed_packets_total 1");
        assert!(metric(
            &r,
            "pxe_tftp_requests_refused_total{reason=\"write_request\"} 1"
        ));
        // `../etc/passwd` is a traversal; `/etc/passwd` and `nope` are missing files.
        assert!(metric(
            &r,
            "pxe_tftp_requests_refused_total{reason=\"access_violation\"} 1"
        ));
        assert!(metric(
            &r,
            "pxe_tftp_requests_refused_total{reason=\"not_found\"} 2"
        ));
        assert!(metric(&r, "pxe_tftp_unknown_tid_packets_total 1"));
    }

    #[test]
    fn probe_abort_is_quiet_and_the_cap_refuses_clearly() {
        let config = Settings {
            max_transfers: 2,
            timeout: Duration::from_millis(200),
            retries: 1,
            ..Settings::default()
        };
        let r = serve(2, &[("nbp", vec![1u8; 3000])], config);
        // The UEFI sequence: tsize probe, ERROR 8, the same request again.
        let uefi = [("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")];
        let c = client();
        c.send_to(&request(Opcode::Rrq, "nbp", "octet", &uefi), r.addr)
            .unwrap();
        let (oack, from) = recv(&c);
        assert_eq!(
            Packet::parse(&oack).unwrap(),
            Packet::Oack(vec![
                ("tsize", "3000"),
                ("blksize", "1468"),
                ("windowsize", "4")
            ])
        );
        c.send_to(b"\x00\x05\x00\x08\x00", from).unwrap();
        assert_eq!(fetch(r.addr, "nbp", &uefi), vec![1u8; 3000]);
        wait_for(&r, "pxe_tftp_transfers_probe_aborted_total 1");

        // Two transfers left hanging fill the cap; the third is refused with a clear message.
        let hanging: Vec<UdpSocket> = (0..2).map(|_| client()).collect();
        for h in &hanging {
            h.send_to(&request(Opcode::Rrq, "nbp", "octet", &[]), r.addr)
                .unwrap();
            recv(h);
        }
        wait_for(&r, "pxe_tftp_transfers_in_flight 2");
        let c = client();
        c.send_to(&request(Opcode::Rrq, "nbp", "octet", &[]), r.addr)
            .unwrap();
        let (pkt, _) = recv(&c);
        match Packet::parse(&pkt).unwrap() {
            Packet::Error { code: 0, message } => {
                assert!(message.contains("server busy"), "{message}")
            }
            other => panic!("expected a busy ERROR, got {other:?}"),
        }
        // The hanging ones are retransmitted once, then given up.
        for h in &hanging {
            let (pkt, _) = recv(h);
            assert_eq!(&pkt[..4], b"\x00\x03\x00\x01");
        }
        wait_for(&r, "pxe_tftp_transfers_failed_total{reason=\"timeout\"} 2");
        wait_for(&r, "pxe_tftp_transfers_in_flight 0");
        assert!(metric(
            &r,
            "pxe_tftp_requests_refused_total{reason=\"busy\"} 1"
        ));
        assert!(metric(&r, "pxe_tftp_retransmits_total 2"));
    }

    #[test]
    fn shutdown_drains_then_ends_what_is_left() {
        let mut r = serve(3, &[("nbp", vec![2u8; 3000])], Settings::default());
        // One transfer finishes during the drain, one is left hanging.
        let finishing = client();
        finishing
            .send_to(&request(Opcode::Rrq, "nbp", "octet", &[]), r.addr)
            .unwrap();
        let hanging = client();
        hanging
            .send_to(&request(Opcode::Rrq, "nbp", "octet", &[]), r.addr)
            .unwrap();
        let (first, from) = recv(&finishing);
        recv(&hanging);
        let started = Instant::now();
        r.token.cancel();
        // New requests are no longer read.
        let late = client();
        late.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        late.send_to(&request(Opcode::Rrq, "nbp", "octet", &[]), r.addr)
            .unwrap();
        assert!(
            late.recv_from(&mut [0u8; 600]).is_err(),
            "answered while draining"
        );
        assert_eq!(&first[..4], b"\x00\x03\x00\x01");
        let mut block = 1u16;
        loop {
            finishing.send_to(&ack(block), from).unwrap();
            if block == 6 {
                break;
            }
            let (pkt, _) = recv(&finishing);
            block = u16::from_be_bytes([pkt[2], pkt[3]]);
        }
        r.thread.take().unwrap().join().unwrap();
        // The drain in `serve` is 1 s; the hanging transfer was ended with an ERROR.
        assert!(started.elapsed() >= Duration::from_millis(900));
        let mut got_error = false;
        for _ in 0..5 {
            let (pkt, _) = recv(&hanging);
            if pkt[..2] == [0, 5] {
                got_error = true;
                break;
            }
        }
        assert!(got_error, "the hanging client should get ERROR 0");
        assert!(metric(&r, "pxe_tftp_transfers_completed_total 1"));
        assert!(metric(
            &r,
            "pxe_tftp_transfers_failed_total{reason=\"shutdown\"} 1"
        ));
    }
}
