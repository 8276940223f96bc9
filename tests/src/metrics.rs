//! Reading samples out of the Prometheus text exposition format.

/// The value of the first sample of metric `name` whose labels include all of `labels`
/// (other labels are ignored), in Prometheus text format `text`; `None` if there is none.
///
/// `metric_value(text, "pxe_xdp_frames_total", &[("class", "dhcp")])`
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_sample)
        .find(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|sample| sample.value)
}

/// The sum of every sample of metric `name` whose labels include all of `labels`, in
/// Prometheus text format `text`; 0 when there is none.
///
/// `metric_sum(text, "pxe_dhcp_requests_total", &[("firmware", "ipxe")])` counts iPXE's
/// requests of every type and arch.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|sample| sample.value)
        .sum()
}

/// One line of the exposition format: `name{k="v",...} value [timestamp]`.
#[derive(Debug)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the pairs and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::{metric_sum, metric_value};

    const TEXT: &str = r#"# HELP pxe_xdp_frames_total Frames seen by the XDP program.
# TYPE pxe_xdp_frames_total counter
pxe_xdp_frames_total{class="dhcp"} 12
pxe_xdp_frames_total{class="other"} 3.5e3
pxe_xdp_attach_mode{mode="driver"} 1
pxe_xdp_attach_mode{mode="skb"} 0
pxe_build_info{version="0.1.0",note="a \"quoted\", comma"} 1 1700000000000
pxe_up 1
pxe_inf{le="+Inf"} +Inf
"#;

    #[test]
    fn finds_samples_by_name_and_labels() {
        let frames = |class| metric_value(TEXT, "pxe_xdp_frames_total", &[("class", class)]);
        assert_eq!(frames("dhcp"), Some(12.0));
        assert_eq!(frames("other"), Some(3500.0));
        assert_eq!(frames("tftp"), None);
        let mode = |m| metric_value(TEXT, "pxe_xdp_attach_mode", &[("mode", m)]);
        assert_eq!(mode("driver"), Some(1.0));
        assert_eq!(mode("skb"), Some(0.0));
        assert_eq!(metric_value(TEXT, "pxe_up", &[]), Some(1.0));
        assert_eq!(
            metric_value(TEXT, "pxe_build_info", &[("note", "a \"quoted\", comma")]),
            Some(1.0)
        );
        assert_eq!(metric_value(TEXT, "pxe_inf", &[]), Some(f64::INFINITY));
        assert_eq!(metric_value(TEXT, "pxe_xdp_frames", &[]), None);
    }

    #[test]
    fn sums_samples_over_other_labels() {
        assert_eq!(metric_sum(TEXT, "pxe_xdp_frames_total", &[]), 3512.0);
        assert_eq!(
            metric_sum(TEXT, "pxe_xdp_frames_total", &[("class", "dhcp")]),
            12.0
        );
        assert_eq!(
            metric_sum(TEXT, "pxe_xdp_frames_total", &[("class", "tftp")]),
            0.0
        );
    }
}
