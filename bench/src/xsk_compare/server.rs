//! The server half of `xsk-compare`: one AF_XDP socket on queue 0 of the server's veth end,
//! fed by the daemon's own XDP program (TFTP-transfer steering to the XSKS map), answering
//! every datagram with a frame that echoes its payload. The same loop drives either binding:
//! ours (`pxe_daemon::afxdp`) or xdpilone's; only the ring work differs.

use std::{
    io::{self, Write as _},
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    ptr::NonNull,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use pxe_daemon::{
    afxdp::{
        frame::{self, Sender, UdpChecksum, REPLY_HEADER_BYTES},
        socket::{self, TxMetadata, XskSocket, RX_BATCH},
        umem::Mmap,
        BindMode,
    },
    datapath::{Datagram, Route},
    xdp::{program_config, AttachPolicy, XdpAttachment},
};
use serde::Serialize;

use super::{Binding, PORT, SERVER_IP};

/// Frames, frame size and ring entries: the daemon's (`afxdp::socket`), for both bindings.
const FRAME_BYTES: u32 = socket::FRAME_BYTES;
const FRAMES: u32 = socket::FRAMES_PER_SOCKET;
const RX_FRAMES: u32 = socket::RX_FRAMES;
const RING_ENTRIES: u32 = socket::RING_ENTRIES;
/// Longest `poll` without a frame (the daemon's `IDLE_POLL`).
const IDLE_POLL_MS: libc::c_int = 50;
/// Longest a server runs, whatever its parent does.
const MAX_SERVE: Duration = Duration::from_secs(900);
/// Most `sendto` calls per kick (the daemon's `KICKS_PER_FLUSH`).
const KICKS_PER_FLUSH: usize = RING_ENTRIES as usize / 32 + 1;

/// What the server says once its socket is bound and steered to (one JSON line after `ready `).
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct Ready {
    /// The binding.
    pub binding: String,
    /// The zero-copy bind's error, when it was refused (copy mode was used then).
    pub zero_copy_error: Option<String>,
    /// Bound in zero-copy mode.
    pub zero_copy: bool,
    /// TX metadata registered with the UMEM (device checksums possible).
    pub tx_metadata: bool,
}

/// What the server counted, printed as one JSON line after `done ` when it stops.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct Done {
    /// Frames taken from the RX ring.
    pub received: u64,
    /// Answers put on the TX ring.
    pub answered: u64,
    /// Frames not answered: no TX frame or ring slot.
    pub tx_full: u64,
    /// Frames that were not IPv4/UDP (or a descriptor outside the RX frames).
    pub bad: u64,
    /// Wake-ups of the loop (`poll` returns).
    pub polls: u64,
    /// The socket's XDP_STATISTICS: rx_dropped, rx_invalid_descs, tx_invalid_descs,
    /// rx_ring_full, rx_fill_ring_empty_descs, tx_ring_empty_descs.
    pub xdp_statistics: [u64; 6],
}

/// One answered batch.
#[derive(Debug, Default)]
struct Counts {
    taken: usize,
    answered: u64,
    tx_full: u64,
    bad: u64,
}

/// The ring work a binding does; the loop around it is the same for both.
trait Xsk {
    fn fd(&self) -> RawFd;
    /// Takes back sent frames, takes up to [`RX_BATCH`] received frames and answers each.
    fn serve_batch(&mut self, counts: &mut Counts);
    /// Tells the kernel to send what the batch put on the TX ring.
    fn kick(&mut self);
}

/// Writes the answer to `d` (received on `own_mac`) into `buf`: its payload echoed, from the
/// port it was sent to, back to where it came from. Returns the frame's length.
fn echo(own_mac: [u8; 6], d: &Datagram<'_>, buf: &mut [u8], checksum: UdpChecksum) -> usize {
    let len = d
        .payload
        .len()
        .min(buf.len().saturating_sub(REPLY_HEADER_BYTES));
    buf[REPLY_HEADER_BYTES..REPLY_HEADER_BYTES + len].copy_from_slice(&d.payload[..len]);
    let sender = Sender {
        mac: own_mac.into(),
        ip: *d.dst.ip(),
    };
    let route = Route {
        mac: d.src_mac,
        to: d.src,
        from_port: d.dst.port(),
    };
    frame::write_headers(buf, sender, route, len, checksum)
}

/// The received frame's destination MAC (ours).
fn dst_mac(bytes: &[u8]) -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Some(b) = bytes.get(..6) {
        mac.copy_from_slice(b);
    }
    mac
}

// --- ours ---

/// Our binding, used as the daemon's worker uses it.
struct Ours {
    socket: XskSocket,
    /// Leave UDP checksums to the device through TX metadata, as the daemon's TFTP frames do
    /// (where the socket registered it; else computed in full).
    device_checksum: bool,
}

