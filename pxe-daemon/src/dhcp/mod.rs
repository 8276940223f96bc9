//! PXE DHCP: the sans-IO core ([`DhcpCore`]: bytes, where they came from and the clock in; a
//! reply, a lease change to make durable, or a counted reason for silence out), the handling
//! both datapaths share ([`handler`]), and the two datapaths: kernel sockets ([`kernel`]) and
//! AF_XDP frames ([`afxdp`]). [`wire`] is the BOOTP layout the reader and writer share.
//!
//! Two modes: proxy-DHCP (the default) answers only PXE, HTTP Boot and iPXE clients and never
//! gives addresses; full DHCP serves address pools too. The [`crate::boot::BootPolicy`] decides
//! what every machine boots in both.

pub mod afxdp;
pub mod full;
pub mod handler;
pub mod kernel;
pub mod leases;
pub mod metrics;
pub mod proxy;
pub mod reply;
pub mod request;
pub mod settings;
pub mod wire;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
};

pub use full::{FullDhcp, LeaseEvent, Reservation, SubnetConfig};
pub use reply::{Destination, Reply};
pub use request::{DropReason, Request, RequestType};
pub use settings::{DhcpMode, Settings};

use crate::boot::{BootPolicy, Machine};

/// Why a well-formed request got no answer. Bounded: used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Proxy mode: not a PXE, HTTP Boot or iPXE client (the site's server answers it).
    NotPxe,
    /// Proxy mode: a message only the address server answers (REQUEST on 67, ...).
    NotForProxy,
    /// The MAC is on the ignore list.
    IgnoredMac,
    /// Full mode: the client chose another server's offer.
    OtherServer,
    /// Full mode: no configured subnet holds the client's network.
    NoSubnet,
    /// Full mode: no free address left in the pool.
    PoolExhausted,
    /// Full mode: DECLINE or RELEASE of an address the client does not hold.
    UnknownLease,
}

impl Ignored {
    /// Every reason, for metrics.
    pub const ALL: [Ignored; 7] = [
        Ignored::NotPxe,
        Ignored::NotForProxy,
        Ignored::IgnoredMac,
        Ignored::OtherServer,
        Ignored::NoSubnet,
        Ignored::PoolExhausted,
        Ignored::UnknownLease,
    ];

    /// Metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Ignored::NotPxe => "not_pxe",
            Ignored::NotForProxy => "not_for_proxy",
            Ignored::IgnoredMac => "ignored_mac",
            Ignored::OtherServer => "other_server",
            Ignored::NoSubnet => "no_subnet",
            Ignored::PoolExhausted => "pool_exhausted",
            Ignored::UnknownLease => "unknown_lease",
        }
    }
}

/// What became of one datagram.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Send this; if a lease change comes with it, make that durable first.
    Reply(Reply, Option<LeaseEvent>),
    /// No reply, but a lease change to record (RELEASE, DECLINE).
    NoReply(Option<LeaseEvent>),
    /// Well-formed, not for us.
    Ignored(Ignored),
    /// Malformed: counted and dropped.
    Dropped(DropReason),
}

/// A request's circumstances: who answers, where it came from, and the clock.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// What machines boot.
    pub policy: &'a BootPolicy,
    /// Our address (option 54, next-server).
    pub server: Ipv4Addr,
    /// Where the datagram came from.
    pub src: SocketAddrV4,
    /// The port it arrived on (67 or 4011).
    pub local_port: u16,
    /// Now, in Unix seconds.
    pub now_unix: u64,
}

/// The mode and its state.
#[derive(Debug)]
pub enum Mode {
    /// Boot information only.
    Proxy,
    /// Addresses and boot information.
    Full(Box<FullDhcp>),
}

/// The DHCP protocol core: no sockets, no clock of its own.
#[derive(Debug)]
pub struct DhcpCore {
    mode: Mode,
    policy: Arc<BootPolicy>,
    server: Ipv4Addr,
    ignore_macs: Vec<Vec<u8>>,
}

impl DhcpCore {
    /// A core answering as `server` (option 54, next-server), in `mode`, ignoring MACs that
    /// start with any of `ignore_macs` (whole MACs or prefixes).
    pub fn new(
        mode: Mode,
        policy: Arc<BootPolicy>,
        server: Ipv4Addr,
        ignore_macs: Vec<Vec<u8>>,
    ) -> DhcpCore {
        DhcpCore {
            mode,
            policy,
            server,
            ignore_macs,
        }
    }

    /// Handles one datagram received on `local_port` (67 or 4011) from `src`, at `now_unix`.
    /// Returns the outcome, and the request's kind and machine when it could be read.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        src: SocketAddrV4,
        local_port: u16,
        now_unix: u64,
    ) -> (Outcome, Option<(RequestType, Machine)>) {
        let req = match Request::parse(bytes) {
            Ok(r) => r,
            Err(reason) => return (Outcome::Dropped(reason), None),
        };
        let outcome = if self
            .ignore_macs
            .iter()
            .any(|p| req.machine.mac.0.starts_with(p))
        {
            Outcome::Ignored(Ignored::IgnoredMac)
        } else {
            let ctx = Context {
                policy: &self.policy,
                server: self.server,
                src,
                local_port,
                now_unix,
            };
            match &mut self.mode {
                Mode::Proxy => proxy::respond(&req, &ctx),
                Mode::Full(full) => full.respond(&req, &ctx),
            }
        };
        (outcome, Some((req.kind, req.machine)))
    }

    /// The full-DHCP state, if in full mode.
    pub fn full(&self) -> Option<&FullDhcp> {
        match &self.mode {
            Mode::Full(f) => Some(f),
            Mode::Proxy => None,
        }
    }

    /// The full-DHCP state, mutable (to restore leases at start).
    pub fn full_mut(&mut self) -> Option<&mut FullDhcp> {
        match &mut self.mode {
            Mode::Full(f) => Some(f),
            Mode::Proxy => None,
        }
    }
}

#[cfg(test)]
mod tests;
