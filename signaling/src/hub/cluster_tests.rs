//! The hub across nodes, without a socket or a redis-server: hubs of one
//! [`LinkedCluster`] in one test, on tokio's paused clock, so the grace of a
//! dropped peer passes in no time. What `remote.rs` and `resume.rs` do with
//! other nodes' traffic is asserted here, frame by frame, in each hub's
//! outboxes.

use serde_json::Value;
use signaling_protocol::RelayKind;
use signaling_protocol::reply::LeaveReason;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Hub, HubLimits, JoinRequest, Membership};
use crate::bus::linked::LinkedCluster;
use crate::connections::Connections;
use crate::ice::IceConfig;
use crate::ids::{NodeId, RoomId};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

const GRACE: Duration = Duration::from_secs(30);

/// `n` hubs linked as nodes `n0`, `n1`, ...
fn cluster(n: usize) -> (LinkedCluster, Vec<Arc<Hub>>) {
    let c = LinkedCluster::new();
    let hubs = (0..n)
        .map(|i| {
            let id = format!("n{i}");
            let hub = Arc::new(Hub::new(
                NodeId::new(id.as_str()),
                HubLimits {
                    max_room_peers: 8,
                    resume_queue: 16,
                    grace: GRACE,
                },
                c.node(&id),
                Arc::new(Metrics::default()),
                Arc::new(Connections::new()),
            ));
            hub.attach_to_bus();
            hub
        })
        .collect();
    (c, hubs)
}

/// A connection id no other test connection has.
fn next_conn() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A member as a session holds it: its membership, connection, outbox.
struct Peer {
    m: Membership,
    conn: u64,
    out: Outbox,
    token: String,
}

impl Peer {
    /// The JSON frames queued to it since the last call.
    fn frames(&self) -> Vec<Value> {
        std::iter::from_fn(|| self.out.ctl().pop())
            .map(|f| serde_json::from_str(f.text.as_str()).expect("a frame is JSON"))
            .collect()
    }

    /// The types of the frames queued since the last call.
    fn types(&self) -> Vec<String> {
        self.frames()
            .iter()
            .map(|v| v["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    fn id(&self) -> &str {
        self.m.peer.as_str()
    }
}

async fn join(hub: &Arc<Hub>, room: &str, resume: Option<&str>) -> Peer {
    let out = Outbox::new(1024, 1 << 20);
    let conn = next_conn();
    let ice = IceConfig::from_config(&crate::Config::default());
    let m = hub
        .join(JoinRequest {
            room: RoomId::new(room),
            name: "p".into(),
            meta: "{}".into(),
            resume,
            reference: None,
            conn,
            outbox: out.clone(),
            ice: &ice,
            identity: None,
            replace_same_identity: false,
        })
        .await
        .unwrap_or_else(|e| panic!("join refused: {e:?}"));
    let joined = std::iter::from_fn(|| out.ctl().pop())
        .next()
        .expect("joined queued first");
    let joined: Value = serde_json::from_str(joined.text.as_str()).expect("json");
    assert_eq!(joined["type"], "joined", "{joined}");
    // What came after the joined (a resume's queue) stays for `frames`.
    let token = joined["resume"].as_str().unwrap_or_default().to_string();
    Peer {
        m,
        conn,
        out,
        token,
    }
}

/// One member of room `r` on each hub `at` names, joined in that order,
/// once every node has heard of every join, with nothing left unread.
async fn members<const N: usize>(hubs: &[Arc<Hub>], at: [usize; N]) -> [Peer; N] {
    let mut peers = Vec::new();
    for i in at {
        peers.push(join(&hubs[i], "r", None).await);
    }
    settle().await;
    for p in &peers {
        p.frames();
    }
    peers.try_into().unwrap_or_else(|_| unreachable!("N peers"))
}

fn say(hub: &Arc<Hub>, from: &Peer, to: &Peer, data: &str) {
    hub.relay(
        &from.m,
        RelayKind::Message,
        Some(to.id()),
        &format!("\"{data}\""),
        Instant::now(),
        None,
    )
    .expect("relay taken");
}

/// Lets every node's delivery task run (virtual time: costs nothing).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_join_reaches_the_other_node_and_a_newcomer_there_lists_it() {
    let (_c, hubs) = cluster(2);
    let a = join(&hubs[0], "r", None).await;
    let b = join(&hubs[1], "r", None).await;
    settle().await;
    let got = a.frames();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["peer"]["peer_id"].as_str()),
        (Some("peer-joined"), Some(b.id()))
    );
    let c = join(&hubs[1], "r", None).await;
    settle().await;
    assert_eq!(a.types(), ["peer-joined"]);
    assert_eq!(b.types(), ["peer-joined"]);
    assert!(c.frames().is_empty());
}

