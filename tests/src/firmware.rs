//! The whole chain with real firmware: a QEMU machine ([`crate::qemu`]) in the client
//! namespace boots a Debian kernel and the project's marker initramfs ([`crate::initramfs`])
//! from the daemon, in proxy mode (dnsmasq playing the site's DHCP server, addresses only) or
//! in full-DHCP mode. [`boot_machine`] runs one boot and reports the serial marker line and the
//! machine's boot timeline, derived from the daemon's metrics while it boots.
//!
//! The kernel and busybox come from Debian packages that `cargo xtask setup` fetches and
//! unpacks into [`boot_cache_dir`]; iPXE (`ipxe`, `ipxe-qemu`), OVMF (`ovmf`) and QEMU
//! (`qemu-system-x86`) are installed Debian packages.

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::Duration,
};

use crate::{
    daemon::Daemon,
    dnsmasq::Dnsmasq,
    initramfs,
    metrics::metric_sum,
    netns::TestNet,
    qemu::{
        ClientTap, Firmware, Qemu, IPXE_VIRTIO_ROM, NO_BOOT_DEVICE, OVMF_CODE, OVMF_VARS, QEMU_BIN,
    },
};

/// Environment variable naming the boot cache directory (default `<workspace>/target/boot-cache`).
pub const BOOT_CACHE_ENV: &str = "PXE_BOOT_CACHE";
/// Where Debian's `ipxe` package puts the network boot programs served over TFTP and HTTP.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";
/// The network boot programs copied into the boot root.
pub const IPXE_NBPS: [&str; 3] = ["undionly.kpxe", "ipxe.efi", "snponly.efi"];
/// Name of the kernel in the boot root (an HTTP artifact).
pub const KERNEL_NAME: &str = "vmlinuz";
/// What the daemon hands UEFI HTTP Boot (its default for x64 when the root holds it).
pub const HTTP_BOOT_NBP: &str = "ipxe.efi";
/// Name of the marker initramfs in the boot root (an HTTP artifact).
pub const INITRD_NAME: &str = "initrd.gz";
/// Hard bound on one boot, from QEMU's start to the marker line (UEFI takes about 30 s).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// How often the serial console and the daemon's metrics are read during a boot.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a machine gets to power off after printing the marker.
const POWEROFF_WAIT: Duration = Duration::from_secs(10);
/// Last lines of the serial console shown when a boot fails.
const SERIAL_TAIL_LINES: usize = 60;

/// One QEMU at a time in this process: on two shared cores, two emulated machines would each
/// take twice as long and the boot times would mean nothing.
static ONE_MACHINE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The boot cache: `$PXE_BOOT_CACHE`, else `<workspace>/target/boot-cache`.
pub fn boot_cache_dir() -> PathBuf {
    match std::env::var_os(BOOT_CACHE_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => crate::workspace_root().join("target").join("boot-cache"),
    }
}

/// Where in the boot cache the kernel goes: `vmlinuz`, `modules/<name>.ko` (flat) and
/// `PACKAGE` (the Debian package and version it came from).
pub fn kernel_cache_dir() -> PathBuf {
    boot_cache_dir().join("kernel")
}

/// Where in the boot cache static busybox goes: `busybox` and `PACKAGE`.
pub fn busybox_cache_dir() -> PathBuf {
    boot_cache_dir().join("busybox")
}

/// The files a firmware boot needs, all found.
#[derive(Clone, Debug)]
pub struct BootAssets {
    /// The Linux kernel (bzImage) from Debian's `linux-image-*-amd64`.
    pub kernel: PathBuf,
    /// Its modules, flat (`<name>.ko`).
    pub modules: PathBuf,
    /// Statically linked busybox from Debian's `busybox-static`.
    pub busybox: PathBuf,
    /// `package version` of the kernel.
    pub kernel_package: String,
}

