//! The load generator's datapath: per thread, one epoll set and its share of the clients
//! (`--threads`: one thread saturates a core before a fast server does), one non-blocking
//! UDP socket per client (a fresh one, so a fresh source port, for each transfer, as
//! firmware does), read with `recvmmsg` so that a window costs one call. Timeouts are found
//! by a scan every [`TIMER_TICK`]; every loop is bounded by the run's time limit.

use std::{
    collections::BTreeMap,
    io::{self, IoSliceMut},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::{AsRawFd as _, RawFd},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        epoll::{self, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
        socket::{recvmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders, SockaddrStorage},
    },
};

use super::{
    client::{Counters, Expected, Failure, Params, Send, Step, Transfer},
    wire,
};

/// How often deadlines are checked: the granularity of the clients' timeouts.
const TIMER_TICK: Duration = Duration::from_millis(10);
/// Datagrams read by one `recvmmsg`.
const RECV_BATCH: usize = 16;
/// Buffer per datagram: the largest UDP payload fits.
const RECV_BUF_BYTES: usize = 65_536;
/// `recvmmsg` calls per readable socket before the others get their turn.
const READS_PER_EVENT: usize = 4;
/// Events taken from epoll at once.
const EPOLL_EVENTS: usize = 1024;
/// Receive buffer each client socket asks for (a window of datagrams must fit).
const CLIENT_RCVBUF_BYTES: usize = 1 << 20;

/// What the run asks for.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The server's request address (port 69).
    pub server: SocketAddr,
    /// Address the client sockets bind (port 0).
    pub bind: IpAddr,
    /// The read request, built once.
    pub rrq: Vec<u8>,
    /// Concurrent clients.
    pub clients: usize,
    /// Threads the clients are shared among (at least 1).
    pub threads: usize,
    /// Transfers per client (`None`: until `stop_starting`).
    pub rounds: Option<u32>,
    /// No transfer starts after this long.
    pub stop_starting_after: Option<Duration>,
    /// Hard limit of the run: what still runs then fails with `deadline`.
    pub max_duration: Duration,
    /// Per-transfer behaviour.
    pub params: Params,
    /// What the file should be.
    pub expected: Expected,
}

/// What the run measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Transfers started.
    pub started: u64,
    /// Transfers completed with the right length (and bytes, where compared).
    pub completed: u64,
    /// Completed transfers whose every byte was compared with the file.
    pub verified: u64,
    /// File bytes of completed transfers.
    pub bytes: u64,
    /// Duration of each completed transfer, request to last block.
    pub durations: Vec<Duration>,
    /// Failed transfers by reason: count and the first message.
    pub failures: BTreeMap<&'static str, (u64, String)>,
    /// (blksize, windowsize) in force, per completed transfer.
    pub negotiated: BTreeMap<(usize, u16), u64>,
    /// What all transfers saw.
    pub counters: Counters,
    /// First request to last transfer's end.
    pub wall: Duration,
    /// User and system CPU time of this process during the run.
    pub cpu_user: Duration,
    /// System CPU time.
    pub cpu_sys: Duration,
}

impl Outcome {
    /// Failed transfers, all reasons.
    pub(crate) fn failed(&self) -> u64 {
        self.failures.values().map(|(n, _)| n).sum()
    }

    fn fail(&mut self, failure: &Failure) {
        let entry = self
            .failures
            .entry(failure.label())
            .or_insert_with(|| (0, failure.to_string()));
        entry.0 += 1;
    }

    fn add_counters(&mut self, c: Counters) {
        let sum = &mut self.counters;
        sum.retransmits += c.retransmits;
        sum.gap_acks += c.gap_acks;
        sum.duplicates += c.duplicates;
        sum.stray += c.stray;
        sum.malformed += c.malformed;
    }
}

/// One client: at most one transfer (and socket) at a time.
#[derive(Debug, Default)]
struct Client {
    socket: Option<UdpSocket>,
    connected: bool,
    transfer: Option<Transfer>,
    started: Option<Instant>,
    rounds_done: u32,
    /// Gave up starting transfers (its socket could not be made).
    stopped: bool,
}

