//! IPv6 router advertisements that say "no IPv6 router here" (`ipv6.router_advertisement =
//! "no-router"`, off by default).
//!
//! iPXE configures IPv6 beside DHCPv4 and boots only when both are done: on a network without
//! an IPv6 router it sends router solicitations until its timer gives up, about 16 s with
//! Debian 12's iPXE (2019; upstream cut it to about 6 s in 2020), on every boot. A router
//! advertisement ends that wait at once. The one sent here is what an IPv4-only boot network
//! would honestly say: router lifetime 0 (no default router), no prefixes (no addresses to
//! form), managed and other-config flags off (no DHCPv6). It is sent only in answer to a
//! solicitation, to all nodes, at most once per 3 s, after a random delay of up to 0.5 s
//! (RFC 4861 6.2.6), from the interface's link-local address with hop limit 255.
//!
//! [`packet`] checks solicitations and builds the advertisement, [`Pacer`] decides when to
//! send (both sans-IO); [`server`] is the raw ICMPv6 socket.

pub mod metrics;
pub mod packet;
pub mod server;
pub mod settings;

use std::time::{Duration, Instant};

pub use settings::{RouterAdvertisement, Settings};

/// Longest random delay before a solicited advertisement (RFC 4861 MAX_RA_DELAY_TIME).
pub const MAX_RA_DELAY: Duration = Duration::from_millis(500);
/// Shortest time between two multicast advertisements (RFC 4861 MIN_DELAY_BETWEEN_RAS).
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);

/// When the next advertisement goes out: one answers every solicitation that came before it.
#[derive(Clone, Debug, Default)]
pub struct Pacer {
    last_sent: Option<Instant>,
    due: Option<Instant>,
}

impl Pacer {
    /// A solicitation arrived at `now`; `delay` is the random delay drawn for it (at most
    /// [`MAX_RA_DELAY`]). Returns when the advertisement that answers it goes out.
    pub fn solicited(&mut self, now: Instant, delay: Duration) -> Instant {
        if let Some(due) = self.due {
            return due;
        }
        let mut at = now + delay.min(MAX_RA_DELAY);
        if let Some(last) = self.last_sent {
            at = at.max(last + MIN_DELAY_BETWEEN_RAS);
        }
        self.due = Some(at);
        at
    }

    /// When an advertisement is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The due advertisement went out (or failed to) at `at`.
    pub fn sent(&mut self, at: Instant) {
        self.last_sent = Some(at);
        self.due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_advertisement_answers_a_burst_and_they_are_spaced() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(pacer.due(), None);
        let first = pacer.solicited(t0, Duration::from_millis(200));
        assert_eq!(first, t0 + Duration::from_millis(200));
        // A rack's solicitations before it goes out are answered by the same advertisement.
        assert_eq!(
            pacer.solicited(t0 + Duration::from_millis(100), Duration::ZERO),
            first
        );
        pacer.sent(first);
        assert_eq!(pacer.due(), None);
        // The next one waits for MIN_DELAY_BETWEEN_RAS after the last.
        let second = pacer.solicited(first + Duration::from_secs(1), Duration::ZERO);
        assert_eq!(second, first + MIN_DELAY_BETWEEN_RAS);
        pacer.sent(second);
        // Long after, only the random delay, capped at MAX_RA_DELAY.
        let later = second + Duration::from_secs(60);
        assert_eq!(
            pacer.solicited(later, Duration::from_secs(9)),
            later + MAX_RA_DELAY
        );
    }
}
