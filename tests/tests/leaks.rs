//! What failed joins and a stalled Redis leave behind (issue 11, items 2
//! and 3): rooms, Redis subscriptions and keys that nobody uses, a write
//! queue that grows without bound, presence changes that get lost.
//!
//! Every server here is the real one (in-process `TestServer`s, or the
//! `signaling` binary as a child where its own memory is measured), every
//! Redis a real redis-server of the test's own.

use serde_json::{Value, json};
use signaling_e2e::client::{Client, http_get, peer_ids};
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{ServerProcess, TestServer, api_room};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Fake resumes each test sends, one per made-up room.
const FAKE_RESUMES: usize = 200;
/// The reconnect grace in these tests: short, so honest resumes come late.
const GRACE: Duration = Duration::from_millis(300);

/// Limits that let one connection send its requests as fast as the test
/// can: the leak is per request, whatever the rate.
fn fast(c: &mut signaling::Config) {
    c.limits.rate = 10_000.0;
    c.limits.rate_burst = 10_000.0;
    c.grace = GRACE;
}

/// `join` with `resume`, which must be refused with `resume_failed`.
async fn resume_refused(c: &mut Client, room: &str, token: &str) {
    c.send(json!({"type":"join","room":room,"resume":token}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "resume_failed", "{}: {e}", c.label);
}

/// The attack of issue 11: join and leave once, then `n` joins with made-up
/// resume tokens, each into a new room. Returns the rooms it named.
async fn made_up_resumes(c: &mut Client, tag: &str, n: usize) -> Vec<String> {
    c.join(&room(&format!("{tag}-once"))).await;
    c.send(json!({"type":"leave"})).await;
    c.expect("left").await;
    let mut rooms = Vec::with_capacity(n);
    for _ in 0..n {
        let r = room(tag);
        let token = format!(
            "{}.{}",
            signaling::ids::random_hex(8),
            signaling::ids::random_hex(16)
        );
        resume_refused(c, &r, &token).await;
        rooms.push(r);
    }
    rooms
}

/// An honest client: joins `r` on `at`, drops its connection, and is back
/// only after the grace, once its room has emptied (`/api/rooms/{r}` says
/// 404, from Redis when clustered). Returns its token.
async fn dropped_past_the_grace(at: &TestServer, r: &str) -> String {
    let mut c = at.client("honest").await;
    c.join(r).await;
    let token = c.resume.clone();
    c.drop_tcp();
    tokio::time::sleep(GRACE).await;
    let path = format!("/api/rooms/{r}");
    eventually(
        "the room emptied",
        Duration::from_secs(10),
        404,
        async || http_get(at.addr, &path).await.0,
    )
    .await;
    token
}

/// `/api/rooms` answers 200 and names no room.
async fn assert_no_rooms_listed(addr: SocketAddr) {
    let (status, body) = http_get(addr, "/api/rooms").await;
    assert_eq!(status, 200, "/api/rooms on {addr}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["rooms"], json!([]), "/api/rooms on {addr}");
}

/// Polls `probe` until it returns `want`, for up to `within`.
async fn eventually<T: PartialEq + std::fmt::Debug>(
    what: &str,
    within: Duration,
    want: T,
    mut probe: impl AsyncFnMut() -> T,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?} after {within:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts docs/protocol.md §9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_resumes_leave_no_room_behind() {
    let s = TestServer::start(fast).await;
    assert_eq!(s.metric("signaling_rooms ").await, 0, "baseline");

    let mut x = s.client("attacker").await;
    made_up_resumes(&mut x, "fake", FAKE_RESUMES).await;

    // A guessed token for a member that is there: refused, and the room
    // (still in use) stays.
    let busy = room("busy");
    let mut m = s.client("member").await;
    m.join(&busy).await;
    let guess = format!("{}.{}", m.peer_id, signaling::ids::random_hex(16));
    resume_refused(&mut x, &busy, &guess).await;
    assert_eq!(s.metric("signaling_rooms ").await, 1, "the busy room only");
    m.send(json!({"type":"leave"})).await;
    m.expect("left").await;

    let late = room("late");
    let token = dropped_past_the_grace(&s, &late).await;
    let mut back = s.client("honest again").await;
    resume_refused(&mut back, &late, &token).await;

    assert_eq!(
        s.metric("signaling_rooms ").await,
        0,
        "{FAKE_RESUMES} refused resumes and a late one leave no room"
    );
    assert_no_rooms_listed(s.addr).await;
    x.close().await;
    back.close().await;
    s.stop().await;
}

/// How many room channels anyone is subscribed to, room hashes, and rooms
/// in the room set, in Redis.
fn redis_rooms(redis: &Redis) -> (usize, usize, usize) {
    let count = |args: &[&str]| redis.list(args).map(|l| l.len()).expect("a list");
    (
        count(&["PUBSUB", "CHANNELS", "sig:ch:room:*"]),
        count(&["KEYS", "sig:room:*"]),
        count(&["SMEMBERS", "sig:rooms"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_resumes_leave_no_room_nor_subscription_in_a_cluster() {
    let mut redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "lk1", fast).await;
    let n2 = TestServer::node(&redis.url(), "lk2", fast).await;

    let mut x = n1.client("attacker@1").await;
    let fakes = made_up_resumes(&mut x, "fake", FAKE_RESUMES).await;

    // A guessed token for a member on the other instance: n2 asks n1 to
    // hand it over, n1 refuses, and n2 keeps neither the room nor its
    // subscription.
    let busy = room("busy");
    let mut m = n1.client("member@1").await;
    m.join(&busy).await;
    signaling_e2e::server::wait_listed(n2.addr, &busy, &m.peer_id).await;
    let mut y = n2.client("attacker@2").await;
    let guess = format!("{}.{}", m.peer_id, signaling::ids::random_hex(16));
    resume_refused(&mut y, &busy, &guess).await;
    m.send(json!({"type":"leave"})).await;
    m.expect("left").await;

    // Honest clients back after their room emptied, on the instance they
    // left and on the other one.
    for (left_on, back_on) in [(&n1, &n1), (&n1, &n2)] {
        let late = room("late");
        let token = dropped_past_the_grace(left_on, &late).await;
        let mut back = back_on.client("honest again").await;
        resume_refused(&mut back, &late, &token).await;
        back.close().await;
    }

    // Unsubscribing goes out after the refusal: give it a moment.
    let none = (0, 0, 0);
    eventually(
        "room channels subscribed, room keys, the room set",
        Duration::from_secs(5),
        none,
        async || redis_rooms(&redis),
    )
    .await;
    for n in [&n1, &n2] {
        assert_eq!(n.metric("signaling_rooms ").await, 0, "rooms on {}", n.addr);
        assert_no_rooms_listed(n.addr).await;
    }
    let channels: Vec<String> = fakes
        .iter()
        .take(20)
        .map(|r| format!("sig:ch:room:{r}"))
        .collect();
    let mut numsub = vec!["PUBSUB", "NUMSUB"];
    numsub.extend(channels.iter().map(String::as_str));
    let counts = redis.list(&numsub).expect("PUBSUB NUMSUB");
    assert_eq!(counts.len(), 2 * channels.len(), "{counts:?}");
    assert!(
        counts.iter().skip(1).step_by(2).all(|n| n == "0"),
        "subscribers of made-up rooms: {counts:?}"
    );

    // A reconnect re-subscribes from the rooms each node keeps: none.
    redis.kill();
    redis.restart();
    for n in [&n1, &n2] {
        n.wait_ready_within(Duration::from_secs(15)).await;
    }
    let node_channels = redis
        .list(&["PUBSUB", "CHANNELS", "sig:ch:node:*"])
        .expect("PUBSUB CHANNELS");
    assert_eq!(node_channels.len(), 2, "both nodes resubscribed");
    assert_eq!(redis_rooms(&redis), (0, 0, 0), "rooms after the reconnect");
    x.close().await;
    y.close().await;
    n1.stop().await;
    n2.stop().await;
}

/// A clustered node with no room anywhere lists none (it answered 503
/// "presence store unavailable: empty command": an empty Redis pipeline).
/// Asserts docs/protocol.md §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_cluster_lists_no_rooms() {
    let redis = Redis::start();
    let n = TestServer::node(&redis.url(), "empty1", |_| {}).await;
    assert_no_rooms_listed(n.addr).await;
    // And again once a room has come and gone.
    let r = room("gone");
    let mut c = n.client("c").await;
    c.join(&r).await;
    signaling_e2e::server::wait_listed(n.addr, &r, &c.peer_id).await;
    c.send(json!({"type":"leave"})).await;
    c.expect("left").await;
    eventually(
        "the room set",
        Duration::from_secs(5),
        Vec::<String>::new(),
        async || redis.list(&["SMEMBERS", "sig:rooms"]).unwrap_or_default(),
    )
    .await;
    assert_no_rooms_listed(n.addr).await;
    c.close().await;
    n.stop().await;
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Reads what `c` has been sent until it has been quiet for `quiet`.
async fn drain(c: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(v) = c.next(quiet).await {
        seen.push(v);
    }
    seen
}

/// Size of each relayed `offer` while Redis is stalled.
const BIG: usize = 60 * 1024;
/// The sending node's write-queue cap in this test.
const QUEUE_CAP: usize = 1024 * 1024;
/// Offers sent during the stall: 48 MB of them, 47 times the cap.
const OFFERS: usize = 800;

/// Two nodes on `redis` for a stall: `a` (node `{tag}-a`) the real binary
/// as a child, so that its memory can be read, with the write-queue cap
/// [`QUEUE_CAP`] and a message rate of `rate`; `b` in-process. Both wait 60 s
/// before finding each other lost, so a slow run cannot turn the stall into
/// a node-lost.
async fn stall_pair(redis: &Redis, tag: &str, rate: u32) -> (ServerProcess, TestServer) {
    let (cap, rate) = (QUEUE_CAP.to_string(), rate.to_string());
    let a = ServerProcess::node(
        &redis.url(),
        &format!("{tag}-a"),
        &[
            "--redis-queue-bytes",
            &cap,
            "--rate",
            &rate,
            "--rate-burst",
            &rate,
            "--node-timeout",
            "60s",
        ],
    )
    .await;
    let b = TestServer::node(&redis.url(), &format!("{tag}-b"), |c| {
        c.node_timeout = Duration::from_secs(60)
    })
    .await;
    (a, b)
}

/// Asserts docs/protocol.md §6, §8, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_bounds_the_queue_refuses_relays_and_loses_no_presence() {
    let redis = Redis::start();
    let (a, b) = stall_pair(&redis, "stall", 10_000).await;
    let r = room("stall");
    let mut s = Client::connect(&a.ws(), "sender@a").await;
    s.join(&r).await;
    let mut p = b.client("peer@b").await;
    p.join(&r).await;
    let mut l = Client::connect(&a.ws(), "leaver@a").await;
    l.join(&r).await;
    for id in [&s.peer_id, &l.peer_id] {
        signaling_e2e::server::wait_listed(b.addr, &r, id).await;
    }
    let room_key = format!("sig:room:{r}");
    let before = sorted(vec![
        s.peer_id.clone(),
        p.peer_id.clone(),
        l.peer_id.clone(),
    ]);
    eventually("Redis's room", Duration::from_secs(5), before, async || {
        sorted(redis.list(&["HKEYS", &room_key]).unwrap_or_default())
    })
    .await;
    drain(&mut s, Duration::from_millis(200)).await;
    drain(&mut p, Duration::from_millis(200)).await;
    drain(&mut l, Duration::from_millis(200)).await;
    let rss_before = a.rss_kib();

    redis.stop();
    let stalled_at = Instant::now();
    let sdp = "a".repeat(BIG);
    let (mut refused, mut first_refused) = (0, None);
    for i in 0..OFFERS {
        s.send(json!({"type":"offer","to":p.peer_id,"sdp":sdp}))
            .await;
        // Reads the replies as they come, so the sender's own queue never
        // makes it a slow reader.
        if i % 20 == 19 {
            for v in drain(&mut s, Duration::from_millis(30)).await {
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["code"], "unavailable", "{v}");
                refused += 1;
                first_refused.get_or_insert(i);
            }
        }
    }
    for v in drain(&mut s, Duration::from_millis(300)).await {
        assert_eq!(v["code"], "unavailable", "{v}");
        refused += 1;
    }
    let rss_after = a.rss_kib();
    let grown_kib = rss_after.saturating_sub(rss_before);
    println!(
        "{OFFERS} offers of {BIG} B with Redis stalled: {refused} refused (first after {first_refused:?} sent); \
         RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        refused > 0,
        "no relay was refused: the queue took all {OFFERS} offers ({} MB)",
        OFFERS * BIG / 1_000_000
    );
    // The cap admits about 17 of these; allow a few caps' worth of slack
    // for what the allocator keeps.
    assert!(
        refused >= OFFERS - 4 * QUEUE_CAP / BIG,
        "{refused} of {OFFERS} refused"
    );
    assert!(
        grown_kib < 16 * 1024,
        "the node grew by {grown_kib} KiB while {} MB were offered",
        OFFERS * BIG / 1_000_000
    );

    // A broadcast past the cap reaches this node's members, and its sender
    // hears that it went no further.
    // (What is left under the cap may still take a smaller message or two.)
    let mut refused_broadcast = None;
    for i in 0..8 {
        let data = format!("{i} {}", "b".repeat(15_000));
        s.send(json!({"type":"message","data":data})).await;
        if let Some(e) = drain(&mut s, Duration::from_millis(100)).await.pop() {
            assert_eq!(e["code"], "unavailable", "{e}");
            refused_broadcast = Some(data);
            break;
        }
    }
    let refused_broadcast = refused_broadcast.expect("a broadcast refused past the cap");
    let got = drain(&mut l, Duration::from_millis(300)).await;
    assert!(
        got.iter().any(|v| v["data"] == refused_broadcast.as_str()),
        "leaver@a (same node) missed the refused broadcast"
    );

    // Presence changes past the cap: a leave and a join.
    let l_id = l.peer_id.clone();
    l.send(json!({"type":"leave"})).await;
    let left = drain(&mut l, Duration::from_millis(300)).await;
    assert!(left.iter().any(|v| v["type"] == "left"), "{left:?}");
    let mut j = Client::connect(&a.ws(), "joiner@a").await;
    let joined = j.join(&r).await;
    assert!(peer_ids(&joined["peers"]).contains(&p.peer_id), "{joined}");
    // A stall longer than the queue's write timeout (2 s), far short of the
    // node timeout (60 s here), so that nobody is declared dead.
    let held = Duration::from_secs(4).saturating_sub(stalled_at.elapsed());
    tokio::time::sleep(held).await;
    redis.cont();

    let after = sorted(vec![
        s.peer_id.clone(),
        p.peer_id.clone(),
        j.peer_id.clone(),
    ]);
    let within = Duration::from_secs(20);
    for addr in [a.addr, b.addr] {
        eventually(
            &format!("room on {addr}"),
            within,
            after.clone(),
            async || api_room(addr, &r).await,
        )
        .await;
    }
    eventually("Redis's room", within, after.clone(), async || {
        sorted(redis.list(&["HKEYS", &room_key]).unwrap_or_default())
    })
    .await;
    let a_peers = redis
        .list(&["HKEYS", "sig:node:stall-a:peers"])
        .expect("HKEYS");
    assert!(!a_peers.contains(&l_id), "{a_peers:?}");
    assert_eq!(
        sorted(a_peers),
        sorted(vec![s.peer_id.clone(), j.peer_id.clone()])
    );
    // The other node's member heard both, and relays flow again.
    let seen = drain(&mut p, Duration::from_secs(1)).await;
    let big = |v: &&Value| v["type"] == "offer" && v["sdp"].as_str().map(str::len) == Some(BIG);
    let delivered = seen.iter().filter(big).count();
    println!(
        "peer@b got {delivered} of the {} accepted offers after the stall",
        OFFERS - refused
    );
    assert!(delivered >= OFFERS - refused, "accepted offers were lost");
    let heard = |ty: &str, id: &str| {
        seen.iter()
            .any(|v| v["type"] == ty && (v["peer_id"] == id || v["peer"]["peer_id"] == id))
    };
    assert!(
        heard("peer-left", &l_id),
        "peer@b: no peer-left of the leaver"
    );
    assert!(heard("peer-joined", &j.peer_id), "peer@b: no peer-joined");
    s.send(json!({"type":"offer","to":p.peer_id,"sdp":"v=0 after"}))
        .await;
    let o = loop {
        match p.next(signaling_e2e::client::WAIT).await {
            Some(v) if v["sdp"] == "v=0 after" => break v,
            Some(_) => continue,
            None => panic!("peer@b: no offer after the stall"),
        }
    };
    assert_eq!(o["from"], s.peer_id.as_str());
    let to_sender = drain(&mut s, Duration::from_millis(300)).await;
    assert!(
        to_sender.iter().all(|v| v["type"] != "error"),
        "the offer after the stall was refused: {to_sender:?}"
    );
    b.stop().await;
}

/// `update`s sent while Redis is stalled.
const UPDATES: usize = 30_000;

/// Presence changes are never refused, so they must not grow the queue
/// without bound either: a member that keeps changing its `meta` while
/// Redis is stalled needs only its latest state written when Redis is back.
/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_during_a_stall_are_bounded_and_the_last_one_wins() {
    let redis = Redis::start();
    let (a, b) = stall_pair(&redis, "upd", 100_000).await;
    let r = room("upd");
    let mut u = Client::connect(&a.ws(), "updater@a").await;
    u.join(&r).await;
    let mut p = b.client("peer@b").await;
    p.join(&r).await;
    signaling_e2e::server::wait_listed(a.addr, &r, &p.peer_id).await;
    signaling_e2e::server::wait_listed(b.addr, &r, &u.peer_id).await;
    drain(&mut u, Duration::from_millis(200)).await;
    drain(&mut p, Duration::from_millis(200)).await;
    let rss_before = a.rss_kib();

    redis.stop();
    let pad = "x".repeat(900);
    for n in 0..UPDATES {
        u.send(json!({"type":"update","meta":{"n":n,"pad":pad}}))
            .await;
    }
    // A ping's pong says every update before it has been handled.
    u.send(json!({"type":"ping"})).await;
    let pong = drain(&mut u, Duration::from_millis(500)).await;
    assert!(pong.iter().any(|v| v["type"] == "pong"), "{pong:?}");
    let rss_after = a.rss_kib();
    let grown_kib = rss_after.saturating_sub(rss_before);
    println!(
        "{UPDATES} updates of ~1 KB with Redis stalled: RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        grown_kib < 16 * 1024,
        "the node grew by {grown_kib} KiB while {UPDATES} updates ({} MB) waited",
        UPDATES * 1000 / 1_000_000
    );
    redis.cont();

    // The last state reaches Redis, the other node and its member.
    let last = json!(UPDATES - 1);
    eventually(
        "the meta on b",
        Duration::from_secs(20),
        last.clone(),
        async || {
            let (_, body) = http_get(b.addr, &format!("/api/rooms/{r}")).await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            v["peers"]
                .as_array()
                .and_then(|ps| ps.iter().find(|x| x["peer_id"] == u.peer_id.as_str()))
                .map(|x| x["meta"]["n"].clone())
                .unwrap_or(Value::Null)
        },
    )
    .await;
    // It reaches peer@b as the last of its peer-updated: through pub/sub,
    // or, if b's subscription was reset during the stall, through b's
    // resync (its passes run 1 s and 3 s after b reconnects).
    let mut seen = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let Some(v) = p.next(left).await else { break };
        let done = v["type"] == "peer-updated" && v["peer"]["meta"]["n"] == last;
        seen.push(v);
        if done {
            break;
        }
    }
    // Nothing older may follow it.
    seen.extend(drain(&mut p, Duration::from_millis(500)).await);
    let updates: Vec<&Value> = seen
        .iter()
        .filter(|v| v["type"] == "peer-updated")
        .collect();
    println!("peer@b got {} peer-updated after the stall", updates.len());
    assert_eq!(
        updates.last().map(|v| v["peer"]["meta"]["n"].clone()),
        Some(last),
        "peer@b's last peer-updated"
    );
    b.stop().await;
}
