//! A bench peer: a WebSocket whose writes go through a queue to a writer task
//! and whose reads go to a callback, so thousands of them run cheaply.
//!
//! What is queued is a closure that makes the frame, called by the writer
//! just before the frame goes to the socket: a timestamp taken inside it
//! leaves the generator's own queueing and task hand-over out of the latency.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub type Error = String;

/// Makes one outgoing text frame, at the moment it is written.
pub type Outgoing = Box<dyn FnOnce() -> String + Send>;

pub struct Peer {
    pub peer_id: String,
    pub tx: mpsc::Sender<Outgoing>,
}

/// Connects, joins `room`, and returns once joined. `on_text` sees every
/// later text frame; `first` collects what arrived with the join reply
/// until `ready` says enough is known.
pub async fn join(
    url: &str,
    room: &str,
    mut ready: impl FnMut(&Value) -> bool + Send,
    mut on_text: impl FnMut(&str) + Send + 'static,
) -> Result<(Peer, Value), Error> {
    // No Nagle, like a browser: a frame behind an unacknowledged one would
    // otherwise wait for the delayed ACK.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let join = serde_json::json!({"type":"join","room":room}).to_string();
    sink.send(Message::text(join))
        .await
        .map_err(|e| format!("send join: {e}"))?;
    let mut joined = Value::Null;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| "no reply to join within 10 s".to_string())?;
        let Some(Ok(Message::Text(t))) = msg else {
            match msg {
                Some(Ok(_)) => continue,
                other => return Err(format!("connection ended while joining: {other:?}")),
            }
        };
        let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("joined") => joined = v.clone(),
            Some("error") => return Err(format!("join refused: {v}")),
            _ => {}
        }
        if !joined.is_null() && ready(&v) {
            break;
        }
    }
    let peer_id = joined["peer_id"].as_str().unwrap_or_default().to_string();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(4096);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::text(first())).await.is_err() {
                return;
            }
            while let Ok(next) = rx.try_recv() {
                if sink.feed(Message::text(next())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m {
                on_text(t.as_str());
            }
        }
    });
    Ok((Peer { peer_id, tx }, joined))
}
