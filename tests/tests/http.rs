//! HTTP with real clients (curl, wget, python sockets), in the namespaces. Root only.

use std::{path::Path, time::Duration};

use pxe_tests::{metric_value, root_or_skip, Daemon, TestNet};

/// A boot root with a kernel, an initrd, a big image, a symlink out and a directory, plus a
/// config with groups, profiles and a template file. Returns the config's path.
fn setup(dir: &Path, extra_http: &str) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("assets/sub")).unwrap();
    std::fs::write(root.join("assets/vmlinuz"), b"kernel bytes\n").unwrap();
    std::fs::write(root.join("assets/initrd.img"), vec![7u8; 4096]).unwrap();
    // 3 MiB of varied bytes, so a wrong offset shows in the checksum.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("assets/big.img"), big).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("assets/escape")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/db.ipxe"),
        "#!ipxe\necho db node {{ mac }} in {{ group }}\nkernel {{ kernel }} {{ args }}\nboot\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/broken.ipxe"),
        "#!ipxe\necho {{ vars.nope }}\n",
    )
    .unwrap();
    let config = format!(
        r#"[http]
artifact_root = "root"
{extra_http}

[[group]]
name = "db"
mac = ["aa:bb:cc:00:00:01"]
profile = "db"

[[group]]
name = "broken"
mac = ["aa:bb:cc:00:00:02"]
profile = "broken"

[[group]]
name = "workers"
mac_prefix = ["52:54:00"]
profile = "worker"
vars = {{ role = "worker" }}

[[profile]]
name = "worker"
kernel = "assets/vmlinuz"
initrd = ["assets/initrd.img"]
args = "console=ttyS0 role={{{{ vars.role }}}} mac={{{{ mac }}}} arch={{{{ arch }}}}"

[[profile]]
name = "db"
kernel = "assets/vmlinuz"
args = "db=1"
ipxe_template = "templates/db.ipxe"

[[profile]]
name = "broken"
ipxe_template = "templates/broken.ipxe"
"#
    );
    let path = dir.join("pxe.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn curl(net: &TestNet, args: &[&str]) -> (String, String) {
    let mut argv = vec!["curl", "-s", "--max-time", "10"];
    argv.extend_from_slice(args);
    let out = net.client(&argv);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `curl -w '%{http_code}'` of a URL, body discarded.
fn code(net: &TestNet, args: &[&str]) -> String {
    let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    a.extend_from_slice(args);
    curl(net, &a).0
}

fn start<'n>(net: &'n TestNet, dir: &Path, extra_http: &str) -> Daemon<'n> {
    let config = setup(dir, extra_http);
    let root = dir.join("root");
    Daemon::start_with_root(
        net,
        &root,
        &[
            "--config",
            &config.to_string_lossy(),
            "--dhcp-mode",
            "off",
            "--xdp-mode",
            "off",
        ],
    )
}

