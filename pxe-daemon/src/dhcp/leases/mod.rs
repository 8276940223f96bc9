//! The on-disk lease store of the full-DHCP mode: an append-only journal with group commit and
//! compaction (format and durability argument: `docs/lease-store.md`).
//!
//! [`LeaseStore::open`] replays the journal and starts one writer thread. Every
//! [`LeaseStore::commit`] queues its record; the writer takes all records queued at that moment,
//! appends them as one CRC-checked block with one `write` and one `fdatasync`, and only then
//! completes their commits. When the journal outgrows its live set it is rewritten to a
//! temporary file, synced, and renamed over the journal.

mod journal;
mod live;
mod record;
mod stats;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use live::Declined;
pub use record::{InvalidRecord, Lease, LeaseRecord, MAX_CLIENT_ID_BYTES, MAX_HOSTNAME_BYTES};
pub use stats::{StoreStats, BATCH_SIZE_BUCKET_BOUNDS};
use tokio::sync::{mpsc, oneshot, watch};

/// Records that may wait for the writer before commits wait or fail.
pub const DEFAULT_QUEUE_CAPACITY: usize = 16_384;
/// Most records in one group commit.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 4_096;
/// How long a commit waits for room in a full queue before it fails.
pub const DEFAULT_ENQUEUE_TIMEOUT_MS: u64 = 1_000;
/// The journal is not compacted while smaller than this.
pub const DEFAULT_COMPACT_MIN_BYTES: u64 = 16 << 20;
/// The journal is compacted when it is this many times larger than its live set.
pub const DEFAULT_COMPACT_RATIO: u64 = 4;
/// Leases that ended longer ago than this are dropped at compaction (a day: long enough to give
/// a returning client its old address).
pub const DEFAULT_RETAIN_EXPIRED_SECS: u64 = 86_400;

/// How the store behaves; [`Default`] gives the `DEFAULT_*` constants.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Records that may wait for the writer (the bound on the store's memory).
    pub queue_capacity: usize,
    /// Most records in one group commit.
    pub max_batch_records: usize,
    /// How long a commit waits for room in a full queue before it fails with
    /// [`StoreError::QueueFull`].
    pub enqueue_timeout: Duration,
    /// The journal is not compacted while smaller than this.
    pub compact_min_bytes: u64,
    /// The journal is compacted when it is this many times larger than its live set (at least 2).
    pub compact_ratio: u64,
    /// Leases that ended longer ago than this are dropped at compaction.
    pub retain_expired_secs: u64,
    /// Test hook: called by the writer at each step of a compaction.
    #[cfg(test)]
    pub compaction_hook: Option<fn(CompactionStep)>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            enqueue_timeout: Duration::from_millis(DEFAULT_ENQUEUE_TIMEOUT_MS),
            compact_min_bytes: DEFAULT_COMPACT_MIN_BYTES,
            compact_ratio: DEFAULT_COMPACT_RATIO,
            retain_expired_secs: DEFAULT_RETAIN_EXPIRED_SECS,
            #[cfg(test)]
            compaction_hook: None,
        }
    }
}

/// The steps of a compaction (the crash tests stop the process at each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionStep {
    /// The live set is written to the temporary file, not yet synced.
    Written,
    /// The temporary file is synced, not yet renamed.
    Synced,
    /// The temporary file is renamed over the journal; the directory is not yet synced.
    Renamed,
}

/// What [`LeaseStore::open`] found in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The leases in force, sorted by MAC (expired ones included: the caller decides).
    pub leases: Vec<Lease>,
    /// The declined addresses, sorted by address.
    pub declined: Vec<Declined>,
    /// Records replayed.
    pub records_replayed: u64,
    /// Bytes of a torn tail that were cut off (0 after a clean stop).
    pub torn_tail_bytes: u64,
    /// Size of the journal after recovery.
    pub journal_bytes: u64,
}

/// Why the store could not open, or could not make a record durable.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// An IO call failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// With which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The path names no file.
    #[error("lease journal path {} has no file name", path.display())]
    InvalidPath {
        /// The path.
        path: PathBuf,
    },
    /// Another process has the store open.
    #[error("lease journal {} is in use by another process (lock on {})", path.display(), lock.display())]
    Locked {
        /// The journal.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The file is not a journal of this format.
    #[error("{} is not a lease journal: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Data that was durable cannot be read back: not something a crash leaves.
    #[error(
        "lease journal {} is corrupt at offset {offset}: {reason} (move the file aside to start \
         without leases)",
        path.display()
    )]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// Where the bad block starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The record breaks a bound of the format.
    #[error("lease record refused: {0}")]
    InvalidRecord(#[from] InvalidRecord),
    /// The options are inconsistent.
    #[error("lease store options: {0}")]
    InvalidOptions(String),
    /// The queue stayed full for the whole enqueue timeout: the disk does not keep up.
    #[error(
        "lease journal {} is overloaded: {capacity} records queued for {} ms",
        path.display(),
        waited.as_millis()
    )]
    QueueFull {
        /// The journal.
        path: PathBuf,
        /// The queue's capacity.
        capacity: usize,
        /// How long the commit waited.
        waited: Duration,
    },
    /// An earlier write or sync failed; nothing more is written until the store is reopened
    /// (after a failed fsync the page cache cannot be trusted to hold what was written).
    #[error("lease journal {} stopped after an earlier error: {cause}", path.display())]
    Failed {
        /// The journal.
        path: PathBuf,
        /// The first error.
        cause: Arc<StoreError>,
    },
    /// The writer thread is gone.
    #[error("lease journal {} is closed", path.display())]
    Closed {
        /// The journal.
        path: PathBuf,
    },
}

