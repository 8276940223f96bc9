//! Developer and CI tasks for the PXE boot server, run as `cargo xtask <task>`.
//!
//! `setup` installs what the project needs, `test` is the CI command, `demo` shows the server
//! booting clients. Building the eBPF object is not xtask's job: pxe-daemon's build.rs does it.

mod bench;
mod cmd;
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
    /// Install what the project needs (Debian packages, nightly rust-src, bpf-linker); idempotent.
    Setup,
    /// Setup, then fmt check, clippy (host and eBPF), build and every test: the CI command.
    Test(test::TestArgs),
    /// Setup, build pxe-daemon, then run the demo.
    Demo(demo::DemoArgs),
    /// Benchmarks against peer servers (`bench tftp`); results go to bench/RESULTS.md.
    #[command(subcommand)]
    Bench(bench::BenchTask),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test(args) => test::run(&args),
        Task::Demo(args) => {
            setup::run()?;
            cmd::run(workspace::cargo().args(["build", "-p", "pxe-daemon"]))
                .context("building pxe-daemon for the demo")?;
            demo::run(args)
        }
        Task::Bench(task) => bench::run(task),
    }
}
