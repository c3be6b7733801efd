//! The life of a connection and of a membership, as docs/protocol.md states
//! it: how connections end and what the others hear (§7), the relay
//! guarantees (§8), resume (§9), `goaway` and the drain (§10) and
//! heartbeats (§11).
//!
//! Rules a client sees that could differ when the peers sit on different
//! instances run through [`both!`]: once on one instance, once on two
//! instances clustered through a real redis-server. Timings are set short
//! through each test's config, so every test takes a few seconds at most.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signaling_e2e::client::{Client, WAIT, peer_ids};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::raw::Raw;
use signaling_e2e::server::{ServerProcess, TestServer, api_room, wait_api_room};
use signaling_e2e::{both, join_token, room};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- §7.1

/// Tokens of the flooder's bucket, refusals allowed before the close.
const FLOOD_BURST: u64 = 4;
const FLOOD_CLOSE_AFTER: u64 = 5;

/// §7.1, §7.2: more than `--flood-close-after` `rate_limited` refusals end
/// the connection with 1008 and the reason "rate limit exceeded
/// repeatedly", after the replies and refusals queued before it (exactly
/// that many refusals); the others hear the flooder `disconnected`.
async fn a_flooder_gets_its_refusals_then_1008_and_is_announced_disconnected(d: Deployment) {
    let r = room("flood");
    let mut other = d.member(1, &r, "other").await;
    let mut f = Raw::connect(&d.server(0).ws()).await;
    let id = f.join(&r).await["peer_id"].clone();
    assert_eq!(other.expect("peer-joined").await["peer"]["peer_id"], id);
    // The join took one token: the rest of the burst, then refusals.
    let allowed = FLOOD_BURST - 1;
    for n in 0..allowed + FLOOD_CLOSE_AFTER + 1 {
        f.send(json!({"type":"ping","id":n})).await;
    }
    for n in 0..allowed {
        let p = f.next(WAIT).await.expect("a pong");
        assert_eq!(
            (p["type"].as_str(), p["ref"].as_u64()),
            (Some("pong"), Some(n))
        );
    }
    for _ in 0..FLOOD_CLOSE_AFTER {
        let e = f.next(WAIT).await.expect("a refusal");
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "rate_limited", "{e}");
        assert!(e.get("ref").is_none(), "refused before parsing: {e}");
    }
    assert_eq!(
        f.closed(WAIT).await,
        Some((1008, "rate limit exceeded repeatedly".to_string()))
    );
    let l = other.expect("peer-left").await;
    assert_eq!(l["peer_id"], id);
    assert_eq!(l["reason"], "disconnected");
}
both!(
    a_flooder_gets_its_refusals_then_1008_and_is_announced_disconnected,
    |c: &mut signaling::Config| {
        c.limits.rate = 0.01;
        c.limits.rate_burst = crate::FLOOD_BURST as f64;
        c.limits.flood_close_after = crate::FLOOD_CLOSE_AFTER as u32;
    }
);

/// §7.1, §7.2: a message over `--max-read-bytes` closes the connection with
/// 1009, after what was queued before it (here a `pong`); the others hear
/// it `disconnected`.
async fn a_message_past_the_read_bound_closes_1009_after_what_was_queued(d: Deployment) {
    let r = room("big");
    let mut other = d.member(1, &r, "other").await;
    let mut big = d.client(0, "big").await;
    big.join(&r).await;
    other.expect("peer-joined").await;
    big.send(json!({"type":"ping","id":"before"})).await;
    big.send_text("x".repeat(20 * 1024)).await;
    assert_eq!(big.expect("pong").await["ref"], "before");
    assert_eq!(big.closed(WAIT).await, Some(1009));
    let l = other.expect("peer-left").await;
    assert_eq!(l["peer_id"], big.peer_id.as_str());
    assert_eq!(l["reason"], "disconnected");
}
both!(
    a_message_past_the_read_bound_closes_1009_after_what_was_queued,
    |c: &mut signaling::Config| {
        c.limits.max_frame_bytes = 4 * 1024;
        c.limits.max_read_bytes = 16 * 1024;
    }
);

/// §7.1: a connection that has not joined within `--join-deadline` is closed
/// with 1008, not before the deadline; it was in no room, so nobody hears of
/// it, and a connection that joined in time outlives the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_joins_is_closed_1008_at_the_join_deadline() {
    let deadline = Duration::from_millis(600);
    let s = TestServer::start(|c| c.limits.join_deadline = deadline).await;
    let r = room("deadline");
    let opened = Instant::now();
    let mut member = s.client("member").await;
    member.join(&r).await;
    let mut idle = s.client("idle").await;
    assert_eq!(idle.closed(WAIT).await, Some(1008));
    assert!(
        opened.elapsed() >= deadline,
        "closed after {:?}",
        opened.elapsed()
    );
    member.send(json!({"type":"ping","id":1})).await;
    assert_eq!(
        member.expect("pong").await["ref"],
        1,
        "nothing about idle first"
    );
    member.expect_silence(Duration::from_millis(300)).await;
}

