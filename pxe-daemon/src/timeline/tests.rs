use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc, time::Duration};

use super::*;
use crate::{
    boot::{Group, Selectors},
    metrics::Metrics,
};

fn timeline(max: usize, stuck_after: Duration) -> (Timeline, Metrics) {
    with_neighbours(Arc::new(|_| None), max, stuck_after)
}

/// A timeline whose clients not seen in DHCP are looked up in `neighbours`.
fn with_neighbours(
    neighbours: Arc<dyn Neighbours>,
    max: usize,
    stuck_after: Duration,
) -> (Timeline, Metrics) {
    let group = Group {
        name: "rack1".into(),
        selectors: Selectors {
            mac_prefixes: vec![vec![0x52, 0x54, 0x00]],
            ..Selectors::default()
        },
        ..Group::default()
    };
    let policy = Arc::new(BootPolicy::new(BTreeMap::new(), vec![group], None, 80));
    let metrics = Metrics::new().unwrap();
    let tm = TimelineMetrics::new(metrics.registry()).unwrap();
    let t = Timeline::new(policy, neighbours, tm, max, stuck_after);
    metrics
        .register(Box::new(metrics::CensusCollector::new(t.clone()).unwrap()))
        .unwrap();
    (t, metrics)
}

fn machine(mac: [u8; 6], firmware: Firmware) -> Machine {
    Machine {
        mac: MacAddr(mac),
        arch: Some(Arch::BIOS),
        firmware: Some(firmware),
        guid: None,
        relay: None,
        circuit_id: None,
        remote_id: None,
    }
}

const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];
const IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);

fn boot(t: &Timeline) {
    let rom = machine(MAC, Firmware::BiosPxe);
    t.record(Event::Dhcp {
        machine: &rom,
        ip: None,
        answered: false,
    });
    t.record(Event::Dhcp {
        machine: &rom,
        ip: Some(IP),
        answered: true,
    });
    t.record(Event::Tftp {
        ip: IP,
        file: "undionly.kpxe",
        ended: None,
    });
    t.record(Event::Tftp {
        ip: IP,
        file: "undionly.kpxe",
        ended: Some(Ok(())),
    });
    let ipxe = machine(MAC, Firmware::Ipxe);
    t.record(Event::Dhcp {
        machine: &ipxe,
        ip: Some(IP),
        answered: true,
    });
    t.record(Event::Http {
        ip: IP,
        mac: None,
        stage: Stage::Script,
        path: "/boot.ipxe",
        status: 200,
    });
    t.record(Event::Http {
        ip: IP,
        mac: Some(MacAddr(MAC)),
        stage: Stage::Script,
        path: "/ipxe",
        status: 200,
    });
    t.record(Event::Http {
        ip: IP,
        mac: None,
        stage: Stage::Kernel,
        path: "/vmlinuz",
        status: 200,
    });
    t.record(Event::Http {
        ip: IP,
        mac: None,
        stage: Stage::Done,
        path: "/initrd.img",
        status: 200,
    });
}

#[test]
fn a_boot_is_joined_by_mac_and_ip_in_stage_order() {
    let (t, metrics) = timeline(10, Duration::from_secs(300));
    boot(&t);
    let m = t.machine(MacAddr(MAC)).unwrap();
    let stages: Vec<Stage> = m.stages.iter().map(|s| s.stage).collect();
    assert_eq!(
        stages,
        vec![
            Stage::Discover,
            Stage::Offer,
            Stage::NbpTransfer,
            Stage::IpxeDhcp,
            Stage::Script,
            Stage::Kernel,
            Stage::Initrd,
            Stage::Done
        ]
    );
    assert_eq!(m.ip, Some(IP));
    assert_eq!(m.group.as_deref(), Some("rack1"));
    assert_eq!(m.stage, Stage::Done);
    assert!(!m.failed && !m.stuck);
    let text = metrics.render();
    assert!(
        text.contains("pxe_boots_completed_total{arch=\"bios\",group=\"rack1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pxe_boot_machines{stage=\"done\"} 1"),
        "{text}"
    );
    assert!(text.contains("pxe_boot_stage_duration_seconds_count{arch=\"bios\",group=\"rack1\",stage=\"kernel\"} 1"), "{text}");

    // The ROM starts over: a new boot.
    t.record(Event::Dhcp {
        machine: &machine(MAC, Firmware::BiosPxe),
        ip: None,
        answered: false,
    });
    let m = t.machine(MacAddr(MAC)).unwrap();
    assert_eq!(m.stage, Stage::Discover);
    assert_eq!(m.stages.len(), 1);
}

