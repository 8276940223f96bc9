//! PXE DHCP with real clients, in the namespaces. Root only.
//!
//! - proxy mode beside a site DHCP server (dnsmasq, addresses only): a scapy-built PXE client
//!   sees both offers, each kind of firmware gets its boot file, a port-4011 request is ACKed;
//! - full mode: nmap's broadcast-dhcp-discover shows the TFTP server and boot file, dhclient and
//!   udhcpc get leases.

use pxe_tests::{
    by_server, full_dhcp_config, full_mode_clients, metric_value, pxe_client, request_4011,
    root_or_skip, site_dhcp, Daemon, TestNet,
};

#[test]
fn proxy_answers_each_firmware_beside_the_site_dhcp_server() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dhcpprox");
    let site = site_dhcp(&net);
    let daemon = Daemon::start(&net, &[]);
    let server = net.server_ip().to_string();

    let offers = pxe_client(&net, "bios");
    let ours = by_server(&offers, &server).unwrap_or_else(|| {
        panic!(
            "no offer from the server at all: {offers:?}\nsite: {}",
            site.log()
        )
    });
    // Two servers on one host: dnsmasq's offer carries an address, ours none.
    let site_offer = offers
        .iter()
        .find(|o| o["yiaddr"] != "0.0.0.0")
        .unwrap_or_else(|| {
            panic!(
                "no address offer from the site DHCP server: {offers:?}\n{}",
                site.log()
            )
        });
    assert_eq!(
        site_offer["file"], "",
        "the site server hands out no boot file"
    );
    let proxy = offers
        .iter()
        .find(|o| o["yiaddr"] == "0.0.0.0")
        .unwrap_or_else(|| panic!("no proxy offer: {offers:?}"));
    assert_eq!(proxy["file"], "undionly.kpxe", "{proxy}");
    assert_eq!(proxy["siaddr"], server, "{proxy}");
    assert_eq!(proxy["vendor"], "PXEClient", "{proxy}");
    assert_eq!(ours["server_id"], server);

    let proxy_of = |kind: &str| -> serde_json::Value {
        let offers = pxe_client(&net, kind);
        offers
            .into_iter()
            .find(|o| o["yiaddr"] == "0.0.0.0")
            .unwrap_or_else(|| panic!("{kind}: no proxy offer\n{}", daemon.log()))
    };
    assert_eq!(proxy_of("uefi")["file"], "ipxe.efi");
    let http = proxy_of("http");
    assert_eq!(http["vendor"], "HTTPClient");
    assert_eq!(http["file"], format!("http://{server}:8080/ipxe.efi"));
    // iPXE gets its script, never the NBP: no chainloading loop.
    assert_eq!(
        proxy_of("ipxe")["file"],
        format!("http://{server}:8080/boot.ipxe")
    );

    // A plain DHCP client gets only the site server's offer.
    let plain = pxe_client(&net, "plain");
    assert!(
        plain.iter().all(|o| o["yiaddr"] != "0.0.0.0"),
        "proxy answered a non-PXE client: {plain:?}"
    );
    assert!(
        !plain.is_empty(),
        "the site server did not answer the plain client"
    );

    let metrics = daemon.metrics();
    let offers_sent =
        metric_value(&metrics, "pxe_dhcp_replies_total", &[("type", "offer")]).unwrap_or(0.0);
    assert!(
        offers_sent >= 4.0,
        "pxe_dhcp_replies_total{{type=offer}} = {offers_sent}"
    );
    let not_pxe =
        metric_value(&metrics, "pxe_dhcp_ignored_total", &[("reason", "not_pxe")]).unwrap_or(0.0);
    assert!(
        not_pxe >= 1.0,
        "plain client not counted as ignored: {not_pxe}"
    );
    drop(site);
    assert!(daemon.stop().success());
}

#[test]
fn reply_delay_holds_the_proxy_offer_back() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dhcpdly");
    let dir = tempfile::tempdir().unwrap();
    let site = site_dhcp(&net);
    let config = dir.path().join("delay.toml");
    std::fs::write(&config, "[dhcp]\nreply_delay_ms = 600\n").unwrap();
    let daemon = Daemon::start(&net, &["--config", &config.to_string_lossy()]);
    let offers = pxe_client(&net, "bios");
    let after = |pred: &dyn Fn(&serde_json::Value) -> bool| -> f64 {
        offers
            .iter()
            .find(|o| pred(o))
            .and_then(|o| o["after_secs"].as_f64())
            .unwrap_or_else(|| panic!("offer missing: {offers:?}\n{}", site.log()))
    };
    let ours = after(&|o| o["yiaddr"] == "0.0.0.0");
    let site_offer = after(&|o| o["yiaddr"] != "0.0.0.0");
    assert!(
        ours >= 0.55,
        "proxy offer came after {ours} s, before the 600 ms delay"
    );
    assert!(
        site_offer < ours,
        "the site's offer ({site_offer} s) should come first ({ours} s)"
    );
    drop(site);
    assert!(daemon.stop().success());
}

#[test]
fn port_4011_request_is_acked_with_the_boot_file() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dhcp4011");
    let daemon = Daemon::start(&net, &[]);
    let server = net.server_ip().to_string();
    let out = request_4011(&net);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "no answer on 4011: {out:?}\n{}",
        daemon.log()
    );
    // DHCPACK (5) from the server's port 4011, with the UEFI NBP.
    assert_eq!(stdout.trim(), format!("{server} 4011 5 ipxe.efi"));
    assert!(daemon.stop().success());
}

#[test]
fn full_mode_serves_nmap_dhclient_and_udhcpc() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("dhcpfull");
    let dir = tempfile::tempdir().unwrap();
    let config = full_dhcp_config(&net, dir.path(), (100, 199), 600, "");
    let daemon = Daemon::start(&net, &["--config", &config.to_string_lossy()]);
    full_mode_clients(&net, &daemon, dir.path());

    let metrics = daemon.metrics();
    let acks = metric_value(&metrics, "pxe_dhcp_replies_total", &[("type", "ack")]).unwrap_or(0.0);
    assert!(acks >= 2.0, "ACKs sent: {acks}");
    assert!(daemon.stop().success());
}
