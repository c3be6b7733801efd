//! docs/protocol.md sections 12 (join and admin tokens, `ice_servers`), 14
//! (the HTTP endpoints and their metrics), 15 (what a client of a cluster
//! can rely on) and 16 (compatibility), asserted against real servers: the
//! rules no other test of the project held the server to. Each test names
//! the sections it asserts (`§N.M`), for tests/tests/protocol_coverage.rs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signaling_e2e::both;
use signaling_e2e::client::{Client, Resp, WAIT, http_get, http_request, peer_ids};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::room;
use signaling_e2e::server::{TestServer, wait_readyz};

const SECRET: &str = "protocol-http-auth-secret-0123456789";
const TURN_SECRET: &str = "protocol-turn-secret";

// ---------------------------------------------------------------- §12.1

/// §12.1, §4.1: every refusal reason of a join token gets `unauthorized`
/// with the join's `ref` (a missing, malformed, expired, wrongly signed or
/// other-room token, one without `room` or `exp`, an `alg` that is not the
/// signature's or that no key takes, an `exp` that is this very second, an
/// `nbf` or `iat` in the future), the connection stays open for another
/// try, and claims the document does not define (nor `iss`, `aud` when the
/// server requires none) are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_join_token_is_unauthorized_and_the_connection_stays() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("tokens");
    let now = signaling::auth::now_unix();
    let exp = now + 600;
    let hs256 = json!({"alg":"HS256","typ":"JWT"});
    let refused: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("not a jwt", Some("not.a.jwt".into())),
        ("two parts", Some("eyJhbGciOiJIUzI1NiJ9.e30".into())),
        (
            "wrong secret",
            Some(jwt("another-secret", &hs256, &json!({"room":r,"exp":exp}))),
        ),
        (
            "another room",
            Some(jwt(SECRET, &hs256, &json!({"room":"elsewhere","exp":exp}))),
        ),
        (
            "no room claim",
            Some(jwt(SECRET, &hs256, &json!({"sub":"x","exp":exp}))),
        ),
        (
            "expired",
            Some(jwt(SECRET, &hs256, &json!({"room":r,"exp":now - 1}))),
        ),
        (
            "expires this second",
            Some(jwt(SECRET, &hs256, &json!({"room":r,"exp":now}))),
        ),
        ("no exp", Some(jwt(SECRET, &hs256, &json!({"room":r})))),
        (
            "exp not a number",
            Some(jwt(
                SECRET,
                &hs256,
                &json!({"room":r,"exp":exp.to_string()}),
            )),
        ),
        (
            "alg HS384 over an HS256 signature",
            Some(jwt(
                SECRET,
                &json!({"alg":"HS384","typ":"JWT"}),
                &json!({"room":r,"exp":exp}),
            )),
        ),
        (
            "alg RS256",
            Some(jwt(
                SECRET,
                &json!({"alg":"RS256","typ":"JWT"}),
                &json!({"room":r,"exp":exp}),
            )),
        ),
        ("alg none", Some(unsigned(&json!({"room":r,"exp":exp})))),
        (
            "nbf in the future",
            Some(jwt(
                SECRET,
                &hs256,
                &json!({"room":r,"exp":exp,"nbf":now + 60}),
            )),
        ),
        (
            "issued in the future",
            Some(jwt(
                SECRET,
                &hs256,
                &json!({"room":r,"exp":exp,"iat":now + 60}),
            )),
        ),
    ];
    let mut c = s.client("c").await;
    for (i, (why, token)) in refused.iter().enumerate() {
        let mut join = json!({"type":"join","id":i,"room":r});
        if let Some(t) = token {
            join["token"] = json!(t);
        }
        c.send(join).await;
        let e = c.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["ref"].as_u64()),
            (Some("unauthorized"), Some(i as u64)),
            "{why}: {e}"
        );
    }
    // The same connection joins once it brings a good token; `*` admits to
    // every room, and claims nobody required are ignored.
    let good = jwt(
        SECRET,
        &hs256,
        &json!({"room":"*","exp":exp,"nbf":now,"iat":now,"aud":"someone-else",
                "iss":"elsewhere","jti":7,"admin":false,"x-custom":{"a":[1]}}),
    );
    let j = c.join_with(&r, json!({"token": good})).await;
    assert_eq!(j["room"], r.as_str(), "{j}");
    s.stop().await;
}

/// §12.1, §1, §4.1: the token comes from `join.token`, else from
/// `/ws?token=`; a `token` in the join wins over the query string even when
/// it is the worse of the two, and the name defaults to the `sub` of the
/// token that was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_join_wins_over_the_query_string() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("precedence");
    let exp = signaling::auth::now_unix() + 600;
    let query = sign(json!({"room":"*","sub":"from-query","exp":exp}));
    let mut c = Client::connect(&format!("{}?token={query}", s.ws()), "c").await;
    // A bad token in the join is used, not the good one of the query.
    let bad = sign(json!({"room":"elsewhere","sub":"from-join","exp":exp}));
    c.send(json!({"type":"join","id":1,"room":r,"token":bad}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_u64()),
        (Some("unauthorized"), Some(1)),
        "{e}"
    );
    // Without one, the query's token admits, and names the peer.
    c.join(&r).await;
    assert_eq!(listed_names(s.addr, &r).await, ["from-query"]);
    c.send(json!({"type":"leave"})).await;
    c.expect("left").await;
    // A good token in the join: its `sub` names the peer.
    let good = sign(json!({"room":r,"sub":"from-join","exp":exp}));
    c.join_with(&r, json!({"token": good})).await;
    assert_eq!(listed_names(s.addr, &r).await, ["from-join"]);

    // A connection whose query token is bad is still admitted by a good
    // token in its join.
    let mut d = Client::connect(&format!("{}?token=not.a.jwt", s.ws()), "d").await;
    let good = sign(json!({"room":r,"sub":"dee","exp":exp}));
    d.join_with(&r, json!({"token": good})).await;
    s.stop().await;
}

