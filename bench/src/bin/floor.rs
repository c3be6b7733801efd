//! `floor`: the least a WebSocket relay can do on this machine, to measure
//! the bench against. It speaks just enough protocol v1 for the relay
//! scenarios (`join` -> `joined`, `peer-joined`, and every other frame
//! forwarded as is to the other member of the room, by the reading task
//! itself) and checks nothing. What the real server adds on top of this
//! floor is its own cost; the rest is the kernel, tokio and tungstenite.
//!
//!   floor --listen 127.0.0.1:9000 [--writer-task]
//!
//! `--writer-task` hands each frame to the receiver's own writer task
//! through a channel, as the server does, instead of writing it directly.

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// How a member is reached.
#[derive(Clone)]
enum Door {
    Direct(Arc<tokio::sync::Mutex<Sink>>),
    Queue(mpsc::UnboundedSender<Message>),
}

impl Door {
    async fn send(&self, m: Message) {
        match self {
            Door::Direct(sink) => {
                let _ = sink.lock().await.send(m).await;
            }
            Door::Queue(tx) => {
                let _ = tx.send(m);
            }
        }
    }
}

#[derive(Default)]
struct Rooms {
    members: Mutex<HashMap<String, Vec<(u64, Door)>>>,
    next_id: AtomicU64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    if !listen.starts_with("127.") {
        eprintln!("floor listens on loopback only");
        std::process::exit(2);
    }
    let writer_task = args.iter().any(|a| a == "--writer-task");
    let listener = TcpListener::bind(&listen).await?;
    let rooms = Arc::new(Rooms::default());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, rooms.clone(), writer_task));
    }
}

async fn serve(tcp: TcpStream, rooms: Arc<Rooms>, writer_task: bool) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let me = match writer_task {
        false => Door::Direct(Arc::new(tokio::sync::Mutex::new(sink))),
        true => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut sink = sink;
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
            });
            Door::Queue(tx)
        }
    };
    let id = rooms.next_id.fetch_add(1, Ordering::Relaxed);
    let mut room = None;
    while let Some(Ok(Message::Text(text))) = stream.next().await {
        match &room {
            None => {
                let Some(name) = text
                    .split("\"room\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                else {
                    continue;
                };
                let others = {
                    let mut map = rooms.members.lock().unwrap_or_else(|e| e.into_inner());
                    let list = map.entry(name.to_string()).or_default();
                    let others: Vec<(u64, Door)> = list.clone();
                    list.push((id, me.clone()));
                    others
                };
                let peers: Vec<String> = others
                    .iter()
                    .map(|(o, _)| {
                        format!(r#"{{"peer_id":"p{o}","name":"","meta":{{}},"joined_at":0}}"#)
                    })
                    .collect();
                let joined = format!(
                    r#"{{"type":"joined","room":"{name}","peer_id":"p{id}","peers":[{}],"ice_servers":[],"resume":"x","protocol":1}}"#,
                    peers.join(",")
                );
                me.send(Message::text(joined)).await;
                let news = format!(
                    r#"{{"type":"peer-joined","peer":{{"peer_id":"p{id}","name":"","meta":{{}},"joined_at":0}}}}"#
                );
                for (_, door) in &others {
                    door.send(Message::text(news.clone())).await;
                }
                room = Some(name.to_string());
            }
            Some(name) if text.contains(r#""type":"leave""#) => {
                let others = leave(&rooms, name, id);
                me.send(Message::text(r#"{"type":"left"}"#)).await;
                let news = format!(r#"{{"type":"peer-left","peer_id":"p{id}","reason":"left"}}"#);
                for door in others {
                    door.send(Message::text(news.clone())).await;
                }
                room = None;
            }
            Some(name) => {
                let others: Vec<Door> = {
                    let map = rooms.members.lock().unwrap_or_else(|e| e.into_inner());
                    map.get(name)
                        .map(|l| {
                            l.iter()
                                .filter(|(o, _)| *o != id)
                                .map(|(_, d)| d.clone())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                for door in others {
                    door.send(Message::Text(text.clone())).await;
                }
            }
        }
    }
    if let Some(name) = room {
        leave(&rooms, &name, id);
    }
}

/// Takes member `id` out of room `name`; the members left behind.
fn leave(rooms: &Rooms, name: &str, id: u64) -> Vec<Door> {
    let mut map = rooms.members.lock().unwrap_or_else(|e| e.into_inner());
    let Some(list) = map.get_mut(name) else {
        return Vec::new();
    };
    list.retain(|(o, _)| *o != id);
    list.iter().map(|(_, d)| d.clone()).collect()
}
