//! `cargo xtask bench rack`: the same simulated rack (`pxe-bench rack`), in one run, against
//! pxe-daemon and against dnsmasq (proxy DHCP and TFTP) with nginx (HTTP), for each rack size;
//! the comparison table, the completion plots and how the run was made fair go to
//! bench/RESULTS.md between `<!-- rack:begin -->` and `<!-- rack:end -->`.
//!
//! Fairness: the servers run one after the other in the same namespaces on the same veth (and,
//! when proxy mode is run, the machines on the same bridge to the site DHCP server's host), with
//! the same boot files, the same machines (MACs, firmware mix, power-on times: one seed), the
//! same site DHCP server (proxy mode), the same script chain (`/boot.ipxe` chains to
//! `/ipxe?mac=...`, which names the kernel and initrd: pxe-daemon renders it per machine,
//! nginx serves one static file for every machine), limits raised on both sides past the rack
//! (dnsmasq `tftp-max`, `dhcp-lease-max`; nginx `worker_connections`; pxe-daemon
//! `max_transfers`, `max_connections`), request logs off on both HTTP servers, sendfile on
//! both. nginx gets every core (`worker_processes auto`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use pxe_tests::{run_bounded, NsChild, SiteHost, TestNet, SITE_BRIDGE};

use super::snmp::UdpCounters;
use crate::{cmd, workspace};

/// The namespace tag (`pxet-rack-s`, `pxet-rack-c`).
const NET_TAG: &str = "rack";
/// The HTTP port of both HTTP servers.
const HTTP_PORT: u16 = 8080;
/// Sizes of the NBPs: Debian's undionly.kpxe and snponly.efi (served as ipxe.efi).
const NBP_BIOS_BYTES: usize = 74_213;
const NBP_EFI_BYTES: usize = 173_792;
/// Markers of this benchmark's section of bench/RESULTS.md.
const BEGIN: &str = "<!-- rack:begin -->";
const END: &str = "<!-- rack:end -->";
/// Neighbour table thresholds while the bench runs (global, not per namespace): the server
/// namespace holds one entry per machine.
const GC_THRESH: [u32; 3] = [8192, 16384, 32768];
/// How long a server gets to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra time the bench grants a rack run past the simulator's own deadline.
const RUN_GRACE: Duration = Duration::from_secs(60);
/// Receive buffer of the site DHCP server's sockets (proxy mode). dnsmasq keeps the kernel's
/// default (208 KiB) and has no option to raise it, so the site server dropped a rack's
/// DISCOVERs and REQUESTs whenever it waited for a core: 3,752 in one 5,000-machine run
/// against pxe-daemon, 2,042 in the same rack against dnsmasq, each a firmware retry 4 to 16 s
/// later. The site server is not under test; on a real network it has a machine of its own.
const SITE_RCVBUF_BYTES: libc::c_int = 8 << 20;

/// Options of `cargo xtask bench rack`.
#[derive(Debug, clap::Args)]
pub struct RackArgs {
    /// Rack sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [500u32, 2000, 5000])]
    machines: Vec<u32>,
    /// Servers under test, comma-separated: pxe-daemon (kernel datapath), pxe-daemon-xdp
    /// (`--datapath xdp`), dnsmasq (with nginx).
    #[arg(long, value_delimiter = ',', default_values_t = [Target::PxeDaemon, Target::PxeDaemonXdp, Target::Dnsmasq])]
    targets: Vec<Target>,
    /// DHCP modes, comma-separated: `proxy` (beside a site DHCP server, a dnsmasq giving
    /// addresses), `full` (the server under test gives the addresses too).
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("proxy"), String::from("full")])]
    dhcp_mode: Vec<String>,
    /// Firmware mix of the rack (`pxe-bench rack --mix`). dnsmasq's proxy does not answer UEFI
    /// HTTP Boot, so the default leaves it out.
    #[arg(long, default_value = "bios=1,uefi=1")]
    mix: String,
    /// Power-on spread in seconds: the rack powers on within the same second by default. With
    /// 0 every DISCOVER leaves within a few milliseconds, and the kernel's default socket
    /// buffer (208 KiB, which dnsmasq never raises) drops most of the burst on every server.
    #[arg(long, default_value_t = 1.0)]
    spread_secs: f64,
    /// Kernel size in MiB.
    #[arg(long, default_value_t = 4)]
    kernel_mib: usize,
    /// Initrd size in MiB.
    #[arg(long, default_value_t = 8)]
    initrd_mib: usize,
    /// The simulator's deadline per run, in seconds.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// Threads of the simulator.
    #[arg(long, default_value_t = 1)]
    sim_threads: u32,
    /// Where the reports and plots go (default: `<target>/rack-bench`); the plots are also
    /// copied to bench/ unless `--no-results`.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Do not write bench/RESULTS.md or the plots in bench/.
    #[arg(long)]
    no_results: bool,
}

/// A server (set) under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// pxe-daemon: DHCP, TFTP and HTTP, on kernel sockets.
    PxeDaemon,
    /// pxe-daemon with `--datapath xdp`: DHCP and TFTP over AF_XDP.
    PxeDaemonXdp,
    /// dnsmasq (DHCP and TFTP) with nginx (HTTP).
    Dnsmasq,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::PxeDaemon => "pxe-daemon",
            Target::PxeDaemonXdp => "pxe-daemon-xdp",
            Target::Dnsmasq => "dnsmasq",
        })
    }
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::PxeDaemon => "pxe-daemon (kernel datapath)",
            Target::PxeDaemonXdp => "pxe-daemon (XDP datapath)",
            Target::Dnsmasq => "dnsmasq + nginx",
        }
    }

    fn is_ours(self) -> bool {
        matches!(self, Target::PxeDaemon | Target::PxeDaemonXdp)
    }
}

