//! The admin API that acts (docs/protocol.md §14.2): kicks, room closes,
//! peer updates, room metadata, server messages and paged room lists, each
//! asked of one instance about peers held by another (one instance, two
//! through a real redis-server, two linked), plus its refusals of bad input,
//! its admin-token guard, and its OpenAPI document checked by an
//! independent validator.

use serde_json::{Value, json};
use signaling_e2e::both;
use signaling_e2e::client::{Resp, WAIT, http_request};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::room;
use signaling_e2e::server::TestServer;
use std::time::{Duration, Instant};

const SECRET: &str = "admin-api-test-secret-0123456789abcdef";

/// A request to the instance of place `i`.
async fn api(d: &Deployment, i: usize, method: &str, path: &str, body: Option<Value>) -> Resp {
    let body = body.map(|b| b.to_string());
    http_request(d.server(i).addr, method, path, &[], body.as_deref()).await
}

/// Waits until `GET path` on every instance answers what `want` accepts.
async fn eventually(d: &Deployment, path: &str, want: impl Fn(&Resp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in d.live() {
        loop {
            let r = http_request(s.addr, "GET", path, &[], None).await;
            if want(&r) {
                break;
            }
            assert!(Instant::now() < deadline, "{path} on {}: {r:?}", s.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// §14.2, §7.1, §7.2: a kicked peer is closed with 4001, the others see `peer-left` reason
/// `kicked`, its resume token is dead, and no instance lists it.
async fn a_kicked_peer_is_closed_announced_and_cannot_resume(d: Deployment) {
    let (r, mut a, mut b) = d.pair("kick").await;
    let path = format!("/api/rooms/{r}/peers/{}", b.peer_id);
    let resp = api(&d, 0, "DELETE", &path, None).await;
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(b.closed(WAIT).await, Some(4001));
    let left = a.expect("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peer_id":b.peer_id,"reason":"kicked"})
    );
    d.settle_gone(&r, &b.peer_id).await;
    let mut again = d.client(1, "b again").await;
    again
        .send(json!({"type":"join","room":r,"resume":b.resume,"id":1}))
        .await;
    let e = again.expect("error").await;
    assert_eq!(e["code"], "resume_failed", "{e}");
    let resp = api(&d, 1, "DELETE", &path, None).await;
    assert_eq!(resp.status, 404, "a second kick: {resp:?}");
    assert_eq!(resp.json()["error"], "not_found");
    a.expect_silence(Duration::from_millis(200)).await;
}
both!(a_kicked_peer_is_closed_announced_and_cannot_resume);

/// §14.2, §7.1: closing a room removes every member on every instance (close code
/// 4002) and the room is gone.
async fn a_closed_room_loses_every_member(d: Deployment) {
    let r = room("close");
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(d.member(i, &r, &format!("m{i}")).await);
    }
    let resp = api(&d, 1, "DELETE", &format!("/api/rooms/{r}"), None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"room":r,"removed":3}));
    for m in &mut members {
        assert_eq!(m.closed(WAIT).await, Some(4002), "{}", m.label);
    }
    eventually(&d, &format!("/api/rooms/{r}"), |r| r.status == 404).await;
    let resp = api(&d, 0, "DELETE", &format!("/api/rooms/{r}"), None).await;
    assert_eq!(resp.status, 404, "{resp:?}");
}
both!(a_closed_room_loses_every_member);

