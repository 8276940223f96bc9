//! `pxe-daemon probe`: the operator's check of a boot network. Broadcasts a PXE DHCPDISCOVER as
//! each kind of firmware would (BIOS, UEFI x64, UEFI HTTP Boot, iPXE), follows proxy offers
//! without a boot file to port 4011 as PXE firmware does, and reports every answer.
//!
//! `nmap --script broadcast-dhcp-discover` sends no PXE options, so a proxy-DHCP server (rightly)
//! ignores it; this probe asks the way the machines do.
//!
//! - [`request`]: the DISCOVER (and port-4011 REQUEST) of each firmware kind, byte for byte;
//! - [`answer`]: an OFFER or ACK parsed into what an operator checks;
//! - [`session`]: sans-IO matching of answers to requests, deciding the port-4011 follow-ups;
//! - [`report`]: the table, the JSON lines and the exit status;
//! - this module: the socket (UDP port 68 bound to the interface) and the bounded wait.

pub mod answer;
pub mod report;
pub mod request;
pub mod session;

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

/// The DHCP client port the probe listens on.
pub use pxe_common::DHCP_CLIENT_PORT;
pub use report::{
    Report, EXIT_ALL_ANSWERED, EXIT_NO_ANSWER, EXIT_PROBE_FAILED, EXIT_SOME_UNANSWERED,
};
pub use request::FirmwareKind;
pub use session::Session;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;
/// Default time the probe listens for answers.
pub const PROBE_TIMEOUT_MS_DEFAULT: u64 = 3000;
/// Longest time the probe may be told to listen.
pub const PROBE_TIMEOUT_MS_MAX: u64 = 60_000;
/// After a port-4011 request, the probe listens at least this long for its ACK (within twice
/// the timeout in all).
pub const FOLLOW_WAIT_MS: u64 = 1000;
/// Receive buffer: the largest UDP payload.
const RECV_BUFFER_BYTES: usize = 65_535;
/// Longest interface name Linux accepts (IFNAMSIZ less the NUL).
const IFNAME_MAX_BYTES: usize = 15;
/// ARPHRD_ETHER: the hardware type of an Ethernet interface.
const ARPHRD_ETHER: u16 = 1;

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The interface to send on (and listen on).
    pub interface: String,
    /// The firmware kinds to pretend to be.
    pub kinds: Vec<FirmwareKind>,
    /// How long to listen after sending.
    pub timeout: Duration,
    /// Whether to follow offers without a boot file to port 4011.
    pub follow_4011: bool,
}

/// Why the probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The interface name is empty or longer than 15 bytes.
    #[error("interface name {0:?} is not valid (1 to 15 bytes)")]
    BadInterfaceName(String),
    /// No interface of that name in this network namespace.
    #[error("no interface {0:?} here (see `ip link`)")]
    NoSuchInterface(String),
    /// The interface has no Ethernet MAC address (e.g. a tun device).
    #[error("{0} is not an Ethernet interface: PXE runs over Ethernet")]
    NotEthernet(String),
    /// Another program holds UDP port 68 exclusively.
    #[error(
        "UDP port 68 on {0} is taken by another program, most likely a DHCP client \
         (dhclient, dhcpcd, systemd-networkd, NetworkManager); `ss -ulpn 'sport = :68'` shows \
         which. Stop it while probing, or probe from another machine on the segment"
    )]
    Port68InUse(String),
    /// Not root: binding port 68 and SO_BINDTODEVICE need privileges.
    #[error(
        "{what}: permission denied: the probe needs root (or CAP_NET_BIND_SERVICE and \
         CAP_NET_RAW) to bind UDP port 68 to an interface"
    )]
    PermissionDenied {
        /// What was being done.
        what: String,
    },
    /// Any other socket failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A request could not be encoded (a bug).
    #[error("encoding a DHCP request: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

impl ProbeError {
    fn io(what: impl Into<String>, source: io::Error) -> ProbeError {
        let what = what.into();
        if source.kind() == io::ErrorKind::PermissionDenied {
            ProbeError::PermissionDenied { what }
        } else {
            ProbeError::Io { what, source }
        }
    }
}

