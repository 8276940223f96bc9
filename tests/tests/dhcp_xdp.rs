//! DHCP over the AF_XDP datapath (`--datapath xdp`), with the real clients of the DHCP tests,
//! in the namespaces. Root only.
//!
//! Each test shows the packets went through AF_XDP: the datapath's frame counters
//! (`pxe_afxdp_frames_total`) grew by at least what the clients sent and the daemon answered,
//! and the XDP program counted them as steered. And `--datapath auto` where AF_XDP cannot bind
//! (zero-copy required on a veth, which only does copy mode) falls back to kernel sockets and
//! still answers, while `--datapath xdp` refuses to start there.

use std::time::Duration;

use pxe_tests::{
    by_server, existing_daemon_bin, full_dhcp_config, full_mode_clients, metric_sum, metric_value,
    pxe_client_on, request_4011, root_or_skip, site_dhcp_on, Daemon, SiteHost, TestNet,
    SITE_BRIDGE,
};

/// `dhcp.reply_delay_ms` of the proxy test.
const REPLY_DELAY_MS: u32 = 400;

/// The counters that show the path DHCP took, read from one metrics page.
struct Path {
    datapath_xdp: f64,
    rx: f64,
    tx: f64,
    requests: f64,
    replies: f64,
    steered: f64,
}

fn path(metrics: &str) -> Path {
    let get = |name: &str, labels: &[(&str, &str)]| metric_value(metrics, name, labels);
    Path {
        datapath_xdp: get("pxe_datapath_info", &[("datapath", "xdp")]).unwrap_or(-1.0),
        rx: get(
            "pxe_afxdp_frames_total",
            &[("direction", "rx"), ("service", "dhcp")],
        )
        .unwrap_or(0.0),
        tx: get(
            "pxe_afxdp_frames_total",
            &[("direction", "tx"), ("service", "dhcp")],
        )
        .unwrap_or(0.0),
        requests: metric_sum(metrics, "pxe_dhcp_requests_total", &[]),
        replies: metric_sum(metrics, "pxe_dhcp_replies_total", &[]),
        steered: metric_sum(metrics, "pxe_xdp_verdicts_total", &[("verdict", "steer")]),
    }
}

#[test]
fn full_mode_over_af_xdp_serves_nmap_dhclient_and_udhcpc() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dxfull");
    let dir = tempfile::tempdir().unwrap();
    let config = full_dhcp_config(&net, dir.path(), (100, 199), 600, "");
    let daemon = Daemon::start(
        &net,
        &["--config", &config.to_string_lossy(), "--datapath", "xdp"],
    );

    full_mode_clients(&net, &daemon, dir.path());

    let metrics = daemon.metrics();
    let p = path(&metrics);
    assert_eq!(p.datapath_xdp, 1.0, "pxe_datapath_info{{datapath=xdp}}");
    // nmap's DISCOVER, dhclient's DISCOVER and REQUEST, udhcpc's DISCOVER and REQUEST.
    assert!(p.requests >= 5.0, "DHCP requests counted: {}", p.requests);
    assert!(
        p.rx >= p.requests,
        "AF_XDP received {} DHCP frames, fewer than the {} requests handled",
        p.rx,
        p.requests
    );
    // An offer each and two ACKs, all through the AF_XDP TX ring.
    assert!(p.replies >= 5.0, "DHCP replies: {}", p.replies);
    assert_eq!(p.tx, p.replies, "every reply left as an AF_XDP frame");
    assert!(
        p.steered >= p.requests,
        "XDP steered {} frames for {} requests",
        p.steered,
        p.requests
    );
    // TFTP stays on kernel sockets until its frame service exists.
    let tftp_steered = metric_sum(
        &metrics,
        "pxe_xdp_verdicts_total",
        &[("class", "tftp"), ("verdict", "steer")],
    );
    assert_eq!(tftp_steered, 0.0);
    assert!(daemon.stop().success());
}

