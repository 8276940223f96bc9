//! What the probe found, as a table or JSON lines, and the exit status that sums it up.

use std::{fmt::Write as _, net::Ipv4Addr};

use serde::Serialize;

use super::{answer::PxeOptions, request::FirmwareKind};

/// Exit status: every kind asked got at least one answer.
pub const EXIT_ALL_ANSWERED: u8 = 0;
/// Exit status: some kinds got an answer, some none.
pub const EXIT_SOME_UNANSWERED: u8 = 1;
/// Exit status: nobody answered any kind.
pub const EXIT_NO_ANSWER: u8 = 3;
/// Exit status: the probe could not run (no such interface, port 68 taken, not root).
pub const EXIT_PROBE_FAILED: u8 = 4;

/// Shown for a missing value.
const NONE: &str = "-";
/// The ANSWER of a kind that got none.
const NO_ANSWER: &str = "no answer";
/// Column headers.
const HEADERS: [&str; 7] = [
    "KIND",
    "ANSWER",
    "SERVER",
    "YOUR-IP",
    "NEXT-SERVER",
    "BOOT-FILE",
    "OPTIONS",
];

/// One answer as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The firmware kind the answer was for.
    pub kind: FirmwareKind,
    /// `offer`, `proxy-offer`, `ack-4011` (or another message type, e.g. `nak`).
    pub answer: String,
    /// Option 54, else the source address.
    pub server: Ipv4Addr,
    /// yiaddr; `None` for a proxy answer.
    pub your_ip: Option<Ipv4Addr>,
    /// siaddr and option 66.
    pub next_server: Option<String>,
    /// Option 67, else the file field.
    pub boot_file: Option<String>,
    /// Option 60.
    pub vendor_class: Option<String>,
    /// Option 43's PXE sub-options.
    pub pxe: Option<PxeOptions>,
    /// The notable options, readable.
    pub options: Vec<String>,
    /// Remarks: options not decoded, a port-4011 request not sent, ...
    pub notes: Vec<String>,
}

/// The probe's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The interface probed.
    pub interface: String,
    /// The kinds asked, in order.
    pub kinds: Vec<FirmwareKind>,
    /// How long the probe listened, in milliseconds.
    pub timeout_ms: u64,
    /// One per answer, grouped by kind.
    pub rows: Vec<Row>,
    /// Malformed answers and requests that could not be sent.
    pub warnings: Vec<String>,
}

/// A JSON line for a kind without answer.
#[derive(Serialize)]
struct NoAnswerLine {
    kind: FirmwareKind,
    answer: &'static str,
}

/// A JSON line for a warning.
#[derive(Serialize)]
struct WarningLine<'a> {
    warning: &'a str,
}

impl Report {
    /// The kinds asked that got no answer.
    pub fn unanswered(&self) -> Vec<FirmwareKind> {
        self.kinds
            .iter()
            .copied()
            .filter(|kind| !self.rows.iter().any(|r| r.kind == *kind))
            .collect()
    }

    /// [`EXIT_ALL_ANSWERED`], [`EXIT_SOME_UNANSWERED`] or [`EXIT_NO_ANSWER`].
    pub fn exit_status(&self) -> u8 {
        let unanswered = self.unanswered().len();
        if unanswered == 0 {
            EXIT_ALL_ANSWERED
        } else if unanswered == self.kinds.len() {
            EXIT_NO_ANSWER
        } else {
            EXIT_SOME_UNANSWERED
        }
    }

    /// One line saying how it went.
    pub fn summary(&self) -> String {
        let unanswered = self.unanswered();
        let answered = self.kinds.len() - unanswered.len();
        let servers = {
            let mut s: Vec<String> = self.rows.iter().map(|r| r.server.to_string()).collect();
            s.sort();
            s.dedup();
            s
        };
        match self.exit_status() {
            EXIT_NO_ANSWER => format!(
                "no answer on {} within {} ms: no DHCP or proxy-DHCP server answered these PXE \
                 clients (is one running on this segment, and does it serve PXE?)",
                self.interface, self.timeout_ms
            ),
            _ => {
                let answers = self.rows.len();
                let mut line = format!(
                    "{answered} of {} kinds answered on {} by {} ({answers} {})",
                    self.kinds.len(),
                    self.interface,
                    servers.join(", "),
                    if answers == 1 { "answer" } else { "answers" }
                );
                if !unanswered.is_empty() {
                    let names: Vec<&str> = unanswered.iter().map(|k| k.name()).collect();
                    let _ = write!(line, "; no answer for {}", names.join(", "));
                }
                line
            }
        }
    }