/// §12.1, §9: with auth on, a resume needs a join token too: without one
/// (or with one for another room) it is `unauthorized` and the resume token
/// is not spent; with one, the peer comes back as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_needs_a_valid_join_token_too() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("resume-auth");
    let exp = signaling::auth::now_unix() + 600;
    let token = sign(json!({"room":r,"sub":"ada","exp":exp}));
    let mut a = s.client("a").await;
    a.join_with(&r, json!({"token": token})).await;
    let mut b = s.client("b").await;
    b.join_with(&r, json!({"token": sign(json!({"room":r,"exp":exp}))}))
        .await;
    a.expect("peer-joined").await;
    let (id, resume) = (a.peer_id.clone(), a.resume.clone());
    a.drop_tcp();

    let mut a2 = s.client("a2").await;
    let other = sign(json!({"room":"elsewhere","exp":exp}));
    for (i, extra) in [json!({}), json!({"token": other})].into_iter().enumerate() {
        let mut join = json!({"type":"join","id":i,"room":r,"resume":resume});
        if let (Some(j), Some(e)) = (join.as_object_mut(), extra.as_object()) {
            j.extend(e.clone());
        }
        a2.send(join).await;
        let e = a2.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["ref"].as_u64()),
            (Some("unauthorized"), Some(i as u64)),
            "{e}"
        );
    }
    let j = a2
        .join_with(&r, json!({"token": token, "resume": resume}))
        .await;
    assert_eq!(a2.peer_id, id, "the same peer: {j}");
    b.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// §12.1: the expiry is checked at join only: a member whose token has
/// expired stays, relays to it still arrive and it still gets answers,
/// while a new join with that token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stays_after_its_token_expires() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("expiry");
    let exp = signaling::auth::now_unix() + 2;
    let short = sign(json!({"room":r,"exp":exp}));
    let mut a = s.client("a").await;
    a.join_with(&r, json!({"token": short})).await;
    let mut b = s.client("b").await;
    let long = sign(json!({"room":r,"exp":exp + 600}));
    b.join_with(&r, json!({"token": long})).await;
    a.expect("peer-joined").await;
    // Let the token expire (a wait for the clock, not a timing assertion).
    while signaling::auth::now_unix() < exp + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut late = s.client("late").await;
    late.send(json!({"type":"join","id":"late","room":r,"token":short}))
        .await;
    assert_eq!(late.expect("error").await["code"], "unauthorized");

    b.send(json!({"type":"message","to":a.peer_id,"data":"still here?"}))
        .await;
    assert_eq!(a.expect("message").await["data"], "still here?");
    a.send(json!({"type":"ping","id":1})).await;
    assert_eq!(a.expect("pong").await["ref"], 1);
    let admin = admin_header(SECRET, 600);
    let (status, body) = signaling_e2e::client::http_get_with(
        s.addr,
        &format!("/api/rooms/{r}"),
        &[("Authorization", &admin)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&a.peer_id), "{body}");
    s.stop().await;
}

/// §12.1: `signaling token --room R` without `--name` or `--ttl` mints a
/// join token for R alone, with no `sub`, valid for 24 h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_defaults_to_a_day_and_no_name() {
    let out = tokio::task::spawn_blocking(|| {
        signaling_e2e::server::ServerProcess::run(
            &["token", "--room", "standup"],
            &[("SIGNALING_AUTH_SECRET", SECRET)],
        )
    })
    .await
    .expect("the binary ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().next().expect("the token");
    let now = signaling::auth::now_unix();
    let auth = signaling::auth::Auth::new(SECRET);
    let claims = auth
        .verify_join(token, "standup", now)
        .expect("a join token for the room");
    assert_eq!(claims.sub, None, "no --name, no sub");
    let away = claims.exp - now as f64;
    assert!(
        (86_400.0 - 60.0..=86_400.0).contains(&away),
        "exp {away} s away"
    );
    assert!(auth.verify_join(token, "another", now).is_err());
}

// ---------------------------------------------------------------- §12.2

