//! One client's read transfer as a sans-IO state machine: datagrams and a clock in, the
//! datagram to send and the outcome out. The load generator runs thousands of them over
//! non-blocking sockets; the tests here run them over byte arrays.
//!
//! It behaves as a careful real client does: the read request carries `tsize 0`, `blksize` and
//! (above 1) `windowsize`; an OACK is checked against what was asked and answered with ACK 0; a
//! server that ignores the options gets the RFC 1350 defaults (512 bytes, one block a window);
//! each window's last block is ACKed (RFC 7440), a block after a gap gets the ACK of the last
//! block received in order, once; duplicates are ignored (no Sorcerer's Apprentice); only a
//! timeout retransmits (the request, or the last ACK), a bounded number of times. Block numbers
//! roll over from 65535 to 0. Every block is checked against the size the server announced and,
//! when the caller knows the file, against its bytes.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::wire::{self, Reply};

/// RFC 1350's block size, used when the server ignores the options.
const DEFAULT_BLKSIZE: usize = 512;
/// Smallest block size RFC 2348 allows.
const MIN_BLKSIZE: usize = 8;

/// What a transfer asks for and how patient it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// `blksize` asked for.
    pub blksize: u16,
    /// `windowsize` asked for (1: the option is not sent).
    pub windowsize: u16,
    /// Time without progress before the last datagram is sent again.
    pub timeout: Duration,
    /// Retransmits of the same datagram before the transfer is given up.
    pub retries: u32,
}

/// What the file should be.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    /// Its length, if known.
    pub len: Option<u64>,
    /// Its bytes, if known (compared on transfers that ask for it).
    pub content: Option<Vec<u8>>,
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No progress through every retransmit.
    Timeout {
        /// What the client was waiting for.
        waiting_for: String,
    },
    /// The server sent an ERROR.
    ServerError {
        /// Its code.
        code: u16,
        /// Its message.
        message: String,
    },
    /// More or fewer bytes than the server announced or the file has.
    WrongLength {
        /// Bytes received (so far, when too many).
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// A block whose bytes differ from the file's.
    WrongBytes {
        /// Offset of the block in the file.
        offset: u64,
    },
    /// An OACK with an option not asked for or a value out of bounds, or a DATA larger than
    /// the block size.
    Protocol(String),
    /// A socket call failed.
    Socket(String),
    /// The run's time limit ended the transfer.
    Deadline,
}

impl Failure {
    /// A short stable label for counting.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Failure::Timeout { .. } => "timeout",
            Failure::ServerError { .. } => "server_error",
            Failure::WrongLength { .. } => "wrong_length",
            Failure::WrongBytes { .. } => "wrong_bytes",
            Failure::Protocol(_) => "protocol",
            Failure::Socket(_) => "socket_error",
            Failure::Deadline => "deadline",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
            Failure::ServerError { code, message } => write!(f, "ERROR {code} {message:?}"),
            Failure::WrongLength { got, expected } => {
                write!(f, "received {got} bytes, expected {expected}")
            }
            Failure::WrongBytes { offset } => write!(f, "wrong bytes in the block at {offset}"),
            Failure::Protocol(what) => f.write_str(what),
            Failure::Socket(what) => f.write_str(what),
            Failure::Deadline => f.write_str("the run's time limit passed"),
        }
    }
}

/// A datagram the transfer wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Send {
    /// The read request, to the server's port 69.
    Rrq,
    /// An ACK, to the server's transfer ID.
    Ack(u16),
    /// ERROR 5 (unknown transfer ID) to a stray sender.
    UnknownTid(SocketAddr),
}

/// What one event did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    /// What to send now.
    pub send: Option<Send>,
    /// The server's transfer ID became known (the socket may be connected to it).
    pub learned_tid: bool,
    /// The transfer ended: the file's length, or why not.
    pub end: Option<Result<u64, Failure>>,
}

/// Counters of what the transfer saw, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// Datagrams sent again after a timeout.
    pub retransmits: u64,
    /// ACKs sent on a gap in a window.
    pub gap_acks: u64,
    /// Blocks (or OACKs) received again, ignored.
    pub duplicates: u64,
    /// Datagrams from an address that is not the server's transfer ID.
    pub stray: u64,
    /// Datagrams that are not TFTP a reader expects, dropped.
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Requested,
    Receiving,
    Done,
}

