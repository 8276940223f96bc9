//! `cargo xtask demo`: the daemon with its bundled boot tree in a pair of test namespaces, and a
//! client on the other side being answered.
//!
//! Today the client sends what a PXE ROM sends (DHCP DISCOVER, a boot-server request to 4011, a
//! TFTP read request), the XDP program on the server's interface classifies and counts them, and
//! the client reads the daemon's health and metrics over HTTP. The firmware-boot issue turns
//! this into a real QEMU machine booting.

use anyhow::{ensure, Context as _};
use pxe_tests::{metric_value, send_pxe_probes, workspace_root, Daemon, TestNet};

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// PXE requests of each kind the client sends.
    #[arg(long, default_value_t = 3)]
    requests: u32,
}

/// Classes of `pxe_xdp_frames_total`, in the order printed.
const CLASSES: [&str; 6] = [
    "dhcp",
    "pxe_discovery",
    "tftp",
    "tftp_transfer",
    "other",
    "malformed",
];

/// Runs the demo against the pxe-daemon that `cargo xtask demo` has just built.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "the demo makes network namespaces and attaches XDP: run it as root"
    );
    let root = workspace_root().join("examples/boot-root");
    let net = TestNet::new("demo");
    println!(
        "== namespaces {} (server {}) and {} (client {}), joined by a veth pair",
        net.server_ns(),
        net.server_ip(),
        net.client_ns(),
        net.client_ip()
    );
    let daemon = Daemon::start_with_root(&net, &root, &[]);
    println!(
        "== pxe-daemon running on {} with boot root {}",
        net.server_if(),
        root.display()
    );
    let link = net.server(&["ip", "-d", "link", "show", net.server_if()]);
    let link = String::from_utf8_lossy(&link.stdout);
    let xdp_line = link
        .lines()
        .find(|l| l.contains("prog/xdp"))
        .context("no XDP program on the server's interface")?;
    println!("   ip -d link: {}", xdp_line.trim());

    let before = daemon.metrics();
    println!(
        "== client sends {} PXE DHCPDISCOVERs, boot-server requests and TFTP read requests",
        args.requests
    );
    let sent = send_pxe_probes(&net, args.requests);
    ensure!(
        sent.status.success(),
        "client's PXE requests failed: {sent:?}"
    );

    let (status, body) = daemon.http_get("/healthz");
    println!(
        "== client GET {} -> {status} {}",
        daemon.url("/healthz"),
        body.trim()
    );
    ensure!(
        status == 200,
        "the daemon did not answer the client: {status} {body}"
    );

    let after = daemon.metrics();
    println!("== frames the XDP program classified (pxe_xdp_frames_total, during the demo):");
    for class in CLASSES {
        let label = [("class", class)];
        let was = metric_value(&before, "pxe_xdp_frames_total", &label).unwrap_or(0.0);
        let now = metric_value(&after, "pxe_xdp_frames_total", &label).unwrap_or(0.0);
        println!("   {class:<14} +{}", now - was);
    }
    let mode = ["driver", "skb"]
        .into_iter()
        .find(|m| metric_value(&after, "pxe_xdp_attach_mode", &[("mode", m)]) == Some(1.0))
        .unwrap_or("none");
    println!("   XDP attach mode: {mode}");

    let status = daemon.stop();
    let link = net.server(&["ip", "-d", "link", "show", net.server_if()]);
    let attached = String::from_utf8_lossy(&link.stdout).contains("prog/xdp");
    println!(
        "== pxe-daemon stopped ({status}); XDP program still attached: {}",
        if attached { "yes" } else { "no" }
    );
    ensure!(
        status.success() && !attached,
        "the daemon did not stop cleanly"
    );
    Ok(())
}