/// Runs the probe: sends a DISCOVER per kind, listens until the timeout, follows proxy offers
/// to port 4011, and returns what came back. Blocks for about `options.timeout` (at most twice
/// that when port-4011 requests go out late).
pub fn run(options: &ProbeOptions) -> Result<Report, ProbeError> {
    let interface = options.interface.as_str();
    let socket = client_socket(interface)?;
    let mac = interface_mac(interface)?;
    let local_ip = crate::netif::ipv4_of(interface);
    let socket: UdpSocket = socket.into();
    debug!(interface, mac = ?mac, local_ip = ?local_ip, "probing");

    let mut next_xid = rand::random::<u32>;
    let (mut session, discovers) = Session::new(
        mac,
        &options.kinds,
        options.follow_4011,
        local_ip,
        &mut next_xid,
    )?;
    for out in discovers {
        socket.send_to(&out.bytes, out.to).map_err(|e| {
            ProbeError::io(
                format!("broadcasting the {} DISCOVER on {interface}", out.kind),
                e,
            )
        })?;
    }

    let start = Instant::now();
    let hard_deadline = start + options.timeout * 2;
    let mut deadline = start + options.timeout;
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    loop {
        let now = Instant::now();
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            break;
        };
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| ProbeError::io("setting the receive timeout", e))?;
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(ProbeError::io(format!("receiving on {interface}"), e)),
        };
        let SocketAddr::V4(from) = from else {
            continue;
        };
        debug!(%from, len, "datagram");
        for out in session.handle(&buf[..len], from, &mut next_xid) {
            debug!(kind = %out.kind, to = %out.to, "following to the boot server");
            if let Err(e) = socket.send_to(&out.bytes, out.to) {
                session.send_failed(out.kind, out.to, &e.to_string());
                continue;
            }
            let follow_deadline = Instant::now() + Duration::from_millis(FOLLOW_WAIT_MS);
            deadline = deadline.max(follow_deadline).min(hard_deadline);
        }
    }
    debug!(unrelated = session.unrelated(), "done");
    let timeout_ms = u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX);
    Ok(session.into_report(interface, &options.kinds, timeout_ms))
}

/// UDP 0.0.0.0:68 bound to `interface`, allowed to broadcast, sharing the port with a DHCP
/// client that allows it (SO_REUSEADDR).
fn client_socket(interface: &str) -> Result<Socket, ProbeError> {
    if interface.is_empty() || interface.len() > IFNAME_MAX_BYTES || interface.contains('\0') {
        return Err(ProbeError::BadInterfaceName(interface.to_owned()));
    }
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| ProbeError::io("creating a UDP socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| ProbeError::io("setting SO_REUSEADDR", e))?;
    socket
        .set_broadcast(true)
        .map_err(|e| ProbeError::io("setting SO_BROADCAST", e))?;
    // The probe must leave by this interface whatever the routes say (a boot network often has
    // no default route), and hear only this interface's answers.
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => ProbeError::NoSuchInterface(interface.to_owned()),
            _ => ProbeError::io(
                format!("binding the socket to {interface} (SO_BINDTODEVICE)"),
                e,
            ),
        })?;
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT);
    socket.bind(&addr.into()).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ProbeError::Port68InUse(interface.to_owned()),
        _ => ProbeError::io(format!("binding UDP port 68 on {interface}"), e),
    })?;
    Ok(socket)
}

/// The interface's MAC address, if it is an Ethernet interface.
fn interface_mac(interface: &str) -> Result<[u8; 6], ProbeError> {
    match crate::netif::link_type(interface) {
        None => Err(ProbeError::NoSuchInterface(interface.to_owned())),
        Some(ARPHRD_ETHER) => crate::netif::mac_of(interface)
            .map(|m| m.0)
            .ok_or_else(|| ProbeError::NotEthernet(interface.to_owned())),
        Some(_) => Err(ProbeError::NotEthernet(interface.to_owned())),
    }
}
