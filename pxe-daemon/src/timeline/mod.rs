//! Every machine's boot, stage by stage: DHCP, TFTP and HTTP events joined by MAC (and by the
//! IP address a machine was given or had) into one timeline per machine, bounded in memory.
//!
//! Stages, in boot order: discover, offer, nbp_transfer, ipxe_dhcp, script, kernel, initrd,
//! artifact (anything else fetched), done. Each machine keeps its latest boot; a machine that
//! starts over (a DHCPDISCOVER from a ROM after its boot went further) begins a new one.

pub mod metrics;
pub mod settings;
pub mod status;

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use metrics::{CensusCollector, TimelineMetrics};
use serde::Serialize;
pub use settings::{Settings, MAX_MACHINES_DEFAULT, STUCK_AFTER_SECS_DEFAULT};

use crate::boot::{Arch, BootPolicy, Firmware, MacAddr, Machine};

/// Most stage entries kept per boot (a retrying machine cannot grow its record without bound).
const STAGES_PER_BOOT_MAX: usize = 64;
/// Stage entries a new record has room for (discover to done is eight), so that a boot does
/// not regrow its list.
const STAGES_PER_BOOT_HINT: usize = 8;

/// A stage of a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The firmware's DHCPDISCOVER (or REQUEST) was seen.
    Discover,
    /// The boot offer (or ACK) was sent.
    Offer,
    /// The network boot program is being fetched over TFTP.
    NbpTransfer,
    /// iPXE asked DHCP again.
    IpxeDhcp,
    /// iPXE fetched its script.
    Script,
    /// The kernel was requested.
    Kernel,
    /// An initrd was requested.
    Initrd,
    /// Another artifact was requested.
    Artifact,
    /// The last artifact of the machine's profile was sent.
    Done,
}

impl Stage {
    /// Every stage, in boot order.
    pub const ALL: [Stage; 9] = [
        Stage::Discover,
        Stage::Offer,
        Stage::NbpTransfer,
        Stage::IpxeDhcp,
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
        Stage::Artifact,
        Stage::Done,
    ];

    /// Metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Stage::Discover => "discover",
            Stage::Offer => "offer",
            Stage::NbpTransfer => "nbp_transfer",
            Stage::IpxeDhcp => "ipxe_dhcp",
            Stage::Script => "script",
            Stage::Kernel => "kernel",
            Stage::Initrd => "initrd",
            Stage::Artifact => "artifact",
            Stage::Done => "done",
        }
    }
}

/// One stage of a machine's boot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageEntry {
    /// The stage.
    pub stage: Stage,
    /// When it was entered, Unix milliseconds.
    pub at_unix_ms: u64,
    /// What happened: a file, a message type, a status.
    pub detail: Cow<'static, str>,
    /// `ok`, or `failed: <reason>`.
    pub outcome: Cow<'static, str>,
}

/// A machine's latest boot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineTimeline {
    /// MAC, `52:54:00:12:34:56`.
    pub mac: String,
    /// The address it was given or used, when known.
    pub ip: Option<Ipv4Addr>,
    /// Option-93 arch label (`bios`, `efi-x64`, ...), when known.
    pub arch: Option<&'static str>,
    /// Firmware seen last (`bios`, `uefi`, `uefi-http`, `ipxe`).
    pub firmware: Option<&'static str>,
    /// Its group, if one matches.
    pub group: Option<String>,
    /// The stage it is in now.
    pub stage: Stage,
    /// Seconds it has been in that stage.
    pub in_stage_secs: f64,
    /// Whether it has been in a stage other than `done` longer than the stuck threshold.
    pub stuck: bool,
    /// Whether its last step failed.
    pub failed: bool,
    /// The stages of this boot, in order.
    pub stages: Vec<StageEntry>,
}

