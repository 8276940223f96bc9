//! Where things are in the workspace: its root, cargo's target directory, built binaries.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _};

use crate::cmd;

/// The workspace root: the parent of this crate's directory.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a directory of the workspace")
}

/// `cargo` (the rustup proxy on PATH, so `+nightly` works) run from the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cargo = Command::new("cargo");
    cargo.current_dir(root());
    cargo
}

/// Cargo's target directory, as `cargo metadata` reports it (honours CARGO_TARGET_DIR and config).
pub(crate) fn target_dir() -> anyhow::Result<PathBuf> {
    let output = cmd::output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))
        .context("running cargo metadata to find the target directory")?;
    ensure!(
        output.status.success(),
        "cargo metadata failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let json = String::from_utf8(output.stdout).context("cargo metadata printed non-UTF-8")?;
    json_string_field(&json, "target_directory")
        .map(PathBuf::from)
        .context("reading target_directory from cargo metadata")
}

/// The debug build of the daemon, as `cargo build --workspace` leaves it.
pub(crate) fn daemon_bin(target_dir: &Path) -> PathBuf {
    target_dir.join("debug").join("pxe-daemon")
}

/// The release build of the daemon (`cargo build --release -p pxe-daemon`): what benchmarks run.
pub(crate) fn release_daemon_bin(target_dir: &Path) -> PathBuf {
    target_dir.join("release").join("pxe-daemon")
}

/// Builds the release daemon and `pxe-bench`, what the benchmarks run; returns cargo's
/// `release` directory that holds them.
pub(crate) fn build_release_bins() -> anyhow::Result<PathBuf> {
    cmd::run(cargo().args(["build", "--release", "-p", "pxe-daemon", "-p", "pxe-bench"]))
        .context("building the release pxe-daemon and pxe-bench for the benchmark")?;
    Ok(target_dir()?.join("release"))
}

/// The value of the first `"key": "..."` string field in `json`.
///
/// A hand search rather than serde_json keeps xtask quick to build; the key is unique in
/// `cargo metadata --no-deps` output.
fn json_string_field(json: &str, key: &str) -> anyhow::Result<String> {
    let needle = format!("\"{key}\":");
    let start = json
        .find(&needle)
        .with_context(|| format!("no field {key:?}"))?;
    let rest = json[start + needle.len()..].trim_start();
    let Some(rest) = rest.strip_prefix('"') else {
        bail!("field {key:?} is not a string");
    };
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(value),
            '\\' => match chars.next() {
                Some(c @ ('"' | '\\' | '/')) => value.push(c),
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                other => {
                    bail!("field {key:?} has an escape this parser does not handle: {other:?}")
                }
            },
            c => value.push(c),
        }
    }
    bail!("field {key:?} is not terminated")
}

#[cfg(test)]
mod tests {
    use super::json_string_field;

    #[test]
    fn finds_target_directory() {
        let json = r#"{"packages":[],"target_directory":"/work/a \"b\"\\c/target","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").expect("field present"),
            r#"/work/a "b"\c/target"#
        );
    }

    #[test]
    fn missing_or_non_string_field_is_an_error() {
        assert!(json_string_field(r#"{"version":1}"#, "target_directory").is_err());
        assert!(json_string_field(r#"{"target_directory":1}"#, "target_directory").is_err());
    }
}
