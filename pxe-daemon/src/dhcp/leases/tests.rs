//! Unit tests of the lease store: format, recovery, semantics, group commit, compaction. The
//! crash tests (a child process killed with SIGKILL) are in `crash_tests.rs`.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    journal::{self, BLOCK_HEADER_BYTES, FILE_HEADER_BYTES},
    CompactionStep, Declined, Lease, LeaseRecord, LeaseStore, Recovered, StoreError, StoreOptions,
};

/// A lease far from expiry, with both optional fields when `n` is even.
pub(super) fn lease(n: u32, ip: Ipv4Addr) -> Lease {
    let b = n.to_be_bytes();
    Lease {
        mac: [0x52, 0x54, b[0], b[1], b[2], b[3]],
        ip,
        expires_at_unix_secs: 4_000_000_000 + u64::from(n),
        client_id: n.is_multiple_of(2).then(|| vec![1, 0x52, 0x54, b[2], b[3]]),
        hostname: n.is_multiple_of(2).then(|| format!("node-{n}")),
    }
}

fn ip(n: u32) -> Ipv4Addr {
    let b = n.to_be_bytes();
    Ipv4Addr::new(198, 18, b[2], b[3])
}

fn journal_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("leases.journal")
}

async fn open(path: &Path, opts: StoreOptions) -> (LeaseStore, Recovered) {
    LeaseStore::open(path, opts)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

async fn reopen(path: &Path) -> Recovered {
    let (store, recovered) = open(path, StoreOptions::default()).await;
    store.close().await;
    recovered
}

async fn commit(store: &LeaseStore, record: LeaseRecord) {
    store
        .commit(record.clone())
        .await
        .unwrap_or_else(|e| panic!("committing {record:?}: {e}"));
}

/// Commits `n` leases one after the other (so each is its own block).
async fn commit_leases(store: &LeaseStore, n: u32) -> Vec<Lease> {
    let mut leases = Vec::new();
    for i in 0..n {
        let l = lease(i, ip(i));
        commit(store, LeaseRecord::Bind(l.clone())).await;
        leases.push(l);
    }
    leases
}

#[test]
fn records_round_trip_through_their_encoding() {
    let records = [
        LeaseRecord::Bind(lease(0, ip(1))),
        LeaseRecord::Bind(lease(1, ip(2))),
        LeaseRecord::Bind(Lease {
            client_id: Some(vec![7; super::MAX_CLIENT_ID_BYTES]),
            hostname: Some("é".repeat(super::MAX_HOSTNAME_BYTES / 2)),
            ..lease(3, ip(3))
        }),
        LeaseRecord::Bind(Lease {
            client_id: Some(Vec::new()),
            hostname: Some(String::new()),
            ..lease(4, ip(4))
        }),
        LeaseRecord::Release {
            mac: [1, 2, 3, 4, 5, 6],
            ip: ip(9),
        },
        LeaseRecord::Declined {
            ip: ip(10),
            until_unix_secs: u64::MAX,
        },
    ];
    for record in records {
        record.validate().expect("valid record");
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        assert_eq!(bytes.len(), record.encoded_len(), "{record:?}");
        let (back, used) = LeaseRecord::decode(&bytes).expect("decodes");
        assert_eq!((back, used), (record.clone(), bytes.len()));
        for cut in 0..bytes.len() {
            assert!(
                LeaseRecord::decode(&bytes[..cut]).is_err(),
                "{record:?} cut to {cut} bytes decoded"
            );
        }
    }
}

#[tokio::test]
async fn leases_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let (store, recovered) = open(&path, StoreOptions::default()).await;
    assert_eq!(
        recovered,
        Recovered {
            journal_bytes: FILE_HEADER_BYTES as u64,
            ..Recovered::default()
        }
    );
    let leases = commit_leases(&store, 20).await;
    commit(
        &store,
        LeaseRecord::Declined {
            ip: ip(100),
            until_unix_secs: 4_000_000_000,
        },
    )
    .await;
    let stats = store.stats();
    assert_eq!(stats.records_written, 21);
    assert_eq!(stats.live_leases, 20);
    store.close().await;

    let recovered = reopen(&path).await;
    assert_eq!(recovered.leases, leases);
    assert_eq!(
        recovered.declined,
        vec![Declined {
            ip: ip(100),
            until_unix_secs: 4_000_000_000,
        }]
    );
    assert_eq!(recovered.records_replayed, 21);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(recovered.journal_bytes, fs::metadata(&path).unwrap().len());
}

