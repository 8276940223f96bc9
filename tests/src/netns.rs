//! A server and a client network namespace joined by a veth pair, on 198.18.0.0/15.

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    time::Duration,
};

use crate::process::{run_bounded, try_run_bounded, NsChild};

/// Prefix of every namespace and interface name the harness makes, unless
/// [`NAME_PREFIX_ENV`] names another.
pub const NAME_PREFIX: &str = "pxet-";
/// Environment variable that replaces [`NAME_PREFIX`] with another 5-character prefix (`a-z`,
/// `0-9`, ending in `-`), so that two checkouts can run the namespace tests on one machine at
/// the same time without removing each other's namespaces.
pub const NAME_PREFIX_ENV: &str = "PXE_TEST_NS_PREFIX";

/// The prefix in use: [`NAME_PREFIX_ENV`] when it is a valid prefix, else [`NAME_PREFIX`].
pub fn name_prefix() -> String {
    match std::env::var(NAME_PREFIX_ENV) {
        Ok(p) if valid_prefix(&p) => p,
        Ok(p) => {
            panic!("{NAME_PREFIX_ENV}={p:?}: must be 4 characters of a-z and 0-9 followed by '-'")
        }
        Err(_) => NAME_PREFIX.to_string(),
    }
}

fn valid_prefix(p: &str) -> bool {
    p.len() == NAME_PREFIX.len()
        && p.ends_with('-')
        && p[..p.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}
/// Longest tag: names are `pxet-<tag>-s`, and interface names have at most 15 bytes.
pub const MAX_TAG_LEN: usize = 8;
/// Prefix length of every test subnet (one /24 of 198.18.0.0/15 per tag).
pub const PREFIX_LEN: u8 = 24;
/// Default bound on a command run with [`TestNet::client`] or [`TestNet::server`].
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on each `ip` command of setup and teardown.
const SETUP_CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Number of /24 subnets in 198.18.0.0/15.
const SUBNET_COUNT: u32 = 512;

/// Two network namespaces, `pxet-<tag>-s` (server) and `pxet-<tag>-c` (client), joined by a veth
/// pair whose ends carry the namespaces' names. The server end is `.1` and the client end `.2` of
/// a /24 of 198.18.0.0/15 derived from the tag. Loopback is up in both; IPv6 is disabled in both
/// so the link carries only what a test sends (and no traffic to addresses outside the range).
///
/// Dropping it kills what still runs in the namespaces and deletes them (and so the veth pair),
/// also while a test panics.
#[derive(Debug)]
pub struct TestNet {
    server_ns: String,
    client_ns: String,
    server_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
}

impl TestNet {
    /// Creates the namespaces and veth pair for `tag` (1 to 8 of `a-z`, `0-9`), first removing
    /// any left with the same names by an earlier run that was killed. Needs root.
    pub fn new(tag: &str) -> TestNet {
        assert!(
            !tag.is_empty()
                && tag.len() <= MAX_TAG_LEN
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "TestNet tag {tag:?} must be 1 to {MAX_TAG_LEN} characters of a-z and 0-9"
        );
        let subnet = subnet_for(tag);
        let [a, b, c, _] = subnet.octets();
        let net = TestNet {
            server_ns: format!("{}{tag}-s", name_prefix()),
            client_ns: format!("{}{tag}-c", name_prefix()),
            server_ip: Ipv4Addr::new(a, b, c, 1),
            client_ip: Ipv4Addr::new(a, b, c, 2),
        };
        net.remove();
        // From here on a panic drops `net`, which removes what was made so far.
        net.setup();
        net
    }

    fn setup(&self) {
        let quiet_link = [
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ];
        for ns in [&self.server_ns, &self.client_ns] {
            ip(&["netns", "add", ns]);
            expect_success(
                &ns_run(ns, &quiet_link, SETUP_CMD_TIMEOUT),
                "disabling IPv6",
            );
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Both ends are created directly inside their namespaces: nothing appears in the host's.
        ip(&[
            "link",
            "add",
            &self.server_ns,
            "netns",
            &self.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_ns,
            "netns",
            &self.client_ns,
        ]);
        for (ns, addr) in [
            (&self.server_ns, self.server_ip),
            (&self.client_ns, self.client_ip),
        ] {
            let cidr = format!("{addr}/{PREFIX_LEN}");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", ns]);
            ip(&["-n", ns, "link", "set", ns, "up"]);
        }
    }

    /// Kills what runs in the namespaces and deletes them, and any host interface with their
    /// names. Never panics; missing pieces are fine.
    fn remove(&self) {
        // A site host a killed run left behind (its own drop removes it otherwise).
        let site_ns = site_ns_of(&self.server_ns);
        kill_processes_in(&site_ns);
        let _ = try_run_bounded(
            Command::new("ip").args(["netns", "delete", &site_ns]),
            SETUP_CMD_TIMEOUT,
        );
        for ns in [&self.server_ns, &self.client_ns] {
            kill_processes_in(ns);
            let _ = try_run_bounded(
                Command::new("ip").args(["netns", "delete", ns]),
                SETUP_CMD_TIMEOUT,
            );
            let _ = try_run_bounded(
                Command::new("ip").args(["link", "delete", ns]),
                SETUP_CMD_TIMEOUT,
            );
        }
    }

    /// Name of the server namespace.
    pub fn server_ns(&self) -> &str {
        &self.server_ns
    }

    /// Name of the client namespace.
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// Name of the veth end in the server namespace (the same as the namespace's).
    pub fn server_if(&self) -> &str {
        &self.server_ns
    }

    /// Name of the veth end in the client namespace (the same as the namespace's).
    pub fn client_if(&self) -> &str {
        &self.client_ns
    }

    /// Address of the server end.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }

    /// Address of the client end.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.client_ip
    }

    /// Prefix length of the subnet of both ends.
    pub fn prefix_len(&self) -> u8 {
        PREFIX_LEN
    }

    /// Broadcast address of the subnet.
    pub fn broadcast_ip(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.server_ip.octets();
        Ipv4Addr::new(a, b, c, 255)
    }

    /// Runs `argv` in the client namespace, killed after [`CMD_TIMEOUT`].
    pub fn client(&self, argv: &[&str]) -> Output {
        ns_run(&self.client_ns, argv, CMD_TIMEOUT)
    }

    /// Runs `argv` in the server namespace, killed after [`CMD_TIMEOUT`].
    pub fn server(&self, argv: &[&str]) -> Output {
        ns_run(&self.server_ns, argv, CMD_TIMEOUT)
    }

    /// Runs `argv` in the client namespace, killed after `timeout`.
    pub fn client_timeout(&self, argv: &[&str], timeout: Duration) -> Output {
        ns_run(&self.client_ns, argv, timeout)
    }

    /// Runs `argv` in the server namespace, killed after `timeout`.
    pub fn server_timeout(&self, argv: &[&str], timeout: Duration) -> Output {
        ns_run(&self.server_ns, argv, timeout)
    }

    /// Starts `argv` in the server namespace; the guard kills it when dropped.
    pub fn spawn_server(&self, argv: &[&str]) -> NsChild {
        NsChild::spawn(ns_command(&self.server_ns, argv))
    }

    /// Starts `argv` in the client namespace; the guard kills it when dropped.
    pub fn spawn_client(&self, argv: &[&str]) -> NsChild {
        NsChild::spawn(ns_command(&self.client_ns, argv))
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Name of the bridge [`SiteHost`] makes in the client namespace.
pub const SITE_BRIDGE: &str = "brsite";

/// The namespace of the [`SiteHost`] of the net whose server namespace is `server_ns`.
fn site_ns_of(server_ns: &str) -> String {
    format!("{}d", server_ns.trim_end_matches('s'))
}

/// A third host on the client's Ethernet segment, in a namespace of its own: the client's
/// veth and a veth to this host are joined by a bridge ([`SITE_BRIDGE`]) in the client
/// namespace, which takes over the client's address. A client that sends on the bridge
/// reaches both the server and this host, and this host sees the frames before anything on
/// the server side does (a site DHCP server beside a server whose XDP program takes PXE
/// frames off the kernel's path).
///
/// Dropping it kills what runs in its namespace and deletes it; the bridge goes with the
/// client namespace.
#[derive(Debug)]
pub struct SiteHost {
    ns: String,
    ip: Ipv4Addr,
}

impl SiteHost {
    /// Adds the host to `net`, at address .3 of its subnet.
    pub fn new(net: &TestNet) -> SiteHost {
        let ns = site_ns_of(&net.server_ns);
        let [a, b, c, _] = net.server_ip.octets();
        let site = SiteHost {
            ns,
            ip: Ipv4Addr::new(a, b, c, 3),
        };
        site.remove();
        site.setup(net);
        site
    }

    fn setup(&self, net: &TestNet) {
        let c = net.client_ns.as_str();
        ip(&["netns", "add", &self.ns]);
        ip(&["-n", &self.ns, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &self.ns, "netns", &self.ns, "type", "veth", "peer", "name", "sitep",
            "netns", c,
        ]);
        ip(&[
            "-n",
            c,
            "link",
            "add",
            SITE_BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        let client_cidr = format!("{}/{PREFIX_LEN}", net.client_ip);
        ip(&["-n", c, "addr", "del", &client_cidr, "dev", c]);
        for port in [c, "sitep"] {
            ip(&["-n", c, "link", "set", port, "master", SITE_BRIDGE]);
            ip(&["-n", c, "link", "set", port, "up"]);
        }
        ip(&["-n", c, "addr", "add", &client_cidr, "dev", SITE_BRIDGE]);
        ip(&["-n", c, "link", "set", SITE_BRIDGE, "up"]);
        let site_cidr = format!("{}/{PREFIX_LEN}", self.ip);
        ip(&["-n", &self.ns, "addr", "add", &site_cidr, "dev", &self.ns]);
        ip(&["-n", &self.ns, "link", "set", &self.ns, "up"]);
    }

    fn remove(&self) {
        kill_processes_in(&self.ns);
        let _ = try_run_bounded(
            Command::new("ip").args(["netns", "delete", &self.ns]),
            SETUP_CMD_TIMEOUT,
        );
    }

    /// The host's namespace; its interface has the same name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Starts `argv` in the host's namespace; the guard kills it when dropped.
    pub fn spawn(&self, argv: &[&str]) -> NsChild {
        NsChild::spawn(ns_command(&self.ns, argv))
    }

    /// Runs `argv` in the host's namespace, killed after [`CMD_TIMEOUT`].
    pub fn run(&self, argv: &[&str]) -> Output {
        ns_run(&self.ns, argv, CMD_TIMEOUT)
    }
}

impl Drop for SiteHost {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Whether a network namespace called `name` exists (`ip netns list`).
pub fn netns_exists(name: &str) -> bool {
    let out = run_bounded(
        Command::new("ip").args(["netns", "list"]),
        SETUP_CMD_TIMEOUT,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

/// The /24 of 198.18.0.0/15 for `tag`: a hash of the tag picks one of the 512.
fn subnet_for(tag: &str) -> Ipv4Addr {
    // FNV-1a: stable across runs and Rust versions, unlike std's hasher.
    let hash = tag.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let index = hash % SUBNET_COUNT;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (index << 8))
}

/// `ip netns exec <ns> argv...` (which execs `argv` in place, so the pid is the command's own).
fn ns_command(ns: &str, argv: &[&str]) -> Command {
    assert!(!argv.is_empty(), "empty command for namespace {ns}");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(argv);
    cmd
}

fn ns_run(ns: &str, argv: &[&str], timeout: Duration) -> Output {
    run_bounded(&mut ns_command(ns, argv), timeout)
}

/// Runs `ip args...` and panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = run_bounded(Command::new("ip").args(args), SETUP_CMD_TIMEOUT);
    expect_success(&out, &format!("ip {}", args.join(" ")));
}

fn expect_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// SIGKILLs every process in namespace `ns` (left by this run or an earlier killed one).
/// Never panics.
fn kill_processes_in(ns: &str) {
    let Ok(out) = try_run_bounded(
        Command::new("ip").args(["netns", "pids", ns]),
        SETUP_CMD_TIMEOUT,
    ) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|&p| p > 1)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_stay_in_the_benchmark_range() {
        for tag in ["a", "attach", "counters", "demo", "zzzzzzzz", "12345678"] {
            let [a, b, _, d] = subnet_for(tag).octets();
            assert_eq!((a, d), (198, 0), "{tag}");
            assert!(b == 18 || b == 19, "{tag}");
        }
        assert_ne!(subnet_for("attach"), subnet_for("counters"));
    }
}
