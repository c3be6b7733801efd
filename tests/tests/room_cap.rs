//! The room cap holds across the cluster (issue 12): joins racing through
//! two instances into one room get exactly `max_room_peers` in, the rest
//! `room_full`, because the slot is taken atomically in Redis, where the
//! membership is recorded. Real redis-server, real `signaling` processes.

use futures_util::future::join_all;
use serde_json::{Value, json};
use signaling_e2e::client::Client;
use signaling_e2e::redis::Redis;
use signaling_e2e::server::{ServerProcess, api_room};
use std::time::{Duration, Instant};

/// The default `max_room_peers`.
const CAP: usize = 50;
/// Joins fired through each instance: 70 in all, 20 too many.
const PER_NODE: usize = 35;
const ANSWER: Duration = Duration::from_secs(10);

fn room(tag: &str) -> String {
    format!("cap-{tag}-{}", std::process::id())
}

async fn node(redis: &Redis, id: &str) -> ServerProcess {
    ServerProcess::node(&redis.url(), id, &[]).await
}

/// How a `join` was answered.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Answer {
    Joined,
    Full,
}

/// The first answer to a `join`: `joined`, or `error` `room_full` (anything
/// else fails the test).
async fn answer(c: &mut Client) -> Answer {
    let v = c.next(ANSWER).await;
    match v.as_ref().map(|v| (&v["type"], &v["code"])) {
        Some((Value::String(t), _)) if t == "joined" => {
            let v = v.as_ref().map(|v| &v["peer_id"]);
            c.peer_id = v.and_then(Value::as_str).unwrap_or_default().to_string();
            Answer::Joined
        }
        Some((Value::String(t), Value::String(code))) if t == "error" && code == "room_full" => {
            Answer::Full
        }
        _ => panic!("{}: expected joined or room_full, got {v:?}", c.label),
    }
}

/// Every client sends `join` to `r` at once (all sent before any answer is
/// read); their answers, in the clients' order.
async fn join_at_once(clients: &mut [Client], r: &str) -> Vec<Answer> {
    join_all(
        clients
            .iter_mut()
            .map(|c| c.send(json!({"type":"join","room":r}))),
    )
    .await;
    join_all(clients.iter_mut().map(answer)).await
}

