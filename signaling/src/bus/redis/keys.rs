//! The Redis layout, and the encoding of what crosses it. Documented for
//! operators and other services in `docs/cluster.md`; keep the two in step.

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

/// Channel payloads: a one-letter kind and the sending node on the first
/// line, the body after it. Relayed frames travel as the exact bytes the
/// recipients get, so no node re-encodes them.
///
/// | kind | channel | body |
/// | --- | --- | --- |
/// | `J` joined, `U` updated | room | the peer object |
/// | `L` left | room | `<peer_id> <reason>` |
/// | `B` broadcast | room | the encoded `message` frame |
/// | `D` direct | node | `<room> <to peer_id>\n` + the encoded frame |
pub mod payload {
    pub fn encode(kind: char, node: &str, body: &[&str]) -> Vec<u8> {
        let len = 4 + node.len() + body.iter().map(|b| b.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.push(kind as u8);
        out.push(b' ');
        out.extend_from_slice(node.as_bytes());
        out.push(b'\n');
        for b in body {
            out.extend_from_slice(b.as_bytes());
        }
        out
    }

    /// `(kind, node, body)`.
    pub fn decode(bytes: &[u8]) -> Option<(u8, &str, &str)> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once('\n')?;
        let (kind, node) = head.split_once(' ')?;
        match kind.as_bytes() {
            [k] => Some((*k, node, body)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let p = payload::encode('D', "n1", &["room-1 peer\n", "{\"type\":\"offer\"}"]);
        assert_eq!(
            payload::decode(&p),
            Some((b'D', "n1", "room-1 peer\n{\"type\":\"offer\"}"))
        );
        assert_eq!(payload::decode(b"garbage"), None);
    }

    #[test]
    fn channels_map_back_to_rooms() {
        let k = Keys::new("sig");
        let ch = k.room_channel(&RoomId::new("a.b-c"));
        assert_eq!(k.room_of_channel(&ch), Some("a.b-c"));
        assert_eq!(k.room_of_channel("other:ch:room:x"), None);
    }
}
