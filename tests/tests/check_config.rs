//! `pxe-daemon check-config FILE`: exit 0 for a valid file, 2 and `FILE:LINE:` for a bad one.
//! Needs no root and no namespace.

use std::{path::Path, process::Output, time::Duration};

use pxe_tests::{run_daemon_cli, workspace_root};

/// Bound on one check-config run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

fn check_config(path: &Path) -> Output {
    run_daemon_cli(&["check-config", &path.to_string_lossy()], CHECK_TIMEOUT)
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("pxe-daemon.toml");
    std::fs::write(&path, text).expect("writing the test config");
    path
}

#[test]
fn type_error_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = write_config(
        &dir,
        "# pxe-tests: line 3 has a type error\n[http]\nlisten = 42\n",
    );
    let out = check_config(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let location = format!("{}:3:", path.display());
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(&location) && line.contains("invalid type")),
        "stderr should have a line with {location:?} and \"invalid type\":\n{stderr}"
    );
}

#[test]
fn minimal_config_is_accepted() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = write_config(&dir, "[http]\nlisten = \"127.0.0.1:8080\"\n");
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn shipped_example_config_is_accepted() {
    let path = workspace_root().join("examples/pxe-daemon.toml");
    assert!(path.is_file(), "{} is missing", path.display());
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn run_without_a_boot_root_is_refused_clearly() {
    // Loopback and port 0 only: nothing is served, run() refuses before XDP or TFTP start.
    let out = run_daemon_cli(
        &[
            "run",
            "--interface",
            "lo",
            "--http-listen",
            "127.0.0.1:0",
            "--tftp-listen",
            "127.0.0.1:0",
            "--xdp-mode",
            "off",
        ],
        CHECK_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("no boot root: TFTP serves files from it; give --root or server.root"),
        "{stderr}"
    );
}