impl StoreError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// A record on its way to the writer, with the commit that waits for it.
#[derive(Debug)]
struct Pending {
    record: LeaseRecord,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    queue: mpsc::Sender<Pending>,
    queue_capacity: usize,
    enqueue_timeout: Duration,
    counters: Arc<stats::Counters>,
    /// Closed (its sender dropped) when the writer thread has released the journal.
    writer_gone: watch::Receiver<()>,
}

/// A handle on the lease store; clones share one journal and one writer thread, which stops
/// when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct LeaseStore {
    shared: Arc<Shared>,
}

impl LeaseStore {
    /// Opens (or creates) the journal at `path`, replays it, and starts the writer.
    ///
    /// A torn tail left by a crash is cut off with a warning; damage anywhere else is
    /// [`StoreError::Corrupt`]. A second open of the same path fails with
    /// [`StoreError::Locked`] while the first is open.
    pub async fn open(
        path: &Path,
        opts: StoreOptions,
    ) -> Result<(LeaseStore, Recovered), StoreError> {
        if opts.queue_capacity == 0 || opts.max_batch_records == 0 || opts.compact_ratio < 2 {
            return Err(StoreError::InvalidOptions(format!(
                "queue_capacity ({}) and max_batch_records ({}) must be at least 1, \
                 compact_ratio ({}) at least 2",
                opts.queue_capacity, opts.max_batch_records, opts.compact_ratio
            )));
        }
        let (queue, queue_rx) = mpsc::channel(opts.queue_capacity);
        let (gone_tx, writer_gone) = watch::channel(());
        let (ready_tx, ready_rx) = oneshot::channel();
        let counters = Arc::new(stats::Counters::default());
        let shared = Shared {
            path: path.to_owned(),
            queue,
            queue_capacity: opts.queue_capacity,
            enqueue_timeout: opts.enqueue_timeout,
            counters: counters.clone(),
            writer_gone,
        };
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || {
                match writer::Writer::open(&thread_path, opts, counters) {
                    Ok((writer, recovered)) => {
                        if ready_tx.send(Ok(recovered)).is_ok() {
                            writer.run(queue_rx);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
                // The writer (file and lock) is dropped by now: tell `close`.
                drop(gone_tx);
            })
            .map_err(|e| StoreError::io("starting the writer thread of", path, e))?;
        let recovered = ready_rx.await.map_err(|_| StoreError::Closed {
            path: path.to_owned(),
        })??;
        Ok((
            LeaseStore {
                shared: Arc::new(shared),
            },
            recovered,
        ))
    }

    /// Makes `record` durable: resolves once it is written and fdatasync'd, together with the
    /// other records queued at the same moment (group commit).
    ///
    /// Waits for room while the queue is full, for at most the enqueue timeout. If the future
    /// is dropped after the record was queued, the record is still written.
    pub async fn commit(&self, record: LeaseRecord) -> Result<(), StoreError> {
        record.validate()?;
        let s = &self.shared;
        let (done, result) = oneshot::channel();
        let pending = Pending { record, done };
        match s.queue.send_timeout(pending, s.enqueue_timeout).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                s.counters
                    .queue_full
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(StoreError::QueueFull {
                    path: s.path.clone(),
                    capacity: s.queue_capacity,
                    waited: s.enqueue_timeout,
                });
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(self.closed()),
        }
        result.await.map_err(|_| self.closed())?
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.shared.path.clone(),
        }
    }

    /// A snapshot of the store's counters.
    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        let queue_len = s.queue.max_capacity() - s.queue.capacity();
        s.counters.snapshot(queue_len as u64)
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Drops this handle and waits until the writer has released the journal, which happens
    /// once every other clone is dropped too; returns the final counters.
    pub async fn close(self) -> StoreStats {
        let mut gone = self.shared.writer_gone.clone();
        let counters = self.shared.counters.clone();
        drop(self);
        // Only ever fails: the sender is dropped when the writer ends, and nothing is sent.
        let _ = gone.changed().await;
        counters.snapshot(0)
    }
}
