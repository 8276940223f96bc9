//! Full DHCP under load, killed with SIGKILL, restarted: every lease a client was ACKed is
//! still its own, and no address is given to two machines. Root only.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use pxe_tests::{full_dhcp_config, root_or_skip, workspace_root, Daemon, TestNet};

/// Clients that try to bind during the run (the pool has 240 addresses).
const CLIENTS: &str = "200";
/// How long the load runs at most.
const LOAD_SECS: &str = "8";
/// Exchanges started per second: the 200 take about 2 s, so the kill lands in the middle.
const LOAD_RATE: &str = "100";
/// ACKs to see before the kill.
const ACKS_BEFORE_KILL: usize = 40;

fn acks(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("ACK "))
        .filter_map(|l| l.split_once(' '))
        .map(|(mac, ip)| (mac.to_owned(), ip.to_owned()))
        .collect()
}

#[test]
fn acknowledged_leases_survive_sigkill_under_load() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dhcpkill");
    let dir = tempfile::tempdir().unwrap();
    let config = full_dhcp_config(&net, dir.path(), (10, 249), 3600, "");
    let config_arg = config.to_string_lossy().into_owned();
    let script = workspace_root().join("tests/scripts/dhcp_relay_load.py");
    let script = script.to_string_lossy().into_owned();
    let (relay, server) = (net.client_ip().to_string(), net.server_ip().to_string());

    let mut daemon = Daemon::start(&net, &["--config", &config_arg, "--xdp-mode", "off"]);
    let mut load = net.spawn_client(&[
        "python3", &script, &relay, &server, "bind", CLIENTS, LOAD_SECS, LOAD_RATE,
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks(&load.log()).len() < ACKS_BEFORE_KILL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = daemon.id().expect("daemon running");
    // SIGKILL in the middle of the storm: no shutdown, no flush.
    let killed = net.server(&["kill", "-9", &pid.to_string()]);
    assert!(killed.status.success(), "kill -9: {killed:?}");
    let status = load
        .wait_timeout(Duration::from_secs(20))
        .expect("load generator ends");
    assert!(status.success(), "load generator: {}", load.log());
    let acked = acks(&load.log());
    assert!(
        acked.len() >= ACKS_BEFORE_KILL,
        "only {} ACKs before the kill:\n{}\n{}",
        acked.len(),
        load.log(),
        daemon.log()
    );
    let mut ips: BTreeSet<&String> = BTreeSet::new();
    for ip in acked.values() {
        assert!(
            ips.insert(ip),
            "{ip} was ACKed to two MACs before the crash: {acked:?}"
        );
    }
    let _ = daemon.try_wait();
    drop(daemon);

    // Restart on the same journal; every ACKed MAC asks again.
    let daemon = Daemon::start(&net, &["--config", &config_arg, "--xdp-mode", "off"]);
    assert!(
        daemon.log().contains("lease journal opened"),
        "{}",
        daemon.log()
    );
    let list = dir.path().join("acked.txt");
    let lines: String = acked.iter().map(|(m, i)| format!("{m} {i}\n")).collect();
    std::fs::write(&list, lines).unwrap();
    let out = net.client_timeout(
        &[
            "python3",
            &script,
            &relay,
            &server,
            "verify",
            &list.to_string_lossy(),
            "20",
        ],
        Duration::from_secs(30),
    );
    let again = acks(&String::from_utf8_lossy(&out.stdout));
    for (mac, ip) in &acked {
        assert_eq!(
            again.get(mac),
            Some(ip),
            "{mac} was ACKed {ip} before the crash; after the restart: {:?}\n{}",
            again.get(mac),
            daemon.log()
        );
    }
    assert!(
        acked.len() < CLIENTS.parse::<usize>().unwrap(),
        "every client was bound before the kill: not a crash under load"
    );
    println!("{} acknowledged leases survived SIGKILL", acked.len());
    assert!(daemon.stop().success());
}
