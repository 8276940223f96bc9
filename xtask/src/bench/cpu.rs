//! CPU time and processes, as the benchmarks read them: of a running process and its threads
//! (`/proc/PID/stat`), of reaped children (`getrusage`), of a server and everything it forks
//! (a cgroup: [`CpuMeter`]), of the kernel's softirq threads, and of the whole machine
//! (`/proc/stat`, [`MachineTime`]); and the wait for a quiet machine before a measurement
//! ([`wait_quiet`]).
//!
//! Why a cgroup: tftpd-hpa forks a child per transfer and ignores SIGCHLD, so its children are
//! reaped by the kernel and their time never reaches the parent's `cutime`/`cstime` in
//! `/proc/PID/stat`. A cgroup counts every process in it, forked children included, while
//! they run and after they exit.

use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// Prefix of the cgroups made for the servers.
const CGROUP_PREFIX: &str = "pxe-bench-";
/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(50);

/// User plus system time of process `pid` and all its threads so far (utime + stime of
/// `/proc/PID/stat`, clock-tick resolution: 10 ms on Linux).
pub(super) fn process_time(pid: u32) -> anyhow::Result<Duration> {
    stat_ticks(pid, &[14, 15]).map(ticks_to_duration)
}

/// The sum of fields `fields` (1-based, as in proc(5)) of `/proc/PID/stat`.
fn stat_ticks(pid: u32, fields: &[usize]) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let parsed = stat_fields(&stat).with_context(|| format!("parsing {path}: {stat}"))?;
    fields.iter().map(|&n| stat_field(&parsed, n)).sum()
}

/// The fields of `/proc/PID/stat` from field 3 (state) on.
fn stat_fields(stat: &str) -> anyhow::Result<Vec<&str>> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself:
    // the fields after the last ')' start with field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("no ')' after the command name");
    };
    Ok(rest.split_whitespace().collect())
}

/// Field `n` (1-based, as in proc(5)) of the fields [`stat_fields`] returns.
fn stat_field(fields: &[&str], n: usize) -> anyhow::Result<u64> {
    fields
        .get(n - 3)
        .with_context(|| format!("no field {n}"))?
        .parse::<u64>()
        .with_context(|| format!("field {n} is not a number"))
}

/// The parent process id of `pid` (field 4 of `/proc/PID/stat`), if it still exists.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat).ok()?;
    u32::try_from(stat_field(&fields, 4).ok()?).ok()
}

/// The process ids in `/proc`.
fn pids() -> anyhow::Result<impl Iterator<Item = u32>> {
    Ok(fs::read_dir("/proc")
        .context("listing /proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()))
}

/// The processes whose parent is `pid` (e.g. nginx's workers).
pub(super) fn children_of(pid: u32) -> anyhow::Result<Vec<u32>> {
    let mut children: Vec<u32> = pids()?.filter(|&c| parent_of(c) == Some(pid)).collect();
    children.sort_unstable();
    Ok(children)
}

/// The thread ids of process `pid`.
pub(super) fn threads_of(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time so far of every thread on the machine, by thread id, with its process's name
/// (kernel threads: the thread's name up to its first `/`, e.g. `kworker`).
pub(super) type ThreadTimes = HashMap<u32, (String, Duration)>;

/// Reads [`ThreadTimes`]; threads that vanish while it reads are left out.
pub(super) fn thread_times() -> anyhow::Result<ThreadTimes> {
    let mut times = ThreadTimes::new();
    for pid in pids()? {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name);
        let name = name.split('/').next().unwrap_or(name).to_owned();
        for tid in threads_of(pid) {
            let path = format!("/proc/{pid}/task/{tid}/stat");
            let Some(ticks) = fs::read_to_string(path).ok().and_then(|stat| {
                let fields = stat_fields(&stat).ok()?;
                Some(stat_field(&fields, 14).ok()? + stat_field(&fields, 15).ok()?)
            }) else {
                continue;
            };
            times.insert(tid, (name.clone(), ticks_to_duration(ticks)));
        }
    }
    Ok(times)
}

/// CPU time each process name gained from `before` to `after`, largest first, leaving out
/// the threads of processes in `except` and names in `except_names`.
pub(super) fn busiest(
    before: &ThreadTimes,
    after: &ThreadTimes,
    except: &[u32],
    except_names: &[&str],
) -> Vec<(String, Duration)> {
    let mut by_name: HashMap<&str, Duration> = HashMap::new();
    for (tid, (name, time)) in after {
        if except.contains(tid) || except_names.contains(&name.as_str()) {
            continue;
        }
        let was = before.get(tid).map_or(Duration::ZERO, |(_, t)| *t);
        *by_name.entry(name).or_default() += time.saturating_sub(was);
    }
    let mut busiest: Vec<(String, Duration)> = by_name
        .into_iter()
        .filter(|(_, t)| !t.is_zero())
        .map(|(n, t)| (n.to_owned(), t))
        .collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    busiest
}

/// The kernel's softirq threads (`ksoftirqd/N`): softirq work (the network receive path) that
/// could not run on the way out of a system call or interrupt runs there, charged to no process
/// of the benchmark.
pub(super) fn softirq_threads() -> anyhow::Result<Vec<u32>> {
    Ok(pids()?
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("ksoftirqd/"))
        })
        .collect())
}

