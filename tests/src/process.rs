//! Child processes bounded in time: every command the harness runs either ends or is killed.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::{
        prctl::set_pdeathsig,
        signal::{kill, killpg, Signal},
    },
    unistd::Pid,
};

/// How long [`NsChild::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often wait loops poll a child.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long to wait for a child to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long to wait for a killed command's output pipes to close (a grandchild that left the
/// process group may hold them open).
const PIPE_DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Runs `cmd` with stdin closed and its output captured; after `timeout` it kills the command's
/// whole process group and returns what was captured, with a note appended to stderr.
///
/// Panics only if the command cannot be started.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    match try_run_bounded(cmd, timeout) {
        Ok(output) => output,
        Err(e) => panic!("running {cmd:?}: {e}"),
    }
}

/// [`run_bounded`] without the panic, for teardown code that must not panic.
pub(crate) fn try_run_bounded(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    // A process group of its own, so that a timeout also ends the command's children.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(child.id());
            match wait_timeout(&mut child, KILL_WAIT)? {
                Some(status) => break status,
                None => return Err(io::Error::other("command survived SIGKILL")),
            }
        }
        thread::sleep(POLL_INTERVAL);
    };
    let stdout = stdout.recv_timeout(PIPE_DRAIN_WAIT).unwrap_or_default();
    let mut stderr = stderr.recv_timeout(PIPE_DRAIN_WAIT).unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[pxe-tests: killed after {} ms]\n", timeout.as_millis()).as_bytes(),
        );
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Reads a pipe to its end in a thread, so a chatty command cannot block on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error only truncates the captured output.
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Sends SIGKILL to the process group led by `pid`.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A long-running process (usually started inside a namespace with
/// [`TestNet::spawn_server`](crate::TestNet::spawn_server)) whose stdout and stderr go to a log
/// file. Dropping it kills the process.
///
/// The process also gets SIGKILL when the thread that spawned it ends (`PR_SET_PDEATHSIG`), so a
/// killed test run leaves no server behind: keep the guard in the thread that created it.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl NsChild {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to one log file.
    pub fn spawn(mut cmd: Command) -> NsChild {
        let log_dir = tempfile::Builder::new()
            .prefix("pxe-tests-")
            .tempdir()
            .expect("creating a temporary directory for a process log");
        let log_path = log_dir.path().join("output.log");
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating log file {}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating log file {}: {e}", log_path.display()));
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // SAFETY: between fork and exec the closure makes one async-signal-safe call (prctl),
        // allocates nothing and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| Ok(set_pdeathsig(Signal::SIGKILL)?));
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        NsChild {
            child,
            status: None,
            log_path,
            _log_dir: log_dir,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Path of the file that receives the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written to stdout and stderr so far (lossy UTF-8).
    pub fn log(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("[pxe-tests: reading {}: {e}]", self.log_path.display()),
        }
    }

    /// The exit status if the process has ended, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, timeout).ok().flatten();
        }
        self.status
    }

    /// Sends `signal` (e.g. `Signal::SIGHUP`) to the process if it is still running.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_wait().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it has not ended within [`STOP_TIMEOUT`].
    /// Returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
            .unwrap_or_else(|| panic!("process {} survived SIGKILL", self.child.id()))
    }

    /// SIGTERM, bounded wait, SIGKILL, bounded wait; `None` if the process survived all that.
    /// Never panics.
    pub(crate) fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_timeout(STOP_TIMEOUT) {
            return Some(status);
        }
        self.kill()
    }

    /// SIGKILL and a bounded wait. Never panics.
    fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
        }
        self.wait_timeout(KILL_WAIT)
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}
