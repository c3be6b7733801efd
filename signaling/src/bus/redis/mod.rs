//! The Redis engine: any number of instances sharing rooms through one Redis.
//!
//! - Presence lives in Redis (a hash per room, see `keys.rs`) and every change
//!   is announced on the room's pub/sub channel by the node that owns the peer,
//!   through one ordered queue (`publisher.rs`), so each peer's events keep their
//!   order. A node subscribes only to the rooms it has members in, plus its own
//!   node channel for messages directed to its peers.
//! - `link.rs` keeps the connections: it reconnects with backoff, re-subscribes
//!   from the hub's rooms (the source of truth, not a list of its own), re-asserts
//!   this node's peers, and resyncs the rooms' views (`resync.rs`: the
//!   events it missed, as ordinary presence events), so views converge after an
//!   outage without anyone rejoining. While Redis is away, local rooms keep
//!   working and the queue keeps what must be published.
//! - `liveness.rs` heartbeats this node and lets exactly one survivor announce a
//!   dead node's peers as `node-lost`.
//! - `repair.rs` makes Redis's record of this node's peers what the node
//!   holds: on every connect, and periodically while connected, since Redis
//!   can lose data (or bring older data back) without anyone reconnecting.
//! - `wire.rs` is the node-to-node format: everything published on a
//!   channel is encoded and decoded there, typed, with a version.
//! - The two hot paths, the queue's writes and the subscription's reads, own
//!   their sockets (`resp.rs`, `subscriber.rs`) instead of going through
//!   redis-rs's driver tasks; queries, heartbeats and re-assertion use redis-rs.

mod events;
mod keys;
mod link;
mod liveness;
mod publisher;
mod repair;
mod resp;
mod resync;
mod scripts;
mod sequence;
mod subscriber;
mod wire;

use crate::text::Text;
use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;

use super::{
    BusError, Handoff, InboundHandler, Origin, PeerInfo, PresenceEvent, PresenceStore, Reservation,
    RoomCommand, RoomSummary, Transport, Undelivered,
};
use crate::ids::{NodeId, PeerId, RoomId};
pub use events::{dead_letters_in, replay_dead};
pub use keys::Keys;
use publisher::{Direct, Op};

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    /// A node silent this long is dead and its peers are announced `node-lost`.
    pub node_timeout: Duration,
    /// Approximate length cap of the presence stream.
    pub stream_maxlen: usize,
    /// Bytes the write queue may hold before relays are refused
    /// (`--redis-queue-bytes`). Presence changes and hand-overs are queued
    /// past it: they must never be lost.
    pub queue_bytes: usize,
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
    /// Counts the connects: the queue's own connection, once lost, waits
    /// for the next one, whose re-assertion must go out first.
    connects: AtomicU64,
    /// Instances heartbeating as of this node's last heartbeat (`/metrics`).
    nodes: AtomicUsize,
    /// Messages from other nodes that `wire::decode` refused (`/metrics`).
    undecodable: AtomicU64,
    /// Operations per pipelined write of the queue (`/metrics`).
    batch_sizes: crate::metrics::FixedHistogram<{ BATCH_BUCKETS.len() }>,
    /// Asks the link to start over: the queue's connection failed.
    relink: Notify,
    ready: AtomicBool,
    handler: OnceLock<Weak<dyn InboundHandler>>,
    /// What waits to be written. Relays are admitted only under
    /// `config.queue_bytes`, which is what bounds the queue while Redis is
    /// slow or away: unbounded, a stall turns large relays into gigabytes.
    queue: publisher::Queue,
    /// Resume claims waiting for the holding node's answer.
    claims: DashMap<u64, oneshot::Sender<Option<Handoff>>>,
    next_claim: AtomicU64,
    /// Relays have been refused since the queue last drained (for the log).
    refusing: AtomicBool,
    /// This process's claim on the node id (`liveness.rs`).
    lease: liveness::Lease,
    /// Peers lately resumed on other nodes, which now record them.
    handed_over: repair::HandedOver,
    /// Relays from other nodes, put back in order (`sequence.rs`), with the
    /// room each is for.
    incoming: Mutex<sequence::Incoming<(RoomId, super::Inbound)>>,
    /// Relays of ours their node heard lately, in case it reports them lost.
    sent: Mutex<sequence::Sent<Undelivered>>,
}

