//! Sections 4, 5 and 6 of docs/protocol.md, message by message: what each
//! client message does and how it is answered (4), every field of every
//! server message (5), and every error code with each of its causes and
//! whether it carries `ref` (6). Where another peer is involved a test runs
//! twice (`both!`): on one instance, and with the peers on two instances of
//! one cluster.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signaling_e2e::client::{Client, WAIT, peer_ids};
use signaling_e2e::deployment::Deployment;
use signaling_e2e::raw::Raw;
use signaling_e2e::server::TestServer;
use signaling_e2e::{both, join_token, room};
use tokio_tungstenite::tungstenite::Message;

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// §4, §4.1, §4.7, §4.8: one connection's replies come back in the order of
/// its requests, also around a join that waits on the cluster.
async fn replies_come_back_in_request_order(d: Deployment) {
    let r = room("order");
    let _a = d.member(0, &r, "a").await;
    let mut c = d.client(1, "c").await;
    let frames = [
        json!({"type":"ping","id":1}),
        json!({"type":"join","id":2,"room":"no room"}),
        json!({"type":"offer","id":3,"to":"x","sdp":"v=0"}),
        json!({"type":"join","id":4,"room":r}),
        json!({"type":"ping","id":5}),
        json!({"type":"update","id":"no reply","meta":{"k":1}}),
        json!({"type":"leave","id":6}),
        json!({"type":"ping","id":7}),
        json!({"type":"join","id":8,"room":r}),
        json!({"type":"message","id":9,"to":"nobody","data":1}),
        json!({"type":"ping","id":10}),
    ];
    for f in frames {
        c.send(f).await;
    }
    let want = [
        ("pong", 1),
        ("error", 2),
        ("error", 3),
        ("joined", 4),
        ("pong", 5),
        ("left", 6),
        ("pong", 7),
        ("joined", 8),
        ("error", 9),
        ("pong", 10),
    ];
    for (ty, id) in want {
        let v = c.next(WAIT).await.expect("a reply");
        assert_eq!(
            (v["type"].as_str(), v["ref"].as_i64()),
            (Some(ty), Some(id)),
            "{v}"
        );
    }
    c.expect_silence(QUIET).await;
}
both!(replies_come_back_in_request_order);

/// §4.1, §6: a connection is in one room at a time: another `join`, to its
/// room or any other, is `already_joined` with `ref`; the membership carries
/// on, and after `leave` the connection may join another room.
async fn a_joined_connection_must_leave_before_joining_again(d: Deployment) {
    let (r, mut a, mut b) = d.pair("twice").await;
    let other = room("twice-other");
    let mut o = d.member(1, &other, "o").await;
    for (id, target) in [("same", &r), ("other", &other)] {
        a.send(json!({"type":"join","id":id,"room":target})).await;
        assert_error(&a.expect("error").await, "already_joined", Some(json!(id)));
    }
    b.expect_silence(QUIET).await;
    o.expect_silence(Duration::ZERO).await;
    b.send(json!({"type":"message","to":a.peer_id,"data":"still here"}))
        .await;
    assert_eq!(a.expect("message").await["data"], "still here");
    a.send(json!({"type":"leave"})).await;
    a.expect("left").await;
    a.join(&other).await;
    let pj = o.expect("peer-joined").await;
    assert_eq!(pj["peer"]["peer_id"], a.peer_id.as_str(), "{pj}");
}
both!(a_joined_connection_must_leave_before_joining_again);

/// §4.1, §5.2: `name` and `meta` are optional (`null` is absent): the
/// others see `""` and `{}`.
async fn a_join_without_name_or_meta_shows_an_empty_name_and_meta(d: Deployment) {
    let r = room("defaults");
    let mut a = d.member(0, &r, "a").await;
    let mut b = d.client(1, "b").await;
    let jb = b.join_with(&r, json!({"name":null,"meta":null})).await;
    let listed = &jb["peers"][0];
    assert_eq!((&listed["name"], &listed["meta"]), (&json!(""), &json!({})));
    let pj = a.expect("peer-joined").await;
    assert_eq!(
        (&pj["peer"]["name"], &pj["peer"]["meta"]),
        (&json!(""), &json!({}))
    );
}
both!(a_join_without_name_or_meta_shows_an_empty_name_and_meta);

/// §4.1, §6: a `join` whose fields have the wrong shape is `bad_message`
/// with `ref`: `room` missing, `null` or not a string; `name`, `token`,
/// `resume` not strings; `meta` not an object.
#[tokio::test]
async fn join_fields_of_the_wrong_type_are_bad_message_with_ref() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.client("c").await;
    let r = room("shapes");
    let bad = [
        json!({}),
        json!({"room":null}),
        json!({"room":5}),
        json!({"room":["r"]}),
        json!({"room":r,"name":5}),
        json!({"room":r,"meta":"x"}),
        json!({"room":r,"meta":[1]}),
        json!({"room":r,"token":5}),
        json!({"room":r,"resume":{}}),
    ];
    for (i, fields) in bad.iter().enumerate() {
        let mut m = json!({"type":"join","id":i});
        extend(&mut m, fields);
        c.send(m.clone()).await;
        let e = c.expect("error").await;
        assert_error(&e, "bad_message", Some(json!(i)));
    }
    c.join(&r).await;
    s.stop().await;
}

const SECRET: &str = "protocol-messages-secret-0123456789abcdef";

/// §4.1, §1, §6: a `token` in the `join` wins over the one in the upgrade
/// URL, both ways; without a valid token the join is `unauthorized` with
/// `ref`.
#[tokio::test]
async fn a_token_in_the_join_wins_over_the_one_in_the_url() {
    let s = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let r = room("tokens");
    let (good, elsewhere) = (join_token(SECRET, &r), join_token(SECRET, "elsewhere"));
    let mut a = Client::connect(&format!("{}?token={elsewhere}", s.ws()), "a").await;
    a.send(json!({"type":"join","id":"url","room":r})).await;
    assert_error(&a.expect("error").await, "unauthorized", Some(json!("url")));
    a.join_with(&r, json!({"token": good})).await;
    let mut b = Client::connect(&format!("{}?token={good}", s.ws()), "b").await;
    b.send(json!({"type":"join","id":"msg","room":r,"token":elsewhere}))
        .await;
    assert_error(&b.expect("error").await, "unauthorized", Some(json!("msg")));
    b.join(&r).await;
    s.stop().await;
}

