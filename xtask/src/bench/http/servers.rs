//! The two servers of the HTTP benchmark, pxe-daemon and nginx, serving the same files from
//! one temporary directory in the server namespace, and that directory.

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{ensure, Context as _};
use pxe_tests::{NsChild, TestNet};

use crate::bench::{
    cpu,
    peers::{daemon, nginx},
};

/// Port of pxe-daemon.
pub(super) const OURS_PORT: u16 = 8080;
/// Port of nginx.
pub(super) const NGINX_PORT: u16 = 8081;
/// Worker processes of nginx: one per core, as pxe-daemon's tokio runtime has one worker
/// thread per core (its default).
pub(super) const NGINX_WORKERS: u32 = 2;
/// Path of the large file under both servers' roots.
pub(super) const BIG_PATH: &str = "/assets/big.img";
/// Size of the large file.
pub(super) const BIG_BYTES: u64 = 200 << 20;
/// The script pxe-daemon renders per request: a machine of the benchmark's group, as iPXE asks
/// for it after expanding `/boot.ipxe`'s chain URL.
pub(super) const SCRIPT_QUERY_PATH: &str =
    "/ipxe?mac=52-54-00-12-34-56&buildarch=x86_64&platform=efi";
/// Where nginx serves a static copy of what pxe-daemon rendered for [`SCRIPT_QUERY_PATH`].
pub(super) const STATIC_SCRIPT_PATH: &str = "/scripts/52-54-00-12-34-56.ipxe";
/// Bytes the large file is written in.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// The temporary directory both servers serve from, with their configs. Removed on drop.
#[derive(Debug)]
pub(super) struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Writes the boot root (a kernel and initrd for the profile, the large file of
    /// pseudo-random bytes), pxe-daemon's config and nginx's config for a server at `ip`.
    pub(super) fn new(ip: Ipv4Addr) -> anyhow::Result<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("pxe-httpbench-")
            .tempdir()
            .context("creating the benchmark's temporary directory")?;
        let fixture = Fixture { dir };
        let root = fixture.root();
        for sub in ["assets", "scripts", "nginx"] {
            std::fs::create_dir_all(root.join(sub))
                .and_then(|()| std::fs::create_dir_all(fixture.path().join(sub)))
                .with_context(|| format!("creating {sub} in {}", fixture.path().display()))?;
        }
        std::fs::write(root.join("assets/vmlinuz"), b"kernel\n").context("writing vmlinuz")?;
        std::fs::write(root.join("assets/initrd.img"), b"initrd\n")
            .context("writing initrd.img")?;
        write_pseudo_random(&fixture.big_file(), BIG_BYTES)?;
        std::fs::write(fixture.ours_config(), OURS_CONFIG).context("writing pxe-daemon.toml")?;
        std::fs::write(fixture.nginx_config(), fixture.nginx_config_text(ip))
            .context("writing nginx.conf")?;
        // nginx's workers drop root: everything they read must be readable by anyone.
        for dir in [
            fixture.path(),
            &root,
            &root.join("assets"),
            &root.join("scripts"),
        ] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} readable", dir.display()))?;
        }
        Ok(fixture)
    }

    /// The temporary directory.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory both servers serve.
    pub(super) fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// The large file.
    pub(super) fn big_file(&self) -> PathBuf {
        self.root().join(BIG_PATH.trim_start_matches('/'))
    }

    /// nginx's static copy of the rendered script.
    pub(super) fn static_script(&self) -> PathBuf {
        self.root().join(STATIC_SCRIPT_PATH.trim_start_matches('/'))
    }

    fn ours_config(&self) -> PathBuf {
        self.path().join("pxe-daemon.toml")
    }

    fn nginx_config(&self) -> PathBuf {
        self.path().join("nginx.conf")
    }

    fn nginx_config_text(&self, ip: Ipv4Addr) -> String {
        let dir = self.path().display();
        format!(
            "\
# Written by cargo xtask bench http.
worker_processes {NGINX_WORKERS};
pid {dir}/nginx/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # nginx's default of 1000 would make wrk reconnect where pxe-daemon keeps the connection.
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    types {{
        text/plain ipxe;
    }}
    client_body_temp_path {dir}/nginx/client_body;
    proxy_temp_path {dir}/nginx/proxy;
    fastcgi_temp_path {dir}/nginx/fastcgi;
    uwsgi_temp_path {dir}/nginx/uwsgi;
    scgi_temp_path {dir}/nginx/scgi;
    server {{
        listen {ip}:{NGINX_PORT};
        root {dir}/root;
    }}
}}
"
        )
    }
}

/// pxe-daemon's config: the root as boot root (TFTP, idle here) and artifact root, and a group whose profile `/ipxe` renders.
const OURS_CONFIG: &str = r#"# Written by cargo xtask bench http.
[server]
root = "root"

[http]
artifact_root = "root"

