//! Webhooks (docs/protocol.md §14.3, docs/events.md) against real
//! receivers on loopback (the kit's `webhook::Receiver`), on one instance
//! (the in-process outbox) and on instances sharing a real redis-server
//! (the stream's consumer groups):
//! every event once and in per-room order through scripted calls, failing,
//! slow and absent receivers, dead letters, a killed delivering process,
//! Redis coming back empty, and the signature checked by Python's `hmac`.

use serde_json::{Value, json};
use signaling::Config;
use signaling_e2e::deployment::Deployment;
use signaling_e2e::redis::Redis;
use signaling_e2e::server::ServerProcess;
use signaling_e2e::webhook::{Behaviour, Receiver, assert_in_order, of_room, summary};
use signaling_e2e::{client::Client, room};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(15);

/// Webhooks to `url`, with quick retries.
fn hooked(url: String) -> impl Fn(&mut Config) + Send + Sync + 'static {
    move |c: &mut Config| {
        c.webhook_url = vec![url.clone()];
        c.webhook_secret = Some(SECRET.into());
        c.webhook_retry_base = Duration::from_millis(100);
        c.webhook_retry_max = Duration::from_secs(1);
        c.webhook_max_attempts = 6;
        c.webhook_claim_after = Duration::from_secs(2);
        c.node_timeout = Duration::from_secs(2);
        c.grace = Duration::from_millis(500);
    }
}

/// The call every scenario plays: A and B join, A updates its meta, B
/// drops and resumes (on instance `resume_on`), B leaves, A leaves.
/// Returns the room and the two peer ids.
async fn scripted_call(d: &Deployment, resume_on: usize) -> (String, String, String) {
    let r = room("hook");
    let mut a = d.member(0, &r, "a").await;
    let mut b = d.member(0, &r, "b").await;
    a.expect("peer-joined").await;
    a.send(json!({"type":"update","meta":{"mic":false}})).await;
    b.expect("peer-updated").await;
    let (b_id, token) = (b.peer_id.clone(), b.resume.clone());
    b.drop_tcp();
    let mut b2 = d.client(resume_on, "b2").await;
    b2.join_with(&r, json!({"resume": token})).await;
    b2.send(json!({"type":"leave"})).await;
    a.expect("peer-left").await;
    let a_id = a.peer_id.clone();
    a.close().await;
    (r, a_id, b_id)
}

fn expected(a: &str, b: &str, moved: bool) -> Vec<String> {
    let mut want = vec![
        "room-opened".to_owned(),
        format!("peer-joined {a}"),
        format!("peer-joined {b}"),
        format!("peer-updated {a}"),
    ];
    if moved {
        want.push(format!("peer-moved {b}"));
    }
    want.extend([
        format!("peer-left {b} left"),
        // A closes its socket without a `leave`.
        format!("peer-left {a} disconnected"),
        "room-closed".to_owned(),
    ]);
    want
}

/// Every field the schema promises, on every event.
fn assert_well_formed(events: &[Value], room: &str) {
    let sid = events[0]["id"].as_str().expect("id");
    for e in events {
        assert_eq!(e["v"], 1, "{e}");
        assert_eq!(e["room"], room, "{e}");
        assert_eq!(e["room_sid"], sid, "{e}");
        assert!(
            e["ts"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
            "{e}"
        );
        assert!(e["node"].as_str().is_some_and(|n| !n.is_empty()), "{e}");
        if e["type"] == "peer-joined" || e["type"] == "peer-updated" {
            assert_eq!(e["peer"]["peer_id"], e["peer_id"], "{e}");
        }
    }
}

/// §14.3: a call's events reach the backend, each once, numbered in order.
#[tokio::test]
async fn a_scripted_call_on_one_instance_gives_exactly_its_events_in_order() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let d = Deployment::one(hooked(rx.url())).await;
    let (r, a, b) = scripted_call(&d, 0).await;
    let got = rx.wait_for(&r, "room-closed", WAIT).await;
    assert_eq!(summary(&got), expected(&a, &b, false));
    assert_in_order(&got);
    assert_well_formed(&got, &r);
    let updated = &got[3];
    assert_eq!(updated["peer"]["meta"], json!({"mic":false}));
    // Each once: no event was sent twice to a receiver that accepted it.
    assert_eq!(rx.accepted().len(), rx.distinct().len());
}

