//! `pxe-bench xsk-compare`: our AF_XDP binding (`pxe_daemon::afxdp`) against xdpilone's, in one
//! run, on the same workload: a veth pair between two namespaces this command makes (and
//! removes), the daemon's XDP program on the server end steering UDP to one port into the
//! XSKS map, and a server process that answers every datagram with a frame echoing its payload,
//! through one binding or the other (the same loop, the daemon's: poll, batches of 64,
//! coalescing, one kick per batch). A load thread in the client namespace offers datagrams at
//! fixed rates and counts the answers. Each binding's server runs `--rounds` times, the two in
//! alternation; the median round of each (binding, rate) is reported: answers per second, loss,
//! and the server process's CPU (utime + stime from /proc/PID/stat) per answer.

mod load;
pub(crate) mod server;

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddrV4},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};
use load::Offered;
use serde::Serialize;
use server::{Done, Ready};

/// The server's address (the XDP program steers only frames to it).
pub(crate) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 96, 1);
/// The client's address.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 96, 2);
const SERVER_MAC: &str = "02:00:c6:12:60:01";
const CLIENT_MAC: &str = "02:00:c6:12:60:02";
/// The steered port: the XDP program's TFTP transfer range is set to this one port.
pub(crate) const PORT: u16 = 30_000;
/// Answers are counted this long after the last datagram.
const DRAIN: Duration = Duration::from_millis(500);
/// Longest wait for a server to bind and say so.
const READY_WAIT: Duration = Duration::from_secs(30);
/// Loss under which a rate is sustained.
const LOSS_LIMIT: f64 = 0.01;

/// An AF_XDP binding under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Binding {
    /// `pxe_daemon::afxdp` (XskSocket).
    Ours,
    /// The xdpilone crate.
    Xdpilone,
}

impl Binding {
    const ALL: [Binding; 2] = [Binding::Ours, Binding::Xdpilone];

    /// Its name in reports and on the command line.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Binding::Ours => "ours",
            Binding::Xdpilone => "xdpilone",
        }
    }
}

/// Flags of `pxe-bench xsk-compare`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// Offered loads, datagrams per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000u32, 50_000, 100_000, 200_000])]
    rates: Vec<u32>,
    /// Seconds of sending per rate.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Servers of each binding, run in alternation (the median round is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10))]
    rounds: u32,
    /// UDP payload bytes of each datagram (echoed in the answer).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1400))]
    payload: u16,
    /// The server's wait after a round that found frames (the daemon's interrupt moderation;
    /// 0: none).
    #[arg(long, default_value_t = 500)]
    coalesce_us: u64,
    /// Our binding leaves UDP checksums to the device through TX metadata, as the daemon's
    /// TFTP frames do (xdpilone cannot register TX metadata: it computes them in full).
    #[arg(long)]
    device_checksum: bool,
    /// Print one JSON object instead of Markdown.
    #[arg(long)]
    json: bool,
    /// (Internal) run as the server of this binding.
    #[arg(long, hide = true, requires_all = ["netns", "interface"])]
    serve: Option<Binding>,
    /// (Internal) the server's network namespace.
    #[arg(long, hide = true)]
    netns: Option<String>,
    /// (Internal) the server's interface.
    #[arg(long, hide = true)]
    interface: Option<String>,
}

/// One (binding, round, rate) measurement.
#[derive(Debug, Serialize)]
struct Step {
    binding: Binding,
    round: u32,
    rate: u32,
    #[serde(flatten)]
    offered: Offered,
    /// Server CPU seconds over the step, user + system.
    server_cpu: f64,
    /// Of which user time: the binding's ring work, parsing and building the answers (the
    /// system time is the kernel's: poll, the transmit kicks, copy-mode sending).
    server_user: f64,
}

impl Step {
    fn loss(&self) -> f64 {
        if self.offered.sent == 0 {
            return 1.0;
        }
        1.0 - self.offered.answered as f64 / self.offered.sent as f64
    }

    fn answered_per_sec(&self) -> f64 {
        self.offered.answered as f64 / self.offered.secs.max(1e-9)
    }

    fn sent_per_sec(&self) -> f64 {
        self.offered.sent as f64 / self.offered.secs.max(1e-9)
    }

    fn cpu_us_per_answer(&self) -> f64 {
        self.server_cpu * 1e6 / self.offered.answered.max(1) as f64
    }

    fn user_us_per_answer(&self) -> f64 {
        self.server_user * 1e6 / self.offered.answered.max(1) as f64
    }

    fn sustained(&self) -> bool {
        self.loss() < LOSS_LIMIT
    }

    /// The generator could not send at the rate asked.
    fn generator_bound(&self) -> bool {
        self.sent_per_sec() < 0.97 * f64::from(self.rate)
    }
}

