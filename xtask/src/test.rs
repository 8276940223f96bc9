//! `cargo xtask test`: the CI command. Setup, the import-cycle check, fmt, clippy (host, then
//! eBPF), build, tests.

use std::time::Instant;

use anyhow::{ensure, Context as _};

use crate::{cmd, cycles, setup, workspace};

/// The eBPF crate, which builds only for the BPF target. `--workspace` means every member,
/// default or not, so the host passes exclude it by name.
const EBPF_PACKAGE: &str = "pxe-ebpf";
/// Target of the eBPF crate.
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// Subdirectory of the target dir for the eBPF clippy pass, so it leaves the host cache alone.
const EBPF_CLIPPY_TARGET_SUBDIR: &str = "ebpf-clippy";

/// Options of `cargo xtask test`; CI uses none.
#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Do not run `setup` first (the machine is known to be ready).
    #[arg(long)]
    skip_setup: bool,
    /// Skip both clippy passes (host and eBPF).
    #[arg(long)]
    no_clippy: bool,
    /// Threads per test binary, passed to libtest (default: one per CPU).
    #[arg(long, value_name = "N")]
    test_threads: Option<usize>,
}

/// Runs the steps in order and stops at the first failure, naming the step.
pub(crate) fn run(args: &TestArgs) -> anyhow::Result<()> {
    let mut steps = Steps::new();
    if args.skip_setup {
        steps.skip("setup");
    } else {
        steps.run("setup", setup::run)?;
    }
    steps.run("import cycles", || cycles::run(workspace::root()))?;
    steps.run("fmt", || cmd::run(&mut fmt(true)))?;
    if args.no_clippy {
        steps.skip("clippy (host)");
        steps.skip("clippy (eBPF)");
    } else {
        steps.run("clippy (host)", || {
            cmd::run(workspace::cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_PACKAGE,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        steps.run("clippy (eBPF)", clippy_ebpf)?;
    }
    steps.run("build", || {
        cmd::run(workspace::cargo().args([
            "build",
            "--workspace",
            "--exclude",
            EBPF_PACKAGE,
            "--all-targets",
        ]))
    })?;
    steps.run("test", || cargo_test(args.test_threads))?;
    steps.run("test without root", no_root_test)?;
    steps.finish();
    Ok(())
}

/// rustfmt's options beyond rustfmt.toml: imports grouped std / external / crate and merged per
/// crate, as aya-template formats. Both are nightly-only, so they are given here rather than in
/// rustfmt.toml, where stable `cargo fmt` would warn about them on every run.
const NIGHTLY_FMT_OPTIONS: &str = "group_imports=StdExternalCrate,imports_granularity=Crate";

/// `cargo +nightly fmt --all` with [`NIGHTLY_FMT_OPTIONS`]: checking only (`check`), or
/// rewriting the files (`cargo xtask fmt`).
pub(crate) fn fmt(check: bool) -> std::process::Command {
    let mut cargo = workspace::cargo();
    cargo.args(["+nightly", "fmt", "--all", "--"]);
    if check {
        cargo.arg("--check");
    }
    cargo.args(["--config", NIGHTLY_FMT_OPTIONS]);
    cargo
}

/// Clippy on the eBPF crate for its own target, with nightly and `-Z build-std=core` as
/// aya-build builds it. aya-ebpf's build script sets `bpf_target_arch` from the host.
fn clippy_ebpf() -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?.join(EBPF_CLIPPY_TARGET_SUBDIR);
    cmd::run(
        workspace::cargo()
            .args(["+nightly", "clippy", "-p", EBPF_PACKAGE, "--release"])
            .args([
                "--target",
                EBPF_TARGET,
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(target_dir)
            .args(["--", "-D", "warnings"]),
    )
}

/// Unit and integration tests; the namespace tests start the daemon from `PXE_DAEMON_BIN`.
fn cargo_test(test_threads: Option<usize>) -> anyhow::Result<()> {
    let daemon = workspace::daemon_bin(&workspace::target_dir()?);
    ensure!(
        daemon.is_file(),
        "the build step left no daemon at {} (PXE_DAEMON_BIN for the integration tests)",
        daemon.display()
    );
    let mut cargo = workspace::cargo();
    cargo
        .env("PXE_DAEMON_BIN", &daemon)
        .args(["test", "--workspace", "--exclude", EBPF_PACKAGE]);
    if let Some(threads) = test_threads {
        cargo.args(["--", "--test-threads", &threads.to_string()]);
    }
    cmd::run(&mut cargo)
}

/// The unprivileged user the no-root test runs as (`nobody`).
const NO_ROOT_UID: &str = "65534";

/// pxe-daemon's in-process test (`tests/run.rs`: the daemon on loopback, asked over HTTP and
/// TFTP) once more as an unprivileged user, so that what needs no root keeps needing none.
/// Run as the caller when that is not root already.
fn no_root_test() -> anyhow::Result<()> {
    let mut cargo = workspace::cargo();
    if pxe_tests::is_root() {
        cargo.args([
            "--config",
            &format!(
                "target.'cfg(target_os = \"linux\")'.runner = \
                 ['setpriv', '--reuid={NO_ROOT_UID}', '--regid={NO_ROOT_UID}', '--clear-groups']"
            ),
        ]);
    }
    cmd::run(cargo.args(["test", "-p", "pxe-daemon", "--test", "run"]))
}

/// Times the steps and reports them.
#[derive(Debug)]
struct Steps {
    start: Instant,
    passed: Vec<(&'static str, f64)>,
    skipped: Vec<&'static str>,
}

impl Steps {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            passed: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn run(
        &mut self,
        name: &'static str,
        step: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        println!("==> test: {name}");
        let start = Instant::now();
        let result = step();
        let secs = start.elapsed().as_secs_f64();
        result.with_context(|| {
            format!(
                "test step `{name}` failed after {secs:.1}s ({} steps passed before it; {:.1}s in total)",
                self.passed.len(),
                self.start.elapsed().as_secs_f64()
            )
        })?;
        println!("==> test: {name}: ok ({secs:.1}s)");
        self.passed.push((name, secs));
        Ok(())
    }

    fn skip(&mut self, name: &'static str) {
        println!("==> test: {name}: skipped");
        self.skipped.push(name);
    }

    fn finish(self) {
        let times: Vec<String> = self
            .passed
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1}s"))
            .collect();
        let skipped = if self.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", self.skipped.join(", "))
        };
        println!(
            "test: all {} steps passed in {:.1}s ({}){skipped}",
            self.passed.len(),
            self.start.elapsed().as_secs_f64(),
            times.join(", ")
        );
    }
}