/// §14.2, §5.11, §5.3: a peer's `name` and `meta` set by the server: the others get
/// `peer-updated`, the peer itself `updated`, every instance lists it so.
async fn a_peer_updated_by_the_server_is_seen_by_all(d: Deployment) {
    let (r, mut a, mut b) = d.pair("update").await;
    let path = format!("/api/rooms/{r}/peers/{}", b.peer_id);
    let body = json!({"name":"Bee","meta":{"hand":true}});
    let resp = api(&d, 0, "PATCH", &path, Some(body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let peer = resp.json();
    assert_eq!(peer["name"], "Bee");
    assert_eq!(peer["meta"], json!({"hand":true}));
    assert_eq!(peer["peer_id"], b.peer_id.as_str());
    let seen = a.expect("peer-updated").await;
    assert_eq!(seen["peer"], peer, "{seen}");
    let own = b.expect("updated").await;
    assert_eq!(own["peer"], peer, "{own}");
    eventually(&d, &path, |r| r.status == 200 && r.json() == peer).await;
    // `meta` alone keeps the name.
    let resp = api(&d, 1, "PATCH", &path, Some(json!({"meta":{}}))).await;
    assert_eq!(resp.json()["name"], "Bee", "{resp:?}");
    assert_eq!(a.expect("peer-updated").await["peer"]["meta"], json!({}));
}
both!(a_peer_updated_by_the_server_is_seen_by_all);

/// §14.2, §5.10, §5.1: room metadata, set through any instance (one without members too),
/// sent to members as `room-updated`, found by later joiners in
/// `joined.room_meta` on every instance, and gone with the room.
async fn room_metadata_reaches_members_and_joiners(d: Deployment) {
    let r = room("meta");
    let mut a = d.member(0, &r, "a").await;
    let meta = json!({"topic":"standup","n":[1,2]});
    let resp = api(
        &d,
        1,
        "PUT",
        &format!("/api/rooms/{r}/meta"),
        Some(meta.clone()),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"room":r,"meta":meta}));
    let up = a.expect("room-updated").await;
    assert_eq!(up, json!({"type":"room-updated","room":r,"meta":meta}));
    for i in 0..2 {
        let mut c = d.client(i + 1, "joiner").await;
        let joined = c.join(&r).await;
        assert_eq!(joined["room_meta"], meta, "joiner on place {}", i + 1);
        d.settle(&r, &c.peer_id).await;
    }
    eventually(&d, &format!("/api/rooms/{r}/meta"), |x| {
        x.status == 200 && x.json()["meta"] == meta
    })
    .await;
    eventually(&d, &format!("/api/rooms/{r}"), |x| {
        x.status == 200 && x.json()["meta"] == meta
    })
    .await;
    // Emptied, the room forgets it.
    let resp = api(&d, 0, "DELETE", &format!("/api/rooms/{r}"), None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    eventually(&d, &format!("/api/rooms/{r}"), |x| x.status == 404).await;
    let resp = api(
        &d,
        0,
        "PUT",
        &format!("/api/rooms/{r}/meta"),
        Some(json!({})),
    )
    .await;
    assert_eq!(resp.status, 404, "meta of an empty room: {resp:?}");
    let mut fresh = d.client(1, "fresh").await;
    assert_eq!(fresh.join(&r).await["room_meta"], json!({}));
}
both!(room_metadata_reaches_members_and_joiners);

/// §14.2, §5.5: a server message reaches every member as `message` from `server`, or
/// only the peer named in `to`.
async fn server_messages_reach_the_room_or_one_peer(d: Deployment) {
    let (r, mut a, mut b) = d.pair("notice").await;
    let path = format!("/api/rooms/{r}/messages");
    let resp = api(&d, 1, "POST", &path, Some(json!({"data":{"notice":"hi"}}))).await;
    assert_eq!(resp.status, 202, "{resp:?}");
    let want = json!({"type":"message","from":"server","data":{"notice":"hi"}});
    assert_eq!(a.expect("message").await, want);
    assert_eq!(b.expect("message").await, want);
    let to_b = json!({"data":[1,"x"],"to":b.peer_id});
    let resp = api(&d, 0, "POST", &path, Some(to_b)).await;
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(b.expect("message").await["data"], json!([1, "x"]));
    a.expect_silence(Duration::from_millis(300)).await;
    let nobody = json!({"data":1,"to":"0123456789abcdef"});
    assert_eq!(api(&d, 0, "POST", &path, Some(nobody)).await.status, 404);
    let empty = format!("/api/rooms/{}/messages", room("nobody"));
    assert_eq!(
        api(&d, 0, "POST", &empty, Some(json!({"data":1})))
            .await
            .status,
        404
    );
}
both!(server_messages_reach_the_room_or_one_peer);

/// §14.2: `/api/rooms` pages through every room in name order with `limit` and
/// `after`, each line with its `peer_count`.
async fn rooms_are_listed_page_by_page(d: Deployment) {
    let tag = room("page");
    let names: Vec<String> = (0..5).map(|i| format!("{tag}-{i}")).collect();
    let mut members = Vec::new();
    for (i, n) in names.iter().enumerate() {
        members.push(d.member(i, n, "m").await);
    }
    for s in d.live() {
        let (mut seen, mut after, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let path = format!("/api/rooms?limit=2&after={after}");
            let v = http_request(s.addr, "GET", &path, &[], None).await.json();
            let lines = v["rooms"].as_array().expect("rooms").clone();
            assert!(lines.len() <= 2, "{v}");
            pages += 1;
            for l in &lines {
                assert_eq!(l.as_object().map(|o| o.len()), Some(2), "{l}");
                if names.iter().any(|n| l["room"] == n.as_str()) {
                    assert_eq!(l["peer_count"], 1, "{l}");
                }
                seen.push(l["room"].as_str().expect("room").to_string());
            }
            match v.get("next") {
                Some(next) => after = next.as_str().expect("next").to_string(),
                None => break,
            }
        }
        let ours: Vec<&String> = seen.iter().filter(|n| names.contains(n)).collect();
        assert_eq!(ours, names.iter().collect::<Vec<_>>(), "on {}", s.addr);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(pages >= 3, "{pages} pages of 2 for {} rooms", seen.len());
    }
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let resp = api(&d, 0, "GET", &format!("/api/rooms?{bad}"), None).await;
        assert_eq!(resp.status, 400, "{bad}: {resp:?}");
        assert_eq!(resp.json()["error"], "bad_request");
    }
}
both!(rooms_are_listed_page_by_page);

