//! `pxe-bench rack`: N simulated machines boot at once through the whole PXE chain against
//! whatever boot servers answer on an interface, and the report says how long each stage took,
//! when the last machine booted, and what failed where.
//!
//! Each machine is its own client: its own MAC (every DHCP frame goes out of one AF_PACKET
//! socket with that source MAC, and answers are dispatched by transaction id), its own address
//! once leased (put on the interface with netlink, so TFTP and HTTP use kernel sockets bound to
//! it and the kernel answers ARP for it), firmware-like retries. The machines are async tasks
//! on one or a few threads (`--threads`), never a thread each; the simulator's own CPU time
//! per machine is part of the report.

pub(crate) mod dhcp;
pub(crate) mod frame;
pub(crate) mod http;
pub(crate) mod ipxe;
pub(crate) mod machine;
pub(crate) mod plot;
pub(crate) mod report;
pub(crate) mod sys;
pub(crate) mod tftp;

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use dhcp::Firmware;
use machine::{Outcome, Shard, Spec};

/// The firmware DHCP retry schedule: wait 4 s, resend and wait 8, 16, 32 s, then give up (about
/// a minute, PXE-E51), as PXE ROMs and EDK2 do.
pub(crate) const DHCP_SCHEDULE_SECS: [u64; 4] = [4, 8, 16, 32];
/// Block size firmware asks for: 1468 fills a 1500-byte MTU.
pub(crate) const ROM_BLKSIZE: u16 = 1468;
/// Window EDK2's UEFI PXE asks for.
pub(crate) const UEFI_WINDOWSIZE: u16 = 4;
/// Block size iPXE asks for.
pub(crate) const IPXE_BLKSIZE: u16 = 1432;
/// Firmware TFTP timeout before a resend, and the resends before it gives up (PXE-E32).
pub(crate) const TFTP_TIMEOUT: Duration = Duration::from_secs(4);
/// See [`TFTP_TIMEOUT`].
pub(crate) const TFTP_RETRIES: u32 = 6;
/// HTTP connect bound (iPXE gives up on a connection after about this long).
pub(crate) const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP: longest time without progress on a request.
pub(crate) const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Progress refresh interval on a terminal.
const PROGRESS_TTY_INTERVAL: Duration = Duration::from_millis(200);
/// Progress line interval when stderr is not a terminal.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(5);
/// First octets of the simulated MACs (locally administered, unicast).
const MAC_PREFIX: [u8; 2] = [0x02, 0x50];

/// Options of `pxe-bench rack`.
#[derive(Debug, clap::Args)]
pub(crate) struct RackArgs {
    /// Interface on the boot network (in a lab: a port on the machines' VLAN).
    #[arg(long, short = 'i', env = "PXE_BENCH_INTERFACE")]
    pub interface: String,
    /// Machines to boot.
    #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub machines: u32,
    /// Firmware mix, as weights: `bios=1,uefi=1,uefi-http=1` (kinds: bios, uefi, uefi-http).
    #[arg(long, default_value = "bios=1,uefi=1")]
    pub mix: String,
    /// Power-on spread: machines power on at random moments within this many seconds (0: all
    /// at once).
    #[arg(long, default_value_t = 0.0)]
    pub spread_secs: f64,
    /// Seed of the spread, the mix order, the transaction ids and the MACs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many seconds; machines not booted by then fail (`deadline`).
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Threads the machines run on (each its own event loop and AF_PACKET socket).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Skip the TFTP size probe (RRQ, OACK, ERROR 8) before the transfer.
    #[arg(long)]
    pub no_tsize_probe: bool,
    /// Name of the servers under test, in the JSON and on the plot.
    #[arg(long, default_value = "servers under test")]
    pub label: String,
    /// Write the report (summary, completion times, every machine) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the completion curve (machines booted over time) as a PNG here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Progress display on stderr: `auto` (a bar on a terminal, else a line every 5 s), `bar`,
    /// `lines`, `off`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Leave the machines' addresses on the interface at the end.
    #[arg(long)]
    pub keep_addresses: bool,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProgressMode {
    /// A bar on a terminal, else lines.
    Auto,
    /// A bar redrawn in place.
    Bar,
    /// A line every 5 s.
    Lines,
    /// Nothing.
    Off,
}

/// What every machine's code reads.
#[derive(Debug)]
pub(crate) struct Config {
    /// Waits between DHCP resends.
    pub dhcp_schedule: Vec<Duration>,
    /// Whether ROMs probe the size first.
    pub tsize_probe: bool,
    /// HTTP bounds.
    pub http_limits: http::Limits,
}

impl Config {
    /// The TFTP a ROM does: blksize 1468, windowsize 4 on UEFI, the size probe.
    pub(crate) fn rom_tftp(&self, fw: Firmware) -> tftp::Options {
        tftp::Options {
            blksize: ROM_BLKSIZE,
            windowsize: if fw == Firmware::Bios {
                1
            } else {
                UEFI_WINDOWSIZE
            },
            tsize_probe: self.tsize_probe,
            timeout: TFTP_TIMEOUT,
            retries: TFTP_RETRIES,
        }
    }

