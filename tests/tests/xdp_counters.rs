//! The XDP program classifies DHCP, PXE boot-server discovery (4011) and TFTP requests and
//! counts them in `pxe_xdp_frames_total{class=...}`. Root only.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use pxe_tests::{metric_value, root_or_skip, send_pxe_probes, Daemon, TestNet};

/// Requests sent per class.
const SENT_PER_CLASS: u32 = 5;
/// Frames `other` may gain from what the kernel sends by itself (ARP, ICMP); fewer than
/// [`SENT_PER_CLASS`], so one misclassified class shows.
const OTHER_SLACK_FRAMES: f64 = 4.0;
/// How long to wait for the counters to catch up.
const COUNTER_WAIT: Duration = Duration::from_secs(5);
/// Classes this test reads.
const CLASSES: [&str; 6] = [
    "dhcp",
    "pxe_discovery",
    "tftp",
    "tftp_transfer",
    "other",
    "malformed",
];

fn counters(daemon: &Daemon<'_>) -> BTreeMap<&'static str, f64> {
    let text = daemon.metrics();
    CLASSES
        .iter()
        .map(|&class| {
            let value = metric_value(&text, "pxe_xdp_frames_total", &[("class", class)]);
            (class, value.unwrap_or(0.0))
        })
        .collect()
}

fn deltas(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .map(|(class, v)| (*class, v - before.get(class).copied().unwrap_or(0.0)))
        .collect()
}

#[test]
fn requests_are_counted_by_class() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("counters");
    let daemon = Daemon::start(&net, &[]);
    let server_ip = net.server_ip().to_string();

    // Resolve ARP both ways first, so that little but the requests crosses the link later.
    let ping = net.client(&["busybox", "ping", "-c", "1", "-W", "1", &server_ip]);
    assert!(ping.status.success(), "client -> server ping: {ping:?}");
    let before = counters(&daemon);

    let out = send_pxe_probes(&net, SENT_PER_CLASS);
    assert!(out.status.success(), "sender failed: {out:?}");

    let sent = f64::from(SENT_PER_CLASS);
    let expected = [("dhcp", sent), ("pxe_discovery", sent), ("tftp", sent)];
    let deadline = Instant::now() + COUNTER_WAIT;
    let grown = loop {
        let grown = deltas(&before, &counters(&daemon));
        let done = expected.iter().all(|(class, n)| grown[class] >= *n);
        if done || Instant::now() >= deadline {
            break grown;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let sender = String::from_utf8_lossy(&out.stdout);
    println!("counter deltas: {grown:?}; sender: {}", sender.trim());
    for (class, n) in expected {
        assert!(
            grown[class] >= n,
            "pxe_xdp_frames_total{{class={class:?}}} grew by {}, expected at least {n}; \
             all deltas: {grown:?}; sender: {sender}",
            grown[class]
        );
    }
    assert!(
        grown["other"] <= OTHER_SLACK_FRAMES,
        "class other grew by {}: requests were misclassified? all deltas: {grown:?}",
        grown["other"]
    );
    assert_eq!(grown["malformed"], 0.0, "all deltas: {grown:?}");
    assert!(daemon.stop().success());
}
