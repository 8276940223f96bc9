//! io_uring underneath the kernel-socket datapath: batched UDP sends, block reads of large files
//! linked to their send, readiness of the sockets, and a small ring for whole-file reads into the
//! cache.
//!
//! Every send owns a slot of a fixed pool (its buffer and destination address stay put until the
//! kernel completes it), so the number of datagrams in flight and their memory are bounded. The
//! server pushes all the sends of a loop turn and submits them with one `io_uring_enter`. A block
//! of an uncached file is a Read into the slot's buffer linked (`IOSQE_IO_LINK`) to the Send of
//! that buffer: one submission, no return to userspace between the two.

use std::{
    fs::File,
    io,
    net::SocketAddr,
    os::fd::{AsRawFd as _, RawFd},
    sync::Arc,
    time::Duration,
};

use io_uring::{opcode, squeue, types, IoUring};
use socket2::SockAddr;

/// Submission queue entries of the server's ring.
const RING_ENTRIES: u32 = 4096;
/// Entries of the small ring used for whole-file reads.
const READER_RING_ENTRIES: u32 = 4;

/// `user_data` layout: the kind in the top byte, an index below.
const KIND_SHIFT: u32 = 56;
const KIND_POLL: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_READ: u64 = 3;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << KIND_SHIFT) | (index as u64 & INDEX_MASK)
}

/// `UDP_SEGMENT` (linux/udp.h): the control message that makes one send several datagrams.
const UDP_SEGMENT: libc::c_int = 103;
/// Most datagrams in one segmented send: the kernel's `UDP_MAX_SEGMENTS` (64 since it began).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one segmented send: the whole goes down the stack as one IPv4 packet.
pub const MAX_GSO_BYTES: usize = 65_000;

/// The `sendmsg` header of a segmented send. Its pointers point into its own slot (buffer,
/// address, `iov`, `control`), which never moves: slots are fixed at creation.
struct MsgHeader {
    msg: libc::msghdr,
    iov: libc::iovec,
    /// Room for one `cmsghdr` with a u16, aligned as `cmsghdr` needs.
    control: [u64; 4],
}

// SAFETY: the raw pointers only ever point into the slot that holds the header; the ring and
// its slots move between threads together and are used by one thread at a time.
unsafe impl Send for MsgHeader {}

impl std::fmt::Debug for MsgHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgHeader").finish_non_exhaustive()
    }
}

/// One datagram (or one segmented send of several) in flight: its bytes and where it goes.
#[derive(Debug)]
struct Slot {
    buf: Vec<u8>,
    /// Where it goes, in the form the kernel reads (a `sockaddr_in` or `sockaddr_in6`).
    addr: SockAddr,
    /// The file a linked read reads from, kept open until the read completes.
    file: Option<Arc<File>>,
    /// Bytes the linked read must return.
    read_len: u32,
    /// Whom to tell if the read fails.
    token: u64,
    /// Set for a segmented send (`UDP_SEGMENT`).
    header: Option<Box<MsgHeader>>,
    /// Whether the send in flight is segmented.
    segmented: bool,
}

/// A range of a file to send.
#[derive(Debug)]
pub struct FileBlock<'a> {
    /// The file.
    pub file: &'a Arc<File>,
    /// Where the range starts.
    pub offset: u64,
    /// Its length.
    pub len: u32,
    /// Reported back if the read fails.
    pub token: u64,
}

/// What the ring reported since the last [`SendRing::take_events`].
#[derive(Debug, Default)]
pub struct Events {
    /// Sockets (by index) that became readable.
    pub readable: Vec<usize>,
    /// Tokens of transfers whose block read failed or came back short.
    pub read_failures: Vec<u64>,
    /// Sends the kernel refused (e.g. no route); the timeout retransmits.
    pub send_errors: u64,
    /// Segmented sends the kernel refused for being segmented (the device cannot checksum
    /// them, say): segmentation is then off for good, see [`SendRing::segmentation`].
    pub segmentation_refused: u64,
}

/// The server's ring: socket readiness, sends, linked reads.
pub struct SendRing {
    ring: IoUring,
    /// Fixed at creation: slots never move while the kernel holds pointers into them.
    slots: Box<[Slot]>,
    free: Vec<usize>,
    /// Socket fds watched for readability, by index.
    watched: Vec<RawFd>,
    readable_seen: Vec<bool>,
    events: Events,
    /// Whether segmented sends are used (until the kernel refuses one).
    segmentation: bool,
}

