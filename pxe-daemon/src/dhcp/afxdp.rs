//! DHCP as a [`FrameService`] of the AF_XDP datapath: the same [`RequestHandler`] as the
//! kernel-socket datapath, with replies written into frames.
//!
//! A reply that carries a lease change waits for the change to be durable: the commit runs on
//! the tokio runtime, and the finished reply comes back through a bounded channel and the
//! datapath's eventfd ([`Waker`]); the datapath thread never waits for an fsync. Replies held
//! back by `reply_delay` wait in a bounded queue ordered by when they may leave.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::Instant,
};

use tracing::debug;

use super::{
    handler::{record_send, Action, RequestHandler, POOL_GAUGE_INTERVAL},
    wire::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_BOOT_SERVER_PORT},
    Destination, Reply,
};
use crate::datapath::{Datagram, FrameService, MacAddr, Route, UdpTx, Waker, BROADCAST_MAC};

/// Replies waiting for a lease commit or a reply delay, at most. Beyond it a request is
/// dropped unanswered (its client asks again).
pub const DHCP_PENDING_REPLIES_MAX: usize = 4096;

/// A reply that may leave at `ready_at`.
#[derive(Debug)]
struct Pending {
    reply: Reply,
    route: Route,
    ready_at: Instant,
}

/// The DHCP service of the AF_XDP datapath (ports 67 and 4011).
#[derive(Debug)]
pub struct DhcpFrameService {
    handler: RequestHandler,
    /// Delayed replies, ordered by `ready_at`.
    delayed: VecDeque<Pending>,
    committed_tx: mpsc::SyncSender<Pending>,
    committed_rx: mpsc::Receiver<Pending>,
    /// Commits running on the runtime plus replies in the channel.
    in_flight: Arc<AtomicUsize>,
    waker: Waker,
    gauges_at: Instant,
}

impl DhcpFrameService {
    /// A service over `handler`; `waker` must be the datapath's.
    pub fn new(handler: RequestHandler, waker: Waker) -> DhcpFrameService {
        let (committed_tx, committed_rx) = mpsc::sync_channel(DHCP_PENDING_REPLIES_MAX);
        DhcpFrameService {
            handler,
            delayed: VecDeque::new(),
            committed_tx,
            committed_rx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            waker,
            gauges_at: Instant::now(),
        }
    }

    fn send(&self, tx: &mut dyn UdpTx, reply: &Reply, route: Route, since: Instant) {
        let result = tx.send(route, reply.bytes.len(), &mut |buf| {
            buf.copy_from_slice(&reply.bytes);
        });
        record_send(self.handler.metrics(), reply, since, result);
    }

    fn hold(&mut self, pending: Pending) {
        if self.delayed.len() >= DHCP_PENDING_REPLIES_MAX {
            debug!(to = ?pending.reply.to, "delayed DHCP replies full; reply dropped");
            self.handler.metrics().send_error();
            return;
        }
        let at = self
            .delayed
            .partition_point(|p| p.ready_at <= pending.ready_at);
        self.delayed.insert(at, pending);
    }
}

/// Where a reply to a request from `src_mac` goes: broadcast to everyone, or unicast to the
/// MAC the request came from (the client, or the relay or router that forwarded it).
pub fn reply_route(to: Destination, src_mac: MacAddr, local_port: u16) -> Route {
    match to {
        Destination::Broadcast => Route {
            mac: BROADCAST_MAC,
            to: SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
            from_port: local_port,
        },
        Destination::Unicast(to) => Route {
            mac: src_mac,
            to,
            from_port: local_port,
        },
    }
}

impl FrameService for DhcpFrameService {
    fn name(&self) -> &'static str {
        "dhcp"
    }

    fn wants(&self, dst_port: u16) -> bool {
        dst_port == DHCP_SERVER_PORT || dst_port == PXE_BOOT_SERVER_PORT
    }

    fn on_datagram(&mut self, datagram: &Datagram<'_>, now: Instant, tx: &mut dyn UdpTx) {
        let local_port = datagram.dst.port();
        let action = self
            .handler
            .handle(datagram.payload, datagram.src, local_port, now);
        match action {
            Action::None => {}
            Action::Send(reply) => {
                let route = reply_route(reply.to, datagram.src_mac, local_port);
                self.send(tx, &reply, route, now);
            }
            Action::Later(later) => {
                let route = reply_route(later.reply().to, datagram.src_mac, local_port);
                if !later.needs_commit() {
                    self.hold(Pending {
                        reply: later.reply().clone(),
                        route,
                        ready_at: later.ready_at,
                    });
                    return;
                }
                if self.in_flight.fetch_add(1, Ordering::AcqRel) >= DHCP_PENDING_REPLIES_MAX {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    debug!(src = %datagram.src, "lease commits backlogged; request dropped");
                    self.handler.metrics().send_error();
                    return;
                }
                let (metrics, committed, in_flight, waker) = (
                    self.handler.metrics().clone(),
                    self.committed_tx.clone(),
                    self.in_flight.clone(),
                    self.waker.clone(),
                );
                self.handler.runtime().spawn(async move {
                    let Some(reply) = later.commit(&metrics).await else {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        return;
                    };
                    let pending = Pending {
                        reply,
                        route,
                        ready_at: later.ready_at,
                    };
                    // Never full: in_flight bounds what is in the channel.
                    if committed.try_send(pending).is_err() {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                    waker.wake();
                });
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let delayed = self.delayed.front().map(|p| p.ready_at);
        let gauges = self.gauges_at + POOL_GAUGE_INTERVAL;
        Some(delayed.map_or(gauges, |d| d.min(gauges)))
    }

    fn on_tick(&mut self, now: Instant, tx: &mut dyn UdpTx) {
        while let Ok(pending) = self.committed_rx.try_recv() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if pending.ready_at <= now {
                // The ACK leaves as soon as its lease is durable: latency from ready_at.
                self.send(tx, &pending.reply, pending.route, pending.ready_at);
            } else {
                self.hold(pending);
            }
        }
        while self.delayed.front().is_some_and(|p| p.ready_at <= now) {
            if let Some(p) = self.delayed.pop_front() {
                self.send(tx, &p.reply, p.route, p.ready_at);
            }
        }
        if now >= self.gauges_at + POOL_GAUGE_INTERVAL {
            self.gauges_at = now;
            self.handler.refresh_gauges();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_replies_go_to_everyone_unicast_to_the_sender_mac() {
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        assert_eq!(
            reply_route(Destination::Broadcast, mac, 67),
            Route {
                mac: BROADCAST_MAC,
                to: "255.255.255.255:68".parse().unwrap(),
                from_port: 67
            }
        );
        let relay: SocketAddrV4 = "198.18.5.1:67".parse().unwrap();
        assert_eq!(
            reply_route(Destination::Unicast(relay), mac, 67),
            Route {
                mac,
                to: relay,
                from_port: 67
            }
        );
        let client: SocketAddrV4 = "198.18.0.77:4011".parse().unwrap();
        assert_eq!(
            reply_route(Destination::Unicast(client), mac, 4011).from_port,
            4011
        );
    }
}
