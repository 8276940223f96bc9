//! The DHCP section of bench/RESULTS.md: a summary per mode with the ratio ours/dnsmasq, the
//! goals of the benchmark issue, and every step measured.

use std::time::Duration;

use super::{
    servers::{Mode, Server},
    RunInfo, Step, LOSS_LIMIT,
};
use crate::bench::results::{method_link, table};

/// The heading's anchor in bench/README.md.
const METHOD_ANCHOR: &str = "dhcp-report";

/// Full exchanges per second pxe-daemon must sustain with its lease store on disk.
const FULL_RATE_GOAL: u32 = 20_000;

/// One line per step for the console.
pub(super) fn step_line(s: &Step) -> String {
    let latency = s
        .report
        .exchanges
        .iter()
        .map(|e| format!("{} avg {}", e.name, ms(e.avg_ms)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{:<5} {:<10} {:>6}/s{}: answered {:.0}/s, loss {:.2}%, {latency}; server {:.0}% of a core \
         ({} µs/exchange), perfdhcp {:.0}%, rest of machine {:.0}%; rcvbuf drops {}/{}",
        s.mode.label(),
        s.server.label(),
        s.rate,
        if s.attempt > 1 { " (again)" } else { "" },
        s.answered_per_sec(),
        s.report.loss() * 100.0,
        share(s.server_cpu, s.wall),
        micros(s.server_cpu_per_exchange()),
        share(s.perfdhcp_cpu, s.wall),
        s.rest_of_machine() * 100.0,
        s.server_rcvbuf_drops,
        s.client_rcvbuf_drops,
    )
}

/// The section's Markdown.
pub(super) fn render(info: &RunInfo, steps: &[Step]) -> String {
    let mut out = String::from("## DHCP: pxe-daemon against dnsmasq, driven by perfdhcp\n\n");
    out.push_str(&format!(
        "Made by `{}` on {}, commit {}{}.\n\n",
        info.command,
        info.date,
        info.commit,
        if info.quick {
            " (--quick: one short step per mode; not a measurement to quote)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "- Machine: {}; load average at the start {}.\n\
         - {}; pxe-daemon: release build, kernel-socket datapath, XDP program attached in `{}` \
         mode.\n\
         - perfdhcp relays from {} to the servers at {}/16, {} distinct clients; a pool of {} \
         addresses in full mode. {} s per step; a step that loses {:.0}% or more is run once \
         more; each step waited up to {} s for other work to fall under half a core. Lease files \
         on {}; `net.core.rmem_default` {} KiB during the run.\n\n{}\n\n",
        info.machine,
        info.loadavg,
        info.peers,
        info.xdp_attach_mode,
        info.addressing.client,
        info.addressing.server,
        info.clients,
        info.addressing.pool_size(),
        info.step_secs,
        LOSS_LIMIT * 100.0,
        info.quiet_wait_secs,
        info.lease_fs,
        info.rcvbuf_default / 1024,
        method_link(METHOD_ANCHOR),
    ));

    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| steps.iter().any(|s| s.mode == *m))
        .collect();
    out.push_str("### Summary\n\n");
    let mut rows = Vec::new();
    for &mode in &modes {
        rows.extend(summary_rows(mode, steps));
    }
    out.push_str(&table(
        &[
            "mode",
            "figure",
            "pxe-daemon",
            "dnsmasq",
            "pxe-daemon / dnsmasq",
        ],
        &rows,
    ));
    out.push_str("\n### Goals: faster than dnsmasq, 20,000 full exchanges/s\n\n");
    let goals: Vec<Vec<String>> = modes.iter().flat_map(|&m| goal_rows(m, steps)).collect();
    out.push_str(&table(&["goal", "result", "met"], &goals));

    out.push_str("\n### Every step\n\n");
    let rows: Vec<Vec<String>> = steps.iter().map(step_row).collect();
    out.push_str(&table(
        &[
            "mode",
            "server",
            "rate asked /s",
            "sent /s",
            "answered /s",
            "loss %",
            "DISCOVER-OFFER ms avg / max",
            "REQUEST-ACK ms avg / max",
            "server CPU % of a core",
            "server µs / exchange",
            "perfdhcp CPU % of a core",
            "rest of machine % of a core",
            "rcvbuf drops server / perfdhcp",
            "lease file",
            "note",
        ],
        &rows,
    ));
    out
}

/// The step of `server` at `rate` in `mode`, if measured.
fn step_at(steps: &[Step], mode: Mode, server: Server, rate: u32) -> Option<&Step> {
    steps
        .iter()
        .find(|s| s.mode == mode && s.server == server && s.rate == rate)
}

/// The highest rate `server` sustained in `mode`.
/// The sustained step with the most exchanges answered per second (not the highest rate asked:
/// when perfdhcp cannot send what was asked, the rate asked overstates what was shown).
fn best(steps: &[Step], mode: Mode, server: Server) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.mode == mode && s.server == server && s.sustained())
        .max_by(|a, b| a.answered_per_sec().total_cmp(&b.answered_per_sec()))
}

