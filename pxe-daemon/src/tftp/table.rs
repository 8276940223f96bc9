//! The running transfers of one datapath, sans-IO: requests and transfer datagrams in, what
//! to send out through a [`TransferIo`], timers kept in one ordered set. Both datapaths drive
//! one: the kernel-socket server ([`super::server`], sends through io_uring) and the AF_XDP
//! service ([`super::frames`], sends whole frames). They differ only in how a datagram
//! leaves, so everything else (the cap, retransmit timers, repeated requests, the timeline,
//! metrics, logs) is written once, here.
//!
//! A transfer is identified by its client's address; a client address has at most one
//! transfer: the same request again is a retransmit, a different one replaces the transfer.
//! Transfers of different clients share server ports (round robin over the range).

use std::{
    collections::{BTreeSet, HashMap},
    hash::{Hash as _, Hasher as _},
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use tracing::{debug, info};

use super::{
    files::{CacheStats, FileError, FileStore, PathMapper, Source},
    metrics::{Refusal, TftpMetrics},
    options::{negotiate, Limits},
    packet::{ErrorCode, Opcode, Packet, WireError},
    transfer::{FailReason, Outcome, Outgoing, Output, Retry, Transfer},
};
use crate::datapath::MacAddr;

/// The boot root's file store, shared by the datapaths: one cache of hot files, whichever
/// datapath a request came in on.
#[derive(Clone, Debug)]
pub struct SharedFiles {
    inner: Arc<Mutex<Files>>,
    root: PathBuf,
}

#[derive(Debug)]
struct Files {
    store: FileStore,
    /// Statistics already added to the metrics.
    published: CacheStats,
}

impl SharedFiles {
    /// Opens the root (an absolute directory) with a cache of at most `cache_bytes` bytes.
    pub fn open(root: &Path, cache_bytes: u64) -> io::Result<SharedFiles> {
        Ok(SharedFiles {
            inner: Arc::new(Mutex::new(Files {
                store: FileStore::new(root, cache_bytes)?,
                published: CacheStats::default(),
            })),
            root: root.to_path_buf(),
        })
    }

    /// The boot root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        // A panic while holding the lock left a consistent store (open has no partial state
        // that matters): go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_file(&self, name: &str) -> Result<Source, FileError> {
        self.lock().store.open(name)
    }

    /// Adds what the cache did since the last call to the metrics.
    fn publish(&self, metrics: &TftpMetrics) {
        let mut files = self.lock();
        let stats = files.store.stats();
        metrics
            .cache_hits
            .inc_by(stats.hits.saturating_sub(files.published.hits));
        metrics
            .cache_fills
            .inc_by(stats.fills.saturating_sub(files.published.fills));
        metrics
            .cache_bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        files.published = stats;
    }
}

/// A client as a datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Address and port.
    pub addr: SocketAddr,
    /// Ethernet address its datagrams came from (the AF_XDP datapath answers to it without
    /// ARP; the kernel datapath leaves it zero).
    pub mac: MacAddr,
}

/// A transfer and what the table keeps beside it.
#[derive(Debug)]
pub struct Entry {
    /// The protocol state.
    pub transfer: Transfer,
    /// Where DATA comes from.
    pub source: Source,
    /// Its server port: index 1.. into the transfer port range (0 is the request port).
    pub port: usize,
    /// The client.
    pub peer: Peer,
    started: Instant,
    /// The deadline it is filed under in the timer set: never later than the transfer's own
    /// deadline, possibly earlier (filing is lazy, see [`Transfers::apply`]).
    timer: Option<Instant>,
    generation: u32,
    request_hash: u64,
    file: Box<str>,
}

impl Entry {
    /// The file served, as mapped.
    pub fn file(&self) -> &str {
        &self.file
    }
}

/// How a datapath sends.
pub trait TransferIo {
    /// Sends a whole datagram (an ERROR) to `peer` from server port `port` (0: the request
    /// port, else index 1.. into the transfer range).
    fn packet(&mut self, port: usize, peer: &Peer, bytes: &[u8]);

    /// Sends, in order, what one step of `entry` produced. `token` names the transfer to
    /// [`Transfers::read_failed`] when a block read fails later.
    fn transfer(
        &mut self,
        entry: &Entry,
        token: u64,
        sends: &mut [Outgoing],
        metrics: &TftpMetrics,
    );
}

