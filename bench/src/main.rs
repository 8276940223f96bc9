//! `pxe-bench`: load generators for the benchmarks against peer servers (`cargo xtask bench`);
//! the rack-boot simulator comes with its issue.

mod tftp;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pxe-bench",
    about = "Load generators for benchmarking pxe-daemon against its peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N concurrent TFTP clients reading one file (RRQ with tsize, blksize, windowsize;
    /// retransmits on timeout; lengths and bytes checked); reports throughput, per-transfer
    /// percentiles, failures and its own CPU time. Exit status 3 if any transfer failed.
    TftpLoad(tftp::LoadArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::TftpLoad(args) => tftp::run(&args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pxe-bench: {e:#}");
            std::process::exit(1);
        }
    }
}