/// §7.1, §9: a resume while the old connection is still open closes that
/// one with 4000, after what had been queued for it; the peer keeps its id
/// on the new connection (another instance when clustered) and nobody sees
/// it leave or join.
async fn a_resume_takes_over_an_open_connection_which_is_closed_4000(d: Deployment) {
    let r = room("takeover");
    let mut a = d.member(0, &r, "a").await;
    let mut c = d.member(1, &r, "c").await;
    a.expect("peer-joined").await;
    let mut b = d.member(1, &r, "b").await;
    a.expect("peer-joined").await;
    c.expect("peer-joined").await;
    // c and b share an instance: once c has its pong, the three relays sit
    // in b's queue (or its socket), which b does not read yet.
    for n in 0..3 {
        c.send(json!({"type":"message","to":b.peer_id,"data":n}))
            .await;
    }
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    let mut b2 = d.client(0, "b2").await;
    let j = b2.join_with(&r, json!({"resume": b.resume})).await;
    assert_eq!(j["peer_id"], b.peer_id.as_str());
    assert_eq!(
        sorted(peer_ids(&j["peers"])),
        sorted(vec![a.peer_id.clone(), c.peer_id.clone()])
    );
    for n in 0..3 {
        assert_eq!(
            b.expect("message").await["data"],
            n,
            "written before the close"
        );
    }
    assert_eq!(b.closed(WAIT).await, Some(4000));
    a.send(json!({"type":"message","to":b.peer_id,"data":"after"}))
        .await;
    assert_eq!(b2.expect("message").await["data"], "after");
    // Nobody sees it move, c on its old instance included.
    a.expect_silence(Duration::from_millis(500)).await;
    c.expect_silence(Duration::from_millis(300)).await;
}
both!(a_resume_takes_over_an_open_connection_which_is_closed_4000);

/// §7.1, §8, §9: a slow reader is closed with 1013 and held, and the
/// relays its connection had not written are kept for its resume: every
/// relay is delivered once and in order — by the old socket, up to where it
/// stopped, then after the new `joined` — or refused to its sender with its
/// `ref`. Limits in the proportions of the defaults (the outbound queue
/// holds twice the resume queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_closed_1013_gets_its_unwritten_relays_after_its_resume() {
    slow_reader_resumes(16, 8).await;
}

/// A slow reader's whole story with an outbound queue of `outbox` frames
/// and a resume queue of `queue`; see the test above.
async fn slow_reader_resumes(outbox: usize, queue: usize) {
    let s = TestServer::start(|c| {
        c.limits.rate = 100_000.0;
        c.limits.rate_burst = 100_000.0;
        c.limits.max_data_bytes = 60 * 1024;
        c.limits.outbox_frames = outbox;
        c.limits.outbox_bytes = 8 << 20;
        c.limits.resume_queue = queue;
    })
    .await;
    let r = room("slow");
    let mut a = s.client("a").await;
    a.join(&r).await;
    let mut stuck = s.client("stuck").await;
    stuck.join(&r).await;
    a.expect("peer-joined").await;
    let pad = "z".repeat(30 * 1024);
    let mut refused = Vec::new();
    // `stuck` reads nothing from here on: its socket fills, then its queue.
    let mut sent = 0u64;
    while s.metric("signaling_peers_held ").await == 0 {
        assert!(sent < 5_000, "never closed as a slow reader");
        for _ in 0..10 {
            a.send(
                json!({"type":"message","id":sent,"to":stuck.peer_id,"data":{"n":sent,"pad":pad}}),
            )
            .await;
            sent += 1;
        }
        refused.extend(refusals_until_pong(&mut a).await);
    }
    // Held now: these wait in its queue, or are refused.
    for _ in 0..3 {
        a.send(json!({"type":"message","id":sent,"to":stuck.peer_id,"data":{"n":sent,"pad":""}}))
            .await;
        sent += 1;
    }
    refused.extend(refusals_until_pong(&mut a).await);
    let token = stuck.resume.clone();
    // What the old socket still delivers, up to its end.
    let mut old = Vec::new();
    while let Some(m) = stuck.next(Duration::from_secs(3)).await {
        old.push(m["data"]["n"].as_u64().expect("a relay"));
    }
    let mut back = s.client("stuck again").await;
    back.send(json!({"type":"join","room":r,"resume":token}))
        .await;
    let j = back.next(WAIT).await;
    let mut new = Vec::new();
    while let Some(m) = back.next(Duration::from_millis(500)).await {
        assert_eq!(m["type"], "message", "{m}");
        new.push(m["data"]["n"].as_u64().expect("a relay"));
    }
    println!(
        "{sent} sent; old socket delivered {} ({:?}..{:?}); resume: {:?}, then {} ({:?}..{:?}), refused {refused:?}",
        old.len(),
        old.first(),
        old.last(),
        j.as_ref().map(|j| &j["type"]),
        new.len(),
        new.first(),
        new.last(),
    );
    assert_eq!(
        j.as_ref().map(|j| &j["type"]),
        Some(&json!("joined")),
        "{j:?}"
    );
    let delivered: Vec<u64> = old.iter().chain(&new).copied().collect();
    let mut accounted: Vec<u64> = delivered.iter().chain(&refused).copied().collect();
    accounted.sort();
    assert!(
        delivered.is_sorted(),
        "in order, once: old {old:?}\nnew {new:?}"
    );
    // The one loss allowed (§8, known exceptions): frames the old socket
    // had taken but not written when it was closed, right after the last one
    // it delivered and before the first one the resume delivers.
    let in_socket = old.last().map_or(0, |l| l + 1)..new.first().copied().unwrap_or(sent);
    assert!(
        in_socket.end - in_socket.start <= 32,
        "a socket's batch at most: {in_socket:?}"
    );
    accounted.extend(in_socket);
    accounted.sort();
    assert_eq!(
        accounted,
        (0..sent).collect::<Vec<_>>(),
        "each delivered or refused: old {old:?}\nnew {new:?}\nrefused {refused:?}"
    );
    assert!(new.len() > 3, "the unwritten relays were kept too: {new:?}");
}

