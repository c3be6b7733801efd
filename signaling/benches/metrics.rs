//! The cost of the metrics on the relay path: every relayed message counts
//! itself (`relayed`) and its latency (`relay_latency`).
//! `cargo bench -p signaling --bench metrics`.
//!
//! `METRICS_CALLS=N` runs the pair N times in `hot_loop` and exits, without
//! criterion: under `valgrind --tool=callgrind --toggle-collect='*hot_loop*'`
//! the instruction count divided by N is the cost of one call.

use criterion::{Criterion, criterion_group};
use signaling::metrics::Metrics;
use signaling_protocol::RelayKind;
use std::hint::black_box;
use std::time::Duration;

#[inline(never)]
fn hot_loop(m: &Metrics, n: u64) {
    for i in 0..n {
        m.relayed(black_box(RelayKind::Candidate), black_box(1));
        m.relay_latency(black_box(Duration::from_micros(i % 3000)));
    }
}

fn metrics(c: &mut Criterion) {
    let m = Metrics::default();
    c.bench_function("metrics/relayed+relay_latency", |b| {
        b.iter(|| hot_loop(&m, 1))
    });
}

criterion_group!(benches, metrics);

fn main() {
    if let Some(n) = std::env::var("METRICS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        hot_loop(&Metrics::default(), n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
