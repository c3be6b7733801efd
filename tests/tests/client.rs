//! The Rust client crate against the real server: typed events, relays,
//! and reconnecting with resume through real network drops and `goaway`.

use serde_json::json;
use signaling_client::{Client, ClientConfig, ClientError, Event, Events, JoinOptions};
use signaling_e2e::proxy::Proxy;
use signaling_e2e::room;
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