/// Reads `a` up to the `pong` of a `ping` sent now, returning the `ref`s of
/// the `unavailable` errors on the way.
async fn refusals_until_pong(a: &mut Client) -> Vec<u64> {
    a.send(json!({"type":"ping"})).await;
    let mut refs = Vec::new();
    loop {
        let m = a.next(WAIT).await.expect("a pong");
        match m["type"].as_str() {
            Some("pong") => return refs,
            Some("error") if m["code"] == "unavailable" => {
                refs.push(m["ref"].as_u64().expect("a ref"));
            }
            _ => panic!("{m}"),
        }
    }
}

// ---------------------------------------------------------------- §7.2, §7.3

/// §7.2, §7.3: clean ends are announced at once, long before `--grace`:
/// `leave` as `left`, a close frame as `disconnected`. A drop (EOF, or a TCP
/// reset) is no clean end: nothing is announced and the peer stays listed.
async fn clean_ends_are_announced_at_once_and_drops_are_held(d: Deployment) {
    let r = room("ends");
    let mut a = d.member(0, &r, "a").await;
    let mut leaver = d.member(1, &r, "leaver").await;
    let closer = d.member(1, &r, "closer").await;
    let eof = d.member(1, &r, "eof").await;
    let mut reset = Raw::connect(&d.server(1).ws()).await;
    let reset_id = reset.join(&r).await["peer_id"]
        .as_str()
        .expect("peer_id")
        .to_string();
    d.settle(&r, &reset_id).await;
    for _ in 0..4 {
        a.expect("peer-joined").await;
    }
    let ended = Instant::now();
    leaver.send(json!({"type":"leave","id":"bye"})).await;
    assert_eq!(until(&mut leaver, "left").await["ref"], "bye");
    let l = a.expect("peer-left").await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(leaver.peer_id.as_str()), Some("left"))
    );
    let closer_id = closer.peer_id.clone();
    closer.close().await;
    let l = a.expect("peer-left").await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(closer_id.as_str()), Some("disconnected"))
    );
    assert!(
        ended.elapsed() < Duration::from_secs(10),
        "at once, not after the grace"
    );

    let eof_id = eof.peer_id.clone();
    eof.drop_tcp();
    reset.reset();
    d.server(1).wait_held(2).await;
    a.expect_silence(Duration::from_millis(800)).await;
    let mut want = vec![a.peer_id.clone(), eof_id, reset_id];
    want.sort();
    for s in &d.servers {
        assert_eq!(api_room(s.addr, &r).await, want, "held peers stay listed");
    }
}
both!(
    clean_ends_are_announced_at_once_and_drops_are_held,
    |c: &mut signaling::Config| c.grace = std::time::Duration::from_secs(30)
);

/// §7.3, §5.2-§5.4: each change of one peer reaches each other member once
/// and in order — `peer-joined`, its `peer-updated`s, `peer-left` — with the
/// same `name` and `joined_at` throughout; the peer itself hears none of it.
async fn each_change_of_a_peer_reaches_the_others_once_and_in_order(d: Deployment) {
    let r = room("order");
    let mut a = d.member(0, &r, "a").await;
    let mut x = d.client(1, "x").await;
    x.join_with(&r, json!({"name":"xi"})).await;
    for n in 0..5 {
        x.send(json!({"type":"update","meta":{"n":n}})).await;
    }
    x.send(json!({"type":"leave","id":"bye"})).await;
    let left = x.next(WAIT).await.expect("left");
    assert_eq!(
        (left["type"].as_str(), left["ref"].as_str()),
        (Some("left"), Some("bye")),
        "no event about itself first"
    );

    let pj = a.expect("peer-joined").await;
    let peer = &pj["peer"];
    assert_eq!(peer["peer_id"], x.peer_id.as_str());
    assert_eq!(
        (peer["name"].as_str(), &peer["meta"]),
        (Some("xi"), &json!({}))
    );
    for n in 0..5 {
        let u = a.expect("peer-updated").await;
        assert_eq!(u["peer"]["meta"], json!({"n":n}), "in order: {u}");
        assert_eq!(u["peer"]["peer_id"], peer["peer_id"]);
        assert_eq!(u["peer"]["name"], peer["name"]);
        assert_eq!(u["peer"]["joined_at"], peer["joined_at"]);
    }
    let l = a.expect("peer-left").await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(x.peer_id.as_str()), Some("left"))
    );
    a.expect_silence(Duration::from_millis(500)).await;
    x.expect_silence(Duration::from_millis(100)).await;
}
both!(each_change_of_a_peer_reaches_the_others_once_and_in_order);

/// Peers that join, update and leave over and over, and newcomers.
const CHURNERS: usize = 4;
const ROUNDS: usize = 6;
const NEWCOMERS: usize = 4;

