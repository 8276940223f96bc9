//! The state machine of one read transfer, sans-IO: datagram bytes and an `Instant` in,
//! datagrams to send, the next deadline and the outcome out. No sockets, no files: a DATA to
//! send is described by its block number and the file range it carries, and the datapath
//! (kernel sockets with io_uring today, AF_XDP later) fills it in.
//!
//! Blocks are counted with a `u64` from 1; the wire number is that count modulo 65536, so block
//! numbers roll over to 0 after 65535 and files past 32 MiB at 512-byte blocks go through.
//! Only a timeout retransmits: a duplicate ACK is ignored (Sorcerer's Apprentice, RFC 1123).

use std::time::{Duration, Instant};

use super::{
    options::Negotiated,
    packet::{write_oack, ErrorCode, Packet, ParseError, WireError},
};

/// One datagram the transfer wants sent to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A complete datagram (OACK or ERROR).
    Packet(Vec<u8>),
    /// DATA `block` carrying the file's bytes `offset..offset + len`.
    Data {
        /// Wire block number.
        block: u16,
        /// File offset of the payload.
        offset: u64,
        /// Payload bytes (0 for the empty last block).
        len: u32,
    },
}

/// What one step of a transfer produced. Reused between steps: [`Output::clear`].
#[derive(Debug, Default)]
pub struct Output {
    /// Datagrams to send, in order.
    pub sends: Vec<Outgoing>,
    /// Datagrams among `sends` that were sent before (by a timeout or a client's partial ACK).
    pub retransmits: u32,
    /// Duplicate ACKs seen (and ignored).
    pub duplicate_acks: u32,
}

impl Output {
    /// Empties it for the next step.
    pub fn clear(&mut self) {
        self.sends.clear();
        self.retransmits = 0;
        self.duplicate_acks = 0;
    }
}

/// Why a transfer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No answer after the last retransmit.
    Timeout,
    /// The client sent an ERROR during the data.
    ClientError,
    /// The client sent a packet that has no place in a read transfer.
    IllegalOperation,
    /// The server could not read the file.
    ReadError,
    /// The server stopped before the transfer ended.
    Shutdown,
    /// The client sent a different request from the same address and port mid-transfer.
    Superseded,
}

impl FailReason {
    /// Every reason, for exporting all label values.
    pub const ALL: [FailReason; 6] = [
        FailReason::Timeout,
        FailReason::ClientError,
        FailReason::IllegalOperation,
        FailReason::ReadError,
        FailReason::Shutdown,
        FailReason::Superseded,
    ];

    /// Label value in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::ClientError => "client_error",
            FailReason::IllegalOperation => "illegal_operation",
            FailReason::ReadError => "read_error",
            FailReason::Shutdown => "shutdown",
            FailReason::Superseded => "superseded",
        }
    }
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The last block was acknowledged.
    Completed,
    /// The client read the OACK of a tsize probe and aborted, as ROMs do before the real
    /// request: counted, not an error.
    ProbeAborted,
    /// It failed.
    Failed(FailReason),
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// OACK sent, ACK 0 awaited.
    Oack,
    /// Data flowing.
    Data,
    /// Ended.
    Done(Outcome),
}

/// Fixed parameters of a transfer besides the negotiated options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retransmits before giving up.
    pub max_retries: u8,
}

/// One read transfer. Small (no buffers): 10,000 of them fit in a few MiB.
#[derive(Debug)]
pub struct Transfer {
    file_size: u64,
    blksize: u16,
    windowsize: u16,
    timeout: Duration,
    max_retries: u8,
    tries: u8,
    phase: Phase,
    /// The OACK, kept to retransmit it (only while in [`Phase::Oack`]).
    oack: Option<Box<[u8]>>,
    /// Highest block acknowledged (0: none).
    acked: u64,
    /// Highest block sent.
    sent: u64,
    /// Number of the last block (the first shorter than blksize, possibly empty).
    last_block: u64,
    deadline: Instant,
}

