//! A QEMU machine with real PXE firmware on the client side of a [`TestNet`]: a tap device
//! bridged with the client's veth end, and QEMU (software emulation: KVM stops with "emulation
//! failure" on this kind of machine) booting from the network, its serial console in a file.

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use crate::{netns::TestNet, process::NsChild};

/// The emulator.
pub const QEMU_BIN: &str = "qemu-system-x86_64";
/// Guest memory, MiB: OVMF, iPXE, the kernel and the initramfs fit with room to spare.
const GUEST_MEMORY_MIB: &str = "512";
/// iPXE option ROM for virtio-net from Debian's `ipxe-qemu` (BIOS and UEFI images in one):
/// what SeaBIOS runs to boot from the network. It is QEMU's default `romfile` for
/// virtio-net-pci, found on Debian QEMU's firmware path. Named explicitly, the same file is
/// not run (QEMU patches the PCI ids only of its default ROM), so the machine keeps the default.
pub const IPXE_VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";
/// What the firmware prints when every boot option failed: fail at once instead of waiting.
pub const NO_BOOT_DEVICE: [&str; 2] = [
    // SeaBIOS
    "No bootable device",
    // OVMF's boot manager
    "No bootable option or device was found",
];
/// OVMF's code (read-only) and the template of its variable store, from Debian's `ovmf`.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// See [`OVMF_CODE`]; each machine gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The firmware a machine boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with the iPXE option ROM of the NIC (`ipxe-qemu`).
    Bios,
    /// OVMF's own UEFI PXE over its virtio-net driver (no option ROM): PXEv4 only.
    Uefi,
    /// OVMF's UEFI HTTP Boot (IPv4): PXE switched off through fw_cfg so HTTPv4 comes first.
    UefiHttp,
}

impl Firmware {
    /// Every firmware, in the order the tests run them.
    pub const ALL: [Firmware; 3] = [Firmware::Bios, Firmware::Uefi, Firmware::UefiHttp];

    /// Short name: `bios`, `uefi`, `uefi-http`.
    pub const fn label(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiHttp => "uefi-http",
        }
    }

    /// What boots, in words.
    pub const fn describe(self) -> &'static str {
        match self {
            Firmware::Bios => "SeaBIOS + iPXE option ROM (ipxe-qemu)",
            Firmware::Uefi => "OVMF UEFI PXE (virtio-net, no option ROM)",
            Firmware::UefiHttp => "OVMF UEFI HTTP Boot (virtio-net, no option ROM)",
        }
    }
}

/// The bridge and tap device in a [`TestNet`]'s client namespace: the client's veth end and
/// the tap are ports of the bridge (STP off, no forward delay), and the client's address moves
/// to the bridge. Removed with the namespace.
#[derive(Debug)]
pub struct ClientTap {
    tap: String,
    bridge: String,
}