/// §14.3: the same across instances, with the move and a killed node.
#[tokio::test]
async fn a_scripted_call_across_two_instances_through_redis_gives_its_events_once_in_order() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let mut d = Deployment::redis(2, hooked(rx.url())).await;
    let (r, a, b) = scripted_call(&d, 1).await;
    let got = rx.wait_for(&r, "room-closed", WAIT).await;
    assert_eq!(summary(&got), expected(&a, &b, true));
    assert_in_order(&got);
    assert_well_formed(&got, &r);
    // The move names the instance that holds the peer now.
    assert_eq!(got[4]["node"], d.node_id(1));

    // A node killed with a member: the survivor announces it, once.
    let r2 = room("hook-kill");
    let _x = d.member(0, &r2, "x").await;
    let y = d.member(1, &r2, "y").await;
    d.kill(1);
    let got = rx.wait_for(&r2, "peer-left", WAIT).await;
    assert_eq!(
        summary(&got).last().map(String::as_str),
        Some(format!("peer-left {} node-lost", y.peer_id).as_str())
    );
    assert_in_order(&got);
    assert_eq!(rx.accepted().len(), rx.distinct().len());
}

#[tokio::test]
async fn a_failing_receiver_gets_everything_in_order_with_growing_waits() {
    let rx = Receiver::start(Behaviour::FailFirst(3)).await;
    let d = Deployment::one(hooked(rx.url())).await;
    let (r, a, b) = scripted_call(&d, 0).await;
    let got = rx.wait_for(&r, "room-closed", WAIT).await;
    assert_eq!(summary(&got), expected(&a, &b, false));
    assert_in_order(&got);
    // Each event: 3 refusals, then accepted; the waits between its tries
    // grow (base 100 ms, doubled, jittered down by at most half).
    let tries = rx.tries();
    for e in &got {
        let id = e["id"].as_str().expect("id");
        let at: Vec<Instant> = tries.iter().filter(|t| t.id == id).map(|t| t.at).collect();
        assert_eq!(at.len(), 4, "event {id}");
        let waits: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(waits[0] >= Duration::from_millis(50), "{waits:?}");
        assert!(waits[1] >= Duration::from_millis(100), "{waits:?}");
        assert!(waits[2] >= Duration::from_millis(200), "{waits:?}");
        assert!(waits[2] > waits[0], "{waits:?}");
    }
    // Per room, an event's first try comes after the one before was accepted.
    let first_try = |id: &str| tries.iter().find(|t| t.id == id).map(|t| t.at);
    let accepted = |id: &str| {
        tries
            .iter()
            .find(|t| t.id == id && t.accepted)
            .map(|t| t.at)
    };
    for w in got.windows(2) {
        let (prev, next) = (
            w[0]["id"].as_str().expect("id"),
            w[1]["id"].as_str().expect("id"),
        );
        assert!(
            first_try(next) >= accepted(prev),
            "{next} was sent before {prev} was accepted"
        );
    }
}

#[tokio::test]
async fn a_receiver_down_for_a_while_loses_nothing() {
    let mut rx = Receiver::start(Behaviour::Accept).await;
    let d = Deployment::one(hooked(rx.url())).await;
    rx.go_down();
    let (r, a, b) = scripted_call(&d, 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.tries().is_empty());
    rx.come_back().await;
    let got = rx.wait_for(&r, "room-closed", WAIT).await;
    assert_eq!(summary(&got), expected(&a, &b, false));
    assert_in_order(&got);
}

#[tokio::test]
async fn a_slow_room_holds_up_no_other_room() {
    let rx = Receiver::start(Behaviour::Slow(Duration::from_secs(3))).await;
    let d = Deployment::one(hooked(rx.url())).await;
    let slow = room("slow");
    let _s = d.member(0, &slow, "s").await;
    // Its room-opened is on its way (3 s); another room's events go by.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.set(Behaviour::Accept);
    let fast = room("fast");
    let started = Instant::now();
    let f = d.member(0, &fast, "f").await;
    let got = rx.wait_for(&fast, "peer-joined", WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fast room waited for the slow one: {:?}",
        started.elapsed()
    );
    assert_eq!(
        summary(&got),
        [
            "room-opened".to_owned(),
            format!("peer-joined {}", f.peer_id)
        ]
    );
    // The slow room's events come in order once its first is through.
    let slow_got = rx.wait_for(&slow, "peer-joined", WAIT).await;
    assert_in_order(&slow_got);
}

