//! Full DHCP: address pools per subnet, reservations, the lease table and its state machine.
//!
//! The table lives in memory; every change a client is told about (an ACK) is handed back as a
//! [`LeaseEvent`] for the datapath to make durable before the ACK leaves.

use std::{
    collections::{BTreeSet, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
};

use dhcproto::v4::MessageType;
use ipnet::Ipv4Net;

use super::{
    reply::{self, Destination, ReplyMessage},
    request::{Request, RequestType},
    wire, Context, Ignored, Outcome,
};
use crate::boot::{BootPolicy, MacAddr};

/// Seconds an offered address stays held for the client that was offered it.
pub const OFFER_HOLD_SECS: u64 = 60;
/// Seconds a declined address stays out of the pool (someone else is using it).
pub const DECLINE_HOLD_SECS: u64 = 600;

/// A subnet served with addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetConfig {
    /// The network (for the mask and for matching giaddr or our own address).
    pub network: Ipv4Net,
    /// First and last address handed out dynamically.
    pub range: (Ipv4Addr, Ipv4Addr),
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 51.
    pub lease_secs: u32,
}

/// An address kept for one MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The machine.
    pub mac: MacAddr,
    /// Its address (inside a configured subnet, in or out of the dynamic range).
    pub ip: Ipv4Addr,
    /// Option 12, if set.
    pub hostname: Option<String>,
}

/// A change to the lease table that must be durable before the client hears of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// `mac` holds `ip` until `expires_unix`.
    Bound {
        /// The client.
        mac: MacAddr,
        /// Its address.
        ip: Ipv4Addr,
        /// End of the lease, Unix seconds.
        expires_unix: u64,
        /// Option 61, if sent.
        client_id: Option<Vec<u8>>,
        /// Option 12, if sent.
        hostname: Option<String>,
    },
    /// `mac` gave `ip` back.
    Released {
        /// The client.
        mac: MacAddr,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A client found `ip` in use by someone else.
    Declined {
        /// The address.
        ip: Ipv4Addr,
        /// Until when it stays out of the pool, Unix seconds.
        until_unix: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    ip: Ipv4Addr,
    expires_unix: u64,
    bound: bool,
}

#[derive(Debug)]
struct Pool {
    config: SubnetConfig,
    /// Dynamic addresses nobody holds (as u32, so the lowest comes first).
    free: BTreeSet<u32>,
}

impl Pool {
    fn in_range(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip >= u32::from(self.config.range.0) && ip <= u32::from(self.config.range.1)
    }
}

/// Addresses in use and free in one pool, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// The subnet, as configured.
    pub network: Ipv4Net,
    /// Addresses held by a bound lease or an offer.
    pub in_use: usize,
    /// Addresses ready to hand out.
    pub free: usize,
}

/// The full-DHCP state: pools, reservations, leases.
#[derive(Debug)]
pub struct FullDhcp {
    pools: Vec<Pool>,
    reservations: HashMap<MacAddr, Reservation>,
    /// Reserved address to its MAC.
    reserved: HashMap<Ipv4Addr, MacAddr>,
    leases: HashMap<MacAddr, Lease>,
    owners: HashMap<Ipv4Addr, MacAddr>,
    declined: HashMap<Ipv4Addr, u64>,
}

impl FullDhcp {
    /// Pools from `subnets`, with `reservations` kept out of the dynamic ranges.
    pub fn new(subnets: Vec<SubnetConfig>, reservations: Vec<Reservation>) -> FullDhcp {
        let reserved: BTreeSet<u32> = reservations.iter().map(|r| u32::from(r.ip)).collect();
        let pools = subnets
            .into_iter()
            .map(|config| {
                let free = (u32::from(config.range.0)..=u32::from(config.range.1))
                    .filter(|ip| !reserved.contains(ip))
                    .collect();
                Pool { config, free }
            })
            .collect();
        FullDhcp {
            pools,
            reserved: reservations.iter().map(|r| (r.ip, r.mac)).collect(),
            reservations: reservations.into_iter().map(|r| (r.mac, r)).collect(),
            leases: HashMap::new(),
            owners: HashMap::new(),
            declined: HashMap::new(),
        }
    }

