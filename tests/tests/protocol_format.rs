//! docs/protocol.md sections 1 to 3 (transport, identifiers and limits,
//! message format), asserted against real servers on loopback: the `/ws`
//! refusals and their order, the per-address exemption of the host itself,
//! each identifier rule and limit with its flag, `id`/`ref`, the field rules
//! (I-JSON included) and the peer object. What a client sees across two
//! instances runs twice through `both!` (one instance, and two clustered
//! through Redis).

use serde_json::{Value, json};
use signaling_e2e::client::{Client, peer_ids};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::raw::{Raw, Step, connect_from, request_from, request_on, upgrade_request};
use signaling_e2e::server::TestServer;
use signaling_e2e::{both, join_token, room};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = signaling_e2e::client::WAIT;
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// A loopback address other than the host's own 127.0.0.1, which is exempt
/// from the per-address limits.
const OTHER: &str = "127.0.0.3";
const SECRET: &str = "protocol-format-secret-of-some-length";

// ---------------------------------------------------------------------------
// §1 Transport
// ---------------------------------------------------------------------------

/// §1: `/ws` speaks RFC 6455 version 13 over HTTP/1.1, and the server names no
/// subprotocol in its answer, even to a client that asks for one.
#[tokio::test]
async fn the_upgrade_is_rfc_6455_version_13_without_a_subprotocol() {
    let s = TestServer::start(|_| {}).await;
    let (status, head) = request_from(s.addr, "127.0.0.1", &upgrade_request(s.addr, "")).await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "RFC 6455's sample accept key: {head}"
    );
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    let asking = upgrade_request(s.addr, "Sec-WebSocket-Protocol: chat, v1.signaling\r\n");
    let (status, head) = request_from(s.addr, "127.0.0.1", &asking).await;
    assert_eq!(status, 101, "{head}");
    assert!(
        !head.contains("sec-websocket-protocol"),
        "no subprotocol chosen: {head}"
    );
    // Another WebSocket version is not taken.
    let v8 = upgrade_request(s.addr, "").replace("Version: 13", "Version: 8");
    assert_eq!(request_from(s.addr, "127.0.0.1", &v8).await.0, 400);
}