impl Transfer {
    /// Starts a transfer of a `file_size`-byte file with the `negotiated` options at `now`;
    /// `out` gets the OACK, or the first window of DATA when no option was acknowledged.
    pub fn start(
        negotiated: &Negotiated,
        file_size: u64,
        retry: Retry,
        now: Instant,
        out: &mut Output,
    ) -> Transfer {
        let blksize = negotiated.blksize.max(1);
        let mut t = Transfer {
            file_size,
            blksize,
            windowsize: negotiated.windowsize.max(1),
            timeout: negotiated.timeout,
            max_retries: retry.max_retries,
            tries: 0,
            phase: Phase::Data,
            oack: None,
            acked: 0,
            sent: 0,
            last_block: file_size / u64::from(blksize) + 1,
            deadline: now + negotiated.timeout,
        };
        if negotiated.has_oack() {
            let mut oack = Vec::new();
            write_oack(&negotiated.acknowledged, &mut oack);
            out.sends.push(Outgoing::Packet(oack.clone()));
            t.oack = Some(oack.into_boxed_slice());
            t.phase = Phase::Oack;
        } else {
            t.send_window(now, out);
        }
        t
    }

    /// When [`Transfer::on_timeout`] should be called next; `None` once ended.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Done(_) => None,
            _ => Some(self.deadline),
        }
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Bytes per block.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// Blocks per window.
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// The file's size.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Handles a datagram from the transfer's client. A malformed one changes nothing and is
    /// returned as the error, for the caller to count and drop.
    pub fn on_datagram(
        &mut self,
        bytes: &[u8],
        now: Instant,
        out: &mut Output,
    ) -> Result<(), ParseError> {
        let packet = Packet::parse(bytes)?;
        match (self.phase, packet) {
            (Phase::Done(_), _) => {}
            (Phase::Oack, Packet::Ack(0)) => {
                self.phase = Phase::Data;
                self.oack = None;
                self.tries = 0;
                self.send_window(now, out);
            }
            // An ACK of a data block before the data started: stale or confused; the timeout
            // retransmits the OACK if needed.
            (Phase::Oack, Packet::Ack(_)) => out.duplicate_acks += 1,
            // Any ERROR answering the OACK is the ROMs' abort after reading tsize.
            (Phase::Oack, Packet::Error { .. }) => self.end(Outcome::ProbeAborted),
            (Phase::Data, Packet::Ack(block)) => self.on_ack(block, now, out),
            (Phase::Data, Packet::Error { .. }) => {
                self.end(Outcome::Failed(FailReason::ClientError))
            }
            (_, _) => {
                let err = WireError::new(ErrorCode::IllegalOperation, "illegal TFTP operation");
                out.sends.push(Outgoing::Packet(err.to_packet()));
                self.end(Outcome::Failed(FailReason::IllegalOperation));
            }
        }
        Ok(())
    }

    /// Handles the passing of time: past the deadline, retransmits what is unacknowledged, or
    /// gives up after the last retry.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Output) {
        if now < self.deadline || matches!(self.phase, Phase::Done(_)) {
            return;
        }
        if self.tries >= self.max_retries {
            self.end(Outcome::Failed(FailReason::Timeout));
            return;
        }
        self.tries += 1;
        match (&self.phase, &self.oack) {
            (Phase::Oack, Some(oack)) => {
                out.sends.push(Outgoing::Packet(oack.to_vec()));
                out.retransmits += 1;
                self.deadline = now + self.timeout;
            }
            _ => {
                let before = out.sends.len();
                self.sent = self.acked;
                self.send_window(now, out);
                out.retransmits += u32::try_from(out.sends.len() - before).unwrap_or(u32::MAX);
            }
        }
    }

    /// Handles the same request again from the same client (its retransmit: our first answer
    /// was lost): resends that answer while nothing has been acknowledged, else ignores it.
    pub fn on_repeated_request(&mut self, now: Instant, out: &mut Output) {
        match (&self.phase, &self.oack) {
            (Phase::Oack, Some(oack)) => {
                out.sends.push(Outgoing::Packet(oack.to_vec()));
                out.retransmits += 1;
                self.deadline = now + self.timeout;
            }
            (Phase::Data, _) if self.acked == 0 => {
                let before = out.sends.len();
                self.sent = 0;
                self.send_window(now, out);
                out.retransmits += u32::try_from(out.sends.len() - before).unwrap_or(u32::MAX);
            }
            _ => {}
        }
    }

    /// Ends it because the client sent another request from the same address: after an
    /// unanswered OACK that is a tsize probe the client moved on from (some ROMs re-request
    /// without an ERROR), else a failure.
    pub fn supersede(&mut self) {
        match self.phase {
            Phase::Oack => self.end(Outcome::ProbeAborted),
            Phase::Data => self.end(Outcome::Failed(FailReason::Superseded)),
            Phase::Done(_) => {}
        }
    }

    /// Ends it from outside (shutdown, a read error).
    pub fn abort(&mut self, reason: FailReason, error: Option<WireError>, out: &mut Output) {
        if matches!(self.phase, Phase::Done(_)) {
            return;
        }
        if let Some(err) = error {
            out.sends.push(Outgoing::Packet(err.to_packet()));
        }
        self.end(Outcome::Failed(reason));
    }

    fn end(&mut self, outcome: Outcome) {
        self.phase = Phase::Done(outcome);
        self.oack = None;
    }

    fn on_ack(&mut self, block: u16, now: Instant, out: &mut Output) {
        // The window is far smaller than 65536 blocks, so the wire number names one block of
        // `acked..=sent` unambiguously, across a rollover too.
        let delta = u64::from(block.wrapping_sub(self.acked as u16));
        if delta == 0 || self.acked + delta > self.sent {
            // A duplicate (or stale) ACK: never a retransmit. The timeout does that.
            out.duplicate_acks += 1;
            return;
        }
        self.acked += delta;
        self.tries = 0;
        if self.acked == self.last_block {
            self.end(Outcome::Completed);
            return;
        }
        // A partial ACK (the client lost a block of the window) restarts the window after it.
        let resent = self.sent - self.acked;
        self.sent = self.acked;
        let before = out.sends.len();
        self.send_window(now, out);
        let sent_now = u64::try_from(out.sends.len() - before).unwrap_or(0);
        out.retransmits += u32::try_from(resent.min(sent_now)).unwrap_or(u32::MAX);
    }

    /// Sends blocks `acked + 1 ..` up to a window, and arms the timeout.
    fn send_window(&mut self, now: Instant, out: &mut Output) {
        let end = (self.acked + u64::from(self.windowsize)).min(self.last_block);
        while self.sent < end {
            self.sent += 1;
            let offset = (self.sent - 1) * u64::from(self.blksize);
            let len = self
                .file_size
                .saturating_sub(offset)
                .min(u64::from(self.blksize));
            out.sends.push(Outgoing::Data {
                block: self.sent as u16,
                offset,
                len: len as u32,
            });
        }
        self.deadline = now + self.timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::{
        options::{negotiate, Limits},
        packet::ack,
    };

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
        default_timeout: Duration::from_secs(1),
    };
    const RETRY: Retry = Retry { max_retries: 3 };

    fn start(options: &[(&str, &str)], size: u64, now: Instant) -> (Transfer, Output) {
        let mut out = Output::default();
        let t = Transfer::start(
            &negotiate(options, size, &LIMITS),
            size,
            RETRY,
            now,
            &mut out,
        );
        (t, out)
    }

    fn data(block: u16, offset: u64, len: u32) -> Outgoing {
        Outgoing::Data { block, offset, len }
    }

    fn step(t: &mut Transfer, bytes: &[u8], now: Instant) -> Output {
        let mut out = Output::default();
        t.on_datagram(bytes, now, &mut out).expect("well-formed");
        out
    }

    #[test]
    fn lockstep_rfc1350_transfer() {
        let now = Instant::now();
        let (mut t, out) = start(&[], 1000, now);
        assert_eq!(out.sends, vec![data(1, 0, 512)]);
        let out = step(&mut t, &ack(1), now);
        assert_eq!(out.sends, vec![data(2, 512, 488)]);
        assert_eq!(t.outcome(), None);
        let out = step(&mut t, &ack(2), now);
        assert!(out.sends.is_empty());
        assert_eq!(t.outcome(), Some(Outcome::Completed));
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn exact_multiple_ends_with_an_empty_block() {
        let now = Instant::now();
        let (mut t, out) = start(&[], 1024, now);
        assert_eq!(out.sends, vec![data(1, 0, 512)]);
        assert_eq!(step(&mut t, &ack(1), now).sends, vec![data(2, 512, 512)]);
        assert_eq!(step(&mut t, &ack(2), now).sends, vec![data(3, 1024, 0)]);
        step(&mut t, &ack(3), now);
        assert_eq!(t.outcome(), Some(Outcome::Completed));
        // An empty file is one empty block.
        let (mut t, out) = start(&[], 0, now);
        assert_eq!(out.sends, vec![data(1, 0, 0)]);
        step(&mut t, &ack(1), now);
        assert_eq!(t.outcome(), Some(Outcome::Completed));
    }

    #[test]
    fn oack_then_windows_of_four() {
        let now = Instant::now();
        let opts = [("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")];
        let (mut t, out) = start(&opts, 10_000, now);
        assert_eq!(
            out.sends,
            vec![Outgoing::Packet(
                b"\x00\x06tsize\x0010000\x00blksize\x001468\x00windowsize\x004\x00".to_vec()
            )]
        );
        let out = step(&mut t, &ack(0), now);
        assert_eq!(
            out.sends,
            vec![
                data(1, 0, 1468),
                data(2, 1468, 1468),
                data(3, 2936, 1468),
                data(4, 4404, 1468)
            ]
        );
        // 10000 bytes = 6 full blocks + 1192: blocks 5..=7.
        let out = step(&mut t, &ack(4), now);
        assert_eq!(
            out.sends,
            vec![
                data(5, 5872, 1468),
                data(6, 7340, 1468),
                data(7, 8808, 1192)
            ]
        );
        assert_eq!(out.retransmits, 0);
        step(&mut t, &ack(7), now);
        assert_eq!(t.outcome(), Some(Outcome::Completed));
    }

    #[test]
    fn partial_ack_restarts_the_window_after_it() {
        let now = Instant::now();
        let (mut t, _) = start(&[("windowsize", "4")], 512 * 10, now);
        step(&mut t, &ack(0), now);
        // The client got 1 and 2, lost 3.
        let out = step(&mut t, &ack(2), now);
        assert_eq!(
            out.sends,
            vec![
                data(3, 1024, 512),
                data(4, 1536, 512),
                data(5, 2048, 512),
                data(6, 2560, 512)
            ]
        );
        assert_eq!(out.retransmits, 2);
    }

    #[test]
    fn duplicate_ack_never_retransmits() {
        let now = Instant::now();
        let (mut t, _) = start(&[], 2048, now);
        step(&mut t, &ack(1), now);
        // The Sorcerer's Apprentice: a delayed duplicate ACK 1 must not resend block 2.
        for _ in 0..3 {
            let out = step(&mut t, &ack(1), now);
            assert!(out.sends.is_empty(), "{:?}", out.sends);
            assert_eq!(out.duplicate_acks, 1);
        }
        // An ACK from the future (never sent) is ignored too.
        assert!(step(&mut t, &ack(9), now).sends.is_empty());
        assert_eq!(step(&mut t, &ack(2), now).sends, vec![data(3, 1024, 512)]);
        // In the OACK phase a stray data ACK changes nothing either.
        let (mut t, _) = start(&[("blksize", "512")], 2048, now);
        assert!(step(&mut t, &ack(1), now).sends.is_empty());
    }

    #[test]
    fn timeout_retransmits_then_gives_up() {
        let t0 = Instant::now();
        let (mut t, _) = start(&[], 2048, t0);
        let deadline = t.deadline().unwrap();
        assert_eq!(deadline, t0 + LIMITS.default_timeout);
        // Before the deadline: nothing.
        let mut out = Output::default();
        t.on_timeout(t0 + Duration::from_millis(999), &mut out);
        assert!(out.sends.is_empty());
        let mut now = deadline;
        for _ in 0..RETRY.max_retries {
            let mut out = Output::default();
            t.on_timeout(now, &mut out);
            assert_eq!(out.sends, vec![data(1, 0, 512)]);
            assert_eq!(out.retransmits, 1);
            now = t.deadline().unwrap();
        }
        let mut out = Output::default();
        t.on_timeout(now, &mut out);
        assert!(out.sends.is_empty());
        assert_eq!(t.outcome(), Some(Outcome::Failed(FailReason::Timeout)));
    }

    #[test]
    fn progress_resets_the_retry_count() {
        let t0 = Instant::now();
        let (mut t, _) = start(&[], 4096, t0);
        let mut now = t0;
        for block in 1..=4u16 {
            for _ in 0..RETRY.max_retries {
                now = t.deadline().unwrap();
                t.on_timeout(now, &mut Output::default());
            }
            step(&mut t, &ack(block), now);
            assert_eq!(t.outcome(), None);
        }
    }

    #[test]
    fn oack_is_retransmitted_on_timeout() {
        let t0 = Instant::now();
        let (mut t, first) = start(&[("blksize", "1024")], 100, t0);
        let mut out = Output::default();
        t.on_timeout(t.deadline().unwrap(), &mut out);
        assert_eq!(out.sends, first.sends);
        assert_eq!(out.retransmits, 1);
    }

    #[test]
    fn error_after_tsize_oack_is_a_quiet_probe_abort() {
        let now = Instant::now();
        let (mut t, _) = start(&[("tsize", "0"), ("blksize", "1468")], 5000, now);
        let out = step(&mut t, b"\x00\x05\x00\x08\x00", now);
        assert!(out.sends.is_empty());
        assert_eq!(t.outcome(), Some(Outcome::ProbeAborted));
        // ERROR 0 works the same (some ROMs).
        let (mut t, _) = start(&[("tsize", "0")], 5000, now);
        step(&mut t, b"\x00\x05\x00\x00abort\x00", now);
        assert_eq!(t.outcome(), Some(Outcome::ProbeAborted));
        // An ERROR during the data is a client error.
        let (mut t, _) = start(&[], 5000, now);
        step(&mut t, b"\x00\x05\x00\x00disk full\x00", now);
        assert_eq!(t.outcome(), Some(Outcome::Failed(FailReason::ClientError)));
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        // 512-byte blocks past 32 MiB: block 65535, then 0, 1, ...
        let now = Instant::now();
        let size = 512 * 65_537 + 100;
        let (mut t, _) = start(&[], size, now);
        for block in 1..=65_534u16 {
            step(&mut t, &ack(block), now);
        }
        assert_eq!(
            step(&mut t, &ack(65_534), now).sends,
            Vec::<Outgoing>::new(),
            "duplicate"
        );
        assert_eq!(
            step(&mut t, &ack(65_534), now).duplicate_acks,
            1,
            "duplicate"
        );
        let out = step(&mut t, &ack(65_535), now);
        assert_eq!(out.sends, vec![data(0, 512 * 65_535, 512)]);
        let out = step(&mut t, &ack(0), now);
        assert_eq!(out.sends, vec![data(1, 512 * 65_536, 512)]);
        let out = step(&mut t, &ack(1), now);
        assert_eq!(out.sends, vec![data(2, 512 * 65_537, 100)]);
        step(&mut t, &ack(2), now);
        assert_eq!(t.outcome(), Some(Outcome::Completed));
    }

    #[test]
    fn windows_straddle_the_rollover() {
        let now = Instant::now();
        let (mut t, _) = start(&[("blksize", "8"), ("windowsize", "4")], 8 * 65_540, now);
        step(&mut t, &ack(0), now);
        let mut block = 0u16;
        let mut out;
        loop {
            block = block.wrapping_add(4);
            out = step(&mut t, &ack(block), now);
            if block == 65_532 {
                break;
            }
        }
        let blocks: Vec<u16> = out
            .sends
            .iter()
            .map(|s| match s {
                Outgoing::Data { block, .. } => *block,
                Outgoing::Packet(_) => panic!("unexpected packet"),
            })
            .collect();
        assert_eq!(blocks, vec![65_533, 65_534, 65_535, 0]);
        let out = step(&mut t, &ack(0), now);
        assert_eq!(out.sends.len(), 4);
        assert_eq!(out.sends[0], data(1, 8 * 65_536, 8));
    }

    #[test]
    fn unexpected_packets_are_illegal_and_malformed_ones_change_nothing() {
        let now = Instant::now();
        let (mut t, _) = start(&[], 100, now);
        let mut out = Output::default();
        assert!(t.on_datagram(b"\x00\x04\x00", now, &mut out).is_err());
        assert!(out.sends.is_empty());
        assert_eq!(t.outcome(), None);
        let out = step(&mut t, b"\x00\x03\x00\x01data", now);
        assert_eq!(
            out.sends,
            vec![Outgoing::Packet(
                b"\x00\x05\x00\x04illegal TFTP operation\x00".to_vec()
            )]
        );
        assert_eq!(
            t.outcome(),
            Some(Outcome::Failed(FailReason::IllegalOperation))
        );
        // Once ended, nothing more happens.
        assert!(step(&mut t, &ack(1), now).sends.is_empty());
    }

    #[test]
    fn abort_sends_the_error_once() {
        let now = Instant::now();
        let (mut t, _) = start(&[], 100, now);
        let mut out = Output::default();
        let err = WireError::new(ErrorCode::NotDefined, "server shutting down");
        t.abort(FailReason::Shutdown, Some(err.clone()), &mut out);
        t.abort(FailReason::Shutdown, Some(err), &mut out);
        assert_eq!(out.sends.len(), 1);
        assert_eq!(t.outcome(), Some(Outcome::Failed(FailReason::Shutdown)));
    }

    #[test]
    fn repeated_request_resends_only_the_first_answer() {
        let now = Instant::now();
        let (mut t, first) = start(&[("tsize", "0")], 100, now);
        let mut out = Output::default();
        t.on_repeated_request(now, &mut out);
        assert_eq!(out.sends, first.sends);
        let (mut t, first) = start(&[], 1000, now);
        let mut out = Output::default();
        t.on_repeated_request(now, &mut out);
        assert_eq!(out.sends, first.sends);
        step(&mut t, &ack(1), now);
        let mut out = Output::default();
        t.on_repeated_request(now, &mut out);
        assert!(out.sends.is_empty());
        t.supersede();
        assert_eq!(t.outcome(), Some(Outcome::Failed(FailReason::Superseded)));
        let (mut t, _) = start(&[("tsize", "0")], 100, now);
        t.supersede();
        assert_eq!(t.outcome(), Some(Outcome::ProbeAborted));
    }

    #[test]
    fn transfer_state_is_small() {
        assert!(
            std::mem::size_of::<Transfer>() <= 96,
            "{}",
            std::mem::size_of::<Transfer>()
        );
    }
}
