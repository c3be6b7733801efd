//! The cluster boundary, in two narrow traits: a [`Transport`] (traffic
//! between nodes: a room's subscriptions and broadcasts, relays to one node,
//! resume hand-overs, the engine's health) and a [`PresenceStore`] (the
//! cluster's record of who is in which room: this node's changes, room
//! slots against the cap, the rooms read back for `/api/*`). One engine
//! implements both ([`Bus`]): in memory for a single instance, Redis for a
//! cluster, chosen once at start-up; nothing else in the server knows which.
//!
//! The engine never sees a connection: it deals in rooms, peer records and
//! events. Fan-out to the local connections of a room is the hub's job, and is
//! done before the engine is told, so local members keep working whatever
//! state the engine is in. What other nodes send comes back through the
//! [`InboundHandler`] (the hub).

pub mod events;
pub mod linked;
pub mod memory;
pub mod redis;

use crate::text::Text;
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use signaling_protocol::reply::{self, LeaveReason};
use std::sync::{Arc, Weak};

use crate::event::RoomEvent;
use crate::ids::{NodeId, PeerId, RoomId};
use std::time::Duration;

/// What the cluster knows of a peer: its protocol-visible fields, the node
/// that holds its connection, and its encoded peer object (encoded once,
/// pasted into every `joined`, `peer-joined` and `peer-updated`).
#[derive(Debug)]
pub struct PeerInfo {
    pub id: PeerId,
    pub node: NodeId,
    pub name: String,
    /// The `meta` object as raw JSON.
    pub meta: String,
    pub joined_at_ms: u64,
    /// The verified identity its token gave (`sub`), when auth is on.
    pub identity: Option<String>,
    pub object: Arc<str>,
}

impl PeerInfo {
    pub fn new(id: PeerId, node: NodeId, name: String, meta: String, joined_at_ms: u64) -> Self {
        PeerInfo::with_identity(id, node, name, meta, joined_at_ms, None)
    }

    pub fn with_identity(
        id: PeerId,
        node: NodeId,
        name: String,
        meta: String,
        joined_at_ms: u64,
        identity: Option<String>,
    ) -> Self {
        let object =
            reply::peer_object(id.as_str(), &name, &meta, joined_at_ms, identity.as_deref()).into();
        PeerInfo {
            id,
            node,
            name,
            meta,
            joined_at_ms,
            identity,
            object,
        }
    }

    /// The same peer with new `meta`.
    pub fn with_meta(&self, meta: String) -> Self {
        self.changed(self.name.clone(), meta, self.node.clone())
    }

    /// The same peer held by `node` now.
    pub fn moved_to(&self, node: NodeId) -> Self {
        self.changed(self.name.clone(), self.meta.clone(), node)
    }

    /// The same peer with a new `name` and `meta` (the admin API's change).
    pub fn renamed(&self, name: String, meta: String) -> Self {
        self.changed(name, meta, self.node.clone())
    }

    fn changed(&self, name: String, meta: String, node: NodeId) -> Self {
        PeerInfo::with_identity(
            self.id.clone(),
            node,
            name,
            meta,
            self.joined_at_ms,
            self.identity.clone(),
        )
    }
}

/// What the application's backend (the admin API) or a joining peer asks
/// of a room, sent to every node holding members of it; each applies it to
/// its own members. Applying one twice changes nothing more.
#[derive(Debug, Clone)]
pub enum RoomCommand {
    /// Removes the peer (if it is this node's): it is closed with a code
    /// saying why and the others see `peer-left` with `reason`.
    Kick { peer: PeerId, reason: LeaveReason },
    /// Removes every member (`kicked`): the room is gone.
    Close,
    /// Sets a peer's `name` and/or `meta` (if it is this node's).
    Update {
        peer: PeerId,
        name: Option<String>,
        meta: Option<String>,
    },
    /// The room's `meta` (a JSON object) is now this: members get
    /// `room-updated`.
    Meta { meta: String },
    /// An encoded server `message` for every member, or for one peer.
    Message { to: Option<PeerId>, text: Text },
}

/// A change in a room's membership, as published by the node that owns the peer.
#[derive(Debug, Clone)]
pub enum PresenceEvent {
    Joined(Arc<PeerInfo>),
    Updated(Arc<PeerInfo>),
    /// The peer resumed on another node (`PeerInfo::node`); nobody is told.
    Moved(Arc<PeerInfo>),
    Left {
        peer: PeerId,
        reason: LeaveReason,
    },
}

