//! Counters of the lease store, kept by the writer thread and read for metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (inclusive) of the batch size histogram's buckets, in records per group
/// commit; the last bucket takes everything larger.
pub const BATCH_SIZE_BUCKET_BOUNDS: [u64; 12] =
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, u64::MAX];

/// The writer's counters, shared with every handle.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub records_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub live_leases: AtomicU64,
    pub live_bytes: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_failures: AtomicU64,
    pub compaction_nanos: AtomicU64,
    pub queue_full: AtomicU64,
    pub batch_buckets: [AtomicU64; BATCH_SIZE_BUCKET_BOUNDS.len()],
}

impl Counters {
    /// Counts one group commit of `records` records.
    pub(super) fn batch(&self, records: u64) {
        self.records_written.fetch_add(records, Relaxed);
        self.batches_written.fetch_add(1, Relaxed);
        let bucket = BATCH_SIZE_BUCKET_BOUNDS
            .iter()
            .position(|&bound| records <= bound)
            .unwrap_or(BATCH_SIZE_BUCKET_BOUNDS.len() - 1);
        self.batch_buckets[bucket].fetch_add(1, Relaxed);
    }

    /// Counts one fsync or fdatasync that took `nanos`.
    pub(super) fn fsync(&self, nanos: u64) {
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_nanos.fetch_add(nanos, Relaxed);
    }

    pub(super) fn snapshot(&self, queue_len: u64) -> StoreStats {
        StoreStats {
            records_written: self.records_written.load(Relaxed),
            batches_written: self.batches_written.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            fsync_seconds: self.fsync_nanos.load(Relaxed) as f64 / 1e9,
            bytes_appended: self.bytes_appended.load(Relaxed),
            journal_bytes: self.journal_bytes.load(Relaxed),
            live_leases: self.live_leases.load(Relaxed),
            live_bytes: self.live_bytes.load(Relaxed),
            compactions: self.compactions.load(Relaxed),
            compaction_failures: self.compaction_failures.load(Relaxed),
            compaction_seconds: self.compaction_nanos.load(Relaxed) as f64 / 1e9,
            queue_full: self.queue_full.load(Relaxed),
            queue_len,
            batch_size_buckets: std::array::from_fn(|i| self.batch_buckets[i].load(Relaxed)),
        }
    }
}

/// A snapshot of the store's counters. Totals count since the store was opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreStats {
    /// Records made durable.
    pub records_written: u64,
    /// Group commits: blocks appended, each with one write and one fdatasync.
    pub batches_written: u64,
    /// fsync and fdatasync calls, those of compaction included.
    pub fsyncs: u64,
    /// Time spent in those calls.
    pub fsync_seconds: f64,
    /// Bytes appended by group commits.
    pub bytes_appended: u64,
    /// Size of the journal file now.
    pub journal_bytes: u64,
    /// Leases in the live set now.
    pub live_leases: u64,
    /// Bytes of records that the live set compacts to now.
    pub live_bytes: u64,
    /// Compactions that replaced the journal.
    pub compactions: u64,
    /// Compactions that failed (the old journal was kept).
    pub compaction_failures: u64,
    /// Time spent compacting (commits wait meanwhile), failed attempts included.
    pub compaction_seconds: f64,
    /// Commits refused because the queue stayed full.
    pub queue_full: u64,
    /// Records waiting in the queue now.
    pub queue_len: u64,
    /// Group commits by records per batch, one count per bucket of
    /// [`BATCH_SIZE_BUCKET_BOUNDS`] (not cumulative).
    pub batch_size_buckets: [u64; BATCH_SIZE_BUCKET_BOUNDS.len()],
}

impl StoreStats {
    /// Mean records per group commit (0 before the first).
    pub fn mean_batch_size(&self) -> f64 {
        if self.batches_written == 0 {
            0.0
        } else {
            self.records_written as f64 / self.batches_written as f64
        }
    }
}
