//! `/metrics` as operators get it: after real traffic (joins, relays, an
//! error, a leave) on a single node and on a clustered pair over a real
//! redis-server, the exposition passes the real linters, `promtool check
//! metrics` (Prometheus text) and the official Python client's OpenMetrics
//! parser (which refuses clashing family names), and every metric the
//! shipped Grafana dashboard (`deploy/grafana/signaling.json`) queries is
//! exposed.

use serde_json::json;
use signaling_e2e::client::{Client, http_get_with};
use signaling_e2e::metrics::{
    dashboard_metric_names, openmetrics_families, promtool_check, sample_names, value,
};
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{TestServer, clustered, wait_listed};
use std::time::{Duration, Instant};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";
const DASHBOARD: &str = "deploy/grafana/signaling.json";

/// What makes every labelled family the tests look at non-empty: `a` and
/// `b` in one room (either may be on another node), an offer from `a` to
/// `b` and back an answer, a relay to nobody (an `unknown_peer` error),
/// and `b` leaving.
async fn traffic(mut a: Client, mut b: Client, r: &str) {
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"v=0"}))
        .await;
    b.expect("offer").await;
    b.send(json!({"type":"answer","to":a.peer_id,"sdp":"v=0"}))
        .await;
    a.expect("answer").await;
    a.send(json!({"type":"answer","to":"nobody","sdp":"v=0"}))
        .await;
    let e = a.expect("error").await;
    assert_eq!(e["code"], "unknown_peer", "{e}");
    b.send(json!({"type":"leave"})).await;
    let left = a.expect("peer-left").await;
    assert_eq!(left["reason"], "left", "in {r}: {left}");
    a.close().await;
    b.close().await;
}

/// The OpenMetrics form of a server's `/metrics`.
async fn scrape_openmetrics(s: &TestServer) -> String {
    let (status, body) = http_get_with(s.metrics, "/metrics", &[("Accept", OPENMETRICS)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics ends in # EOF: {body}"
    );
    body
}

/// Both formats pass their linter, and the OpenMetrics families are the
/// ones named in `expected` (as `name type`), among others.
async fn assert_clean(s: &TestServer, expected: &[&str]) {
    let text = s.scrape().await;
    assert!(!text.contains("# EOF"), "the Prometheus text has no # EOF");
    if let Err(e) = promtool_check(&text) {
        panic!("promtool check metrics refused the exposition:\n{e}\n---\n{text}");
    }
    let om = scrape_openmetrics(s).await;
    let families = openmetrics_families(&om).unwrap_or_else(|e| {
        panic!("the OpenMetrics parser refused the exposition:\n{e}\n---\n{om}")
    });
    for f in expected {
        assert!(
            families.iter().any(|g| g == f),
            "no family {f:?} in {families:?}"
        );
    }
}

const FAMILIES: &[&str] = &[
    "signaling_connections_open gauge",
    "signaling_connections counter",
    "signaling_rooms gauge",
    "signaling_peers gauge",
    "signaling_peers_held gauge",
    "signaling_joins counter",
    "signaling_messages_relayed counter",
    "signaling_errors counter",
    "signaling_peers_left counter",
    "signaling_forced_closes counter",
    "signaling_relay_latency_seconds histogram",
    "signaling_build info",
    "process_cpu_seconds counter",
    "process_resident_memory_bytes gauge",
    "process_open_fds gauge",
    "process_max_fds gauge",
    "process_start_time_seconds gauge",
];

const BUS_FAMILIES: &[&str] = &[
    "signaling_bus_redis_connected gauge",
    "signaling_bus_queue_bytes gauge",
    "signaling_bus_reconnects counter",
    "signaling_bus_nodes gauge",
    "signaling_bus_publish_batch_size histogram",
];

/// Asserts docs/protocol.md §14, §14.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_exposition_passes_promtool_and_the_openmetrics_parser() {
    let s = TestServer::start(|_| {}).await;
    let r = room("metrics-one");
    let mut a = s.client("a").await;
    a.join(&r).await;
    let mut b = s.client("b").await;
    b.join(&r).await;
    a.expect("peer-joined").await;
    traffic(a, b, &r).await;

    let text = s.scrape().await;
    for (line, at_least) in [
        ("signaling_joins_total ", 2),
        ("signaling_messages_relayed_total{type=\"offer\"} ", 1),
        ("signaling_messages_relayed_total{type=\"answer\"} ", 1),
        ("signaling_errors_total{code=\"unknown_peer\"} ", 1),
        ("signaling_peers_left_total{reason=\"left\"} ", 1),
        ("signaling_relay_latency_seconds_count ", 2),
        ("signaling_connections_total ", 2),
    ] {
        let v = value(&text, line).unwrap_or_else(|| panic!("no {line:?} in {text}"));
        assert!(v >= at_least, "{line}{v}, expected at least {at_least}");
    }
    // The server crate's version, read from its manifest.
    let manifest =
        std::fs::read_to_string(signaling_e2e::workspace_root().join("signaling/Cargo.toml"))
            .expect("the server's manifest");
    let crate_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version line");
    let version = format!("signaling_build_info{{version=\"{crate_version}\"}} 1");
    assert!(text.contains(&version), "no {version:?} in {text}");
    assert!(
        !text.contains("signaling_bus_"),
        "no bus series without Redis: {text}"
    );
    assert_clean(&s, FAMILIES).await;
    s.stop().await;
}