/// One server run: what it said when ready and when done.
#[derive(Debug, Serialize)]
struct ServerRun {
    binding: Binding,
    round: u32,
    ready: Ready,
    done: Option<Done>,
}

#[derive(Debug, Serialize)]
struct Report {
    rates: Vec<u32>,
    secs: f64,
    rounds: u32,
    payload: u16,
    coalesce_us: u64,
    device_checksum: bool,
    steps: Vec<Step>,
    servers: Vec<ServerRun>,
}

/// Runs the command (or, with the hidden `--serve`, one server).
pub(crate) fn run(args: &CompareArgs) -> anyhow::Result<()> {
    if let Some(binding) = args.serve {
        let (Some(netns), Some(interface)) = (&args.netns, &args.interface) else {
            bail!("--serve needs --netns and --interface");
        };
        return server::serve(
            binding,
            netns,
            interface,
            Duration::from_micros(args.coalesce_us),
            args.device_checksum,
        );
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "xsk-compare needs root (namespaces, XDP, AF_XDP)"
    );
    ensure!(!args.rates.is_empty(), "no --rates");
    ensure!(
        args.secs > 0.0 && args.secs <= 60.0,
        "--secs must be in (0, 60]"
    );
    let net = Net::create()?;
    let mut steps = Vec::new();
    let mut servers = Vec::new();
    for round in 0..args.rounds {
        // Alternate which binding goes first, so that neither always has the quieter slot.
        let mut order = Binding::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        for binding in order {
            eprintln!(
                "xsk-compare: round {} of {}, {}",
                round + 1,
                args.rounds,
                binding.label()
            );
            let (run, mut got) = run_server(&net, binding, round, args)?;
            servers.push(run);
            steps.append(&mut got);
        }
    }
    drop(net);
    let report = Report {
        rates: args.rates.clone(),
        secs: args.secs,
        rounds: args.rounds,
        payload: args.payload,
        coalesce_us: args.coalesce_us,
        device_checksum: args.device_checksum,
        steps,
        servers,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    Ok(())
}

/// Starts one server, offers every rate to it, stops it.
fn run_server(
    net: &Net,
    binding: Binding,
    round: u32,
    args: &CompareArgs,
) -> anyhow::Result<(ServerRun, Vec<Step>)> {
    let mut server = ServerProcess::start(net, binding, args)?;
    let from = SocketAddrV4::new(CLIENT_IP, 0);
    let to = SocketAddrV4::new(SERVER_IP, PORT);
    let payload = usize::from(args.payload);
    // Warm-up (not counted): the first frames fault in pages and caches.
    let warm = load::offer(&net.client_ns, from, to, 5_000, 0.3, payload, DRAIN)?;
    ensure!(
        warm.answered > 0,
        "{}: no answer to {} warm-up datagrams",
        binding.label(),
        warm.sent
    );
    let mut steps = Vec::new();
    for &rate in &args.rates {
        let (user0, system0) = server.cpu_secs()?;
        let offered = load::offer(&net.client_ns, from, to, rate, args.secs, payload, DRAIN)?;
        let (user1, system1) = server.cpu_secs()?;
        let step = Step {
            binding,
            round,
            rate,
            offered,
            server_cpu: (user1 - user0) + (system1 - system0),
            server_user: user1 - user0,
        };
        eprintln!(
            "xsk-compare:   {} at {rate}/s: sent {:.0}/s, answered {:.0}/s, loss {:.2}%, server {:.2} µs/answer",
            binding.label(),
            step.sent_per_sec(),
            step.answered_per_sec(),
            step.loss() * 100.0,
            step.cpu_us_per_answer()
        );
        steps.push(step);
    }
    let ready = server.ready.take().context("server not ready")?;
    let done = server.stop();
    Ok((
        ServerRun {
            binding,
            round,
            ready,
            done,
        },
        steps,
    ))
}

/// A server child process; stopped (stdin closed, then killed if need be) when dropped.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    ready: Option<Ready>,
}