/// §12.2, §14: `/api/*` takes only `Authorization: Bearer` with a valid
/// admin token signed with the secret; everything else, a token in the
/// query string included, gets 401 with the documented body, on both
/// endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_only_a_valid_admin_bearer_token() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("admin");
    let exp = signaling::auth::now_unix() + 600;
    let mut m = s.client("m").await;
    m.join_with(&r, json!({"token": sign(json!({"room":r,"exp":exp}))}))
        .await;
    let admin = sign(json!({"admin":true,"exp":exp}));
    let bearer = format!("Bearer {admin}");
    let refused: Vec<Refused> = vec![
        ("no header", String::new(), vec![]),
        (
            "a join token",
            String::new(),
            vec![(
                "Authorization",
                format!("Bearer {}", sign(json!({"room":"*","exp":exp}))),
            )],
        ),
        (
            "admin false",
            String::new(),
            vec![(
                "Authorization",
                format!("Bearer {}", sign(json!({"admin":false,"exp":exp}))),
            )],
        ),
        (
            "an expired admin token",
            String::new(),
            vec![("Authorization", admin_header(SECRET, -1))],
        ),
        (
            "an admin token without exp",
            String::new(),
            vec![(
                "Authorization",
                format!("Bearer {}", sign(json!({"admin":true}))),
            )],
        ),
        (
            "another secret",
            String::new(),
            vec![("Authorization", admin_header("another-secret", 600))],
        ),
        (
            "alg none",
            String::new(),
            vec![(
                "Authorization",
                format!("Bearer {}", unsigned(&json!({"admin":true,"exp":exp}))),
            )],
        ),
        (
            "without Bearer",
            String::new(),
            vec![("Authorization", admin.clone())],
        ),
        ("in the query string", format!("?token={admin}"), vec![]),
        (
            "in the query string as access_token",
            format!("?access_token={admin}"),
            vec![],
        ),
    ];
    let want = json!({"error":"unauthorized","message":"an admin token is required"});
    for path in ["/api/rooms".to_string(), format!("/api/rooms/{r}")] {
        for (why, query, headers) in &refused {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let resp = get(s.addr, &format!("{path}{query}"), &headers).await;
            assert_eq!(resp.status, 401, "{path} with {why}: {resp:?}");
            assert_eq!(resp.json(), want, "{path} with {why}");
        }
        let resp = get(s.addr, &path, &[("Authorization", &bearer)]).await;
        assert_eq!(resp.status, 200, "{path} with an admin token: {resp:?}");
    }
    s.stop().await;
}

// ---------------------------------------------------------------- §12.3

/// §12.3, §5.1: `joined.ice_servers` is one STUN entry with the whole
/// `--stun-urls` list and one TURN entry with the whole `--turn-urls` list
/// and TURN REST credentials: `username` `<now + 1 h>:<peer_id>` (the
/// default `--turn-ttl`), `credential` base64(HMAC-SHA1(secret, username)),
/// built anew for each peer at each join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_hold_the_stun_list_and_rest_credentials_per_peer() {
    let stun = ["stun:127.0.0.1:3478", "stun:127.0.0.1:3479"];
    let turn = [
        "turn:127.0.0.1:3478?transport=udp",
        "turns:127.0.0.1:5349?transport=tcp",
    ];
    let s = TestServer::start(|c| {
        c.stun_urls = stun.iter().map(|u| u.to_string()).collect();
        c.turn_urls = turn.iter().map(|u| u.to_string()).collect();
        c.turn_secret = Some(TURN_SECRET.into());
    })
    .await;
    let r = room("ice");
    let mut usernames = Vec::new();
    for label in ["a", "b"] {
        let mut c = s.client(label).await;
        for _ in 0..2 {
            let before = signaling::auth::now_unix();
            let j = c.join(&r).await;
            let after = signaling::auth::now_unix();
            let list = j["ice_servers"].as_array().expect("an array");
            assert_eq!(list.len(), 2, "{j}");
            assert_eq!(list[0], json!({"urls": stun}), "the STUN entry");
            let t = list[1].as_object().expect("the TURN entry");
            let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["credential", "urls", "username"], "{j}");
            assert_eq!(t["urls"], json!(turn));
            let username = t["username"].as_str().expect("username");
            let (expiry, who) = username.split_once(':').expect("<expiry>:<who>");
            let expiry: u64 = expiry.parse().expect("Unix seconds");
            assert!(
                (before + 3600..=after + 3600).contains(&expiry),
                "expiry {expiry}, joined between {before} and {after}"
            );
            assert_eq!(who, c.peer_id, "no auth: the peer id");
            assert_eq!(t["credential"], turn_credential(TURN_SECRET, username));
            assert!(!j.to_string().contains(TURN_SECRET));
            usernames.push(username.to_string());
            c.send(json!({"type":"leave"})).await;
            c.expect("left").await;
        }
    }
    let mut distinct = usernames.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "one username per peer: {usernames:?}");
    s.stop().await;
}

/// §12.3: with auth on, the TURN username names the token's `sub` when it
/// has one and the `peer_id` when it has none; `--turn-ttl` sets the
/// expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_turn_username_is_the_sub_else_the_peer_id() {
    let s = TestServer::start(|c| {
        c.auth_secret = Some(SECRET.into());
        c.turn_urls = vec!["turn:127.0.0.1:3478".into()];
        c.turn_secret = Some(TURN_SECRET.into());
        c.turn_ttl = Duration::from_secs(120);
    })
    .await;
    let r = room("turn-who");
    let exp = signaling::auth::now_unix() + 600;
    for (label, claims) in [
        ("with sub", json!({"room":r,"sub":"ada","exp":exp})),
        ("without sub", json!({"room":r,"exp":exp})),
    ] {
        let mut c = s.client(label).await;
        let before = signaling::auth::now_unix();
        let j = c.join_with(&r, json!({"token": sign(claims)})).await;
        let after = signaling::auth::now_unix();
        let list = j["ice_servers"].as_array().expect("an array");
        assert_eq!(list.len(), 1, "TURN only: {j}");
        let username = list[0]["username"].as_str().expect("username");
        let (expiry, who) = username.split_once(':').expect("<expiry>:<who>");
        let expiry: u64 = expiry.parse().expect("Unix seconds");
        assert!((before + 120..=after + 120).contains(&expiry), "{username}");
        let want = if label == "with sub" {
            "ada"
        } else {
            c.peer_id.as_str()
        };
        assert_eq!(who, want, "{label}");
        assert_eq!(
            list[0]["credential"],
            turn_credential(TURN_SECRET, username)
        );
    }
    s.stop().await;
}

