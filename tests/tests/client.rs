//! The Rust client crate against the real server: typed events, relays,
//! reconnecting with resume through real network drops and `goaway`, and
//! what the application's backend does through the admin API (removals
//! that end the client for good, room metadata, updates, server messages).

use serde_json::{Value, json};
use signaling_client::{Client, ClientConfig, ClientError, Event, Events, JoinOptions, Removal};
use signaling_e2e::client::http_request;
use signaling_e2e::proxy::Proxy;
use signaling_e2e::room;
use signaling_e2e::server::api_room;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

async fn server(
    tweak: impl FnOnce(&mut signaling::Config),
) -> (std::net::SocketAddr, signaling::ShutdownHandle) {
    let s = signaling_e2e::server::TestServer::start(tweak).await;
    (s.addr, s.handle.clone())
}

fn config(url: String) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.ping_interval = Duration::from_millis(300);
    c.timeout = Duration::from_secs(2);
    c.max_backoff = Duration::from_millis(300);
    c
}

/// The next event that is not a presence change of no interest here.
async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the event stream is open")
}

async fn silence(events: &mut Events, d: Duration) {
    if let Ok(Some(e)) = tokio::time::timeout(d, events.recv()).await {
        panic!("expected no event, got {e:?}");
    }
}

/// Asserts docs/protocol.md §4.2, §4.3, §4.4, §4.6, §4.7, §5.2, §5.3, §5.4, §5.5, §6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_meet_and_exchange_everything() {
    let (addr, _h) = server(|_| {}).await;
    let url = format!("ws://{addr}/ws");
    let r = room("meet");
    let (a, mut ea) = Client::connect(config(url.clone())).await.expect("a");
    let (b, mut eb) = Client::connect(config(url)).await.expect("b");
    let ja = a
        .join(
            &r,
            JoinOptions {
                name: Some("ann".into()),
                meta: Some(json!({"cam":true})),
                token: None,
            },
        )
        .await
        .expect("a joins");
    assert!(ja.peers.is_empty());
    let jb = b.join(&r, JoinOptions::default()).await.expect("b joins");
    assert_eq!(jb.peers.len(), 1);
    assert_eq!(
        (jb.peers[0].name.as_str(), &jb.peers[0].meta),
        ("ann", &json!({"cam":true}))
    );
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(p) if p.peer_id == jb.peer_id));

    b.offer(&ja.peer_id, "v=0\r\n").expect("offer");
    assert_eq!(
        next(&mut ea).await,
        Event::Offer {
            from: jb.peer_id.clone(),
            sdp: "v=0\r\n".into()
        }
    );
    a.answer(&jb.peer_id, "v=0 answer").expect("answer");
    assert_eq!(
        next(&mut eb).await,
        Event::Answer {
            from: ja.peer_id.clone(),
            sdp: "v=0 answer".into()
        }
    );
    let cand = signaling_client::IceCandidate {
        candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: Some("u".into()),
    };
    a.candidate(&jb.peer_id, Some(cand.clone()))
        .expect("candidate");
    a.candidate(&jb.peer_id, None).expect("end of candidates");
    assert_eq!(
        next(&mut eb).await,
        Event::Candidate {
            from: ja.peer_id.clone(),
            candidate: Some(cand)
        }
    );
    assert_eq!(
        next(&mut eb).await,
        Event::Candidate {
            from: ja.peer_id.clone(),
            candidate: None
        }
    );
    b.message(None, json!({"hello":[1,2]})).expect("broadcast");
    assert_eq!(
        next(&mut ea).await,
        Event::Message {
            from: jb.peer_id.clone(),
            data: json!({"hello":[1,2]})
        }
    );
    b.update(json!({"muted":true})).expect("update");
    match next(&mut ea).await {
        Event::PeerUpdated(p) => assert_eq!(p.meta, json!({"muted":true})),
        e => panic!("{e:?}"),
    }
    a.offer("nobody", "v=0").expect("queued");
    assert_eq!(
        next(&mut ea).await,
        Event::Error {
            code: "unknown_peer".into(),
            message: "no such peer in this room".into()
        }
    );

    // Joining twice is refused; leaving and joining again works.
    assert!(
        matches!(b.join(&r, JoinOptions::default()).await, Err(ClientError::Refused { code, .. }) if code == "already_joined")
    );
    b.leave().await.expect("leave");
    assert_eq!(
        next(&mut ea).await,
        Event::PeerLeft {
            peer_id: jb.peer_id.clone(),
            reason: "left".into()
        }
    );
    let again = b
        .join(&r, JoinOptions::default())
        .await
        .expect("join again");
    assert_ne!(again.peer_id, jb.peer_id);
    assert_eq!(b.peer_id(), Some(again.peer_id.clone()));
    b.close();
    next(&mut ea).await; // peer-joined of b's second life
    assert_eq!(
        next(&mut ea).await,
        Event::PeerLeft {
            peer_id: again.peer_id,
            reason: "disconnected".into()
        }
    );
}

