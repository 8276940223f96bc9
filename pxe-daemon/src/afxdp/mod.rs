//! The AF_XDP datapath: one AF_XDP socket per receive queue of the boot interface, fed by the
//! XDP program's steering, driven by one std thread that hands datagrams to
//! [`FrameService`](crate::datapath::FrameService)s and sends their replies as whole frames.
//!
//! Split by concern: [`umem`] (shared memory), [`ring`] (the four kernel rings), [`socket`]
//! (one bound socket), [`frame`] (the Ethernet/IPv4/UDP codec), [`worker`] (the thread's loop),
//! [`metrics`].

pub mod frame;
pub mod metrics;
pub mod ring;
pub mod socket;
pub mod umem;
pub mod worker;

use std::{io, net::Ipv4Addr, os::fd::AsRawFd, thread::JoinHandle, time::Duration};

pub use metrics::AfXdpMetrics;
pub use socket::{XskError, XskSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
pub use worker::BoxedService;

use crate::{
    datapath::Waker,
    xdp::{XdpAttachment, XdpLoadError},
};

/// Why the AF_XDP datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// The interface does not exist.
    #[error("interface {0}: no such interface")]
    NoInterface(String),
    /// The interface has no address to send from, or no MAC.
    #[error("interface {interface}: {what}")]
    Interface {
        /// The interface.
        interface: String,
        /// What is missing.
        what: &'static str,
    },
    /// A socket could not be made or bound.
    #[error(transparent)]
    Socket(#[from] XskError),
    /// The XSKS map could not be written.
    #[error(transparent)]
    Map(#[from] XdpLoadError),
    /// The wake eventfd or the thread could not be made.
    #[error("AF_XDP datapath: {0}")]
    Io(#[from] io::Error),
}

/// How an AF_XDP socket binds to its queue (`xdp.bind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    /// Zero-copy where the driver supports it, else copy mode.
    #[default]
    Auto,
    /// Zero-copy or refuse to start.
    Zerocopy,
    /// Copy mode (frames copied between the driver's buffers and ours).
    Copy,
}

/// Settings of the datapath.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The boot interface.
    pub interface: String,
    /// Source address of sent frames.
    pub address: Ipv4Addr,
    /// The interface's MTU (bounds the payload of a frame).
    pub mtu: u32,
    /// Zero-copy or copy.
    pub bind: BindMode,
}

/// A running datapath: its thread and the queues whose sockets are in the XSKS map.
#[derive(Debug)]
pub struct AfXdp {
    thread: Option<JoinHandle<()>>,
    stop: CancellationToken,
    queues: Vec<u32>,
}

/// Sockets bound on every receive queue and registered in the XSKS map, not yet served.
#[derive(Debug)]
pub struct BoundSockets {
    sockets: Vec<XskSocket>,
    queues: Vec<u32>,
    sender: frame::Sender,
    max_payload: usize,
}

impl BoundSockets {
    /// Opens a socket on every receive queue and registers each in the XSKS map of `xdp`.
    pub fn bind(settings: &Settings, xdp: &mut XdpAttachment) -> Result<BoundSockets, AfXdpError> {
        let interface = settings.interface.as_str();
        let ifindex = crate::netif::index_of(interface)
            .map_err(|_| AfXdpError::NoInterface(interface.to_owned()))?;
        let mac = crate::netif::mac_of(interface).ok_or_else(|| AfXdpError::Interface {
            interface: interface.to_owned(),
            what: "no MAC address",
        })?;
        let queues = crate::netif::rx_queue_count(interface);
        let driver = crate::netif::driver_of(interface);
        let metadata = match driver.as_deref() {
            Some("virtio_net") => socket::TxMetadata::Off,
            _ => socket::TxMetadata::Wanted,
        };
        let mut sockets = Vec::with_capacity(queues as usize);
        for queue in 0..queues {
            sockets.push(XskSocket::open(
                interface,
                ifindex,
                queue,
                settings.bind,
                metadata,
            )?);
        }
        let mut registered = Vec::new();
        for socket in &sockets {
            if let Err(e) = xdp.register_socket(socket.queue(), socket.as_raw_fd()) {
                for q in registered {
                    let _ = xdp.unregister_socket(q);
                }
                return Err(e.into());
            }
            registered.push(socket.queue());
        }
        let zero_copy = sockets.iter().filter(|s| s.zero_copy()).count();
        info!(
            interface,
            queues,
            zero_copy = zero_copy == sockets.len(),
            driver = driver.as_deref().unwrap_or("none"),
            tx_checksum_offload = sockets.iter().all(|s| s.tx.checksum_offload()),
            "AF_XDP sockets bound"
        );
        let max_payload = (socket::TX_FRAME_ROOM as usize - frame::REPLY_HEADER_BYTES).min(
            (settings.mtu as usize)
                .saturating_sub(frame::IPV4_HEADER_BYTES + frame::UDP_HEADER_BYTES),
        );
        Ok(BoundSockets {
            sockets,
            queues: registered,
            sender: frame::Sender {
                mac,
                ip: settings.address,
            },
            max_payload,
        })
    }

    /// Starts the thread that serves the sockets with `services`. Steering is the caller's
    /// to turn on once this returns (every queue has its socket).
    pub fn serve(
        self,
        services: Vec<BoxedService>,
        waker: Waker,
        metrics: AfXdpMetrics,
    ) -> Result<AfXdp, AfXdpError> {
        let zero_copy = self.sockets.iter().filter(|s| s.zero_copy()).count();
        metrics.set_sockets(self.sockets.len() - zero_copy, zero_copy);
        let worker = worker::Worker {
            sockets: self.sockets,
            services,
            sender: self.sender,
            max_payload: self.max_payload,
            metrics,
            waker,
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("afxdp".into())
            .spawn(move || worker.run(token))?;
        Ok(AfXdp {
            thread: Some(thread),
            stop,
            queues: self.queues,
        })
    }
}

impl AfXdp {
    /// Whether the datapath thread has ended (it runs until [`AfXdp::stop`]).
    pub fn has_ended(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Stops the thread (waiting at most `timeout`) and takes the sockets out of the XSKS
    /// map. Clear the steering flags before: frames steered to a closed socket are lost.
    pub async fn stop(mut self, xdp: Option<&mut XdpAttachment>, timeout: Duration) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let joined =
                tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || thread.join()))
                    .await;
            match joined {
                Ok(Ok(Ok(()))) => {}
                Ok(_) => warn!("AF_XDP datapath thread failed"),
                Err(_) => warn!(?timeout, "AF_XDP datapath thread did not stop in time"),
            }
        }
        if let Some(xdp) = xdp {
            for &q in &self.queues {
                if let Err(e) = xdp.unregister_socket(q) {
                    tracing::debug!(queue = q, error = %e, "removing AF_XDP socket from XSKS");
                }
            }
        }
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        // Stopping without `stop` (an error path): the thread ends on its own within a poll.
        self.stop.cancel();
    }
}
