//! The linked engine: several nodes of one cluster in one process, joined
//! through a [`LinkedCluster`] in memory instead of a Redis server. It keeps
//! the promises of the [`Transport`] and [`PresenceStore`] traits the way
//! the Redis engine does (per-sender order, snapshot-then-events on
//! `watch`, hand-overs, refusals, `node-lost` when a node dies, changes kept
//! through an outage and a resync after it), so every cross-node behaviour
//! of the hub can be exercised in milliseconds, without a redis-server.
//!
//! It is for tests and embedding, not a deployment: the nodes share memory.
//!
//! How it works: the cluster is one lock over the shared record (rooms,
//! their members, slot reservations) and the nodes (who is up, which rooms
//! each watches, each one's inbox). Everything a node is sent goes into its
//! inbox, in the order it was sent, and one task per node hands it to the
//! hub; nothing calls into a hub while the cluster's lock is held (the hub
//! calls the engine while holding its rooms' locks).
//!
//! A node is lost when its task is dropped (its runtime shut down: what a
//! killed process looks like from here) or on [`LinkedCluster::kill`]: its
//! peers leave as `node-lost`. An outage ([`LinkedCluster::cut`]) cuts every
//! node off the shared record: relays are refused, presence changes are
//! kept and sent on [`LinkedCluster::restore`], after which each node gets
//! the events it missed.

use futures_util::future::{BoxFuture, FutureExt};
use indexmap::IndexMap;
use serde_json::value::RawValue;
use signaling_protocol::reply::LeaveReason;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use tokio::sync::mpsc;
use tracing::debug;

use super::events::MemoryLog;
use super::{
    BusError, BusStats, EventLog, Handoff, Inbound, InboundHandler, Origin, PeerInfo,
    PresenceEvent, PresenceStore, Reservation, RoomCommand, RoomSummary, Transport, Undelivered,
};
use crate::ids::{NodeId, PeerId, RoomId};
use crate::text::Text;

/// The medium several [`LinkedNode`]s share: what Redis is to the Redis
/// engine. Cheap to clone; every clone is the same cluster.
#[derive(Clone, Default)]
pub struct LinkedCluster {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// Who is in which room, across the cluster, oldest first.
    rooms: HashMap<RoomId, IndexMap<PeerId, Arc<PeerInfo>>>,
    /// Rooms' `meta`, for as long as they have members.
    metas: HashMap<RoomId, String>,
    /// Slots taken by joins not yet published: room, peer, its node.
    reserved: HashMap<RoomId, HashMap<PeerId, NodeId>>,
    nodes: HashMap<NodeId, Slot>,
    /// An outage: no node reaches the shared record.
    cut: bool,
    /// `watch` calls still to go unanswered ([`LinkedCluster::fail_watches`]).
    failing_watches: usize,
    /// Numbers each node's run, so that a node id taken again (a restart)
    /// is not mistaken for the run before it.
    runs: u64,
    /// The room events, as the Redis stream holds them for a Redis cluster.
    events: Arc<MemoryLog>,
}

/// One node as the cluster sees it.
struct Slot {
    run: u64,
    inbox: mpsc::UnboundedSender<Delivery>,
    handler: Weak<dyn InboundHandler>,
    watching: HashSet<RoomId>,
    /// Its presence changes made while cut off, in order.
    pending: Vec<(RoomId, PresenceEvent)>,
}

/// What a node's task hands to its hub.
enum Delivery {
    Room(RoomId, Inbound),
    /// After an outage: the rooms it watches as the cluster now records
    /// them, and the nodes in the cluster, to compare with what it knows.
    Resync {
        views: Vec<(RoomId, Vec<Arc<PeerInfo>>)>,
        live: HashSet<NodeId>,
    },
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere under the lock leaves the record as it was written
    // so far; going on with it beats poisoning every node.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LinkedCluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cluster's room events.
    pub fn events(&self) -> Arc<MemoryLog> {
        lock(&self.shared).events.clone()
    }

    /// The engine of node `id`. It joins the cluster when its hub attaches.
    pub fn node(&self, id: &str) -> Arc<LinkedNode> {
        Arc::new(LinkedNode {
            cluster: self.clone(),
            id: NodeId::new(id),
            run: OnceLock::new(),
            refused: OnceLock::new(),
        })
    }