/// §4.1, §6, §3.2: a join that breaks several rules gets the code of the
/// first check in the documented order: the shape checks, `already_joined`,
/// the address's join rate (`rate_limited`), `invalid_room`, `name`
/// (`bad_message`), `meta` size (`too_large`), the token (`unauthorized`).
/// Each with `ref`.
#[tokio::test]
async fn join_checks_run_in_the_documented_order() {
    let s = TestServer::start(|c| {
        c.auth_secret = Some(SECRET.into());
        c.limits.join_rate_per_ip = 0.001;
        c.limits.join_burst_per_ip = 1.0;
    })
    .await;
    let r = room("checks");
    let meta = format!(r#"{{"pad":"{}"}}"#, "m".repeat(1100));
    let join = |id: &str, rest: &str| format!(r#"{{"type":"join","id":"{id}",{rest}}}"#);

    // From an address the join rate applies to (the host itself is
    // exempt): its one join of the burst.
    let mut x = Raw::connect_from(&s, "127.0.0.9").await;
    x.send_text(join(
        "first",
        &format!(r#""room":"{r}","token":"{}""#, join_token(SECRET, &r)),
    ))
    .await;
    assert_eq!(x.json().await["type"], "joined");
    // The shape checks (a non-string room, a meta that is not I-JSON)
    // before `already_joined`.
    for (id, rest) in [
        ("shape", r#""room":5"#.to_string()),
        (
            "ijson",
            r#""room":"no room","meta":{"a":1e999}"#.to_string(),
        ),
    ] {
        x.send_text(join(id, &rest)).await;
        assert_error(&x.json().await, "bad_message", Some(json!(id)));
    }
    // `already_joined` before the rate (the address's bucket is empty now).
    let everything = format!(r#""room":"no room","name":"\u0007","meta":{meta}"#);
    x.send_text(join("again", &everything)).await;
    assert_error(&x.json().await, "already_joined", Some(json!("again")));
    x.send_text(r#"{"type":"leave"}"#.to_string()).await;
    assert_eq!(x.json().await["type"], "left");
    // The rate before the room, the name, the meta and the token.
    x.send_text(join("rate", &everything)).await;
    assert_error(&x.json().await, "rate_limited", Some(json!("rate")));

    // The rest from the host itself, which the join rate spares.
    let mut c = s.client("c").await;
    for (id, rest, code) in [
        ("room", everything.clone(), "invalid_room"),
        (
            "name",
            format!(r#""room":"{r}","name":"\u0007","meta":{meta}"#),
            "bad_message",
        ),
        (
            "meta",
            format!(r#""room":"{r}","meta":{meta}"#),
            "too_large",
        ),
        (
            "token",
            format!(r#""room":"{r}","name":"ok""#),
            "unauthorized",
        ),
    ] {
        c.send_text(join(id, &rest)).await;
        assert_error(&c.expect("error").await, code, Some(json!(id)));
    }
    c.join_with(&r, json!({"token": join_token(SECRET, &r)}))
        .await;
    s.stop().await;
}

/// §4.1, §6, §10: while the instance drains, the token is still checked
/// first (`unauthorized`), then the join is `unavailable` with `ref`, before
/// any resume token is looked at.
#[tokio::test]
async fn while_draining_a_join_is_unavailable_after_the_token_check_and_before_the_resume() {
    let s = TestServer::start(|c| {
        c.auth_secret = Some(SECRET.into());
        c.drain_timeout = Duration::from_secs(3);
    })
    .await;
    let r = room("draining");
    let mut a = s.client("a").await;
    s.handle.shutdown();
    a.expect("goaway").await;
    a.send(json!({"type":"join","id":"t","room":r})).await;
    assert_error(&a.expect("error").await, "unauthorized", Some(json!("t")));
    let tok = join_token(SECRET, &r);
    a.send(json!({"type":"join","id":"r","room":r,"token":tok,"resume":"made.up"}))
        .await;
    assert_error(&a.expect("error").await, "unavailable", Some(json!("r")));
    a.send(json!({"type":"join","id":"j","room":r,"token":tok}))
        .await;
    assert_error(&a.expect("error").await, "unavailable", Some(json!("j")));
}

/// §4.1, §6: in a full room (`--max-room-peers`, here 2) a plain join is
/// `room_full` with `ref`; a resume that finds nothing (made up, malformed,
/// a member's id with a wrong secret) is `resume_failed` with `ref`, checked
/// before the room is found full. The members hear nothing.
async fn a_full_room_is_room_full_and_a_resume_that_finds_nothing_fails_first(d: Deployment) {
    let (r, mut a, mut b) = d.pair("full").await;
    let mut c = d.client(0, "c").await;
    for (id, resume) in [
        ("made-up", format!("{}.{}", "0".repeat(16), "1".repeat(32))),
        ("malformed", "no-dot".to_string()),
        ("wrong secret", format!("{}.{}", b.peer_id, "2".repeat(32))),
    ] {
        c.send(json!({"type":"join","id":id,"room":r,"resume":resume}))
            .await;
        assert_error(&c.expect("error").await, "resume_failed", Some(json!(id)));
    }
    c.send(json!({"type":"join","id":"full","room":r})).await;
    assert_error(&c.expect("error").await, "room_full", Some(json!("full")));
    a.expect_silence(QUIET).await;
    b.expect_silence(Duration::ZERO).await;
    // The error ended nothing: `c` joins once there is room.
    b.send(json!({"type":"leave"})).await;
    b.expect("left").await;
    a.expect("peer-left").await;
    d.settle_gone(&r, &b.peer_id).await;
    c.join(&r).await;
}
both!(
    a_full_room_is_room_full_and_a_resume_that_finds_nothing_fails_first,
    |c: &mut signaling::Config| c.limits.max_room_peers = 2
);

/// §4.2, §5.5: `offer` and `answer` reach the peer named in `to` as the same
/// type with `from` and the `sdp`, without the sender's `to` and `id`; the
/// sender gets no reply.
async fn offers_and_answers_reach_their_peer_and_the_sender_hears_nothing(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("sdp").await;
    sdp_is_relayed("offer", &mut a, &mut b).await;
    sdp_is_relayed("answer", &mut b, &mut a).await;
}

/// `from` sends `to` an `ty` (`offer` or `answer`): `to` gets it, `from`
/// nothing.
async fn sdp_is_relayed(ty: &str, from: &mut Client, to: &mut Client) {
    let sdp = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\na=x:\u{e9}\"q\"\r\n";
    from.send(json!({"type":ty,"id":"sdp-1","to":to.peer_id,"sdp":sdp}))
        .await;
    let m = to.expect(ty).await;
    assert_eq!(m["from"], from.peer_id.as_str(), "{m}");
    assert_eq!(m["sdp"], sdp, "{m}");
    for absent in ["to", "id", "ref"] {
        assert!(m.get(absent).is_none(), "{absent} in {m}");
    }
    from.expect_silence(QUIET).await;
}
both!(offers_and_answers_reach_their_peer_and_the_sender_hears_nothing);

/// §4.3, §4.4, §5.5: the payload (`sdp`, `candidate`, `data`) is passed on
/// exactly as the sender wrote it: spacing, member order, number forms and
/// escapes; a candidate's members untouched, unknown ones included; `null`
/// (the end of candidates) as `null`.
async fn relayed_payloads_arrive_exactly_as_written(d: Deployment) {
    let r = room("exact");
    let mut a = d.member(0, &r, "a").await;
    let mut b = Raw::connect(&d.server(1).ws()).await;
    b.send_text(format!(r#"{{"type":"join","room":"{r}"}}"#))
        .await;
    let to = b.json().await["peer_id"]
        .as_str()
        .expect("b's peer_id")
        .to_string();
    a.expect("peer-joined").await;
    let payloads = [
        ("offer", "sdp", r#""v=0\r\n\u00e9 \/ \"q\"""#),
        ("answer", "sdp", r#""v=0\r\n""#),
        (
            "candidate",
            "candidate",
            r#"{ "sdpMLineIndex" : 0,"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","usernameFragment":null, "x-extra":[1.0,2E3,-0] }"#,
        ),
        ("candidate", "candidate", "{}"),
        ("candidate", "candidate", "null"),
        (
            "message",
            "data",
            r#"[ 1.50, {"z":1,"a":"\ud83d\ude00"}, null, true ]"#,
        ),
        ("message", "data", r#""text""#),
        ("message", "data", "0.0"),
    ];
    for (ty, field, payload) in payloads {
        a.send_text(format!(
            r#"{{"type":"{ty}","id":"p","to":"{to}","{field}":{payload}}}"#
        ))
        .await;
        let text = b.text().await;
        assert!(text.contains(payload), "{payload} not verbatim in {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        let sent: Value = serde_json::from_str(payload).expect("json");
        assert_eq!(
            (&v["type"], &v["from"], &v[field]),
            (&json!(ty), &json!(a.peer_id), &sent),
            "{text}"
        );
    }
    a.expect_silence(QUIET).await;
}
both!(relayed_payloads_arrive_exactly_as_written);

/// §4.2, §4.3, §4.4, §6: relay requests with a missing or mistyped field are
/// `bad_message` with `ref` and nothing is relayed: `to` missing or not a
/// string, `sdp` missing or not a string, `candidate` missing or neither an
/// object nor `null`, `data` missing, `message.to` `null` (which must not
/// become a broadcast).
async fn relays_with_missing_or_mistyped_fields_are_bad_message_with_ref(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("fields").await;
    let to = b.peer_id.clone();
    let bad = [
        json!({"type":"offer","sdp":"v=0"}),
        json!({"type":"offer","to":5,"sdp":"v=0"}),
        json!({"type":"offer","to":null,"sdp":"v=0"}),
        json!({"type":"offer","to":to}),
        json!({"type":"answer","to":to,"sdp":7}),
        json!({"type":"answer","to":to,"sdp":null}),
        json!({"type":"candidate","candidate":null}),
        json!({"type":"candidate","to":to}),
        json!({"type":"candidate","to":to,"candidate":"candidate:1"}),
        json!({"type":"candidate","to":to,"candidate":[1]}),
        json!({"type":"candidate","to":to,"candidate":5}),
        json!({"type":"message","to":to}),
        json!({"type":"message"}),
        json!({"type":"message","to":null,"data":1}),
        json!({"type":"message","to":5,"data":1}),
        json!({"type":"message","to":{},"data":1}),
    ];
    for (i, fields) in bad.iter().enumerate() {
        let mut m = json!({"id":i});
        extend(&mut m, fields);
        a.send(m).await;
        let e = a.expect("error").await;
        assert_error(&e, "bad_message", Some(json!(i)));
    }
    b.expect_silence(QUIET).await;
    a.send(json!({"type":"message","to":to,"data":"fine"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "fine");
}
both!(relays_with_missing_or_mistyped_fields_are_bad_message_with_ref);

/// §4.4, §5.5: a `message` without `to` reaches every other member, on any
/// instance, whatever JSON its `data` is, and never comes back to its
/// sender; with `to` it reaches that member only.
async fn a_broadcast_reaches_every_other_member_and_never_its_sender(d: Deployment) {
    let (r, mut a, mut b) = d.pair("bcast").await;
    let mut c = d.member(0, &r, "c").await;
    a.expect("peer-joined").await;
    b.expect("peer-joined").await;
    for data in [
        json!({"chat":"hello all"}),
        json!("s"),
        json!(7),
        json!(null),
        json!([1, [2]]),
        json!(false),
    ] {
        b.send(json!({"type":"message","id":"m","data":data})).await;
        for x in [&mut a, &mut c] {
            let m = x.expect("message").await;
            assert_eq!((&m["from"], &m["data"]), (&json!(b.peer_id), &data), "{m}");
            for absent in ["to", "id", "ref"] {
                assert!(m.get(absent).is_none(), "{absent} in {m}");
            }
        }
    }
    b.expect_silence(QUIET).await;
    b.send(json!({"type":"message","to":c.peer_id,"data":"only c"}))
        .await;
    assert_eq!(c.expect("message").await["data"], "only c");
    a.expect_silence(QUIET).await;
    b.expect_silence(Duration::ZERO).await;
}
both!(a_broadcast_reaches_every_other_member_and_never_its_sender);

/// §4.4, §6: `data` of at most `--max-data-bytes` (16 KiB of JSON as sent)
/// is relayed; one byte more is `too_large` with `ref`, directed or
/// broadcast, and nothing is relayed.
async fn data_past_the_limit_is_too_large_with_ref(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("data").await;
    let to = b.peer_id.clone();
    let at_limit = "x".repeat(16 * 1024 - 2);
    let over = "x".repeat(16 * 1024 - 1);
    for target in [json!(to), Value::Null] {
        let mut m = json!({"type":"message","id":"ok","data":at_limit});
        let mut big = json!({"type":"message","id":"big","data":over});
        if !target.is_null() {
            m["to"] = target.clone();
            big["to"] = target;
        }
        a.send(big).await;
        assert_error(&a.expect("error").await, "too_large", Some(json!("big")));
        a.send(m).await;
        assert_eq!(b.expect("message").await["data"], at_limit.as_str());
    }
    a.expect_silence(QUIET).await;
    b.expect_silence(Duration::ZERO).await;
}
both!(data_past_the_limit_is_too_large_with_ref);

/// §4.5, §4.6, §4.7, §6: the four relays, `update` and `leave`, before a
/// `join` or after a `leave`, are `not_joined` with `ref`.
#[tokio::test]
async fn requests_that_need_a_room_are_not_joined_outside_one() {
    let s = TestServer::start(|_| {}).await;
    let r = room("outside");
    let mut peer = s.client("peer").await;
    peer.join(&r).await;
    let mut c = s.client("c").await;
    let to = peer.peer_id.clone();
    let frames = [
        json!({"type":"offer","to":to,"sdp":"v=0"}),
        json!({"type":"answer","to":to,"sdp":"v=0"}),
        json!({"type":"candidate","to":to,"candidate":null}),
        json!({"type":"message","to":to,"data":1}),
        json!({"type":"message","data":1}),
        json!({"type":"update","meta":{}}),
        json!({"type":"leave"}),
    ];
    for round in ["before", "after"] {
        if round == "after" {
            c.join(&r).await;
            c.send(json!({"type":"leave"})).await;
            c.expect("left").await;
            peer.expect("peer-joined").await;
            peer.expect("peer-left").await;
        }
        for (i, f) in frames.iter().enumerate() {
            let mut m = json!({"id":format!("{round}-{i}")});
            extend(&mut m, f);
            c.send(m).await;
            let e = c.expect("error").await;
            assert_error(&e, "not_joined", Some(json!(format!("{round}-{i}"))));
        }
    }
    peer.expect_silence(QUIET).await;
    s.stop().await;
}

/// §4.5, §6: a relay's `to` must be a member of the sender's room at that
/// moment: a made-up id, a member of another room (on any instance) and a
/// peer that has left are each `unknown_peer` with `ref`, for all four
/// relays, and nobody receives anything.
async fn relays_to_anyone_outside_the_room_are_unknown_peer(d: Deployment) {
    let (r, mut a, mut b) = d.pair("unknown").await;
    let mut o = d.member(1, &room("unknown-other"), "o").await;
    let mut gone = d.member(1, &r, "gone").await;
    a.expect("peer-joined").await;
    b.expect("peer-joined").await;
    gone.send(json!({"type":"leave"})).await;
    gone.expect("left").await;
    a.expect("peer-left").await;
    b.expect("peer-left").await;
    for to in [
        "0123456789abcdef",
        o.peer_id.as_str(),
        gone.peer_id.as_str(),
    ] {
        for (i, f) in relays(to).into_iter().enumerate() {
            let mut m = json!({"id":i});
            extend(&mut m, &f);
            a.send(m).await;
            let e = a.expect("error").await;
            assert_error(&e, "unknown_peer", Some(json!(i)));
        }
    }
    for x in [&mut o, &mut gone, &mut b] {
        x.expect_silence(QUIET).await;
    }
}
both!(relays_to_anyone_outside_the_room_are_unknown_peer);

/// §4.5, §6: a peer held for a resume is still a member: relays to it are
/// queued, not refused, and arrive after its resume's `joined`.
async fn a_relay_to_a_held_peer_waits_for_its_resume(d: Deployment) {
    let (r, mut a, b) = d.pair("held").await;
    let (b_id, resume) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    d.server(1).wait_held(1).await;
    for (i, f) in relays(&b_id).into_iter().enumerate() {
        let mut m = json!({"id":i});
        extend(&mut m, &f);
        a.send(m).await;
    }
    a.expect_silence(QUIET).await;
    let mut b = d.client(1, "b again").await;
    let j = b.join_with(&r, json!({"resume":resume})).await;
    assert_eq!(j["peer_id"], b_id.as_str());
    for ty in ["offer", "answer", "candidate", "message"] {
        assert_eq!(b.expect(ty).await["from"], a.peer_id.as_str());
    }
}
both!(a_relay_to_a_held_peer_waits_for_its_resume);

/// §6, §4.5: a directed relay to a held peer whose queue is full
/// (`--resume-queue`, here 2) is `unavailable` with `ref`; what fitted
/// arrives after the resume.
async fn a_directed_relay_past_a_held_peers_full_queue_is_unavailable(d: Deployment) {
    let (r, mut a, b) = d.pair("qfull").await;
    let (b_id, resume) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    d.server(1).wait_held(1).await;
    for n in 0..4 {
        a.send(json!({"type":"offer","id":n,"to":b_id,"sdp":n.to_string()}))
            .await;
    }
    for n in 2..4 {
        assert_error(&a.expect("error").await, "unavailable", Some(json!(n)));
    }
    let mut b = d.client(1, "b again").await;
    b.join_with(&r, json!({"resume":resume})).await;
    for n in 0..2 {
        assert_eq!(b.expect("offer").await["sdp"], n.to_string());
    }
    b.expect_silence(QUIET).await;
}
both!(
    a_directed_relay_past_a_held_peers_full_queue_is_unavailable,
    |c: &mut signaling::Config| c.limits.resume_queue = 2
);

/// §4.5, §5.5: `to` may be the sender's own `peer_id`: each of the four
/// relays comes back to it, `from` itself; the other member gets nothing.
async fn a_relay_may_be_addressed_to_the_sender_itself(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("self").await;
    let me = a.peer_id.clone();
    for f in relays(&me) {
        let ty = f["type"].as_str().expect("type").to_string();
        a.send(f).await;
        let m = a.expect(&ty).await;
        assert_eq!(m["from"], me.as_str(), "{m}");
    }
    b.expect_silence(QUIET).await;
}
both!(a_relay_may_be_addressed_to_the_sender_itself);

/// §4.6, §5.3: `update` replaces `meta` as a whole; the others get
/// `peer-updated` with the whole peer object (same `name` and `joined_at`,
/// no `ref`), the sender nothing; a `name` in it changes nothing; a
/// newcomer finds the new `meta`.
async fn an_update_replaces_meta_and_only_the_others_hear_of_it(d: Deployment) {
    let r = room("update");
    let mut a = d.client(0, "a").await;
    a.join_with(&r, json!({"name":"Ada","meta":{"muted":false,"cam":true}}))
        .await;
    d.settle(&r, &a.peer_id).await;
    let mut b = d.client(1, "b").await;
    let before = b.join(&r).await["peers"][0].clone();
    a.expect("peer-joined").await;
    a.send(json!({"type":"update","id":"u","meta":{"muted":true},"name":"Eve"}))
        .await;
    let u = b.expect("peer-updated").await;
    assert!(u.get("ref").is_none(), "{u}");
    let p = &u["peer"];
    assert_eq!(
        (&p["peer_id"], &p["name"], &p["meta"], &p["joined_at"]),
        (
            &json!(a.peer_id),
            &json!("Ada"),
            &json!({"muted":true}),
            &before["joined_at"]
        ),
        "{u}"
    );
    a.expect_silence(QUIET).await;
    d.settle(&r, &b.peer_id).await;
    let mut c = d.client(0, "c").await;
    let jc = c.join(&r).await;
    let a_listed = listed(&jc, &a.peer_id);
    assert_eq!(
        (&a_listed["name"], &a_listed["meta"]),
        (&json!("Ada"), &json!({"muted":true}))
    );
}
both!(an_update_replaces_meta_and_only_the_others_hear_of_it);

/// §4.6, §6: `update` needs `meta`, an object of at most `--max-meta-bytes`
/// (1024 bytes as sent): missing, `null` or not an object is `bad_message`,
/// larger is `too_large`, each with `ref`, and the others hear nothing; at
/// the limit it goes through.
async fn an_update_needs_an_object_meta_within_the_limit(d: Deployment) {
    let (_r, mut a, mut b) = d.pair("meta").await;
    let meta = |n: usize| format!(r#"{{"p":"{}"}}"#, "x".repeat(n));
    for (id, frame, code) in [
        (
            "none",
            r#"{"type":"update","id":"none"}"#.to_string(),
            "bad_message",
        ),
        (
            "null",
            r#"{"type":"update","id":"null","meta":null}"#.to_string(),
            "bad_message",
        ),
        (
            "array",
            r#"{"type":"update","id":"array","meta":[1]}"#.to_string(),
            "bad_message",
        ),
        (
            "big",
            format!(r#"{{"type":"update","id":"big","meta":{}}}"#, meta(1017)),
            "too_large",
        ),
    ] {
        a.send_text(frame).await;
        assert_error(&a.expect("error").await, code, Some(json!(id)));
    }
    b.expect_silence(QUIET).await;
    assert_eq!(meta(1016).len(), 1024);
    a.send_text(format!(r#"{{"type":"update","meta":{}}}"#, meta(1016)))
        .await;
    let u = b.expect("peer-updated").await;
    assert_eq!(u["peer"]["meta"]["p"].as_str().map(str::len), Some(1016));
    a.expect_silence(QUIET).await;
}
both!(an_update_needs_an_object_meta_within_the_limit);

/// §4.7, §5.6, §5.4: `leave` is answered `left` with `ref` and the room
/// (no `ref` without an `id`); the others get `peer-left` (`peer_id`,
/// `reason` `left`, no `ref`); the connection stays and may join any room,
/// as a new peer.
async fn leave_is_answered_left_and_the_connection_may_join_again(d: Deployment) {
    let (r, mut a, mut b) = d.pair("leave").await;
    let first = a.peer_id.clone();
    a.send(json!({"type":"leave","id":"bye-1"})).await;
    let l = a.expect("left").await;
    assert_eq!((&l["ref"], &l["room"]), (&json!("bye-1"), &json!(r)), "{l}");
    let pl = b.expect("peer-left").await;
    assert_eq!(
        (&pl["peer_id"], &pl["reason"]),
        (&json!(first), &json!("left")),
        "{pl}"
    );
    assert!(pl.get("ref").is_none(), "{pl}");
    let other = room("leave-other");
    a.join(&other).await;
    assert_ne!(a.peer_id, first);
    b.expect_silence(QUIET).await;
    a.send(json!({"type":"leave"})).await;
    let l = a.expect("left").await;
    assert_eq!(l["room"], other.as_str());
    assert!(l.get("ref").is_none(), "{l}");
}
both!(leave_is_answered_left_and_the_connection_may_join_again);

/// §5.4: a peer whose connection ends cleanly is announced with its
/// `peer_id` and the reason `disconnected`, without `ref`.
async fn peer_left_names_the_peer_and_the_reason(d: Deployment) {
    let (_r, mut a, b) = d.pair("gone").await;
    let id = b.peer_id.clone();
    b.close().await;
    let pl = a.expect("peer-left").await;
    assert_eq!(
        (&pl["peer_id"], &pl["reason"]),
        (&json!(id), &json!("disconnected")),
        "{pl}"
    );
    assert!(pl.get("ref").is_none(), "{pl}");
}
both!(peer_left_names_the_peer_and_the_reason);

/// §4.7: the join deadline runs only until the first successful join: a
/// connection that has left stays open past it, while one that never
/// joined is closed with 1008.
#[tokio::test]
async fn after_a_leave_the_join_deadline_no_longer_applies() {
    let s = TestServer::start(|c| c.limits.join_deadline = Duration::from_millis(500)).await;
    let mut a = s.client("a").await;
    a.join(&room("deadline")).await;
    a.send(json!({"type":"leave"})).await;
    a.expect("left").await;
    let mut never = s.client("never").await;
    // `never` opened after `a`: when it is closed, a's deadline is past too.
    assert_eq!(never.closed(Duration::from_secs(5)).await, Some(1008));
    a.send(json!({"type":"ping","id":"alive"})).await;
    assert_eq!(a.expect("pong").await["ref"], "alive");
    a.join(&room("deadline-again")).await;
    s.stop().await;
}

/// §4.8, §5.7: `ping` is answered `pong`, before and after `join`; the
/// `pong` carries `ref` (string or number, as sent) only when the ping had
/// an `id`.
#[tokio::test]
async fn ping_is_answered_pong_before_and_after_join() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.client("c").await;
    for round in 0..2 {
        if round == 1 {
            c.join(&room("ping")).await;
        }
        for id in [json!(42), json!("p-1"), json!(-1.5)] {
            c.send(json!({"type":"ping","id":id})).await;
            let p = c.expect("pong").await;
            assert_eq!(p["ref"], id, "{p}");
        }
        c.send(json!({"type":"ping"})).await;
        let p = c.expect("pong").await;
        assert!(p.get("ref").is_none(), "{p}");
    }
    s.stop().await;
}

/// §5.1, §3.2: `joined` carries `ref` (only with an `id`), `room`,
/// `peer_id`, `peers` (peer objects of every other member across instances,
/// oldest first, never the joiner), `ice_servers` (an array; empty with
/// nothing configured), `resume` and `protocol` 1.
async fn joined_carries_every_documented_field(d: Deployment) {
    let r = room("joined");
    let mut a = d.client(0, "a").await;
    a.join_with(&r, json!({"name":"Ada","meta":{"muted":false}}))
        .await;
    d.settle(&r, &a.peer_id).await;
    // `joined_at` is in milliseconds: two joins within one are equally old.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let mut b = d.client(1, "b").await;
    b.send(json!({"type":"join","id":1,"room":r,"name":"Bo"}))
        .await;
    let jb = b.expect("joined").await;
    let b_id = jb["peer_id"].as_str().expect("peer_id is a string");
    assert!(!b_id.is_empty() && b_id != a.peer_id, "{jb}");
    assert_eq!((&jb["ref"], &jb["room"]), (&json!(1), &json!(r)), "{jb}");
    assert_eq!(jb["ice_servers"], json!([]), "{jb}");
    assert!(jb["resume"].as_str().is_some_and(|t| !t.is_empty()), "{jb}");
    assert_eq!(jb["protocol"], 1, "{jb}");
    let p = &jb["peers"][0];
    assert_eq!(jb["peers"].as_array().map(Vec::len), Some(1), "{jb}");
    assert_eq!(
        (&p["peer_id"], &p["name"], &p["meta"]),
        (&json!(a.peer_id), &json!("Ada"), &json!({"muted":false})),
        "{jb}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i128;
    let a_at = p["joined_at"].as_u64().expect("joined_at is a number") as i128;
    assert!((now_ms - a_at).abs() < 60_000, "{a_at} vs now {now_ms}");
    d.settle(&r, b_id).await;

    let mut c = d.client(0, "c").await;
    c.send(json!({"type":"join","id":"c-1","room":r})).await;
    let jc = c.expect("joined").await;
    assert_eq!(jc["ref"], "c-1", "{jc}");
    assert_eq!(
        peer_ids(&jc["peers"]),
        [a.peer_id.clone(), b_id.to_string()],
        "oldest first, never the joiner: {jc}"
    );
    assert!(jc["peers"][0]["joined_at"].as_u64() <= jc["peers"][1]["joined_at"].as_u64());
    assert_eq!(jc["peers"][1]["name"], "Bo");
    assert_eq!(jc["peers"][1]["meta"], json!({}));
    let mut e = d.client(1, "e").await;
    let je = e.join(&r).await;
    assert!(je.get("ref").is_none(), "{je}");
    assert!(!peer_ids(&je["peers"]).contains(&e.peer_id), "{je}");
}
both!(joined_carries_every_documented_field);

/// §5.2: `peer-joined` carries the newcomer's whole peer object, the one
/// later joiners find in `joined.peers`, and no `ref`.
async fn peer_joined_carries_the_newcomers_peer_object(d: Deployment) {
    let r = room("pj");
    let mut a = d.member(0, &r, "a").await;
    let mut b = d.client(1, "b").await;
    b.send(json!({"type":"join","id":"b","room":r,"name":"Bo","meta":{"x":[1]}}))
        .await;
    let jb = b.expect("joined").await;
    let pj = a.expect("peer-joined").await;
    assert!(pj.get("ref").is_none(), "{pj}");
    let p = &pj["peer"];
    assert_eq!(
        (&p["peer_id"], &p["name"], &p["meta"]),
        (&jb["peer_id"], &json!("Bo"), &json!({"x":[1]})),
        "{pj}"
    );
    assert!(p["joined_at"].is_u64(), "{pj}");
    d.settle(&r, jb["peer_id"].as_str().expect("peer_id")).await;
    let mut c = d.client(0, "c").await;
    let jc = c.join(&r).await;
    assert_eq!(listed(&jc, jb["peer_id"].as_str().expect("id")), p, "{jc}");
}
both!(peer_joined_carries_the_newcomers_peer_object);

/// §5.8: `goaway` reaches every open connection, joined or not, when the
/// instance starts to drain: `reason` `shutdown`, `retry_after_ms` 250, no
/// `ref`.
#[tokio::test]
async fn goaway_reaches_every_connection_with_its_reason_and_delay() {
    let s = TestServer::start(|_| {}).await;
    let mut joined = s.client("joined").await;
    joined.join(&room("goaway")).await;
    let mut idle = s.client("idle").await;
    s.handle.shutdown();
    for c in [&mut joined, &mut idle] {
        let g = c.expect("goaway").await;
        assert_eq!(
            (&g["reason"], &g["retry_after_ms"]),
            (&json!("shutdown"), &json!(250)),
            "{g}"
        );
        assert!(g.get("ref").is_none(), "{g}");
    }
    s.stop().await;
}

/// §6, §3.1, §5.9: what is refused before its `id` is read is `bad_message`
/// without `ref`: a binary message, text that is not JSON, JSON that is not
/// an object, a known field twice, an `id` that breaks the rule of 2.1. The
/// connection and the membership stay.
#[tokio::test]
async fn unreadable_messages_are_bad_message_without_ref() {
    let s = TestServer::start(|_| {}).await;
    let r = room("unreadable");
    let mut peer = s.client("peer").await;
    peer.join(&r).await;
    let mut x = Raw::connect(&s.ws()).await;
    x.send_text(format!(r#"{{"type":"join","room":"{r}"}}"#))
        .await;
    let x_id = x.json().await["peer_id"].as_str().expect("id").to_string();
    peer.expect("peer-joined").await;

    x.send_frame(Message::binary(br#"{"type":"ping","id":1}"#.to_vec()))
        .await;
    assert_error(&x.json().await, "bad_message", None);
    let long_id = format!(r#""{}""#, "i".repeat(65));
    let long_number = "1".repeat(65);
    let frames = [
        "not json {".to_string(),
        r#"[{"type":"ping","id":1}]"#.to_string(),
        r#""ping""#.to_string(),
        "42".to_string(),
        r#"{"type":"ping","id":"d","id":"d"}"#.to_string(),
        r#"{"type":"ping","type":"ping","id":"t"}"#.to_string(),
        format!(r#"{{"type":"message","to":"{x_id}","to":"{x_id}","data":1,"id":"x"}}"#),
        format!(r#"{{"type":"ping","id":{long_id}}}"#),
        format!(r#"{{"type":"ping","id":{long_number}}}"#),
        r#"{"type":"ping","id":1e999}"#.to_string(),
        r#"{"type":"ping","id":{"a":1}}"#.to_string(),
        r#"{"type":"ping","id":[1]}"#.to_string(),
        r#"{"type":"ping","id":true}"#.to_string(),
    ];
    for f in frames {
        x.send_text(f.clone()).await;
        let e = x.json().await;
        assert_error(&e, "bad_message", None);
    }
    x.send_text(r#"{"type":"ping","id":"alive"}"#.to_string())
        .await;
    assert_eq!(x.json().await["ref"], "alive");
    peer.send(json!({"type":"message","to":x_id,"data":"still in"}))
        .await;
    assert_eq!(x.json().await["data"], "still in");
    peer.expect_silence(QUIET).await;
    s.stop().await;
}

/// §6, §5.9, §2.1: errors about a message whose `id` was read carry it as
/// `ref`: `bad_message` for a missing or non-string `type`, an unknown
/// `type`, a `name` over 64 characters or with a control character, a
/// relayed value that is not I-JSON; `invalid_room` for each way a room
/// name breaks its rule.
#[tokio::test]
async fn errors_about_a_readable_message_carry_its_ref() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.client("c").await;
    let r = room("refs");
    let cases = [
        (r#"{"id":"t0"}"#.to_string(), "bad_message"),
        (r#"{"type":5,"id":"t1"}"#.to_string(), "bad_message"),
        (r#"{"type":null,"id":"t2"}"#.to_string(), "bad_message"),
        (r#"{"type":"PING","id":"t3"}"#.to_string(), "bad_message"),
        (
            r#"{"type":"subscribe","id":"t4"}"#.to_string(),
            "bad_message",
        ),
        (
            format!(
                r#"{{"type":"join","room":"{r}","name":"{}","id":"t5"}}"#,
                "n".repeat(65)
            ),
            "bad_message",
        ),
        (
            format!(r#"{{"type":"join","room":"{r}","name":"a\u0007b","id":"t6"}}"#),
            "bad_message",
        ),
        (
            format!(r#"{{"type":"join","room":"{r}","name":"a\u0085b","id":"t7"}}"#),
            "bad_message",
        ),
        (
            format!(r#"{{"type":"join","room":"{r}","meta":{{"a":"\ud800"}},"id":"t8"}}"#),
            "bad_message",
        ),
        (
            r#"{"type":"message","data":{"a":1,"a":2},"id":"t9"}"#.to_string(),
            "bad_message",
        ),
        (
            r#"{"type":"join","room":"","id":"t10"}"#.to_string(),
            "invalid_room",
        ),
        (
            format!(
                r#"{{"type":"join","room":"{}","id":"t11"}}"#,
                "r".repeat(65)
            ),
            "invalid_room",
        ),
        (
            r#"{"type":"join","room":"a b","id":"t12"}"#.to_string(),
            "invalid_room",
        ),
        (
            r#"{"type":"join","room":"caf\u00e9","id":"t13"}"#.to_string(),
            "invalid_room",
        ),
        (
            r#"{"type":"join","room":"../x","id":"t14"}"#.to_string(),
            "invalid_room",
        ),
    ];
    for (i, (frame, code)) in cases.into_iter().enumerate() {
        c.send_text(frame.clone()).await;
        let e = c.expect("error").await;
        assert_error(&e, code, Some(json!(format!("t{i}"))));
    }
    // A number `id` is echoed as a number.
    c.send_text(r#"{"type":"join","room":"no room","id":7}"#.to_string())
        .await;
    assert_error(&c.expect("error").await, "invalid_room", Some(json!(7)));
    c.join(&r).await;
    s.stop().await;
}

/// §6, §2.2: a text message over `--max-frame-bytes` (64 KiB) is
/// `too_large` without `ref` (even with an `id` inside), dropped; the
/// connection and the membership stay.
#[tokio::test]
async fn a_message_over_the_frame_limit_is_too_large_without_ref() {
    let s = TestServer::start(|_| {}).await;
    let r = room("frame");
    let mut a = s.client("a").await;
    a.join(&r).await;
    let mut b = s.client("b").await;
    b.join(&r).await;
    a.expect("peer-joined").await;
    let big = format!(
        r#"{{"type":"message","id":"big","data":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    a.send_text(big).await;
    assert_error(&a.expect("error").await, "too_large", None);
    b.expect_silence(QUIET).await;
    a.send(json!({"type":"message","data":"after"})).await;
    assert_eq!(b.expect("message").await["data"], "after");
    s.stop().await;
}

/// §6, §2.2: past the connection's message rate a message is
/// `rate_limited` without `ref` and dropped; the connection stays.
#[tokio::test]
async fn past_the_message_rate_a_message_is_rate_limited_without_ref() {
    let s = TestServer::start(|c| {
        c.limits.rate = 5.0;
        c.limits.rate_burst = 3.0;
    })
    .await;
    let mut c = s.client("c").await;
    for i in 0..10 {
        c.send(json!({"type":"ping","id":i})).await;
    }
    let (mut pongs, mut limited) = (Vec::new(), 0);
    for _ in 0..10 {
        let v = c.next(WAIT).await.expect("a reply to each ping");
        if v["type"] == "pong" {
            pongs.push(v["ref"].as_i64().expect("ref"));
        } else {
            assert_error(&v, "rate_limited", None);
            limited += 1;
        }
    }
    assert_eq!(pongs[..3], [0, 1, 2], "the burst first");
    assert!(limited > 0, "{pongs:?}");
    // The connection stays: once a token is back, a ping is answered.
    let deadline = Instant::now() + WAIT;
    loop {
        c.send(json!({"type":"ping","id":"later"})).await;
        let v = c.next(WAIT).await.expect("a reply");
        if v["type"] == "pong" {
            assert_eq!(v["ref"], "later");
            break;
        }
        assert_error(&v, "rate_limited", None);
        assert!(Instant::now() < deadline, "never answered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// §6, §15: in a cluster, a relay to another instance while the link to it
/// is backed up (`--redis-queue-bytes`) is `unavailable` with `ref`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_a_backed_up_link_is_unavailable_with_ref() {
    let d = Deployment::two(|c| {
        c.redis_queue_bytes = 64 * 1024;
        c.node_timeout = Duration::from_secs(60);
        c.limits.rate = 100_000.0;
        c.limits.rate_burst = 100_000.0;
    })
    .await;
    let (_r, mut a, b) = d.pair("backed").await;
    let redis = d.redis.as_ref().expect("a cluster's Redis");
    redis.stop();
    let sdp = "s".repeat(8 * 1024);
    let mut refused = None;
    for n in 0..2000u64 {
        a.send(json!({"type":"offer","id":n,"to":b.peer_id,"sdp":sdp}))
            .await;
        if let Some(v) = a.next(Duration::from_millis(5)).await {
            refused = Some((n, v));
            break;
        }
    }
    redis.cont();
    let (n, e) = refused.expect("a relay refused while Redis stalls");
    assert_eq!(e["code"], "unavailable", "{e}");
    let r = e["ref"].as_u64().expect("the refused offer's ref");
    assert!(r <= n, "ref {r} of an offer sent ({n} sent)");
}

/// The eleven codes of section 6: the list is closed within version 1.
const CODES: [&str; 11] = [
    "bad_message",
    "too_large",
    "rate_limited",
    "not_joined",
    "already_joined",
    "invalid_room",
    "room_full",
    "unknown_peer",
    "unauthorized",
    "resume_failed",
    "unavailable",
];

/// `e` is an `error` of `code` with a string `message`, and a `ref` equal to
/// `reference` (`None`: no `ref` at all).
fn assert_error(e: &Value, code: &str, reference: Option<Value>) {
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        e["code"].as_str().is_some_and(|c| CODES.contains(&c)),
        "a code of section 6: {e}"
    );
    assert_eq!(e["code"], code, "{e}");
    assert!(e["message"].is_string(), "{e}");
    assert_eq!(e.get("ref"), reference.as_ref(), "{e}");
}

/// Adds `fields`'s members to the object `m`.
fn extend(m: &mut Value, fields: &Value) {
    if let (Some(m), Some(f)) = (m.as_object_mut(), fields.as_object()) {
        m.extend(f.clone());
    }
}

/// The peer object of `id` in the `joined` reply `j`.
fn listed<'a>(j: &'a Value, id: &str) -> &'a Value {
    j["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["peer_id"] == id))
        .unwrap_or_else(|| panic!("{id} not listed in {j}"))
}

/// One of each relay to `to`.
fn relays(to: &str) -> [Value; 4] {
    [
        json!({"type":"offer","to":to,"sdp":"v=0"}),
        json!({"type":"answer","to":to,"sdp":"v=0"}),
        json!({"type":"candidate","to":to,"candidate":null}),
        json!({"type":"message","to":to,"data":{"k":1}}),
    ]
}