impl Shared {
    /// Queues what must not be lost (presence, resume traffic), cap or not:
    /// a dropped `leave` would leave a ghost in Redis and in every other
    /// node's view. Past the cap a peer's updates merge (see
    /// [`publisher::Queue`]), so presence stays bounded by the peers here.
    fn enqueue(&self, op: Op) {
        self.queue.push(op, self.config.queue_bytes);
    }

    /// Queues a relay if it fits under the byte cap.
    fn try_enqueue(&self, op: Op) -> Result<(), BusError> {
        self.queue
            .push_within(op, self.config.queue_bytes)
            .map_err(|_| {
                self.note_refusal();
                BusError::Backlogged
            })
    }

    /// Logs the first refused relay of a backlog, not each one (a flood
    /// would turn into a log flood).
    fn note_refusal(&self) {
        if !self.refusing.swap(true, Ordering::AcqRel) {
            warn!(
                cap = self.config.queue_bytes,
                "redis write queue full: relays to other instances are refused until it drains"
            );
        }
    }

    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        let up = conn.is_some();
        if let Ok(mut c) = self.conn.write() {
            *c = conn;
        }
        if up {
            self.connects.fetch_add(1, Ordering::AcqRel);
        }
        self.ready.store(up, Ordering::Release);
        if up {
            self.conn_ready.notify_waiters();
        }
    }

    /// Has the link reconnect, unless it already has since connect `failed`.
    fn relink(&self, failed: u64) {
        if self.ready.load(Ordering::Acquire) && self.connects.load(Ordering::Acquire) == failed {
            self.relink.notify_one();
        }
    }

    /// Waits until Redis is reachable through connect number `min` or a
    /// later one, and returns that number.
    async fn wait_connect(&self, min: u64) -> u64 {
        loop {
            let notified = self.conn_ready.notified();
            if self.ready.load(Ordering::Acquire) {
                let n = self.connects.load(Ordering::Acquire);
                if n >= min {
                    return n;
                }
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
    subs: mpsc::UnboundedSender<SubCmd>,
    events: Arc<events::RedisLog>,
}

pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a resume waits for the node that holds the peer.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a presence query waits for this node's own writes.
const READ_YOUR_WRITES: Duration = Duration::from_secs(1);
/// How long a join waits for Redis to grant its slot in the room before
/// going ahead on this node's view alone (Redis stalled).
const RESERVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a shutdown waits for the queue to drain.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bounds of the batch size histogram, up to the queue's batch cap.
const BATCH_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

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
            connects: AtomicU64::new(0),
            nodes: AtomicUsize::new(0),
            undecodable: AtomicU64::new(0),
            batch_sizes: crate::metrics::FixedHistogram::new(BATCH_BUCKETS, 1.0),
            relink: Notify::new(),
            ready: AtomicBool::new(false),
            handler: OnceLock::new(),
            queue: publisher::Queue::default(),
            claims: DashMap::new(),
            next_claim: AtomicU64::new(1),
            refusing: AtomicBool::new(false),
            lease: liveness::Lease::default(),
            handed_over: repair::HandedOver::default(),
            incoming: Mutex::default(),
            sent: Mutex::default(),
        });
        let (subs, subs_rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher::run(shared.clone()));
        tokio::spawn(link::run(shared.clone(), subs_rx));
        tokio::spawn(link::expire_gaps(shared.clone()));
        let events = Arc::new(events::RedisLog::new(shared.clone()));
        Ok(RedisBus {
            shared,
            subs,
            events,
        })
    }

    fn enqueue(&self, op: Op) {
        self.shared.enqueue(op);
    }

    /// Lets this node's queued writes reach Redis before a presence query,
    /// so the query sees them; while Redis is stalled the query goes ahead
    /// after a short wait (and most likely times out itself).
    async fn own_writes_out(&self) {
        self.shared
            .queue
            .written_through_now(READ_YOUR_WRITES)
            .await;
    }

    /// Bytes waiting in (or being written by) the write queue.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queue.bytes()
    }
}