    /// Node `id` dies: it is out of the cluster, and every peer it held
    /// leaves as `node-lost`. What it still sends is ignored.
    pub fn kill(&self, id: &str) {
        lost(&self.shared, &NodeId::new(id), None);
    }

    /// The next `n` room syncs (`watch`) anywhere get no answer, while
    /// everything else works: a cluster too slow to answer in time.
    pub fn fail_watches(&self, n: usize) {
        lock(&self.shared).failing_watches = n;
    }

    /// Cuts every node off the shared record (a Redis outage).
    pub fn cut(&self) {
        lock(&self.shared).cut = true;
    }

    /// Ends an outage: each node's changes made meanwhile are recorded and
    /// announced in order, then each node is sent what it missed.
    pub fn restore(&self) {
        let mut s = lock(&self.shared);
        s.cut = false;
        let ids: Vec<NodeId> = s.nodes.keys().cloned().collect();
        for id in &ids {
            let pending = s
                .nodes
                .get_mut(id)
                .map(|n| std::mem::take(&mut n.pending))
                .unwrap_or_default();
            for (room, event) in pending {
                s.record(id, &room, event);
            }
        }
        // Each snapshot is taken under the lock that orders every event, so
        // what a node is sent after its resync is newer than the snapshot.
        let live: HashSet<NodeId> = s.nodes.keys().cloned().collect();
        for id in &ids {
            let Some(node) = s.nodes.get(id) else {
                continue;
            };
            let views = node
                .watching
                .iter()
                .map(|r| (r.clone(), s.members(r)))
                .collect();
            let live = live.clone();
            let _ = node.inbox.send(Delivery::Resync { views, live });
        }
    }
}

/// Takes node `id` out of the cluster (if `run` is its run, or whatever
/// its run); its peers leave as `node-lost`.
fn lost(shared: &Mutex<Shared>, id: &NodeId, run: Option<u64>) {
    let mut s = lock(shared);
    let this_run = |n: &Slot| run.is_none_or(|r| r == n.run);
    if s.nodes.get(id).is_none_or(|n| !this_run(n)) {
        return;
    }
    s.nodes.remove(id);
    for members in s.reserved.values_mut() {
        members.retain(|_, node| node != id);
    }
    let mut gone = Vec::new();
    for (room, members) in &s.rooms {
        for p in members.values().filter(|p| p.node == *id) {
            gone.push((room.clone(), p.id.clone()));
        }
    }
    for (room, peer) in gone {
        let event = PresenceEvent::Left {
            peer,
            reason: LeaveReason::NodeLost,
        };
        s.record(id, &room, event);
    }
}

impl Shared {
    fn members(&self, room: &RoomId) -> Vec<Arc<PeerInfo>> {
        self.rooms
            .get(room)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies one change of `from`'s peers to the record and sends it to
    /// every other node watching the room.
    fn record(&mut self, from: &NodeId, room: &RoomId, event: PresenceEvent) {
        match &event {
            PresenceEvent::Joined(p) | PresenceEvent::Updated(p) | PresenceEvent::Moved(p) => {
                if let Some(r) = self.reserved.get_mut(room) {
                    r.remove(&p.id);
                }
                // A known peer keeps its place (a move, an update).
                let opened = !self.rooms.contains_key(room);
                self.rooms
                    .entry(room.clone())
                    .or_default()
                    .insert(p.id.clone(), p.clone());
                self.events.presence(room, &event, from, opened, false);
            }
            PresenceEvent::Left { peer, .. } => {
                if let Some(members) = self.rooms.get_mut(room)
                    && members.shift_remove(peer).is_some()
                {
                    let closed = members.is_empty();
                    if closed {
                        self.rooms.remove(room);
                        self.metas.remove(room);
                    }
                    self.events.presence(room, &event, from, false, closed);
                }
            }
        }
        if self.reserved.get(room).is_some_and(HashMap::is_empty) {
            self.reserved.remove(room);
        }
        self.to_watchers(from, room, Inbound::Presence(event));
    }

    /// Sends `msg` to every node but `from` that watches `room`; nothing
    /// during an outage (the resync after it tells them).
    fn to_watchers(&self, from: &NodeId, room: &RoomId, msg: Inbound) {
        if self.cut {
            return;
        }
        for (id, node) in &self.nodes {
            if id != from && node.watching.contains(room) {
                let _ = node.inbox.send(Delivery::Room(room.clone(), msg.clone()));
            }
        }
    }
}

/// One node's engine in a [`LinkedCluster`].
pub struct LinkedNode {
    cluster: LinkedCluster,
    id: NodeId,
    /// Its run, once attached.
    run: OnceLock<u64>,
    /// Why it could not join the cluster (its id is taken).
    refused: OnceLock<String>,
}

/// Marks its node lost when dropped: it lives in the node's delivery task,
/// which goes when the node's runtime does.
struct Lease {
    shared: Weak<Mutex<Shared>>,
    id: NodeId,
    run: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            lost(&shared, &self.id, Some(self.run));
        }
    }
}

