//! Crash tests: a child process (this test binary again, running [`crash_child`]) commits as
//! fast as it can from many tasks and prints `ACK task seq` only once a commit resolved; the
//! parent kills it with SIGKILL, reopens the journal, and checks that every acknowledged record
//! is there, against a model of each task's operations.
//!
//! Each task owns its MACs and addresses and draws its operations from a generator seeded by
//! its number, so the parent can replay them: after `ACK t n`, task `t`'s part of the store must
//! be the model after operations `0..=n`, or after `0..=n+1` (the one in flight when killed may
//! or may not have become durable).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    tests::compacting_options, CompactionStep, Lease, LeaseRecord, LeaseStore, StoreOptions,
};

/// Set in the child: the directory of its journal.
const ENV_DIR: &str = "PXE_LEASES_CRASH_DIR";
/// Set in the child: use small compaction thresholds.
const ENV_COMPACT: &str = "PXE_LEASES_CRASH_COMPACT";
/// Set in the child: stop (sleep until killed) at this compaction step of the second compaction.
const ENV_STOP_AT: &str = "PXE_LEASES_CRASH_STOP_AT";
/// Committing tasks in the child.
const TASKS: u8 = 48;
/// MACs and addresses each task owns.
const MACS_PER_TASK: u8 = 6;
const IPS_PER_TASK: u8 = 9;
/// The child gives up by itself after this long, should the parent be gone.
const CHILD_MAX_SECS: u64 = 30;
/// How long the parent waits for the child to reach a point.
const PARENT_WAIT_SECS: u64 = 20;
/// Far enough ahead that no lease or decline is ever pruned.
const FAR_UNIX_SECS: u64 = 4_000_000_000;

/// What one task's MACs and addresses are, as far as the store is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    leases: BTreeMap<[u8; 6], Ipv4Addr>,
    declined: BTreeSet<Ipv4Addr>,
}

impl Model {
    /// The store's semantics, written out independently of `live.rs`.
    fn apply(&mut self, record: &LeaseRecord) {
        match record {
            LeaseRecord::Bind(l) => {
                self.leases
                    .retain(|&mac, &mut ip| mac != l.mac && ip != l.ip);
                self.leases.insert(l.mac, l.ip);
                self.declined.remove(&l.ip);
            }
            LeaseRecord::Release { mac, ip } => {
                if self.leases.get(mac) == Some(ip) {
                    self.leases.remove(mac);
                }
            }
            LeaseRecord::Declined { ip, .. } => {
                self.leases.retain(|_, held| held != ip);
                self.declined.insert(*ip);
            }
        }
    }
}

/// One task's deterministic stream of operations.
struct TaskGen {
    task: u8,
    rng: u64,
    seq: u32,
    model: Model,
}

impl TaskGen {
    fn new(task: u8) -> TaskGen {
        TaskGen {
            task,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (u64::from(task) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
            seq: 0,
            model: Model::default(),
        }
    }

    fn next_u32(&mut self) -> u32 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    fn mac(&self, i: u8) -> [u8; 6] {
        [0x02, 0x00, 0x00, 0x00, self.task, i]
    }

    fn ip(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.task, i)
    }

    fn next(&mut self) -> LeaseRecord {
        let roll = self.next_u32() % 100;
        let mac_index = (self.next_u32() % u32::from(MACS_PER_TASK)) as u8;
        let ip_index = (self.next_u32() % u32::from(IPS_PER_TASK)) as u8;
        let (mac, ip) = (self.mac(mac_index), self.ip(ip_index));
        let record = if roll < 65 {
            LeaseRecord::Bind(Lease {
                mac,
                ip,
                expires_at_unix_secs: FAR_UNIX_SECS + u64::from(self.seq),
                client_id: roll.is_multiple_of(2).then(|| mac.to_vec()),
                hostname: roll
                    .is_multiple_of(3)
                    .then(|| format!("t{}-s{}", self.task, self.seq)),
            })
        } else if roll < 92 {
            // Mostly a release of the MAC's own lease, sometimes a stale one.
            let ip = self.model.leases.get(&mac).copied().unwrap_or(ip);
            LeaseRecord::Release { mac, ip }
        } else {
            LeaseRecord::Declined {
                ip,
                until_unix_secs: FAR_UNIX_SECS,
            }
        };
        self.model.apply(&record);
        self.seq += 1;
        record
    }
}

static COMPACTIONS_SEEN: AtomicU32 = AtomicU32::new(0);

/// Prints each compaction step; at the step named by `ENV_STOP_AT` of the second compaction,
/// sleeps until killed.
fn child_hook(step: CompactionStep) {
    let name = format!("{step:?}");
    if step == CompactionStep::Written {
        COMPACTIONS_SEEN.fetch_add(1, Ordering::SeqCst);
    }
    let stop = std::env::var(ENV_STOP_AT).is_ok_and(|s| s == name)
        && COMPACTIONS_SEEN.load(Ordering::SeqCst) >= 2;
    let _ = writeln!(std::io::stdout().lock(), "AT {name}");
    if stop {
        std::thread::sleep(Duration::from_secs(CHILD_MAX_SECS));
        std::process::exit(3);
    }
}

/// The child's side: does nothing unless started by a crash test.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let path = Path::new(&dir).join("leases.journal");
    let mut opts = if std::env::var_os(ENV_COMPACT).is_some() {
        compacting_options()
    } else {
        StoreOptions::default()
    };
    opts.compaction_hook = Some(child_hook);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (store, _) = LeaseStore::open(&path, opts).await.expect("opening");
        let deadline = Instant::now() + Duration::from_secs(CHILD_MAX_SECS);
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut gen = TaskGen::new(task);
                while Instant::now() < deadline {
                    let seq = gen.seq;
                    store.commit(gen.next()).await.expect("commit");
                    // Only now is the record acknowledged.
                    let _ = writeln!(std::io::stdout().lock(), "ACK {task} {seq}");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
}