/// A held peer handed over by the node that held it, for a resume elsewhere.
#[derive(Debug)]
pub struct Handoff {
    pub info: Arc<PeerInfo>,
    /// The relayed messages queued for it, encoded, in order.
    pub queued: Vec<Text>,
}

/// One line of `/api/rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub room: RoomId,
    pub peers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
    /// What waits to be written to the other nodes is at its byte cap
    /// (`--redis-queue-bytes`): the relay was not queued.
    #[error("the write queue to the cluster is full")]
    Backlogged,
    /// The engine cannot go on (another instance serves under this node
    /// id): the server must stop.
    #[error("{0}")]
    Fatal(String),
}

/// The cluster's answer when a new peer asks for a slot in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The slot is the peer's: the join goes ahead.
    Granted,
    /// The room is at its cap across the cluster: the join is refused.
    Full,
    /// The cluster could not be asked in time (Redis slow or away): the
    /// join goes on this node's own view of the room alone.
    Unconfirmed,
}

/// What an engine reports of itself, for `/metrics` (read at each scrape).
#[derive(Debug, Clone, Default)]
pub struct BusStats {
    /// Whether the engine is connected to what it shares the cluster
    /// through; `None` for an engine with nothing to connect to (the
    /// in-memory bus), whose other fields then mean nothing.
    pub connected: Option<bool>,
    /// See [`Transport::queued_bytes`].
    pub queued_bytes: usize,
    /// Connects after the first: each one followed a lost connection.
    pub reconnects: u64,
    /// Instances heartbeating in the cluster, this one included, as of
    /// this node's last heartbeat.
    pub nodes: usize,
    /// Operations per pipelined write.
    pub batch_sizes: crate::metrics::HistogramSnapshot,
    /// Messages from other nodes this one could not read (a newer format,
    /// or a broken payload): counted and logged, never misread.
    pub undecodable: u64,
}

/// What the engine calls if a relay it accepted could not be delivered
/// after all, so its sender hears of it (the protocol's `unavailable`).
/// It must not block: it is called from the engine's write task.
pub type Undelivered = Box<dyn FnOnce() + Send>;

/// Traffic for this node from the others, about one room.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A presence change of a peer held by another node.
    Presence(PresenceEvent),
    /// A message broadcast by a peer of another node: the encoded frame.
    Broadcast { from_node: NodeId, text: Text },
    /// A message for one of this node's peers: the encoded frame. If the
    /// peer is not here to take it (it left, moved on, or waits for a resume
    /// with a full queue), its `origin` is told through [`Transport::refuse`].
    Direct {
        to: PeerId,
        text: Text,
        origin: Option<Origin>,
    },
    /// A direct message of our peer `sender` that the receiving node could
    /// not deliver: the sender gets `unavailable`, with `reference` as `ref`.
    Refused {
        sender: PeerId,
        reference: Option<Box<RawValue>>,
    },
    /// The admin API (or a join on another node) acting on the room.
    Command(RoomCommand),
}

/// Who sent a direct message from another node (its node, its peer, the
/// `id` of its request), in the engine's own terms: the hub only hands it
/// back to [`Transport::refuse`]. Read only then, so a relay that is delivered
/// costs one copy of it and nothing else.
#[derive(Debug, Clone)]
pub struct Origin(pub Box<str>);

/// What the engine calls back into: the node (the hub). Calls never block.
pub trait InboundHandler: Send + Sync {
    /// Delivers traffic from another node.
    fn deliver(&self, room: &RoomId, msg: Inbound);
    /// The rooms this node has members in: what it must be subscribed to.
    fn watched_rooms(&self) -> Vec<RoomId>;
    /// This node's own peers, to re-assert after the engine lost its state.
    fn local_peers(&self) -> Vec<(RoomId, Arc<PeerInfo>)>;
    /// Calls `f` with the peer's record if `peer` is one of this node's own
    /// (connected, or held for a resume), while nothing can remove it: what
    /// `f` queues is ordered before the peer's own leave, if one follows.
    fn with_local(&self, room: &RoomId, peer: &PeerId, f: &mut dyn FnMut(&Arc<PeerInfo>));
    /// The room's members held by other nodes, as `(peer, node)`: what an
    /// engine that lost track of the others for a while (a Redis
    /// reconnect) compares with what the cluster now records, to send the
    /// presence events it missed.
    fn remote_members(&self, room: &RoomId) -> Vec<(PeerId, NodeId)>;
    /// Node `to` asks for a peer of ours to resume there: if `secret` is its
    /// resume secret, the peer is handed over without a word, and is from
    /// then on a member held by `to`.
    fn hand_over(&self, room: &RoomId, peer: &PeerId, secret: &str, to: &NodeId)
    -> Option<Handoff>;
}

