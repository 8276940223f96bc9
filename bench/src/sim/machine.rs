//! One simulated machine's boot, stage by stage, as an async task on its shard's thread:
//! firmware DHCP (and the port-4011 step when the offer calls for it), the boot program
//! (TFTP, or HTTP for UEFI HTTP Boot), iPXE's DHCP, the script chain, the kernel and initrds.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    rc::Rc,
    sync::atomic::Ordering,
    time::Duration,
};

use serde::Serialize;
use tokio::{io::unix::AsyncFd, sync::Notify, time::Instant};

use super::{
    dhcp::{self, msg, Asker, BootTarget, Firmware, Reply},
    frame::{self, UdpFrame},
    http,
    ipxe::{self, ImageKind, Step},
    sys::{self, Interface, Netlink, PacketSocket},
    tftp, Config, Progress,
};

/// Scripts chained at most (a chain loop is a failure, not a hang).
const MAX_SCRIPT_DEPTH: usize = 8;
/// Prefix length used when a lease names no subnet mask.
const DEFAULT_PREFIX_LEN: u8 = 24;
/// Randomisation of each DHCP retransmission wait, either way (RFC 2131 4.1).
const DHCP_RETRY_JITTER: Duration = Duration::from_secs(1);
/// DISCOVERs started over after a NAK before the machine gives up.
const MAX_NAK_RESTARTS: u32 = 16;

/// The stages of a boot, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Firmware DHCP: DISCOVER to ACK, and the port-4011 request if any.
    Dhcp,
    /// The boot program: TFTP (size probe, then the transfer), or HTTP for HTTP Boot.
    Nbp,
    /// iPXE's DHCP.
    IpxeDhcp,
    /// The iPXE scripts (`/boot.ipxe` and what it chains to).
    Script,
    /// The kernel.
    Kernel,
    /// The initrds.
    Initrd,
}

impl Stage {
    /// Every stage, in order.
    pub(crate) const ALL: [Stage; 6] = [
        Stage::Dhcp,
        Stage::Nbp,
        Stage::IpxeDhcp,
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
    ];

    /// Name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Dhcp => "dhcp",
            Stage::Nbp => "nbp",
            Stage::IpxeDhcp => "ipxe_dhcp",
            Stage::Script => "script",
            Stage::Kernel => "kernel",
            Stage::Initrd => "initrd",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How one machine's boot went.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    /// Its index in the rack.
    pub index: usize,
    /// Its MAC.
    pub mac: String,
    /// Its firmware.
    pub firmware: &'static str,
    /// Its address (the last lease), if it got one.
    pub ip: Option<Ipv4Addr>,
    /// Power-on, seconds after the rack's start.
    pub power_on_secs: f64,
    /// Seconds each stage took (absent: not reached or failed in it).
    pub stages: HashMap<&'static str, f64>,
    /// Booted: seconds from the rack's start to the last byte of the last initrd.
    pub booted_at_secs: Option<f64>,
    /// The stage it failed in, and why.
    pub failure: Option<Failure>,
    /// DHCP requests resent after a timeout.
    pub dhcp_resends: u32,
    /// NAKs that made it start DHCP over.
    pub dhcp_naks: u32,
    /// TFTP packets resent after a timeout.
    pub tftp_resends: u32,
    /// `503`s waited out.
    pub http_busy_retries: u32,
    /// Bytes of boot program, scripts, kernel and initrds received.
    pub bytes: u64,
}

/// Where and why a machine's boot failed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Failure {
    /// The stage.
    pub stage: Stage,
    /// A short reason (`no offer`, `tftp timeout`, `http 404`, ...).
    pub reason: String,
}

/// A machine to boot.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Index in the rack.
    pub index: usize,
    /// MAC address.
    pub mac: [u8; 6],
    /// Firmware.
    pub firmware: Firmware,
    /// When it powers on, after the rack's start.
    pub power_on: Duration,
}

/// A DHCP answer and the frame it came in.
#[derive(Debug, Clone)]
struct Answer {
    reply: Reply,
    src_ip: Ipv4Addr,
    src_mac: [u8; 6],
}