[[group]]
name = "rack"
mac_prefix = ["52:54:00"]
profile = "node"
vars = { role = "worker" }

[[profile]]
name = "node"
kernel = "assets/vmlinuz"
initrd = ["assets/initrd.img"]
args = "console=ttyS0 role={{ vars.role }} mac={{ mac }} arch={{ arch }}"
"#;

/// Writes `len` bytes of xorshift output (no runs of zeros, so a server that sent zeros or the
/// wrong offset fails the byte-for-byte check) and waits until they are on disk.
fn write_pseudo_random(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut chunk = vec![0u8; WRITE_CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = usize::try_from(left).map_or(chunk.len(), |l| l.min(chunk.len()));
        file.write_all(&chunk[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    // On disk before any run: writeback of 200 MiB would otherwise load the machine during the
    // first run.
    file.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// pxe-daemon.
    Ours,
    /// nginx.
    Nginx,
}

impl Kind {
    /// Name in tables.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Ours => "pxe-daemon",
            Kind::Nginx => "nginx",
        }
    }
}

/// A running server in the server namespace.
#[derive(Debug)]
pub(super) struct Server {
    kind: Kind,
    child: NsChild,
    ip: Ipv4Addr,
    port: u16,
}

impl Server {
    /// Starts pxe-daemon (`bin`, a release build) with the fixture's config and waits for it.
    pub(super) fn start_ours(
        net: &TestNet,
        fixture: &Fixture,
        bin: &Path,
    ) -> anyhow::Result<Server> {
        let http = SocketAddrV4::new(net.server_ip(), OURS_PORT);
        let daemon = daemon::Daemon::start(
            net,
            &daemon::Options {
                bin,
                config: &fixture.ours_config(),
                root: None,
                http,
                // Requests are logged only at debug: no access log, like nginx's `access_log off`.
                log_level: daemon::LOG_LEVEL,
                args: &["--dhcp-mode", "off", "--xdp-mode", "off"],
            },
        )?;
        Ok(Server {
            kind: Kind::Ours,
            child: daemon.into_child(),
            ip: net.server_ip(),
            port: OURS_PORT,
        })
    }

    /// Starts nginx with the fixture's config in the foreground and waits for it.
    pub(super) fn start_nginx(net: &TestNet, fixture: &Fixture) -> anyhow::Result<Server> {
        let ready = format!("http://{}:{NGINX_PORT}/assets/vmlinuz", net.server_ip());
        let child = nginx::start(
            net,
            &fixture.path().join("nginx"),
            &fixture.nginx_config(),
            &ready,
        )?;
        let server = Server {
            kind: Kind::Nginx,
            child,
            ip: net.server_ip(),
            port: NGINX_PORT,
        };
        let workers = cpu::children_of(server.child.id())?.len();
        ensure!(
            workers == NGINX_WORKERS as usize,
            "nginx runs {workers} workers, not {NGINX_WORKERS}"
        );
        Ok(server)
    }

    /// An error with the server's log if it has exited.
    pub(super) fn check_running(&self) -> anyhow::Result<()> {
        // NsChild::try_wait needs `&mut`; a zero-timeout probe through /proc does not.
        let pid = self.child.id();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']));
        ensure!(
            alive,
            "{} (pid {pid}) has exited; its log:\n{}",
            self.kind.name(),
            self.child.log()
        );
        Ok(())
    }

    /// Which server this is.
    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// `http://<server ip>:<port><path>`.
    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.port)
    }

    /// The server's processes: pxe-daemon's one, or nginx's master and workers.
    fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let main = self.child.id();
        let mut pids = vec![main];
        if self.kind == Kind::Nginx {
            pids.extend(cpu::children_of(main)?);
        }
        Ok(pids)
    }

    /// The thread ids of all the server's processes.
    pub(super) fn thread_ids(&self) -> anyhow::Result<Vec<u32>> {
        Ok(self.pids()?.into_iter().flat_map(cpu::threads_of).collect())
    }

    /// CPU time (user + system) of all the server's processes so far.
    pub(super) fn cpu_time(&self) -> anyhow::Result<Duration> {
        self.check_running()?;
        self.pids()?
            .into_iter()
            .map(cpu::process_time)
            .sum::<anyhow::Result<Duration>>()
    }

    /// Peak resident memory so far, summed over the server's processes (nginx's workers share
    /// pages with the master, which the sum counts in each), KiB.
    pub(super) fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.check_running()?;
        self.pids()?.into_iter().map(cpu::peak_rss_kib).sum()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); an error unless it exits cleanly.
    pub(super) fn stop(self) -> anyhow::Result<()> {
        let name = self.kind.name();
        let log = self.child.log();
        let status = self.child.stop();
        ensure!(
            status.success(),
            "{name} did not stop cleanly ({status}); its log:\n{log}"
        );
        Ok(())
    }
}
