//! Webhook dead letters as an operator handles them: seen through the
//! admin API (`/api/webhooks`), listed, and sent again, on one instance
//! without Redis and on a Redis-backed one, where the `signaling webhooks`
//! command does the same from outside the server. A replayed event reaches
//! the receiver under the id it was dead-lettered with.

use serde_json::{Value, json};
use signaling_e2e::client::{Resp, http_request};
use signaling_e2e::server::{ServerProcess, TestServer};
use signaling_e2e::webhook::{Behaviour, Receiver, assert_in_order};
use signaling_e2e::{join_token, room};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const AUTH_SECRET: &str = "webhook-admin-test-secret-0123456789abcdef";
const WEBHOOK_SECRET: &str = "a-test-secret-of-enough-bytes-123";
/// How long events may take to be dead-lettered or delivered.
const WITHIN: Duration = Duration::from_secs(15);
/// What one peer joining a room alone and leaving makes, in order.
const VISIT: [&str; 4] = ["room-opened", "peer-joined", "peer-left", "room-closed"];
/// An endpoint id no endpoint has.
const UNKNOWN: &str = "000000000000";

/// Webhooks to `url` that give up after two quick tries, an admin secret,
/// and Redis if `redis` names one.
fn webhooks(url: &str, redis: Option<String>) -> impl FnOnce(&mut signaling::Config) {
    let url = url.to_owned();
    move |c| {
        c.auth_secret = Some(AUTH_SECRET.into());
        c.webhook_url = vec![url];
        c.webhook_secret = Some(WEBHOOK_SECRET.into());
        c.webhook_max_attempts = 2;
        c.webhook_retry_base = Duration::from_millis(50);
        // The lease is taken within a second of the start, not five.
        c.webhook_claim_after = Duration::from_secs(1);
        c.redis_url = redis;
    }
}

fn admin_token() -> String {
    let exp = signaling::auth::now_unix() + 600;
    let token = signaling::auth::Auth::new(AUTH_SECRET).sign(&json!({"admin":true,"exp":exp}));
    format!("Bearer {token}")
}

/// An admin API request with an admin token.
async fn api(s: &TestServer, method: &str, path: &str, body: Option<&str>) -> Resp {
    let token = admin_token();
    http_request(s.addr, method, path, &[("Authorization", &token)], body).await
}

/// One peer joins a room of its own and leaves: the four events of [`VISIT`].
async fn visit(s: &TestServer) {
    let r = room("hooked");
    let mut c = s.client("visitor").await;
    c.join_with(&r, json!({"token": join_token(AUTH_SECRET, &r)}))
        .await;
    c.close().await;
}

