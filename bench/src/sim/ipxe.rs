//! What the simulated iPXE does with a script: expand `${...}` settings, resolve URLs against
//! the script's own, and list the images to fetch. Pure functions.

use std::{collections::HashMap, net::Ipv4Addr};

/// The settings iPXE has when it runs a script (those boot scripts use).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `${mac}`, `${net0/mac}`.
    pub mac: [u8; 6],
    /// `${ip}`, `${net0/ip}`.
    pub ip: Ipv4Addr,
    /// `${buildarch}`.
    pub buildarch: &'static str,
    /// `${platform}`.
    pub platform: &'static str,
    /// `${next-server}`.
    pub next_server: Ipv4Addr,
    /// Values of `set name value` lines.
    pub vars: HashMap<String, String>,
}

impl Settings {
    fn mac_with(&self, sep: &str) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// The value of setting `name` (with an optional `:type`); empty when unknown, as in iPXE.
    fn get(&self, name: &str) -> String {
        let (name, kind) = name.split_once(':').unwrap_or((name, ""));
        let name = name.strip_prefix("net0/").unwrap_or(name);
        match (name, kind) {
            ("mac", "hexhyp") => self.mac_with("-"),
            ("mac", "hexraw") => self.mac_with(""),
            ("mac", _) => self.mac_with(":"),
            ("ip", _) => self.ip.to_string(),
            ("buildarch", _) => self.buildarch.to_owned(),
            ("platform", _) => self.platform.to_owned(),
            ("next-server", _) => self.next_server.to_string(),
            _ => self.vars.get(name).cloned().unwrap_or_default(),
        }
    }

    /// `text` with every `${name}` replaced.
    pub(crate) fn expand(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            match rest[start + 2..].find('}') {
                Some(end) => {
                    out.push_str(&self.get(&rest[start + 2..start + 2 + end]));
                    rest = &rest[start + 2 + end + 1..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// What an image line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// `kernel` (or `imgselect`).
    Kernel,
    /// `initrd`, `module`, `imgfetch`.
    Initrd,
    /// `chain`, `imgexec`: fetched and run (a script is run in turn).
    Chain,
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Fetch an image from a URL (already expanded and resolved).
    Fetch(ImageKind, String),
    /// `boot`, or the end of the script after a kernel.
    Boot,
}

/// Why a script cannot be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScriptError {
    /// It does not start with `#!ipxe`.
    NotIpxe,
}

/// Options of image commands that take a value (`--name x`, `-n x`, `--timeout x`).
const VALUE_OPTIONS: &[&str] = &["--name", "-n", "--timeout", "-t"];

/// The steps of `script` (fetched from `base`), with `set` lines applied to `settings`.
/// Lines it does not simulate (`echo`, `dhcp`, `sleep`, labels, `goto`) are skipped; `exit`
/// ends the script.
pub(crate) fn steps(
    script: &str,
    base: &str,
    settings: &mut Settings,
) -> Result<Vec<Step>, ScriptError> {
    let mut lines = script.lines();
    let first = lines.next().unwrap_or("").trim_start_matches('\u{feff}');
    if !first.trim_end().starts_with("#!ipxe") {
        return Err(ScriptError::NotIpxe);
    }
    let mut out = Vec::new();
    for line in lines {
        // `cmd || goto fail`, `cmd && ...`: the command before the operator.
        let line = line.split("||").next().unwrap_or("");
        let line = line.split("&&").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(':') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else {
            continue;
        };
        let kind = match cmd {
            "kernel" | "imgselect" => ImageKind::Kernel,
            "initrd" | "module" | "imgfetch" => ImageKind::Initrd,
            "chain" | "imgexec" => ImageKind::Chain,
            "boot" => {
                out.push(Step::Boot);
                continue;
            }
            "exit" => break,
            "set" => {
                if let Some(name) = words.next() {
                    let value: Vec<&str> = words.collect();
                    let value = settings.expand(&value.join(" "));
                    settings.vars.insert(name.to_owned(), value);
                }
                continue;
            }
            _ => continue,
        };
        let mut url = None;
        while let Some(word) = words.next() {
            if VALUE_OPTIONS.contains(&word) {
                words.next();
            } else if word.starts_with('-') {
                continue;
            } else {
                url = Some(word);
                break;
            }
        }
        if let Some(url) = url {
            out.push(Step::Fetch(kind, resolve(base, &settings.expand(url))));
        }
    }
    Ok(out)
}

/// `url` resolved against `base` (absolute, `/path`, or relative to base's directory).
pub(crate) fn resolve(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_owned();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if url.starts_with('/') {
        return format!("{}{url}", &base[..host_end]);
    }
    let path = base.split('?').next().unwrap_or(base);
    let dir_end = path
        .rfind('/')
        .filter(|&i| i >= host_end)
        .map_or(path.len(), |i| i);
    format!("{}/{url}", &path[..dir_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            ip: Ipv4Addr::new(198, 18, 0, 9),
            buildarch: "x86_64",
            platform: "efi",
            next_server: Ipv4Addr::new(198, 18, 0, 1),
            vars: HashMap::new(),
        }
    }

    #[test]
    fn the_daemons_chain_expands_like_ipxe() {
        let mut s = settings();
        let script = "#!ipxe\nchain http://198.18.0.1:8080/ipxe?mac=${mac:hexhyp}&buildarch=${buildarch}&platform=${platform}\n";
        assert_eq!(
            steps(script, "http://198.18.0.1:8080/boot.ipxe", &mut s).unwrap(),
            vec![Step::Fetch(
                ImageKind::Chain,
                "http://198.18.0.1:8080/ipxe?mac=52-54-00-12-34-56&buildarch=x86_64&platform=efi"
                    .into()
            )]
        );
    }

    #[test]
    fn kernel_initrd_boot_with_options_sets_and_relative_urls() {
        let mut s = settings();
        let script = "#!ipxe\n# a comment\nset base http://198.18.0.1/assets\necho booting ${mac}\n\
                      kernel --name vmlinuz ${base}/vmlinuz initrd=initrd.img console=ttyS0\n\
                      initrd -n initrd.img initrd.img || goto failed\nimgfetch /extra.cpio\nboot\n:failed\nshell\n";
        let got = steps(script, "http://198.18.0.1/scripts/node.ipxe?x=1", &mut s).unwrap();
        assert_eq!(
            got,
            vec![
                Step::Fetch(ImageKind::Kernel, "http://198.18.0.1/assets/vmlinuz".into()),
                Step::Fetch(
                    ImageKind::Initrd,
                    "http://198.18.0.1/scripts/initrd.img".into()
                ),
                Step::Fetch(ImageKind::Initrd, "http://198.18.0.1/extra.cpio".into()),
                Step::Boot,
            ]
        );
        assert_eq!(
            steps("kernel x\n", "http://h/", &mut s),
            Err(ScriptError::NotIpxe)
        );
        assert_eq!(resolve("http://h:80", "a.ipxe"), "http://h:80/a.ipxe");
    }
}
