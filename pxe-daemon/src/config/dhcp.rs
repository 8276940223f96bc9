//! `[dhcp]` into [`dhcp::Settings`], with `--dhcp-mode` on top.

use std::{ops::Range, path::PathBuf, time::Duration};

use toml::Spanned;

use super::{wire, ConfigError, SourceFile};
use crate::{
    boot::{parse_mac_bytes, MacAddr},
    dhcp::{
        self,
        settings::{LEASE_FILE_DEFAULT, LEASE_TIME_SECS_DEFAULT},
        DhcpMode, Reservation, SubnetConfig,
    },
};

/// Validates `[dhcp]` with `--dhcp-mode` on top.
pub(super) fn build_dhcp(
    wire: wire::WireDhcp,
    src: Option<&SourceFile<'_>>,
    mode_flag: Option<DhcpMode>,
) -> Result<dhcp::Settings, ConfigError> {
    // Without a file, only the mode can be set (by flag); everything else is default.
    let err_at = |span: Range<usize>, reason: String| match src {
        Some(src) => src.error(Some(span), reason),
        None => ConfigError::Flag {
            flag: "--config",
            reason,
        },
    };
    let mode_span = wire.mode.as_ref().map(|m| m.span());
    let mode = mode_flag
        .or(wire.mode.map(Spanned::into_inner))
        .unwrap_or_default();
    let reply_delay_ms = match wire.reply_delay_ms {
        Some(d) if *d.get_ref() > 10_000 => {
            return Err(err_at(
                d.span(),
                format!(
                    "dhcp.reply_delay_ms {} is above 10000 (firmware gives up long before)",
                    d.get_ref()
                ),
            ))
        }
        Some(d) => d.into_inner(),
        None => 0,
    };
    let mut ignore_macs = Vec::new();
    for m in wire.ignore_macs.unwrap_or_default() {
        let bytes = parse_mac_bytes(m.get_ref())
            .map_err(|e| err_at(m.span(), format!("dhcp.ignore_macs: {e}")))?;
        ignore_macs.push(bytes);
    }
    let lease_file = match (wire.lease_file, src) {
        (Some(f), Some(src)) if f.get_ref().is_relative() => src
            .path
            .parent()
            .map_or_else(|| f.get_ref().clone(), |p| p.join(f.get_ref())),
        (Some(f), _) => f.into_inner(),
        (None, _) => PathBuf::from(LEASE_FILE_DEFAULT),
    };

    let mut subnets: Vec<SubnetConfig> = Vec::new();
    for s in wire.subnet {
        let span = s.span();
        let w = s.into_inner();
        let [first, last] = w.range;
        let net = w.network.trunc();
        if !net.contains(&first) || !net.contains(&last) || u32::from(first) > u32::from(last) {
            return Err(err_at(
                span,
                format!("dhcp.subnet {net}: range [{first}, {last}] must be inside the network, first <= last"),
            ));
        }
        if subnets
            .iter()
            .any(|o| o.network.contains(&net.network()) || net.contains(&o.network.network()))
        {
            return Err(err_at(
                span,
                format!("dhcp.subnet {net} overlaps another subnet"),
            ));
        }
        subnets.push(SubnetConfig {
            network: net,
            range: (first, last),
            router: w.router,
            dns: w.dns,
            domain: w.domain,
            lease_secs: w.lease_time_secs.unwrap_or(LEASE_TIME_SECS_DEFAULT).max(60),
        });
    }
    let mut reservations: Vec<Reservation> = Vec::new();
    for r in wire.reservation {
        let span = r.span();
        let w = r.into_inner();
        let mac: MacAddr = w
            .mac
            .parse()
            .map_err(|e| err_at(span.clone(), format!("dhcp.reservation: {e}")))?;
        if !subnets.iter().any(|s| s.network.contains(&w.ip)) {
            return Err(err_at(
                span,
                format!("dhcp.reservation {mac}: {} is in no dhcp.subnet", w.ip),
            ));
        }
        if reservations.iter().any(|o| o.mac == mac || o.ip == w.ip) {
            return Err(err_at(
                span,
                format!(
                    "dhcp.reservation {mac} {}: MAC or address reserved twice",
                    w.ip
                ),
            ));
        }
        reservations.push(Reservation {
            mac,
            ip: w.ip,
            hostname: w.hostname,
        });
    }
    if mode == DhcpMode::Full && subnets.is_empty() {
        let reason = "dhcp.mode = \"full\" needs at least one [[dhcp.subnet]]".to_owned();
        return Err(match (mode_span, src) {
            (Some(span), Some(src)) => src.error(Some(span), reason),
            _ => ConfigError::Flag {
                flag: "--dhcp-mode",
                reason,
            },
        });
    }
    Ok(dhcp::Settings {
        mode,
        server_address: wire.server_address,
        reply_delay: Duration::from_millis(reply_delay_ms),
        ignore_macs,
        lease_file,
        subnets,
        reservations,
    })
}
