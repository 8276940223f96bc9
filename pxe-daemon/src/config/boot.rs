//! `[boot]`, the `[[group]]`s and the `[[profile]]`s: what machines boot. Groups go into
//! [`boot::Settings`], profiles into the HTTP server's settings (it renders them).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use toml::Spanned;

use super::{wire, ConfigError, SourceFile};
use crate::{
    boot::{self, parse_mac_bytes, Arch, Firmware, Group, MacAddr, Selectors},
    http::{self, scripts::Profile},
};

/// Validates `[boot]` and the `[[group]]`s.
pub(super) fn build_boot(
    wire: wire::WireBoot,
    groups: Vec<Spanned<wire::WireGroup>>,
    src: Option<&SourceFile<'_>>,
) -> Result<boot::Settings, ConfigError> {
    let Some(src) = src else {
        return Ok(boot::Settings::default());
    };
    let http_base_url = match wire.http_base_url {
        Some(u) if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) => {
            return Err(src.error(
                Some(u.span()),
                format!(
                    "boot.http_base_url {:?} is not an http:// or https:// URL",
                    u.get_ref()
                ),
            ))
        }
        Some(u) => Some(u.into_inner()),
        None => None,
    };
    let mut arch_defaults = BTreeMap::new();
    for (key, file) in wire.arch {
        let arch: u16 = key.parse().map_err(|_| {
            src.error(Some(file.span()), format!("boot.arch key {key:?} is not an option-93 number (0 BIOS, 7 UEFI x64, 11 UEFI ARM64, ...)"))
        })?;
        arch_defaults.insert(arch, file.into_inner());
    }
    let mut out = Vec::new();
    for g in groups {
        let span = g.span();
        let w = g.into_inner();
        let fail =
            |reason: String| src.error(Some(span.clone()), format!("group {:?}: {reason}", w.name));
        let macs = w
            .mac
            .iter()
            .map(|m| {
                m.parse::<MacAddr>()
                    .map_err(|e| fail(format!("{m:?} is {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mac_prefixes = w
            .mac_prefix
            .iter()
            .map(|m| parse_mac_bytes(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let firmware = w
            .firmware
            .iter()
            .map(|f| {
                Firmware::from_label(f).ok_or_else(|| {
                    fail(format!(
                        "firmware {f:?} is not one of bios, uefi, uefi-http, ipxe"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if out.iter().any(|o: &Group| o.name == w.name) {
            return Err(fail("a group of that name exists already".into()));
        }
        out.push(Group {
            name: w.name.clone(),
            selectors: Selectors {
                macs,
                mac_prefixes,
                archs: w.arch.iter().map(|a| Arch(*a)).collect(),
                firmware,
                relays: w.relay.iter().map(|n| n.trunc()).collect(),
            },
            boot_file: w.boot_file,
            http_boot_file: w.http_boot_file,
            script: w.script,
            profile: w.profile,
            vars: w.vars,
        });
    }
    Ok(boot::Settings {
        http_base_url,
        arch_defaults,
        groups: out,
    })
}

/// Reads the `[[profile]]`s, their templates read in and checked.
pub(super) fn build_profiles(
    profiles: Vec<Spanned<wire::WireProfile>>,
    src: Option<&SourceFile<'_>>,
) -> Result<Vec<Profile>, ConfigError> {
    let Some(src) = src else {
        return Ok(Vec::new());
    };
    let config_dir = src.path.parent().unwrap_or(Path::new("."));
    let mut out: Vec<Profile> = Vec::new();
    for p in profiles {
        let span = p.span();
        let w = p.into_inner();
        let fail = |reason: String| {
            src.error(
                Some(span.clone()),
                format!("profile {:?}: {reason}", w.name),
            )
        };
        if out.iter().any(|o| o.name == w.name) {
            return Err(fail("a profile of that name exists already".into()));
        }
        let read = |file: &Option<PathBuf>, kind: &str| -> Result<Option<String>, ConfigError> {
            let Some(file) = file else { return Ok(None) };
            let path = config_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(format!("{kind} template {}: {e}", path.display())))?;
            http::scripts::check_template(&text)
                .map_err(|e| fail(format!("{kind} template {}: {e}", path.display())))?;
            Ok(Some(text))
        };
        http::scripts::check_template(&w.args).map_err(|e| fail(format!("args: {e}")))?;
        out.push(Profile {
            ipxe_template: read(&w.ipxe_template, "ipxe")?,
            grub_template: read(&w.grub_template, "grub")?,
            generic_template: read(&w.generic_template, "generic")?,
            name: w.name.clone(),
            kernel: w.kernel.clone(),
            initrd: w.initrd.clone(),
            args: w.args.clone(),
            vars: w.vars.clone(),
        });
    }
    Ok(out)
}

/// Every group's profile must exist.
pub(super) fn check_profile_refs(
    boot: &boot::Settings,
    http: &http::Settings,
    src: &SourceFile<'_>,
) -> Result<(), ConfigError> {
    for g in &boot.groups {
        if let Some(p) = &g.profile {
            if !http.profiles.iter().any(|q| &q.name == p) {
                // The group's span is gone by now; find its name in the text for the line.
                let at = src.text.find(&format!("\"{}\"", g.name));
                return Err(src.error(
                    at.map(|a| a..a),
                    format!("group {:?}: profile {p:?} is not a [[profile]]", g.name),
                ));
            }
        }
    }
    Ok(())
}