/// What a subsystem saw.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// A DHCP request from a machine, and whether it was answered.
    Dhcp {
        /// The machine as the request describes it.
        machine: &'a Machine,
        /// The address it has or was given (ciaddr, yiaddr), if any.
        ip: Option<Ipv4Addr>,
        /// Whether it was answered (an OFFER or ACK went out).
        answered: bool,
    },
    /// A TFTP transfer from a client address.
    Tftp {
        /// The client.
        ip: Ipv4Addr,
        /// The file.
        file: &'a str,
        /// `None` when it started; `Some(Ok)` completed; `Some(Err(reason))` failed.
        ended: Option<Result<(), &'static str>>,
    },
    /// An HTTP response to a client address.
    Http {
        /// The client.
        ip: Ipv4Addr,
        /// The MAC, when the request named one (`/ipxe?mac=`).
        mac: Option<MacAddr>,
        /// The stage this request is (script, kernel, initrd, artifact, or done).
        stage: Stage,
        /// The path.
        path: &'a str,
        /// The status code.
        status: u16,
    },
}

#[derive(Debug)]
struct Record {
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    arch: Option<Arch>,
    firmware: Option<Firmware>,
    group: Option<String>,
    stage: Stage,
    entered: Instant,
    failed: bool,
    stages: Vec<StageEntry>,
    /// Position in the recency queue.
    touch: u64,
}

/// Maps keyed by what clients send (MACs, addresses): foldhash, seeded per process, costs a
/// fraction of SipHash on these short keys, and this map is looked up on every DHCP answer.
type ClientMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Inner {
    machines: ClientMap<MacAddr, Record>,
    by_ip: ClientMap<Ipv4Addr, MacAddr>,
    /// (touch, mac) in the order they were last active; stale pairs are skipped.
    recency: VecDeque<(u64, MacAddr)>,
    clock: u64,
}

/// Who has an IPv4 address on the boot network: the daemon asks the kernel's neighbour table
/// (the client resolved our address before it sent its request); tests answer from a map.
pub trait Neighbours: Send + Sync {
    /// The MAC behind `ip`, if known.
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr>;
}

impl<F: Fn(Ipv4Addr) -> Option<MacAddr> + Send + Sync> Neighbours for F {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self(ip)
    }
}