/// Where the answers to one transaction id wait for their machine.
#[derive(Debug, Default)]
struct Mailbox {
    queue: RefCell<VecDeque<Answer>>,
    notify: Notify,
}

/// What the machines of one shard (one thread) share.
pub(crate) struct Shard {
    /// The frames' socket.
    packets: AsyncFd<PacketSocket>,
    iface: Interface,
    mailboxes: RefCell<HashMap<u32, Rc<Mailbox>>>,
    netlink: RefCell<Netlink>,
    /// Addresses put on the interface, to remove at the end.
    added: RefCell<Vec<(Ipv4Addr, u8)>>,
    cfg: Rc<Config>,
    progress: std::sync::Arc<Progress>,
    /// The rack's start.
    start: Instant,
    /// When machines still booting give up.
    deadline: Instant,
    rng: RefCell<u64>,
    frame_buf: RefCell<Vec<u8>>,
    ip_id: std::cell::Cell<u16>,
    /// Frames dropped: not DHCP, unreadable, or for no machine of this shard.
    pub stray_frames: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("iface", &self.iface.name)
            .finish()
    }
}

/// splitmix64: a small, seedable generator (xids, spreads), identical across platforms.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Shard {
    /// A shard on `iface`, inside a tokio runtime.
    pub(crate) fn new(
        iface: Interface,
        cfg: Rc<Config>,
        progress: std::sync::Arc<Progress>,
        start: Instant,
        deadline: Instant,
        seed: u64,
    ) -> std::io::Result<Shard> {
        let socket = PacketSocket::open(&iface)?;
        // SAFETY: the socket owns its descriptor, which stays open and the same until the
        // AsyncFd (its only owner) is dropped.
        let packets = unsafe { AsyncFd::register(socket) }.map_err(std::io::Error::from)?;
        let netlink = Netlink::open(iface.index)?;
        Ok(Shard {
            packets,
            iface,
            mailboxes: RefCell::new(HashMap::new()),
            netlink: RefCell::new(netlink),
            added: RefCell::new(Vec::new()),
            cfg,
            progress,
            start,
            deadline,
            rng: RefCell::new(seed),
            frame_buf: RefCell::new(Vec::with_capacity(1600)),
            ip_id: std::cell::Cell::new(1),
            stray_frames: std::cell::Cell::new(0),
        })
    }

    /// Receives frames for ever, handing each DHCP answer to the machine waiting for its xid.
    pub(crate) async fn receive(self: Rc<Self>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok(mut guard) = self.packets.readable().await else {
                return;
            };
            loop {
                match guard.get_inner().recv(&mut buf) {
                    Ok(n) => self.dispatch(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    fn dispatch(&self, bytes: &[u8]) {
        let Some(f) = frame::parse(bytes) else {
            self.stray_frames.set(self.stray_frames.get() + 1);
            return;
        };
        let mailbox =
            dhcp::reply_xid(f.payload).and_then(|xid| self.mailboxes.borrow().get(&xid).cloned());
        let (Some(mailbox), Ok(reply)) = (mailbox, dhcp::parse_reply(f.payload)) else {
            self.stray_frames.set(self.stray_frames.get() + 1);
            return;
        };
        mailbox.queue.borrow_mut().push_back(Answer {
            reply,
            src_ip: f.src_ip,
            src_mac: f.src_mac,
        });
        mailbox.notify.notify_one();
    }

    fn next_random(&self) -> u64 {
        splitmix(&mut self.rng.borrow_mut())
    }

    /// A transaction id no machine of this shard waits on, with its mailbox.
    fn open_mailbox(&self) -> (u32, Rc<Mailbox>) {
        let mut boxes = self.mailboxes.borrow_mut();
        loop {
            let xid = (self.next_random() >> 32) as u32;
            if xid != 0 && !boxes.contains_key(&xid) {
                let mailbox = Rc::new(Mailbox::default());
                boxes.insert(xid, Rc::clone(&mailbox));
                return (xid, mailbox);
            }
        }
    }

    fn close_mailbox(&self, xid: u32) {
        self.mailboxes.borrow_mut().remove(&xid);
    }

    /// Sends a UDP frame, waiting while the socket's buffer is full.
    async fn send_frame(&self, f: &UdpFrame<'_>) {
        let id = self.ip_id.get();
        self.ip_id.set(id.wrapping_add(1));
        let bytes = {
            let mut buf = self.frame_buf.borrow_mut();
            frame::build(f, id, &mut buf);
            buf.clone()
        };
        loop {
            match self.packets.get_ref().send(&bytes) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match self.packets.writable().await {
                        Ok(mut g) => g.clear_ready(),
                        Err(_) => return,
                    }
                }
                // ENOBUFS and the like: the frame is lost, as on a wire; the retry schedule
                // covers it.
                Err(_) => return,
            }
        }
    }

    /// Puts `ip` on the interface (so the kernel answers ARP for it and its sockets can bind).
    fn add_address(&self, ip: Ipv4Addr, prefix_len: u8) -> Result<(), String> {
        if self.added.borrow().iter().any(|(a, _)| *a == ip) {
            return Ok(());
        }
        self.netlink
            .borrow_mut()
            .add(ip, prefix_len)
            .map_err(|e| format!("adding {ip}/{prefix_len}: {e}"))?;
        self.added.borrow_mut().push((ip, prefix_len));
        Ok(())
    }

    /// DHCP frames the kernel dropped before this shard read them (its socket buffer full).
    pub(crate) fn packet_drops(&self) -> u64 {
        self.packets.get_ref().drops()
    }

    /// Removes every address this shard added.
    pub(crate) fn remove_addresses(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut nl = self.netlink.borrow_mut();
        for (ip, len) in self.added.borrow_mut().drain(..) {
            if let Err(e) = nl.remove(ip, len) {
                errors.push(format!("removing {ip}/{len}: {e}"));
            }
        }
        errors
    }

    fn secs_since(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }
}

/// A failure in a stage.
type Failed = (Stage, String);

/// What a DHCP exchange gave a machine.
struct Lease {
    ip: Ipv4Addr,
    prefix_len: u8,
    target: BootTarget,
    /// Source MAC of the frame whose offer named the target (the next hop to a boot server).
    target_mac: [u8; 6],
}

/// State of one machine while it boots.
struct Boot<'a> {
    shard: &'a Shard,
    spec: &'a Spec,
    powered_on: Instant,
    ip: Option<Ipv4Addr>,
    /// The stage under way.
    current: Option<Stage>,
    out: Outcome,
}

