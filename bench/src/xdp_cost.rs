//! `pxe-bench xdp-cost`: what the daemon's XDP program costs per frame, by class. Each frame
//! (built by the same builders as the program's fixture tests) runs through the kernel with
//! BPF_PROG_TEST_RUN `--repeat` times; the kernel reports the mean time per run. One column
//! with the program set up as `--datapath kernel` runs it (classify, count, shed storms, pass
//! everything), one as `--datapath xdp` does (steering on: PXE DHCP and TFTP to the server are
//! redirected to the queue's AF_XDP socket; no socket is bound here, so the redirect falls back
//! to XDP_PASS after the XSKMAP lookup). Every row first checks, on one run, that the program
//! counted the frame in the class and verdict the row names.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use pxe_common::{PacketClass, Verdict, XdpConfig, XDP_FLAG_STEER_DHCP, XDP_FLAG_STEER_TFTP};
use pxe_daemon::xdp::{
    frames::{Frame, CLIENT_MAC, PXE_BIOS},
    XdpAttachment,
};
use serde::Serialize;

/// XDP_DROP.
const XDP_DROP: u32 = 1;
/// XDP_PASS.
const XDP_PASS: u32 = 2;
/// The server's address in the frames addressed to it.
const SERVER: [u8; 4] = [198, 18, 0, 1];
/// Steering as `--datapath xdp` sets it: DHCP, 4011 and TFTP to AF_XDP.
const STEER_ALL: u32 = XDP_FLAG_STEER_DHCP | XDP_FLAG_STEER_TFTP;
/// A storm-shedding rate no frame of a run reaches: the token bucket is looked up and
/// refilled as in production, and never empties (the default of 20/s would drop all but the
/// first 41 of a million repeats from one MAC). Kept below 1e9 so that the program's refill
/// arithmetic cannot overflow.
const UNREACHED_RATE_PER_SEC: u32 = 1_000_000_000;
/// Burst of [`UNREACHED_RATE_PER_SEC`].
const UNREACHED_BURST: u32 = 1_000_000;
/// Trials of each cell: the median is reported (the machine is shared).
const TRIALS: usize = 3;

/// Flags of `pxe-bench xdp-cost`.
#[derive(Debug, clap::Args)]
pub(crate) struct CostArgs {
    /// Runs of the program per frame and trial (BPF_PROG_TEST_RUN's repeat).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    repeat: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The program's settings a column runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// `--datapath kernel`: no steering.
    Kernel,
    /// `--datapath xdp`: steering to AF_XDP on.
    Xdp,
    /// A storm: one MAC far over `rate_limit_pps` (1 frame/s, no burst).
    Storm,
}

/// One row: a kind of frame and what the program must do with it.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    class: PacketClass,
    /// Verdict under `--datapath kernel` and under `--datapath xdp`.
    verdicts: [Verdict; 2],
    /// Only run in the storm setup (the rate-limited row).
    storm: bool,
}

/// One measured cell.
#[derive(Debug, Serialize)]
struct Cell {
    /// `kernel` or `xdp` (the storm row: `storm`).
    setup: &'static str,
    verdict: &'static str,
    action: &'static str,
    /// Median over the trials of the kernel's mean ns per run.
    ns_per_frame: f64,
    /// Every trial's mean ns per run.
    trials_ns: Vec<f64>,
}

/// One row of the report.
#[derive(Debug, Serialize)]
struct Row {
    frame: &'static str,
    class: &'static str,
    bytes: usize,
    cells: Vec<Cell>,
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    repeat: u32,
    trials: usize,
    rows: Vec<Row>,
}