#[tokio::test]
async fn events_are_dead_lettered_after_the_last_try_and_their_successors_go_on() {
    let rx = Receiver::start(Behaviour::Status(500)).await;
    let d = Deployment::one({
        let url = rx.url();
        move |c: &mut Config| {
            hooked(url.clone())(c);
            c.webhook_max_attempts = 2;
        }
    })
    .await;
    let r = room("dead");
    let a = d.member(0, &r, "a").await;
    a.close().await;
    // Four events, two tries each, then given up on in order.
    let deadline = Instant::now() + WAIT;
    while rx.tries().len() < 8 {
        assert!(Instant::now() < deadline, "tries: {}", rx.tries().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tries = rx.tries();
    assert_eq!(tries.len(), 8, "no event is tried past the bound");
    let kinds: Vec<&str> = tries
        .iter()
        .map(|t| t.event["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        [
            "room-opened",
            "room-opened",
            "peer-joined",
            "peer-joined",
            "peer-left",
            "peer-left",
            "room-closed",
            "room-closed"
        ]
    );
    let scrape = d.server(0).scrape().await;
    let dead = scrape
        .lines()
        .find(|l| l.starts_with("signaling_webhook_dead_lettered_total{"))
        .unwrap_or_default()
        .to_owned();
    assert!(dead.ends_with(" 4"), "{dead}");
}

#[tokio::test]
async fn the_delivering_process_killed_mid_delivery_loses_no_event() {
    let redis = Redis::start();
    let rx = Receiver::start(Behaviour::Slow(Duration::from_millis(300))).await;
    let url = rx.url();
    let flags = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--webhook-claim-after",
        "2s",
        "--webhook-retry-base",
        "100ms",
        "--node-timeout",
        "2s",
    ];
    let n1 = ServerProcess::node(&redis.url(), "n1", &flags).await;
    let n2 = ServerProcess::node(&redis.url(), "n2", &flags).await;
    // Which one delivers: the lease holder.
    let id = signaling::webhook::Endpoint::parse(&url).expect("url").id;
    let lease = format!("sig:webhook:{id}:lease");
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        if let Some(h) = redis.cmd(&["GET", &lease]) {
            break h;
        }
        assert!(Instant::now() < deadline, "no node took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (mut leader, other) = if holder == "n1" { (n1, n2) } else { (n2, n1) };
    // Members on the survivor only, so that the kill itself adds nothing.
    let mut rooms = Vec::new();
    let mut members = Vec::new();
    for i in 0..4 {
        let r = room(&format!("kill{i}"));
        let mut c = Client::connect(&other.ws(), "m").await;
        c.join(&r).await;
        members.push(c);
        rooms.push(r);
    }
    for c in members.drain(..) {
        c.close().await;
    }
    // Mid-delivery: some rooms' events accepted, others on the way.
    let deadline = Instant::now() + WAIT;
    while rx.accepted().len() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    leader.kill9();
    let got = rx
        .wait_until(Duration::from_secs(30), |evs| {
            rooms
                .iter()
                .all(|r| of_room(evs, r).iter().any(|e| e["type"] == "room-closed"))
        })
        .await;
    for r in &rooms {
        let events = of_room(&got, r);
        assert_eq!(summary(&events).len(), 4, "{r}: {:?}", summary(&events));
        assert_in_order(&events);
    }
    // Duplicates only of the same ids: the distinct ids are the events.
    assert_eq!(rx.distinct().len(), 16);
}

#[tokio::test]
async fn a_stopping_instance_delivers_the_events_of_its_own_drain() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let d = Deployment::one(hooked(rx.url())).await;
    let r = room("drain");
    let m = d.member(0, &r, "m").await;
    rx.wait_for(&r, "peer-joined", WAIT).await;
    d.stop().await;
    drop(m);
    let got = rx.wait_for(&r, "room-closed", WAIT).await;
    assert_eq!(got.len(), 4, "{:?}", summary(&got));
    assert_in_order(&got);
}

/// Python's own `hmac`, `hashlib` and `base64` check each signature as a
/// receiver would (the Standard Webhooks scheme, `docs/events.md`), with
/// the replay window; a forged body must fail it.
const VERIFY_PY: &str = r#"
import base64, hashlib, hmac, json, sys, time
key = base64.b64decode(sys.argv[1][len("whsec_"):])
verdicts = []
for t in json.load(sys.stdin):
    signed = ("%s.%s.%s" % (t["id"], t["timestamp"], t["body"])).encode()
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s[3:] for s in t["signature"].split(" ") if s.startswith("v1,")]
    fresh = abs(time.time() - int(t["timestamp"])) < 300
    verdicts.append(fresh and any(hmac.compare_digest(g, want) for g in given))
print(json.dumps(verdicts))
"#;