/// The only endpoint's line of `GET /api/webhooks`.
async fn endpoint_line(s: &TestServer) -> Value {
    let resp = api(s, "GET", "/api/webhooks", None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let list = resp.json();
    let endpoints = list["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{list}");
    endpoints[0].clone()
}

/// Waits until the endpoint has `dead` dead letters and nothing in its
/// backlog, and returns its line.
async fn wait_settled(s: &TestServer, dead: u64) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let line = endpoint_line(s).await;
        if line["dead_letters"] == dead && line["backlog"] == 0 {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "never {dead} dead letters: {line}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The endpoint's dead letters through the API, checked to be the visit's
/// events failed as the receiver failed them; their event ids.
async fn dead_letter_ids(s: &TestServer, id: &str) -> Vec<String> {
    let resp = api(s, "GET", &format!("/api/webhooks/{id}/dead-letters"), None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let letters = resp.json()["dead_letters"]
        .as_array()
        .cloned()
        .expect("a list");
    check_letters(&letters);
    ids_of(&letters)
}

/// Dead letters of the visit, each tried twice and answered 500.
fn check_letters(letters: &[Value]) {
    let types: Vec<&str> = letters
        .iter()
        .map(|d| d["event"]["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, VISIT, "{letters:?}");
    for d in letters {
        assert_eq!(d["error"], "answered 500 Internal Server Error", "{d}");
        assert_eq!(d["attempts"], 2, "{d}");
        assert!(d["failed_at"].as_u64().is_some_and(|t| t > 0), "{d}");
    }
}

fn ids_of(letters: &[Value]) -> Vec<String> {
    letters
        .iter()
        .map(|d| d["event"]["id"].as_str().expect("an event id").to_owned())
        .collect()
}

fn event_ids(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Replays through the API with `body`; how many it says it replayed.
async fn replay(s: &TestServer, id: &str, body: &str) -> u64 {
    let resp = api(s, "POST", &format!("/api/webhooks/{id}/replay"), Some(body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()["replayed"].as_u64().expect("a count")
}

/// Runs `signaling webhooks ...` to its end.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec!["webhooks"];
    all.extend_from_slice(args);
    let out = ServerProcess::run(&all, env);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Without Redis: the endpoint is listed with its URL redacted, its dead
/// letters are the failed events, the refusals are the API's usual ones,
/// and a replay of them all delivers each under its own id, in order.
#[tokio::test]
async fn dead_letters_are_listed_and_replayed_through_the_admin_api() {
    let receiver = Receiver::start(Behaviour::Status(500)).await;
    // Credentials in the URL, which the API must not show.
    let url = format!("http://hook-user:hook-pass@{}/hook?key=k", receiver.addr);
    let id = signaling::webhook::Endpoint::parse(&url).expect("a URL").id;
    let s = TestServer::start(webhooks(&url, None)).await;
    visit(&s).await;
    let line = wait_settled(&s, VISIT.len() as u64).await;
    let shown = format!("http://{}/hook", receiver.addr);
    assert_eq!(
        line,
        json!({"id":id,"url":shown,"backlog":0,"dead_letters":VISIT.len()})
    );
    let ids = dead_letter_ids(&s, &id).await;
    assert!(receiver.distinct().is_empty(), "nothing was accepted yet");

    let two = api(
        &s,
        "GET",
        &format!("/api/webhooks/{id}/dead-letters?limit=2"),
        None,
    )
    .await;
    assert_eq!(
        ids_of(two.json()["dead_letters"].as_array().expect("a list")),
        ids[..2]
    );

    receiver.set(Behaviour::Accept);
    assert_eq!(replay(&s, &id, "{}").await, VISIT.len() as u64);
    let got = receiver
        .wait_until(WITHIN, |evs| evs.len() >= VISIT.len())
        .await;
    assert_eq!(event_ids(&got), ids.iter().cloned().collect(), "{got:?}");
    assert_in_order(&got);
    wait_settled(&s, 0).await;
    assert_eq!(replay(&s, &id, "{}").await, 0, "nothing left to replay");
}

/// The webhook routes refuse what the other admin routes refuse: no admin
/// token (401), an unknown endpoint (404), a body or a `limit` that is
/// not valid (400).
#[tokio::test]
async fn the_webhook_routes_refuse_bad_requests() {
    let receiver = Receiver::start(Behaviour::Accept).await;
    let url = receiver.url();
    let id = signaling::webhook::Endpoint::parse(&url).expect("a URL").id;
    let s = TestServer::start(webhooks(&url, None)).await;
    let dead = format!("/api/webhooks/{id}/dead-letters");
    let again = format!("/api/webhooks/{id}/replay");
    let routes = [
        ("GET", "/api/webhooks", None),
        ("GET", dead.as_str(), None),
        ("POST", again.as_str(), Some("{}")),
    ];
    for (method, path, body) in routes {
        let resp = http_request(s.addr, method, path, &[], body).await;
        assert_eq!(resp.status, 401, "{method} {path}: {resp:?}");
        assert_eq!(resp.json()["error"], "unauthorized");
    }
    let unknown = [
        ("GET", format!("/api/webhooks/{UNKNOWN}/dead-letters"), None),
        (
            "POST",
            format!("/api/webhooks/{UNKNOWN}/replay"),
            Some("{}"),
        ),
    ];
    for (method, path, body) in &unknown {
        let resp = api(&s, method, path, *body).await;
        assert_eq!(resp.status, 404, "{method} {path}: {resp:?}");
        assert_eq!(resp.json()["error"], "not_found");
    }
    let bad = [
        ("POST", again.clone(), Some(r#"{"bogus":1}"#)),
        ("POST", again.clone(), Some(r#"{"ids":"all"}"#)),
        ("POST", again.clone(), Some("not json")),
        ("GET", format!("{dead}?limit=0"), None),
        ("GET", format!("{dead}?limit=1001"), None),
        ("GET", format!("{dead}?limit=x"), None),
    ];
    for (method, path, body) in &bad {
        let resp = api(&s, method, path, *body).await;
        assert_eq!(resp.status, 400, "{method} {path} {body:?}: {resp:?}");
        assert_eq!(resp.json()["error"], "bad_request");
    }
}

/// The three routes are in the OpenAPI document, each answer described.
#[tokio::test]
async fn the_webhook_routes_are_documented() {
    let s = TestServer::start(|_| {}).await;
    let doc = http_request(s.addr, "GET", "/api/openapi.json", &[], None)
        .await
        .json();
    for (path, method) in [
        ("/api/webhooks", "get"),
        ("/api/webhooks/{endpoint}/dead-letters", "get"),
        ("/api/webhooks/{endpoint}/replay", "post"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in ["200", "401", "503"] {
            assert!(responses[status].is_object(), "{method} {path} {status}");
        }
    }
    // Without endpoints the list is empty, not an error.
    let resp = http_request(s.addr, "GET", "/api/webhooks", &[], None).await;
    assert_eq!(resp.json(), json!({"endpoints":[]}));
}

/// With Redis: the API shows what the cluster's log holds, the command
/// lists the same dead letters and replays one by URL (only that one is
/// delivered), then the API replays the rest. Without Redis the command
/// refuses and says where the dead letters are.
#[tokio::test]
async fn dead_letters_of_a_redis_cluster_are_replayed_by_the_api_and_the_command() {
    let redis = signaling_e2e::redis::Redis::start();
    let receiver = Receiver::start(Behaviour::Status(500)).await;
    let url = receiver.url();
    let id = signaling::webhook::Endpoint::parse(&url).expect("a URL").id;
    let s = TestServer::start(webhooks(&url, Some(redis.url()))).await;
    visit(&s).await;
    wait_settled(&s, VISIT.len() as u64).await;
    let ids = dead_letter_ids(&s, &id).await;

    let env = [("SIGNALING_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = cli(&["dead-letters", "--endpoint", &id], &env);
    assert_eq!(code, 0, "{err}");
    let letters: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    check_letters(&letters);
    assert_eq!(ids_of(&letters), ids);
    let (_, out, _) = cli(&["dead-letters", "--endpoint", &id, "--limit", "1"], &env);
    assert_eq!(out.lines().count(), 1, "{out}");

    receiver.set(Behaviour::Accept);
    let one = &ids[1];
    let (code, out, err) = cli(&["replay", "--endpoint", &url, "--id", one], &env);
    assert_eq!((code, out.trim()), (0, "replayed 1"), "{err}");
    receiver.wait_until(WITHIN, |evs| !evs.is_empty()).await;
    // Time for any other to arrive, if one wrongly would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.distinct();
    assert_eq!(event_ids(&got), HashSet::from([one.clone()]), "{got:?}");
    wait_settled(&s, VISIT.len() as u64 - 1).await;

    let (code, out, err) = cli(&["replay", "--endpoint", &id, "--id", "1-0"], &env);
    assert_eq!((code, out.trim()), (0, "replayed 0"));
    assert!(err.contains("1-0"), "{err}");

    assert_eq!(replay(&s, &id, "{}").await, VISIT.len() as u64 - 1);
    let got = receiver
        .wait_until(WITHIN, |evs| evs.len() >= VISIT.len())
        .await;
    assert_eq!(event_ids(&got), ids.iter().cloned().collect(), "{got:?}");
    wait_settled(&s, 0).await;

    let (code, _, err) = cli(&["dead-letters", "--endpoint", &id], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "without Redis the dead letters live in the server process: use the admin API"
        ),
        "{err}"
    );
    let (code, _, err) = cli(&["replay", "--endpoint", "nope"], &env);
    assert_eq!(code, 2, "{err}");
}
