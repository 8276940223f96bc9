//! bench/RESULTS.md: one section per benchmark, each replaced by the benchmark's next run.

use std::path::Path;

use anyhow::Context as _;

/// The results file, relative to the workspace root.
pub const RESULTS_FILE: &str = "bench/RESULTS.md";

/// The top of a new results file: the machine and what runs where.
const HEADER: &str = "\
# Benchmark results

Written by `cargo xtask bench <what>`; each section is replaced by the next run of its benchmark
and states the command, the date and the commit that made it. Do not edit a section by hand.

The machine: one of the project's VMs (Debian 12, 2 cores, 24 GiB), shared with other
engineers' builds and tests, so every section records how busy the rest of the machine was.
Everything runs on those 2 cores: the server under test in one network namespace, the load
generator in another, joined by a veth pair with addresses from 198.18.0.0/15. The load
generator competes with the server for the cores, so each section gives its CPU time too: on
this machine CPU time per answer is the figure that separates fast servers, since the client
saturates first.
";

/// Replaces section `name` of the results file at `path` with `body` (or appends it), creating
/// the file with its header when it does not exist.
pub fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, replace_section(&doc, name, body))
        .with_context(|| format!("writing {}", path.display()))
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
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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
    fn tables_have_a_rule_under_the_header() {
        let t = table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