/// §14.2: bad input gets a JSON error naming it, and changes nothing.
#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let d = Deployment::one(|_| {}).await;
    let r = room("bad");
    let mut a = d.member(0, &r, "a").await;
    let peer = format!("/api/rooms/{r}/peers/{}", a.peer_id);
    let meta = format!("/api/rooms/{r}/meta");
    let messages = format!("/api/rooms/{r}/messages");
    let big = json!({"x":"y".repeat(2000)});
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("PUT", &meta, Some("[1]".into()), 400, "bad_request"),
        ("PUT", &meta, Some("{\"a\":".into()), 400, "bad_request"),
        ("PUT", &meta, Some(big.to_string()), 413, "too_large"),
        ("PATCH", &peer, Some("{}".into()), 400, "bad_request"),
        (
            "PATCH",
            &peer,
            Some(r#"{"nick":"x"}"#.into()),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            &peer,
            Some(r#"{"name":"a\u0007"}"#.into()),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            &peer,
            Some(r#"{"meta":3}"#.into()),
            400,
            "bad_request",
        ),
        ("POST", &messages, Some("{}".into()), 400, "bad_request"),
        (
            "POST",
            &messages,
            Some(r#"{"data":1e999}"#.into()),
            400,
            "bad_request",
        ),
        ("GET", "/api/rooms/bad%20name", None, 404, "not_found"),
        ("DELETE", "/api/rooms/a*b/peers/x", None, 404, "not_found"),
    ];
    for (method, path, body, status, error) in cases {
        let resp = http_request(d.server(0).addr, method, path, &[], body.as_deref()).await;
        assert_eq!(resp.status, status, "{method} {path} {body:?}: {resp:?}");
        let v = resp.json();
        assert_eq!(v["error"], error, "{method} {path}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // Nothing changed, and the member carries on.
    a.expect_silence(Duration::from_millis(200)).await;
    a.send(json!({"type":"ping","id":1})).await;
    a.expect("pong").await;
    let v = api(&d, 0, "GET", &format!("/api/rooms/{r}"), None)
        .await
        .json();
    assert_eq!(v["meta"], json!({}), "{v}");
    assert_eq!(v["peers"][0]["name"], "", "{v}");
}

/// §14.2, §12.2: with auth on, every admin route needs an admin token: none, a join
/// token or a wrongly signed one gets 401; the OpenAPI document is public.
#[tokio::test]
async fn every_admin_route_needs_an_admin_token() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let auth = signaling::auth::Auth::new(SECRET);
    let exp = signaling::auth::now_unix() + 300;
    let admin = format!("Bearer {}", auth.sign(&json!({"admin":true,"exp":exp})));
    let join = format!("Bearer {}", auth.sign(&json!({"room":"*","exp":exp})));
    let other = signaling::auth::Auth::new("another-secret-of-at-least-32-bytes!!");
    let forged = format!("Bearer {}", other.sign(&json!({"admin":true,"exp":exp})));
    let r = room("guarded");
    let routes = [
        ("GET", "/api/rooms".to_string(), None),
        ("GET", format!("/api/rooms/{r}"), None),
        ("DELETE", format!("/api/rooms/{r}"), None),
        ("GET", format!("/api/rooms/{r}/meta"), None),
        ("PUT", format!("/api/rooms/{r}/meta"), Some("{}")),
        ("GET", format!("/api/rooms/{r}/peers/p"), None),
        (
            "PATCH",
            format!("/api/rooms/{r}/peers/p"),
            Some(r#"{"name":"x"}"#),
        ),
        ("DELETE", format!("/api/rooms/{r}/peers/p"), None),
        (
            "POST",
            format!("/api/rooms/{r}/messages"),
            Some(r#"{"data":1}"#),
        ),
        ("GET", "/api/webhooks".to_string(), None),
        ("GET", "/api/webhooks/e/dead-letters".to_string(), None),
        ("POST", "/api/webhooks/e/replay".to_string(), Some("{}")),
    ];
    for (method, path, body) in &routes {
        for header in [None, Some(&join), Some(&forged)] {
            let h: Vec<(&str, &str)> = header
                .iter()
                .map(|v| ("Authorization", v.as_str()))
                .collect();
            let resp = http_request(s.addr, method, path, &h, *body).await;
            assert_eq!(
                resp.status, 401,
                "{method} {path} with {header:?}: {resp:?}"
            );
            assert_eq!(resp.json()["error"], "unauthorized");
        }
        let h = [("Authorization", admin.as_str())];
        let resp = http_request(s.addr, method, path, &h, *body).await;
        assert_ne!(
            resp.status, 401,
            "{method} {path} with an admin token: {resp:?}"
        );
    }
    let doc = http_request(s.addr, "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(doc.status, 200, "{doc:?}");
}

/// §14: `/api/openapi.json` documents every route the server answers, with
/// every response's schema, and is a valid OpenAPI 3.1 document as an
/// independent validator (openapi-spec-validator, from PyPI) reads it.
#[tokio::test]
async fn the_openapi_document_covers_every_route_and_is_valid() {
    let s = TestServer::start(|_| {}).await;
    let resp = http_request(s.addr, "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    let doc = resp.json();
    let routes = [
        ("/api/rooms", "get"),
        ("/api/rooms/{room}", "get"),
        ("/api/rooms/{room}", "delete"),
        ("/api/rooms/{room}/meta", "get"),
        ("/api/rooms/{room}/meta", "put"),
        ("/api/rooms/{room}/peers/{peer}", "get"),
        ("/api/rooms/{room}/peers/{peer}", "patch"),
        ("/api/rooms/{room}/peers/{peer}", "delete"),
        ("/api/rooms/{room}/messages", "post"),
        ("/api/webhooks", "get"),
        ("/api/webhooks/{endpoint}/dead-letters", "get"),
        ("/api/webhooks/{endpoint}/replay", "post"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            documented.push((path.clone(), method.clone()));
        }
    }
    for (path, method) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        // Every documented route is one the server answers (not 404/405).
        let concrete = path
            .replace("{room}", "r")
            .replace("{peer}", "p")
            .replace("{endpoint}", "e");
        let body = matches!(method, "put" | "patch" | "post").then_some("{}");
        let m = method.to_uppercase();
        let answer = http_request(s.addr, &m, &concrete, &[], body).await;
        assert!(
            ![405, 0].contains(&answer.status)
                && answer.header("content-type").as_deref() == Some("application/json"),
            "{m} {concrete}: {answer:?}"
        );
    }
    documented.retain(|(p, _)| p != "/api/openapi.json");
    assert_eq!(documented.len(), routes.len(), "{documented:?}");
    // Every `$ref` resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap_or_default();
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
    let python = std::env::var("SIGNALING_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             validate(json.loads(sys.stdin.read())); print('valid')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(resp.body.as_bytes())?;
            }
            child.wait_with_output()
        })
        .expect("python runs (scripts/test installs openapi-spec-validator)");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _: Value = doc;
}

/// A redis-server of its own, and a proxy to it that the test controls
/// (`redis://{proxy.addr}` for the instance whose link it cuts or slows).
async fn redis_and_proxy() -> (signaling_e2e::redis::Redis, signaling_e2e::proxy::Proxy) {
    let redis = signaling_e2e::redis::Redis::start();
    let backend = redis
        .url()
        .trim_start_matches("redis://")
        .parse()
        .expect("redis's address");
    let proxy = signaling_e2e::proxy::Proxy::start(backend).await;
    (redis, proxy)
}

/// The peer ids `GET /api/rooms/{room}` on `addr` lists, asked once.
async fn listed_now(addr: std::net::SocketAddr, room: &str) -> Vec<String> {
    let resp = http_request(addr, "GET", &format!("/api/rooms/{room}"), &[], None).await;
    match resp.status {
        200 => signaling_e2e::client::peer_ids(&resp.json()["peers"]),
        _ => Vec::new(),
    }
}

/// §14.2, §15: reads agree with what clients were told. Once a client holds
/// its `joined`, every instance's API lists it; once a member on the
/// leaver's instance got its `peer-left`, no instance lists it. Asked once
/// each, never retried, over many rounds on both instances.
async fn reads_agree_with_what_clients_were_told(d: Deployment) {
    let r = room("agree");
    let mut watchers = [d.member(0, &r, "w0").await, d.member(1, &r, "w1").await];
    let watchers_len = watchers.len();
    for round in 0..40 {
        let i = round % 2;
        let mut c = d.client(i, "c").await;
        c.join(&r).await;
        for s in d.live() {
            let ids = listed_now(s.addr, &r).await;
            assert!(
                ids.contains(&c.peer_id),
                "round {round}: joined, but {} lists {ids:?}",
                s.addr
            );
        }
        c.send(json!({"type":"leave"})).await;
        // The watcher on the leaver's own instance (on one instance, either).
        let w = &mut watchers[i % watchers_len];
        loop {
            let v = w.next(WAIT).await.expect("the leave announced");
            if v["type"] == "peer-left" && v["peer_id"] == c.peer_id.as_str() {
                break;
            }
        }
        for s in d.live() {
            let ids = listed_now(s.addr, &r).await;
            assert!(
                !ids.contains(&c.peer_id),
                "round {round}: left, but {} lists {ids:?}",
                s.addr
            );
        }
    }
}
both!(reads_agree_with_what_clients_were_told);

/// §14.2, §15: the same with the writes of one instance reaching Redis
/// 30 ms late (a slow network): its clients are told of a join or a leave
/// only once the other instance's API reads it, so the reads still agree.
/// The cost: a join there takes the write's round trip longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_agree_even_when_writes_reach_redis_late() {
    let (redis, proxy) = redis_and_proxy().await;
    let slow_url = format!("redis://{}", proxy.addr);
    let slow = TestServer::start(signaling_e2e::server::clustered(slow_url, "slow")).await;
    let fast = TestServer::start(signaling_e2e::server::clustered(redis.url(), "fast")).await;
    for s in [&slow, &fast] {
        s.wait_ready_within(Duration::from_secs(10)).await;
    }
    proxy.set_delay(Duration::from_millis(30));
    let r = room("late");
    let mut watcher = slow.client("w").await;
    watcher.join(&r).await;
    for round in 0..10 {
        let mut c = slow.client("c").await;
        c.join(&r).await;
        let ids = listed_now(fast.addr, &r).await;
        assert!(
            ids.contains(&c.peer_id),
            "round {round}: joined, but the other lists {ids:?}"
        );
        c.send(json!({"type":"leave"})).await;
        loop {
            let v = watcher.next(WAIT).await.expect("the leave announced");
            if v["type"] == "peer-left" && v["peer_id"] == c.peer_id.as_str() {
                break;
            }
        }
        let ids = listed_now(fast.addr, &r).await;
        assert!(
            !ids.contains(&c.peer_id),
            "round {round}: left, but the other lists {ids:?}"
        );
    }
}

/// §14.2, §12.2, §12.4: the same API in the shipped binary, two processes
/// through a real redis-server with auth on: an admin token acts from one
/// instance on a peer of the other (a kick, room metadata), identities are
/// in the peer objects, and the binary serves its OpenAPI document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_acts_across_instances() {
    use signaling_e2e::server::ServerProcess;
    let redis = signaling_e2e::redis::Redis::start();
    let secret = ["--auth-secret", SECRET];
    let a = ServerProcess::node(&redis.url(), "bin-a", &secret).await;
    let b = ServerProcess::node(&redis.url(), "bin-b", &secret).await;
    for s in [&a, &b] {
        s.wait_ready(Duration::from_secs(15)).await;
    }
    let auth = signaling::auth::Auth::new(SECRET);
    let exp = signaling::auth::now_unix() + 300;
    let admin = format!("Bearer {}", auth.sign(&json!({"admin":true,"exp":exp})));
    let h = [("Authorization", admin.as_str())];
    let r = room("binary");
    let join = |sub: &str| json!({"token": auth.sign(&json!({"room":r,"sub":sub,"exp":exp}))});
    let url = |s: &ServerProcess| format!("ws://{}/ws", s.addr);
    let mut ada = signaling_e2e::client::Client::connect(&url(&a), "ada").await;
    ada.join_with(&r, join("ada")).await;
    let mut bob = signaling_e2e::client::Client::connect(&url(&b), "bob").await;
    let joined = bob.join_with(&r, join("bob")).await;
    assert_eq!(joined["peers"][0]["identity"], "ada", "{joined}");
    assert_eq!(ada.expect("peer-joined").await["peer"]["identity"], "bob");
    let meta = json!({"topic":"from the binary"});
    let path = format!("/api/rooms/{r}/meta");
    let resp = http_request(a.addr, "PUT", &path, &h, Some(&meta.to_string())).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(bob.expect("room-updated").await["meta"], meta);
    assert_eq!(ada.expect("room-updated").await["meta"], meta);
    let kick = format!("/api/rooms/{r}/peers/{}", bob.peer_id);
    let resp = http_request(a.addr, "DELETE", &kick, &h, None).await;
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(bob.closed(WAIT).await, Some(4001));
    let left = ada.expect("peer-left").await;
    assert_eq!(
        (left["peer_id"].clone(), left["reason"].clone()),
        (json!(bob.peer_id), json!("kicked"))
    );
    let doc = http_request(b.addr, "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(doc.status, 200, "{doc:?}");
    assert!(doc.json()["paths"]["/api/rooms/{room}/peers/{peer}"]["delete"].is_object());
}

/// §14.2: a kick the peer's instance never got (it is cut off from Redis)
/// is not answered as done: 503 after the wait, the peer is still a
/// member, and the same kick asked again once the instance is back works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_its_instance_missed_is_answered_503() {
    let (redis, proxy) = redis_and_proxy().await;
    let a = TestServer::start(signaling_e2e::server::clustered(redis.url(), "near")).await;
    let via_proxy = format!("redis://{}", proxy.addr);
    let b = TestServer::start(signaling_e2e::server::clustered(via_proxy, "far")).await;
    for s in [&a, &b] {
        s.wait_ready_within(Duration::from_secs(10)).await;
    }
    let r = room("missed");
    let mut ada = a.client("ada").await;
    ada.join(&r).await;
    let mut bob = b.client("bob").await;
    bob.join(&r).await;
    ada.expect("peer-joined").await;
    let kick = format!("/api/rooms/{r}/peers/{}", bob.peer_id);
    proxy.set_up(false);
    proxy.cut();
    signaling_e2e::server::wait_readyz(b.addr, 503, Duration::from_secs(10)).await;
    let started = Instant::now();
    let resp = http_request(a.addr, "DELETE", &kick, &[], None).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.json()["error"], "unavailable");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    bob.send(json!({"type":"ping","id":1})).await;
    assert_eq!(bob.expect("pong").await["ref"], 1, "bob is still connected");
    proxy.set_up(true);
    b.wait_ready_within(Duration::from_secs(15)).await;
    let resp = http_request(a.addr, "DELETE", &kick, &[], None).await;
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(bob.closed(WAIT).await, Some(4001));
}
