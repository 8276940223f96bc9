//! One AF_XDP socket bound to one receive queue: its UMEM (half for receiving, half for
//! sending), the fill/completion rings of the UMEM, and the RX/TX rings of the socket.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use tracing::debug;

use super::{
    frame::{self, UdpChecksum},
    ring::Ring,
    umem::{FrameArea, Mmap},
    BindMode,
};

/// Bytes of one UMEM frame: one Ethernet frame up to a 1500-byte MTU and then some.
pub const FRAME_BYTES: u32 = 2048;
/// Frames per socket: half are given to the kernel for receiving, half are ours for sending.
/// A rack's burst must fit: with 1024 receive frames, `pxe-bench rack` at 2,000 machines lost
/// 1% of the steered TFTP frames to a full RX ring (the kernel drops what finds no frame),
/// and 93 UEFI machines whose ACK 0 was among them failed (their firmware-like client waits
/// longer than our transfer's retries); kernel sockets had 8 MiB of buffer there. 16 MiB per
/// queue.
pub const FRAMES_PER_SOCKET: u32 = 8192;
/// Frames for receiving (always in the fill ring or being read).
pub const RX_FRAMES: u32 = FRAMES_PER_SOCKET / 2;
/// Frames for sending.
pub const TX_FRAMES: u32 = FRAMES_PER_SOCKET - RX_FRAMES;
/// Entries of each of the four rings (power of two, room for every frame of its half).
pub const RING_ENTRIES: u32 = 4096;
/// Bytes before each sent frame, in its UMEM frame, for its TX metadata (`struct
/// xsk_tx_metadata`: 16 bytes before Linux 6.14, 24 since; the kernel wants a multiple of 8).
/// Reserved in every TX frame, used or not, so a frame holds this much less.
pub const TX_METADATA_BYTES: u32 = 24;
/// Bytes a sent frame may have: its UMEM frame less the metadata area before it.
pub const TX_FRAME_ROOM: u32 = FRAME_BYTES - TX_METADATA_BYTES;
/// UMEM flag XDP_UMEM_TX_METADATA_LEN: "use tx_metadata_len" (a kernel without TX metadata,
/// or one that has it without this flag, refuses the registration: then there is none).
const XDP_UMEM_TX_METADATA_LEN: u32 = 1 << 2;

/// Whether a socket asks the kernel for TX metadata (in copy mode; zero-copy never does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMetadata {
    /// Where the kernel has it.
    Wanted,
    /// Not on this device: virtio-net builds copy-mode frames on a path that skipped TX
    /// metadata in the kernels before late 2025 (`IFF_TX_SKB_NO_LINEAR`), which would send
    /// unfinished checksums.
    Off,
}

/// Where in a sent frame the device sums from, and where the sum goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumRequest {
    /// First byte summed (the L4 header), from the frame's start.
    pub start: u16,
    /// Where the checksum goes, from `start`.
    pub offset: u16,
}

/// Why a socket could not be made.
#[derive(Debug, thiserror::Error)]
#[error("AF_XDP socket on {interface} queue {queue}: {step}: {source}")]
pub struct XskError {
    /// The interface.
    pub interface: String,
    /// The receive queue.
    pub queue: u32,
    /// What was being done.
    pub step: &'static str,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

/// The receiving half: RX ring, fill ring, and the RX frames.
#[derive(Debug)]
pub struct XskRx {
    rx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    frames: FrameArea,
}

/// The sending half: TX ring, completion ring, the TX frames and which of them are free.
#[derive(Debug)]
pub struct XskTx {
    fd: RawFd,
    tx: Ring<libc::xdp_desc>,
    completion: Ring<u64>,
    frames: FrameArea,
    free: Vec<u64>,
    /// Descriptors put on the TX ring since the last kick.
    unkicked: u32,
    /// The kernel reads TX metadata before each frame ([`TX_METADATA_BYTES`]), so a frame may
    /// leave its checksum to the device; 0 where it does not (zero-copy: not every driver
    /// does checksums from metadata; kernels without `XDP_UMEM_TX_METADATA_LEN`; drivers
    /// whose copy-mode path skips the metadata, see [`TxMetadata`]).
    metadata: u32,
}

/// A bound AF_XDP socket. Field order is drop order: rings and frame areas before the
/// mappings they point into, the socket last.
#[derive(Debug)]
pub struct XskSocket {
    /// Receiving half.
    pub rx: XskRx,
    /// Sending half.
    pub tx: XskTx,
    _rings: [Mmap; 4],
    _umem: Mmap,
    fd: OwnedFd,
    queue: u32,
    zero_copy: bool,
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Whether an OS error means "this bind mode is not supported here".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::EPROTONOSUPPORT)
    )
}

