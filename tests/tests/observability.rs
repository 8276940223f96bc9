//! A machine's boot followed stage by stage, a real Prometheus scraping the daemon, and every
//! query of the shipped Grafana dashboard answered. Root only.

use std::time::{Duration, Instant};

use pxe_tests::{daemon_bin, root_or_skip, workspace_root, Daemon, TestNet};

/// How long Prometheus gets to scrape a few times after the boot.
const SCRAPE_WAIT: Duration = Duration::from_secs(20);

/// Every `expr` of the dashboard JSON.
fn dashboard_queries() -> Vec<String> {
    let path = workspace_root().join("deploy/grafana/pxe-boot.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    out
}

#[test]
fn a_boot_is_followed_scraped_and_every_dashboard_query_answers() {
    if !root_or_skip() {
        return;
    }
    let net = TestNet::new("observe");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("undionly.kpxe"), vec![0x55u8; 70_000]).unwrap();
    std::fs::write(root.join("assets/vmlinuz"), vec![1u8; 300_000]).unwrap();
    std::fs::write(root.join("assets/initrd.img"), vec![2u8; 200_000]).unwrap();
    // The machine is the client namespace's interface.
    let mac_out = net.client(&[
        "cat",
        &format!("/sys/class/net/{}/address", net.client_if()),
    ]);
    let mac = String::from_utf8_lossy(&mac_out.stdout).trim().to_owned();
    let config = dir.path().join("pxe.toml");
    std::fs::write(
        &config,
        format!(
            "[[group]]\nname = \"rack1\"\nmac = [\"{mac}\"]\nprofile = \"linux\"\n\n[[profile]]\nname = \"linux\"\n\
             kernel = \"assets/vmlinuz\"\ninitrd = [\"assets/initrd.img\"]\nargs = \"console=ttyS0\"\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with_root(&net, &root, &["--config", &config.to_string_lossy()]);
    let server = net.server_ip().to_string();
    let base = daemon.url("");

    // Prometheus in the server namespace, scraping the daemon every second.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pxe\n    static_configs:\n      - targets: ['{server}:8080']\n"
        ),
    )
    .unwrap();
    let prometheus = net.spawn_server(&[
        "prometheus",
        &format!("--config.file={}", prom_config.display()),
        &format!("--storage.tsdb.path={}", prom_dir.join("data").display()),
        "--web.listen-address=127.0.0.1:9090",
        "--log.level=warn",
    ]);

    // One machine boots, the client namespace playing each stage: the ROM's DHCP, its TFTP
    // fetch, iPXE's DHCP, the script, the kernel, the initrd.
    let mac_out = net.client(&[
        "cat",
        &format!("/sys/class/net/{}/address", net.client_if()),
    ]);
    let mac = String::from_utf8_lossy(&mac_out.stdout).trim().to_owned();
    let script = workspace_root().join("tests/scripts/pxe_client.py");
    let script = script.to_string_lossy();
    let dhcp = |kind: &str| {
        let out = net.client(&["python3", &script, net.client_if(), kind, "1", &mac]);
        assert!(out.status.success(), "{kind} DHCP: {out:?}");
        assert!(!out.stdout.is_empty(), "{kind}: no offer\n{}", daemon.log());
    };
    dhcp("bios");
    let nbp = dir.path().join("nbp");
    let out = net.client(&[
        "tftp",
        "-m",
        "binary",
        &server,
        "-c",
        "get",
        "undionly.kpxe",
        &nbp.to_string_lossy(),
    ]);
    assert!(out.status.success(), "tftp: {out:?}");
    dhcp("ipxe");
    let hexhyp = mac.replace(':', "-");
    for path in [
        "/boot.ipxe".to_owned(),
        format!("/ipxe?mac={hexhyp}&buildarch=i386&platform=pcbios"),
        "/assets/vmlinuz".to_owned(),
        "/assets/initrd.img".to_owned(),
    ] {
        let (status, _) = daemon.http_get(&path);
        assert_eq!(status, 200, "{path}");
    }

    // The machine's timeline: every stage, in order.
    let (status, json) = daemon.http_get(&format!("/api/machines/{hexhyp}"));
    assert_eq!(status, 200, "{json}");
    let timeline: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stages: Vec<&str> = timeline["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "discover",
            "offer",
            "nbp_transfer",
            "ipxe_dhcp",
            "script",
            "kernel",
            "initrd",
            "done"
        ],
        "{json}"
    );
    assert_eq!(timeline["group"], "rack1");
    assert_eq!(timeline["ip"], net.client_ip().to_string());
    println!("timeline of {mac}:\n{json}");

    // The operator's view.
    let out = net.client(&[
        &daemon_bin().to_string_lossy(),
        "status",
        "--url",
        &base,
        "--mac",
        &mac,
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status: {out:?}");
    assert!(table.contains(&mac) && table.contains("done"), "{table}");
    println!("{table}");

    // promtool accepts the exposition.
    let metrics = daemon.metrics();
    let metrics_file = dir.path().join("metrics.txt");
    std::fs::write(&metrics_file, &metrics).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "promtool check metrics < {}",
            metrics_file.display()
        ))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every dashboard query returns data from the real Prometheus.
    let query = |expr: &str| -> serde_json::Value {
        let out = net.server(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:9090/api/v1/query",
            "--data-urlencode",
            &format!("query={expr}"),
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "dashboard queries: {queries:?}");
    let deadline = Instant::now() + SCRAPE_WAIT;
    let missing = loop {
        let missing: Vec<&String> = queries
            .iter()
            .filter(|q| {
                let r = query(q);
                r["status"] != "success"
                    || r["data"]["result"].as_array().is_none_or(|a| a.is_empty())
            })
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "dashboard queries with no data: {missing:?}\nprometheus: {}",
        prometheus.log()
    );
    let boots = query("sum(pxe_boots_completed_total)");
    println!(
        "sum(pxe_boots_completed_total) = {}",
        boots["data"]["result"]
    );
    drop(prometheus);
    assert!(daemon.stop().success());
}