/// The timelines of all machines. Cheap to share.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Mutex<Inner>>,
    policy: Arc<BootPolicy>,
    neighbours: Arc<dyn Neighbours>,
    metrics: TimelineMetrics,
    max_machines: usize,
    stuck_after: Duration,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("max_machines", &self.max_machines)
            .field("stuck_after", &self.stuck_after)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Timeline {
    /// A timeline remembering at most `max_machines`, calling machines stuck after
    /// `stuck_after` in one stage, with groups from `policy`; a TFTP or HTTP client it has not
    /// seen in DHCP is looked up in `neighbours`.
    pub fn new(
        policy: Arc<BootPolicy>,
        neighbours: Arc<dyn Neighbours>,
        metrics: TimelineMetrics,
        max_machines: usize,
        stuck_after: Duration,
    ) -> Timeline {
        Timeline {
            inner: Arc::new(Mutex::new(Inner::default())),
            policy,
            neighbours,
            metrics,
            max_machines: max_machines.max(1),
            stuck_after,
        }
    }

    /// Whether some thread holds the lock now.
    #[cfg(test)]
    fn is_locked(&self) -> bool {
        matches!(
            self.inner.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what a subsystem saw.
    pub fn record(&self, event: Event<'_>) {
        // A client known only by its address is looked up before the lock is taken: a netlink
        // round trip must not hold up every other subsystem's record.
        let neighbour = match &event {
            Event::Tftp { ip, .. } | Event::Http { ip, mac: None, .. } => {
                let known = self.lock().by_ip.contains_key(ip);
                if known {
                    None
                } else {
                    self.neighbours.mac_of(*ip)
                }
            }
            _ => None,
        };
        let now = Instant::now();
        let mut inner = self.lock();
        match event {
            Event::Dhcp {
                machine,
                ip,
                answered,
            } => {
                let Some(firmware) = machine.firmware else {
                    return;
                };
                let (stage, detail) = match (firmware, answered) {
                    (Firmware::Ipxe, _) => (Stage::IpxeDhcp, "iPXE DHCP"),
                    (_, false) => (Stage::Discover, "DHCP request"),
                    (_, true) => (Stage::Offer, "boot offer sent"),
                };
                // A ROM's DISCOVER after the boot went further is a new boot.
                let restart = stage == Stage::Discover;
                let rec = self.entry(&mut inner, machine.mac, now);
                rec.arch = machine.arch.or(rec.arch);
                rec.firmware = Some(firmware);
                if let Some(ip) = ip {
                    rec.ip = Some(ip);
                }
                // A machine that matches no group now keeps the one it had.
                if let Some(group) = self.policy.group_of(machine) {
                    if rec.group.as_deref() != Some(group.name.as_str()) {
                        rec.group = Some(group.name.clone());
                    }
                }
                if restart && rec.stage > Stage::Offer {
                    rec.stages.clear();
                }
                let rec_ip = rec.ip;
                self.advance(
                    &mut inner,
                    machine.mac,
                    stage,
                    Cow::Borrowed(detail),
                    Ok(()),
                    now,
                );
                if let Some(ip) = rec_ip {
                    inner.by_ip.insert(ip, machine.mac);
                }
            }
            Event::Tftp { ip, file, ended } => {
                let Some(mac) = inner.by_ip.get(&ip).copied().or(neighbour) else {
                    return;
                };
                self.entry(&mut inner, mac, now).ip = Some(ip);
                inner.by_ip.insert(ip, mac);
                let outcome = match ended {
                    None | Some(Ok(())) => Ok(()),
                    Some(Err(reason)) => Err(reason.to_owned()),
                };
                let detail = match ended {
                    None => format!("{file} started"),
                    Some(Ok(())) => format!("{file} sent"),
                    Some(Err(_)) => format!("{file} failed"),
                };
                self.advance(
                    &mut inner,
                    mac,
                    Stage::NbpTransfer,
                    detail.into(),
                    outcome,
                    now,
                );
            }
            Event::Http {
                ip,
                mac,
                stage,
                path,
                status,
            } => {
                let Some(mac) = mac.or_else(|| inner.by_ip.get(&ip).copied().or(neighbour)) else {
                    return;
                };
                self.entry(&mut inner, mac, now).ip = Some(ip);
                inner.by_ip.insert(ip, mac);
                let outcome = if status < 400 {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                };
                let detail: Cow<'static, str> = format!("GET {path} {status}").into();
                if stage == Stage::Done {
                    // The last piece: it is also an initrd (or kernel) fetch.
                    self.advance(
                        &mut inner,
                        mac,
                        Stage::Initrd,
                        detail.clone(),
                        outcome.clone(),
                        now,
                    );
                    if outcome.is_ok() {
                        self.advance(&mut inner, mac, Stage::Done, detail, Ok(()), now);
                    }
                } else {
                    self.advance(&mut inner, mac, stage, detail, outcome, now);
                }
            }
        }
    }

    /// The record of `mac`, made if new (forgetting the least recently active past the bound).
    fn entry<'i>(&self, inner: &'i mut Inner, mac: MacAddr, now: Instant) -> &'i mut Record {
        inner.clock += 1;
        let touch = inner.clock;
        inner.recency.push_back((touch, mac));
        if !inner.machines.contains_key(&mac) {
            // The stage list of a forgotten machine is reused: a rack of new machines past
            // the bound allocates nothing per machine here.
            let mut stages = None;
            while inner.machines.len() >= self.max_machines {
                let Some((t, old)) = inner.recency.pop_front() else {
                    break;
                };
                if inner.machines.get(&old).is_some_and(|r| r.touch == t) {
                    if let Some(r) = inner.machines.remove(&old) {
                        if let Some(ip) = r.ip {
                            inner.by_ip.remove(&ip);
                        }
                        stages = Some(r.stages);
                    }
                }
            }
            let mut stages = stages.unwrap_or_else(|| Vec::with_capacity(STAGES_PER_BOOT_HINT));
            stages.clear();
            inner.machines.insert(
                mac,
                Record {
                    mac,
                    ip: None,
                    arch: None,
                    firmware: None,
                    group: None,
                    stage: Stage::Discover,
                    entered: now,
                    failed: false,
                    stages,
                    touch,
                },
            );
        }
        // Keep the recency queue from growing past a few entries per machine.
        if inner.recency.len() > 4 * self.max_machines {
            let live: ClientMap<MacAddr, u64> =
                inner.machines.iter().map(|(m, r)| (*m, r.touch)).collect();
            inner
                .recency
                .retain(|(t, m)| live.get(m) == Some(t) || *t == touch);
        }
        let rec = inner.machines.get_mut(&mac).expect("just inserted");
        rec.touch = touch;
        rec
    }

    /// Moves `mac` into `stage` (closing the stage it was in) or records a failure in it.
    fn advance(
        &self,
        inner: &mut Inner,
        mac: MacAddr,
        stage: Stage,
        detail: Cow<'static, str>,
        outcome: Result<(), String>,
        now: Instant,
    ) {
        let Some(rec) = inner.machines.get_mut(&mac) else {
            return;
        };
        let arch = rec.arch.map_or("unknown", |a| a.label());
        let group = rec.group.as_deref().unwrap_or("none");
        let new_stage = rec.stages.is_empty() || rec.stage != stage;
        if new_stage && !rec.stages.is_empty() {
            let seconds = now.saturating_duration_since(rec.entered).as_secs_f64();
            self.metrics.stage_ended(rec.stage, arch, group, seconds);
        }
        match &outcome {
            Ok(()) => {
                rec.failed = false;
                if stage == Stage::Done && new_stage {
                    self.metrics.completed(arch, group);
                }
            }
            Err(_) => {
                rec.failed = true;
                self.metrics.failed(stage);
            }
        }
        if new_stage {
            rec.stage = stage;
            rec.entered = now;
        }
        let outcome: Cow<'static, str> = match outcome {
            Ok(()) => Cow::Borrowed("ok"),
            Err(reason) => format!("failed: {reason}").into(),
        };
        match rec.stages.last_mut() {
            // Still in the same stage: the entry keeps its start and shows the latest step.
            Some(last) if !new_stage => {
                last.detail = detail;
                last.outcome = outcome;
            }
            _ => {
                if rec.stages.len() >= STAGES_PER_BOOT_MAX {
                    rec.stages.remove(0);
                }
                rec.stages.push(StageEntry {
                    stage,
                    at_unix_ms: unix_ms(),
                    detail,
                    outcome,
                });
            }
        }
    }

    /// Every machine, most recently active first.
    pub fn machines(&self) -> Vec<MachineTimeline> {
        let inner = self.lock();
        let now = Instant::now();
        let mut out: Vec<(u64, MachineTimeline)> = inner
            .machines
            .values()
            .map(|r| (r.touch, self.view(r, now)))
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse(m.0));
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// One machine.
    pub fn machine(&self, mac: MacAddr) -> Option<MachineTimeline> {
        let inner = self.lock();
        inner
            .machines
            .get(&mac)
            .map(|r| self.view(r, Instant::now()))
    }

    /// The option-93 arch `mac`'s DHCP requests said, if it is remembered: for a later request
    /// that does not say it (a GRUB or curl fetch of a script), so that the policy chooses
    /// the same group as it did for the machine's DHCP.
    pub fn arch_of(&self, mac: MacAddr) -> Option<Arch> {
        self.lock().machines.get(&mac).and_then(|r| r.arch)
    }

    /// Machines per current stage, and stuck ones per stage (for the gauges).
    pub fn census(&self) -> (HashMap<Stage, i64>, HashMap<Stage, i64>) {
        let inner = self.lock();
        let now = Instant::now();
        let (mut current, mut stuck) = (HashMap::new(), HashMap::new());
        for r in inner.machines.values() {
            *current.entry(r.stage).or_insert(0) += 1;
            if r.stage != Stage::Done && now.saturating_duration_since(r.entered) > self.stuck_after
            {
                *stuck.entry(r.stage).or_insert(0) += 1;
            }
        }
        (current, stuck)
    }

    fn view(&self, r: &Record, now: Instant) -> MachineTimeline {
        let in_stage = now.saturating_duration_since(r.entered);
        MachineTimeline {
            mac: r.mac.to_string(),
            ip: r.ip,
            arch: r.arch.map(|a| a.label()),
            firmware: r.firmware.map(Firmware::label),
            group: r.group.clone(),
            stage: r.stage,
            in_stage_secs: (in_stage.as_secs_f64() * 1000.0).round() / 1000.0,
            stuck: r.stage != Stage::Done && in_stage > self.stuck_after,
            failed: r.failed,
            stages: r.stages.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
