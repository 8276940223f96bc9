//! `cargo xtask bench <what>`: benchmarks of pxe-daemon against its peers, each written to its
//! own section of bench/RESULTS.md.

mod rack;

use clap::Subcommand;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum What {
    /// The same simulated rack (pxe-bench rack) against pxe-daemon and against dnsmasq (proxy
    /// DHCP and TFTP) with nginx (HTTP), for N = 500, 2,000 and 5,000 machines.
    Rack(rack::RackArgs),
}

/// Runs setup, then the benchmark asked for.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    match &args.what {
        What::Rack(args) => rack::run(args),
    }
}
