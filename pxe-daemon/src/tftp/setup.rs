//! What both TFTP datapaths are built from: the boot root's file store, the limits the
//! interface allows, and the transfer table's settings from `[tftp]`.

use std::{io, net::IpAddr, path::Path, sync::Arc};

use super::{
    files::PathMapper,
    metrics::TftpMetrics,
    options::Limits,
    table::{SharedFiles, TableSettings},
    Settings,
};

/// Why the TFTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The boot root could not be opened.
    #[error("opening the boot root {path}: {source}")]
    Root {
        /// The root.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// io_uring could not be set up.
    #[error("setting up io_uring for TFTP: {0}")]
    Uring(#[source] io::Error),
    /// No port of the transfer range could be bound.
    #[error("binding TFTP transfer ports {first}-{last} on {ip}: {source}")]
    Ports {
        /// Address bound.
        ip: IpAddr,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
        /// The last error.
        source: io::Error,
    },
    /// The listener could not be set up.
    #[error("setting up the TFTP listener: {0}")]
    Listener(#[source] io::Error),
    /// The server thread could not be started.
    #[error("starting the TFTP thread: {0}")]
    Thread(#[source] io::Error),
}

/// Everything the server needs besides its sockets.
#[derive(Debug)]
pub struct ServerSettings<'a> {
    /// `[tftp]`, transfer ports included.
    pub config: &'a Settings,
    /// The boot root's file store ([`open_files`]), shared with the AF_XDP datapath.
    pub files: SharedFiles,
    /// MTU of the boot interface: caps the block size so that no DATA is fragmented.
    pub mtu: u32,
    /// Maps requested names to served ones (the boot policy's hook).
    pub mapper: Arc<dyn PathMapper>,
    /// Where machines' boots are followed.
    pub timeline: Option<crate::timeline::Timeline>,
}

/// Opens the boot root `root` with a cache of at most `cache_bytes` bytes.
pub fn open_files(root: &Path, cache_bytes: u64) -> Result<SharedFiles, ServerError> {
    SharedFiles::open(root, cache_bytes).map_err(|source| ServerError::Root {
        path: root.display().to_string(),
        source,
    })
}

/// The block size and window a server on an interface of `mtu` offers at most.
pub fn limits_for(config: &Settings, mtu: u32) -> Limits {
    Limits {
        max_blksize: config.max_blksize.min(super::options::blksize_for_mtu(mtu)),
        max_windowsize: config.max_windowsize,
        default_timeout: config.timeout,
    }
}

impl ServerSettings<'_> {
    /// The settings of a transfer table serving `ports` transfer ports: the kernel server's,
    /// and the AF_XDP datapath's (the whole range), from the same `[tftp]`.
    pub fn table(&self, ports: usize, metrics: TftpMetrics) -> TableSettings {
        TableSettings {
            files: self.files.clone(),
            mapper: self.mapper.clone(),
            timeline: self.timeline.clone(),
            limits: limits_for(self.config, self.mtu),
            retry: super::transfer::Retry {
                max_retries: self.config.retries,
            },
            max_transfers: self.config.max_transfers,
            ports,
            metrics,
        }
    }
}