/// §7.3: a newcomer's `joined.peers` plus the events after it describe the
/// room: while others join, update and leave through every instance, no
/// event names a peer it was not told about (or announces one twice or
/// names the newcomer itself), and once the churn stops its view is the
/// room's, as every instance lists it.
async fn snapshots_and_events_describe_a_churning_room(d: Deployment) {
    let r = room("churn");
    let mut churners = Vec::new();
    for k in 0..CHURNERS {
        let url = d.server(k).ws();
        let r = r.clone();
        churners.push(tokio::spawn(churn(url, r, ROUNDS, k % 2 == 0)));
    }
    let mut newcomers = Vec::new();
    for k in 0..NEWCOMERS {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let mut c = d.client(k, &format!("newcomer{k}")).await;
        let j = c.join(&r).await;
        let view = peer_ids(&j["peers"]);
        assert!(!view.contains(&c.peer_id), "never itself: {j}");
        newcomers.push((c, view));
    }
    let mut room_now: Vec<String> = Vec::new();
    let mut keep = Vec::new();
    for t in churners {
        let (client, stayed) = t.await.expect("churner");
        room_now.extend(stayed);
        keep.push(client);
    }
    room_now.extend(newcomers.iter().map(|(c, _)| c.peer_id.clone()));
    room_now.sort();
    for s in &d.servers {
        wait_api_room(s.addr, &r, &room_now).await;
    }
    for (c, view) in &mut newcomers {
        let want: Vec<String> = room_now
            .iter()
            .filter(|p| **p != c.peer_id)
            .cloned()
            .collect();
        let deadline = Instant::now() + WAIT;
        while sorted(view.clone()) != want {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = c.next(left).await else {
                panic!("{}: view {view:?} never became {want:?}", c.label);
            };
            apply(&c.peer_id, view, &e);
        }
        // Nothing late: no second leave, no ghost.
        while let Some(e) = c.next(Duration::from_millis(300)).await {
            apply(&c.peer_id, view, &e);
        }
        assert_eq!(sorted(view.clone()), want, "{}", c.label);
    }
    drop(keep);
}
both!(
    snapshots_and_events_describe_a_churning_room,
    |c: &mut signaling::Config| {
        c.limits.rate = 10_000.0;
        c.limits.rate_burst = 10_000.0;
    }
);

// ---------------------------------------------------------------- §8

/// §8: relays from one sender to one receiver arrive once each, in the
/// order sent, whatever their kind and whether directed or broadcast; a
/// broadcast never comes back to its sender.
async fn relays_between_two_peers_arrive_once_and_in_order(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("relay-order").await;
    const N: u64 = 200;
    for n in 0..N {
        let to = b.peer_id.clone();
        let m = match n % 5 {
            0 => json!({"type":"offer","to":to,"sdp":format!("v=0 {n}")}),
            1 => json!({"type":"answer","to":to,"sdp":format!("v=0 {n}")}),
            2 => json!({"type":"candidate","to":to,"candidate":{"candidate":format!("c {n}")}}),
            3 => json!({"type":"message","to":to,"data":n}),
            _ => json!({"type":"message","data":n}),
        };
        a.send(m).await;
    }
    for n in 0..N {
        let m = b.next(WAIT).await.expect("every relay");
        let got = match m["type"].as_str() {
            Some("offer" | "answer") => m["sdp"].as_str().map(|s| s.to_string()),
            Some("candidate") => m["candidate"]["candidate"].as_str().map(|s| s.to_string()),
            Some("message") => m["data"].as_u64().map(|d| d.to_string()),
            _ => None,
        };
        let want = match n % 5 {
            0 | 1 => format!("v=0 {n}"),
            2 => format!("c {n}"),
            _ => n.to_string(),
        };
        assert_eq!(got.as_deref(), Some(want.as_str()), "relay {n}: {m}");
        assert_eq!(m["from"], a.peer_id.as_str());
    }
    b.expect_silence(Duration::from_millis(300)).await;
    a.send(json!({"type":"ping","id":"p"})).await;
    assert_eq!(a.expect("pong").await["ref"], "p", "no echo, no error");
}
both!(
    relays_between_two_peers_arrive_once_and_in_order,
    |c: &mut signaling::Config| {
        c.limits.rate = 10_000.0;
        c.limits.rate_burst = 10_000.0;
    }
);

/// The resume queue in [`a_held_peers_queue_fills_then_directed_relays_are_refused`].
const QUEUE: u64 = 3;

/// §8, §9: relays to a held peer wait in its queue, up to
/// `--resume-queue`; past it each directed relay gets `unavailable` with its
/// `ref`, and a broadcast skips the peer without an error while it still
/// reaches the others. The peer, resumed, gets what fit, in order, and
/// nothing more.
async fn a_held_peers_queue_fills_then_directed_relays_are_refused(d: Deployment) {
    let (r, mut a, b) = d.pair("held-full").await;
    let mut c = d.member(1, &r, "c").await;
    a.expect("peer-joined").await;
    let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    d.server(1).wait_held(1).await;
    let sent = QUEUE + 2;
    for n in 0..sent {
        a.send(json!({"type":"offer","id":n,"to":b_id,"sdp":n.to_string()}))
            .await;
    }
    for n in QUEUE..sent {
        let e = a.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["ref"].as_u64()),
            (Some("unavailable"), Some(n)),
            "{e}"
        );
    }
    a.send(json!({"type":"message","id":"all","data":"all"}))
        .await;
    assert_eq!(c.expect("message").await["data"], "all");
    a.expect_silence(Duration::from_millis(500)).await;

    let mut back = d.client(0, "b again").await;
    back.join_with(&r, json!({"resume": token})).await;
    assert_eq!(back.peer_id, b_id);
    for n in 0..QUEUE {
        assert_eq!(back.expect("offer").await["sdp"], n.to_string());
    }
    back.expect_silence(Duration::from_millis(500)).await;
}
both!(
    a_held_peers_queue_fills_then_directed_relays_are_refused,
    |c: &mut signaling::Config| c.limits.resume_queue = crate::QUEUE as usize
);

