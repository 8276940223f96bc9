//! Developer and CI tasks for the PXE boot server, run as `cargo xtask <task>`.
//!
//! `setup` installs what the project needs, `test` is the CI command, `demo` boots a QEMU
//! machine with real PXE firmware from the server. Building the eBPF object is not xtask's job: pxe-daemon's build.rs does it.

mod cmd;
mod demo;
mod setup;
mod test;
mod workspace;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Exit status of a task that is not implemented yet (distinct from a failure, which is 1).
const EXIT_NOT_IMPLEMENTED: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer and CI tasks for the PXE boot server"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the project needs (Debian packages, nightly rust-src, bpf-linker, the boot
    /// cache: a Debian kernel and busybox-static); idempotent.
    Setup,
    /// Setup, then fmt check, clippy (host and eBPF), build and every test: the CI command.
    Test(test::TestArgs),
    /// Setup, build pxe-daemon, then boot a QEMU machine (SeaBIOS + iPXE, proxy DHCP beside
    /// dnsmasq) from it and print its boot timeline.
    Demo(demo::DemoArgs),
    /// Benchmarks against peer servers (not built yet).
    Bench,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test(args) => test::run(&args),
        Task::Demo(args) => {
            setup::run()?;
            cmd::run(workspace::cargo().args(["build", "-p", "pxe-daemon"]))
                .context("building pxe-daemon for the demo")?;
            demo::run(&args)
        }
        Task::Bench => {
            eprintln!(
                "cargo xtask bench: not implemented yet; the rack-boot simulator issue (pxe-bench) \
                 fills it in. Nothing was run."
            );
            std::process::exit(EXIT_NOT_IMPLEMENTED);
        }
    }
}