impl LinkedNode {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.cluster.shared)
    }

    /// This node's slot, if this run of it is in the cluster.
    fn slot<'s>(&self, s: &'s mut Shared) -> Option<&'s mut Slot> {
        let run = *self.run.get()?;
        s.nodes.get_mut(&self.id).filter(|n| n.run == run)
    }

    fn is_in(&self, s: &mut Shared) -> bool {
        self.slot(s).is_some()
    }

    /// Runs `f` on this node's slot if it is in the cluster and not cut
    /// off; otherwise the error says why.
    fn reach<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> Result<T, BusError> {
        let mut s = self.shared();
        if s.cut {
            return Err(BusError::Unavailable("the cluster is cut off".into()));
        }
        if !self.is_in(&mut s) {
            return Err(BusError::Unavailable(
                "this node is not in the cluster".into(),
            ));
        }
        Ok(f(&mut s))
    }

    fn encode_origin(&self, from: &PeerId, reference: Option<&RawValue>) -> Origin {
        let reference = reference.map(RawValue::get).unwrap_or("");
        Origin(format!("{}\n{}\n{}", self.id, from, reference).into())
    }
}

/// An [`Origin`] made by `encode_origin`: node, peer, and the request's `id`.
fn decode_origin(origin: &Origin) -> Option<(NodeId, PeerId, Option<Box<RawValue>>)> {
    let mut parts = origin.0.splitn(3, '\n');
    let node = NodeId::new(parts.next()?);
    let peer = PeerId::new(parts.next()?);
    let reference = match parts.next()? {
        "" => None,
        raw => Some(RawValue::from_string(raw.to_owned()).ok()?),
    };
    Some((node, peer, reference))
}

async fn deliver_loop(
    mut inbox: mpsc::UnboundedReceiver<Delivery>,
    handler: Weak<dyn InboundHandler>,
    lease: Lease,
) {
    while let Some(d) = inbox.recv().await {
        let Some(hub) = handler.upgrade() else {
            return;
        };
        match d {
            Delivery::Room(room, msg) => hub.deliver(&room, msg),
            Delivery::Resync { views, live } => {
                for (room, recorded) in views {
                    let known = hub.remote_members(&room);
                    for msg in missed(&lease.id, known, recorded, &live) {
                        hub.deliver(&room, msg);
                    }
                }
            }
        }
    }
}

/// What a node that knew `known` (remote members and their nodes) of a
/// room missed, given what the cluster records now and which nodes are in
/// it: a member gone without a word left `disconnected` if its node lives
/// on, `node-lost` if its node died meanwhile.
fn missed(
    own: &NodeId,
    known: Vec<(PeerId, NodeId)>,
    recorded: Vec<Arc<PeerInfo>>,
    live: &HashSet<NodeId>,
) -> Vec<Inbound> {
    let here: HashSet<&PeerId> = recorded.iter().map(|p| &p.id).collect();
    let mut out: Vec<Inbound> = known
        .into_iter()
        .filter(|(peer, _)| !here.contains(peer))
        .map(|(peer, node)| {
            let reason = if live.contains(&node) {
                LeaveReason::Disconnected
            } else {
                LeaveReason::NodeLost
            };
            Inbound::Presence(PresenceEvent::Left { peer, reason })
        })
        .collect();
    // A member it knows is sent as it is now (a no-op if unchanged).
    out.extend(
        recorded
            .into_iter()
            .filter(|p| p.node != *own)
            .map(|p| Inbound::Presence(PresenceEvent::Joined(p))),
    );
    out
}

