//! TFTP as a [`FrameService`] of the AF_XDP datapath: the same transfer table
//! ([`Transfers`]) as the kernel-socket datapath, with every datagram written straight into
//! the frame that leaves. DATA comes from the shared file cache (a copy into the frame), or,
//! for a file too large for the cache, from a positioned read of the page cache, done before
//! the frame is taken so that a failed read sends nothing.
//!
//! Replies go to the MAC the client's datagrams came from, so no ARP is needed. When the
//! transmit ring is full the rest of a step's datagrams are dropped: the transfer's timer
//! resends them, as it would after a loss on the wire.

use std::{
    net::{SocketAddr, SocketAddrV4},
    ops::RangeInclusive,
    os::unix::fs::FileExt as _,
    time::Instant,
};

use tracing::debug;

use super::{
    files::Source,
    metrics::TftpMetrics,
    packet::{write_data_header, DATA_HEADER_BYTES},
    table::{Entry, Peer, TableSettings, TransferIo, Transfers},
    transfer::Outgoing,
};
use crate::datapath::{Datagram, FrameService, Route, TxError, UdpTx};

/// The TFTP service of the AF_XDP datapath (port 69 and the transfer range).
#[derive(Debug)]
pub struct TftpFrameService {
    table: Transfers,
    ports: RangeInclusive<u16>,
    /// Transfers whose block read failed during the last step.
    failed_reads: Vec<u64>,
    /// A block of a file served from disk, read before its frame is taken.
    disk_block: Vec<u8>,
}

impl TftpFrameService {
    /// A service over a new table; `ports` is the transfer range (`settings.ports` must be
    /// its length).
    pub fn new(settings: TableSettings, ports: RangeInclusive<u16>) -> TftpFrameService {
        TftpFrameService {
            table: Transfers::new(settings),
            ports,
            failed_reads: Vec::new(),
            disk_block: Vec::new(),
        }
    }

    /// Runs the reads that failed during the last step to their end (ERROR 0 to the client).
    fn settle(&mut self, tx: &mut dyn UdpTx) {
        while let Some(token) = self.failed_reads.pop() {
            let mut io = FrameIo {
                tx,
                first_port: *self.ports.start(),
                failed_reads: &mut Vec::new(),
                disk_block: &mut self.disk_block,
            };
            self.table.read_failed(token, &mut io);
        }
        self.table.update_gauges();
    }
}

/// The [`TransferIo`] of the AF_XDP datapath: datagrams written into frames.
struct FrameIo<'a> {
    tx: &'a mut dyn UdpTx,
    first_port: u16,
    failed_reads: &'a mut Vec<u64>,
    disk_block: &'a mut Vec<u8>,
}

impl FrameIo<'_> {
    fn route(&self, port: usize, peer: &Peer) -> Option<Route> {
        let SocketAddr::V4(to) = peer.addr else {
            return None;
        };
        let from_port = if port == 0 {
            pxe_common::TFTP_PORT
        } else {
            let offset = u16::try_from(port - 1).ok()?;
            self.first_port.checked_add(offset)?
        };
        Some(Route {
            mac: peer.mac,
            to: SocketAddrV4::new(*to.ip(), to.port()),
            from_port,
        })
    }
}

impl TransferIo for FrameIo<'_> {
    fn packet(&mut self, port: usize, peer: &Peer, bytes: &[u8]) {
        let Some(route) = self.route(port, peer) else {
            return;
        };
        if let Err(e) = self
            .tx
            .send(route, bytes.len(), &mut |buf| buf.copy_from_slice(bytes))
        {
            debug!(client = %peer.addr, error = %e, "TFTP datagram not sent");
        }
    }

    fn transfer(
        &mut self,
        entry: &Entry,
        token: u64,
        sends: &mut [Outgoing],
        metrics: &TftpMetrics,
    ) {
        let Some(route) = self.route(entry.port, &entry.peer) else {
            return;
        };
        for send in sends.iter() {
            let result = match send {
                Outgoing::Packet(bytes) => self
                    .tx
                    .send(route, bytes.len(), &mut |buf| buf.copy_from_slice(bytes)),
                &Outgoing::Data { block, offset, len } => {
                    let Some(payload) = block_bytes(&entry.source, offset, len, self.disk_block)
                    else {
                        // Nothing is sent: the transfer ends with ERROR 0 after this step.
                        self.failed_reads.push(token);
                        return;
                    };
                    let result =
                        self.tx
                            .send(route, DATA_HEADER_BYTES + payload.len(), &mut |buf| {
                                let (header, body) = buf.split_at_mut(DATA_HEADER_BYTES);
                                write_data_header(block, header);
                                body.copy_from_slice(payload);
                            });
                    if result.is_ok() {
                        metrics.data_bytes.inc_by(u64::from(len));
                    }
                    result
                }
            };
            match result {
                Ok(()) => {}
                // The rest would not fit either: the timer resends them.
                Err(TxError::Full) => {
                    metrics.send_errors.inc();
                    return;
                }
                Err(e @ TxError::TooLarge(_)) => {
                    metrics.send_errors.inc();
                    debug!(client = %entry.peer.addr, error = %e, "TFTP datagram not sent");
                }
            }
        }
    }
}

