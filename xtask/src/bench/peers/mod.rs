//! The servers the benchmarks measure, one way each to start them: pxe-daemon
//! ([`daemon`]), dnsmasq ([`dnsmasq`]), nginx ([`nginx`]) and tftpd-hpa ([`tftpd`]); and the
//! waits until a started server serves.

pub(super) mod daemon;
pub(super) mod dnsmasq;
pub(super) mod nginx;
pub(super) mod tftpd;

use std::{
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use pxe_tests::{NsChild, SiteHost, TestNet};

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on one HTTP readiness probe, seconds (curl `--max-time`).
const PROBE_MAX_TIME_SECS: &str = "2";

/// Where a server runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Host<'a> {
    /// The server namespace of a [`TestNet`]: the servers under test.
    Server(&'a TestNet),
    /// The site host of a rack (its own namespace on the machines' segment): the site DHCP
    /// server.
    Site(&'a SiteHost),
}

impl Host<'_> {
    /// Its interface (on the site host, named as its namespace).
    pub(super) fn interface(&self) -> &str {
        match self {
            Host::Server(net) => net.server_if(),
            Host::Site(site) => site.ns(),
        }
    }

    /// Runs `argv` there, bounded.
    pub(super) fn run(&self, argv: &[&str]) -> Output {
        match self {
            Host::Server(net) => net.server(argv),
            Host::Site(site) => site.run(argv),
        }
    }

    /// Starts `argv` there; the guard kills it when dropped.
    pub(super) fn spawn(&self, argv: &[&str]) -> NsChild {
        match self {
            Host::Server(net) => net.spawn_server(argv),
            Host::Site(site) => site.spawn(argv),
        }
    }
}

/// Polls `ready` until it holds, for at most `timeout`; fails with the log of `child` (`what`)
/// when it exits first or the time is up (`waiting_for` says what was awaited).
pub(super) fn wait_ready(
    child: &mut NsChild,
    what: &str,
    waiting_for: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait() {
            bail!(
                "{what} exited with {status} before it could {waiting_for}:\n{}",
                child.log()
            );
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} did not {waiting_for} within {} s:\n{}",
                timeout.as_secs(),
                child.log()
            );
        }
        thread::sleep(PROBE_INTERVAL);
    }
}

/// The `ss` lines of the UDP sockets bound to local `port` at `host`; empty when there is
/// none.
pub(super) fn udp_sockets_on(host: Host<'_>, port: u16) -> String {
    let filter = format!("sport = :{port}");
    let out = host.run(&["ss", "-H", "-l", "-n", "-u", &filter]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until `child` (`what`, at `host`) has bound UDP port `port`.
pub(super) fn wait_udp_bound(
    host: Host<'_>,
    child: &mut NsChild,
    what: &str,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_ready(
        child,
        what,
        &format!("bind UDP port {port}"),
        timeout,
        || !udp_sockets_on(host, port).is_empty(),
    )
}

/// The HTTP status of GET `url` from `host`, or `None` without an answer.
pub(super) fn http_status(host: Host<'_>, url: &str) -> Option<u16> {
    let out = host.run(&[
        "curl",
        "--silent",
        "--noproxy",
        "*",
        "--max-time",
        PROBE_MAX_TIME_SECS,
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        url,
    ]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|&code| code != 0)
}

/// Waits until GET `url` from `host` answers 200 from `child` (`what`).
pub(super) fn wait_http_ok(
    host: Host<'_>,
    child: &mut NsChild,
    what: &str,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_ready(
        child,
        what,
        &format!("answer 200 on {url}"),
        timeout,
        || http_status(host, url) == Some(200),
    )
}

/// `name` from /usr/sbin, /sbin or /usr/local/sbin (sbin may not be on PATH), else PATH.
pub(super) fn find_sbin(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .with_context(|| format!("looking for {name}"))?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        !found.is_empty(),
        "{name} not found (cargo xtask setup installs it)"
    );
    Ok(PathBuf::from(found))
}
