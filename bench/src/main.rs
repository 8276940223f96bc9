//! `pxe-bench`: the rack-boot simulator (`rack`, `plot`), and load generators of our own for
//! the benchmarks.

mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pxe-bench",
    about = "Rack-boot simulator and load generators for pxe-daemon's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulates N machines booting at once through the whole PXE chain (DHCP, TFTP, iPXE's
    /// DHCP, script, kernel, initrd) against the boot servers on an interface; reports each
    /// stage's percentiles, the time until all booted and the failures. Needs root.
    Rack(sim::RackArgs),
    /// Draws the completion curves of `rack --json` reports into one PNG.
    Plot(sim::plot::PlotArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Rack(args) => sim::run(&args),
        Command::Plot(args) => sim::plot::run(&args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("pxe-bench: {e:#}");
            ExitCode::from(3)
        }
    }
}