/// §8, §9: in a cluster, a relay to an instance that stays unreachable gets
/// its sender a late `unavailable` (with the relay's `ref`); a sender that
/// is away by then finds it in its resume queue, after its next `joined`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_refusal_waits_in_the_resume_queue_of_a_sender_that_is_away() {
    let redis = signaling_e2e::redis::Redis::start();
    let ra = TestServer::node(&redis.url(), "late-a", |_| {}).await;
    let rb = ServerProcess::node(&redis.url(), "late-b", &[]).await;
    let r = room("late");
    let mut a = ra.client("a").await;
    a.join(&r).await;
    let mut b = Client::connect(&rb.ws(), "b").await;
    b.join(&r).await;
    a.expect("peer-joined").await;
    let b_id = b.peer_id.clone();
    drop(rb); // SIGKILL: b stays listed until the node timeout (10 s)
    const SENT: u64 = 3;
    for n in 0..SENT {
        a.send(json!({"type":"offer","id":n,"to":b_id,"sdp":"x"}))
            .await;
    }
    a.send(json!({"type":"ping"})).await;
    a.expect("pong").await;
    let token = a.resume.clone();
    a.drop_tcp();
    // The refusals come 2 s after the relays, while a is away.
    let deadline = Instant::now() + Duration::from_secs(8);
    while ra
        .metric("signaling_errors_total{code=\"unavailable\"}")
        .await
        < SENT
    {
        assert!(Instant::now() < deadline, "no late refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut back = ra.client("a again").await;
    back.join_with(&r, json!({"resume": token})).await;
    for n in 0..SENT {
        let e = back.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["ref"].as_u64()),
            (Some("unavailable"), Some(n)),
            "{e}"
        );
    }
    back.expect_silence(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------- §9

/// §7.2, §7.3, §9: a peer whose connection drops is held: nobody hears of
/// it, a newcomer finds it in `joined.peers`, relays to it wait, and it
/// hears no presence event. It resumes from any instance as itself — same
/// `peer_id`, `name`, `meta`, `joined_at` and place, whatever `name` and
/// `meta` the resume carries — gets the room as it is now instead of the
/// gap's events, then the relays of the gap in order; nobody sees it leave
/// or join.
async fn a_dropped_peer_resumes_as_itself_with_the_room_as_it_is_now(d: Deployment) {
    let r = room("held");
    let mut a = d.client(0, "a").await;
    a.join_with(&r, json!({"name":"ada","meta":{"v":1}})).await;
    d.settle(&r, &a.peer_id).await;
    // `joined_at` is in milliseconds: apart, so the order is a's then b's.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let mut b = d.client(1, "b").await;
    let jb = b.join_with(&r, json!({"name":"bo","meta":{"k":1}})).await;
    assert_eq!(peer_ids(&jb["peers"]), [a.peer_id.clone()]);
    d.settle(&r, &b.peer_id).await;
    let announced = a.expect("peer-joined").await["peer"].clone();
    b.send(json!({"type":"update","meta":{"k":2}})).await;
    assert_eq!(
        a.expect("peer-updated").await["peer"]["meta"],
        json!({"k":2})
    );
    let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    d.server(1).wait_held(1).await;

    // Held: listed for a newcomer as it last was.
    let mut c = d.client(1, "c").await;
    let jc = c.join(&r).await;
    assert_eq!(peer_ids(&jc["peers"]), [a.peer_id.clone(), b_id.clone()]);
    let listed = jc["peers"][1].clone();
    assert_eq!(
        listed,
        json!({"peer_id":b_id,"name":"bo","meta":{"k":2},"joined_at":announced["joined_at"]})
    );
    a.expect("peer-joined").await;
    d.settle(&r, &c.peer_id).await;
    // The gap: a presence change, and relays that wait (no error).
    a.send(json!({"type":"update","meta":{"v":2}})).await;
    c.expect("peer-updated").await;
    for n in 0..3 {
        c.send(json!({"type":"message","id":n,"to":b_id,"data":n}))
            .await;
    }
    c.send(json!({"type":"ping","id":"p"})).await;
    assert_eq!(
        c.expect("pong").await["ref"],
        "p",
        "no error for a held peer"
    );

    let mut back = d.client(0, "b again").await;
    let j = back
        .join_with(&r, json!({"resume":token,"name":"impostor","meta":{"x":1}}))
        .await;
    assert_eq!(j["peer_id"], b_id.as_str());
    assert_eq!(j["room"], r.as_str());
    assert_eq!(
        peer_ids(&j["peers"]),
        [a.peer_id.clone(), c.peer_id.clone()]
    );
    assert_eq!(
        j["peers"][0]["meta"],
        json!({"v":2}),
        "the room as it is now"
    );
    assert_ne!(j["resume"], token.as_str(), "a new token");
    for n in 0..3 {
        let m = back.expect("message").await;
        assert_eq!(
            (m["data"].as_u64(), m["from"].as_str()),
            (Some(n), Some(c.peer_id.as_str())),
            "{m}"
        );
    }
    back.expect_silence(Duration::from_millis(300)).await;
    // Nobody sees it move, c on its old instance included.
    a.expect_silence(Duration::from_millis(500)).await;
    c.expect_silence(Duration::from_millis(300)).await;
    // Same name, meta, joined_at and place, for a newcomer where it lives now.
    let mut e = d.client(0, "e").await;
    let je = e.join(&r).await;
    assert_eq!(
        peer_ids(&je["peers"]),
        [a.peer_id.clone(), b_id.clone(), c.peer_id.clone()]
    );
    assert_eq!(je["peers"][1], listed);
}
both!(a_dropped_peer_resumes_as_itself_with_the_room_as_it_is_now);

/// §9, §7.3, §4.5, §15: a peer that resumes on another instance — after a
/// drop, or taking over its open connection — is seen by nobody to leave or
/// join, members on its old instance included, and stays reachable from
/// there throughout (never `unknown_peer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_resuming_elsewhere_is_not_announced_on_its_old_instance() {
    let d = Deployment::two(|_| {}).await;
    for takeover in [false, true] {
        let r = room("moved");
        let mut w = d.member(1, &r, "watcher").await;
        let b = d.member(1, &r, "b").await;
        w.expect("peer-joined").await;
        let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
        let _old = if takeover {
            Some(b)
        } else {
            b.drop_tcp();
            d.server(1).wait_held(1).await;
            None
        };
        let mut back = d.client(0, "b again").await;
        back.join_with(&r, json!({"resume": token})).await;
        assert_eq!(back.peer_id, b_id);
        w.send(json!({"type":"message","id":"at-once","to":b_id,"data":1}))
            .await;
        w.send(json!({"type":"ping","id":"p"})).await;
        let m = w.next(WAIT).await.expect("a pong");
        assert_eq!(
            (m["type"].as_str(), m["ref"].as_str()),
            (Some("pong"), Some("p")),
            "takeover {takeover}: {m}"
        );
        assert_eq!(back.expect("message").await["data"], 1);
        w.expect_silence(Duration::from_millis(800)).await;
    }
}