/// Asserts docs/protocol.md §9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_and_the_others_never_notice() {
    let (addr, _h) = server(|_| {}).await;
    let proxy = Proxy::start(addr).await;
    let r = room("drop");
    let (a, mut ea) = Client::connect(config(format!("ws://{addr}/ws")))
        .await
        .expect("a");
    let (b, mut eb) = Client::connect(config(proxy.ws()))
        .await
        .expect("b via proxy");
    let ja = a.join(&r, JoinOptions::default()).await.expect("a joins");
    let jb = b.join(&r, JoinOptions::default()).await.expect("b joins");
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(_)));

    proxy.set_up(false);
    proxy.cut();
    // Messages to b during the gap are kept for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.message(Some(&jb.peer_id), json!("during the gap"))
        .expect("send");
    // b sends while away: queued by the client, sent after the resume.
    b.message(Some(&ja.peer_id), json!("from b while away"))
        .expect("queued");
    assert!(matches!(next(&mut eb).await, Event::Reconnecting { .. }));
    proxy.set_up(true);
    let resumed = loop {
        match next(&mut eb).await {
            Event::Reconnecting { .. } => continue,
            Event::Resumed(j) => break j,
            e => panic!("expected Resumed, got {e:?}"),
        }
    };
    assert_eq!(resumed.peer_id, jb.peer_id, "same peer after the resume");
    assert_eq!(resumed.peers.len(), 1);
    assert_eq!(
        next(&mut eb).await,
        Event::Message {
            from: ja.peer_id.clone(),
            data: json!("during the gap")
        }
    );
    assert_eq!(
        next(&mut ea).await,
        Event::Message {
            from: jb.peer_id.clone(),
            data: json!("from b while away")
        }
    );
    silence(&mut ea, Duration::from_millis(500)).await;
}

/// Asserts docs/protocol.md §7.2, §9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_late_to_resume_the_client_rejoins_as_a_new_peer() {
    let (addr, _h) = server(|c| c.grace = Duration::from_millis(300)).await;
    let proxy = Proxy::start(addr).await;
    let r = room("late");
    let (_a, mut ea) = Client::connect(config(format!("ws://{addr}/ws")))
        .await
        .expect("a");
    let (b, mut eb) = Client::connect(config(proxy.ws())).await.expect("b");
    _a.join(&r, JoinOptions::default()).await.expect("a joins");
    let jb = b.join(&r, JoinOptions::default()).await.expect("b joins");
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(_)));
    proxy.set_up(false);
    proxy.cut();
    assert_eq!(
        next(&mut ea).await,
        Event::PeerLeft {
            peer_id: jb.peer_id.clone(),
            reason: "timeout".into()
        }
    );
    proxy.set_up(true);
    let rejoined = loop {
        match next(&mut eb).await {
            Event::Reconnecting { .. } => continue,
            Event::Rejoined(j) => break j,
            e => panic!("expected Rejoined, got {e:?}"),
        }
    };
    assert_ne!(rejoined.peer_id, jb.peer_id);
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(p) if p.peer_id == rejoined.peer_id));
}

/// Asserts docs/protocol.md §10, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_moves_the_client_to_another_instance() {
    let redis = signaling_e2e::redis::Redis::start();
    let (n1, h1) = server(signaling_e2e::server::clustered(redis.url(), "cg1")).await;
    let (n2, _h2) = server(signaling_e2e::server::clustered(redis.url(), "cg2")).await;
    let proxy = Proxy::start(n1).await;
    let r = room("goaway");
    let (a, mut ea) = Client::connect(config(format!("ws://{n2}/ws")))
        .await
        .expect("a");
    let (b, mut eb) = Client::connect(config(proxy.ws())).await.expect("b");
    let ja = a
        .join(&r, JoinOptions::default())
        .await
        .expect("a joins on n2");
    // b's first sight of a may come with its join or right after it.
    let jb = b
        .join(&r, JoinOptions::default())
        .await
        .expect("b joins on n1");
    if jb.peers.is_empty() {
        assert!(matches!(next(&mut eb).await, Event::PeerJoined(p) if p.peer_id == ja.peer_id));
    }
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(_)));
    proxy.set_backend(n2);
    h1.shutdown();
    let resumed = loop {
        match next(&mut eb).await {
            Event::Reconnecting { .. } => continue,
            Event::Resumed(j) => break j,
            e => panic!("expected Resumed, got {e:?}"),
        }
    };
    assert_eq!(resumed.peer_id, jb.peer_id);
    silence(&mut ea, Duration::from_millis(800)).await;
    a.offer(&jb.peer_id, "v=0").expect("offer");
    assert_eq!(
        next(&mut eb).await,
        Event::Offer {
            from: ja.peer_id,
            sdp: "v=0".into()
        }
    );
}

