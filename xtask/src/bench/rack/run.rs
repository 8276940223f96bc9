//! One rack run: the servers of a target (and the site DHCP server in proxy mode), the
//! simulator against them, the CPU times and drops around it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use pxe_tests::{run_bounded, NsChild};

use super::{
    mode_name, Env, RackArgs, RunResult, Target, GC_THRESH, HTTP_PORT, RUN_GRACE, SITE_RCVBUF_BYTES,
};
use crate::{
    bench::{
        cpu::{self, MachineTime},
        peers::{self, daemon, dnsmasq::Dnsmasq, nginx, Host},
        snmp::UdpCounters,
    },
    cmd,
};

/// How long the daemon gets to bind its TFTP port once it answers `/healthz`.
const TFTP_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the servers of `target` (and the site DHCP server in proxy mode), runs the rack,
/// reads the servers' CPU time, stops them.
pub(super) fn run_one(
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
        let site_dir = run_dir.join("site");
        site = Some(Dnsmasq::start(
            Host::Site(env.site_host()),
            &site_dir,
            &[
                format!("dhcp-range={first},{last},255.255.0.0,1h"),
                "dhcp-lease-max=65536".to_owned(),
                "no-ping".to_owned(),
                "user=root".to_owned(),
                format!("dhcp-leasefile={}", site_dir.join("leases").display()),
                // Not under test: as fast as dnsmasq goes (no lease file, no log lines), so
                // that it shapes neither result.
                "leasefile-ro".to_owned(),
                "quiet-dhcp".to_owned(),
            ],
            67,
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
    let machine_before = MachineTime::now()?;
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
    let machine_busy = MachineTime::now()?
        .since(machine_before)
        .not_idle()
        .as_secs_f64();
    let client_udp = UdpCounters::read(env.net, false)?.since(&client_udp_before);
    let target_drops = socket_drops(Host::Server(env.net));
    let site_drops = env.site.map_or(0, |site| socket_drops(Host::Site(site)));
    if target.is_ours() {
        // The daemon's own view of the run, kept beside the report.
        let metrics = daemon::metrics(env.net, env.http()).unwrap_or_default();
        let _ = std::fs::write(out_dir.join(format!("rack-{tag}.metrics")), metrics);
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
        cpu::kill(pid);
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

/// CPU seconds (user + system) of every process in namespace `ns`.
fn namespace_cpu(ns: &str) -> f64 {
    let out = run_bounded(
        Command::new("ip").args(["netns", "pids", ns]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter_map(|pid| cpu::process_time(pid).ok())
        .map(|t| t.as_secs_f64())
        .sum()
}

/// CPU seconds of the site host's processes (0 without a site host).
fn site_cpu(env: &Env<'_>) -> f64 {
    env.site.map_or(0.0, |site| namespace_cpu(site.ns()))
}

/// Datagrams the UDP sockets at `host` dropped for a full receive buffer, each socket that
/// dropped any printed with its address and owner: where a burst was lost.
fn socket_drops(host: Host<'_>) -> u64 {
    let out = host.run(&["ss", "-H", "-u", "-a", "-m", "-n", "-p"]);
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

/// Gives every UDP socket of process `pid` a receive buffer of `bytes` (`SO_RCVBUFFORCE` on a
/// duplicate taken with `pidfd_getfd`: the duplicate is the process's own socket); returns how
/// many sockets it changed. For a program that has no option for it.
fn raise_rcvbuf(pid: u32, bytes: usize) -> anyhow::Result<usize> {
    use rustix::{
        net::{
            sockopt::{set_socket_recv_buffer_size_force, socket_type},
            SocketType,
        },
        process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags},
    };
    let process = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    let pidfd =
        pidfd_open(process, PidfdFlags::empty()).with_context(|| format!("pidfd_open({pid})"))?;
    let mut changed = 0;
    let dir = format!("/proc/{pid}/fd");
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
        // Closed when dropped, at the end of this iteration.
        let Ok(dup) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        if socket_type(&dup).is_ok_and(|t| t == SocketType::DGRAM)
            && set_socket_recv_buffer_size_force(&dup, bytes).is_ok()
        {
            changed += 1;
        }
    }
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
    // The daemon's log is kept beside the report; PXE_RACK_LOG sets its filter.
    let log_level = std::env::var("PXE_RACK_LOG").unwrap_or_else(|_| daemon::LOG_LEVEL.to_owned());
    let mut daemon = daemon::Daemon::start(
        env.net,
        &daemon::Options {
            bin: &env.daemon_bin,
            config: &path,
            root: Some(&env.root),
            http: env.http(),
            log_level: &log_level,
            args: &["--datapath", if xdp { "xdp" } else { "kernel" }],
        },
    )?;
    peers::wait_udp_bound(
        Host::Server(env.net),
        daemon.child_mut(),
        "pxe-daemon",
        69,
        TFTP_READY_TIMEOUT,
    )?;
    Ok(daemon.into_child())
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
        "no-ping".to_owned(),
        "user=root".to_owned(),
        format!("dhcp-leasefile={}", dir.join("dnsmasq/leases").display()),
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
            // No shell in between, so no quotes: dnsmasq would keep them in the menu text.
            "pxe-service=tag:!ipxe,x86PC,Network boot (BIOS),undionly".to_owned(),
            "pxe-service=tag:!ipxe,x86-64_EFI,Network boot (UEFI),ipxe.efi".to_owned(),
        ]);
    }
    // dnsmasq limits tftp-max by its open-file limit: give it the hard limit.
    let dnsmasq = Dnsmasq::start(Host::Server(env.net), &dir.join("dnsmasq"), &lines, 67)?;
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let nd = nginx_dir.display();
    let conf = format!(
        "master_process on;\nworker_processes auto;\nworker_rlimit_nofile 65536;\n\
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
    let nginx = nginx::start(
        env.net,
        &nginx_dir,
        &conf_path,
        &format!("{base}/boot.ipxe"),
    )?;
    Ok(vec![dnsmasq.into_child(), nginx])
}

/// Raises the neighbour table thresholds for the run and restores them on drop.
pub(super) struct GcThresh {
    old: Vec<(PathBuf, String)>,
}

impl GcThresh {
    pub(super) fn raise() -> anyhow::Result<GcThresh> {
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
