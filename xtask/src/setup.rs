//! `cargo xtask setup`: installs what the project needs on Debian 12, skipping what is there.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{ensure, Context as _};

use crate::cmd;

/// Debian packages the project needs. Later work appends a commented group of its own.
const DEBIAN_PACKAGES: &[&str] = &[
    // Building bpf-linker against Debian's LLVM 22 (the LLVM of rustc nightly).
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Network namespaces, veth pairs and looking at them in the integration tests.
    "iproute2",
    "ethtool",
    "tcpdump",
    "procps",
    // Real DHCP clients the tests boot against the server.
    "isc-dhcp-client",
    "nmap",
    "busybox",
    // Real TFTP and HTTP clients.
    "tftp-hpa",
    "curl",
    "wget",
    // TFTP client with blksize and windowsize options (client only, not atftpd).
    "atftp",
    // Helper scripts in the tests.
    "python3",
    // A real Prometheus scrapes the daemon in the observability test; promtool checks metrics.
    "prometheus",
    // Peers: dnsmasq plays the site's DHCP server beside the proxy.
    "dnsmasq-base",
    // Real firmware for the firmware boot test: QEMU (software emulation), SeaBIOS with
    // iPXE option ROMs (ipxe-qemu), OVMF (UEFI), and the iPXE binaries the daemon serves.
    // The kernel and busybox-static are unpacked into the boot cache instead: see boot_cache.
    "qemu-system-x86",
    "ipxe-qemu",
    "ovmf",
    "ipxe",
    // The DHCP benchmark: perfdhcp, Kea's DHCP load generator.
    "kea-admin",
    // The HTTP benchmark: nginx as the peer, wrk as the small-request load generator.
    "nginx-light",
    "wrk",
    // Peer of the TFTP benchmark: `in.tftpd`, run by `cargo xtask bench tftp` itself in a test
    // namespace. The package also sets up a system service (port 69 of the host's namespace),
    // which the benchmark neither needs nor touches.
    "tftpd-hpa",
    // The rack benchmark: the plots' text font (nginx-light is listed above).
    "fonts-dejavu-core",
];

/// The Debian metapackage whose dependency names the current kernel image package.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// Members of the kernel package unpacked into the boot cache: the kernel, and the NIC drivers
/// (virtio-net, e1000) with the modules they depend on, for the marker initramfs.
const KERNEL_MEMBERS: &[&str] = &[
    "./boot/vmlinuz-*",
    "./lib/modules/*/kernel/drivers/virtio/*.ko",
    "./lib/modules/*/kernel/drivers/net/virtio_net.ko",
    "./lib/modules/*/kernel/drivers/net/net_failover.ko",
    "./lib/modules/*/kernel/net/core/failover.ko",
    "./lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
];
/// The statically linked busybox (it conflicts with the `busybox` package the tests use as a
/// client, so it is unpacked, not installed).
const BUSYBOX_STATIC_PACKAGE: &str = "busybox-static";

/// Python modules the tests' clients use, pinned, installed with pip when missing.
const PYTHON_MODULES: &[(&str, &str)] = &[
    // scapy builds the raw PXE DHCP client of the proxy-DHCP test.
    ("scapy", "2.8.0"),
];

/// The only toolchain that can build for `bpfel-unknown-none` here (`-Z build-std=core`).
const NIGHTLY: &str = "nightly";
/// bpf-linker release that builds against LLVM 22 (shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's LLVM 22; the `llvm-config` on PATH is LLVM 14.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// What a setup step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    AlreadyPresent,
    Installed,
}

/// Runs every setup step in order; each prints one line with its outcome and time.
pub(crate) fn run() -> anyhow::Result<()> {
    step("Debian packages", debian_packages)?;
    step("nightly rust-src and rustfmt", nightly_components)?;
    step("bpf-linker", bpf_linker)?;
    step("Python modules", python_modules)?;
    step("boot cache (kernel, busybox-static)", boot_cache)?;
    Ok(())
}