/// What a table is set up with.
#[derive(Debug)]
pub struct TableSettings {
    /// The shared file store.
    pub files: SharedFiles,
    /// Maps requested names to served ones.
    pub mapper: Arc<dyn PathMapper>,
    /// Where machines' boots are followed.
    pub timeline: Option<crate::timeline::Timeline>,
    /// Offered at most.
    pub limits: Limits,
    /// Retransmits.
    pub retry: Retry,
    /// Transfers at once (`tftp.max_transfers`).
    pub max_transfers: usize,
    /// Ports in the transfer range this datapath serves (at least 1).
    pub ports: usize,
    /// Counters.
    pub metrics: TftpMetrics,
}

/// The running transfers of one datapath.
#[derive(Debug)]
pub struct Transfers {
    files: SharedFiles,
    mapper: Arc<dyn PathMapper>,
    timeline: Option<crate::timeline::Timeline>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    live: usize,
    generation: u32,
    by_client: HashMap<SocketAddr, u32>,
    timers: BTreeSet<(Instant, u32)>,
    next_port: usize,
    ports: usize,
    limits: Limits,
    retry: Retry,
    max_transfers: usize,
    metrics: TftpMetrics,
    out: Output,
}

impl Transfers {
    /// An empty table.
    pub fn new(settings: TableSettings) -> Transfers {
        Transfers {
            files: settings.files,
            mapper: settings.mapper,
            timeline: settings.timeline,
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
            generation: 0,
            by_client: HashMap::new(),
            timers: BTreeSet::new(),
            next_port: 0,
            ports: settings.ports.max(1),
            limits: settings.limits,
            retry: settings.retry,
            max_transfers: settings.max_transfers,
            metrics: settings.metrics,
            out: Output::default(),
        }
    }

    /// Transfers in flight.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The block size and window offered at most.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Transfers allowed at once.
    pub fn max_transfers(&self) -> usize {
        self.max_transfers
    }

    /// The file store.
    pub fn files(&self) -> &SharedFiles {
        &self.files
    }

    /// The counters.
    pub fn metrics(&self) -> &TftpMetrics {
        &self.metrics
    }

