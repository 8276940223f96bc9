//! Developer and CI tasks for the PXE boot server, run as `cargo xtask <task>`.
//!
//! `setup` installs what the project needs, `test` is the CI command, `demo` boots a QEMU
//! machine with real PXE firmware from the server, `bench` measures it against its peers.
//! Building the eBPF object is not xtask's job: pxe-daemon's build.rs does it.

// System calls go through nix, rustix and signal-hook.
#![forbid(unsafe_code)]

mod bench;
mod cmd;
mod cycles;
mod demo;
mod setup;
mod test;
mod workspace;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

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
    /// Check that imports between a crate's modules point one way (a step of `test`).
    Cycles,
    /// Format the workspace as the test command checks it (nightly rustfmt, imports grouped).
    Fmt,
    /// Setup, build pxe-daemon, then boot a QEMU machine (SeaBIOS + iPXE, proxy DHCP beside
    /// dnsmasq) from it and print its boot timeline.
    Demo(demo::DemoArgs),
    /// Setup, release build, then a benchmark against peer servers: `bench dhcp|http|tftp|rack|xdp [--quick]`.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test(args) => test::run(&args),
        Task::Cycles => cycles::run(workspace::root()),
        Task::Fmt => cmd::run(&mut test::fmt(false)),
        Task::Demo(args) => {
            setup::run()?;
            cmd::run(workspace::cargo().args(["build", "-p", "pxe-daemon"]))
                .context("building pxe-daemon for the demo")?;
            demo::run(&args)
        }
        Task::Bench(args) => bench::run(&args),
    }
}