/// Runs the plan to its end (every client's rounds done, or the time limits), the clients
/// shared among `plan.threads` threads that start together.
pub(crate) fn run(plan: &Plan) -> io::Result<Outcome> {
    raise_fd_limit();
    let cpu_before = cpu_times();
    let threads = plan.threads.clamp(1, plan.clients.max(1));
    let t0 = Instant::now();
    let share = |i: usize| plan.clients / threads + usize::from(i < plan.clients % threads);
    let shards: Vec<io::Result<(Outcome, Option<Instant>)>> = if threads == 1 {
        vec![run_shard(plan, plan.clients, t0)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| scope.spawn(move || run_shard(plan, share(i), t0)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a generator thread panicked")))
                })
                .collect()
        })
    };
    let mut outcome = Outcome::default();
    let mut last_end: Option<Instant> = None;
    for shard in shards {
        let (part, end) = shard?;
        last_end = last_end.max(end);
        outcome.started += part.started;
        outcome.completed += part.completed;
        outcome.verified += part.verified;
        outcome.bytes += part.bytes;
        outcome.durations.extend(part.durations);
        for (reason, (n, first)) in part.failures {
            outcome.failures.entry(reason).or_insert((0, first)).0 += n;
        }
        for (key, n) in part.negotiated {
            *outcome.negotiated.entry(key).or_default() += n;
        }
        outcome.add_counters(part.counters);
    }
    let (user, sys) = cpu_times();
    outcome.cpu_user = user.saturating_sub(cpu_before.0);
    outcome.cpu_sys = sys.saturating_sub(cpu_before.1);
    outcome.wall = last_end.unwrap_or(t0).saturating_duration_since(t0);
    Ok(outcome)
}

/// One thread's share: `clients` clients from `t0`; returns what they measured and when the
/// last transfer ended.
fn run_shard(plan: &Plan, clients: usize, t0: Instant) -> io::Result<(Outcome, Option<Instant>)> {
    let epoll = Epoll::new()?;
    let mut load = Load {
        plan,
        epoll,
        clients: (0..clients).map(|_| Client::default()).collect(),
        active: 0,
        outcome: Outcome::default(),
        t0,
        last_end: None,
    };
    let mut batch = RecvBatch::new();
    let mut events = vec![EpollEvent::empty(); EPOLL_EVENTS];
    for index in 0..clients {
        load.start(index, t0);
    }
    let hard_deadline = t0 + plan.max_duration;
    let mut next_scan = t0 + TIMER_TICK;
    while load.active > 0 {
        let now = Instant::now();
        if now >= hard_deadline {
            load.fail_all(now);
            break;
        }
        let wait = next_scan.min(hard_deadline).saturating_duration_since(now);
        let ready = load.epoll.wait(&mut events, wait)?;
        for event in &events[..ready] {
            let index = event.data() as usize;
            load.readable(index, &mut batch);
        }
        let now = Instant::now();
        if now >= next_scan {
            load.scan_timeouts(now);
            next_scan = now + TIMER_TICK;
        }
    }
    Ok((load.outcome, load.last_end))
}

struct Load<'a> {
    plan: &'a Plan,
    epoll: Epoll,
    clients: Vec<Client>,
    active: usize,
    outcome: Outcome,
    t0: Instant,
    last_end: Option<Instant>,
}