/// §9, §7.2: a resume fails with `resume_failed` (with `ref`) for a
/// malformed or made-up token, for another room, and for a peer that ended
/// its membership cleanly — with `leave`, or a close frame outside a drain —
/// which the others heard at once.
async fn a_resume_fails_after_a_clean_end_or_with_a_wrong_token(d: Deployment) {
    let r = room("no-resume");
    let mut a = d.member(0, &r, "a").await;
    let mut x = d.client(0, "x").await;
    let made_up = [
        "no-dot".to_string(),
        format!("{}.{}", "0".repeat(16), "0".repeat(32)),
        format!("{}.{}", a.peer_id, "0".repeat(32)),
    ];
    for (n, token) in made_up.iter().enumerate() {
        x.send(json!({"type":"join","id":n,"room":r,"resume":token}))
            .await;
        let e = x.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["ref"].as_u64()),
            (Some("resume_failed"), Some(n as u64)),
            "{token}: {e}"
        );
    }
    let mut leaver = d.member(1, &r, "leaver").await;
    a.expect("peer-joined").await;
    leaver.send(json!({"type":"leave"})).await;
    until(&mut leaver, "left").await;
    assert_eq!(a.expect("peer-left").await["reason"], "left");
    refused_resume(&mut x, &r, &leaver.resume).await;

    let closer = d.member(1, &r, "closer").await;
    a.expect("peer-joined").await;
    let token = closer.resume.clone();
    closer.close().await;
    assert_eq!(a.expect("peer-left").await["reason"], "disconnected");
    refused_resume(&mut x, &r, &token).await;

    let dropped = d.member(1, &r, "dropped").await;
    a.expect("peer-joined").await;
    let token = dropped.resume.clone();
    dropped.drop_tcp();
    d.server(1).wait_held(1).await;
    refused_resume(&mut x, &room("elsewhere"), &token).await;
    a.expect_silence(Duration::from_millis(300)).await;
}
both!(a_resume_fails_after_a_clean_end_or_with_a_wrong_token);

/// §7.2, §9: a dropped peer not back within `--grace` is announced
/// `timeout`, not before the grace; its token then fails, and joining again
/// makes a new peer, which the others see join.
async fn a_peer_not_back_within_the_grace_is_gone_and_comes_back_new(d: Deployment) {
    let (r, mut a, b) = d.pair("grace").await;
    let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
    let dropped = Instant::now();
    b.drop_tcp();
    let l = a.expect("peer-left").await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(b_id.as_str()), Some("timeout"))
    );
    assert!(
        dropped.elapsed() >= GRACE,
        "announced after {:?}",
        dropped.elapsed()
    );
    let mut again = d.client(1, "b again").await;
    refused_resume(&mut again, &r, &token).await;
    again.join(&r).await;
    assert_ne!(again.peer_id, b_id);
    assert_eq!(
        a.expect("peer-joined").await["peer"]["peer_id"],
        again.peer_id.as_str()
    );
}
const GRACE: Duration = Duration::from_millis(700);
both!(
    a_peer_not_back_within_the_grace_is_gone_and_comes_back_new,
    |c: &mut signaling::Config| c.grace = crate::GRACE
);

/// §9: a held peer keeps its slot: it still counts against
/// `--max-room-peers`, and its resume succeeds in the full room.
async fn a_resume_keeps_its_slot_in_a_full_room(d: Deployment) {
    let (r, _a, b) = d.pair("cap").await;
    let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    d.server(1).wait_held(1).await;
    let mut c = d.client(0, "c").await;
    c.send(json!({"type":"join","id":"c","room":r})).await;
    let e = c.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("room_full"), Some("c"))
    );
    let mut back = d.client(0, "b again").await;
    back.join_with(&r, json!({"resume": token})).await;
    assert_eq!(back.peer_id, b_id);
    c.send(json!({"type":"join","id":"c2","room":r})).await;
    assert_eq!(c.expect("error").await["code"], "room_full");
}
both!(
    a_resume_keeps_its_slot_in_a_full_room,
    |c: &mut signaling::Config| { c.limits.max_room_peers = 2 }
);

/// §9: with auth on, a resume needs a valid join token for the room too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_needs_a_join_token_when_auth_is_on() {
    const SECRET: &str = "lifecycle-secret-0123456789abcdefghijk";
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("auth");
    let token = join_token(SECRET, &r);
    let mut b = s.client("b").await;
    b.join_with(&r, json!({"token": token})).await;
    let b_id = b.peer_id.clone();
    let resume = b.resume.clone();
    b.drop_tcp();
    s.wait_held(1).await;
    let mut back = s.client("b again").await;
    back.send(json!({"type":"join","id":1,"room":r,"resume":resume}))
        .await;
    let e = back.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_u64()),
        (Some("unauthorized"), Some(1))
    );
    back.join_with(&r, json!({"resume": resume, "token": token}))
        .await;
    assert_eq!(back.peer_id, b_id);
}

// ---------------------------------------------------------------- §10

