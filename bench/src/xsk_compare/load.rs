//! The client half of `xsk-compare`: UDP datagrams at a fixed rate from the client namespace
//! to the server's steered port (sendmmsg on a connected socket), and a second thread that
//! counts the answers (recvmmsg). Both threads time their own CPU.

use std::{
    io,
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::server::enter_netns;

/// Datagrams per sendmmsg/recvmmsg call at most.
const BATCH: usize = 64;
/// Socket buffers: a burst of answers must not be lost in the client's own socket.
const SOCKET_BUFFER: libc::c_int = 32 << 20;

/// One offered load and what came of it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(super) struct Offered {
    /// Datagrams sent.
    pub sent: u64,
    /// Answers received (with the payload's length).
    pub answered: u64,
    /// Seconds of sending.
    pub secs: f64,
    /// CPU seconds of the sending and the receiving thread.
    pub generator_cpu: f64,
}

/// CPU seconds of the calling thread so far.
fn thread_cpu() -> f64 {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a live rusage for the kernel to write.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn set_buffer(socket: &UdpSocket, option: libc::c_int) {
    let size = SOCKET_BUFFER;
    // SAFETY: setsockopt with a live c_int of the size passed; a refusal leaves the default.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Sends `rate` datagrams/s of `payload` bytes for `secs` from `from` (in namespace `netns`) to
/// `to`, and counts the answers until `drain` after the last one sent.
pub(super) fn offer(
    netns: &str,
    from: SocketAddrV4,
    to: SocketAddrV4,
    rate: u32,
    secs: f64,
    payload: usize,
    drain: Duration,
) -> anyhow::Result<Offered> {
    let netns = netns.to_owned();
    let sender = std::thread::Builder::new().name("xsk-load".into()).spawn(
        move || -> anyhow::Result<Offered> {
            enter_netns(&netns)?;
            let socket = UdpSocket::bind(from).context("binding the client socket")?;
            socket.connect(to)?;
            set_buffer(&socket, libc::SO_RCVBUFFORCE);
            set_buffer(&socket, libc::SO_SNDBUFFORCE);
            let reader = socket.try_clone()?;
            let stop = Arc::new(AtomicBool::new(false));
            let stop_reader = Arc::clone(&stop);
            let receiver = std::thread::Builder::new()
                .name("xsk-answers".into())
                .spawn(move || count_answers(&reader, payload, &stop_reader))?;
            let sent = send_at_rate(&socket, rate, secs, payload);
            std::thread::sleep(drain);
            stop.store(true, Ordering::Relaxed);
            let (answered, receiver_cpu) = receiver
                .join()
                .map_err(|_| anyhow::anyhow!("the answer counter panicked"))?;
            let (sent, secs, sender_cpu) = sent?;
            Ok(Offered {
                sent,
                answered,
                secs,
                generator_cpu: sender_cpu + receiver_cpu,
            })
        },
    )?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

/// Sends at `rate`/s for `secs`: each turn sends what is due (at most [`BATCH`]), sleeping
/// 100 µs when nothing is. Returns (sent, seconds, CPU seconds).
fn send_at_rate(
    socket: &UdpSocket,
    rate: u32,
    secs: f64,
    payload: usize,
) -> anyhow::Result<(u64, f64, f64)> {
    let cpu0 = thread_cpu();
    let mut bufs = vec![vec![0u8; payload.max(8)]; BATCH];
    let started = Instant::now();
    let total = (f64::from(rate) * secs) as u64;
    let mut sent = 0u64;
    // Bounded: the time limit ends it whatever the socket does.
    let limit = Duration::from_secs_f64(secs);
    while sent < total {
        let elapsed = started.elapsed();
        if elapsed >= limit {
            break;
        }
        let due = ((f64::from(rate) * elapsed.as_secs_f64()) as u64).min(total);
        let n = (due.saturating_sub(sent) as usize).min(BATCH);
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for (i, b) in bufs.iter_mut().take(n).enumerate() {
            b[..8].copy_from_slice(&(sent + i as u64).to_be_bytes());
        }
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .take(n)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: payload,
            })
            .collect();
        // SAFETY: all-zero mmsghdr are valid (no name, no control); iov set below.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = std::ptr::from_mut(v);
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` point at live iovecs and buffers for the call's duration.
        let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if rc > 0 {
            sent += rc as u64;
        } else {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {
                    std::thread::sleep(Duration::from_micros(100));
                }
                _ => return Err(e).context("sendmmsg"),
            }
        }
    }
    Ok((sent, started.elapsed().as_secs_f64(), thread_cpu() - cpu0))
}

/// Counts answers of `payload` bytes until `stop`. Returns (answers, CPU seconds).
fn count_answers(socket: &UdpSocket, payload: usize, stop: &AtomicBool) -> (u64, f64) {
    let cpu0 = thread_cpu();
    let mut bufs = vec![vec![0u8; 2048]; BATCH];
    let mut answered = 0u64;
    let mut fds = [libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // Bounded by the stop flag, which the sender sets after its bounded run and the drain.
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one live pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 10) };
        loop {
            let mut iov: Vec<libc::iovec> = bufs
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: all-zero mmsghdr are valid; iov set below.
            let mut msgs: Vec<libc::mmsghdr> =
                (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                m.msg_hdr.msg_iov = std::ptr::from_mut(v);
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs` point at live iovecs and buffers for the call's duration.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc <= 0 {
                break;
            }
            answered += msgs[..rc as usize]
                .iter()
                .filter(|m| m.msg_len as usize == payload)
                .count() as u64;
        }
    }
    (answered, thread_cpu() - cpu0)
}