impl Transport for LinkedNode {
    /// Joins the cluster, unless another running node has this id: then
    /// this one never serves ([`Transport::fatal`]), and the other is left
    /// alone.
    fn attach(&self, handler: Weak<dyn InboundHandler>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.shared();
        if s.nodes.contains_key(&self.id) {
            let why = format!("node id {} is in use by another running instance", self.id);
            let _ = self.refused.set(why);
            return;
        }
        s.runs += 1;
        let run = s.runs;
        let _ = self.run.set(run);
        s.nodes.insert(
            self.id.clone(),
            Slot {
                run,
                inbox: tx,
                handler: handler.clone(),
                watching: HashSet::new(),
                pending: Vec::new(),
            },
        );
        drop(s);
        let lease = Lease {
            shared: Arc::downgrade(&self.cluster.shared),
            id: self.id.clone(),
            run,
        };
        tokio::spawn(deliver_loop(rx, handler, lease));
    }

    fn watch(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>> {
        let mut s = self.shared();
        // Watched even while cut off, so the resync after covers it.
        if let Some(node) = self.slot(&mut s) {
            node.watching.insert(room.clone());
        }
        let result = if s.cut {
            Err(BusError::Unavailable("the cluster is cut off".into()))
        } else if s.failing_watches > 0 {
            s.failing_watches -= 1;
            Err(BusError::Unavailable(
                "the cluster did not answer in time".into(),
            ))
        } else {
            Ok(s.members(room))
        };
        futures_util::future::ready(result).boxed()
    }

    fn unwatch(&self, room: &RoomId) {
        if let Some(node) = self.slot(&mut self.shared()) {
            node.watching.remove(room);
        }
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
        let origin = self.encode_origin(from, reference);
        let sent = self.reach(|s| {
            let target = s.nodes.get(node)?;
            let msg = Inbound::Direct {
                to: to.clone(),
                text,
                origin: Some(origin),
            };
            target.inbox.send(Delivery::Room(room.clone(), msg)).ok()
        })?;
        if sent.is_none() {
            // Its node is gone: the sender hears of it once the hub is done
            // with the room (the callback takes the room's lock).
            debug!(%node, %to, "relay to a node that is not in the cluster");
            tokio::spawn(async move { undelivered() });
        }
        Ok(())
    }

    fn refuse(&self, room: &RoomId, origin: &Origin) {
        let Some((node, sender, reference)) = decode_origin(origin) else {
            return;
        };
        let _ = self.reach(|s| {
            if let Some(target) = s.nodes.get(&node) {
                let msg = Inbound::Refused { sender, reference };
                let _ = target.inbox.send(Delivery::Room(room.clone(), msg));
            }
        });
    }

    fn broadcast(&self, room: &RoomId, text: Text) -> Result<(), BusError> {
        self.reach(|s| {
            let msg = Inbound::Broadcast {
                from_node: self.id.clone(),
                text,
            };
            s.to_watchers(&self.id, room, msg);
        })
    }

    fn command(&self, room: &RoomId, cmd: &RoomCommand) -> Result<(), BusError> {
        self.reach(|s| s.to_watchers(&self.id, room, Inbound::Command(cmd.clone())))
    }

    fn claim<'a>(
        &'a self,
        node: &'a NodeId,
        room: &'a RoomId,
        peer: &'a PeerId,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<Option<Handoff>, BusError>> {
        let holder = self.reach(|s| s.nodes.get(node).map(|n| n.handler.clone()));
        let result = holder.map(|h| {
            // Called with no lock held: the holder's hub takes its room's.
            h.and_then(|h| h.upgrade())
                .and_then(|h| h.hand_over(room, peer, secret, &self.id))
        });
        futures_util::future::ready(result).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        futures_util::future::ready(()).boxed()
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn stats(&self) -> BusStats {
        let mut s = self.shared();
        BusStats {
            connected: Some(!s.cut && self.is_in(&mut s)),
            nodes: s.nodes.len(),
            ..BusStats::default()
        }
    }

    fn is_ready(&self) -> bool {
        let mut s = self.shared();
        !s.cut && self.is_in(&mut s)
    }

    fn fatal(&self) -> BoxFuture<'_, BusError> {
        match self.refused.get() {
            Some(why) => futures_util::future::ready(BusError::Fatal(why.clone())).boxed(),
            None => futures_util::future::pending().boxed(),
        }
    }
}