/// §9, §10: while an instance drains, a resume there is `unavailable`, as
/// is any join: resume on another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_a_draining_instance_is_unavailable() {
    let s = TestServer::start(|c| c.drain_timeout = Duration::from_secs(3)).await;
    let r = room("drain-resume");
    let mut a = s.client("a").await;
    a.join(&r).await;
    let mut b = s.client("b").await;
    b.join(&r).await;
    a.expect("peer-joined").await;
    let token = b.resume.clone();
    b.drop_tcp();
    s.wait_held(1).await;
    let mut x = s.client("x").await;
    s.handle.shutdown();
    x.expect("goaway").await;
    x.send(json!({"type":"join","id":1,"room":r,"resume":token}))
        .await;
    let e = x.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_u64()),
        (Some("unavailable"), Some(1))
    );
}

/// §10, §7.2, §7.3: in a cluster, a member that follows `goaway` with a
/// clean close is held, not announced; the draining instance waits for it
/// up to `--drain-timeout` (it may resume elsewhere), then announces it
/// `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_goaway_a_clean_close_is_held_and_the_drain_waits_for_it() {
    let drain = Duration::from_secs(2);
    let Deployment {
        mut servers, redis, ..
    } = Deployment::two(move |c| c.drain_timeout = drain).await;
    let s1 = servers.pop().expect("s1");
    let s0 = servers.pop().expect("s0");
    let r = room("drain-held");
    let mut w = s1.client("watcher").await;
    w.join(&r).await;
    signaling_e2e::server::wait_listed(s0.addr, &r, &w.peer_id).await;
    let mut q = s0.client("quitter").await;
    q.join(&r).await;
    assert_eq!(
        w.expect("peer-joined").await["peer"]["peer_id"],
        q.peer_id.as_str()
    );
    let started = Instant::now();
    let stopping = tokio::spawn(s0.stop());
    let g = until(&mut q, "goaway").await;
    assert_eq!(
        (g["reason"].as_str(), g["retry_after_ms"].as_u64()),
        (Some("shutdown"), Some(250))
    );
    let q_id = q.peer_id.clone();
    q.close().await;
    let l = w.expect_within("peer-left", drain + WAIT).await;
    assert!(
        started.elapsed() >= drain,
        "announced after {:?}, before the drain ended",
        started.elapsed()
    );
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(q_id.as_str()), Some("timeout"))
    );
    stopping.await.expect("s0 stops");
    w.expect_silence(Duration::from_millis(300)).await;
    drop(redis);
}

/// §10, §7.1, §7.2: in a cluster, a member still connected when the drain
/// ends is closed with 1012 and held, so the others hear it `timeout` (not
/// `disconnected`) when the instance stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_still_connected_when_the_drain_ends_gets_1012_and_is_announced_timeout() {
    let drain = Duration::from_millis(800);
    let d = Deployment::two(move |c| c.drain_timeout = drain).await;
    let r = room("drain-1012");
    let mut w = d.member(1, &r, "watcher").await;
    let mut stayer = d.member(0, &r, "stayer").await;
    w.expect("peer-joined").await;
    let Deployment {
        mut servers, redis, ..
    } = d;
    let s1 = servers.pop().expect("s1");
    let s0 = servers.pop().expect("s0");
    let started = Instant::now();
    let stopping = tokio::spawn(s0.stop());
    until(&mut stayer, "goaway").await;
    assert_eq!(stayer.closed(drain + WAIT).await, Some(1012));
    assert!(
        started.elapsed() >= drain,
        "closed after {:?}",
        started.elapsed()
    );
    // Gone (it does not answer the close frame: the server need not wait).
    let stayer_id = stayer.peer_id.clone();
    drop(stayer);
    let l = w.expect_within("peer-left", WAIT).await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some(stayer_id.as_str()), Some("timeout"))
    );
    stopping.await.expect("s0 stops");
    drop((s1, redis));
}

/// §10: following the client recipe — on `goaway` wait `retry_after_ms`,
/// close, reconnect elsewhere, `join` with `resume` — moves a member unseen,
/// and the draining instance stops as soon as its held peer is resumed,
/// well before `--drain-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_goaway_recipe_moves_a_member_unseen_and_the_drain_ends_early() {
    let drain = Duration::from_secs(20);
    let d = Deployment::two(move |c| c.drain_timeout = drain).await;
    let r = room("drain-move");
    let mut w = d.member(1, &r, "watcher").await;
    let mut m = d.member(0, &r, "mover").await;
    w.expect("peer-joined").await;
    let Deployment {
        mut servers, redis, ..
    } = d;
    let s1 = servers.pop().expect("s1");
    let s0 = servers.pop().expect("s0");
    let started = Instant::now();
    let stopping = tokio::spawn(s0.stop());
    let g = until(&mut m, "goaway").await;
    let wait = Duration::from_millis(g["retry_after_ms"].as_u64().expect("retry_after_ms"));
    tokio::time::sleep(wait).await;
    let (m_id, token) = (m.peer_id.clone(), m.resume.clone());
    m.close().await;
    let mut m2 = s1.client("mover again").await;
    let j = m2.join_with(&r, json!({"resume": token})).await;
    assert_eq!(j["peer_id"], m_id.as_str());
    assert_eq!(peer_ids(&j["peers"]), [w.peer_id.clone()]);
    stopping.await.expect("s0 stops");
    let took = started.elapsed();
    assert!(took < drain / 2, "the drain took {took:?}");
    w.expect_silence(Duration::from_millis(500)).await;
    w.send(json!({"type":"message","to":m_id,"data":"still here"}))
        .await;
    assert_eq!(m2.expect("message").await["data"], "still here");
    drop(redis);
}

