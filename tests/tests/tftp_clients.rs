//! Real TFTP clients against the daemon across the veth: tftp-hpa, atftp (blksize 1468,
//! windowsize 4, 8, 64), curl, busybox, and what firmware sends (the UEFI tsize probe, ERROR 8
//! and the same request again; iPXE's blksize 1432). Every download is compared with the
//! server's file byte for byte. Also: traversal and write refusals, and block-number rollover
//! past 32 MiB at 512-byte blocks. Root only.
//!
//! The clients and the rollover run twice: on the kernel-socket datapath, and with
//! `--datapath xdp`, where the AF_XDP frame counters show that the TFTP datagrams went through
//! AF_XDP both ways.

use std::time::{Duration, Instant};

use pxe_tests::{
    metric_value, root_or_skip,
    tftp::{assert_same_bytes, expect_ok, pattern, tftp_py, BootRoot},
    Daemon, TestNet,
};

/// Bound on one client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// An NBP-sized file whose size is not a multiple of any block size used.
const NBP_BYTES: usize = 1_000_003;
/// A file that ends exactly on a 1468-byte block (an empty last DATA follows).
const EXACT_BYTES: usize = 1468 * 64;

fn metric(daemon: &Daemon<'_>, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&daemon.metrics(), name, labels).unwrap_or(0.0)
}

/// Daemon arguments for a datapath.
fn datapath_args(datapath: &str) -> Vec<&str> {
    match datapath {
        "kernel" => vec![],
        other => vec!["--datapath", other],
    }
}

/// With `--datapath xdp`: the daemon says it runs on AF_XDP, and TFTP frames went through it
/// both ways, at least `rx` received and `tx` sent.
fn assert_over_af_xdp(daemon: &Daemon<'_>, datapath: &str, rx: f64, tx: f64) {
    if datapath != "xdp" {
        return;
    }
    let text = daemon.metrics();
    let m = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels).unwrap_or(0.0);
    assert_eq!(
        m("pxe_datapath_info", &[("datapath", "xdp")]),
        1.0,
        "{text}"
    );
    let frames = |direction| {
        m(
            "pxe_afxdp_frames_total",
            &[("direction", direction), ("service", "tftp")],
        )
    };
    assert!(
        frames("rx") >= rx,
        "TFTP frames received over AF_XDP: {text}"
    );
    assert!(frames("tx") >= tx, "TFTP frames sent over AF_XDP: {text}");
    println!(
        "AF_XDP TFTP frames: {} received, {} sent",
        frames("rx"),
        frames("tx")
    );
}

#[test]
fn real_clients_and_firmware_requests_get_the_exact_bytes() {
    if !root_or_skip() {
        return;
    }
    real_clients("kernel", "tftpcli");
}

#[test]
fn real_clients_and_firmware_requests_get_the_exact_bytes_over_af_xdp() {
    if !root_or_skip() {
        return;
    }
    real_clients("xdp", "tftpclx");
}