impl Load<'_> {
    /// Starts client `index`'s next transfer if it has one: a fresh socket, the request.
    fn start(&mut self, index: usize, now: Instant) {
        let plan = self.plan;
        let client = &mut self.clients[index];
        let more_rounds = plan.rounds.is_none_or(|r| client.rounds_done < r);
        let in_time = plan.stop_starting_after.is_none_or(|d| now < self.t0 + d);
        if client.stopped || !more_rounds || !in_time {
            return;
        }
        let socket = match open_socket(plan.bind, &self.epoll, index) {
            Ok(socket) => socket,
            Err(e) => {
                client.stopped = true;
                self.outcome.started += 1;
                self.outcome
                    .fail(&Failure::Socket(format!("opening a client socket: {e}")));
                return;
            }
        };
        // The first transfer of each client compares every byte with the file.
        let verify = client.rounds_done == 0 && plan.expected.content.is_some();
        self.outcome.started += 1;
        if let Err(e) = socket.send_to(&plan.rrq, plan.server) {
            // Not retried: a client that cannot send stops (and nothing recurses).
            client.stopped = true;
            self.outcome
                .fail(&Failure::Socket(format!("sending the read request: {e}")));
            return;
        }
        client.transfer = Some(Transfer::start(plan.params, verify, now));
        client.socket = Some(socket);
        client.connected = false;
        client.started = Some(now);
        self.active += 1;
    }

    /// Carries out what a transfer asked for; ends it and starts the next if it is over.
    fn apply(&mut self, index: usize, mut step: Step, now: Instant) {
        let plan = self.plan;
        let client = &mut self.clients[index];
        let Some(transfer) = client.transfer.as_mut() else {
            return;
        };
        if step.learned_tid {
            if let (Some(tid), Some(socket)) = (transfer.tid(), &client.socket) {
                // Connected, the kernel drops strays and the route is looked up once.
                client.connected = socket.connect(tid).is_ok();
            }
        }
        if let Some(what) = step.send {
            if let Err(e) = send(client, what, plan) {
                // A full buffer loses the datagram like the network would: the timeout
                // resends it. Anything else ends the transfer.
                let transient = matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS));
                if !transient && step.end.is_none() {
                    let transfer = client.transfer.as_mut().expect("checked above");
                    step = transfer.fail(Failure::Socket(format!("sending: {e}")));
                }
            }
        }
        if let Some(end) = step.end {
            self.finish(index, end, now);
            self.start(index, now);
        }
    }

    fn finish(&mut self, index: usize, end: Result<u64, Failure>, now: Instant) {
        let client = &mut self.clients[index];
        let Some(transfer) = client.transfer.take() else {
            return;
        };
        // Closing the socket also removes it from the epoll set.
        client.socket = None;
        client.rounds_done += 1;
        self.active -= 1;
        self.last_end = Some(now);
        let out = &mut self.outcome;
        out.add_counters(transfer.counters());
        match end {
            Ok(len) => {
                out.completed += 1;
                out.bytes += len;
                if client.rounds_done == 1 && self.plan.expected.content.is_some() {
                    out.verified += 1;
                }
                let started = client.started.unwrap_or(now);
                out.durations.push(now.saturating_duration_since(started));
                *out.negotiated.entry(transfer.negotiated()).or_default() += 1;
            }
            Err(failure) => out.fail(&failure),
        }
    }

    /// Reads what client `index`'s socket holds (bounded), feeding its transfer.
    fn readable(&mut self, index: usize, batch: &mut RecvBatch) {
        for _ in 0..READS_PER_EVENT {
            let Some(fd) = self.clients[index].socket.as_ref().map(|s| s.as_raw_fd()) else {
                return;
            };
            let count = match batch.recv(fd) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let failure = if e.kind() == io::ErrorKind::ConnectionRefused {
                        Failure::Socket("ICMP port unreachable from the server".into())
                    } else {
                        Failure::Socket(format!("receiving: {e}"))
                    };
                    if let Some(t) = self.clients[index].transfer.as_mut() {
                        let step = t.fail(failure);
                        self.apply(index, step, Instant::now());
                    }
                    return;
                }
            };
            let now = Instant::now();
            for i in 0..count {
                let (from, bytes) = batch.get(i);
                let Some(transfer) = self.clients[index].transfer.as_mut() else {
                    return;
                };
                let step = transfer.on_datagram(from, bytes, now, &self.plan.expected);
                let ends = step.end.is_some();
                self.apply(index, step, now);
                if ends {
                    // The rest of the batch was for the closed socket.
                    return;
                }
            }
            if count < RECV_BATCH {
                return;
            }
        }
    }

    fn scan_timeouts(&mut self, now: Instant) {
        for index in 0..self.clients.len() {
            let due = self.clients[index]
                .transfer
                .as_ref()
                .is_some_and(|t| t.deadline() <= now);
            if due {
                let transfer = self.clients[index].transfer.as_mut().expect("checked");
                let step = transfer.on_timeout(now);
                self.apply(index, step, now);
            }
        }
    }

    /// The run's time limit: every transfer still running fails, none starts.
    fn fail_all(&mut self, now: Instant) {
        for index in 0..self.clients.len() {
            self.clients[index].stopped = true;
            if let Some(t) = self.clients[index].transfer.as_mut() {
                let step = t.fail(Failure::Deadline);
                self.apply(index, step, now);
            }
        }
    }
}

