//! The Redis layout: key and channel names. What crosses the channels is
//! `wire.rs`'s. Documented for operators and other services in
//! `docs/cluster.md`; keep the two in step.

use crate::ids::{NodeId, RoomId};

/// Key and channel names under one prefix (`--redis-prefix`, default `sig`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// HASH peer_id → `<node>\n<peer object JSON>`: a room's members.
    pub fn room(&self, room: &RoomId) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    /// `room` of room R is this + R (for the scripts).
    pub fn room_prefix(&self) -> String {
        format!("{}:room:", self.prefix)
    }

    /// STRING: a room's `meta` (a JSON object), set through the admin API;
    /// deleted with the room's last member.
    pub fn room_meta(&self, room: &RoomId) -> String {
        format!("{}:roommeta:{room}", self.prefix)
    }

    /// HASH `seq` (the last event's number), `sid` (the stream id of the
    /// room's `room-opened`): the room's event numbering, deleted with the
    /// room (`scripts.rs`'s `emit`).
    pub fn room_seq(&self, room: &RoomId) -> String {
        format!("{}:roomseq:{room}", self.prefix)
    }

    /// SET of the rooms that have members.
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// HASH peer_id → room: the peers a node holds (what to announce if it dies).
    pub fn node_peers(&self, node: &NodeId) -> String {
        format!("{}:node:{node}:peers", self.prefix)
    }

    /// `node_peers` of node N is this + N + `:peers` (for the scripts).
    pub fn node_peers_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    /// STRING: the token of the one running instance that is this node
    /// (its lease, renewed on every heartbeat, see `liveness.rs`).
    pub fn node_lease(&self, node: &NodeId) -> String {
        format!("{}:node:{node}:lease", self.prefix)
    }

    /// ZSET node → last heartbeat (unix ms, Redis's clock).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Claim taken by the one survivor that announces a dead node's peers.
    pub fn reap_claim(&self, node: &NodeId) -> String {
        format!("{}:reap:{node}", self.prefix)
    }

    /// STRING: the node delivering webhook endpoint `group`'s events now
    /// (`events.rs`), with a TTL it renews.
    pub fn webhook_lease(&self, group: &str) -> String {
        format!("{}:webhook:{group}:lease", self.prefix)
    }

    /// STREAM: the endpoint's dead letters (the event's fields, its `id`,
    /// `error`, `attempts`, `failed_at`).
    pub fn webhook_dead(&self, group: &str) -> String {
        format!("{}:webhook:{group}:dead", self.prefix)
    }

    /// STREAM: dead letters replayed, waiting to be delivered again.
    pub fn webhook_replay(&self, group: &str) -> String {
        format!("{}:webhook:{group}:replay", self.prefix)
    }

    /// STREAM of presence events for other services.
    pub fn stream(&self) -> String {
        format!("{}:presence", self.prefix)
    }

    /// The name (`CLIENT SETNAME`) of a connection of `node`'s: `queue`
    /// (its writes) or `subscriber`.
    pub fn client_name(&self, node: &NodeId, role: &str) -> String {
        format!("{}:{node}:{role}", self.prefix)
    }

    /// Channel of a room's presence events and broadcasts.
    pub fn room_channel(&self, room: &RoomId) -> String {
        format!("{}:ch:room:{room}", self.prefix)
    }

    /// Channel of the messages directed to one node's peers.
    pub fn node_channel(&self, node: &NodeId) -> String {
        format!("{}:ch:node:{node}", self.prefix)
    }

    /// The room a room channel belongs to.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":ch:room:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_back_to_rooms() {
        let k = Keys::new("sig");
        let ch = k.room_channel(&RoomId::new("a.b-c"));
        assert_eq!(k.room_of_channel(&ch), Some("a.b-c"));
        assert_eq!(k.room_of_channel("other:ch:room:x"), None);
    }
}
