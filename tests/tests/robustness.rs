//! One instance under hostile or broken clients: slow readers, floods, huge
//! frames, silent connections, bad tokens, misused resume tokens. Each test
//! starts its own server on a free loopback port and checks that the culprit
//! gets what the protocol says and that nobody else notices.

use serde_json::json;
use signaling_e2e::client::{Client, http_get, http_get_with, peer_ids};
use signaling_e2e::room;
use signaling_e2e::server::TestServer;
use std::time::Duration;

type Server = TestServer;

/// Joins `a` then `b` to one room; `a` has seen `b` arrive.
async fn pair(s: &Server, r: &str) -> (Client, Client) {
    let mut a = s.client("a").await;
    let mut b = s.client("b").await;
    a.join(r).await;
    b.join(r).await;
    assert_eq!(
        a.expect("peer-joined").await["peer"]["peer_id"],
        b.peer_id.as_str()
    );
    (a, b)
}

/// Asserts docs/protocol.md §2.2, §5.4, §7.1, §7.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_off_and_nobody_else_waits() {
    let s = Server::start(|c| {
        c.limits.rate = 100_000.0;
        c.limits.rate_burst = 100_000.0;
        c.limits.outbox_bytes = 512 * 1024;
        c.grace = Duration::from_millis(500);
    })
    .await;
    let r = room("slow");
    let (mut sender, mut reader) = pair(&s, &r).await;
    // `stuck` joins and then never reads again.
    let mut stuck = s.client("stuck").await;
    stuck.join(&r).await;
    sender.expect("peer-joined").await;
    reader.expect("peer-joined").await;
    let stuck_id = stuck.peer_id.clone();

    // The reader reads as it comes; `stuck` reads nothing.
    let total = 1000;
    let reading = tokio::spawn(async move {
        for i in 0..total {
            let m = reader.expect("message").await;
            assert_eq!(m["data"]["i"], i, "in order, none lost");
        }
        reader
    });
    let chunk = "z".repeat(15 * 1024);
    for i in 0..total {
        sender
            .send(json!({"type":"message","data":{"i":i,"pad":chunk}}))
            .await;
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut reader = reading.await.expect("the reader got everything");
    // `stuck` was dropped as a slow reader: held for the grace, then gone.
    for c in [&mut sender, &mut reader] {
        let l = c.expect_within("peer-left", Duration::from_secs(5)).await;
        assert_eq!(l["peer_id"], stuck_id.as_str());
        assert_eq!(l["reason"], "timeout", "a slow reader counts as dropped");
    }
    sender.send(json!({"type":"ping"})).await;
    sender.expect("pong").await;
    // Its socket is closed: with 1013 when the close frame still fits behind
    // what its buffers hold, else without one (it was not reading).
    let code = stuck.closed(Duration::from_secs(10)).await;
    assert!(matches!(code, Some(1013) | None), "closed with {code:?}");
    assert_eq!(
        s.metric("signaling_forced_closes_total{cause=\"slow_reader\"}")
            .await,
        1
    );
    s.stop().await;
}

/// Asserts docs/protocol.md §2.2, §6, §7.1, §7.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_refused_then_closed_and_the_room_carries_on() {
    let s = Server::start(|_| {}).await;
    let r = room("flood");
    let (mut flooder, mut other) = pair(&s, &r).await;
    for _ in 0..400 {
        flooder.send(json!({"type":"ping"})).await;
    }
    // Refusals first (the close code itself is checked in the next test).
    let mut limited = 0;
    while let Some(v) = flooder.next(Duration::from_secs(5)).await {
        if v["type"] == "error" {
            assert_eq!(v["code"], "rate_limited");
            limited += 1;
        } else {
            assert_eq!(v["type"], "pong", "{v}");
        }
    }
    assert!(limited > 0, "some pings were refused first");
    let l = other.expect("peer-left").await;
    assert_eq!(l["reason"], "disconnected");
    let mut third = s.client("third").await;
    let j = third.join(&r).await;
    assert_eq!(peer_ids(&j["peers"]), [other.peer_id.clone()]);
    assert_eq!(
        s.metric("signaling_forced_closes_total{cause=\"flood\"}")
            .await,
        1
    );
    s.stop().await;
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_close_carries_code_1008() {
    let s = Server::start(|_| {}).await;
    let mut c = s.client("flooder").await;
    c.join(&room("flood1008")).await;
    for _ in 0..400 {
        c.send(json!({"type":"message","data":1})).await;
    }
    assert_eq!(c.closed(Duration::from_secs(5)).await, Some(1008));
    s.stop().await;
}