/// §1, §3.1, §6: a binary message gets `bad_message` without `ref` (even one
/// holding a request with an `id`), and the connection stays.
#[tokio::test]
async fn a_binary_message_gets_bad_message_without_ref_and_the_connection_stays() {
    let s = TestServer::start(|_| {}).await;
    let mut c = Raw::connect(&s.ws()).await;
    c.send_frame(Message::binary(br#"{"type":"ping","id":"bin"}"#.to_vec()))
        .await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_message", "{e}");
    assert!(e.get("ref").is_none(), "{e}");
    c.send_text(r#"{"type":"ping","id":"after"}"#).await;
    assert_eq!(c.expect("pong").await["ref"], "after");
}

/// §1, §12.1, §3.2: a token in the upgrade URL admits a join; a `token` in the
/// `join` wins over it, for better or worse; `"token": null` counts as absent,
/// so the URL's token applies.
#[tokio::test]
async fn a_token_in_the_join_wins_over_the_one_in_the_url() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("tok");
    let url = |token: &str| format!("{}?token={token}", s.ws());

    // The URL's token alone.
    let mut a = Client::connect(&url(&join_token(SECRET, &r)), "a").await;
    a.send(json!({"type":"join","room":r,"id":1})).await;
    assert_eq!(a.expect("joined").await["ref"], 1);
    // A good URL token, a bad join token: the join's is the one read.
    let mut b = Client::connect(&url(&join_token(SECRET, &r)), "b").await;
    b.send(json!({"type":"join","room":r,"id":2,"token":join_token(SECRET, "elsewhere")}))
        .await;
    let e = b.expect("error").await;
    assert_eq!((&e["code"], &e["ref"]), (&json!("unauthorized"), &json!(2)));
    // A URL token for another room, a good join token: admitted.
    let mut c = Client::connect(&url(&join_token(SECRET, "elsewhere")), "c").await;
    c.send(json!({"type":"join","room":r,"id":3,"token":join_token(SECRET, &r)}))
        .await;
    assert_eq!(c.expect("joined").await["ref"], 3);
    // `null` is no token: the URL's applies.
    let mut d = Client::connect(&url(&join_token(SECRET, &r)), "d").await;
    d.send(json!({"type":"join","room":r,"id":4,"token":null}))
        .await;
    assert_eq!(d.expect("joined").await["ref"], 4);
}

/// §1, §10: a draining instance answers every `/ws` request 503, before any
/// other check: a cross-site page, an address at its cap, a request that is
/// no upgrade.
#[tokio::test]
async fn a_draining_instance_refuses_every_ws_request_with_503_first() {
    let s = TestServer::start(|c| {
        c.drain_timeout = Duration::from_secs(5);
        c.limits.max_connections_per_ip = 1;
    })
    .await;
    // Holds the only slot of OTHER, and keeps the drain waiting.
    let mut held = Raw::connect_from(&s, OTHER).await;
    s.handle.shutdown();
    let goaway = held.text().await;
    assert!(goaway.contains("goaway"), "{goaway}");

    let valid = upgrade_request(s.addr, "");
    let cross_site = upgrade_request(s.addr, "Origin: https://evil.example\r\n");
    let plain_get = format!("GET /ws HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr);
    for (what, request, ip) in [
        ("a valid upgrade", &valid, "127.0.0.1"),
        ("from an address at its cap", &valid, OTHER),
        ("from a cross-site page", &cross_site, "127.0.0.1"),
        ("a request that is no upgrade", &plain_get, "127.0.0.1"),
    ] {
        assert_eq!(request_from(s.addr, ip, request).await.0, 503, "{what}");
    }
}

/// §1: not `GET` is 405 in the fourth row of the refusal table, so a draining
/// instance, a cross-site page and an address at its cap come first.
#[tokio::test]
async fn a_post_to_ws_meets_the_refusal_order_of_the_table() {
    let s = TestServer::start(|c| {
        c.drain_timeout = Duration::from_secs(5);
        c.limits.max_connections_per_ip = 1;
    })
    .await;
    let post = |extra: &str| {
        format!(
            "POST /ws HTTP/1.1\r\nHost: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            s.addr
        )
    };
    let origin = post("Origin: https://evil.example\r\n");
    let cross_site = request_from(s.addr, "127.0.0.1", &origin).await.0;
    let mut held = Raw::connect_from(&s, OTHER).await;
    let at_cap = request_from(s.addr, OTHER, &post("")).await.0;
    s.handle.shutdown();
    let goaway = held.text().await;
    assert!(goaway.contains("goaway"), "{goaway}");
    let draining = request_from(s.addr, "127.0.0.1", &post("")).await.0;
    assert_eq!(
        (cross_site, at_cap, draining),
        (403, 429, 503),
        "a POST from a cross-site page, from an address at its cap, while draining"
    );
}

/// §1: the Origin check comes before the per-address cap, and the cap before
/// the upgrade's own checks (a request that is no upgrade gets 429 from an
/// address at its cap).
#[tokio::test]
async fn origin_then_the_per_address_cap_then_the_upgrade_are_checked_in_order() {
    let s = TestServer::start(|c| c.limits.max_connections_per_ip = 1).await;
    let _held = Raw::connect_from(&s, OTHER).await;
    let cross_site = upgrade_request(s.addr, "Origin: https://evil.example\r\n");
    assert_eq!(request_from(s.addr, OTHER, &cross_site).await.0, 403);
    let valid = upgrade_request(s.addr, "");
    assert_eq!(request_from(s.addr, OTHER, &valid).await.0, 429);
    let no_key = valid.replace("Sec-WebSocket-Key", "X-Not-A-Key");
    assert_eq!(request_from(s.addr, OTHER, &no_key).await.0, 429);
    let plain_get = format!("GET /ws HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr);
    assert_eq!(request_from(s.addr, OTHER, &plain_get).await.0, 429);
    let http10 = valid.replace("HTTP/1.1", "HTTP/1.0");
    assert_eq!(request_from(s.addr, OTHER, &http10).await.0, 429);
    let head = valid.replace("GET", "HEAD");
    assert_eq!(request_from(s.addr, OTHER, &head).await.0, 429);
    // Another address is not at its cap: its broken upgrade is a 400.
    assert_eq!(request_from(s.addr, "127.0.0.4", &no_key).await.0, 400);
    assert_eq!(request_from(s.addr, "127.0.0.4", &valid).await.0, 101);
}

/// §1: an instance with `--max-connections` WebSockets open answers 503 to a
/// valid upgrade, but a broken one still gets its own 400, 405 (not `GET`)
/// or 426 (HTTP/1.0: cannot be upgraded) first; a slot comes back when a
/// connection ends.
#[tokio::test]
async fn a_full_instance_answers_503_after_the_upgrade_checks() {
    let s = TestServer::start(|c| c.limits.max_connections = 2).await;
    let a = s.client("a").await;
    let _b = s.client("b").await;
    let valid = upgrade_request(s.addr, "");
    assert_eq!(request_from(s.addr, "127.0.0.1", &valid).await.0, 503);
    let plain_get = format!("GET /ws HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr);
    assert_eq!(request_from(s.addr, "127.0.0.1", &plain_get).await.0, 400);
    let post = format!(
        "POST /ws HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        s.addr
    );
    assert_eq!(request_from(s.addr, "127.0.0.1", &post).await.0, 405);
    let head = valid.replace("GET", "HEAD");
    assert_eq!(request_from(s.addr, "127.0.0.1", &head).await.0, 405);
    let http10 = valid.replace("HTTP/1.1", "HTTP/1.0");
    assert_eq!(request_from(s.addr, "127.0.0.1", &http10).await.0, 426);
    a.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    while request_from(s.addr, "127.0.0.1", &valid).await.0 != 101 {
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// §1, §2.2: the host itself (127.0.0.1 and ::1) is exempt from the
/// per-address limits, connections and joins; another address is held to
/// them; behind a trusted proxy on the host, the forwarded client is.
#[tokio::test]
async fn the_host_itself_is_exempt_from_the_per_address_limits() {
    let limits = |c: &mut signaling::Config| {
        c.limits.max_connections_per_ip = 1;
        c.limits.join_rate_per_ip = 0.01;
        c.limits.join_burst_per_ip = 1.0;
    };
    let v4 = TestServer::start(limits).await;
    let v6 = TestServer::start(|c| {
        limits(c);
        c.listen = "[::1]:0".parse().expect("addr");
    })
    .await;
    for s in [&v4, &v6] {
        let r = room("host");
        let mut members = Vec::new();
        for i in 0..3 {
            let mut c = s.client(&format!("host-{i}")).await;
            c.join(&r).await;
            members.push(c);
        }
        assert_eq!(members.len(), 3, "three sockets and joins from {}", s.addr);
    }
    // Another address: one socket, one join.
    let mut other = Raw::connect_from(&v4, OTHER).await;
    let valid = upgrade_request(v4.addr, "");
    assert_eq!(request_from(v4.addr, OTHER, &valid).await.0, 429);
    other
        .send_text(r#"{"type":"join","room":"r1","id":1}"#)
        .await;
    assert!(other.text().await.contains("\"joined\""));
    other.send_text(r#"{"type":"leave"}"#).await;
    assert!(other.text().await.contains("\"left\""));
    other
        .send_text(r#"{"type":"join","room":"r2","id":2}"#)
        .await;
    let refused = other.json().await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["ref"], 2, "{refused}");

    // A proxy on the host, listed as trusted: its clients are limited.
    let proxied = TestServer::start(|c| {
        limits(c);
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let forwarded = upgrade_request(proxied.addr, "X-Forwarded-For: 203.0.113.5\r\n");
    let mut first = connect_from(proxied.addr, "127.0.0.1").await;
    assert_eq!(request_on(&mut first, &forwarded).await.0, 101);
    assert_eq!(
        request_from(proxied.addr, "127.0.0.1", &forwarded).await.0,
        429
    );
    // The proxy's own requests (no forwarded client) are the host's.
    let direct = upgrade_request(proxied.addr, "");
    for _ in 0..2 {
        assert_eq!(
            request_from(proxied.addr, "127.0.0.1", &direct).await.0,
            101
        );
    }
}

// ---------------------------------------------------------------------------
// §2.1 Identifiers
// ---------------------------------------------------------------------------

/// §2.1, §6: a room is 1 to 64 characters of `A-Z a-z 0-9 _ . -`, anything
/// else is `invalid_room` with `ref`; case matters (two rooms whose names
/// differ in case are two rooms).
async fn room_names_follow_the_rule_and_case_matters(d: Deployment) {
    let mut c = d.client(0, "c").await;
    let too_long = "r".repeat(65);
    for bad in [
        "",
        "a b",
        "caf\u{e9}",
        "a/b",
        "x%20y",
        "tab\t",
        too_long.as_str(),
    ] {
        c.send(json!({"type":"join","room":bad,"id":"j"})).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "invalid_room", "{bad:?}: {e}");
        assert_eq!(e["ref"], "j", "{bad:?}: {e}");
    }
    let tag = signaling::ids::random_hex(6);
    let upper = format!("Az09_.-{tag}{}", "R".repeat(64 - 7 - tag.len()));
    assert_eq!(upper.chars().count(), 64);
    let lower = upper.to_lowercase();
    let a = d.member(0, &upper, "a").await;
    let mut b = d.client(1, "b").await;
    let j = b.join(&lower).await;
    assert_eq!(j["room"], lower.as_str());
    assert!(j["peers"].as_array().expect("peers").is_empty(), "{j}");
    let mut c2 = d.client(1, "c2").await;
    let j = c2.join(&upper).await;
    assert_eq!(j["room"], upper.as_str());
    assert_eq!(peer_ids(&j["peers"]), vec![a.peer_id.clone()]);
}
both!(room_names_follow_the_rule_and_case_matters);

/// §2.1: `--max-room-len` sets the longest room name.
#[tokio::test]
async fn the_room_length_follows_max_room_len() {
    let s = TestServer::start(|c| c.limits.max_room_len = 8).await;
    let mut c = s.client("c").await;
    c.send(json!({"type":"join","room":"abcdefghi","id":9}))
        .await;
    assert_eq!(c.expect("error").await["code"], "invalid_room");
    assert_eq!(c.join("abcdefgh").await["room"], "abcdefgh");
}

/// §2.1: the server picks every `peer_id` (a `peer_id` in the `join` is an
/// unknown field, ignored), unique across instances, the same string for
/// every viewer.
async fn peer_ids_are_the_servers_and_unique(d: Deployment) {
    let r = room("ids");
    let mut ids = std::collections::BTreeSet::new();
    let mut first = d.client(0, "first").await;
    let j = first
        .join_with(&r, json!({"peer_id":"0123456789abcdef"}))
        .await;
    let id = j["peer_id"].as_str().expect("a string peer_id");
    assert!(!id.is_empty() && id != "0123456789abcdef", "{j}");
    d.settle(&r, id).await;
    ids.insert(id.to_string());
    let mut members = vec![first];
    for i in 0..8 {
        let mut c = d.client(i, &format!("m{i}")).await;
        let j = c.join(&r).await;
        let listed = peer_ids(&j["peers"]);
        assert_eq!(listed.len(), ids.len(), "{j}");
        assert!(listed.iter().all(|p| ids.contains(p)), "{j}");
        assert!(ids.insert(c.peer_id.clone()), "{} given twice", c.peer_id);
        d.settle(&r, &c.peer_id).await;
        members.push(c);
    }
    assert_eq!(ids.len(), 9);
    // What the first member heard of names the same ids.
    let mut heard = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let pj = members[0].expect("peer-joined").await;
        heard.insert(pj["peer"]["peer_id"].as_str().expect("id").to_string());
    }
    heard.insert(members[0].peer_id.clone());
    assert_eq!(heard, ids);
}
both!(peer_ids_are_the_servers_and_unique);

/// §2.1, §2.2, §6: a `name` is 0 to 64 Unicode characters (counted as
/// characters, not bytes), none a control character; others get
/// `bad_message` with `ref`.
async fn names_are_up_to_64_characters_without_control_characters(d: Deployment) {
    let r = room("names");
    let mut a = d.member(0, &r, "a").await;
    let mut c = d.client(1, "c").await;
    let too_long = "\u{1f600}".repeat(65);
    for bad in [
        too_long.as_str(),
        "a\u{7}b",
        "tab\there",
        "nl\n",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        c.send(json!({"type":"join","room":r,"name":bad,"id":"n"}))
            .await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_message", "{bad:?}: {e}");
        assert_eq!(e["ref"], "n", "{bad:?}: {e}");
    }
    // 64 characters of 4 bytes each.
    let longest = "\u{1f600}".repeat(64);
    let j = c.join_with(&r, json!({"name": longest})).await;
    assert_eq!(j["peers"][0]["name"], "", "a's name was not given: {j}");
    let pj = a.expect("peer-joined").await;
    assert_eq!(pj["peer"]["name"], longest.as_str());
    let mut e = d.client(0, "e").await;
    e.join_with(&r, json!({"name": ""})).await;
    assert_eq!(c.expect("peer-joined").await["peer"]["name"], "");
}
both!(names_are_up_to_64_characters_without_control_characters);

/// §2.1: `--max-name-chars` sets the longest name.
#[tokio::test]
async fn the_name_length_follows_max_name_chars() {
    let s = TestServer::start(|c| c.limits.max_name_chars = 3).await;
    let r = room("name3");
    let mut c = s.client("c").await;
    c.send(json!({"type":"join","room":r,"name":"abcd"})).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_message", "{e}");
    assert!(e["message"].as_str().unwrap_or("").contains('3'), "{e}");
    c.join_with(&r, json!({"name":"\u{e9}\u{e9}\u{e9}"})).await;
}

/// `meta` text of exactly `bytes` bytes: `{"k":"xx…"}`, with spaces around
/// the member when `spaced`.
fn meta_of(bytes: usize, spaced: bool) -> String {
    let (open, close) = if spaced {
        ("{ \"k\" : \"", "\" }")
    } else {
        ("{\"k\":\"", "\"}")
    };
    format!(
        "{open}{}{close}",
        "x".repeat(bytes - open.len() - close.len())
    )
}

/// §2.1, §2.2, §6: `meta` is an object of at most 1024 bytes as sent,
/// whitespace and multi-byte characters counted in bytes; past it `join`
/// and `update` get `too_large` with `ref`; a non-object is `bad_message`.
async fn meta_is_an_object_of_at_most_1024_bytes_as_sent(d: Deployment) {
    let r = room("meta");
    let mut a = d.member(0, &r, "a").await;
    let mut b = d.client(1, "b").await;
    let spaced_1025 = meta_of(1025, true);
    // 1025 bytes in 517 characters.
    let wide = format!("{{\"k\":\"{}x\"}}", "\u{e9}".repeat(508));
    assert_eq!(wide.len(), 1025);
    for over in [&spaced_1025, &meta_of(1025, false), &wide] {
        b.send_text(format!(
            r#"{{"type":"join","room":"{r}","meta":{over},"id":"m"}}"#
        ))
        .await;
        let e = b.expect("error").await;
        assert_eq!(e["code"], "too_large", "{e}");
        assert_eq!(e["ref"], "m", "{e}");
    }
    for not_object in ["\"x\"", "[1]", "5", "true"] {
        b.send_text(format!(
            r#"{{"type":"join","room":"{r}","meta":{not_object},"id":"o"}}"#
        ))
        .await;
        let e = b.expect("error").await;
        assert_eq!(
            (&e["code"], &e["ref"]),
            (&json!("bad_message"), &json!("o"))
        );
    }
    let spaced_1024 = meta_of(1024, true);
    b.send_text(format!(
        r#"{{"type":"join","room":"{r}","meta":{spaced_1024}}}"#
    ))
    .await;
    b.expect("joined").await;
    let pj = a.expect("peer-joined").await;
    let sent: Value = serde_json::from_str(&spaced_1024).expect("json");
    assert_eq!(pj["peer"]["meta"], sent);
    // The same bound for `update`.
    b.send_text(format!(
        r#"{{"type":"update","meta":{spaced_1025},"id":"u"}}"#
    ))
    .await;
    let e = b.expect("error").await;
    assert_eq!((&e["code"], &e["ref"]), (&json!("too_large"), &json!("u")));
    b.send_text(format!(
        r#"{{"type":"update","meta":{}}}"#,
        meta_of(1024, false)
    ))
    .await;
    let pu = a.expect("peer-updated").await;
    assert_eq!(
        pu["peer"]["meta"]["k"].as_str().map(str::len),
        Some(1024 - 8)
    );
    b.expect_silence(QUIET).await;
}
both!(meta_is_an_object_of_at_most_1024_bytes_as_sent);

/// §2.1: `--max-meta-bytes` sets the bound.
#[tokio::test]
async fn the_meta_bound_follows_max_meta_bytes() {
    let s = TestServer::start(|c| c.limits.max_meta_bytes = 16).await;
    let r = room("meta16");
    let mut c = s.client("c").await;
    c.send_text(format!(
        r#"{{"type":"join","room":"{r}","meta":{}}}"#,
        meta_of(17, false)
    ))
    .await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "too_large", "{e}");
    assert!(e["message"].as_str().unwrap_or("").contains("16"), "{e}");
    c.send_text(format!(
        r#"{{"type":"join","room":"{r}","meta":{}}}"#,
        meta_of(16, false)
    ))
    .await;
    c.expect("joined").await;
}

/// §2.1, §3.1: an `id` is a string of at most 64 characters (not bytes) or a
/// finite number written in at most 64 characters; it comes back as `ref`.
/// Any other `id` makes the request `bad_message` without `ref`.
#[tokio::test]
async fn ids_are_short_strings_or_finite_numbers_and_others_are_not_echoed() {
    let s = TestServer::start(|c| {
        c.limits.rate = 1000.0;
        c.limits.rate_burst = 1000.0;
    })
    .await;
    let mut c = Raw::connect(&s.ws()).await;
    let wide_64 = format!("\"{}\"", "\u{e9}".repeat(64));
    let digits_64 = format!("1{}", "0".repeat(63));
    let fraction_64 = format!("0.{}", "5".repeat(62));
    for good in [wide_64.as_str(), &digits_64, &fraction_64, "-7", "2.5e-3"] {
        c.send_text(format!(r#"{{"type":"ping","id":{good}}}"#))
            .await;
        let raw = c.text().await;
        let v: Value = serde_json::from_str(&raw).expect("json");
        assert_eq!(v["type"], "pong", "{good}: {raw}");
        assert!(raw.contains(&format!("\"ref\":{good}")), "{good}: {raw}");
    }
    let wide_65 = format!("\"{}\"", "x".repeat(65));
    let digits_65 = format!("1{}", "0".repeat(64));
    for bad in [
        wide_65.as_str(),
        &digits_65,
        "1e999",
        "-1e400",
        "true",
        "{\"a\":1}",
        "[1]",
    ] {
        c.send_text(format!(r#"{{"type":"ping","id":{bad}}}"#))
            .await;
        let raw = c.text().await;
        let v: Value = serde_json::from_str(&raw).expect("json");
        assert_eq!(v["type"], "error", "{bad}: {raw}");
        assert_eq!(v["code"], "bad_message", "{bad}: {raw}");
        assert!(v.get("ref").is_none(), "{bad}: {raw}");
    }
}

// ---------------------------------------------------------------------------
// §2.2 Sizes and rates
// ---------------------------------------------------------------------------

/// §1, §2.1, §2.2: the defaults of the limits table, of the identifier
/// flags and of the transport (listen address, TLS reload period), and the
/// frame budget they imply.
#[test]
fn the_defaults_are_those_of_the_tables() {
    let c = signaling::Config::default();
    let l = &c.limits;
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.tls_reload_interval, Duration::from_secs(5));
    assert_eq!((l.max_connections, l.max_connections_per_ip), (100_000, 64));
    assert_eq!(
        (l.max_room_len, l.max_name_chars, l.max_meta_bytes),
        (64, 64, 1024)
    );
    assert_eq!(
        (l.max_frame_bytes, l.max_read_bytes, l.max_data_bytes),
        (64 * 1024, 256 * 1024, 16 * 1024)
    );
    assert_eq!(
        (l.rate, l.rate_burst, l.flood_close_after),
        (50.0, 100.0, 100)
    );
    assert_eq!((l.join_rate_per_ip, l.join_burst_per_ip), (10.0, 30.0));
    assert_eq!(l.max_room_peers, 50);
    assert_eq!(l.join_deadline, Duration::from_secs(10));
    assert_eq!(l.heartbeat_timeout, Duration::from_secs(30));
    assert_eq!((l.outbox_frames, l.outbox_bytes), (512, 2 * 1024 * 1024));
    assert_eq!(c.grace, Duration::from_secs(10));
    assert_eq!(l.resume_queue, 256);
    let b = signaling::upgrade::FrameBudget::for_messages(l.rate, l.rate_burst);
    assert_eq!((b.per_second, b.burst), (500, 1000));
}

/// §2.2, §3.1: a text message over `--max-frame-bytes` (64 KiB) gets
/// `too_large` without `ref` and is dropped; the connection stays, up to the
/// read bound. A message of exactly the limit is handled.
#[tokio::test]
async fn a_message_over_the_frame_limit_is_too_large_and_the_connection_stays() {
    let s = TestServer::start(|_| {}).await;
    let mut c = Raw::connect(&s.ws()).await;
    let ping_of = |bytes: usize, id: &str| {
        let head = format!(r#"{{"type":"ping","id":"{id}","pad":""#);
        format!("{head}{}\"}}", "x".repeat(bytes - head.len() - 2))
    };
    c.send_text(ping_of(64 * 1024, "exact")).await;
    assert_eq!(c.expect("pong").await["ref"], "exact");
    for bytes in [64 * 1024 + 1, 200 * 1024] {
        c.send_text(ping_of(bytes, "over")).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "too_large", "{bytes}: {e}");
        assert!(e.get("ref").is_none(), "{bytes}: {e}");
    }
    c.send_text(r#"{"type":"ping","id":"still"}"#).await;
    assert_eq!(c.expect("pong").await["ref"], "still");
}

/// §2.2: `--max-frame-bytes` and `--max-read-bytes` set the two bounds: past
/// the first `too_large`, past the second close 1009; a read bound below
/// the frame limit is refused at start.
#[tokio::test]
async fn the_frame_and_read_bounds_follow_their_flags() {
    let mut bad = signaling::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    bad.limits.max_frame_bytes = 2000;
    bad.limits.max_read_bytes = 1000;
    assert!(matches!(
        signaling::bind(bad).await,
        Err(signaling::StartError::ReadLimit { .. })
    ));
    let s = TestServer::start(|c| {
        c.limits.max_frame_bytes = 1000;
        c.limits.max_read_bytes = 2000;
    })
    .await;
    let mut c = Raw::connect(&s.ws()).await;
    c.send_text(format!(r#"{{"type":"ping","p":"{}"}}"#, "x".repeat(1500)))
        .await;
    assert_eq!(c.expect("error").await["code"], "too_large");
    c.send_text(format!(r#"{{"type":"ping","p":"{}"}}"#, "x".repeat(2500)))
        .await;
    assert_eq!(c.closed(WAIT).await.map(|(code, _)| code), Some(1009));
}

/// §2.2, §6: `message.data` is at most 16 KiB of JSON as sent (whitespace
/// counted): past it `too_large` with `ref` and nothing relayed.
async fn message_data_is_at_most_16_kib_as_sent(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("data").await;
    // `[ "x…" ]`: 5 bytes around the string.
    let data_of = |bytes: usize, extra_space: bool| {
        let pad = "x".repeat(bytes - 5 - usize::from(extra_space));
        let sp = if extra_space { " " } else { "" };
        format!(r#"[ "{pad}"{sp}]"#)
    };
    let directed = format!(r#""to":"{}","#, a.peer_id);
    for (to, over) in [
        ("", data_of(16 * 1024 + 1, true)),
        (directed.as_str(), data_of(16 * 1024 + 1, false)),
    ] {
        b.send_text(format!(
            r#"{{"type":"message",{to}"data":{over},"id":"big"}}"#
        ))
        .await;
        let e = b.expect("error").await;
        assert_eq!(
            (&e["code"], &e["ref"]),
            (&json!("too_large"), &json!("big"))
        );
    }
    let exact = data_of(16 * 1024, true);
    b.send_text(format!(r#"{{"type":"message","data":{exact}}}"#))
        .await;
    let m = a.expect("message").await;
    assert_eq!(m["data"][0].as_str().map(str::len), Some(16 * 1024 - 6));
    b.expect_silence(QUIET).await;
}
both!(message_data_is_at_most_16_kib_as_sent);

/// §2.2: `--max-data-bytes` sets the `data` bound.
#[tokio::test]
async fn the_data_bound_follows_max_data_bytes() {
    let s = TestServer::start(|c| c.limits.max_data_bytes = 10).await;
    let mut c = s.client("c").await;
    c.join(&room("data10")).await;
    c.send_text(r#"{"type":"message","data":"123456789","id":1}"#.into())
        .await;
    let e = c.expect("error").await;
    assert_eq!((&e["code"], &e["ref"]), (&json!("too_large"), &json!(1)));
    assert!(e["message"].as_str().unwrap_or("").contains("10"), "{e}");
    // Ten bytes with the quotes: a broadcast to nobody, no reply.
    c.send_text(r#"{"type":"message","data":"12345678","id":2}"#.into())
        .await;
    c.expect_silence(QUIET).await;
}

/// §2.2, §3.1: past the burst of `--rate-burst` messages, each message gets
/// `rate_limited` without `ref` and is dropped; the bucket is checked first,
/// before a binary message, the size, the JSON or the request is looked at.
#[tokio::test]
async fn messages_past_the_rate_are_refused_without_ref_before_anything_else() {
    let s = TestServer::start(|c| {
        c.limits.rate = 0.1;
        c.limits.rate_burst = 3.0;
    })
    .await;
    let mut c = Raw::connect(&s.ws()).await;
    for i in 0..3 {
        c.send_text(format!(r#"{{"type":"ping","id":{i}}}"#)).await;
    }
    c.send_text(r#"{"type":"ping","id":"late"}"#).await;
    c.send_frame(Message::binary(b"\x00\x01".to_vec())).await;
    c.send_text("x".repeat(70 * 1024)).await;
    c.send_text("not json").await;
    c.send_text(r#"{"type":"join","room":"bad room","id":"j"}"#)
        .await;
    for i in 0..3 {
        assert_eq!(c.expect("pong").await["ref"], i);
    }
    for what in ["a ping", "binary", "too large", "not JSON", "a bad join"] {
        let e = c.expect("error").await;
        assert_eq!(e["code"], "rate_limited", "{what}: {e}");
        assert!(e.get("ref").is_none(), "{what}: {e}");
    }
    c.expect_silence(QUIET).await;
}

/// §2.2: a WebSocket ping from the client takes a message token but is never
/// answered `rate_limited`; pongs take none.
#[tokio::test]
async fn client_pings_take_a_token_silently_and_pongs_take_none() {
    let s = TestServer::start(|c| {
        c.limits.rate = 0.1;
        c.limits.rate_burst = 3.0;
    })
    .await;
    let mut pongs = Raw::connect(&s.ws()).await;
    for _ in 0..30 {
        pongs.send_frame(Message::Pong(Default::default())).await;
    }
    for i in 0..3 {
        pongs
            .send_text(format!(r#"{{"type":"ping","id":{i}}}"#))
            .await;
        assert_eq!(pongs.expect("pong").await["ref"], i);
    }

    let mut pings = Raw::connect(&s.ws()).await;
    for _ in 0..3 {
        pings.send_frame(Message::Ping(Default::default())).await;
    }
    pings.send_text(r#"{"type":"ping","id":"p"}"#).await;
    let e = pings.expect("error").await;
    assert_eq!(e["code"], "rate_limited", "the pings took the burst: {e}");
    // Pings past the rate: refused, silently.
    for _ in 0..5 {
        pings.send_frame(Message::Ping(Default::default())).await;
    }
    pings.expect_silence(QUIET).await;
}

/// §2.2, §7.1: more than `--flood-close-after` refusals within 10 s close the
/// connection with 1008 and the flood reason; up to it, each is answered.
#[tokio::test]
async fn more_refusals_than_flood_close_after_close_with_1008() {
    let s = TestServer::start(|c| {
        c.limits.rate = 0.1;
        c.limits.rate_burst = 1.0;
        c.limits.flood_close_after = 5;
    })
    .await;
    let mut c = Raw::connect(&s.ws()).await;
    for i in 0..7 {
        c.send_text(format!(r#"{{"type":"ping","id":{i}}}"#)).await;
    }
    assert_eq!(c.expect("pong").await["ref"], 0);
    for _ in 0..5 {
        assert_eq!(c.expect("error").await["code"], "rate_limited");
    }
    let (code, reason) = c.closed(WAIT).await.expect("a close frame");
    assert_eq!(code, 1008);
    assert_eq!(reason, "rate limit exceeded repeatedly");
}

/// §2.2: the frame budget follows the message rate but is never below 200
/// frames of burst; breaking it closes with 1008 and the message under way
/// is not handled.
#[tokio::test]
async fn breaking_the_frame_budget_closes_with_1008_mid_message() {
    // Ten frames per message of 10/s and a burst of 10 would be 100/s and
    // 100: the floor, 100/s and 200, applies.
    let s = TestServer::start(|c| {
        c.limits.rate = 10.0;
        c.limits.rate_burst = 10.0;
    })
    .await;
    let mut c = Raw::connect(&s.ws()).await;
    // A ping request with the id `m{k}`, padded to be cut in 60 frames.
    let ping = |k: usize| {
        format!(
            r#"{{"type":"ping","id":"m{k}","pad":"{}"}}"#,
            "x".repeat(200)
        )
    };
    // 60 frames each: three take 180 frames, within the floor's burst.
    for k in 0..3 {
        c.send_fragmented(&ping(k), 60).await;
    }
    for k in 0..3 {
        assert_eq!(c.expect("pong").await["ref"], format!("m{k}"));
    }
    // Four more, 240 frames: the budget breaks during one of them.
    for k in 3..7 {
        c.send_fragmented(&ping(k), 60).await;
    }
    let mut handled = Vec::new();
    let code = loop {
        match c.step(WAIT).await {
            Step::Text(_, v) => {
                assert_eq!(v["type"], "pong", "{v}");
                handled.push(v["ref"].as_str().expect("ref").to_string());
            }
            Step::Closed(close) => break close.map(|(code, _)| code),
            Step::Nothing => panic!("no close after {handled:?}"),
        }
    };
    assert_eq!(code, Some(1008), "after {handled:?}");
    let expected: Vec<String> = (3..3 + handled.len()).map(|k| format!("m{k}")).collect();
    assert_eq!(handled, expected, "in order, none skipped");
    assert!(
        handled.len() < 4,
        "the last messages were not handled: {handled:?}"
    );
}

/// §2.2, §7.1: a connection that has not joined within `--join-deadline` is
/// closed with 1008; one that joined is not.
#[tokio::test]
async fn a_connection_that_never_joins_is_closed_at_the_join_deadline() {
    let s = TestServer::start(|c| c.limits.join_deadline = Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let mut idle = Raw::connect(&s.ws()).await;
    let mut member = s.client("member").await;
    member.join(&room("deadline")).await;
    assert_eq!(idle.closed(WAIT).await.map(|(code, _)| code), Some(1008));
    assert!(started.elapsed() >= Duration::from_millis(400));
    member.send(json!({"type":"ping","id":1})).await;
    assert_eq!(member.expect("pong").await["ref"], 1);
}

/// §2.2, §6: `--max-room-peers` members at most, across instances: the next
/// `join` gets `room_full` with `ref`, and the connection may try again.
async fn a_room_holds_at_most_max_room_peers(d: Deployment) {
    let (r, _a, _b) = d.pair("full").await;
    let mut c = d.client(0, "c").await;
    c.send(json!({"type":"join","room":r,"id":"full"})).await;
    let e = c.expect("error").await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("room_full"), &json!("full"))
    );
    c.join(&room("other")).await;
}
both!(
    a_room_holds_at_most_max_room_peers,
    |c: &mut signaling::Config| { c.limits.max_room_peers = 2 }
);

/// §2.2, §8, §9: a held peer keeps up to `--resume-queue` relays; past it a
/// directed relay gets `unavailable` with `ref`; the kept ones follow its
/// resume's `joined`, in order.
async fn a_held_peer_keeps_resume_queue_relays(d: Deployment) {
    let (r, mut a, b) = d.pair("held").await;
    let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    d.server(1).wait_held(1).await;
    for i in 0..4 {
        a.send(json!({"type":"offer","to":b_id,"sdp":format!("s{i}"),"id":i}))
            .await;
    }
    let e = a.expect("error").await;
    assert_eq!((&e["code"], &e["ref"]), (&json!("unavailable"), &json!(3)));
    a.expect_silence(QUIET).await;
    let mut b2 = d.client(1, "b2").await;
    let j = b2.join_with(&r, json!({"resume": token})).await;
    assert_eq!(j["peer_id"], b_id.as_str());
    for i in 0..3 {
        assert_eq!(b2.expect("offer").await["sdp"], format!("s{i}"));
    }
    b2.expect_silence(QUIET).await;
}
both!(
    a_held_peer_keeps_resume_queue_relays,
    |c: &mut signaling::Config| { c.limits.resume_queue = 3 }
);

// ---------------------------------------------------------------------------
// §3 Message format
// ---------------------------------------------------------------------------

/// §3, §3.1, §6: a client message is a JSON object with a string `type`: text
/// that is not JSON or not an object is `bad_message` without `ref`; a
/// missing, non-string or unknown `type` is `bad_message` with the `ref` of
/// its readable `id`. Every server message is an object with a string `type`
/// (checked on each frame `Raw` reads).
#[tokio::test]
async fn messages_are_json_objects_with_a_string_type() {
    let s = TestServer::start(|c| c.limits.rate_burst = 1000.0).await;
    let mut c = Raw::connect(&s.ws()).await;
    for unread in [
        "",
        "hello",
        r#"{"type":"ping","id":"x""#,
        r#"{"type":"ping","id":"x"}{"type":"ping"}"#,
        r#"[{"type":"ping","id":"x"}]"#,
        r#""ping""#,
        "42",
        "null",
    ] {
        c.send_text(unread).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_message", "{unread:?}: {e}");
        assert!(e.get("ref").is_none(), "{unread:?}: {e}");
    }
    for typeless in [
        r#"{"id":"t"}"#,
        r#"{"type":5,"id":"t"}"#,
        r#"{"type":null,"id":"t"}"#,
        r#"{"type":"PING","id":"t"}"#,
        r#"{"type":"peer-joined","id":"t"}"#,
    ] {
        c.send_text(typeless).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_message", "{typeless}: {e}");
        assert_eq!(e["ref"], "t", "{typeless}: {e}");
    }
}

/// §3.1: `ref` is the request's `id` exactly as written (number spelling and
/// string escapes kept), on `joined`, `left`, `pong` and `error`.
#[tokio::test]
async fn ref_is_the_id_as_written_on_joined_left_pong_and_error() {
    let s = TestServer::start(|_| {}).await;
    let mut c = Raw::connect(&s.ws()).await;
    let r = room("ref");
    for (request, id, reply) in [
        (
            r#"{"type":"update","meta":{},"id":1E2}"#.to_string(),
            "1E2",
            "error",
        ),
        (r#"{"type":"ping","id":1.50}"#.into(), "1.50", "pong"),
        (r#"{"type":"ping","id":-0}"#.into(), "-0", "pong"),
        (
            r#"{"type":"ping","id":123456789012345678901234567890}"#.into(),
            "123456789012345678901234567890",
            "pong",
        ),
        (
            format!(r#"{{"type":"join","room":"{r}","id":"\u0041\n\u00e9"}}"#),
            r#""\u0041\n\u00e9""#,
            "joined",
        ),
        (
            r#"{"type":"join","room":"again","id":"j2"}"#.into(),
            r#""j2""#,
            "error",
        ),
        (r#"{"type":"leave","id":0.0}"#.into(), "0.0", "left"),
    ] {
        c.send_text(&request).await;
        let raw = c.text().await;
        let v: Value = serde_json::from_str(&raw).expect("json");
        assert_eq!(v["type"], reply, "{request}: {raw}");
        assert!(raw.contains(&format!(r#""ref":{id}"#)), "{request}: {raw}");
    }
}

/// §3.1: the server never puts `ref` on events (`peer-*`, relays, `goaway`),
/// even when the request behind them had an `id`; relays and `update` get no
/// reply on success; the sender's `id` is not passed on.
async fn events_never_carry_ref_and_quiet_requests_get_no_reply(d: Deployment) {
    let (r, mut a, mut b) = d.pair("noref").await;
    let to = a.peer_id.clone();
    let requests = [
        json!({"type":"update","meta":{"m":1},"id":"u"}),
        json!({"type":"offer","to":to,"sdp":"v=0\r\n","id":"o"}),
        json!({"type":"answer","to":to,"sdp":"v=0\r\n","id":"a"}),
        json!({"type":"candidate","to":to,"candidate":null,"id":"c"}),
        json!({"type":"message","to":to,"data":1,"id":"m"}),
        json!({"type":"message","data":2,"id":"b"}),
    ];
    for req in requests {
        b.send(req.clone()).await;
        let got = a.next(WAIT).await.expect("an event");
        assert!(
            got.get("ref").is_none() && got.get("id").is_none(),
            "{req} -> {got}"
        );
    }
    b.expect_silence(QUIET).await;
    let mut c = d.client(0, "c").await;
    c.send(json!({"type":"join","room":r,"id":"cj"})).await;
    assert_eq!(c.expect("joined").await["ref"], "cj");
    for who in [&mut a, &mut b] {
        let pj = who.expect("peer-joined").await;
        assert!(pj.get("ref").is_none(), "{pj}");
    }
    c.send(json!({"type":"leave","id":"cl"})).await;
    assert_eq!(c.expect("left").await["ref"], "cl");
    let pl = a.expect("peer-left").await;
    assert!(pl.get("ref").is_none(), "{pl}");
    d.server(0).handle.shutdown();
    let g = a.expect("goaway").await;
    assert!(g.get("ref").is_none(), "{g}");
}
both!(events_never_carry_ref_and_quiet_requests_get_no_reply);

/// §3.1: an `error` has no `ref` when the message was refused before its `id`
/// was read (a known field twice, a bad `id`), and has it once the `id` was
/// read (an unknown type, a missing field). A field this page does not define
/// may be given twice: it is ignored.
#[tokio::test]
async fn errors_before_the_id_was_read_carry_no_ref() {
    let s = TestServer::start(|c| c.limits.rate_burst = 1000.0).await;
    let mut c = Raw::connect(&s.ws()).await;
    for unread in [
        r#"{"type":"ping","id":"x","id":"x"}"#,
        r#"{"id":"x","type":"ping","type":"ping"}"#,
        r#"{"id":"x","type":"join","room":"a","room":"a"}"#,
        r#"{"id":"x","type":"message","data":1,"data":1}"#,
        r#"{"type":"ping","id":"x","id":"y"}"#,
        r#"{"type":"ping","id":["x"]}"#,
    ] {
        c.send_text(unread).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_message", "{unread}: {e}");
        assert!(e.get("ref").is_none(), "{unread}: {e}");
    }
    for read in [
        r#"{"type":"nope","id":"x"}"#,
        r#"{"type":"offer","sdp":"v=0","id":"x"}"#,
        r#"{"type":"join","id":"x"}"#,
        r#"{"type":"update","meta":[],"id":"x"}"#,
    ] {
        c.send_text(read).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_message", "{read}: {e}");
        assert_eq!(e["ref"], "x", "{read}: {e}");
    }
    c.send_text(r#"{"type":"ping","id":"x","extra":1,"extra":2}"#)
        .await;
    assert_eq!(c.expect("pong").await["ref"], "x");
}

/// §3.2, §5.5: fields this page does not define are ignored, in every
/// message; a forged `from` or `ref` in a relay changes nothing.
async fn unknown_fields_are_ignored(d: Deployment) {
    let (r, mut a, mut b) = d.pair("unknown").await;
    b.send(json!({"type":"ping","id":1,"room":"x","to":"y","extra":{"deep":[1]}}))
        .await;
    assert_eq!(b.expect("pong").await["ref"], 1);
    b.send(json!({"type":"message","data":"hi","from":"forged","ref":"forged","sdp":7}))
        .await;
    let m = a.expect("message").await;
    assert_eq!(m["from"], b.peer_id.as_str(), "{m}");
    assert!(m.get("ref").is_none(), "{m}");
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0","data":{"x":1},"name":5}))
        .await;
    let o = a.expect("offer").await;
    assert_eq!((&o["from"], &o["sdp"]), (&json!(b.peer_id), &json!("v=0")));
    let mut c = d.client(1, "c").await;
    let j = c
        .join_with(
            &r,
            json!({"peer_id":"forged","joined_at":1,"protocol":9,"x":[]}),
        )
        .await;
    assert_ne!(j["peer_id"], "forged");
    assert_eq!(j["protocol"], 1);
    let pj = a.expect("peer-joined").await;
    assert_eq!(pj["peer"]["peer_id"], c.peer_id.as_str());
    assert_ne!(pj["peer"]["joined_at"], 1);
}
both!(unknown_fields_are_ignored);

/// §3.2, §4.5: an optional string or object field set to `null` counts as
/// absent (the peer gets the defaults), except `message.to`: `"to": null` is
/// `bad_message` with `ref` and is not broadcast. A required field set to
/// `null` is missing.
async fn null_counts_as_absent_except_message_to(d: Deployment) {
    let (r, mut a, mut b) = d.pair("null").await;
    let mut c = d.client(1, "c").await;
    let j = c
        .join_with(
            &r,
            json!({"name":null,"meta":null,"resume":null,"token":null}),
        )
        .await;
    assert_eq!(j["room"], r.as_str());
    for who in [&mut a, &mut b] {
        let pj = who.expect("peer-joined").await;
        assert_eq!(
            (&pj["peer"]["name"], &pj["peer"]["meta"]),
            (&json!(""), &json!({}))
        );
    }
    c.send(json!({"type":"message","to":null,"data":"x","id":"n"}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("bad_message"), &json!("n"))
    );
    c.send(json!({"type":"update","meta":null,"id":"u"})).await;
    let e = c.expect("error").await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("bad_message"), &json!("u"))
    );
    c.send(json!({"type":"offer","to":a.peer_id,"sdp":null,"id":"s"}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("bad_message"), &json!("s"))
    );
    // What follows is the next thing the others get.
    c.send(json!({"type":"message","data":"after"})).await;
    for who in [&mut a, &mut b] {
        assert_eq!(who.expect("message").await["data"], "after");
    }
}
both!(null_counts_as_absent_except_message_to);

/// §3.2: relayed values (`meta`, `data`, `sdp`, `candidate`) must be I-JSON: a
/// lone surrogate in a member name, or more than 64 levels of nesting, gets
/// `bad_message` with `ref` and a message naming the field, and nothing is
/// relayed; `1e-400`, a surrogate pair and exactly 64 levels are relayed as
/// written.
async fn relayed_values_must_be_ijson(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("ijson").await;
    let to = a.peer_id.clone();
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let too_deep = deep(65);
    let bad_name = r#"{"\udfff":1}"#;
    let refused = [
        (
            "data",
            format!(r#"{{"type":"message","data":{too_deep},"id":"x"}}"#),
        ),
        (
            "data",
            format!(r#"{{"type":"message","to":"{to}","data":{bad_name},"id":"x"}}"#),
        ),
        (
            "meta",
            format!(r#"{{"type":"update","meta":{{"a":{too_deep}}},"id":"x"}}"#),
        ),
        (
            "meta",
            format!(r#"{{"type":"update","meta":{bad_name},"id":"x"}}"#),
        ),
        (
            "candidate",
            format!(r#"{{"type":"candidate","to":"{to}","candidate":{bad_name},"id":"x"}}"#),
        ),
        (
            "sdp",
            format!(r#"{{"type":"offer","to":"{to}","sdp":"\udbff","id":"x"}}"#),
        ),
    ];
    for (field, frame) in refused {
        b.send_text(frame.clone()).await;
        let e = b.expect("error").await;
        assert_eq!(
            (&e["code"], &e["ref"]),
            (&json!("bad_message"), &json!("x")),
            "{frame}"
        );
        let text = e["message"].as_str().unwrap_or("");
        assert!(text.contains(field), "{frame}: {text}");
    }
    // Accepted, and relayed as written.
    let tiny = r#"{"n":1e-400,"s":"\ud83d\ude00"}"#;
    b.send_text(format!(r#"{{"type":"message","data":{tiny}}}"#))
        .await;
    let m = a.expect("message").await;
    assert_eq!(m["data"]["s"], "\u{1f600}", "{m}");
    assert_eq!(m["data"]["n"].as_f64(), Some(0.0), "{m}");
    let deepest = deep(64);
    b.send_text(format!(
        r#"{{"type":"message","to":"{to}","data":{deepest}}}"#
    ))
    .await;
    let m = a.expect("message").await;
    let mut v = &m["data"];
    for _ in 0..64 {
        v = &v[0];
    }
    assert_eq!(v, &json!(1), "64 levels arrive whole");
    a.expect_silence(QUIET).await;
}
both!(relayed_values_must_be_ijson);

/// §3.2, §5.1, §5.2, §5.3: a peer object has `peer_id`, `name` (empty when not
/// given), `meta` (`{}` when not given, else as last set) and `joined_at`
/// (Unix milliseconds of the join), and `name` and `joined_at` are kept across
/// an update and a resume.
async fn the_peer_object_has_its_four_fields(d: Deployment) {
    let r = room("peerobj");
    let before = unix_ms();
    let mut a = d.client(0, "a").await;
    a.join_with(&r, json!({"name":"Ada","meta":{"muted":false}}))
        .await;
    let after = unix_ms();
    d.settle(&r, &a.peer_id).await;
    let mut b = d.client(1, "b").await;
    let j = b.join(&r).await;
    let p = &j["peers"][0];
    let keys: std::collections::BTreeSet<&str> = p
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["joined_at", "meta", "name", "peer_id"]
            .into_iter()
            .collect()
    );
    assert_eq!(p["peer_id"], a.peer_id.as_str());
    assert_eq!(p["name"], "Ada");
    assert_eq!(p["meta"], json!({"muted":false}));
    let joined_at = p["joined_at"].as_u64().expect("joined_at: a whole number");
    // The instances share this host's clock; a second of slack either way.
    assert!(
        (before - 1000..=after + 1000).contains(&joined_at),
        "{before} <= {joined_at} <= {after}"
    );
    let pj = a.expect("peer-joined").await;
    assert_eq!(
        (&pj["peer"]["name"], &pj["peer"]["meta"]),
        (&json!(""), &json!({}))
    );
    let b_joined_at = pj["peer"]["joined_at"].clone();
    assert!(b_joined_at.as_u64() >= Some(joined_at), "{pj}");

    // `meta` as last set; the rest kept.
    a.send(json!({"type":"update","meta":{"muted":true}})).await;
    let pu = b.expect("peer-updated").await;
    assert_eq!(
        pu["peer"],
        json!({"peer_id":a.peer_id,"name":"Ada","meta":{"muted":true},"joined_at":joined_at})
    );
    // Across a resume on the other instance.
    let (a_id, token) = (a.peer_id.clone(), a.resume.clone());
    a.drop_tcp();
    let mut a2 = d.client(1, "a2").await;
    let j = a2
        .join_with(&r, json!({"resume": token, "name":"Other"}))
        .await;
    assert_eq!(j["peer_id"], a_id.as_str());
    d.settle(&r, &a_id).await;
    let mut c = d.client(0, "c").await;
    let j = c.join(&r).await;
    let listed: Vec<&Value> = j["peers"].as_array().expect("peers").iter().collect();
    assert_eq!(listed.len(), 2, "{j}");
    assert_eq!(
        *listed[0],
        json!({"peer_id":a_id,"name":"Ada","meta":{"muted":true},"joined_at":joined_at})
    );
    assert_eq!(listed[1]["joined_at"], b_joined_at);
}
both!(the_peer_object_has_its_four_fields);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Now, in Unix milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
