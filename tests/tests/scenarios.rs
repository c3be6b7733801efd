//! The cluster scenario suite: what several instances of one cluster must
//! do together, each scenario written once and run on both engines
//! ([`engines!`]): instances joined through a real redis-server, and
//! instances linked in this process (milliseconds, no Redis). Relays of
//! every type, presence converging, ordering, resume on another instance,
//! a lost instance, a drain, an outage and the resync after it.
//!
//! Where the engines differ, the scenario says so: a killed instance is
//! found dead at once on a linked cluster and after `--node-timeout` on
//! Redis; Redis comes back from an outage empty, the linked record as it
//! was. What members see is the same.

use serde_json::{Value, json};
use signaling_e2e::client::{has_event, http_get, peer_ids};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::server::{api_room, wait_api_room, wait_readyz};
use signaling_e2e::{engines, room};
use std::time::{Duration, Instant};

/// Instances found dead after 3 s on Redis (at once when linked).
fn fast_node_timeout(c: &mut signaling::Config) {
    c.node_timeout = Duration::from_secs(3);
}

/// Asserts docs/protocol.md §4.2, §4.3, §4.4, §4.5, §4.6, §4.7, §5.1, §5.3, §5.4, §5.5, §7.2, §7.3, §15.
async fn three_instances_share_presence_and_relay(mut d: Deployment) {
    d.add_node().await;
    let r = room("three");
    let mut a = d.client(0, "a@0").await;
    let mut b = d.client(1, "b@1").await;
    let mut c = d.client(2, "c@2").await;
    a.join_with(&r, json!({"name":"alice"})).await;
    // `joined_at` is in milliseconds: two joins within one are equally old
    // and may be listed either way.
    tokio::time::sleep(Duration::from_millis(3)).await;
    b.join_seeing(&r, &[&a.peer_id]).await;
    assert_eq!(
        a.expect("peer-joined").await["peer"]["peer_id"],
        b.peer_id.as_str()
    );
    // Once the cluster has both, a newcomer gets the whole room in
    // `joined`, oldest first.
    let mut ab = vec![a.peer_id.clone(), b.peer_id.clone()];
    ab.sort();
    wait_api_room(d.server(2).addr, &r, &ab).await;
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

    // Directed relays of every type between instances, payloads intact.
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
    let candidate = json!({"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"});
    a.send(json!({"type":"candidate","to":b.peer_id,"candidate":candidate}))
        .await;
    assert_eq!(b.expect("candidate").await["candidate"], candidate);
    a.send(json!({"type":"message","to":c.peer_id,"data":[1,"two",{"3":null}]}))
        .await;
    assert_eq!(
        c.expect("message").await["data"],
        json!([1, "two", {"3": null}])
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
    for s in d.live() {
        assert_eq!(
            api_room(s.addr, &r).await,
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
    let mut other = d.client(1, "other@1").await;
    other.join(&room("other")).await;
    a.send(json!({"type":"message","to":other.peer_id,"data":1}))
        .await;
    assert_eq!(a.expect("error").await["code"], "unknown_peer");
    other.expect_silence(Duration::from_millis(300)).await;
}
engines!(three_instances_share_presence_and_relay);

/// Asserts docs/protocol.md §7.3, §8: from one sender to one receiver on
/// another instance, relays arrive in the order sent, once each, and one
/// peer's updates in the order made, however many are in flight.
async fn relays_and_updates_keep_their_order_across_instances(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("order").await;
    const N: u64 = 300;
    for i in 0..N {
        a.send(json!({"type":"message","to":b.peer_id,"data":i}))
            .await;
        if i % 50 == 0 {
            a.send(json!({"type":"update","meta":{"n":i}})).await;
        }
    }
    let (mut next, mut updates) = (0, Vec::new());
    while next < N || updates.len() < 6 {
        let v = b
            .next(Duration::from_secs(10))
            .await
            .expect("every relay and update arrives");
        match v["type"].as_str() {
            Some("message") => {
                assert_eq!(v["data"], next, "relays out of order or repeated");
                next += 1;
            }
            Some("peer-updated") => updates.push(v["peer"]["meta"]["n"].clone()),
            _ => panic!("unexpected: {v}"),
        }
    }
    assert_eq!(Value::Array(updates), json!([0, 50, 100, 150, 200, 250]));
    b.expect_silence(Duration::from_millis(300)).await;
}
engines!(
    relays_and_updates_keep_their_order_across_instances,
    |c: &mut signaling::Config| {
        c.limits.rate = 100_000.0;
        c.limits.rate_burst = 100_000.0;
    }
);

/// Asserts docs/protocol.md §5.4, §7.2, §15.
async fn a_killed_instance_is_announced_node_lost_and_a_restart_resurrects_nobody(
    mut d: Deployment,
) {
    let (r, mut a, b) = d.pair("kill").await;

    let killed = Instant::now();
    d.kill(1);
    let l = a.expect_within("peer-left", Duration::from_secs(20)).await;
    println!(
        "{}: node-lost announced {} ms after the kill",
        d.engine(),
        killed.elapsed().as_millis()
    );
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(b.peer_id.as_str()), Some("node-lost"))
    );
    wait_api_room(d.server(0).addr, &r, std::slice::from_ref(&a.peer_id)).await;
    // Relays to it are refused like those to anyone gone.
    a.send(json!({"type":"message","id":7,"to":b.peer_id,"data":1}))
        .await;
    let e = a.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_u64()),
        (Some("unknown_peer"), Some(7))
    );

    // The same node id comes back: nobody reappears, nobody is announced twice.
    let again = d.restart_node(1).await;
    a.expect_silence(Duration::from_secs(1)).await;
    assert_eq!(api_room(d.server(0).addr, &r).await, [a.peer_id.clone()]);
    let mut c = d.client(again, "c@again").await;
    let j = c.join(&r).await;
    assert_eq!(peer_ids(&j["peers"]), [a.peer_id.clone()], "no ghost of b");
}
engines!(
    a_killed_instance_is_announced_node_lost_and_a_restart_resurrects_nobody,
    fast_node_timeout
);