    /// The TFTP iPXE does (a script or image named without http://): blksize 1432, no probe.
    pub(crate) fn ipxe_tftp(&self) -> tftp::Options {
        tftp::Options {
            blksize: IPXE_BLKSIZE,
            windowsize: 1,
            tsize_probe: false,
            timeout: TFTP_TIMEOUT,
            retries: TFTP_RETRIES,
        }
    }
}

/// Counters every shard updates and the progress display reads.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Machines powered on.
    pub powered_on: AtomicUsize,
    /// Machines in each stage now.
    pub in_stage: [AtomicUsize; 6],
    /// Machines booted.
    pub booted: AtomicUsize,
    /// Machines failed.
    pub failed: AtomicUsize,
}

/// Reads `bios=1,uefi=2` into weights per firmware.
pub(crate) fn parse_mix(text: &str) -> anyhow::Result<Vec<(Firmware, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let fw = Firmware::from_name(name.trim()).with_context(|| {
            format!("--mix: unknown firmware {name:?} (kinds: bios, uefi, uefi-http)")
        })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("--mix: weight of {name} is not a number"))?;
        if mix.iter().any(|(f, _)| *f == fw) {
            bail!("--mix: {name} given twice");
        }
        if weight > 0 {
            mix.push((fw, weight));
        }
    }
    if mix.is_empty() {
        bail!("--mix: no firmware with a weight above 0");
    }
    Ok(mix)
}

/// The machines of a rack: MACs from the seed, firmware by smooth weighted round robin (so
/// any prefix of the rack has the mix), power-on times spread at random within `spread`.
pub(crate) fn rack(n: u32, mix: &[(Firmware, u32)], spread: Duration, seed: u64) -> Vec<Spec> {
    let mut rng = seed ^ 0x5049_5845_5241_434b;
    let seed_octet = (splitmix_once(seed) & 0xff) as u8;
    let total: i64 = mix.iter().map(|(_, w)| i64::from(*w)).sum();
    let mut current: Vec<i64> = vec![0; mix.len()];
    (0..n)
        .map(|i| {
            for (c, (_, w)) in current.iter_mut().zip(mix) {
                *c += i64::from(*w);
            }
            let pick = (0..mix.len())
                .max_by_key(|&k| (current[k], -(k as i64)))
                .unwrap_or(0);
            current[pick] -= total;
            let idx = i.to_be_bytes();
            let r = machine::splitmix(&mut rng);
            let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
            Spec {
                index: i as usize,
                mac: [
                    MAC_PREFIX[0],
                    MAC_PREFIX[1],
                    seed_octet,
                    idx[1],
                    idx[2],
                    idx[3],
                ],
                firmware: mix[pick].0,
                power_on: spread.mul_f64(frac),
            }
        })
        .collect()
}

fn splitmix_once(seed: u64) -> u64 {
    let mut s = seed;
    machine::splitmix(&mut s)
}

