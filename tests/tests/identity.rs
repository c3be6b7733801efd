//! Verified identity in the room (docs/protocol.md §12.1, §12.4): the peer
//! object carries the join token's `sub` as `identity`, which a client
//! cannot set; the token may fix the display name; a second connection of
//! one identity is kept or replaces the older one (`--same-identity`, or
//! the token's `same_identity`), across instances; grants limit `update`,
//! room-wide `message` and the rooms a token opens. Each runs on one
//! instance, two through a real redis-server, and two linked.

use serde_json::{Value, json};
use signaling::auth::{Auth, SameIdentity, now_unix};
use signaling_e2e::both;
use signaling_e2e::client::{Client, WAIT, http_request};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::room;
use std::time::{Duration, Instant};

const SECRET: &str = "identity-test-secret-0123456789abcdef";

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(now_unix() + 300);
    Auth::new(SECRET).sign(&claims)
}

fn auth_on(c: &mut signaling::Config) {
    c.auth_secret = Some(SECRET.into());
}

fn replace_by_default(c: &mut signaling::Config) {
    auth_on(c);
    c.same_identity = SameIdentity::Replace;
}

/// A client on place `i` that joined `room` with a token of `claims` (and
/// `extra` fields in its `join`), once every instance lists it.
async fn joined(
    d: &Deployment,
    i: usize,
    room: &str,
    claims: Value,
    extra: Value,
) -> (Client, Value) {
    let mut c = d.client(i, claims["sub"].as_str().unwrap_or("anon")).await;
    let mut msg = json!({"token": token(claims)});
    if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    let j = c.join_with(room, msg).await;
    wait_members(d, room, |ids| ids.contains(&c.peer_id)).await;
    (c, j)
}

