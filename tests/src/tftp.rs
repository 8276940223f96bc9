//! TFTP helpers: a boot root with files of known bytes, the Python client scenarios
//! (`tests/scripts/tftp.py`), and a lossy path between the namespaces (tc netem, or a relay
//! without it).

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use crate::{process::NsChild, TestNet};

/// The client scenarios (see the header of `tftp.py`).
pub const TFTP_PY: &str = include_str!("../scripts/tftp.py");

/// `count` bytes of a pattern that differs per `seed` and never repeats with a period that is a
/// power of two (so a misplaced block shows).
pub fn pattern(count: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..count)
        .map(|_| {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A boot root in a temporary directory, with a sibling directory outside it (for traversal
/// tests) and a directory for what clients download.
#[derive(Debug)]
pub struct BootRoot {
    dir: tempfile::TempDir,
}

impl BootRoot {
    /// Makes the root with `files` (name, content).
    pub fn new(files: &[(&str, &[u8])]) -> BootRoot {
        let dir = tempfile::Builder::new()
            .prefix("pxe-tests-tftp-")
            .tempdir()
            .expect("creating a temporary directory");
        for sub in ["root", "outside", "downloads"] {
            std::fs::create_dir(dir.path().join(sub)).expect("creating a test directory");
        }
        let root = BootRoot { dir };
        for (name, content) in files {
            root.write(name, content);
        }
        root
    }

    /// The boot root (to give the daemon).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A directory beside the root, not served.
    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Where a client writes download `name`.
    pub fn download(&self, name: &str) -> PathBuf {
        self.dir.path().join("downloads").join(name)
    }

    /// Writes `name` under the root (making its directories).
    pub fn write(&self, name: &str, content: &[u8]) {
        let path = self.root().join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("making a directory in the boot root");
        }
        std::fs::write(&path, content)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Writes a config file beside the root with `text`; returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("pxe-daemon.toml");
        std::fs::write(&path, text).expect("writing the test config");
        path
    }
}

/// Panics unless `path` holds exactly `expected` (what the server's file holds).
pub fn assert_same_bytes(path: &Path, expected: &[u8], what: &str) {
    let got =
        std::fs::read(path).unwrap_or_else(|e| panic!("{what}: reading {}: {e}", path.display()));
    assert_eq!(got.len(), expected.len(), "{what}: length differs");
    if let Some(at) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at offset {at}");
    }
}

/// Runs `python3 tftp.py args...` in the client namespace, killed after `timeout`.
pub fn tftp_py(net: &TestNet, args: &[&str], timeout: Duration) -> Output {
    let mut argv = vec!["python3", "-c", TFTP_PY];
    argv.extend_from_slice(args);
    net.client_timeout(&argv, timeout)
}

/// Starts `python3 tftp.py args...` in the client namespace; the guard kills it.
pub fn spawn_tftp_py(net: &TestNet, args: &[&str]) -> NsChild {
    let mut argv = vec!["python3", "-c", TFTP_PY];
    argv.extend_from_slice(args);
    net.spawn_client(&argv)
}

/// Panics with the command's output unless it succeeded; returns its stdout.
pub fn expect_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How a lossy path between the namespaces was made.
#[derive(Debug)]
pub enum LossyPath {
    /// `tc netem` on both veth ends: clients talk to the server directly.
    Netem,
    /// The kernel has no netem: a relay in the client namespace drops and reorders; clients
    /// talk to it on the client's address and this port.
    Relay {
        /// The relay's port.
        port: u16,
        /// The relay process.
        relay: NsChild,
    },
}

/// Puts `loss_percent` loss and some reordering on the path: `tc netem` on both veth ends if
/// the kernel has it, else a relay (see [`LossyPath::Relay`]) running for `seconds`.
pub fn lossy_path(net: &TestNet, loss_percent: u32, seconds: u32) -> LossyPath {
    let loss = format!("{loss_percent}%");
    let mut netem_ok = true;
    for (ns_is_server, dev) in [(true, net.server_if()), (false, net.client_if())] {
        let argv = [
            "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", &loss, "delay", "1ms",
            "reorder", "25%", "50%",
        ];
        let out = if ns_is_server {
            net.server(&argv)
        } else {
            net.client(&argv)
        };
        if !out.status.success() {
            eprintln!(
                "tc netem unavailable ({}); using the userspace lossy relay instead",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            netem_ok = false;
            break;
        }
    }
    if netem_ok {
        return LossyPath::Netem;
    }
    const RELAY_PORT: u16 = 6969;
    let loss = format!("{}", f64::from(loss_percent) / 100.0);
    let relay = spawn_tftp_py(
        net,
        &[
            "relay",
            &RELAY_PORT.to_string(),
            &net.server_ip().to_string(),
            &loss,
            "0.05",
            &seconds.to_string(),
        ],
    );
    // Let it bind before clients send.
    std::thread::sleep(Duration::from_millis(300));
    LossyPath::Relay {
        port: RELAY_PORT,
        relay,
    }
}
