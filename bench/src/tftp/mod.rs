//! `pxe-bench tftp-load`: N concurrent TFTP clients reading one file, as fast as the server
//! lets them, from one thread (see [`load`]); each transfer is a sans-IO [`client::Transfer`].

pub(crate) mod client;
pub(crate) mod load;
pub(crate) mod report;
pub(crate) mod wire;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{ensure, Context as _};
use client::{Expected, Params, Transfer};
use pxe_common::TFTP_PORT;

/// Largest block size (RFC 2348).
const MAX_BLKSIZE: u16 = 65_464;
/// Largest window this generator asks for.
const MAX_WINDOWSIZE: u16 = 1024;
/// Exit status when the run had failed transfers (1 is an error that stopped the run).
pub(crate) const EXIT_FAILED_TRANSFERS: i32 = 3;

/// Flags of `pxe-bench tftp-load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The server: IP (port 69) or IP:PORT.
    #[arg(long)]
    server: String,
    /// File to read.
    #[arg(long)]
    file: String,
    /// Concurrent clients, each with its own socket (source port).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    clients: u32,
    /// Threads the clients are shared among, each with its own epoll set (one thread
    /// saturates a core before a fast server does).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Block size asked for (RFC 2348).
    #[arg(long, default_value_t = 1468, value_parser = clap::value_parser!(u16).range(8..=i64::from(MAX_BLKSIZE)))]
    blksize: u16,
    /// Window asked for (RFC 7440); at 1 the option is not sent, as BIOS PXE ROMs do not.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WINDOWSIZE)))]
    windowsize: u16,
    /// Transfers per client, one after the other (default 1 unless --duration-secs is given).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// No transfer starts after this many seconds (those running finish).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Hard limit of the run in seconds: transfers still running then fail (`deadline`).
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// Retransmit timeout of each client, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    timeout_ms: u64,
    /// Retransmits of the same datagram before a transfer fails.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=50))]
    retries: u32,
    /// A local copy of the file: every transfer's length is checked against it and each
    /// client's first transfer byte for byte.
    #[arg(long)]
    expect_file: Option<PathBuf>,
    /// The file's length, when no local copy is given.
    #[arg(long, conflicts_with = "expect_file")]
    expect_size: Option<u64>,
    /// Address the client sockets bind (port 0).
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Name of the server in the report.
    #[arg(long)]
    label: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the load; returns the process's exit status (0, or [`EXIT_FAILED_TRANSFERS`]).
pub(crate) fn run(args: &LoadArgs) -> anyhow::Result<i32> {
    let server: SocketAddr = match args.server.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => SocketAddr::new(
            args.server
                .parse::<IpAddr>()
                .with_context(|| format!("--server {:?} is not an IP or IP:PORT", args.server))?,
            TFTP_PORT,
        ),
    };
    if let Some(d) = args.duration_secs {
        ensure!(d.is_finite() && d > 0.0, "--duration-secs must be positive");
    }
    let expected = match (&args.expect_file, args.expect_size) {
        (Some(path), _) => {
            let content = std::fs::read(path)
                .with_context(|| format!("reading the expected file {}", path.display()))?;
            Expected {
                len: Some(content.len() as u64),
                content: Some(content),
            }
        }
        (None, len) => Expected { len, content: None },
    };
    let params = Params {
        blksize: args.blksize,
        windowsize: args.windowsize,
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
    };
    let rounds = match (args.rounds, args.duration_secs) {
        (None, None) => Some(1),
        (rounds, _) => rounds,
    };
    let plan = load::Plan {
        server,
        bind: args.bind,
        rrq: wire::rrq(&args.file, &Transfer::request_options(&params)),
        clients: args.clients as usize,
        threads: args.threads as usize,
        rounds,
        stop_starting_after: args.duration_secs.map(Duration::from_secs_f64),
        max_duration: Duration::from_secs(args.max_secs),
        params,
        expected,
    };
    let outcome = load::run(&plan).context("running the TFTP load")?;
    let server_text = server.to_string();
    let ctx = report::Context {
        label: args.label.as_deref().unwrap_or(&server_text),
        server: server_text.clone(),
        file: &args.file,
        clients: plan.clients,
        blksize: args.blksize,
        windowsize: args.windowsize,
        rounds,
    };
    if args.json {
        println!("{}", report::to_json(&ctx, &outcome));
    } else {
        print!("{}", report::to_text(&ctx, &outcome));
    }
    Ok(if outcome.failed() > 0 || outcome.completed == 0 {
        EXIT_FAILED_TRANSFERS
    } else {
        0
    })
}
