//! Redis losing data, or bringing older data back, compounded with a node's
//! death or drain (issue 12, items 2, 4 and 5). Real redis-server, real
//! `signaling` processes on it, real WebSocket clients; every case checks
//! what each member hears (nothing twice, nobody announced gone while
//! connected) and what a newcomer is shown.

use serde_json::{Value, json};
use signaling_e2e::client::{Client, peer_ids};
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{ServerProcess, api_room, wait_listed};
use std::time::{Duration, Instant};

/// The default `--node-timeout`.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a reconnect adds to healing: the backoff after an outage (at most
/// 2 s) and the first heartbeat.
const RECONNECT: Duration = Duration::from_secs(4);

async fn node(redis: &Redis, id: &str) -> ServerProcess {
    ServerProcess::node(&redis.url(), id, &[]).await
}

/// Waits until every node answers `/readyz` again (reconnected to Redis).
async fn all_ready(nodes: &[&ServerProcess]) {
    for n in nodes {
        n.wait_ready(Duration::from_secs(15)).await;
    }
}

/// What `c` hears within `d`, as `(type, peer_id)` pairs.
async fn heard(c: &mut Client, d: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(d, async {
        while let Some(v) = c.next(d).await {
            got.push(describe(&v));
        }
    })
    .await;
    got
}

fn describe(v: &Value) -> (String, String) {
    let peer = v["peer_id"]
        .as_str()
        .or_else(|| v["peer"]["peer_id"].as_str())
        .unwrap_or_default();
    (
        v["type"].as_str().unwrap_or_default().to_string(),
        peer.to_string(),
    )
}

