//! perfdhcp (Kea's DHCP load generator, Debian `kea-admin`): its command line and its report.
//!
//! perfdhcp acts as a relay: it sends from port 67 of its local address with giaddr set to that
//! address, and the server answers the relay. `-i` stops after DISCOVER-OFFER (two-way); without
//! it every exchange is the full DISCOVER-OFFER-REQUEST-ACK (four-way).

use std::{net::Ipv4Addr, time::Duration};

/// Option 60 of a PXE BIOS ROM (what proxy-DHCP servers answer), as perfdhcp's `-o 60,HEX`.
pub(super) const PXE_VENDOR_CLASS: &str = "PXEClient:Arch:00000:UNDI:002001";
/// Option 93 (client system architecture) of a BIOS PXE ROM: 0, two bytes.
pub(super) const PXE_ARCH_BIOS_HEX: &str = "0000";
/// How long perfdhcp keeps receiving after the test period, so that replies still on their way
/// are not counted as drops (its `-W`, in microseconds).
pub(super) const EXIT_WAIT: Duration = Duration::from_millis(500);

/// Which exchange perfdhcp runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// DISCOVER-OFFER only (`-i`).
    TwoWay,
    /// DISCOVER-OFFER-REQUEST-ACK.
    FourWay,
}

/// One perfdhcp run: a constant rate of new exchanges for a period.
#[derive(Clone, Debug)]
pub(super) struct Load {
    /// Two- or four-way.
    pub exchange: Exchange,
    /// New exchanges per second (`-r`).
    pub rate: u32,
    /// Test period (`-p`).
    pub period: Duration,
    /// Distinct client MACs (`-R`).
    pub clients: u32,
    /// perfdhcp's own address: source and giaddr (`-l`).
    pub local: Ipv4Addr,
    /// The server.
    pub server: Ipv4Addr,
}

impl Load {
    /// perfdhcp's argv. Every request carries PXE options 60 and 93, as a PXE ROM's do.
    pub(super) fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = vec!["perfdhcp".into(), "-4".into()];
        if self.exchange == Exchange::TwoWay {
            argv.push("-i".into());
        }
        let vendor_hex: String = PXE_VENDOR_CLASS
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        argv.extend([
            "-r".into(),
            self.rate.to_string(),
            "-p".into(),
            format_secs(self.period),
            "-W".into(),
            EXIT_WAIT.as_micros().to_string(),
            "-R".into(),
            self.clients.to_string(),
            "-l".into(),
            self.local.to_string(),
            "-o".into(),
            format!("60,{vendor_hex}"),
            "-o".into(),
            format!("93,{PXE_ARCH_BIOS_HEX}"),
            self.server.to_string(),
        ]);
        argv
    }
}

/// Seconds as perfdhcp's `-p` reads them (a fraction allowed).
fn format_secs(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}")
    } else {
        format!("{secs:.3}")
    }
}

/// perfdhcp's statistics of one exchange kind (`***Statistics for: DISCOVER-OFFER***`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExchangeStats {
    /// `DISCOVER-OFFER` or `REQUEST-ACK`.
    pub name: String,
    /// Requests sent.
    pub sent: u64,
    /// Replies received in time.
    pub received: u64,
    /// Requests that got no reply within the drop time (1 s).
    pub drops: u64,
    /// Replies that matched no outstanding request.
    pub orphans: u64,
    /// Latency, milliseconds; `None` when nothing was received.
    pub min_ms: Option<f64>,
    /// Mean latency, milliseconds.
    pub avg_ms: Option<f64>,
    /// Largest latency, milliseconds.
    pub max_ms: Option<f64>,
    /// Standard deviation of the latency, milliseconds.
    pub std_ms: Option<f64>,
}

/// What perfdhcp printed at the end of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Report {
    /// The exchange kinds in the order printed: DISCOVER-OFFER, then REQUEST-ACK if four-way.
    pub exchanges: Vec<ExchangeStats>,
}

impl Report {
    /// Parses perfdhcp's final report (stdout). Lines it does not know are skipped; a value it
    /// cannot read (`n/a`, `inf`) stays `None` or 0.
    pub(crate) fn parse(stdout: &str) -> Report {
        let mut exchanges: Vec<ExchangeStats> = Vec::new();
        for line in stdout.lines() {
            let line = line.trim();
            if let Some(name) = line
                .strip_prefix("***Statistics for: ")
                .and_then(|rest| rest.strip_suffix("***"))
            {
                exchanges.push(ExchangeStats {
                    name: name.to_owned(),
                    ..ExchangeStats::default()
                });
                continue;
            }
            let (Some(stats), Some((key, value))) = (exchanges.last_mut(), line.split_once(':'))
            else {
                continue;
            };
            let value = value.trim();
            let count = || value.parse::<u64>().unwrap_or(0);
            // perfdhcp prints "avg delay: min delay: n/a" when nothing came back: only a plain
            // number (with " ms") is a latency.
            let ms = || {
                value
                    .strip_suffix(" ms")
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
            };
            match key {
                "sent packets" => stats.sent = count(),
                "received packets" => stats.received = count(),
                "drops" => stats.drops = count(),
                "orphans" => stats.orphans = count(),
                "min delay" => stats.min_ms = stats.min_ms.or_else(ms),
                "avg delay" => stats.avg_ms = stats.avg_ms.or_else(ms),
                "max delay" => stats.max_ms = stats.max_ms.or_else(ms),
                "std deviation" => stats.std_ms = stats.std_ms.or_else(ms),
                _ => {}
            }
        }
        Report { exchanges }
    }

