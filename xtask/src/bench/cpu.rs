//! CPU time: of a running process (`/proc/PID/stat`), of reaped children (`getrusage`), and of
//! the whole machine (`/proc/stat`).

use std::time::Duration;

use anyhow::{bail, Context as _};

/// User plus system time of process `pid` and all its threads so far (utime + stime of
/// `/proc/PID/stat`, clock-tick resolution: 10 ms on Linux).
pub fn process_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_process_ticks(&stat).with_context(|| format!("parsing {path}: {stat}"))?;
    Ok(ticks_to_duration(ticks))
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
fn parse_process_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself:
    // the fields after the last ')' start with field 3 (state).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("no ')' after the command name");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// User plus system time of every child this process has waited for so far (getrusage of
/// RUSAGE_CHILDREN, microsecond resolution): the difference around a command that is waited for
/// while no other child ends is that command's CPU time.
pub fn reaped_children_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_CHILDREN cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// Time the machine's CPUs spent busy and in total (busy + idle), summed over CPUs, from the
/// first line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTime {
    /// user + nice + system + irq + softirq + steal.
    pub busy: Duration,
    /// busy + idle + iowait.
    pub total: Duration,
}

impl MachineTime {
    /// The machine's CPU times now.
    pub fn now() -> anyhow::Result<MachineTime> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse_machine_time(&stat).with_context(|| format!("parsing /proc/stat: {stat}"))
    }
}

fn parse_machine_time(stat: &str) -> anyhow::Result<MachineTime> {
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
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already
    // counted in user.
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok(MachineTime {
        busy: ticks_to_duration(busy),
        total: ticks_to_duration(busy + v[3] + v[4]),
    })
}

/// Number of CPUs online.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = u64::try_from(per_sec)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_survive_odd_command_names() {
        let stat = "4242 (pxe (d) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 \
                    12345 1000000 500 18446744073709551615";
        assert_eq!(parse_process_ticks(stat).expect("parses"), 325);
        assert!(parse_process_ticks("4242 (x) S 1").is_err());
    }

    #[test]
    fn machine_time_counts_busy_and_idle() {
        let stat = "cpu  100 5 50 1000 20 3 7 0 0 0\ncpu0 50 2 25 500 10 1 3 0 0 0\n";
        let t = parse_machine_time(stat).expect("parses");
        assert_eq!(t.busy, ticks_to_duration(165));
        assert_eq!(t.total, ticks_to_duration(1185));
    }

    #[test]
    fn own_process_time_is_readable() {
        process_time(std::process::id()).expect("reading our own /proc/PID/stat");
    }
}