impl Xsk for Ours {
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn serve_batch(&mut self, counts: &mut Counts) {
        let XskSocket { rx, tx, .. } = &mut self.socket;
        let (checksum, request) = tx.udp_checksum(self.device_checksum);
        tx.reclaim();
        counts.taken = rx.receive(|bytes| {
            let Some(bytes) = bytes else {
                counts.bad += 1;
                return;
            };
            let Ok(d) = frame::parse(bytes) else {
                counts.bad += 1;
                return;
            };
            let own = dst_mac(bytes);
            let mut sent = tx.send(request, |buf| echo(own, &d, buf, checksum));
            if !sent {
                // As the daemon's FrameTx: send what waits, take sent frames back, once more.
                tx.kick();
                tx.reclaim();
                sent = tx.send(request, |buf| echo(own, &d, buf, checksum));
            }
            if sent {
                counts.answered += 1;
            } else {
                counts.tx_full += 1;
            }
        });
    }

    fn kick(&mut self) {
        self.socket.tx.kick();
    }
}

// --- xdpilone ---

/// xdpilone's binding: one socket owning the UMEM, its fill/completion rings and its RX/TX
/// rings, the UMEM split as ours (first half receiving, second half sending). Field order is
/// drop order: rings, socket, UMEM registration, then the memory.
struct Pilone {
    rx: xdpilone::RingRx,
    tx: xdpilone::RingTx,
    device: xdpilone::DeviceQueue,
    _user: xdpilone::User,
    umem: xdpilone::Umem,
    free: Vec<u64>,
    unkicked: u32,
    _area: Mmap,
}

fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

impl Pilone {
    fn open(ifindex: u32, queue: u32, zero_copy: bool) -> io::Result<Pilone> {
        let area = Mmap::anonymous((FRAMES * FRAME_BYTES) as usize)?;
        let mem = NonNull::slice_from_raw_parts(area.ptr(), area.bytes());
        let config = xdpilone::UmemConfig {
            fill_size: RING_ENTRIES,
            complete_size: RING_ENTRIES,
            frame_size: FRAME_BYTES,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: a fresh page-aligned anonymous mapping of the stated length, which `Pilone`
        // keeps (dropped last).
        let umem = unsafe { xdpilone::Umem::new(config, mem) }.map_err(errno)?;
        let mut info = xdpilone::IfInfo::invalid();
        info.from_ifindex(ifindex).map_err(errno)?;
        info.set_queue(queue);
        let sock = xdpilone::Socket::with_shared(&info, &umem).map_err(errno)?;
        let mut device = umem.fq_cq(&sock).map_err(errno)?;
        let mode = if zero_copy {
            xdpilone::SocketConfig::XDP_BIND_ZEROCOPY
        } else {
            xdpilone::SocketConfig::XDP_BIND_COPY
        };
        let user = umem
            .rx_tx(
                &sock,
                &xdpilone::SocketConfig {
                    rx_size: NonZeroU32::new(RING_ENTRIES),
                    tx_size: NonZeroU32::new(RING_ENTRIES),
                    bind_flags: xdpilone::SocketConfig::XDP_BIND_NEED_WAKEUP | mode,
                },
            )
            .map_err(errno)?;
        let rx = user.map_rx().map_err(errno)?;
        let tx = user.map_tx().map_err(errno)?;
        {
            let mut fill = device.fill(RX_FRAMES);
            fill.insert((0..RX_FRAMES).map(|i| u64::from(i) * u64::from(FRAME_BYTES)));
            fill.commit();
        }
        umem.bind(&user).map_err(errno)?;
        let free = (RX_FRAMES..FRAMES)
            .map(|i| u64::from(i) * u64::from(FRAME_BYTES))
            .collect();
        Ok(Pilone {
            rx,
            tx,
            device,
            _user: user,
            umem,
            free,
            unkicked: 0,
            _area: area,
        })
    }
}

/// Takes back the frames the kernel has sent.
fn pilone_reclaim(device: &mut xdpilone::DeviceQueue, free: &mut Vec<u64>) {
    let mut done = device.complete(RING_ENTRIES);
    while let Some(addr) = done.read() {
        free.push(addr - addr % u64::from(FRAME_BYTES));
    }
    done.release();
}

/// Puts `descs` on the TX ring; returns how many went. xdpilone's `transmit(n)` reserves what
/// its cached view of the kernel's consumer index shows free, refreshing that view only when
/// it shows no room at all: a batch may be given fewer slots than the ring has, so a second
/// reservation (which then refreshes) takes the rest.
fn pilone_transmit(tx: &mut xdpilone::RingTx, descs: &[xdpilone::xdp::XdpDesc]) -> usize {
    let mut put = 0;
    for _ in 0..2 {
        if put == descs.len() {
            break;
        }
        let mut w = tx.transmit((descs.len() - put) as u32);
        put += w.insert(descs[put..].iter().copied()) as usize;
        w.commit();
    }
    put
}

/// Gives `addrs` back to the fill ring; returns how many went (see [`pilone_transmit`]: the
/// same holds for `fill(n)`, and a frame not given back would be lost to receiving for good).
fn pilone_fill(device: &mut xdpilone::DeviceQueue, addrs: &[u64]) -> usize {
    let mut put = 0;
    for _ in 0..2 {
        if put == addrs.len() {
            break;
        }
        let mut fill = device.fill((addrs.len() - put) as u32);
        put += fill.insert(addrs[put..].iter().copied()) as usize;
        fill.commit();
    }
    put
}

/// The bytes of a received descriptor, if inside one frame of the receiving half.
fn pilone_bytes<'a>(umem: &'a xdpilone::Umem, desc: &xdpilone::xdp::XdpDesc) -> Option<&'a [u8]> {
    let frame = u64::from(FRAME_BYTES);
    let index = u32::try_from(desc.addr / frame).ok()?;
    let offset = (desc.addr % frame) as usize;
    if index >= RX_FRAMES || offset + desc.len as usize > FRAME_BYTES as usize {
        return None;
    }
    let chunk = umem.frame(xdpilone::BufIdx(index))?;
    // SAFETY: inside the chunk (checked above); the kernel handed this frame to us on the RX
    // ring and does not write it until it is back in the fill ring, after this borrow.
    Some(unsafe {
        std::slice::from_raw_parts(
            chunk.addr.as_ptr().cast::<u8>().add(offset),
            desc.len as usize,
        )
    })
}