/// §12.3: nothing configured gives an empty array; TURN URLs without a
/// TURN secret give no TURN entry; STUN alone is the one STUN entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_hold_only_what_is_configured() {
    let cases: [(&str, Tweak, Value); 3] = [
        ("nothing", |_| {}, json!([])),
        (
            "TURN URLs without a secret",
            |c| c.turn_urls = vec!["turn:127.0.0.1:3478".into()],
            json!([]),
        ),
        (
            "STUN alone",
            |c| c.stun_urls = vec!["stun:127.0.0.1:3478".into()],
            json!([{"urls":["stun:127.0.0.1:3478"]}]),
        ),
    ];
    for (what, tweak, want) in cases {
        let s = TestServer::start(tweak).await;
        let mut c = s.client("c").await;
        let j = c.join(&room("ice-none")).await;
        assert_eq!(j["ice_servers"], want, "{what}: {j}");
        s.stop().await;
    }
}

// ---------------------------------------------------------------- §14

/// §14, §10: `/healthz` answers 200 `ok` and `/readyz` 200 `ready`; while
/// draining `/readyz` turns 503 and `/healthz` stays 200 `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_ok_and_readyz_says_ready_until_the_drain() {
    let s = TestServer::start(|c| c.drain_timeout = Duration::from_secs(3)).await;
    assert_eq!(http_get(s.addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(s.addr, "/readyz").await, (200, "ready\n".into()));
    let mut c = s.client("c").await;
    s.handle.shutdown();
    c.expect("goaway").await;
    assert_eq!(http_get(s.addr, "/readyz").await.0, 503);
    assert_eq!(http_get(s.addr, "/healthz").await, (200, "ok\n".into()));
    s.stop().await;
}

/// §14: `/metrics` is OpenMetrics when `Accept` names it, else the
/// Prometheus text format, each with its content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_come_in_the_format_the_accept_header_names() {
    let s = TestServer::start(|_| {}).await;
    const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
    const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";
    for (accept, want) in [
        (None, PROMETHEUS),
        (Some("text/plain"), PROMETHEUS),
        (Some("*/*"), PROMETHEUS),
        (Some(OPENMETRICS), OPENMETRICS),
        (
            Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
            OPENMETRICS,
        ),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let resp = get(s.addr, "/metrics", &headers).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let ct = resp.header("content-type").unwrap_or_default();
        assert!(
            ct.to_ascii_lowercase().starts_with(want),
            "Accept {accept:?}: content-type {ct:?}, want {want:?}"
        );
        assert_eq!(
            resp.body.ends_with("# EOF\n"),
            want == OPENMETRICS,
            "Accept {accept:?}: only OpenMetrics ends in # EOF"
        );
    }
    s.stop().await;
}

/// §14: with `--metrics-listen`, `/metrics` is served there (plain HTTP,
/// nothing else) and answers 404 on `--listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_listener_serves_metrics_alone() {
    let s =
        TestServer::start(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"))).await;
    assert_ne!(s.metrics, s.addr);
    let (status, body) = http_get(s.metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("signaling_connections_open "), "{body}");
    for path in [
        "/",
        "/healthz",
        "/readyz",
        "/ws",
        "/api/rooms",
        "/index.html",
    ] {
        let (status, body) = http_get(s.metrics, path).await;
        assert_eq!(status, 404, "{path} on the metrics listener: {body}");
    }
    let (status, body) = http_get(s.addr, "/metrics").await;
    assert_eq!(status, 404, "/metrics on --listen: {body}");
    assert!(!body.contains("signaling_"), "{body}");
    assert_eq!(http_get(s.addr, "/healthz").await.0, 200);
    s.stop().await;
}

/// §14, §15: `/api/rooms` lists every room with members, across all
/// instances, sorted by name, with its member count; a room whose last
/// member left is gone from it.
async fn api_rooms_lists_every_room_sorted_by_name(d: Deployment) {
    let (zulu, alpha, mike) = (room("zulu"), room("alpha"), room("mike"));
    let z = d.member(1, &zulu, "z").await;
    let a0 = d.member(0, &alpha, "a0").await;
    let mut m = d.member(0, &mike, "m").await;
    let mut a1 = d.member(1, &alpha, "a1").await;
    let want = json!({"rooms":[
        {"room":alpha,"peer_count":2},{"room":mike,"peer_count":1},{"room":zulu,"peer_count":1}
    ]});
    for s in &d.servers {
        eventually_json(s.addr, "/api/rooms", &want).await;
    }
    a1.send(json!({"type":"leave"})).await;
    a1.expect("left").await;
    m.send(json!({"type":"leave"})).await;
    m.expect("left").await;
    let want = json!({"rooms":[{"room":alpha,"peer_count":1},{"room":zulu,"peer_count":1}]});
    for s in &d.servers {
        eventually_json(s.addr, "/api/rooms", &want).await;
    }
    drop((z, a0));
}
both!(api_rooms_lists_every_room_sorted_by_name);

