//! The in-memory engine: the presence store of a one-instance cluster.
//! There are no other nodes to tell, so publishing is recording.

use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt};
use indexmap::IndexMap;
use std::sync::Arc;

use super::events::MemoryLog;
use super::{
    BusError, EventLog, Handoff, InboundHandler, PeerInfo, PresenceEvent, PresenceStore,
    RoomCommand, RoomSummary, Transport,
};
use crate::ids::{NodeId, PeerId, RoomId};
use crate::text::Text;
use std::sync::Weak;

#[derive(Default)]
pub struct MemoryBus {
    rooms: DashMap<RoomId, Record>,
    /// The room events (the one node's outbox); the node is the one node.
    events: Arc<MemoryLog>,
    node: Option<NodeId>,
}

/// A room as recorded: its members in join order, and its `meta`.
#[derive(Default)]
struct Record {
    peers: IndexMap<PeerId, Arc<PeerInfo>>,
    meta: Option<String>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine of node `node`, keeping up to `cap` undelivered events
    /// per webhook endpoint.
    pub fn with_events(node: NodeId, cap: usize) -> Self {
        MemoryBus {
            rooms: DashMap::new(),
            events: Arc::new(MemoryLog::new(cap)),
            node: Some(node),
        }
    }

    fn node(&self) -> NodeId {
        self.node.clone().unwrap_or_else(|| NodeId::new(""))
    }
}

impl Transport for MemoryBus {
    fn attach(&self, _handler: Weak<dyn InboundHandler>) {}

    /// One instance: nobody else holds members.
    fn watch(&self, _room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>> {
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }

    fn unwatch(&self, _room: &RoomId) {}

    /// Never called: with one instance every member is local.
    fn send_direct(
        &self,
        _node: &NodeId,
        _room: &RoomId,
        _to: &PeerId,
        _from: &PeerId,
        _reference: Option<&serde_json::value::RawValue>,
        _text: Text,
        _undelivered: super::Undelivered,
    ) -> Result<(), BusError> {
        Ok(())
    }

    fn broadcast(&self, _room: &RoomId, _text: Text) -> Result<(), BusError> {
        Ok(())
    }

    fn command(&self, _room: &RoomId, _cmd: &RoomCommand) -> Result<(), BusError> {
        Ok(())
    }

    fn claim<'a>(
        &'a self,
        _node: &'a NodeId,
        _room: &'a RoomId,
        _peer: &'a PeerId,
        _secret: &'a str,
    ) -> BoxFuture<'a, Result<Option<Handoff>, BusError>> {
        futures_util::future::ready(Ok(None)).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        futures_util::future::ready(()).boxed()
    }
}

impl PresenceStore for MemoryBus {
    fn publish(&self, room: &RoomId, event: PresenceEvent) {
        // The event is recorded under the room's entry, so each room's
        // events keep the order of its changes.
        let node = self.node();
        match &event {
            PresenceEvent::Joined(p) | PresenceEvent::Updated(p) | PresenceEvent::Moved(p) => {
                let mut opened = false;
                let mut r = self.rooms.entry(room.clone()).or_insert_with(|| {
                    opened = true;
                    Record::default()
                });
                r.peers.insert(p.id.clone(), p.clone());
                self.events.presence(room, &event, &node, opened, false);
            }
            PresenceEvent::Left { peer, .. } => {
                if let Some(mut r) = self.rooms.get_mut(room)
                    && r.peers.shift_remove(peer).is_some()
                {
                    let closed = r.peers.is_empty();
                    self.events.presence(room, &event, &node, false, closed);
                }
                self.rooms.remove_if(room, |_, r| r.peers.is_empty());
            }
        }
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BusError>> {
        let mut list: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|r| RoomSummary {
                room: r.key().clone(),
                peers: r.value().peers.len(),
            })
            .collect();
        list.sort_by(|a, b| a.room.cmp(&b.room));
        futures_util::future::ready(Ok(list)).boxed()
    }

    fn room_peers(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<Arc<PeerInfo>>, BusError>> {
        let peers = self
            .rooms
            .get(room)
            .map(|r| r.peers.values().cloned().collect())
            .unwrap_or_default();
        futures_util::future::ready(Ok(peers)).boxed()
    }

    fn set_room_meta<'a>(
        &'a self,
        room: &'a RoomId,
        meta: &'a str,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        let set = match self.rooms.get_mut(room) {
            Some(mut r) => {
                r.meta = Some(meta.to_owned());
                self.events.room_meta(room, meta, &self.node());
                true
            }
            None => false,
        };
        futures_util::future::ready(Ok(set)).boxed()
    }

    fn room_meta<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Option<String>, BusError>> {
        let meta = self.rooms.get(room).and_then(|r| r.meta.clone());
        futures_util::future::ready(Ok(meta)).boxed()
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        self.events.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling_protocol::reply::LeaveReason;

    fn peer(id: &str, at: u64) -> Arc<PeerInfo> {
        Arc::new(PeerInfo::new(
            PeerId::new(id),
            NodeId::new("n1"),
            id.into(),
            "{}".into(),
            at,
        ))
    }

    #[tokio::test]
    async fn records_joins_updates_and_leaves_in_order() {
        let bus = MemoryBus::new();
        let r = RoomId::new("r");
        bus.publish(&r, PresenceEvent::Joined(peer("a", 1)));
        bus.publish(&r, PresenceEvent::Joined(peer("b", 2)));
        let updated = Arc::new(peer("a", 1).with_meta(r#"{"m":1}"#.into()));
        bus.publish(&r, PresenceEvent::Updated(updated));
        let ps = bus.room_peers(&r).await.unwrap();
        assert_eq!(
            ps.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(ps[0].meta, r#"{"m":1}"#);
        assert_eq!(
            bus.rooms().await.unwrap(),
            vec![RoomSummary {
                room: r.clone(),
                peers: 2
            }]
        );
        for id in ["a", "b"] {
            bus.publish(
                &r,
                PresenceEvent::Left {
                    peer: PeerId::new(id),
                    reason: LeaveReason::Left,
                },
            );
        }
        assert!(bus.rooms().await.unwrap().is_empty());
        assert!(bus.room_peers(&r).await.unwrap().is_empty());
    }
}
