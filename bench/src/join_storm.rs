//! `join-storm`: many clients joining many rooms at once; joins per second
//! and how long each `join` waits for its `joined`.

use serde_json::json;
use std::sync::Arc;

use crate::client::Error;
use crate::conn::Target;
use crate::crowd::Crowd;
use crate::names::room_name;
use crate::report::{Report, per_second, round, server_fields, spread};
use crate::{fd_limit, proc_stats};

pub struct Storm {
    pub url: String,
    pub clients: usize,
    pub rooms: usize,
    pub concurrency: usize,
    pub pids: Vec<u32>,
}

pub async fn join_storm(p: &Storm) -> Result<Report, Error> {
    let n = p.clients;
    let rooms = p.rooms.max(1);
    fd_limit::ensure(n)?;
    fd_limit::warn_if_servers_short(&p.pids, n);
    let target = Arc::new(Target::resolve(&p.url, n).await?);
    let before = proc_stats::read_all(&p.pids);
    let own_before = proc_stats::read(std::process::id());
    let overflows = proc_stats::listen_overflows();
    // Client i joins room i mod rooms: every room fills at once.
    let crowd = Crowd::gather(target, n, p.concurrency, |i| room_name(i % rooms)).await;
    let own_after = proc_stats::read(std::process::id());
    let overflowed = proc_stats::listen_overflows_since(overflows);
    let joined = crowd.entries.len();
    let first_sent = crowd.entries.iter().map(|e| e.join_sent).min();
    let last_joined = crowd.entries.iter().map(|e| e.joined_at).max();
    let wall = match (first_sent, last_joined) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Default::default(),
    };
    let us = |d: std::time::Duration| d.as_micros() as u64;
    let mut join: Vec<u64> = crowd.entries.iter().map(|e| us(e.join)).collect();
    let mut connect: Vec<u64> = crowd.entries.iter().map(|e| us(e.connect)).collect();
    let mut fields = vec![
        ("clients", json!(n)),
        ("rooms", json!(rooms)),
        ("concurrency", json!(p.concurrency)),
        ("joined", json!(joined)),
        ("failed", json!(crowd.failed)),
        ("wall_s", json!(round(wall.as_secs_f64(), 3))),
        ("joins_per_s", json!(per_second(joined as u64, wall))),
    ];
    if let Some(n) = overflowed {
        fields.push(("listen_overflows", json!(n)));
    }
    fields.extend(spread(
        &mut join,
        ["join_p50_ms", "join_p99_ms", "join_max_ms"],
        1000.0,
    ));
    fields.extend(spread(
        &mut connect,
        ["connect_p50_ms", "connect_p99_ms", "connect_max_ms"],
        1000.0,
    ));
    fields.extend(server_fields(
        &p.pids,
        before,
        joined as u64,
        Some("server_cpu_us_per_join"),
    ));
    // The generator shares the cores: what it spends is CPU the server
    // cannot have.
    if let (Some((c0, _)), Some((c1, _))) = (own_before, own_after) {
        let us = c1.saturating_sub(c0).as_secs_f64() * 1e6 / joined.max(1) as f64;
        fields.push(("bench_cpu_us_per_join", json!(round(us, 1))));
    }
    crowd.disperse().await;
    Ok(Report::new("join-storm", fields))
}