/// §14, §15, §3.2: `/api/rooms/{room}` gives the room and its members as
/// peer objects, oldest first, across all instances: the same objects a
/// newcomer finds in `joined.peers`.
async fn api_room_lists_members_oldest_first_as_peer_objects(d: Deployment) {
    let r = room("api-room");
    let mut ids = Vec::new();
    let mut members = Vec::new();
    for (i, (name, meta)) in [
        ("ann", json!({"k":1})),
        ("bo", json!({})),
        ("cy", json!({"x":[true]})),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = d.client(i % 2, name).await;
        c.join_with(&r, json!({"name":name,"meta":meta})).await;
        d.settle(&r, &c.peer_id).await;
        ids.push(c.peer_id.clone());
        members.push(c);
        // `joined_at` counts milliseconds: keep the three apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut newcomer = d.client(1, "newcomer").await;
    let joined = newcomer.join(&r).await;
    assert_eq!(peer_ids(&joined["peers"]), ids, "{joined}");
    for s in &d.servers {
        let resp = get(s.addr, &format!("/api/rooms/{r}"), &[]).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let v = resp.json();
        assert_eq!(v["room"], r.as_str(), "{v}");
        let peers = v["peers"].as_array().expect("peers");
        // The newcomer may or may not be listed yet on the other instance.
        let listed: Vec<&Value> = peers
            .iter()
            .filter(|p| p["peer_id"] != newcomer.peer_id.as_str())
            .collect();
        let want: Vec<&Value> = joined["peers"].as_array().expect("peers").iter().collect();
        assert_eq!(listed, want, "on {}: {v}", s.addr);
        for p in peers {
            let mut keys: Vec<&str> = p
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort();
            assert_eq!(keys, ["joined_at", "meta", "name", "peer_id"], "{p}");
        }
    }
    assert_eq!(joined["peers"][0]["name"], "ann");
    assert_eq!(joined["peers"][2]["meta"], json!({"x":[true]}));
}
both!(api_room_lists_members_oldest_first_as_peer_objects);

/// §14: `/api/rooms/{room}` answers 404 with the documented body for a room
/// nobody is in (never used, or emptied, on every instance) and for an
/// invalid room name.
async fn api_room_is_404_for_an_empty_room_or_an_invalid_name(d: Deployment) {
    let want = json!({"error":"not_found","message":"no such room"});
    let r = room("emptied");
    let mut c = d.member(0, &r, "c").await;
    c.send(json!({"type":"leave"})).await;
    c.expect("left").await;
    d.settle_gone(&r, &c.peer_id).await;
    let long = "x".repeat(65);
    for s in &d.servers {
        for name in [
            room("never-used").as_str(),
            r.as_str(),
            long.as_str(),
            "bad%20name",
            "a*b",
            "%C3%A9t%C3%A9",
        ] {
            let resp = get(s.addr, &format!("/api/rooms/{name}"), &[]).await;
            assert_eq!(resp.status, 404, "{name}: {resp:?}");
            assert_eq!(resp.json(), want, "{name}");
        }
    }
}
both!(api_room_is_404_for_an_empty_room_or_an_invalid_name);

/// §14, §15: while the cluster's store (Redis) cannot be asked, `/api/*`
/// answers 503 `{"error":"unavailable","message":...}` and `/readyz` 503;
/// both recover when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_503_unavailable_while_redis_is_down() {
    let mut d = Deployment::two(|_| {}).await;
    let r = room("api-down");
    let _m = d.member(0, &r, "m").await;
    let redis = d.redis.as_mut().expect("a cluster");
    redis.kill();
    let s = &d.servers[0];
    wait_readyz(s.addr, 503, Duration::from_secs(10)).await;
    for path in ["/api/rooms".to_string(), format!("/api/rooms/{r}")] {
        let resp = get(s.addr, &path, &[]).await;
        assert_eq!(resp.status, 503, "{path}: {resp:?}");
        let v = resp.json();
        assert_eq!(v["error"], "unavailable", "{path}: {v}");
        assert!(v["message"].is_string(), "{path}: {v}");
        assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{path}: {v}");
    }
    redis.restart();
    s.wait_ready_within(Duration::from_secs(15)).await;
    let (status, body) = http_get(s.addr, "/api/rooms").await;
    assert_eq!(status, 200, "{body}");
}

/// §14: `GET /` and other paths are the static files of `--web-root`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_are_the_files_of_the_web_root() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("index.html"), "<p>our own page</p>\n").expect("write");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(
        dir.path().join("sub/hello.txt"),
        "hello from the web root\n",
    )
    .expect("write");
    let root = dir.path().to_path_buf();
    let s = TestServer::start(move |c| c.web_root = Some(root)).await;
    assert_eq!(
        http_get(s.addr, "/").await,
        (200, "<p>our own page</p>\n".into())
    );
    assert_eq!(
        http_get(s.addr, "/sub/hello.txt").await,
        (200, "hello from the web root\n".into())
    );
    assert_eq!(
        http_get(s.addr, "/app.js").await.0,
        404,
        "not the shipped client"
    );
    s.stop().await;
}