impl std::fmt::Debug for SendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRing")
            .field("slots", &self.slots.len())
            .field("free", &self.free.len())
            .field("watched", &self.watched.len())
            .finish()
    }
}

impl SendRing {
    /// A ring with `max_in_flight` send slots.
    pub fn new(max_in_flight: usize) -> io::Result<SendRing> {
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 2)
            .build(RING_ENTRIES)?;
        let slots: Box<[Slot]> = (0..max_in_flight)
            .map(|_| Slot {
                buf: Vec::new(),
                addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
                file: None,
                read_len: 0,
                token: 0,
                header: None,
                segmented: false,
            })
            .collect();
        Ok(SendRing {
            ring,
            free: (0..slots.len()).rev().collect(),
            slots,
            watched: Vec::new(),
            readable_seen: Vec::new(),
            events: Events::default(),
            segmentation: true,
        })
    }

    /// Whether [`SendRing::send_segments`] may be used: true until the kernel refuses a
    /// segmented send.
    pub fn segmentation(&self) -> bool {
        self.segmentation
    }

    /// Watches `fd` for readability and arms it; returns its index in [`Events::readable`].
    /// The poll is one-shot (level-triggered when armed): after reading the socket, call
    /// [`SendRing::arm`] again. One poll per socket at most, so completions stay bounded.
    pub fn watch(&mut self, fd: RawFd) -> io::Result<usize> {
        let index = self.watched.len();
        self.watched.push(fd);
        self.readable_seen.push(false);
        self.arm(index)?;
        Ok(index)
    }

    /// Arms the poll of watched socket `index` again.
    pub fn arm(&mut self, index: usize) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(self.watched[index]), libc::POLLIN as u32)
            .build()
            .user_data(user_data(KIND_POLL, index));
        self.push(&[entry])
    }

    /// Pushes entries (kept together, for links), submitting first if the queue is full.
    fn push(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        loop {
            // SAFETY: every pointer in the entries (slot buffers and addresses, fds) stays valid
            // until the entry completes: slots are only reused after their completion.
            let pushed = unsafe { self.ring.submission().push_multiple(entries) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// A free slot, waiting for sends to complete if all are in flight.
    fn take_slot(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = self.free.pop() {
                return Ok(i);
            }
            self.ring.submit_and_wait(1)?;
            self.reap();
        }
    }

    /// Queues a datagram to `to` from socket `fd`, its bytes written by `fill` into an empty
    /// buffer. Sent at the next [`SendRing::submit`] or [`SendRing::wait`].
    pub fn send(
        &mut self,
        fd: RawFd,
        to: SocketAddr,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        let i = self.take_slot()?;
        let slot = &mut self.slots[i];
        slot.buf.clear();
        fill(&mut slot.buf);
        slot.addr = SockAddr::from(to);
        let entry = self.send_entry(fd, i);
        self.push(&[entry])
    }

    /// Queues several datagrams to `to` as one segmented send (UDP GSO): `fill` writes them one
    /// after the other, each `segment` bytes long but the last, which may be shorter. The
    /// kernel cuts the buffer into datagrams after one pass down the stack (or the NIC does),
    /// instead of one pass per datagram. Buffers of at most [`MAX_GSO_SEGMENTS`] segments and
    /// [`MAX_GSO_BYTES`] bytes, each datagram within the path MTU; a buffer of one segment or
    /// less is sent as a plain datagram.
    pub fn send_segments(
        &mut self,
        fd: RawFd,
        to: SocketAddr,
        segment: u16,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        let i = self.take_slot()?;
        let slot = &mut self.slots[i];
        slot.buf.clear();
        fill(&mut slot.buf);
        slot.addr = SockAddr::from(to);
        if slot.buf.len() <= usize::from(segment) {
            let entry = self.send_entry(fd, i);
            return self.push(&[entry]);
        }
        debug_assert!(slot.buf.len() <= MAX_GSO_BYTES);
        debug_assert!(slot.buf.len().div_ceil(usize::from(segment)) <= MAX_GSO_SEGMENTS);
        slot.segmented = true;
        let header = slot.header.get_or_insert_with(|| {
            Box::new(MsgHeader {
                // SAFETY: msghdr and iovec are plain data; zeroed is a valid empty value.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                control: [0; 4],
            })
        });
        header.iov = libc::iovec {
            iov_base: slot.buf.as_mut_ptr().cast(),
            iov_len: slot.buf.len(),
        };
        let value = std::mem::size_of::<u16>() as libc::c_uint;
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len) = unsafe { (libc::CMSG_SPACE(value), libc::CMSG_LEN(value)) };
        debug_assert!(space as usize <= std::mem::size_of_val(&header.control));
        // The kernel only reads the address of a send.
        header.msg.msg_name = slot.addr.as_ptr().cast_mut().cast();
        header.msg.msg_namelen = slot.addr.len();
        header.msg.msg_iov = &mut header.iov;
        header.msg.msg_iovlen = 1;
        header.msg.msg_control = header.control.as_mut_ptr().cast();
        header.msg.msg_controllen = space as usize;
        header.msg.msg_flags = 0;
        // SAFETY: `control` is large and aligned enough for one cmsghdr and a u16 (checked
        // above), and msg_control/msg_controllen describe it, so the first header is in it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header.msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = len as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
        let entry = opcode::SendMsg::new(types::Fd(fd), &header.msg)
            .build()
            .user_data(user_data(KIND_SEND, i));
        self.push(&[entry])
    }

    /// Queues a datagram of `header` followed by `block`: a Read linked to a Send. A read that
    /// fails or comes back short is reported with the block's token in
    /// [`Events::read_failures`], and the kernel cancels its send (a short read breaks the
    /// link), so no stale bytes leave.
    pub fn send_file_block(
        &mut self,
        fd: RawFd,
        to: SocketAddr,
        header: &[u8],
        block: FileBlock<'_>,
    ) -> io::Result<()> {
        let FileBlock {
            file,
            offset,
            len,
            token,
        } = block;
        let i = self.take_slot()?;
        let slot = &mut self.slots[i];
        slot.buf.clear();
        slot.buf.extend_from_slice(header);
        slot.buf.resize(header.len() + len as usize, 0);
        slot.addr = SockAddr::from(to);
        slot.file = Some(file.clone());
        slot.read_len = len;
        slot.token = token;
        let read = opcode::Read::new(
            types::Fd(file.as_raw_fd()),
            slot.buf[header.len()..].as_mut_ptr(),
            len,
        )
        .offset(offset)
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(user_data(KIND_READ, i));
        let send = self.send_entry(fd, i);
        self.push(&[read, send])
    }

    fn send_entry(&self, fd: RawFd, i: usize) -> squeue::Entry {
        let slot = &self.slots[i];
        opcode::Send::new(types::Fd(fd), slot.buf.as_ptr(), slot.buf.len() as u32)
            .dest_addr(slot.addr.as_ptr().cast())
            .dest_addr_len(slot.addr.len())
            .build()
            .user_data(user_data(KIND_SEND, i))
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit()?;
        Ok(())
    }

    /// Submits what is queued and waits up to `timeout` for at least one completion, then
    /// collects the completions.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap();
        Ok(())
    }

    /// Sends in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The events collected so far; clears them.
    pub fn take_events(&mut self) -> Events {
        for &i in &self.events.readable {
            self.readable_seen[i] = false;
        }
        std::mem::take(&mut self.events)
    }

    /// Collects every completion.
    fn reap(&mut self) {
        let completions: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, result) in completions {
            let index = (data & INDEX_MASK) as usize;
            match data >> KIND_SHIFT {
                // An error (e.g. the socket closed) is reported as readable too: the read that
                // follows sees it.
                KIND_POLL if !self.readable_seen[index] => {
                    self.readable_seen[index] = true;
                    self.events.readable.push(index);
                }
                KIND_READ => {
                    let slot = &mut self.slots[index];
                    if result < 0 || result as u32 != slot.read_len {
                        self.events.read_failures.push(slot.token);
                    }
                    slot.file = None;
                }
                KIND_SEND => {
                    let slot = &mut self.slots[index];
                    // -ECANCELED: the linked read failed, already reported.
                    if result < 0 && result != -libc::ECANCELED {
                        self.events.send_errors += 1;
                        // What the kernel says when segmentation cannot be done on this path
                        // (no checksum offload, a UDP-Lite or IPsec route, an old kernel).
                        let refused =
                            [libc::EIO, libc::EINVAL, libc::ENOPROTOOPT, libc::EOPNOTSUPP];
                        if slot.segmented && refused.contains(&-result) {
                            self.events.segmentation_refused += 1;
                            self.segmentation = false;
                        }
                    }
                    slot.segmented = false;
                    slot.file = None;
                    self.free.push(index);
                }
                _ => {}
            }
        }
    }
}