    /// Puts back a bound lease read from the store at start (expired ones are skipped).
    pub fn restore(&mut self, mac: MacAddr, ip: Ipv4Addr, expires_unix: u64, now_unix: u64) {
        if expires_unix <= now_unix {
            return;
        }
        if let Some(owner) = self.owners.get(&ip) {
            if *owner != mac {
                tracing::warn!(%ip, %mac, other = %owner, "lease store holds an address twice; keeping the first");
                return;
            }
        }
        self.drop_lease(mac);
        self.take(
            ip,
            mac,
            Lease {
                ip,
                expires_unix,
                bound: true,
            },
        );
    }

    /// Marks `ip` declined until `until_unix` (restored from the store).
    pub fn restore_declined(&mut self, ip: Ipv4Addr, until_unix: u64, now_unix: u64) {
        if until_unix > now_unix {
            self.remove_free(ip);
            self.declined.insert(ip, until_unix);
        }
    }

    /// Usage of every pool.
    pub fn usage(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .map(|p| {
                let size = (u32::from(p.config.range.1) - u32::from(p.config.range.0) + 1) as usize;
                let in_use = self.owners.keys().filter(|ip| p.in_range(**ip)).count();
                PoolUsage {
                    network: p.config.network,
                    in_use,
                    free: p.free.len().min(size),
                }
            })
            .collect()
    }

    /// The bound lease of `mac`, if any: (address, expiry).
    pub fn lease_of(&self, mac: MacAddr) -> Option<(Ipv4Addr, u64)> {
        self.leases
            .get(&mac)
            .filter(|l| l.bound)
            .map(|l| (l.ip, l.expires_unix))
    }

    /// Handles one request (the DHCP four-step and the rest).
    pub fn respond(&mut self, req: &Request<'_>, ctx: &Context<'_>) -> Outcome {
        let Context {
            policy,
            server,
            src,
            local_port,
            now_unix,
        } = *ctx;
        let Some(pool_idx) = self.pool_for(req, server) else {
            return Outcome::Ignored(Ignored::NoSubnet);
        };
        let mac = req.machine.mac;
        match req.kind {
            RequestType::Discover => {
                let Some(ip) = self.allocate(pool_idx, req, now_unix) else {
                    tracing::warn!(%mac, network = %self.pools[pool_idx].config.network, "DHCP pool exhausted");
                    return Outcome::Ignored(Ignored::PoolExhausted);
                };
                let m = self.offer_or_ack(req, policy, server, pool_idx, ip, MessageType::Offer);
                let to = reply::destination(req, src, local_port);
                Outcome::Reply(reply::finish(&m, to), None)
            }
            RequestType::Request => self.request(req, ctx, pool_idx),
            RequestType::Decline => {
                let Some(ip) = req.requested_ip() else {
                    return Outcome::Ignored(Ignored::UnknownLease);
                };
                if self.leases.get(&mac).map(|l| l.ip) != Some(ip) {
                    return Outcome::Ignored(Ignored::UnknownLease);
                }
                self.drop_lease(mac);
                self.remove_free(ip);
                let until_unix = now_unix + DECLINE_HOLD_SECS;
                self.declined.insert(ip, until_unix);
                tracing::warn!(%mac, %ip, "address declined: another host uses it");
                Outcome::NoReply(Some(LeaseEvent::Declined { ip, until_unix }))
            }
            RequestType::Release => {
                let ip = req.ciaddr();
                if self.leases.get(&mac).map(|l| l.ip) != Some(ip) {
                    return Outcome::Ignored(Ignored::UnknownLease);
                }
                self.drop_lease(mac);
                Outcome::NoReply(Some(LeaseEvent::Released { mac, ip }))
            }
            RequestType::Inform => {
                let mut m = reply::base_reply(req, MessageType::Ack, server);
                self.add_subnet_options(&mut m, pool_idx, false);
                if let Some(spec) = policy.decide(&req.machine, server) {
                    reply::add_boot(&mut m, req, &spec, server, false);
                }
                let to = reply::destination(req, src, local_port);
                Outcome::Reply(reply::finish(&m, to), None)
            }
        }
    }

