//! UDP counters of a network namespace (`/proc/net/snmp`): they say on which side of the link a
//! datagram was lost (a full socket receive buffer).

use anyhow::{ensure, Context as _};
use pxe_tests::TestNet;

/// The UDP counters the benchmark reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct UdpCounters {
    /// Datagrams dropped because the receiving socket's buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams to a port nobody listens on.
    pub no_ports: u64,
}

impl UdpCounters {
    /// The counters of the server (`server = true`) or client namespace of `net`.
    pub(super) fn read(net: &TestNet, server: bool) -> anyhow::Result<UdpCounters> {
        let argv = ["cat", "/proc/net/snmp"];
        let out = if server {
            net.server(&argv)
        } else {
            net.client(&argv)
        };
        ensure!(
            out.status.success(),
            "reading /proc/net/snmp in a namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        parse(&String::from_utf8_lossy(&out.stdout)).context("parsing /proc/net/snmp")
    }

    /// What was counted since `earlier`.
    pub(super) fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            no_ports: self.no_ports.saturating_sub(earlier.no_ports),
        }
    }
}

/// Reads the `Udp:` header and value lines (the first pair; `UdpLite:` follows).
fn parse(snmp: &str) -> anyhow::Result<UdpCounters> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names = udp.next().context("no Udp: header line")?;
    let values = udp.next().context("no Udp: value line")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no Udp field {name}"))?;
        values
            .split_whitespace()
            .nth(i)
            .with_context(|| format!("no value for Udp field {name}"))?
            .parse()
            .with_context(|| format!("Udp field {name} is not a number"))
    };
    Ok(UdpCounters {
        rcvbuf_errors: field("RcvbufErrors")?,
        no_ports: field("NoPorts")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_udp_lines() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            Udp: 240502 100981 16957 240502 16950 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            UdpLite: 0 0 0 0 0 0\n";
        let c = parse(snmp).expect("parses");
        assert_eq!(
            c,
            UdpCounters {
                rcvbuf_errors: 16950,
                no_ports: 100981
            }
        );
        assert!(parse("Ip: a\nIp: 1\n").is_err());
    }
}
