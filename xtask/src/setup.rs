//! `cargo xtask setup`: installs what the project needs on Debian 12, skipping what is there.

use std::io::ErrorKind;
use std::process::Command;
use std::time::Instant;

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
    // Peers: dnsmasq plays the site's DHCP server beside the proxy.
    "dnsmasq-base",
    // Peer of the TFTP benchmark: `in.tftpd`, run by `cargo xtask bench tftp` itself in a test
    // namespace. The package also sets up a system service (port 69 of the host's namespace),
    // which the benchmark neither needs nor touches.
    "tftpd-hpa",
];

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
pub fn run() -> anyhow::Result<()> {
    step("Debian packages", debian_packages)?;
    step("nightly rust-src", rust_src)?;
    step("bpf-linker", bpf_linker)?;
    step("Python modules", python_modules)?;
    Ok(())
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

fn rust_src() -> anyhow::Result<Outcome> {
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
    let present = String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some("rust-src"));
    if present {
        return Ok(Outcome::AlreadyPresent);
    }
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
        .context("adding rust-src to the nightly toolchain")?;
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
