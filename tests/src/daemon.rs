//! The pxe-daemon binary running in a [`TestNet`]'s server namespace.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output},
    thread,
    time::{Duration, Instant},
};

use crate::{
    netns::TestNet,
    process::{run_bounded, NsChild},
};

/// Port of the daemon's HTTP listener (`--http-listen <server_ip>:8080`).
pub const DAEMON_HTTP_PORT: u16 = 8080;
/// How long [`Daemon::start`] waits for `/healthz` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Log level [`Daemon::start`] runs the daemon at: tests want everything in the log they print.
pub const TEST_LOG_LEVEL: &str = "debug";
/// Bound on one HTTP request (curl `--max-time`).
const HTTP_MAX_TIME_SECS: u64 = 5;
/// Bound on one readiness probe (curl `--max-time`).
const PROBE_MAX_TIME_SECS: u64 = 1;
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Name and content of the file [`Daemon::start`] puts in the boot root it makes.
pub const ROOT_TEST_FILE: (&str, &str) = ("hello.txt", "hello from pxe-tests\n");

/// The pxe-daemon binary to test: `$PXE_DAEMON_BIN`, else `<workspace>/target/debug/pxe-daemon`.
pub fn daemon_bin() -> PathBuf {
    match std::env::var_os("PXE_DAEMON_BIN") {
        Some(path) => PathBuf::from(path),
        None => crate::workspace_root().join("target/debug/pxe-daemon"),
    }
}

/// [`daemon_bin`], panicking with how to build it when it does not exist.
pub fn existing_daemon_bin() -> PathBuf {
    let bin = daemon_bin();
    assert!(
        bin.is_file(),
        "pxe-daemon binary not found at {} (build it with cargo build -p pxe-daemon, \
         or set PXE_DAEMON_BIN)",
        bin.display()
    );
    bin
}

/// Runs `pxe-daemon args...` on the host (no namespace), killed after `timeout`.
pub fn run_daemon_cli(args: &[&str], timeout: Duration) -> Output {
    run_bounded(Command::new(existing_daemon_bin()).args(args), timeout)
}

/// A running `pxe-daemon run` in the server namespace of a [`TestNet`], serving a boot root
/// and HTTP on `<server_ip>:8080`. Its stdout and stderr go to a log file ([`Daemon::log`]).
///
/// Dropping it kills the daemon; if the thread is panicking (a failed test), the log is
/// printed to stderr first.
#[derive(Debug)]
pub struct Daemon<'net> {
    net: &'net TestNet,
    /// `None` once stopped.
    child: Option<NsChild>,
    root: PathBuf,
    /// The boot root the daemon made for itself, if it was not given one.
    _root_dir: Option<tempfile::TempDir>,
    /// Whether a panic message already carried the log.
    log_shown: bool,
}

impl<'net> Daemon<'net> {
    /// Starts `pxe-daemon run --interface <server_if> --root <dir> --http-listen
    /// <server_ip>:8080 --log-level debug <extra_args>` in the server namespace, with a fresh
    /// boot root holding [`ROOT_TEST_FILE`], and waits until `/healthz` answers 200.
    /// Panics with the daemon's log if it does not within [`READY_TIMEOUT`].
    pub fn start(net: &'net TestNet, extra_args: &[&str]) -> Daemon<'net> {
        let dir = tempfile::Builder::new()
            .prefix("pxe-tests-root-")
            .tempdir()
            .expect("creating a temporary boot root");
        let (name, content) = ROOT_TEST_FILE;
        std::fs::File::create(dir.path().join(name))
            .and_then(|mut f| f.write_all(content.as_bytes()))
            .expect("writing the boot root's test file");
        let root = dir.path().to_path_buf();
        Daemon::start_inner(net, root, Some(dir), TEST_LOG_LEVEL, extra_args)
    }

    /// Like [`Daemon::start`], serving the existing boot root `root`.
    pub fn start_with_root(net: &'net TestNet, root: &Path, extra_args: &[&str]) -> Daemon<'net> {
        Daemon::start_inner(net, root.to_path_buf(), None, TEST_LOG_LEVEL, extra_args)
    }

    /// Like [`Daemon::start_with_root`] with `--log-level <log_level>`: benchmarks run the
    /// daemon at the level it runs at in production (`info`).
    pub fn start_with_root_at_level(
        net: &'net TestNet,
        root: &Path,
        log_level: &str,
        extra_args: &[&str],
    ) -> Daemon<'net> {
        Daemon::start_inner(net, root.to_path_buf(), None, log_level, extra_args)
    }

    fn start_inner(
        net: &'net TestNet,
        root: PathBuf,
        root_dir: Option<tempfile::TempDir>,
        log_level: &str,
        extra_args: &[&str],
    ) -> Daemon<'net> {
        let bin = existing_daemon_bin();
        let bin = bin.to_string_lossy();
        let root_arg = root.to_string_lossy().into_owned();
        let listen = format!("{}:{DAEMON_HTTP_PORT}", net.server_ip());
        let mut argv = vec![
            &*bin,
            "run",
            "--interface",
            net.server_if(),
            "--root",
            &root_arg,
            "--http-listen",
            &listen,
            "--log-level",
            log_level,
        ];
        argv.extend_from_slice(extra_args);
        let mut daemon = Daemon {
            net,
            child: Some(net.spawn_server(&argv)),
            root,
            _root_dir: root_dir,
            log_shown: false,
        };
        daemon.wait_ready(&argv.join(" "));
        daemon
    }

