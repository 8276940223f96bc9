//! Test harness for pxe-daemon: network namespaces joined by a veth pair on 198.18.0.0/15
//! ([`TestNet`]), the daemon binary running in the server namespace ([`Daemon`]), dnsmasq as a
//! real DHCP peer there ([`Dnsmasq`]), commands bounded in time, and a Prometheus sample reader.
//! [`firmware`] boots a QEMU machine with real PXE firmware ([`qemu`]) into a kernel and the
//! marker initramfs ([`initramfs`]) from the daemon. Used by this crate's integration tests and
//! by `cargo xtask demo`.
//!
//! ```no_run
//! use pxe_tests::{metric_value, root_or_skip, Daemon, TestNet};
//!
//! if !root_or_skip() {
//!     return;
//! }
//! let net = TestNet::new("example"); // pxet-example-s / pxet-example-c
//! let daemon = Daemon::start(&net, &["--xdp-mode", "driver"]);
//! let out = net.client(&["busybox", "ping", "-c", "1", "-W", "1", &net.server_ip().to_string()]);
//! assert!(out.status.success());
//! let _dhcp = metric_value(&daemon.metrics(), "pxe_xdp_frames_total", &[("class", "dhcp")]);
//! assert!(daemon.stop().success());
//! // Dropping `net` deletes both namespaces and the veth pair.
//! ```
//!
//! Every command is bounded in time, and every guard cleans up in `Drop`, also during a panic.

mod clients;
mod configs;
mod daemon;
mod dhcp_clients;
mod dnsmasq;
pub mod firmware;
pub mod initramfs;
mod metrics;
mod netns;
mod process;
pub mod qemu;
pub mod tftp;

use std::{io::Write, path::PathBuf};

pub use clients::send_pxe_probes;
pub use configs::full_dhcp_config;
pub use daemon::{
    curl_get, daemon_bin, existing_daemon_bin, run_daemon_cli, Daemon, DAEMON_HTTP_PORT,
    READY_TIMEOUT, ROOT_TEST_FILE, TEST_LOG_LEVEL,
};
pub use dhcp_clients::{
    by_server, full_mode_clients, pxe_client, pxe_client_on, request_4011, site_dhcp, site_dhcp_on,
    OFFER_WAIT_SECS,
};
pub use dnsmasq::{Dnsmasq, DNSMASQ_READY_TIMEOUT};
pub use metrics::{metric_sum, metric_value};
pub use netns::{
    name_prefix, netns_exists, SiteHost, TestNet, CMD_TIMEOUT, MAX_TAG_LEN, NAME_PREFIX,
    NAME_PREFIX_ENV, PREFIX_LEN, SITE_BRIDGE,
};
pub use process::{run_bounded, NsChild, STOP_TIMEOUT};

/// The workspace's root directory (the parent of this crate's).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), PathBuf::from)
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `true` when running as root; otherwise prints that the calling test is skipped, and why,
/// and returns `false`.
///
/// The test is named by its thread, which libtest names after the test. The reason goes
/// straight to stderr, past the test harness's output capture, so it shows.
pub fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping {}: needs root (network namespaces, veth and XDP)",
        current_test()
    );
    false
}

/// The name of the running test: libtest runs each test on a thread named after it.
fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|&name| name != "main")
        .unwrap_or("this test")
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_running_test_is_named_by_its_thread() {
        assert_eq!(
            super::current_test(),
            "tests::the_running_test_is_named_by_its_thread"
        );
    }
}