fn cases() -> Vec<Case> {
    use PacketClass as C;
    use Verdict::{Pass, RateLimited, Steer};
    let to_server = |f: Frame| Frame {
        dst_ip: SERVER,
        ..f
    };
    let rrq = crate::tftp::wire::rrq(
        "undionly.kpxe",
        &[("tsize", "0".to_owned()), ("blksize", "1468".to_owned())],
    );
    vec![
        Case {
            name: "TCP segment to the server's HTTP port",
            frame: to_server(Frame {
                proto: 6,
                payload: 1400,
                ..Frame::udp(80)
            })
            .bytes(),
            class: C::Other,
            verdicts: [Pass, Pass],
            storm: false,
        },
        Case {
            name: "ARP request",
            frame: Frame {
                ethertype: 0x0806,
                payload: 0,
                ..Frame::udp(0)
            }
            .bytes(),
            class: C::Other,
            verdicts: [Pass, Pass],
            storm: false,
        },
        Case {
            name: "DNS query (UDP 53) to the server",
            frame: to_server(Frame {
                payload: 40,
                ..Frame::udp(53)
            })
            .bytes(),
            class: C::Other,
            verdicts: [Pass, Pass],
            storm: false,
        },
        Case {
            name: "non-PXE DHCP DISCOVER (proxy mode passes it)",
            frame: Frame::dhcp(
                CLIENT_MAC,
                &[
                    (60, b"MSFT 5.0"),
                    (12, b"laptop-of-someone"),
                    (55, &[1, 3, 6, 15]),
                ],
            )
            .bytes(),
            class: C::Dhcp,
            verdicts: [Pass, Pass],
            storm: false,
        },
        Case {
            name: "PXE DISCOVER (BIOS ROM, option 60 after 57/55/93)",
            frame: Frame::dhcp(
                CLIENT_MAC,
                &[
                    (57, &[4, 236]),
                    (
                        55,
                        &[
                            1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67,
                        ],
                    ),
                    (93, &[0, 0]),
                    (94, &[1, 2, 1]),
                    (60, PXE_BIOS),
                ],
            )
            .bytes(),
            class: C::Dhcp,
            verdicts: [Pass, Steer],
            storm: false,
        },
        Case {
            name: "boot-server REQUEST to port 4011",
            frame: to_server(Frame {
                dst_port: pxe_common::PXE_BOOT_SERVER_PORT,
                ..Frame::dhcp(CLIENT_MAC, &[(60, PXE_BIOS), (93, &[0, 7])])
            })
            .bytes(),
            class: C::PxeDiscovery,
            verdicts: [Pass, Steer],
            storm: false,
        },
        Case {
            name: "TFTP RRQ (tsize, blksize) to port 69",
            frame: to_server(Frame {
                data: Some(rrq),
                ..Frame::udp(pxe_common::TFTP_PORT)
            })
            .bytes(),
            class: C::Tftp,
            verdicts: [Pass, Steer],
            storm: false,
        },
        Case {
            name: "TFTP ACK to a transfer port",
            frame: to_server(Frame {
                data: Some(vec![0, 4, 0, 1]),
                ..Frame::udp(30_000)
            })
            .bytes(),
            class: C::TftpTransfer,
            verdicts: [Pass, Steer],
            storm: false,
        },
        Case {
            name: "truncated UDP header",
            frame: Frame {
                truncate_to: Some(14 + 20 + 4),
                ..Frame::udp(pxe_common::DHCP_SERVER_PORT)
            }
            .bytes(),
            class: C::Malformed,
            verdicts: [Pass, Pass],
            storm: false,
        },
        Case {
            name: "IPv4 fragment (not first) to port 67",
            frame: Frame {
                frag: 0x0010,
                ..Frame::udp(pxe_common::DHCP_SERVER_PORT)
            }
            .bytes(),
            class: C::Other,
            verdicts: [Pass, Pass],
            storm: false,
        },
        Case {
            name: "PXE DISCOVER over its MAC's rate (storm)",
            frame: Frame::dhcp(CLIENT_MAC, &[(93, &[0, 0]), (60, PXE_BIOS)]).bytes(),
            class: C::Dhcp,
            verdicts: [RateLimited, RateLimited],
            storm: true,
        },
    ]
}

fn config(setup: Setup) -> XdpConfig {
    match setup {
        Setup::Kernel | Setup::Xdp => XdpConfig {
            flags: if setup == Setup::Xdp { STEER_ALL } else { 0 },
            server_ip_be: u32::from_ne_bytes(SERVER),
            rate_per_sec: UNREACHED_RATE_PER_SEC,
            rate_burst: UNREACHED_BURST,
            ..XdpConfig::DEFAULT
        },
        Setup::Storm => XdpConfig {
            flags: STEER_ALL,
            server_ip_be: u32::from_ne_bytes(SERVER),
            rate_per_sec: 1,
            rate_burst: 0,
            ..XdpConfig::DEFAULT
        },
    }
}

const fn setup_label(setup: Setup) -> &'static str {
    match setup {
        Setup::Kernel => "kernel",
        Setup::Xdp => "xdp",
        Setup::Storm => "storm",
    }
}