#[tokio::test]
async fn releases_rebinds_and_declines_change_the_live_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let (store, _) = open(&path, StoreOptions::default()).await;
    let a = lease(1, ip(1));
    let b = lease(2, ip(2));
    let c = lease(3, ip(3));
    for l in [&a, &b, &c] {
        commit(&store, LeaseRecord::Bind(l.clone())).await;
    }
    // A released lease goes; a release naming another address is stale and ignored.
    commit(
        &store,
        LeaseRecord::Release {
            mac: a.mac,
            ip: a.ip,
        },
    )
    .await;
    commit(
        &store,
        LeaseRecord::Release {
            mac: b.mac,
            ip: ip(9),
        },
    )
    .await;
    // Binding c's address to b takes it from c and frees b's old one.
    let b2 = Lease {
        ip: c.ip,
        ..b.clone()
    };
    commit(&store, LeaseRecord::Bind(b2.clone())).await;
    // A declined address loses its lease; binding it again clears the decline.
    commit(
        &store,
        LeaseRecord::Declined {
            ip: c.ip,
            until_unix_secs: 4_000_000_000,
        },
    )
    .await;
    commit(
        &store,
        LeaseRecord::Declined {
            ip: ip(50),
            until_unix_secs: 4_000_000_000,
        },
    )
    .await;
    let d = lease(4, ip(50));
    commit(&store, LeaseRecord::Bind(d.clone())).await;
    assert_eq!(store.stats().live_leases, 1);
    store.close().await;

    let recovered = reopen(&path).await;
    assert_eq!(recovered.leases, vec![d]);
    assert_eq!(
        recovered.declined,
        vec![Declined {
            ip: c.ip,
            until_unix_secs: 4_000_000_000,
        }]
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_off() {
    // What a crash can leave after the last complete block.
    let mut half_block = Vec::new();
    let start = journal::begin_block(&mut half_block);
    for i in 0..10 {
        LeaseRecord::Bind(lease(1000 + i, ip(1000 + i))).encode(&mut half_block);
    }
    journal::finish_block(&mut half_block, start, 10);
    let mut bad_body = half_block.clone();
    let last = bad_body.len() - 1;
    bad_body[last] ^= 0xff;
    let tails: [(&str, Vec<u8>); 6] = [
        ("half a block", half_block[..half_block.len() / 2].to_vec()),
        ("a block header cut short", half_block[..7].to_vec()),
        ("a whole block with a bad body", bad_body),
        ("zeros", vec![0; 4096]),
        ("garbage", b"not a block at all, just bytes".repeat(10)),
        ("one byte", vec![0x4c]),
    ];
    for (what, tail) in tails {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_in(&dir);
        let (store, _) = open(&path, StoreOptions::default()).await;
        let leases = commit_leases(&store, 5).await;
        store.close().await;
        let good_len = fs::metadata(&path).unwrap().len();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&tail);
        fs::write(&path, &bytes).unwrap();

        let (store, recovered) = open(&path, StoreOptions::default()).await;
        assert_eq!(recovered.leases, leases, "{what}");
        assert_eq!(recovered.torn_tail_bytes, tail.len() as u64, "{what}");
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len, "{what}");
        // Appends go on after the cut.
        let more = lease(99, ip(99));
        commit(&store, LeaseRecord::Bind(more.clone())).await;
        store.close().await;
        let recovered = reopen(&path).await;
        assert_eq!(recovered.torn_tail_bytes, 0, "{what}");
        assert_eq!(recovered.leases.len(), 6, "{what}");
        assert!(recovered.leases.contains(&more), "{what}");
    }
}

