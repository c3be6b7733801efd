//! The cluster: several instances on one real Redis behave as one server.
//! Each test starts its own redis-server on a free loopback port.

use serde_json::json;
use signaling_e2e::client::{Client, http_get, peer_ids};
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{
    ServerProcess, TestServer, api_room, clustered, wait_api_room, wait_readyz,
};
use std::time::{Duration, Instant};

/// `who` joins `r` and learns of every peer in `others`, whether listed in
/// `joined` or announced right after (a join elsewhere may still be on its
/// way through Redis). Returns the ids `joined` listed.
async fn join_seeing(who: &mut Client, r: &str, others: &[&str]) -> Vec<String> {
    let j = who.join(r).await;
    let listed = peer_ids(&j["peers"]);
    for id in others {
        if !listed.iter().any(|l| l == id) {
            let pj = who.expect("peer-joined").await;
            assert_eq!(pj["peer"]["peer_id"], *id, "{}: {pj}", who.label);
        }
    }
    listed
}

/// Asserts docs/protocol.md §4.2, §4.3, §4.4, §4.5, §4.6, §4.7, §5.1, §5.3, §5.4, §5.5, §7.2, §7.3, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_presence_and_relay() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "n1", |_| {}).await;
    let n2 = TestServer::node(&redis.url(), "n2", |_| {}).await;
    let n3 = TestServer::node(&redis.url(), "n3", |_| {}).await;
    let r = room("three");

    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    let mut c = Client::connect(&n3.ws(), "c@3").await;
    a.join_with(&r, json!({"name":"alice"})).await;
    // `joined_at` is in milliseconds: two joins within one are equally old
    // and may be listed either way.
    tokio::time::sleep(Duration::from_millis(3)).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    assert_eq!(
        a.expect("peer-joined").await["peer"]["peer_id"],
        b.peer_id.as_str()
    );
    // Once Redis has both, a newcomer gets the whole room in `joined`, oldest first.
    let mut ab = vec![a.peer_id.clone(), b.peer_id.clone()];
    ab.sort();
    wait_api_room(n3.addr, &r, &ab).await;
    let jc = c.join(&r).await;
    assert_eq!(
        peer_ids(&jc["peers"]),
        [a.peer_id.clone(), b.peer_id.clone()],
        "c lists a and b, oldest first"
    );
    assert_eq!(jc["peers"][0]["name"], "alice");
    for x in [&mut a, &mut b] {
        assert_eq!(
            x.expect("peer-joined").await["peer"]["peer_id"],
            c.peer_id.as_str()
        );
    }

    // Directed relays between every pair of instances, payloads intact.
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=x:\u{e9}\"q\"\r\n";
    a.send(json!({"type":"offer","to":c.peer_id,"sdp":sdp}))
        .await;
    let m = c.expect("offer").await;
    assert_eq!(
        (m["from"].as_str(), m["sdp"].as_str()),
        (Some(a.peer_id.as_str()), Some(sdp))
    );
    c.send(json!({"type":"answer","to":b.peer_id,"sdp":"v=0"}))
        .await;
    assert_eq!(b.expect("answer").await["from"], c.peer_id.as_str());
    b.send(json!({"type":"candidate","to":a.peer_id,"candidate":null}))
        .await;
    let m = a.expect("candidate").await;
    assert!(
        m["candidate"].is_null() && m["from"] == b.peer_id.as_str(),
        "{m}"
    );

    // A broadcast reaches both other instances, not the sender.
    c.send(json!({"type":"message","data":{"hi":[1,2]}})).await;
    for x in [&mut a, &mut b] {
        let m = x.expect("message").await;
        assert_eq!(m["data"], json!({"hi":[1,2]}));
        assert_eq!(m["from"], c.peer_id.as_str());
    }
    c.expect_silence(Duration::from_millis(300)).await;

    // Updates and leaves cross too.
    b.send(json!({"type":"update","meta":{"muted":true}})).await;
    for x in [&mut a, &mut c] {
        let u = x.expect("peer-updated").await;
        assert_eq!(u["peer"]["meta"], json!({"muted":true}), "{}", x.label);
    }
    b.send(json!({"type":"leave"})).await;
    b.expect("left").await;
    for x in [&mut a, &mut c] {
        let l = x.expect("peer-left").await;
        assert_eq!(
            (l["peer_id"].as_str(), l["reason"].as_str()),
            (Some(b.peer_id.as_str()), Some("left"))
        );
    }
    let mut want = vec![a.peer_id.clone(), c.peer_id.clone()];
    want.sort();
    for n in [&n1, &n2, &n3] {
        assert_eq!(
            api_room(n.addr, &r).await,
            want,
            "/api/rooms/{{room}} on every instance"
        );
    }
    let c_id = c.peer_id.clone();
    c.close().await;
    let l = a.expect("peer-left").await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(c_id.as_str()), Some("disconnected"))
    );

    // A peer of another room is unreachable from any instance.
    let mut d = Client::connect(&n2.ws(), "d@2").await;
    d.join(&room("other")).await;
    a.send(json!({"type":"message","to":d.peer_id,"data":1}))
        .await;
    assert_eq!(a.expect("error").await["code"], "unknown_peer");
    d.expect_silence(Duration::from_millis(300)).await;

    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