/// One read transfer.
#[derive(Debug)]
pub(crate) struct Transfer {
    params: Params,
    verify_content: bool,
    phase: Phase,
    tid: Option<SocketAddr>,
    blksize: usize,
    windowsize: u16,
    tsize: Option<u64>,
    /// The block expected next.
    next_block: u16,
    received: u64,
    in_window: u16,
    /// A gap of this window was already answered.
    gap_acked: bool,
    retries_left: u32,
    deadline: Instant,
    counters: Counters,
}

impl Transfer {
    /// A transfer whose read request is sent now (the caller sends it: [`Send::Rrq`]).
    /// With `verify_content`, every block is compared with [`Expected::content`].
    pub(crate) fn start(params: Params, verify_content: bool, now: Instant) -> Transfer {
        Transfer {
            params,
            verify_content,
            phase: Phase::Requested,
            tid: None,
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            tsize: None,
            next_block: 1,
            received: 0,
            in_window: 0,
            gap_acked: false,
            retries_left: params.retries,
            deadline: now + params.timeout,
            counters: Counters::default(),
        }
    }

    /// The options of the read request, in the order UEFI firmware sends them.
    pub(crate) fn request_options(params: &Params) -> Vec<(&'static str, String)> {
        let mut options = vec![
            ("tsize", "0".to_owned()),
            ("blksize", params.blksize.to_string()),
        ];
        if params.windowsize > 1 {
            options.push(("windowsize", params.windowsize.to_string()));
        }
        options
    }

    /// When [`Transfer::on_timeout`] is due.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The server's transfer ID, once known.
    pub(crate) fn tid(&self) -> Option<SocketAddr> {
        self.tid
    }

    /// Block size and window in force (the defaults until the server answers).
    pub(crate) fn negotiated(&self) -> (usize, u16) {
        (self.blksize, self.windowsize)
    }

    /// What the transfer saw.
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// Ends the transfer with `failure` (a socket error, the run's deadline).
    pub(crate) fn fail(&mut self, failure: Failure) -> Step {
        self.end(Step::default(), Err(failure))
    }

    fn end(&mut self, mut step: Step, result: Result<u64, Failure>) -> Step {
        self.phase = Phase::Done;
        step.end = Some(result);
        step
    }

    fn progress(&mut self, now: Instant) {
        self.retries_left = self.params.retries;
        self.deadline = now + self.params.timeout;
    }

    fn sending(&mut self, mut step: Step, send: Send) -> Step {
        step.send = Some(send);
        step
    }

