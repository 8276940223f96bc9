//! The kernel-socket datapath of DHCP: UDP sockets on 67 and 4011, bound to the boot interface,
//! feeding the shared [`RequestHandler`] and sending what it answers.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use nix::sys::socket::sockopt::{RcvBuf, RcvBufForce};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    handler::{record_send, reply_address, Action, RequestHandler, POOL_GAUGE_INTERVAL},
    metrics::DhcpMetrics,
    Reply,
};
use crate::datapath::force_buffer;

/// Largest datagram read; longer ones are cut and then dropped as oversized.
const RECV_BUFFER_BYTES: usize = 2048;
/// Receive buffer of the DHCP sockets: a rack powering up sends its DISCOVERs (and then its
/// REQUESTs) within a second, and the kernel's default (208 KiB, about 300 datagrams) drops
/// most of such a burst before the loop reads it (seen with `pxe-bench rack`).
const DHCP_RCVBUF_BYTES: usize = 8 << 20;

/// The two DHCP sockets, bound by the caller.
#[derive(Debug)]
pub struct DhcpSockets {
    /// Port 67: DISCOVER, REQUEST, ... from clients and relays.
    pub dhcp: std::net::UdpSocket,
    /// Port 4011: PXE boot-server discovery.
    pub pxe: std::net::UdpSocket,
}

/// Binds a UDP socket on `0.0.0.0:port` that only sees `interface` and may broadcast, as a
/// DHCP server needs (clients have no address yet; a namespace may have no default route).
pub fn bind(interface: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    force_buffer(&socket, RcvBufForce, RcvBuf, DHCP_RCVBUF_BYTES);
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(socket.into())
}

/// Serves DHCP on `sockets` with `handler` until `shutdown` is cancelled.
pub async fn serve(
    mut handler: RequestHandler,
    sockets: DhcpSockets,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let dhcp = Arc::new(UdpSocket::from_std(sockets.dhcp)?);
    let pxe = Arc::new(UdpSocket::from_std(sockets.pxe)?);
    let (dhcp_port, pxe_port) = (dhcp.local_addr()?.port(), pxe.local_addr()?.port());
    // Lease changes without a reply are recorded on the runtime this loop runs on (its own
    // thread's), like the ACKs' commits.
    handler.use_current_runtime();
    info!(
        dhcp_port,
        pxe_port,
        full = handler.is_full(),
        datapath = "kernel",
        "DHCP serving"
    );
    let mut buf_dhcp = vec![0u8; RECV_BUFFER_BYTES];
    let mut buf_pxe = vec![0u8; RECV_BUFFER_BYTES];
    let mut gauges = tokio::time::interval(POOL_GAUGE_INTERVAL);
    loop {
        let (len, src, local_port, socket, buf) = tokio::select! {
            r = dhcp.recv_from(&mut buf_dhcp) => match r {
                Ok((len, src)) => (len, src, dhcp_port, &dhcp, &buf_dhcp),
                Err(e) => { warn!(error = %e, "DHCP receive"); continue; }
            },
            r = pxe.recv_from(&mut buf_pxe) => match r {
                Ok((len, src)) => (len, src, pxe_port, &pxe, &buf_pxe),
                Err(e) => { warn!(error = %e, "PXE 4011 receive"); continue; }
            },
            _ = gauges.tick() => {
                handler.refresh_gauges();
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let received = Instant::now();
        let SocketAddr::V4(src) = src else { continue };
        match handler.handle(&buf[..len], src, local_port, received) {
            Action::None => {}
            Action::Send(reply) => send(socket, &reply, received, handler.metrics()).await,
            Action::Later(later) => {
                let (socket, metrics) = (socket.clone(), handler.metrics().clone());
                tokio::spawn(async move {
                    let Some(reply) = later.commit(&metrics).await else {
                        return;
                    };
                    // The timer is only armed for a delay: with none the ACK leaves as soon
                    // as its lease is durable.
                    if later.ready_at > Instant::now() {
                        tokio::time::sleep_until(later.ready_at.into()).await;
                    }
                    send(&socket, &reply, later.ready_at, &metrics).await;
                });
            }
        }
    }
    info!("DHCP stopped");
    Ok(())
}

async fn send(socket: &UdpSocket, reply: &Reply, since: Instant, metrics: &DhcpMetrics) {
    let result = socket
        .send_to(&reply.bytes, reply_address(reply.to))
        .await
        .map(drop);
    record_send(metrics, reply, since, result);
}