/// Asserts docs/protocol.md §5.4, §7.2, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_announced_node_lost_and_a_restart_resurrects_nobody() {
    let redis = Redis::start();
    let p1 = ServerProcess::node(&redis.url(), "k1", &[]).await;
    let mut p2 = ServerProcess::node(&redis.url(), "k2", &[]).await;
    let r = room("kill");
    let mut a = Client::connect(&p1.ws(), "a@1").await;
    let mut b = Client::connect(&p2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;

    let killed = Instant::now();
    p2.kill9();
    let l = a.expect_within("peer-left", Duration::from_secs(20)).await;
    let took = killed.elapsed();
    println!(
        "node-lost announced {} ms after SIGKILL (node timeout 10 s)",
        took.as_millis()
    );
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(b.peer_id.as_str()), Some("node-lost"))
    );
    assert!(took <= Duration::from_secs(15), "node-lost took {took:?}");

    // The same node id comes back: nobody reappears, nobody is announced twice.
    let _p2b = ServerProcess::node(&redis.url(), "k2", &[]).await;
    a.expect_silence(Duration::from_secs(2)).await;
    assert_eq!(api_room(p1.addr, &r).await, [a.peer_id.clone()]);
}

/// Asserts docs/protocol.md §7.2, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_before_it_was_found_dead_clears_its_old_peers() {
    let redis = Redis::start();
    let p1 = ServerProcess::node(&redis.url(), "q1", &[]).await;
    let mut p2 = ServerProcess::node(&redis.url(), "q2", &[]).await;
    let r = room("restart");
    let mut a = Client::connect(&p1.ws(), "a@1").await;
    let mut b = Client::connect(&p2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;
    p2.kill9();
    let p2b = ServerProcess::node(&redis.url(), "q2", &[]).await;
    // The new run announces what the old one left behind, once.
    let l = a.expect_within("peer-left", Duration::from_secs(5)).await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(b.peer_id.as_str()), Some("node-lost"))
    );
    a.expect_silence(Duration::from_secs(2)).await;
    let mut c = Client::connect(&p2b.ws(), "c@2").await;
    let j = c.join(&r).await;
    assert_eq!(peer_ids(&j["peers"]), [a.peer_id.clone()], "no ghost of b");
}

/// Collects messages until `done` holds for what has been seen, or `within` passes.
async fn collect_until(
    c: &mut Client,
    within: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match c.next(left).await {
            Some(v) => seen.push(v),
            None => break,
        }
    }
    seen
}

fn has(seen: &[serde_json::Value], ty: &str, peer: &str) -> bool {
    seen.iter()
        .any(|v| v["type"] == ty && (v["peer_id"] == peer || v["peer"]["peer_id"] == peer))
}

