//! The Daemon guard reports a daemon that dies at start with its log. Root only.

use std::panic::{self, AssertUnwindSafe};

use pxe_tests::{root_or_skip, Daemon, TestNet};

#[test]
fn early_exit_panics_with_the_daemon_log() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("guard");
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        Daemon::start(&net, &["--xdp-mode", "no-such-mode"])
    }));
    let payload = match result {
        Ok(daemon) => panic!(
            "a bad --xdp-mode should stop the daemon; log:\n{}",
            daemon.log()
        ),
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("exited"), "{message}");
    assert!(
        message.contains("no-such-mode"),
        "the log should be in: {message}"
    );
}
