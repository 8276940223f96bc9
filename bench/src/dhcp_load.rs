//! `pxe-bench dhcp-load`: PXE DHCP at a fixed rate of new exchanges, from as many clients as
//! asked, in raw frames. perfdhcp tops out near 70k answers/s on the project's 2 cores; this
//! generator builds each DISCOVER by patching a MAC and a transaction id into one frame (the
//! rack simulator's BIOS ROM DISCOVER, [`dhcp::encode`] and [`frame::build`]), sends them in
//! batches with sendmmsg(2) on an AF_PACKET socket (qdisc bypassed), and reads the answers in
//! batches with recvmmsg(2) on another thread.
//!
//! Proxy mode counts OFFERs (DISCOVER-OFFER). Full mode answers every OFFER with a REQUEST
//! for the address offered and counts ACKs (DISCOVER-OFFER-REQUEST-ACK). Each exchange is its
//! own client: the MAC is the exchange's number modulo `--clients`, the transaction id holds
//! the exchange's number, so a late or stray answer is never counted twice or for another.
//! Latency is from the send batch of the DISCOVER to the receive batch of the answer counted.
//! Bounded: at most [`MAX_EXCHANGES`] per run, one `u32` per exchange and table.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use serde::Serialize;

use crate::{
    sim::{
        dhcp::{self, msg, Asker, Firmware, Request},
        frame,
        sys::{self, Batch, Interface, PacketSocket},
    },
    tftp::report::quantile,
};

/// Most exchanges one run may start (the transaction id keeps 24 bits for the exchange).
const MAX_EXCHANGES: u64 = 1 << 24;
/// Frames per sendmmsg / recvmmsg.
const BATCH: usize = sys::MAX_BATCH;
/// Longest sleep of the sender between batches.
const PACE_SLEEP_MAX: Duration = Duration::from_micros(500);
/// Receive poll bound, so the receiver sees the end of the run.
const RECV_POLL: Duration = Duration::from_millis(20);
/// Receive buffer per frame (a DHCP reply fits a 1500-byte MTU).
const FRAME_BUF: usize = 2048;
/// First octets of the clients' MACs (locally administered, unicast; the rack simulator's are
/// 02:50).
const MAC_PREFIX: [u8; 2] = [0x02, 0x51];

/// Which exchange is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// DISCOVER-OFFER (a proxy-DHCP server's answer).
    Proxy,
    /// DISCOVER-OFFER-REQUEST-ACK (a full DHCP server's lease).
    Full,
}

/// Flags of `pxe-bench dhcp-load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Interface the servers answer on.
    #[arg(long, short = 'i')]
    interface: String,
    /// Exchange measured.
    #[arg(long, value_enum, default_value = "proxy")]
    mode: Mode,
    /// New exchanges per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2_000_000))]
    rate: u32,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Distinct clients (MACs), used in turn; keep it within a full server's pool.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    clients: u32,
    /// Third octet of the clients' MACs (02:51:SEED:xx:xx:xx).
    #[arg(long, default_value_t = 0)]
    seed: u8,
    /// How long answers are awaited after the last DISCOVER, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    wait_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The DISCOVER frame with the places of its MAC copies and transaction id.
struct Template {
    bytes: Vec<u8>,
    /// Start of each 6-byte copy of the client's MAC (Ethernet source, chaddr, option 97).
    mac_at: Vec<usize>,
    /// Start of the transaction id.
    xid_at: usize,
}

/// `req` as the broadcast frame a client without an address sends.
fn request_frame(req: &Request) -> Vec<u8> {
    let mut payload = Vec::new();
    dhcp::encode(req, &mut payload);
    let mut out = Vec::new();
    frame::build(&dhcp::broadcast_frame(req.mac, &payload), 0, &mut out);
    out
}

/// A BIOS PXE ROM's request of `message_type` from `mac` with `xid`.
fn rom_request(message_type: u8, mac: [u8; 6], xid: u32) -> Request {
    Request {
        message_type,
        asker: Asker::Rom(Firmware::Bios),
        mac,
        xid,
        secs: 0,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        requested_ip: None,
        server_id: None,
        boot_item: None,
    }
}

