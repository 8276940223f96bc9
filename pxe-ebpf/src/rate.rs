//! Storm shedding: a token bucket per client MAC.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use pxe_common::{TokenBucket, XdpConfig};

use crate::maps::RATE;

/// Thousandths of a token per token.
const MILLI: u64 = 1000;
/// Longest gap refilled at once (keeps the arithmetic far from overflow).
const REFILL_MAX_NS: u64 = 10_000_000_000;

/// Whether `mac` may send one more frame now; takes a token if so.
#[inline(always)]
pub(crate) fn allow(mac: u64, config: &XdpConfig) -> bool {
    let rate = u64::from(config.rate_per_sec);
    if rate == 0 {
        return true;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let cap = (u64::from(config.rate_burst) + 1) * MILLI;
    match RATE.get_ptr_mut(mac) {
        Some(bucket) => {
            // SAFETY: the pointer is a live value of the map; a concurrent update from another
            // CPU only makes the count approximate, which a rate limit tolerates.
            let b = unsafe { &mut *bucket };
            let elapsed = now.saturating_sub(b.last_ns).min(REFILL_MAX_NS);
            // ns * tokens/s / 1e9 tokens, in thousandths: ns * rate / 1e6.
            let tokens = (b.milli_tokens + elapsed * rate / 1_000_000).min(cap);
            b.last_ns = now;
            if tokens >= MILLI {
                b.milli_tokens = tokens - MILLI;
                true
            } else {
                b.milli_tokens = tokens;
                false
            }
        }
        None => {
            let fresh = TokenBucket {
                milli_tokens: cap - MILLI,
                last_ns: now,
            };
            // A full map evicts its least recently used entry; an error only skips the limit.
            let _ = RATE.insert(mac, fresh, 0);
            true
        }
    }
}