impl Xsk for Pilone {
    fn fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }

    fn serve_batch(&mut self, counts: &mut Counts) {
        let Pilone {
            rx,
            tx,
            device,
            umem,
            free,
            unkicked,
            ..
        } = self;
        pilone_reclaim(device, free);
        let mut refill = [0u64; RX_BATCH];
        let mut out = [xdpilone::xdp::XdpDesc::default(); RX_BATCH];
        let mut n_out = 0;
        let mut taken = 0;
        {
            let mut received = rx.receive(RX_BATCH as u32);
            while let Some(desc) = received.read() {
                refill[taken] = desc.addr - desc.addr % u64::from(FRAME_BYTES);
                taken += 1;
                let Some(bytes) = pilone_bytes(umem, &desc) else {
                    counts.bad += 1;
                    continue;
                };
                let Ok(d) = frame::parse(bytes) else {
                    counts.bad += 1;
                    continue;
                };
                if free.is_empty() {
                    pilone_reclaim(device, free);
                }
                let Some(start) = free.pop() else {
                    counts.tx_full += 1;
                    continue;
                };
                let Some(chunk) =
                    umem.frame(xdpilone::BufIdx((start / u64::from(FRAME_BYTES)) as u32))
                else {
                    counts.bad += 1;
                    continue;
                };
                // SAFETY: a whole TX frame of the UMEM that is on our free list: the kernel
                // neither reads nor writes it until we put it on the TX ring below.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(
                        chunk.addr.as_ptr().cast::<u8>(),
                        FRAME_BYTES as usize,
                    )
                };
                // No TX metadata in xdpilone: the checksum is always computed here.
                let len = echo(dst_mac(bytes), &d, buf, UdpChecksum::Full);
                out[n_out] = chunk.as_xdp_with_len(len as u32);
                n_out += 1;
            }
            received.release();
        }
        counts.taken = taken;
        if n_out > 0 {
            let put = pilone_transmit(tx, &out[..n_out]);
            for d in &out[put..n_out] {
                free.push(d.addr);
            }
            counts.answered += put as u64;
            counts.tx_full += (n_out - put) as u64;
            *unkicked += put as u32;
        }
        if taken > 0 {
            // Room is certain (every RX frame fits in the fill ring at once), but see
            // `pilone_fill`.
            let put = pilone_fill(device, &refill[..taken]);
            debug_assert_eq!(put, taken, "fill ring refused frames");
        }
    }

    fn kick(&mut self) {
        if std::mem::take(&mut self.unkicked) == 0 || !self.tx.needs_wakeup() {
            return;
        }
        // As ours: copy mode sends 32 frames per call; call again while frames wait, bounded.
        for _ in 0..KICKS_PER_FLUSH {
            self.tx.wake();
            if self.tx.pending() == 0 {
                break;
            }
        }
    }
}

// --- the loop ---

/// Joins the network namespace `/run/netns/<name>` (the calling thread).
pub(crate) fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns(2) on an fd we hold open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