/// The file's bytes `offset..offset + len`: a slice of the cached file, or for a file served
/// from disk a positioned read (page cache) into `disk_block`, done before a frame is taken so
/// that a failed read sends nothing. `None` when they cannot all be had (the file shrank or
/// the disk failed).
fn block_bytes<'a>(
    source: &'a Source,
    offset: u64,
    len: u32,
    disk_block: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    let len = len as usize;
    match source {
        Source::Cached(data) => {
            let start = usize::try_from(offset).ok()?;
            data.get(start..start.checked_add(len)?)
        }
        Source::Disk { file, .. } => {
            disk_block.resize(len, 0);
            file.read_exact_at(disk_block, offset).ok()?;
            Some(disk_block)
        }
    }
}

impl FrameService for TftpFrameService {
    fn name(&self) -> &'static str {
        "tftp"
    }

    fn wants(&self, dst_port: u16) -> bool {
        dst_port == pxe_common::TFTP_PORT || self.ports.contains(&dst_port)
    }

    fn on_datagram(&mut self, datagram: &Datagram<'_>, now: Instant, tx: &mut dyn UdpTx) {
        let peer = Peer {
            addr: SocketAddr::V4(datagram.src),
            mac: datagram.src_mac,
        };
        let port = datagram.dst.port();
        let mut io = FrameIo {
            tx: &mut *tx,
            first_port: *self.ports.start(),
            failed_reads: &mut self.failed_reads,
            disk_block: &mut self.disk_block,
        };
        if port == pxe_common::TFTP_PORT {
            self.table.on_request(peer, datagram.payload, now, &mut io);
        } else {
            let index = usize::from(port - self.ports.start()) + 1;
            self.table
                .on_transfer_datagram(index, peer, datagram.payload, now, &mut io);
        }
        if !self.failed_reads.is_empty() {
            self.settle(tx);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.table.next_deadline()
    }

    fn coalesce(&self) -> bool {
        // Transfers wait for each of our replies (windowsize 1 is one round trip per block).
        self.table.live() == 0
    }

    fn device_checksum(&self) -> bool {
        // TFTP clients read through UDP sockets (firmware through its NIC): a DATA block is
        // not summed here and again by the receiver's stack.
        true
    }

    fn on_tick(&mut self, now: Instant, tx: &mut dyn UdpTx) {
        let mut io = FrameIo {
            tx: &mut *tx,
            first_port: *self.ports.start(),
            failed_reads: &mut self.failed_reads,
            disk_block: &mut self.disk_block,
        };
        self.table.fire_timers(now, &mut io);
        self.settle(tx);
    }
}