/// Waits until Redis's hash of `r` holds only peers (no reservation left
/// over) and returns how many.
async fn settled_in_redis(redis: &Redis, r: &str) -> usize {
    let key = format!("sig:room:{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let values = redis.list(&["HVALS", &key]).unwrap_or_default();
        // A peer is `<node>\n<object>`; a reservation has no object.
        let placeholders = values.iter().filter(|v| v.ends_with('\n')).count();
        if placeholders == 0 {
            let keys = redis.list(&["HKEYS", &key]).unwrap_or_default();
            return keys.len();
        }
        assert!(
            Instant::now() < deadline,
            "{placeholders} reservations never replaced or released in {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `c`'s traffic until it has seen `n` `peer-left`: its instance has
/// applied those leaves to its view of the room.
async fn saw_leaves(c: &mut Client, n: usize) {
    let mut seen = 0;
    while seen < n {
        match c.next(ANSWER).await {
            Some(v) if v["type"] == "peer-left" => seen += 1,
            Some(_) => {}
            None => panic!("{}: saw {seen} of {n} peer-left", c.label),
        }
    }
}

/// The `event` of every entry of the presence stream about room `r`, oldest first.
fn stream_events(redis: &Redis, r: &str) -> Vec<String> {
    const EVENTS_OF_ROOM: &str = r#"
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f, event, room = e[2], nil, nil
  for i = 1, #f, 2 do
    if f[i] == 'event' then event = f[i + 1] elseif f[i] == 'room' then room = f[i + 1] end
  end
  if room == ARGV[1] then table.insert(out, event) end
end
return out
"#;
    redis
        .list(&["EVAL", EVENTS_OF_ROOM, "1", "sig:presence", r])
        .unwrap_or_default()
}

fn count(events: &[String], event: &str) -> usize {
    events.iter().filter(|e| *e == event).count()
}

async fn connect_all(p: &ServerProcess, tag: &str) -> Vec<Client> {
    let ws = p.ws();
    join_all((0..PER_NODE).map(|i| {
        let label = format!("{tag}{i}");
        let ws = ws.clone();
        async move { Client::connect(&ws, &label).await }
    }))
    .await
}

/// Asserts docs/protocol.md §2.2, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_through_two_instances_fill_the_room_exactly_to_the_cap() {
    let redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    for round in 0..4 {
        let r = room(&format!("race{round}"));
        let mut clients = connect_all(&a, "a").await;
        clients.extend(connect_all(&b, "b").await);
        let started = Instant::now();
        let answers = join_at_once(&mut clients, &r).await;
        let took = started.elapsed();
        let joined = answers.iter().filter(|a| **a == Answer::Joined).count();
        let full = answers.iter().filter(|a| **a == Answer::Full).count();
        eprintln!(
            "round {round}: {joined} joined, {full} room_full, all 70 answered in {took:?} \
             (via a: {} joined)",
            answers[..PER_NODE]
                .iter()
                .filter(|a| **a == Answer::Joined)
                .count()
        );
        assert_eq!((joined, full), (CAP, 2 * PER_NODE - CAP), "round {round}");
        assert_eq!(settled_in_redis(&redis, &r).await, CAP, "round {round}");
        assert_eq!(
            api_room(a.addr, &r).await.len(),
            CAP,
            "round {round}, via a"
        );
        assert_eq!(
            api_room(b.addr, &r).await.len(),
            CAP,
            "round {round}, via b"
        );
        // Left, not dropped: a dropped peer would be held for the grace.
        for (c, _) in clients
            .iter_mut()
            .zip(&answers)
            .filter(|(_, a)| **a == Answer::Joined)
        {
            c.send(json!({"type":"leave"})).await;
        }
        // The stream saw the room open once, 50 peers come and go (none of
        // the refused) and the room close once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(&stream_events(&redis, &r), "room-closed") == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the room never closed: {:?} {:?} {:?}",
                redis.list(&["HVALS", &format!("sig:room:{r}")]),
                redis.cmd(&["SISMEMBER", "sig:rooms", &r]),
                stream_events(&redis, &r),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let events = stream_events(&redis, &r);
        let counts: Vec<usize> = ["room-opened", "peer-joined", "peer-left", "room-closed"]
            .iter()
            .map(|e| count(&events, e))
            .collect();
        assert_eq!(counts, [1, CAP, CAP, 1], "round {round}: {events:?}");
        assert_eq!(events.first().map(String::as_str), Some("room-opened"));
        assert_eq!(events.last().map(String::as_str), Some("room-closed"));
        for c in clients {
            c.close().await;
        }
    }
}

/// Asserts docs/protocol.md §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_freed_by_leaves_are_taken_again_up_to_the_cap() {
    let redis = Redis::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let r = room("refill");
    let mut clients = connect_all(&a, "a").await;
    clients.extend(connect_all(&b, "b").await);
    let answers = join_at_once(&mut clients, &r).await;
    let (joined, refused): (Vec<_>, Vec<_>) = answers
        .into_iter()
        .zip(clients)
        .partition(|(a, _)| *a == Answer::Joined);
    assert_eq!((joined.len(), refused.len()), (CAP, 2 * PER_NODE - CAP));
    let mut joined: Vec<Client> = joined.into_iter().map(|(_, c)| c).collect();
    // Five members leave; two that stay, one per instance (the race puts
    // members on both), see it, so both instances' views have the room at 45.
    let on = |c: &Client, tag: char| c.label.starts_with(tag);
    let watcher_a = joined.iter().position(|c| on(c, 'a'));
    let watcher_b = joined.iter().position(|c| on(c, 'b'));
    let (Some(wa), Some(wb)) = (watcher_a, watcher_b) else {
        panic!("the race put members on both instances");
    };
    let mut watchers = vec![
        joined.swap_remove(wa.max(wb)),
        joined.swap_remove(wa.min(wb)),
    ];
    for c in joined.iter_mut().take(5) {
        c.send(json!({"type":"leave"})).await;
    }
    for w in &mut watchers {
        saw_leaves(w, 5).await;
    }
    assert_eq!(settled_in_redis(&redis, &r).await, CAP - 5);
    // Five newcomers, through both instances, all get in.
    let mut again = Vec::new();
    for (i, p) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        again.push(Client::connect(&p.ws(), &format!("new{i}")).await);
    }
    let answers = join_at_once(&mut again, &r).await;
    assert_eq!(answers, [Answer::Joined; 5]);
    // The next is refused, through either instance.
    for p in [&a, &b] {
        let mut c = Client::connect(&p.ws(), "late").await;
        assert_eq!(
            join_at_once(std::slice::from_mut(&mut c), &r).await,
            [Answer::Full]
        );
    }
    assert_eq!(settled_in_redis(&redis, &r).await, CAP);
    assert_eq!(api_room(a.addr, &r).await.len(), CAP);
    assert_eq!(api_room(b.addr, &r).await.len(), CAP);
}

/// A node that dies holding a reservation (a join under way) has it cleared
/// with its peers, and nobody hears of it: it never was a peer.
/// Asserts docs/protocol.md §7.2, §15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_reservation_is_cleared_without_a_word() {
    let redis = Redis::start();
    let mut a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let r = room("reaped");
    let mut x = Client::connect(&b.ws(), "x").await;
    x.join(&r).await;
    let mut y = Client::connect(&a.ws(), "y").await;
    y.join(&r).await;
    x.expect("peer-joined").await;
    // What RESERVE leaves while a's join waits for its answer.
    let key = format!("sig:room:{r}");
    assert_eq!(
        redis.cmd(&["HSET", &key, "ghost", "a\n"]).as_deref(),
        Some(":1")
    );
    assert_eq!(
        redis
            .cmd(&["HSET", "sig:node:a:peers", "ghost", &r])
            .as_deref(),
        Some(":1")
    );
    a.kill9();
    let left = x.expect_within("peer-left", Duration::from_secs(20)).await;
    assert_eq!(
        (left["peer_id"].as_str(), left["reason"].as_str()),
        (Some(y.peer_id.as_str()), Some("node-lost"))
    );
    x.expect_silence(Duration::from_secs(1)).await;
    assert_eq!(redis.list(&["HKEYS", &key]), Some(vec![x.peer_id.clone()]));
    let events = stream_events(&redis, &r);
    assert_eq!(count(&events, "peer-left"), 1, "{events:?}");
    assert_eq!(count(&events, "room-closed"), 0, "{events:?}");
}