/// Fills the firmware test's boot cache from Debian packages, fetched with `apt-get download`
/// and unpacked with `dpkg-deb`, never installed: installing `linux-image-*` runs initramfs
/// hooks and touches /boot of the machine itself, and `busybox-static` would replace the
/// `busybox` the tests use. Each part is written to a temporary directory and renamed into
/// place with its `PACKAGE` file last, so a killed run leaves nothing that looks complete.
fn boot_cache() -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::AlreadyPresent;
    let kernel_dir = pxe_tests::firmware::kernel_cache_dir();
    if !kernel_dir.join("PACKAGE").is_file() {
        let package = kernel_package()?;
        fill_cache_dir(&kernel_dir, &package, KERNEL_MEMBERS, |unpacked, out| {
            let vmlinuz = find_files(&unpacked.join("boot"), |name| name.starts_with("vmlinuz-"))?;
            let [vmlinuz] = vmlinuz.as_slice() else {
                anyhow::bail!("{package} holds {} kernels, expected one", vmlinuz.len());
            };
            std::fs::rename(vmlinuz, out.join(pxe_tests::firmware::KERNEL_NAME))?;
            let modules = out.join("modules");
            std::fs::create_dir(&modules)?;
            for ko in find_files(&unpacked.join("lib/modules"), |name| name.ends_with(".ko"))? {
                let name = ko.file_name().context("a module has a file name")?;
                std::fs::rename(&ko, modules.join(name))?;
            }
            Ok(())
        })?;
        outcome = Outcome::Installed;
    }
    let busybox_dir = pxe_tests::firmware::busybox_cache_dir();
    if !busybox_dir.join("PACKAGE").is_file() {
        fill_cache_dir(
            &busybox_dir,
            BUSYBOX_STATIC_PACKAGE,
            &["./bin/busybox"],
            |unpacked, out| {
                Ok(std::fs::rename(
                    unpacked.join("bin/busybox"),
                    out.join("busybox"),
                )?)
            },
        )?;
        outcome = Outcome::Installed;
    }
    Ok(outcome)
}

/// The kernel image package `linux-image-amd64` depends on (e.g. `linux-image-6.1.0-56-amd64`).
fn kernel_package() -> anyhow::Result<String> {
    let output = cmd::output(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]))
        .with_context(|| format!("running apt-cache depends {KERNEL_METAPACKAGE}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|dep| dep.starts_with("linux-image-"))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "apt-cache depends {KERNEL_METAPACKAGE} names no linux-image package (run                  apt-get update?): {}",
                stdout.trim()
            )
        })
}

