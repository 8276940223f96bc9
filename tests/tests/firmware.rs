//! Real firmware boots a real kernel from the daemon: a QEMU machine (software emulation) in the
//! client namespace, on a tap bridged to the veth, boots with SeaBIOS + iPXE ROM, OVMF UEFI PXE
//! or OVMF UEFI HTTP Boot, in proxy mode (dnsmasq as the site's DHCP server, addresses only)
//! and in full-DHCP mode, into Debian's kernel and the project's busybox initramfs, whose
//! /init prints `PXE-BOOT-OK mac=...` on the serial console and powers off. One QEMU at a
//! time. Root only; the kernel and busybox come from `cargo xtask setup`'s boot cache.
//!
//! Each boot writes one line past the test harness's capture: the marker line and the time
//! from QEMU's start; `--nocapture` shows each boot's timeline too.

use std::io::Write;

use pxe_tests::{
    firmware::{boot_machine, BootCase, BootReport, DhcpSetup, Stage},
    metric_sum, metric_value,
    qemu::Firmware,
    root_or_skip,
};

/// Boots `firmware` with `dhcp` on a fresh test net `tag`, the daemon answering IPv6 router
/// solicitations (`ipv6_ra`), and checks the whole chain.
fn boot(tag: &str, firmware: Firmware, dhcp: DhcpSetup, ipv6_ra: bool, mac: &str) -> BootReport {
    boot_over(tag, firmware, dhcp, ipv6_ra, mac, "kernel")
}

/// [`boot`] with the daemon's `--datapath` set to `datapath`.
fn boot_over(
    tag: &str,
    firmware: Firmware,
    dhcp: DhcpSetup,
    ipv6_ra: bool,
    mac: &str,
    datapath: &'static str,
) -> BootReport {
    let case = BootCase {
        firmware,
        dhcp,
        ipv6_ra,
        mac: mac.to_owned(),
        datapath,
    };
    let report = boot_machine(tag, &case, &mut |_, _| {});
    println!(
        "firmware boot: {case}\n  kernel: {}\n  {}\n  marker after {:.1} s; boot timeline:\n{}",
        report.kernel_package,
        report.marker,
        report.elapsed.as_secs_f64(),
        report.timeline
    );
    let _ = writeln!(
        std::io::stderr(),
        "firmware boot {}/{} (IPv6 RA {}): {:.1} s to `{}`",
        firmware.label(),
        dhcp.label(),
        if ipv6_ra { "on" } else { "off" },
        report.elapsed.as_secs_f64(),
        report.marker
    );
    for stage in Stage::ALL {
        assert_eq!(
            report.timeline.at(stage).is_some(),
            stage.expected_for(firmware),
            "{stage:?}\n{}",
            report.timeline
        );
    }
    report
}

#[test]
fn bios_ipxe_rom_boots_in_proxy_mode() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwbiosp",
        Firmware::Bios,
        DhcpSetup::Proxy,
        true,
        "52:54:00:fb:01:01",
    );
}

#[test]
fn bios_ipxe_rom_boots_in_full_mode() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwbiosf",
        Firmware::Bios,
        DhcpSetup::Full,
        true,
        "52:54:00:fb:01:02",
    );
}

/// Asserts that the daemon ran the xdp datapath and that each of `services` moved at least
/// its number of frames through AF_XDP in both directions.
fn assert_served_over_af_xdp(metrics: &str, services: &[(&str, f64)]) {
    assert_eq!(
        metric_value(metrics, "pxe_datapath_info", &[("datapath", "xdp")]),
        Some(1.0),
        "the daemon runs the xdp datapath"
    );
    for &(service, least) in services {
        for direction in ["rx", "tx"] {
            let frames = metric_sum(
                metrics,
                "pxe_afxdp_frames_total",
                &[("direction", direction), ("service", service)],
            );
            assert!(
                frames >= least,
                "{service} frames {direction} over AF_XDP: {frames}\n{metrics}"
            );
        }
    }
}

/// The same BIOS boot with the AF_XDP datapath forced: the firmware's and iPXE's DHCP went
/// through the daemon's AF_XDP sockets, as its metrics show.
#[test]
fn bios_ipxe_rom_boots_over_the_xdp_datapath() {
    if !root_or_skip() {
        return;
    }
    let report = boot_over(
        "fwbiosx",
        Firmware::Bios,
        DhcpSetup::Full,
        true,
        "52:54:00:fb:01:03",
        "xdp",
    );
    // QEMU's ROM is iPXE itself: its DISCOVER and REQUEST in, the OFFER and ACK out, all
    // through AF_XDP (a kernel socket never saw them).
    assert_served_over_af_xdp(&report.metrics, &[("dhcp", 2.0)]);
}

/// UEFI PXE with the AF_XDP datapath forced: OVMF's DHCP and its TFTP download of the NBP
/// (tsize probe, then blksize and windowsize as EDK2 asks) went through AF_XDP both ways.
#[test]
fn uefi_pxe_boots_over_the_xdp_datapath() {
    if !root_or_skip() {
        return;
    }
    let report = boot_over(
        "fwuefix",
        Firmware::Uefi,
        DhcpSetup::Full,
        true,
        "52:54:00:fb:02:03",
        "xdp",
    );
    let m = &report.metrics;
    let completed = metric_value(m, "pxe_tftp_transfers_completed_total", &[]).unwrap_or(0.0);
    assert!(completed >= 1.0, "the NBP came over TFTP\n{m}");
    assert_served_over_af_xdp(m, &[("dhcp", 2.0), ("tftp", 10.0)]);
}

#[test]
fn uefi_pxe_boots_in_proxy_mode() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwuefip",
        Firmware::Uefi,
        DhcpSetup::Proxy,
        true,
        "52:54:00:fb:02:01",
    );
}

#[test]
fn uefi_pxe_boots_in_full_mode() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwueff",
        Firmware::Uefi,
        DhcpSetup::Full,
        true,
        "52:54:00:fb:02:02",
    );
}

#[test]
fn uefi_http_boot_boots_in_proxy_mode() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwhttpp",
        Firmware::UefiHttp,
        DhcpSetup::Proxy,
        true,
        "52:54:00:fb:03:01",
    );
}

#[test]
fn uefi_http_boot_boots_in_full_mode() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwhttpf",
        Firmware::UefiHttp,
        DhcpSetup::Full,
        true,
        "52:54:00:fb:03:02",
    );
}

/// The "before" of the IPv6 measurement: without router advertisements iPXE waits for IPv6
/// autoconfiguration to time out (about 16 s with Debian 12's iPXE) before it boots. Not run
/// by default (it only costs time); `cargo test -p pxe-tests --test firmware -- --ignored`.
#[test]
#[ignore = "measurement: iPXE's IPv6 wait without router advertisements, about 16 s"]
fn bios_ipxe_rom_boots_in_proxy_mode_without_router_advertisements() {
    if !root_or_skip() {
        return;
    }
    boot(
        "fwbiosn",
        Firmware::Bios,
        DhcpSetup::Proxy,
        false,
        "52:54:00:fb:01:03",
    );
}
