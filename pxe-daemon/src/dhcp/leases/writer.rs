//! The writer thread: recovery at open, group commit, compaction. It owns the journal file and
//! the lock; nothing else touches them.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    journal::{self, ScanError, BLOCK_HEADER_BYTES, FILE_HEADER_BYTES, MAX_BLOCK_BODY_BYTES},
    live::LiveSet,
    stats::Counters,
    CompactionStep, Pending, Recovered, StoreError, StoreOptions,
};

/// Bytes the compaction buffers before each write to the temporary file.
const COMPACT_WRITE_BYTES: usize = 4 << 20;

/// The writer's state.
#[derive(Debug)]
pub(super) struct Writer {
    path: PathBuf,
    dir: PathBuf,
    /// The temporary file of a compaction (also of the creation of a new journal).
    compact_path: PathBuf,
    file: File,
    journal_bytes: u64,
    live: LiveSet,
    opts: StoreOptions,
    counters: Arc<Counters>,
    /// The block being built, reused across batches.
    buf: Vec<u8>,
    /// Set by the first failed write or sync: later commits fail with it.
    failed: Option<Arc<StoreError>>,
    /// No compaction is tried before the journal reaches this size (raised after a failure).
    compact_not_before: u64,
    /// Held for the life of the writer: one process per journal.
    _lock: Flock<File>,
}

