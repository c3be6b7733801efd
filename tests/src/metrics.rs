//! Reading `/metrics` expositions, and checking them with real linters:
//! `promtool check metrics` (Debian `prometheus`) for the Prometheus text
//! format, and the official Python client's OpenMetrics parser (Debian
//! `python3-prometheus-client`), which refuses what OpenMetrics forbids,
//! family names that clash included.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// The Python that Debian's `python3-prometheus-client` installs for.
const PYTHON: &str = "/usr/bin/python3";

/// The value of the first sample line starting with `line_start`.
pub fn value(body: &str, line_start: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sample names of an exposition (`x_total`, `x_bucket`, ...), without
/// labels.
pub fn sample_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn run_with_stdin(cmd: &mut Command, input: &str, what: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} is needed ({e}); scripts/test installs it"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write to stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `promtool check metrics` on a Prometheus text exposition: `Err` with
/// promtool's complaints (it lints names, types and help too).
pub fn promtool_check(exposition: &str) -> Result<(), String> {
    let (ok, text) = run_with_stdin(
        Command::new("promtool").args(["check", "metrics"]),
        exposition,
        "promtool (Debian package prometheus)",
    );
    if ok && text.trim().is_empty() {
        Ok(())
    } else {
        Err(text)
    }
}

/// Parses an OpenMetrics exposition with the Python client's strict parser;
/// `Ok` with each family as `name type`, `Err` with the parser's error.
pub fn openmetrics_families(exposition: &str) -> Result<Vec<String>, String> {
    let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
for f in parse(sys.stdin.read()):\n    print(f.name, f.type)\n";
    let (ok, text) = run_with_stdin(
        Command::new(PYTHON).args(["-c", script]),
        exposition,
        "python3-prometheus-client",
    );
    if ok {
        Ok(text.lines().map(str::to_string).collect())
    } else {
        Err(text)
    }
}

/// Every metric name a Grafana dashboard's PromQL expressions name: the
/// words starting with one of `prefixes` (`signaling_`, `process_`), in
/// every panel's targets, rows' nested panels included.
pub fn dashboard_metric_names(
    dashboard: &serde_json::Value,
    prefixes: &[&str],
) -> BTreeSet<String> {
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    let mut names = BTreeSet::new();
    for e in exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if prefixes.iter().any(|p| word.starts_with(p)) {
                names.insert(word.to_string());
            }
        }
    }
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| collect_exprs(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