fn open(
    binding: Binding,
    ifindex: u32,
    interface: &str,
    device_checksum: bool,
) -> anyhow::Result<(Box<dyn Xsk>, Ready)> {
    // Zero-copy first, then copy mode, as `xdp.bind = auto` does.
    let mut zero_copy_error = None;
    for zero_copy in [true, false] {
        let opened: io::Result<(Box<dyn Xsk>, bool)> = match binding {
            Binding::Ours => {
                let bind = if zero_copy {
                    BindMode::Zerocopy
                } else {
                    BindMode::Copy
                };
                XskSocket::open(interface, ifindex, 0, bind, TxMetadata::Wanted)
                    .map(|s| {
                        let metadata = s.tx.checksum_offload();
                        let ours = Ours {
                            socket: s,
                            device_checksum,
                        };
                        (Box::new(ours) as Box<dyn Xsk>, metadata)
                    })
                    .map_err(|e| e.source)
            }
            Binding::Xdpilone => {
                Pilone::open(ifindex, 0, zero_copy).map(|p| (Box::new(p) as Box<dyn Xsk>, false))
            }
        };
        match opened {
            Ok((xsk, tx_metadata)) => {
                let ready = Ready {
                    binding: binding.label().to_owned(),
                    zero_copy_error,
                    zero_copy,
                    tx_metadata,
                };
                return Ok((xsk, ready));
            }
            Err(e) if zero_copy => zero_copy_error = Some(e.to_string()),
            Err(e) => {
                return Err(e).with_context(|| format!("{}: copy-mode bind", binding.label()))
            }
        }
    }
    bail!("no bind mode left")
}

fn statistics(fd: RawFd) -> [u64; 6] {
    let mut stats = [0u64; 6];
    let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `stats`.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut len,
        )
    };
    stats
}

/// CPU seconds of this process so far, (user, system), to the microsecond.
fn process_cpu() -> (f64, f64) {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a live rusage for the kernel to write.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Runs a server until its standard input closes (or [`MAX_SERVE`]).
pub(crate) fn serve(
    binding: Binding,
    netns: &str,
    interface: &str,
    coalesce: Duration,
    device_checksum: bool,
) -> anyhow::Result<()> {
    enter_netns(netns)?;
    // The XDP program's log reader wants a runtime (never driven here: the log is off).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let config = program_config(&(PORT..=PORT), Some(SERVER_IP), false, 0, 0);
    let mut xdp = XdpAttachment::load(interface, AttachPolicy::Driver, config, false)?
        .context("the XDP program did not attach")?;
    let name = std::ffi::CString::new(interface)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {interface}");
    }
    let (mut xsk, ready) = open(binding, ifindex, interface, device_checksum)?;
    xdp.register_socket(0, xsk.fd())?;
    xdp.set_steering(pxe_common::XDP_FLAG_STEER_TFTP)?;
    let mut stdout = io::stdout();
    writeln!(stdout, "ready {}", serde_json::to_string(&ready)?)?;
    stdout.flush()?;

    let mut done = Done::default();
    let mut fds = [
        libc::pollfd {
            fd: xsk.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let started = Instant::now();
    let (mut busy, mut coalescing) = (false, false);
    while started.elapsed() < MAX_SERVE {
        // The daemon's worker: after a round that found frames (not a full batch), wait a
        // little so that a steady stream is taken several frames per wake-up.
        if coalescing && !busy && !coalesce.is_zero() {
            std::thread::sleep(coalesce);
        }
        for p in &mut fds {
            p.revents = 0;
        }
        let timeout = if busy { 0 } else { IDLE_POLL_MS };
        // SAFETY: a live array of pollfd of the length passed.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        done.polls += 1;
        if fds[1].revents != 0 {
            // A line on stdin asks for our CPU time; end of file (or an error) stops us.
            let mut buf = [0u8; 64];
            // SAFETY: reads into a live buffer of the length passed; poll said it won't block.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            for _ in buf[..n as usize].iter().filter(|&&b| b == b'\n') {
                let (user, system) = process_cpu();
                writeln!(stdout, "cpu {user:.6} {system:.6}")?;
            }
            stdout.flush()?;
        }
        let mut counts = Counts::default();
        xsk.serve_batch(&mut counts);
        xsk.kick();
        busy = counts.taken == RX_BATCH;
        coalescing = counts.taken > 0;
        done.received += counts.taken as u64;
        done.answered += counts.answered;
        done.tx_full += counts.tx_full;
        done.bad += counts.bad;
    }
    done.xdp_statistics = statistics(xsk.fd());
    let _ = xdp.set_steering(0);
    let _ = xdp.unregister_socket(0);
    drop(xsk);
    writeln!(stdout, "done {}", serde_json::to_string(&done)?)?;
    stdout.flush()?;
    Ok(())
}