/// §14: past `--max-http-connections` plain HTTP connections at once, a new
/// one is closed at accept (long before the header deadline), and served
/// again once a slot is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_connections_past_the_cap_are_closed_at_accept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|c| {
        c.limits.max_http_connections = 3;
        c.limits.http_header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(s.addr)
                .await
                .expect("connect"),
        );
    }
    // The third is answered: the accept loop, which takes connections in
    // order, has counted all three.
    let mut third = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 12];
    tokio::time::timeout(WAIT, third.read_exact(&mut answer))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    held.push(third);
    let mut fourth = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, fourth.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the fourth is closed at once: {read:?}"
    );
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    while http_get(s.addr, "/healthz").await.0 != 200 {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// §14: a plain HTTP connection lives at most `--http-idle-timeout`, busy
/// or not; a WebSocket opened at the same time is outside that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_connections_live_at_most_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|c| c.limits.http_idle_timeout = Duration::from_secs(1)).await;
    let mut ws = s.client("ws").await;
    let mut http = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let started = Instant::now();
    // Keep-alive requests, one every 100 ms, until the server ends it.
    let mut buf = vec![0u8; 4096];
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a busy keep-alive connection outlived its 1 s lifetime by far"
        );
        let sent = http
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        if sent.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(WAIT, http.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("no answer on the keep-alive connection"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("keep-alive connection closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
    ws.send(json!({"type":"ping","id":"alive"})).await;
    assert_eq!(ws.expect("pong").await["ref"], "alive");
    s.stop().await;
}

// ---------------------------------------------------------------- §14.1

/// §14.1: every metric of the table is exposed with its type (Prometheus
/// text), labelled series with their label, `signaling_build_info` an info
/// under OpenMetrics; the bus metrics with `--redis-url` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_metric_is_exposed_with_its_type() {
    const LISTED: &[(&str, &str, Option<&str>)] = &[
        ("signaling_connections_open", "gauge", None),
        ("signaling_rooms", "gauge", None),
        ("signaling_peers", "gauge", None),
        ("signaling_peers_held", "gauge", None),
        ("signaling_connections_total", "counter", None),
        ("signaling_joins_total", "counter", None),
        ("signaling_resumes_total", "counter", None),
        ("signaling_messages_relayed_total", "counter", Some("type")),
        ("signaling_errors_total", "counter", Some("code")),
        ("signaling_peers_left_total", "counter", Some("reason")),
        ("signaling_forced_closes_total", "counter", Some("cause")),
        ("signaling_relay_latency_seconds", "histogram", None),
        ("signaling_build_info", "gauge", Some("version")),
        ("process_cpu_seconds_total", "counter", None),
        ("process_resident_memory_bytes", "gauge", None),
        ("process_virtual_memory_bytes", "gauge", None),
        ("process_open_fds", "gauge", None),
        ("process_max_fds", "gauge", None),
        ("process_start_time_seconds", "gauge", None),
    ];
    const BUS: &[(&str, &str, Option<&str>)] = &[
        ("signaling_bus_redis_connected", "gauge", None),
        ("signaling_bus_queue_bytes", "gauge", None),
        ("signaling_bus_reconnects_total", "counter", None),
        ("signaling_bus_nodes", "gauge", None),
        ("signaling_bus_publish_batch_size", "histogram", None),
    ];
    let one = TestServer::start(|_| {}).await;
    let text = one.scrape().await;
    assert_exposed(&text, LISTED);
    assert!(
        !text.contains("signaling_bus_"),
        "no bus metrics alone: {text}"
    );
    let om = get(
        one.metrics,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert!(
        om.body.lines().any(|l| l == "# TYPE signaling_build info"),
        "build_info is an info under OpenMetrics: {}",
        om.body
    );
    one.stop().await;

    let d = Deployment::two(|_| {}).await;
    let text = d.servers[0].scrape().await;
    assert_exposed(&text, LISTED);
    assert_exposed(&text, BUS);
}

/// Each of `listed` has its `# TYPE` line and a sample (with its label).
fn assert_exposed(text: &str, listed: &[(&str, &str, Option<&str>)]) {
    for (name, ty, label) in listed {
        let type_line = format!("# TYPE {name} {ty}");
        assert!(
            text.lines().any(|l| l == type_line),
            "no {type_line:?} in:\n{text}"
        );
        let sample = match (*ty, label) {
            ("histogram", _) => format!("{name}_bucket{{le="),
            (_, Some(l)) => format!("{name}{{{l}=\""),
            (_, None) => format!("{name} "),
        };
        assert!(
            text.lines().any(|l| l.starts_with(&sample)),
            "no sample {sample:?} in:\n{text}"
        );
    }
}

// ---------------------------------------------------------------- §15

/// §15: when Redis does not answer a join's reservation (it is stalled),
/// the join goes ahead on the instance's own view after about 1 s: the cap
/// then holds per instance only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_stalls_the_room_cap_holds_per_instance() {
    let d = Deployment::two(|c| c.limits.max_room_peers = 3).await;
    let r = room("cap-stall");
    // Both instances view the room before the stall: a join then waits on
    // the reservation alone.
    let a = d.member(0, &r, "a@0").await;
    let mut w = d.member(1, &r, "w@1").await;
    let redis = d.redis.as_ref().expect("a cluster");
    redis.stop();
    let answer = async |c: &mut Client| -> (Value, Duration) {
        let t = Instant::now();
        c.send(json!({"type":"join","room":r})).await;
        let v = c.next(Duration::from_secs(10)).await.expect("an answer");
        (v, t.elapsed())
    };
    let mut b = d.client(0, "b@0").await;
    let (v, took) = answer(&mut b).await;
    println!("b@0: {v} after {took:?}");
    assert_eq!(v["type"], "joined", "{v}");
    assert!(
        took >= Duration::from_millis(900),
        "the join waited for the reservation first: {took:?}"
    );
    // Instance 0's own view now holds three: full there.
    let mut c = d.client(0, "c@0").await;
    let (v, took) = answer(&mut c).await;
    println!("c@0: {v} after {took:?}");
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("room_full")),
        "{v}"
    );
    // Instance 1 has not heard of b: its own view (a, w) has room.
    let mut x = d.client(1, "x@1").await;
    let (v, took) = answer(&mut x).await;
    println!("x@1: {v} after {took:?}");
    assert_eq!(v["type"], "joined", "{v}");
    assert_eq!(
        w.expect("peer-joined").await["peer"]["peer_id"],
        v["peer_id"]
    );
    redis.cont();
    drop(a);
}

