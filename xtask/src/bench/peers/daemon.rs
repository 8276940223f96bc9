//! pxe-daemon, the server under test: `pxe-daemon run` in the server namespace, ready once
//! `/healthz` answers.

use std::{net::SocketAddrV4, path::Path, process::ExitStatus, time::Duration};

use pxe_tests::{NsChild, TestNet};

use super::Host;

/// How long the daemon gets to answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The log level benchmarks run it at: production's (a line per TFTP transfer, none per HTTP
/// request or DHCP exchange).
pub(crate) const LOG_LEVEL: &str = "info";

/// How to run it.
#[derive(Debug)]
pub(crate) struct Options<'a> {
    /// The (release) binary.
    pub bin: &'a Path,
    /// `--config`.
    pub config: &'a Path,
    /// `--root`, when not in the config.
    pub root: Option<&'a Path>,
    /// `--http-listen`: where `/healthz` and `/metrics` are read.
    pub http: SocketAddrV4,
    /// `--log-level`.
    pub log_level: &'a str,
    /// More flags (`--dhcp-mode off`, `--datapath xdp`, ...).
    pub args: &'a [&'a str],
}

impl Options<'_> {
    /// The command line.
    pub(crate) fn argv(&self, net: &TestNet) -> Vec<String> {
        let mut argv = vec![
            self.bin.to_string_lossy().into_owned(),
            "run".to_owned(),
            "--interface".to_owned(),
            net.server_if().to_owned(),
        ];
        if let Some(root) = self.root {
            argv.extend(["--root".to_owned(), root.to_string_lossy().into_owned()]);
        }
        argv.extend([
            "--config".to_owned(),
            self.config.to_string_lossy().into_owned(),
            "--http-listen".to_owned(),
            self.http.to_string(),
            "--log-level".to_owned(),
            self.log_level.to_owned(),
        ]);
        argv.extend(self.args.iter().map(|a| (*a).to_owned()));
        argv
    }
}

/// A running pxe-daemon in the server namespace of a [`TestNet`]; dropping it kills it.
#[derive(Debug)]
pub(crate) struct Daemon<'net> {
    net: &'net TestNet,
    child: NsChild,
    http: SocketAddrV4,
    command: String,
}

impl<'net> Daemon<'net> {
    /// Starts it with `options` and waits until `/healthz` answers 200. Its sockets are bound
    /// before it serves (with `--datapath xdp`, before its AF_XDP sockets and steering are up):
    /// load sent at the first bound socket would land in sockets nobody reads yet.
    pub(crate) fn start(net: &'net TestNet, options: &Options<'_>) -> anyhow::Result<Daemon<'net>> {
        let argv = options.argv(net);
        let command = argv.join(" ");
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = net.spawn_server(&args);
        let url = format!("http://{}/healthz", options.http);
        super::wait_http_ok(
            Host::Server(net),
            &mut child,
            "pxe-daemon",
            &url,
            READY_TIMEOUT,
        )?;
        Ok(Daemon {
            net,
            child,
            http: options.http,
            command,
        })
    }

    /// Its command line.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// Its process id (`ip netns exec` execs in place).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process, e.g. to wait for more sockets.
    pub(crate) fn child_mut(&mut self) -> &mut NsChild {
        &mut self.child
    }

    /// Everything it has logged.
    pub(crate) fn log(&self) -> String {
        self.child.log()
    }

    /// Its exit status, if it has exited.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Its `/metrics` text; `None` without an answer.
    pub(crate) fn metrics(&self) -> Option<String> {
        metrics(self.net, self.http)
    }

    /// Stops it (SIGTERM, then SIGKILL after the harness's bound).
    pub(crate) fn stop(self) -> ExitStatus {
        self.child.stop()
    }

    /// The process, for a caller that keeps it with other servers' processes.
    pub(crate) fn into_child(self) -> NsChild {
        self.child
    }
}

/// The `/metrics` text of the daemon whose HTTP is at `http` in the server namespace of `net`
/// (fetched there); `None` without an answer.
pub(crate) fn metrics(net: &TestNet, http: SocketAddrV4) -> Option<String> {
    let url = format!("http://{http}/metrics");
    let out = net.server(&[
        "curl",
        "--silent",
        "--fail",
        "--noproxy",
        "*",
        "--max-time",
        "5",
        &url,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