/// A BIOS PXE ROM's DISCOVER from `mac` with `xid`, as the rack simulator sends it.
fn discover_frame(mac: [u8; 6], xid: u32) -> Vec<u8> {
    request_frame(&rom_request(msg::DISCOVER, mac, xid))
}

impl Template {
    /// Finds where the MAC and the xid sit by building the frame twice with every bit of them
    /// flipped: the bytes that differ (but for the UDP checksum) are theirs.
    fn new() -> anyhow::Result<Template> {
        let a = discover_frame([0; 6], 0);
        let b = discover_frame([0xff; 6], u32::MAX);
        ensure!(a.len() == b.len(), "DISCOVER length depends on the MAC");
        let udp_checksum = frame::ETH_HEADER_LEN + 20 + 6..frame::ETH_HEADER_LEN + 20 + 8;
        let differ: Vec<usize> = (0..a.len())
            .filter(|&i| a[i] != b[i] && !udp_checksum.contains(&i))
            .collect();
        // Runs of consecutive bytes: 6 for a MAC, 4 for the xid.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &i in &differ {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == i => *len += 1,
                _ => runs.push((i, 1)),
            }
        }
        let xid_at = frame::ETH_HEADER_LEN + 20 + 8 + 4;
        let mac_at: Vec<usize> = runs
            .iter()
            .filter(|&&(start, _)| start != xid_at)
            .map(|&(start, len)| {
                ensure!(len == 6, "a run of {len} bytes at {start} is not a MAC");
                Ok(start)
            })
            .collect::<anyhow::Result<_>>()?;
        ensure!(
            runs.contains(&(xid_at, 4)) && mac_at.len() >= 2,
            "unexpected DISCOVER layout: runs {runs:?}"
        );
        Ok(Template {
            bytes: a,
            mac_at,
            xid_at,
        })
    }

    /// The DISCOVER of `mac` with `xid` into `out` (same length as the template).
    fn write(&self, mac: [u8; 6], xid: u32, out: &mut [u8]) {
        out.copy_from_slice(&self.bytes);
        for &at in &self.mac_at {
            out[at..at + 6].copy_from_slice(&mac);
        }
        out[self.xid_at..self.xid_at + 4].copy_from_slice(&xid.to_be_bytes());
        frame::refresh_udp_checksum(out);
    }
}

/// The MAC of client `index`.
fn client_mac(seed: u8, index: u32) -> [u8; 6] {
    let [_, a, b, c] = index.to_be_bytes();
    [MAC_PREFIX[0], MAC_PREFIX[1], seed, a, b, c]
}

/// What the run shares between its sender and its receiver.
struct Shared {
    /// Per exchange: µs from the start when its DISCOVER left, plus one (0: not sent).
    sent_us: Vec<AtomicU32>,
    /// Exchanges sent so far.
    sent: AtomicU64,
    /// When the sender finished, µs from the start (0: still sending).
    send_end_us: AtomicU64,
    /// sendmmsg errors other than a full buffer.
    send_errors: AtomicU64,
    /// Set when the receiver gives up (an error).
    stop: AtomicBool,
}

/// What the receiver counted besides the answers.
#[derive(Debug, Default, Serialize)]
struct Counts {
    offers: u64,
    acks: u64,
    naks: u64,
    /// REQUESTs sent (full mode).
    requests_sent: u64,
    /// Answers to exchanges already answered.
    duplicates: u64,
    /// Proxy-mode OFFERs that name no boot file and carry no PXE options.
    no_boot_info: u64,
    /// Full-mode OFFERs without an address.
    no_address: u64,
    /// Replies not of this run, or whose chaddr is not the exchange's client.
    unmatched: u64,
    /// Frames that are not DHCP replies.
    malformed: u64,
    /// Frames the kernel dropped for a full socket buffer.
    socket_drops: u64,
}

/// What the receiver collected.
#[derive(Debug, Default)]
struct Received {
    /// Answers counted (first OFFER in proxy mode, first ACK in full mode).
    answered: u64,
    /// µs DISCOVER to answer, per answered exchange.
    latency_us: Vec<u32>,
    /// Full mode: µs DISCOVER to OFFER.
    offer_latency_us: Vec<u32>,
    counts: Counts,
}

