//! The daemon attaches its XDP program to the server interface, reports the mode in /metrics,
//! and detaches it on SIGTERM. Root only.

use pxe_tests::{metric_value, root_or_skip, Daemon, TestNet};

/// `ip -d link show` of the server interface, from inside the server namespace.
fn link_details(net: &TestNet) -> String {
    let out = net.server(&["ip", "-d", "link", "show", "dev", net.server_if()]);
    assert!(out.status.success(), "ip -d link show: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The XDP attach flag iproute2 prints after `mtu N` on a link's first line: `xdp` (driver),
/// `xdpgeneric` (skb), `xdpoffload` or `xdpmulti`. (With one program attached, iproute2 6.1
/// prints `prog/xdp id N` on the details line whatever the mode, so that line does not tell.)
fn xdp_flag(link: &str) -> Option<&str> {
    link.lines()
        .next()?
        .split_whitespace()
        .find(|word| word.starts_with("xdp"))
}

/// Starts the daemon with `args`, expects the link flag `ip_flag` in `ip -d link` and attach
/// mode `mode` in /metrics, then stops it and expects no XDP program left.
fn attach_and_detach(tag: &str, args: &[&str], ip_flag: &str, mode: &str) {
    let net = TestNet::new(tag);
    let daemon = Daemon::start(&net, args);

    let link = link_details(&net);
    assert_eq!(
        xdp_flag(&link),
        Some(ip_flag),
        "XDP attach flag in:\n{link}"
    );
    assert!(
        link.contains("prog/xdp id"),
        "no XDP program id in:\n{link}"
    );
    // HTTP from the client crosses the veth, so the program passes what it does not serve.
    let (status, body) = daemon.http_get("/healthz");
    assert_eq!(
        (status, body.trim()),
        (200, "ok"),
        "GET /healthz from the client"
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metric_value(&metrics, "pxe_xdp_attach_mode", &[("mode", mode)]),
        Some(1.0),
        "pxe_xdp_attach_mode{{mode={mode:?}}} should be 1:\n{metrics}"
    );
    for other in ["driver", "skb", "none"].into_iter().filter(|m| *m != mode) {
        let value = metric_value(&metrics, "pxe_xdp_attach_mode", &[("mode", other)]);
        assert!(
            value.is_none_or(|v| v == 0.0),
            "mode {other} should not be active:\n{metrics}"
        );
    }

    let (status, log) = daemon.stop_with_log();
    assert_eq!(
        status.code(),
        Some(0),
        "pxe-daemon exit after SIGTERM: {status}\n{log}"
    );
    let link = link_details(&net);
    assert!(
        xdp_flag(&link).is_none() && !link.contains("prog/xdp"),
        "XDP program still attached after the daemon stopped:\n{link}\n--- log ---\n{log}"
    );
}

#[test]
fn auto_mode_attaches_in_driver_mode_on_veth() {
    if !root_or_skip() {
        return;
    }
    attach_and_detach("attach", &[], "xdp", "driver");
}

#[test]
fn skb_mode_attaches_generic_xdp() {
    if !root_or_skip() {
        return;
    }
    attach_and_detach("attachs", &["--xdp-mode", "skb"], "xdpgeneric", "skb");
}