    /// The earliest retransmit deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// A datagram to the request port (69).
    pub fn on_request(&mut self, peer: Peer, bytes: &[u8], now: Instant, io: &mut dyn TransferIo) {
        let from = peer.addr;
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.malformed.inc();
                debug!(client = %from, error = %e, "malformed TFTP request dropped");
                return;
            }
        };
        match packet {
            Packet::Rrq(req) => {
                let mut hasher = std::hash::DefaultHasher::new();
                bytes.hash(&mut hasher);
                self.start_transfer(peer, req.filename, &req.options, hasher.finish(), now, io);
            }
            Packet::Wrq(req) => {
                self.metrics.refused(Refusal::WriteRequest);
                info!(client = %from, file = req.filename, "TFTP write request refused");
                let err = WireError::new(
                    ErrorCode::AccessViolation,
                    "write requests are not accepted",
                );
                io.packet(0, &peer, &err.to_packet());
            }
            // Never answer an error with an error.
            Packet::Error { code, message } => {
                debug!(client = %from, code, message, "TFTP error to the listener ignored");
            }
            _ => {
                self.metrics.malformed.inc();
                debug!(client = %from, "TFTP packet other than a request to the listener");
                let err = WireError::new(ErrorCode::IllegalOperation, "illegal TFTP operation");
                io.packet(0, &peer, &err.to_packet());
            }
        }
    }

    fn start_transfer(
        &mut self,
        peer: Peer,
        filename: &str,
        options: &[(&str, &str)],
        request_hash: u64,
        now: Instant,
        io: &mut dyn TransferIo,
    ) {
        let from = peer.addr;
        if let Some(&slot) = self.by_client.get(&from) {
            let entry = self.entries[slot as usize]
                .as_mut()
                .expect("indexed transfers exist");
            if entry.request_hash == request_hash {
                debug!(client = %from, file = filename, "repeated TFTP request");
                let mut out = std::mem::take(&mut self.out);
                entry.transfer.on_repeated_request(now, &mut out);
                self.out = out;
                self.apply(slot, now, io);
                return;
            }
            entry.transfer.supersede();
            self.apply(slot, now, io);
        }
        if self.live >= self.max_transfers {
            self.metrics.refused(Refusal::Busy);
            debug!(client = %from, file = filename, max_transfers = self.max_transfers, "TFTP request refused: busy");
            let err = WireError::new(
                ErrorCode::NotDefined,
                format!(
                    "server busy: {} transfers in flight (max_transfers), try again",
                    self.live
                ),
            );
            io.packet(0, &peer, &err.to_packet());
            return;
        }
        let name = self.mapper.map(from, filename);
        let opened = match self.files.open_file(&name) {
            // Not in the root: a file the daemon renders (GRUB's per-machine config), if any.
            Err(e @ FileError::NotFound { .. }) => match self.mapper.render(from, filename) {
                Some(bytes) => Ok(Source::Cached(bytes.into())),
                None => Err(e),
            },
            other => other,
        };
        let source = match opened {
            Ok(s) => s,
            Err(e) => {
                let refusal = match e.label() {
                    "not_found" => Refusal::NotFound,
                    "read_error" => Refusal::ReadError,
                    _ => Refusal::AccessViolation,
                };
                self.metrics.refused(refusal);
                info!(client = %from, file = filename, error = %e, "TFTP request refused");
                io.packet(0, &peer, &e.to_wire().to_packet());
                return;
            }
        };
        let negotiated = negotiate(options, source.size(), &self.limits);
        self.out.clear();
        let transfer = Transfer::start(&negotiated, source.size(), self.retry, now, &mut self.out);
        self.next_port = self.next_port % self.ports + 1;
        self.generation = self.generation.wrapping_add(1);
        let size = source.size();
        let entry = Entry {
            port: self.next_port,
            peer,
            started: now,
            timer: None,
            generation: self.generation,
            request_hash,
            file: name.into_boxed_str(),
            source,
            transfer,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.entries.push(Some(entry));
                u32::try_from(self.entries.len() - 1).expect("max_transfers fits u32")
            }
        };
        self.live += 1;
        self.by_client.insert(from, slot);
        self.metrics.started.inc();
        self.metrics.in_flight.inc();
        if let (Some(timeline), IpAddr::V4(ip)) = (&self.timeline, from.ip()) {
            timeline.record(crate::timeline::Event::Tftp {
                ip,
                file: filename,
                ended: None,
            });
        }
        self.metrics.blksize.observe(f64::from(negotiated.blksize));
        self.metrics
            .windowsize
            .observe(f64::from(negotiated.windowsize));
        debug!(
            client = %from,
            file = filename,
            size,
            blksize = negotiated.blksize,
            windowsize = negotiated.windowsize,
            oack = negotiated.has_oack(),
            port_index = self.next_port,
            "TFTP transfer started"
        );
        self.apply(slot, now, io);
    }

    /// A datagram to transfer port `port` (index 1.. into the range).
    pub fn on_transfer_datagram(
        &mut self,
        port: usize,
        peer: Peer,
        bytes: &[u8],
        now: Instant,
        io: &mut dyn TransferIo,
    ) {
        let from = peer.addr;
        let slot = match self.by_client.get(&from) {
            Some(&slot)
                if self.entries[slot as usize]
                    .as_ref()
                    .is_some_and(|e| e.port == port) =>
            {
                slot
            }
            _ => {
                self.metrics.unknown_tid.inc();
                debug!(client = %from, port_index = port, "TFTP datagram for an unknown transfer");
                let is_error = bytes.len() >= 2
                    && u16::from_be_bytes([bytes[0], bytes[1]]) == Opcode::Error as u16;
                if !is_error {
                    let err = WireError::new(ErrorCode::UnknownTid, "unknown transfer ID");
                    io.packet(port, &peer, &err.to_packet());
                }
                return;
            }
        };
        let entry = self.entries[slot as usize]
            .as_mut()
            .expect("indexed transfers exist");
        // The AF_XDP datapath answers to the MAC of the latest datagram.
        entry.peer.mac = peer.mac;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if let Err(e) = entry.transfer.on_datagram(bytes, now, &mut out) {
            self.metrics.malformed.inc();
            debug!(client = %from, error = %e, "malformed TFTP packet dropped");
        }
        self.out = out;
        self.apply(slot, now, io);
    }

    /// Sends what the last step of transfer `slot` produced, files its timer, and ends it if
    /// it is over.
    fn apply(&mut self, slot: u32, now: Instant, io: &mut dyn TransferIo) {
        let Transfers {
            entries,
            metrics,
            out,
            timers,
            ..
        } = self;
        let entry = entries[slot as usize]
            .as_mut()
            .expect("indexed transfers exist");
        let token = (u64::from(entry.generation) << 32) | u64::from(slot);
        metrics.retransmits.inc_by(u64::from(out.retransmits));
        metrics.duplicate_acks.inc_by(u64::from(out.duplicate_acks));
        if !out.sends.is_empty() {
            io.transfer(entry, token, &mut out.sends, metrics);
        }
        out.clear();
        // Filed lazily: every ACK moves the deadline later, and re-filing it each time was a
        // set removal and insertion per datagram. An earlier filing stays; when it comes due,
        // fire_timers files the real deadline. Only a deadline earlier than the filed one
        // (or the first) is filed now.
        if let Some(new) = entry.transfer.deadline() {
            if entry.timer.is_none_or(|filed| new < filed) {
                if let Some(old) = entry.timer {
                    timers.remove(&(old, slot));
                }
                timers.insert((new, slot));
                entry.timer = Some(new);
            }
        }
        if let Some(outcome) = entry.transfer.outcome() {
            self.finish(slot, outcome, now);
        }
    }

    /// Removes ended transfer `slot` and counts it.
    fn finish(&mut self, slot: u32, outcome: Outcome, now: Instant) {
        let Some(entry) = self.entries[slot as usize].take() else {
            return;
        };
        if let Some(t) = entry.timer {
            self.timers.remove(&(t, slot));
        }
        self.by_client.remove(&entry.peer.addr);
        self.free.push(slot);
        self.live -= 1;
        self.metrics.in_flight.dec();
        let seconds = now.saturating_duration_since(entry.started).as_secs_f64();
        self.metrics.ended(outcome, seconds);
        let client = entry.peer.addr;
        if let (Some(timeline), IpAddr::V4(ip)) = (&self.timeline, client.ip()) {
            let ended = match outcome {
                Outcome::Completed => Some(Ok(())),
                Outcome::Failed(reason) => Some(Err(reason.label())),
                // A tsize probe is part of a ROM's normal sequence, not an end.
                Outcome::ProbeAborted => None,
            };
            if ended.is_some() {
                timeline.record(crate::timeline::Event::Tftp {
                    ip,
                    file: &entry.file,
                    ended,
                });
            }
        }
        let size = entry.transfer.file_size();
        match outcome {
            Outcome::Completed => info!(
                client = %client,
                file = %entry.file,
                bytes = size,
                seconds,
                blksize = entry.transfer.blksize(),
                windowsize = entry.transfer.windowsize(),
                "TFTP transfer completed"
            ),
            Outcome::ProbeAborted => debug!(
                client = %client,
                file = %entry.file,
                "TFTP client aborted after the tsize probe"
            ),
            Outcome::Failed(reason) => info!(
                client = %client,
                file = %entry.file,
                reason = reason.label(),
                seconds,
                "TFTP transfer failed"
            ),
        }
    }

    /// Runs every retransmit timer due at `now`.
    pub fn fire_timers(&mut self, now: Instant, io: &mut dyn TransferIo) {
        while let Some(&(deadline, slot)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(entry) = self.entries[slot as usize].as_mut() else {
                continue;
            };
            entry.timer = None;
            match entry.transfer.deadline() {
                // Filed earlier than the transfer now needs: file the real deadline.
                Some(real) if real > now => {
                    self.timers.insert((real, slot));
                    entry.timer = Some(real);
                    continue;
                }
                Some(_) => {}
                None => continue,
            }
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            entry.transfer.on_timeout(now, &mut out);
            self.out = out;
            self.apply(slot, now, io);
        }
    }

    /// Ends the transfer `token` names (if it still runs) with ERROR 0: a block of its file
    /// could not be read.
    pub fn read_failed(&mut self, token: u64, io: &mut dyn TransferIo) {
        let slot = token as u32;
        let generation = (token >> 32) as u32;
        let Some(entry) = self.entries.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        tracing::warn!(client = %entry.peer.addr, file = %entry.file, "reading a TFTP block failed or came back short (file changed?)");
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let err = WireError::new(ErrorCode::NotDefined, "cannot read file");
        entry
            .transfer
            .abort(FailReason::ReadError, Some(err), &mut out);
        self.out = out;
        self.apply(slot, Instant::now(), io);
    }

    /// Ends every transfer with ERROR 0 (shutdown).
    pub fn abort_all(&mut self, io: &mut dyn TransferIo) {
        let now = Instant::now();
        for slot in 0..self.entries.len() {
            let Some(entry) = self.entries[slot].as_mut() else {
                continue;
            };
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            let err = WireError::new(ErrorCode::NotDefined, "server shutting down");
            entry
                .transfer
                .abort(FailReason::Shutdown, Some(err), &mut out);
            self.out = out;
            self.apply(slot as u32, now, io);
        }
    }

    /// Brings the cache metrics up to date.
    pub fn update_gauges(&self) {
        self.files.publish(&self.metrics);
    }
}