/// The report of a run.
#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    rate_asked: u32,
    secs: f64,
    clients: u32,
    /// Exchanges started (DISCOVERs sent).
    sent: u64,
    /// Seconds the sender took.
    send_secs: f64,
    sent_per_sec: f64,
    answered: u64,
    /// Answers per second of sending.
    answered_per_sec: f64,
    /// 1 - answered / sent.
    loss: f64,
    latency_ms: Quantiles,
    offer_latency_ms: Option<Quantiles>,
    #[serde(flatten)]
    counts: Counts,
    send_errors: u64,
    wall_secs: f64,
    generator_cpu: Cpu,
}

#[derive(Debug, Serialize)]
struct Quantiles {
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Cpu {
    user_secs: f64,
    system_secs: f64,
    total_secs: f64,
    /// total / wall: cores used.
    cores: f64,
}

fn quantiles(us: &mut [u32]) -> Quantiles {
    us.sort_unstable();
    let durations: Vec<Duration> = us
        .iter()
        .map(|&u| Duration::from_micros(u64::from(u)))
        .collect();
    let ms = |q: f64| quantile(&durations, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    Quantiles {
        p50: ms(0.5),
        p99: ms(0.99),
        max: ms(1.0),
    }
}

fn micros_since(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// Runs the load and prints its report.
pub(crate) fn run(args: &LoadArgs) -> anyhow::Result<()> {
    ensure!(
        args.secs.is_finite() && args.secs > 0.0 && args.secs <= 600.0,
        "--secs must be in (0, 600]"
    );
    let total = (f64::from(args.rate) * args.secs).ceil() as u64;
    ensure!(
        total <= MAX_EXCHANGES,
        "--rate x --secs is {total} exchanges; at most {MAX_EXCHANGES} per run"
    );
    let iface = Interface::find(&args.interface)
        .with_context(|| format!("interface {}", args.interface))?;
    let socket = PacketSocket::open(&iface)
        .with_context(|| format!("AF_PACKET socket on {} (needs root)", args.interface))?;
    socket.bypass_qdisc();
    // Answers unicast to a client's new address must not draw ICMP errors.
    let _sink = sys::port68_sink(&iface);
    let template = Template::new()?;
    // The run's tag in the top byte of every transaction id.
    let tag = u32::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            .to_le_bytes()[1],
    ) << 24;
    let shared = Shared {
        sent_us: (0..total).map(|_| AtomicU32::new(0)).collect(),
        sent: AtomicU64::new(0),
        send_end_us: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let (user0, sys0, _) = sys::cpu_usage();
    let start = Instant::now();
    let received = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive(args, &socket, &shared, tag, start));
        send(args, &socket, &template, &shared, tag, total, start);
        receiver
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the receiving thread panicked")))
    })?;
    let wall = start.elapsed();
    let (user1, sys1, _) = sys::cpu_usage();
    let mut received = received;
    let sent = shared.sent.load(Ordering::Relaxed);
    let send_secs = shared.send_end_us.load(Ordering::Relaxed) as f64 / 1e6;
    let user = user1.saturating_sub(user0).as_secs_f64();
    let system = sys1.saturating_sub(sys0).as_secs_f64();
    let report = Report {
        mode: args.mode,
        rate_asked: args.rate,
        secs: args.secs,
        clients: args.clients,
        sent,
        send_secs,
        sent_per_sec: sent as f64 / send_secs.max(1e-9),
        answered: received.answered,
        answered_per_sec: received.answered as f64 / send_secs.max(1e-9),
        loss: if sent == 0 {
            1.0
        } else {
            1.0 - received.answered as f64 / sent as f64
        },
        latency_ms: quantiles(&mut received.latency_us),
        offer_latency_ms: (args.mode == Mode::Full)
            .then(|| quantiles(&mut received.offer_latency_us)),
        counts: received.counts,
        send_errors: shared.send_errors.load(Ordering::Relaxed),
        wall_secs: wall.as_secs_f64(),
        generator_cpu: Cpu {
            user_secs: user,
            system_secs: system,
            total_secs: user + system,
            cores: (user + system) / wall.as_secs_f64(),
        },
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("writing JSON")?
        );
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &Report) {
    println!(
        "dhcp-load {:?}: asked {}/s for {} s from {} clients",
        r.mode, r.rate_asked, r.secs, r.clients
    );
    println!(
        "  sent {} in {:.2} s ({:.0}/s), answered {} ({:.0}/s), loss {:.2}%",
        r.sent,
        r.send_secs,
        r.sent_per_sec,
        r.answered,
        r.answered_per_sec,
        r.loss * 100.0
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "  offers {}, acks {}, naks {}, requests {}, duplicates {}, no boot info {}, no address {}, \
         unmatched {}, malformed {}, socket drops {}, send errors {}",
        r.counts.offers,
        r.counts.acks,
        r.counts.naks,
        r.counts.requests_sent,
        r.counts.duplicates,
        r.counts.no_boot_info,
        r.counts.no_address,
        r.counts.unmatched,
        r.counts.malformed,
        r.counts.socket_drops,
        r.send_errors
    );
    println!(
        "  generator: {:.2} s CPU ({:.2} user, {:.2} system) in {:.2} s: {:.2} cores",
        r.generator_cpu.total_secs,
        r.generator_cpu.user_secs,
        r.generator_cpu.system_secs,
        r.wall_secs,
        r.generator_cpu.cores
    );
}

