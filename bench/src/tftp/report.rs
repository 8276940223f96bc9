//! The run's figures: aggregate throughput, per-transfer percentiles, failures by reason and the
//! generator's own CPU time, as text or as one JSON object.

use std::time::Duration;

use serde_json::{json, Value};

use super::load::Outcome;

/// Bytes in a MB (throughput is in decimal megabytes per second, as network figures are).
const BYTES_PER_MB: f64 = 1e6;

/// The `q`-quantile (0..=1) of sorted `values`, nearest rank.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(round3(d.as_secs_f64() * 1e3)))
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// What the report says about the run besides the outcome.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    /// A name for the server (`--label`), or its address.
    pub label: &'a str,
    /// The server's address.
    pub server: String,
    /// The file asked for.
    pub file: &'a str,
    /// Concurrent clients.
    pub clients: usize,
    /// blksize and windowsize asked for.
    pub blksize: u16,
    /// Window asked for.
    pub windowsize: u16,
    /// Transfers per client, if bounded by count.
    pub rounds: Option<u32>,
}

/// The report as one JSON object.
pub(crate) fn to_json(ctx: &Context<'_>, out: &Outcome) -> Value {
    let mut sorted = out.durations.clone();
    sorted.sort_unstable();
    let wall = out.wall.as_secs_f64();
    let rate = if wall > 0.0 {
        out.bytes as f64 / wall
    } else {
        0.0
    };
    let cpu = (out.cpu_user + out.cpu_sys).as_secs_f64();
    let failures: serde_json::Map<String, Value> = out
        .failures
        .iter()
        .map(|(reason, (count, example))| {
            (
                (*reason).to_owned(),
                json!({"count": count, "first": example}),
            )
        })
        .collect();
    let negotiated: Vec<Value> = out
        .negotiated
        .iter()
        .map(|((blksize, windowsize), count)| {
            json!({"blksize": blksize, "windowsize": windowsize, "transfers": count})
        })
        .collect();
    let mean = if sorted.is_empty() {
        None
    } else {
        Some(sorted.iter().sum::<Duration>() / sorted.len() as u32)
    };
    json!({
        "label": ctx.label,
        "server": ctx.server,
        "file": ctx.file,
        "clients": ctx.clients,
        "blksize": ctx.blksize,
        "windowsize": ctx.windowsize,
        "rounds": ctx.rounds,
        "started": out.started,
        "completed": out.completed,
        "verified": out.verified,
        "failed": out.failed(),
        "failures": failures,
        "bytes": out.bytes,
        "wall_secs": round3(wall),
        "aggregate_bytes_per_sec": rate.round(),
        "aggregate_mb_per_sec": round3(rate / BYTES_PER_MB),
        "transfer_ms": {
            "min": ms(sorted.first().copied()),
            "p50": ms(quantile(&sorted, 0.50)),
            "p99": ms(quantile(&sorted, 0.99)),
            "max": ms(sorted.last().copied()),
            "mean": ms(mean),
        },
        "negotiated": negotiated,
        "client": {
            "retransmits": out.counters.retransmits,
            "gap_acks": out.counters.gap_acks,
            "duplicates": out.counters.duplicates,
            "stray": out.counters.stray,
            "malformed": out.counters.malformed,
        },
        "generator_cpu": {
            "user_secs": round3(out.cpu_user.as_secs_f64()),
            "sys_secs": round3(out.cpu_sys.as_secs_f64()),
            "total_secs": round3(cpu),
            "percent_of_one_core": if wall > 0.0 { round3(100.0 * cpu / wall) } else { 0.0 },
        },
    })
}

/// The report as a few lines of text.
pub(crate) fn to_text(ctx: &Context<'_>, out: &Outcome) -> String {
    let report = to_json(ctx, out);
    let t = &report["transfer_ms"];
    let cpu = &report["generator_cpu"];
    let mut text = format!(
        "{label}: {clients} clients, blksize {blksize}, windowsize {windowsize}: \
         {completed}/{started} transfers completed ({verified} compared byte for byte), \
         {failed} failed\n\
         aggregate {rate} MB/s ({bytes} bytes in {wall} s); per transfer p50 {p50} ms, \
         p99 {p99} ms, max {max} ms\n\
         client: {retransmits} retransmits, {gaps} gap ACKs, {dups} duplicates; \
         generator CPU {cpu_total} s ({cpu_pct}% of one core)\n",
        label = ctx.label,
        clients = ctx.clients,
        blksize = ctx.blksize,
        windowsize = ctx.windowsize,
        completed = out.completed,
        started = out.started,
        verified = out.verified,
        failed = out.failed(),
        rate = report["aggregate_mb_per_sec"],
        bytes = out.bytes,
        wall = report["wall_secs"],
        p50 = t["p50"],
        p99 = t["p99"],
        max = t["max"],
        retransmits = out.counters.retransmits,
        gaps = out.counters.gap_acks,
        dups = out.counters.duplicates,
        cpu_total = cpu["total_secs"],
        cpu_pct = cpu["percent_of_one_core"],
    );
    for ((blksize, windowsize), count) in &out.negotiated {
        text.push_str(&format!(
            "negotiated: blksize {blksize}, windowsize {windowsize}: {count} transfers\n"
        ));
    }
    for (reason, (count, example)) in &out.failures {
        text.push_str(&format!("failed: {reason}: {count} (first: {example})\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&d, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&d, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&d[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
