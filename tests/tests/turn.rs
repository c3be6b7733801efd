//! TURN credentials from `joined.ice_servers` against a real coturn with the
//! same shared secret: they allocate a relay; wrong or expired ones do not.

use signaling_client::{Client, ClientConfig, JoinOptions};
use signaling_e2e::turn::Turn;
use std::time::Duration;

const SECRET: &str = "turn-e2e-secret";

/// Asserts docs/protocol.md §12.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_carries_turn_credentials_that_coturn_accepts() {
    let turn = Turn::start(SECRET);
    let cfg = signaling::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        stun_urls: vec![format!("stun:127.0.0.1:{}", turn.port)],
        turn_urls: vec![turn.url()],
        turn_secret: Some(SECRET.into()),
        turn_ttl: Duration::from_secs(300),
        ..Default::default()
    };
    let server = signaling::bind(cfg).await.expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let (client, _events) = Client::connect(ClientConfig::new(format!("ws://{addr}/ws")))
        .await
        .expect("connect");
    let joined = client
        .join("turn-room", JoinOptions::default())
        .await
        .expect("join");

    assert_eq!(joined.ice_servers.len(), 2, "{:?}", joined.ice_servers);
    assert_eq!(
        joined.ice_servers[0]["urls"][0],
        format!("stun:127.0.0.1:{}", turn.port)
    );
    let t = &joined.ice_servers[1];
    assert_eq!(t["urls"][0], turn.url());
    let username = t["username"].as_str().expect("username");
    let credential = t["credential"].as_str().expect("credential");
    let (expiry, peer) = username.split_once(':').expect("<expiry>:<peer_id>");
    let peer = peer.to_string();
    assert_eq!(peer, joined.peer_id);
    let expiry: u64 = expiry.parse().expect("unix time");
    let now = signaling::auth::now_unix();
    assert!(
        (now + 290..=now + 301).contains(&expiry),
        "expiry {expiry} vs now {now}"
    );
    assert!(
        !joined
            .ice_servers
            .iter()
            .any(|s| s.to_string().contains(SECRET))
    );

    let (u, c) = (username.to_string(), credential.to_string());
    let checks = tokio::task::spawn_blocking(move || {
        let good = turn.allocation_works(&u, &c);
        let wrong = turn.allocation_works(&u, "d3JvbmcgcGFzc3dvcmQ=");
        let old = format!("{}:{peer}", now - 60);
        let expired = turn.allocation_works(&old, &signaling::ice::turn_password(SECRET, &old));
        let other_secret = turn.allocation_works(&u, &signaling::ice::turn_password("not-it", &u));
        (good, wrong, expired, other_secret)
    })
    .await
    .expect("checks");
    assert_eq!(
        checks,
        (true, false, false, false),
        "(good, wrong, expired, other secret)"
    );
}

/// Asserts docs/protocol.md §12.1, §12.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_turn_username_names_the_verified_identity() {
    let turn = Turn::start(SECRET);
    let auth_secret = "turn-identity-auth-secret-0123456789abcdef";
    let cfg = signaling::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        turn_urls: vec![turn.url()],
        turn_secret: Some(SECRET.into()),
        auth_secret: Some(auth_secret.into()),
        ..Default::default()
    };
    let server = signaling::bind(cfg).await.expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let token = signaling::auth::Auth::new(auth_secret).sign(&serde_json::json!({
        "room": "turn-id", "sub": "ada", "exp": signaling::auth::now_unix() + 60,
    }));
    let (client, _events) = Client::connect(ClientConfig::new(format!("ws://{addr}/ws")))
        .await
        .expect("connect");
    let joined = client
        .join(
            "turn-id",
            JoinOptions {
                token: Some(token),
                ..Default::default()
            },
        )
        .await
        .expect("join");
    let t = &joined.ice_servers[0];
    let username = t["username"].as_str().expect("username").to_string();
    let credential = t["credential"].as_str().expect("credential").to_string();
    let (_, who) = username.split_once(':').expect("<expiry>:<identity>");
    assert_eq!(who, "ada", "the token's identity, not the peer id");
    assert_ne!(who, joined.peer_id);
    let works = tokio::task::spawn_blocking(move || turn.allocation_works(&username, &credential))
        .await
        .expect("check");
    assert!(works, "coturn accepts the identity-bound credentials");
}
