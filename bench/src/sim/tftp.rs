//! The TFTP client of boot firmware: an RRQ with `tsize 0 blksize 1468` (and `windowsize 4` for
//! UEFI, as EDK2 asks), read the OACK, abort with ERROR 8 as many ROMs do after a size probe,
//! then the same request again from a new port and the transfer, acknowledging every window;
//! a timeout resends the last ACK, a bounded number of times. The packets are the load
//! generator's codec ([`wire`]).

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use pxe_common::TFTP_PORT;
use tokio::{net::UdpSocket, time::timeout};

use crate::tftp::wire::{self, ack, error, Reply};

/// Largest datagram taken (a block of at most 65464 bytes and its header).
const MAX_DATAGRAM_BYTES: usize = 65_468 + 4;

/// What the firmware asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// `blksize` asked.
    pub blksize: u16,
    /// `windowsize` asked (1: lock-step, the option is not sent).
    pub windowsize: u16,
    /// Whether to probe the size first and abort (ERROR 8), then ask again.
    pub tsize_probe: bool,
    /// Wait for a packet before resending.
    pub timeout: Duration,
    /// Resends of the same packet before giving up.
    pub retries: u32,
}

/// A finished transfer.
#[derive(Debug, Default)]
pub(crate) struct Transfer {
    /// File bytes received.
    pub bytes: u64,
    /// The file, when asked to keep it.
    pub data: Option<Vec<u8>>,
    /// Packets resent after a timeout (RRQ or ACK).
    pub resends: u32,
}

/// Why a transfer failed (bounded reasons for the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TftpError {
    /// No answer to the request after every resend.
    NoAnswer,
    /// The transfer stalled: no DATA after every resend of the ACK.
    Timeout,
    /// The server sent an ERROR.
    Server(u16, String),
    /// A packet the client cannot read, or a size other than the announced one.
    Protocol(&'static str),
    /// A socket error.
    Io(String),
}

impl TftpError {
    /// Short reason for the report.
    pub(crate) fn reason(&self) -> String {
        match self {
            TftpError::NoAnswer => "tftp no answer".into(),
            TftpError::Timeout => "tftp timeout".into(),
            TftpError::Server(code, msg) => {
                let msg: String = msg.chars().take(40).collect();
                format!("tftp error {code}: {msg}")
            }
            TftpError::Protocol(what) => format!("tftp {what}"),
            TftpError::Io(e) => format!("tftp io: {e}"),
        }
    }
}

/// An RRQ for `file` in octet mode with the options of `opts`.
pub(crate) fn rrq(file: &str, opts: &Options) -> Vec<u8> {
    let mut options = vec![
        ("tsize", "0".to_owned()),
        ("blksize", opts.blksize.to_string()),
    ];
    if opts.windowsize > 1 {
        options.push(("windowsize", opts.windowsize.to_string()));
    }
    wire::rrq(file, &options)
}

/// The options of an OACK a firmware acts on (names matched without regard to case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Taken {
    tsize: Option<u64>,
    blksize: Option<u64>,
    windowsize: Option<u64>,
}

impl Taken {
    fn of(options: &[(&str, &str)]) -> Taken {
        let value = |name: &str| {
            options
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.parse().ok())
        };
        Taken {
            tsize: value("tsize"),
            blksize: value("blksize"),
            windowsize: value("windowsize"),
        }
    }
}

thread_local! {
    /// The receive buffer every transfer of this thread shares: no await while it is held.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_DATAGRAM_BYTES]);
}

/// What a receive produced.
enum Received {
    /// A packet (decoded by the callback) from `from`.
    Packet(SocketAddr),
    /// Nothing within the timeout.
    TimedOut,
}