#[tokio::test]
async fn connecting_to_nothing_is_a_typed_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let err = Client::connect(config(format!("ws://127.0.0.1:{port}/ws")))
        .await
        .err();
    assert!(matches!(err, Some(ClientError::Connect { .. })), "{err:?}");
}

/// A request to the admin API (open mode: no token), its status and body.
async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string());
    let r = http_request(addr, method, path, &[], body.as_deref()).await;
    (r.status, r.body)
}

/// The events up to the stream's end (the driver has stopped), within 5 s.
async fn until_ended(events: &mut Events) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => seen.push(e),
            Ok(None) => return seen,
            Err(_) => panic!("the event stream did not end: {seen:?}"),
        }
    }
}

/// Asserts that `c` stopped for good with `why`: the stream ends with
/// `Closed(Removed)`, nothing reconnected, and later calls fail with it.
/// (Members removed together may first hear of each other leaving.)
async fn stopped_for_good(c: &Client, events: &mut Events, why: Removal) {
    let seen = until_ended(events).await;
    match seen.split_last() {
        Some((Event::Closed(ClientError::Removed { why: w, reason }), before))
            if before.iter().all(|e| matches!(e, Event::PeerLeft { .. })) =>
        {
            assert_eq!(*w, why, "{reason}");
            assert!(!reason.is_empty(), "the close frame's reason is kept");
        }
        _ => panic!("expected only Closed(Removed {{ {why:?} }}) at the end, got {seen:?}"),
    }
    assert!(
        matches!(c.closed_because(), Some(ClientError::Removed { why: w, .. }) if w == why),
        "{:?}",
        c.closed_because()
    );
    assert_eq!(c.peer_id(), None, "no longer in a room");
    let later = c.join(&room("after"), JoinOptions::default()).await;
    assert!(
        matches!(&later, Err(ClientError::Removed { why: w, .. }) if *w == why),
        "a later join: {later:?}"
    );
    let send = c.message(None, json!("anyone?"));
    assert!(
        matches!(&send, Err(ClientError::Removed { why: w, .. }) if *w == why),
        "a later send: {send:?}"
    );
}

/// Asserts docs/protocol.md §14.2 (kick, close code 4001).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_client_stops_for_good_and_does_not_come_back() {
    let (addr, _h) = server(|_| {}).await;
    let url = format!("ws://{addr}/ws");
    let r = room("kick");
    let (a, mut ea) = Client::connect(config(url.clone())).await.expect("a");
    let (b, mut eb) = Client::connect(config(url)).await.expect("b");
    let ja = a.join(&r, JoinOptions::default()).await.expect("a joins");
    let jb = b.join(&r, JoinOptions::default()).await.expect("b joins");
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(_)));

    let (status, body) = admin(
        addr,
        "DELETE",
        &format!("/api/rooms/{r}/peers/{}", jb.peer_id),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    stopped_for_good(&b, &mut eb, Removal::Kicked).await;
    assert_eq!(
        next(&mut ea).await,
        Event::PeerLeft {
            peer_id: jb.peer_id.clone(),
            reason: "kicked".into()
        }
    );
    // A client that came back would be in the room again by now (as a new
    // peer: the resume token is dead), and `a` would have seen it join.
    silence(&mut ea, Duration::from_secs(1)).await;
    assert_eq!(api_room(addr, &r).await, vec![ja.peer_id]);
}

/// Asserts docs/protocol.md §14.2 (room close, close code 4002).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_stops_its_clients_for_good() {
    let (addr, _h) = server(|_| {}).await;
    let url = format!("ws://{addr}/ws");
    let r = room("close");
    let (a, mut ea) = Client::connect(config(url.clone())).await.expect("a");
    let (b, mut eb) = Client::connect(config(url)).await.expect("b");
    a.join(&r, JoinOptions::default()).await.expect("a joins");
    b.join(&r, JoinOptions::default()).await.expect("b joins");
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(_)));

    let (status, body) = admin(addr, "DELETE", &format!("/api/rooms/{r}"), None).await;
    assert_eq!(status, 200, "{body}");
    stopped_for_good(&a, &mut ea, Removal::RoomClosed).await;
    stopped_for_good(&b, &mut eb, Removal::RoomClosed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api_room(addr, &r).await,
        Vec::<String>::new(),
        "nobody came back"
    );
}