/// Sends `total` DISCOVERs at the rate asked, in batches.
fn send(
    args: &LoadArgs,
    socket: &PacketSocket,
    template: &Template,
    shared: &Shared,
    tag: u32,
    total: u64,
    start: Instant,
) {
    let rate = f64::from(args.rate);
    let len = template.bytes.len();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; len]).collect();
    let mut headers = Batch::new();
    let mut next: u64 = 0;
    while next < total && !shared.stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as u64 + 1).min(total);
        if next >= due {
            let wait = ((next + 1) as f64 / rate - elapsed).max(0.0);
            std::thread::sleep(Duration::from_secs_f64(wait).min(PACE_SLEEP_MAX));
            continue;
        }
        let n = usize::try_from(due - next).unwrap_or(BATCH).min(BATCH);
        for (i, buf) in bufs.iter_mut().take(n).enumerate() {
            let seq = next + i as u64;
            let index = u32::try_from(seq % u64::from(args.clients)).unwrap_or(0);
            let xid = tag | u32::try_from(seq).unwrap_or(0);
            template.write(client_mac(args.seed, index), xid, buf);
        }
        let frames: [&[u8]; BATCH] =
            std::array::from_fn(|i| bufs.get(i).map_or(&[][..], Vec::as_slice));
        // Stamped before the send: on a veth the answer can be read before sendmmsg returns.
        let stamp = micros_since(start).saturating_add(1);
        let batch = &shared.sent_us[next as usize..next as usize + n];
        for s in batch {
            s.store(stamp, Ordering::Release);
        }
        let taken = match socket.send_batch(&mut headers, &frames[..n]) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                socket.wait_writable(PACE_SLEEP_MAX);
                0
            }
            Err(_) => {
                shared.send_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(PACE_SLEEP_MAX);
                0
            }
        };
        for s in &batch[taken..] {
            s.store(0, Ordering::Release);
        }
        next += taken as u64;
        shared.sent.store(next, Ordering::Relaxed);
    }
    shared.send_end_us.store(
        u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Reads answers until the sender is done and `--wait-ms` more have passed; in full mode
/// answers each first OFFER with a REQUEST.
fn receive(
    args: &LoadArgs,
    socket: &PacketSocket,
    shared: &Shared,
    tag: u32,
    start: Instant,
) -> anyhow::Result<Received> {
    let total = shared.sent_us.len();
    let mut got = Received::default();
    // Per exchange: µs of the first OFFER (+1) and whether it was answered.
    let mut offered_us: Vec<u32> = vec![0; if args.mode == Mode::Full { total } else { 0 }];
    let mut answered = vec![false; total];
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; FRAME_BUF]).collect();
    let mut lens = [0usize; BATCH];
    let mut headers = Batch::new();
    let mut requests: Vec<Vec<u8>> = Vec::new();
    let wait = u64::try_from(Duration::from_millis(args.wait_ms).as_micros()).unwrap_or(u64::MAX);
    loop {
        let end = shared.send_end_us.load(Ordering::Relaxed);
        if end > 0 && start.elapsed().as_micros() as u64 >= end + wait {
            break;
        }
        if !socket.wait_readable(RECV_POLL) {
            continue;
        }
        let n = match socket.recv_batch(&mut headers, &mut bufs, &mut lens) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e).context("receiving answers");
            }
        };
        let now = micros_since(start).saturating_add(1);
        requests.clear();
        for (buf, &len) in bufs.iter().zip(&lens).take(n) {
            let Some(f) = frame::parse(&buf[..len.min(buf.len())]) else {
                got.counts.malformed += 1;
                continue;
            };
            let Ok(reply) = dhcp::parse_reply(f.payload) else {
                got.counts.malformed += 1;
                continue;
            };
            let seq = (reply.xid & 0x00ff_ffff) as usize;
            if reply.xid & 0xff00_0000 != tag || seq >= total {
                got.counts.unmatched += 1;
                continue;
            }
            let index = u32::try_from(seq as u64 % u64::from(args.clients)).unwrap_or(0);
            let mac = client_mac(args.seed, index);
            let sent = shared.sent_us[seq].load(Ordering::Acquire);
            if reply.chaddr != mac || sent == 0 {
                got.counts.unmatched += 1;
                continue;
            }
            let latency = now.saturating_sub(sent);
            match (args.mode, reply.message_type) {
                (Mode::Proxy, msg::OFFER) => {
                    got.counts.offers += 1;
                    if answered[seq] {
                        got.counts.duplicates += 1;
                        continue;
                    }
                    if reply.boot_file.is_none() && !reply.has_vendor_options {
                        got.counts.no_boot_info += 1;
                    }
                    answered[seq] = true;
                    got.answered += 1;
                    got.latency_us.push(latency);
                }
                (Mode::Full, msg::OFFER) => {
                    got.counts.offers += 1;
                    if offered_us[seq] != 0 {
                        got.counts.duplicates += 1;
                        continue;
                    }
                    if !reply.has_address() {
                        got.counts.no_address += 1;
                        continue;
                    }
                    offered_us[seq] = now;
                    got.offer_latency_us.push(latency);
                    let out = request_frame(&Request {
                        requested_ip: Some(reply.yiaddr),
                        server_id: Some(reply.server(f.src_ip)),
                        ..rom_request(msg::REQUEST, mac, reply.xid)
                    });
                    requests.push(out);
                }
                (Mode::Full, msg::ACK) => {
                    got.counts.acks += 1;
                    if answered[seq] {
                        got.counts.duplicates += 1;
                        continue;
                    }
                    answered[seq] = true;
                    got.answered += 1;
                    got.latency_us.push(latency);
                }
                (_, msg::NAK) => got.counts.naks += 1,
                _ => got.counts.unmatched += 1,
            }
        }
        for chunk in requests.chunks(BATCH) {
            let frames: [&[u8]; BATCH] =
                std::array::from_fn(|i| chunk.get(i).map_or(&[][..], Vec::as_slice));
            let frames = &frames[..chunk.len()];
            let mut from = 0;
            // A full buffer holds the REQUESTs back a little; an error loses them (counted as
            // exchanges not answered).
            for _ in 0..100 {
                match socket.send_batch(&mut headers, &frames[from..]) {
                    Ok(k) => from += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        socket.wait_writable(PACE_SLEEP_MAX);
                    }
                    Err(_) => {
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                if from >= frames.len() {
                    break;
                }
            }
            got.counts.requests_sent += from as u64;
        }
    }
    got.counts.socket_drops = socket.drops();
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_patches_into_the_frame_a_fresh_build_gives() {
        let t = Template::new().expect("template");
        assert_eq!(t.mac_at.len(), 3, "Ethernet source, chaddr, option 97");
        let mac = client_mac(7, 0x01_02_03);
        let mut out = vec![0u8; t.bytes.len()];
        t.write(mac, 0x2a00_0005, &mut out);
        assert_eq!(out, discover_frame(mac, 0x2a00_0005));
        let f = frame::parse(&out).expect("parses");
        assert_eq!(f.src_mac, [0x02, 0x51, 7, 1, 2, 3]);
        assert_eq!(dhcp::reply_xid(f.payload), None, "a request, not a reply");
    }
}
