//! `pxe-bench`: the rack-boot simulator (`rack`, `plot`), and load generators of our own for
//! the benchmarks (`cargo xtask bench ...` runs them).

mod dhcp_load;
mod http;
mod sim;
mod tftp;
mod xdp_cost;
mod xsk_compare;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pxe-bench",
    about = "Load generators for pxe-daemon's benchmarks"
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
    /// N keep-alive connections download one URL over and over for a fixed time; prints one
    /// line of `key=value` figures (bytes, responses, errors, reconnects, secs).
    HttpLoad {
        /// `http://address:port/path` (no names).
        #[arg(long)]
        url: String,
        /// Concurrent connections.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Length of the run.
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        /// Body length every response must have.
        #[arg(long)]
        expect_length: u64,
        /// Read body bytes into a buffer instead of dropping them in the kernel (MSG_TRUNC).
        #[arg(long)]
        copy: bool,
    },
    /// N concurrent TFTP clients reading one file (RRQ with tsize, blksize, windowsize;
    /// retransmits on timeout; lengths and bytes checked); reports throughput, per-transfer
    /// percentiles, failures and its own CPU time. Exit status 3 if any transfer failed.
    TftpLoad(tftp::LoadArgs),
    /// PXE DHCP at a fixed rate of new exchanges (proxy: DISCOVER-OFFER; full: through the
    /// ACK) from distinct clients in raw frames (AF_PACKET, sendmmsg); reports answers, loss,
    /// latency and its own CPU time. Needs root.
    DhcpLoad(dhcp_load::LoadArgs),
    /// The XDP program's cost per frame by class (BPF_PROG_TEST_RUN with repeat), set up as
    /// `--datapath kernel` and `--datapath xdp` run it. Needs root.
    XdpCost(xdp_cost::CostArgs),
    /// Our AF_XDP binding against the xdpilone crate, same run, same workload: UDP echo over a
    /// veth pair through the daemon's XDP program; answers/s, loss and server CPU per answer.
    /// Needs root.
    XskCompare(xsk_compare::CompareArgs),
    /// Downloads a URL once and compares the body with a file, byte for byte.
    HttpGet {
        /// `http://address:port/path` (no names).
        #[arg(long)]
        url: String,
        /// The file the body must equal.
        #[arg(long)]
        expect_file: PathBuf,
        /// Bound on the whole download.
        #[arg(long, default_value_t = 30.0)]
        timeout_secs: f64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Rack(args) => exit_code(sim::run(&args)),
        Command::Plot(args) => exit_code(sim::plot::run(&args).map(|()| 0)),
        Command::DhcpLoad(args) => exit_code(dhcp_load::run(&args).map(|()| 0)),
        Command::XdpCost(args) => exit_code(xdp_cost::run(&args).map(|()| 0)),
        Command::XskCompare(args) => exit_code(xsk_compare::run(&args).map(|()| 0)),
        Command::TftpLoad(args) => match tftp::run(&args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("pxe-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::HttpLoad {
            url,
            connections,
            duration_secs,
            expect_length,
            copy,
        } => {
            let target = match http::Target::parse(&url) {
                Ok(t) => t,
                Err(e) => return usage(&e),
            };
            let Ok(duration) = Duration::try_from_secs_f64(duration_secs) else {
                return usage("--duration-secs must be a non-negative number");
            };
            let spec = http::LoadSpec {
                target,
                connections,
                duration,
                expect_length,
                copy,
            };
            let (stats, elapsed) = http::load(&spec);
            println!(
                "connections={connections} secs={:.3} bytes={} responses={} errors={} reconnects={}",
                elapsed.as_secs_f64(),
                stats.bytes,
                stats.responses,
                stats.errors,
                stats.reconnects
            );
            if let Some(e) = stats.first_error {
                eprintln!("pxe-bench http-load: first error: {e}");
            }
            ExitCode::SUCCESS
        }
        Command::HttpGet {
            url,
            expect_file,
            timeout_secs,
        } => {
            let target = match http::Target::parse(&url) {
                Ok(t) => t,
                Err(e) => return usage(&e),
            };
            let Ok(timeout) = Duration::try_from_secs_f64(timeout_secs) else {
                return usage("--timeout-secs must be a non-negative number");
            };
            match http::get_and_compare(&target, &expect_file, timeout) {
                Ok(bytes) => {
                    println!("bytes={bytes} equal=1");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pxe-bench http-get {url}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The exit status of a command that returns one (or an error, which is status 3).
fn exit_code(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("pxe-bench: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("pxe-bench: {why}");
    ExitCode::from(2)
}