#[test]
fn failures_and_stuck_machines_show() {
    let (t, metrics) = timeline(10, Duration::from_millis(0));
    let rom = machine(MAC, Firmware::BiosPxe);
    t.record(Event::Dhcp {
        machine: &rom,
        ip: Some(IP),
        answered: true,
    });
    t.record(Event::Tftp {
        ip: IP,
        file: "undionly.kpxe",
        ended: Some(Err("timeout")),
    });
    let m = t.machine(MacAddr(MAC)).unwrap();
    assert!(m.failed);
    assert_eq!(m.stage, Stage::NbpTransfer);
    assert_eq!(m.stages.last().unwrap().outcome, "failed: timeout");
    std::thread::sleep(Duration::from_millis(5));
    let text = metrics.render();
    assert!(
        text.contains("pxe_boots_failed_total{stage=\"nbp_transfer\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pxe_boot_stuck_machines{stage=\"nbp_transfer\"} 1"),
        "{text}"
    );
}

#[test]
fn memory_is_bounded_by_forgetting_the_oldest() {
    let (t, _) = timeline(3, Duration::from_secs(300));
    for i in 0..10u8 {
        let m = machine([0x52, 0x54, 0, 0, 0, i], Firmware::BiosPxe);
        t.record(Event::Dhcp {
            machine: &m,
            ip: Some(Ipv4Addr::new(198, 18, 0, i)),
            answered: true,
        });
    }
    let all = t.machines();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].mac, "52:54:00:00:00:09", "most recent first");
    assert!(t.machine(MacAddr([0x52, 0x54, 0, 0, 0, 0])).is_none());
    // A record made in place of a forgotten one starts empty (its stage list is reused).
    for m in &all {
        assert_eq!(m.stages.len(), 1, "{}: {:?}", m.mac, m.stages);
        assert_eq!(m.stages[0].stage, Stage::Offer, "{}", m.mac);
    }
    // Thousands of events for one machine keep its record bounded.
    let m = machine([0x52, 0x54, 0, 0, 0, 9], Firmware::BiosPxe);
    for i in 0..1000u32 {
        let file = format!("f{i}");
        t.record(Event::Tftp {
            ip: Ipv4Addr::new(198, 18, 0, 9),
            file: &file,
            ended: Some(Err("timeout")),
        });
    }
    let _ = m;
    let r = t.machine(MacAddr([0x52, 0x54, 0, 0, 0, 9])).unwrap();
    assert!(r.stages.len() <= STAGES_PER_BOOT_MAX);
}

#[test]
fn unknown_addresses_are_not_guessed() {
    let (t, _) = timeline(10, Duration::from_secs(300));
    // 198.51.100.0/24 is never in a test's neighbour table.
    t.record(Event::Tftp {
        ip: Ipv4Addr::new(198, 51, 100, 7),
        file: "x",
        ended: None,
    });
    assert!(t.machines().is_empty());
    // A plain DHCP client (not PXE) is no boot.
    let mut plain = machine(MAC, Firmware::BiosPxe);
    plain.firmware = None;
    t.record(Event::Dhcp {
        machine: &plain,
        ip: None,
        answered: true,
    });
    assert!(t.machines().is_empty());
}

/// A TFTP client not seen in DHCP is found in the neighbours, and they are asked without the
/// timeline's lock held.
#[test]
fn a_tftp_client_is_looked_up_in_the_neighbours_outside_the_lock() {
    let this: Arc<std::sync::OnceLock<Timeline>> = Arc::default();
    let seen = this.clone();
    let neighbours = Arc::new(move |ip: Ipv4Addr| {
        let t = seen.get().expect("the timeline is set before any record");
        assert!(
            !t.is_locked(),
            "the neighbours are asked under the timeline's lock"
        );
        (ip == IP).then_some(MacAddr(MAC))
    });
    let (t, _metrics) = with_neighbours(neighbours, 16, Duration::from_secs(60));
    this.set(t.clone()).unwrap();
    t.record(Event::Tftp {
        ip: IP,
        file: "undionly.kpxe",
        ended: None,
    });
    let m = t
        .machine(MacAddr(MAC))
        .expect("the client is followed by its MAC");
    assert_eq!(m.ip, Some(IP));
    assert_eq!(m.stage, Stage::NbpTransfer);
    // An address nobody has is not followed.
    t.record(Event::Tftp {
        ip: Ipv4Addr::new(198, 18, 0, 99),
        file: "undionly.kpxe",
        ended: None,
    });
    assert_eq!(t.machines().len(), 1);
}
