//! The per-datagram handling both DHCP datapaths share ([`RequestHandler`]): the core, request
//! metrics, the timeline, dropped and ignored requests, and lease changes made durable before
//! their ACK leaves ([`LeaseCommit`]). The datapaths ([`super::kernel`], [`super::afxdp`]) only
//! receive and send.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddrV4},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, warn};

use super::{
    leases::{self, Lease, LeaseRecord, LeaseStore},
    metrics::DhcpMetrics,
    wire::DHCP_CLIENT_PORT,
    Destination, DhcpCore, LeaseEvent, Outcome, Reply,
};

/// Why a lease change could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The local lease journal refused or failed the write.
    #[error(transparent)]
    Journal(#[from] leases::StoreError),
    /// Another store (or a test's) failed, for the reason given.
    #[error("{0}")]
    Other(String),
}

/// A lease commit in flight: resolves once the change is durable, or failed.
pub type CommitFuture = Pin<Box<dyn Future<Output = Result<(), CommitError>> + Send>>;

/// Where lease changes are made durable before the reply that announces them leaves.
pub trait LeaseCommit: Send + Sync {
    /// Makes `event` durable.
    fn commit(&self, event: LeaseEvent) -> CommitFuture;
}

impl LeaseCommit for LeaseStore {
    fn commit(&self, event: LeaseEvent) -> CommitFuture {
        let record = match event {
            LeaseEvent::Bound {
                mac,
                ip,
                expires_unix,
                client_id,
                hostname,
            } => LeaseRecord::Bind(Lease {
                mac: mac.0,
                ip,
                expires_at_unix_secs: expires_unix,
                // The journal bounds both; longer ones are not worth refusing a lease for.
                client_id: client_id.filter(|c| c.len() <= leases::MAX_CLIENT_ID_BYTES),
                hostname: hostname.filter(|h| h.len() <= leases::MAX_HOSTNAME_BYTES),
            }),
            LeaseEvent::Released { mac, ip } => LeaseRecord::Release { mac: mac.0, ip },
            LeaseEvent::Declined { ip, until_unix } => LeaseRecord::Declined {
                ip,
                until_unix_secs: until_unix,
            },
        };
        let store = self.clone();
        Box::pin(async move {
            LeaseStore::commit(&store, record)
                .await
                .map_err(CommitError::from)
        })
    }
}

/// How often the pool gauges are refreshed.
pub const POOL_GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Settings of the datapath.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Wait before each reply (dnsmasq's dhcp-reply-delay): for firmware that fails when a proxy
    /// reply comes before the router's offer.
    pub reply_delay: Duration,
    /// Where machines' boots are followed.
    pub timeline: Option<crate::timeline::Timeline>,
}

/// The per-datagram handling every DHCP datapath shares: the core, request metrics, the
/// timeline, dropped and ignored requests, and lease changes that need no reply. What is left
/// to the datapath is sending, now or once a lease change is durable.
pub struct RequestHandler {
    core: DhcpCore,
    metrics: DhcpMetrics,
    commit: Option<Arc<dyn LeaseCommit>>,
    options: ServeOptions,
    runtime: tokio::runtime::Handle,
}

/// What the datapath does with a request's outcome.
#[derive(Debug)]
pub enum Action {
    /// Nothing to send.
    None,
    /// Send this reply now.
    Send(Reply),
    /// Send this reply once its lease change is durable ([`Later::commit`]) and not before
    /// [`Later::ready_at`] (the reply delay).
    Later(Later),
}

/// A reply that waits for a lease commit, a reply delay, or both.
pub struct Later {
    reply: Reply,
    commit: Option<(LeaseEvent, Arc<dyn LeaseCommit>)>,
    mac: Option<crate::boot::MacAddr>,
    /// When the reply may leave: the request's arrival plus the reply delay. Reply latency is
    /// measured from here.
    pub ready_at: Instant,
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Later")
            .field("reply", &self.reply)
            .field("commit", &self.commit.as_ref().map(|(e, _)| e))
            .field("ready_at", &self.ready_at)
            .finish()
    }
}

impl Later {
    /// Makes the lease change durable, if there is one; returns the reply to send, or `None`
    /// (logged and counted) when the change could not be recorded: the ACK is withheld.
    pub async fn commit(&self, metrics: &DhcpMetrics) -> Option<Reply> {
        if let Some((event, commit)) = &self.commit {
            if let Err(e) = commit.commit(event.clone()).await {
                warn!(mac = ?self.mac.map(|m| m.to_string()), error = %e, "lease not recorded; ACK withheld");
                metrics.commit_error();
                return None;
            }
        }
        Some(self.reply.clone())
    }

    /// Whether a lease change must be made durable before the reply leaves.
    pub fn needs_commit(&self) -> bool {
        self.commit.is_some()
    }

    /// The reply (to send once [`Later::commit`] succeeded, or at once when there is nothing
    /// to commit).
    pub fn reply(&self) -> &Reply {
        &self.reply
    }
}

