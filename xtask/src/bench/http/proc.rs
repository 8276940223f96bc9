//! What the HTTP benchmark reads about processes and the machine: CPU time of a running process
//! (`/proc/PID/stat`), of reaped children (`getrusage`), of the whole machine (`/proc/stat`),
//! peak resident memory (`/proc/PID/status`), and a process's children.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// User plus system time of process `pid` and all its threads so far (utime + stime of
/// `/proc/PID/stat`, clock-tick resolution: 10 ms on Linux).
pub fn process_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let fields = stat_fields(&stat).with_context(|| format!("parsing {path}: {stat}"))?;
    // utime and stime are fields 14 and 15.
    let ticks = stat_field(&fields, 14)? + stat_field(&fields, 15)?;
    Ok(ticks_to_duration(ticks))
}

/// The parent process id of `pid` (field 4 of `/proc/PID/stat`), if it still exists.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat).ok()?;
    u32::try_from(stat_field(&fields, 4).ok()?).ok()
}

/// The fields of `/proc/PID/stat` from field 3 (state) on.
fn stat_fields(stat: &str) -> anyhow::Result<Vec<&str>> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
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

/// The processes whose parent is `pid` (e.g. nginx's workers).
pub fn children_of(pid: u32) -> anyhow::Result<Vec<u32>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(child) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(child) == Some(pid) {
            children.push(child);
        }
    }
    children.sort_unstable();
    Ok(children)
}

/// CPU time so far of every thread on the machine, by thread id, with its process's name
/// (kernel threads: the thread's name up to its first `/`, e.g. `kworker`).
pub type ThreadTimes = HashMap<u32, (String, Duration)>;

/// Reads [`ThreadTimes`]; threads that vanish while it reads are left out.
pub fn thread_times() -> anyhow::Result<ThreadTimes> {
    let mut times = ThreadTimes::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name);
        let name = name.split('/').next().unwrap_or(name).to_owned();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks {
            let Some(tid) = task
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
            else {
                continue;
            };
            let path = format!("/proc/{pid}/task/{tid}/stat");
            let Some(ticks) = std::fs::read_to_string(path).ok().and_then(|stat| {
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
pub fn busiest(
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

/// The thread ids of process `pid`.
pub fn threads_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The kernel's softirq threads (`ksoftirqd/N`): softirq work (here: the TCP and veth receive
/// path) that could not run on the way out of a system call or interrupt runs there, charged to
/// no process of the benchmark.
pub fn softirq_threads() -> anyhow::Result<Vec<u32>> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with("ksoftirqd/") {
            threads.push(pid);
        }
    }
    Ok(threads)
}

/// CPU time of the softirq threads so far (see [`softirq_threads`]).
pub fn softirq_time() -> anyhow::Result<Duration> {
    softirq_threads()?.into_iter().map(process_time).sum()
}

/// Peak resident set size of `pid` so far (`VmHWM` of `/proc/PID/status`), in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kib(&status, "VmHWM").with_context(|| format!("no VmHWM in {path}"))
}

/// The value of a `Name:   123 kB` line of `/proc/PID/status` or `/proc/meminfo`.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of the children reaped so far (one implementation for every benchmark).
pub use crate::bench::cpu::reaped_children_time;

/// Time of all CPUs of the machine so far, from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTime {
    /// Everything but idle, iowait and steal (time the hypervisor gave to others).
    pub busy: Duration,
    /// In the kernel: system, irq and softirq. This kernel samples by tick and has no
    /// IRQ_TIME_ACCOUNTING, so softirq work is charged to whichever task it interrupted; these
    /// columns see it whoever it was charged to.
    pub kernel: Duration,
}

impl MachineTime {
    /// Reads `/proc/stat`.
    pub fn now() -> anyhow::Result<MachineTime> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        MachineTime::parse(&stat).context("reading the cpu line of /proc/stat")
    }

    fn parse(stat: &str) -> anyhow::Result<MachineTime> {
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no cpu line")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().context("a field is not a number"))
            .collect::<anyhow::Result<_>>()?;
        let column = |i: usize| {
            ticks
                .get(i)
                .copied()
                .with_context(|| format!("no column {i}"))
        };
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let (user, nice, system) = (column(0)?, column(1)?, column(2)?);
        let (irq, softirq) = (column(5)?, column(6)?);
        Ok(MachineTime {
            busy: ticks_to_duration(user + nice + system + irq + softirq),
            kernel: ticks_to_duration(system + irq + softirq),
        })
    }

    /// The time from `earlier` to `self`.
    pub fn since(self, earlier: MachineTime) -> MachineTime {
        MachineTime {
            busy: self.busy.saturating_sub(earlier.busy),
            kernel: self.kernel.saturating_sub(earlier.kernel),
        }
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = u64::try_from(per_sec)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Duration::from_secs(ticks / per_sec)
        + Duration::from_nanos((ticks % per_sec) * 1_000_000_000 / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 2 0";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(stat_field(&fields, 4).unwrap(), 1);
        assert_eq!(stat_field(&fields, 14).unwrap(), 250);
        assert_eq!(stat_field(&fields, 15).unwrap(), 50);
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
    fn machine_time_columns() {
        let stat = "cpu  100 1 50 900 10 2 20 7 0 0\ncpu0 50 0 25 450 5 1 10 3 0 0\n";
        let t = MachineTime::parse(stat).unwrap();
        assert_eq!(t.busy, ticks_to_duration(173));
        assert_eq!(t.kernel, ticks_to_duration(72));
        assert!(MachineTime::parse("intr 1 2 3\n").is_err());
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
        assert!(peak_rss_kib(me).unwrap() > 0);
        process_time(me).unwrap();
        assert!(MachineTime::now().unwrap().busy > Duration::ZERO);
        assert!(!softirq_threads().unwrap().is_empty());
        let times = thread_times().unwrap();
        // Other test threads come and go between the two reads; the main thread stays.
        assert!(threads_of(me).contains(&me));
        assert!(times.contains_key(&me));
        assert!(times.values().any(|(name, _)| name == "ksoftirqd"));
    }
}
