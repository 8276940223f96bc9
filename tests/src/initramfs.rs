//! The initramfs the firmware tests boot: static busybox, the NIC drivers the kernel needs to
//! see its network card, and an `/init` that prints [`MARKER`] with the machine's MAC on the
//! serial console and powers off. Written as a newc cpio archive, gzipped.

use std::{collections::BTreeMap, io::Write, path::Path};

use flate2::write::GzEncoder;

/// What `/init` prints first on its marker line: `PXE-BOOT-OK mac=52:54:00:... ...`.
pub const MARKER: &str = "PXE-BOOT-OK";
/// Kernel modules `/init` loads (with what they depend on) so that `eth0` exists: the NICs the
/// firmware tests give their machines. virtio's PCI transport is no symbol dependency of
/// virtio_net (`depends=` does not name it), but without it no virtio device is found.
pub const NIC_MODULES: &[&str] = &["virtio_pci", "virtio_net", "e1000"];
/// Name of the kernel argument through which the daemon's profile passes the MAC it rendered
/// the script for (`pxe.mac={{ mac }}`); `/init` prints it beside the NIC's own.
pub const PROFILE_MAC_ARG: &str = "pxe.mac";

/// newc header magic.
const NEWC_MAGIC: &str = "070701";
/// The end-of-archive entry name.
const TRAILER: &str = "TRAILER!!!";
/// Mode bits of a directory and a regular file.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

/// A newc ("SVR4 with no CRC") cpio archive being written, as the kernel unpacks initramfs.
#[derive(Debug, Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Cpio {
        Cpio {
            bytes: Vec::new(),
            next_ino: 1,
        }
    }

    /// Adds directory `path` (no leading slash, e.g. `lib/modules`), mode 0755.
    pub fn dir(&mut self, path: &str) -> &mut Cpio {
        self.entry(path, S_IFDIR | 0o755, 2, &[]);
        self
    }

    /// Adds regular file `path` with permission bits `perm` (e.g. 0o755) and `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Cpio {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, data);
        self
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, data: &[u8]) {
        assert!(
            !path.starts_with('/') && !path.is_empty(),
            "cpio path {path:?} must be relative and not empty"
        );
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len()).expect("an initramfs file is below 4 GiB");
        let name_size = u32::try_from(path.len() + 1).expect("a short path");
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0];
        self.bytes.extend_from_slice(NEWC_MAGIC.as_bytes());
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Pads to a multiple of 4 bytes, as newc aligns names and data.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// Ends the archive (the trailer entry) and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, 1, &[]);
        self.bytes
    }
}

