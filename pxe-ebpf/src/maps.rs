//! The maps of the XDP program. Names are shared with userspace through `pxe_common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, XskMap},
};
use pxe_common::{
    PacketClass, TokenBucket, Verdict, XdpConfig, PACKET_CLASS_COUNT, RATE_MAP_ENTRIES,
    VERDICT_COUNT, XSKS_MAX_QUEUES,
};

/// Frames seen per [`PacketClass`], one slot per class and CPU; userspace sums the CPUs.
#[map(name = "CLASS_COUNTERS")]
static CLASS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PACKET_CLASS_COUNT, 0);

/// Frames per (class, verdict): index `class * VERDICT_COUNT + verdict`.
#[map(name = "VERDICT_COUNTERS")]
static VERDICT_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(PACKET_CLASS_COUNT * VERDICT_COUNT, 0);

/// Number of entries of [`CONFIG`]: one, index 0.
const CONFIG_ENTRIES: u32 = 1;

/// Settings written by the daemon at start (transfer ports, steering, rate limit).
#[map(name = "CONFIG")]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(CONFIG_ENTRIES, 0);

/// Receive queue index to the daemon's AF_XDP socket of that queue.
#[map(name = "XSKS")]
pub(crate) static XSKS: XskMap = XskMap::with_max_entries(XSKS_MAX_QUEUES, 0);

/// Per-client token buckets (key: the client's MAC in the low 48 bits), least recently seen
/// forgotten first, so a flood of new MACs cannot grow it.
#[map(name = "RATE")]
pub(crate) static RATE: LruHashMap<u64, TokenBucket> =
    LruHashMap::with_max_entries(RATE_MAP_ENTRIES, 0);

/// The daemon's settings, or the defaults when none were written.
#[inline(always)]
pub(crate) fn config() -> XdpConfig {
    match CONFIG.get(0) {
        // An all-zero entry means the daemon has not written one yet.
        Some(c) if c.tftp_port_max != 0 => *c,
        _ => XdpConfig::DEFAULT,
    }
}

/// Adds one to this CPU's counters of `class` and of (`class`, `verdict`).
#[inline(always)]
pub(crate) fn count(class: PacketClass, verdict: Verdict) {
    if let Some(counter) = CLASS_COUNTERS.get_ptr_mut(class as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU map: no other writer.
        unsafe { *counter += 1 };
    }
    let index = class as u32 * VERDICT_COUNT + verdict as u32;
    if let Some(counter) = VERDICT_COUNTERS.get_ptr_mut(index) {
        // SAFETY: as above.
        unsafe { *counter += 1 };
    }
}
