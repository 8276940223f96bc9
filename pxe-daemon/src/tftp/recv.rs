//! Batched receive under the kernel-socket datapath: one `recvmmsg(2)` takes every datagram a
//! socket holds, up to [`BATCH`], where a `recv_from` per datagram needs one call per datagram
//! and one more to learn the socket is empty. A rack's transfers share the transfer ports, so a
//! socket usually holds several ACKs per loop turn; and a batch shorter than [`BATCH`] already
//! says the socket is drained (the kernel stops at the first `EAGAIN`).

use std::{io, net::SocketAddr, os::fd::RawFd};

/// Datagrams taken by one call.
pub const BATCH: usize = 64;
/// Room for one datagram. TFTP requests, ACKs and ERRORs are far shorter (firmware requests
/// stay under 512 bytes); a longer datagram comes back truncated and is dropped.
pub const SLOT_BYTES: usize = 4096;

/// The buffers, addresses and headers of one `recvmmsg` call, reused from call to call.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Where each header's one `iovec` lives (read through `msgs` only).
    _iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Datagrams the last call returned.
    len: usize,
}

// SAFETY: the raw pointers in `iovs` and `msgs` point only into the batch's own boxed buffers,
// which move with it (a box's heap allocation never moves); one thread uses a batch at a time.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.msgs.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Default for RecvBatch {
    /// An empty batch (no slots, no allocation): what stands in while the real one is lent out.
    fn default() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([]),
            addrs: Box::new([]),
            _iovs: Box::new([]),
            msgs: Box::new([]),
            len: 0,
        }
    }
}

impl RecvBatch {
    /// A batch of [`BATCH`] slots of [`SLOT_BYTES`].
    pub fn new() -> RecvBatch {
        let mut bufs = vec![0u8; BATCH * SLOT_BYTES].into_boxed_slice();
        // SAFETY: sockaddr_storage and mmsghdr are plain data; all zeros is a valid value.
        let mut addrs: Box<[libc::sockaddr_storage]> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = bufs
            .chunks_exact_mut(SLOT_BYTES)
            .map(|slot| libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT_BYTES,
            })
            .collect();
        let msgs: Box<[libc::mmsghdr]> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: as above.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        RecvBatch {
            bufs,
            addrs,
            _iovs: iovs,
            msgs,
            len: 0,
        }
    }

    /// Datagrams one call takes at most.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Takes the datagrams waiting on `fd` without blocking, at most [`RecvBatch::capacity`]:
    /// how many came. An empty socket is `WouldBlock`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.len = 0;
        for m in self.msgs.iter_mut() {
            // The kernel writes the lengths back: reset them for this call.
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        let vlen = libc::c_uint::try_from(self.msgs.len()).unwrap_or(0);
        // SAFETY: every header points into this batch's buffers and addresses, valid for the
        // lengths they state, and nothing else touches them during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = n as usize;
        Ok(self.len)
    }

    /// Datagram `i` of the last call and its sender; `None` for one that did not fit its slot
    /// (truncated) or came from an address that is not IPv4 or IPv6.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.len {
            return None;
        }
        let m = &self.msgs[i];
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into the storage;
        // `SockAddrStorage` is `sockaddr_storage` (repr(transparent)).
        let addr = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.addrs[i];
            socket2::SockAddr::new(storage, m.msg_hdr.msg_namelen)
        };
        let from = addr.as_socket()?;
        let start = i * SLOT_BYTES;
        let len = (m.msg_len as usize).min(SLOT_BYTES);
        Some((&self.bufs[start..start + len], from))
    }
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, os::fd::AsRawFd as _};

    use super::*;

    #[test]
    fn takes_what_waits_and_says_when_the_socket_is_empty() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new();
        let err = batch.recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        a.send_to(b"\x00\x04\x00\x01", to).unwrap();
        b.send_to(b"\x00\x04\x00\x02", to).unwrap();
        // Longer than a slot: truncated, so not handed on.
        a.send_to(&vec![7u8; SLOT_BYTES + 1], to).unwrap();
        a.send_to(b"last", to).unwrap();
        // Loopback delivers at send time; all four wait in the socket.
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 4);
        assert_eq!(
            batch.datagram(0),
            Some((&b"\x00\x04\x00\x01"[..], a.local_addr().unwrap()))
        );
        assert_eq!(
            batch.datagram(1),
            Some((&b"\x00\x04\x00\x02"[..], b.local_addr().unwrap()))
        );
        assert_eq!(batch.datagram(2), None);
        assert_eq!(
            batch.datagram(3),
            Some((&b"last"[..], a.local_addr().unwrap()))
        );
        assert_eq!(batch.datagram(4), None);
        assert!(batch.recv(server.as_raw_fd()).is_err());

        // More than a batch: the first call takes a full batch, the next the rest.
        for i in 0..BATCH + 3 {
            a.send_to(&[i as u8], to).unwrap();
        }
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), BATCH);
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 3);
        assert_eq!(batch.datagram(2).unwrap().0, [(BATCH + 2) as u8]);
        // The stand-in batch takes nothing.
        assert_eq!(RecvBatch::default().capacity(), 0);
    }
}