#[cfg(test)]
mod tests {
    //! The service driven as the datapath drives it, with a recording [`UdpTx`].

    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        metrics::Metrics,
        tftp::{
            packet::{ack, request, Opcode, Packet},
            AsRequested, SharedFiles,
        },
    };

    #[derive(Default)]
    struct Recorder {
        sent: Vec<(Route, Vec<u8>)>,
        room: Option<usize>,
    }

    impl UdpTx for Recorder {
        fn max_payload(&self) -> usize {
            1472
        }

        fn send(
            &mut self,
            route: Route,
            len: usize,
            fill: &mut dyn FnMut(&mut [u8]),
        ) -> Result<(), TxError> {
            if self.room == Some(0) {
                return Err(TxError::Full);
            }
            if let Some(room) = &mut self.room {
                *room -= 1;
            }
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            self.sent.push((route, buf));
            Ok(())
        }
    }

    const CLIENT_MAC: crate::datapath::MacAddr = crate::datapath::MacAddr([2, 0, 0, 0, 0, 7]);

    fn service(file: &[u8], cache_bytes: u64) -> (TftpFrameService, Metrics, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("nbp.efi"), file).unwrap();
        let registry = Metrics::new().unwrap();
        let metrics = TftpMetrics::register(&registry).unwrap();
        let config = crate::tftp::Settings::default();
        let files = SharedFiles::open(&root.path().canonicalize().unwrap(), cache_bytes).unwrap();
        let settings = TableSettings {
            files,
            mapper: Arc::new(AsRequested),
            timeline: None,
            limits: crate::tftp::limits_for(&config, 1500),
            retry: crate::tftp::transfer::Retry { max_retries: 3 },
            max_transfers: 8,
            ports: 10,
            metrics,
        };
        (
            TftpFrameService::new(settings, 30_000..=30_009),
            registry,
            root,
        )
    }

    fn datagram<'a>(dst_port: u16, payload: &'a [u8]) -> Datagram<'a> {
        Datagram {
            src_mac: CLIENT_MAC,
            src: "198.18.0.50:2000".parse().unwrap(),
            dst: SocketAddrV4::new("198.18.0.1".parse().unwrap(), dst_port),
            payload,
        }
    }

    /// Asks for the file as a windowsize-4 client would (blksize 1000) and takes the OACK;
    /// returns the server port of the transfer.
    fn open(service: &mut TftpFrameService, tx: &mut Recorder, now: Instant) -> u16 {
        let rrq = request(
            Opcode::Rrq,
            "nbp.efi",
            "octet",
            &[("blksize", "1000"), ("windowsize", "4")],
        );
        assert!(service.wants(69));
        service.on_datagram(&datagram(69, &rrq), now, tx);
        let (route, oack) = tx.sent.remove(0);
        assert!(matches!(Packet::parse(&oack), Ok(Packet::Oack(_))));
        assert_eq!(route.mac, CLIENT_MAC, "unicast to the client's MAC");
        assert_eq!(route.to, "198.18.0.50:2000".parse().unwrap());
        assert!(service.wants(route.from_port));
        route.from_port
    }

    /// Reads the file as a windowsize-4 client would, over the service; returns the bytes
    /// and the server port the transfer used.
    fn read(service: &mut TftpFrameService, tx: &mut Recorder, now: Instant) -> (Vec<u8>, u16) {
        let port = open(service, tx, now);
        service.on_datagram(&datagram(port, &ack(0)), now, tx);
        let mut data = Vec::new();
        for _ in 0..10_000 {
            if tx.sent.is_empty() {
                break;
            }
            let mut last = 0;
            for (route, bytes) in std::mem::take(&mut tx.sent) {
                assert_eq!(route.from_port, port);
                let Ok(Packet::Data { block, payload }) = Packet::parse(&bytes) else {
                    panic!("not DATA: {bytes:?}");
                };
                data.extend_from_slice(payload);
                last = block;
            }
            service.on_datagram(&datagram(port, &ack(last)), now, tx);
        }
        (data, port)
    }

    /// The block numbers of the DATA packets `tx` holds, in order.
    fn data_blocks(tx: &Recorder) -> Vec<u16> {
        tx.sent
            .iter()
            .filter_map(|(_, b)| match Packet::parse(b) {
                Ok(Packet::Data { block, .. }) => Some(block),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_windowed_transfer_gets_the_exact_bytes_from_cache_and_from_disk() {
        let file: Vec<u8> = (0..25_001u32).map(|i| (i * 7 % 251) as u8).collect();
        for cache_bytes in [1 << 20, 0] {
            let (mut service, registry, _root) = service(&file, cache_bytes);
            let mut tx = Recorder::default();
            let (got, _) = read(&mut service, &mut tx, Instant::now());
            assert_eq!(got, file, "cache_bytes {cache_bytes}");
            let text = registry.render();
            assert!(
                text.contains("pxe_tftp_transfers_completed_total 1"),
                "{text}"
            );
            assert!(text.contains("pxe_tftp_transfers_in_flight 0"), "{text}");
        }
    }

    #[test]
    fn a_full_transmit_ring_loses_the_window_and_the_timer_resends_it() {
        let file = vec![9u8; 5_000];
        let (mut service, _registry, _root) = service(&file, 1 << 20);
        let now = Instant::now();
        let mut tx = Recorder::default();
        let port = open(&mut service, &mut tx, now);
        tx.room = Some(1);
        service.on_datagram(&datagram(port, &ack(0)), now, &mut tx);
        assert_eq!(
            tx.sent.len(),
            1,
            "one block fit, the rest of the window did not"
        );
        tx.sent.clear();
        tx.room = None;
        let deadline = service.next_deadline().expect("a resend timer");
        service.on_tick(deadline + Duration::from_millis(1), &mut tx);
        let blocks = data_blocks(&tx);
        assert_eq!(blocks, [1, 2, 3, 4], "the window again after the timeout");
    }

    #[test]
    fn an_ack_moves_the_resend_later_and_the_early_wakeup_sends_nothing() {
        // Timers are filed lazily: the ACK's later deadline is not filed at once, so the
        // datapath wakes at the old one, which must send nothing and file the new one.
        let file = vec![9u8; 9_000];
        let (mut service, registry, _root) = service(&file, 1 << 20);
        let start = Instant::now();
        let mut tx = Recorder::default();
        let port = open(&mut service, &mut tx, start);
        service.on_datagram(&datagram(port, &ack(0)), start, &mut tx);
        let first = service.next_deadline().expect("a resend timer");
        tx.sent.clear();
        let later = start + (first - start) / 2;
        service.on_datagram(&datagram(port, &ack(4)), later, &mut tx);
        assert_eq!(tx.sent.len(), 4, "the next window");
        tx.sent.clear();
        service.on_tick(first + Duration::from_millis(1), &mut tx);
        assert!(tx.sent.is_empty(), "nothing is due yet: {:?}", tx.sent);
        let second = service.next_deadline().expect("the real deadline filed");
        assert!(second > first, "{second:?} after {first:?}");
        service.on_tick(second + Duration::from_millis(1), &mut tx);
        let blocks = data_blocks(&tx);
        assert_eq!(blocks, [5, 6, 7, 8], "the unacknowledged window, once");
        let text = registry.render();
        assert!(text.contains("pxe_tftp_retransmits_total 4"), "{text}");
    }

    #[test]
    fn a_disk_block_that_cannot_be_read_is_not_sent_and_ends_the_transfer() {
        let file = vec![7u8; 10_000];
        let (mut service, registry, root) = service(&file, 0);
        let now = Instant::now();
        let mut tx = Recorder::default();
        let port = open(&mut service, &mut tx, now);
        service.on_datagram(&datagram(port, &ack(0)), now, &mut tx);
        assert_eq!(tx.sent.len(), 4, "the first window, read from disk");
        tx.sent.clear();
        // The file shrinks under the transfer: blocks 5 on cannot be read.
        std::fs::File::options()
            .write(true)
            .open(root.path().join("nbp.efi"))
            .unwrap()
            .set_len(4_500)
            .unwrap();
        service.on_datagram(&datagram(port, &ack(4)), now, &mut tx);
        let kinds: Vec<_> = tx
            .sent
            .iter()
            .map(|(_, b)| match Packet::parse(b) {
                Ok(Packet::Data { block, .. }) => format!("data {block}"),
                Ok(Packet::Error { code, .. }) => format!("error {code}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["error 0"], "no DATA with bytes that were not read");
        let text = registry.render();
        assert!(
            text.contains("pxe_tftp_transfers_failed_total{reason=\"read_error\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn unknown_transfers_and_writes_are_refused_from_the_right_port() {
        let (mut service, _registry, _root) = service(b"x", 1 << 20);
        let mut tx = Recorder::default();
        let now = Instant::now();
        service.on_datagram(&datagram(30_004, &ack(3)), now, &mut tx);
        let (route, bytes) = tx.sent.remove(0);
        assert_eq!(route.from_port, 30_004);
        assert!(matches!(
            Packet::parse(&bytes),
            Ok(Packet::Error { code: 5, .. })
        ));
        let wrq = request(Opcode::Wrq, "x", "octet", &[]);
        service.on_datagram(&datagram(69, &wrq), now, &mut tx);
        let (route, bytes) = tx.sent.remove(0);
        assert_eq!(route.from_port, 69);
        assert!(matches!(
            Packet::parse(&bytes),
            Ok(Packet::Error { code: 2, .. })
        ));
        assert!(!service.wants(30_010) && !service.wants(67));
    }
}