fn sibling(path: &Path, suffix: &str) -> Result<PathBuf, StoreError> {
    let name = path.file_name().ok_or_else(|| StoreError::InvalidPath {
        path: path.to_owned(),
    })?;
    let mut name = name.to_owned();
    name.push(suffix);
    Ok(path.with_file_name(name))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Syncs a directory, so that a rename or creation in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes an exclusive, non-blocking `flock` on `file`, held until the result is dropped;
/// `None` if another holder has it.
fn try_lock(file: File) -> io::Result<Option<Flock<File>>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

impl Writer {
    /// Locks, recovers and replays the journal at `path` (creating it if missing).
    pub(super) fn open(
        path: &Path,
        opts: StoreOptions,
        counters: Arc<Counters>,
    ) -> Result<(Writer, Recovered), StoreError> {
        let lock_path = sibling(path, ".lock")?;
        let compact_path = sibling(path, ".compact")?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::io("creating the directory of the lease journal", &dir, e))?;

        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| StoreError::io("opening lease journal lock", &lock_path, e))?;
        let Some(lock) = try_lock(lock).map_err(|e| StoreError::io("locking", &lock_path, e))?
        else {
            return Err(StoreError::Locked {
                path: path.to_owned(),
                lock: lock_path,
            });
        };

        // A compaction (or creation) that a crash interrupted before its rename: the journal
        // itself is intact, the half-made copy is dropped.
        match fs::remove_file(&compact_path) {
            Ok(()) => warn!(
                path = %compact_path.display(),
                "removed the temporary file of an interrupted lease journal compaction"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("removing", &compact_path, e)),
        }

        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_journal(path, &compact_path, &dir)?;
                info!(path = %path.display(), "created lease journal");
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| StoreError::io("opening lease journal", path, e))?
            }
            Err(e) => return Err(StoreError::io("opening lease journal", path, e)),
        };

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("reading lease journal", path, e))?;
        if bytes.is_empty() {
            // Made by hand: give it the header in place.
            bytes.extend_from_slice(&journal::file_header());
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io("writing the header of lease journal", path, e))?;
        }

        let mut live = LiveSet::default();
        let end = journal::scan(&bytes, |r| live.apply(r)).map_err(|e| match e {
            ScanError::Header(reason) => StoreError::Format {
                path: path.to_owned(),
                reason,
            },
            ScanError::Corrupt { offset, reason } => StoreError::Corrupt {
                path: path.to_owned(),
                offset,
                reason,
            },
        })?;
        let file_len = bytes.len() as u64;
        drop(bytes);
        let torn_tail_bytes = file_len - end.valid_len;
        if let Some(reason) = end.torn {
            warn!(
                path = %path.display(),
                offset = end.valid_len,
                bytes = torn_tail_bytes,
                reason,
                "cutting off the torn tail of the lease journal (a write cut short by a crash: \
                 it was never acknowledged)"
            );
            file.set_len(end.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    StoreError::io("truncating the torn tail of lease journal", path, e)
                })?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| StoreError::io("seeking in lease journal", path, e))?;

        let recovered = Recovered {
            leases: live.leases(),
            declined: live.declined(),
            records_replayed: end.records,
            torn_tail_bytes,
            journal_bytes: end.valid_len,
        };
        info!(
            path = %path.display(),
            leases = recovered.leases.len(),
            declined = recovered.declined.len(),
            records = end.records,
            bytes = end.valid_len,
            "replayed lease journal"
        );
        let writer = Writer {
            path: path.to_owned(),
            dir,
            compact_path,
            file,
            journal_bytes: end.valid_len,
            live,
            opts,
            counters,
            buf: Vec::new(),
            failed: None,
            compact_not_before: 0,
            _lock: lock,
        };
        writer.publish_sizes();
        Ok((writer, recovered))
    }

    /// Group-commits queued records until every handle is dropped.
    pub(super) fn run(mut self, mut queue: mpsc::Receiver<Pending>) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut waiters = Vec::new();
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(p) => p,
                None => match queue.blocking_recv() {
                    Some(p) => p,
                    None => return,
                },
            };
            if let Some(cause) = &self.failed {
                self.fail(first, cause.clone());
                continue;
            }

            // Everything queued right now goes into one block, within the block's bounds.
            self.buf.clear();
            let start = journal::begin_block(&mut self.buf);
            first.record.encode(&mut self.buf);
            batch.push(first);
            while batch.len() < self.opts.max_batch_records {
                let Ok(p) = queue.try_recv() else { break };
                let body = self.buf.len() - start - BLOCK_HEADER_BYTES;
                if body + p.record.encoded_len() > MAX_BLOCK_BODY_BYTES {
                    carry = Some(p);
                    break;
                }
                p.record.encode(&mut self.buf);
                batch.push(p);
            }
            journal::finish_block(&mut self.buf, start, batch.len() as u32);

            match self.append() {
                Ok(()) => {
                    // Counters first, so that a resolved commit sees itself counted.
                    self.counters.batch(batch.len() as u64);
                    for Pending { record, done } in batch.drain(..) {
                        self.live.apply(record);
                        waiters.push(done);
                    }
                    self.publish_sizes();
                    for done in waiters.drain(..) {
                        // A commit whose future was dropped is not waiting.
                        let _ = done.send(Ok(()));
                    }
                    self.maybe_compact();
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "lease journal write failed: refusing every further commit until restart"
                    );
                    for p in batch.drain(..) {
                        let _ = p.done.send(Err(e.clone()));
                    }
                    self.failed = Some(Arc::new(e));
                }
            }
        }
    }

    fn fail(&self, pending: Pending, cause: Arc<StoreError>) {
        let _ = pending.done.send(Err(StoreError::Failed {
            path: self.path.clone(),
            cause,
        }));
    }

    /// One write and one fdatasync of the block in `buf`.
    fn append(&mut self) -> Result<(), StoreError> {
        self.file
            .write_all(&self.buf)
            .map_err(|e| StoreError::io("appending to lease journal", &self.path, e))?;
        let t = Instant::now();
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("syncing lease journal", &self.path, e))?;
        self.counters.fsync(t.elapsed().as_nanos() as u64);
        let n = self.buf.len() as u64;
        self.journal_bytes += n;
        self.counters.bytes_appended.fetch_add(n, Relaxed);
        Ok(())
    }

    fn publish_sizes(&self) {
        let c = &self.counters;
        c.journal_bytes.store(self.journal_bytes, Relaxed);
        c.live_leases.store(self.live.lease_count() as u64, Relaxed);
        c.live_bytes.store(self.live.encoded_bytes(), Relaxed);
    }

    /// Compacts when the journal is past the minimum size and `compact_ratio` times its live set.
    fn maybe_compact(&mut self) {
        let live = FILE_HEADER_BYTES as u64 + self.live.encoded_bytes();
        if self.journal_bytes < self.opts.compact_min_bytes
            || self.journal_bytes < self.compact_not_before
            || self.journal_bytes < live.saturating_mul(self.opts.compact_ratio)
        {
            return;
        }
        let before = self.journal_bytes;
        let t = Instant::now();
        let pruned = self.live.prune(unix_now(), self.opts.retain_expired_secs);
        let result = self.compact();
        self.counters
            .compaction_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        match result {
            Ok(()) => {
                self.counters.compactions.fetch_add(1, Relaxed);
                info!(
                    path = %self.path.display(),
                    before_bytes = before,
                    after_bytes = self.journal_bytes,
                    pruned,
                    ms = t.elapsed().as_millis() as u64,
                    "compacted lease journal"
                );
            }
            Err(e) if self.failed.is_some() => {
                tracing::error!(error = %e, "lease journal compaction failed after its rename");
            }
            Err(e) => {
                self.counters.compaction_failures.fetch_add(1, Relaxed);
                // Try again once the journal has grown by another minimum.
                self.compact_not_before = self.journal_bytes + self.opts.compact_min_bytes;
                let _ = fs::remove_file(&self.compact_path);
                warn!(error = %e, "lease journal compaction failed; keeping the old journal");
            }
        }
        self.publish_sizes();
    }

    /// Writes the live set to the temporary file, syncs it, renames it over the journal and
    /// syncs the directory; then appends go to the new file.
    fn compact(&mut self) -> Result<(), StoreError> {
        let tmp = &self.compact_path;
        let io = |action| move |e| StoreError::io(action, tmp, e);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(io("creating lease journal compaction file"))?;
        let mut buf = Vec::with_capacity(COMPACT_WRITE_BYTES + MAX_BLOCK_BODY_BYTES);
        buf.extend_from_slice(&journal::file_header());
        let mut written = 0u64;
        let mut start = journal::begin_block(&mut buf);
        let mut count = 0u32;
        for record in self.live.records() {
            let body = buf.len() - start - BLOCK_HEADER_BYTES;
            if body + record.encoded_len() > MAX_BLOCK_BODY_BYTES {
                journal::finish_block(&mut buf, start, count);
                if buf.len() >= COMPACT_WRITE_BYTES {
                    f.write_all(&buf)
                        .map_err(io("writing lease journal compaction file"))?;
                    written += buf.len() as u64;
                    buf.clear();
                }
                start = journal::begin_block(&mut buf);
                count = 0;
            }
            record.encode(&mut buf);
            count += 1;
        }
        if count == 0 {
            buf.truncate(start);
        } else {
            journal::finish_block(&mut buf, start, count);
        }
        f.write_all(&buf)
            .map_err(io("writing lease journal compaction file"))?;
        written += buf.len() as u64;
        self.hook(CompactionStep::Written);

        let t = Instant::now();
        f.sync_all()
            .map_err(io("syncing lease journal compaction file"))?;
        self.counters.fsync(t.elapsed().as_nanos() as u64);
        self.hook(CompactionStep::Synced);

        fs::rename(tmp, &self.path)
            .map_err(|e| StoreError::io("renaming the compaction file over", &self.path, e))?;
        // From here the old journal is gone: appends must go to the new file, and they may
        // only be acknowledged once the rename is durable.
        self.file = f;
        self.journal_bytes = written;
        self.hook(CompactionStep::Renamed);
        let t = Instant::now();
        if let Err(e) = sync_dir(&self.dir) {
            let e = StoreError::io("syncing the directory of lease journal", &self.dir, e);
            self.failed = Some(Arc::new(e.clone()));
            return Err(e);
        }
        self.counters.fsync(t.elapsed().as_nanos() as u64);
        Ok(())
    }

    #[cfg(test)]
    fn hook(&self, step: CompactionStep) {
        if let Some(hook) = self.opts.compaction_hook {
            hook(step);
        }
    }

    #[cfg(not(test))]
    fn hook(&self, _step: CompactionStep) {}
}

/// Creates an empty journal at `path` through `tmp`, so that a crash never leaves a journal
/// without its header.
fn create_journal(path: &Path, tmp: &Path, dir: &Path) -> Result<(), StoreError> {
    let mut f = File::create(tmp).map_err(|e| StoreError::io("creating", tmp, e))?;
    f.write_all(&journal::file_header())
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::io("writing", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| StoreError::io("renaming the new journal to", path, e))?;
    sync_dir(dir).map_err(|e| StoreError::io("syncing the directory of lease journal", dir, e))
}