/// Reads `c` until `want` (type, peer) arrives, within `within`, and
/// returns what came before it and how long it took.
async fn until(
    c: &mut Client,
    want: (&str, &str),
    within: Duration,
) -> (Vec<(String, String)>, Duration, Value) {
    let start = Instant::now();
    let mut before = Vec::new();
    loop {
        let left = within
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("{}: no {want:?} within {within:?}: {before:?}", c.label));
        let Some(v) = c.next(left).await else {
            panic!("{}: no {want:?} within {within:?}: {before:?}", c.label);
        };
        let d = describe(&v);
        if (d.0.as_str(), d.1.as_str()) == want {
            return (before, start.elapsed(), v);
        }
        before.push(d);
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `clients` join `r` in order, each through its node, and everyone has
/// seen everyone (the `peer-joined`s are read).
async fn gather(r: &str, clients: &mut [Client], nodes: &[&ServerProcess]) {
    for i in 0..clients.len() {
        let j = clients[i].join(r).await;
        assert_eq!(peer_ids(&j["peers"]).len(), i, "{j}");
        let id = clients[i].peer_id.clone();
        for n in nodes {
            wait_listed(n.addr, r, &id).await;
        }
        for c in clients[..i].iter_mut() {
            let e = c.expect("peer-joined").await;
            assert_eq!(e["peer"]["peer_id"], id.as_str());
        }
    }
}

/// `m` hears exactly `want` (type, peer) within `within`, and nothing else
/// before it; returns how long it took.
async fn only(m: &mut Client, want: (&str, &str), within: Duration) -> Duration {
    let (before, took, _) = until(m, want, within).await;
    assert!(
        before.is_empty(),
        "{}: heard {before:?} before {want:?}",
        m.label
    );
    took
}

/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_while_redis_is_down_is_lost_once_redis_is_back_empty() {
    let mut redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut c = node(&redis, "c").await;
    let r = room("died-in-outage");
    let mut members = vec![
        Client::connect(&a.ws(), "x").await,
        Client::connect(&b.ws(), "y").await,
        Client::connect(&c.ws(), "z").await,
    ];
    gather(&r, &mut members, &[&a, &b, &c]).await;
    let z = members.pop().expect("z");
    let mut y = members.pop().expect("y");
    let mut x = members.pop().expect("x");
    let z_id = z.peer_id.clone();
    redis.kill();
    c.kill9();
    drop(z);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Back without any of its data: nothing records c's peers or heartbeat.
    redis.restart();
    let back = Instant::now();
    all_ready(&[&a, &b]).await;
    let within = NODE_TIMEOUT + RECONNECT + Duration::from_secs(2);
    tokio::join!(
        only(&mut x, ("peer-left", &z_id), within),
        only(&mut y, ("peer-left", &z_id), within)
    );
    let healed = back.elapsed();
    println!(
        "c's peer announced node-lost {} ms after Redis came back empty",
        healed.as_millis()
    );
    // Nobody hears anything more (no second announcement, nothing about
    // each other), and a newcomer through either node sees the two.
    let both = sorted(vec![x.peer_id.clone(), y.peer_id.clone()]);
    for p in [&a, &b] {
        let mut n = Client::connect(&p.ws(), "newcomer").await;
        let j = n.join(&r).await;
        assert_eq!(sorted(peer_ids(&j["peers"])), both, "{j}");
        assert_eq!(describe(&x.expect("peer-joined").await).1, n.peer_id);
        assert_eq!(describe(&y.expect("peer-joined").await).1, n.peer_id);
        let n_id = n.peer_id.clone();
        n.close().await;
        for m in [&mut x, &mut y] {
            let l = m.expect("peer-left").await;
            assert_eq!(describe(&l).1, n_id);
        }
    }
    assert_eq!(sorted(api_room(a.addr, &r).await), both);
    x.expect_silence(Duration::from_secs(1)).await;
    y.expect_silence(Duration::from_secs(1)).await;
}

/// Asserts docs/protocol.md §10, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_followed_goaway_during_an_outage_is_not_listed_twice() {
    let mut redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let c = ServerProcess::node(&redis.url(), "c", &["--drain-timeout", "2s"]).await;
    let r = room("drained-in-outage");
    let mut members = vec![
        Client::connect(&b.ws(), "y").await,
        Client::connect(&c.ws(), "z").await,
    ];
    gather(&r, &mut members, &[&a, &b, &c]).await;
    let mut z = members.pop().expect("z");
    let mut y = members.pop().expect("y");
    let old_z = z.peer_id.clone();
    redis.kill();
    // c drains while nobody can be told: z follows goaway to a, where a
    // resume cannot reach c, so z joins afresh.
    c.terminate();
    z.expect_within("goaway", Duration::from_secs(5)).await;
    let mut z2 = Client::connect(&a.ws(), "z2").await;
    z2.send(json!({"type":"join","room":r,"resume":z.resume}))
        .await;
    let refused = z2.next(Duration::from_secs(10)).await.expect("an answer");
    assert_eq!(refused["type"], "error", "{refused}");
    z2.join(&r).await;
    drop(z);
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let back = Instant::now();
    all_ready(&[&a, &b]).await;
    // y learns of z's new self, and its old self goes: once each.
    let within = NODE_TIMEOUT + RECONNECT + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < 2 {
        let Some(left) = within.checked_sub(back.elapsed()) else {
            break;
        };
        match y.next(left).await {
            Some(v) => got.push(describe(&v)),
            None => break,
        }
    }
    println!(
        "y's view whole again {} ms after Redis came back: {got:?}",
        back.elapsed().as_millis()
    );
    got.sort();
    let mut want = vec![
        ("peer-joined".to_string(), z2.peer_id.clone()),
        ("peer-left".to_string(), old_z.clone()),
    ];
    want.sort();
    assert_eq!(got, want);
    y.expect_silence(Duration::from_secs(2)).await;
    let mut n = Client::connect(&b.ws(), "newcomer").await;
    let j = n.join(&r).await;
    assert_eq!(
        sorted(peer_ids(&j["peers"])),
        sorted(vec![y.peer_id.clone(), z2.peer_id.clone()]),
        "{j}"
    );
}

