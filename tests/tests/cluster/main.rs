//! The cluster: several instances on one real Redis behave as one server.
//! Each test starts its own redis-server on a free loopback port.

use serde_json::json;
use signaling_e2e::client::{Client, has_event, http_get, peer_ids};
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{ServerProcess, TestServer, api_room, clustered, wait_api_room};
use std::time::{Duration, Instant};

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
    b.join_seeing(&r, &[&a.peer_id]).await;
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
    b.join_seeing(&r, &[&a.peer_id]).await;
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
    b.join_seeing(&r, &[&a.peer_id]).await;
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
    let seen = b
        .collect_until(Duration::from_secs(10), |s| {
            has_event(s, "peer-joined", &c.peer_id)
        })
        .await;
    assert!(
        has_event(&seen, "peer-joined", &c.peer_id),
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
    c.join_seeing(&bulk, &[&b.peer_id]).await;
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
    b.join_seeing(&r, &[&a.peer_id]).await;
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
