//! A small rack boots through the whole chain against the daemon: 50 simulated machines
//! (`pxe-bench rack`: BIOS, UEFI and UEFI HTTP Boot firmware, each its own MAC, DHCP from raw
//! frames, firmware-like TFTP, then iPXE's DHCP, the script, kernel and initrd over HTTP),
//! with the daemon as proxy-DHCP beside a site DHCP server (dnsmasq), and as the full DHCP
//! server, on kernel sockets and on the AF_XDP datapath. Every machine must boot, every stage
//! must be timed, every byte must arrive. Root only.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use pxe_tests::{
    full_dhcp_config, metric_value, root_or_skip, workspace_root, Daemon, Dnsmasq, SiteHost,
    TestNet, SITE_BRIDGE,
};

/// Machines in the rack.
const MACHINES: u64 = 50;
/// Bound on the simulator's run (it stops the machines still booting at it).
const DEADLINE_SECS: u64 = 40;
/// Sizes of the boot files: Debian's undionly.kpxe and snponly.efi, a small kernel and initrd.
const NBP_BIOS_BYTES: usize = 74_213;
const NBP_EFI_BYTES: usize = 173_792;
const KERNEL_BYTES: usize = 1 << 20;
const INITRD_BYTES: usize = 3 << 20;

/// The pxe-bench binary: `$PXE_BENCH_BIN`, else beside the daemon the tests run.
fn bench_bin() -> PathBuf {
    let bin = std::env::var_os("PXE_BENCH_BIN").map_or_else(
        || {
            pxe_tests::daemon_bin()
                .parent()
                .map_or_else(|| workspace_root().join("target/debug"), Path::to_path_buf)
                .join("pxe-bench")
        },
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "pxe-bench not found at {} (cargo build -p pxe-bench, or set PXE_BENCH_BIN)",
        bin.display()
    );
    bin
}

/// A boot root with the NBPs, a kernel and an initrd, and a config whose default profile boots
/// them; `extra` is appended to the config.
fn boot_root(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    for (name, len, byte) in [
        ("undionly.kpxe", NBP_BIOS_BYTES, 1u8),
        ("ipxe.efi", NBP_EFI_BYTES, 2),
        ("assets/vmlinuz", KERNEL_BYTES, 3),
        ("assets/initrd.img", INITRD_BYTES, 4),
    ] {
        std::fs::write(root.join(name), vec![byte; len]).unwrap();
    }
    let config = dir.join("pxe.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\ndefault_profile = \"rack\"\n\n[[profile]]\nname = \"rack\"\nkernel = \"assets/vmlinuz\"\n\
             initrd = [\"assets/initrd.img\"]\nargs = \"console=ttyS0\"\n{extra}"
        ),
    )
    .unwrap();
    (root, config)
}

