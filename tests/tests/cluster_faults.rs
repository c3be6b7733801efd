//! Faults that real deployments compound (issue 12): a node whose clock is
//! off, and a second instance started under a running node's id. Real
//! redis-server, real `signaling` processes; a node's clock is shifted with
//! libfaketime (wall clock only: its monotonic clock, which tokio's timers
//! use, is left alone).

use serde_json::json;
use signaling_e2e::client::{Client, peer_ids};
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{ServerProcess, api_room, wait_listed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// The default `--node-timeout`.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// An instance of the cluster on `redis` as node `id`.
async fn node(redis: &Redis, id: &str) -> ServerProcess {
    skewed(redis, id, None).await
}

/// An instance whose wall clock is shifted by `shift` (`"-30s"`, `"+30s"`).
async fn skewed(redis: &Redis, id: &str, shift: Option<&str>) -> ServerProcess {
    let url = redis.url();
    let args = ["--redis-url", url.as_str(), "--node-id", id];
    let p = match shift {
        Some(shift) => {
            assert!(
                std::path::Path::new(FAKETIME_LIB).exists(),
                "libfaketime is missing ({FAKETIME_LIB}): apt-get install libfaketime"
            );
            let env = [
                ("LD_PRELOAD", FAKETIME_LIB),
                ("FAKETIME", shift),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ];
            ServerProcess::start_with_env(&args, &env).await
        }
        None => ServerProcess::start(&args).await,
    };
    p.wait_ready(Duration::from_secs(10)).await;
    p
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The shift is real: the skewed process's own log stamps run off by about
/// `secs` from ours (tracing stamps its lines with `SystemTime`).
fn assert_clock_shifted(p: &ServerProcess, secs: i64) {
    let log = p.log();
    // The first `YYYY-MM-DDTHH:MM:SS` in the log, as seconds of the day.
    let b = log.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = log.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let stamp = (0..b.len().saturating_sub(19))
        .find_map(|i| {
            let shape = b[i + 4] == b'-' && b[i + 10] == b'T' && b[i + 13] == b':';
            if !shape {
                return None;
            }
            Some(
                digits(i + 11..i + 13)? * 3600
                    + digits(i + 14..i + 16)? * 60
                    + digits(i + 17..i + 19)?,
            )
        })
        .expect("a timestamped line in the server's log");
    let ours = (now_ms() / 1000) % 86_400;
    let off = (stamp - ours + 86_400 + 43_200) % 86_400 - 43_200;
    assert!(
        (off - secs).abs() <= 5,
        "the server's clock is {off} s off ours, expected {secs} s"
    );
}

/// `from` sends `to` a directed message, which `to` gets next (a `peer-left`
/// or anything else first fails the test).
async fn relay(from: &mut Client, to: &mut Client, n: u64) {
    from.send(json!({"type":"message","to":to.peer_id,"data":n}))
        .await;
    let m = to.expect("message").await;
    assert_eq!(
        (m["from"].as_str(), m["data"].as_u64()),
        (Some(from.peer_id.as_str()), Some(n)),
        "{}",
        to.label
    );
}

/// For `d`, both ways twice a second: relays keep arriving, and neither side
/// hears anything else (no `peer-left`).
async fn relay_steadily(a: &mut Client, b: &mut Client, d: Duration) {
    let end = Instant::now() + d;
    let mut n = 0;
    while Instant::now() < end {
        relay(a, b, n).await;
        relay(b, a, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `a` joins through `pa`, `b` through `pb`, and they see each other.
async fn pair(pa: &ServerProcess, pb: &ServerProcess, r: &str) -> (Client, Client) {
    let mut a = Client::connect(&pa.ws(), "a").await;
    let mut b = Client::connect(&pb.ws(), "b").await;
    a.join(r).await;
    wait_listed(pb.addr, r, &a.peer_id).await;
    let j = b.join(r).await;
    assert_eq!(peer_ids(&j["peers"]), [a.peer_id.clone()]);
    assert_eq!(
        a.expect("peer-joined").await["peer"]["peer_id"],
        b.peer_id.as_str()
    );
    (a, b)
}

/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_30_s_behind_is_not_taken_for_dead() {
    let redis = Redis::start();
    let late = skewed(&redis, "late", Some("-30s")).await;
    let fine = node(&redis, "fine").await;
    assert_clock_shifted(&late, -30);
    let r = room("behind");
    let (mut a, mut b) = pair(&late, &fine, &r).await;
    // Long past the node timeout, counted from both nodes' start.
    relay_steadily(&mut a, &mut b, NODE_TIMEOUT + Duration::from_secs(5)).await;
    let mut both = vec![a.peer_id.clone(), b.peer_id.clone()];
    both.sort();
    assert_eq!(api_room(fine.addr, &r).await, both, "a still listed");
}

/// Asserts docs/protocol.md §7.2, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_30_s_ahead_is_found_dead_within_the_node_timeout() {
    let redis = Redis::start();
    let mut early = skewed(&redis, "early", Some("+30s")).await;
    let fine = node(&redis, "fine").await;
    assert_clock_shifted(&early, 30);
    let r = room("ahead");
    let (mut a, mut b) = pair(&early, &fine, &r).await;
    relay(&mut b, &mut a, 0).await;
    let killed = Instant::now();
    early.kill9();
    let l = b
        .expect_within("peer-left", NODE_TIMEOUT + Duration::from_secs(5))
        .await;
    let took = killed.elapsed();
    println!("node-lost announced {} ms after SIGKILL", took.as_millis());
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(a.peer_id.as_str()), Some("node-lost"))
    );
    assert!(
        took <= NODE_TIMEOUT + Duration::from_secs(3),
        "announced {took:?} after SIGKILL"
    );
}

/// Asserts docs/protocol.md §3.2, §7.3, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_at_is_on_one_clock_across_skewed_nodes() {
    let redis = Redis::start();
    let early = skewed(&redis, "early", Some("+30s")).await;
    let late = skewed(&redis, "late", Some("-30s")).await;
    let fine = node(&redis, "fine").await;
    let r = room("joined-at");
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    // Joins in this order, 200 ms apart: through the node ahead, the right
    // one, then the one behind.
    for (p, label) in [(&early, "x"), (&fine, "y"), (&late, "z")] {
        let mut c = Client::connect(&p.ws(), label).await;
        let before = now_ms();
        c.join(&r).await;
        let after = now_ms();
        wait_listed(fine.addr, &r, &c.peer_id).await;
        ids.push((c.peer_id.clone(), before, after));
        clients.push(c);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut n = Client::connect(&fine.ws(), "newcomer").await;
    let j = n.join(&r).await;
    let want: Vec<String> = ids.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(peer_ids(&j["peers"]), want, "oldest first: {}", j["peers"]);
    for (p, (id, before, after)) in j["peers"].as_array().expect("peers").iter().zip(&ids) {
        let at = p["joined_at"].as_i64().expect("joined_at");
        assert!(
            (before - 1_000..=after + 1_000).contains(&at),
            "{id} joined_at {at} is off the real time of its join ({before}..{after})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_under_a_running_node_id_refuses_and_touches_nothing() {
    let redis = Redis::start();
    let first = node(&redis, "dup").await;
    let other = node(&redis, "other").await;
    let r = room("dup");
    let (mut a, mut b) = pair(&first, &other, &r).await;
    let url = redis.url();
    let mut second = ServerProcess::start(&["--redis-url", url.as_str(), "--node-id", "dup"]).await;
    let started = Instant::now();
    // While it waits for the lease and after it gave up: nobody is
    // announced gone, relays keep flowing both ways.
    relay_steadily(&mut a, &mut b, Duration::from_secs(4)).await;
    assert_ne!(
        signaling_e2e::client::http_get(second.addr, "/readyz")
            .await
            .0,
        200,
        "the second instance must not serve as the node"
    );
    let status = second
        .exited(NODE_TIMEOUT + Duration::from_secs(5))
        .await
        .expect("the second instance exits");
    println!(
        "the second instance exited after {} ms: {status}",
        started.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(2), "{}", second.log());
    assert!(
        second.log().contains("in use by another running instance"),
        "{}",
        second.log()
    );
    relay_steadily(&mut a, &mut b, Duration::from_secs(3)).await;
    let mut both = vec![a.peer_id.clone(), b.peer_id.clone()];
    both.sort();
    assert_eq!(api_room(other.addr, &r).await, both);
    assert_eq!(api_room(first.addr, &r).await, both);
}