/// Opens `path` expecting [`StoreError::Corrupt`] at `offset`.
async fn expect_corrupt(path: &Path, offset: u64, what: &str) {
    match LeaseStore::open(path, StoreOptions::default()).await {
        Err(e @ StoreError::Corrupt { offset: at, .. }) => {
            assert_eq!(at, offset, "{what}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
            assert!(msg.contains(&format!("offset {offset}")), "{what}: {msg}");
        }
        Err(e) => panic!("{what}: expected corruption at {offset}, got: {e}"),
        Ok(_) => panic!("{what}: a corrupt journal was opened"),
    }
}

#[tokio::test]
async fn corruption_in_the_middle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let (store, _) = open(&path, StoreOptions::default()).await;
    commit_leases(&store, 5).await;
    store.close().await;
    let good = fs::read(&path).unwrap();
    let first = FILE_HEADER_BYTES;
    let second = first + BLOCK_HEADER_BYTES + LeaseRecord::Bind(lease(0, ip(0))).encoded_len();

    let cases = [
        (
            "a flipped bit in the first block's body",
            first + BLOCK_HEADER_BYTES + 3,
            first,
        ),
        (
            "a flipped bit in the second block's header",
            second + 5,
            second,
        ),
        ("a flipped block magic", second, second),
    ];
    for (what, at, offset) in cases {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        expect_corrupt(&path, offset as u64, what).await;
        // Refused, not repaired: the file is as it was.
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}");
    }
}

#[tokio::test]
async fn files_that_are_not_journals_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    for (what, content) in [
        (
            "text",
            b"lease 198.18.0.1 { starts 4 2024/01/01 }\n".to_vec(),
        ),
        ("a short file", b"PXELE".to_vec()),
        ("a newer version", {
            let mut h = journal::file_header().to_vec();
            h[8] = 2;
            h
        }),
    ] {
        fs::write(&path, &content).unwrap();
        match LeaseStore::open(&path, StoreOptions::default()).await {
            Err(e @ StoreError::Format { .. }) => {
                assert!(
                    e.to_string().contains(&path.display().to_string()),
                    "{what}: {e}"
                )
            }
            Err(e) => panic!("{what}: expected a format error, got: {e}"),
            Ok(_) => panic!("{what}: opened"),
        }
    }
    // An empty file (made by hand) is an empty journal.
    fs::write(&path, b"").unwrap();
    assert_eq!(reopen(&path).await.leases, vec![]);
}

#[tokio::test]
async fn a_second_open_of_the_same_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let (store, _) = open(&path, StoreOptions::default()).await;
    match LeaseStore::open(&path, StoreOptions::default()).await {
        Err(StoreError::Locked { .. }) => {}
        Err(e) => panic!("expected Locked, got: {e}"),
        Ok(_) => panic!("opened twice"),
    }
    store.close().await;
    reopen(&path).await;
}

