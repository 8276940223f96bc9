//! `[tftp]`: what the TFTP server is told, with its defaults (config builds it).

use std::{net::SocketAddr, ops::RangeInclusive, time::Duration};

use pxe_common::{TFTP_TRANSFER_PORT_MAX_DEFAULT, TFTP_TRANSFER_PORT_MIN_DEFAULT};

/// Default TFTP request listener: every address, port 69.
pub const TFTP_LISTEN_DEFAULT: &str = "0.0.0.0:69";
/// Default cap on TFTP transfers in flight.
pub const TFTP_MAX_TRANSFERS_DEFAULT: usize = 10_000;
/// Default largest block size: a DATA datagram fills a 1500-byte Ethernet MTU exactly.
pub const TFTP_MAX_BLKSIZE_DEFAULT: u16 = 1468;
/// Default largest window (tftp-hpa's cap; gains level off near it).
pub const TFTP_MAX_WINDOWSIZE_DEFAULT: u16 = 64;
/// Default retransmit timeout, milliseconds.
pub const TFTP_TIMEOUT_MS_DEFAULT: u64 = 1000;
/// Default retransmits before a transfer is given up.
pub const TFTP_RETRIES_DEFAULT: u8 = 5;
/// Default size of the hot-file cache: 64 MiB.
pub const TFTP_CACHE_BYTES_DEFAULT: u64 = 64 << 20;

/// The TFTP server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Address of the request listener (port 69).
    pub listen: SocketAddr,
    /// UDP ports used as the server side of transfers (the XDP program reads them too).
    pub ports: RangeInclusive<u16>,
    /// Most transfers in flight; requests beyond are refused with an ERROR.
    pub max_transfers: usize,
    /// Largest block size offered; the interface MTU caps it further.
    pub max_blksize: u16,
    /// Largest window size offered.
    pub max_windowsize: u16,
    /// Retransmit timeout when the client asks for none.
    pub timeout: Duration,
    /// Retransmits before a transfer is given up.
    pub retries: u8,
    /// Bytes of the hot-file cache (0: no cache; every file is read block by block).
    pub cache_bytes: u64,
    /// Per-machine names: (requested name, template of the name served when it exists).
    pub rewrites: Vec<(String, String)>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: TFTP_LISTEN_DEFAULT
                .parse()
                .expect("TFTP_LISTEN_DEFAULT is a valid socket address"),
            ports: TFTP_TRANSFER_PORT_MIN_DEFAULT..=TFTP_TRANSFER_PORT_MAX_DEFAULT,
            max_transfers: TFTP_MAX_TRANSFERS_DEFAULT,
            max_blksize: TFTP_MAX_BLKSIZE_DEFAULT,
            max_windowsize: TFTP_MAX_WINDOWSIZE_DEFAULT,
            timeout: Duration::from_millis(TFTP_TIMEOUT_MS_DEFAULT),
            retries: TFTP_RETRIES_DEFAULT,
            cache_bytes: TFTP_CACHE_BYTES_DEFAULT,
            rewrites: Vec::new(),
        }
    }
}