impl BootAssets {
    /// Finds everything a boot needs; the error lists every missing piece and says how to get
    /// it (`cargo xtask setup`).
    pub fn locate() -> Result<BootAssets, String> {
        let kernel_dir = kernel_cache_dir();
        let assets = BootAssets {
            kernel: kernel_dir.join(KERNEL_NAME),
            modules: kernel_dir.join("modules"),
            busybox: busybox_cache_dir().join("busybox"),
            kernel_package: std::fs::read_to_string(kernel_dir.join("PACKAGE"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        };
        let mut missing: Vec<String> = [
            &assets.kernel,
            &assets.modules,
            &assets.busybox,
            Path::new(OVMF_CODE),
            Path::new(OVMF_VARS),
            Path::new(IPXE_VIRTIO_ROM),
        ]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
        missing.extend(
            IPXE_NBPS
                .iter()
                .map(|n| Path::new(IPXE_DIR).join(n))
                .filter(|p| !p.is_file())
                .map(|p| p.display().to_string()),
        );
        if !on_path(QEMU_BIN) {
            missing.push(format!("{QEMU_BIN} on PATH"));
        }
        if missing.is_empty() {
            Ok(assets)
        } else {
            Err(format!(
                "the firmware boot needs {} (run `cargo xtask setup`: it installs qemu-system-x86, \
                 ovmf, ipxe and ipxe-qemu, and unpacks the kernel and busybox-static into {})",
                missing.join(", "),
                boot_cache_dir().display()
            ))
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Who gives the machine its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpSetup {
    /// The daemon as proxy-DHCP beside dnsmasq, which plays the site's DHCP server (addresses
    /// only, no boot information).
    Proxy,
    /// The daemon as the network's only DHCP server.
    Full,
}

impl DhcpSetup {
    /// `proxy` or `full` (the daemon's `--dhcp-mode`).
    pub const fn label(self) -> &'static str {
        match self {
            DhcpSetup::Proxy => "proxy",
            DhcpSetup::Full => "full",
        }
    }
}

/// One boot to run.
#[derive(Clone, Debug)]
pub struct BootCase {
    /// The machine's firmware.
    pub firmware: Firmware,
    /// Proxy beside dnsmasq, or full DHCP.
    pub dhcp: DhcpSetup,
    /// Whether the daemon answers IPv6 router solicitations (`--ipv6-ra no-router`), which
    /// ends iPXE's wait for IPv6 autoconfiguration.
    pub ipv6_ra: bool,
    /// The NIC's MAC (`52:54:00:...`).
    pub mac: String,
    /// The daemon's `--datapath` (`kernel`, `xdp`, `auto`).
    pub datapath: &'static str,
}

impl fmt::Display for BootCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}), {} DHCP, IPv6 RA {}, MAC {}, {} datapath",
            self.firmware.label(),
            self.firmware.describe(),
            self.dhcp.label(),
            if self.ipv6_ra { "on" } else { "off" },
            self.mac,
            self.datapath
        )
    }
}

/// A stage of a machine's boot, as the daemon's metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The daemon's first DHCP reply to the machine's firmware.
    Dhcp,
    /// The network boot program (iPXE) delivered: over TFTP to UEFI PXE, over HTTP to UEFI
    /// HTTP Boot. QEMU's BIOS ROM is iPXE already and skips it.
    Nbp,
    /// iPXE running: its own DHCP request reached the daemon.
    Ipxe,
    /// The machine's iPXE script rendered (`/ipxe?mac=...`).
    Script,
    /// The kernel requested over HTTP.
    Kernel,
    /// The initramfs requested over HTTP.
    Initrd,
    /// The initramfs's marker line on the serial console.
    Done,
}

impl Stage {
    /// Every stage, in boot order.
    pub const ALL: [Stage; 7] = [
        Stage::Dhcp,
        Stage::Nbp,
        Stage::Ipxe,
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
        Stage::Done,
    ];