    /// Polls `/healthz` from the server namespace until it answers 200; panics with the log if
    /// the daemon exits or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self, command: &str) {
        let url = self.url("/healthz");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                self.fail(&format!(
                    "pxe-daemon exited with {status} before it was ready"
                ));
            }
            let (code, body) = curl_get(self.net, self.net.server_ns(), &url, PROBE_MAX_TIME_SECS);
            if code == 200 {
                return;
            }
            let last = format!("last answer: {code} {}", body.trim());
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "pxe-daemon not ready within {} s ({last}); command: {command}",
                    READY_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(PROBE_INTERVAL);
        }
    }

    /// Panics with `what` and the daemon's log.
    fn fail(&mut self, what: &str) -> ! {
        self.log_shown = true;
        panic!("{what}\n--- pxe-daemon log ---\n{}--- end ---", self.log());
    }

    /// The namespaces the daemon runs in.
    pub fn net(&self) -> &'net TestNet {
        self.net
    }

    /// The boot root the daemon serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `http://<server_ip>:8080<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{DAEMON_HTTP_PORT}{path}", self.net.server_ip())
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(NsChild::id)
    }

    /// Everything the daemon has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.child
            .as_ref()
            .map_or_else(|| "[pxe-tests: daemon stopped]".to_owned(), NsChild::log)
    }

    /// The exit status if the daemon has ended, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(NsChild::try_wait)
    }

    /// GETs `path` from the CLIENT namespace (so the request crosses the veth and its XDP
    /// program). Returns the status and body; status 0 and curl's error when no HTTP answer
    /// came within 5 s.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        curl_get(
            self.net,
            self.net.client_ns(),
            &self.url(path),
            HTTP_MAX_TIME_SECS,
        )
    }

    /// The `/metrics` text, fetched inside the server namespace so the request does not cross
    /// the veth (and so does not move the XDP frame counters). Panics unless it answers 200.
    pub fn metrics(&self) -> String {
        let (code, body) = curl_get(
            self.net,
            self.net.server_ns(),
            &self.url("/metrics"),
            HTTP_MAX_TIME_SECS,
        );
        assert_eq!(
            code,
            200,
            "GET /metrics: {body}\n--- pxe-daemon log ---\n{}",
            self.log()
        );
        body
    }

    /// The `/metrics` text fetched inside the server namespace, or `None` when no 200 came
    /// within 5 s (for polling loops that must not panic).
    pub fn try_metrics(&self) -> Option<String> {
        let (code, body) = curl_get(
            self.net,
            self.net.server_ns(),
            &self.url("/metrics"),
            HTTP_MAX_TIME_SECS,
        );
        (code == 200).then_some(body)
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 10 s. Returns its exit status.
    pub fn stop(self) -> ExitStatus {
        self.stop_with_log().0
    }

    /// [`Daemon::stop`], also returning the daemon's whole log (shutdown messages included).
    pub fn stop_with_log(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("the daemon runs until stopped");
        let status = child
            .terminate()
            .unwrap_or_else(|| panic!("pxe-daemon (pid {}) survived SIGKILL", child.id()));
        (status, child.log())
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if thread::panicking() && !self.log_shown {
            let log = self.log();
            let _ = writeln!(
                std::io::stderr(),
                "--- pxe-daemon log ---\n{log}--- end ---"
            );
        }
        // Dropping the child kills the daemon if it still runs.
        self.child.take();
    }
}

/// GETs `url` with curl inside namespace `ns`. Returns the HTTP status and body, or 0 and
/// curl's error when no HTTP answer came.
pub fn curl_get(net: &TestNet, ns: &str, url: &str, max_time_secs: u64) -> (u16, String) {
    const STATUS_MARK: &str = "\n--pxe-tests-status:";
    let max_time = max_time_secs.to_string();
    let write_out = format!("{STATUS_MARK}%{{http_code}}");
    let argv = [
        "curl",
        "--silent",
        "--show-error",
        // A proxy from the environment must never see test traffic.
        "--noproxy",
        "*",
        "--max-time",
        &max_time,
        "--write-out",
        &write_out,
        url,
    ];
    let timeout = Duration::from_secs(max_time_secs + 5);
    let out = if ns == net.server_ns() {
        net.server_timeout(&argv, timeout)
    } else {
        net.client_timeout(&argv, timeout)
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.rsplit_once(STATUS_MARK) {
        Some((body, code)) if code.trim() != "000" => {
            (code.trim().parse().unwrap_or(0), body.to_owned())
        }
        _ => (0, String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}