/// Asserts docs/protocol.md §2.2, §7.1, §7.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_past_the_read_limit_closes_with_1009_and_others_carry_on() {
    let s = Server::start(|_| {}).await;
    let r = room("huge");
    let (mut big, mut other) = pair(&s, &r).await;
    big.send_text("x".repeat(300 * 1024)).await;
    assert_eq!(big.closed(Duration::from_secs(5)).await, Some(1009));
    let l = other.expect("peer-left").await;
    assert_eq!(l["reason"], "disconnected");
    other.send(json!({"type":"ping"})).await;
    other.expect("pong").await;
    s.stop().await;
}

/// Asserts docs/protocol.md §3, §6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_any_shape_gets_errors_and_no_panic() {
    let s = Server::start(|c| {
        c.limits.rate = 100_000.0;
        c.limits.rate_burst = 100_000.0;
    })
    .await;
    let r = room("garbage");
    let (mut a, mut b) = pair(&s, &r).await;
    let nested = "[".repeat(60_000);
    let frames = [
        nested.as_str(),
        "{\"type\":\"join\",\"room\":\"\u{0}\"}",
        "{\"type\":\"message\",\"to\":5,\"data\":1}",
        "{\"type\":\"offer\",\"to\":\"x\",\"sdp\":\"\\u0000\"}",
        "{\"type\":\"update\",\"meta\":{\"a\":",
        "{\"id\":\"ok\",\"type\":\"leave\",\"type\":\"leave\"}",
        "\u{feff}{\"type\":\"ping\"}",
        "{\"type\":\"join\",\"room\":\"r\",\"name\":\"a\\u0007b\"}",
    ];
    for f in frames {
        a.send_text(f.to_string()).await;
        let e = a.next(Duration::from_secs(5)).await;
        let shown: String = f.chars().take(40).collect();
        assert!(
            e.as_ref()
                .is_some_and(|e| e["type"] == "error" && e["code"].is_string()),
            "after {shown:?}: {e:?}"
        );
    }
    a.send(json!({"type":"message","to":b.peer_id,"data":"still fine"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "still fine");
    b.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// Asserts docs/protocol.md §2.2, §5.4, §7.1, §7.2, §11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_heartbeat_timeout() {
    let s = Server::start(|c| {
        c.limits.heartbeat_timeout = Duration::from_millis(1200);
        c.limits.ping_interval = Duration::from_millis(300);
        c.grace = Duration::from_millis(500);
    })
    .await;
    let r = room("silent");
    let (mut a, mut silent) = pair(&s, &r).await;
    // `a` keeps reading (so it answers pings); `silent` never reads again,
    // so it never answers one: after the timeout it is a drop, then gone.
    let l = a.expect_within("peer-left", Duration::from_secs(5)).await;
    assert_eq!(l["peer_id"], silent.peer_id.as_str());
    assert_eq!(l["reason"], "timeout");
    a.send(json!({"type":"ping"})).await;
    a.expect("pong").await;
    assert_eq!(
        silent.closed(Duration::from_secs(2)).await,
        None,
        "no close frame to a dead peer"
    );
    s.stop().await;
}

/// Asserts docs/protocol.md §11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_a_client_that_answers_outlives_the_heartbeat_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = Server::start(|c| {
        c.limits.heartbeat_timeout = Duration::from_millis(1000);
        c.limits.ping_interval = Duration::from_millis(200);
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws())
        .await
        .expect("connect");
    let join = json!({"type":"join","room":room("pings")}).to_string();
    ws.send(Message::text(join)).await.expect("join");
    // Read for three heartbeat timeouts, saying nothing but the pongs that
    // tungstenite answers each ping with.
    let (mut pings, mut joined) = (0, false);
    let until = tokio::time::Instant::now() + Duration::from_millis(3000);
    while let Ok(Some(frame)) = tokio::time::timeout_at(until, ws.next()).await {
        match frame.expect("frame") {
            Message::Ping(_) => pings += 1,
            Message::Text(t) => joined |= t.contains("\"joined\""),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert!(joined);
    assert!(pings >= 10, "a ping every 200 ms, got {pings} in 3 s");
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("still open");
    let reply = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                return t.to_string();
            }
        }
    })
    .await
    .expect("a reply");
    assert!(reply.contains("pong"), "{reply}");
    s.stop().await;
}