    /// The table: a header, one line per answer (and per kind without one), then the warnings.
    pub fn table(&self) -> String {
        let mut lines: Vec<[String; 7]> = Vec::new();
        for kind in &self.kinds {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.kind == *kind).collect();
            if rows.is_empty() {
                lines.push([
                    kind.name().to_owned(),
                    NO_ANSWER.to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            for row in rows {
                let mut options = row.options.join(" ");
                for note in &row.notes {
                    if !options.is_empty() {
                        options.push(' ');
                    }
                    let _ = write!(options, "[{note}]");
                }
                lines.push([
                    kind.name().to_owned(),
                    row.answer.clone(),
                    row.server.to_string(),
                    row.your_ip
                        .map_or_else(|| NONE.to_owned(), |ip| ip.to_string()),
                    row.next_server.clone().unwrap_or_else(|| NONE.to_owned()),
                    row.boot_file.clone().unwrap_or_else(|| NONE.to_owned()),
                    options,
                ]);
            }
        }
        let mut widths = HEADERS.map(str::len);
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers = HEADERS.map(str::to_owned);
        for line in std::iter::once(&headers).chain(&lines) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i + 1 == line.len() {
                    text.push_str(cell);
                } else {
                    let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(
                out,
                "warning: {} malformed or failed exchange(s), see above",
                self.warnings.len()
            );
        }
        out
    }

    /// The same as JSON lines: one object per answer, `{"kind":..,"answer":"none"}` per kind
    /// without one, `{"warning":..}` per warning.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for kind in &self.kinds {
            let mut any = false;
            for row in self.rows.iter().filter(|r| r.kind == *kind) {
                any = true;
                push_json(&mut out, row);
            }
            if !any {
                push_json(
                    &mut out,
                    &NoAnswerLine {
                        kind: *kind,
                        answer: "none",
                    },
                );
            }
        }
        for warning in &self.warnings {
            push_json(&mut out, &WarningLine { warning });
        }
        out
    }
}

fn push_json(out: &mut String, value: &impl Serialize) {
    // Plain data with string keys: serialization cannot fail.
    if let Ok(line) = serde_json::to_string(value) {
        out.push_str(&line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn row(kind: FirmwareKind, answer: &str, file: Option<&str>) -> Row {
        Row {
            kind,
            answer: answer.to_owned(),
            server: Ipv4Addr::new(198, 18, 7, 1),
            your_ip: None,
            next_server: Some("198.18.7.1".to_owned()),
            boot_file: file.map(str::to_owned),
            vendor_class: Some("PXEClient".to_owned()),
            pxe: None,
            options: vec!["60=PXEClient".to_owned()],
            notes: vec![],
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            interface: "eth1".to_owned(),
            kinds: vec![FirmwareKind::Bios, FirmwareKind::UefiHttp],
            timeout_ms: 3000,
            rows,
            warnings: vec![],
        }
    }

    #[test]
    fn exit_status_counts_kinds_answered() {
        assert_eq!(report(vec![]).exit_status(), EXIT_NO_ANSWER);
        let one = report(vec![row(FirmwareKind::Bios, "offer", Some("a"))]);
        assert_eq!(one.exit_status(), EXIT_SOME_UNANSWERED);
        assert_eq!(one.unanswered(), [FirmwareKind::UefiHttp]);
        let both = report(vec![
            row(FirmwareKind::Bios, "offer", Some("a")),
            row(FirmwareKind::UefiHttp, "offer", Some("b")),
        ]);
        assert_eq!(both.exit_status(), EXIT_ALL_ANSWERED);
        assert!(report(vec![])
            .summary()
            .contains("no answer on eth1 within 3000 ms"));
    }

    #[test]
    fn table_aligns_columns_and_lists_unanswered_kinds() {
        let mut r = report(vec![row(FirmwareKind::Bios, "proxy-offer", None)]);
        r.warnings
            .push("from 198.18.7.9:67: no DHCP magic cookie".to_owned());
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("KIND       ANSWER       SERVER"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("bios       proxy-offer  198.18.7.1  -"),
            "{table}"
        );
        assert!(lines[1].ends_with("60=PXEClient"), "{table}");
        assert_eq!(lines[2], "uefi-http  no answer");
        assert!(
            lines[3].starts_with("warning: from 198.18.7.9:67"),
            "{table}"
        );
    }

    #[test]
    fn json_lines_have_one_object_per_row() {
        let table = report(vec![row(
            FirmwareKind::Bios,
            "offer",
            Some("undionly.kpxe"),
        )]);
        let lines: Vec<serde_json::Value> = table
            .json_lines()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "bios");
        assert_eq!(lines[0]["boot_file"], "undionly.kpxe");
        assert_eq!(lines[0]["your_ip"], serde_json::Value::Null);
        assert_eq!(lines[1]["kind"], "uefi-http");
        assert_eq!(lines[1]["answer"], "none");
    }
}