    /// The timeout passed without progress: sends the last datagram again, or gives up.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Step {
        if self.phase == Phase::Done || now < self.deadline {
            return Step::default();
        }
        if self.retries_left == 0 {
            let waiting_for = match self.phase {
                Phase::Requested => "an answer to the read request".to_owned(),
                _ => format!("block {} (after {} bytes)", self.next_block, self.received),
            };
            return self.fail(Failure::Timeout { waiting_for });
        }
        self.retries_left -= 1;
        self.deadline = now + self.params.timeout;
        self.counters.retransmits += 1;
        // The server restarts its window after the ACK it gets.
        self.in_window = 0;
        self.gap_acked = false;
        // The request again, or the ACK of the last block received in order (RFC 7440).
        let again = match self.phase {
            Phase::Requested => Send::Rrq,
            _ => Send::Ack(self.next_block.wrapping_sub(1)),
        };
        self.sending(Step::default(), again)
    }

    /// A datagram from `from`.
    pub(crate) fn on_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        expected: &Expected,
    ) -> Step {
        if self.phase == Phase::Done {
            return Step::default();
        }
        if self.tid.is_some_and(|tid| tid != from) {
            self.counters.stray += 1;
            return Step {
                send: Some(Send::UnknownTid(from)),
                ..Step::default()
            };
        }
        let reply = match wire::parse(bytes) {
            Ok(reply) => reply,
            Err(_) => {
                self.counters.malformed += 1;
                return Step::default();
            }
        };
        let mut step = Step::default();
        match (self.phase, reply) {
            (_, Reply::Error { code, message }) => {
                self.end(step, Err(Failure::ServerError { code, message }))
            }
            (Phase::Requested, Reply::Oack(options)) => {
                if let Err(what) = self.take_options(&options, expected) {
                    return self.fail(Failure::Protocol(what));
                }
                self.tid = Some(from);
                step.learned_tid = true;
                self.phase = Phase::Receiving;
                self.progress(now);
                self.sending(step, Send::Ack(0))
            }
            (Phase::Requested, Reply::Data { block, payload }) => {
                // The server ignored every option: RFC 1350 defaults, no tsize.
                self.tid = Some(from);
                step.learned_tid = true;
                self.phase = Phase::Receiving;
                self.on_data(step, block, payload, now, expected)
            }
            (Phase::Receiving, Reply::Oack(_)) => {
                // Our ACK 0 was lost and the OACK came again: only the timeout answers it.
                self.counters.duplicates += 1;
                step
            }
            (Phase::Receiving, Reply::Data { block, payload }) => {
                self.on_data(step, block, payload, now, expected)
            }
            (Phase::Done, _) => step,
        }
    }

    /// Checks an OACK against the request and takes its values.
    fn take_options(
        &mut self,
        options: &[(&str, &str)],
        expected: &Expected,
    ) -> Result<(), String> {
        // Until the OACK names them, the options are refused: RFC 1350 defaults.
        self.blksize = DEFAULT_BLKSIZE;
        self.windowsize = 1;
        for (name, value) in options {
            let number: u64 = value
                .parse()
                .map_err(|_| format!("OACK {name}={value:?} is not a number"))?;
            if name.eq_ignore_ascii_case("blksize") {
                if !(MIN_BLKSIZE as u64..=u64::from(self.params.blksize)).contains(&number) {
                    return Err(format!(
                        "OACK blksize {number} outside 8..={}",
                        self.params.blksize
                    ));
                }
                self.blksize = number as usize;
            } else if name.eq_ignore_ascii_case("windowsize") && self.params.windowsize > 1 {
                if !(1..=u64::from(self.params.windowsize)).contains(&number) {
                    return Err(format!(
                        "OACK windowsize {number} outside 1..={}",
                        self.params.windowsize
                    ));
                }
                self.windowsize = number as u16;
            } else if name.eq_ignore_ascii_case("tsize") {
                if let Some(len) = expected.len.filter(|&len| len != number) {
                    return Err(format!("OACK tsize {number}, the file has {len} bytes"));
                }
                self.tsize = Some(number);
            } else {
                return Err(format!("OACK option {name:?} was not asked for"));
            }
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        mut step: Step,
        block: u16,
        payload: &[u8],
        now: Instant,
        expected: &Expected,
    ) -> Step {
        if block != self.next_block {
            let ahead = block.wrapping_sub(self.next_block);
            if ahead < 0x8000 && !self.gap_acked {
                // A block was lost: ACK the last one received in order, once per gap.
                self.gap_acked = true;
                self.in_window = 0;
                self.counters.gap_acks += 1;
                return self.sending(step, Send::Ack(self.next_block.wrapping_sub(1)));
            }
            if ahead >= 0x8000 {
                self.counters.duplicates += 1;
            }
            return step;
        }
        if payload.len() > self.blksize {
            let what = format!(
                "DATA block {block} has {} bytes, blksize is {}",
                payload.len(),
                self.blksize
            );
            return self.end(step, Err(Failure::Protocol(what)));
        }
        let limit = self.tsize.or(expected.len);
        let end = self.received + payload.len() as u64;
        if let Some(limit) = limit.filter(|&limit| end > limit) {
            return self.end(
                step,
                Err(Failure::WrongLength {
                    got: end,
                    expected: limit,
                }),
            );
        }
        if self.verify_content {
            if let Some(content) = &expected.content {
                let start = usize::try_from(self.received).unwrap_or(usize::MAX);
                let same = content
                    .get(start..start.saturating_add(payload.len()))
                    .is_some_and(|want| want == payload);
                if !same {
                    let offset = self.received;
                    return self.end(step, Err(Failure::WrongBytes { offset }));
                }
            }
        }
        self.received = end;
        self.next_block = self.next_block.wrapping_add(1);
        self.in_window += 1;
        self.gap_acked = false;
        self.progress(now);
        if payload.len() < self.blksize {
            step = self.sending(step, Send::Ack(block));
            return match limit.filter(|&limit| limit != end) {
                Some(limit) => self.end(
                    step,
                    Err(Failure::WrongLength {
                        got: end,
                        expected: limit,
                    }),
                ),
                None => self.end(step, Ok(end)),
            };
        }
        if self.in_window >= self.windowsize {
            self.in_window = 0;
            return self.sending(step, Send::Ack(block));
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: Params = Params {
        blksize: 1468,
        windowsize: 4,
        timeout: Duration::from_millis(1000),
        retries: 2,
    };

    fn server() -> SocketAddr {
        "198.18.0.1:30000".parse().unwrap()
    }

    fn data(block: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 3];
        out.extend_from_slice(&block.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn file(len: usize) -> Expected {
        let content: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        Expected {
            len: Some(len as u64),
            content: Some(content),
        }
    }

    fn block_of(e: &Expected, blksize: usize, block: usize) -> &[u8] {
        let c = e.content.as_ref().unwrap();
        let start = (block - 1) * blksize;
        &c[start..(start + blksize).min(c.len())]
    }

    fn oack(e: &Expected, window: u16) -> Vec<u8> {
        let text = format!(
            "tsize\0{}\0blksize\01468\0windowsize\0{window}\0",
            e.len.unwrap()
        );
        let mut out = vec![0, 6];
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn windowed_transfer_acks_each_window_and_the_last_block() {
        let e = file(1468 * 9 + 100); // 10 blocks
        let t0 = Instant::now();
        let mut t = Transfer::start(PARAMS, true, t0);
        let step = t.on_datagram(server(), &oack(&e, 4), t0, &e);
        assert_eq!(step.send, Some(Send::Ack(0)));
        assert!(step.learned_tid);
        assert_eq!(t.negotiated(), (1468, 4));
        let mut acks = Vec::new();
        for block in 1..=10usize {
            let step = t.on_datagram(
                server(),
                &data(block as u16, block_of(&e, 1468, block)),
                t0,
                &e,
            );
            if let Some(Send::Ack(b)) = step.send {
                acks.push(b);
            }
            if block == 10 {
                assert_eq!(step.end, Some(Ok(e.len.unwrap())));
            } else {
                assert_eq!(step.end, None);
            }
        }
        assert_eq!(acks, [4, 8, 10]);
        assert_eq!(t.on_timeout(t0 + Duration::from_secs(60)), Step::default());
    }

    #[test]
    fn a_gap_is_acked_once_and_duplicates_are_ignored() {
        let e = file(1468 * 8 + 1);
        let t0 = Instant::now();
        let mut t = Transfer::start(PARAMS, true, t0);
        t.on_datagram(server(), &oack(&e, 4), t0, &e);
        let b = |n: usize| data(n as u16, block_of(&e, 1468, n));
        assert_eq!(t.on_datagram(server(), &b(1), t0, &e).send, None);
        // Block 2 lost: 3 and 4 each show the gap; only the first is answered.
        assert_eq!(
            t.on_datagram(server(), &b(3), t0, &e).send,
            Some(Send::Ack(1))
        );
        assert_eq!(t.on_datagram(server(), &b(4), t0, &e).send, None);
        // The server starts again at 2: a full window, ACKed at 5.
        for n in 2..=4 {
            assert_eq!(t.on_datagram(server(), &b(n), t0, &e).send, None, "{n}");
        }
        assert_eq!(
            t.on_datagram(server(), &b(5), t0, &e).send,
            Some(Send::Ack(5))
        );
        // A late duplicate of 3 changes nothing.
        assert_eq!(t.on_datagram(server(), &b(3), t0, &e), Step::default());
        assert_eq!(t.counters().gap_acks, 1);
        assert_eq!(t.counters().duplicates, 1);
    }

    #[test]
    fn timeouts_resend_the_last_datagram_then_give_up() {
        let e = file(5000);
        let t0 = Instant::now();
        let mut t = Transfer::start(PARAMS, false, t0);
        let later = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(t.on_timeout(later(999)), Step::default());
        assert_eq!(t.on_timeout(later(1000)).send, Some(Send::Rrq));
        assert_eq!(
            t.on_datagram(server(), &oack(&e, 4), later(1500), &e).send,
            Some(Send::Ack(0))
        );
        assert_eq!(t.on_timeout(later(2500)).send, Some(Send::Ack(0)));
        t.on_datagram(server(), &data(1, block_of(&e, 1468, 1)), later(2600), &e);
        assert_eq!(t.on_timeout(later(3600)).send, Some(Send::Ack(1)));
        assert_eq!(t.on_timeout(later(4600)).send, Some(Send::Ack(1)));
        let end = t.on_timeout(later(5600)).end;
        assert!(matches!(end, Some(Err(Failure::Timeout { .. }))), "{end:?}");
        assert_eq!(t.counters().retransmits, 4);
    }

    #[test]
    fn a_server_without_options_gets_rfc1350_defaults() {
        let e = file(512 * 2);
        let t0 = Instant::now();
        let mut t = Transfer::start(PARAMS, true, t0);
        let c = e.content.as_ref().unwrap();
        let step = t.on_datagram(server(), &data(1, &c[..512]), t0, &e);
        assert_eq!(step.send, Some(Send::Ack(1)));
        assert_eq!(t.negotiated(), (512, 1));
        t.on_datagram(server(), &data(2, &c[512..]), t0, &e);
        // A file of whole blocks ends with an empty one.
        let step = t.on_datagram(server(), &data(3, b""), t0, &e);
        assert_eq!(step.send, Some(Send::Ack(3)));
        assert_eq!(step.end, Some(Ok(1024)));
    }

    #[test]
    fn wrong_bytes_lengths_and_options_fail_the_transfer() {
        let e = file(3000);
        let t0 = Instant::now();
        let mut t = Transfer::start(PARAMS, true, t0);
        t.on_datagram(server(), &oack(&e, 4), t0, &e);
        let end = t.on_datagram(server(), &data(1, &[0u8; 1468]), t0, &e).end;
        assert_eq!(end, Some(Err(Failure::WrongBytes { offset: 0 })));

        // Unverified, the length still counts: the file ends early.
        let mut t = Transfer::start(PARAMS, false, t0);
        t.on_datagram(server(), &oack(&e, 4), t0, &e);
        let end = t.on_datagram(server(), &data(1, &[0u8; 100]), t0, &e).end;
        assert_eq!(
            end,
            Some(Err(Failure::WrongLength {
                got: 100,
                expected: 3000
            }))
        );

        let mut t = Transfer::start(PARAMS, false, t0);
        let end = t
            .on_datagram(server(), b"\x00\x06blksize\x009000\x00", t0, &e)
            .end;
        assert!(matches!(end, Some(Err(Failure::Protocol(_)))), "{end:?}");

        let mut t = Transfer::start(PARAMS, false, t0);
        let end = t
            .on_datagram(server(), b"\x00\x05\x00\x01File not found\x00", t0, &e)
            .end;
        assert_eq!(
            end,
            Some(Err(Failure::ServerError {
                code: 1,
                message: "File not found".into()
            }))
        );
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        let params = Params {
            blksize: 8,
            windowsize: 1,
            ..PARAMS
        };
        let len = 8 * 65_537 + 3;
        let e = Expected {
            len: Some(len as u64),
            content: None,
        };
        let t0 = Instant::now();
        let mut t = Transfer::start(params, false, t0);
        let oack = format!("tsize\0{len}\0blksize\08\0");
        let mut pkt = vec![0, 6];
        pkt.extend_from_slice(oack.as_bytes());
        t.on_datagram(server(), &pkt, t0, &e);
        let mut block: u16 = 1;
        for _ in 0..65_537 {
            let step = t.on_datagram(server(), &data(block, &[7u8; 8]), t0, &e);
            assert_eq!(step.send, Some(Send::Ack(block)));
            block = block.wrapping_add(1);
        }
        assert_eq!(block, 2, "65535 was followed by 0 and 1");
        let step = t.on_datagram(server(), &data(block, &[7u8; 3]), t0, &e);
        assert_eq!(step.end, Some(Ok(len as u64)));
    }

    #[test]
    fn strays_get_unknown_tid_and_change_nothing() {
        let e = file(3000);
        let t0 = Instant::now();
        let mut t = Transfer::start(PARAMS, false, t0);
        t.on_datagram(server(), &oack(&e, 4), t0, &e);
        let other: SocketAddr = "198.18.0.1:30001".parse().unwrap();
        let step = t.on_datagram(other, &data(1, &[0u8; 1468]), t0, &e);
        assert_eq!(step.send, Some(Send::UnknownTid(other)));
        assert_eq!(step.end, None);
        assert_eq!(t.counters().stray, 1);
    }
}
