//! bench/RESULTS.md: one section per benchmark, each replaced by the benchmark's next run. The
//! only writer of that file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::workspace;

/// The results file, relative to the workspace root.
pub(super) const RESULTS_FILE: &str = "bench/RESULTS.md";

/// The top of a new results file: the machine and what runs where.
const HEADER: &str = "\
# Benchmark results

Written by `cargo xtask bench <what>`; each section is replaced by the next run of its benchmark
and states the command, the date and the commit that made it. Do not edit a section by hand.
[README.md](README.md) says how each benchmark is made and how to read it.

The machine: one of the project's VMs (Debian 12, 2 cores, 24 GiB), shared with other
engineers' builds and tests, so every section records how busy the rest of the machine was.
Everything runs on those 2 cores: the server under test in one network namespace, the load
generator in another, joined by a veth pair with addresses from 198.18.0.0/15. The load
generator competes with the server for the cores, so each section gives its CPU time too: on
this machine CPU time per answer is the figure that separates fast servers, since the client
saturates first.
";

/// Replaces section `name` of bench/RESULTS.md with `body` (or appends it); returns the file's
/// path.
pub(super) fn write_section(name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = workspace::root().join(RESULTS_FILE);
    write_section_at(&path, name, body)?;
    Ok(path)
}

/// Replaces section `name` of the results file at `path` with `body` (or appends it), creating
/// the file with its header when it does not exist. The file is replaced whole (written beside
/// it, then renamed), so an interrupted run leaves the old one.
fn write_section_at(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, replace_section(&doc, name, body))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// The line under a section's run facts that sends the reader to the method, written once in
/// bench/README.md (`anchor`: the heading's GitHub anchor there).
pub(super) fn method_link(anchor: &str) -> String {
    format!("How it is measured and how to read it: [bench/README.md](README.md#{anchor}).")
}

/// `doc` with the text between section `name`'s markers replaced by `body`; the section is
/// appended when `doc` has no markers for it.
fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    if let Some(start) = doc.find(&begin) {
        if let Some(stop) = doc[start..].find(&end) {
            let stop = start + stop + end.len();
            return format!("{}{section}{}", &doc[..start], &doc[stop..]);
        }
    }
    format!("{}\n\n{section}\n", doc.trim_end())
}

/// A Markdown table. Cells must not hold `|`.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_appended_then_replaced_in_place() {
        let doc = "# Title\n\nintro\n";
        let once = replace_section(doc, "dhcp", "first\n");
        assert_eq!(
            once,
            "# Title\n\nintro\n\n<!-- bench:dhcp:begin -->\nfirst\n<!-- bench:dhcp:end -->\n"
        );
        let with_other = format!("{once}\nafter\n");
        let twice = replace_section(&with_other, "dhcp", "second");
        assert_eq!(
            twice,
            "# Title\n\nintro\n\n<!-- bench:dhcp:begin -->\nsecond\n<!-- bench:dhcp:end -->\n\nafter\n"
        );
        // Another benchmark's section is left alone.
        let both = replace_section(&twice, "tftp", "t");
        assert!(both.contains("second") && both.ends_with("<!-- bench:tftp:end -->\n"));
    }

    #[test]
    fn the_file_is_made_then_only_its_section_changes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("RESULTS.md");
        write_section_at(&path, "tftp", "one").expect("writes");
        let first = std::fs::read_to_string(&path).expect("reads");
        assert!(first.starts_with("# Benchmark results"));
        assert!(first.contains("<!-- bench:tftp:begin -->\none\n<!-- bench:tftp:end -->"));
        let other = "<!-- bench:dhcp:begin -->\nkeep me\n<!-- bench:dhcp:end -->\n";
        std::fs::write(&path, format!("{first}\n{other}")).expect("writes");
        write_section_at(&path, "tftp", "two").expect("writes");
        let second = std::fs::read_to_string(&path).expect("reads");
        assert!(second.contains("<!-- bench:tftp:begin -->\ntwo\n<!-- bench:tftp:end -->"));
        assert!(!second.contains("\none\n"));
        assert!(second.contains(other));
    }

    #[test]
    fn tables_have_a_rule_under_the_header() {
        let t = table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