    /// Short name, for a machine with `firmware` (the NBP comes by TFTP or by HTTP).
    pub const fn label(self, firmware: Firmware) -> &'static str {
        match self {
            Stage::Dhcp => "DHCP",
            Stage::Nbp if matches!(firmware, Firmware::UefiHttp) => "NBP/HTTP",
            Stage::Nbp => "TFTP",
            Stage::Ipxe => "iPXE",
            Stage::Script => "script",
            Stage::Kernel => "kernel",
            Stage::Initrd => "initrd",
            Stage::Done => "done",
        }
    }

    /// Where the stage is read from, for a machine with `firmware`.
    pub const fn source(self, firmware: Firmware) -> &'static str {
        match self {
            Stage::Dhcp => "pxe_dhcp_replies_total",
            Stage::Nbp if matches!(firmware, Firmware::UefiHttp) => {
                "pxe_http_artifact_downloads_total{artifact=\"ipxe.efi\"}"
            }
            Stage::Nbp => "pxe_tftp_transfers_completed_total",
            Stage::Ipxe => "pxe_dhcp_requests_total{firmware=\"ipxe\"}",
            Stage::Script => "pxe_http_requests_total{route=\"ipxe\"}",
            Stage::Kernel => "pxe_http_artifact_downloads_total{artifact=\"vmlinuz\"}",
            Stage::Initrd => "pxe_http_artifact_downloads_total{artifact=\"initrd.gz\"}",
            Stage::Done => "marker line on the serial console",
        }
    }

    /// The counter behind the stage in the daemon's `/metrics` text (`None` for [`Stage::Done`]).
    fn count(self, firmware: Firmware, metrics: &str) -> Option<f64> {
        let (name, labels): (&str, &[(&str, &str)]) = match self {
            Stage::Dhcp => ("pxe_dhcp_replies_total", &[]),
            Stage::Nbp if firmware == Firmware::UefiHttp => (
                "pxe_http_artifact_downloads_total",
                &[("artifact", HTTP_BOOT_NBP)],
            ),
            Stage::Nbp => ("pxe_tftp_transfers_completed_total", &[]),
            Stage::Ipxe => ("pxe_dhcp_requests_total", &[("firmware", "ipxe")]),
            Stage::Script => ("pxe_http_requests_total", &[("route", "ipxe")]),
            Stage::Kernel => (
                "pxe_http_artifact_downloads_total",
                &[("artifact", KERNEL_NAME)],
            ),
            Stage::Initrd => (
                "pxe_http_artifact_downloads_total",
                &[("artifact", INITRD_NAME)],
            ),
            Stage::Done => return None,
        };
        Some(metric_sum(metrics, name, labels))
    }

    /// Whether a boot with `firmware` goes through this stage. QEMU's BIOS option ROM is iPXE
    /// itself: the daemon hands it the script URL at once (never an NBP again), so no TFTP.
    pub fn expected_for(self, firmware: Firmware) -> bool {
        !(self == Stage::Nbp && firmware == Firmware::Bios)
    }
}

/// When each stage was first seen, relative to QEMU's start.
#[derive(Clone, Debug)]
pub struct Timeline {
    firmware: Firmware,
    seen: Vec<(Stage, Option<Duration>)>,
}

impl Timeline {
    fn new(firmware: Firmware) -> Timeline {
        Timeline {
            firmware,
            seen: Stage::ALL.iter().map(|s| (*s, None)).collect(),
        }
    }

    /// When `stage` was first seen.
    pub fn at(&self, stage: Stage) -> Option<Duration> {
        self.seen
            .iter()
            .find(|(s, _)| *s == stage)
            .and_then(|(_, at)| *at)
    }

