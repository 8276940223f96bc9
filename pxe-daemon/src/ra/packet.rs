//! Router solicitations in, the "no router" advertisement out (RFC 4861 4.1, 4.2, 6.1.1).

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// Hop limit of every neighbour discovery message: proof that it was not routed.
pub const NDP_HOP_LIMIT: u8 = 255;
/// NDP option: source link-layer address.
const OPT_SOURCE_LINK_LAYER: u8 = 1;
/// Bytes of an RS before its options (type, code, checksum, reserved).
const RS_HEADER_BYTES: usize = 8;
/// Bytes of an RA before its options.
const RA_HEADER_BYTES: usize = 16;

/// Why a datagram is not a valid router solicitation. Bounded: a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not hop limit 255 (or none reported): it crossed a router.
    HopLimit,
    /// Shorter than an RS, or an option running past the end.
    Truncated,
    /// Another ICMPv6 type, or code not 0.
    NotSolicitation,
    /// An option of length 0.
    BadOption,
    /// A source link-layer address option from the unspecified address.
    SourceLinkLayerFromUnspecified,
}

impl Invalid {
    /// Every reason, for metrics.
    pub const ALL: [Invalid; 5] = [
        Invalid::HopLimit,
        Invalid::Truncated,
        Invalid::NotSolicitation,
        Invalid::BadOption,
        Invalid::SourceLinkLayerFromUnspecified,
    ];

    /// Metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Invalid::HopLimit => "hop_limit",
            Invalid::Truncated => "truncated",
            Invalid::NotSolicitation => "not_solicitation",
            Invalid::BadOption => "bad_option",
            Invalid::SourceLinkLayerFromUnspecified => "sllao_from_unspecified",
        }
    }
}

/// A valid router solicitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Solicitation {
    /// The sender's link-layer address, when it gave one.
    pub source_link_layer: Option<Vec<u8>>,
}

/// Checks `icmp` (the ICMPv6 message; the kernel has verified its checksum) received with IPv6
/// hop limit `hop_limit` from an address that is unspecified or not (`from_unspecified`), as
/// RFC 4861 6.1.1 asks of a router.
pub fn parse_solicitation(
    icmp: &[u8],
    hop_limit: Option<u8>,
    from_unspecified: bool,
) -> Result<Solicitation, Invalid> {
    if hop_limit != Some(NDP_HOP_LIMIT) {
        return Err(Invalid::HopLimit);
    }
    if icmp.len() < RS_HEADER_BYTES {
        return Err(Invalid::Truncated);
    }
    if icmp[0] != ROUTER_SOLICITATION || icmp[1] != 0 {
        return Err(Invalid::NotSolicitation);
    }
    let mut source_link_layer = None;
    let mut options = &icmp[RS_HEADER_BYTES..];
    while !options.is_empty() {
        let [kind, units, ..] = *options else {
            return Err(Invalid::Truncated);
        };
        let len = usize::from(units) * 8;
        if len == 0 {
            return Err(Invalid::BadOption);
        }
        let option = options.get(..len).ok_or(Invalid::Truncated)?;
        if kind == OPT_SOURCE_LINK_LAYER {
            if from_unspecified {
                return Err(Invalid::SourceLinkLayerFromUnspecified);
            }
            let address = &option[2..];
            // Ethernet: six bytes, then padding to the 8-byte unit.
            source_link_layer = Some(address[..address.len().min(6)].to_vec());
        }
        options = &options[len..];
    }
    Ok(Solicitation { source_link_layer })
}

/// The advertisement: current hop limit unspecified, managed and other-config flags off,
/// router lifetime 0 (not a default router), reachable time and retransmit timer unspecified,
/// no prefix, and the interface's MAC as source link-layer address. The checksum is left 0:
/// the kernel fills it in for ICMPv6 raw sockets.
pub fn no_router_advertisement(mac: pxe_common::MacAddr) -> [u8; RA_HEADER_BYTES + 8] {
    let mut ra = [0u8; RA_HEADER_BYTES + 8];
    ra[0] = ROUTER_ADVERTISEMENT;
    // Bytes 1-15 stay 0: code, checksum, cur hop limit, M/O flags, router lifetime,
    // reachable time, retrans timer.
    ra[RA_HEADER_BYTES] = OPT_SOURCE_LINK_LAYER;
    ra[RA_HEADER_BYTES + 1] = 1;
    ra[RA_HEADER_BYTES + 2..].copy_from_slice(&mac.0);
    ra
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What iPXE sends: an RS with its MAC as source link-layer address.
    const IPXE_RS: [u8; 16] = [
        133, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0x00, 0xfb, 0x01, 0x01,
    ];

    #[test]
    fn solicitations_are_checked_as_rfc_4861_asks() {
        let rs = parse_solicitation(&IPXE_RS, Some(255), false).unwrap();
        assert_eq!(
            rs.source_link_layer.as_deref(),
            Some(&[0x52, 0x54, 0x00, 0xfb, 0x01, 0x01][..])
        );
        // Linux sends one without options from the unspecified address.
        assert_eq!(
            parse_solicitation(&IPXE_RS[..8], Some(255), true),
            Ok(Solicitation {
                source_link_layer: None
            })
        );
        type Case<'a> = (&'a str, &'a [u8], Option<u8>, bool, Invalid);
        let cases: [Case<'_>; 7] = [
            ("routed", &IPXE_RS, Some(64), false, Invalid::HopLimit),
            (
                "hop limit unknown",
                &IPXE_RS,
                None,
                false,
                Invalid::HopLimit,
            ),
            ("short", &IPXE_RS[..7], Some(255), false, Invalid::Truncated),
            (
                "option cut",
                &IPXE_RS[..12],
                Some(255),
                false,
                Invalid::Truncated,
            ),
            (
                "an advertisement",
                &[134, 0, 0, 0, 0, 0, 0, 0],
                Some(255),
                false,
                Invalid::NotSolicitation,
            ),
            (
                "zero-length option",
                &[133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
                Some(255),
                false,
                Invalid::BadOption,
            ),
            (
                "SLLAO from ::",
                &IPXE_RS,
                Some(255),
                true,
                Invalid::SourceLinkLayerFromUnspecified,
            ),
        ];
        for (name, bytes, hop_limit, unspecified, want) in cases {
            assert_eq!(
                parse_solicitation(bytes, hop_limit, unspecified),
                Err(want),
                "{name}"
            );
        }
    }

    #[test]
    fn the_advertisement_says_no_router_no_prefix_no_dhcpv6() {
        let ra = no_router_advertisement(pxe_common::MacAddr([0x52, 0x54, 0, 1, 2, 3]));
        assert_eq!(
            ra,
            [
                134, 0, 0, 0, // type, code, checksum (the kernel's)
                0, 0, 0, 0, // cur hop limit, M and O off, router lifetime 0
                0, 0, 0, 0, // reachable time
                0, 0, 0, 0, // retrans timer
                1, 1, 0x52, 0x54, 0, 1, 2, 3, // source link-layer address
            ]
        );
    }
}