fn real_clients(datapath: &str, tag: &str) {
    let nbp = pattern(NBP_BYTES, 1);
    let exact = pattern(EXACT_BYTES, 2);
    let boot = BootRoot::new(&[("nbp.efi", &nbp), ("exact.bin", &exact)]);
    let net = TestNet::new(tag);
    let daemon = Daemon::start_with_root(&net, &boot.root(), &datapath_args(datapath));
    let server = net.server_ip().to_string();
    let started = Instant::now();

    let mut runs: Vec<(String, Vec<String>, &[u8])> = Vec::new();
    let mut add = |label: &str, argv: Vec<String>, expected: &'static str| {
        let content: &[u8] = if expected == "nbp.efi" { &nbp } else { &exact };
        runs.push((label.to_owned(), argv, content));
    };
    let out = |name: &str| boot.download(name).to_string_lossy().into_owned();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();

    add(
        "tftp-hpa",
        s(&[
            "tftp",
            "-m",
            "binary",
            &server,
            "-c",
            "get",
            "nbp.efi",
            &out("tftp-hpa"),
        ]),
        "nbp.efi",
    );
    for window in ["4", "8", "64"] {
        let label = format!("atftp-w{window}");
        let path = out(&label);
        let window_opt = format!("windowsize {window}");
        add(
            &label,
            s(&[
                "atftp",
                "--option",
                "blksize 1468",
                "--option",
                &window_opt,
                "-g",
                "-r",
                "nbp.efi",
                "-l",
                &path,
                &server,
            ]),
            "nbp.efi",
        );
    }
    for (file, label) in [("nbp.efi", "curl"), ("exact.bin", "curl-exact")] {
        let url = format!("tftp://{server}/{file}");
        add(
            label,
            s(&[
                "curl",
                "--silent",
                "--show-error",
                "--noproxy",
                "*",
                "--tftp-blksize",
                "1468",
                "--max-time",
                "20",
                "-o",
                &out(label),
                &url,
            ]),
            file,
        );
    }
    add(
        "busybox",
        s(&[
            "busybox",
            "tftp",
            "-g",
            "-r",
            "nbp.efi",
            "-l",
            &out("busybox"),
            "-b",
            "1468",
            &server,
        ]),
        "nbp.efi",
    );

    for (label, argv, expected) in &runs {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let t = Instant::now();
        let result = net.client_timeout(&argv, CLIENT_TIMEOUT);
        expect_ok(&result, label);
        assert_same_bytes(&boot.download(label), expected, label);
        println!("{label}: ok in {:.2}s", t.elapsed().as_secs_f64());
    }

    // UEFI: tsize probe, ERROR 8, the same request again (from the same socket, then a new one).
    let uefi = [
        "--opt",
        "tsize=0",
        "--opt",
        "blksize=1468",
        "--opt",
        "windowsize=4",
    ];
    for mode in ["same", "new"] {
        let label = format!("uefi-{mode}");
        let path = out(&label);
        let mut args = vec!["get", &server, "nbp.efi", &path, "--probe-abort", mode];
        args.extend_from_slice(&uefi);
        let stdout = expect_ok(&tftp_py(&net, &args, CLIENT_TIMEOUT), &label);
        assert_same_bytes(&boot.download(&label), &nbp, &label);
        let expected = format!(
            "\"oack\": {{\"tsize\": \"{NBP_BYTES}\", \"blksize\": \"1468\", \"windowsize\": \"4\"}}"
        );
        assert!(stdout.contains(&expected), "{label}: {stdout}");
        assert!(
            stdout.contains(&format!("\"probe_oack\": {{\"tsize\": \"{NBP_BYTES}\"")),
            "{label}: {stdout}"
        );
    }
    // iPXE asks blksize 1432.
    let path = out("ipxe");
    let stdout = expect_ok(
        &tftp_py(
            &net,
            &["get", &server, "nbp.efi", &path, "--opt", "blksize=1432"],
            CLIENT_TIMEOUT,
        ),
        "ipxe",
    );
    assert_same_bytes(&boot.download("ipxe"), &nbp, "ipxe");
    assert!(
        stdout.contains("\"oack\": {\"blksize\": \"1432\"}"),
        "{stdout}"
    );
    // A blksize above the MTU is cut to what fits a 1500-byte frame.
    let path = out("jumbo");
    let stdout = expect_ok(
        &tftp_py(
            &net,
            &["get", &server, "nbp.efi", &path, "--opt", "blksize=9000"],
            CLIENT_TIMEOUT,
        ),
        "jumbo",
    );
    assert_same_bytes(&boot.download("jumbo"), &nbp, "jumbo");
    assert!(
        stdout.contains("\"oack\": {\"blksize\": \"1468\"}"),
        "{stdout}"
    );
    println!("all clients in {:.2}s", started.elapsed().as_secs_f64());

    // Every transfer is counted; the two probes are aborts, not failures.
    let deadline = Instant::now() + Duration::from_secs(5);
    let completed_expected = (runs.len() + 4) as f64;
    while metric(&daemon, "pxe_tftp_transfers_completed_total", &[]) < completed_expected
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = daemon.metrics();
    let m = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels).unwrap_or(0.0);
    assert_eq!(
        m("pxe_tftp_transfers_completed_total", &[]),
        completed_expected,
        "{text}"
    );
    assert_eq!(
        m("pxe_tftp_transfers_probe_aborted_total", &[]),
        2.0,
        "{text}"
    );
    assert_eq!(m("pxe_tftp_transfers_in_flight", &[]), 0.0, "{text}");
    for reason in ["timeout", "client_error", "illegal_operation", "read_error"] {
        assert_eq!(
            m("pxe_tftp_transfers_failed_total", &[("reason", reason)]),
            0.0,
            "{reason}: {text}"
        );
    }
    assert!(m("pxe_tftp_data_sent_bytes_total", &[]) >= (NBP_BYTES * (runs.len() + 3)) as f64);
    // atftp and the UEFI requests really got their windows (4: atftp, two probes, two UEFI).
    let window = |le| {
        m(
            "pxe_tftp_negotiated_windowsize_blocks_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(window("4") - window("2"), 5.0, "{text}");
    assert_eq!(window("8") - window("4"), 1.0, "{text}");
    assert_eq!(window("64") - window("32"), 1.0, "{text}");
    assert_eq!(
        m("pxe_tftp_cache_fills_total", &[]),
        2.0,
        "each file read once: {text}"
    );
    // Every DATA block of every transfer, and its ACK, at the least.
    let blocks = (NBP_BYTES / 1468) as f64;
    assert_over_af_xdp(&daemon, datapath, blocks, blocks);
    assert!(daemon.stop().success());
}

#[test]
fn traversal_writes_and_missing_files_are_refused() {
    if !root_or_skip() {
        return;
    }
    let boot = BootRoot::new(&[("ok.bin", b"fine")]);
    std::fs::create_dir(boot.root().join("sub")).unwrap();
    std::fs::write(boot.outside().join("secret"), b"not for clients").unwrap();
    let outside = boot.outside().join("secret");
    std::os::unix::fs::symlink(&outside, boot.root().join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", boot.root().join("sub-rel-link")).unwrap();
    let net = TestNet::new("tftptrav");
    let daemon = Daemon::start_with_root(&net, &boot.root(), &[]);
    let server = net.server_ip().to_string();
    let outside_abs = outside.to_string_lossy().into_owned();
    let names = [
        "../outside/secret",
        "sub/../../outside/secret",
        "..\\outside\\secret",
        "abs-link",
        "sub-rel-link",
        "/etc/passwd",
        outside_abs.as_str(),
        "missing.efi",
        "ok.bin",
    ];
    // Traversal (`..`, symlinks out of the root) is refused; an absolute name is a name under
    // the root, so one that is not there (GRUB's config search asks such names) is missing.
    let mut args = vec!["errors", server.as_str()];
    args.extend_from_slice(&names);
    let stdout = expect_ok(&tftp_py(&net, &args, CLIENT_TIMEOUT), "errors");
    for name in &names[..5] {
        let json_name = name.replace('\\', "\\\\");
        assert!(
            stdout.contains(&format!(
                "\"{json_name}\": [2, \"access outside the boot root\"]"
            )),
            "{name} should get ERROR 2: {stdout}"
        );
    }
    for name in ["/etc/passwd", outside_abs.as_str(), "missing.efi"] {
        assert!(
            stdout.contains(&format!("\"{name}\": [1, \"file not found\"]")),
            "{name} should get ERROR 1: {stdout}"
        );
    }
    assert!(stdout.contains("\"ok.bin\": [\"op\", 3]"), "{stdout}");

    // A real client's write request is refused, as is its traversal.
    let local = boot.download("upload");
    std::fs::write(&local, b"upload").unwrap();
    let local = local.to_string_lossy().into_owned();
    let put = net.client_timeout(
        &["tftp", "-m", "binary", &server, "-c", "put", &local, "up"],
        CLIENT_TIMEOUT,
    );
    let said =
        String::from_utf8_lossy(&put.stdout).into_owned() + &String::from_utf8_lossy(&put.stderr);
    assert!(said.contains("Error code 2"), "tftp put: {said}");
    assert!(!boot.root().join("up").exists());
    let get = net.client_timeout(
        &[
            "tftp",
            "-m",
            "binary",
            &server,
            "-c",
            "get",
            "../outside/secret",
            &boot.download("s").to_string_lossy(),
        ],
        CLIENT_TIMEOUT,
    );
    let said =
        String::from_utf8_lossy(&get.stdout).into_owned() + &String::from_utf8_lossy(&get.stderr);
    assert!(said.contains("Error code 2"), "tftp get ../: {said}");

    let text = daemon.metrics();
    let refused = |reason| {
        metric_value(
            &text,
            "pxe_tftp_requests_refused_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    // Five traversals and tftp-hpa's `get ../`; the absolute names count as missing files, so
    // a GRUB config search does not look like an attack.
    assert_eq!(refused("access_violation"), 6.0, "{text}");
    assert_eq!(refused("not_found"), 3.0, "{text}");
    assert_eq!(refused("write_request"), 1.0, "{text}");
    assert!(daemon.stop().success());
}

#[test]
fn block_numbers_roll_over_past_32_mib_at_512_bytes() {
    if !root_or_skip() {
        return;
    }
    rollover("kernel", "tftpbig");
}

#[test]
fn block_numbers_roll_over_past_32_mib_at_512_bytes_over_af_xdp() {
    if !root_or_skip() {
        return;
    }
    rollover("xdp", "tftpbgx");
}

/// 65535 blocks of 512 bytes are 32 MiB less 512: this needs 67,585 blocks.
const BIG_BLOCKS: usize = ((33 << 20) + 100) / 512 + 1;

fn rollover(datapath: &str, tag: &str) {
    let big = pattern((33 << 20) + 100, 3);
    let boot = BootRoot::new(&[("big.img", &big)]);
    let net = TestNet::new(tag);
    let daemon = Daemon::start_with_root(&net, &boot.root(), &datapath_args(datapath));
    let server = net.server_ip().to_string();
    let started = Instant::now();
    // tftp-hpa sends no options: RFC 1350 lock-step with 512-byte blocks.
    let out = net.client_timeout(
        &[
            "tftp",
            "-m",
            "binary",
            &server,
            "-c",
            "get",
            "big.img",
            &boot.download("big").to_string_lossy(),
        ],
        Duration::from_secs(60),
    );
    expect_ok(&out, "tftp-hpa big.img");
    assert_same_bytes(&boot.download("big"), &big, "big.img over tftp-hpa");
    println!(
        "33 MiB at blksize 512 in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let text = daemon.metrics();
    // Bigger than a quarter of the default cache: served by block reads (linked io_uring
    // reads on kernel sockets, reads into the frame on AF_XDP), not cached.
    assert_eq!(
        metric_value(&text, "pxe_tftp_cache_fills_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "pxe_tftp_transfers_completed_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_over_af_xdp(&daemon, datapath, BIG_BLOCKS as f64, BIG_BLOCKS as f64);
    assert!(daemon.stop().success());
}

#[test]
fn per_machine_names_are_served_where_the_root_has_them() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("tftpmap");
    let mac_out = net.client(&[
        "cat",
        &format!("/sys/class/net/{}/address", net.client_if()),
    ]);
    let mac = String::from_utf8_lossy(&mac_out.stdout).trim().to_owned();
    let [a, b, c, d] = net.client_ip().octets();
    let ip_hex = format!("{a:02X}{b:02X}{c:02X}{d:02X}");
    let boot = BootRoot::new(&[
        ("machine.cfg", b"default config\n"),
        ("other.cfg", b"no rule\n"),
    ]);
    boot.write("pxelinux.cfg/default", b"pxelinux default\n");
    boot.write(
        &format!("machines/{}.cfg", mac.replace(':', "-")),
        b"this machine's config\n",
    );
    boot.write(&format!("pxelinux.cfg/{ip_hex}"), b"pxelinux for this IP\n");
    let config = boot.config(
        "[[tftp.rewrite]]\nfile = \"machine.cfg\"\nto = \"machines/{mac_hexhyp}.cfg\"\n\n\
         [[tftp.rewrite]]\nfile = \"pxelinux.cfg/default\"\nto = \"pxelinux.cfg/{ip_hex}\"\n\n\
         [[tftp.rewrite]]\nfile = \"other.cfg\"\nto = \"missing/{mac}.cfg\"\n",
    );
    let daemon =
        Daemon::start_with_root(&net, &boot.root(), &["--config", &config.to_string_lossy()]);
    let server = net.server_ip().to_string();
    let get = |name: &str| -> String {
        let path = boot.download(&name.replace('/', "_"));
        let out = net.client_timeout(
            &[
                "tftp",
                "-m",
                "binary",
                &server,
                "-c",
                "get",
                name,
                &path.to_string_lossy(),
            ],
            CLIENT_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "tftp get {name}: {out:?}\n{}",
            daemon.log()
        );
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    // The MAC comes from the server's neighbour table: the client resolved the server first.
    assert_eq!(get("machine.cfg"), "this machine's config\n");
    assert_eq!(get("pxelinux.cfg/default"), "pxelinux for this IP\n");
    // No per-machine file: the name as requested.
    assert_eq!(get("other.cfg"), "no rule\n");
    assert!(daemon.stop().success());
}

/// Over AF_XDP, TFTP data frames leave their UDP checksum to the device (TX metadata in copy
/// mode). A veth trusts such frames unverified; with its checksum offload turned off, the
/// kernel finishes each sum in software before it crosses, as a NIC without the offload
/// needs, and the clients' UDP stacks verify every block. A wrong pseudo-header sum would
/// fail every transfer here (and count in the client's `InCsumErrors`).
#[test]
fn blocks_whose_checksum_the_device_finishes_verify_at_the_client() {
    if !root_or_skip() {
        return;
    }
    let nbp = pattern(NBP_BYTES, 3);
    let boot = BootRoot::new(&[("nbp.efi", &nbp)]);
    let net = TestNet::new("tftpcsx");
    let off = net.server(&["ethtool", "-K", net.server_if(), "tx", "off"]);
    assert!(off.status.success(), "ethtool: {off:?}");
    let daemon = Daemon::start_with_root(&net, &boot.root(), &datapath_args("xdp"));
    if daemon.log().contains("tx_checksum_offload=false") {
        // A kernel without XDP_UMEM_TX_METADATA_LEN: every checksum is computed by the daemon.
        println!("skipped: no AF_XDP TX metadata on this kernel");
        return;
    }
    let server = net.server_ip().to_string();
    let out = |name: &str| boot.download(name).to_string_lossy().into_owned();
    let (hpa, atftp) = (out("tftp-hpa"), out("atftp-w4"));
    let runs: [(&str, Vec<&str>); 2] = [
        (
            "tftp-hpa",
            vec![
                "tftp", "-m", "binary", &server, "-c", "get", "nbp.efi", &hpa,
            ],
        ),
        (
            "atftp-w4",
            vec![
                "atftp",
                "--option",
                "blksize 1468",
                "--option",
                "windowsize 4",
                "-g",
                "-r",
                "nbp.efi",
                "-l",
                &atftp,
                &server,
            ],
        ),
    ];
    for (label, argv) in &runs {
        expect_ok(&net.client_timeout(argv, CLIENT_TIMEOUT), label);
        assert_same_bytes(&boot.download(label), &nbp, label);
    }
    let snmp = net.client(&["cat", "/proc/net/snmp"]);
    let snmp = String::from_utf8_lossy(&snmp.stdout);
    let udp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Udp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let column = udp[0].iter().position(|h| *h == "InCsumErrors").unwrap();
    assert_eq!(udp[1][column], "0", "client UDP checksum errors:\n{snmp}");
    // The blocks really left their sums to the device: every TFTP frame sent but the OACKs.
    let blocks = (NBP_BYTES / 512 + NBP_BYTES / 1468) as f64;
    let device = metric(&daemon, "pxe_afxdp_device_checksum_frames_total", &[]);
    assert!(
        device >= blocks,
        "{device} frames left to the device, want {blocks}"
    );
    assert_over_af_xdp(&daemon, "xdp", 2.0, blocks);
}