/// The cluster engine: the two boundaries below, implemented together by
/// [`memory::MemoryBus`] (one instance) and [`redis::RedisBus`] (a
/// cluster). The hub holds it whole; the HTTP side holds only the
/// [`PresenceStore`] (for `/api/*`) and the server the engine's health.
/// The store's [`EventLog`] goes to the webhook deliverer.
pub trait Bus: Transport + PresenceStore {}

impl<T: Transport + PresenceStore> Bus for T {}

/// One boundary: traffic between nodes. Subscribing to a room's traffic,
/// relaying to one node or to a room's nodes, resume hand-overs, and the
/// engine's own health. What comes in goes to the [`InboundHandler`].
pub trait Transport: Send + Sync + 'static {
    /// Connects the engine to the node it serves. Called once, before use.
    fn attach(&self, handler: Weak<dyn InboundHandler>);

    /// Starts receiving the traffic of `room` from other nodes and returns
    /// the room's members held by other nodes, oldest first. Events that
    /// arrive while this runs are delivered too, and the handler must buffer
    /// them until the snapshot is applied. An `Err` means the cluster cannot
    /// be asked now: the room works locally and is resynced on reconnect.
    fn watch(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>>;

    /// Stops receiving the traffic of `room` (no local members left).
    fn unwatch(&self, room: &RoomId);

    /// Sends an encoded frame to a peer held by `node`. Never waits; an
    /// `Err` means it was not queued (nothing will be sent). Once queued, it
    /// is delivered, or `undelivered` is called (at most once, from the
    /// engine's own task) when the engine gives up on it: `node` could not
    /// be reached for a while. Either way it is never delivered twice.
    /// `from` and `reference` (its request's `id`) say who sent it, so the
    /// receiving node can refuse it ([`Transport::refuse`]) if the peer is not
    /// there to take it after all.
    #[allow(clippy::too_many_arguments)]
    fn send_direct(
        &self,
        node: &NodeId,
        room: &RoomId,
        to: &PeerId,
        from: &PeerId,
        reference: Option<&RawValue>,
        text: Text,
        undelivered: Undelivered,
    ) -> Result<(), BusError>;

    /// Tells the sender of a direct message from another node that it could
    /// not be delivered here ([`Inbound::Refused`] on its node). Never waits.
    fn refuse(&self, room: &RoomId, origin: &Origin) {
        let _ = (room, origin);
    }

    /// Sends an encoded frame to the room's members on other nodes. Never
    /// waits; an `Err` means it was not queued.
    fn broadcast(&self, room: &RoomId, text: Text) -> Result<(), BusError>;

    /// Sends `cmd` to the other nodes holding members of `room` (any node
    /// may send one, member or not). Never waits; an `Err` means it was not
    /// queued.
    fn command(&self, room: &RoomId, cmd: &RoomCommand) -> Result<(), BusError>;

    /// Asks `node` to hand over its peer `peer` for a resume here. `Ok(None)`:
    /// it refused (wrong secret, or the peer is gone).
    fn claim<'a>(
        &'a self,
        node: &'a NodeId,
        room: &'a RoomId,
        peer: &'a PeerId,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<Option<Handoff>, BusError>>;

    /// Waits (boundedly) until what was published has left this process:
    /// the last step of a shutdown.
    fn flush(&self) -> BoxFuture<'_, ()>;

    /// Whether other nodes can take this node's peers over (a resume
    /// elsewhere), so a draining node should wait for its held peers.
    fn is_shared(&self) -> bool {
        false
    }

    /// Bytes waiting to be written to the other nodes (relays, presence
    /// changes, hand-overs), for a gauge. Relays are refused past the
    /// engine's cap; presence changes are always kept.
    fn queued_bytes(&self) -> usize {
        0
    }

    /// The engine's state for `/metrics`. The default, for a node on its
    /// own, has nothing to connect to.
    fn stats(&self) -> BusStats {
        BusStats {
            queued_bytes: self.queued_bytes(),
            ..BusStats::default()
        }
    }

    /// Whether the engine can serve right now (for `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Resolves if the engine can never serve again; the server then stops
    /// with this error. Pending for as long as all is well.
    fn fatal(&self) -> BoxFuture<'_, BusError> {
        futures_util::FutureExt::boxed(futures_util::future::pending())
    }
}

