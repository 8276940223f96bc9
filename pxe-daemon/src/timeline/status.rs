//! `pxe-daemon status`: the boot timelines of a running daemon, read from its HTTP API.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use serde_json::Value;

/// Time to connect to, and read from, the daemon.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (a full timeline of 10,000 machines is a few MB).
const STATUS_MAX_BYTES: u64 = 64 << 20;

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The URL is not `http://host:port`.
    #[error("--url {0:?} is not http://host[:port]")]
    Url(String),
    /// The daemon could not be reached.
    #[error("reaching {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It answered something else than the timeline.
    #[error("{0}")]
    Answer(String),
}

/// GETs `path` from the daemon at `url` (`http://host[:port]`) and returns the body.
fn get(url: &str, path: &str) -> Result<String, StatusError> {
    let host = url
        .strip_prefix("http://")
        .map(|h| h.trim_end_matches('/'))
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .ok_or_else(|| StatusError::Url(url.to_owned()))?;
    let addr = if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let connect_err = |source| StatusError::Connect {
        addr: addr.clone(),
        source,
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(connect_err)?
        .next()
        .ok_or_else(|| StatusError::Url(url.to_owned()))?;
    let mut stream = TcpStream::connect_timeout(&sock, STATUS_TIMEOUT).map_err(connect_err)?;
    stream
        .set_read_timeout(Some(STATUS_TIMEOUT))
        .map_err(connect_err)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect_err)?;
    let mut raw = Vec::new();
    stream
        .take(STATUS_MAX_BYTES)
        .read_to_end(&mut raw)
        .map_err(connect_err)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| StatusError::Answer("the daemon's answer has no HTTP head".into()))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(StatusError::Answer(format!(
            "{path}: HTTP {status}: {}",
            body.trim()
        )));
    }
    Ok(body.to_owned())
}

/// Prints the machines' boots (all, or the one with `mac`) as a table, or as JSON.
/// Returns the text to print.
pub fn status(url: &str, mac: Option<&str>, json: bool) -> Result<String, StatusError> {
    let path = match mac {
        Some(m) => format!("/api/machines/{m}"),
        None => "/api/machines".to_owned(),
    };
    let body = get(url, &path)?;
    if json {
        return Ok(body);
    }
    let parsed: Value = serde_json::from_str(&body)
        .map_err(|e| StatusError::Answer(format!("the timeline is not JSON: {e}")))?;
    let machines = match parsed {
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        _ => return Err(StatusError::Answer("unexpected timeline JSON".into())),
    };
    Ok(render(&machines, mac.is_some()))
}

fn field<'a>(m: &'a Value, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The table (and, for one machine, its stages).
pub fn render(machines: &[Value], detail: bool) -> String {
    let mut out = format!(
        "{:<17}  {:<15}  {:<10}  {:<9}  {:<10}  {:<12}  {:>9}  {:<7}  {}\n",
        "MAC", "IP", "ARCH", "FIRMWARE", "GROUP", "STAGE", "IN STAGE", "STATE", "LAST STEP"
    );
    let mut by_stage: BTreeMap<String, usize> = BTreeMap::new();
    let (mut failed, mut stuck) = (0, 0);
    for m in machines {
        let stage = field(m, "stage");
        *by_stage.entry(stage.to_owned()).or_default() += 1;
        let state = if m.get("failed").and_then(Value::as_bool) == Some(true) {
            failed += 1;
            "failed"
        } else if m.get("stuck").and_then(Value::as_bool) == Some(true) {
            stuck += 1;
            "stuck"
        } else {
            "ok"
        };
        let stages = m.get("stages").and_then(Value::as_array);
        let last = stages
            .and_then(|s| s.last())
            .map(|s| format!("{} ({})", field(s, "detail"), field(s, "outcome")))
            .unwrap_or_default();
        let secs = m
            .get("in_stage_secs")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        out += &format!(
            "{:<17}  {:<15}  {:<10}  {:<9}  {:<10}  {:<12}  {:>8.1}s  {:<7}  {}\n",
            field(m, "mac"),
            field(m, "ip"),
            field(m, "arch"),
            field(m, "firmware"),
            field(m, "group"),
            stage,
            secs,
            state,
            last
        );
        if detail {
            let first = stages
                .and_then(|s| s.first())
                .and_then(|s| s.get("at_unix_ms"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            for s in stages.into_iter().flatten() {
                let at = s.get("at_unix_ms").and_then(Value::as_u64).unwrap_or(0);
                out += &format!(
                    "    +{:>7.3}s  {:<12}  {}  ({})\n",
                    at.saturating_sub(first) as f64 / 1000.0,
                    field(s, "stage"),
                    field(s, "detail"),
                    field(s, "outcome")
                );
            }
        }
    }
    let stages: Vec<String> = by_stage.iter().map(|(s, n)| format!("{s} {n}")).collect();
    out += &format!(
        "{} machines: {}; {failed} failed, {stuck} stuck\n",
        machines.len(),
        stages.join(", ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table_with_a_summary() {
        let machines: Vec<Value> = serde_json::from_str(
            r#"[{"mac":"52:54:00:00:00:01","ip":"198.18.0.9","arch":"bios","firmware":"ipxe","group":"rack1",
                 "stage":"done","in_stage_secs":1.5,"stuck":false,"failed":false,
                 "stages":[{"stage":"discover","at_unix_ms":1000,"detail":"DHCP request","outcome":"ok"},
                           {"stage":"done","at_unix_ms":21500,"detail":"GET /initrd 200","outcome":"ok"}]},
                {"mac":"52:54:00:00:00:02","ip":null,"arch":"efi-x64","firmware":"uefi","group":null,
                 "stage":"nbp_transfer","in_stage_secs":400.0,"stuck":true,"failed":true,
                 "stages":[{"stage":"nbp_transfer","at_unix_ms":5,"detail":"ipxe.efi failed","outcome":"failed: timeout"}]}]"#,
        )
        .unwrap();
        let text = render(&machines, true);
        assert!(text.contains("52:54:00:00:00:01  198.18.0.9"), "{text}");
        assert!(text.contains("+ 20.500s  done"), "{text}");
        assert!(
            text.contains("failed   ipxe.efi failed (failed: timeout)"),
            "{text}"
        );
        assert!(
            text.ends_with("2 machines: done 1, nbp_transfer 1; 1 failed, 0 stuck\n"),
            "{text}"
        );
        assert!(matches!(get("ftp://x", "/"), Err(StatusError::Url(_))));
    }
}
