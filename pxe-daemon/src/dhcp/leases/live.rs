//! The live set: what the journal's records add up to, and what compaction writes out.

use std::{collections::HashMap, net::Ipv4Addr};

use super::record::{Lease, LeaseRecord, DECLINED_RECORD_BYTES};

/// An address that a client declined, unusable until a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Declined {
    /// The address.
    pub ip: Ipv4Addr,
    /// Until when it is unusable, in seconds since the Unix epoch.
    pub until_unix_secs: u64,
}

/// The leases and declined addresses in force. Invariant: each address is bound to at most one
/// MAC, and each MAC has at most one lease.
#[derive(Debug, Default)]
pub(super) struct LiveSet {
    by_mac: HashMap<[u8; 6], Lease>,
    by_ip: HashMap<Ipv4Addr, [u8; 6]>,
    declined: HashMap<Ipv4Addr, u64>,
    /// Bytes of the records that rebuild this set (what compaction would write, less block
    /// headers).
    encoded_bytes: u64,
}

fn bind_len(lease: &Lease) -> u64 {
    lease.bind_record_len() as u64
}

fn declined_len() -> u64 {
    DECLINED_RECORD_BYTES as u64
}

impl LiveSet {
    /// Applies one record (the semantics are documented on [`LeaseRecord`]).
    pub(super) fn apply(&mut self, record: LeaseRecord) {
        match record {
            LeaseRecord::Bind(lease) => {
                if let Some(&holder) = self.by_ip.get(&lease.ip) {
                    if holder != lease.mac {
                        self.remove_mac(&holder);
                    }
                }
                self.remove_mac(&lease.mac);
                if self.declined.remove(&lease.ip).is_some() {
                    self.encoded_bytes -= declined_len();
                }
                self.encoded_bytes += bind_len(&lease);
                self.by_ip.insert(lease.ip, lease.mac);
                self.by_mac.insert(lease.mac, lease);
            }
            LeaseRecord::Release { mac, ip } => {
                if self.by_mac.get(&mac).is_some_and(|l| l.ip == ip) {
                    self.remove_mac(&mac);
                }
            }
            LeaseRecord::Declined {
                ip,
                until_unix_secs,
            } => {
                if let Some(holder) = self.by_ip.get(&ip).copied() {
                    self.remove_mac(&holder);
                }
                if self.declined.insert(ip, until_unix_secs).is_none() {
                    self.encoded_bytes += declined_len();
                }
            }
        }
    }

    fn remove_mac(&mut self, mac: &[u8; 6]) {
        if let Some(old) = self.by_mac.remove(mac) {
            self.by_ip.remove(&old.ip);
            self.encoded_bytes -= bind_len(&old);
        }
    }

    /// Forgets leases that ended more than `retain_expired_secs` before `now_unix_secs`, and
    /// declines that have run out. Returns how many entries went.
    pub(super) fn prune(&mut self, now_unix_secs: u64, retain_expired_secs: u64) -> usize {
        let gone: Vec<[u8; 6]> = self
            .by_mac
            .values()
            .filter(|l| l.expires_at_unix_secs.saturating_add(retain_expired_secs) < now_unix_secs)
            .map(|l| l.mac)
            .collect();
        for mac in &gone {
            self.remove_mac(mac);
        }
        let before = self.declined.len();
        self.declined.retain(|_, until| *until >= now_unix_secs);
        let declines_gone = before - self.declined.len();
        self.encoded_bytes -= declines_gone as u64 * declined_len();
        gone.len() + declines_gone
    }

    /// Bytes of the records that rebuild this set.
    pub(super) fn encoded_bytes(&self) -> u64 {
        self.encoded_bytes
    }

    /// Number of leases.
    pub(super) fn lease_count(&self) -> usize {
        self.by_mac.len()
    }

    /// The records that rebuild this set, in no particular order.
    pub(super) fn records(&self) -> impl Iterator<Item = LeaseRecord> + '_ {
        self.by_mac
            .values()
            .cloned()
            .map(LeaseRecord::Bind)
            .chain(
                self.declined
                    .iter()
                    .map(|(&ip, &until_unix_secs)| LeaseRecord::Declined {
                        ip,
                        until_unix_secs,
                    }),
            )
    }

    /// The leases, sorted by MAC.
    pub(super) fn leases(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self.by_mac.values().cloned().collect();
        v.sort_by_key(|l| l.mac);
        v
    }

    /// The declined addresses, sorted by address.
    pub(super) fn declined(&self) -> Vec<Declined> {
        let mut v: Vec<Declined> = self
            .declined
            .iter()
            .map(|(&ip, &until_unix_secs)| Declined {
                ip,
                until_unix_secs,
            })
            .collect();
        v.sort_by_key(|d| d.ip);
        v
    }
}
