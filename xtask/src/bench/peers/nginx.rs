//! nginx, the HTTP peer: in the foreground, with a config the benchmark writes (which must
//! not say `daemon off;`: the command line does).

use std::{path::Path, time::Duration};

use pxe_tests::{NsChild, TestNet};

use super::Host;

/// How long nginx gets to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `nginx -p <prefix> -e stderr -c <config> -g 'daemon off;'` in the server namespace
/// and waits until GET `ready_url` answers 200.
pub(crate) fn start(
    net: &TestNet,
    prefix: &Path,
    config: &Path,
    ready_url: &str,
) -> anyhow::Result<NsChild> {
    let bin = super::find_sbin("nginx")?;
    // `-p` takes a directory with its trailing slash.
    let prefix = format!("{}/", prefix.display());
    let argv = [
        &*bin.to_string_lossy(),
        "-p",
        &prefix,
        // Before the config is read, nginx would open /var/log/nginx/error.log.
        "-e",
        "stderr",
        "-c",
        &config.to_string_lossy(),
        "-g",
        "daemon off;",
    ];
    let mut child = net.spawn_server(&argv);
    super::wait_http_ok(
        Host::Server(net),
        &mut child,
        "nginx",
        ready_url,
        READY_TIMEOUT,
    )?;
    Ok(child)
}