impl PresenceStore for LinkedNode {
    fn publish(&self, room: &RoomId, event: PresenceEvent) {
        let mut s = self.shared();
        let cut = s.cut;
        let Some(node) = self.slot(&mut s) else {
            return;
        };
        if cut {
            node.pending.push((room.clone(), event));
        } else {
            s.record(&self.id, room, event);
        }
    }

    fn reserve(&self, room: &RoomId, peer: &PeerId, cap: usize) -> BoxFuture<'_, Reservation> {
        let answer = self
            .reach(|s| {
                let members = s.rooms.get(room).map_or(0, IndexMap::len);
                let reserved = s.reserved.entry(room.clone()).or_default();
                if members + reserved.len() >= cap {
                    Reservation::Full
                } else {
                    reserved.insert(peer.clone(), self.id.clone());
                    Reservation::Granted
                }
            })
            .unwrap_or(Reservation::Unconfirmed);
        futures_util::future::ready(answer).boxed()
    }

    fn unreserve(&self, room: &RoomId, peer: &PeerId) {
        let mut s = self.shared();
        if let Some(r) = s.reserved.get_mut(room) {
            r.remove(peer);
            if r.is_empty() {
                s.reserved.remove(room);
            }
        }
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BusError>> {
        let result = self.reach(|s| {
            let mut list: Vec<RoomSummary> = s
                .rooms
                .iter()
                .map(|(room, m)| RoomSummary {
                    room: room.clone(),
                    peers: m.len(),
                })
                .collect();
            list.sort_by(|a, b| a.room.cmp(&b.room));
            list
        });
        futures_util::future::ready(result).boxed()
    }

    fn room_peers(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>> {
        let result = self.reach(|s| s.members(room));
        futures_util::future::ready(result).boxed()
    }

    fn set_room_meta<'a>(
        &'a self,
        room: &'a RoomId,
        meta: &'a str,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        let result = self.reach(|s| {
            if !s.rooms.contains_key(room) {
                return false;
            }
            s.metas.insert(room.clone(), meta.to_owned());
            s.events.room_meta(room, meta, &self.id);
            let cmd = RoomCommand::Meta {
                meta: meta.to_owned(),
            };
            s.to_watchers(&self.id, room, Inbound::Command(cmd));
            true
        });
        futures_util::future::ready(result).boxed()
    }

    fn room_meta<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Option<String>, BusError>> {
        let result = self.reach(|s| s.metas.get(room).cloned());
        futures_util::future::ready(result).boxed()
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        self.cluster.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, node: &str) -> Arc<PeerInfo> {
        Arc::new(PeerInfo::new(
            PeerId::new(id),
            NodeId::new(node),
            id.into(),
            "{}".into(),
            1,
        ))
    }

    /// Joins each node to its cluster without a hub: these tests read the
    /// shared record, and no delivery needs a handler alive.
    fn attach(nodes: &[&Arc<LinkedNode>]) {
        for n in nodes {
            n.attach(Weak::<crate::hub::Hub>::new());
        }
    }

    #[test]
    fn an_origin_carries_node_peer_and_ref_whatever_the_ref_holds() {
        let c = LinkedCluster::new();
        let n = c.node("n1");
        for reference in [
            None,
            Some("7"),
            Some("\"a b\\nc\""),
            Some("{\n \"x\": 1\n}"),
        ] {
            let raw = reference.map(|r| RawValue::from_string(r.into()).expect("json"));
            let origin = n.encode_origin(&PeerId::new("p1"), raw.as_deref());
            let (node, peer, back) = decode_origin(&origin).expect("decodes");
            assert_eq!((node.as_str(), peer.as_str()), ("n1", "p1"));
            assert_eq!(back.as_deref().map(RawValue::get), reference);
        }
        assert!(decode_origin(&Origin("only-a-node".into())).is_none());
    }

    #[test]
    fn what_a_node_missed_names_leaves_by_whether_their_node_lives() {
        let own = NodeId::new("me");
        let live: HashSet<NodeId> = [NodeId::new("me"), NodeId::new("alive")].into();
        let known = vec![
            (PeerId::new("stays"), NodeId::new("alive")),
            (PeerId::new("went"), NodeId::new("alive")),
            (PeerId::new("lost"), NodeId::new("dead")),
        ];
        let recorded = vec![
            peer("stays", "alive"),
            peer("new", "alive"),
            peer("mine", "me"),
        ];
        let out = missed(&own, known, recorded, &live);
        let seen: Vec<String> = out
            .iter()
            .map(|m| match m {
                Inbound::Presence(PresenceEvent::Left { peer, reason }) => {
                    format!("left {peer} {}", reason.as_str())
                }
                Inbound::Presence(PresenceEvent::Joined(p)) => format!("joined {}", p.id),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "left went disconnected",
                "left lost node-lost",
                "joined stays",
                "joined new"
            ]
        );
    }

    #[tokio::test]
    async fn a_node_killed_and_started_again_is_a_new_run_the_old_one_cannot_speak_for() {
        let c = LinkedCluster::new();
        let (old, watcher) = (c.node("n1"), c.node("n2"));
        attach(&[&old, &watcher]);
        let r = RoomId::new("r");
        old.publish(&r, PresenceEvent::Joined(peer("a", "n1")));
        assert_eq!(watcher.room_peers(&r).await.expect("reachable").len(), 1);
        c.kill("n1");
        assert!(watcher.room_peers(&r).await.expect("reachable").is_empty());
        let new = c.node("n1");
        attach(&[&new]);
        assert!(new.is_ready() && !old.is_ready());
        old.publish(&r, PresenceEvent::Joined(peer("ghost", "n1")));
        new.publish(&r, PresenceEvent::Joined(peer("b", "n1")));
        let ids: Vec<String> = watcher
            .room_peers(&r)
            .await
            .expect("reachable")
            .iter()
            .map(|p| p.id.to_string())
            .collect();
        assert_eq!(ids, ["b"], "the old run's publish is ignored");
    }

    #[tokio::test]
    async fn a_second_node_under_a_running_id_is_refused_and_changes_nothing() {
        let c = LinkedCluster::new();
        let (first, second) = (c.node("n1"), c.node("n1"));
        attach(&[&first, &second]);
        assert!(first.is_ready());
        assert!(!second.is_ready());
        let BusError::Fatal(why) = second.fatal().await else {
            panic!("not fatal")
        };
        assert!(why.contains("in use"), "{why}");
        let r = RoomId::new("r");
        second.publish(&r, PresenceEvent::Joined(peer("x", "n1")));
        assert!(first.room_peers(&r).await.expect("reachable").is_empty());
    }

    #[tokio::test]
    async fn the_room_cap_counts_slots_reserved_across_nodes() {
        let c = LinkedCluster::new();
        let (a, b) = (c.node("a"), c.node("b"));
        attach(&[&a, &b]);
        let r = RoomId::new("r");
        assert_eq!(
            a.reserve(&r, &PeerId::new("p1"), 2).await,
            Reservation::Granted
        );
        assert_eq!(
            b.reserve(&r, &PeerId::new("p2"), 2).await,
            Reservation::Granted
        );
        assert_eq!(
            b.reserve(&r, &PeerId::new("p3"), 2).await,
            Reservation::Full
        );
        a.unreserve(&r, &PeerId::new("p1"));
        assert_eq!(
            b.reserve(&r, &PeerId::new("p3"), 2).await,
            Reservation::Granted
        );
        c.cut();
        assert_eq!(
            a.reserve(&r, &PeerId::new("p4"), 2).await,
            Reservation::Unconfirmed
        );
    }
}