/// CPU time of the softirq threads so far (see [`softirq_threads`]); threads that vanish
/// while it reads count nothing.
pub(super) fn softirq_time() -> anyhow::Result<Duration> {
    Ok(softirq_threads()?
        .into_iter()
        .filter_map(|pid| process_time(pid).ok())
        .sum())
}

/// Peak resident set size of `pid` so far (`VmHWM` of `/proc/PID/status`), in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kib(&status, "VmHWM").with_context(|| format!("no VmHWM in {path}"))
}

/// The value of a `Name:   123 kB` line of `/proc/PID/status` or `/proc/meminfo`.
pub(super) fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system time of every child this process has waited for so far (getrusage of
/// RUSAGE_CHILDREN, microsecond resolution): the difference around a command that is waited for
/// while no other child ends is that command's CPU time.
pub(super) fn reaped_children_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| {
        micros(u.user_time()) + micros(u.system_time())
    })
}

/// Time of all the machine's CPUs so far, summed over CPUs, from the `cpu` line of
/// `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct MachineTime {
    /// user + nice + system + irq + softirq (guest time is already in user).
    pub busy: Duration,
    /// Time the hypervisor gave to other guests.
    pub steal: Duration,
    /// In the kernel: system, irq and softirq. This kernel samples by tick and has no
    /// IRQ_TIME_ACCOUNTING, so softirq work is charged to whichever task it interrupted; these
    /// columns see it whoever it was charged to.
    pub kernel: Duration,
    /// Everything: busy + steal + idle + iowait.
    pub total: Duration,
}

impl MachineTime {
    /// The machine's CPU times now.
    pub(super) fn now() -> anyhow::Result<MachineTime> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        MachineTime::parse(&stat).with_context(|| format!("parsing /proc/stat: {stat}"))
    }

    fn parse(stat: &str) -> anyhow::Result<MachineTime> {
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no aggregate `cpu` line")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>().context("a field is not a number"))
            .collect::<anyhow::Result<_>>()?;
        if v.len() < 8 {
            bail!("fewer than 8 fields on the `cpu` line");
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice]
        let busy = v[0] + v[1] + v[2] + v[5] + v[6];
        Ok(MachineTime {
            busy: ticks_to_duration(busy),
            steal: ticks_to_duration(v[7]),
            kernel: ticks_to_duration(v[2] + v[5] + v[6]),
            total: ticks_to_duration(busy + v[7] + v[3] + v[4]),
        })
    }

    /// Busy or stolen: the time the CPUs were not free for this machine's work.
    pub(super) fn not_idle(&self) -> Duration {
        self.busy + self.steal
    }

    /// The time from `earlier` to `self`.
    pub(super) fn since(self, earlier: MachineTime) -> MachineTime {
        MachineTime {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
            kernel: self.kernel.saturating_sub(earlier.kernel),
            total: self.total.saturating_sub(earlier.total),
        }
    }
}

/// Number of CPUs online.
pub(super) fn online_cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_sec = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs(ticks / per_sec)
        + Duration::from_nanos((ticks % per_sec) * 1_000_000_000 / per_sec)
}