#[test]
fn proxy_over_af_xdp_beside_the_site_dhcp_server() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dxprox");
    // The site server sits on the client's segment, not on the server host: XDP takes the
    // steered PXE frames before the server's kernel (and anything listening there) sees them.
    let site_host = SiteHost::new(&net);
    let site = site_dhcp_on(&net, &site_host);
    // The reply delay holds replies in the datapath thread's queue of pending replies.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("delay.toml");
    std::fs::write(
        &config,
        format!("[dhcp]\nreply_delay_ms = {REPLY_DELAY_MS}\n"),
    )
    .unwrap();
    let daemon = Daemon::start(
        &net,
        &["--config", &config.to_string_lossy(), "--datapath", "xdp"],
    );
    let server = net.server_ip().to_string();

    let offers = pxe_client_on(&net, SITE_BRIDGE, "bios");
    let ours = by_server(&offers, &server)
        .unwrap_or_else(|| panic!("no offer from the server: {offers:?}\n{}", site.log()));
    let site_offer = by_server(&offers, &site_host.ip().to_string())
        .unwrap_or_else(|| panic!("no offer from the site server: {offers:?}\n{}", site.log()));
    assert_ne!(site_offer["yiaddr"], "0.0.0.0", "{site_offer}");
    let after = |o: &serde_json::Value| o["after_secs"].as_f64().unwrap_or(-1.0);
    let delay_secs = f64::from(REPLY_DELAY_MS) / 1000.0;
    assert!(
        after(ours) >= delay_secs * 0.9,
        "proxy offer came after {} s, before the {REPLY_DELAY_MS} ms delay",
        after(ours)
    );
    assert!(
        after(site_offer) < after(ours),
        "the site's offer ({} s) should come before ours ({} s)",
        after(site_offer),
        after(ours)
    );
    let proxy = offers
        .iter()
        .find(|o| o["yiaddr"] == "0.0.0.0")
        .unwrap_or_else(|| panic!("no proxy offer: {offers:?}"));
    assert_eq!(proxy["file"], "undionly.kpxe", "{proxy}");
    assert_eq!(ours["server_id"], server);

    let out = request_4011(&net);
    assert!(
        out.status.success(),
        "no answer on 4011: {out:?}\n{}",
        daemon.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{server} 4011 5 ipxe.efi")
    );

    let metrics = daemon.metrics();
    let p = path(&metrics);
    assert_eq!(p.datapath_xdp, 1.0, "pxe_datapath_info{{datapath=xdp}}");
    // The DISCOVER and the 4011 REQUEST came in over AF_XDP, the offer and the ACK left so.
    assert!(p.rx >= 2.0, "AF_XDP DHCP frames received: {}", p.rx);
    assert!(p.tx >= 2.0, "AF_XDP DHCP frames sent: {}", p.tx);
    assert_eq!(p.tx, p.replies, "every reply left as an AF_XDP frame");
    for class in ["dhcp", "pxe_discovery"] {
        let steered = metric_value(
            &metrics,
            "pxe_xdp_verdicts_total",
            &[("class", class), ("verdict", "steer")],
        )
        .unwrap_or(0.0);
        assert!(steered >= 1.0, "{class} frames steered: {steered}");
    }
    drop(site);
    assert!(daemon.stop().success());
}

#[test]
fn auto_falls_back_to_kernel_sockets_where_af_xdp_cannot_bind() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dxauto");
    let dir = tempfile::tempdir().unwrap();
    // A veth does AF_XDP in copy mode only: a zero-copy bind fails there as on any driver
    // without zero-copy support.
    let config = dir.path().join("zerocopy.toml");
    std::fs::write(&config, "[xdp]\nbind = \"zerocopy\"\n").unwrap();
    let config = config.to_string_lossy().into_owned();

    let daemon = Daemon::start(&net, &["--config", &config, "--datapath", "auto"]);
    let out = request_4011(&net);
    assert!(
        out.status.success(),
        "no answer on 4011 after the fallback: {out:?}\n{}",
        daemon.log()
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metric_value(&metrics, "pxe_datapath_info", &[("datapath", "kernel")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pxe_afxdp_frames_total",
            &[("direction", "rx"), ("service", "dhcp")]
        )
        .unwrap_or(0.0),
        0.0
    );
    let log = daemon.log();
    assert!(
        log.contains("AF_XDP datapath not available"),
        "no fallback warning:\n{log}"
    );
    assert!(daemon.stop().success());

    // Forced, the same setting is an error at start, saying why.
    let bin = existing_daemon_bin();
    let root = dir.path().to_string_lossy().into_owned();
    let out = net.server_timeout(
        &[
            &bin.to_string_lossy(),
            "run",
            "--interface",
            net.server_if(),
            "--root",
            &root,
            "--http-listen",
            &format!("{}:8080", net.server_ip()),
            "--config",
            &config,
            "--datapath",
            "xdp",
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {out:?}");
    assert!(
        stderr.contains("AF_XDP") && stderr.contains("zero-copy"),
        "error does not say why: {stderr}"
    );
}