/// Streams control frames made by `frame` from a raw socket until the server
/// closes it; returns the close code it sent and how long that took.
async fn stream_control_frames(
    s: &Server,
    frame: fn() -> tokio_tungstenite::tungstenite::Message,
) -> (Option<u16>, std::time::Duration) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // Before the handshake: the server's deadline starts when it accepts,
    // which is before the client sees the handshake's answer.
    let started = std::time::Instant::now();
    let (ws, _) = tokio_tungstenite::connect_async(s.ws())
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    let sending = tokio::spawn(async move {
        // Bounded: 200,000 frames at most, in bursts of 100.
        for _ in 0..2_000 {
            for _ in 0..100 {
                if tx.feed(frame()).await.is_err() {
                    return;
                }
            }
            if tx.flush().await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = rx.next().await {
            match m {
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed within 10 s");
    sending.abort();
    (code, started.elapsed())
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_streaming_pongs_without_joining_is_closed_at_the_join_deadline() {
    let s = Server::start(|c| {
        c.limits.join_deadline = Duration::from_millis(500);
        // The frame budget follows the message rate: lifted, so the pongs
        // keep coming until the deadline, which is what is tested here
        // (unsolicited pongs over the budget: signaling/tests/flood.rs).
        c.limits.rate = 1_000_000.0;
        c.limits.rate_burst = 1_000_000.0;
    })
    .await;
    let (code, after) = stream_control_frames(&s, || {
        tokio_tungstenite::tungstenite::Message::Pong(Default::default())
    })
    .await;
    assert_eq!(code, Some(1008));
    assert!(
        after >= Duration::from_millis(500),
        "closed after {after:?}"
    );
    s.stop().await;
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_closed_as_a_flood() {
    let s = Server::start(|c| {
        c.limits.rate = 10.0;
        c.limits.rate_burst = 10.0;
        c.limits.flood_close_after = 50;
    })
    .await;
    let (code, after) = stream_control_frames(&s, || {
        tokio_tungstenite::tungstenite::Message::Ping(Default::default())
    })
    .await;
    assert_eq!(code, Some(1008));
    // Well before the 10 s join deadline: it was the flood rule.
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    s.stop().await;
}

/// Asserts docs/protocol.md §2.2, §5.1, §6, §7.1, §9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_tokens_work_once_within_the_grace_and_take_over_a_stale_connection() {
    let s = Server::start(|c| c.grace = Duration::from_millis(800)).await;
    let r = room("resume");
    let (mut a, b) = pair(&s, &r).await;
    let (b_id, first_token) = (b.peer_id.clone(), b.resume.clone());

    // Resume while the old connection is still open: the old one is retired.
    let mut old = b;
    let mut b2 = s.client("b2").await;
    b2.join_with(&r, json!({"resume": first_token})).await;
    assert_eq!(b2.peer_id, b_id);
    assert_eq!(old.closed(Duration::from_secs(3)).await, Some(4000));
    a.expect_silence(Duration::from_millis(400)).await;

    // The spent token fails; the fresh one works once.
    let mut x = s.client("x").await;
    x.send(json!({"type":"join","room":r,"resume":first_token}))
        .await;
    assert_eq!(x.expect("error").await["code"], "resume_failed");
    let second = b2.resume.clone();
    b2.drop_tcp();
    let mut b3 = s.client("b3").await;
    b3.join_with(&r, json!({"resume": second.clone()})).await;
    assert_eq!(b3.peer_id, b_id);
    x.send(json!({"type":"join","room":r,"resume":second}))
        .await;
    assert_eq!(x.expect("error").await["code"], "resume_failed");
    a.expect_silence(Duration::from_millis(300)).await;

    // After the grace it is too late.
    let late = b3.resume.clone();
    b3.drop_tcp();
    let l = a.expect_within("peer-left", Duration::from_secs(3)).await;
    assert_eq!(l["reason"], "timeout");
    x.send(json!({"type":"join","room":r,"resume":late})).await;
    assert_eq!(x.expect("error").await["code"], "resume_failed");
    // ... and the connection can still join afresh.
    x.join(&r).await;
    assert_ne!(x.peer_id, b_id);
    s.stop().await;
}

const SECRET: &str = "e2e-auth-secret-0123456789abcdefghijk";

fn token(claims: serde_json::Value) -> String {
    signaling::auth::Auth::new(SECRET).sign(&claims)
}

/// Asserts docs/protocol.md §1, §4.1, §6, §12.1, §12.2, §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_the_api_need_valid_tokens_when_a_secret_is_set() {
    let s = Server::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("auth");
    let exp = signaling::auth::now_unix() + 600;
    let mut c = s.client("c").await;
    let refused = [
        json!({"type":"join","room":r}),
        json!({"type":"join","room":r,"token":token(json!({"room":"elsewhere","exp":exp}))}),
        json!({"type":"join","room":r,"token":token(json!({"room":r,"exp":exp - 601}))}),
        json!({"type":"join","room":r,"token":signaling::auth::Auth::new("wrong").sign(&json!({"room":r,"exp":exp}))}),
        json!({"type":"join","room":r,"token":"not.a.jwt"}),
    ];
    for m in refused {
        c.send(m.clone()).await;
        assert_eq!(c.expect("error").await["code"], "unauthorized", "{m}");
    }
    // In the join message, with `sub` as the default name...
    let j = c
        .join_with(
            &r,
            json!({"token": token(json!({"sub":"carol","room":r,"exp":exp}))}),
        )
        .await;
    assert_eq!(j["room"], r.as_str());
    // ...or in the query string, for browsers; an explicit name wins.
    let q = token(json!({"sub":"dave","room":"*","exp":exp}));
    let mut d = Client::connect(&format!("{}?token={q}", s.ws()), "d").await;
    let jd = d.join_with(&r, json!({"name":"D."})).await;
    assert_eq!(jd["peers"][0]["name"], "carol");
    assert_eq!(c.expect("peer-joined").await["peer"]["name"], "D.");

    let path = format!("/api/rooms/{r}");
    assert_eq!(http_get(s.addr, &path).await.0, 401);
    let user = format!("Bearer {}", token(json!({"room":"*","exp":exp})));
    assert_eq!(
        http_get_with(s.addr, "/api/rooms", &[("Authorization", &user)])
            .await
            .0,
        401
    );
    let admin = format!("Bearer {}", token(json!({"admin":true,"exp":exp})));
    let (status, body) = http_get_with(s.addr, &path, &[("Authorization", &admin)]).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        peer_ids(&v["peers"]),
        [c.peer_id.clone(), d.peer_id.clone()]
    );
    s.stop().await;
}

/// Asserts docs/protocol.md §14.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_relays_errors_and_rooms() {
    let s = Server::start(|_| {}).await;
    let r = room("metrics");
    let (mut a, mut b) = pair(&s, &r).await;
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"v=0"}))
        .await;
    b.expect("offer").await;
    b.send(json!({"type":"message","data":1})).await;
    a.expect("message").await;
    a.send(json!({"type":"answer","to":"nobody","sdp":"v=0"}))
        .await;
    a.expect("error").await;
    assert_eq!(
        s.metric("signaling_messages_relayed_total{type=\"offer\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("signaling_messages_relayed_total{type=\"message\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("signaling_errors_total{code=\"unknown_peer\"}")
            .await,
        1
    );
    assert_eq!(s.metric("signaling_rooms ").await, 1);
    assert_eq!(s.metric("signaling_peers ").await, 2);
    assert_eq!(s.metric("signaling_connections_open ").await, 2);
    assert!(s.metric("signaling_relay_latency_seconds_count").await >= 2);
    s.stop().await;
}

/// Asserts docs/protocol.md §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_is_served_at_the_root() {
    let s = Server::start(|_| {}).await;
    let (status, body) = http_get(s.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    assert!(body.contains("app.js"), "the page loads its script");
    let (status, script) = http_get(s.addr, "/app.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("/ws"), "the script talks to /ws");
    s.stop().await;
}

/// Asserts docs/protocol.md §1, §5.8, §6, §7.1, §10, §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_joins_are_unavailable_and_new_sockets_refused() {
    let s = Server::start(|c| c.drain_timeout = Duration::from_secs(3)).await;
    let mut a = s.client("a").await;
    s.handle.shutdown();
    let g = a.expect("goaway").await;
    assert_eq!(g["reason"], "shutdown");
    a.send(json!({"type":"join","room":room("late")})).await;
    assert_eq!(a.expect("error").await["code"], "unavailable");
    assert_eq!(http_get(s.addr, "/readyz").await.0, 503);
    assert_eq!(http_get(s.addr, "/ws").await.0, 503);
    assert_eq!(a.closed(Duration::from_secs(5)).await, Some(1012));
    s.stop().await;
}