/// §15, §7.2: during a Redis outage the members of one instance keep
/// changing; when Redis is back the other instance's member hears each
/// change once, with the reason it had: an update, a `leave` (`left`), a
/// clean close (`disconnected`) and a join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_during_a_redis_outage_arrive_with_their_reasons() {
    let mut d = Deployment::two(|_| {}).await;
    let r = room("outage-reasons");
    let mut x = d.member(0, &r, "x@0").await;
    let mut others = Vec::new();
    for label in ["y@1", "z@1", "u@1"] {
        let c = d.member(1, &r, label).await;
        let pj = x.expect("peer-joined").await;
        assert_eq!(pj["peer"]["peer_id"], c.peer_id.as_str());
        others.push(c);
    }
    let [mut y, mut z, u]: [Client; 3] = others.try_into().ok().expect("three");
    for c in [&mut y, &mut z] {
        while c.next(Duration::from_millis(200)).await.is_some() {}
    }
    d.redis.as_mut().expect("a cluster").kill();
    // The outage shows.
    for s in &d.servers {
        wait_readyz(s.addr, 503, Duration::from_secs(10)).await;
    }
    y.send(json!({"type":"update","meta":{"during":"outage"}}))
        .await;
    // (z hears y's update: they share an instance.)
    assert_eq!(
        z.expect("peer-updated").await["peer"]["peer_id"],
        y.peer_id.as_str()
    );
    z.send(json!({"type":"leave"})).await;
    z.expect("left").await;
    let u_id = u.peer_id.clone();
    u.close().await;
    let mut w = d.client(1, "w@1").await;
    w.join(&r).await;
    d.redis.as_mut().expect("a cluster").restart();

    let want: Vec<(String, String, String)> = vec![
        ("peer-updated".into(), y.peer_id.clone(), "".into()),
        ("peer-left".into(), z.peer_id.clone(), "left".into()),
        ("peer-left".into(), u_id.clone(), "disconnected".into()),
        ("peer-joined".into(), w.peer_id.clone(), "".into()),
    ];
    let mut heard: Vec<(String, String, String)> = Vec::new();
    let mut updated_meta = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want.iter().all(|w| heard.contains(w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(v) = x.next(left).await else { break };
        let id = v["peer_id"]
            .as_str()
            .or(v["peer"]["peer_id"].as_str())
            .unwrap_or("");
        if v["type"] == "peer-updated" {
            updated_meta = v["peer"]["meta"].clone();
        }
        heard.push((
            v["type"].as_str().unwrap_or("").into(),
            id.into(),
            v["reason"].as_str().unwrap_or("").into(),
        ));
    }
    // Anything more that comes within a moment counts too (a duplicate).
    while let Some(v) = x.next(Duration::from_millis(500)).await {
        heard.push((
            v["type"].as_str().unwrap_or("").into(),
            v["peer_id"]
                .as_str()
                .or(v["peer"]["peer_id"].as_str())
                .unwrap_or("")
                .into(),
            v["reason"].as_str().unwrap_or("").into(),
        ));
    }
    let mut got = heard.clone();
    got.sort();
    let mut expected = want.clone();
    expected.sort();
    assert_eq!(got, expected, "x heard {heard:?}");
    assert_eq!(updated_meta, json!({"during":"outage"}));
}

// ---------------------------------------------------------------- §16

/// §16, §3.2, §5.1: the server ignores fields it does not define in every
/// client message, answers an unknown `type` with `bad_message` (with the
/// `ref`) and goes on; `joined.protocol` is 1.
async fn unknown_fields_are_ignored_and_unknown_types_are_bad_message(d: Deployment) {
    let r = room("compat");
    let extra = json!({"x-future": {"a": [1, 2]}, "v2_flag": true});
    let with = |mut m: Value| {
        if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        m
    };
    let mut a = d.client(0, "a").await;
    let ja = a.join_with(&r, extra.clone()).await;
    assert_eq!(ja["protocol"], 1, "{ja}");
    d.settle(&r, &a.peer_id).await;
    let mut b = d.client(1, "b").await;
    let jb = b.join_with(&r, extra.clone()).await;
    assert_eq!(jb["protocol"], 1, "{jb}");
    assert_eq!(peer_ids(&jb["peers"]), std::slice::from_ref(&a.peer_id));
    a.expect("peer-joined").await;

    a.send(with(json!({"type":"offer","to":b.peer_id,"sdp":"v=0"})))
        .await;
    assert_eq!(b.expect("offer").await["sdp"], "v=0");
    b.send(with(json!({"type":"answer","to":a.peer_id,"sdp":"v=1"})))
        .await;
    assert_eq!(a.expect("answer").await["sdp"], "v=1");
    a.send(with(
        json!({"type":"candidate","to":b.peer_id,"candidate":null}),
    ))
    .await;
    assert!(b.expect("candidate").await["candidate"].is_null());
    b.send(with(json!({"type":"message","data":"hi"}))).await;
    assert_eq!(a.expect("message").await["data"], "hi");
    a.send(with(json!({"type":"update","meta":{"m":1}}))).await;
    assert_eq!(
        b.expect("peer-updated").await["peer"]["meta"],
        json!({"m":1})
    );
    b.send(with(json!({"type":"ping","id":"p"}))).await;
    assert_eq!(b.expect("pong").await["ref"], "p");

    for (id, ty) in [(7, "hello"), (8, "Ping"), (9, "join-v2")] {
        a.send(json!({"type":ty,"id":id,"room":r})).await;
        let e = a.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["ref"].as_u64()),
            (Some("bad_message"), Some(id)),
            "type {ty}: {e}"
        );
    }
    b.expect_silence(Duration::from_millis(200)).await;
    a.send(with(json!({"type":"leave","id":"bye"}))).await;
    let l = a.expect("left").await;
    assert_eq!(
        (l["ref"].as_str(), l["room"].as_str()),
        (Some("bye"), Some(r.as_str()))
    );
    assert_eq!(b.expect("peer-left").await["reason"], "left");
}
both!(unknown_fields_are_ignored_and_unknown_types_are_bad_message);