    /// Records `stage` at `at` unless it was seen before; returns whether it is new.
    fn mark(&mut self, stage: Stage, at: Duration) -> bool {
        match self.seen.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, slot @ None)) => {
                *slot = Some(at);
                true
            }
            _ => false,
        }
    }

    /// Stages the firmware goes through that were not seen.
    pub fn missing(&self) -> Vec<Stage> {
        self.seen
            .iter()
            .filter(|(s, at)| at.is_none() && s.expected_for(self.firmware))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Whether the seen stages came in boot order.
    pub fn in_order(&self) -> bool {
        let times: Vec<Duration> = self.seen.iter().filter_map(|(_, at)| *at).collect();
        times.windows(2).all(|w| w[0] <= w[1])
    }
}

impl fmt::Display for Timeline {
    /// One line per stage: `  +  4.2 s  DHCP     pxe_dhcp_replies_total`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (stage, at) in &self.seen {
            let when = match at {
                Some(at) => format!("+{:6.1} s", at.as_secs_f64()),
                None if !stage.expected_for(self.firmware) => "   -    ".to_owned(),
                None => " not seen".to_owned(),
            };
            let note = if stage.expected_for(self.firmware) {
                stage.source(self.firmware)
            } else {
                "not used: QEMU's BIOS ROM is iPXE already, so DHCP hands it the script"
            };
            writeln!(f, "  {when}  {:<8} {note}", stage.label(self.firmware))?;
        }
        Ok(())
    }
}

/// What a successful boot showed.
#[derive(Clone, Debug)]
pub struct BootReport {
    /// The case that ran.
    pub case: BootCase,
    /// The marker line from the serial console.
    pub marker: String,
    /// QEMU's start to the marker.
    pub elapsed: Duration,
    /// The stages, from the daemon's metrics.
    pub timeline: Timeline,
    /// The kernel's Debian package and version.
    pub kernel_package: String,
    /// The daemon's `/metrics` when the marker appeared.
    pub metrics: String,
}

