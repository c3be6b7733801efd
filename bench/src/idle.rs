//! `idle-connections`: many joined, silent connections; what each costs the
//! server in memory, and how fast they get in.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Error;
use crate::conn::Target;
use crate::crowd::Crowd;
use crate::names::room_name;
use crate::report::{Report, mib, per_second, round, server_fields};
use crate::{fd_limit, proc_stats};

pub struct Idle {
    pub url: String,
    pub connections: usize,
    pub room_size: usize,
    pub concurrency: usize,
    /// How long all stay open, idle, before the server's RSS is read.
    pub hold: Duration,
    pub pids: Vec<u32>,
}

pub async fn idle_connections(p: &Idle) -> Result<Report, Error> {
    let n = p.connections;
    fd_limit::ensure(n)?;
    fd_limit::warn_if_servers_short(&p.pids, n);
    let target = Arc::new(Target::resolve(&p.url, n).await?);
    let sources = target.sources();
    let before = proc_stats::read_all(&p.pids);
    let overflows = proc_stats::listen_overflows();
    let room_size = p.room_size.max(1);
    let start = Instant::now();
    let crowd = Crowd::gather(target, n, p.concurrency, |i| room_name(i / room_size)).await;
    let connect_phase = start.elapsed();
    let overflowed = proc_stats::listen_overflows_since(overflows);
    tokio::time::sleep(p.hold).await;
    let joined = crowd.entries.len();
    let mut fields = vec![
        ("connections", json!(n)),
        ("room_size", json!(room_size)),
        ("sources", json!(sources)),
        ("concurrency", json!(p.concurrency)),
        ("joined", json!(joined)),
        ("failed", json!(crowd.failed)),
        ("lost", json!(crowd.lost())),
        ("connect_s", json!(round(connect_phase.as_secs_f64(), 2))),
        (
            "joins_per_s",
            json!(per_second(joined as u64, connect_phase)),
        ),
        ("hold_s", json!(p.hold.as_secs_f64())),
    ];
    if let Some(n) = overflowed {
        fields.push(("listen_overflows", json!(n)));
    }
    if let Some((_, rss)) = proc_stats::read(std::process::id()) {
        fields.push(("client_rss_mib", json!(mib(rss))));
    }
    if let (Some((_, rss0)), Some((_, rss1))) = (before, proc_stats::read_all(&p.pids)) {
        let per_conn = if joined > 0 {
            rss1.saturating_sub(rss0) as f64 / 1024.0 / joined as f64
        } else {
            0.0
        };
        fields.push(("server_rss_before_mib", json!(mib(rss0))));
        fields.push(("server_rss_after_mib", json!(mib(rss1))));
        fields.push(("server_rss_kib_per_conn", json!(round(per_conn, 2))));
    }
    // CPU over the connect phase and the hold; RSS is given above.
    let server = server_fields(
        &p.pids,
        before,
        joined as u64,
        Some("server_cpu_us_per_join"),
    );
    fields.extend(server.into_iter().filter(|(k, _)| *k != "server_rss_mib"));
    crowd.disperse().await;
    Ok(Report::new("idle-connections", fields))
}