/// The `depends=` list of a kernel module (from its `.modinfo` section), read from its bytes.
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let Some(start) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[start + KEY.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The modules to load, dependencies first, for `wanted` out of `available` (module name to
/// its `depends=` list). A wanted module that is not available is left out (that driver is
/// built in or absent: `/init` still prints the marker); a missing dependency is an error.
pub fn load_order(
    available: &BTreeMap<String, Vec<String>>,
    wanted: &[&str],
) -> Result<Vec<String>, String> {
    fn visit(
        name: &str,
        available: &BTreeMap<String, Vec<String>>,
        order: &mut Vec<String>,
        path: &mut Vec<String>,
    ) -> Result<(), String> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        if path.iter().any(|m| m == name) {
            return Err(format!(
                "module dependency cycle: {} -> {name}",
                path.join(" -> ")
            ));
        }
        let deps = available.get(name).ok_or_else(|| {
            format!(
                "kernel module {name} (needed by {}) is not in the cache",
                path.last().map_or("the test", String::as_str)
            )
        })?;
        path.push(name.to_owned());
        for dep in deps {
            visit(dep, available, order, path)?;
        }
        path.pop();
        order.push(name.to_owned());
        Ok(())
    }
    let mut order = Vec::new();
    for name in wanted.iter().filter(|n| available.contains_key(**n)) {
        visit(name, available, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

/// The `/init` script: mounts proc and sysfs, loads `modules` in order, prints the marker line
/// (the NIC's MAC, the MAC the profile was rendered for, the kernel's uptime) on the console
/// and powers off at once.
pub fn init_script(modules: &[String]) -> String {
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/busybox sh
# pxe-tests firmware boot: prove the kernel and this initramfs came over the network.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
for m in {modules}; do /bin/busybox insmod /lib/modules/$m.ko; done
mac=$(/bin/busybox cat /sys/class/net/eth0/address 2>/dev/null)
profile_mac=
for arg in $(/bin/busybox cat /proc/cmdline); do
  case "$arg" in {PROFILE_MAC_ARG}=*) profile_mac="${{arg#{PROFILE_MAC_ARG}=}}" ;; esac
done
uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
# On a line of its own: the firmware's last line may have no newline (the kernel is quiet).
echo "
{MARKER} mac=${{mac:-none}} profile_mac=${{profile_mac:-none}} uptime=${{uptime}}s" > /dev/console
/bin/busybox poweroff -f
"#
    )
}

/// Builds the marker initramfs from a static `busybox` and a directory of kernel modules
/// (`<name>.ko`, flat), gzipped.
pub fn build(busybox: &Path, modules_dir: &Path) -> Result<Vec<u8>, String> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
    let mut available = BTreeMap::new();
    let mut files = BTreeMap::new();
    let entries = std::fs::read_dir(modules_dir)
        .map_err(|e| format!("listing {}: {e}", modules_dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("listing {}: {e}", modules_dir.display()))?
            .path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        else {
            continue;
        };
        let bytes = read(&path)?;
        available.insert(name.to_owned(), module_depends(&bytes));
        files.insert(name.to_owned(), bytes);
    }
    let order = load_order(&available, NIC_MODULES)?;

    let mut cpio = Cpio::new();
    for dir in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(dir);
    }
    cpio.file("bin/busybox", 0o755, &read(busybox)?);
    for name in &order {
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &files[name]);
    }
    cpio.file("init", 0o755, init_script(&order).as_bytes());

    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cpio.finish())
        .and_then(|()| gz.finish())
        .map_err(|e| format!("gzipping the initramfs: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let mut cpio = Cpio::new();
        cpio.dir("bin").file("init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // The first header: inode 1, a directory 0755, two links, size 0, name "bin\0".
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&header[6..14], "00000001");
        assert_eq!(&header[14..22], "000041ED");
        assert_eq!(&header[54..62], "00000000");
        assert_eq!(&header[94..102], "00000004");
        assert_eq!(&bytes[110..114], b"bin\0");
        // The file's data starts on a 4-byte boundary after its name.
        let init = bytes.windows(5).position(|w| w == b"init\0").unwrap();
        let data = (init + 5).next_multiple_of(4);
        assert_eq!(&bytes[data..data + 10], b"#!/bin/sh\n");
        let trailer = bytes.windows(10).position(|w| w == b"TRAILER!!!").unwrap();
        assert_eq!(&bytes[trailer - 110..trailer - 104], b"070701");
    }

    #[test]
    fn dependencies_load_first_and_missing_drivers_are_skipped() {
        let mut ko = b"\x7fELF junk\0license=GPL\0depends=virtio_ring,virtio\0name=x\0".to_vec();
        assert_eq!(module_depends(&ko), ["virtio_ring", "virtio"]);
        ko = b"\0depends=\0".to_vec();
        assert!(module_depends(&ko).is_empty());

        let available: BTreeMap<String, Vec<String>> = [
            ("virtio_net", vec!["virtio_ring", "virtio", "net_failover"]),
            ("virtio", vec!["virtio_ring"]),
            ("virtio_ring", vec![]),
            ("net_failover", vec!["failover"]),
            ("failover", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            load_order(&available, &["virtio_net", "e1000"]).unwrap(),
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let mut broken = available.clone();
        broken.remove("failover");
        let err = load_order(&broken, &["virtio_net"]).unwrap_err();
        assert!(err.contains("failover (needed by net_failover)"), "{err}");
    }

    #[test]
    fn init_prints_the_marker_and_powers_off() {
        let init = init_script(&["virtio".into(), "virtio_net".into()]);
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("for m in virtio virtio_net; do"));
        assert!(init.contains("echo \"\nPXE-BOOT-OK mac=${mac:-none} profile_mac="));
        assert!(init.contains("pxe.mac=*) profile_mac=\"${arg#pxe.mac=}\""));
        assert!(init.trim_end().ends_with("poweroff -f"));
    }
}