/// Everything a run needs to know about the network and the files.
struct Env<'a> {
    net: &'a TestNet,
    /// The site DHCP server's host (proxy mode): a third namespace on the machines' segment,
    /// as on a real network. On the servers' own interface an XDP program would take the PXE
    /// DISCOVERs from it.
    site: Option<&'a SiteHost>,
    /// The /16 the machines get addresses in; the servers are its `.0.1`.
    pool: [u8; 2],
    root: PathBuf,
    dir: PathBuf,
    daemon_bin: PathBuf,
    bench_bin: PathBuf,
}

impl Env<'_> {
    fn server(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.pool[0], self.pool[1], 0, 1)
    }

    fn range(&self) -> (Ipv4Addr, Ipv4Addr) {
        (
            Ipv4Addr::new(self.pool[0], self.pool[1], 1, 0),
            Ipv4Addr::new(self.pool[0], self.pool[1], 60, 255),
        )
    }

    fn base_url(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.server())
    }

    /// The site DHCP server's address in the pool.
    fn site_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.pool[0], self.pool[1], 0, 3)
    }

    /// Where the simulated machines are: the bridge that reaches the servers and the site
    /// host, or (no site host) the client end of the veth.
    fn machines_interface(&self) -> &str {
        if self.site.is_some() {
            SITE_BRIDGE
        } else {
            self.net.client_if()
        }
    }
}

/// One run's result.
struct RunResult {
    machines: u32,
    /// Full DHCP (else proxy beside the site server).
    full: bool,
    target: Target,
    report: PathBuf,
    server_cpu_secs: f64,
    /// CPU seconds the rest of the machine (other people's work) used during the run.
    others_cpu_secs: f64,
    /// UDP datagrams dropped for a full receive buffer: by the site DHCP server, by the
    /// servers under test, and in the client namespace (the simulator).
    site_udp_drops: u64,
    target_udp_drops: u64,
    client_udp_drops: u64,
    exit: String,
}

/// Runs the benchmark.
pub fn run(args: &RackArgs) -> anyhow::Result<()> {
    ensure!(
        pxe_tests::is_root(),
        "cargo xtask bench rack needs root (namespaces, raw sockets)"
    );
    let mut modes = Vec::new();
    for mode in &args.dhcp_mode {
        modes.push(match mode.as_str() {
            "proxy" => false,
            "full" => true,
            other => bail!("--dhcp-mode must be proxy or full, not {other:?}"),
        });
    }
    ensure!(
        !args.machines.is_empty() && !args.targets.is_empty(),
        "nothing to run"
    );
    workspace::build_release_bins()?;
    let target_dir = workspace::target_dir()?;
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("rack-bench"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let _thresh = GcThresh::raise()?;
    let net = TestNet::new(NET_TAG);
    // The machines' /16: the half of 198.18.0.0/15 that the test /24 is not in.
    let pool = if net.server_ip().octets()[1] == 18 {
        [198, 19]
    } else {
        [198, 18]
    };
    // Made before the first run and kept to the last, so that every run of the bench (full
    // mode too) has the same segment.
    let site_host = modes.iter().any(|full| !full).then(|| SiteHost::new(&net));
    let tmp = tempfile::Builder::new()
        .prefix("pxe-rack-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let env = Env {
        net: &net,
        site: site_host.as_ref(),
        pool,
        root: tmp.path().join("root"),
        dir: tmp.path().to_path_buf(),
        daemon_bin: target_dir.join("release/pxe-daemon"),
        bench_bin: target_dir.join("release/pxe-bench"),
    };
    let server_cidr = format!("{}/16", env.server());
    ip_ns(
        net.server_ns(),
        &["addr", "add", &server_cidr, "dev", net.server_if()],
    )?;
    if let Some(site) = env.site {
        let site_cidr = format!("{}/16", env.site_ip());
        ip_ns(site.ns(), &["addr", "add", &site_cidr, "dev", site.ns()])?;
    }
    write_boot_tree(&env, args)?;

    let mut results = Vec::new();
    for &full in &modes {
        for &n in &args.machines {
            for &target in &args.targets {
                println!(
                    "==> rack: {n} machines against {}, {} DHCP",
                    target.label(),
                    mode_name(full)
                );
                results.push(run_one(&env, args, n, target, full, &out_dir)?);
            }
        }
    }
    let mut plots = Vec::new();
    for &full in &modes {
        for &n in &args.machines {
            let reports: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.machines == n && r.full == full)
                .collect();
            let name = format!("rack-{}-{n}.png", mode_name(full));
            let png = out_dir.join(&name);
            let mut plot = Command::new(&env.bench_bin);
            plot.args(["plot", "--out"])
                .arg(&png)
                .args([
                    "--title",
                    &format!(
                        "{n} machines power on within {} s ({} DHCP)",
                        args.spread_secs,
                        mode_name(full)
                    ),
                ])
                .args(reports.iter().map(|r| &r.report));
            cmd::run(&mut plot).context("drawing the plot")?;
            plots.push((name, png));
        }
    }
    let section = results_section(args, &env, &results, &plots)?;
    println!("{section}");
    if !args.no_results {
        let bench_dir = workspace::root().join("bench");
        let mut names = Vec::new();
        for (name, png) in &plots {
            std::fs::copy(png, bench_dir.join(name))
                .with_context(|| format!("copying {}", png.display()))?;
            names.push(name.clone());
        }
        write_section(&bench_dir.join("RESULTS.md"), &section)?;
        println!(
            "rack: wrote bench/RESULTS.md and bench/{}",
            names.join(", bench/")
        );
    }
    Ok(())
}