fn action_label(action: u32) -> &'static str {
    match action {
        0 => "aborted",
        XDP_DROP => "drop",
        XDP_PASS => "pass",
        3 => "tx",
        4 => "redirect",
        _ => "?",
    }
}

/// Runs `case` once and returns the verdict it was counted under (exactly one counter of its
/// class must grow).
fn verdict_of(xdp: &mut XdpAttachment, case: &Case) -> anyhow::Result<(Verdict, u32)> {
    let counters = xdp.counters();
    let before: Vec<u64> = Verdict::ALL
        .iter()
        .map(|v| counters.verdict(case.class, *v))
        .collect();
    let run = xdp.test_run(&case.frame, 1)?;
    let grown: Vec<Verdict> = Verdict::ALL
        .iter()
        .zip(&before)
        .filter(|(v, b)| counters.verdict(case.class, **v) > **b)
        .map(|(v, _)| *v)
        .collect();
    ensure!(
        grown.len() == 1,
        "{}: the program counted it under {grown:?} of class {}, not exactly one verdict",
        case.name,
        case.class.label()
    );
    Ok((grown[0], run.action))
}

fn measure(
    xdp: &mut XdpAttachment,
    setup: Setup,
    case: &Case,
    repeat: u32,
) -> anyhow::Result<Cell> {
    let want = match setup {
        Setup::Kernel => case.verdicts[0],
        Setup::Xdp | Setup::Storm => case.verdicts[1],
    };
    // A storm row needs its bucket emptied first: the first frame of a MAC is let through.
    if setup == Setup::Storm {
        xdp.test_run(&case.frame, 2)?;
    }
    let (verdict, action) = verdict_of(xdp, case)?;
    ensure!(
        verdict == want,
        "{} ({} setup): counted as {}, expected {}",
        case.name,
        setup_label(setup),
        verdict.label(),
        want.label()
    );
    let mut trials = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        let run = xdp.test_run(&case.frame, repeat)?;
        ensure!(
            run.action == action,
            "{}: action {} in the timed runs, {} in the checked one",
            case.name,
            run.action,
            action
        );
        trials.push(duration_ns(run.per_run));
    }
    let mut sorted = trials.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Cell {
        setup: setup_label(setup),
        verdict: verdict.label(),
        action: action_label(action),
        ns_per_frame: sorted[sorted.len() / 2],
        trials_ns: trials,
    })
}

fn duration_ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// Runs the benchmark; prints a table or JSON.
pub(crate) fn run(args: &CostArgs) -> anyhow::Result<()> {
    // The program's log reader is a tokio task.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    let _guard = rt.enter();
    let mut programs = Vec::new();
    for setup in [Setup::Kernel, Setup::Xdp, Setup::Storm] {
        let xdp = XdpAttachment::load_unattached(config(setup)).with_context(|| {
            format!(
                "loading the XDP program ({} setup; needs root)",
                setup_label(setup)
            )
        })?;
        programs.push((setup, xdp));
    }
    let mut rows = Vec::new();
    for case in cases() {
        let mut cells = Vec::new();
        for (setup, xdp) in &mut programs {
            if case.storm != (*setup == Setup::Storm) {
                continue;
            }
            cells.push(measure(xdp, *setup, &case, args.repeat)?);
        }
        rows.push(Row {
            frame: case.name,
            class: case.class.label(),
            bytes: case.frame.len(),
            cells,
        });
    }
    let report = Report {
        repeat: args.repeat,
        trials: TRIALS,
        rows,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("writing JSON")?
        );
    } else {
        println!(
            "XDP program, ns per frame (kernel's mean over {} runs, median of {TRIALS} trials)",
            report.repeat
        );
        println!(
            "{:<52} {:<14} {:>24} {:>24}",
            "FRAME", "CLASS", "--datapath kernel", "--datapath xdp"
        );
        for row in &report.rows {
            let cell = |c: &Cell| format!("{:.1} ns ({}, {})", c.ns_per_frame, c.verdict, c.action);
            let cols: Vec<String> = row.cells.iter().map(cell).collect();
            println!(
                "{:<52} {:<14} {:>24} {:>24}",
                row.frame,
                row.class,
                cols.first().cloned().unwrap_or_default(),
                cols.get(1).cloned().unwrap_or_default()
            );
        }
    }
    Ok(())
}
