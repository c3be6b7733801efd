//! The event log boundary (`bus::EventLog`), one suite run against both
//! engines: the in-process outbox of a lone instance and a real
//! redis-server's stream with its consumer groups. Events are made the way
//! the server makes them, by publishing presence changes to the engine.

use signaling::bus::memory::MemoryBus;
use signaling::bus::redis::{RedisBus, RedisConfig};
use signaling::bus::{DeadLetter, EventLog, Lead, PeerInfo, PresenceEvent, PresenceStore};
use signaling::ids::{NodeId, PeerId, RoomId};
use signaling_e2e::redis::Redis;
use signaling_protocol::reply::LeaveReason;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(3);

/// An engine's store (to make events) and its log; the Redis one keeps its
/// server alive.
struct Engine {
    store: Arc<dyn PresenceStore>,
    log: Arc<dyn EventLog>,
    _redis: Option<Redis>,
}

fn memory() -> Engine {
    let bus = Arc::new(MemoryBus::with_events(NodeId::new("n1"), 100));
    Engine {
        log: bus.event_log(),
        store: bus,
        _redis: None,
    }
}

async fn redis() -> Engine {
    let redis = Redis::start();
    let bus = Arc::new(
        RedisBus::start(
            RedisConfig {
                url: redis.url(),
                prefix: "sig".into(),
                node_timeout: Duration::from_secs(5),
                stream_maxlen: 1000,
                queue_bytes: 1 << 20,
            },
            NodeId::new("n1"),
        )
        .expect("bus"),
    );
    let log = bus.event_log();
    // Once connected: the group is made on the live stream.
    let deadline = std::time::Instant::now() + WAIT;
    while log.open_group("g").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis never reachable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Engine {
        log,
        store: bus,
        _redis: Some(redis),
    }
}

fn peer(id: &str) -> Arc<PeerInfo> {
    Arc::new(PeerInfo::new(
        PeerId::new(id),
        NodeId::new("n1"),
        id.into(),
        "{}".into(),
        1,
    ))
}

/// `room` opened by `a`, who then leaves: four events.
fn open_and_close(e: &Engine, room: &str) {
    let r = RoomId::new(room);
    e.store.publish(&r, PresenceEvent::Joined(peer("a")));
    e.store.publish(
        &r,
        PresenceEvent::Left {
            peer: PeerId::new("a"),
            reason: LeaveReason::Left,
        },
    );
}

/// Takes until `n` events arrived (or the wait ends).
async fn take(e: &Engine, consumer: &str, n: usize) -> Vec<signaling::bus::Taken> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < n && std::time::Instant::now() < deadline {
        let more = e
            .log
            .take("g", consumer, n - got.len(), Duration::from_millis(200))
            .await
            .expect("take");
        got.extend(more);
    }
    got
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(#[tokio::test] async fn $name() { let e = super::memory(); e.log.open_group("g").await.expect("open"); super::$name(e).await; })*
        }
        mod in_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::redis().await).await; })*
        }
    };
}

both!(
    events_come_numbered_in_order_and_settled_ones_leave_the_backlog,
    a_dead_letter_is_listed_and_replayed_with_its_id,
    one_holder_leads_and_a_free_lease_is_only_taken_when_asked,
    events_a_consumer_left_pending_are_claimed_by_another,
);