/// The other boundary: the cluster's record of who is in which room. This
/// node's changes written (and announced) in order, room slots reserved
/// against the cap, and the rooms read back for `/api/*`.
pub trait PresenceStore: Send + Sync + 'static {
    /// Records a change of one of this node's peers and announces it to the
    /// other nodes. Never waits: events are applied (or queued) in call order,
    /// which is the order each peer's events must keep.
    fn publish(&self, room: &RoomId, event: PresenceEvent);

    /// Takes a slot in `room` for the new peer `peer`, if the room has fewer
    /// than `cap` members across the cluster. Slots are taken in the same
    /// order as this node's other changes, so the join that follows
    /// ([`PresenceStore::publish`]) takes the slot's place. A slot granted (or
    /// unconfirmed) to a join that does not complete must be given back with
    /// [`PresenceStore::unreserve`]. The default, for a node on its own, grants every
    /// slot: its own view of the room is the whole room, and the hub checks
    /// that already.
    fn reserve(&self, room: &RoomId, peer: &PeerId, cap: usize) -> BoxFuture<'_, Reservation> {
        let _ = (room, peer, cap);
        futures_util::FutureExt::boxed(futures_util::future::ready(Reservation::Granted))
    }

    /// Gives back the slot [`PresenceStore::reserve`] took for `peer`, whose join did
    /// not complete. Never waits; nobody is told, since nobody was told of
    /// the slot.
    fn unreserve(&self, room: &RoomId, peer: &PeerId) {
        let _ = (room, peer);
    }

    /// Whether a change published now is not yet readable by every node
    /// (it waits in a write queue): the hub then holds back the events of
    /// it to this node's clients until [`PresenceStore::written`], so that
    /// what a client was told, every node's reads agree with. `false` for
    /// an engine that records each change as it is published.
    fn lags_reads(&self) -> bool {
        false
    }

    /// Resolves once every change published so far is recorded where every
    /// node reads it (bounded: an engine that cannot record it soon gives up
    /// waiting).
    fn written(&self) -> BoxFuture<'static, ()> {
        futures_util::FutureExt::boxed(futures_util::future::ready(()))
    }

    /// Every room with members, across the cluster.
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BusError>>;

    /// A room's members across the cluster, oldest first (empty if none).
    fn room_peers(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>>;

    /// Records the room's `meta` (a JSON object) and sends every node of
    /// the room [`RoomCommand::Meta`], in that order. `Ok(false)`: the room
    /// has no members, and nothing was recorded. The meta goes with the
    /// room: it is forgotten when the last member leaves.
    fn set_room_meta<'a>(
        &'a self,
        room: &'a RoomId,
        meta: &'a str,
    ) -> BoxFuture<'a, Result<bool, BusError>>;

    /// The room's `meta` as recorded (`None`: never set, or the room is empty).
    fn room_meta<'a>(&'a self, room: &'a RoomId)
    -> BoxFuture<'a, Result<Option<String>, BusError>>;

    /// The room events recorded with the changes (webhooks read them).
    fn event_log(&self) -> Arc<dyn EventLog>;
}

/// An event taken from the log for delivery, until it is settled.
#[derive(Debug, Clone)]
pub struct Taken {
    pub event: Arc<RoomEvent>,
    /// Set when it came from the replay queue (an operator's replay of a
    /// dead letter) rather than the log: the engine's handle of that entry.
    pub replay: Option<String>,
}

impl DeadLetter {
    /// A dead letter from the fields of its stored form: the event's fields
    /// (as [`RoomEvent::to_fields`] writes them), its `id`, and the
    /// failure's `error`, `attempts` and `failed_at`. `None` if it holds no
    /// readable event. A count that does not read is 0: the failure's
    /// details are for people, and the letter is still worth replaying.
    pub fn from_fields(fields: &std::collections::HashMap<String, String>) -> Option<DeadLetter> {
        let id = fields.get("id")?;
        let event = RoomEvent::from_fields(id, fields).ok()?;
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok());
        Some(DeadLetter {
            event,
            error: fields.get("error").cloned().unwrap_or_default(),
            attempts: number("attempts").unwrap_or(0) as u32,
            failed_at: number("failed_at").unwrap_or(0),
        })
    }
}

