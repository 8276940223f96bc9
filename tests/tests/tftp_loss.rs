//! 5% loss and reordering on the path (tc netem on the veth, or a lossy relay where the kernel
//! has no netem): every client's transfer still completes with the right bytes. Root only.
//!
//! curl is not among the clients here: its TFTP client waits max-time/5 before resending a
//! lost request and then gives up, whatever the server does.

use std::time::{Duration, Instant};

use pxe_tests::{
    metric_value, root_or_skip,
    tftp::{assert_same_bytes, expect_ok, lossy_path, pattern, tftp_py, BootRoot, LossyPath},
    Daemon, TestNet,
};

/// Loss on the path, each way.
const LOSS_PERCENT: u32 = 5;
/// Bound on one client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);
/// File served: large enough for hundreds of blocks, small enough for a quick test.
const FILE_BYTES: usize = 300_007;

#[test]
fn every_transfer_completes_through_loss_and_reordering() {
    if !root_or_skip() {
        return;
    }
    let nbp = pattern(FILE_BYTES, 11);
    let boot = BootRoot::new(&[("nbp.efi", &nbp)]);
    // A short retransmit timeout keeps each loss cheap; retries span 2.5 s, longer than the
    // clients' own timeouts (busybox resends a lost ACK 0 only after its timeout).
    let config = boot.config("[tftp]\ntimeout_ms = 50\nretries = 50\n");
    let net = TestNet::new("tftploss");
    let daemon =
        Daemon::start_with_root(&net, &boot.root(), &["--config", &config.to_string_lossy()]);
    let path = lossy_path(&net, LOSS_PERCENT, 120);
    let (host, port) = match &path {
        LossyPath::Netem => (net.server_ip().to_string(), 69),
        LossyPath::Relay { port, .. } => (net.client_ip().to_string(), *port),
    };
    let port_s = port.to_string();
    let target = format!("{host}:{port}");
    let out = |name: &str| boot.download(name).to_string_lossy().into_owned();
    let started = Instant::now();

    let mut runs: Vec<(&str, Vec<String>)> = Vec::new();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    runs.push((
        "tftp-hpa",
        s(&[
            "tftp",
            "-m",
            "binary",
            &host,
            &port_s,
            "-c",
            "get",
            "nbp.efi",
            &out("tftp-hpa"),
        ]),
    ));
    runs.push((
        "atftp-w8",
        s(&[
            "atftp",
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 8",
            "--tftp-timeout",
            "1",
            "-g",
            "-r",
            "nbp.efi",
            "-l",
            &out("atftp-w8"),
            &host,
            &port_s,
        ]),
    ));
    let uefi = |label: &str, window: &str| {
        let window = format!("windowsize={window}");
        s(&[
            "python3",
            "-c",
            pxe_tests::tftp::TFTP_PY,
            "get",
            &target,
            "nbp.efi",
            &out(label),
            "--probe-abort",
            "new",
            "--dally",
            "0.5",
            "--opt",
            "tsize=0",
            "--opt",
            "blksize=1468",
            "--opt",
            &window,
        ])
    };
    runs.push(("uefi-w4", uefi("uefi-w4", "4")));
    runs.push(("python-w64", uefi("python-w64", "64")));

    if std::env::var_os("PXE_TESTS_LOSS_BUSYBOX").is_some() {
        runs.push((
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
                &host,
                &port_s,
            ]),
        ));
    }
    for (label, argv) in &runs {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let t = Instant::now();
        let result = net.client_timeout(&argv, CLIENT_TIMEOUT);
        expect_ok(&result, label);
        assert_same_bytes(&boot.download(label), &nbp, label);
        println!(
            "{label}: right bytes through {LOSS_PERCENT}% loss in {:.2}s",
            t.elapsed().as_secs_f64()
        );
    }
    // iPXE's lock-step 1432, without the probe.
    let ipxe = expect_ok(
        &tftp_py(
            &net,
            &[
                "get",
                &target,
                "nbp.efi",
                &out("ipxe"),
                "--dally",
                "0.5",
                "--opt",
                "blksize=1432",
            ],
            CLIENT_TIMEOUT,
        ),
        "ipxe",
    );
    assert_same_bytes(&boot.download("ipxe"), &nbp, "ipxe");
    println!("ipxe: {}", ipxe.trim());
    println!(
        "all through loss in {:.2}s ({path:?})",
        started.elapsed().as_secs_f64()
    );

    let text = daemon.metrics();
    let retransmits = metric_value(&text, "pxe_tftp_retransmits_total", &[]).unwrap_or(0.0);
    assert!(
        retransmits > 0.0,
        "loss should have caused retransmits: {text}"
    );
    assert!(daemon.stop().success());
}