/// Downloads `package`, unpacks its `members` (tar wildcards) into a scratch directory, lets
/// `arrange` move what is needed into the new cache directory, writes `PACKAGE` and renames
/// the new directory to `dir`.
fn fill_cache_dir(
    dir: &Path,
    package: &str,
    members: &[&str],
    arrange: impl FnOnce(&Path, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = dir.parent().context("the cache directory has a parent")?;
    let scratch = parent.join(format!(
        ".{}.tmp",
        dir.file_name()
            .context("a cache directory name")?
            .to_string_lossy()
    ));
    remove_dir_if_there(&scratch)?;
    let (download, unpacked, out) = (
        scratch.join("download"),
        scratch.join("unpacked"),
        scratch.join("out"),
    );
    for d in [&download, &unpacked, &out] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let fetch = || {
        cmd::run(
            Command::new("apt-get")
                .current_dir(&download)
                .args(["download", package]),
        )
    };
    if fetch().is_err() {
        // Package lists older than the archive name files that are gone: refresh once.
        cmd::run(Command::new("apt-get").arg("update"))
            .with_context(|| format!("updating apt package lists to download {package}"))?;
        fetch().with_context(|| format!("downloading {package} with apt-get download"))?;
    }
    let deb = find_files(&download, |name| name.ends_with(".deb"))?
        .pop()
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let version = cmd::output(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .arg("Version"),
    )
    .context("reading the package version with dpkg-deb")?;
    unpack_members(&deb, &unpacked, members)?;
    arrange(&unpacked, &out).with_context(|| format!("arranging the files of {package}"))?;
    let package_line = format!(
        "{package} {}
",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    std::fs::write(out.join("PACKAGE"), &package_line)?;
    remove_dir_if_there(dir)?;
    std::fs::rename(&out, dir)
        .with_context(|| format!("moving {} to {}", out.display(), dir.display()))?;
    remove_dir_if_there(&scratch)?;
    println!("setup: {} <- {}", dir.display(), package_line.trim());
    Ok(())
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x -C INTO --wildcards MEMBERS...`.
fn unpack_members(deb: &Path, into: &Path, members: &[&str]) -> anyhow::Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb --fsys-tarfile")?;
    let tar_input = dpkg.stdout.take().context("dpkg-deb's stdout")?;
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(into)
        .arg("--wildcards")
        .args(members)
        .stdin(tar_input);
    println!(
        "+ dpkg-deb --fsys-tarfile {} | {}",
        deb.display(),
        cmd::display(&tar)
    );
    let tar_status = tar.status().context("running tar")?;
    let dpkg_status = dpkg.wait().context("waiting for dpkg-deb")?;
    ensure!(
        dpkg_status.success() && tar_status.success(),
        "unpacking {} failed (dpkg-deb {dpkg_status}, tar {tar_status})",
        deb.display()
    );
    Ok(())
}

/// Regular files under `dir` (recursively) whose names satisfy `wanted`, sorted.
fn find_files(dir: &Path, wanted: impl Fn(&str) -> bool + Copy) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(find_files(&path, wanted)?);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(wanted)
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn remove_dir_if_there(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn python_modules() -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::AlreadyPresent;
    for (module, version) in PYTHON_MODULES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            cmd::run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--root-user-action=ignore",
                &format!("{module}=={version}"),
            ]))
            .with_context(|| format!("installing Python module {module} {version} with pip"))?;
            outcome = Outcome::Installed;
        }
    }
    Ok(outcome)
}

fn step(name: &str, install: impl FnOnce() -> anyhow::Result<Outcome>) -> anyhow::Result<()> {
    let start = Instant::now();
    let outcome = install()?;
    let secs = start.elapsed().as_secs_f64();
    match outcome {
        Outcome::AlreadyPresent => println!("setup: {name}: already present ({secs:.1}s)"),
        Outcome::Installed => println!("setup: {name}: installed ({secs:.1}s)"),
    }
    Ok(())
}

fn debian_packages() -> anyhow::Result<Outcome> {
    let missing = missing_debian_packages()?;
    if missing.is_empty() {
        return Ok(Outcome::AlreadyPresent);
    }
    let list = missing.join(" ");
    println!("setup: missing Debian packages: {list}");
    cmd::run(Command::new("apt-get").arg("update"))
        .with_context(|| format!("updating apt package lists to install {list}"))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .with_context(|| format!("installing Debian packages {list}"))?;
    let still_missing = missing_debian_packages()?;
    ensure!(
        still_missing.is_empty(),
        "apt-get succeeded but these Debian packages are still not installed: {}",
        still_missing.join(" ")
    );
    Ok(Outcome::Installed)
}

/// The packages of [`DEBIAN_PACKAGES`] that dpkg does not report as installed.
fn missing_debian_packages() -> anyhow::Result<Vec<&'static str>> {
    // One query for all; dpkg-query exits 1 when a package is unknown, which just means missing.
    let output = cmd::output(
        Command::new("dpkg-query")
            .args(["-W", r"-f=${Package} ${Status}\n"])
            .args(DEBIAN_PACKAGES),
    )
    .context("checking installed Debian packages with dpkg-query")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(package, _)| package)
        .collect();
    Ok(DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect())
}

/// Components of the nightly toolchain: rust-src (the eBPF build's `-Z build-std=core`) and
/// rustfmt (the fmt step's import grouping is a nightly option).
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "rustfmt"];

fn nightly_components() -> anyhow::Result<Outcome> {
    let output = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))
    .context("listing the components of the nightly toolchain with rustup")?;
    ensure!(
        output.status.success(),
        "rustup component list --toolchain {NIGHTLY} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let installed = String::from_utf8_lossy(&output.stdout).into_owned();
    // rustup lists a component with its target (`rustfmt-x86_64-unknown-linux-gnu`), or
    // without one for rust-src.
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .into_iter()
        .filter(|c| {
            !installed
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .any(|name| name == *c || name.starts_with(&format!("{c}-")))
        })
        .collect();
    if missing.is_empty() {
        return Ok(Outcome::AlreadyPresent);
    }
    cmd::run(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", NIGHTLY])
            .args(&missing),
    )
    .with_context(|| format!("adding {} to the nightly toolchain", missing.join(", ")))?;
    Ok(Outcome::Installed)
}

fn bpf_linker() -> anyhow::Result<Outcome> {
    if bpf_linker_version()?.as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok(Outcome::AlreadyPresent);
    }
    cmd::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
    .with_context(|| format!("installing bpf-linker {BPF_LINKER_VERSION} with cargo install"))?;
    let version = bpf_linker_version()?;
    ensure!(
        version.as_deref() == Some(BPF_LINKER_VERSION),
        "cargo install succeeded but `bpf-linker --version` reports {version:?}, not \
         {BPF_LINKER_VERSION} (is another bpf-linker earlier on PATH?)"
    );
    Ok(Outcome::Installed)
}

/// The version `bpf-linker --version` reports, or `None` when it is not installed or fails.
fn bpf_linker_version() -> anyhow::Result<Option<String>> {
    let output = match cmd::output(Command::new("bpf-linker").arg("--version")) {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).context("running bpf-linker --version"),
    };
    if !output.status.success() {
        return Ok(None);
    }
    // Prints `bpf-linker 0.13.0`.
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_owned))
}
