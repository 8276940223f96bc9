//! The servers under test, started fresh for every step in the server namespace, on the same
//! veth, with the same addresses and the same pool.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use anyhow::{ensure, Context as _};
use pxe_tests::{metric_value, NsChild, TestNet};

use crate::bench::{
    peers::{
        daemon::{self, Daemon},
        dnsmasq::Dnsmasq,
        Host,
    },
    perfdhcp::Exchange,
};

/// Port of our daemon's HTTP (its health and metrics).
const DAEMON_HTTP_PORT: u16 = 8080;
/// Lease time both servers give, seconds (longer than any run, so no lease expires in one).
const LEASE_TIME_SECS: u32 = 3600;
/// `--dhcp-lease-max` of dnsmasq: far above what a run hands out (its default is 1000).
const DNSMASQ_LEASE_MAX: u32 = 1_000_000;
/// Boot file both servers name in their answers.
const BOOT_FILE: &str = "undionly.kpxe";
/// Seconds the daemon drains at stop: nothing is open when a step ends.
const DAEMON_DRAIN_SECS: u32 = 1;

/// A DHCP server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Server {
    /// Our daemon, release build.
    Ours,
    /// dnsmasq, the peer.
    Dnsmasq,
}

impl Server {
    /// Both, in the order each step runs them.
    pub(crate) const ALL: [Server; 2] = [Server::Ours, Server::Dnsmasq];

    /// Name in the results.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Server::Ours => "pxe-daemon",
            Server::Dnsmasq => "dnsmasq",
        }
    }

    /// Index into per-server arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Server::Ours => 0,
            Server::Dnsmasq => 1,
        }
    }
}

/// How the servers answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Proxy-DHCP: DISCOVER-OFFER with boot information, no address.
    Proxy,
    /// Full DHCP: DISCOVER-OFFER-REQUEST-ACK with an address from the pool, leases on disk.
    Full,
}

impl Mode {
    /// Both, in the order the run measures them.
    pub(crate) const ALL: [Mode; 2] = [Mode::Proxy, Mode::Full];

    /// Name in the results.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Full => "full",
        }
    }

    /// The exchange perfdhcp runs in this mode.
    pub(crate) const fn exchange(self) -> Exchange {
        match self {
            Mode::Proxy => Exchange::TwoWay,
            Mode::Full => Exchange::FourWay,
        }
    }
}

/// The /16 the benchmark runs on, beside the [`TestNet`]'s own /24: a pool big enough for every
/// client perfdhcp simulates. perfdhcp is the relay at `.0.2`, the servers answer on `.0.1`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addressing {
    /// The server's address on the /16.
    pub server: Ipv4Addr,
    /// perfdhcp's address (source and giaddr).
    pub client: Ipv4Addr,
    /// First address of the dynamic range.
    pub first: Ipv4Addr,
    /// Last address of the dynamic range.
    pub last: Ipv4Addr,
}

impl Addressing {
    /// Prefix length of the benchmark network.
    pub(crate) const PREFIX_LEN: u8 = 16;

    /// The half of 198.18.0.0/15 that does not hold `net`'s /24, so the two never overlap.
    pub(crate) fn beside(net: &TestNet) -> Addressing {
        let b = if net.server_ip().octets()[1] == 18 {
            19
        } else {
            18
        };
        Addressing {
            server: Ipv4Addr::new(198, b, 0, 1),
            client: Ipv4Addr::new(198, b, 0, 2),
            first: Ipv4Addr::new(198, b, 1, 0),
            last: Ipv4Addr::new(198, b, 255, 254),
        }
    }

    /// The network address of the /16.
    pub(crate) fn network(&self) -> Ipv4Addr {
        let [a, b, _, _] = self.server.octets();
        Ipv4Addr::new(a, b, 0, 0)
    }

    /// Addresses in the dynamic range.
    pub(crate) fn pool_size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Adds the /16 addresses to both veth ends (the harness removes them with the namespaces).
    pub(crate) fn add_to(&self, net: &TestNet) -> anyhow::Result<()> {
        for (ns_is_server, addr, dev) in [
            (true, self.server, net.server_if()),
            (false, self.client, net.client_if()),
        ] {
            let cidr = format!("{addr}/{}", Self::PREFIX_LEN);
            let argv = ["ip", "addr", "add", &cidr, "dev", dev];
            let out = if ns_is_server {
                net.server(&argv)
            } else {
                net.client(&argv)
            };
            ensure!(
                out.status.success(),
                "`{}` failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Everything a server needs to start.
#[derive(Debug)]
pub(crate) struct Setting<'a> {
    /// The namespaces.
    pub net: &'a TestNet,
    /// The release pxe-daemon.
    pub daemon_bin: &'a Path,
    /// The /16.
    pub addressing: Addressing,
    /// Directory for config and lease files (on the disk under test).
    pub dir: &'a Path,
    /// `--xdp-mode` of our daemon.
    pub xdp_mode: &'a str,
    /// More flags for our daemon (`--datapath xdp`).
    pub daemon_args: &'a [&'a str],
}

/// A server running for one step.
#[derive(Debug)]
pub(crate) enum Running<'net> {
    /// Our daemon.
    Ours(Daemon<'net>),
    /// dnsmasq.
    Dnsmasq(NsChild),
}

impl<'net> Running<'net> {
    /// Starts `server` in `mode` with an empty lease store and waits until it serves.
    pub(crate) fn start(
        server: Server,
        mode: Mode,
        s: &Setting<'net>,
    ) -> anyhow::Result<Running<'net>> {
        let leases = lease_file(server, s.dir);
        match std::fs::remove_file(&leases) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", leases.display())),
        }
        match server {
            Server::Ours => start_ours(mode, s, &leases),
            Server::Dnsmasq => start_dnsmasq(mode, s, &leases),
        }
    }