/// Boots one machine: a fresh [`TestNet`] (`tag`), a boot root with Debian's iPXE binaries, the
/// kernel and the marker initramfs, dnsmasq as the site's DHCP server in proxy mode, the
/// daemon, and QEMU. Waits for the marker line (at most [`BOOT_TIMEOUT`]) while it polls the
/// daemon's metrics for the timeline; `on_stage` hears each stage as it is seen. Everything is
/// torn down before it returns.
///
/// Panics when the boot fails, with the serial console, the timeline so far and what the
/// daemon logged; the guards add the daemon's and dnsmasq's whole logs.
pub fn boot_machine(
    tag: &str,
    case: &BootCase,
    on_stage: &mut dyn FnMut(Stage, Duration),
) -> BootReport {
    let _one = ONE_MACHINE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let assets = BootAssets::locate().unwrap_or_else(|e| panic!("{e}"));
    let net = TestNet::new(tag);
    let root = crate::tftp::BootRoot::new(&[]);
    for nbp in IPXE_NBPS {
        copy(&Path::new(IPXE_DIR).join(nbp), &root.root().join(nbp));
    }
    copy(&assets.kernel, &root.root().join(KERNEL_NAME));
    let initrd = initramfs::build(&assets.busybox, &assets.modules)
        .unwrap_or_else(|e| panic!("building the marker initramfs: {e}"));
    root.write(INITRD_NAME, &initrd);
    let config = root.config(&daemon_config(net.server_ip(), net.prefix_len(), case.dhcp));

    let tap = ClientTap::new(&net);
    let _site_dhcp = (case.dhcp == DhcpSetup::Proxy).then(|| {
        let [a, b, c, _] = net.server_ip().octets();
        let range = format!("dhcp-range={a}.{b}.{c}.100,{a}.{b}.{c}.150,255.255.255.0,1h");
        Dnsmasq::start(&net, &[&range])
    });
    if case.ipv6_ra {
        enable_ipv6(&net);
    }
    let config_arg = config.to_string_lossy().into_owned();
    let mut args = vec![
        "--config",
        &config_arg,
        "--dhcp-mode",
        case.dhcp.label(),
        "--datapath",
        case.datapath,
    ];
    if case.ipv6_ra {
        args.extend(["--ipv6-ra", "no-router"]);
    }
    let daemon = Daemon::start_with_root(&net, &root.root(), &args);
    let baseline = daemon.metrics();

    let mut qemu = Qemu::start(&net, &tap, case.firmware, &case.mac);
    let mut timeline = Timeline::new(case.firmware);
    let fail = |why: &str, qemu: &Qemu, timeline: &Timeline, daemon: &Daemon<'_>| -> ! {
        panic!(
            "firmware boot failed: {why}\ncase: {case}\n--- boot timeline so far (daemon metrics, \
             from QEMU's start) ---\n{timeline}--- serial console (last {SERIAL_TAIL_LINES} \
             lines) ---\n{}\n--- QEMU ---\n{}\n--- daemon, per machine (DHCP, TFTP, HTTP) ---\n{}\
             --- end ---",
            tail(&qemu.serial_text(), SERIAL_TAIL_LINES),
            qemu.log().trim(),
            machine_lines(&daemon.log(), &case.mac),
        )
    };
    let marker = loop {
        let elapsed = qemu.started().elapsed();
        if let Some(metrics) = daemon.try_metrics() {
            for stage in Stage::ALL {
                let (Some(now), Some(before)) = (
                    stage.count(case.firmware, &metrics),
                    stage.count(case.firmware, &baseline),
                ) else {
                    continue;
                };
                if now > before && timeline.mark(stage, elapsed) {
                    on_stage(stage, elapsed);
                }
            }
        }
        if let Some(line) = qemu.serial_line(initramfs::MARKER) {
            let elapsed = qemu.started().elapsed();
            timeline.mark(Stage::Done, elapsed);
            on_stage(Stage::Done, elapsed);
            break line;
        }
        if let Some(line) = NO_BOOT_DEVICE.iter().find_map(|s| qemu.serial_line(s)) {
            fail(
                &format!("the firmware found nothing to boot: {line:?}"),
                &qemu,
                &timeline,
                &daemon,
            );
        }
        if let Some(status) = qemu.try_wait() {
            fail(
                &format!("QEMU exited ({status}) without the marker line"),
                &qemu,
                &timeline,
                &daemon,
            );
        }
        if elapsed > BOOT_TIMEOUT {
            fail(
                &format!("no marker line within {} s", BOOT_TIMEOUT.as_secs()),
                &qemu,
                &timeline,
                &daemon,
            );
        }
        thread::sleep(POLL_INTERVAL);
    };
    let elapsed = timeline
        .at(Stage::Done)
        .expect("the marker was just recorded");
    let expected = format!("mac={} profile_mac={}", case.mac, case.mac);
    if !marker.contains(&expected) {
        fail(
            &format!("the marker line {marker:?} does not say {expected:?}"),
            &qemu,
            &timeline,
            &daemon,
        );
    }
    // The stages not polled in time still count when the final metrics show them.
    let metrics = daemon.try_metrics().unwrap_or_default();
    for stage in timeline.missing() {
        if let (Some(now), Some(before)) = (
            stage.count(case.firmware, &metrics),
            stage.count(case.firmware, &baseline),
        ) {
            if now > before {
                timeline.mark(stage, elapsed);
            }
        }
    }
    let troubles = troubles(&metrics);
    if !troubles.is_empty() {
        fail(
            &format!(
                "the daemon counted trouble during the boot: {}",
                troubles.join(", ")
            ),
            &qemu,
            &timeline,
            &daemon,
        );
    }
    if !timeline.missing().is_empty() || !timeline.in_order() {
        fail(
            &format!(
                "the daemon's metrics do not show the whole chain in order (missing: {:?})",
                timeline.missing()
            ),
            &qemu,
            &timeline,
            &daemon,
        );
    }
    // poweroff -f ends QEMU; a machine that does not is killed when the guard drops.
    let _ = qemu.wait_timeout(POWEROFF_WAIT);
    BootReport {
        case: case.clone(),
        marker,
        elapsed,
        timeline,
        kernel_package: assets.kernel_package,
        metrics,
    }
}

