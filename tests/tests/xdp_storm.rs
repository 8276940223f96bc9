//! Storm shedding: one MAC flooding DISCOVERs is limited by the XDP program while another
//! client is still answered. Root only.

use pxe_tests::{metric_value, root_or_skip, workspace_root, Daemon, TestNet};

/// DISCOVERs the flooding MAC sends.
const FLOOD: u32 = 400;

/// Sends COUNT PXE DHCPDISCOVERs from one chaddr as fast as it can. argv: IFNAME COUNT.
const FLOOD_PY: &str = r#"
import socket, struct, sys
ifname, count = sys.argv[1], int(sys.argv[2])
chaddr = bytes.fromhex("02f100d0000f") + bytes(10)
vendor = b"PXEClient:Arch:00000:UNDI:002001"
def discover(xid):
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4),
                        bytes(4), bytes(4), bytes(4), chaddr, bytes(64), bytes(128))
    return bootp + bytes([99, 130, 83, 99, 53, 1, 1, 60, len(vendor)]) + vendor + bytes([255])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())
for i in range(count):
    s.sendto(discover(0x5f000000 + i), ("255.255.255.255", 67))
print("sent", count)
"#;

#[test]
fn a_flooding_mac_is_limited_while_others_are_answered() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("storm");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("storm.toml");
    std::fs::write(
        &config,
        "[xdp]\nmode = \"driver\"\nrate_limit_pps = 5\nrate_burst = 10\n",
    )
    .unwrap();
    let daemon = Daemon::start(&net, &["--config", &config.to_string_lossy()]);

    let count = FLOOD.to_string();
    let out = net.client(&["python3", "-c", FLOOD_PY, net.client_if(), &count]);
    assert!(out.status.success(), "flood: {out:?}");

    // Another machine boots in the middle of it.
    let script = workspace_root().join("tests/scripts/pxe_client.py");
    let out = net.client(&[
        "python3",
        &script.to_string_lossy(),
        net.client_if(),
        "bios",
        "2",
    ]);
    let offers = String::from_utf8_lossy(&out.stdout);
    assert!(
        offers.contains("undionly.kpxe"),
        "the other client got no offer: {offers}\n{}",
        daemon.log()
    );

    let m = daemon.metrics();
    let limited = metric_value(
        &m,
        "pxe_xdp_verdicts_total",
        &[("class", "dhcp"), ("verdict", "rate_limited")],
    )
    .unwrap_or(0.0);
    let discovers = metric_value(
        &m,
        "pxe_dhcp_requests_total",
        &[("type", "discover"), ("firmware", "bios")],
    )
    .unwrap_or(0.0);
    println!(
        "flood of {FLOOD}: {limited} dropped by XDP, {discovers} DISCOVERs reached the daemon"
    );
    // The bucket lets through its burst (10 + 1) and 5 a second while the flood lasts.
    assert!(
        limited >= f64::from(FLOOD) - 60.0,
        "only {limited} of {FLOOD} dropped"
    );
    assert!(
        discovers <= 60.0,
        "{discovers} DISCOVERs reached the daemon"
    );
    assert!(daemon.stop().success());
}