/// Runs `pxe-bench rack`; returns the process's exit status (0 every machine booted, 1 some
/// failed, 3 could not run).
pub(crate) fn run(args: &RackArgs) -> anyhow::Result<i32> {
    let mix = parse_mix(&args.mix)?;
    if !(0.0..=3600.0).contains(&args.spread_secs) {
        bail!("--spread-secs must be between 0 and 3600");
    }
    let iface = match sys::Interface::find(&args.interface) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("pxe-bench rack: {e}");
            return Ok(3);
        }
    };
    let nofile = sys::raise_nofile_limit();
    let needed = u64::from(args.machines) * 2 + 64;
    if nofile < needed {
        eprintln!(
            "pxe-bench rack: warning: open-file limit {nofile} is below {needed} (2 per machine)"
        );
    }
    let specs = rack(
        args.machines,
        &mix,
        Duration::from_secs_f64(args.spread_secs),
        args.seed,
    );
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    // The sink keeps unicast answers to port 68 from drawing ICMP errors.
    let sink = sys::port68_sink(&iface);
    let cpu_before = sys::cpu_usage();
    let wall = Instant::now();
    let deadline = Duration::from_secs(args.deadline_secs);
    let threads = usize::try_from(args.threads)
        .unwrap_or(1)
        .min(specs.len().max(1));
    // Shards get every threads-th machine, so each has the mix and the spread.
    let mut shards: Vec<Vec<Spec>> = vec![Vec::new(); threads];
    for spec in specs {
        shards[spec.index % threads].push(spec);
    }
    let start = Instant::now();
    let handles: Vec<_> = shards
        .into_iter()
        .enumerate()
        .map(|(k, specs)| {
            let iface = iface.clone();
            let progress = Arc::clone(&progress);
            let seed = args.seed.wrapping_mul(31).wrapping_add(k as u64 + 1);
            let tsize_probe = !args.no_tsize_probe;
            let keep = args.keep_addresses;
            std::thread::Builder::new()
                .name(format!("rack-{k}"))
                .spawn(move || {
                    run_shard(
                        iface,
                        specs,
                        progress,
                        start,
                        seed,
                        deadline,
                        tsize_probe,
                        keep,
                    )
                })
                .context("starting a shard thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let shown = show_progress(args.progress, &progress, args.machines as usize, &done);
    let mut outcomes = Vec::new();
    let mut stray = 0;
    let mut packet_drops = 0;
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok((o, s, d, e))) => {
                outcomes.extend(o);
                stray += s;
                packet_drops += d;
                errors.extend(e);
            }
            Ok(Err(e)) => {
                done.store(true, Ordering::Relaxed);
                eprintln!("pxe-bench rack: {e:#}");
                return Ok(3);
            }
            Err(_) => bail!("a shard thread panicked"),
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(t) = shown {
        let _ = t.join();
    }
    drop(sink);
    let wall = wall.elapsed();
    let cpu_after = sys::cpu_usage();
    outcomes.sort_by_key(|o| o.index);
    for e in &errors {
        eprintln!("pxe-bench rack: warning: {e}");
    }
    let report = report::Report::new(
        args,
        &mix,
        outcomes,
        report::SimulatorCost {
            wall_secs: wall.as_secs_f64(),
            user_secs: (cpu_after.0 - cpu_before.0).as_secs_f64(),
            system_secs: (cpu_after.1 - cpu_before.1).as_secs_f64(),
            peak_rss_kib: cpu_after.2,
            threads: threads as u32,
            stray_frames: stray,
            packet_drops,
        },
    );
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::draw(
            path,
            &format!("{} machines booting", args.machines),
            &[plot::Curve::of(&report)],
        )?;
    }
    Ok(if report.summary.failed == 0 { 0 } else { 1 })
}

/// Result of one shard: outcomes, stray frames, frames dropped by its socket, cleanup errors.
type ShardResult = (Vec<Outcome>, u64, u64, Vec<String>);