/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_lost_with_every_connection_up_is_written_back() {
    let redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let c = node(&redis, "c").await;
    let r = room("flushall");
    let mut x = Client::connect(&a.ws(), "x").await;
    x.join(&r).await;
    wait_listed(b.addr, &r, &x.peer_id).await;
    // An operator's FLUSHALL: no connection drops, nothing reconnects.
    assert_eq!(redis.cmd(&["FLUSHALL"]).as_deref(), Some("+OK"));
    let flushed = Instant::now();
    // A newcomer through b, which holds no member of the room, is told of x.
    let mut y = Client::connect(&b.ws(), "y").await;
    let j = y.join(&r).await;
    if !peer_ids(&j["peers"]).contains(&x.peer_id) {
        only(&mut y, ("peer-joined", &x.peer_id), NODE_TIMEOUT).await;
    }
    println!(
        "x known to a newcomer {} ms after FLUSHALL",
        flushed.elapsed().as_millis()
    );
    assert_eq!(describe(&x.expect("peer-joined").await).1, y.peer_id);
    // Eviction of the room's hash alone (maxmemory): both are written back.
    let key = format!("sig:room:{r}");
    assert_eq!(redis.cmd(&["DEL", &key]).as_deref(), Some(":1"));
    let evicted = Instant::now();
    let both = sorted(vec![x.peer_id.clone(), y.peer_id.clone()]);
    let mut n = Client::connect(&c.ws(), "n").await;
    let j = n.join(&r).await;
    let mut known = peer_ids(&j["peers"]);
    while known.len() < 2 {
        let left = NODE_TIMEOUT
            .checked_sub(evicted.elapsed())
            .expect("both written back within the node timeout");
        let e = n.expect_within("peer-joined", left).await;
        known.push(describe(&e).1);
    }
    println!(
        "both known to a newcomer {} ms after the eviction",
        evicted.elapsed().as_millis()
    );
    assert_eq!(sorted(known), both);
    assert_eq!(
        sorted(redis.list(&["HKEYS", &key]).expect("HKEYS")),
        sorted(vec![
            x.peer_id.clone(),
            y.peer_id.clone(),
            n.peer_id.clone()
        ])
    );
    // The members heard of the newcomer once, and of nothing else.
    for m in [&mut x, &mut y] {
        assert_eq!(describe(&m.expect("peer-joined").await).1, n.peer_id);
        m.expect_silence(Duration::from_secs(1)).await;
    }
}

