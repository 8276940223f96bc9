//! PXE DHCP with real clients, in the namespaces. Root only.
//!
//! - proxy mode beside a site DHCP server (dnsmasq, addresses only): a scapy-built PXE client
//!   sees both offers, each kind of firmware gets its boot file, a port-4011 request is ACKed;
//! - full mode: nmap's broadcast-dhcp-discover shows the TFTP server and boot file, dhclient and
//!   udhcpc get leases.

use std::time::Duration;

use pxe_tests::{
    full_dhcp_config, metric_value, root_or_skip, workspace_root, Daemon, Dnsmasq, TestNet,
};

/// How long the scapy client listens for offers.
const OFFER_WAIT_SECS: &str = "2";

fn pxe_client(net: &TestNet, kind: &str) -> Vec<serde_json::Value> {
    let script = workspace_root().join("tests/scripts/pxe_client.py");
    let out = net.client(&[
        "python3",
        &script.to_string_lossy(),
        net.client_if(),
        kind,
        OFFER_WAIT_SECS,
    ]);
    assert!(
        out.status.success(),
        "pxe_client.py {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

/// dnsmasq as the site's DHCP server: addresses only, no boot options, in the server
/// namespace on the test veth.
fn site_dhcp(net: &TestNet) -> Dnsmasq {
    let [a, b, c, _] = net.server_ip().octets();
    Dnsmasq::start(
        net,
        &[&format!("dhcp-range={a}.{b}.{c}.100,{a}.{b}.{c}.150,5m")],
    )
}

fn by_server<'a>(offers: &'a [serde_json::Value], src: &str) -> Option<&'a serde_json::Value> {
    offers.iter().find(|o| o["src"] == src)
}

#[test]
fn proxy_answers_each_firmware_beside_the_site_dhcp_server() {
    if !root_or_skip("proxy_answers_each_firmware_beside_the_site_dhcp_server") {
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
    if !root_or_skip("reply_delay_holds_the_proxy_offer_back") {
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

/// The boot-server discovery step UEFI firmware takes: a DHCPREQUEST to the proxy's port 4011
/// from the client's new address, answered with a DHCPACK carrying the boot file.
const REQUEST_4011_PY: &str = r#"
import socket, struct, sys
client, server = sys.argv[1], sys.argv[2]
vendor = b"PXEClient:Arch:00007:UNDI:003016"
chaddr = bytes.fromhex("525400aa0007") + bytes(10)
bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x4011, 0, 0,
                    socket.inet_aton(client), bytes(4), bytes(4), bytes(4), chaddr, bytes(64), bytes(128))
opts = bytes([53, 1, 3, 60, len(vendor)]) + vendor + bytes([93, 2, 0, 7, 255])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((client, 68))
s.settimeout(3)
s.sendto(bootp + bytes([99, 130, 83, 99]) + opts, (server, 4011))
data, src = s.recvfrom(2048)
i, msg_type = 240, None
while i < len(data) and data[i] != 255:
    if data[i] == 0:
        i += 1
        continue
    if data[i] == 53:
        msg_type = data[i + 2]
    i += 2 + data[i + 1]
print(src[0], src[1], msg_type, data[108:236].rstrip(b"\0").decode())
"#;

#[test]
fn port_4011_request_is_acked_with_the_boot_file() {
    if !root_or_skip("port_4011_request_is_acked_with_the_boot_file") {
        return;
    }
    let net = TestNet::new("dhcp4011");
    let daemon = Daemon::start(&net, &[]);
    let server = net.server_ip().to_string();
    let out = net.client_timeout(
        &[
            "python3",
            "-c",
            REQUEST_4011_PY,
            &net.client_ip().to_string(),
            &server,
        ],
        Duration::from_secs(10),
    );
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
    if !root_or_skip("full_mode_serves_nmap_dhclient_and_udhcpc") {
        return;
    }
    let net = TestNet::new("dhcpfull");
    let dir = tempfile::tempdir().unwrap();
    let config = full_dhcp_config(&net, dir.path(), (100, 199), 600, "");
    let daemon = Daemon::start(&net, &["--config", &config.to_string_lossy()]);
    let server = net.server_ip().to_string();
    let [a, b, c, _] = net.server_ip().octets();
    // Every address of the range .100-.199 starts so.
    let pool = format!("{a}.{b}.{c}.1");

    // The check operators are told to run.
    let out = net.client_timeout(
        &[
            "nmap",
            "-e",
            net.client_if(),
            "--script",
            "broadcast-dhcp-discover",
            "--script-args",
            "broadcast-dhcp-discover.timeout=3",
        ],
        Duration::from_secs(30),
    );
    let nmap = String::from_utf8_lossy(&out.stdout);
    assert!(
        nmap.contains(&format!("Server Identifier: {server}")),
        "nmap:\n{nmap}\n{}",
        daemon.log()
    );
    assert!(
        nmap.contains(&format!("TFTP Server Name: {server}")),
        "nmap:\n{nmap}"
    );
    assert!(
        nmap.contains("Bootfile Name: undionly.kpxe"),
        "nmap:\n{nmap}"
    );
    assert!(
        nmap.contains(&format!("IP Offered: {a}.{b}.{c}.1")),
        "nmap:\n{nmap}"
    );

    // dhclient: a whole DORA exchange; -sf /bin/true keeps it from reconfiguring the link.
    let lease_file = dir.path().join("dhclient.leases");
    let out = net.client_timeout(
        &[
            "dhclient",
            "-1",
            "-v",
            "-sf",
            "/bin/true",
            "-lf",
            &lease_file.to_string_lossy(),
            "-pf",
            &dir.path().join("dhclient.pid").to_string_lossy(),
            net.client_if(),
        ],
        Duration::from_secs(30),
    );
    let dhclient = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dhclient failed:\n{dhclient}\n{}",
        daemon.log()
    );
    assert!(
        dhclient.contains(&format!("bound to {pool}")),
        "dhclient:\n{dhclient}"
    );
    let _ = net.client(&[
        "dhclient",
        "-x",
        "-pf",
        &dir.path().join("dhclient.pid").to_string_lossy(),
    ]);

    // busybox udhcpc: the same machine asks again, and keeps its address.
    let out = net.client_timeout(
        &[
            "busybox",
            "udhcpc",
            "-i",
            net.client_if(),
            "-n",
            "-q",
            "-f",
            "-s",
            "/bin/true",
            "-x",
            "hostname:udhcpc-test",
        ],
        Duration::from_secs(30),
    );
    let udhcpc = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "udhcpc failed:\n{udhcpc}\n{}",
        daemon.log()
    );
    assert!(
        udhcpc.contains(&format!("lease of {pool}")),
        "udhcpc:\n{udhcpc}"
    );

    let metrics = daemon.metrics();
    let acks = metric_value(&metrics, "pxe_dhcp_replies_total", &[("type", "ack")]).unwrap_or(0.0);
    assert!(acks >= 2.0, "ACKs sent: {acks}");
    assert!(daemon.stop().success());
}
