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
//! | [`server`] | the kernel-socket datapath: the loop that ties them together |
//! | [`metrics`] | `pxe_tftp_*` |
//!
//! The protocol modules (packet, options, transfer) do no I/O, so a later AF_XDP datapath
//! reuses them unchanged.

pub mod files;
pub mod metrics;
pub mod options;
pub mod packet;
pub mod recv;
pub mod server;
pub mod transfer;
pub mod uring;

pub use files::{check_rewrite_template, AsRequested, FileStore, PathMapper, PolicyMapper};
pub use metrics::TftpMetrics;
pub use options::{Limits, MAX_BLKSIZE, MIN_BLKSIZE};
pub use server::{Server, ServerError, ServerSettings};