/// The rate the per-exchange figures are compared at: the highest both servers sustained, else
/// the lowest both were run at.
fn reference_rate(steps: &[Step], mode: Mode) -> Option<u32> {
    let both = |sustained: bool| {
        steps
            .iter()
            .filter(|s| s.mode == mode && s.server == Server::Ours)
            .filter(|s| !sustained || s.sustained())
            .map(|s| s.rate)
            .filter(|&r| {
                step_at(steps, mode, Server::Dnsmasq, r)
                    .is_some_and(|d| !sustained || d.sustained())
            })
            .collect::<Vec<u32>>()
    };
    both(true)
        .into_iter()
        .max()
        .or_else(|| both(false).into_iter().min())
}

fn summary_rows(mode: Mode, steps: &[Step]) -> Vec<Vec<String>> {
    let m = mode.label().to_owned();
    let mut rows = Vec::new();
    // Exchanges answered per second, rounded down to a whole number.
    let best_rate = |server| best(steps, mode, server).map(|s| s.answered_per_sec() as u32);
    let lowest = steps
        .iter()
        .filter(|s| s.mode == mode)
        .map(|s| s.rate)
        .min();
    let rate_cell = |server| match (best_rate(server), lowest) {
        (Some(r), _) => r.to_string(),
        (None, Some(low)) => format!("under {low}"),
        (None, None) => String::from("—"),
    };
    rows.push(vec![
        m.clone(),
        format!(
            "highest rate with < {:.0}% loss, exchanges/s",
            LOSS_LIMIT * 100.0
        ),
        rate_cell(Server::Ours),
        rate_cell(Server::Dnsmasq),
        ratio(
            best_rate(Server::Ours).map(f64::from),
            best_rate(Server::Dnsmasq).map(f64::from),
        ),
    ]);
    for server in Server::ALL {
        if let Some(s) = best(steps, mode, server) {
            if s.client_bound() {
                rows.push(vec![
                    m.clone(),
                    format!(
                        "(the {} figure is perfdhcp's limit, not the server's)",
                        server.label()
                    ),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
    }
    let Some(rate) = reference_rate(steps, mode) else {
        return rows;
    };
    let ours = step_at(steps, mode, Server::Ours, rate);
    let theirs = step_at(steps, mode, Server::Dnsmasq, rate);
    let mut figure =
        |name: String, f: &dyn Fn(&Step) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
            let a = ours.and_then(f);
            let b = theirs.and_then(f);
            rows.push(vec![
                m.clone(),
                name,
                a.map_or_else(|| String::from("—"), fmt),
                b.map_or_else(|| String::from("—"), fmt),
                ratio(a, b),
            ]);
        };
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    figure(
        format!("server CPU per exchange at {rate}/s, µs"),
        &|s| us(s.server_cpu_per_exchange()),
        &|v| format!("{v:.1}"),
    );
    figure(
        format!("server CPU at {rate}/s, % of a core"),
        &|s| Some(share(s.server_cpu, s.wall)),
        &|v| format!("{v:.0}"),
    );
    figure(
        format!("loss at {rate}/s, %"),
        &|s| Some(s.report.loss() * 100.0),
        &|v| format!("{v:.2}"),
    );
    for (i, name) in ["DISCOVER-OFFER", "REQUEST-ACK"].into_iter().enumerate() {
        if mode == Mode::Proxy && i > 0 {
            break;
        }
        figure(
            format!("{name} latency avg at {rate}/s, ms"),
            &|s| s.report.exchange(name).and_then(|e| e.avg_ms),
            &|v| format!("{v:.3}"),
        );
        figure(
            format!("{name} latency max at {rate}/s, ms"),
            &|s| s.report.exchange(name).and_then(|e| e.max_ms),
            &|v| format!("{v:.1}"),
        );
    }
    // perfdhcp polls: its CPU time hardly follows the rate, so a share of a core says more
    // than a time per exchange.
    figure(
        format!("perfdhcp CPU at {rate}/s, % of a core"),
        &|s| Some(share(s.perfdhcp_cpu, s.wall)),
        &|v| format!("{v:.0}"),
    );
    if mode == Mode::Full {
        let store = |s: Option<&Step>| s.map_or_else(|| String::from("—"), store_cell);
        rows.push(vec![
            m,
            format!("lease store at {rate}/s"),
            store(ours),
            store(theirs),
            String::from("—"),
        ]);
    }
    rows
}

fn goal_rows(mode: Mode, steps: &[Step]) -> Vec<Vec<String>> {
    let m = mode.label();
    let ours = best(steps, mode, Server::Ours);
    let theirs = best(steps, mode, Server::Dnsmasq);
    let mut rows = Vec::new();
    let rate_met = match (ours, theirs) {
        (Some(o), Some(t)) => o.answered_per_sec() >= t.answered_per_sec(),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let rate_of = |s: Option<&Step>| {
        s.map_or_else(
            || String::from("none"),
            |s| format!("{:.0}", s.answered_per_sec().floor()),
        )
    };
    rows.push(vec![
        format!("{m}: at least dnsmasq's rate under 1% loss"),
        format!("{} vs {}", rate_of(ours), rate_of(theirs)),
        yes_no(rate_met),
    ]);
    if let Some(rate) = reference_rate(steps, mode) {
        let cpu =
            |server| step_at(steps, mode, server, rate).and_then(Step::server_cpu_per_exchange);
        let (a, b) = (cpu(Server::Ours), cpu(Server::Dnsmasq));
        rows.push(vec![
            format!("{m}: less server CPU per exchange than dnsmasq (at {rate}/s)"),
            format!("{} vs {} µs", micros(a), micros(b)),
            yes_no(matches!((a, b), (Some(a), Some(b)) if a < b)),
        ]);
    }
    if mode == Mode::Full {
        let on_disk = ours.is_some_and(|s| s.lease_file_bytes.is_some_and(|b| b > 0));
        let result = match ours {
            Some(s) => format!(
                "{:.0} exchanges/s answered{}, store {}",
                s.answered_per_sec().floor(),
                if s.client_bound() {
                    " (perfdhcp's limit)"
                } else {
                    ""
                },
                store_cell(s)
            ),
            None => String::from("no rate sustained"),
        };
        rows.push(vec![
            format!(
                "full: at least {FULL_RATE_GOAL} exchanges/s under 1% loss, lease store on disk"
            ),
            result,
            if on_disk {
                yes_no(ours.is_some_and(|s| s.answered_per_sec() >= f64::from(FULL_RATE_GOAL)))
            } else {
                String::from("not yet: the store was not on disk")
            },
        ]);
    }
    rows
}

fn step_row(s: &Step) -> Vec<String> {
    let latency = |name: &str| {
        s.report.exchange(name).map_or_else(
            || String::from("—"),
            |e| format!("{} / {}", ms(e.avg_ms), ms(e.max_ms)),
        )
    };
    let mut notes = Vec::new();
    if !s.sustained() {
        notes.push(format!("≥ {:.0}% loss", LOSS_LIMIT * 100.0));
    }
    if s.client_bound() {
        notes.push(String::from("perfdhcp-bound"));
    }
    if s.attempt > 1 {
        notes.push(format!("attempt {}", s.attempt));
    }
    if s.busy_start {
        notes.push(String::from("machine busy at start"));
    }
    vec![
        s.mode.label().to_owned(),
        s.server.label().to_owned(),
        s.rate.to_string(),
        format!("{:.0}", s.sent_per_sec()),
        format!("{:.0}", s.answered_per_sec()),
        format!("{:.2}", s.report.loss() * 100.0),
        latency("DISCOVER-OFFER"),
        latency("REQUEST-ACK"),
        format!("{:.0}", share(s.server_cpu, s.wall)),
        micros(s.server_cpu_per_exchange()),
        format!("{:.0}", share(s.perfdhcp_cpu, s.wall)),
        format!("{:.0}", s.rest_of_machine() * 100.0),
        format!("{} / {}", s.server_rcvbuf_drops, s.client_rcvbuf_drops),
        if s.mode == Mode::Full {
            store_cell(s)
        } else {
            String::from("—")
        },
        notes.join(", "),
    ]
}

/// Where the step's leases were: on disk with the file's size, or in memory only.
fn store_cell(s: &Step) -> String {
    match s.lease_file_bytes {
        Some(b) if b > 0 => format!("on disk, {} KiB", b.div_ceil(1024)),
        _ => String::from("in memory only (no lease file written)"),
    }
}

/// `time` as a percentage of one core over `wall`.
fn share(time: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    time.as_secs_f64() / wall.as_secs_f64() * 100.0
}

fn micros(d: Option<Duration>) -> String {
    d.map_or_else(
        || String::from("—"),
        |d| format!("{:.1}", d.as_secs_f64() * 1e6),
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| String::from("—"), |v| format!("{v:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => String::from("—"),
    }
}

fn yes_no(met: bool) -> String {
    String::from(if met { "yes" } else { "no" })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{super::servers::Addressing, *};
    use crate::bench::perfdhcp::{ExchangeStats, Report};

    fn step(mode: Mode, server: Server, rate: u32, received_share: f64, cpu_ms: u64) -> Step {
        let sent = u64::from(rate) * 5;
        let received = (sent as f64 * received_share) as u64;
        let stats = |name: &str, sent: u64, received: u64| ExchangeStats {
            name: name.to_owned(),
            sent,
            received,
            drops: sent - received,
            avg_ms: Some(0.5),
            max_ms: Some(9.0),
            ..ExchangeStats::default()
        };
        let mut exchanges = vec![stats("DISCOVER-OFFER", sent, received)];
        if mode == Mode::Full {
            exchanges.push(stats("REQUEST-ACK", received, received));
        }
        Step {
            mode,
            server,
            rate,
            period: Duration::from_secs(5),
            report: Report { exchanges },
            server_cpu: Duration::from_millis(cpu_ms),
            perfdhcp_cpu: Duration::from_millis(2000),
            wall: Duration::from_secs(5),
            machine_busy: Duration::from_secs(4),
            server_rcvbuf_drops: 0,
            client_rcvbuf_drops: 0,
            lease_file_bytes: (mode == Mode::Full && server == Server::Dnsmasq).then_some(4096),
            attempt: 1,
            busy_start: false,
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            command: String::from("cargo xtask bench dhcp"),
            quick: false,
            step_secs: 5.0,
            quiet_wait_secs: 30,
            clients: 50_000,
            addressing: Addressing {
                server: Ipv4Addr::new(198, 19, 0, 1),
                client: Ipv4Addr::new(198, 19, 0, 2),
                first: Ipv4Addr::new(198, 19, 1, 0),
                last: Ipv4Addr::new(198, 19, 255, 254),
            },
            xdp_attach_mode: String::from("driver"),
            lease_fs: String::from("ext2/ext3"),
            rcvbuf_default: 4 << 20,
            loadavg: String::from("0.1 0.2 0.3"),
            date: String::from("2026-01-01 00:00 UTC"),
            commit: String::from("abc1234"),
            machine: String::from("2 CPUs"),
            peers: String::from("perfdhcp 2.2.0, Dnsmasq version 2.90"),
        }
    }

    #[test]
    fn summary_compares_at_the_highest_rate_both_sustained() {
        let steps = vec![
            step(Mode::Proxy, Server::Ours, 10_000, 1.0, 500),
            step(Mode::Proxy, Server::Dnsmasq, 10_000, 1.0, 1000),
            step(Mode::Proxy, Server::Ours, 20_000, 1.0, 1000),
            step(Mode::Proxy, Server::Dnsmasq, 20_000, 0.5, 1000),
            step(Mode::Full, Server::Ours, 1_000, 1.0, 100),
            step(Mode::Full, Server::Dnsmasq, 1_000, 0.9, 400),
        ];
        assert_eq!(reference_rate(&steps, Mode::Proxy), Some(10_000));
        // Neither... dnsmasq sustained nothing in full mode: compare at the lowest rate.
        assert_eq!(reference_rate(&steps, Mode::Full), Some(1_000));
        let text = render(&info(), &steps);
        // Proxy: 20000 vs 10000, ratio 2.00; CPU 10 µs vs 20 µs at 10000/s.
        assert!(
            text.contains(
                "| proxy | highest rate with < 1% loss, exchanges/s | 20000 | 10000 | 2.00 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| proxy | server CPU per exchange at 10000/s, µs | 10.0 | 20.0 | 0.50 |"
            ),
            "{text}"
        );
        assert!(text.contains(
            "| full | highest rate with < 1% loss, exchanges/s | 1000 | under 1000 | — |"
        ));
        assert!(text.contains("in memory only"), "{text}");
        assert!(
            text.contains("not yet: the store was not on disk"),
            "{text}"
        );
        assert!(text.contains("REQUEST-ACK latency avg at 1000/s"));
    }
}
