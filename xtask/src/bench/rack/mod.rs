//! `cargo xtask bench rack`: the same simulated rack (`pxe-bench rack`), in one run, against
//! pxe-daemon and against dnsmasq (proxy DHCP and TFTP) with nginx (HTTP), for each rack size;
//! the comparison table and the completion plots go to bench/RESULTS.md; how the run is made
//! fair is bench/README.md's.

mod render;
mod run;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};
use pxe_tests::{run_bounded, SiteHost, TestNet, SITE_BRIDGE};

use super::results;
use crate::{cmd, workspace};

/// The namespace tag (`pxet-rack-s`, `pxet-rack-c`).
const NET_TAG: &str = "rack";
/// The HTTP port of both HTTP servers.
const HTTP_PORT: u16 = 8080;
/// Sizes of the NBPs: Debian's undionly.kpxe and snponly.efi (served as ipxe.efi).
const NBP_BIOS_BYTES: usize = 74_213;
const NBP_EFI_BYTES: usize = 173_792;
/// Section of bench/RESULTS.md.
const SECTION: &str = "rack";
/// Neighbour table thresholds while the bench runs (global, not per namespace): the server
/// namespace holds one entry per machine.
const GC_THRESH: [u32; 3] = [8192, 16384, 32768];
/// Extra time the bench grants a rack run past the simulator's own deadline.
const RUN_GRACE: Duration = Duration::from_secs(60);
/// Receive buffer of the site DHCP server's sockets (proxy mode). dnsmasq keeps the kernel's
/// default (208 KiB) and has no option to raise it, so the site server dropped a rack's
/// DISCOVERs and REQUESTs whenever it waited for a core: 3,752 in one 5,000-machine run
/// against pxe-daemon, 2,042 in the same rack against dnsmasq, each a firmware retry 4 to 16 s
/// later. The site server is not under test; on a real network it has a machine of its own.
const SITE_RCVBUF_BYTES: usize = 8 << 20;

/// Options of `cargo xtask bench rack`.
#[derive(Debug, clap::Args)]
pub(super) struct RackArgs {
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

    /// Where both HTTP servers listen.
    fn http(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.server(), HTTP_PORT)
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.http())
    }

    /// The site host; there is one whenever proxy mode runs.
    fn site_host(&self) -> &SiteHost {
        self.site
            .expect("a site host exists whenever proxy mode runs")
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
pub(super) fn run(args: &RackArgs) -> anyhow::Result<()> {
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
    let _thresh = run::GcThresh::raise()?;
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
                results.push(run::run_one(&env, args, n, target, full, &out_dir)?);
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
    let section = render::section(args, &env, &results, &plots)?;
    println!("{section}");
    if !args.no_results {
        let bench_dir = workspace::root().join("bench");
        let mut names = Vec::new();
        for (name, png) in &plots {
            std::fs::copy(png, bench_dir.join(name))
                .with_context(|| format!("copying {}", png.display()))?;
            names.push(name.clone());
        }
        results::write_section(SECTION, &section)?;
        println!(
            "rack: wrote bench/RESULTS.md and bench/{}",
            names.join(", bench/")
        );
    }
    Ok(())
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