/// How a server's CPU time is read: a cgroup made for it when one can be, so that everything
/// it forks counts.
#[derive(Debug)]
pub(super) enum CpuMeter {
    /// A cgroup v2 made for it: `cpu.stat` `usage_usec` (every process in it, ever).
    Cgroup2(PathBuf),
    /// A cgroup v1 `cpuacct` group: `cpuacct.usage` (ns).
    Cgroup1(PathBuf),
    /// No cgroup could be made: utime + stime + cutime + cstime of the process, which misses
    /// children the kernel reaps itself (tftpd-hpa's).
    Proc(u32),
}

impl CpuMeter {
    /// Moves `pid` (just started, before it serves anything) into a new cgroup named after
    /// `name`.
    pub(super) fn attach(pid: u32, name: &str) -> CpuMeter {
        let tag: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let group = format!("{CGROUP_PREFIX}{}-{tag}", std::process::id());
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mount = |want: &dyn Fn(&str, &str) -> bool| {
            mounts.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && want(f[2], f[3])).then(|| PathBuf::from(f[1]))
            })
        };
        let tries = [
            (
                mount(&|fstype, _| fstype == "cgroup2"),
                CpuMeter::Cgroup2 as fn(PathBuf) -> CpuMeter,
            ),
            (
                mount(&|fstype, opts| {
                    fstype == "cgroup" && opts.split(',').any(|o| o == "cpuacct")
                }),
                CpuMeter::Cgroup1,
            ),
        ];
        for (mount, make) in tries {
            let Some(mount) = mount else { continue };
            let dir = mount.join(&group);
            let moved = fs::create_dir(&dir)
                .and_then(|()| fs::write(dir.join("cgroup.procs"), pid.to_string()));
            let meter = make(dir.clone());
            if moved.is_ok() && meter.usage().is_ok() {
                return meter;
            }
            let _ = fs::remove_dir(&dir);
        }
        CpuMeter::Proc(pid)
    }

    /// How the time is read, for the log.
    pub(super) fn method(&self) -> String {
        match self {
            CpuMeter::Cgroup2(dir) => format!("by cgroup v2 {}", dir.display()),
            CpuMeter::Cgroup1(dir) => format!("by cgroup v1 {}", dir.display()),
            CpuMeter::Proc(pid) => format!("from /proc/{pid}/stat (no cgroup could be made)"),
        }
    }

    /// CPU time so far.
    pub(super) fn usage(&self) -> anyhow::Result<Duration> {
        match self {
            CpuMeter::Cgroup2(dir) => {
                let path = dir.join("cpu.stat");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let usec = text
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                    .with_context(|| format!("no usage_usec in {}", path.display()))?;
                Ok(Duration::from_micros(usec))
            }
            CpuMeter::Cgroup1(dir) => {
                let path = dir.join("cpuacct.usage");
                let ns = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .parse()
                    .with_context(|| format!("parsing {}", path.display()))?;
                Ok(Duration::from_nanos(ns))
            }
            // utime, stime, cutime, cstime.
            CpuMeter::Proc(pid) => stat_ticks(*pid, &[14, 15, 16, 17]).map(ticks_to_duration),
        }
    }

    /// Processes in the group (1 for a server with no child at work).
    fn procs(&self) -> Vec<i32> {
        let dir = match self {
            CpuMeter::Cgroup2(dir) | CpuMeter::Cgroup1(dir) => dir,
            CpuMeter::Proc(_) => return Vec::new(),
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Waits (at most `timeout`) until no forked child is still at work.
    pub(super) fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.procs().len() > 1 && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }

    /// Removes empty cgroups a killed earlier run left.
    pub(super) fn remove_stale() {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || !f[2].starts_with("cgroup") {
                continue;
            }
            let Ok(entries) = fs::read_dir(f[1]) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(CGROUP_PREFIX)
                {
                    // Fails (harmlessly) if processes are still in it.
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        let dir = match self {
            CpuMeter::Cgroup2(dir) | CpuMeter::Cgroup1(dir) => dir.clone(),
            CpuMeter::Proc(_) => return,
        };
        // Whatever is left in the group (a forking server's children) goes with it.
        for _ in 0..40 {
            let procs = self.procs();
            if procs.is_empty() && fs::remove_dir(&dir).is_ok() {
                return;
            }
            for pid in procs {
                kill(pid);
            }
            thread::sleep(POLL);
        }
        eprintln!("warning: could not remove cgroup {}", dir.display());
    }
}

/// SIGKILLs process `pid` (one of the benchmark's own), if it still exists.
pub(super) fn kill(pid: i32) {
    use rustix::process::{kill_process, Pid, Signal};
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// When the machine counts as quiet enough to measure on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quiet {
    /// Other work must use less than this many cores.
    pub below_cores: f64,
    /// Over this long a look.
    pub sample: Duration,
    /// Looked for at most this long; then the measurement runs anyway.
    pub wait: Duration,
}

/// Waits (at most `quiet.wait`) until the rest of the machine (everything but `server`, when
/// given: an idle server under test) uses less than `quiet.below_cores`: the 2 cores are
/// shared, and a build running beside a benchmark halves what it measures. Returns whether
/// it got quiet; says so when it gives up.
pub(super) fn wait_quiet(quiet: Quiet, server: Option<&CpuMeter>) -> anyhow::Result<bool> {
    let start = Instant::now();
    let server_time = || server.map_or(Ok(Duration::ZERO), CpuMeter::usage);
    let mut announced = false;
    loop {
        let (machine, own) = (MachineTime::now()?, server_time()?);
        thread::sleep(quiet.sample);
        let machine = MachineTime::now()?.since(machine);
        let own = server_time()?.saturating_sub(own);
        let others = machine.not_idle().saturating_sub(own).as_secs_f64();
        // Over all the CPUs' time, in cores: a loaded machine oversleeps.
        let total = machine.total.as_secs_f64();
        let cores = if total > 0.0 {
            others / total * online_cpus() as f64
        } else {
            0.0
        };
        if cores < quiet.below_cores {
            return Ok(true);
        }
        if start.elapsed() >= quiet.wait {
            println!(
                "   (other work still uses {cores:.2} cores after {} s of waiting for a quiet \
                 machine; measuring anyway)",
                quiet.wait.as_secs()
            );
            return Ok(false);
        }
        if !announced {
            println!(
                "   (waiting up to {} s for other work to quiet down: it uses {cores:.2} cores)",
                quiet.wait.as_secs()
            );
            announced = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 2 0";
        let fields = stat_fields(stat).expect("parses");
        assert_eq!(stat_field(&fields, 4).expect("field 4"), 1);
        assert_eq!(stat_field(&fields, 14).expect("utime"), 250);
        assert_eq!(stat_field(&fields, 17).expect("cstime"), 3);
        assert!(stat_fields("4242 (x S 1").is_err());
    }

    #[test]
    fn machine_time_columns() {
        let stat = "cpu  100 1 50 900 10 2 20 7 0 0\ncpu0 50 0 25 450 5 1 10 3 0 0\n";
        let t = MachineTime::parse(stat).expect("parses");
        assert_eq!(t.busy, ticks_to_duration(173));
        assert_eq!(t.steal, ticks_to_duration(7));
        assert_eq!(t.not_idle(), ticks_to_duration(180));
        assert_eq!(t.kernel, ticks_to_duration(72));
        assert_eq!(t.total, ticks_to_duration(1090));
        assert!(MachineTime::parse("intr 1 2 3\n").is_err());
    }

    #[test]
    fn busiest_sums_by_name_and_skips_exceptions() {
        let ms = Duration::from_millis;
        let before: ThreadTimes = [(1, ("rustc".into(), ms(100))), (2, ("rustc".into(), ms(0)))]
            .into_iter()
            .collect();
        let after: ThreadTimes = [
            (1, ("rustc".into(), ms(300))),
            (2, ("rustc".into(), ms(50))),
            (3, ("qemu".into(), ms(400))),
            (4, ("nginx".into(), ms(900))),
            (5, ("ksoftirqd".into(), ms(70))),
            (6, ("idle".into(), ms(0))),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            busiest(&before, &after, &[4], &["ksoftirqd"]),
            vec![("qemu".to_owned(), ms(400)), ("rustc".to_owned(), ms(250))]
        );
    }

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(5120));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_measurable() {
        let me = std::process::id();
        assert!(peak_rss_kib(me).expect("our VmHWM") > 0);
        process_time(me).expect("our /proc/PID/stat");
        assert!(MachineTime::now().expect("/proc/stat").busy > Duration::ZERO);
        assert!(!softirq_threads().expect("listing /proc").is_empty());
        let times = thread_times().expect("listing /proc");
        // Other test threads come and go between the two reads; the main thread stays.
        assert!(threads_of(me).contains(&me));
        assert!(times.contains_key(&me));
        assert!(times.values().any(|(name, _)| name == "ksoftirqd"));
    }
}
