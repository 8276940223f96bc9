//! The four single-producer single-consumer rings an AF_XDP socket shares with the kernel
//! (fill, completion, RX, TX), over memory the kernel maps for us.
//!
//! Producer and consumer are free-running `u32` counters; an entry's slot is `index & mask`.
//! The arithmetic lives in [`ready`] and [`free`] so that it is tested on its own, wrap-around
//! included.

use std::{
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// Entries a consumer may read: what the producer has published beyond the consumer.
pub const fn ready(producer: u32, consumer: u32) -> u32 {
    producer.wrapping_sub(consumer)
}

/// Entries a producer may still write into a ring of `size` entries.
pub const fn free(size: u32, producer: u32, consumer: u32) -> u32 {
    size.saturating_sub(producer.wrapping_sub(consumer))
}

/// One ring: the shared counters and the descriptor array of `size` entries of `T`
/// (`u64` frame addresses for fill/completion, `xdp_desc` for RX/TX).
#[derive(Debug)]
pub struct Ring<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our view of the counter we own (published with a release store).
    local: u32,
    /// Last seen value of the counter the other side owns.
    cached_other: u32,
}

// SAFETY: a ring is used by one thread at a time (the datapath thread owns its sockets); the
// memory it points to lives as long as the socket's mapping, which the owner keeps with it.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// A ring over the given shared words and descriptor array.
    ///
    /// # Safety
    /// The pointers must be valid, aligned, and stay valid for the ring's lifetime; `desc`
    /// must hold `size` entries; `size` must be a power of two. `producer_side`: we write
    /// this ring (fill, TX), else we read it (completion, RX).
    pub unsafe fn from_raw(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: NonNull<AtomicU32>,
        desc: NonNull<T>,
        size: u32,
        producer_side: bool,
    ) -> Ring<T> {
        debug_assert!(size.is_power_of_two());
        let mut ring = Ring {
            producer,
            consumer,
            flags,
            desc,
            mask: size - 1,
            size,
            local: 0,
            cached_other: 0,
        };
        ring.sync(producer_side);
        ring
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid for the ring's lifetime (from_raw's contract).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: valid for the ring's lifetime (from_raw's contract).
        unsafe { self.consumer.as_ref() }
    }

    /// Whether the kernel asked to be woken (XDP_USE_NEED_WAKEUP) to process this ring.
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: valid for the ring's lifetime (from_raw's contract).
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask` < size, inside the descriptor array.
        unsafe { self.desc.as_ptr().add((index & self.mask) as usize) }
    }

    // --- producer side (fill, TX) ---

    /// Room for this many entries now (reads the kernel's consumer counter when needed).
    pub fn producer_free(&mut self, want: u32) -> u32 {
        let mut room = free(self.size, self.local, self.cached_other);
        if room < want {
            self.cached_other = self.consumer().load(Ordering::Acquire);
            room = free(self.size, self.local, self.cached_other);
        }
        room
    }

    /// Whether submitted entries wait for the kernel to take them.
    pub fn unconsumed(&self) -> bool {
        self.consumer().load(Ordering::Acquire) != self.local
    }

    /// Writes `entry` at the next free slot; false when the ring is full. Not visible to the
    /// kernel until [`Ring::submit`].
    pub fn push(&mut self, entry: T) -> bool {
        if self.producer_free(1) == 0 {
            return false;
        }
        // SAFETY: the slot is ours: between the consumer and the producer plus size.
        unsafe { self.slot(self.local).write(entry) };
        self.local = self.local.wrapping_add(1);
        true
    }

    /// Publishes what [`Ring::push`] wrote.
    pub fn submit(&mut self) {
        self.producer().store(self.local, Ordering::Release);
    }

    // --- consumer side (completion, RX) ---

    /// Takes the next entry the kernel published, if any. Not returned to the kernel until
    /// [`Ring::release`].
    pub fn pop(&mut self) -> Option<T> {
        if ready(self.cached_other, self.local) == 0 {
            self.cached_other = self.producer().load(Ordering::Acquire);
            if ready(self.cached_other, self.local) == 0 {
                return None;
            }
        }
        // SAFETY: the slot was published by the producer and not yet released by us.
        let entry = unsafe { self.slot(self.local).read() };
        self.local = self.local.wrapping_add(1);
        Some(entry)
    }

    /// Gives the slots taken with [`Ring::pop`] back to the kernel.
    pub fn release(&mut self) {
        self.consumer().store(self.local, Ordering::Release);
    }

    /// Starts from the shared counters: a producer from the producer counter, a consumer from
    /// the consumer counter (both 0 on a fresh socket).
    fn sync(&mut self, producer_side: bool) {
        if producer_side {
            self.local = self.producer().load(Ordering::Acquire);
            self.cached_other = self.consumer().load(Ordering::Acquire);
        } else {
            self.local = self.consumer().load(Ordering::Acquire);
            self.cached_other = self.producer().load(Ordering::Acquire);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_wrap_around() {
        assert_eq!(ready(5, 3), 2);
        assert_eq!(ready(2, u32::MAX - 1), 4);
        assert_eq!(free(8, 5, 3), 6);
        assert_eq!(free(8, 2, u32::MAX - 1), 4);
        assert_eq!(free(8, 11, 3), 0);
        // A corrupt pair (producer far ahead) never claims room.
        assert_eq!(free(8, 100, 3), 0);
    }

    struct Mem {
        words: Box<[AtomicU32; 3]>,
        desc: Box<[u64; 4]>,
    }

    fn ring(mem: &mut Mem, start: u32) -> (Ring<u64>, Ring<u64>) {
        for w in mem.words.iter() {
            w.store(start, Ordering::Relaxed);
        }
        let p = NonNull::from(&mem.words[0]);
        let c = NonNull::from(&mem.words[1]);
        let f = NonNull::from(&mem.words[2]);
        let d = NonNull::new(mem.desc.as_mut_ptr()).unwrap();
        // SAFETY: the memory outlives both rings in each test; 4 entries, a power of two.
        unsafe {
            (
                Ring::from_raw(p, c, f, d, 4, true),
                Ring::from_raw(p, c, f, d, 4, false),
            )
        }
    }

    #[test]
    fn producer_and_consumer_pass_entries_in_order_across_the_wrap() {
        let mut mem = Mem {
            words: Box::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]),
            desc: Box::new([0; 4]),
        };
        let (mut producer, mut consumer) = ring(&mut mem, u32::MAX - 2);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        for round in 0..5 {
            let submitted_before = next_in;
            while producer.push(next_in) {
                next_in += 1;
            }
            assert_eq!(next_in - next_out, 4, "round {round}: a full ring holds 4");
            // What this round pushed is not visible before submit: only earlier rounds' left.
            while let Some(v) = consumer.pop() {
                assert_eq!(v, next_out, "round {round}");
                next_out += 1;
            }
            assert_eq!(next_out, submitted_before, "round {round}");
            producer.submit();
            for _ in 0..3 {
                assert_eq!(consumer.pop(), Some(next_out), "round {round}");
                next_out += 1;
            }
            // Not released yet: the producer still sees a full ring.
            assert!(!producer.push(999), "round {round}");
            consumer.release();
            let in_ring = u32::try_from(next_in - next_out).unwrap();
            assert_eq!(producer.producer_free(4), 4 - in_ring, "round {round}");
        }
    }

    #[test]
    fn needs_wakeup_reads_the_flag_word() {
        let mut mem = Mem {
            words: Box::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]),
            desc: Box::new([0; 4]),
        };
        let (producer, _) = ring(&mut mem, 0);
        assert!(!producer.needs_wakeup());
        mem.words[2].store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(producer.needs_wakeup());
    }
}