    /// The process id (of the server itself: `ip netns exec` execs in place).
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Running::Ours(d) => d.id(),
            Running::Dnsmasq(c) => c.id(),
        }
    }

    /// Whether the process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        match self {
            Running::Ours(d) => d.try_wait().is_none(),
            Running::Dnsmasq(c) => c.try_wait().is_none(),
        }
    }

    /// Everything it has logged.
    pub(crate) fn log(&self) -> String {
        match self {
            Running::Ours(d) => d.log(),
            Running::Dnsmasq(c) => c.log(),
        }
    }

    /// Our daemon's XDP attach mode, from its metrics (`None` for dnsmasq).
    pub(crate) fn xdp_attach_mode(&self) -> Option<&'static str> {
        let Running::Ours(d) = self else { return None };
        let metrics = d.metrics().unwrap_or_default();
        ["driver", "skb", "none"]
            .into_iter()
            .find(|m| metric_value(&metrics, "pxe_xdp_attach_mode", &[("mode", m)]) == Some(1.0))
    }

    /// Stops it (SIGTERM, then SIGKILL after the harness's bound).
    pub(crate) fn stop(self) {
        match self {
            Running::Ours(d) => {
                d.stop();
            }
            Running::Dnsmasq(c) => {
                c.stop();
            }
        }
    }
}

impl Running<'_> {
    /// Our daemon's `/metrics` text (`None` for dnsmasq, or when it does not answer).
    pub(crate) fn metrics(&self) -> Option<String> {
        match self {
            Running::Ours(d) => d.metrics(),
            Running::Dnsmasq(_) => None,
        }
    }
}

/// Where `server` keeps its leases in full mode.
pub(crate) fn lease_file(server: Server, dir: &Path) -> PathBuf {
    dir.join(format!("{}.leases", server.label()))
}

fn start_ours<'net>(mode: Mode, s: &Setting<'net>, leases: &Path) -> anyhow::Result<Running<'net>> {
    let a = s.addressing;
    let config = s.dir.join("pxe-daemon.toml");
    let text = format!(
        "[server]\ndrain_timeout_secs = {DAEMON_DRAIN_SECS}\n\n\
         [dhcp]\nmode = \"{mode}\"\nserver_address = \"{server}\"\nlease_file = \"{leases}\"\n\n\
         [[dhcp.subnet]]\nnetwork = \"{net}/{len}\"\nrange = [\"{first}\", \"{last}\"]\n\
         router = \"{router}\"\nlease_time_secs = {LEASE_TIME_SECS}\n",
        mode = mode.label(),
        server = a.server,
        leases = leases.display(),
        net = a.network(),
        len = Addressing::PREFIX_LEN,
        first = a.first,
        last = a.last,
        router = a.server,
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    // A boot root holding the boot file, as in production: the daemon names the first BIOS
    // boot program its root holds (dnsmasq is told the name).
    let root = s.dir.join("boot-root");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::write(root.join(BOOT_FILE), b"placeholder boot program\n")
        .with_context(|| format!("writing {BOOT_FILE} into {}", root.display()))?;
    let mut args = vec!["--xdp-mode", s.xdp_mode];
    args.extend_from_slice(s.daemon_args);
    let daemon = Daemon::start(
        s.net,
        &daemon::Options {
            bin: s.daemon_bin,
            config: &config,
            root: Some(&root),
            http: SocketAddrV4::new(s.net.server_ip(), DAEMON_HTTP_PORT),
            log_level: daemon::LOG_LEVEL,
            args: &args,
        },
    )?;
    Ok(Running::Ours(daemon))
}

fn start_dnsmasq<'net>(
    mode: Mode,
    s: &Setting<'net>,
    leases: &Path,
) -> anyhow::Result<Running<'net>> {
    let a = s.addressing;
    let mut options = vec![
        "no-ping".to_owned(),
        // One log line per DHCP message otherwise: that is not what is measured.
        "quiet-dhcp".to_owned(),
        format!("dhcp-lease-max={DNSMASQ_LEASE_MAX}"),
        format!("dhcp-leasefile={}", leases.display()),
    ];
    match mode {
        Mode::Proxy => {
            options.push(format!("dhcp-range={},proxy", a.network()));
            options.push(format!(
                "pxe-service=x86PC,boot,{}",
                BOOT_FILE.trim_end_matches(".kpxe")
            ));
        }
        Mode::Full => {
            options.push(format!(
                "dhcp-range={},{},255.255.0.0,{LEASE_TIME_SECS}",
                a.first, a.last
            ));
            options.push(format!("dhcp-boot={BOOT_FILE}"));
        }
    }
    let dnsmasq = Dnsmasq::start(Host::Server(s.net), s.dir, &options, 67)?;
    Ok(Running::Dnsmasq(dnsmasq.into_child()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_a_slash_16_minus_its_first_256() {
        let a = Addressing {
            server: Ipv4Addr::new(198, 19, 0, 1),
            client: Ipv4Addr::new(198, 19, 0, 2),
            first: Ipv4Addr::new(198, 19, 1, 0),
            last: Ipv4Addr::new(198, 19, 255, 254),
        };
        assert_eq!(a.network(), Ipv4Addr::new(198, 19, 0, 0));
        assert_eq!(a.pool_size(), 65_279);
    }
}