#[expect(
    clippy::too_many_arguments,
    reason = "the thread's whole input, moved in at once"
)]
fn run_shard(
    iface: sys::Interface,
    specs: Vec<Spec>,
    progress: Arc<Progress>,
    start: Instant,
    seed: u64,
    deadline: Duration,
    tsize_probe: bool,
    keep_addresses: bool,
) -> anyhow::Result<ShardResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let cfg = Rc::new(Config {
            dhcp_schedule: DHCP_SCHEDULE_SECS.iter().map(|s| Duration::from_secs(*s)).collect(),
            tsize_probe,
            http_limits: http::Limits {
                connect: HTTP_CONNECT_TIMEOUT,
                idle: HTTP_IDLE_TIMEOUT,
            },
        });
        let start = tokio::time::Instant::from_std(start);
        let shard = Rc::new(
            Shard::new(iface.clone(), cfg, Arc::clone(&progress), start, start + deadline, seed).with_context(|| {
                format!(
                    "opening the AF_PACKET and netlink sockets on {} (needs root or CAP_NET_RAW and CAP_NET_ADMIN)",
                    iface.name
                )
            })?,
        );
        let receiver = tokio::task::spawn_local(Rc::clone(&shard).receive());
        let tasks: Vec<_> = specs
            .into_iter()
            .map(|spec| tokio::task::spawn_local(machine::boot(Rc::clone(&shard), spec)))
            .collect();
        // Every machine ends by itself: booted, failed, or at the deadline.
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            outcomes.push(task.await.context("a machine's task panicked")?);
        }
        receiver.abort();
        let errors = if keep_addresses {
            Vec::new()
        } else {
            shard.remove_addresses()
        };
        Ok((outcomes, shard.stray_frames.get(), shard.packet_drops(), errors))
    })
}

/// Starts the progress display thread (none for `off`).
fn show_progress(
    mode: ProgressMode,
    progress: &Arc<Progress>,
    total: usize,
    done: &Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let tty = std::io::stderr().is_terminal();
    let bar = match mode {
        ProgressMode::Off => return None,
        ProgressMode::Bar => true,
        ProgressMode::Lines => false,
        ProgressMode::Auto => tty,
    };
    let progress = Arc::clone(progress);
    let done = Arc::clone(done);
    let start = Instant::now();
    std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            let interval = if bar {
                PROGRESS_TTY_INTERVAL
            } else {
                PROGRESS_LINE_INTERVAL
            };
            let mut last = Instant::now();
            loop {
                let finished = done.load(Ordering::Relaxed);
                if finished || last.elapsed() >= interval {
                    last = Instant::now();
                    let line = report::progress_line(&progress, total, start.elapsed(), bar);
                    if bar {
                        eprint!("\r{line}\x1b[K");
                    } else {
                        eprintln!("{line}");
                    }
                }
                if finished {
                    if bar {
                        eprintln!();
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_and_rack() {
        assert!(parse_mix("bios=1,nope=2").is_err());
        assert!(parse_mix("bios=0").is_err());
        assert!(parse_mix("bios,bios").is_err());
        let mix = parse_mix("bios=1, uefi=2 ,uefi-http=1").unwrap();
        let r = rack(8, &mix, Duration::from_secs(10), 7);
        let count = |fw| r.iter().filter(|s| s.firmware == fw).count();
        assert_eq!(
            (
                count(Firmware::Bios),
                count(Firmware::UefiX64),
                count(Firmware::UefiHttp)
            ),
            (2, 4, 2)
        );
        assert!(r.iter().all(|s| s.power_on <= Duration::from_secs(10)));
        let mut macs: Vec<_> = r.iter().map(|s| s.mac).collect();
        macs.dedup();
        assert_eq!(macs.len(), 8);
        assert!(
            r.iter().all(|s| s.mac[0] & 0x03 == 0x02),
            "locally administered unicast"
        );
        let burst = rack(3, &mix, Duration::ZERO, 7);
        assert!(burst.iter().all(|s| s.power_on.is_zero()));
    }
}