/// Asserts docs/protocol.md §14, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_rooms_working_and_views_converge_after() {
    let mut redis = Redis::start();
    let fast = |c: &mut signaling::Config| c.node_timeout = Duration::from_secs(3);
    let n1 = TestServer::node(&redis.url(), "o1", fast).await;
    let n2 = TestServer::node(&redis.url(), "o2", fast).await;
    let r = room("outage");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;

    redis.kill();
    // /readyz reports the outage.
    wait_readyz(n1.addr, 503, Duration::from_secs(10)).await;
    assert_eq!(
        http_get(n1.addr, "/healthz").await.0,
        200,
        "liveness ignores Redis"
    );

    // Local rooms keep working during the outage.
    let mut c = Client::connect(&n1.ws(), "c@1").await;
    let jc = c.join(&r).await;
    assert!(peer_ids(&jc["peers"]).contains(&a.peer_id));
    assert!(has(
        &[a.expect("peer-joined").await],
        "peer-joined",
        &c.peer_id
    ));
    a.send(json!({"type":"message","to":c.peer_id,"data":"local"}))
        .await;
    assert_eq!(c.expect("message").await["data"], "local");
    let mut d = Client::connect(&n2.ws(), "d@2").await;
    d.join(&r).await;
    assert!(has(
        &[b.expect("peer-joined").await],
        "peer-joined",
        &d.peer_id
    ));
    let b_id = b.peer_id.clone();
    b.send(json!({"type":"leave"})).await;
    b.expect("left").await;
    assert!(has(&[d.expect("peer-left").await], "peer-left", &b_id));

    // Redis comes back empty: every view converges, nobody rejoins.
    redis.restart();
    n1.wait_ready().await;
    n2.wait_ready().await;
    let (d_id, c_id) = (d.peer_id.clone(), c.peer_id.clone());
    let seen_a = collect_until(&mut a, Duration::from_secs(10), |s| {
        has(s, "peer-joined", &d_id) && has(s, "peer-left", &b_id)
    })
    .await;
    assert!(
        has(&seen_a, "peer-joined", &d_id),
        "a learns of d: {seen_a:?}"
    );
    assert!(
        has(&seen_a, "peer-left", &b_id),
        "a learns b left: {seen_a:?}"
    );
    let seen_d = collect_until(&mut d, Duration::from_secs(10), |s| {
        has(s, "peer-joined", &c_id)
    })
    .await;
    assert!(
        has(&seen_d, "peer-joined", &c_id),
        "d learns of c: {seen_d:?}"
    );
    let mut want = vec![a.peer_id.clone(), c.peer_id.clone(), d.peer_id.clone()];
    want.sort();
    for n in [&n1, &n2] {
        assert_eq!(
            api_room(n.addr, &r).await,
            want,
            "Redis holds the true room again"
        );
    }
    // And the cluster relays again.
    d.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0"}))
        .await;
    assert_eq!(a.expect("offer").await["from"], d.peer_id.as_str());
    n1.stop().await;
    n2.stop().await;
}

/// The queue and the subscription speak to Redis on connections of their
/// own (not redis-rs's): they must honour everything the URL says.
/// Asserts docs/protocol.md §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_a_database_and_a_unix_socket_in_the_url_are_honoured() {
    let redis = Redis::start_secured("admin-pw", "sig", "n0de-pw");
    let tcp = format!("redis://sig:n0de-pw@127.0.0.1:{}/3", redis.port);
    let unix = format!(
        "redis+unix://{}?db=3&user=sig&pass=n0de-pw",
        redis.socket().display()
    );
    let n1 = TestServer::node(&tcp, "p1", |_| {}).await;
    let n2 = TestServer::node(&unix, "p2", |_| {}).await;
    let r = room("secured");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    assert_eq!(
        a.expect("peer-joined").await["peer"]["peer_id"],
        b.peer_id.as_str()
    );
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"v=0\r\n"}))
        .await;
    assert_eq!(b.expect("offer").await["sdp"], "v=0\r\n");
    b.send(json!({"type":"message","data":"hi"})).await;
    assert_eq!(a.expect("message").await["from"], b.peer_id.as_str());

    // Presence was written where the URL points (database 3), by the
    // queue's connection, and read back from there by the other node.
    let mut ab = vec![a.peer_id.clone(), b.peer_id.clone()];
    ab.sort();
    wait_api_room(n2.addr, &r, &ab).await;
    assert_eq!(
        redis.cmd(&["DBSIZE"]).as_deref(),
        Some(":0"),
        "nothing in db 0"
    );

    // A wrong password: the node serves locally but never reports ready.
    let wrong = format!("redis://sig:nope@127.0.0.1:{}", redis.port);
    let n3 = TestServer::start(clustered(wrong, "p3")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(http_get(n3.addr, "/readyz").await.0, 503);
    n3.stop().await;
    n1.stop().await;
    n2.stop().await;
}

