//! TFTP: the read-only server that hands the network boot programs to the ROMs.
//!
//! | module | concern |
//! |---|---|
//! | [`packet`] | datagrams: parse and build (RFC 1350, 2347) |
//! | [`options`] | option negotiation: blksize, tsize, timeout, windowsize |
//! | [`transfer`] | the sans-IO state machine of one transfer |
//! | [`files`] | root-confined names, `openat2`, the shared hot-file cache |
//! | [`uring`] | io_uring: batched sends, linked block reads, socket readiness |
//! | [`recv`] | batched receive (`recvmmsg`) |
//! | [`table`] | the running transfers of a datapath: requests, timers, the cap, sans-IO |
//! | [`server`] | the kernel-socket datapath: the loop that ties them together |
//! | [`frames`] | the AF_XDP datapath's TFTP service: the same table, sent as frames |
//! | [`metrics`] | `pxe_tftp_*` |
//! | [`settings`] | `[tftp]`: what the server is told, and the defaults |
//!
//! The protocol modules (packet, options, transfer, table) do no I/O: both datapaths drive
//! them unchanged.

pub mod files;
pub mod frames;
pub mod metrics;
pub mod options;
pub mod packet;
pub mod recv;
pub mod server;
pub mod settings;
pub mod table;
pub mod transfer;
pub mod uring;

pub use files::{check_rewrite_template, AsRequested, FileStore, PathMapper, PolicyMapper};
pub use metrics::TftpMetrics;
pub use options::{Limits, MAX_BLKSIZE, MIN_BLKSIZE};
pub use server::{limits_for, open_files, Server, ServerError, ServerSettings};
pub use settings::Settings;
pub use table::SharedFiles;