impl ServerProcess {
    fn start(net: &Net, binding: Binding, args: &CompareArgs) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command.args([
            "xsk-compare",
            "--serve",
            binding.label(),
            "--netns",
            &net.server_ns,
            "--interface",
            &net.server_if,
            "--coalesce-us",
            &args.coalesce_us.to_string(),
        ]);
        if args.device_checksum {
            command.arg("--device-checksum");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            stdin,
            lines,
            ready: None,
        };
        let line = server
            .lines
            .recv_timeout(READY_WAIT)
            .with_context(|| format!("{}: the server did not get ready", binding.label()))?;
        let json = line
            .strip_prefix("ready ")
            .with_context(|| format!("server said {line:?}"))?;
        server.ready = Some(serde_json::from_str(json)?);
        Ok(server)
    }

    /// The server's CPU seconds so far, (user, system): its own getrusage, to the
    /// microsecond (/proc/PID/stat counts 10 ms ticks).
    fn cpu_secs(&mut self) -> anyhow::Result<(f64, f64)> {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().context("server stopped")?;
        stdin.write_all(b"cpu\n")?;
        stdin.flush()?;
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(5))
            .context("the server did not say its CPU time")?;
        let mut values = line
            .strip_prefix("cpu ")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::parse::<f64>);
        match (values.next(), values.next()) {
            (Some(Ok(user)), Some(Ok(system))) => Ok((user, system)),
            _ => bail!("server said {line:?}"),
        }
    }

    /// Closes the server's stdin and reads what it counted.
    fn stop(&mut self) -> Option<Done> {
        drop(self.stdin.take());
        let mut done = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if let Some(json) = line.strip_prefix("done ") {
                done = serde_json::from_str(json).ok();
                break;
            }
        }
        self.reap();
        done
    }

    fn reap(&mut self) {
        drop(self.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.reap();
    }
}

