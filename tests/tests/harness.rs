//! The harness itself: namespaces come and go, traffic flows, commands stay bounded.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pxe_tests::{name_prefix, netns_exists, root_or_skip, run_bounded, TestNet};

#[test]
fn testnet_connects_client_and_server_then_cleans_up() {
    if !root_or_skip() {
        return;
    }
    let (server_ns, client_ns) = {
        let net = TestNet::new("harness");
        // PXE_TEST_NS_PREFIX (default "pxet-") renames them, so checkouts can run side by side.
        assert_eq!(net.server_ns(), format!("{}harness-s", name_prefix()));
        assert_eq!(net.client_if(), format!("{}harness-c", name_prefix()));
        assert!(net.server_if().len() <= 15);
        assert!(netns_exists(net.server_ns()) && netns_exists(net.client_ns()));
        let [a, b, c, d] = net.server_ip().octets();
        assert!(
            a == 198 && (b == 18 || b == 19) && d == 1,
            "{}",
            net.server_ip()
        );
        assert_eq!(net.client_ip().octets(), [a, b, c, 2]);
        assert_eq!(net.prefix_len(), 24);

        let server_ip = net.server_ip().to_string();
        let ping = net.client(&["busybox", "ping", "-c", "1", "-W", "1", &server_ip]);
        assert!(ping.status.success(), "client -> server ping: {ping:?}");
        let client_ip = net.client_ip().to_string();
        let ping = net.server(&["busybox", "ping", "-c", "1", "-W", "1", &client_ip]);
        assert!(ping.status.success(), "server -> client ping: {ping:?}");

        let addr = net.server(&["ip", "-4", "-o", "addr", "show", "dev", net.server_if()]);
        let addr = String::from_utf8_lossy(&addr.stdout);
        assert!(addr.contains(&format!("{server_ip}/24")), "{addr}");
        // Nothing of the pair shows in the host namespace.
        let host = run_bounded(
            Command::new("ip").args(["-o", "link"]),
            Duration::from_secs(5),
        );
        assert!(
            !String::from_utf8_lossy(&host.stdout).contains(&format!("{}harness", name_prefix()))
        );

        // A spawned process is killed with its guard, a bounded command when its time is up.
        let mut sleeper = net.spawn_server(&["sleep", "30"]);
        assert!(sleeper.try_wait().is_none());
        drop(sleeper);
        let started = Instant::now();
        let out = net.client_timeout(&["sleep", "30"], Duration::from_millis(300));
        assert!(!out.status.success());
        assert!(started.elapsed() < Duration::from_secs(5));

        (net.server_ns().to_owned(), net.client_ns().to_owned())
    };
    assert!(!netns_exists(&server_ns), "{server_ns} left behind");
    assert!(!netns_exists(&client_ns), "{client_ns} left behind");
}

#[test]
fn testnet_replaces_namespaces_left_by_a_killed_run() {
    if !root_or_skip() {
        return;
    }
    // A run killed before Drop leaves its namespaces; forgetting the guard does the same.
    let stale = TestNet::new("stale");
    let mut leftover = stale.spawn_server(&["sleep", "30"]);
    std::mem::forget(stale);
    let net = TestNet::new("stale");
    let ping = net.client(&[
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        &net.server_ip().to_string(),
    ]);
    assert!(ping.status.success(), "{ping:?}");
    assert!(
        leftover.wait_timeout(Duration::from_secs(2)).is_some(),
        "the process left in the stale namespace should have been killed"
    );
    drop(net);
    let prefix = name_prefix();
    assert!(
        !netns_exists(&format!("{prefix}stale-s")) && !netns_exists(&format!("{prefix}stale-c"))
    );
    drop(leftover);
}

#[test]
fn bounded_commands_are_killed_with_their_children() {
    let started = Instant::now();
    let out = run_bounded(
        Command::new("sh").args(["-c", "echo started; sleep 30 & sleep 30; echo never"]),
        Duration::from_millis(300),
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{out:?}");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("killed after 300 ms"));
}