impl std::fmt::Debug for RequestHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHandler")
            .field("core", &self.core)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RequestHandler {
    /// A handler over `core`. Call from within the tokio runtime: lease changes are made
    /// durable on it, also when the handler runs on a datapath thread.
    pub fn new(
        core: DhcpCore,
        metrics: DhcpMetrics,
        commit: Option<Arc<dyn LeaseCommit>>,
        options: ServeOptions,
    ) -> RequestHandler {
        RequestHandler {
            core,
            metrics,
            commit,
            options,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The DHCP metrics.
    pub fn metrics(&self) -> &DhcpMetrics {
        &self.metrics
    }

    /// Makes lease changes durable on the runtime the caller runs on (a datapath's own thread).
    pub fn use_current_runtime(&mut self) {
        self.runtime = tokio::runtime::Handle::current();
    }

    /// The runtime lease commits run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Whether the core serves addresses (full mode).
    pub fn is_full(&self) -> bool {
        self.core.full().is_some()
    }

    /// Refreshes the pool gauges (full mode).
    pub fn refresh_gauges(&self) {
        if let Some(full) = self.core.full() {
            self.metrics.pools(full);
        }
    }

    /// Handles one datagram that arrived on `local_port` from `src` at `received`.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        src: SocketAddrV4,
        local_port: u16,
        received: Instant,
    ) -> Action {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (outcome, request) = self.core.handle(bytes, src, local_port, now_unix);
        if let Some((kind, machine)) = &request {
            self.metrics.request(*kind, machine);
            if let Some(timeline) = &self.options.timeline {
                follow(timeline, *kind, machine, &outcome, src);
            }
        }
        match outcome {
            Outcome::Dropped(reason) => {
                debug!(%src, len = bytes.len(), reason = reason.label(), "malformed DHCP datagram dropped");
                self.metrics.dropped(reason);
                Action::None
            }
            Outcome::Ignored(reason) => {
                let mac = request.as_ref().map(|(_, m)| m.mac.to_string());
                debug!(%src, mac, reason = reason.label(), "DHCP request not answered");
                self.metrics.ignored(reason);
                Action::None
            }
            Outcome::NoReply(event) => {
                if let (Some(event), Some(commit)) = (event, &self.commit) {
                    let (commit, metrics) = (commit.clone(), self.metrics.clone());
                    self.runtime.spawn(async move {
                        if let Err(e) = commit.commit(event).await {
                            warn!(error = %e, "recording a lease change");
                            metrics.commit_error();
                        }
                    });
                }
                Action::None
            }
            Outcome::Reply(reply, event) => {
                let commit = match (event, &self.commit) {
                    (Some(event), Some(commit)) => Some((event, commit.clone())),
                    _ => None,
                };
                let delay = self.options.reply_delay;
                if commit.is_none() && delay.is_zero() {
                    // Nothing to make durable and no delay: answer at once.
                    Action::Send(reply)
                } else {
                    Action::Later(Later {
                        reply,
                        commit,
                        mac: request.map(|(_, m)| m.mac),
                        ready_at: received + delay,
                    })
                }
            }
        }
    }
}

/// Tells the timeline about a request: a DISCOVER starts (or restarts) a boot, an answer moves
/// it on.
fn follow(
    timeline: &crate::timeline::Timeline,
    kind: super::RequestType,
    machine: &crate::boot::Machine,
    outcome: &Outcome,
    src: SocketAddrV4,
) {
    use crate::timeline::Event;
    let reply = match outcome {
        Outcome::Reply(r, _) => Some(r),
        _ => None,
    };
    // yiaddr of the reply (every reply holds the whole BOOTP header), else the address a
    // local client sent from (a relayed request's source is the relay).
    let given = reply
        .map(|r| super::wire::header_ip(&r.bytes, super::wire::YIADDR_OFFSET))
        .filter(|ip| !ip.is_unspecified());
    let from = Some(*src.ip()).filter(|ip| !ip.is_unspecified() && machine.relay.is_none());
    let ip = given.or(from);
    let answered = reply.is_some_and(|r| {
        matches!(
            r.kind,
            dhcproto::v4::MessageType::Offer | dhcproto::v4::MessageType::Ack
        )
    });
    if kind == super::RequestType::Discover {
        timeline.record(Event::Dhcp {
            machine,
            ip: None,
            answered: false,
        });
    }
    if answered
        && matches!(
            kind,
            super::RequestType::Discover | super::RequestType::Request
        )
    {
        timeline.record(Event::Dhcp {
            machine,
            ip,
            answered: true,
        });
    }
}

/// The address and port a reply goes to.
pub fn reply_address(to: Destination) -> SocketAddrV4 {
    match to {
        Destination::Unicast(addr) => addr,
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
    }
}

/// Counts a reply that left (with its latency since `since`), or one that could not be sent.
pub fn record_send<E: std::fmt::Display>(
    metrics: &DhcpMetrics,
    reply: &Reply,
    since: Instant,
    result: Result<(), E>,
) {
    match result {
        Ok(()) => metrics.replied(
            message_type_label(reply.kind),
            since.elapsed().as_secs_f64(),
        ),
        Err(e) => {
            debug!(to = ?reply.to, error = %e, "sending DHCP reply");
            metrics.send_error();
        }
    }
}

fn message_type_label(kind: dhcproto::v4::MessageType) -> &'static str {
    use dhcproto::v4::MessageType as M;
    match kind {
        M::Offer => "offer",
        M::Ack => "ack",
        M::Nak => "nak",
        _ => "other",
    }
}