/// Asserts docs/protocol.md §15: a Redis outage (a linked cluster cut off)
/// keeps every instance's rooms working locally; afterwards views converge
/// without anyone rejoining, and relays cross again.
async fn an_outage_keeps_local_rooms_working_and_views_converge_after(mut d: Deployment) {
    let (r, mut a, mut b) = d.pair("outage").await;

    d.outage();
    // /readyz reports the outage; liveness ignores it.
    wait_readyz(d.server(0).addr, 503, Duration::from_secs(10)).await;
    assert_eq!(
        http_get(d.server(0).addr, "/healthz").await.0,
        200,
        "liveness ignores the cluster"
    );

    // Local rooms keep working during the outage.
    let mut c = d.client(0, "c@0").await;
    let jc = c.join(&r).await;
    assert!(peer_ids(&jc["peers"]).contains(&a.peer_id));
    assert!(has_event(
        &[a.expect("peer-joined").await],
        "peer-joined",
        &c.peer_id
    ));
    a.send(json!({"type":"message","to":c.peer_id,"data":"local"}))
        .await;
    assert_eq!(c.expect("message").await["data"], "local");
    let mut e = d.client(1, "e@1").await;
    e.join(&r).await;
    assert!(has_event(
        &[b.expect("peer-joined").await],
        "peer-joined",
        &e.peer_id
    ));
    let b_id = b.peer_id.clone();
    b.send(json!({"type":"leave"})).await;
    b.expect("left").await;
    assert!(has_event(
        &[e.expect("peer-left").await],
        "peer-left",
        &b_id
    ));
    c.send(json!({"type":"update","meta":{"during":"outage"}}))
        .await;
    assert_eq!(
        a.expect("peer-updated").await["peer"]["meta"]["during"],
        "outage"
    );

    // Back: every view converges, nobody rejoins.
    d.restore();
    for s in d.live() {
        s.wait_ready_within(Duration::from_secs(15)).await;
    }
    let (e_id, c_id) = (e.peer_id.clone(), c.peer_id.clone());
    let seen_a = a
        .collect_until(Duration::from_secs(10), |s| {
            has_event(s, "peer-joined", &e_id) && has_event(s, "peer-left", &b_id)
        })
        .await;
    assert!(
        has_event(&seen_a, "peer-joined", &e_id),
        "a learns of e: {seen_a:?}"
    );
    assert!(
        has_event(&seen_a, "peer-left", &b_id),
        "a learns b left: {seen_a:?}"
    );
    let seen_e = e
        .collect_until(Duration::from_secs(10), |s| {
            s.iter().any(|v| {
                v["type"] == "peer-joined"
                    && v["peer"]["peer_id"] == c_id.as_str()
                    && v["peer"]["meta"]["during"] == "outage"
            })
        })
        .await;
    assert!(
        has_event(&seen_e, "peer-joined", &c_id),
        "e learns of c as it is now: {seen_e:?}"
    );
    let mut want = vec![a.peer_id.clone(), c.peer_id.clone(), e.peer_id.clone()];
    want.sort();
    for s in d.live() {
        wait_api_room(s.addr, &r, &want).await;
    }
    // And the cluster relays again.
    e.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0"}))
        .await;
    assert_eq!(a.expect("offer").await["from"], e.peer_id.as_str());
}
engines!(
    an_outage_keeps_local_rooms_working_and_views_converge_after,
    fast_node_timeout
);