/// What in the daemon's metrics says something went wrong with a well-behaved machine:
/// malformed DHCP, failed TFTP transfers (a ROM's abort after the tsize probe is normal and
/// counted apart), refused TFTP requests, HTTP error answers, send errors.
fn troubles(metrics: &str) -> Vec<String> {
    let mut found: Vec<String> = [
        "pxe_dhcp_dropped_total",
        "pxe_dhcp_send_errors_total",
        "pxe_tftp_transfers_failed_total",
        "pxe_tftp_requests_refused_total",
        "pxe_tftp_send_errors_total",
        "pxe_ipv6_router_advertisement_send_errors_total",
    ]
    .into_iter()
    .filter_map(|name| {
        let n = metric_sum(metrics, name, &[]);
        (n > 0.0).then(|| format!("{name} {n}"))
    })
    .collect();
    found.extend(
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("pxe_http_requests_total{")
                    && (l.contains("status=\"4") || l.contains("status=\"5"))
            })
            .map(str::to_owned),
    );
    found
}

/// The daemon's config for a boot: the marker profile as default, and in full mode a pool of
/// the test subnet and a lease journal beside the config.
pub fn daemon_config(server: Ipv4Addr, prefix_len: u8, dhcp: DhcpSetup) -> String {
    let mut config = format!(
        "# Written by pxe-tests for a firmware boot.\n\
         [http]\n\
         default_profile = \"marker\"\n\n\
         [[profile]]\n\
         name = \"marker\"\n\
         kernel = \"{KERNEL_NAME}\"\n\
         initrd = [\"{INITRD_NAME}\"]\n\
         # quiet: the serial console shows the chain and the marker; panic=-1: a panic ends QEMU.\n\
         args = \"console=ttyS0 quiet panic=-1 {}={{{{ mac }}}}\"\n",
        initramfs::PROFILE_MAC_ARG
    );
    if dhcp == DhcpSetup::Full {
        let [a, b, c, _] = server.octets();
        config.push_str(&format!(
            "\n[dhcp]\n\
             lease_file = \"leases.journal\"\n\n\
             [[dhcp.subnet]]\n\
             network = \"{a}.{b}.{c}.0/{prefix_len}\"\n\
             range = [\"{a}.{b}.{c}.100\", \"{a}.{b}.{c}.150\"]\n",
        ));
    }
    config
}

