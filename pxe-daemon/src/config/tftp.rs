//! `[tftp]` into [`tftp::Settings`], with `--tftp-listen` on top.

use std::{net::SocketAddr, ops::RangeInclusive, time::Duration};

use toml::Spanned;

use super::{wire, ConfigError, Origin, SourceFile};
use crate::tftp;

/// Most `tftp.max_transfers` may be.
pub const TFTP_MAX_TRANSFERS_LIMIT: u64 = 1_000_000;
/// Most `tftp.max_windowsize` may be: a window stays far below the 65536 block numbers.
pub const TFTP_MAX_WINDOWSIZE_LIMIT: u64 = 1024;
/// Allowed `tftp.timeout_ms`.
pub const TFTP_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 10..=255_000;
/// Allowed `tftp.retries`.
pub const TFTP_RETRIES_RANGE: RangeInclusive<u64> = 0..=50;
/// Most `tftp.cache_bytes` may be: 16 GiB.
pub const TFTP_CACHE_BYTES_LIMIT: u64 = 16 << 30;

/// Validates `[tftp]` with `--tftp-listen` on top.
pub(super) fn build_tftp(
    wire: &wire::WireTftp,
    listen_flag: Option<SocketAddr>,
    src: Option<&SourceFile<'_>>,
) -> Result<tftp::Settings, ConfigError> {
    let mut c = tftp::Settings::default();
    // A numeric key within `range`, or its default; a refusal points at the value.
    let number = |value: &Option<Spanned<u64>>,
                  key: &str,
                  range: RangeInclusive<u64>|
     -> Result<Option<u64>, ConfigError> {
        match (value, src) {
            (Some(v), Some(src)) => {
                let n = *v.get_ref();
                if !range.contains(&n) {
                    return Err(Origin::File(src, v.span()).error(format!(
                        "tftp.{key} {n} is outside {}..={}",
                        range.start(),
                        range.end()
                    )));
                }
                Ok(Some(n))
            }
            _ => Ok(None),
        }
    };
    c.listen = match (listen_flag, &wire.listen, src) {
        (Some(addr), _, _) => addr,
        (None, Some(s), Some(src)) => s.get_ref().parse().map_err(|e| {
            Origin::File(src, s.span()).error(format!(
                "tftp.listen {:?} is not an address:port ({e})",
                s.get_ref()
            ))
        })?,
        _ => c.listen,
    };
    if let Some(n) = number(
        &wire.max_transfers,
        "max_transfers",
        1..=TFTP_MAX_TRANSFERS_LIMIT,
    )? {
        c.max_transfers = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let blksize = u64::from(tftp::MIN_BLKSIZE)..=u64::from(tftp::MAX_BLKSIZE);
    if let Some(n) = number(&wire.max_blksize, "max_blksize", blksize)? {
        c.max_blksize = u16::try_from(n).unwrap_or(u16::MAX);
    }
    if let Some(n) = number(
        &wire.max_windowsize,
        "max_windowsize",
        1..=TFTP_MAX_WINDOWSIZE_LIMIT,
    )? {
        c.max_windowsize = u16::try_from(n).unwrap_or(u16::MAX);
    }
    if let Some(n) = number(&wire.timeout_ms, "timeout_ms", TFTP_TIMEOUT_MS_RANGE)? {
        c.timeout = Duration::from_millis(n);
    }
    if let Some(n) = number(&wire.retries, "retries", TFTP_RETRIES_RANGE)? {
        c.retries = u8::try_from(n).unwrap_or(u8::MAX);
    }
    if let Some(n) = number(&wire.cache_bytes, "cache_bytes", 0..=TFTP_CACHE_BYTES_LIMIT)? {
        c.cache_bytes = n;
    }
    if let Some(src) = src {
        for r in &wire.rewrite {
            let w = r.get_ref();
            if let Err(reason) = tftp::check_rewrite_template(&w.to) {
                return Err(src.error(
                    Some(r.span()),
                    format!("tftp.rewrite {:?}: {reason}", w.file),
                ));
            }
            let file = w.file.trim_start_matches('/').to_owned();
            c.rewrites.push((file, w.to.clone()));
        }
    }
    if let (Some(s), Some(src)) = (&wire.port_range, src) {
        let [first, last] = *s.get_ref();
        let origin = Origin::File(src, s.span());
        if first > last {
            return Err(origin.error(format!(
                "tftp.port_range [{first}, {last}]: the first port is above the last"
            )));
        }
        if first < 1024 {
            return Err(origin.error(format!(
                "tftp.port_range [{first}, {last}]: transfer ports must be 1024 or above \
                 (below are well-known services, e.g. 67, 69, 4011)"
            )));
        }
        c.ports = first..=last;
    }
    Ok(c)
}