/// A seed for the kill delays, printed so that a failure can be looked into.
fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1
}

/// Where the parent kills the child.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the first acknowledgement.
    After(Duration),
    /// At this step of the second compaction.
    Step(CompactionStep),
}

/// Runs the child in a fresh directory, kills it, and checks the journal it leaves.
fn crash_and_check(kill_at: KillAt, compact: bool) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "dhcp::leases::crash_tests::crash_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_DIR, dir.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if compact {
        cmd.env(ENV_COMPACT, "1");
    }
    if let KillAt::Step(step) = kill_at {
        cmd.env(ENV_STOP_AT, format!("{step:?}"));
    }
    let mut child = cmd.spawn().expect("starting the crash child");
    // Kills the child if this test panics first.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdout = child.stdout.take().expect("child stdout");
    let mut child = KillOnDrop(child);

    // Lines go to the parent as they come; the reader ends at EOF (the child is dead).
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let mut partial = Vec::new();
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            partial.extend_from_slice(&buf[..n]);
            while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&partial[..nl]).into_owned();
                partial.drain(..=nl);
                let _ = tx.send(line.clone());
                all.push(line);
            }
        }
        // A line cut by the kill (no newline) is not an acknowledgement.
        all
    });

    let wait_for = |prefix: &str| {
        let deadline = Instant::now() + Duration::from_secs(PARENT_WAIT_SECS);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for {prefix:?} from the crash child: {e}"),
            }
        }
    };
    wait_for("ACK ");
    match kill_at {
        KillAt::After(d) => std::thread::sleep(d),
        KillAt::Step(step) => {
            // The first compaction passes every step; the child stops in the second.
            wait_for(&format!("AT {step:?}"));
            wait_for(&format!("AT {step:?}"));
        }
    }
    child.0.kill().expect("SIGKILL");
    let status = child.0.wait().expect("reaping the child");
    assert!(
        status.code().is_none(),
        "the child ended by itself: {status}"
    );
    let lines = reader.join().expect("reader thread");

    let mut acked: HashMap<u8, u32> = HashMap::new();
    let mut steps = 0;
    for line in &lines {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("ACK"), Some(t), Some(s)) => {
                let (t, s): (u8, u32) = (t.parse().expect("task"), s.parse().expect("seq"));
                let last = acked.entry(t).or_insert(s);
                assert!(*last <= s, "task {t} acknowledged {s} after {last}");
                *last = s;
            }
            (Some("AT"), Some(_), None) => steps += 1,
            _ => {}
        }
    }
    let total: u32 = acked.values().map(|s| s + 1).sum();
    if compact {
        assert!(
            steps >= 3,
            "no compaction ran before the kill ({kill_at:?})"
        );
    }

    let compact_file = dir.path().join("leases.journal.compact");
    if let KillAt::Step(step) = kill_at {
        // Killed before its rename, a compaction leaves its file; after, it is the journal.
        let left = step != CompactionStep::Renamed;
        assert_eq!(
            compact_file.exists(),
            left,
            "compaction file after a kill at {step:?}"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let path = dir.path().join("leases.journal");
    let recovered = rt.block_on(async {
        let (store, recovered) = LeaseStore::open(&path, StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("reopening after the kill ({kill_at:?}): {e}"));
        store.close().await;
        recovered
    });
    eprintln!(
        "crash at {kill_at:?}: {total} acknowledged, {} records replayed, {} leases, torn tail {} \
         bytes, {steps} compaction steps",
        recovered.records_replayed,
        recovered.leases.len(),
        recovered.torn_tail_bytes
    );
    assert!(!compact_file.exists(), "the compaction file was left");

    // No address is bound to two MACs.
    let mut ips = HashSet::new();
    for l in &recovered.leases {
        assert!(
            ips.insert(l.ip),
            "{} is bound twice after {kill_at:?}",
            l.ip
        );
    }
    // Every task's part is its model after its last acknowledged operation, or one more.
    let mut stored: HashMap<u8, Model> = HashMap::new();
    for l in &recovered.leases {
        stored
            .entry(l.mac[4])
            .or_default()
            .leases
            .insert(l.mac, l.ip);
    }
    for d in &recovered.declined {
        stored
            .entry(d.ip.octets()[2])
            .or_default()
            .declined
            .insert(d.ip);
    }
    for task in 0..TASKS {
        let mut gen = TaskGen::new(task);
        let done = acked.get(&task).map_or(0, |s| s + 1);
        for _ in 0..done {
            gen.next();
        }
        let after_acked = gen.model.clone();
        gen.next();
        let after_in_flight = gen.model.clone();
        let have = stored.remove(&task).unwrap_or_default();
        assert!(
            have == after_acked || have == after_in_flight,
            "task {task} after {kill_at:?}: {done} operations acknowledged, store has \
             {have:?}, expected {after_acked:?} or {after_in_flight:?}"
        );
    }
    assert!(stored.is_empty(), "leases of no task: {stored:?}");
}

#[test]
fn acknowledged_leases_survive_sigkill() {
    let mut rng = seed();
    eprintln!("kill delay seed {rng}");
    for run in 0..4 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(200 + rng % 600);
        // Half the runs compact all the time, so some kills land inside a compaction.
        crash_and_check(KillAt::After(delay), run % 2 == 1);
    }
}

#[test]
fn acknowledged_leases_survive_sigkill_inside_a_compaction() {
    for step in [
        CompactionStep::Written,
        CompactionStep::Synced,
        CompactionStep::Renamed,
    ] {
        crash_and_check(KillAt::Step(step), true);
    }
}