/// Answers another node's claim on one of our peers (on our node channel).
fn answer_claim(shared: &Shared, from: &str, id: &str, room: &str, peer: &str, secret: &str) {
    let handoff = shared.handler().and_then(|h| {
        h.hand_over(
            &RoomId::new(room),
            &PeerId::new(peer),
            secret,
            &NodeId::new(from),
        )
    });
    let node = shared.node.as_str();
    let payload = match handoff {
        Some(h) => {
            shared
                .handed_over
                .record(&RoomId::new(room), &PeerId::new(peer));
            wire::handoff(node, id, &h.info.object, h.queued.iter().map(Text::as_str))
        }
        None => wire::no_handoff(node, id),
    };
    shared.enqueue(Op::Direct(Direct::new(
        shared.keys.node_channel(&NodeId::new(from)),
        payload,
        None,
    )));
}

/// Completes our claim `id` with the holder's answer (`body`: a hand-over's,
/// or `None` for a refusal).
fn complete_claim(shared: &Shared, from: &str, id: u64, body: Option<&str>) {
    let Some((_, tx)) = shared.claims.remove(&id) else {
        return;
    };
    let handoff = body.and_then(wire::handoff_body).and_then(|w| {
        Some(Handoff {
            info: parse_peer(from, w.peer.get())?,
            queued: w
                .queued
                .into_iter()
                .map(|q| Text::from(q.into_owned()))
                .collect(),
        })
    });
    let _ = tx.send(handoff);
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
    #[serde(default)]
    identity: Option<String>,
}

fn parse_peer(node: &str, object: &str) -> Option<Arc<PeerInfo>> {
    let p: StoredPeer<'_> = serde_json::from_str(object).ok()?;
    Some(Arc::new(PeerInfo::with_identity(
        PeerId::new(p.peer_id),
        NodeId::new(node),
        p.name,
        p.meta.get().to_owned(),
        p.joined_at,
        p.identity,
    )))
}

/// Encodes `cmd` from `node`.
fn encode_command(node: &str, cmd: &RoomCommand) -> Vec<u8> {
    let w = match cmd {
        RoomCommand::Kick { peer, reason } => wire::Command::Kick {
            peer: peer.as_str().into(),
            reason: reason.as_str().into(),
        },
        RoomCommand::Close => wire::Command::Close,
        RoomCommand::Update { peer, name, meta } => wire::Command::Update {
            peer: peer.as_str().into(),
            name: name.as_deref().map(Into::into),
            meta: meta.as_deref().map(Into::into),
        },
        RoomCommand::Meta { meta } => wire::Command::Meta {
            meta: meta.as_str().into(),
        },
        RoomCommand::Message { to, text } => wire::Command::Message {
            to: to.as_ref().map(|p| p.as_str().into()),
            frame: text.as_str().into(),
        },
    };
    wire::act(node, &w)
}

