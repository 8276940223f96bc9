//! Memory shared with the kernel: anonymous mappings (the UMEM frame area) and the ring
//! mappings of a socket, unmapped on drop; and a half of the UMEM lent out as frames.

use std::{io, os::fd::RawFd, ptr::NonNull};

/// One `mmap`ed region, unmapped when dropped.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; which thread unmaps it is irrelevant.
unsafe impl Send for Mmap {}

impl Mmap {
    /// `len` bytes of zeroed private memory, populated up front (the UMEM frame area).
    pub fn anonymous(len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::checked(ptr, len)
    }

    /// The ring of socket `fd` at page offset `offset` (one of the `XDP_PGOFF_*` values).
    pub fn ring(fd: RawFd, len: usize, offset: u64) -> io::Result<Mmap> {
        // SAFETY: maps the kernel's ring memory of a socket we own; MAP_SHARED as the AF_XDP
        // ABI requires. The offset constants fit in off_t on 64-bit Linux.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset as libc::off_t,
            )
        };
        Self::checked(ptr, len)
    }

    fn checked(ptr: *mut libc::c_void, len: usize) -> io::Result<Mmap> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mmap { ptr, len })
    }

    /// Start of the mapping.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes (never 0: mmap refuses empty mappings).
    pub fn bytes(&self) -> usize {
        self.len
    }

    /// A pointer `offset` bytes in, typed; `None` if `T` would not fit there or is misaligned.
    pub fn at<T>(&self, offset: u64) -> Option<NonNull<T>> {
        let offset = usize::try_from(offset).ok()?;
        if offset.checked_add(std::mem::size_of::<T>())? > self.len {
            return None;
        }
        // SAFETY: in bounds, checked above.
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        (p as usize)
            .is_multiple_of(std::mem::align_of::<T>())
            .then(|| NonNull::new(p.cast::<T>()))
            .flatten()
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in the constructor, once; nothing borrows
        // it past this value's life (rings and frame areas are dropped before their mapping).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A contiguous run of UMEM frames (the RX half or the TX half), addressed as the kernel
/// addresses them: byte offsets from the start of the UMEM.
#[derive(Debug)]
pub struct FrameArea {
    base: NonNull<u8>,
    first: u64,
    end: u64,
    frame_bytes: u32,
}

// SAFETY: the area points into a mapping its socket owns; only the datapath thread touches it.
unsafe impl Send for FrameArea {}

impl FrameArea {
    /// Frames `first_frame..first_frame + frames` of the UMEM at `umem`.
    ///
    /// # Safety
    /// The frames must lie inside `umem`, the mapping must outlive the area, and no other
    /// `FrameArea` may cover the same frames.
    pub unsafe fn new(umem: &Mmap, first_frame: u32, frames: u32, frame_bytes: u32) -> FrameArea {
        let first = u64::from(first_frame) * u64::from(frame_bytes);
        let end = first + u64::from(frames) * u64::from(frame_bytes);
        debug_assert!(end <= umem.bytes() as u64);
        FrameArea {
            base: umem.ptr(),
            first,
            end,
            frame_bytes,
        }
    }

    /// UMEM addresses of every frame of the area.
    pub fn addresses(&self) -> impl Iterator<Item = u64> {
        (self.first..self.end).step_by(self.frame_bytes as usize)
    }

    /// Whether `addr..addr+len` lies inside one frame of this area.
    pub fn contains(&self, addr: u64, len: usize) -> bool {
        let frame = u64::from(self.frame_bytes);
        addr >= self.first && addr < self.end && (addr % frame) + len as u64 <= frame
    }

    /// The bytes `addr..addr+len`, if inside one frame of this area.
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        if !self.contains(addr, len) {
            return None;
        }
        // SAFETY: inside a frame of this area (checked), which only this area covers; the
        // kernel does not write a frame while we hold it (it was taken from the RX ring or
        // not yet given to the TX ring).
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(addr as usize), len) })
    }

    /// The bytes `addr..addr+len` for writing, if inside one frame of this area.
    pub fn get_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        if !self.contains(addr, len) {
            return None;
        }
        // SAFETY: as in `get`, and `&mut self` makes the borrow unique.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(addr as usize), len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_areas_check_bounds_and_do_not_overlap() {
        let umem = Mmap::anonymous(8 * 2048).unwrap();
        // SAFETY: frames 0..4 and 4..8 of an 8-frame mapping that outlives both.
        let (mut rx, tx) = unsafe {
            (
                FrameArea::new(&umem, 0, 4, 2048),
                FrameArea::new(&umem, 4, 4, 2048),
            )
        };
        assert_eq!(rx.addresses().collect::<Vec<_>>(), [0, 2048, 4096, 6144]);
        assert_eq!(tx.addresses().next(), Some(8192));
        assert!(rx.get(2048 + 100, 1948).is_some());
        assert!(
            rx.get(2048 + 100, 1949).is_none(),
            "crosses into the next frame"
        );
        assert!(rx.get(8192, 10).is_none(), "a TX frame");
        assert!(tx.get(0, 10).is_none(), "an RX frame");
        assert!(tx.get(16384, 1).is_none(), "past the UMEM");
        rx.get_mut(0, 4).unwrap().copy_from_slice(b"abcd");
        assert_eq!(rx.get(0, 4).unwrap(), b"abcd");
        assert_eq!(umem.at::<u32>(3), None, "misaligned");
        assert_eq!(umem.at::<u64>(8 * 2048 - 4), None, "past the end");
    }
}
