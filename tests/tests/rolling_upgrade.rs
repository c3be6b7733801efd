//! A rolling upgrade: nodes of this release beside a node of the release
//! before the node-to-node format was versioned (format version 1, the
//! same bytes). The old node is played by the test on the real
//! redis-server: it writes, byte for byte, what that release wrote, and
//! reads what the new node sends it with that release's reader (kind and
//! node on the first line, the body after). The two interoperate; what a
//! newer format would add is refused loudly (see the cluster test
//! `messages_an_instance_cannot_read_are_counted_and_change_nothing`).
//! docs/cluster.md, "Node-to-node messages".

use redis::Commands;
use serde_json::{Value, json};
use signaling_e2e::client::Client;
use signaling_e2e::redis::Redis;
use signaling_e2e::room;
use signaling_e2e::server::{TestServer, api_room};
use std::time::Duration;

/// What the old release's reader makes of a payload: `(kind, node, body)`.
fn old_reader(payload: &[u8]) -> Option<(char, String, String)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (head, body) = text.split_once('\n')?;
    let (kind, node) = head.split_once(' ')?;
    let [k] = kind.as_bytes() else { return None };
    // A direct message's head goes on after the node (stamp, sender, ref):
    // the old reader took the node as the first word.
    let node = node.split(' ').next()?.to_string();
    Some((char::from(*k), node, body.to_string()))
}

/// The next message on the old node's subscription, within 5 s.
fn next_payload(sub: &mut redis::PubSub<'_>) -> Vec<u8> {
    sub.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let msg = sub.get_message().expect("the new node sends the old one");
    msg.get_payload_bytes().to_vec()
}

/// Asserts docs/protocol.md §15: members on a new node and a peer on an
/// old node see each other join, change and leave, and relay both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_and_a_node_of_the_old_format_interoperate() {
    let redis = Redis::start();
    let new = TestServer::node(&redis.url(), "new-1", |_| {}).await;
    let r = room("upgrade");
    let mut a = Client::connect(&new.ws(), "a@new").await;
    a.join(&r).await;

    // The old node listens on its own channel and the room's, as it did.
    let client = redis::Client::open(redis.url()).expect("a redis url");
    let mut conn = client.get_connection().expect("redis answers");
    let mut sub_conn = client.get_connection().expect("redis answers");
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("sig:ch:node:old-1").expect("subscribe");
    sub.subscribe(format!("sig:ch:room:{r}"))
        .expect("subscribe");

    // Its peer joins: a learns of it, object intact.
    let object = json!({"peer_id":"oldpeer01","name":"from before","meta":{"v":1},"joined_at":1700000000000u64});
    let publish = |conn: &mut redis::Connection, channel: &str, payload: String| {
        let heard: i64 = conn.publish(channel, payload).expect("publish");
        heard
    };
    let room_channel = format!("sig:ch:room:{r}");
    publish(&mut conn, &room_channel, format!("J old-1\n{object}"));
    let pj = a.expect("peer-joined").await;
    assert_eq!(pj["peer"], object, "the old node's peer object, as written");

    // Its peer relays to a: the old direct form (no stamp, no sender).
    let frame = json!({"type":"offer","from":"oldpeer01","sdp":"v=0 old"});
    let heard = publish(
        &mut conn,
        "sig:ch:node:new-1",
        format!("D old-1\n{r} {}\n{frame}", a.peer_id),
    );
    assert_eq!(heard, 1, "the new node listens on its channel");
    assert_eq!(a.expect("offer").await, frame);
    // And broadcasts.
    let frame = json!({"type":"message","from":"oldpeer01","data":{"hello":"all"}});
    publish(&mut conn, &room_channel, format!("B old-1\n{frame}"));
    assert_eq!(a.expect("message").await, frame);

    // a's traffic reaches the old node in the form its reader reads.
    // (What the old node published on the room channel comes back to it
    // first.)
    for _ in 0..2 {
        let _ = next_payload(&mut sub);
    }
    a.send(json!({"type":"answer","to":"oldpeer01","sdp":"v=0 new"}))
        .await;
    let (kind, node, body) = old_reader(&next_payload(&mut sub)).expect("old reader reads it");
    assert_eq!((kind, node.as_str()), ('D', "new-1"));
    let (route, delivered) = body.split_once('\n').expect("route and frame");
    assert_eq!(route, format!("{r} oldpeer01"));
    let delivered: Value = serde_json::from_str(delivered).expect("the frame as JSON");
    assert_eq!(
        delivered,
        json!({"type":"answer","from":a.peer_id,"sdp":"v=0 new"})
    );
    a.send(json!({"type":"update","meta":{"now":"new"}})).await;
    let (kind, node, body) = old_reader(&next_payload(&mut sub)).expect("old reader reads it");
    assert_eq!((kind, node.as_str()), ('U', "new-1"));
    let object_a: Value = serde_json::from_str(&body).expect("a peer object");
    assert_eq!(
        (object_a["peer_id"].as_str(), &object_a["meta"]),
        (Some(a.peer_id.as_str()), &json!({"now":"new"}))
    );

    // Its peer changes and leaves: a hears both, in order.
    let changed = json!({"peer_id":"oldpeer01","name":"from before","meta":{"v":2},"joined_at":1700000000000u64});
    publish(&mut conn, &room_channel, format!("U old-1\n{changed}"));
    assert_eq!(a.expect("peer-updated").await["peer"], changed);
    publish(&mut conn, &room_channel, "L old-1\noldpeer01 left".into());
    let l = a.expect("peer-left").await;
    assert_eq!(
        (l["peer_id"].as_str(), l["reason"].as_str()),
        (Some("oldpeer01"), Some("left"))
    );
    a.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        new.metric("signaling_bus_undecodable_total ").await,
        0,
        "nothing of the old format was refused"
    );
    assert_eq!(api_room(new.addr, &r).await, [a.peer_id.clone()]);
}