/// Asserts docs/protocol.md §15: an instance that dies during an outage
/// has its peers announced `node-lost` once the cluster is back.
async fn an_instance_lost_during_an_outage_is_announced_node_lost_after(mut d: Deployment) {
    let (r, mut a, b) = d.pair("lost-in-outage").await;
    d.outage();
    wait_readyz(d.server(0).addr, 503, Duration::from_secs(10)).await;
    d.kill(1);
    a.expect_silence(Duration::from_millis(500)).await;
    d.restore();
    let l = a.expect_within("peer-left", Duration::from_secs(20)).await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(b.peer_id.as_str()), Some("node-lost"))
    );
    wait_api_room(d.server(0).addr, &r, std::slice::from_ref(&a.peer_id)).await;
    a.expect_silence(Duration::from_millis(500)).await;
}
engines!(
    an_instance_lost_during_an_outage_is_announced_node_lost_after,
    fast_node_timeout
);

/// Asserts docs/protocol.md §9, §15.
async fn a_dropped_peer_resumes_on_another_instance_with_its_messages(d: Deployment) {
    let (r, a, mut b) = d.pair("move").await;
    let (a_id, token) = (a.peer_id.clone(), a.resume.clone());
    a.drop_tcp();
    d.server(0).wait_held(1).await;
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

    let mut a2 = d.client(1, "a@1").await;
    let j = a2.join_with(&r, json!({"resume": token})).await;
    assert_eq!(a2.peer_id, a_id, "same peer_id after moving instance");
    assert_eq!(peer_ids(&j["peers"]), [b.peer_id.clone()]);
    for i in 0..3 {
        let m = a2.expect("message").await;
        assert_eq!(m["data"], json!({"gap":i}), "queued messages in order");
    }
    b.expect_silence(Duration::from_millis(800)).await;
    // It lives on instance 1 now, for everyone.
    a2.send(json!({"type":"message","to":b.peer_id,"data":"back"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "back");
    let mut c = d.client(0, "c@0").await;
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
    let mut x = d.client(0, "x@0").await;
    x.send(json!({"type":"join","room":r,"resume":token})).await;
    assert_eq!(x.expect("error").await["code"], "resume_failed");
}
engines!(a_dropped_peer_resumes_on_another_instance_with_its_messages);

/// Asserts docs/protocol.md §10, §15.
async fn goaway_moves_clients_in_a_rolling_restart_without_anyone_leaving(d: Deployment) {
    let (r, mut a, mut b) = d.pair("roll").await;
    let (a_id, token) = (a.peer_id.clone(), a.resume.clone());
    let mut servers = d.servers.into_iter();
    let (n0, n1) = (servers.next().expect("n0"), servers.next().expect("n1"));
    let stopping = tokio::spawn(n0.stop());
    let g = a.expect("goaway").await;
    assert!(g["retry_after_ms"].is_u64());
    a.close().await;
    let mut a2 = n1.client("a@1").await;
    a2.join_with(&r, json!({"resume": token})).await;
    assert_eq!(a2.peer_id, a_id);
    stopping.await.expect("n0 stops");
    b.expect_silence(Duration::from_secs(1)).await;
    b.send(json!({"type":"answer","to":a_id,"sdp":"v=0"})).await;
    assert_eq!(a2.expect("answer").await["from"], b.peer_id.as_str());
    assert_eq!(api_room(n1.addr, &r).await.len(), 2);
}
engines!(
    goaway_moves_clients_in_a_rolling_restart_without_anyone_leaving,
    |c: &mut signaling::Config| c.drain_timeout = Duration::from_secs(5)
);

/// Asserts docs/protocol.md §10, §15.
async fn a_clean_shutdown_leaves_no_ghosts(d: Deployment) {
    let r = room("ghost");
    let a = d.member(0, &r, "a@0").await;
    let mut b = d.client(1, "b@1").await;
    b.join_seeing(&r, &[&a.peer_id]).await;
    let mut servers = d.servers.into_iter();
    let (n0, n1) = (servers.next().expect("n0"), servers.next().expect("n1"));
    n0.stop().await;
    // a ignored goaway and was closed at the end of the drain: it is gone,
    // announced at once rather than after the node timeout.
    let l = b.expect_within("peer-left", Duration::from_secs(3)).await;
    assert_eq!(l["peer_id"], a.peer_id.as_str());
    assert_eq!(api_room(n1.addr, &r).await, [b.peer_id.clone()]);
}
engines!(
    a_clean_shutdown_leaves_no_ghosts,
    |c: &mut signaling::Config| { c.drain_timeout = Duration::from_millis(500) }
);

/// Asserts docs/protocol.md §15: a second instance started under the id of
/// a running one never serves (not ready, and it stops by itself) and
/// changes nothing: nobody is announced gone, relays go on, every
/// instance lists the room as it is.
async fn a_second_instance_under_a_running_node_id_refuses_and_touches_nothing(d: Deployment) {
    let (r, mut a, mut b) = d.pair("dup").await;
    let mut second = d.start_duplicate(1).await;
    let ended = second.ended(Duration::from_secs(15)).await;
    println!("{}: the second instance ended with {ended:?}", d.engine());
    assert!(
        matches!(ended, Some(Err(_))),
        "it stops with an error: {ended:?}"
    );
    assert_ne!(
        http_get(second.addr, "/readyz").await.0,
        200,
        "it never serves as the node"
    );
    for i in 0..3 {
        a.send(json!({"type":"message","to":b.peer_id,"data":i}))
            .await;
        assert_eq!(b.expect("message").await["data"], i);
        b.send(json!({"type":"message","to":a.peer_id,"data":i}))
            .await;
        assert_eq!(a.expect("message").await["data"], i);
    }
    a.expect_silence(Duration::from_millis(300)).await;
    let mut both = vec![a.peer_id.clone(), b.peer_id.clone()];
    both.sort();
    for s in d.live() {
        assert_eq!(api_room(s.addr, &r).await, both);
    }
}
engines!(
    a_second_instance_under_a_running_node_id_refuses_and_touches_nothing,
    fast_node_timeout
);