/// Whose a delivery lease is ([`EventLog::lead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// The asking holder's, for the lease's time.
    Ours,
    /// Nobody's (and not taken: `take` was not set).
    Free,
    /// Another holder's.
    Other,
}

/// An event given up on: every try failed, or it could not be kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub event: RoomEvent,
    /// The last try's failure.
    pub error: String,
    pub attempts: u32,
    /// Unix ms.
    pub failed_at: u64,
}

/// The third boundary: the room events recorded with each presence change
/// (the outbox, `event.rs`), read by delivery groups (one per webhook
/// endpoint). Within a group one node at a time delivers ([`EventLog::lead`]),
/// and each event stays pending until it is settled: delivered, or
/// dead-lettered. Pending events of a node that stopped are taken over
/// ([`EventLog::claim`]).
pub trait EventLog: Send + Sync + 'static {
    /// Starts keeping events for `group`, from now on (idempotent).
    fn open_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), BusError>>;

    /// Renews the group's delivery lease for `holder` for `ttl` if it is
    /// `holder`'s, or takes it if it is free and `take` is set; says whose
    /// it is now.
    fn lead<'a>(
        &'a self,
        group: &'a str,
        holder: &'a str,
        ttl: Duration,
        take: bool,
    ) -> BoxFuture<'a, Result<Lead, BusError>>;

    /// Gives the lease up, if `holder` has it (a clean shutdown).
    fn resign<'a>(&'a self, group: &'a str, holder: &'a str) -> BoxFuture<'a, ()>;

    /// Up to `max` events for `consumer`, in the order they were recorded:
    /// replayed dead letters first, then new events, waiting up to `wait`
    /// for one.
    fn take<'a>(
        &'a self,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Taken>, BusError>>;

    /// Takes over, for `consumer`, up to `max` events pending at least
    /// `idle` with a consumer that may be gone, oldest first. Successive
    /// calls go on through what is pending, so a new holder of the lease
    /// can claim all of it by calling until nothing new comes back.
    fn claim<'a>(
        &'a self,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Vec<Taken>, BusError>>;

    /// Done with a taken event: delivered (`dead` is `None`) or dead-lettered.
    fn settle<'a>(
        &'a self,
        group: &'a str,
        taken: &'a Taken,
        dead: Option<DeadLetter>,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// The group's dead letters, oldest first.
    fn dead_letters<'a>(
        &'a self,
        group: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>>;

    /// Moves the dead letters with these event ids (all with `None`) back to
    /// delivery; returns how many.
    fn replay<'a>(
        &'a self,
        group: &'a str,
        ids: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, BusError>>;

    /// Events not yet delivered (waiting and pending), and dead letters.
    fn backlog<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(u64, u64), BusError>>;
}

#[cfg(test)]
mod tests {
    use super::DeadLetter;
    use std::collections::HashMap;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_dead_letter_reads_back_as_it_was_written() {
        let f = fields(&[
            ("id", "17-0"),
            ("event", "peer-left"),
            ("room", "r"),
            ("sid", "16-0"),
            ("seq", "3"),
            ("ts", "5"),
            ("node", "n1"),
            ("peer_id", "p1"),
            ("reason", "left"),
            ("error", "answered 500 Internal Server Error"),
            ("attempts", "2"),
            ("failed_at", "99"),
        ]);
        let d = DeadLetter::from_fields(&f).expect("a dead letter");
        assert_eq!((d.event.id.as_str(), d.event.seq), ("17-0", 3));
        assert_eq!(d.error, "answered 500 Internal Server Error");
        assert_eq!((d.attempts, d.failed_at), (2, 99));
    }

    #[test]
    fn an_entry_without_an_event_is_not_a_dead_letter() {
        let no_id = fields(&[("event", "peer-left"), ("room", "r")]);
        assert!(DeadLetter::from_fields(&no_id).is_none());
        let no_event = fields(&[("id", "1-0"), ("room", "r")]);
        assert!(DeadLetter::from_fields(&no_event).is_none());
        let odd = fields(&[
            ("id", "1-0"),
            ("event", "room-closed"),
            ("room", "r"),
            ("attempts", "x"),
        ]);
        assert_eq!(DeadLetter::from_fields(&odd).map(|d| d.attempts), Some(0));
    }
}
