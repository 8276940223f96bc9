//! The maps of the XDP program. Names are shared with userspace through `pxe_common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use pxe_common::{PacketClass, XdpConfig, PACKET_CLASS_COUNT};

/// Frames seen per [`PacketClass`], one slot per class and CPU; userspace sums the CPUs.
#[map(name = "CLASS_COUNTERS")]
static CLASS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PACKET_CLASS_COUNT, 0);

/// Number of entries of [`CONFIG`]: one, index 0.
const CONFIG_ENTRIES: u32 = 1;

/// Settings written by the daemon at start (TFTP transfer port range).
#[map(name = "CONFIG")]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(CONFIG_ENTRIES, 0);

/// The daemon's settings, or the defaults when none were written.
#[inline(always)]
pub fn config() -> XdpConfig {
    match CONFIG.get(0) {
        // An all-zero entry means the daemon has not written one yet.
        Some(c) if c.tftp_port_max != 0 => *c,
        _ => XdpConfig::DEFAULT,
    }
}

/// Adds one to this CPU's counter of `class`.
#[inline(always)]
pub fn count(class: PacketClass) {
    if let Some(counter) = CLASS_COUNTERS.get_ptr_mut(class as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU map: no other writer.
        unsafe { *counter += 1 };
    }
}