impl ClientTap {
    /// Makes `pxet-<tag>-b` and `pxet-<tag>-t` in the client namespace. Panics on failure.
    pub fn new(net: &TestNet) -> ClientTap {
        let base = net
            .client_ns()
            .strip_suffix("-c")
            .expect("client namespaces end in -c");
        let tap = ClientTap {
            tap: format!("{base}-t"),
            bridge: format!("{base}-b"),
        };
        let cidr = format!("{}/{}", net.client_ip(), net.prefix_len());
        let (veth, br, t) = (net.client_if(), tap.bridge.as_str(), tap.tap.as_str());
        let steps: [&[&str]; 8] = [
            &[
                "ip",
                "link",
                "add",
                br,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
            &["ip", "addr", "flush", "dev", veth],
            &["ip", "link", "set", veth, "master", br],
            &["ip", "addr", "add", &cidr, "dev", br],
            &["ip", "tuntap", "add", "dev", t, "mode", "tap"],
            &["ip", "link", "set", t, "master", br],
            &["ip", "link", "set", t, "up"],
            &["ip", "link", "set", br, "up"],
        ];
        for argv in steps {
            let out = net.client(argv);
            assert!(
                out.status.success(),
                "{} in {}: {}",
                argv.join(" "),
                net.client_ns(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tap
    }

    /// The tap device QEMU attaches to.
    pub fn tap(&self) -> &str {
        &self.tap
    }

    /// The bridge.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
}

/// A running QEMU in the client namespace. Dropping it kills QEMU (SIGKILL), also when a test
/// panics; QEMU also dies with the thread that started it.
#[derive(Debug)]
pub struct Qemu {
    child: NsChild,
    serial: PathBuf,
    started: Instant,
    firmware: Firmware,
    mac: String,
    _dir: tempfile::TempDir,
}

impl Qemu {
    /// Starts a machine with `firmware` and one virtio-net NIC with `mac` on `tap`, booting from
    /// the network, its serial console written to a file ([`Qemu::serial`]).
    pub fn start(net: &TestNet, tap: &ClientTap, firmware: Firmware, mac: &str) -> Qemu {
        let dir = tempfile::Builder::new()
            .prefix("pxe-tests-qemu-")
            .tempdir()
            .expect("creating a temporary directory for QEMU");
        let serial = dir.path().join("serial.log");
        let mut argv: Vec<String> = [
            QEMU_BIN,
            "-accel",
            "tcg",
            "-machine",
            "pc",
            "-m",
            GUEST_MEMORY_MIB,
            // SeaBIOS writes its console to the serial port only with -nographic.
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .map(str::to_owned)
        .to_vec();
        argv.push("-serial".into());
        argv.push(format!("file:{}", serial.display()));
        argv.push("-netdev".into());
        argv.push(format!(
            "tap,id=net0,ifname={},script=no,downscript=no",
            tap.tap()
        ));
        let rom = match firmware {
            // QEMU's default ROM: IPXE_VIRTIO_ROM.
            Firmware::Bios => "",
            // OVMF's own virtio-net driver and network stack: real EDK2 PXE and HTTP Boot.
            Firmware::Uefi | Firmware::UefiHttp => ",romfile=",
        };
        argv.push("-device".into());
        argv.push(format!(
            "virtio-net-pci,netdev=net0,mac={mac}{rom},bootindex=1"
        ));
        match firmware {
            Firmware::Bios => {}
            Firmware::Uefi | Firmware::UefiHttp => {
                let vars = dir.path().join("OVMF_VARS.fd");
                std::fs::copy(OVMF_VARS, &vars)
                    .unwrap_or_else(|e| panic!("copying {OVMF_VARS}: {e}"));
                argv.push("-drive".into());
                argv.push(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ));
                argv.push("-drive".into());
                argv.push(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
                // The test network has no IPv6 boot service: no PXEv6 (or HTTPv6) attempt.
                let mut knobs = vec!["IPv6PXESupport"];
                if firmware == Firmware::UefiHttp {
                    // Without PXE boot options, OVMF's first network option is HTTPv4.
                    knobs.push("IPv4PXESupport");
                }
                for knob in knobs {
                    argv.push("-fw_cfg".into());
                    argv.push(format!("name=opt/org.tianocore/{knob},string=no"));
                }
            }
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = net.spawn_client(&argv);
        Qemu {
            child,
            serial,
            started: Instant::now(),
            firmware,
            mac: mac.to_owned(),
            _dir: dir,
        }
    }

    /// The firmware it boots with.
    pub fn firmware(&self) -> Firmware {
        self.firmware
    }

    /// The NIC's MAC.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Path of the serial console's file.
    pub fn serial(&self) -> &Path {
        &self.serial
    }

    /// The serial console so far, as text: escape sequences and carriage returns removed.
    pub fn serial_text(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| strip_terminal_codes(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    /// The first serial line that contains `needle`, from `needle` on (the firmware may not
    /// have ended its last line), if one has been written.
    pub fn serial_line(&self, needle: &str) -> Option<String> {
        self.serial_text()
            .lines()
            .find_map(|l| l.find(needle).map(|at| l[at..].trim().to_owned()))
    }

    /// What QEMU itself printed (its stdout and stderr).
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// The exit status if QEMU has ended (the guest powered off, or QEMU failed).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Waits up to `timeout` for QEMU to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }
}

/// `text` without ANSI/VT100 escape sequences (iPXE and OVMF draw with them), carriage
/// returns and other control characters but newlines and tabs.
pub fn strip_terminal_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for p in chars.by_ref() {
                        if ('@'..='~').contains(&p) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_terminal_codes;

    #[test]
    fn terminal_codes_are_removed() {
        let serial =
            "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3hBdsDxe: ok\r\n\u{1b}[?7lPXE-BOOT-OK mac=1\r\n";
        assert_eq!(
            strip_terminal_codes(serial),
            "BdsDxe: ok\nPXE-BOOT-OK mac=1\n"
        );
    }
}