/// Waits up to `wait` for a datagram, runs `handle` on it while the shared buffer is held.
async fn recv_with<T>(
    sock: &UdpSocket,
    wait: Duration,
    mut handle: impl FnMut(&[u8], SocketAddr) -> T,
) -> Result<(Received, Option<T>), TftpError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match timeout(left, sock.readable()).await {
            Err(_) => return Ok((Received::TimedOut, None)),
            Ok(Err(e)) => return Err(TftpError::Io(e.kind().to_string())),
            Ok(Ok(())) => {}
        }
        let got = SCRATCH.with_borrow_mut(|buf| match sock.try_recv_from(buf) {
            Ok((n, from)) => Ok(Some((from, handle(&buf[..n], from)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // An ICMP error queued on the socket: not a packet, keep waiting.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(TftpError::Io(e.kind().to_string())),
        })?;
        if let Some((from, value)) = got {
            return Ok((Received::Packet(from), Some(value)));
        }
    }
}

async fn bind(local: Ipv4Addr) -> Result<UdpSocket, TftpError> {
    UdpSocket::bind(SocketAddrV4::new(local, 0))
        .await
        .map_err(|e| TftpError::Io(format!("bind {local}: {}", e.kind())))
}

async fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> Result<(), TftpError> {
    sock.send_to(bytes, to)
        .await
        .map(drop)
        .map_err(|e| TftpError::Io(e.kind().to_string()))
}

/// The size probe: RRQ, the OACK (or a first DATA from a server without options), then ERROR
/// 8 to abort. Returns the announced size and how many RRQs were resent.
async fn probe(
    local: Ipv4Addr,
    server: SocketAddr,
    file: &str,
    opts: &Options,
) -> Result<(Option<u64>, u32), TftpError> {
    let sock = bind(local).await?;
    let request = rrq(file, opts);
    let mut resends = 0;
    loop {
        send(&sock, &request, server).await?;
        let (got, value) = recv_with(&sock, opts.timeout, |bytes, _| match wire::parse(bytes) {
            Ok(Reply::Oack(o)) => Ok(Some(Taken::of(&o).tsize)),
            Ok(Reply::Data { .. }) => Ok(Some(None)),
            Ok(Reply::Error { code, message }) => Err(TftpError::Server(code, message)),
            Err(_) => Ok(None),
        })
        .await?;
        match (got, value) {
            (Received::Packet(from), Some(Ok(Some(tsize)))) => {
                send(&sock, &error(8, "tsize probe done"), from).await?;
                return Ok((tsize, resends));
            }
            (Received::Packet(_), Some(Err(e))) => return Err(e),
            (Received::Packet(_), _) => {}
            (Received::TimedOut, _) => {
                if resends >= opts.retries {
                    return Err(TftpError::NoAnswer);
                }
                resends += 1;
            }
        }
    }
}

/// Fetches `file` from `server` (port 69) from the machine's address `local`.
pub(crate) async fn fetch(
    local: Ipv4Addr,
    server: Ipv4Addr,
    file: &str,
    opts: &Options,
    keep: bool,
) -> Result<Transfer, TftpError> {
    let server = SocketAddr::V4(SocketAddrV4::new(server, TFTP_PORT));
    let mut transfer = Transfer {
        data: keep.then(Vec::new),
        ..Transfer::default()
    };
    let mut tsize = None;
    if opts.tsize_probe {
        let (size, resends) = probe(local, server, file, opts).await?;
        tsize = size;
        transfer.resends += resends;
    }
    let sock = bind(local).await?;
    let request = rrq(file, opts);
    // The server's transfer port (its TID), fixed by its first answer.
    let mut peer: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut window = 1u16;
    let mut expected: u16 = 1;
    let mut in_window = 0u16;
    // What to resend on a timeout: the RRQ until the server answers, then the last ACK.
    let mut last_sent: Vec<u8> = request.clone();
    let mut resends_here = 0;
    send(&sock, &request, server).await?;
    loop {
        enum Step {
            Ack(u16, bool),
            AckOnly(u16),
            Ignore,
            Foreign(SocketAddr),
            Fail(TftpError),
        }
        let mut options_taken = None;
        let (got, step) = recv_with(&sock, opts.timeout, |bytes, from| {
            if peer.is_some_and(|p| p != from) {
                return Step::Foreign(from);
            }
            match wire::parse(bytes) {
                Ok(Reply::Oack(o)) if peer.is_none() => {
                    options_taken = Some(Taken::of(&o));
                    peer = Some(from);
                    Step::AckOnly(0)
                }
                Ok(Reply::Data { block, payload }) => {
                    if peer.is_none() {
                        peer = Some(from);
                    }
                    if block == expected {
                        transfer.bytes += payload.len() as u64;
                        if let Some(d) = transfer.data.as_mut() {
                            d.extend_from_slice(payload);
                        }
                        expected = expected.wrapping_add(1);
                        in_window += 1;
                        let last = payload.len() < blksize;
                        if last || in_window >= window {
                            in_window = 0;
                            Step::Ack(block, last)
                        } else {
                            Step::Ignore
                        }
                    } else if block == expected.wrapping_sub(1) {
                        // Our ACK was lost and the server sent the block again: ACK it again.
                        in_window = 0;
                        Step::AckOnly(block)
                    } else if block.wrapping_sub(expected) < 0x8000 {
                        // A gap (a block lost inside the window): ACK the last in-order one.
                        in_window = 0;
                        Step::AckOnly(expected.wrapping_sub(1))
                    } else {
                        Step::Ignore
                    }
                }
                Ok(Reply::Error { code, message }) => Step::Fail(TftpError::Server(code, message)),
                _ => Step::Ignore,
            }
        })
        .await?;
        if let Some(o) = options_taken {
            blksize = o.blksize.map_or(512, |b| usize::try_from(b).unwrap_or(512));
            window = o
                .windowsize
                .map_or(1, |w| u16::try_from(w).unwrap_or(1).max(1));
            if let Some(size) = o.tsize {
                tsize = Some(size);
            }
        }
        match (got, step) {
            (Received::TimedOut, _) => {
                if resends_here >= opts.retries {
                    return Err(if peer.is_none() {
                        TftpError::NoAnswer
                    } else {
                        TftpError::Timeout
                    });
                }
                resends_here += 1;
                transfer.resends += 1;
                in_window = 0;
                let to = peer.unwrap_or(server);
                send(&sock, &last_sent, to).await?;
            }
            (Received::Packet(_), Some(step)) => match step {
                Step::Ack(block, last) => {
                    resends_here = 0;
                    last_sent = ack(block).to_vec();
                    send(&sock, &last_sent, peer.unwrap_or(server)).await?;
                    if last {
                        if tsize.is_some_and(|t| t != transfer.bytes) {
                            return Err(TftpError::Protocol("size differs from tsize"));
                        }
                        return Ok(transfer);
                    }
                }
                Step::AckOnly(block) => {
                    resends_here = 0;
                    last_sent = ack(block).to_vec();
                    send(&sock, &last_sent, peer.unwrap_or(server)).await?;
                }
                Step::Ignore => {}
                Step::Foreign(from) => {
                    // RFC 1350: a packet from an unknown TID gets ERROR 5; the transfer goes on.
                    send(&sock, &error(5, "unknown transfer id"), from).await?;
                }
                Step::Fail(e) => return Err(e),
            },
            (Received::Packet(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_carries_the_firmware_options() {
        let opts = Options {
            blksize: 1468,
            windowsize: 4,
            tsize_probe: true,
            timeout: Duration::from_secs(1),
            retries: 3,
        };
        assert_eq!(
            rrq("ipxe.efi", &opts),
            b"\0\x01ipxe.efi\0octet\0tsize\x000\0blksize\x001468\0windowsize\x004\0".to_vec()
        );
        let lockstep = Options {
            windowsize: 1,
            ..opts
        };
        assert!(!String::from_utf8_lossy(&rrq("a", &lockstep)).contains("windowsize"));
    }

    #[test]
    fn oack_options_are_read_whatever_their_case() {
        assert_eq!(
            Taken::of(&[("tsize", "74213"), ("BLKSIZE", "1468")]),
            Taken {
                tsize: Some(74213),
                blksize: Some(1468),
                windowsize: None
            }
        );
    }
}
