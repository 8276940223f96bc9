//! The facts every report states about its run: the command, the date, the commit measured,
//! the machine.

use std::process::Command;

use super::{cpu, results};
use crate::workspace;

/// `cargo xtask <the arguments this process got>`.
pub(super) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// The date and time now, in UTC (`2026-12-01 12:00 UTC`).
pub(super) fn date_utc() -> String {
    first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])
}

/// `git rev-parse --short HEAD`, with ` + uncommitted changes` when a tracked file differs from
/// it. The results file does not count: it is what a run rewrites, not the measured code.
pub(super) fn commit() -> String {
    let root = workspace::root().to_string_lossy().into_owned();
    let head = first_line(&["git", "-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", &root, "status", "--porcelain", "--untracked-files=no"])
        .args(["--", ".", &format!(":!{}", results::RESULTS_FILE)])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{head} + uncommitted changes")
    } else {
        head
    }
}

/// `N CPUs (model), M GiB, kernel K`.
pub(super) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("?", |(_, m)| m.trim());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = cpu::status_kib(&meminfo, "MemTotal").unwrap_or(0) as f64 / 1_048_576.0;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} CPUs ({model}), {mem_gib:.0} GiB, kernel {}",
        cpu::online_cpus(),
        kernel.trim()
    )
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), empty when unreadable.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first line `argv` prints (stdout, else stderr), trimmed, or `?` when it cannot run.
pub(super) fn first_line(argv: &[&str]) -> String {
    let Some((program, args)) = argv.split_first() else {
        return String::from("?");
    };
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_owned()
        }
        Err(_) => String::from("?"),
    }
}

/// The last word of `line` (`VERSION: 2.2.0` gives `2.2.0`).
pub(super) fn last_word(line: &str) -> &str {
    line.split_whitespace().last().unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_words_and_first_lines() {
        assert_eq!(last_word("perfdhcp VERSION: 2.2.0"), "2.2.0");
        assert_eq!(last_word(""), "?");
        assert_eq!(first_line(&[]), "?");
        assert_eq!(first_line(&["echo", "one"]), "one");
    }
}