/// Sends `what` from the client's socket.
fn send(client: &Client, what: Send, plan: &Plan) -> io::Result<()> {
    let socket = client
        .socket
        .as_ref()
        .ok_or_else(|| io::Error::other("no socket"))?;
    let tid = client.transfer.as_ref().and_then(Transfer::tid);
    match what {
        Send::Rrq => socket.send_to(&plan.rrq, plan.server).map(drop),
        Send::Ack(block) => {
            let ack = wire::ack(block);
            match (client.connected, tid) {
                (true, _) => socket.send(&ack).map(drop),
                (false, Some(tid)) => socket.send_to(&ack, tid).map(drop),
                (false, None) => Err(io::Error::other("ACK before the server answered")),
            }
        }
        Send::UnknownTid(to) => {
            // Unconnected only: a connected socket never hears strays.
            socket
                .send_to(&wire::error(5, "unknown transfer ID"), to)
                .map(drop)
        }
    }
}

fn open_socket(bind: IpAddr, epoll: &Epoll, index: usize) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind((bind, 0))?;
    socket.set_nonblocking(true)?;
    set_rcvbuf(&socket, CLIENT_RCVBUF_BYTES);
    epoll.add(&socket, index as u64)?;
    Ok(socket)
}

fn set_rcvbuf(socket: &UdpSocket, bytes: usize) {
    // FORCE needs CAP_NET_ADMIN; the plain one is capped at rmem_max.
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
    }
}

/// Raises the soft limit of open files to the hard one: one socket per client.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// User and system CPU time of this process so far.
fn cpu_times() -> (Duration, Duration) {
    let (user, system, _) = crate::sim::sys::cpu_usage();
    (user, system)
}

/// An epoll set whose events carry a client's index.
struct Epoll(epoll::Epoll);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        Ok(Epoll(epoll::Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?))
    }

    /// Watches `socket` for input, level-triggered.
    fn add(&self, socket: &UdpSocket, token: u64) -> io::Result<()> {
        Ok(self
            .0
            .add(socket, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
    }

    fn wait(&self, events: &mut [EpollEvent], timeout: Duration) -> io::Result<usize> {
        let timeout = EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::MAX);
        match self.0.wait(events, timeout) {
            Ok(n) => Ok(n),
            Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Buffers and headers for one `recvmmsg`, allocated once: a read allocates nothing.
struct RecvBatch {
    bufs: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Sender and length of each datagram of the last read.
    got: [(SocketAddr, usize); RECV_BATCH],
}

impl RecvBatch {
    fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0u8; RECV_BATCH * RECV_BUF_BYTES],
            headers: MultiHeaders::preallocate(RECV_BATCH, None),
            got: [(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), 0); RECV_BATCH],
        }
    }

    /// Reads up to [`RECV_BATCH`] datagrams from `fd` without blocking.
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let RecvBatch { bufs, headers, got } = self;
        let mut chunks = bufs.chunks_exact_mut(RECV_BUF_BYTES);
        let mut iovs: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or(&mut []))]);
        let received = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        let mut count = 0;
        for (slot, msg) in got.iter_mut().zip(received) {
            *slot = (
                msg.address
                    .as_ref()
                    .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), sockaddr),
                msg.bytes.min(RECV_BUF_BYTES),
            );
            count += 1;
        }
        Ok(count)
    }

    /// Sender and bytes of datagram `i` of the last [`RecvBatch::recv`].
    fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let (from, len) = self.got[i];
        let start = i * RECV_BUF_BYTES;
        (from, &self.bufs[start..start + len])
    }
}

/// The address the kernel wrote (unspecified for a family other than IPv4 and IPv6).
fn sockaddr(storage: &SockaddrStorage) -> SocketAddr {
    if let Some(sin) = storage.as_sockaddr_in() {
        SocketAddr::V4(SocketAddrV4::from(*sin))
    } else if let Some(sin6) = storage.as_sockaddr_in6() {
        SocketAddr::V6(SocketAddrV6::from(*sin6))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    }
}