/// A node of the pair, once its bus reports the whole cluster.
async fn wait_bus(s: &TestServer, nodes: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = s.scrape().await;
        if value(&text, "signaling_bus_redis_connected ") == Some(1)
            && value(&text, "signaling_bus_nodes ") == Some(nodes)
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the bus never reported {nodes} nodes connected: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two nodes on one real Redis, with a room spread over both after traffic.
async fn clustered_pair(tag: &str) -> (Redis, TestServer, TestServer) {
    let redis = Redis::start();
    let n1 = TestServer::start(clustered(redis.url(), &format!("{tag}-1"))).await;
    let n2 = TestServer::start(clustered(redis.url(), &format!("{tag}-2"))).await;
    let r = room(tag);
    let mut a = n1.client("a").await;
    a.join(&r).await;
    wait_listed(n2.addr, &r, &a.peer_id).await;
    let mut b = n2.client("b").await;
    b.join(&r).await;
    a.expect("peer-joined").await;
    traffic(a, b, &r).await;
    (redis, n1, n2)
}

/// Asserts docs/protocol.md §14, §14.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_pair_exposes_the_bus_and_passes_both_linters() {
    let (_redis, n1, n2) = clustered_pair("metrics-pair").await;
    for n in [&n1, &n2] {
        let text = wait_bus(n, 2).await;
        // The node's writes to Redis went out in batches: the joins, the
        // relays to the other node, the leave.
        let batches = value(&text, "signaling_bus_publish_batch_size_count ").unwrap_or(0);
        assert!(batches >= 1, "no batch observed: {text}");
        assert_eq!(
            value(&text, "signaling_bus_reconnects_total "),
            Some(0),
            "{text}"
        );
        assert!(
            value(&text, "signaling_bus_queue_bytes ").is_some(),
            "{text}"
        );
        let all: Vec<&str> = FAMILIES.iter().chain(BUS_FAMILIES).copied().collect();
        assert_clean(n, &all).await;
    }
    n1.stop().await;
    n2.stop().await;
}

/// Asserts docs/protocol.md §14, §14.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exposed() {
    let path = signaling_e2e::workspace_root().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).expect("the dashboard ships");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "a dashboard with panels"
    );
    assert!(dashboard["title"].is_string() && dashboard["schemaVersion"].is_number());
    let names = dashboard_metric_names(&dashboard, &["signaling_", "process_"]);
    // The families the issue asks panels for, each queried.
    for needed in [
        "signaling_connections_open",
        "signaling_peers",
        "signaling_rooms",
        "signaling_joins_total",
        "signaling_messages_relayed_total",
        "signaling_errors_total",
        "signaling_relay_latency_seconds_bucket",
        "signaling_peers_left_total",
        "signaling_forced_closes_total",
        "signaling_bus_redis_connected",
        "signaling_bus_queue_bytes",
        "signaling_bus_reconnects_total",
        "signaling_bus_nodes",
        "signaling_bus_publish_batch_size_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            names.contains(needed),
            "no panel queries {needed}: {names:?}"
        );
    }

    let (_redis, n1, n2) = clustered_pair("metrics-dash").await;
    let exposed = sample_names(&wait_bus(&n1, 2).await);
    let missing: Vec<&String> = names.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series no node exposes: {missing:?} (exposed: {exposed:?})"
    );
    n1.stop().await;
    n2.stop().await;
}

/// Waits until `s`'s exposition has `line` (a whole sample line) in it.
async fn wait_line(s: &TestServer, line: &str, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = s.scrape().await;
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(Instant::now() < deadline, "{why}: never {line:?} in {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts docs/protocol.md §14, §14.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_shows_as_disconnected_then_one_reconnect() {
    let mut redis = Redis::start();
    let n = TestServer::start(clustered(redis.url(), "metrics-outage")).await;
    wait_line(&n, "signaling_bus_redis_connected 1", "connected at start").await;
    wait_line(&n, "signaling_bus_reconnects_total 0", "no reconnect yet").await;
    redis.kill();
    let down = wait_line(&n, "signaling_bus_redis_connected 0", "Redis killed").await;
    if let Err(e) = promtool_check(&down) {
        panic!("promtool refused the exposition during the outage:\n{e}");
    }
    redis.restart();
    wait_line(&n, "signaling_bus_redis_connected 1", "Redis back").await;
    wait_line(&n, "signaling_bus_reconnects_total 1", "one reconnect").await;
    n.stop().await;
}
