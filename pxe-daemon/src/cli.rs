//! Command line (clap). Every flag also reads a `PXE_*` environment variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides, XdpModeSetting};

/// XDP-accelerated network boot server: PXE DHCP, TFTP and HTTP.
#[derive(Debug, Parser)]
#[command(name = "pxe-daemon", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: `pxe-daemon run --interface IF --root DIR` is enough for proxy-DHCP, TFTP and HTTP.
    Run(RunArgs),
    /// Check a config file and exit: 0 if valid, 2 (with file:line: reason) if not.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file for everything beyond the flags (see docs/config.md).
    #[arg(long, env = "PXE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Interface facing the machines to boot.
    #[arg(long, short = 'i', env = "PXE_INTERFACE")]
    pub interface: Option<String>,
    /// Boot root served over TFTP and HTTP.
    #[arg(long, env = "PXE_ROOT")]
    pub root: Option<PathBuf>,
    /// Address:port of the HTTP listener [default: 0.0.0.0:80].
    #[arg(long, env = "PXE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Address:port of the TFTP request listener [default: 0.0.0.0:69].
    #[arg(long, env = "PXE_TFTP_LISTEN")]
    pub tftp_listen: Option<SocketAddr>,
    /// How to attach the XDP program [default: auto].
    #[arg(long, env = "PXE_XDP_MODE", value_enum)]
    pub xdp_mode: Option<XdpModeSetting>,
    /// Log level or tracing directives, e.g. `debug` or `pxe_daemon=debug,info` [default: info].
    #[arg(long, env = "PXE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: human].
    #[arg(long, env = "PXE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl RunArgs {
    /// The flags that override the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            interface: self.interface.clone(),
            root: self.root.clone(),
            http_listen: self.http_listen,
            tftp_listen: self.tftp_listen,
            xdp_mode: self.xdp_mode,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
        }
    }
}
