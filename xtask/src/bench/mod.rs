//! `cargo xtask bench <name>`: benchmarks of pxe-daemon against peer servers, each in its own
//! module, each writing its section of `bench/RESULTS.md` between its own markers.

pub mod tftp;

/// Which benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum BenchTask {
    /// TFTP: our daemon, tftpd-hpa and dnsmasq under N concurrent clients (pxe-bench tftp-load).
    Tftp(tftp::TftpArgs),
}

/// Runs one benchmark.
pub fn run(task: BenchTask) -> anyhow::Result<()> {
    match task {
        BenchTask::Tftp(args) => tftp::run(&args),
    }
}
