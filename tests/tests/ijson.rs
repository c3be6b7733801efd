//! Relayed JSON must parse wherever the server pastes it (I-JSON, RFC 7493):
//! one connection sends each bad form in each relayed field; it gets
//! `bad_message` with its `ref`, while a member on the Rust client and a raw
//! observer stay in the room, never receive a frame they cannot parse, and
//! still get the valid relay that follows; a newcomer's `joined` parses.

use serde_json::json;
use signaling_client::{Client, ClientConfig, Event, Events, JoinOptions};
use signaling_e2e::server::TestServer;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

async fn next_event(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the event stream is open")
}

/// Frames carrying `v` in each relayed field (and `name`, which the server
/// re-encodes), to the member `to`.
fn carriers(v: &str, to: &str, id: &str) -> Vec<(String, String)> {
    [
        format!(r#"{{"type":"update","meta":{{"k":{v}}}"#),
        format!(r#"{{"type":"join","room":"x","meta":{{"k":{v}}}"#),
        format!(r#"{{"type":"message","data":{v}"#),
        format!(r#"{{"type":"message","to":"{to}","data":[{v}]"#),
        format!(r#"{{"type":"candidate","to":"{to}","candidate":{{"candidate":{v}}}"#),
    ]
    .into_iter()
    .enumerate()
    .map(|(k, f)| (format!("{id}-{k}"), format!(r#"{f},"id":"{id}-{k}"}}"#)))
    .collect()
}

/// Asserts docs/protocol.md §3.2, §6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_refused_and_the_room_carries_on() {
    let server = TestServer::start(|_| {}).await;
    let room = format!("ijson-{}", signaling::ids::random_hex(6));
    let (member, mut events) = Client::connect(ClientConfig::new(server.ws()))
        .await
        .expect("member connects");
    member
        .join(&room, JoinOptions::default())
        .await
        .expect("member joins");
    let to = member.peer_id().expect("member's peer id");
    let mut observer = server.client("observer").await;
    observer.join(&room).await;
    let mut sender = server.client("sender").await;
    sender.join_with(&room, json!({"meta":{"ok":true}})).await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::PeerJoined(_)
    ));
    assert!(matches!(
        next_event(&mut events).await,
        Event::PeerJoined(_)
    ));
    observer.expect("peer-joined").await;

    let huge = format!("1{}", "0".repeat(400));
    let strings = [r#""\ud800""#, r#""\udc00x""#, r#""\ud83dx""#];
    let mut frames: Vec<(String, String)> = strings
        .iter()
        .copied()
        .chain(["1e999", "-1e400", huge.as_str()])
        .chain([r#"{"a":1,"a":2}"#])
        .enumerate()
        .flat_map(|(i, v)| carriers(v, &to, &format!("b{i}")))
        .collect();
    for (i, s) in strings.iter().enumerate() {
        for t in ["offer", "answer"] {
            frames.push((
                format!("s{i}{t}"),
                format!(r#"{{"type":"{t}","to":"{to}","sdp":{s},"id":"s{i}{t}"}}"#),
            ));
        }
    }
    for (seq, (id, frame)) in frames.iter().enumerate() {
        sender.send_text(frame.clone()).await;
        let e = sender.expect("error").await;
        assert_eq!(e["code"], "bad_message", "{frame}: {e}");
        assert_eq!(e["ref"], id.as_str(), "{frame}: {e}");
        // What follows is relayed to both, and is the next thing they get.
        sender
            .send(json!({"type":"message","data":{"seq":seq}}))
            .await;
        match next_event(&mut events).await {
            Event::Message { data, .. } => assert_eq!(data, json!({"seq":seq}), "{frame}"),
            other => panic!("{frame}: member got {other:?}"),
        }
        let m = observer.expect("message").await;
        assert_eq!(m["data"], json!({"seq":seq}), "{frame}");
    }

    // The newcomer's `joined` lists the sender, whose meta is still good.
    let (newcomer, _ev) = Client::connect(ClientConfig::new(server.ws()))
        .await
        .expect("newcomer connects");
    let joined = newcomer
        .join(&room, JoinOptions::default())
        .await
        .expect("newcomer's joined parses");
    assert_eq!(joined.peers.len(), 3);
    assert!(joined.peers.iter().any(|p| p.meta == json!({"ok":true})));
    assert!(matches!(
        next_event(&mut events).await,
        Event::PeerJoined(_)
    ));
    server.stop().await;
}
