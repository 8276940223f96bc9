//! `[xdp]`: how the XDP program attaches and rate-limits, and how the AF_XDP sockets bind, with
//! `--xdp-mode` on top. Two subsystems share the table, so it is config's, of their types.

use toml::Spanned;

use super::{error::pick, wire, ConfigError, Origin, SourceFile};
use crate::{afxdp, xdp};

/// Default DHCP/4011 frames per second per client MAC: far above what a booting machine sends
/// (a handful per boot stage), far below a flood.
pub const XDP_RATE_LIMIT_PPS_DEFAULT: u32 = 20;
/// Default burst above the rate.
pub const XDP_RATE_BURST_DEFAULT: u32 = 40;

/// `[xdp]`: the XDP program's and the AF_XDP sockets' settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpSettings {
    /// How to attach the XDP program.
    pub mode: xdp::AttachPolicy,
    /// How AF_XDP sockets bind (zero-copy or copy).
    pub bind: afxdp::BindMode,
    /// DHCP and 4011 frames per second one client MAC may send before the XDP program drops
    /// them (0: no limit).
    pub rate_limit_pps: u32,
    /// Frames a client may send in a burst above its rate.
    pub rate_burst: u32,
}

impl Default for XdpSettings {
    fn default() -> XdpSettings {
        XdpSettings {
            mode: xdp::AttachPolicy::default(),
            bind: afxdp::BindMode::default(),
            rate_limit_pps: XDP_RATE_LIMIT_PPS_DEFAULT,
            rate_burst: XDP_RATE_BURST_DEFAULT,
        }
    }
}

/// Validates `[xdp]` with `--xdp-mode` on top.
pub(super) fn build_xdp(
    xdp: wire::WireXdp,
    mode_flag: Option<xdp::AttachPolicy>,
    src: Option<&SourceFile<'_>>,
) -> Result<XdpSettings, ConfigError> {
    let mode = pick(mode_flag, "--xdp-mode", xdp.mode, src)
        .map(|(m, _)| m)
        .unwrap_or_default();
    let bind = xdp.bind.map(Spanned::into_inner).unwrap_or_default();
    let rate_limit_pps = xdp
        .rate_limit_pps
        .map_or(XDP_RATE_LIMIT_PPS_DEFAULT, Spanned::into_inner);
    let rate_burst = match (xdp.rate_burst, src) {
        (Some(b), Some(src)) if *b.get_ref() > 1_000_000 => {
            return Err(Origin::File(src, b.span())
                .error(format!("xdp.rate_burst {} is above 1000000", b.get_ref())))
        }
        (Some(b), _) => b.into_inner(),
        (None, _) => XDP_RATE_BURST_DEFAULT,
    };
    Ok(XdpSettings {
        mode,
        bind,
        rate_limit_pps,
        rate_burst,
    })
}
