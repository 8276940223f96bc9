//! 10,000 TFTP transfers in flight at once with bounded memory, and a clear refusal beyond
//! `tftp.max_transfers`. Root only.
//!
//! A client in the client namespace opens 10,000 transfers (one socket each) and never ACKs, so
//! they stay in flight until the server gives them up. The test reads the in-flight gauge and
//! the daemon's peak RSS (VmHWM), asks for one transfer more, then lets them all time out.

use std::time::{Duration, Instant};

use pxe_tests::{
    metric_value, root_or_skip,
    tftp::{pattern, spawn_tftp_py, BootRoot},
    Daemon, TestNet,
};

/// Transfers opened: the default `tftp.max_transfers`.
const TRANSFERS: u32 = 10_000;
/// Bound on the daemon's peak resident memory with all of them in flight (measured: about
/// 30 MiB, of which 15 MiB before the first request).
const MAX_RSS_KIB: u64 = 64 * 1024;
/// How long the test waits for each phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(20);

fn gauge(daemon: &Daemon<'_>, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&daemon.metrics(), name, labels).unwrap_or(-1.0)
}

/// `VmHWM` (peak RSS) and `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading the daemon's status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn ten_thousand_transfers_in_flight_with_bounded_memory() {
    if !root_or_skip() {
        return;
    }
    let boot = BootRoot::new(&[("nbp.efi", &pattern(1 << 20, 5))]);
    // Transfers that never see an ACK are given up after 1 s x (3 + 1).
    let config = boot.config("[tftp]\ntimeout_ms = 1000\nretries = 3\n");
    let net = TestNet::new("tftpscal");
    let daemon =
        Daemon::start_with_root(&net, &boot.root(), &["--config", &config.to_string_lossy()]);
    let pid = daemon.id().expect("the daemon runs");
    let (_, rss_idle) = rss_kib(pid);
    let started = Instant::now();
    let client = spawn_tftp_py(
        &net,
        &[
            "scale",
            &net.server_ip().to_string(),
            "nbp.efi",
            &TRANSFERS.to_string(),
        ],
    );

    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut in_flight = 0.0;
    while Instant::now() < deadline {
        in_flight = gauge(&daemon, "pxe_tftp_transfers_in_flight", &[]);
        if in_flight >= f64::from(TRANSFERS) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reached = started.elapsed();
    let (hwm, rss) = rss_kib(pid);
    println!(
        "{in_flight} transfers in flight after {:.2}s; daemon RSS {rss} KiB (idle {rss_idle} KiB, peak {hwm} KiB)",
        reached.as_secs_f64()
    );
    assert_eq!(
        in_flight,
        f64::from(TRANSFERS),
        "client log:\n{}",
        client.log()
    );
    assert!(
        hwm <= MAX_RSS_KIB,
        "peak RSS {hwm} KiB above the {MAX_RSS_KIB} KiB bound"
    );

    // The client's request beyond the cap is refused with a clear message.
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let summary = loop {
        let log = client.log();
        if let Some(line) = log.lines().find(|l| l.contains("extra_reply")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "client gave no summary:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("client: {summary}");
    assert!(
        summary.contains(&format!("\"answered\": {TRANSFERS}")),
        "{summary}"
    );
    assert!(
        summary.contains("\"extra_reply\": [5, 0, \"server busy: 10000 transfers in flight (max_transfers), try again\"]"),
        "{summary}"
    );
    assert_eq!(
        gauge(
            &daemon,
            "pxe_tftp_requests_refused_total",
            &[("reason", "busy")]
        ),
        1.0
    );

    // The client goes; every transfer is given up and memory is released to the allocator.
    drop(client);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while gauge(&daemon, "pxe_tftp_transfers_in_flight", &[]) > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = daemon.metrics();
    assert_eq!(
        metric_value(&text, "pxe_tftp_transfers_in_flight", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "pxe_tftp_transfers_failed_total",
            &[("reason", "timeout")]
        ),
        Some(f64::from(TRANSFERS)),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "pxe_tftp_cache_fills_total", &[]),
        Some(1.0),
        "{text}"
    );
    println!("all given up after {:.2}s", started.elapsed().as_secs_f64());
    assert!(daemon.stop().success());
}