#[tokio::test(start_paused = true)]
async fn relays_cross_in_order_and_one_to_a_peer_gone_meanwhile_is_refused() {
    let (_c, hubs) = cluster(2);
    // k keeps the room on b's node after b leaves.
    let [a, b, _k] = members(&hubs, [0, 1, 1]).await;
    for i in 0..20 {
        say(&hubs[0], &a, &b, &i.to_string());
    }
    settle().await;
    let data: Vec<String> = b
        .frames()
        .iter()
        .map(|v| v["data"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(data, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    // b leaves; a relay sent before a's node heard of it is refused by b's
    // node, and a hears `unavailable`.
    hubs[1].leave(&b.m, LeaveReason::Left);
    say(&hubs[0], &a, &b, "late");
    settle().await;
    let got = a.frames();
    let types: Vec<&str> = got.iter().filter_map(|v| v["type"].as_str()).collect();
    assert!(types.contains(&"peer-left"), "{got:?}");
    let err = got.iter().find(|v| v["type"] == "error").expect("an error");
    assert_eq!(err["code"], "unavailable", "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_peer_is_announced_timeout_on_the_other_node_once_the_grace_ends() {
    let (_c, hubs) = cluster(2);
    let [a, b] = members(&hubs, [0, 1]).await;
    hubs[1].disconnect(&b.m, b.conn, true, Vec::new());
    tokio::time::sleep(GRACE - Duration::from_secs(1)).await;
    assert!(a.frames().is_empty(), "held peers are present");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = a.frames();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["reason"].as_str()),
        (Some("peer-left"), Some("timeout"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_peer_resumes_on_another_node_with_its_queue_and_nobody_hears() {
    let (_c, hubs) = cluster(2);
    let [a, b, w] = members(&hubs, [0, 1, 0]).await;
    hubs[0].disconnect(&a.m, a.conn, true, Vec::new());
    for i in 0..3 {
        say(&hubs[1], &b, &a, &format!("gap{i}"));
    }
    settle().await;
    let a2 = join(&hubs[1], "r", Some(&a.token)).await;
    assert_eq!(a2.id(), a.id(), "same peer after the move");
    let data: Vec<String> = a2
        .frames()
        .iter()
        .map(|v| v["data"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(data, ["gap0", "gap1", "gap2"], "the queue moved with it");
    settle().await;
    tokio::time::sleep(GRACE * 2).await;
    let (heard_b, heard_w) = (b.frames(), w.frames());
    assert!(heard_b.is_empty(), "b heard {heard_b:?}");
    assert!(heard_w.is_empty(), "w heard {heard_w:?}");
    // It lives on n1 now: w's relay goes there.
    say(&hubs[0], &w, &a2, "hello");
    settle().await;
    assert_eq!(a2.frames()[0]["data"], "hello");
    // The spent token opens nothing.
    let out = Outbox::new(16, 1 << 16);
    let refused = hubs[0]
        .join(JoinRequest {
            room: RoomId::new("r"),
            name: "x".into(),
            meta: "{}".into(),
            resume: Some(&a.token),
            reference: None,
            conn: next_conn(),
            outbox: out,
            ice: &IceConfig::from_config(&crate::Config::default()),
            identity: None,
            replace_same_identity: false,
        })
        .await;
    assert!(refused.is_err(), "a spent resume token is refused");
}

#[tokio::test(start_paused = true)]
async fn a_killed_node_s_peers_are_announced_node_lost() {
    let (c, hubs) = cluster(3);
    let [a, b, x] = members(&hubs, [0, 1, 2]).await;
    c.kill("n2");
    settle().await;
    for p in [&a, &b] {
        let got = p.frames();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0]["peer_id"].as_str(), got[0]["reason"].as_str()),
            (Some(x.id()), Some("node-lost"))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_each_node_hears_what_it_missed_in_order() {
    let (c, hubs) = cluster(2);
    let [a, b, e] = members(&hubs, [0, 1, 1]).await;
    c.cut();
    assert!(!crate::bus::Transport::is_ready(&*c.node("n0")));
    hubs[1].leave(&b.m, LeaveReason::Left);
    let d = join(&hubs[1], "r", None).await;
    settle().await;
    assert!(a.frames().is_empty(), "nothing crosses during the outage");
    assert_eq!(e.types(), ["peer-left", "peer-joined"], "local rooms work");
    c.restore();
    settle().await;
    let got = a.frames();
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or("?"),
                v["peer_id"]
                    .as_str()
                    .or(v["peer"]["peer_id"].as_str())
                    .unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(seen, [("peer-left", b.id()), ("peer-joined", d.id())]);
    assert_eq!(got[0]["reason"], "left", "the leave kept its reason");
    assert!(d.frames().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_room_whose_first_sync_got_no_answer_syncs_again_and_learns_its_members() {
    let (c, hubs) = cluster(2);
    let b = join(&hubs[1], "r", None).await;
    // a's node subscribes, but its read of the room gets no answer.
    c.fail_watches(1);
    let a = join(&hubs[0], "r", None).await;
    settle().await;
    assert!(a.frames().is_empty(), "a does not know b yet");
    // The retry, a second later, brings b in; events flow from then on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = a.frames();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["peer"]["peer_id"].as_str()),
        (Some("peer-joined"), Some(b.id()))
    );
    assert_eq!(b.types(), ["peer-joined"]);
    say(&hubs[0], &a, &b, "hi");
    settle().await;
    assert_eq!(b.frames()[0]["data"], "hi");
    hubs[1].leave(&b.m, LeaveReason::Left);
    settle().await;
    assert_eq!(a.types(), ["peer-left"]);
}