impl XskSocket {
    /// Opens a socket on `queue` of `interface` (index `ifindex`), binding as `bind` says:
    /// `auto` tries zero-copy, then copy mode with a debug log.
    pub fn open(
        interface: &str,
        ifindex: u32,
        queue: u32,
        bind: BindMode,
        metadata: TxMetadata,
    ) -> Result<XskSocket, XskError> {
        let err = |step: &'static str| {
            move |source: io::Error| XskError {
                interface: interface.to_owned(),
                queue,
                step,
                source,
            }
        };
        match bind {
            BindMode::Copy => {
                Self::open_mode(ifindex, queue, false, metadata).map_err(err("bind (copy)"))
            }
            BindMode::Zerocopy => {
                Self::open_mode(ifindex, queue, true, metadata).map_err(err("bind (zero-copy)"))
            }
            BindMode::Auto => match Self::open_mode(ifindex, queue, true, metadata) {
                Err(e) if unsupported(&e) => {
                    debug!(interface, queue, error = %e, "AF_XDP zero-copy not supported; binding in copy mode");
                    Self::open_mode(ifindex, queue, false, metadata).map_err(err("bind (copy)"))
                }
                other => other.map_err(err("bind (zero-copy)")),
            },
        }
    }

    /// The receive queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    fn open_mode(
        ifindex: u32,
        queue: u32,
        zero_copy: bool,
        metadata: TxMetadata,
    ) -> io::Result<XskSocket> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let umem = Mmap::anonymous((FRAMES_PER_SOCKET * FRAME_BYTES) as usize)?;
        let metadata = register_umem(raw, &umem, !zero_copy && metadata == TxMetadata::Wanted)?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, opt, &RING_ENTRIES)?;
        }
        let offsets = mmap_offsets(raw)?;

        let desc_bytes = std::mem::size_of::<libc::xdp_desc>() as u64;
        let addr_bytes = std::mem::size_of::<u64>() as u64;
        let n = u64::from(RING_ENTRIES);
        let map = |off: &libc::xdp_ring_offset, entry: u64, pgoff: u64| {
            Mmap::ring(raw, (off.desc + n * entry) as usize, pgoff)
        };
        let rx_map = map(&offsets.rx, desc_bytes, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx_map = map(&offsets.tx, desc_bytes, libc::XDP_PGOFF_TX_RING as u64)?;
        let fill_map = map(&offsets.fr, addr_bytes, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp_map = map(
            &offsets.cr,
            addr_bytes,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;

        let rx = make_ring(&rx_map, &offsets.rx, false)?;
        let tx = make_ring(&tx_map, &offsets.tx, true)?;
        let mut fill = make_ring(&fill_map, &offsets.fr, true)?;
        let completion = make_ring(&comp_map, &offsets.cr, false)?;

        // SAFETY: two disjoint halves of the UMEM, which the socket keeps alive after them.
        let (rx_frames, tx_frames) = unsafe {
            (
                FrameArea::new(&umem, 0, RX_FRAMES, FRAME_BYTES),
                FrameArea::new(&umem, RX_FRAMES, TX_FRAMES, FRAME_BYTES),
            )
        };
        // Every RX frame goes to the kernel before the bind, so that the first frame finds one.
        for addr in rx_frames.addresses() {
            if !fill.push(addr) {
                break;
            }
        }
        fill.submit();

        let mut flags = libc::XDP_USE_NEED_WAKEUP;
        flags |= if zero_copy {
            libc::XDP_ZEROCOPY
        } else {
            libc::XDP_COPY
        };
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: a sockaddr_xdp of the stated size for our socket.
        let rc = unsafe {
            libc::bind(
                raw,
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let free = tx_frames.addresses().collect();
        Ok(XskSocket {
            rx: XskRx {
                rx,
                fill,
                frames: rx_frames,
            },
            tx: XskTx {
                fd: raw,
                tx,
                completion,
                frames: tx_frames,
                free,
                unkicked: 0,
                metadata,
            },
            _rings: [rx_map, tx_map, fill_map, comp_map],
            _umem: umem,
            fd,
            queue,
            zero_copy,
        })
    }
}

/// Registers `umem` on the socket `fd`, with room for TX metadata before each sent frame when
/// `want_metadata` and the kernel has it. Returns the metadata bytes registered (0: none).
fn register_umem(fd: RawFd, umem: &Mmap, want_metadata: bool) -> io::Result<u32> {
    let reg = |flags, tx_metadata_len| libc::xdp_umem_reg {
        addr: umem.ptr().as_ptr() as u64,
        len: umem.bytes() as u64,
        chunk_size: FRAME_BYTES,
        headroom: 0,
        flags,
        tx_metadata_len,
    };
    if want_metadata {
        match setsockopt(
            fd,
            libc::XDP_UMEM_REG,
            &reg(XDP_UMEM_TX_METADATA_LEN, TX_METADATA_BYTES),
        ) {
            Ok(()) => return Ok(TX_METADATA_BYTES),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                debug!(error = %e, "no AF_XDP TX metadata here; UDP checksums computed in full");
            }
            Err(e) => return Err(e),
        }
    }
    setsockopt(fd, libc::XDP_UMEM_REG, &reg(0, 0))?;
    Ok(0)
}

/// A ring over the mapping `m` at the kernel's offsets `off`.
fn make_ring<T: Copy>(
    m: &Mmap,
    off: &libc::xdp_ring_offset,
    producer_side: bool,
) -> io::Result<Ring<T>> {
    let bad = || io::Error::other("ring offsets outside their mapping");
    let producer = m.at(off.producer).ok_or_else(bad)?;
    let consumer = m.at(off.consumer).ok_or_else(bad)?;
    let flags = m.at(off.flags).ok_or_else(bad)?;
    let desc_end = off.desc + u64::from(RING_ENTRIES) * std::mem::size_of::<T>() as u64;
    if desc_end > m.bytes() as u64 {
        return Err(bad());
    }
    let desc = m.at(off.desc).ok_or_else(bad)?;
    // SAFETY: the pointers are the kernel's offsets inside `m`, checked to fit, with room for
    // RING_ENTRIES descriptors (a power of two, the size we asked for); the socket keeps `m`
    // mapped until after the ring is dropped (field order of XskSocket).
    Ok(unsafe { Ring::from_raw(producer, consumer, flags, desc, RING_ENTRIES, producer_side) })
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mmap_offsets(fd: RawFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
    let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `offsets`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            std::ptr::from_mut(&mut offsets).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
        // Kernels before 5.4 lack the flags word: NEED_WAKEUP needs it.
        return Err(io::Error::other("kernel without ring flags (before 5.4)"));
    }
    Ok(offsets)
}

/// Most `sendto` calls per kick: the kernel's copy mode sends 32 frames per call, so this
/// covers the whole TX ring.
const KICKS_PER_FLUSH: usize = RING_ENTRIES as usize / 32 + 1;

/// Largest batch taken from the RX ring per socket and wakeup.
pub const RX_BATCH: usize = 64;

impl XskRx {
    /// Takes up to [`RX_BATCH`] received frames: calls `each` with every frame's bytes (or
    /// `None` for a descriptor outside the RX frames, which is counted by the caller), then
    /// gives the frames back to the kernel through the fill ring. Returns how many were taken.
    pub fn receive(&mut self, mut each: impl FnMut(Option<&[u8]>)) -> usize {
        let mut taken = [0u64; RX_BATCH];
        let mut n = 0;
        while n < RX_BATCH {
            let Some(desc) = self.rx.pop() else { break };
            // Copy mode gives frames at the addresses we filled; unaligned mode is not used,
            // so the frame's start is the address rounded down to a frame.
            let frame_start = desc.addr - desc.addr % u64::from(FRAME_BYTES);
            each(self.frames.get(desc.addr, desc.len as usize));
            if self.frames.contains(frame_start, 0) {
                taken[n] = frame_start;
                n += 1;
            }
        }
        if n > 0 {
            self.rx.release();
            for &addr in &taken[..n] {
                // Room is certain: every RX frame fits in the fill ring at once.
                let _ = self.fill.push(addr);
            }
            self.fill.submit();
        }
        n
    }
}

impl XskTx {
    /// Takes back the frames the kernel has sent.
    pub fn reclaim(&mut self) {
        let mut any = false;
        while let Some(addr) = self.completion.pop() {
            any = true;
            let start = addr - addr % u64::from(FRAME_BYTES);
            if self.frames.contains(start, 0) && self.free.len() < TX_FRAMES as usize {
                self.free.push(start);
            }
        }
        if any {
            self.completion.release();
        }
    }

    /// Whether a frame may leave its checksum to the device (see [`XskTx::send`]).
    pub fn checksum_offload(&self) -> bool {
        self.metadata > 0
    }

    /// How the UDP checksum of a frame sent now is filled: by the device when `device` asks
    /// for it and the socket offers it (with the request [`XskTx::send`] takes), else in full
    /// by the frame writer.
    pub fn udp_checksum(&self, device: bool) -> (UdpChecksum, Option<ChecksumRequest>) {
        if device && self.checksum_offload() {
            let request = ChecksumRequest {
                start: frame::UDP_CHECKSUM_START,
                offset: frame::UDP_CHECKSUM_OFFSET,
            };
            (UdpChecksum::Device, Some(request))
        } else {
            (UdpChecksum::Full, None)
        }
    }

    /// Builds a frame with `build` (which writes it and returns its length, at most
    /// [`TX_FRAME_ROOM`]) and puts it on the TX ring, asking the
    /// device for the checksum `checksum` names (only where [`XskTx::checksum_offload`]; else
    /// it is ignored and the frame must carry its checksum). `false` when no frame or ring
    /// slot is free now.
    pub fn send(
        &mut self,
        checksum: Option<ChecksumRequest>,
        build: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        if self.free.is_empty() {
            self.reclaim();
        }
        if self.tx.producer_free(1) == 0 {
            return false;
        }
        let Some(start) = self.free.pop() else {
            return false;
        };
        let sent = self.fill_and_push(start, checksum, build);
        if !sent {
            self.free.push(start);
        }
        sent
    }

    /// [`XskTx::send`] into the free frame at `start`.
    fn fill_and_push(
        &mut self,
        start: u64,
        checksum: Option<ChecksumRequest>,
        build: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        // The frame follows the metadata area, which every TX frame keeps (the kernel checks
        // that metadata and frame fit in one UMEM frame).
        let addr = start + u64::from(TX_METADATA_BYTES);
        let mut options = 0;
        if let Some(c) = checksum.filter(|_| self.checksum_offload()) {
            let Some(meta) = self.frames.get_mut(start, TX_METADATA_BYTES as usize) else {
                return false;
            };
            // struct xsk_tx_metadata: u64 flags, then request.csum_start and csum_offset.
            meta.fill(0);
            meta[..8].copy_from_slice(&u64::from(libc::XDP_TXMD_FLAGS_CHECKSUM).to_ne_bytes());
            meta[8..10].copy_from_slice(&c.start.to_ne_bytes());
            meta[10..12].copy_from_slice(&c.offset.to_ne_bytes());
            options = libc::XDP_TX_METADATA;
        }
        let room = TX_FRAME_ROOM as usize;
        let Some(buf) = self.frames.get_mut(addr, room) else {
            return false;
        };
        let len = build(buf).min(room);
        let pushed = self.tx.push(libc::xdp_desc {
            addr,
            len: len as u32,
            options,
        });
        debug_assert!(pushed, "room was checked");
        self.tx.submit();
        self.unkicked += 1;
        true
    }

    /// Tells the kernel to send what is on the TX ring: one `sendto` per batch, and only
    /// when the kernel asked for it (NEED_WAKEUP). Transient refusals are retried on the
    /// next kick. Returns the frames the kick covered.
    pub fn kick(&mut self) -> u32 {
        let n = std::mem::take(&mut self.unkicked);
        if n == 0 || !self.tx.needs_wakeup() {
            return n;
        }
        // In copy mode one call sends at most 32 frames and says EAGAIN while more wait:
        // call again, a bounded number of times (the ring's worth).
        for _ in 0..KICKS_PER_FLUSH {
            // SAFETY: a zero-length sendto on our socket: the AF_XDP "transmit now" call.
            let rc = unsafe {
                libc::sendto(
                    self.fd,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                return n;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) if self.tx.unconsumed() => continue,
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => {
                    debug!(error = %e, "AF_XDP transmit kick deferred");
                    self.unkicked = n;
                    return n;
                }
                _ => {
                    debug!(error = %e, "AF_XDP transmit kick");
                    return n;
                }
            }
        }
        if self.tx.unconsumed() {
            self.unkicked = n;
        }
        n
    }

    /// Whether frames wait for a kick.
    pub fn pending(&self) -> bool {
        self.unkicked > 0
    }
}