/// A small ring for reading whole files (cache fills): blocking, one read at a time.
pub struct BlockingReader {
    ring: IoUring,
}

impl std::fmt::Debug for BlockingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingReader").finish_non_exhaustive()
    }
}

impl BlockingReader {
    /// A new ring.
    pub fn new() -> io::Result<BlockingReader> {
        Ok(BlockingReader {
            ring: IoUring::new(READER_RING_ENTRIES)?,
        })
    }

    /// Fills `buf` from `file` at `offset`; an end of file before that is an error.
    pub fn read_exact_at(&mut self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let chunk = u32::try_from(buf.len() - done).unwrap_or(u32::MAX);
            let entry =
                opcode::Read::new(types::Fd(file.as_raw_fd()), buf[done..].as_mut_ptr(), chunk)
                    .offset(offset + done as u64)
                    .build();
            // SAFETY: `buf` outlives the read: we wait for its completion below.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("reader ring full"))?;
            self.ring.submit_and_wait(1)?;
            let result = self
                .ring
                .completion()
                .next()
                .map(|c| c.result())
                .ok_or_else(|| io::Error::other("no completion for a read"))?;
            match result {
                r if r < 0 => return Err(io::Error::from_raw_os_error(-r)),
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its size",
                    ))
                }
                r => done += r as usize,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, time::Instant};

    use super::*;

    #[test]
    fn reads_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = BlockingReader::new().unwrap();
        let mut buf = vec![0; data.len()];
        reader.read_exact_at(&file, &mut buf, 0).unwrap();
        assert_eq!(buf, data);
        let mut more = vec![0; 10];
        let err = reader
            .read_exact_at(&file, &mut more, data.len() as u64 - 5)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_segmented_send_arrives_as_separate_datagrams() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let to = client.local_addr().unwrap();
        let mut ring = SendRing::new(4).unwrap();
        // Three segments of 5 bytes and a short last one; then one that fits a segment.
        ring.send_segments(server.as_raw_fd(), to, 5, |b| {
            b.extend_from_slice(b"aaaaabbbbbcccccdd")
        })
        .unwrap();
        ring.send_segments(server.as_raw_fd(), to, 5, |b| b.extend_from_slice(b"eee"))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && ring.in_flight() > 0 {
            ring.wait(Duration::from_millis(50)).unwrap();
        }
        let events = ring.take_events();
        assert_eq!(events.send_errors, 0, "loopback takes segmented sends");
        assert!(ring.segmentation());
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            let n = client.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["aaaaa", "bbbbb", "ccccc", "dd", "eee"]);
    }

    #[test]
    fn sends_datagrams_and_file_blocks_in_batches() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let to = client.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = Arc::new(File::open(&path).unwrap());

        // Two slots for five datagrams: the ring waits for completions to reuse them.
        let mut ring = SendRing::new(2).unwrap();
        let watched = ring.watch(client.as_raw_fd()).unwrap();
        for i in 0..3u8 {
            ring.send(server.as_raw_fd(), to, |b| b.extend_from_slice(&[i; 3]))
                .unwrap();
        }
        ring.send_file_block(
            server.as_raw_fd(),
            to,
            b"H",
            FileBlock {
                file: &file,
                offset: 2,
                len: 4,
                token: 7,
            },
        )
        .unwrap();
        ring.send_file_block(
            server.as_raw_fd(),
            to,
            b"X",
            FileBlock {
                file: &file,
                offset: 8,
                len: 4,
                token: 9,
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut events = Events::default();
        while Instant::now() < deadline && (ring.in_flight() > 0 || events.readable.is_empty()) {
            ring.wait(Duration::from_millis(50)).unwrap();
            let e = ring.take_events();
            events.readable.extend(e.readable);
            events.read_failures.extend(e.read_failures);
        }
        assert_eq!(events.readable, vec![watched]);
        // The short read (2 bytes left at offset 8) is reported with its token.
        assert_eq!(events.read_failures, vec![9]);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            let n = client.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        assert_eq!(
            got,
            vec![vec![0; 3], vec![1; 3], vec![2; 3], b"H2345".to_vec()]
        );
        // The short read cancelled its linked send: no datagram with stale bytes went out.
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(client.recv(&mut buf).is_err(), "{:?}", &buf[..8]);
    }
}
