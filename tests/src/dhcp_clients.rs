//! DHCP clients and checks shared by the DHCP tests of both datapaths (kernel sockets and
//! AF_XDP): the scapy PXE client, dnsmasq as the site server, a port-4011 request, and the
//! full-mode run of nmap, dhclient and udhcpc.

use std::{path::Path, process::Output, time::Duration};

use crate::{workspace_root, Daemon, Dnsmasq, SiteHost, TestNet};

/// How long the scapy client listens for offers.
pub const OFFER_WAIT_SECS: &str = "2";

/// Runs the scapy PXE client of `kind` from the client namespace; one JSON value per offer.
pub fn pxe_client(net: &TestNet, kind: &str) -> Vec<serde_json::Value> {
    pxe_client_on(net, net.client_if(), kind)
}

/// Like [`pxe_client`], sending and listening on `interface` of the client namespace.
pub fn pxe_client_on(net: &TestNet, interface: &str, kind: &str) -> Vec<serde_json::Value> {
    let script = workspace_root().join("tests/scripts/pxe_client.py");
    let out = net.client(&[
        "python3",
        &script.to_string_lossy(),
        interface,
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
pub fn site_dhcp(net: &TestNet) -> Dnsmasq {
    Dnsmasq::start(net, &[&site_range(net)])
}

/// dnsmasq as the site's DHCP server as [`site_dhcp`], on the third host of the client's
/// segment: for a server whose XDP program takes PXE frames before its kernel sees them.
pub fn site_dhcp_on(net: &TestNet, site: &SiteHost) -> Dnsmasq {
    Dnsmasq::start_on_site(site, &[&site_range(net)])
}

/// The site server's address range: .100-.150 of the test subnet.
fn site_range(net: &TestNet) -> String {
    let [a, b, c, _] = net.server_ip().octets();
    format!("dhcp-range={a}.{b}.{c}.100,{a}.{b}.{c}.150,5m")
}

/// The offer that came from `src`.
pub fn by_server<'a>(offers: &'a [serde_json::Value], src: &str) -> Option<&'a serde_json::Value> {
    offers.iter().find(|o| o["src"] == src)
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

/// Sends one boot-server DHCPREQUEST to the server's port 4011 from the client's address;
/// stdout is "SRC PORT TYPE FILE" of the answer.
pub fn request_4011(net: &TestNet) -> Output {
    net.client_timeout(
        &[
            "python3",
            "-c",
            REQUEST_4011_PY,
            &net.client_ip().to_string(),
            &net.server_ip().to_string(),
        ],
        Duration::from_secs(10),
    )
}

/// Full mode from the client namespace: nmap's broadcast-dhcp-discover shows the server, the
/// TFTP server name and the boot file; dhclient and then busybox udhcpc get a lease from the
/// pool .100-.199. `dir` holds dhclient's files. Panics with the daemon's log on failure.
pub fn full_mode_clients(net: &TestNet, daemon: &Daemon<'_>, dir: &Path) {
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
    let lease_file = dir.join("dhclient.leases");
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
            &dir.join("dhclient.pid").to_string_lossy(),
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
        &dir.join("dhclient.pid").to_string_lossy(),
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
}