#[tokio::test]
async fn records_out_of_bounds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&journal_in(&dir), StoreOptions::default()).await;
    let long_name = Lease {
        hostname: Some("h".repeat(super::MAX_HOSTNAME_BYTES + 1)),
        ..lease(1, ip(1))
    };
    let long_id = Lease {
        client_id: Some(vec![0; super::MAX_CLIENT_ID_BYTES + 1]),
        ..lease(1, ip(1))
    };
    for l in [long_name, long_id] {
        match store.commit(LeaseRecord::Bind(l)).await {
            Err(StoreError::InvalidRecord(_)) => {}
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }
    assert_eq!(store.stats().records_written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_fsyncs() {
    const TASKS: u32 = 64;
    const PER_TASK: u32 = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let (store, _) = open(&path, StoreOptions::default()).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let n = t * PER_TASK + i;
                commit(&store, LeaseRecord::Bind(lease(n, ip(n)))).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("committer task");
    }
    let stats = store.stats();
    let records = u64::from(TASKS * PER_TASK);
    assert_eq!(stats.records_written, records);
    assert_eq!(stats.live_leases, records);
    assert_eq!(stats.fsyncs, stats.batches_written, "no compaction ran");
    assert_eq!(
        stats.batch_size_buckets.iter().sum::<u64>(),
        stats.batches_written
    );
    assert!(
        stats.batches_written * 4 <= records,
        "{} records took {} fsyncs: group commit does not group",
        records,
        stats.fsyncs
    );
    store.close().await;
    assert_eq!(reopen(&path).await.leases.len() as u64, records);
}

/// Small thresholds, so that a few hundred records compact.
pub(super) fn compacting_options() -> StoreOptions {
    StoreOptions {
        compact_min_bytes: 4096,
        compact_ratio: 2,
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn compaction_keeps_the_live_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let (store, _) = open(
        &path,
        StoreOptions {
            retain_expired_secs: 0,
            ..compacting_options()
        },
    )
    .await;
    // Long expired: dropped at compaction.
    let stale = Lease {
        expires_at_unix_secs: 1,
        ..lease(500, ip(500))
    };
    commit(&store, LeaseRecord::Bind(stale)).await;
    commit(
        &store,
        LeaseRecord::Declined {
            ip: ip(501),
            until_unix_secs: 1,
        },
    )
    .await;
    commit(
        &store,
        LeaseRecord::Declined {
            ip: ip(502),
            until_unix_secs: 4_000_000_000,
        },
    )
    .await;
    // 20 clients renewing over and over, moving between 30 addresses, some releasing.
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..100u32 {
        for c in 0..20u32 {
            let l = lease(c, ip((c + round) % 30));
            if (c + round) % 7 == 0 {
                commit(
                    &store,
                    LeaseRecord::Release {
                        mac: l.mac,
                        ip: l.ip,
                    },
                )
                .await;
                expected.retain(|_, held: &mut Lease| held.mac != l.mac || held.ip != l.ip);
            } else {
                commit(&store, LeaseRecord::Bind(l.clone())).await;
                expected.retain(|_, held: &mut Lease| held.mac != l.mac && held.ip != l.ip);
                expected.insert(l.mac, l);
            }
        }
    }
    let stats = store.close().await;
    assert!(stats.compactions >= 3, "{stats:?}");
    assert!(stats.journal_bytes < 3 * 4096, "{stats:?}");
    assert_eq!(stats.journal_bytes, fs::metadata(&path).unwrap().len());
    assert!(!dir.path().join("leases.journal.compact").exists());

    let recovered = reopen(&path).await;
    assert_eq!(recovered.leases, expected.into_values().collect::<Vec<_>>());
    assert_eq!(
        recovered.declined,
        vec![Declined {
            ip: ip(502),
            until_unix_secs: 4_000_000_000,
        }]
    );
}

/// While set, the writer waits inside a compaction (for the back-pressure test).
static HOLD_COMPACTION: AtomicBool = AtomicBool::new(false);

fn held_compaction(step: CompactionStep) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while step == CompactionStep::Synced
        && HOLD_COMPACTION.load(Ordering::SeqCst)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_commits_wait_then_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(
        &journal_in(&dir),
        StoreOptions {
            queue_capacity: 2,
            enqueue_timeout: Duration::from_millis(50),
            // One lease written three times (16 + 3 * 42 bytes) is the one compaction.
            compact_min_bytes: 130,
            compact_ratio: 2,
            compaction_hook: Some(held_compaction),
            ..StoreOptions::default()
        },
    )
    .await;
    HOLD_COMPACTION.store(true, Ordering::SeqCst);
    let l = lease(1, ip(1));
    for _ in 0..3 {
        commit(&store, LeaseRecord::Bind(l.clone())).await;
    }
    // The writer is now inside the compaction: two commits fill the queue...
    let mut waiting = Vec::new();
    for i in 0..2 {
        let store = store.clone();
        let record = LeaseRecord::Bind(lease(10 + i, ip(10 + i)));
        waiting.push(tokio::spawn(async move { store.commit(record).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().queue_len < 2 {
        assert!(Instant::now() < deadline, "the queue did not fill");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // ... and the next one waits for the enqueue timeout, then fails.
    let t = Instant::now();
    match store.commit(LeaseRecord::Bind(lease(20, ip(20)))).await {
        Err(e @ StoreError::QueueFull { .. }) => {
            assert!(e.to_string().contains("overloaded"), "{e}");
        }
        other => panic!("expected QueueFull while compacting, got {other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(50), "it did not wait");
    // The queued ones go through once the compaction is done.
    HOLD_COMPACTION.store(false, Ordering::SeqCst);
    for w in waiting {
        w.await.expect("task").expect("queued commit");
    }
    let stats = store.close().await;
    assert_eq!(stats.queue_full, 1);
    assert_eq!(stats.compactions, 1);
    assert_eq!(stats.records_written, 5);
}

/// Not a pass/fail test: prints durable commits/s on this machine's disk, closed loop (N
/// committers, each waiting for its commit before the next) and open loop (commits offered at a
/// fixed rate, as a DHCP storm offers them, with their latency). Run with
/// `cargo test --release -p pxe-daemon throughput -- --ignored --nocapture`; the journal goes to
/// `PXE_LEASES_BENCH_DIR` (default: a temporary directory).
#[test]
#[ignore = "a measurement, not a test"]
fn throughput() {
    const SECONDS_PER_RUN: u64 = 3;
    /// Distinct clients of the open-loop runs: a live set of about 700 KB.
    const OPEN_LOOP_CLIENTS: u32 = 20_000;
    let base = std::env::var_os("PXE_LEASES_BENCH_DIR").map(PathBuf::from);
    let bench_dir = || {
        match &base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir(),
        }
        .expect("bench directory")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!("closed loop: N committers, each commits, waits, commits again ({SECONDS_PER_RUN} s)");
    println!("committers  commits/s  fsyncs/s  mean batch  mean fsync ms");
    for committers in [1u32, 4, 16, 64, 256, 1024] {
        let dir = bench_dir();
        let path = journal_in(&dir);
        let (stats, secs) = rt.block_on(async {
            let (store, _) = open(&path, StoreOptions::default()).await;
            let deadline = Instant::now() + Duration::from_secs(SECONDS_PER_RUN);
            let t = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..committers {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = 0u32;
                    while Instant::now() < deadline {
                        // 64 clients per committer, each renewing.
                        let n = c * 64 + i % 64;
                        commit(&store, LeaseRecord::Bind(lease(n, ip(n)))).await;
                        i += 1;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("committer");
            }
            let secs = t.elapsed().as_secs_f64();
            let stats = store.close().await;
            (stats, secs)
        });
        println!(
            "{committers:>10}  {:>9.0}  {:>8.0}  {:>10.1}  {:>13.2}",
            stats.records_written as f64 / secs,
            stats.fsyncs as f64 / secs,
            stats.mean_batch_size(),
            stats.fsync_seconds * 1e3 / stats.fsyncs.max(1) as f64,
        );
    }

    println!(
        "open loop: commits offered at a fixed rate by {OPEN_LOOP_CLIENTS} clients \
         ({SECONDS_PER_RUN} s, compaction from 4 MiB)"
    );
    println!(
        "offered/s  durable/s  fsyncs/s  mean batch  p50 ms  p99 ms  max ms  compactions (ms)  refused"
    );
    for offered in [20_000u32, 50_000, 100_000] {
        let dir = bench_dir();
        let path = journal_in(&dir);
        let (stats, secs, mut latencies_us, refused) = rt.block_on(async {
            let (store, _) = open(
                &path,
                StoreOptions {
                    compact_min_bytes: 4 << 20,
                    ..StoreOptions::default()
                },
            )
            .await;
            let latencies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let t = Instant::now();
            let mut tasks = Vec::new();
            let mut n = 0u32;
            for _ in 0..SECONDS_PER_RUN * 1000 {
                tick.tick().await;
                for _ in 0..offered / 1000 {
                    let (store, latencies, refused) =
                        (store.clone(), latencies.clone(), refused.clone());
                    let client = n % OPEN_LOOP_CLIENTS;
                    n += 1;
                    tasks.push(tokio::spawn(async move {
                        let start = Instant::now();
                        let record = LeaseRecord::Bind(lease(client, ip(client)));
                        match store.commit(record).await {
                            Ok(()) => latencies
                                .lock()
                                .expect("latencies")
                                .push(start.elapsed().as_micros() as u32),
                            Err(StoreError::QueueFull { .. }) => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("commit: {e}"),
                        }
                    }));
                }
            }
            for task in tasks {
                task.await.expect("committer");
            }
            let secs = t.elapsed().as_secs_f64();
            let stats = store.close().await;
            let latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
            (
                stats,
                secs,
                latencies,
                refused.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        latencies_us.sort_unstable();
        let pct = |p: f64| {
            let i = ((latencies_us.len() as f64 * p) as usize).min(latencies_us.len() - 1);
            f64::from(latencies_us[i]) / 1e3
        };
        println!(
            "{offered:>9}  {:>9.0}  {:>8.0}  {:>10.1}  {:>6.2}  {:>6.2}  {:>6.1}  {:>16}  {:>7}",
            stats.records_written as f64 / secs,
            stats.fsyncs as f64 / secs,
            stats.mean_batch_size(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            format!(
                "{} ({:.0})",
                stats.compactions,
                stats.compaction_seconds * 1e3 / stats.compactions.max(1) as f64
            ),
            refused,
        );
    }
}