/// Runs the rack from the client namespace, on `interface`, and returns its JSON report.
fn run_rack(net: &TestNet, interface: &str, dir: &Path, label: &str) -> serde_json::Value {
    let json = dir.join("rack.json");
    let machines = MACHINES.to_string();
    let deadline = DEADLINE_SECS.to_string();
    let bin = bench_bin();
    let out = net.client_timeout(
        &[
            &bin.to_string_lossy(),
            "rack",
            "--interface",
            interface,
            "--machines",
            &machines,
            "--mix",
            "bios=1,uefi=1,uefi-http=1",
            "--spread-secs",
            "1",
            "--deadline-secs",
            &deadline,
            "--label",
            label,
            "--progress",
            "off",
            "--json",
            &json.to_string_lossy(),
        ],
        Duration::from_secs(DEADLINE_SECS + 20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no report ({e}); pxe-bench said:\n{stdout}{stderr}"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    assert!(
        out.status.success(),
        "pxe-bench rack failed ({}):\n{stdout}{stderr}",
        out.status
    );
    report
}

/// Every machine booted, every stage timed for each, every byte received.
fn check_report(report: &serde_json::Value) {
    let summary = &report["summary"];
    assert_eq!(summary["machines"], MACHINES, "{summary}");
    assert_eq!(
        summary["booted"], MACHINES,
        "failures: {}",
        summary["failures"]
    );
    assert_eq!(summary["failed"], 0);
    assert!(summary["all_booted_secs"].as_f64().unwrap() > 0.0);
    for stage in summary["stages"].as_array().unwrap() {
        assert_eq!(stage["count"], MACHINES, "stage {stage}");
        assert!(stage["p50"].as_f64().unwrap() <= stage["max"].as_f64().unwrap());
    }
    let machines = report["machines"].as_array().unwrap();
    assert_eq!(machines.len() as u64, MACHINES);
    let mut macs: Vec<&str> = machines
        .iter()
        .map(|m| m["mac"].as_str().unwrap())
        .collect();
    macs.sort_unstable();
    macs.dedup();
    assert_eq!(macs.len() as u64, MACHINES, "every machine has its own MAC");
    let images = (KERNEL_BYTES + INITRD_BYTES) as u64;
    for m in machines {
        let nbp = if m["firmware"] == "bios" {
            NBP_BIOS_BYTES
        } else {
            NBP_EFI_BYTES
        } as u64;
        let bytes = m["bytes"].as_u64().unwrap();
        // The scripts add a few hundred bytes to the files.
        assert!(
            bytes > nbp + images && bytes < nbp + images + 4096,
            "machine {m}: {bytes} bytes"
        );
        assert!(m["ip"].is_string(), "machine {m} has an address");
    }
    let cpu = summary["simulator_cpu_ms_per_machine"].as_f64().unwrap();
    assert!(cpu > 0.0, "the simulator states its own CPU per machine");
}

#[test]
fn fifty_machines_boot_through_proxy_dhcp_beside_a_site_server() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("rackprox");
    let dir = tempfile::tempdir().unwrap();
    let (root, config) = boot_root(dir.path(), "");
    let [a, b, c, _] = net.server_ip().octets();
    let _site = Dnsmasq::start(
        &net,
        &[
            &format!("dhcp-range={a}.{b}.{c}.10,{a}.{b}.{c}.250,255.255.255.0,10m"),
            "dhcp-lease-max=1000",
        ],
    );
    let daemon = Daemon::start_with_root(&net, &root, &["--config", &config.to_string_lossy()]);
    let report = run_rack(&net, net.client_if(), dir.path(), "pxe-daemon proxy");
    check_report(&report);
    let metrics = daemon.metrics();
    let rom_machines = report["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["firmware"] != "uefi-http")
        .count() as f64;
    let completed =
        metric_value(&metrics, "pxe_tftp_transfers_completed_total", &[]).unwrap_or(0.0);
    assert_eq!(completed, rom_machines, "one NBP transfer per ROM machine");
    let probes =
        metric_value(&metrics, "pxe_tftp_transfers_probe_aborted_total", &[]).unwrap_or(0.0);
    assert_eq!(
        probes, rom_machines,
        "each ROM probed the size first and aborted"
    );
    assert!(daemon.stop().success());
}

#[test]
fn fifty_machines_boot_with_the_daemon_as_full_dhcp_server() {
    if !root_or_skip() {
        return;
    }
    full_rack("rackfull", "kernel");
}

/// The same rack with `--datapath xdp`: DHCP and TFTP over AF_XDP, and every frame the XDP
/// program steered reached the daemon (none lost to a full receive ring).
#[test]
fn fifty_machines_boot_over_the_xdp_datapath_as_full_dhcp_server() {
    if !root_or_skip() {
        return;
    }
    let metrics = full_rack("rackxdp", "xdp");
    assert_rack_went_over_af_xdp(&metrics);
}

/// Proxy-DHCP over AF_XDP, with the site DHCP server on a host of its own on the machines'
/// segment (as on a real network: on the daemon's interface the XDP program would take the
/// PXE DISCOVERs from it). The machines get their addresses from the site server and their
/// boot offers, 4011 answers and NBPs from the daemon over AF_XDP.
#[test]
fn fifty_machines_boot_over_the_xdp_datapath_beside_a_site_server_on_its_own_host() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("rackpxdp");
    let site_host = SiteHost::new(&net);
    let [a, b, c, _] = net.server_ip().octets();
    let _site = Dnsmasq::start_on_site(
        &site_host,
        &[
            &format!("dhcp-range={a}.{b}.{c}.10,{a}.{b}.{c}.250,255.255.255.0,10m"),
            "dhcp-lease-max=1000",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (root, config) = boot_root(dir.path(), "");
    let daemon = Daemon::start_with_root(
        &net,
        &root,
        &["--config", &config.to_string_lossy(), "--datapath", "xdp"],
    );
    let report = run_rack(&net, SITE_BRIDGE, dir.path(), "pxe-daemon proxy (xdp)");
    check_report(&report);
    let metrics = daemon.metrics();
    assert_rack_went_over_af_xdp(&metrics);
    // UEFI PXE asks the boot server on port 4011 after the proxy offer.
    let uefi_machines = report["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["firmware"] == "uefi")
        .count() as f64;
    assert!(uefi_machines > 0.0, "the mix has UEFI PXE machines");
    let discovery = metric_value(
        &metrics,
        "pxe_xdp_verdicts_total",
        &[("class", "pxe_discovery"), ("verdict", "steer")],
    )
    .unwrap_or(0.0);
    assert!(
        discovery >= uefi_machines,
        "the port-4011 requests came over AF_XDP: {metrics}"
    );
    assert!(daemon.stop().success());
}

/// The daemon served the rack over AF_XDP: its datapath is xdp, the NBPs came over it, and
/// every DHCP and TFTP frame the XDP program steered reached the daemon (none lost to a full
/// receive ring).
fn assert_rack_went_over_af_xdp(metrics: &str) {
    let m =
        |name: &str, labels: &[(&str, &str)]| metric_value(metrics, name, labels).unwrap_or(0.0);
    assert_eq!(
        m("pxe_datapath_info", &[("datapath", "xdp")]),
        1.0,
        "{metrics}"
    );
    let steered = |class| {
        m(
            "pxe_xdp_verdicts_total",
            &[("class", class), ("verdict", "steer")],
        )
    };
    let received = |service| {
        m(
            "pxe_afxdp_frames_total",
            &[("direction", "rx"), ("service", service)],
        )
    };
    let rom_machines = 2 * MACHINES / 3;
    assert!(
        steered("dhcp") >= MACHINES as f64,
        "the DHCP requests came over AF_XDP: {metrics}"
    );
    assert!(
        received("tftp") >= (rom_machines * 10) as f64,
        "the NBPs came over AF_XDP: {metrics}"
    );
    assert_eq!(
        steered("dhcp") + steered("pxe_discovery"),
        received("dhcp"),
        "every steered DHCP frame reached the daemon: {metrics}"
    );
    assert_eq!(
        steered("tftp") + steered("tftp_transfer"),
        received("tftp"),
        "every steered TFTP frame reached the daemon: {metrics}"
    );
}

/// Boots the rack with the daemon as the full DHCP server on `datapath`; returns its metrics.
fn full_rack(tag: &str, datapath: &str) -> String {
    let net = TestNet::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = boot_root(dir.path(), "");
    let full = full_dhcp_config(&net, dir.path(), (10, 250), 600, "");
    let full_text = std::fs::read_to_string(&full).unwrap();
    let (_, config) = boot_root(dir.path(), &format!("\n{full_text}"));
    let daemon = Daemon::start_with_root(
        &net,
        &root,
        &[
            "--config",
            &config.to_string_lossy(),
            "--datapath",
            datapath,
        ],
    );
    let report = run_rack(
        &net,
        net.client_if(),
        dir.path(),
        &format!("pxe-daemon full ({datapath})"),
    );
    check_report(&report);
    let metrics = daemon.metrics();
    let acks = metric_value(&metrics, "pxe_dhcp_replies_total", &[("type", "ack")]).unwrap_or(0.0);
    // Each machine leases twice: its firmware, then iPXE.
    assert!(acks >= (2 * MACHINES) as f64, "{acks} ACKs");
    assert!(daemon.stop().success());
    metrics
}
