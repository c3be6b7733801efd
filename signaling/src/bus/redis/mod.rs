//! The Redis engine: any number of instances sharing rooms through one Redis.
//!
//! - Presence lives in Redis (a hash per room, see [`keys`]) and every change
//!   is announced on the room's pub/sub channel by the node that owns the peer,
//!   through one ordered queue ([`publisher`]), so each peer's events keep their
//!   order. A node subscribes only to the rooms it has members in, plus its own
//!   node channel for messages directed to its peers.
//! - [`link`] keeps the connections: it reconnects with backoff, re-subscribes
//!   from the hub's rooms (the source of truth, not a list of its own), re-asserts
//!   this node's peers, and resyncs the rooms' views, so views converge after an
//!   outage without anyone rejoining. While Redis is away, local rooms keep
//!   working and the queue keeps what must be published.
//! - [`liveness`] heartbeats this node and lets exactly one survivor announce a
//!   dead node's peers as `node-lost`.

mod keys;
mod link;
mod liveness;
mod publisher;
mod scripts;

use axum::extract::ws::Utf8Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;

use super::{Bus, BusError, InboundHandler, PeerInfo, PresenceEvent, RoomSummary};
use crate::ids::{NodeId, PeerId, RoomId};
pub use keys::Keys;
use keys::payload;
use publisher::Op;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    /// A node silent this long is dead and its peers are announced `node-lost`.
    pub node_timeout: Duration,
    /// Approximate length cap of the presence stream.
    pub stream_maxlen: usize,
}

/// Requests to the pub/sub connection, applied in order.
enum SubCmd {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

/// State shared by the bus handle and its tasks.
struct Shared {
    node: NodeId,
    keys: Keys,
    client: redis::Client,
    config: RedisConfig,
    /// The command connection while Redis is reachable.
    conn: RwLock<Option<MultiplexedConnection>>,
    conn_ready: Notify,
    ready: AtomicBool,
    handler: OnceLock<Weak<dyn InboundHandler>>,
}

impl Shared {
    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        let up = conn.is_some();
        if let Ok(mut c) = self.conn.write() {
            *c = conn;
        }
        self.ready.store(up, Ordering::Release);
        if up {
            self.conn_ready.notify_waiters();
        }
    }

    /// Waits until Redis is reachable.
    async fn wait_conn(&self) -> MultiplexedConnection {
        loop {
            let notified = self.conn_ready.notified();
            if let Some(c) = self.conn() {
                return c;
            }
            notified.await;
        }
    }

    fn handler(&self) -> Option<Arc<dyn InboundHandler>> {
        self.handler.get().and_then(Weak::upgrade)
    }
}

pub struct RedisBus {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    subs: mpsc::UnboundedSender<SubCmd>,
}

/// Presence changes waiting for Redis; past this, the oldest news is dropped
/// and the resync after reconnect repairs the views.
const QUEUE: usize = 100_000;
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[error("invalid --redis-url: {0}")]
pub struct BadUrl(String);

impl RedisBus {
    /// Starts the engine. Redis need not be up: the engine keeps trying.
    pub fn start(config: RedisConfig, node: NodeId) -> Result<RedisBus, BadUrl> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| BadUrl(e.to_string()))?;
        let shared = Arc::new(Shared {
            keys: Keys::new(&config.prefix),
            node,
            client,
            config,
            conn: RwLock::new(None),
            conn_ready: Notify::new(),
            ready: AtomicBool::new(false),
            handler: OnceLock::new(),
        });
        let (ops, ops_rx) = mpsc::channel(QUEUE);
        let (subs, subs_rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher::run(shared.clone(), ops_rx));
        tokio::spawn(link::run(shared.clone(), subs_rx));
        Ok(RedisBus { shared, ops, subs })
    }

    fn enqueue(&self, op: Op) {
        if let Err(e) = self.ops.try_send(op) {
            warn!(error = %e, "redis queue full: an update is dropped (the resync repairs views)");
        }
    }
}

/// A peer object as stored and announced, read back into a [`PeerInfo`].
#[derive(Deserialize)]
struct StoredPeer<'a> {
    peer_id: String,
    #[serde(default)]
    name: String,
    #[serde(borrow)]
    meta: &'a RawValue,
    joined_at: u64,
}