    fn request(&mut self, req: &Request<'_>, ctx: &Context<'_>, pool_idx: usize) -> Outcome {
        let Context {
            policy,
            server,
            src,
            local_port,
            now_unix,
        } = *ctx;
        let mac = req.machine.mac;
        let ciaddr = req.ciaddr();
        let current = self.leases.get(&mac).copied();
        let wanted = match (req.server_id(), req.requested_ip()) {
            // SELECTING: answering an offer.
            (Some(sid), requested) => {
                if sid != server {
                    // The client took another server's offer: free ours.
                    if current.is_some_and(|l| !l.bound) {
                        self.drop_lease(mac);
                    }
                    return Outcome::Ignored(Ignored::OtherServer);
                }
                let ip = requested.unwrap_or(ciaddr);
                if current.map(|l| l.ip) != Some(ip) {
                    return self.nak(
                        req,
                        server,
                        "requested address was not offered to this client",
                    );
                }
                ip
            }
            // INIT-REBOOT: a client that remembers its address.
            (None, Some(ip)) if ciaddr.is_unspecified() => ip,
            // RENEWING / REBINDING.
            (None, _) if !ciaddr.is_unspecified() => ciaddr,
            (None, _) => return self.nak(req, server, "request names no address"),
        };
        let pool = &self.pools[pool_idx];
        if !pool.config.network.contains(&wanted) {
            return self.nak(req, server, "address is not on the client's network");
        }
        let reserved_for = self
            .reservations
            .values()
            .find(|r| r.ip == wanted)
            .map(|r| r.mac);
        let holder = self.owners.get(&wanted).copied();
        let ok = match (holder, reserved_for) {
            (Some(h), _) if h == mac => true,
            (_, Some(r)) => r == mac,
            (Some(_), None) => false,
            (None, None) => {
                self.pools[pool_idx].in_range(wanted) && !self.declined.contains_key(&wanted)
            }
        };
        if !ok {
            return self.nak(
                req,
                server,
                "address belongs to another client or is not ours to give",
            );
        }
        let expires_unix = now_unix + u64::from(self.pools[pool_idx].config.lease_secs);
        if current.is_some_and(|l| l.ip != wanted) {
            self.drop_lease(mac);
        }
        self.take(
            wanted,
            mac,
            Lease {
                ip: wanted,
                expires_unix,
                bound: true,
            },
        );
        let m = self.offer_or_ack(req, policy, server, pool_idx, wanted, MessageType::Ack);
        let to = reply::destination(req, src, local_port);
        let event = LeaseEvent::Bound {
            mac,
            ip: wanted,
            expires_unix,
            client_id: req.client_id().map(<[u8]>::to_vec),
            hostname: req.hostname().map(str::to_owned),
        };
        Outcome::Reply(reply::finish(&m, to), Some(event))
    }

    fn nak(&self, req: &Request<'_>, server: Ipv4Addr, why: &str) -> Outcome {
        tracing::debug!(mac = %req.machine.mac, why, "DHCPNAK");
        let mut m = reply::base_reply(req, MessageType::Nak, server);
        m.insert(wire::OPTION_MESSAGE, why.as_bytes());
        // RFC 2131 4.3.2: a NAK not sent to a relay is broadcast; one sent to a relay has the
        // broadcast bit set, so that the relay broadcasts it on the client's network.
        m.set_flags(wire::FLAG_BROADCAST);
        let to = if req.giaddr().is_unspecified() {
            Destination::Broadcast
        } else {
            reply::destination(
                req,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                wire::DHCP_SERVER_PORT,
            )
        };
        Outcome::Reply(reply::finish(&m, to), None)
    }

    fn offer_or_ack(
        &self,
        req: &Request<'_>,
        policy: &BootPolicy,
        server: Ipv4Addr,
        pool_idx: usize,
        ip: Ipv4Addr,
        kind: MessageType,
    ) -> ReplyMessage {
        let mut m = reply::base_reply(req, kind, server);
        m.set_yiaddr(ip);
        self.add_subnet_options(&mut m, pool_idx, true);
        if let Some(r) = self.reservations.get(&req.machine.mac) {
            if let Some(h) = &r.hostname {
                m.insert(wire::OPTION_HOSTNAME, h.as_bytes());
            }
        }
        let spec = policy
            .decide(&req.machine, server)
            .unwrap_or_else(|| policy.decide_plain(&req.machine));
        reply::add_boot(&mut m, req, &spec, server, false);
        m
    }

    fn add_subnet_options(&self, m: &mut ReplyMessage, pool_idx: usize, with_lease: bool) {
        let c = &self.pools[pool_idx].config;
        m.insert_ip(wire::OPTION_SUBNET_MASK, c.network.netmask());
        if let Some(r) = c.router {
            m.insert_ip(wire::OPTION_ROUTER, r);
        }
        if !c.dns.is_empty() {
            m.insert_ips(wire::OPTION_DNS, &c.dns);
        }
        if let Some(d) = &c.domain {
            m.insert(wire::OPTION_DOMAIN_NAME, d.as_bytes());
        }
        if with_lease {
            m.insert_u32(wire::OPTION_LEASE_TIME, c.lease_secs);
            m.insert_u32(wire::OPTION_RENEWAL_TIME, c.lease_secs / 2);
            m.insert_u32(wire::OPTION_REBINDING_TIME, c.lease_secs / 8 * 7);
        }
    }