#[test]
fn scripts_are_rendered_per_mac_and_group() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("httpscr");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(&net, dir.path(), "");
    let base = daemon.url("");

    let (entry, _) = curl(&net, &[&daemon.url("/boot.ipxe")]);
    assert_eq!(
        entry,
        format!("#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}&buildarch=${{buildarch}}&platform=${{platform}}\n")
    );
    // What iPXE on a BIOS machine of the workers group fetches after expanding the chain URL.
    let url = daemon.url("/ipxe?mac=52-54-00-12-34-56&buildarch=i386&platform=pcbios");
    let (worker, _) = curl(&net, &[&url]);
    assert_eq!(
        worker,
        format!(
            "#!ipxe\nkernel {base}/assets/vmlinuz initrd=initrd.img console=ttyS0 role=worker mac=52:54:00:12:34:56 arch=0\n\
             initrd {base}/assets/initrd.img\nboot\n"
        )
    );
    // wget sees the same, and a UEFI machine gets its arch.
    let out = net.client(&[
        "wget",
        "-q",
        "-O",
        "-",
        &daemon.url("/ipxe?mac=52-54-00-12-34-57&buildarch=x86_64&platform=efi"),
    ]);
    let uefi = String::from_utf8_lossy(&out.stdout);
    assert!(uefi.contains("mac=52:54:00:12:34:57 arch=7\n"), "{uefi}");
    // A group with its own template file.
    let (db, _) = curl(&net, &[&daemon.url("/ipxe?mac=aa-bb-cc-00-00-01")]);
    assert_eq!(db, format!("#!ipxe\necho db node aa:bb:cc:00:00:01 in db\nkernel {base}/assets/vmlinuz db=1\nboot\n"));
    // GRUB from the same profile.
    let (grub, _) = curl(&net, &[&daemon.url("/grub?mac=52-54-00-12-34-56")]);
    assert!(
        grub.contains(&format!(
            "linux (http,{}:8080)/assets/vmlinuz console=ttyS0",
            net.server_ip()
        )),
        "{grub}"
    );

    // No match: 404 saying why. Bad query: 400. Broken template: 500 with the reason.
    let (why, _) = curl(
        &net,
        &[
            "-w",
            " %{http_code}",
            &daemon.url("/ipxe?mac=de-ad-be-ef-00-01"),
        ],
    );
    assert_eq!(why, "no group matches MAC de:ad:be:ef:00:01 (arch unknown) and http.default_profile is not set\n 404");
    assert_eq!(code(&net, &[&daemon.url("/ipxe")]), "400");
    let (broken, _) = curl(
        &net,
        &[
            "-w",
            " %{http_code}",
            &daemon.url("/ipxe?mac=aa-bb-cc-00-00-02"),
        ],
    );
    assert!(
        broken.ends_with(" 500") && broken.contains("profile broken"),
        "{broken}"
    );
    assert!(
        daemon.log().contains("script render failed"),
        "render error not logged"
    );

    let m = daemon.metrics();
    assert_eq!(
        metric_value(
            &m,
            "pxe_http_requests_total",
            &[("route", "ipxe"), ("status", "200")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "pxe_http_requests_total",
            &[("route", "ipxe"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(daemon.stop().success());
}

#[test]
fn artifacts_ranges_validators_and_traversal() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("httpart");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(&net, dir.path(), "");
    let big = daemon.url("/assets/big.img");
    let want = std::fs::read(dir.path().join("root/assets/big.img")).unwrap();

    // Whole file, through sendfile: same bytes as the source, with curl and wget.
    let out = std::process::Command::new("sha256sum")
        .arg(dir.path().join("root/assets/big.img"))
        .output()
        .expect("sha256sum");
    let local = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    let sum = |cmd: &str| {
        let out = net.client(&["sh", "-c", &format!("{cmd} | sha256sum")]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(sum(&format!("curl -s --max-time 10 {big}")), local);
    assert_eq!(sum(&format!("wget -q -O - {big}")), local);

    // A range: 206 with exactly those bytes.
    let out = net.client(&[
        "sh",
        "-c",
        &format!("curl -s -r 1000000-1000015 {big} | od -An -tx1 | tr -d ' \\n'"),
    ]);
    let hex: String = want[1_000_000..1_000_016]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), hex);
    assert_eq!(code(&net, &["-r", "0-9", &big]), "206");
    let (head, _) = curl(
        &net,
        &["-s", "-D", "-", "-o", "/dev/null", "-r", "-10", &big],
    );
    assert!(
        head.contains(&format!(
            "Content-Range: bytes {}-{}/{}",
            want.len() - 10,
            want.len() - 1,
            want.len()
        )),
        "{head}"
    );
    assert_eq!(code(&net, &["-r", "99999999-", &big]), "416");

    // HEAD: headers, no body.
    let (head, _) = curl(&net, &["-I", &big]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", want.len())),
        "{head}"
    );
    assert!(head.contains("Accept-Ranges: bytes"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("Etag: "))
        .expect("an ETag")
        .trim()
        .to_owned();
    let modified = head
        .lines()
        .find_map(|l| l.strip_prefix("Last-Modified: "))
        .expect("a Last-Modified")
        .trim()
        .to_owned();

    // Conditional requests.
    assert_eq!(
        code(&net, &["-H", &format!("If-None-Match: {etag}"), &big]),
        "304"
    );
    assert_eq!(
        code(
            &net,
            &["-H", &format!("If-Modified-Since: {modified}"), &big]
        ),
        "304"
    );
    assert_eq!(code(&net, &["-H", "If-None-Match: \"other\"", &big]), "200");
    // If-Range with a stale validator: the whole file, not the range.
    assert_eq!(
        code(&net, &["-r", "0-9", "-H", "If-Range: \"stale\"", &big]),
        "200"
    );

    // Missing, directories (never listed), traversal, symlink out of the root.
    assert_eq!(code(&net, &[&daemon.url("/assets/nope")]), "404");
    assert_eq!(code(&net, &[&daemon.url("/assets/")]), "404");
    assert_eq!(code(&net, &[&daemon.url("/assets/sub")]), "404");
    assert_eq!(
        code(&net, &["--path-as-is", &daemon.url("/../../etc/hostname")]),
        "403"
    );
    assert_eq!(
        code(
            &net,
            &[
                "--path-as-is",
                &daemon.url("/assets/%2e%2e/%2e%2e/etc/hostname")
            ]
        ),
        "403"
    );
    assert_eq!(
        code(
            &net,
            &[
                "--path-as-is",
                &daemon.url("/assets%2f..%2f..%2fetc%2fhostname")
            ]
        ),
        "403"
    );
    assert_eq!(code(&net, &[&daemon.url("/assets/escape")]), "403");
    assert_eq!(code(&net, &["-X", "POST", &big]), "405");

    let m = daemon.metrics();
    let downloads = metric_value(
        &m,
        "pxe_http_artifact_downloads_total",
        &[("artifact", "assets/big.img")],
    );
    assert!(
        downloads.is_some_and(|d| d >= 2.0),
        "downloads: {downloads:?}"
    );
    let sent = metric_value(&m, "pxe_http_sent_bytes_total", &[]).unwrap_or(0.0);
    assert!(sent >= 2.0 * want.len() as f64, "sent bytes {sent}");
    assert!(daemon.stop().success());
}

/// A slowloris (headers never finished) and a reader that stops reading, against 2 s limits.
const SLOW_CLIENTS_PY: &str = r#"
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
# 1. Headers that never end: the server must close within the header timeout.
s = socket.create_connection((host, port))
s.sendall(b"GET /assets/vmlinuz HTTP/1.1\r\nHost: x\r\n")
start = time.monotonic()
s.settimeout(15)
try:
    data = s.recv(4096)
    while data:
        data = s.recv(4096)
except (socket.timeout, ConnectionResetError):
    pass
print("slowloris_closed_after", round(time.monotonic() - start, 1))
# 2. A reader that stops: asks for 3 MiB with a tiny window, then reads nothing for 6 s.
r = socket.socket()
r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
r.connect((host, port))
r.sendall(b"GET /assets/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
time.sleep(6)
got = 0
r.settimeout(5)
try:
    while True:
        d = r.recv(65536)
        if not d:
            break
        got += len(d)
except (socket.timeout, ConnectionResetError):
    pass
print("stalled_reader_got", got)
"#;

#[test]
fn slow_clients_are_cut_off() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("httpslow");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(
        &net,
        dir.path(),
        "header_timeout_secs = 2\nidle_timeout_secs = 2",
    );
    let out = net.client_timeout(
        &[
            "python3",
            "-c",
            SLOW_CLIENTS_PY,
            &net.server_ip().to_string(),
            "8080",
        ],
        Duration::from_secs(40),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let value = |key: &str| -> f64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {report}"))
    };
    let closed_after = value("slowloris_closed_after");
    assert!(
        closed_after < 10.0,
        "slowloris held the connection {closed_after} s:\n{report}"
    );
    let got = value("stalled_reader_got");
    assert!(
        got < 3.0 * 1024.0 * 1024.0,
        "a stalled reader got the whole file ({got} bytes): not cut"
    );
    // Both connections are gone.
    std::thread::sleep(Duration::from_millis(500));
    let open = metric_value(&daemon.metrics(), "pxe_http_connections", &[]).unwrap_or(-1.0);
    assert!(open <= 1.0, "connections still open: {open}");
    assert!(daemon.stop().success());
}

/// Holds N idle connections open, then makes one more request and prints its status line.
const HOLD_AND_REQUEST_PY: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = [socket.create_connection((host, port)) for _ in range(n)]
time.sleep(0.5)
s = socket.create_connection((host, port))
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(5)
print(s.recv(4096).split(b"\r\n")[0].decode())
"#;

#[test]
fn connection_cap_and_rate_cap() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("httpcap");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(
        &net,
        dir.path(),
        "max_connections = 3\nrate_limit_bytes_per_sec = 1048576",
    );
    let server = net.server_ip().to_string();
    let out = net.client(&["python3", "-c", HOLD_AND_REQUEST_PY, &server, "8080", "3"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HTTP/1.1 503 Service Unavailable",
        "{out:?}"
    );
    let refused = metric_value(&daemon.metrics(), "pxe_http_connections_refused_total", &[]);
    assert_eq!(refused, Some(1.0));

    // 3 MiB at 1 MiB/s takes about 3 s (less the 0.1 s burst), and arrives whole.
    let (timing, _) = curl(
        &net,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            &daemon.url("/assets/big.img"),
        ],
    );
    let mut parts = timing.split_whitespace();
    let size: f64 = parts.next().unwrap().parse().unwrap();
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    assert_eq!(size, 3.0 * 1024.0 * 1024.0);
    assert!(secs > 2.0, "rate cap not applied: 3 MiB in {secs} s");
    assert!(daemon.stop().success());
}

/// A script fetch that does not say the arch (GRUB, curl) gets the arch the machine's DHCP
/// said, so the policy picks the same group for both: before the machine's UEFI DISCOVER the
/// fetch gets the default profile, after it the UEFI group's.
#[test]
fn a_fetch_without_arch_gets_the_arch_the_machines_dhcp_said() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("httparch");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("assets/vmlinuz"), b"kernel bytes\n").unwrap();
    let config = dir.path().join("pxe.toml");
    std::fs::write(
        &config,
        r#"[http]
default_profile = "plain"

[[group]]
name = "uefi-x64"
arch = [7]
profile = "efi"

[[profile]]
name = "efi"
kernel = "assets/vmlinuz"
args = "efi=1 arch={{ arch }}"

[[profile]]
name = "plain"
kernel = "assets/vmlinuz"
args = "plain=1"
"#,
    )
    .unwrap();
    let daemon = Daemon::start_with_root(
        &net,
        &root,
        &["--config", &config.to_string_lossy(), "--xdp-mode", "off"],
    );
    let mac_out = net.client(&[
        "cat",
        &format!("/sys/class/net/{}/address", net.client_if()),
    ]);
    let mac = String::from_utf8_lossy(&mac_out.stdout).trim().to_owned();
    let grub_url = daemon.url(&format!("/grub?mac={}", mac.replace(':', "-")));

    let (before, _) = curl(&net, &[&grub_url]);
    assert!(before.contains("vmlinuz plain=1\n"), "{before}");

    let script = pxe_tests::workspace_root().join("tests/scripts/pxe_client.py");
    let out = net.client(&[
        "python3",
        &script.to_string_lossy(),
        net.client_if(),
        "uefi",
        "1",
        &mac,
    ]);
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "no offer to the UEFI DISCOVER: {out:?}\n{}",
        daemon.log()
    );

    let (after, _) = curl(&net, &[&grub_url]);
    assert!(after.contains("vmlinuz efi=1 arch=7\n"), "{after}");
    // A fetch that says its arch keeps it.
    let (bios, _) = curl(&net, &[&format!("{grub_url}&arch=0")]);
    assert!(bios.contains("vmlinuz plain=1\n"), "{bios}");
    assert!(daemon.stop().success());
}