/// Only the queue's connection dies (`CLIENT KILL`): the instance reconnects
/// as after an outage and nothing it writes is lost for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_recovers_when_its_redis_connection_alone_is_killed() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "k1", |_| {}).await;
    let n2 = TestServer::node(&redis.url(), "k2", |_| {}).await;
    let r = room("killed");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;

    let queue = redis
        .client_id("sig:k1:queue")
        .expect("k1's queue connection is named");
    assert_eq!(
        redis.cmd(&["CLIENT", "KILL", "ID", &queue]).as_deref(),
        Some(":1")
    );
    // What k1 writes from now on still reaches k2: relays and presence.
    let mut c = Client::connect(&n1.ws(), "c@1").await;
    c.join(&r).await;
    let seen = collect_until(&mut b, Duration::from_secs(10), |s| {
        has(s, "peer-joined", &c.peer_id)
    })
    .await;
    assert!(
        has(&seen, "peer-joined", &c.peer_id),
        "b learns of c: {seen:?}"
    );
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"v=0"}))
        .await;
    assert_eq!(b.expect("offer").await["from"], a.peer_id.as_str());
    let mut want = vec![a.peer_id.clone(), b.peer_id.clone(), c.peer_id.clone()];
    want.sort();
    wait_api_room(n2.addr, &r, &want).await;
    assert_ne!(
        redis.client_id("sig:k1:queue"),
        Some(queue),
        "a new queue connection"
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_stream_feeds_a_consumer_group() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "s1", |_| {}).await;
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("sig:presence")
        .arg("presence-consumers")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .expect("group");

    let r = room("stream");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    a.join_with(&r, json!({"name":"ann"})).await;
    a.send(json!({"type":"update","meta":{"cam":false}})).await;
    a.send(json!({"type":"leave"})).await;
    a.expect("left").await;

    let mut events: Vec<(String, std::collections::HashMap<String, String>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.len() < 5 && Instant::now() < deadline {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("presence-consumers")
            .arg("worker-1")
            .arg("COUNT")
            .arg(10)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg("sig:presence")
            .arg(">")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for key in reply.keys {
            for entry in key.ids {
                let fields = entry
                    .map
                    .iter()
                    .filter_map(|(k, v)| {
                        redis::from_redis_value::<String>(v.clone())
                            .ok()
                            .map(|v| (k.clone(), v))
                    })
                    .collect();
                let _: i64 = redis::cmd("XACK")
                    .arg("sig:presence")
                    .arg("presence-consumers")
                    .arg(&entry.id)
                    .query_async(&mut conn)
                    .await
                    .expect("xack");
                events.push((entry.id, fields));
            }
        }
    }
    let kinds: Vec<&str> = events.iter().map(|(_, f)| f["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "room-opened",
            "peer-joined",
            "peer-updated",
            "peer-left",
            "room-closed"
        ]
    );
    for (_, f) in &events {
        assert_eq!(f["room"], r);
        assert_eq!(f.get("v").map(String::as_str), Some("1"), "{f:?}");
    }
    let joined: serde_json::Value = serde_json::from_str(&events[1].1["peer"]).expect("peer json");
    assert_eq!(
        (joined["peer_id"].as_str(), joined["name"].as_str()),
        (Some(a.peer_id.as_str()), Some("ann"))
    );
    assert_eq!(events[1].1["node"], "s1");
    assert_eq!(events[3].1["reason"], "left");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("sig:presence")
        .arg("presence-consumers")
        .query_async(&mut conn)
        .await
        .expect("xpending");
    let redis::Value::Array(p) = pending else {
        panic!("{pending:?}")
    };
    assert_eq!(
        p.first(),
        Some(&redis::Value::Int(0)),
        "everything acknowledged"
    );
    n1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigprobe_passes_across_two_instances() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "p1", |_| {}).await;
    let n2 = TestServer::node(&redis.url(), "p2", |_| {}).await;
    let (u1, u2, h) = (n1.ws(), n2.ws(), format!("http://{}", n1.addr));
    let stdout = tokio::task::spawn_blocking(move || {
        signaling_e2e::run_sigprobe(&["--url", &u1, "--url2", &u2, "--http", &h])
    })
    .await
    .expect("probe");
    if let Some(stdout) = stdout {
        assert!(
            stdout.lines().any(|l| l.starts_with("PASS x-order-200")),
            "the cross-instance checks ran"
        );
    }
    n1.stop().await;
    n2.stop().await;
}

