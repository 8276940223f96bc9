//! TFTP: the read-only server that hands the network boot programs to the ROMs.
//!
//! The sans-IO protocol modules ([`packet`], [`options`], [`transfer`], [`table`]) do no I/O:
//! both datapaths, kernel sockets with io_uring ([`kernel`]) and AF_XDP frames ([`afxdp`]),
//! drive them unchanged from what [`setup`] builds. The module map is in
//! docs/architecture.md.

pub mod afxdp;
pub mod files;
pub mod kernel;
pub mod metrics;
pub mod options;
pub mod packet;
pub mod recv;
pub mod settings;
pub mod setup;
pub mod table;
pub mod transfer;
pub mod uring;

pub use files::{check_rewrite_template, AsRequested, FileStore, PathMapper, PolicyMapper};
pub use kernel::Server;
pub use metrics::TftpMetrics;
pub use options::{Limits, MAX_BLKSIZE, MIN_BLKSIZE};
pub use settings::Settings;
pub use setup::{limits_for, open_files, ServerError, ServerSettings};
pub use table::SharedFiles;
