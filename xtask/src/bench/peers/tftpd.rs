//! tftpd-hpa, the TFTP peer: `in.tftpd` in the foreground, serving a root read-only.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use pxe_tests::{NsChild, TestNet};

use super::Host;

/// How long it gets to bind port 69.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `in.tftpd --foreground --secure --address <ip>:69 <root>` in the server namespace and
/// waits until it has bound port 69; returns it with its command line. It forks a process per
/// transfer, as user `tftp`: `root` must be readable by that user.
pub(crate) fn start(net: &TestNet, ip: Ipv4Addr, root: &Path) -> anyhow::Result<(NsChild, String)> {
    let bin = super::find_sbin("in.tftpd")?;
    let argv = [
        bin.to_string_lossy().into_owned(),
        "--foreground".to_owned(),
        "--secure".to_owned(),
        "--address".to_owned(),
        format!("{ip}:69"),
        root.to_string_lossy().into_owned(),
    ];
    let command = argv.join(" ");
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut child = net.spawn_server(&args);
    super::wait_udp_bound(
        Host::Server(net),
        &mut child,
        "tftpd-hpa",
        69,
        READY_TIMEOUT,
    )?;
    Ok((child, command))
}
