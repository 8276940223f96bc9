//! Option negotiation: RFC 2347 (OACK), 2348 (blksize), 2349 (tsize, timeout), 7440
//! (windowsize). Pure: the requested options and the server's limits in, the options in force
//! and the OACK out.

use std::time::Duration;

/// Block size without options (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest block size a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest block size a client may ask for (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65_464;
/// Largest window a client may ask for (RFC 7440).
pub const MAX_WINDOWSIZE: u16 = 65_535;
/// Bytes of IPv4 (without options) and UDP headers and the DATA header around a block.
pub const IPV4_UDP_TFTP_HEADER_BYTES: u16 = 20 + 8 + 4;
/// Smallest and largest `timeout` option, in seconds (RFC 2349).
pub const TIMEOUT_OPTION_SECS: std::ops::RangeInclusive<u64> = 1..=255;

/// What the server allows; requests are clamped to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size offered: the configured maximum, already capped by the path MTU
    /// (see [`blksize_for_mtu`]).
    pub max_blksize: u16,
    /// Largest window offered.
    pub max_windowsize: u16,
    /// Retransmit timeout when the client does not ask for one.
    pub default_timeout: Duration,
}

/// The largest block size whose DATA datagram fits an IPv4 MTU unfragmented.
pub fn blksize_for_mtu(mtu: u32) -> u16 {
    let room = mtu.saturating_sub(u32::from(IPV4_UDP_TFTP_HEADER_BYTES));
    u16::try_from(room)
        .unwrap_or(MAX_BLKSIZE)
        .clamp(MIN_BLKSIZE, MAX_BLKSIZE)
}

/// The options in force for one transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK.
    pub windowsize: u16,
    /// Retransmit timeout.
    pub timeout: Duration,
    /// The options acknowledged, in the client's order, as written in the OACK. Empty: no
    /// OACK, the transfer starts with DATA 1 (RFC 1350).
    pub acknowledged: Vec<(&'static str, String)>,
}

impl Negotiated {
    /// Whether an OACK is sent (and ACK 0 awaited) before the data.
    pub fn has_oack(&self) -> bool {
        !self.acknowledged.is_empty()
    }

    /// Whether the client asked for the size (a tsize probe is a request with tsize).
    pub fn tsize_asked(&self) -> bool {
        self.acknowledged.iter().any(|(name, _)| *name == "tsize")
    }
}

/// Negotiates `requested` (name, value pairs as sent) for a file of `file_size` bytes.
/// Unknown options and values out of range are left out of the OACK (RFC 2347 lets a server
/// ignore what it does not accept); a repeated option counts once, the first time.
pub fn negotiate(requested: &[(&str, &str)], file_size: u64, limits: &Limits) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        acknowledged: Vec::new(),
    };
    for (name, value) in requested {
        let Some(known) = ["blksize", "tsize", "timeout", "windowsize"]
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k))
        else {
            continue;
        };
        if n.acknowledged.iter().any(|(k, _)| *k == known) {
            continue;
        }
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        let answer = match known {
            "blksize" if value >= u64::from(MIN_BLKSIZE) => {
                let max = limits.max_blksize.min(MAX_BLKSIZE);
                n.blksize = u16::try_from(value).unwrap_or(u16::MAX).min(max);
                n.blksize.to_string()
            }
            // The client sends 0 in a read request; the answer is the size.
            "tsize" => file_size.to_string(),
            "timeout" if TIMEOUT_OPTION_SECS.contains(&value) => {
                n.timeout = Duration::from_secs(value);
                value.to_string()
            }
            "windowsize" if value >= 1 => {
                let max = limits.max_windowsize.clamp(1, MAX_WINDOWSIZE);
                n.windowsize = u16::try_from(value).unwrap_or(u16::MAX).min(max);
                n.windowsize.to_string()
            }
            _ => continue,
        };
        n.acknowledged.push((known, answer));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
        default_timeout: Duration::from_secs(1),
    };

    #[test]
    fn uefi_request_is_acknowledged_in_order() {
        let n = negotiate(
            &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")],
            1_048_576,
            &LIMITS,
        );
        assert_eq!((n.blksize, n.windowsize), (1468, 4));
        assert_eq!(
            n.acknowledged,
            vec![
                ("tsize", "1048576".to_owned()),
                ("blksize", "1468".into()),
                ("windowsize", "4".into())
            ]
        );
        assert!(n.has_oack() && n.tsize_asked());
    }

    #[test]
    fn values_are_clamped_to_the_limits() {
        let n = negotiate(&[("BLKSIZE", "65464"), ("WindowSize", "1000")], 10, &LIMITS);
        assert_eq!((n.blksize, n.windowsize), (1468, 64));
        assert_eq!(
            n.acknowledged,
            vec![("blksize", "1468".into()), ("windowsize", "64".into())]
        );
        // iPXE's 1432 is below the cap and kept.
        assert_eq!(negotiate(&[("blksize", "1432")], 1, &LIMITS).blksize, 1432);
    }

    #[test]
    fn bad_unknown_and_repeated_options_are_ignored() {
        let n = negotiate(
            &[
                ("blksize", "7"),
                ("blksize", "1024"),
                ("timeout", "0"),
                ("timeout", "256"),
                ("windowsize", "0"),
                ("windowsize", "x"),
                ("multicast", ""),
                ("utimeout", "5000"),
            ],
            10,
            &LIMITS,
        );
        // The first valid blksize counts; "7" is below the minimum and so ignored.
        assert_eq!(n.blksize, 1024);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, LIMITS.default_timeout);
        assert_eq!(n.acknowledged, vec![("blksize", "1024".into())]);

        let n = negotiate(&[("timeout", "3"), ("timeout", "5")], 10, &LIMITS);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.acknowledged, vec![("timeout", "3".into())]);

        let n = negotiate(&[], 10, &LIMITS);
        assert!(!n.has_oack());
        assert_eq!((n.blksize, n.windowsize), (DEFAULT_BLKSIZE, 1));
    }

    #[test]
    fn mtu_caps_the_block_size() {
        assert_eq!(blksize_for_mtu(1500), 1468);
        assert_eq!(blksize_for_mtu(9000), 8968);
        assert_eq!(blksize_for_mtu(65_536), MAX_BLKSIZE);
        assert_eq!(blksize_for_mtu(0), MIN_BLKSIZE);
    }
}