/// §16: a version 1 client (the Rust client crate, against a stand-in
/// server speaking a later revision) ignores fields and event types it does
/// not know, and takes a close code it does not know for a drop: it
/// reconnects and resumes with its latest token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_ignores_the_unknown_and_resumes_after_an_unknown_close_code() {
    use futures_util::{SinkExt, StreamExt};
    use signaling_client::{ClientConfig, Event, JoinOptions};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (joins_tx, mut joins) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        for round in 0..2 {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp)
                .await
                .expect("handshake");
            let join = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).expect("json");
                        if v["type"] == "join" {
                            break v;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("no join: {other:?}"),
                }
            };
            let old = json!({"peer_id":"p-old","name":"Bo","meta":{},"joined_at":1,"x-later":[1]});
            let new = json!({"peer_id":format!("p-new{round}"),"name":"","meta":{},"joined_at":2,"x-later":true});
            for frame in [
                json!({"type":"x-event-of-a-later-revision","peer":{"peer_id":"p-x"}}),
                json!({"type":"joined","ref":join["id"],"room":join["room"],"peer_id":"p-me",
                       "peers":[old],"ice_servers":[],"resume":format!("tok-{round}"),
                       "protocol":1,"x-later":{"b":2}}),
                json!({"type":"peer-joined","peer":new,"x-later":1}),
            ] {
                ws.send(Message::text(frame.to_string()))
                    .await
                    .expect("send");
            }
            let _ = joins_tx.send(join);
            if round == 0 {
                let close = CloseFrame {
                    code: 4999.into(),
                    reason: "a close code of a later revision".into(),
                };
                let _ = ws.send(Message::Close(Some(close))).await;
            }
            while let Some(Ok(_)) = ws.next().await {}
        }
    });

    let mut config = ClientConfig::new(format!("ws://{addr}/ws"));
    config.max_backoff = Duration::from_millis(200);
    let (client, mut events) = signaling_client::Client::connect(config)
        .await
        .expect("connect");
    let joined = client
        .join("compat", JoinOptions::default())
        .await
        .expect("joined despite the fields and the event it does not know");
    assert_eq!(joined.peer_id, "p-me");
    assert_eq!(peer_ids_of(&joined.peers), ["p-old"]);
    let first = joins.recv().await.expect("the first join");
    assert!(first["resume"].is_null(), "{first}");

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"))
            .expect("the event stream is open");
        seen.push(e);
    }
    assert!(
        matches!(&seen[0], Event::PeerJoined(p) if p.peer_id == "p-new0"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], Event::Reconnecting { .. }),
        "the unknown close code is a drop: {seen:?}"
    );
    assert!(
        matches!(&seen[2], Event::Resumed(j) if j.peer_id == "p-me"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[3], Event::PeerJoined(p) if p.peer_id == "p-new1"),
        "{seen:?}"
    );
    let second = joins.recv().await.expect("the join after the drop");
    assert_eq!(
        (second["room"].as_str(), second["resume"].as_str()),
        (Some("compat"), Some("tok-0")),
        "{second}"
    );
}

// ---------------------------------------------------------------- helpers

/// Why a request is refused, the query string it adds and its headers.
type Refused = (&'static str, String, Vec<(&'static str, String)>);

/// A change to a server's config.
type Tweak = fn(&mut signaling::Config);

/// An HS256 JWT of `claims` signed with `secret`.
fn sign(claims: Value) -> String {
    signaling::auth::Auth::new(SECRET).sign(&claims)
}

/// `Bearer <admin token>` signed with `secret`, expiring `ttl` s from now
/// (negative: already expired).
fn admin_header(secret: &str, ttl: i64) -> String {
    let exp = signaling::auth::now_unix() as i64 + ttl;
    format!(
        "Bearer {}",
        signaling::auth::Auth::new(secret).sign(&json!({"admin":true,"exp":exp}))
    )
}

/// A JWT made by hand: `header` and `claims`, signed with HMAC-SHA256
/// whatever the header's `alg` says.
fn jwt(secret: &str, header: &Value, claims: &Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{h}.{p}").as_bytes());
    format!(
        "{h}.{p}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// An `alg: none` JWT of `claims`, with an empty signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// base64(HMAC-SHA1(secret, username)), computed here independently of the
/// server's code.
fn turn_credential(secret: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The names `/api/rooms/{room}` lists (with an admin token), oldest first.
async fn listed_names(addr: SocketAddr, r: &str) -> Vec<String> {
    let admin = admin_header(SECRET, 600);
    let resp = get(
        addr,
        &format!("/api/rooms/{r}"),
        &[("Authorization", &admin)],
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect()
}

/// Polls `path` on `addr` until its JSON body is `want` (a cluster's view
/// of another instance's change comes a moment later).
async fn eventually_json(addr: SocketAddr, path: &str, want: &Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(addr, path, &[]).await;
        if resp.status == 200
            && serde_json::from_str::<Value>(&resp.body).ok().as_ref() == Some(want)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on {addr} never became {want}: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` with extra headers, on a connection of its own.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    http_request(addr, "GET", path, headers, None).await
}

fn peer_ids_of(peers: &[signaling_client::Peer]) -> Vec<&str> {
    peers.iter().map(|p| p.peer_id.as_str()).collect()
}