/// §10: a standalone instance waits for its clients only until they are
/// gone; after it restarts it has nobody to resume, so clients join afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_drain_ends_when_its_clients_leave_and_resumes_fail_after() {
    let drain = Duration::from_secs(20);
    let s = TestServer::start(|c| c.drain_timeout = drain).await;
    let r = room("standalone");
    let mut a = s.client("a").await;
    a.join(&r).await;
    let token = a.resume.clone();
    let started = Instant::now();
    let stopping = tokio::spawn(s.stop());
    until(&mut a, "goaway").await;
    a.close().await;
    stopping.await.expect("stops");
    assert!(
        started.elapsed() < drain / 2,
        "the drain took {:?}",
        started.elapsed()
    );
    let s2 = TestServer::start(|_| {}).await;
    let mut back = s2.client("a again").await;
    refused_resume(&mut back, &r, &token).await;
    back.join(&r).await;
}

// ---------------------------------------------------------------- §11

/// §11: any frame from the client is a sign of life — a `ping` message, a
/// WebSocket ping, an unsolicited pong — so clients that never answer the
/// server's pings but send one of those outlive `--heartbeat-timeout` many
/// times over; a silent one is dropped without a close frame, held, then
/// announced `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_frame_from_the_client_is_a_sign_of_life() {
    let heartbeat = Duration::from_millis(500);
    let s = TestServer::start(|c| {
        c.limits.heartbeat_timeout = heartbeat;
        c.limits.ping_interval = Duration::from_millis(150);
        c.grace = Duration::from_millis(200);
    })
    .await;
    let r = room("alive");
    let mut watcher = s.client("watcher").await;
    watcher.join(&r).await;
    // None of them reads (so none answers a ping) until the end.
    let mut talkers = Vec::new();
    for _ in 0..3 {
        let mut t = Raw::connect(&s.ws()).await;
        t.join(&r).await;
        talkers.push(t);
        watcher.expect("peer-joined").await;
    }
    let mut silent = Raw::connect(&s.ws()).await;
    let silent_id = silent.join(&r).await["peer_id"].clone();
    watcher.expect("peer-joined").await;
    let until_t = Instant::now() + heartbeat * 4;
    let mut heard = Vec::new();
    while Instant::now() < until_t {
        talkers[0].send(json!({"type":"ping"})).await;
        talkers[1]
            .send_frame(Message::Ping(Default::default()))
            .await;
        talkers[2]
            .send_frame(Message::Pong(Default::default()))
            .await;
        // The watcher reads, and so answers the server's pings.
        if let Some(m) = watcher.next(Duration::from_millis(100)).await {
            heard.push(m);
        }
    }
    assert_eq!(heard.len(), 1, "only the silent one left: {heard:?}");
    assert_eq!(heard[0]["type"], "peer-left");
    assert_eq!(heard[0]["peer_id"], silent_id);
    assert_eq!(heard[0]["reason"], "timeout");
    for (k, t) in talkers.iter_mut().enumerate() {
        t.send(json!({"type":"ping","id":"alive"})).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = t
                .next(left)
                .await
                .unwrap_or_else(|| panic!("talker {k} was closed"));
            if m["ref"] == "alive" {
                break;
            }
        }
    }
    assert_eq!(
        silent.closed(WAIT).await,
        None,
        "no close frame for a silent peer"
    );
}

// ---------------------------------------------------------------- helpers

/// Reads `c` until a message of type `ty` and returns it, skipping events
/// (an `error` on the way fails the test).
async fn until(c: &mut Client, ty: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next(left).await {
            Some(m) if m["type"] == ty => return m,
            Some(m) if m["type"] == "error" => panic!("{}: waiting for {ty}: {m}", c.label),
            Some(_) => continue,
            None => panic!("{}: no {ty}", c.label),
        }
    }
}

/// `join` with `resume` set to `token`, which must be refused with
/// `resume_failed` carrying the request's `ref`.
async fn refused_resume(c: &mut Client, room: &str, token: &str) {
    c.send(json!({"type":"join","id":"resume","room":room,"resume":token}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("resume_failed"), Some("resume")),
        "{e}"
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Applies one message a member got to its view of the room, checking the
/// rules of §7.3 on the way.
fn apply(me: &str, view: &mut Vec<String>, e: &Value) {
    let who = e["peer"]["peer_id"]
        .as_str()
        .or(e["peer_id"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_ne!(who, me, "an event about myself: {e}");
    let known = view.contains(&who);
    match e["type"].as_str() {
        Some("peer-joined") => {
            assert!(!known, "announced twice: {e}");
            view.push(who);
        }
        Some("peer-updated") => assert!(known, "an update of a peer never announced: {e}"),
        Some("peer-left") => {
            assert!(known, "a leave of a peer never announced: {e}");
            view.retain(|p| *p != who);
        }
        _ => panic!("unexpected: {e}"),
    }
}

/// One churner: `rounds` times join, update and leave, through `url`;
/// stays in the room after the last round if `stay`. Returns its
/// connection and, if it stayed, its peer id.
async fn churn(url: String, r: String, rounds: usize, stay: bool) -> (Client, Option<String>) {
    let mut c = Client::connect(&url, "churner").await;
    let mut id = None;
    for i in 0..rounds {
        c.send(json!({"type":"join","room":r})).await;
        id = until(&mut c, "joined").await["peer_id"]
            .as_str()
            .map(String::from);
        c.send(json!({"type":"update","meta":{"i":i}})).await;
        if i + 1 < rounds || !stay {
            c.send(json!({"type":"leave"})).await;
            until(&mut c, "left").await;
            id = None;
        }
    }
    (c, id)
}
