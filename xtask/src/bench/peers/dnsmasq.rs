//! dnsmasq, the peer for DHCP, proxy DHCP and TFTP: started with its options on the command
//! line (so that a report can show them), bound to its host's interface, DNS off, logging to
//! its process log.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use pxe_tests::NsChild;

use super::Host;

/// How long dnsmasq gets to bind the port it is waited on.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running dnsmasq; dropping it kills it.
#[derive(Debug)]
pub(crate) struct Dnsmasq {
    child: NsChild,
    command: String,
}

impl Dnsmasq {
    /// Starts dnsmasq at `host` with the common options (no DNS, the host's interface only, its
    /// pid file in `dir`, made if missing, its log to its process log) and `options`
    /// (`name=value`, as in its config file but without quotes: no shell is in between), and
    /// waits until it has bound UDP port `ready_port` (67 for DHCP, 69 for TFTP).
    pub(crate) fn start(
        host: Host<'_>,
        dir: &Path,
        options: &[String],
        ready_port: u16,
    ) -> anyhow::Result<Dnsmasq> {
        let bin = super::find_sbin("dnsmasq")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut argv = vec![
            bin.to_string_lossy().into_owned(),
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--port=0".to_owned(),
            format!("--interface={}", host.interface()),
            "--bind-interfaces".to_owned(),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--log-facility=-".to_owned(),
        ];
        argv.extend(options.iter().map(|o| format!("--{o}")));
        let command = argv.join(" ");
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = host.spawn(&args);
        super::wait_udp_bound(host, &mut child, "dnsmasq", ready_port, READY_TIMEOUT)?;
        Ok(Dnsmasq { child, command })
    }

    /// Its command line.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// Its process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stops it (SIGTERM, then SIGKILL after the harness's bound).
    pub(crate) fn stop(self) -> std::process::ExitStatus {
        self.child.stop()
    }

    /// The process, for a caller that keeps it with other servers' processes.
    pub(crate) fn into_child(self) -> NsChild {
        self.child
    }
}
