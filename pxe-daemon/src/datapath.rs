//! What a protocol service offers a frame datapath (AF_XDP), and what the datapath offers it.
//!
//! The AF_XDP datapath receives whole Ethernet frames; it parses the Ethernet/IPv4/UDP headers
//! and hands each UDP payload, with the addresses it came from, to the [`FrameService`] that
//! wants its destination port (DHCP on 67 and 4011, TFTP on 69 and the transfer ports). A
//! service answers through [`UdpTx`]: it says where a datagram goes and writes the payload; the
//! datapath writes the headers (checksums included) around it in the frame buffer, so that a
//! service never builds an Ethernet frame and a payload is written once, straight into the
//! frame that leaves.
//!
//! The protocol cores stay sans-IO: a service is the thin layer that feeds a core (the same core
//! the kernel-socket datapath feeds) and turns its output into [`UdpTx::send`] calls.

use std::{
    io,
    net::SocketAddrV4,
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::Arc,
    time::Instant,
};

use nix::sys::{
    eventfd::{EfdFlags, EventFd},
    socket::{setsockopt, SetSockOpt},
};
pub use pxe_common::MacAddr;

/// The Ethernet broadcast address.
pub const BROADCAST_MAC: MacAddr = MacAddr::BROADCAST;

/// Which datapath serves DHCP and TFTP (`server.datapath`, `--datapath`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// AF_XDP where the XDP program attaches and the sockets bind, else kernel sockets with a
    /// warning.
    Auto,
    /// AF_XDP or refuse to start.
    Xdp,
    /// Ordinary kernel sockets.
    #[default]
    Kernel,
}

/// A UDP datagram as the datapath received it.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// Source Ethernet address: the client's, or the router's for a routed (relayed) request.
    /// Replies go back to it, so the datapath needs no ARP.
    pub src_mac: MacAddr,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port (the server's address, or 255.255.255.255).
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Ethernet destination ([`BROADCAST_MAC`] for a broadcast).
    pub mac: MacAddr,
    /// IPv4 destination address and UDP port.
    pub to: SocketAddrV4,
    /// UDP source port (the server's port the client talks to).
    pub from_port: u16,
}

/// Why a datagram was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// No free frame or no room in the transmit ring now; the service retries later (a TFTP
    /// transfer resends on its timer) or drops the reply (a DHCP client asks again).
    #[error("no free transmit frame")]
    Full,
    /// The payload does not fit in one frame.
    #[error("payload of {0} bytes is larger than a frame holds")]
    TooLarge(usize),
}

/// The sending half the datapath lends a service.
pub trait UdpTx {
    /// Largest UDP payload one frame carries (frame size less the Ethernet, IPv4 and UDP
    /// headers, and not above the interface MTU).
    fn max_payload(&self) -> usize;

    /// Sends one datagram of `len` payload bytes along `route`. `fill` is called once with a
    /// buffer of exactly `len` bytes inside the frame and must write the whole payload.
    fn send(
        &mut self,
        route: Route,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), TxError>;
}

/// A protocol service driven by a frame datapath's thread. Calls come from that one thread;
/// nothing here blocks (no file system waits for durable writes, no locks held for long).
pub trait FrameService {
    /// Name in logs and metric labels (`dhcp`, `tftp`).
    fn name(&self) -> &'static str;

    /// Whether datagrams to this UDP destination port are this service's.
    fn wants(&self, dst_port: u16) -> bool;

    /// Handles one received datagram, sending what it answers through `tx`.
    fn on_datagram(&mut self, datagram: &Datagram<'_>, now: Instant, tx: &mut dyn UdpTx);

    /// When [`FrameService::on_tick`] should next run (a resend timer, a delayed reply), if
    /// ever. The datapath wakes no later than this.
    fn next_deadline(&self) -> Option<Instant>;

    /// Runs what is due at `now` (timers, replies that became ready), and sends through `tx`.
    fn on_tick(&mut self, now: Instant, tx: &mut dyn UdpTx);

    /// Whether the datapath may hold received frames back a little to take several per
    /// wake-up (interrupt moderation): it saves CPU under a storm of independent requests,
    /// but a lock-step exchange (a TFTP transfer waiting for each ACK) would pay it on every
    /// round trip.
    fn coalesce(&self) -> bool {
        true
    }

    /// Whether the service's frames may leave their UDP checksum to the device, where the
    /// datapath can ask for that (AF_XDP TX metadata in copy mode). Only for peers that read
    /// through a UDP socket or a NIC: on a veth such a frame reaches a raw-socket reader with
    /// the checksum unfinished (as a kernel socket's frames do), and DHCP clients read raw.
    fn device_checksum(&self) -> bool {
        false
    }
}

/// An eventfd that wakes the datapath thread: services that finish work on other threads
/// (a lease commit on the tokio runtime) call [`Waker::wake`] after queueing their result.
#[derive(Clone, Debug)]
pub struct Waker {
    fd: Arc<EventFd>,
}

impl Waker {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<Waker> {
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Waker { fd: Arc::new(fd) })
    }

    /// Wakes the thread (never blocks: a saturated counter is already a wakeup).
    pub fn wake(&self) {
        let _ = self.fd.write(1);
    }

    /// Clears pending wakeups.
    pub fn drain(&self) {
        let _ = self.fd.read();
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets a kernel socket's buffer to `bytes`: past `net.core.rmem_max`/`wmem_max` with the
/// FORCE option where allowed (root, CAP_NET_ADMIN), else the plain option, which the kernel
/// caps. A smaller buffer is not an error: a burst may then lose more datagrams.
pub fn force_buffer<Force, Plain>(socket: &impl AsFd, force: Force, plain: Plain, bytes: usize)
where
    Force: SetSockOpt<Val = usize>,
    Plain: SetSockOpt<Val = usize>,
{
    if setsockopt(socket, force, &bytes).is_err() {
        if let Err(e) = setsockopt(socket, plain, &bytes) {
            tracing::debug!(error = %e, bytes, "socket buffer left at the default");
        }
    }
}