/// A room command read off the wire (`None`: not one this node knows).
fn decode_command(cmd: wire::Command<'_>) -> Option<RoomCommand> {
    Some(match cmd {
        wire::Command::Kick { peer, reason } => RoomCommand::Kick {
            peer: PeerId::new(peer.as_ref()),
            reason: signaling_protocol::reply::LeaveReason::parse(&reason)?,
        },
        wire::Command::Close => RoomCommand::Close,
        wire::Command::Update { peer, name, meta } => RoomCommand::Update {
            peer: PeerId::new(peer.as_ref()),
            name: name.map(Into::into),
            meta: meta.map(Into::into),
        },
        wire::Command::Meta { meta } => RoomCommand::Meta { meta: meta.into() },
        wire::Command::Message { to, frame } => RoomCommand::Message {
            to: to.map(|p| PeerId::new(p.as_ref())),
            text: Text::from(frame.into_owned()),
        },
    })
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

pub(super) fn unavailable() -> BusError {
    BusError::Unavailable("redis is not reachable".into())
}

impl Transport for RedisBus {
    fn attach(&self, handler: Weak<dyn InboundHandler>) {
        let _ = self.shared.handler.set(handler);
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

    fn send_direct(
        &self,
        node: &NodeId,
        room: &RoomId,
        to: &PeerId,
        from: &PeerId,
        reference: Option<&RawValue>,
        text: Text,
        undelivered: Undelivered,
    ) -> Result<(), BusError> {
        let (payload, stamp_at) = wire::direct(
            self.shared.node.as_str(),
            from.as_str(),
            reference.map(RawValue::get),
            room.as_str(),
            to.as_str(),
            text.as_str(),
        );
        self.shared.try_enqueue(Op::Direct(Direct::relay(
            self.shared.keys.node_channel(node),
            payload,
            stamp_at,
            undelivered,
        )))
    }

    fn refuse(&self, room: &RoomId, origin: &Origin) {
        let head = wire::direct_head(&origin.0);
        let Some(sender) = head.sender else {
            return; // an older node's message: it cannot be told
        };
        // Held and sent again like resume traffic while the sender's node
        // re-links; nobody is told if it never hears it (it is gone).
        self.enqueue(Op::Direct(Direct::new(
            self.shared.keys.node_channel(&NodeId::new(head.node)),
            wire::refused(
                self.shared.node.as_str(),
                room.as_str(),
                sender.peer,
                sender.reference,
            ),
            None,
        )));
    }

    fn broadcast(&self, room: &RoomId, text: Text) -> Result<(), BusError> {
        self.shared.try_enqueue(Op::Publish {
            channel: self.shared.keys.room_channel(room),
            payload: wire::broadcast(self.shared.node.as_str(), text.as_str()),
        })
    }

    fn command(&self, room: &RoomId, cmd: &RoomCommand) -> Result<(), BusError> {
        let payload = encode_command(self.shared.node.as_str(), cmd);
        self.shared.try_enqueue(Op::Publish {
            channel: self.shared.keys.room_channel(room),
            payload,
        })
    }

    fn claim<'a>(
        &'a self,
        node: &'a NodeId,
        room: &'a RoomId,
        peer: &'a PeerId,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<Option<Handoff>, BusError>> {
        async move {
            let shared = &self.shared;
            let id = shared.next_claim.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            shared.claims.insert(id, tx);
            self.enqueue(Op::Direct(Direct::new(
                shared.keys.node_channel(node),
                wire::claim(
                    shared.node.as_str(),
                    id,
                    room.as_str(),
                    peer.as_str(),
                    secret,
                ),
                None,
            )));
            match tokio::time::timeout(CLAIM_TIMEOUT, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                _ => {
                    shared.claims.remove(&id);
                    Err(BusError::Unavailable(format!("node {node} did not answer")))
                }
            }
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        async move {
            let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
            while self.shared.queue.bytes() > 0
                && self.is_ready()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The last write is out: a restart under this id need not wait.
            liveness::release(&self.shared).await;
        }
        .boxed()
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn queued_bytes(&self) -> usize {
        RedisBus::queued_bytes(self)
    }

    fn stats(&self) -> super::BusStats {
        let shared = &self.shared;
        super::BusStats {
            connected: Some(self.is_ready()),
            queued_bytes: self.queued_bytes(),
            reconnects: shared.connects.load(Ordering::Relaxed).saturating_sub(1),
            undecodable: shared.undecodable.load(Ordering::Relaxed),
            nodes: shared.nodes.load(Ordering::Relaxed),
            batch_sizes: shared.batch_sizes.snapshot(),
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    fn fatal(&self) -> BoxFuture<'_, BusError> {
        async move {
            self.shared.lease.stopped.cancelled().await;
            BusError::Fatal(
                self.shared
                    .lease
                    .fatal
                    .get()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
        }
        .boxed()
    }
}

impl PresenceStore for RedisBus {
    fn publish(&self, room: &RoomId, event: PresenceEvent) {
        self.enqueue(Op::Presence {
            room: room.clone(),
            event,
        });
    }

    /// While connected: a change is readable once its write is through.
    /// While Redis is away nothing waits (the writes go when it is back).
    fn lags_reads(&self) -> bool {
        self.is_ready()
    }

    fn written(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        async move {
            shared.queue.written_through_now(READ_YOUR_WRITES).await;
        }
        .boxed()
    }

    fn reserve(&self, room: &RoomId, peer: &PeerId, cap: usize) -> BoxFuture<'_, Reservation> {
        // While Redis is away a join would only wait for the timeout.
        if !self.is_ready() {
            return futures_util::future::ready(Reservation::Unconfirmed).boxed();
        }
        let (tx, rx) = oneshot::channel();
        self.enqueue(Op::Reserve {
            room: room.clone(),
            peer: peer.clone(),
            cap,
            answer: Some(tx),
        });
        async move {
            match tokio::time::timeout(RESERVE_TIMEOUT, rx).await {
                Ok(Ok(answer)) => answer,
                _ => Reservation::Unconfirmed,
            }
        }
        .boxed()
    }

    fn unreserve(&self, room: &RoomId, peer: &PeerId) {
        self.enqueue(Op::Unreserve {
            room: room.clone(),
            peer: peer.clone(),
        });
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BusError>> {
        async move {
            self.own_writes_out().await;
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            let keys = &self.shared.keys;
            let names: Vec<String> =
                tokio::time::timeout(QUERY_TIMEOUT, conn.smembers(keys.rooms()))
                    .await
                    .map_err(|_| unavailable())?
                    .map_err(|e| BusError::Unavailable(e.to_string()))?;
            // redis-rs refuses an empty pipeline ("empty command"): with no
            // room anywhere there is nothing to count.
            if names.is_empty() {
                return Ok(Vec::new());
            }
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
            self.own_writes_out().await;
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            read_room(&mut conn, &self.shared.keys, &room).await
        }
        .boxed()
    }

    fn set_room_meta<'a>(
        &'a self,
        room: &'a RoomId,
        meta: &'a str,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        async move {
            let cmd = RoomCommand::Meta {
                meta: meta.to_owned(),
            };
            let payload = encode_command(self.shared.node.as_str(), &cmd);
            // After this node's own presence writes, so a room it just
            // opened is found.
            self.own_writes_out().await;
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            let keys = &self.shared.keys;
            let set: i64 = tokio::time::timeout(
                QUERY_TIMEOUT,
                redis::cmd("EVAL")
                    .arg(scripts::SET_ROOM_META)
                    .arg(6)
                    .arg(keys.room_meta(room))
                    .arg(keys.room(room))
                    .arg(keys.rooms())
                    .arg(keys.room_channel(room))
                    .arg(keys.stream())
                    .arg(keys.room_seq(room))
                    .arg(room.as_str())
                    .arg(meta)
                    .arg(payload)
                    .arg(self.shared.node.as_str())
                    .arg(crate::ids::cluster_ms())
                    .arg(self.shared.config.stream_maxlen)
                    .query_async(&mut conn),
            )
            .await
            .map_err(|_| unavailable())?
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
            Ok(set == 1)
        }
        .boxed()
    }

    fn event_log(&self) -> Arc<dyn super::EventLog> {
        self.events.clone()
    }

    fn room_meta<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Option<String>, BusError>> {
        async move {
            let mut conn = self.shared.conn().ok_or_else(unavailable)?;
            tokio::time::timeout(QUERY_TIMEOUT, conn.get(self.shared.keys.room_meta(room)))
                .await
                .map_err(|_| unavailable())?
                .map_err(|e| BusError::Unavailable(e.to_string()))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_in_a_room_hash_is_not_read_as_a_peer() {
        let object = PeerInfo::new(
            PeerId::new("p1"),
            NodeId::new("a"),
            "Ada".into(),
            "{}".into(),
            7,
        )
        .object;
        let hash = HashMap::from([
            ("p1".to_string(), format!("a\n{object}")),
            // What RESERVE writes: the node and a newline, no object.
            ("p2".to_string(), "b\n".to_string()),
        ]);
        let peers = parse_room(hash);
        let ids: Vec<(&str, &str)> = peers
            .iter()
            .map(|p| (p.id.as_str(), p.node.as_str()))
            .collect();
        assert_eq!(ids, [("p1", "a")]);
        assert!(parse_peer("b", "").is_none());
    }
}