#[tokio::test]
async fn signatures_verify_with_an_independent_hmac_and_a_forged_body_does_not() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let d = Deployment::one(hooked(rx.url())).await;
    let r = room("sig");
    d.member(0, &r, "a").await.close().await;
    rx.wait_for(&r, "room-closed", WAIT).await;
    let mut items: Vec<Value> = rx
        .tries()
        .iter()
        .map(|t| json!({"id": t.id, "timestamp": t.timestamp, "signature": t.signature, "body": t.body}))
        .collect();
    assert_eq!(items.len(), 4);
    let mut forged = items[0].clone();
    forged["body"] = json!(
        items[0]["body"]
            .as_str()
            .unwrap_or_default()
            .replace("room-opened", "room-closed")
    );
    items.push(forged);
    let python = std::env::var("SIGNALING_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .args(["-c", VERIFY_PY, SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(Value::Array(items).to_string().as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("python ends");
    assert!(out.status.success());
    let verdicts: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(verdicts, json!([true, true, true, true, false]));
}

#[tokio::test]
async fn redis_back_empty_loses_no_event_the_deliverer_had_taken_and_restarts_the_room() {
    let mut rx = Receiver::start(Behaviour::Accept).await;
    let url = rx.url();
    let mut d = Deployment::redis(2, move |c: &mut Config| {
        hooked(url.clone())(c);
        c.webhook_max_attempts = 200;
        c.webhook_retry_max = Duration::from_millis(300);
    })
    .await;
    rx.go_down();
    let r = room("empty");
    let a = d.member(0, &r, "a").await;
    let b = d.member(1, &r, "b").await;
    let b_id = b.peer_id.clone();
    b.close().await;
    d.settle_gone(&r, &b_id).await;
    // The receiver is down: the delivering node holds them, retrying.
    let deadline = Instant::now() + WAIT;
    while retries(&d).await == 0 {
        assert!(Instant::now() < deadline, "no node tried to deliver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.outage();
    d.restore();
    d.settle(&r, &a.peer_id).await;
    rx.come_back().await;
    let got = rx
        .wait_until(Duration::from_secs(30), |evs| of_room(evs, &r).len() >= 6)
        .await;
    let got = of_room(&got, &r);
    let old: Vec<Value> = got
        .iter()
        .filter(|e| e["room_sid"] == got[0]["id"])
        .cloned()
        .collect();
    let new: Vec<Value> = got
        .iter()
        .filter(|e| e["room_sid"] != got[0]["id"])
        .cloned()
        .collect();
    assert_eq!(
        summary(&old),
        [
            "room-opened".to_owned(),
            format!("peer-joined {}", a.peer_id),
            format!("peer-joined {b_id}"),
            format!("peer-left {b_id} disconnected"),
        ]
    );
    // What the nodes re-asserted: a new incarnation with the one member.
    assert_eq!(
        summary(&new),
        [
            "room-opened".to_owned(),
            format!("peer-joined {}", a.peer_id)
        ]
    );
    assert_in_order(&old);
    assert_in_order(&new);
}

/// Failed tries so far, over every live instance.
async fn retries(d: &Deployment) -> u64 {
    let mut n = 0;
    for s in d.live() {
        let scrape = s.scrape().await;
        n += scrape
            .lines()
            .filter(|l| l.starts_with("signaling_webhook_retries_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

/// The receiver docs/events.md gives (its Python block, run as written but
/// on a free loopback port) accepts every event the server sends, at the
/// first try, in order.
#[tokio::test]
async fn the_receiver_in_the_docs_accepts_our_events() {
    let doc = std::fs::read_to_string(signaling_e2e::workspace_root().join("docs/events.md"))
        .expect("docs/events.md");
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let code = &doc[start..start + doc[start..].find("```").expect("its end")];
    let port = signaling_e2e::redis::free_port();
    let code = code.replace(
        r#"HTTPServer(("0.0.0.0", 9000), Hook)"#,
        &format!(r#"HTTPServer(("127.0.0.1", {port}), Hook)"#),
    );
    assert!(
        code.contains(&port.to_string()),
        "the block's listen line changed"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let python = std::env::var("SIGNALING_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut receiver = std::process::Command::new(python)
        .args(["-u", "-c", &code])
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let listening = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < listening, "the receiver never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = Deployment::one(hooked(format!("http://127.0.0.1:{port}/"))).await;
    let r = room("doc");
    d.member(0, &r, "a").await.close().await;
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(&r))
            .map(str::to_owned)
            .collect();
        if lines.len() >= 4 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = receiver.kill();
    let _ = receiver.wait();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0], f[3])
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("room-opened", "1"),
            ("peer-joined", "2"),
            ("peer-left", "3"),
            ("room-closed", "4")
        ]
    );
    assert_eq!(
        retries(&d).await,
        0,
        "every event accepted at its first try"
    );
}
