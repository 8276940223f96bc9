//! The daemon end to end in this process, without root: `pxe_daemon::run` on loopback with the
//! HTTP and TFTP listeners on port 0, DHCP and XDP off, asked as a client would ask it, then
//! shut down. The namespace tests in `tests/` cover the rest with root.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use pxe_daemon::{config::Overrides, Config, Listeners};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// Longest any one exchange with the daemon may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// TFTP transfer ports the daemon binds: a few are enough for one client.
const TFTP_TRANSFER_PORTS: u16 = 4;

/// The boot file served over TFTP: a little more than one 512-byte block.
fn boot_file() -> Vec<u8> {
    (0..700u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A run of [`TFTP_TRANSFER_PORTS`] free UDP ports on loopback, above 1024, found by binding
/// them (and released for the daemon: a race with another process is possible but unlikely).
fn free_udp_ports() -> (u16, u16) {
    for _ in 0..200 {
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let first = probe.local_addr().unwrap().port();
        drop(probe);
        let Some(last) = first.checked_add(TFTP_TRANSFER_PORTS - 1) else {
            continue;
        };
        let held: Vec<_> = (first..=last)
            .map_while(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).ok())
            .collect();
        if held.len() == usize::from(TFTP_TRANSFER_PORTS) {
            return (first, last);
        }
    }
    panic!("no run of {TFTP_TRANSFER_PORTS} free UDP ports on loopback");
}

fn config(root: &Path, (first, last): (u16, u16), http: SocketAddr) -> Config {
    let text = format!(
        r#"
[server]
interface = "lo"
root = "{root}"
datapath = "kernel"
drain_timeout_secs = 1

[xdp]
mode = "off"

[dhcp]
mode = "off"

[tftp]
listen = "127.0.0.1:0"
port_range = [{first}, {last}]

[http]
listen = "{http}"
default_profile = "live"

[[profile]]
name = "live"
kernel = "/vmlinuz"
initrd = ["/initrd.img"]
args = "console=ttyS0 boot=live"
"#,
        root = root.display()
    );
    let path = root.join("pxe-daemon.toml");
    Config::from_toml(&path, &text, Overrides::default())
        .unwrap_or_else(|e| panic!("the test config is refused: {e}"))
}

/// GET `path` over HTTP/1.1 (`Connection: close`); returns the status code and the body.
async fn get(http: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    let (status, _head, body) = exchange(http, path, &request).await;
    (status, body)
}

/// Sends `request` (for `path`) as it is; returns the status code, the head as it came on the
/// wire, and the body.
async fn exchange(http: SocketAddr, path: &str, request: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(http).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer in {STEP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// Reads `file` over TFTP (RFC 1350, octet mode, 512-byte blocks) from `server`.
fn tftp_read(server: SocketAddr, file: &str) -> Vec<u8> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    socket.send_to(&rrq, server).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 600];
    // A file of n bytes is n / 512 + 1 blocks; the loop is bounded by the largest test file.
    for expected in 1..=16u16 {
        let (len, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("TFTP {file}: block {expected}: {e}"));
        assert_eq!(
            buf[..2],
            [0, 3],
            "TFTP {file}: expected DATA, got {:?}",
            &buf[..len]
        );
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        assert_eq!(block, expected, "TFTP {file}: block number");
        data.extend_from_slice(&buf[4..len]);
        let mut ack = vec![0, 4];
        ack.extend_from_slice(&block.to_be_bytes());
        socket.send_to(&ack, from).unwrap();
        if len - 4 < 512 {
            return data;
        }
    }
    panic!("TFTP {file}: more blocks than the test's files have");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_scripts_and_files_on_loopback_without_root() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("undionly.kpxe"), boot_file()).unwrap();
    let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let config = config(root.path(), free_udp_ports(), http_addr);
    let tftp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tftp_addr = tftp.local_addr().unwrap();
    let listeners = Listeners {
        http,
        dhcp: None,
        tftp,
        ra: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(pxe_daemon::run(config, listeners, async {
        let _ = stopped.await;
    }));

    assert_eq!(get(http_addr, "/healthz").await, (200, "ok\n".into()));
    // Header names as firmware HTTP clients match them, literally (GRUB 2.06 reads the
    // body's length only from `Content-Length: `).
    let (_, head, _) = exchange(
        http_addr,
        "/healthz",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    for name in ["\r\nContent-Length: 3\r\n", "\r\nContent-Type: text/plain"] {
        assert!(head.contains(name), "{name:?} not in {head:?}");
    }

    let (status, script) = get(http_addr, "/ipxe?mac=52-54-00-12-34-56").await;
    assert_eq!(status, 200, "{script}");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!("kernel http://{http_addr}/vmlinuz")),
        "{script}"
    );
    assert!(script.contains("console=ttyS0 boot=live"), "{script}");

    // Without a boot.ipxe of the operator's, the entry script chains to the machine's script.
    let (status, entry) = get(http_addr, "/boot.ipxe").await;
    assert_eq!(status, 200, "{entry}");
    assert!(
        entry.contains(&format!(
            "chain http://{http_addr}/ipxe?mac=${{mac:hexhyp}}"
        )),
        "{entry}"
    );
    // A request without a Host header (HTTP/1.0) is sent to the address it reached us at.
    let (status, _, entry) =
        exchange(http_addr, "/boot.ipxe", "GET /boot.ipxe HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{entry}");
    assert!(
        entry.contains(&format!("chain http://{http_addr}/ipxe?")),
        "{entry}"
    );
    // With one in the boot root, that file is served as it is, without a restart.
    let own = "#!ipxe\necho the operator's own entry script\nshell\n";
    std::fs::write(root.path().join("boot.ipxe"), own).unwrap();
    assert_eq!(get(http_addr, "/boot.ipxe").await, (200, own.into()));

    let file = tokio::task::spawn_blocking(move || tftp_read(tftp_addr, "undionly.kpxe"))
        .await
        .unwrap();
    assert_eq!(file, boot_file(), "TFTP undionly.kpxe");

    // GRUB's config search over TFTP: the machine's GRUB config, rendered from its profile as
    // `/grub?mac=` renders it, when the root has no such file.
    let (status, over_http) = get(http_addr, "/grub?mac=52-54-00-12-34-56").await;
    assert_eq!(status, 200, "{over_http}");
    assert!(over_http.contains("console=ttyS0 boot=live"), "{over_http}");
    let over_tftp = tokio::task::spawn_blocking(move || {
        tftp_read(tftp_addr, "/grub/grub.cfg-01-52-54-00-12-34-56")
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&over_tftp), over_http);

    let _ = stop.send(());
    tokio::time::timeout(STEP_TIMEOUT, daemon)
        .await
        .expect("the daemon stops within the drain timeout")
        .unwrap()
        .expect("the daemon ends without an error");
}
