//! `[ipv6]` into [`ra::Settings`], with `--ipv6-ra` on top.

use super::{error::pick, wire, SourceFile};
use crate::ra::{self, RouterAdvertisement};

/// Reads `[ipv6]` with `--ipv6-ra` on top.
pub(super) fn build_ipv6(
    ipv6: wire::WireIpv6,
    flag: Option<RouterAdvertisement>,
    src: Option<&SourceFile<'_>>,
) -> ra::Settings {
    ra::Settings {
        router_advertisement: pick(flag, "--ipv6-ra", ipv6.router_advertisement, src)
            .map(|(ra, _)| ra)
            .unwrap_or_default(),
    }
}