/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_older_data_brings_no_one_back() {
    let mut redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let c = node(&redis, "c").await;
    let r = room("older-data");
    let mut members = vec![
        Client::connect(&a.ws(), "x1").await,
        Client::connect(&a.ws(), "x2").await,
        Client::connect(&b.ws(), "y").await,
    ];
    gather(&r, &mut members, &[&a, &b]).await;
    let mut y = members.pop().expect("y");
    let x2 = members.pop().expect("x2");
    let mut x1 = members.pop().expect("x1");
    println!("x1 {} x2 {} y {}", x1.peer_id, x2.peer_id, y.peer_id);
    redis.snapshot();
    // After the snapshot: x2 leaves, x1 changes its meta.
    let x2_id = x2.peer_id.clone();
    x2.close().await;
    assert_eq!(describe(&x1.expect("peer-left").await).1, x2_id);
    assert_eq!(describe(&y.expect("peer-left").await).1, x2_id);
    x1.send(json!({"type":"update","meta":{"v":2}})).await;
    let u = y.expect("peer-updated").await;
    assert_eq!(u["peer"]["meta"], json!({"v":2}));
    // Redis restarts from the snapshot: x2 there, x1 with its old meta.
    redis.kill();
    redis.restart();
    assert!(
        redis
            .list(&["HKEYS", &format!("sig:room:{r}")])
            .is_some_and(|k| k.contains(&x2_id)),
        "the snapshot has x2"
    );
    let back = Instant::now();
    all_ready(&[&a, &b, &c]).await;
    // Nobody hears of x2 again, nor anything else, past the node timeout
    // (both read at once: a client not read answers no ping).
    let quiet = (NODE_TIMEOUT + RECONNECT).saturating_sub(back.elapsed());
    let (got_x1, got_y) = tokio::join!(heard(&mut x1, quiet), heard(&mut y, quiet));
    assert!(got_x1.is_empty(), "x1 heard {got_x1:?}");
    assert!(got_y.is_empty(), "y heard {got_y:?}");
    // A newcomer through c (no member there) sees x1 as it is now, and y.
    let mut n = Client::connect(&c.ws(), "n").await;
    let j = n.join(&r).await;
    assert_eq!(
        sorted(peer_ids(&j["peers"])),
        sorted(vec![x1.peer_id.clone(), y.peer_id.clone()]),
        "{j}"
    );
    let x1_now = j["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["peer_id"] == x1.peer_id.as_str()))
        .expect("x1 listed");
    assert_eq!(x1_now["meta"], json!({"v":2}), "{j}");
    assert!(
        !redis
            .list(&["HKEYS", &format!("sig:room:{r}")])
            .expect("HKEYS")
            .contains(&x2_id)
    );
}

/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_evicted_soon_after_the_nodes_connect_loses_no_one() {
    // The nodes' first seconds: each resyncs the rooms it watches 1 s, 3 s
    // and a node timeout after its connect. A room hash evicted then, before
    // the owner's verification writes its peer back (every 5 s), must not
    // make a member hear that a connected peer left.
    let redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let b_up = Instant::now();
    let r = room("evicted-early");
    let mut x = Client::connect(&a.ws(), "x").await;
    x.join(&r).await;
    wait_listed(b.addr, &r, &x.peer_id).await;
    let mut y = Client::connect(&b.ws(), "y").await;
    let j = y.join(&r).await;
    assert_eq!(peer_ids(&j["peers"]), vec![x.peer_id.clone()], "{j}");
    assert_eq!(describe(&x.expect("peer-joined").await).1, y.peer_id);
    wait_listed(a.addr, &r, &y.peer_id).await;
    let key = format!("sig:room:{r}");
    assert_eq!(redis.cmd(&["DEL", &key]).as_deref(), Some(":1"));
    let evicted = Instant::now();
    // Within 3 s of b's connect: a resync pass of each node (1 s or 3 s)
    // reads the room before a's verification (5 s) writes x back.
    println!("evicted {} ms after b was up", b_up.elapsed().as_millis());
    // Until both are written back (by a's and b's verification), and a
    // second more, neither hears anything.
    let (got_x, got_y) = tokio::join!(
        heard(&mut x, NODE_TIMEOUT / 2 + Duration::from_secs(3)),
        heard(&mut y, NODE_TIMEOUT / 2 + Duration::from_secs(3))
    );
    println!(
        "listened {} ms after the eviction",
        evicted.elapsed().as_millis()
    );
    assert!(got_x.is_empty(), "x heard {got_x:?}");
    assert!(got_y.is_empty(), "y heard {got_y:?}");
    assert_eq!(
        sorted(redis.list(&["HKEYS", &key]).expect("HKEYS")),
        sorted(vec![x.peer_id.clone(), y.peer_id.clone()])
    );
}

/// A reconnect, then the room's hash evicted while the reconnected node
/// resyncs (1 s, 3 s and a node timeout after its connect): the resync
/// finds a connected peer of a settled node missing from the room's
/// record, but its node's own index still lists it, so it is kept (and
/// written back by its node) instead of announced gone.
/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_evicted_while_a_node_resyncs_after_a_reconnect_loses_no_one() {
    let redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let r = room("evicted-resync");
    let mut x = Client::connect(&a.ws(), "x").await;
    x.join(&r).await;
    wait_listed(b.addr, &r, &x.peer_id).await;
    let mut y = Client::connect(&b.ws(), "y").await;
    y.join(&r).await;
    assert_eq!(describe(&x.expect("peer-joined").await).1, y.peer_id);
    wait_listed(a.addr, &r, &y.peer_id).await;
    // b's subscription drops (a network blip): b reconnects and resyncs.
    let name = "sig:b:subscriber";
    let old = redis.client_id(name).expect("b's subscriber");
    assert_eq!(
        redis.cmd(&["CLIENT", "KILL", "ID", &old]).as_deref(),
        Some(":1")
    );
    let deadline = Instant::now() + RECONNECT;
    while redis.client_id(name).is_none_or(|id| id == old) {
        assert!(Instant::now() < deadline, "b never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = format!("sig:room:{r}");
    assert_eq!(redis.cmd(&["DEL", &key]).as_deref(), Some(":1"));
    // Past b's last resync pass and both nodes' verifications.
    let (got_x, got_y) = tokio::join!(
        heard(&mut x, NODE_TIMEOUT + Duration::from_secs(2)),
        heard(&mut y, NODE_TIMEOUT + Duration::from_secs(2))
    );
    assert!(got_x.is_empty(), "x heard {got_x:?}");
    assert!(got_y.is_empty(), "y heard {got_y:?}");
    assert_eq!(
        sorted(redis.list(&["HKEYS", &key]).expect("HKEYS")),
        sorted(vec![x.peer_id.clone(), y.peer_id.clone()])
    );
}