    /// The pool of the client's network: the relay's if relayed, else the one our own address
    /// is in.
    fn pool_for(&self, req: &Request<'_>, server: Ipv4Addr) -> Option<usize> {
        let anchor = req.machine.relay.unwrap_or(server);
        self.pools
            .iter()
            .position(|p| p.config.network.contains(&anchor))
    }

    /// Picks an address for a DISCOVER and holds it as offered.
    fn allocate(&mut self, pool_idx: usize, req: &Request<'_>, now_unix: u64) -> Option<Ipv4Addr> {
        let mac = req.machine.mac;
        let network = self.pools[pool_idx].config.network;
        let hold = Lease {
            ip: Ipv4Addr::UNSPECIFIED,
            expires_unix: now_unix + OFFER_HOLD_SECS,
            bound: false,
        };
        // The client's current (or last) address.
        if let Some(l) = self.leases.get(&mac).copied() {
            if network.contains(&l.ip) {
                if !l.bound {
                    self.leases.insert(mac, Lease { ip: l.ip, ..hold });
                }
                return Some(l.ip);
            }
            self.drop_lease(mac);
        }
        // Its reservation.
        if let Some(r) = self.reservations.get(&mac) {
            let ip = r.ip;
            if network.contains(&ip) && self.owners.get(&ip).is_none_or(|o| *o == mac) {
                self.take(ip, mac, Lease { ip, ..hold });
                return Some(ip);
            }
        }
        // The address it asks for, if free.
        if let Some(ip) = req.requested_ip() {
            if self.pools[pool_idx].free.contains(&u32::from(ip)) {
                self.take(ip, mac, Lease { ip, ..hold });
                return Some(ip);
            }
        }
        let ip = match self.next_free(pool_idx, now_unix) {
            Some(ip) => ip,
            None => {
                self.reclaim_expired(now_unix);
                self.next_free(pool_idx, now_unix)?
            }
        };
        self.take(ip, mac, Lease { ip, ..hold });
        Some(ip)
    }

    fn next_free(&mut self, pool_idx: usize, now_unix: u64) -> Option<Ipv4Addr> {
        let pool = &mut self.pools[pool_idx];
        let ip = Ipv4Addr::from(*pool.free.first()?);
        if let Some(until) = self.declined.get(&ip) {
            if *until > now_unix {
                pool.free.remove(&u32::from(ip));
                return self.next_free(pool_idx, now_unix);
            }
            self.declined.remove(&ip);
        }
        Some(ip)
    }

    /// Frees every lease and offer whose time is over, and declines that ran out.
    fn reclaim_expired(&mut self, now_unix: u64) {
        let expired: Vec<MacAddr> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_unix <= now_unix)
            .map(|(m, _)| *m)
            .collect();
        for mac in expired {
            self.drop_lease(mac);
        }
        let over: Vec<Ipv4Addr> = self
            .declined
            .iter()
            .filter(|(_, until)| **until <= now_unix)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in over {
            self.declined.remove(&ip);
            self.return_free(ip);
        }
    }

    fn take(&mut self, ip: Ipv4Addr, mac: MacAddr, lease: Lease) {
        self.remove_free(ip);
        self.owners.insert(ip, mac);
        self.leases.insert(mac, lease);
    }

    fn drop_lease(&mut self, mac: MacAddr) {
        if let Some(l) = self.leases.remove(&mac) {
            if self.owners.get(&l.ip) == Some(&mac) {
                self.owners.remove(&l.ip);
                self.return_free(l.ip);
            }
        }
    }

    fn remove_free(&mut self, ip: Ipv4Addr) {
        for p in &mut self.pools {
            p.free.remove(&u32::from(ip));
        }
    }

    fn return_free(&mut self, ip: Ipv4Addr) {
        if self.reserved.contains_key(&ip) || self.declined.contains_key(&ip) {
            return;
        }
        if let Some(p) = self.pools.iter_mut().find(|p| p.in_range(ip)) {
            p.free.insert(u32::from(ip));
        }
    }
}