/// Asserts docs/protocol.md §9, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_resumes_on_another_instance_with_its_messages() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "m1", |_| {}).await;
    let n2 = TestServer::node(&redis.url(), "m2", |_| {}).await;
    let r = room("move");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;
    let (a_id, token) = (a.peer_id.clone(), a.resume.clone());
    a.drop_tcp();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        b.send(json!({"type":"message","to":a_id,"data":{"gap":i}}))
            .await;
    }
    b.send(json!({"type":"ping"})).await;
    assert_eq!(
        b.expect("pong").await["type"],
        "pong",
        "no error for a held peer"
    );

    let mut a2 = Client::connect(&n2.ws(), "a@2").await;
    let j = a2.join_with(&r, json!({"resume": token})).await;
    assert_eq!(a2.peer_id, a_id, "same peer_id after moving instance");
    assert_eq!(peer_ids(&j["peers"]), [b.peer_id.clone()]);
    for i in 0..3 {
        let m = a2.expect("message").await;
        assert_eq!(m["data"], json!({"gap":i}), "queued messages in order");
    }
    b.expect_silence(Duration::from_millis(800)).await;
    // It lives on n2 now, for everyone.
    a2.send(json!({"type":"message","to":b.peer_id,"data":"back"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "back");
    let mut c = Client::connect(&n1.ws(), "c@1").await;
    let jc = c.join(&r).await;
    let mut listed = peer_ids(&jc["peers"]);
    listed.sort();
    let mut want = vec![a_id.clone(), b.peer_id.clone()];
    want.sort();
    assert_eq!(listed, want);
    c.send(json!({"type":"offer","to":a_id,"sdp":"v=0"})).await;
    assert_eq!(
        a2.expect("peer-joined").await["peer"]["peer_id"],
        c.peer_id.as_str()
    );
    assert_eq!(a2.expect("offer").await["from"], c.peer_id.as_str());
    // The old token is spent.
    let mut x = Client::connect(&n1.ws(), "x@1").await;
    x.send(json!({"type":"join","room":r,"resume":token})).await;
    assert_eq!(x.expect("error").await["code"], "resume_failed");
    n1.stop().await;
    n2.stop().await;
}

/// Asserts docs/protocol.md §10, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_moves_clients_in_a_rolling_restart_without_anyone_leaving() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "g1", |c| {
        c.drain_timeout = Duration::from_secs(5)
    })
    .await;
    let n2 = TestServer::node(&redis.url(), "g2", |_| {}).await;
    let r = room("roll");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;
    let (a_id, token) = (a.peer_id.clone(), a.resume.clone());
    let stopping = tokio::spawn(n1.stop());
    let g = a.expect("goaway").await;
    assert!(g["retry_after_ms"].is_u64());
    a.close().await;
    let mut a2 = Client::connect(&n2.ws(), "a@2").await;
    a2.join_with(&r, json!({"resume": token})).await;
    assert_eq!(a2.peer_id, a_id);
    stopping.await.expect("n1 stops");
    b.expect_silence(Duration::from_secs(1)).await;
    b.send(json!({"type":"answer","to":a_id,"sdp":"v=0"})).await;
    assert_eq!(a2.expect("answer").await["from"], b.peer_id.as_str());
    assert_eq!(api_room(n2.addr, &r).await.len(), 2);
    n2.stop().await;
}

/// Asserts docs/protocol.md §10, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_leaves_no_ghosts() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "c1", |c| {
        c.drain_timeout = Duration::from_millis(500)
    })
    .await;
    let n2 = TestServer::node(&redis.url(), "c2", |_| {}).await;
    let r = room("ghost");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    n1.stop().await;
    // a ignored goaway and was closed at the end of the drain: it is gone,
    // announced at once rather than after the node timeout.
    let l = b.expect_within("peer-left", Duration::from_secs(3)).await;
    assert_eq!(l["peer_id"], a.peer_id.as_str());
    assert_eq!(api_room(n2.addr, &r).await, [b.peer_id.clone()]);
    drop(a);
    n2.stop().await;
}