/// The room's members as `GET /api/rooms/{room}` (with an admin token) on
/// instance `addr` lists them.
async fn members(addr: std::net::SocketAddr, room: &str) -> Vec<Value> {
    let admin = format!("Bearer {}", token(json!({"admin": true})));
    let path = format!("/api/rooms/{room}");
    let resp = http_request(addr, "GET", &path, &[("Authorization", &admin)], None).await;
    match resp.status {
        200 => resp.json()["peers"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Waits until every instance lists peer ids that `want` accepts.
async fn wait_members(d: &Deployment, room: &str, want: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in d.live() {
        loop {
            let ids: Vec<String> = members(s.addr, room)
                .await
                .iter()
                .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                .collect();
            if want(&ids) {
                break;
            }
            assert!(Instant::now() < deadline, "{room} on {}: {ids:?}", s.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The events `c` gets within `within` (until its connection ends).
async fn events(c: &mut Client, within: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    c.each_until(Instant::now() + within, |v| seen.push(v))
        .await;
    seen
}

/// §12.4, §3.2: the peer object carries the token's `sub` as `identity`: not what the
/// client claims, in `joined.peers`, `peer-joined` and the API alike. A
/// token's `name` is the one shown, whatever the client asks.
async fn the_identity_is_the_token_s(d: Deployment) {
    let r = room("identity");
    let (mut a, _) = joined(
        &d,
        0,
        &r,
        json!({"room": r, "sub": "ada"}),
        json!({"name": "A"}),
    )
    .await;
    let claims = json!({"room": r, "sub": "bob", "name": "Bob B."});
    let (b, jb) = joined(
        &d,
        1,
        &r,
        claims,
        json!({"name": "mallory", "identity": "root"}),
    )
    .await;
    let ada = &jb["peers"][0];
    assert_eq!(
        (ada["identity"].clone(), ada["name"].clone()),
        (json!("ada"), json!("A")),
        "{jb}"
    );
    let pj = a.expect("peer-joined").await;
    let bob = &pj["peer"];
    assert_eq!(bob["peer_id"], b.peer_id.as_str(), "{pj}");
    assert_eq!(bob["identity"], "bob", "{pj}");
    assert_eq!(bob["name"], "Bob B.", "{pj}");
    for s in d.live() {
        let listed = members(s.addr, &r).await;
        let found = listed.iter().find(|p| p["peer_id"] == b.peer_id.as_str());
        assert_eq!(found, Some(bob), "on {}", s.addr);
    }
    // An update keeps the identity.
    let mut b = b;
    b.send(json!({"type": "update", "meta": {"m": 1}})).await;
    let up = a.expect("peer-updated").await;
    assert_eq!(up["peer"]["identity"], "bob", "{up}");
}
both!(the_identity_is_the_token_s, super::auth_on);

/// §12.4: by default both connections of one identity stay, each its own peer.
async fn the_same_identity_twice_is_allowed_by_default(d: Deployment) {
    let r = room("twice");
    let (mut first, _) = joined(&d, 0, &r, json!({"room": r, "sub": "ada"}), json!({})).await;
    let (second, j) = joined(&d, 1, &r, json!({"room": r, "sub": "ada"}), json!({})).await;
    assert_eq!(j["peers"][0]["peer_id"], first.peer_id.as_str(), "{j}");
    let pj = first.expect("peer-joined").await;
    assert_eq!(pj["peer"]["peer_id"], second.peer_id.as_str());
    first.expect_silence(Duration::from_millis(300)).await;
    wait_members(&d, &r, |ids| ids.len() == 2).await;
}
both!(
    the_same_identity_twice_is_allowed_by_default,
    super::auth_on
);

/// §12.4, §7.1, §7.2: with `--same-identity replace`, a second connection of one identity
/// (on another instance too) takes the place of the first: that one is
/// closed with 4003, the others see it leave as `replaced`, its resume
/// token is dead, and only the newer one is listed.
async fn the_same_identity_replaces_the_older_connection(d: Deployment) {
    let r = room("replace");
    let (mut watcher, _) = joined(&d, 0, &r, json!({"room": r, "sub": "wat"}), json!({})).await;
    let (mut old, _) = joined(&d, 0, &r, json!({"room": r, "sub": "ada"}), json!({})).await;
    assert_eq!(
        watcher.expect("peer-joined").await["peer"]["peer_id"],
        old.peer_id.as_str()
    );
    let mut new = d.client(1, "ada again").await;
    let j = new
        .join_with(
            &r,
            json!({"token": token(json!({"room": r, "sub": "ada"}))}),
        )
        .await;
    assert_eq!(old.closed(WAIT).await, Some(4003));
    let ids: Vec<&Value> = j["peers"].as_array().expect("peers").iter().collect();
    assert!(
        ids.iter().all(|p| p["peer_id"] != old.peer_id.as_str()) || d.clustered(),
        "a local older connection is gone before the newer one's joined: {j}"
    );
    let seen = events(&mut watcher, Duration::from_secs(2)).await;
    let left = seen
        .iter()
        .find(|v| v["type"] == "peer-left")
        .expect("peer-left");
    assert_eq!(left["peer_id"], old.peer_id.as_str(), "{seen:?}");
    assert_eq!(left["reason"], "replaced", "{seen:?}");
    assert!(
        seen.iter()
            .any(|v| v["type"] == "peer-joined" && v["peer"]["peer_id"] == new.peer_id.as_str()),
        "{seen:?}"
    );
    wait_members(&d, &r, |ids| ids.len() == 2 && ids.contains(&new.peer_id)).await;
    let mut back = d.client(0, "old back").await;
    let resume = json!({"type": "join", "room": r, "resume": old.resume, "id": 1,
                        "token": token(json!({"room": r, "sub": "ada"}))});
    back.send(resume).await;
    assert_eq!(back.expect("error").await["code"], "resume_failed");
}
both!(
    the_same_identity_replaces_the_older_connection,
    super::replace_by_default
);

/// §12.4, §12.1: a token's `same_identity` claim chooses over the server's flag: here
/// `replace` on a server that allows, and `allow` on one that replaces.
async fn a_token_chooses_its_own_same_identity_rule(d: Deployment) {
    let r = room("claim");
    let (mut old, _) = joined(&d, 0, &r, json!({"room": r, "sub": "ada"}), json!({})).await;
    let keep = json!({"room": r, "sub": "ada", "same_identity": "allow"});
    let (_kept, _) = joined(&d, 1, &r, keep, json!({})).await;
    assert_eq!(old.expect("peer-joined").await["type"], "peer-joined");
    wait_members(&d, &r, |ids| ids.len() == 2).await;
    let replace = json!({"room": r, "sub": "ada", "same_identity": "replace"});
    let (newest, _) = joined(&d, 1, &r, replace, json!({})).await;
    assert_eq!(old.closed(WAIT).await, Some(4003));
    wait_members(&d, &r, |ids| ids == [newest.peer_id.clone()]).await;
}
both!(a_token_chooses_its_own_same_identity_rule, super::auth_on);

/// §12.4, §12.1, §6: grants: a token without `update_meta` cannot `update`, one without
/// `broadcast` cannot send `message` to the room (to one peer it can), and
/// `rooms` opens each room it names and no other.
async fn grants_limit_what_a_member_may_do(d: Deployment) {
    let r = room("grants");
    let (mut a, _) = joined(&d, 0, &r, json!({"room": r, "sub": "ada"}), json!({})).await;
    let limited = json!({"rooms": ["elsewhere", r], "sub": "lim",
                         "grants": {"update_meta": false, "broadcast": false}});
    let (mut l, _) = joined(&d, 1, &r, limited, json!({})).await;
    a.expect("peer-joined").await;
    l.send(json!({"type": "update", "meta": {"x": 1}, "id": "u"}))
        .await;
    let e = l.expect("error").await;
    assert_eq!(
        (e["code"].clone(), e["ref"].clone()),
        (json!("unauthorized"), json!("u")),
        "{e}"
    );
    l.send(json!({"type": "message", "data": 1, "id": "m"}))
        .await;
    let e = l.expect("error").await;
    assert_eq!(
        (e["code"].clone(), e["ref"].clone()),
        (json!("unauthorized"), json!("m")),
        "{e}"
    );
    l.send(json!({"type": "message", "to": a.peer_id, "data": "direct"}))
        .await;
    assert_eq!(a.expect("message").await["data"], "direct");
    a.expect_silence(Duration::from_millis(200)).await;
    // `rooms` opens the rooms it names, and only them.
    let mut c = d.client(0, "rooms").await;
    let t = token(json!({"rooms": ["one", "two"], "sub": "c"}));
    c.send(json!({"type": "join", "room": "three", "token": t, "id": 1}))
        .await;
    assert_eq!(c.expect("error").await["code"], "unauthorized");
    c.join_with("two", json!({"token": t})).await;
    // A grant of the wrong type is a malformed token, not a wider grant.
    let mut m = d.client(0, "malformed").await;
    let bad = token(json!({"room": r, "grants": {"broadcast": "yes"}}));
    m.send(json!({"type": "join", "room": r, "token": bad, "id": 2}))
        .await;
    assert_eq!(m.expect("error").await["code"], "unauthorized");
}
both!(grants_limit_what_a_member_may_do, super::auth_on);
