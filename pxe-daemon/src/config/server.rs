//! `[server]`: the interface, the boot root, the datapath and the drain, with `--interface`,
//! `--root` and `--datapath` on top.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{error::pick, wire, ConfigError, Origin, Overrides, SourceFile};
use crate::datapath;

/// Default seconds given to open transfers to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT_SECS_DEFAULT: u64 = 10;

/// `[server]`: what the daemon itself is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Interface facing the machines to boot; `run` refuses to start without one.
    pub interface: Option<String>,
    /// Boot root (an existing directory, made absolute).
    pub root: Option<PathBuf>,
    /// Which datapath serves DHCP and TFTP.
    pub datapath: datapath::Choice,
    /// Time given to open transfers after a shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            interface: None,
            root: None,
            datapath: datapath::Choice::default(),
            drain_timeout: Duration::from_secs(DRAIN_TIMEOUT_SECS_DEFAULT),
        }
    }
}

/// Validates `[server]` with `--interface`, `--root` and `--datapath` on top.
pub(super) fn build_server(
    server: wire::WireServer,
    overrides: &Overrides,
    src: Option<&SourceFile<'_>>,
) -> Result<ServerSettings, ConfigError> {
    let interface = match pick(
        overrides.interface.clone(),
        "--interface",
        server.interface,
        src,
    ) {
        Some((name, origin)) => Some(validate_interface(name, &origin)?),
        None => None,
    };

    let root = match pick(overrides.root.clone(), "--root", server.root, src) {
        Some((dir, origin)) => {
            // A relative root in a file is relative to the file, as an operator reads it.
            let dir = match (&origin, src) {
                (Origin::File(..), Some(src)) if dir.is_relative() => src
                    .path
                    .parent()
                    .map_or_else(|| dir.clone(), |p| p.join(&dir)),
                _ => dir,
            };
            Some(validate_root(&dir, &origin)?)
        }
        None => None,
    };

    let datapath = pick(overrides.datapath, "--datapath", server.datapath, src)
        .map(|(d, _)| d)
        .unwrap_or_default();

    let drain_timeout_secs = match (server.drain_timeout_secs, src) {
        (Some(s), Some(src)) => {
            let secs = *s.get_ref();
            if secs > 3600 {
                return Err(Origin::File(src, s.span()).error(format!(
                    "server.drain_timeout_secs {secs} is above one hour"
                )));
            }
            secs
        }
        _ => DRAIN_TIMEOUT_SECS_DEFAULT,
    };

    Ok(ServerSettings {
        interface,
        root,
        datapath,
        drain_timeout: Duration::from_secs(drain_timeout_secs),
    })
}

/// Maximum length of a Linux interface name (IFNAMSIZ less the NUL).
const IFNAME_MAX_LEN: usize = 15;

/// `name` if it can be a Linux interface name; a refusal points at `origin`.
fn validate_interface(name: String, origin: &Origin<'_>) -> Result<String, ConfigError> {
    if name.is_empty() || name.len() > IFNAME_MAX_LEN || name.contains(['/', ' ', '\0']) {
        return Err(origin.error(format!(
            "interface {name:?} is not a valid interface name (1-{IFNAME_MAX_LEN} characters, no '/' or spaces)"
        )));
    }
    Ok(name)
}

/// `dir` made canonical if it is an existing directory; a refusal points at `origin`.
pub(super) fn validate_root(dir: &Path, origin: &Origin<'_>) -> Result<PathBuf, ConfigError> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| origin.error(format!("boot root {}: {e}", dir.display())))?;
    if !canonical.is_dir() {
        return Err(origin.error(format!("boot root {} is not a directory", dir.display())));
    }
    Ok(canonical)
}