/// Boots one machine; never panics, always returns its outcome.
pub(crate) async fn boot(shard: Rc<Shard>, spec: Spec) -> Outcome {
    let power_on = shard.start + spec.power_on;
    tokio::time::sleep_until(power_on).await;
    let mut b = Boot {
        shard: &shard,
        spec: &spec,
        powered_on: Instant::now(),
        ip: None,
        current: None,
        out: Outcome {
            index: spec.index,
            mac: format_mac(spec.mac),
            firmware: spec.firmware.name(),
            ip: None,
            power_on_secs: shard.secs_since(power_on),
            stages: HashMap::new(),
            booted_at_secs: None,
            failure: None,
            dhcp_resends: 0,
            dhcp_naks: 0,
            tftp_resends: 0,
            http_busy_retries: 0,
            bytes: 0,
        },
    };
    shard.progress.powered_on.fetch_add(1, Ordering::Relaxed);
    let mut client = http::Client::new(
        Ipv4Addr::UNSPECIFIED,
        if spec.firmware == Firmware::UefiHttp {
            "UefiHttpBoot/1.0"
        } else {
            "iPXE/1.21.1"
        },
        shard.cfg.http_limits,
    );
    let result = match tokio::time::timeout_at(shard.deadline, b.run(&mut client)).await {
        Ok(result) => result,
        Err(_) => {
            let stage = b.current.take().unwrap_or(Stage::Dhcp);
            shard.progress.in_stage[stage.index()].fetch_sub(1, Ordering::Relaxed);
            Err((
                stage,
                "deadline: still in this stage at the run's deadline".to_owned(),
            ))
        }
    };
    b.out.http_busy_retries = client.busy_retries;
    b.out.ip = b.ip;
    match result {
        Ok(()) => {
            b.out.booted_at_secs = Some(shard.secs_since(Instant::now()));
            shard.progress.booted.fetch_add(1, Ordering::Relaxed);
        }
        Err((stage, reason)) => {
            b.out.failure = Some(Failure { stage, reason });
            shard.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    b.out
}

pub(super) fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Boot<'_> {
    async fn run(&mut self, client: &mut http::Client) -> Result<(), Failed> {
        let fw = self.spec.firmware;
        // Firmware DHCP.
        let t = self.enter(Stage::Dhcp);
        let r = self.dhcp(Asker::Rom(fw)).await;
        let lease = self.leave(Stage::Dhcp, t, r)?;
        client.set_local(lease.ip);
        // The boot program.
        let t = self.enter(Stage::Nbp);
        let r = self.nbp(client, &lease).await;
        self.leave(Stage::Nbp, t, r)?;
        // iPXE: DHCP again, then its scripts.
        let t = self.enter(Stage::IpxeDhcp);
        let r = self.dhcp(Asker::Ipxe(fw)).await;
        let lease = self.leave(Stage::IpxeDhcp, t, r)?;
        let ip = lease.ip;
        client.set_local(ip);
        let (buildarch, platform) = fw.ipxe_build();
        let mut settings = ipxe::Settings {
            mac: self.spec.mac,
            ip,
            buildarch,
            platform,
            next_server: match &lease.target {
                BootTarget::Tftp { server, .. } => *server,
                _ => Ipv4Addr::UNSPECIFIED,
            },
            vars: HashMap::new(),
        };
        let t = self.enter(Stage::Script);
        let r = self.scripts(client, &lease.target, &mut settings, ip).await;
        let images = self.leave(Stage::Script, t, r)?;
        // The images, in script order: kernels, then initrds.
        for (stage, kind) in [
            (Stage::Kernel, ImageKind::Kernel),
            (Stage::Initrd, ImageKind::Initrd),
        ] {
            let t = self.enter(stage);
            let mut r = Ok(());
            if kind == ImageKind::Kernel && !images.iter().any(|(k, _)| *k == kind) {
                r = Err("the script names no kernel".to_owned());
            }
            for (_, url) in images.iter().filter(|(k, _)| *k == kind) {
                if r.is_err() {
                    break;
                }
                r = self
                    .fetch_image(client, url, ip)
                    .await
                    .map(|n| self.out.bytes += n);
            }
            self.leave(stage, t, r)?;
        }
        Ok(())
    }

    /// A stage begins: counted in the progress.
    fn enter(&mut self, stage: Stage) -> Instant {
        self.current = Some(stage);
        self.shard.progress.in_stage[stage.index()].fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// A stage that began at `started` ended with `result`: timed if it succeeded, tagged with
    /// the stage if it failed.
    fn leave<T>(
        &mut self,
        stage: Stage,
        started: Instant,
        result: Result<T, String>,
    ) -> Result<T, Failed> {
        self.shard.progress.in_stage[stage.index()].fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(v) => {
                self.out
                    .stages
                    .insert(stage.name(), started.elapsed().as_secs_f64());
                Ok(v)
            }
            Err(reason) => Err((stage, reason)),
        }
    }

    /// The boot program: TFTP from a ROM, HTTP for HTTP Boot.
    async fn nbp(&mut self, client: &mut http::Client, lease: &Lease) -> Result<(), String> {
        match &lease.target {
            BootTarget::Tftp { server, file } => {
                let opts = self.shard.cfg.rom_tftp(self.spec.firmware);
                let t = tftp::fetch(lease.ip, *server, file, &opts, false)
                    .await
                    .map_err(|e| e.reason())?;
                self.out.tftp_resends += t.resends;
                self.out.bytes += t.bytes;
                Ok(())
            }
            BootTarget::Url(url) => {
                let r = client.get(url, false).await.map_err(|e| e.kind)?;
                self.out.bytes += r.len;
                Ok(())
            }
            BootTarget::BootServer { .. } => Err("no boot file".to_owned()),
        }
    }

    /// Fetches a kernel or initrd (HTTP, or TFTP for a tftp:// URL or a bare name).
    async fn fetch_image(
        &mut self,
        client: &mut http::Client,
        url: &str,
        ip: Ipv4Addr,
    ) -> Result<u64, String> {
        if dhcp::is_url(url) {
            return client
                .get(url, false)
                .await
                .map(|r| r.len)
                .map_err(|e| e.kind);
        }
        let (server, file) = tftp_location(url).ok_or_else(|| format!("cannot fetch {url}"))?;
        let t = tftp::fetch(ip, server, &file, &self.shard.cfg.ipxe_tftp(), false)
            .await
            .map_err(|e| e.reason())?;
        self.out.tftp_resends += t.resends;
        Ok(t.bytes)
    }

    /// Fetches the first script and everything it chains to; returns the kernel and initrd
    /// URLs in script order.
    async fn scripts(
        &mut self,
        client: &mut http::Client,
        first: &BootTarget,
        settings: &mut ipxe::Settings,
        ip: Ipv4Addr,
    ) -> Result<Vec<(ImageKind, String)>, String> {
        let mut url = match first {
            BootTarget::Url(u) => u.clone(),
            BootTarget::Tftp { server, file } => format!("tftp://{server}/{file}"),
            BootTarget::BootServer { .. } => return Err("no boot file".into()),
        };
        let mut images = Vec::new();
        for _ in 0..MAX_SCRIPT_DEPTH {
            let (body, base) = if dhcp::is_url(&url) {
                let r = client.get(&url, true).await.map_err(|e| e.kind)?;
                self.out.bytes += r.len;
                (r.body.unwrap_or_default(), r.url)
            } else {
                let (server, file) =
                    tftp_location(&url).ok_or_else(|| format!("cannot fetch {url}"))?;
                let t = tftp::fetch(ip, server, &file, &self.shard.cfg.ipxe_tftp(), true)
                    .await
                    .map_err(|e| e.reason())?;
                self.out.bytes += t.bytes;
                (t.data.unwrap_or_default(), url.clone())
            };
            let text = String::from_utf8_lossy(&body);
            let steps =
                ipxe::steps(&text, &base, settings).map_err(|_| "not an iPXE script".to_owned())?;
            let mut next = None;
            for step in steps {
                match step {
                    Step::Fetch(ImageKind::Chain, u) => {
                        next = Some(u);
                        break;
                    }
                    Step::Fetch(kind, u) => images.push((kind, u)),
                    Step::Boot => break,
                }
            }
            match next {
                Some(u) => url = u,
                None => return Ok(images),
            }
        }
        Err("script chain too deep".into())
    }

    /// One DHCP exchange as `asker`: DISCOVER until a complete set of offers (an address and
    /// something to boot), REQUEST the address, then the boot server on port 4011 if the offer
    /// says so. Retries on the firmware schedule.
    async fn dhcp(&mut self, asker: Asker) -> Result<Lease, String> {
        let shard = self.shard;
        let (xid, mailbox) = shard.open_mailbox();
        let result = self.dhcp_inner(asker, xid, &mailbox).await;
        shard.close_mailbox(xid);
        let lease = result?;
        shard.add_address(lease.ip, lease.prefix_len)?;
        self.ip = Some(lease.ip);
        // A boot server to ask on port 4011 (from the address just leased).
        if let BootTarget::BootServer { server, item } = lease.target {
            let target = self
                .ask_boot_server(asker, lease.ip, server, item, lease.target_mac)
                .await?;
            return Ok(Lease { target, ..lease });
        }
        Ok(lease)
    }

    /// A retransmission wait randomised by up to a second either way, as RFC 2131 (4.1) asks
    /// of clients: a rack's retries do not all land in the same instant again.
    fn jittered(&self, wait: Duration) -> Duration {
        let r = self.shard.next_random();
        let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
        let jitter = DHCP_RETRY_JITTER.mul_f64(frac * 2.0);
        (wait + jitter).saturating_sub(DHCP_RETRY_JITTER)
    }

    fn secs(&self) -> u16 {
        u16::try_from(self.powered_on.elapsed().as_secs()).unwrap_or(u16::MAX)
    }

    fn request(&self, asker: Asker, message_type: u8, xid: u32) -> dhcp::Request {
        dhcp::Request {
            message_type,
            asker,
            mac: self.spec.mac,
            xid,
            secs: self.secs(),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
            boot_item: None,
        }
    }

    async fn broadcast(&self, req: &dhcp::Request) {
        let mut payload = Vec::with_capacity(400);
        dhcp::encode(req, &mut payload);
        self.shard
            .send_frame(&dhcp::broadcast_frame(self.spec.mac, &payload))
            .await;
    }

    /// DISCOVER, then REQUEST; a NAK (the address went to another machine meanwhile, as when
    /// a server offers one address to two clients) starts over, as RFC 2131 says, a bounded
    /// number of times.
    async fn dhcp_inner(
        &mut self,
        asker: Asker,
        xid: u32,
        mailbox: &Mailbox,
    ) -> Result<Lease, String> {
        let mut naks = 0;
        loop {
            let (offer, target, target_mac) = self.discover(asker, xid, mailbox).await?;
            match self
                .request_lease(asker, xid, mailbox, &offer, target, target_mac)
                .await?
            {
                Some(lease) => return Ok(lease),
                None if naks < MAX_NAK_RESTARTS => {
                    naks += 1;
                    self.out.dhcp_naks += 1;
                }
                None => return Err("nak".into()),
            }
        }
    }

    /// DISCOVER until one offer gives an address and one (maybe the same) a boot target for
    /// this client, on the firmware's retry schedule.
    async fn discover(
        &mut self,
        asker: Asker,
        xid: u32,
        mailbox: &Mailbox,
    ) -> Result<(Answer, BootTarget, [u8; 6]), String> {
        let schedule = self.shard.cfg.dhcp_schedule.clone();
        let mut address: Option<Answer> = None;
        let mut boot: Option<(BootTarget, [u8; 6])> = None;
        let mut offers = 0u32;
        let mut discover = self.request(asker, msg::DISCOVER, xid);
        // Answers to an earlier round (a NAKed REQUEST's late offers) are not this round's.
        mailbox.queue.borrow_mut().clear();
        for (attempt, wait) in schedule.iter().enumerate() {
            if attempt > 0 {
                self.out.dhcp_resends += 1;
            }
            discover.secs = self.secs();
            self.broadcast(&discover).await;
            let deadline = Instant::now() + self.jittered(*wait);
            while let Some(a) = next_answer(mailbox, deadline).await {
                if a.reply.message_type != msg::OFFER || a.reply.chaddr != self.spec.mac {
                    continue;
                }
                offers += 1;
                if boot.is_none() {
                    boot =
                        dhcp::boot_target(asker, &a.reply, a.src_ip, false).map(|t| (t, a.src_mac));
                }
                if address.is_none() && a.reply.has_address() {
                    address = Some(a);
                }
                if let (Some(offer), Some((target, mac))) = (&address, &boot) {
                    return Ok((offer.clone(), target.clone(), *mac));
                }
            }
        }
        Err(if offers == 0 {
            "no offer"
        } else {
            "no complete offer"
        }
        .to_owned())
    }

    /// REQUEST the offered address from the server that offered it; `None` on a NAK.
    async fn request_lease(
        &mut self,
        asker: Asker,
        xid: u32,
        mailbox: &Mailbox,
        offer: &Answer,
        target: BootTarget,
        target_mac: [u8; 6],
    ) -> Result<Option<Lease>, String> {
        let schedule = self.shard.cfg.dhcp_schedule.clone();
        let server = offer.reply.server(offer.src_ip);
        let mut request = self.request(asker, msg::REQUEST, xid);
        request.requested_ip = Some(offer.reply.yiaddr);
        request.server_id = Some(server);
        for (attempt, wait) in schedule.iter().enumerate() {
            if attempt > 0 {
                self.out.dhcp_resends += 1;
            }
            request.secs = self.secs();
            self.broadcast(&request).await;
            let deadline = Instant::now() + self.jittered(*wait);
            while let Some(a) = next_answer(mailbox, deadline).await {
                if a.reply.chaddr != self.spec.mac || a.reply.server(a.src_ip) != server {
                    continue;
                }
                match a.reply.message_type {
                    msg::ACK => {
                        let mask = a.reply.subnet_mask.or(offer.reply.subnet_mask);
                        let prefix_len =
                            mask.and_then(sys::prefix_len).unwrap_or(DEFAULT_PREFIX_LEN);
                        // A full server's ACK may name the boot file again: it wins.
                        let target = dhcp::boot_target(asker, &a.reply, a.src_ip, false)
                            .filter(|_| a.reply.has_address())
                            .unwrap_or(target);
                        return Ok(Some(Lease {
                            ip: a.reply.yiaddr,
                            prefix_len,
                            target,
                            target_mac,
                        }));
                    }
                    msg::NAK => return Ok(None),
                    _ => {}
                }
            }
        }
        Err("no ack".into())
    }

    /// The port-4011 request from `ip` to `server` and its ACK's boot target.
    async fn ask_boot_server(
        &mut self,
        asker: Asker,
        ip: Ipv4Addr,
        server: Ipv4Addr,
        item: Option<u16>,
        dst_mac: [u8; 6],
    ) -> Result<BootTarget, String> {
        let shard = self.shard;
        let (xid, mailbox) = shard.open_mailbox();
        let mut req = self.request(asker, msg::REQUEST, xid);
        req.ciaddr = ip;
        req.boot_item = item;
        let mut payload = Vec::with_capacity(400);
        let schedule = shard.cfg.dhcp_schedule.clone();
        let mut result = Err("no ack on port 4011".to_owned());
        'attempts: for (attempt, wait) in schedule.iter().enumerate() {
            if attempt > 0 {
                self.out.dhcp_resends += 1;
            }
            req.secs = self.secs();
            dhcp::encode(&req, &mut payload);
            shard
                .send_frame(&UdpFrame {
                    src_mac: self.spec.mac,
                    // The next hop the offer came from (the server, or a relay).
                    dst_mac,
                    src_ip: ip,
                    dst_ip: server,
                    src_port: pxe_common::DHCP_CLIENT_PORT,
                    dst_port: pxe_common::PXE_BOOT_SERVER_PORT,
                    payload: &payload,
                })
                .await;
            let deadline = Instant::now() + self.jittered(*wait);
            while let Some(a) = next_answer(&mailbox, deadline).await {
                if a.reply.message_type != msg::ACK || a.reply.chaddr != self.spec.mac {
                    continue;
                }
                result = dhcp::boot_target(asker, &a.reply, a.src_ip, true)
                    .filter(|t| !matches!(t, BootTarget::BootServer { .. }))
                    .ok_or_else(|| "the 4011 ack names no boot file".to_owned());
                break 'attempts;
            }
        }
        shard.close_mailbox(xid);
        result
    }
}

/// The next answer in `mailbox`, waiting until `deadline`.
async fn next_answer(mailbox: &Mailbox, deadline: Instant) -> Option<Answer> {
    loop {
        if let Some(a) = mailbox.queue.borrow_mut().pop_front() {
            return Some(a);
        }
        if tokio::time::timeout_at(deadline, mailbox.notify.notified())
            .await
            .is_err()
        {
            return mailbox.queue.borrow_mut().pop_front();
        }
    }
}

/// `tftp://server/file` or a bare file name with no server: (server, file).
fn tftp_location(url: &str) -> Option<(Ipv4Addr, String)> {
    let rest = url.strip_prefix("tftp://")?;
    let (host, file) = rest.split_once('/')?;
    let host = host.split(':').next()?;
    Some((host.parse().ok()?, file.to_owned()))
}