async fn events_come_numbered_in_order_and_settled_ones_leave_the_backlog(e: Engine) {
    open_and_close(&e, "r1");
    let got = take(&e, "c1", 4).await;
    let kinds: Vec<&str> = got.iter().map(|t| t.event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["room-opened", "peer-joined", "peer-left", "room-closed"]
    );
    let seqs: Vec<u64> = got.iter().map(|t| t.event.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(got.iter().all(|t| t.event.room_sid == got[0].event.id));
    assert!(got.iter().all(|t| t.replay.is_none()));
    assert_eq!(e.log.backlog("g").await.expect("backlog"), (4, 0));
    for t in &got {
        e.log.settle("g", t, None).await.expect("settle");
    }
    assert_eq!(e.log.backlog("g").await.expect("backlog"), (0, 0));
    // Nothing more: a take waits, then answers empty.
    let none = e.log.take("g", "c1", 10, Duration::from_millis(100)).await;
    assert!(none.expect("take").is_empty());
    // The room again: a new incarnation, numbered from 1.
    open_and_close(&e, "r1");
    let again = take(&e, "c1", 4).await;
    assert_eq!(again[0].event.seq, 1);
    assert_ne!(again[0].event.room_sid, got[0].event.room_sid);
}

async fn a_dead_letter_is_listed_and_replayed_with_its_id(e: Engine) {
    open_and_close(&e, "r2");
    let got = take(&e, "c1", 4).await;
    let first = &got[0];
    let letter = DeadLetter {
        event: (*first.event).clone(),
        error: "answered 500".into(),
        attempts: 3,
        failed_at: 7,
    };
    e.log
        .settle("g", first, Some(letter))
        .await
        .expect("settle");
    let dead = e.log.dead_letters("g", 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.id, first.event.id);
    assert_eq!(
        (dead[0].error.as_str(), dead[0].attempts),
        ("answered 500", 3)
    );
    assert_eq!(e.log.backlog("g").await.expect("backlog"), (3, 1));
    // Replaying an id that is not there moves nothing.
    assert_eq!(
        e.log
            .replay("g", Some(&["nope".to_owned()]))
            .await
            .expect("replay"),
        0
    );
    assert_eq!(
        e.log
            .replay("g", Some(std::slice::from_ref(&first.event.id)))
            .await
            .expect("replay"),
        1
    );
    assert!(e.log.dead_letters("g", 10).await.expect("dead").is_empty());
    let replayed = take(&e, "c1", 1).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event.id, first.event.id);
    assert_eq!(replayed[0].event.seq, 1);
    assert!(replayed[0].replay.is_some());
    e.log.settle("g", &replayed[0], None).await.expect("settle");
    for t in &got[1..] {
        e.log.settle("g", t, None).await.expect("settle");
    }
    assert_eq!(e.log.backlog("g").await.expect("backlog"), (0, 0));
}

async fn one_holder_leads_and_a_free_lease_is_only_taken_when_asked(e: Engine) {
    let ttl = Duration::from_secs(30);
    assert_eq!(
        e.log.lead("g", "a", ttl, false).await.expect("lead"),
        Lead::Free
    );
    assert_eq!(
        e.log.lead("g", "a", ttl, true).await.expect("lead"),
        Lead::Ours
    );
    assert_eq!(
        e.log.lead("g", "b", ttl, true).await.expect("lead"),
        Lead::Other
    );
    assert_eq!(
        e.log.lead("g", "a", ttl, false).await.expect("lead"),
        Lead::Ours
    );
    e.log.resign("g", "b").await;
    assert_eq!(
        e.log.lead("g", "b", ttl, true).await.expect("lead"),
        Lead::Other
    );
    e.log.resign("g", "a").await;
    assert_eq!(
        e.log.lead("g", "b", ttl, true).await.expect("lead"),
        Lead::Ours
    );
    // A lease runs out on its own.
    let short = Duration::from_millis(100);
    assert_eq!(
        e.log.lead("h", "a", short, true).await.expect("lead"),
        Lead::Ours
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        e.log.lead("h", "b", short, true).await.expect("lead"),
        Lead::Ours
    );
}

async fn events_a_consumer_left_pending_are_claimed_by_another(e: Engine) {
    open_and_close(&e, "r3");
    let got = take(&e, "c1", 4).await;
    e.log.settle("g", &got[0], None).await.expect("settle");
    // Not idle long enough: nothing to claim.
    let early = e.log.claim("g", "c2", 10, Duration::from_secs(60)).await;
    assert!(early.expect("claim").is_empty());
    // Claimed a few at a time, a claim goes on where the last stopped.
    let mut claimed = e
        .log
        .claim("g", "c2", 2, Duration::ZERO)
        .await
        .expect("claim");
    claimed.extend(
        e.log
            .claim("g", "c2", 2, Duration::ZERO)
            .await
            .expect("claim"),
    );
    let ids: Vec<&str> = claimed.iter().map(|t| t.event.id.as_str()).collect();
    let want: Vec<&str> = got[1..].iter().map(|t| t.event.id.as_str()).collect();
    assert_eq!(ids, want, "the unsettled three, in order, each once");
    for t in &claimed {
        e.log.settle("g", t, None).await.expect("settle");
    }
    assert_eq!(e.log.backlog("g").await.expect("backlog"), (0, 0));
}