fn parse_peer(node: &str, object: &str) -> Option<Arc<PeerInfo>> {
    let p: StoredPeer<'_> = serde_json::from_str(object).ok()?;
    Some(Arc::new(PeerInfo::new(
        PeerId::new(p.peer_id),
        NodeId::new(node),
        p.name,
        p.meta.get().to_owned(),
        p.joined_at,
    )))
}

/// A room hash read back, oldest first.
fn parse_room(hash: HashMap<String, String>) -> Vec<Arc<PeerInfo>> {
    let mut peers: Vec<Arc<PeerInfo>> = hash
        .values()
        .filter_map(|v| v.split_once('\n'))
        .filter_map(|(node, object)| parse_peer(node, object))
        .collect();
    peers.sort_by(|a, b| (a.joined_at_ms, &a.id).cmp(&(b.joined_at_ms, &b.id)));
    peers
}

async fn read_room(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    room: &RoomId,
) -> Result<Vec<Arc<PeerInfo>>, BusError> {
    let hash: HashMap<String, String> =
        tokio::time::timeout(QUERY_TIMEOUT, conn.hgetall(keys.room(room)))
            .await
            .map_err(|_| BusError::Unavailable("redis timed out".into()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
    Ok(parse_room(hash))
}

fn unavailable() -> BusError {
    BusError::Unavailable("redis is not reachable".into())
}

impl Bus for RedisBus {
    fn attach(&self, handler: Weak<dyn InboundHandler>) {
        let _ = self.shared.handler.set(handler);
    }

    fn publish(&self, room: &RoomId, event: PresenceEvent) {
        self.enqueue(Op::Presence {
            room: room.clone(),
            event,
        });
    }

    fn watch(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>> {
        let channel = self.shared.keys.room_channel(room);
        let room = room.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            self.subs
                .send(SubCmd::Subscribe(channel, tx))
                .map_err(|_| unavailable())?;
            // Subscribed before reading: whatever changes after the read is
            // also announced to us.
            match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
                Ok(Ok(true)) => {}
                _ => return Err(unavailable()),
            }
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            read_room(&mut conn, &self.shared.keys, &room).await
        }
        .boxed()
    }

    fn unwatch(&self, room: &RoomId) {
        let _ = self
            .subs
            .send(SubCmd::Unsubscribe(self.shared.keys.room_channel(room)));
    }

    fn send_direct(&self, node: &NodeId, room: &RoomId, to: &PeerId, text: Utf8Bytes) {
        let body = [room.as_str(), " ", to.as_str(), "\n", text.as_str()];
        self.enqueue(Op::Publish {
            channel: self.shared.keys.node_channel(node),
            payload: payload::encode('D', self.shared.node.as_str(), &body),
        });
    }

    fn broadcast(&self, room: &RoomId, text: Utf8Bytes) {
        self.enqueue(Op::Publish {
            channel: self.shared.keys.room_channel(room),
            payload: payload::encode('B', self.shared.node.as_str(), &[text.as_str()]),
        });
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BusError>> {
        async move {
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            let keys = &self.shared.keys;
            let names: Vec<String> =
                tokio::time::timeout(QUERY_TIMEOUT, conn.smembers(keys.rooms()))
                    .await
                    .map_err(|_| unavailable())?
                    .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let mut pipe = redis::pipe();
            for n in &names {
                pipe.hlen(keys.room(&RoomId::new(n.as_str())));
            }
            let counts: Vec<usize> =
                tokio::time::timeout(QUERY_TIMEOUT, pipe.query_async(&mut conn))
                    .await
                    .map_err(|_| unavailable())?
                    .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let mut list: Vec<RoomSummary> = names
                .into_iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(room, peers)| RoomSummary {
                    room: RoomId::new(room),
                    peers,
                })
                .collect();
            list.sort_by(|a, b| a.room.cmp(&b.room));
            Ok(list)
        }
        .boxed()
    }

    fn room_peers(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>> {
        let room = room.clone();
        async move {
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            read_room(&mut conn, &self.shared.keys, &room).await
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }
}
