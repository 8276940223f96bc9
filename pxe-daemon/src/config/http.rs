//! `[http]` into [`http::Settings`], with `--http-listen` on top.

use std::{fmt, net::SocketAddr, path::Path, time::Duration};

use toml::Spanned;

use super::{server::validate_root, wire, ConfigError, Origin, SourceFile};
use crate::http::{self, scripts::Profile};

/// Validates `[http]` with `--http-listen` on top; `profiles` are the `[[profile]]`s.
pub(super) fn build_http(
    w: &wire::WireHttp,
    profiles: Vec<Profile>,
    boot_root: Option<&Path>,
    listen_flag: Option<SocketAddr>,
    src: Option<&SourceFile<'_>>,
) -> Result<http::Settings, ConfigError> {
    let mut settings = http::Settings {
        artifact_root: boot_root.map(Path::to_path_buf),
        ..http::Settings::default()
    };
    settings.listen = match (listen_flag, &w.listen, src) {
        (Some(addr), _, _) => addr,
        (None, Some(s), Some(src)) => s.get_ref().parse().map_err(|e| {
            Origin::File(src, s.span()).error(format!(
                "http.listen {:?} is not an address:port ({e})",
                s.get_ref()
            ))
        })?,
        _ => settings.listen,
    };
    let Some(src) = src else {
        return Ok(settings);
    };
    let limits = &mut settings.limits;
    // A number in [lo, hi], or an error at its line.
    fn bounded<T: Copy + PartialOrd + fmt::Display>(
        v: &Option<Spanned<T>>,
        key: &str,
        lo: T,
        hi: T,
        src: &SourceFile<'_>,
    ) -> Result<Option<T>, ConfigError> {
        match v {
            Some(s) if *s.get_ref() < lo || *s.get_ref() > hi => Err(src.error(
                Some(s.span()),
                format!("http.{key} {} is outside {lo}..={hi}", s.get_ref()),
            )),
            Some(s) => Ok(Some(*s.get_ref())),
            None => Ok(None),
        }
    }
    if let Some(v) = bounded(&w.max_connections, "max_connections", 1, 1_000_000, src)? {
        limits.max_connections = v;
    }
    if let Some(v) = bounded(&w.header_timeout_secs, "header_timeout_secs", 1, 300, src)? {
        limits.header_timeout = Duration::from_secs(v);
    }
    if let Some(v) = bounded(&w.idle_timeout_secs, "idle_timeout_secs", 1, 3600, src)? {
        limits.idle_timeout = Duration::from_secs(v);
    }
    if let Some(v) = bounded(&w.max_headers, "max_headers", 8, 1024, src)? {
        limits.max_headers = v;
    }
    if let Some(v) = bounded(&w.max_head_bytes, "max_head_bytes", 8192, 1 << 20, src)? {
        limits.max_head_bytes = v;
    }
    if let Some(v) = bounded(
        &w.rate_limit_bytes_per_sec,
        "rate_limit_bytes_per_sec",
        0,
        u64::MAX,
        src,
    )? {
        limits.rate_bytes_per_sec = (v > 0).then_some(v);
    }
    let config_dir = src.path.parent().unwrap_or(Path::new("."));
    if let Some(dir) = &w.artifact_root {
        let origin = Origin::File(src, dir.span());
        let path = config_dir.join(dir.get_ref());
        settings.artifact_root = Some(validate_root(&path, &origin)?);
    }
    settings.default_profile = match &w.default_profile {
        Some(d) if !profiles.iter().any(|p| &p.name == d.get_ref()) => {
            return Err(src.error(
                Some(d.span()),
                format!(
                    "http.default_profile {:?} is not a [[profile]]",
                    d.get_ref()
                ),
            ))
        }
        Some(d) => Some(d.get_ref().clone()),
        None => None,
    };
    settings.profiles = profiles;
    Ok(settings)
}