/// Turns IPv6 on for the server's interface (the test net has it off), without duplicate
/// address detection, so that the daemon has a link-local address to advertise from at once.
fn enable_ipv6(net: &TestNet) {
    let ifname = net.server_if();
    let out = net.server(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
        &format!("net.ipv6.conf.{ifname}.disable_ipv6=0"),
    ]);
    assert!(
        out.status.success(),
        "enabling IPv6 on {ifname}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The daemon's log lines about the machine: DHCP lines with its MAC, TFTP transfers and HTTP
/// requests other than the test's own `/metrics` polls.
fn machine_lines(log: &str, mac: &str) -> String {
    log.lines()
        .filter(|l| {
            l.contains(mac)
                || l.contains("pxe_daemon::tftp")
                || (l.contains("HTTP request") && !l.contains("path=\"/metrics\""))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_come_from_the_daemons_counters() {
        let metrics = "pxe_dhcp_replies_total{type=\"offer\"} 1\n\
                       pxe_dhcp_replies_total{type=\"ack\"} 2\n\
                       pxe_dhcp_requests_total{arch=\"bios\",firmware=\"ipxe\",type=\"discover\"} 1\n\
                       pxe_http_artifact_downloads_total{artifact=\"vmlinuz\"} 1\n";
        let count = |stage: Stage, firmware| stage.count(firmware, metrics);
        assert_eq!(count(Stage::Dhcp, Firmware::Bios), Some(3.0));
        assert_eq!(count(Stage::Ipxe, Firmware::Bios), Some(1.0));
        assert_eq!(count(Stage::Kernel, Firmware::Bios), Some(1.0));
        assert_eq!(count(Stage::Initrd, Firmware::Bios), Some(0.0));
        assert_eq!(count(Stage::Done, Firmware::Bios), None);
        // The NBP: TFTP for UEFI PXE, an HTTP artifact for HTTP Boot.
        let nbp = "pxe_tftp_transfers_completed_total 1\n\
                   pxe_http_artifact_downloads_total{artifact=\"ipxe.efi\"} 2\n";
        assert_eq!(Stage::Nbp.count(Firmware::Uefi, nbp), Some(1.0));
        assert_eq!(Stage::Nbp.count(Firmware::UefiHttp, nbp), Some(2.0));
        assert_eq!(Stage::Nbp.label(Firmware::UefiHttp), "NBP/HTTP");
    }

    #[test]
    fn bios_timelines_need_no_tftp_and_must_be_in_order() {
        let mut t = Timeline::new(Firmware::Bios);
        for (i, stage) in [
            Stage::Dhcp,
            Stage::Ipxe,
            Stage::Script,
            Stage::Kernel,
            Stage::Initrd,
        ]
        .into_iter()
        .enumerate()
        {
            assert!(t.mark(stage, Duration::from_secs(i as u64)));
        }
        assert_eq!(t.missing(), [Stage::Done]);
        assert!(
            !t.mark(Stage::Dhcp, Duration::from_secs(9)),
            "first sight wins"
        );
        t.mark(Stage::Done, Duration::from_secs(9));
        assert!(t.missing().is_empty() && t.in_order());
        let text = t.to_string();
        assert!(text.contains("TFTP     not used"), "{text}");
        assert!(text.contains("+   9.0 s  done"), "{text}");

        let mut uefi = Timeline::new(Firmware::Uefi);
        uefi.mark(Stage::Ipxe, Duration::from_secs(5));
        uefi.mark(Stage::Nbp, Duration::from_secs(6));
        assert!(!uefi.in_order());
        assert!(uefi.missing().contains(&Stage::Dhcp));
    }

    #[test]
    fn trouble_is_read_from_error_counters() {
        let fine = "pxe_dhcp_dropped_total{reason=\"truncated\"} 0\n\
                    pxe_tftp_transfers_probe_aborted_total 1\n\
                    pxe_http_requests_total{route=\"ipxe\",status=\"200\"} 1\n";
        assert!(troubles(fine).is_empty());
        let bad = "pxe_tftp_transfers_failed_total{reason=\"timeout\"} 2\n\
                   pxe_http_requests_total{route=\"artifact\",status=\"404\"} 1\n";
        assert_eq!(
            troubles(bad),
            [
                "pxe_tftp_transfers_failed_total 2",
                "pxe_http_requests_total{route=\"artifact\",status=\"404\"} 1"
            ]
        );
    }

    #[test]
    fn full_mode_config_has_a_pool_of_the_test_subnet() {
        let server = std::net::Ipv4Addr::new(198, 18, 7, 1);
        let proxy = daemon_config(server, 24, DhcpSetup::Proxy);
        assert!(proxy.contains("args = \"console=ttyS0 quiet panic=-1 pxe.mac={{ mac }}\""));
        assert!(!proxy.contains("[dhcp]"));
        let full = daemon_config(server, 24, DhcpSetup::Full);
        assert!(full.contains("network = \"198.18.7.0/24\""), "{full}");
        assert!(
            full.contains("range = [\"198.18.7.100\", \"198.18.7.150\"]"),
            "{full}"
        );
    }
}