/// The two namespaces and the veth pair between them; removed when dropped.
struct Net {
    server_ns: String,
    client_ns: String,
    server_if: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Net {
    fn create() -> anyhow::Result<Net> {
        let pid = std::process::id();
        let net = Net {
            server_ns: format!("xskc-s-{pid}"),
            client_ns: format!("xskc-c-{pid}"),
            server_if: format!("xks{pid}"),
        };
        let client_if = format!("xkc{pid}");
        let (s, c) = (net.server_ns.as_str(), net.client_ns.as_str());
        let (sif, cif) = (net.server_if.as_str(), client_if.as_str());
        // From here on `net` removes whatever was made, also on an early return.
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        ip(&[
            "link", "add", sif, "address", SERVER_MAC, "type", "veth", "peer", "name", cif,
            "address", CLIENT_MAC,
        ])?;
        ip(&["link", "set", sif, "netns", s])?;
        ip(&["link", "set", cif, "netns", c])?;
        let server_addr = format!("{SERVER_IP}/24");
        let client_addr = format!("{CLIENT_IP}/24");
        let server_ip = SERVER_IP.to_string();
        ip(&["-n", s, "addr", "add", &server_addr, "dev", sif])?;
        ip(&["-n", c, "addr", "add", &client_addr, "dev", cif])?;
        for (ns, dev) in [(s, sif), (c, cif)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // No ARP at the start of a step: the server's MAC is known.
        ip(&[
            "-n",
            c,
            "neigh",
            "replace",
            &server_ip,
            "lladdr",
            SERVER_MAC,
            "dev",
            cif,
            "nud",
            "permanent",
        ])?;
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The rounds of a (binding, rate), and those in which the generator sent the rate asked (a
/// round whose generator was starved of CPU measures a lower rate than its row says).
fn rounds(steps: &[Step], binding: Binding, rate: u32) -> (Vec<&Step>, Vec<&Step>) {
    let all: Vec<&Step> = steps
        .iter()
        .filter(|s| s.binding == binding && s.rate == rate)
        .collect();
    let valid = all
        .iter()
        .copied()
        .filter(|s| !s.generator_bound())
        .collect();
    (all, valid)
}

/// The median of `f` over the valid rounds (over all rounds when none is valid).
fn median_of(steps: &[Step], binding: Binding, rate: u32, f: fn(&Step) -> f64) -> f64 {
    let (all, valid) = rounds(steps, binding, rate);
    let of = if valid.is_empty() { all } else { valid };
    median(of.into_iter().map(f).collect())
}

fn pair(a: f64, b: f64, digits: usize) -> String {
    let one = |v: f64| {
        if v.is_finite() {
            format!("{v:.digits$}")
        } else {
            "-".to_owned()
        }
    };
    format!("{} / {}", one(a), one(b))
}

/// Markdown tables of the report.
fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Workload: UDP datagrams of {} payload bytes offered at fixed rates for {} s each from a \
         client namespace (sendmmsg on a connected socket; answers counted with recvmmsg, {} ms \
         after the last) over a veth pair; the daemon's XDP program (driver mode) steers them to \
         one AF_XDP socket on queue 0, whose server echoes each payload in an answer frame \
         ({}). Same loop for both bindings: poll, up to 64 frames per batch, {} µs coalescing, \
         one kick per batch, UMEM of 8192 frames of 2048 bytes, rings of 4096. {} servers of \
         each binding, in alternation. Server CPU: user + system time of the \
         server process over the step (its own getrusage, asked at the step's start and end), \
         per answer; user time alone is the binding's ring work plus parsing and building the \
         answers, system time the kernel's (poll, transmit kicks, the copy-mode path). Each \
         cell is the median over the rounds in which the generator sent the rate asked; \
         \"rounds under 1% loss\" counts all rounds.\n",
        r.payload,
        r.secs,
        DRAIN.as_millis(),
        if r.device_checksum {
            "UDP checksum: ours leaves it to the device through TX metadata, as the daemon's \
             TFTP frames do; xdpilone, which cannot register TX metadata, computes it in full"
        } else {
            "full UDP checksum, computed by both"
        },
        r.coalesce_us,
        r.rounds
    );
    s.push_str(
        "| offered /s | rounds under 1% loss: ours / xdpilone | answered /s: ours / xdpilone | \
         loss %: ours / xdpilone | server CPU µs / answer: ours / xdpilone | CPU xdpilone / ours \
         | user-space µs / answer: ours / xdpilone | user xdpilone / ours | generator cores |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut cpu_ratios = Vec::new();
    let mut user_ratios = Vec::new();
    for &rate in &r.rates {
        let m = |b: Binding, f: fn(&Step) -> f64| median_of(&r.steps, b, rate, f);
        let (o, p) = (Binding::Ours, Binding::Xdpilone);
        let under = |b: Binding| {
            let (all, _) = rounds(&r.steps, b, rate);
            let ok = all.iter().filter(|s| s.sustained()).count();
            format!("{ok} of {}", all.len())
        };
        let cpu_ratio = m(p, Step::cpu_us_per_answer) / m(o, Step::cpu_us_per_answer);
        let user_ratio = m(p, Step::user_us_per_answer) / m(o, Step::user_us_per_answer);
        cpu_ratios.push(cpu_ratio);
        user_ratios.push(user_ratio);
        let generator = median(
            r.steps
                .iter()
                .filter(|s| s.rate == rate)
                .map(|s| s.offered.generator_cpu / s.offered.secs.max(1e-9))
                .collect(),
        );
        let _ = writeln!(
            s,
            "| {rate} | {} / {} | {} | {} | {} | {cpu_ratio:.2} | {} | {user_ratio:.2} | \
             {generator:.2} |",
            under(o),
            under(p),
            pair(
                m(o, Step::answered_per_sec),
                m(p, Step::answered_per_sec),
                0
            ),
            pair(m(o, |s| s.loss() * 100.0), m(p, |s| s.loss() * 100.0), 2),
            pair(
                m(o, Step::cpu_us_per_answer),
                m(p, Step::cpu_us_per_answer),
                2
            ),
            pair(
                m(o, Step::user_us_per_answer),
                m(p, Step::user_us_per_answer),
                3
            ),
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "- Server CPU per answer, xdpilone / ours, median over the rates: {:.2} (user-space \
         time alone: {:.2}).",
        median(cpu_ratios),
        median(user_ratios)
    );
    for run in &r.servers {
        if run.round != 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "- {} socket: zero-copy bind {}; {}; TX metadata registered: {}.",
            run.binding.label(),
            run.ready
                .zero_copy_error
                .as_deref()
                .map_or_else(|| "accepted".to_owned(), |e| format!("refused ({e})")),
            if run.ready.zero_copy {
                "zero-copy"
            } else {
                "copy mode"
            },
            if run.ready.tx_metadata { "yes" } else { "no" },
        );
    }
    s.push_str(
        "- Loss on this shared machine shows in the servers' XDP_STATISTICS as fill-ring-empty \
         drops: the kernel found no free receive frame because the server was off the CPU for \
         longer than its 4096 receive frames last at that rate (20 ms at 200,000/s), which \
         other engineers' builds cause in either binding's rounds.\n",
    );
    s.push_str(
        "\nEvery step (rounds in run order; \"generator short\": it sent under 97% of the rate \
         asked, left out of the medians):\n\n| binding | round | offered /s | sent /s | answered /s \
         | loss % | server CPU µs / answer | user µs / answer | generator cores | generator \
         |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for st in &r.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.3} | {:.2} | {} |",
            st.binding.label(),
            st.round + 1,
            st.rate,
            st.sent_per_sec(),
            st.answered_per_sec(),
            st.loss() * 100.0,
            st.cpu_us_per_answer(),
            st.user_us_per_answer(),
            st.offered.generator_cpu / st.offered.secs.max(1e-9),
            if st.generator_bound() { "short" } else { "ok" }
        );
    }
    s.push_str(
        "\nServer runs (totals over all rates and the warm-up; XDP_STATISTICS: rx_dropped, \
         rx_ring_full, fill ring empty):\n\n| binding | round | received | answered | TX full | \
         polls | rx_dropped | rx_ring_full | fill empty |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &r.servers {
        if let Some(d) = &run.done {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.binding.label(),
                run.round + 1,
                d.received,
                d.answered,
                d.tx_full,
                d.polls,
                d.xdp_statistics[0],
                d.xdp_statistics[3],
                d.xdp_statistics[4]
            );
        }
    }
    s
}