/// The date and time now, in UTC (`date -u`).
fn utc_now() -> String {
    let out = run_bounded(
        Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]),
        Duration::from_secs(5),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `git rev-parse --short HEAD`, with a note when the work tree has uncommitted changes.
fn git_commit() -> String {
    let root = workspace::root().to_string_lossy().into_owned();
    let git = |args: &[&str]| {
        let out = run_bounded(
            Command::new("git").args(["-C", &root]).args(args),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes")
    }
}

/// `full` or `proxy`.
fn mode_name(full: bool) -> &'static str {
    if full {
        "full"
    } else {
        "proxy"
    }
}

/// `ip -n ns args...`, bounded.
fn ip_ns(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = run_bounded(
        Command::new("ip").args(["-n", ns]).args(args),
        Duration::from_secs(10),
    );
    ensure!(
        out.status.success(),
        "ip -n {ns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The boot files (the same bytes for every server), the daemon's config, nginx's static
/// scripts.
fn write_boot_tree(env: &Env<'_>, args: &RackArgs) -> anyhow::Result<()> {
    let root = &env.root;
    std::fs::create_dir_all(root.join("assets"))?;
    let files: [(&str, usize); 4] = [
        ("undionly.kpxe", NBP_BIOS_BYTES),
        ("ipxe.efi", NBP_EFI_BYTES),
        ("assets/vmlinuz", args.kernel_mib << 20),
        ("assets/initrd.img", args.initrd_mib << 20),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        let byte = u8::try_from(i + 1).unwrap_or(1);
        std::fs::write(root.join(name), vec![byte; *len])
            .with_context(|| format!("writing {name}"))?;
    }
    // dnsmasq's x86PC pxe-service appends ".0" to the basename it is given.
    std::fs::copy(root.join("undionly.kpxe"), root.join("undionly.0"))?;
    let base = env.base_url();
    // nginx: the same chain pxe-daemon serves, as static files.
    std::fs::write(
        root.join("boot.ipxe"),
        format!("#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}&buildarch=${{buildarch}}&platform=${{platform}}\n"),
    )?;
    std::fs::write(
        root.join("ipxe.static"),
        format!(
            "#!ipxe\nkernel {base}/assets/vmlinuz initrd=initrd.img console=ttyS0\ninitrd {base}/assets/initrd.img\nboot\n"
        ),
    )?;
    Ok(())
}

/// Starts the servers of `target` (and the site DHCP server in proxy mode), runs the rack,
/// reads the servers' CPU time, stops them.
fn run_one(
    env: &Env<'_>,
    args: &RackArgs,
    n: u32,
    target: Target,
    full: bool,
    out_dir: &Path,
) -> anyhow::Result<RunResult> {
    let tag = format!("{}-{n}-{target}", mode_name(full));
    let run_dir = env.dir.join(&tag);
    std::fs::create_dir_all(&run_dir)?;
    let mut site = None;
    if !full {
        let (first, last) = env.range();
        site = Some(start_dnsmasq(
            env,
            Host::Site,
            &run_dir.join("site"),
            &[
                format!("dhcp-range={first},{last},255.255.0.0,1h"),
                "dhcp-lease-max=65536".to_owned(),
                // Not under test: as fast as dnsmasq goes (no lease file, no log lines), so
                // that it shapes neither result.
                "leasefile-ro".to_owned(),
                "quiet-dhcp".to_owned(),
            ],
        )?);
        if let Some(site) = &site {
            let sockets = raise_rcvbuf(site.id(), SITE_RCVBUF_BYTES)
                .context("raising the site DHCP server's receive buffer")?;
            println!(
                "rack: the site DHCP server's {sockets} UDP socket(s) get a {} MiB receive buffer",
                SITE_RCVBUF_BYTES >> 20
            );
        }
    }
    let servers = match target {
        Target::PxeDaemon => vec![start_daemon(env, &run_dir, full, false)?],
        Target::PxeDaemonXdp => vec![start_daemon(env, &run_dir, full, true)?],
        Target::Dnsmasq => start_dnsmasq_nginx(env, &run_dir, full)?,
    };
    let cpu_before = namespace_cpu(env.net.server_ns());
    let site_before = site_cpu(env);
    let machine_before = machine_busy_secs();
    let client_udp_before = UdpCounters::read(env.net, false)?;
    let report = out_dir.join(format!("rack-{tag}.json"));
    let mut sim = Command::new("ip");
    sim.args(["netns", "exec", env.net.client_ns()])
        .arg(&env.bench_bin)
        .args(["rack", "--interface", env.machines_interface()])
        .args(["--machines", &n.to_string(), "--mix", &args.mix])
        .args(["--spread-secs", &args.spread_secs.to_string()])
        .args(["--deadline-secs", &args.deadline_secs.to_string()])
        .args(["--threads", &args.sim_threads.to_string()])
        .args(["--label", target.label(), "--progress", "lines", "--json"])
        .arg(&report);
    let exit = run_streaming(
        &mut sim,
        Duration::from_secs(args.deadline_secs) + RUN_GRACE,
    )?;
    let cpu_after = namespace_cpu(env.net.server_ns());
    let site_secs = site_cpu(env) - site_before;
    let machine_busy = machine_busy_secs() - machine_before;
    let client_udp = UdpCounters::read(env.net, false)?.since(&client_udp_before);
    let target_drops = socket_drops(env, Host::Server);
    let site_drops = if site.is_some() {
        socket_drops(env, Host::Site)
    } else {
        0
    };
    if target.is_ours() {
        // The daemon's own view of the run, kept beside the report.
        let url = format!("{}/metrics", env.base_url());
        let out = env.net.server(&[
            "curl",
            "--silent",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            &url,
        ]);
        let _ = std::fs::write(out_dir.join(format!("rack-{tag}.metrics")), &out.stdout);
    }
    for mut s in servers {
        if let Some(status) = s.try_wait() {
            println!(
                "warning: a server (pid {}) exited during the run ({status}):\n{}",
                s.id(),
                s.log()
            );
        }
        // SIGTERM: nginx's master then ends its workers (a SIGKILL would orphan them, holding
        // the port).
        if target.is_ours() {
            let _ = std::fs::write(out_dir.join(format!("rack-{tag}.log")), s.log());
        }
        s.stop();
    }
    if let Some(site) = site {
        site.stop();
    }
    end_strays(env.net.server_ns());
    if let Some(site) = env.site {
        end_strays(site.ns());
    }
    ensure!(report.is_file(), "the simulator wrote no report ({exit})");
    let sim_cpu = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map_or(0.0, |r| {
            let c = &r["summary"]["simulator"];
            c["user_secs"].as_f64().unwrap_or(0.0) + c["system_secs"].as_f64().unwrap_or(0.0)
        });
    // What else ran on the machine meanwhile: its busy time less the servers (site included)
    // and the simulator.
    let server_cpu_secs = (cpu_after - cpu_before).max(0.0);
    let others_cpu_secs = (machine_busy - server_cpu_secs - site_secs - sim_cpu).max(0.0);
    Ok(RunResult {
        machines: n,
        full,
        target,
        report,
        server_cpu_secs,
        others_cpu_secs,
        site_udp_drops: site_drops,
        target_udp_drops: target_drops,
        client_udp_drops: client_udp.rcvbuf_errors,
        exit,
    })
}

/// SIGKILLs whatever still runs in the server namespace (a worker left by a server that did
/// not end it): the next run binds the same ports.
fn end_strays(ns: &str) {
    let out = run_bounded(
        Command::new("ip").args(["netns", "pids", ns]),
        Duration::from_secs(10),
    );
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|&p| p > 1)
    {
        println!("rack: ending stray process {pid} in {ns}");
        // SAFETY: kill has no memory effects; the process lives in the bench's own namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Runs `cmd` with the terminal's output, killed after `timeout`; returns its exit status.
fn run_streaming(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    println!("+ {}", cmd::display(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .context("starting pxe-bench rack")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.to_string());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(format!("killed after {} s", timeout.as_secs()));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds the whole machine has been busy (every CPU), 0 when /proc/stat is unreadable.
fn machine_busy_secs() -> f64 {
    super::cpu::MachineTime::now().map_or(0.0, |t| t.busy.as_secs_f64())
}

/// CPU seconds (user + system) of every process in namespace `ns`.
fn namespace_cpu(ns: &str) -> f64 {
    let out = run_bounded(
        Command::new("ip").args(["netns", "pids", ns]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter_map(|pid| super::cpu::process_time(pid).ok())
        .map(|t| t.as_secs_f64())
        .sum()
}

/// CPU seconds of the site host's processes (0 without a site host).
fn site_cpu(env: &Env<'_>) -> f64 {
    env.site.map_or(0.0, |site| namespace_cpu(site.ns()))
}

/// Datagrams the UDP sockets at `host` dropped for a full receive buffer, each socket that
/// dropped any printed with its address and owner: where a burst was lost.
fn socket_drops(env: &Env<'_>, host: Host) -> u64 {
    let out = host.run(env, &["ss", "-H", "-u", "-a", "-m", "-n", "-p"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut socket = "";
    let mut found = 0;
    for line in text.lines() {
        if let Some(mem) = line.trim().strip_prefix("skmem:(") {
            let drops = mem
                .trim_end_matches(')')
                .split(',')
                .find_map(|f| f.strip_prefix('d'))
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(0);
            if drops > 0 {
                println!(
                    "rack: {drops} datagrams dropped at {}",
                    socket.split_whitespace().collect::<Vec<_>>().join(" ")
                );
                found += drops;
            }
        } else {
            socket = line;
        }
    }
    found
}

/// Polls `ready` every 50 ms until it holds, for at most [`READY_TIMEOUT`]; fails when
/// `child` (`what`) exits first or the time is up (`waiting_for` says what was awaited).
fn wait_ready(
    child: &mut NsChild,
    what: &str,
    waiting_for: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait() {
            bail!(
                "{what} exited with {status} before it could {waiting_for}:\n{}",
                child.log()
            );
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} did not {waiting_for} within {} s:\n{}",
                READY_TIMEOUT.as_secs(),
                child.log()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `port` is listened on at `host` over `proto` (`-u` or `-t`).
fn wait_listening(
    env: &Env<'_>,
    host: Host,
    child: &mut NsChild,
    proto: &str,
    port: u16,
    what: &str,
) -> anyhow::Result<()> {
    let filter = format!("sport = :{port}");
    wait_ready(child, what, &format!("listen on port {port}"), || {
        let out = host.run(env, &["ss", "-H", "-l", "-n", proto, &filter]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    })
}

/// Where a server runs.
#[derive(Clone, Copy, Debug)]
enum Host {
    /// The server namespace: the servers under test.
    Server,
    /// The site host (proxy mode): the site DHCP server.
    Site,
}

impl Host {
    fn site<'e>(env: &'e Env<'_>) -> &'e SiteHost {
        env.site
            .expect("a site host exists whenever proxy mode runs")
    }

    /// Its interface (on the site host, named as its namespace).
    fn interface<'e>(self, env: &'e Env<'_>) -> &'e str {
        match self {
            Host::Server => env.net.server_if(),
            Host::Site => Host::site(env).ns(),
        }
    }

    /// Runs `argv` there, bounded.
    fn run(self, env: &Env<'_>, argv: &[&str]) -> Output {
        match self {
            Host::Server => env.net.server(argv),
            Host::Site => Host::site(env).run(argv),
        }
    }

    /// Starts `argv` there; the guard kills it when dropped.
    fn spawn(self, env: &Env<'_>, argv: &[&str]) -> NsChild {
        match self {
            Host::Server => env.net.spawn_server(argv),
            Host::Site => Host::site(env).spawn(argv),
        }
    }
}

/// A dnsmasq at `host` with `lines` after the common ones (no DNS, the host's interface only,
/// no ping before offers, its log in `dir`).
fn start_dnsmasq(
    env: &Env<'_>,
    host: Host,
    dir: &Path,
    lines: &[String],
) -> anyhow::Result<NsChild> {
    std::fs::create_dir_all(dir)?;
    let mut config = vec![
        "port=0".to_owned(),
        format!("interface={}", host.interface(env)),
        "bind-interfaces".to_owned(),
        "no-ping".to_owned(),
        "user=root".to_owned(),
        format!("dhcp-leasefile={}", dir.join("leases").display()),
        format!("pid-file={}", dir.join("dnsmasq.pid").display()),
        format!("log-facility={}", dir.join("dnsmasq.log").display()),
    ];
    config.extend(lines.iter().cloned());
    let conf = dir.join("dnsmasq.conf");
    std::fs::write(&conf, config.join("\n") + "\n")?;
    let conf_arg = format!("--conf-file={}", conf.display());
    let mut child = host.spawn(env, &["/usr/sbin/dnsmasq", "--no-daemon", &conf_arg]);
    wait_listening(env, host, &mut child, "-u", 67, "dnsmasq")?;
    Ok(child)
}

/// Gives every UDP socket of process `pid` a receive buffer of `bytes` (`SO_RCVBUFFORCE` on a
/// duplicate taken with `pidfd_getfd`: the duplicate is the process's own socket); returns how
/// many sockets it changed. For a program that has no option for it.
fn raise_rcvbuf(pid: u32, bytes: libc::c_int) -> anyhow::Result<usize> {
    let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    ensure!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let mut changed = 0;
    let dir = format!("/proc/{pid}/fd");
    let result = (|| -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let entry = entry?;
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if !is_socket {
                continue;
            }
            // SAFETY: pidfd_getfd duplicates descriptor `fd` of the process into ours, or
            // returns -1; `pidfd` is open.
            let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
            if dup < 0 {
                continue;
            }
            let dup = dup as libc::c_int;
            let mut kind: libc::c_int = 0;
            let mut len = int_len;
            // SAFETY: getsockopt and setsockopt read and write one int through valid pointers
            // of the length given; `dup` is ours and closed right after.
            unsafe {
                let is_udp = libc::getsockopt(
                    dup,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    (&mut kind as *mut libc::c_int).cast(),
                    &mut len,
                ) == 0
                    && kind == libc::SOCK_DGRAM;
                if is_udp
                    && libc::setsockopt(
                        dup,
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        (&bytes as *const libc::c_int).cast(),
                        int_len,
                    ) == 0
                {
                    changed += 1;
                }
                libc::close(dup);
            }
        }
        Ok(())
    })();
    // SAFETY: `pidfd` is ours.
    unsafe { libc::close(pidfd as libc::c_int) };
    result?;
    ensure!(
        changed > 0,
        "no UDP socket of process {pid} took the buffer"
    );
    Ok(changed)
}

/// pxe-daemon with the rack's profile (and full DHCP on the pool in full mode).
fn start_daemon(env: &Env<'_>, dir: &Path, full: bool, xdp: bool) -> anyhow::Result<NsChild> {
    let server = env.server();
    let mut config = format!(
        "[dhcp]\nmode = \"{}\"\nserver_address = \"{server}\"\nlease_file = \"{}\"\n\n\
         [http]\ndefault_profile = \"rack\"\nmax_connections = 65536\n\n\
         [tftp]\nmax_transfers = 65536\n\n[timeline]\nmax_machines = 65536\n\n\
         [[profile]]\nname = \"rack\"\nkernel = \"assets/vmlinuz\"\ninitrd = [\"assets/initrd.img\"]\nargs = \"console=ttyS0\"\n",
        mode_name(full),
        dir.join("leases.journal").display()
    );
    if full {
        let (first, last) = env.range();
        let [a, b] = env.pool;
        let _ = write!(
            config,
            "\n[[dhcp.subnet]]\nnetwork = \"{a}.{b}.0.0/16\"\nrange = [\"{first}\", \"{last}\"]\nlease_time_secs = 3600\n"
        );
    }
    let path = dir.join("pxe-daemon.toml");
    std::fs::write(&path, config)?;
    let listen = format!("{server}:{HTTP_PORT}");
    // The daemon's log is kept beside the report; PXE_RACK_LOG sets its filter.
    let log_level = std::env::var("PXE_RACK_LOG").unwrap_or_else(|_| "info".to_owned());
    let bin = env.daemon_bin.to_string_lossy();
    let root = env.root.to_string_lossy();
    let config_path = path.to_string_lossy();
    let mut argv = vec![
        bin.as_ref(),
        "run",
        "--interface",
        env.net.server_if(),
        "--root",
        root.as_ref(),
        "--http-listen",
        &listen,
        "--config",
        config_path.as_ref(),
        "--log-level",
        log_level.as_str(),
    ];
    argv.extend(["--datapath", if xdp { "xdp" } else { "kernel" }]);
    let mut child = env.net.spawn_server(&argv);
    wait_listening(env, Host::Server, &mut child, "-t", HTTP_PORT, "pxe-daemon")?;
    wait_listening(env, Host::Server, &mut child, "-u", 69, "pxe-daemon")?;
    wait_healthy(env, &mut child)?;
    Ok(child)
}

/// Waits until the daemon answers `/healthz`. Its sockets are bound before it starts serving
/// (and, with `--datapath xdp`, before its AF_XDP sockets and steering are up): a rack that
/// powers on at the first bound socket has its first DISCOVERs land in sockets nobody reads,
/// and those machines wait for their firmware's 4 s retry (seen: 20 of 500 machines).
fn wait_healthy(env: &Env<'_>, child: &mut NsChild) -> anyhow::Result<()> {
    let url = format!("{}/healthz", env.base_url());
    wait_ready(child, "pxe-daemon", &format!("answer {url}"), || {
        env.net
            .server(&[
                "curl",
                "--silent",
                "--fail",
                "--noproxy",
                "*",
                "--max-time",
                "2",
                "--output",
                "/dev/null",
                &url,
            ])
            .status
            .success()
    })
}

/// dnsmasq (proxy or full DHCP, and TFTP) and nginx serving the same tree.
fn start_dnsmasq_nginx(env: &Env<'_>, dir: &Path, full: bool) -> anyhow::Result<Vec<NsChild>> {
    let base = env.base_url();
    let root = env.root.display();
    let mut lines = vec![
        // No log line per DHCP exchange or TFTP transfer (pxe-daemon logs transfers at info).
        "quiet-dhcp".to_owned(),
        "quiet-tftp".to_owned(),
        "enable-tftp".to_owned(),
        format!("tftp-root={root}"),
        "tftp-max=65536".to_owned(),
        "dhcp-lease-max=65536".to_owned(),
        "dhcp-userclass=set:ipxe,iPXE".to_owned(),
        format!("dhcp-boot=tag:ipxe,{base}/boot.ipxe"),
    ];
    if full {
        let (first, last) = env.range();
        lines.extend([
            format!("dhcp-range={first},{last},255.255.0.0,1h"),
            "dhcp-match=set:efi-x86_64,option:client-arch,7".to_owned(),
            "dhcp-match=set:efi-http,option:client-arch,16".to_owned(),
            "dhcp-option=tag:efi-http,option:vendor-class,HTTPClient".to_owned(),
            format!("dhcp-boot=tag:efi-http,tag:!ipxe,{base}/ipxe.efi"),
            "dhcp-boot=tag:efi-x86_64,tag:!ipxe,ipxe.efi".to_owned(),
            "dhcp-boot=tag:!ipxe,undionly.kpxe".to_owned(),
        ]);
    } else {
        let [a, b] = env.pool;
        lines.extend([
            format!("dhcp-range={a}.{b}.0.0,proxy,255.255.0.0"),
            "pxe-service=tag:!ipxe,x86PC,\"Network boot (BIOS)\",undionly".to_owned(),
            "pxe-service=tag:!ipxe,x86-64_EFI,\"Network boot (UEFI)\",ipxe.efi".to_owned(),
        ]);
    }
    // dnsmasq limits tftp-max by its open-file limit: give it the hard limit.
    let dnsmasq = start_dnsmasq(env, Host::Server, &dir.join("dnsmasq"), &lines)?;
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let nd = nginx_dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\nworker_rlimit_nofile 65536;\n\
         pid {nd}/nginx.pid;\nerror_log {nd}/error.log warn;\n\
         events {{ worker_connections 65536; multi_accept on; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
           keepalive_timeout 65;\n  keepalive_requests 100000;\n\
           client_body_temp_path {nd}/body;\n  proxy_temp_path {nd}/proxy;\n  fastcgi_temp_path {nd}/fastcgi;\n\
           uwsgi_temp_path {nd}/uwsgi;\n  scgi_temp_path {nd}/scgi;\n\
           default_type application/octet-stream;\n\
           server {{\n    listen {server}:{HTTP_PORT} backlog=65535;\n    root {root};\n\
             location = /ipxe {{ default_type text/plain; try_files /ipxe.static =404; }}\n\
             location = /boot.ipxe {{ default_type text/plain; }}\n  }}\n}}\n",
        server = env.server(),
    );
    let conf_path = nginx_dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut nginx = env.net.spawn_server(&[
        "/usr/sbin/nginx",
        "-c",
        &conf_path.to_string_lossy(),
        "-p",
        &nginx_dir.to_string_lossy(),
    ]);
    wait_listening(env, Host::Server, &mut nginx, "-t", HTTP_PORT, "nginx")?;
    Ok(vec![dnsmasq, nginx])
}

/// Raises the neighbour table thresholds for the run and restores them on drop.
struct GcThresh {
    old: Vec<(PathBuf, String)>,
}

impl GcThresh {
    fn raise() -> anyhow::Result<GcThresh> {
        let mut old = Vec::new();
        for (i, value) in GC_THRESH.iter().enumerate() {
            let path = PathBuf::from(format!(
                "/proc/sys/net/ipv4/neigh/default/gc_thresh{}",
                i + 1
            ));
            let current = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let current_value: u32 = current.trim().parse().unwrap_or(0);
            if current_value < *value {
                std::fs::write(&path, value.to_string())
                    .with_context(|| format!("writing {}", path.display()))?;
                old.push((path, current.trim().to_owned()));
            }
        }
        Ok(GcThresh { old })
    }
}

impl Drop for GcThresh {
    fn drop(&mut self) {
        // Lowest threshold last on the way up, highest last on the way down: gc_thresh3 is
        // restored first so that the order stays valid.
        for (path, value) in self.old.iter().rev() {
            let _ = std::fs::write(path, value);
        }
    }
}

/// A summary field of a report.
fn field<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &report["summary"][name]
}

fn secs(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.2} s"))
}

/// The markdown section: setup, the table, the verdicts, the plots, how it is made fair.
fn results_section(
    args: &RackArgs,
    env: &Env<'_>,
    results: &[RunResult],
    plots: &[(String, PathBuf)],
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Rack boot: pxe-daemon against dnsmasq + nginx\n");
    let _ = writeln!(s, "Run on {}, commit {}.\n", utc_now(), git_commit());
    let _ = writeln!(
        s,
        "`cargo xtask bench rack --machines {} --dhcp-mode {} --mix {} --spread-secs {}`: the same \
         simulated rack (`pxe-bench rack`: every machine its own MAC, firmware DHCP from raw frames \
         with the 4-8-16-32 s retry schedule, TFTP with blksize 1468, windowsize 4 on UEFI and the \
         tsize probe-abort, then iPXE's DHCP, `/boot.ipxe`, `/ipxe?mac=...`, a {} MiB kernel and a \
         {} MiB initrd over HTTP) against each server set in turn, in the same namespaces (the \
         servers in one, the machines in another, joined by a veth pair; when proxy mode is run, \
         the site DHCP server in a third, a host of its own, and the machines, in every run of \
         the bench, on a bridge that joins their end of the veth and the site host's), on this \
         2-core machine (shared with other work while it ran). NBPs: \
         {NBP_BIOS_BYTES} bytes for BIOS (undionly.kpxe's size) and {NBP_EFI_BYTES} bytes for UEFI \
         (snponly.efi's size). Proxy: the servers under test answer PXE beside a site DHCP server \
         (a dnsmasq giving addresses only, the same in every run); full: they give the addresses \
         too. \"all booted\" is the time from the first power-on until the last machine has its \
         initrd; p99 per stage is over the machines that completed the stage. \
         \"others' CPU meanwhile\" is what the rest of this shared machine used during the run \
         (2 cores: at most 2 CPU-seconds per second): results under heavy load are slower for \
         every server.\n",
        args.machines.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        args.dhcp_mode.join(","),
        args.mix,
        args.spread_secs,
        args.kernel_mib,
        args.initrd_mib,
    );
    let _ = writeln!(
        s,
        "| DHCP | N | servers | booted | failed | all booted | p99 dhcp | p99 nbp | p99 ipxe_dhcp | p99 script | p99 kernel | p99 initrd | p99 total | DHCP resends | server CPU | drops: site / tested / simulator | simulator CPU per machine | others' CPU meanwhile |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut failures = String::new();
    let mut reports = Vec::new();
    for r in results {
        let text = std::fs::read_to_string(&r.report)
            .with_context(|| format!("reading {}", r.report.display()))?;
        let report: serde_json::Value = serde_json::from_str(&text).context("a rack report")?;
        let p99 = |stage: &str| {
            field(&report, "stages")
                .as_array()
                .and_then(|a| a.iter().find(|st| st["stage"] == stage))
                .map_or_else(|| "-".to_owned(), |st| secs(&st["p99"]))
        };
        let all = match field(&report, "all_booted_secs").as_f64() {
            Some(t) => format!("**{t:.2} s**"),
            None => format!(
                "not all (last at {})",
                secs(field(&report, "last_booted_secs"))
            ),
        };
        let site = if r.full {
            "-".to_owned()
        } else {
            r.site_udp_drops.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {all} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {site} / {} / {} | {:.2} ms | {:.0} s in {:.0} s |",
            mode_name(r.full),
            r.machines,
            r.target.label(),
            field(&report, "booted"),
            field(&report, "failed"),
            p99("dhcp"),
            p99("nbp"),
            p99("ipxe_dhcp"),
            p99("script"),
            p99("kernel"),
            p99("initrd"),
            p99("total"),
            field(&report, "dhcp_resends"),
            r.server_cpu_secs,
            r.target_udp_drops,
            r.client_udp_drops + report["summary"]["simulator"]["packet_drops"].as_u64().unwrap_or(0),
            field(&report, "simulator_cpu_ms_per_machine")
                .as_f64()
                .unwrap_or(0.0),
            r.others_cpu_secs,
            report["summary"]["simulator"]["wall_secs"]
                .as_f64()
                .unwrap_or(0.0),
        );
        for f in field(&report, "failures").as_array().into_iter().flatten() {
            let _ = writeln!(
                failures,
                "- {} DHCP, N = {}, {}: {} machines failed in `{}`: {}",
                mode_name(r.full),
                r.machines,
                r.target.label(),
                f["count"],
                f["stage"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            );
        }
        if !r.exit.contains("exit status: 0") && !r.exit.contains("exit status: 1") {
            let _ = writeln!(
                failures,
                "- {} DHCP, N = {}, {}: the simulator ended with {}",
                mode_name(r.full),
                r.machines,
                r.target.label(),
                r.exit
            );
        }
        reports.push((r, report));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Verdicts (the goal: every machine boots against pxe-daemon, in at most half the time dnsmasq + nginx take):\n");
    for (r, ours) in reports.iter().filter(|(r, _)| r.target.is_ours()) {
        let Some((_, theirs)) = reports.iter().find(|(o, _)| {
            o.target == Target::Dnsmasq && o.machines == r.machines && o.full == r.full
        }) else {
            continue;
        };
        let ours_all = field(ours, "all_booted_secs").as_f64();
        let theirs_all = field(theirs, "all_booted_secs").as_f64();
        let ours_label = r.target.label();
        let verdict = match (ours_all, theirs_all) {
            (Some(a), Some(b)) => format!(
                "{ours_label} {a:.2} s, dnsmasq + nginx {b:.2} s: {:.2}x as fast{}",
                b / a,
                if a * 2.0 <= b { " (goal met)" } else { " (goal: 2x, not met)" }
            ),
            (Some(a), None) => format!(
                "{ours_label} booted all in {a:.2} s; dnsmasq + nginx booted {} of {} (the last at {}): not all, so the goal is met",
                field(theirs, "booted"),
                field(theirs, "machines"),
                secs(field(theirs, "last_booted_secs"))
            ),
            (None, _) => format!(
                "{ours_label} did not boot every machine ({} of {}): goal not met",
                field(ours, "booted"),
                field(ours, "machines")
            ),
        };
        let _ = writeln!(
            s,
            "- {} DHCP, N = {}: {verdict}.",
            mode_name(r.full),
            r.machines
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Reading the numbers: a machine that fails in `dhcp` or `ipxe_dhcp` (`no offer`, `no \
         complete offer`, `no ack`) ran out of firmware retries (4 + 8 + 16 + 32 s, about a \
         minute), as a real one would stop at PXE-E51; the drops column says whose socket lost \
         the datagrams (the site DHCP server's, the tested servers', or the simulator's, which \
         should stay 0, as should the site server's with its raised buffer). DHCP resends and a \
         dhcp p99 of several seconds mean datagrams were lost and recovered by a retry. Where both sets boot the rack in a few seconds, the run is bound by moving N \
         kernels and initrds over the veth on 2 shared cores (both use sendfile), not by DHCP or \
         TFTP. The last column is the rest of the machine's work during the run: a busy machine \
         slows every server, so compare rows of one run, not runs of different days.\n"
    );
    if !failures.is_empty() {
        let _ = writeln!(s, "Failures by stage and reason:\n\n{failures}");
    }
    for (name, _) in plots {
        let _ = writeln!(s, "![{name}: machines booted over time]({name})\n");
    }
    let _ = writeln!(
        s,
        "How it is made fair: the servers run one after the other with the same boot files, the \
         same machines (one seed: MACs, firmware, power-on times) and, in proxy mode, the same \
         site DHCP server (a dnsmasq giving addresses only, with `leasefile-ro` and `quiet-dhcp` \
         so that it is as fast as dnsmasq goes, and a {} MiB receive buffer on its sockets, set \
         from outside with `pidfd_getfd` as dnsmasq has no option for it: with the kernel's \
         208 KiB it dropped a rack's DISCOVERs whenever it waited for a core, more in the run of \
         whichever set moved its machines on faster; its CPU is not counted, its drops are \
         shown; the dnsmasq under test keeps the kernel's default, as deployed). Both \
         serve the same script chain: `/boot.ipxe` chains to `/ipxe?mac=...`, which pxe-daemon \
         renders per machine from its profile and nginx serves as one static file for every \
         machine. Limits are raised past the rack on both sides (dnsmasq `tftp-max` and \
         `dhcp-lease-max`, nginx `worker_connections` with `worker_processes auto`, pxe-daemon \
         `max_transfers` and `max_connections`); request logs are off on both HTTP servers, \
         sendfile on on both; dnsmasq runs with `quiet-dhcp` and `quiet-tftp`, pxe-daemon at its \
         default log level (info: a line per TFTP transfer); dnsmasq's x86PC `pxe-service` \
         serves the same BIOS file as `undionly.0`. Server CPU is user + system time of every \
         process of the tested set during the run, from /proc. The machines' addresses are in \
         {}.{}.0.0/16; the neighbour table thresholds were raised to {:?} during the run. Every \
         report, plot and the daemon's metrics after each run are left in `target/rack-bench/`.\n",
        SITE_RCVBUF_BYTES >> 20,
        env.pool[0],
        env.pool[1],
        GC_THRESH
    );
    let _ = writeln!(s, "{END}");
    Ok(s)
}

/// Replaces the section between the markers in `path` (creating the file, or appending the
/// section, as needed), keeping everything else.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n".to_owned());
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!(
                "{}{}{}",
                &old[..b],
                section.trim_end(),
                &old[e + END.len()..]
            )
        }
        _ => format!(
            "{}\n{}",
            old.trim_end_matches('\n').to_owned() + "\n",
            section
        ),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}