/// Asserts docs/protocol.md §14.2 (same identity replaced, close code 4003).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_replaced_by_the_same_identity_stops_for_good() {
    const SECRET: &str = "client-test-secret-of-32-bytes-or-more";
    let (addr, _h) = server(|c| {
        c.auth_secret = Some(SECRET.into());
        c.same_identity = signaling::auth::SameIdentity::Replace;
    })
    .await;
    let url = format!("ws://{addr}/ws");
    let r = room("same");
    let exp = signaling::auth::now_unix() + 600;
    let token = |sub: &str| {
        signaling::auth::Auth::new(SECRET).sign(&json!({"room": r, "sub": sub, "exp": exp}))
    };
    let joining = |sub: &str| JoinOptions {
        token: Some(token(sub)),
        ..JoinOptions::default()
    };
    let (w, mut ew) = Client::connect(config(url.clone())).await.expect("watcher");
    let (old, mut eold) = Client::connect(config(url.clone())).await.expect("old");
    let (new, _enew) = Client::connect(config(url)).await.expect("new");
    w.join(&r, joining("watcher")).await.expect("watcher joins");
    let jold = old.join(&r, joining("alice")).await.expect("old joins");
    match next(&mut ew).await {
        Event::PeerJoined(p) => assert_eq!(p.identity.as_deref(), Some("alice")),
        e => panic!("{e:?}"),
    }
    let jnew = new.join(&r, joining("alice")).await.expect("new joins");
    stopped_for_good(&old, &mut eold, Removal::Superseded).await;
    let mut seen = [next(&mut ew).await, next(&mut ew).await];
    seen.sort_by_key(|e| matches!(e, Event::PeerJoined(_)));
    assert_eq!(
        seen[0],
        Event::PeerLeft {
            peer_id: jold.peer_id,
            reason: "replaced".into()
        }
    );
    assert!(matches!(&seen[1], Event::PeerJoined(p) if p.peer_id == jnew.peer_id));
    silence(&mut ew, Duration::from_secs(1)).await;
}

/// Asserts docs/protocol.md §14.2 (room meta, peer updates, server
/// messages) as the client's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_backend_does_arrives_as_typed_events() {
    let (addr, _h) = server(|_| {}).await;
    let url = format!("ws://{addr}/ws");
    let r = room("backend");
    let (a, mut ea) = Client::connect(config(url.clone())).await.expect("a");
    let (b, mut eb) = Client::connect(config(url.clone())).await.expect("b");
    let ja = a.join(&r, JoinOptions::default()).await.expect("a joins");
    assert_eq!(ja.room_meta, json!({}), "no metadata set yet");
    let jb = b.join(&r, JoinOptions::default()).await.expect("b joins");
    assert!(matches!(next(&mut ea).await, Event::PeerJoined(_)));

    let meta = json!({"topic":"standup","n":[1,2]});
    let (status, body) = admin(
        addr,
        "PUT",
        &format!("/api/rooms/{r}/meta"),
        Some(meta.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for events in [&mut ea, &mut eb] {
        assert_eq!(
            next(events).await,
            Event::RoomUpdated {
                room: r.clone(),
                meta: meta.clone()
            }
        );
    }

    let path = format!("/api/rooms/{r}/peers/{}", jb.peer_id);
    let patch = json!({"name":"Bee","meta":{"hand":true}});
    let (status, body) = admin(addr, "PATCH", &path, Some(patch)).await;
    assert_eq!(status, 200, "{body}");
    match next(&mut eb).await {
        Event::Updated(p) => {
            assert_eq!(
                (p.peer_id.as_str(), p.name.as_str()),
                (jb.peer_id.as_str(), "Bee")
            );
            assert_eq!(p.meta, json!({"hand":true}));
        }
        e => panic!("b expected Updated, got {e:?}"),
    }
    assert!(matches!(next(&mut ea).await, Event::PeerUpdated(p) if p.name == "Bee"));

    let messages = format!("/api/rooms/{r}/messages");
    let (status, body) = admin(
        addr,
        "POST",
        &messages,
        Some(json!({"data":{"notice":"hi"}})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let want = Event::Message {
        from: "server".into(),
        data: json!({"notice":"hi"}),
    };
    assert_eq!(next(&mut ea).await, want);
    assert_eq!(next(&mut eb).await, want);
    let to_a = json!({"data":"just you","to":ja.peer_id});
    assert_eq!(admin(addr, "POST", &messages, Some(to_a)).await.0, 202);
    assert_eq!(
        next(&mut ea).await,
        Event::Message {
            from: "server".into(),
            data: json!("just you")
        }
    );
    silence(&mut eb, Duration::from_millis(300)).await;

    // A later joiner finds the metadata in its join result.
    let (c, _ec) = Client::connect(config(url)).await.expect("c");
    let jc = c.join(&r, JoinOptions::default()).await.expect("c joins");
    assert_eq!(jc.room_meta, meta);
    assert!(jc.peers.iter().any(|p| p.name == "Bee"), "{:?}", jc.peers);
}
