//! `pxe-daemon probe` against a real peer: dnsmasq in the server namespace as a full DHCP server
//! and as a proxy-DHCP server, the probe in the client namespace; then with nobody answering, and
//! with port 68 taken. Root only.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use pxe_tests::{existing_daemon_bin, root_or_skip, Dnsmasq, TestNet};

/// How long each probe listens. dnsmasq answers within milliseconds here.
const PROBE_TIMEOUT_MS: &str = "1500";
/// How long the probe listens when nobody is expected to answer.
const SILENT_TIMEOUT_MS: &str = "500";
/// Bound on one probe run (it ends after at most twice its timeout).
const PROBE_RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on waiting for the process that holds port 68.
const HOLDER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `pxe-daemon probe --interface <client_if> --timeout-ms <timeout_ms> <extra>` in the
/// client namespace.
fn probe(net: &TestNet, timeout_ms: &str, extra: &[&str]) -> Output {
    let bin = existing_daemon_bin();
    let bin = bin.to_string_lossy();
    let mut argv = vec![
        &*bin,
        "probe",
        "--interface",
        net.client_if(),
        "--timeout-ms",
        timeout_ms,
    ];
    argv.extend_from_slice(extra);
    let out = net.client_timeout(&argv, PROBE_RUN_TIMEOUT);
    // Shown with --nocapture: the README's example comes from here.
    println!(
        "$ pxe-daemon {}\n{}{}",
        argv[1..].join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One line of the probe's table.
#[derive(Debug)]
struct Line {
    kind: String,
    answer: String,
    server: String,
    your_ip: String,
    next_server: String,
    boot_file: String,
    options: String,
}

/// The table's lines, cut at the header's column positions.
fn table(out: &Output) -> Vec<Line> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    let columns = [
        "KIND",
        "ANSWER",
        "SERVER",
        "YOUR-IP",
        "NEXT-SERVER",
        "BOOT-FILE",
        "OPTIONS",
    ];
    let starts: Vec<usize> = columns
        .iter()
        .map(|c| {
            header
                .find(c)
                .unwrap_or_else(|| panic!("no column {c} in the header {header:?}"))
        })
        .collect();
    lines
        .take_while(|line| !line.starts_with("warning:"))
        .map(|line| {
            let cell = |i: usize| {
                let end = starts.get(i + 1).copied().unwrap_or(line.len());
                line.get(starts[i]..end.min(line.len()))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            Line {
                kind: cell(0),
                answer: cell(1),
                server: cell(2),
                your_ip: cell(3),
                next_server: cell(4),
                boot_file: cell(5),
                options: cell(6),
            }
        })
        .collect()
}

/// The lines for `kind`, with `answer`.
fn lines<'a>(table: &'a [Line], kind: &str, answer: &str) -> Vec<&'a Line> {
    table
        .iter()
        .filter(|l| l.kind == kind && l.answer == answer)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `a.b.c.<last>` in the net's /24.
fn host(net: &TestNet, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = net.server_ip().octets();
    Ipv4Addr::new(a, b, c, last)
}

#[test]
fn probe_reads_a_full_dhcp_server() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("probefl");
    let server = net.server_ip().to_string();
    let range = format!(
        "dhcp-range={},{},255.255.255.0,1h",
        host(&net, 100),
        host(&net, 150)
    );
    let script = format!("dhcp-boot=tag:ipxe,http://{server}/boot.ipxe");
    let http_nbp = format!("dhcp-boot=tag:efi-http,http://{server}/ipxe.efi");
    let dnsmasq = Dnsmasq::start(
        &net,
        &[
            &range,
            "dhcp-match=set:efi-x86_64,option:client-arch,7",
            "dhcp-match=set:efi-http,option:client-arch,16",
            "dhcp-userclass=set:ipxe,iPXE",
            &script,
            &http_nbp,
            // UEFI HTTP Boot takes only answers that echo its vendor class.
            "dhcp-option=tag:efi-http,option:vendor-class,HTTPClient",
            "dhcp-boot=tag:efi-x86_64,ipxe.efi",
            "dhcp-boot=undionly.kpxe",
        ],
    );

    let out = probe(&net, PROBE_TIMEOUT_MS, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = table(&out);
    for (kind, file) in [
        ("bios", "undionly.kpxe".to_owned()),
        ("uefi-x64", "ipxe.efi".to_owned()),
        ("uefi-http", format!("http://{server}/ipxe.efi")),
        ("ipxe", format!("http://{server}/boot.ipxe")),
    ] {
        let offers = lines(&table, kind, "offer");
        assert_eq!(offers.len(), 1, "{kind}: one offer in {table:#?}");
        let offer = offers[0];
        assert_eq!(offer.server, server, "{kind}");
        assert_eq!(offer.next_server, server, "{kind}");
        assert_eq!(offer.boot_file, file, "{kind}");
        let your_ip: Ipv4Addr = offer
            .your_ip
            .parse()
            .unwrap_or_else(|e| panic!("{kind}: your-ip {:?}: {e}", offer.your_ip));
        assert!(
            (host(&net, 100)..=host(&net, 150)).contains(&your_ip),
            "{kind}: {your_ip} is outside the dhcp-range"
        );
    }
    let http = &lines(&table, "uefi-http", "offer")[0];
    assert!(http.options.contains("60=HTTPClient"), "{http:?}");
    assert!(
        stderr(&out).contains("4 of 4 kinds answered"),
        "{}",
        stderr(&out)
    );

    // The same as JSON lines.
    let out = probe(&net, PROBE_TIMEOUT_MS, &["--json", "--kinds", "ipxe"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    for field in [
        "\"kind\":\"ipxe\"".to_owned(),
        "\"answer\":\"offer\"".to_owned(),
        format!("\"server\":\"{server}\""),
        format!("\"boot_file\":\"http://{server}/boot.ipxe\""),
    ] {
        assert!(lines[0].contains(&field), "{field} in {}", lines[0]);
    }
    assert!(
        dnsmasq.log().contains("user class: iPXE"),
        "dnsmasq saw the iPXE user class:\n{}",
        dnsmasq.log()
    );
}

#[test]
fn probe_reads_a_proxy_and_follows_it_to_port_4011() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("probepx");
    let server = net.server_ip().to_string();
    let range = format!("dhcp-range={},proxy,255.255.255.0", host(&net, 0));
    let script = format!("dhcp-boot=tag:ipxe,http://{server}/boot.ipxe");
    let dnsmasq = Dnsmasq::start(
        &net,
        &[
            &range,
            "dhcp-userclass=set:ipxe,iPXE",
            &script,
            "pxe-service=tag:!ipxe,x86PC,\"Network boot (BIOS)\",undionly",
            "pxe-service=tag:!ipxe,x86-64_EFI,\"Network boot (UEFI)\",ipxe.efi",
        ],
    );

    let out = probe(&net, PROBE_TIMEOUT_MS, &[]);
    // dnsmasq's proxy ignores HTTPClient (it is not a PXEClient): exit 1, that kind unanswered.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let table = table(&out);

    // BIOS: a proxy offer with a one-item menu, then the boot server's ACK on 4011.
    let offer = lines(&table, "bios", "proxy-offer");
    assert_eq!(offer.len(), 1, "{table:#?}");
    assert_eq!(offer[0].server, server);
    assert_eq!(offer[0].your_ip, "-", "a proxy offers no address");
    assert_eq!(offer[0].boot_file, "-");
    assert!(
        offer[0].options.contains("60=PXEClient")
            && offer[0].options.contains("43.9=[")
            && offer[0].options.contains("Network boot (BIOS)"),
        "{:?}",
        offer[0]
    );
    let ack = lines(&table, "bios", "ack-4011");
    assert_eq!(ack.len(), 1, "{table:#?}");
    assert_eq!(ack[0].server, server);
    assert_eq!(ack[0].next_server, server);
    assert_eq!(ack[0].boot_file, "undionly.0");

    // UEFI: no boot file and no menu in the offer (dnsmasq sends UEFI to 4011), the file there.
    let offer = lines(&table, "uefi-x64", "proxy-offer");
    assert_eq!(offer.len(), 1, "{table:#?}");
    assert_eq!(
        (offer[0].your_ip.as_str(), offer[0].boot_file.as_str()),
        ("-", "-")
    );
    let ack = lines(&table, "uefi-x64", "ack-4011");
    assert_eq!(ack.len(), 1, "{table:#?}");
    assert_eq!(ack[0].boot_file, "ipxe.efi");
    assert_eq!(ack[0].your_ip, "-");

    // iPXE: the script URL straight in the proxy offer, no 4011 step.
    let offer = lines(&table, "ipxe", "proxy-offer");
    assert_eq!(offer.len(), 1, "{table:#?}");
    assert_eq!(offer[0].your_ip, "-");
    assert_eq!(offer[0].boot_file, format!("http://{server}/boot.ipxe"));
    assert!(lines(&table, "ipxe", "ack-4011").is_empty(), "{table:#?}");

    let http = lines(&table, "uefi-http", "no answer");
    assert_eq!(http.len(), 1, "{table:#?}");
    assert!(
        stderr(&out).contains("no answer for uefi-http"),
        "{}",
        stderr(&out)
    );

    // Without following, the UEFI kind has only its offer.
    let out = probe(
        &net,
        PROBE_TIMEOUT_MS,
        &["--kinds", "uefi-x64", "--follow-4011=false"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = self::table(&out);
    let answers: Vec<&str> = table.iter().map(|l| l.answer.as_str()).collect();
    assert_eq!(answers, ["proxy-offer"], "{table:#?}");

    // The guard kills dnsmasq.
    let pid = dnsmasq.id();
    drop(dnsmasq);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "dnsmasq (pid {pid}) still runs after its guard was dropped"
    );
}

#[test]
fn probe_without_any_server_exits_3() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("probeno");
    let started = Instant::now();
    let out = probe(&net, SILENT_TIMEOUT_MS, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let table = table(&out);
    let kinds: Vec<&str> = table.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["bios", "uefi-x64", "uefi-http", "ipxe"]);
    assert!(table.iter().all(|l| l.answer == "no answer"), "{table:#?}");
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "no answer on {} within {SILENT_TIMEOUT_MS} ms",
            net.client_if()
        )),
        "{message}"
    );
}

#[test]
fn probe_says_when_port_68_is_taken() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("probe68");
    // A DHCP client's socket on port 68, without SO_REUSEADDR.
    let holder = net.spawn_client(&[
        "python3",
        "-c",
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 68))\n\
         time.sleep(30)\n",
    ]);
    let deadline = Instant::now() + HOLDER_READY_TIMEOUT;
    loop {
        let out = net.client(&["ss", "-H", "-l", "-u", "-n", "sport = :68"]);
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the port-68 holder did not bind: {}",
            holder.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let out = probe(&net, PROBE_TIMEOUT_MS, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("UDP port 68") && stderr(&out).contains("taken"),
        "{}",
        stderr(&out)
    );
    drop(holder);
}
