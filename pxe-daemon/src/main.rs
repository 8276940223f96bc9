//! `pxe-daemon`: parses flags, binds sockets, handles signals, and hands over to the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use pxe_daemon::{
    cli::{Cli, Command, ProbeArgs},
    config::{Config, LogFormat},
    dhcp::{self, DhcpMode},
    probe,
    ra::{self, RouterAdvertisement},
    Listeners,
};
use tracing_subscriber::EnvFilter;

/// Exit status for a refused configuration.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(Some(&file), Default::default()) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Probe(args) => probe(&args),
        Command::Status(args) => {
            match pxe_daemon::timeline::status::status(&args.url, args.mac.as_deref(), args.json) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pxe-daemon status: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let config = match Config::load(args.config.as_deref(), args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pxe-daemon: refusing to start: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            init_logging(&config);
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format_args!("{e:#}"), "pxe-daemon stopped");
                    eprintln!("pxe-daemon: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `pxe-daemon probe`: the table (or JSON lines) on stdout, the verdict on stderr, and the exit
/// status of [`probe::Report::exit_status`], or [`probe::EXIT_PROBE_FAILED`].
fn probe(args: &ProbeArgs) -> ExitCode {
    // Only warnings by default: stdout is the report. PXE_LOG_LEVEL / RUST_LOG=debug shows more.
    let filter = EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::WARN.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let report = match probe::run(&args.options()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("pxe-daemon probe: {e}");
            return ExitCode::from(probe::EXIT_PROBE_FAILED);
        }
    };
    if args.json {
        print!("{}", report.json_lines());
    } else {
        print!("{}", report.table());
    }
    let status = report.exit_status();
    eprintln!("pxe-daemon probe: {}", report.summary());
    ExitCode::from(status)
}

fn init_logging(config: &Config) {
    // The filter was validated with the config.
    let filter = EnvFilter::builder().parse_lossy(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Pending connections the HTTP listener holds (the kernel caps it at `net.core.somaxconn`):
/// a rack's iPXE clients connect within the same second, and tokio's default of 1024 made the
/// kernel drop SYNs (each costing the client a 1 s retransmit; seen with `pxe-bench rack`).
const HTTP_LISTEN_BACKLOG: u32 = 65_535;

/// Binds the HTTP listener (SO_REUSEADDR, as tokio's `bind` does) with [`HTTP_LISTEN_BACKLOG`].
fn bind_http(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_LISTEN_BACKLOG)
}

fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let listeners = bind_listeners(&config)?;
        pxe_daemon::run(config, listeners, shutdown_signal()).await?;
        Ok(())
    })
}

/// Binds every socket `config` asks for (within the runtime: the HTTP listener is tokio's).
fn bind_listeners(config: &Config) -> anyhow::Result<Listeners> {
    let http = bind_http(config.http.listen)
        .with_context(|| format!("binding the HTTP listener to {}", config.http.listen))?;
    let dhcp = match (config.dhcp.mode, &config.server.interface) {
        (DhcpMode::Off, _) | (_, None) => None,
        (_, Some(interface)) => {
            let bind = |port| {
                dhcp::kernel::bind(interface, port).with_context(|| {
                    format!(
                        "binding DHCP port {port} on {interface} (is another DHCP server running?)"
                    )
                })
            };
            Some(dhcp::kernel::DhcpSockets {
                dhcp: bind(pxe_common::DHCP_SERVER_PORT)?,
                pxe: bind(pxe_common::PXE_BOOT_SERVER_PORT)?,
            })
        }
    };
    let tftp = std::net::UdpSocket::bind(config.tftp.listen)
        .with_context(|| format!("binding the TFTP listener to {}", config.tftp.listen))?;
    let ra = match (config.ipv6.router_advertisement, &config.server.interface) {
        (RouterAdvertisement::NoRouter, Some(interface)) => {
            Some(ra::server::bind(interface).with_context(|| {
                format!(
                    "opening the ICMPv6 socket for router advertisements on {interface} \
                     (--ipv6-ra no-router needs IPv6 on it: \
                     net.ipv6.conf.{interface}.disable_ipv6=0)"
                )
            })?)
        }
        _ => None,
    };
    Ok(Listeners {
        http,
        dhcp,
        tftp,
        ra,
    })
}

/// Raises the soft limit on open files to the hard limit: a rack's worth of HTTP connections
/// plus one socket per TFTP transfer port needs more than the common default of 1024.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            tracing::debug!(from = soft, to = hard, "raised the open files limit");
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
