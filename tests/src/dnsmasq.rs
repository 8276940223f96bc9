//! dnsmasq as a real DHCP or proxy-DHCP peer in a [`TestNet`]'s server namespace.

use std::{
    io::Write,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::{
    netns::{SiteHost, TestNet},
    process::NsChild,
};

/// How long [`Dnsmasq::start`] waits for dnsmasq to listen on UDP port 67.
pub const DNSMASQ_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness checks.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Where Debian's `dnsmasq-base` installs the binary (sbin may not be on a test's PATH).
const DNSMASQ_DEBIAN_PATH: &str = "/usr/sbin/dnsmasq";

/// A `dnsmasq` in the server namespace of a [`TestNet`], bound to its interface, with DNS off
/// and its lease and pid files in a temporary directory. Logs every DHCP exchange
/// ([`Dnsmasq::log`]).
///
/// Dropping it kills dnsmasq (and prints its log first if the thread is panicking).
#[derive(Debug)]
pub struct Dnsmasq {
    child: NsChild,
    config: String,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts `dnsmasq --no-daemon --conf-file=<file>` in the server namespace, the file holding
    /// the harness's lines (no DNS, the server interface only, no ping before offers, lease and
    /// pid files in a temp dir, `log-dhcp`) and then `config`, one dnsmasq option per line
    /// (e.g. `dhcp-range=198.18.5.0,proxy`). Waits until it listens on UDP port 67; panics
    /// with its log if it exits or does not within [`DNSMASQ_READY_TIMEOUT`].
    pub fn start(net: &TestNet, config: &[&str]) -> Dnsmasq {
        Dnsmasq::start_with(
            net.server_if(),
            &|argv| net.spawn_server(argv),
            &|argv| net.server(argv),
            config,
        )
    }

    /// Like [`Dnsmasq::start`], on the third host of the client's segment ([`SiteHost`]).
    pub fn start_on_site(site: &SiteHost, config: &[&str]) -> Dnsmasq {
        Dnsmasq::start_with(
            site.ns(),
            &|argv| site.spawn(argv),
            &|argv| site.run(argv),
            config,
        )
    }

    fn start_with(
        interface: &str,
        spawn: &dyn Fn(&[&str]) -> NsChild,
        run: &dyn Fn(&[&str]) -> std::process::Output,
        config: &[&str],
    ) -> Dnsmasq {
        let dir = tempfile::Builder::new()
            .prefix("pxe-tests-dnsmasq-")
            .tempdir()
            .expect("creating a temporary directory for dnsmasq");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let mut lines = vec![
            "port=0".to_owned(),
            format!("interface={interface}"),
            "bind-interfaces".to_owned(),
            "no-ping".to_owned(),
            "log-dhcp".to_owned(),
            // The lease file lives in a root-only temp dir.
            "user=root".to_owned(),
            format!("dhcp-leasefile={}", path("leases")),
            format!("pid-file={}", path("dnsmasq.pid")),
        ];
        lines.extend(config.iter().map(|line| (*line).to_owned()));
        let config = lines.join("\n") + "\n";
        let conf_path = path("dnsmasq.conf");
        std::fs::write(&conf_path, &config).expect("writing the dnsmasq config");

        let bin = dnsmasq_bin();
        let conf_arg = format!("--conf-file={conf_path}");
        let child = spawn(&[&bin.to_string_lossy(), "--no-daemon", &conf_arg]);
        let mut dnsmasq = Dnsmasq {
            child,
            config,
            _dir: dir,
        };
        dnsmasq.wait_ready(run);
        dnsmasq
    }

    /// Polls `ss` in dnsmasq's namespace (through `run`) until UDP port 67 is bound.
    fn wait_ready(&mut self, run: &dyn Fn(&[&str]) -> std::process::Output) {
        let deadline = Instant::now() + DNSMASQ_READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait() {
                panic!(
                    "dnsmasq exited with {status} before it listened\n{}",
                    self.report()
                );
            }
            let out = run(&["ss", "-H", "-l", "-u", "-n", "sport = :67"]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "dnsmasq did not listen on UDP 67 within {} s\n{}",
                    DNSMASQ_READY_TIMEOUT.as_secs(),
                    self.report()
                );
            }
            thread::sleep(READY_POLL_INTERVAL);
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything dnsmasq has logged so far.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// The config file dnsmasq was started with.
    pub fn config(&self) -> &str {
        &self.config
    }

    fn report(&self) -> String {
        format!(
            "--- dnsmasq config ---\n{}--- dnsmasq log ---\n{}--- end ---",
            self.config,
            self.log()
        )
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = writeln!(std::io::stderr(), "{}", self.report());
        }
        // Dropping `child` kills dnsmasq and reaps it.
    }
}

/// dnsmasq from Debian's path, else from PATH.
fn dnsmasq_bin() -> PathBuf {
    let debian = Path::new(DNSMASQ_DEBIAN_PATH);
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("dnsmasq")
    }
}
