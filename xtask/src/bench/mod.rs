//! `cargo xtask bench <what>`: benchmarks of pxe-daemon against its peers, each written to its
//! own section of bench/RESULTS.md (`results`), with the run's facts (`run_info`) and CPU times
//! (`cpu`), the servers started by `peers`. Why here and not in `pxe-bench`, and how each is
//! measured: bench/README.md.

mod cpu;
pub(crate) mod dhcp;
pub(crate) mod http;
mod peers;
mod perfdhcp;
mod rack;
mod results;
mod run_info;
mod snmp;
pub(crate) mod tftp;
mod xdp;

use clap::Subcommand;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum What {
    /// perfdhcp against pxe-daemon and dnsmasq, proxy and full DHCP: rate under 1% loss,
    /// latency, CPU per answer.
    Dhcp(dhcp::DhcpArgs),
    /// pxe-daemon against nginx (sendfile): a 200 MiB file to 100 connections, and rendered
    /// scripts against a static file with wrk.
    Http(http::HttpArgs),
    /// TFTP: our daemon, tftpd-hpa and dnsmasq under N concurrent clients (pxe-bench tftp-load).
    Tftp(tftp::TftpArgs),
    /// The same simulated rack (pxe-bench rack) against pxe-daemon and against dnsmasq (proxy
    /// DHCP and TFTP) with nginx (HTTP), for N = 500, 2,000 and 5,000 machines.
    Rack(rack::RackArgs),
    /// The XDP fast path: the program's ns per frame by class, DHCP rate and CPU per answer
    /// (`--datapath kernel`, `--datapath xdp`, dnsmasq; pxe-bench dhcp-load) and TFTP at 1,000
    /// clients (each datapath and tftpd-hpa).
    Xdp(xdp::XdpArgs),
}

/// Runs setup, then the benchmark asked for.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    match &args.what {
        What::Dhcp(args) => dhcp::run(args),
        What::Http(args) => http::run(args),
        What::Tftp(args) => tftp::run(args),
        What::Rack(args) => rack::run(args),
        What::Xdp(args) => xdp::run(args),
    }
}
