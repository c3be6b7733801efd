//! The summary every scenario ends with, and the arithmetic its figures share.

use serde_json::{Value, json};
use std::time::Duration;

use crate::proc_stats;

/// One scenario's figures: a text line of `key=value`s, or one JSON object.
pub struct Report {
    name: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl Report {
    pub fn new(name: &'static str, fields: Vec<(&'static str, Value)>) -> Report {
        Report { name, fields }
    }

    pub fn line(&self) -> String {
        let mut s = self.name.to_string();
        for (k, v) in &self.fields {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    pub fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("scenario".into(), json!(self.name));
        for (k, v) in &self.fields {
            m.insert((*k).into(), v.clone());
        }
        Value::Object(m)
    }
}

/// The `p` quantile (0..=1) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `x` rounded to `digits` decimals, for figures that read better that way.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub fn mib(bytes: u64) -> f64 {
    round(bytes as f64 / 1048576.0, 1)
}

/// `n` events over `elapsed`, per second.
pub fn per_second(n: u64, elapsed: Duration) -> u64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        (n as f64 / s).round() as u64
    } else {
        0
    }
}

/// `p50_<unit>`, `p99_<unit>`, `max_<unit>` of microsecond samples, in the
/// unit `scale` microseconds make (1 for µs, 1000 for ms).
pub fn spread(
    samples: &mut [u64],
    keys: [&'static str; 3],
    scale: f64,
) -> Vec<(&'static str, Value)> {
    samples.sort_unstable();
    let at = |us: u64| {
        if scale == 1.0 {
            json!(us)
        } else {
            json!(round(us as f64 / scale, 2))
        }
    };
    vec![
        (keys[0], at(percentile(samples, 0.50))),
        (keys[1], at(percentile(samples, 0.99))),
        (keys[2], at(samples.last().copied().unwrap_or(0))),
    ]
}

/// The servers' CPU time since `before` (a [`proc_stats::read_all`]), per
/// `unit` of work when `per` names the figure, and their RSS now.
pub fn server_fields(
    pids: &[u32],
    before: Option<(Duration, u64)>,
    work: u64,
    per: Option<&'static str>,
) -> Vec<(&'static str, Value)> {
    let (Some((cpu0, _)), Some((cpu1, rss))) = (before, proc_stats::read_all(pids)) else {
        return Vec::new();
    };
    let cpu = cpu1.saturating_sub(cpu0);
    let mut fields = vec![("server_cpu_ms", json!(cpu.as_millis() as u64))];
    if let Some(key) = per {
        let us = if work > 0 {
            cpu.as_secs_f64() * 1e6 / work as f64
        } else {
            0.0
        };
        fields.push((key, json!(round(us, 2))));
    }
    fields.push(("server_rss_mib", json!(mib(rss))));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_spreads() {
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), 6);
        assert_eq!(percentile(&[], 0.99), 0);
        let mut s = vec![3000, 1000, 2000];
        let f = spread(&mut s, ["p50_ms", "p99_ms", "max_ms"], 1000.0);
        assert_eq!(f[0], ("p50_ms", json!(2.0)));
        assert_eq!(f[2], ("max_ms", json!(3.0)));
    }

    #[test]
    fn reports_print_as_a_line_and_as_json() {
        let r = Report::new("x", vec![("a", json!(1)), ("b", json!("y"))]);
        assert_eq!(r.line(), r#"x a=1 b="y""#);
        assert_eq!(r.json(), json!({"scenario":"x","a":1,"b":"y"}));
    }
}
