//! `cargo xtask bench xdp --parts xsk`: our AF_XDP binding (`pxe_daemon::afxdp`) against the
//! xdpilone crate, same run, same workload (`pxe-bench xsk-compare`: UDP echo over a veth pair
//! through the daemon's XDP program, both bindings in alternation). Written to its own section
//! of bench/RESULTS.md ("xsk"), so that running this part alone leaves the XDP section as it
//! is. The decision it informs is in docs/afxdp.md ("xdpilone").

use std::{fmt::Write as _, path::Path};

use anyhow::{ensure, Context as _};

use crate::bench::{
    results,
    run_info::{command_line, commit, date_utc, loadavg, machine},
};

/// Section of bench/RESULTS.md.
const SECTION: &str = "xsk";
/// The two workloads: 64-byte datagrams (the ring work: the default rates 20,000 to
/// 200,000/s, 3 s each, 5 rounds), and TFTP-sized ones with our device checksums (what TX
/// metadata, which xdpilone lacks, buys), each with the flags of a full and a `--quick` run.
const WORKLOADS: &[Workload] = &[
    Workload {
        title: "a. 64-byte datagrams: the ring work",
        full: &[],
        quick: &["--rates", "20000,100000", "--secs", "1", "--rounds", "1"],
    },
    Workload {
        title: "b. 1,400-byte datagrams, ours with device checksums (TX metadata)",
        full: &[
            "--payload",
            "1400",
            "--device-checksum",
            "--rates",
            "20000,50000,100000",
            "--rounds",
            "3",
        ],
        quick: &[
            "--payload",
            "1400",
            "--device-checksum",
            "--rates",
            "20000",
            "--secs",
            "1",
            "--rounds",
            "1",
        ],
    },
];

/// One `pxe-bench xsk-compare` run of the section.
struct Workload {
    title: &'static str,
    full: &'static [&'static str],
    quick: &'static [&'static str],
}

/// Runs `pxe-bench xsk-compare` and writes (or, `quick`, prints) its section.
pub(super) fn run(generator: &Path, quick: bool) -> anyhow::Result<()> {
    println!("== d. AF_XDP bindings: ours against xdpilone (pxe-bench xsk-compare)");
    let loadavg = loadavg();
    let date = date_utc();
    let mut parts = String::new();
    let mut commands = Vec::new();
    for w in WORKLOADS {
        let args = if quick { w.quick } else { w.full };
        println!("-- {}", w.title);
        let output = std::process::Command::new(generator)
            .arg("xsk-compare")
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running pxe-bench xsk-compare")?;
        let body = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success(),
            "pxe-bench xsk-compare failed ({}): {body}",
            output.status
        );
        let command = format!(
            "pxe-bench xsk-compare{}{}",
            if args.is_empty() { "" } else { " " },
            args.join(" ")
        );
        println!("{body}");
        // The file keeps the summary; every step and the servers' counters are printed above.
        let summary = body.split("\nEvery step").next().unwrap_or_default();
        writeln!(parts, "### {}\n\n`{command}`\n\n{summary}", w.title)?;
        commands.push(command);
    }
    let mut s = String::from("## AF_XDP bindings: ours against xdpilone\n\n");
    writeln!(
        s,
        "Made by `{}` on {date}, commit {}{}: `{}`.\n\n\
         - Machine: {}; load average at the start {loadavg}: other engineers' builds and tests \
         share the 2 cores. Server and load generator share them too.\n\
         - AF_XDP on veth runs in copy mode only: both bindings' zero-copy binds are refused \
         there, so this compares the ring work and the copy-mode kernel path, not zero-copy.\n\
         - The decision it informs: [docs/afxdp.md](../docs/afxdp.md), \"xdpilone\". Every \
         step and the servers' ring counters are printed by the run (not kept here).\n",
        command_line(),
        commit(),
        if quick {
            " (--quick: short steps; not a measurement to quote)"
        } else {
            ""
        },
        commands.join("` and `"),
        machine(),
    )?;
    s.push_str(&parts);
    println!("\n{s}");
    if quick {
        println!("(--quick: {} left alone)", results::RESULTS_FILE);
    } else {
        let path = results::write_section(SECTION, &s)?;
        println!("== wrote the xsk section of {}", path.display());
    }
    Ok(())
}