/// A node's own presence queries see its own changes: once a peer has been
/// told `joined` (or `left`), `/api/rooms` and `/api/rooms/{room}` on its
/// node say so, although the change reaches Redis through the write queue
/// after the reply. (The conformance probe reads `/api/rooms` right after a
/// join; under load it missed the joiner.) Relays queued just before each
/// join keep the change behind megabytes of writes, as a busy node would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lists_its_own_changes_as_soon_as_it_has_confirmed_them() {
    let redis = Redis::start();
    let busy = |c: &mut signaling::Config| {
        c.limits.rate = 100_000.0;
        c.limits.rate_burst = 100_000.0;
        // c's reader may fall behind on a loaded machine: it is not the
        // slow reader this test is about.
        c.limits.outbox_frames = 10_000;
        c.limits.outbox_bytes = 64 << 20;
    };
    let n1 = TestServer::node(&redis.url(), "ryw1", busy).await;
    let n2 = TestServer::node(&redis.url(), "ryw2", busy).await;
    let bulk = room("bulk");
    let mut b = Client::connect(&n1.ws(), "b").await;
    b.join(&bulk).await;
    let mut c = Client::connect(&n2.ws(), "c@2").await;
    join_seeing(&mut c, &bulk, &[&b.peer_id]).await;
    // b's node hears of c through Redis, after c's own `joined`.
    let pj = b.expect("peer-joined").await;
    assert_eq!(pj["peer"]["peer_id"], c.peer_id.as_str());
    let to = c.peer_id.clone();
    // c reads all along, or it would be closed as a slow reader.
    let received = tokio::spawn(async move {
        let mut offers = 0;
        while offers < 600 {
            match c.next(Duration::from_secs(10)).await {
                Some(m) if m["type"] == "offer" => offers += 1,
                Some(_) => {}
                None => break,
            }
        }
        offers
    });
    let sdp = "x".repeat(60_000);
    let mut misses = Vec::new();
    for i in 0..20 {
        for _ in 0..30 {
            b.send(json!({"type": "offer", "to": to, "sdp": sdp})).await;
        }
        let r = room(&format!("ryw{i}"));
        let mut a = Client::connect(&n1.ws(), "a").await;
        a.join(&r).await;
        if api_room(n1.addr, &r).await != [a.peer_id.clone()] {
            misses.push(format!("{r}: /api/rooms/{{room}} without the joiner"));
        }
        let (_, rooms) = http_get(n1.addr, "/api/rooms").await;
        if !rooms.contains(&r) {
            misses.push(format!("{r}: /api/rooms without the room"));
        }
        a.send(json!({"type": "leave"})).await;
        a.expect("left").await;
        if !api_room(n1.addr, &r).await.is_empty() {
            misses.push(format!("{r}: still listed after left"));
        }
    }
    assert!(misses.is_empty(), "{} misses: {misses:?}", misses.len());
    // The relays were queued, not refused, and all arrive.
    let mut told_b = Vec::new();
    while let Some(m) = b.next(Duration::from_millis(500)).await {
        told_b.push(m);
    }
    assert_eq!(
        received.await.expect("reader"),
        600,
        "b was told {told_b:?}"
    );
}

/// What another instance publishes that this one cannot read (a kind of a
/// newer format, a body that does not parse, bytes that are not UTF-8) is
/// counted in `signaling_bus_undecodable_total` and logged, and changes
/// nothing: members hear no event, relays between the instances go on.
/// (docs/cluster.md, "Node-to-node messages".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_an_instance_cannot_read_are_counted_and_change_nothing() {
    let redis = Redis::start();
    let n1 = TestServer::node(&redis.url(), "u1", |_| {}).await;
    let n2 = TestServer::node(&redis.url(), "u2", |_| {}).await;
    let r = room("wire");
    let mut a = Client::connect(&n1.ws(), "a@1").await;
    let mut b = Client::connect(&n2.ws(), "b@2").await;
    a.join(&r).await;
    join_seeing(&mut b, &r, &[&a.peer_id]).await;
    a.expect("peer-joined").await;
    assert_eq!(n1.metric("signaling_bus_undecodable_total ").await, 0);

    let room_channel = format!("sig:ch:room:{r}");
    let unreadable = [
        (room_channel.as_str(), "X u2\n{}".to_string()),
        (
            room_channel.as_str(),
            format!("L u2\n{} vanished", b.peer_id),
        ),
        (room_channel.as_str(), "no first line".to_string()),
        ("sig:ch:node:u1", "D u2\nno-route".to_string()),
        ("sig:ch:node:u1", "G u2\n1 2".to_string()),
    ];
    for (channel, payload) in &unreadable {
        // The room's channel reaches both instances, u1's own channel u1.
        let want = if channel.starts_with("sig:ch:room:") {
            ":2"
        } else {
            ":1"
        };
        let heard = redis.cmd(&["PUBLISH", channel, payload]);
        assert_eq!(heard.as_deref(), Some(want), "{channel}");
    }
    for (n, want) in [(&n1, 5), (&n2, 3)] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.metric("signaling_bus_undecodable_total ").await < want {
            assert!(Instant::now() < deadline, "not all counted on {}", n.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(n.metric("signaling_bus_undecodable_total ").await, want);
    }
    a.expect_silence(Duration::from_millis(300)).await;
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"still"}))
        .await;
    assert_eq!(a.expect("offer").await["sdp"], "still");
    assert_eq!(api_room(n1.addr, &r).await.len(), 2, "b is still listed");
}