    /// The statistics of exchange kind `name`.
    pub(crate) fn exchange(&self, name: &str) -> Option<&ExchangeStats> {
        self.exchanges.iter().find(|e| e.name == name)
    }

    /// Exchanges begun: DISCOVERs sent.
    pub(crate) fn started(&self) -> u64 {
        self.exchanges.first().map_or(0, |e| e.sent)
    }

    /// Exchanges completed: replies to the last step (OFFERs two-way, ACKs four-way).
    pub(crate) fn completed(&self) -> u64 {
        self.exchanges.last().map_or(0, |e| e.received)
    }

    /// Share of exchanges lost, 0 to 1: one minus the product of each step's success ratio.
    ///
    /// Per step rather than ACKs over DISCOVERs: an OFFER that arrives during the exit wait gets
    /// no REQUEST (perfdhcp sends nothing new then), which is not the server's loss.
    pub(crate) fn loss(&self) -> f64 {
        if self.started() == 0 {
            return 1.0;
        }
        let success: f64 = self
            .exchanges
            .iter()
            .filter(|e| e.sent > 0)
            .map(|e| e.received.min(e.sent) as f64 / e.sent as f64)
            .product();
        1.0 - success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// perfdhcp 2.2's report of a four-way run against dnsmasq (trimmed).
    const FOUR_WAY: &str = "\
***Rate statistics***
Rate: 245.651 4-way exchanges/second, expected rate: 1000

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 2993
received packets: 960
drops: 2033
drops ratio: 67.9252 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 1.148 ms
avg delay: 201.546 ms
max delay: 877.109 ms
std deviation: 196.123 ms
collected packets: 9

***Statistics for: REQUEST-ACK***
sent packets: 960
received packets: 737
drops: 223
drops ratio: 23.229 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 10.359 ms
avg delay: 193.944 ms
max delay: 877.210 ms
std deviation: 161.228 ms
collected packets: 0
";

    /// What perfdhcp prints when the server never answers.
    const NO_ANSWER: &str = "\
***Statistics for: DISCOVER-OFFER***
sent packets: 999
received packets: 0
drops: 999
drops ratio: 100 %
orphans: 0

min delay: inf ms
avg delay: min delay: n/a
avg delay: n/a
max delay: n/a
std deviation: n/a
collected packets: 0
";

    #[test]
    fn parses_a_four_way_report() {
        let r = Report::parse(FOUR_WAY);
        assert_eq!(r.exchanges.len(), 2);
        let d = r.exchange("DISCOVER-OFFER").expect("DISCOVER-OFFER");
        assert_eq!((d.sent, d.received, d.drops), (2993, 960, 2033));
        assert_eq!(d.avg_ms, Some(201.546));
        let a = r.exchange("REQUEST-ACK").expect("REQUEST-ACK");
        assert_eq!((a.sent, a.received), (960, 737));
        assert_eq!((a.min_ms, a.max_ms), (Some(10.359), Some(877.210)));
        assert_eq!((r.started(), r.completed()), (2993, 737));
        let expected = 1.0 - (960.0 / 2993.0) * (737.0 / 960.0);
        assert!((r.loss() - expected).abs() < 1e-12);
    }

    #[test]
    fn no_answer_is_total_loss_without_latencies() {
        let r = Report::parse(NO_ANSWER);
        let d = &r.exchanges[0];
        assert_eq!((d.sent, d.received), (999, 0));
        assert_eq!(
            (d.min_ms, d.avg_ms, d.max_ms, d.std_ms),
            (None, None, None, None)
        );
        assert_eq!(r.loss(), 1.0);
        assert_eq!(Report::parse("").loss(), 1.0);
    }

    #[test]
    fn two_way_argv_carries_the_pxe_options() {
        let load = Load {
            exchange: Exchange::TwoWay,
            rate: 5000,
            period: Duration::from_secs(4),
            clients: 100,
            local: Ipv4Addr::new(198, 19, 0, 2),
            server: Ipv4Addr::new(198, 19, 0, 1),
        };
        let argv = load.argv().join(" ");
        assert_eq!(
            argv,
            "perfdhcp -4 -i -r 5000 -p 4 -W 500000 -R 100 -l 198.19.0.2 \
             -o 60,505845436c69656e743a417263683a30303030303a554e44493a303032303031 \
             -o 93,0000 198.19.0.1"
        );
        let four = Load {
            exchange: Exchange::FourWay,
            period: Duration::from_millis(1500),
            ..load
        };
        assert!(!four.argv().contains(&"-i".to_owned()));
        assert!(four.argv().join(" ").contains("-p 1.500"));
    }
}
