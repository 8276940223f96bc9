//! `[dhcp]`: what the DHCP server is told, with its defaults (config builds it).

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use super::{Reservation, SubnetConfig};

/// Default lease time of full mode, seconds.
pub const LEASE_TIME_SECS_DEFAULT: u32 = 3600;
/// Default lease journal of full mode.
pub const LEASE_FILE_DEFAULT: &str = "/var/lib/pxe-daemon/leases.journal";

/// What the DHCP server does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Proxy-DHCP: boot information for PXE, HTTP Boot and iPXE clients; the site's DHCP
    /// server gives the addresses.
    #[default]
    Proxy,
    /// The DHCP server of a provisioning network: addresses from `[[dhcp.subnet]]` pools, and
    /// boot information.
    Full,
    /// No DHCP (another server hands out boot information).
    Off,
}

/// The DHCP server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Proxy, full or off.
    pub mode: DhcpMode,
    /// Address announced as server and next-server; default: the interface's.
    pub server_address: Option<Ipv4Addr>,
    /// Wait before each reply.
    pub reply_delay: Duration,
    /// MACs and MAC prefixes never answered.
    pub ignore_macs: Vec<Vec<u8>>,
    /// Lease journal (full mode).
    pub lease_file: PathBuf,
    /// Pools (full mode).
    pub subnets: Vec<SubnetConfig>,
    /// Fixed addresses (full mode).
    pub reservations: Vec<Reservation>,
}
