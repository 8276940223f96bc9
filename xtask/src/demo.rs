//! `cargo xtask demo`: a QEMU machine with real PXE firmware boots Linux from the daemon.
//!
//! By default the BIOS case in proxy mode, the daemon's usual place: dnsmasq plays the site's
//! DHCP server (addresses only) and pxe-daemon answers the machine's PXE and iPXE requests
//! beside it; SeaBIOS with Debian's iPXE option ROM boots a Debian kernel and the project's
//! busybox initramfs, whose /init prints the marker line on the serial console. The demo prints
//! the boot timeline as the daemon's metrics show it, live, then the marker line and a summary.

use std::{io::Write as _, time::Duration};

use anyhow::ensure;
use pxe_tests::{
    firmware::{boot_machine, BootCase, DhcpSetup, Stage},
    metric_sum, metric_value,
    qemu::Firmware,
    NAME_PREFIX,
};

/// Tag of the demo's test network: namespaces `pxet-demo-s` and `pxet-demo-c`.
const TAG: &str = "demo";
/// The demo machine's MAC.
const MAC: &str = "52:54:00:de:00:01";
/// Classes of `pxe_xdp_frames_total`, in the order printed.
const CLASSES: [&str; 6] = [
    "dhcp",
    "pxe_discovery",
    "tftp",
    "tftp_transfer",
    "other",
    "malformed",
];

/// Firmware of the demo machine.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DemoFirmware {
    /// SeaBIOS with the iPXE option ROM.
    Bios,
    /// OVMF UEFI PXE.
    Uefi,
    /// OVMF UEFI HTTP Boot.
    UefiHttp,
}

/// Who gives the demo machine its address.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DemoDhcp {
    /// dnsmasq as the site's DHCP server, pxe-daemon as proxy beside it.
    Proxy,
    /// pxe-daemon as the only DHCP server.
    Full,
}

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The machine's firmware.
    #[arg(long, value_enum, default_value = "bios")]
    firmware: DemoFirmware,
    /// Proxy DHCP beside dnsmasq, or full DHCP.
    #[arg(long, value_enum, default_value = "proxy")]
    dhcp: DemoDhcp,
    /// Do not answer IPv6 router solicitations (see how long iPXE waits for IPv6 without).
    #[arg(long)]
    no_ipv6_ra: bool,
}

/// Runs the demo against the pxe-daemon that `cargo xtask demo` has just built.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "the demo makes network namespaces, a tap device and runs QEMU on it: run it as root"
    );
    let case = BootCase {
        firmware: match args.firmware {
            DemoFirmware::Bios => Firmware::Bios,
            DemoFirmware::Uefi => Firmware::Uefi,
            DemoFirmware::UefiHttp => Firmware::UefiHttp,
        },
        dhcp: match args.dhcp {
            DemoDhcp::Proxy => DhcpSetup::Proxy,
            DemoDhcp::Full => DhcpSetup::Full,
        },
        ipv6_ra: !args.no_ipv6_ra,
        mac: MAC.to_owned(),
        datapath: "kernel",
    };
    let assets = pxe_tests::firmware::BootAssets::locate().map_err(anyhow::Error::msg)?;
    println!("== a QEMU machine with real PXE firmware boots Linux from pxe-daemon");
    println!(
        "   machine:  {}, MAC {MAC}, software emulation (TCG)",
        case.firmware.describe()
    );
    println!(
        "   network:  namespaces {NAME_PREFIX}{TAG}-s (pxe-daemon: {} DHCP, TFTP, HTTP{}) and \
         {NAME_PREFIX}{TAG}-c (QEMU on a tap bridged to the veth)",
        case.dhcp.label(),
        match case.dhcp {
            DhcpSetup::Proxy => "; dnsmasq as the site's DHCP server, addresses only",
            DhcpSetup::Full => "",
        }
    );
    println!(
        "   boots:    Debian's {} + an initramfs built now (busybox-static, /init prints the \
         marker and powers off)",
        assets.kernel_package
    );
    println!(
        "   IPv6:     {}",
        if case.ipv6_ra {
            "pxe-daemon answers router solicitations with 'no router' (--ipv6-ra no-router)"
        } else {
            "no router advertisements: iPXE waits for IPv6 autoconfiguration to time out"
        }
    );
    println!("== booting; stages as the daemon's metrics show them (from QEMU's start):");
    let firmware = case.firmware;
    let mut live = |stage: Stage, at: Duration| {
        println!("   +{:6.1} s  {}", at.as_secs_f64(), stage.label(firmware));
        let _ = std::io::stdout().flush();
    };
    let report = boot_machine(TAG, &case, &mut live);
    println!("== serial console:\n   {}", report.marker);
    println!("== boot timeline of {MAC} (pxe-daemon metrics, from QEMU's start):");
    print!("{}", report.timeline);
    let metrics = &report.metrics;
    let mode = ["driver", "skb"]
        .into_iter()
        .find(|m| metric_value(metrics, "pxe_xdp_attach_mode", &[("mode", m)]) == Some(1.0))
        .unwrap_or("none");
    let frames: Vec<String> = CLASSES
        .iter()
        .map(|class| {
            let n = metric_sum(metrics, "pxe_xdp_frames_total", &[("class", class)]);
            format!("{class} {n}")
        })
        .collect();
    println!(
        "== XDP program ({mode} mode) classified: {}",
        frames.join(", ")
    );
    println!(
        "== DHCP replies {}, TFTP transfers {}, HTTP bytes sent {}, IPv6 'no router' \
         advertisements {}",
        metric_sum(metrics, "pxe_dhcp_replies_total", &[]),
        metric_sum(metrics, "pxe_tftp_transfers_completed_total", &[]),
        metric_sum(metrics, "pxe_http_sent_bytes_total", &[]),
        metric_sum(metrics, "pxe_ipv6_router_advertisements_total", &[]),
    );
    println!(
        "== booted: {} from QEMU's start to the marker line",
        format_args!("{:.1} s", report.elapsed.as_secs_f64())
    );
    Ok(())
}
