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
/// | `R` refused | node | `<room> <from peer_id>[ <ref>]`: a direct message its node could not deliver |
///
/// A direct message's first line goes on after the node: its stamp (see
/// `sequence.rs`), its sender's peer id and the `id` of the sender's
/// request, if it had one (JSON, on one line: a string or a number). A node
/// that reads only the kind and the body (an older one) still delivers it.
pub mod payload {
    use super::super::sequence::STAMP_LEN;

    /// A direct message, with room left for its stamp; returns the payload
    /// and where the stamp goes.
    pub fn encode_direct(
        node: &str,
        from: &str,
        reference: Option<&str>,
        room: &str,
        to: &str,
        frame: &str,
    ) -> (Vec<u8>, usize) {
        let r = reference.map_or(0, |r| r.len() + 1);
        let len = 8 + node.len() + STAMP_LEN + from.len() + r + room.len() + to.len() + frame.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(b"D ");
        out.extend_from_slice(node.as_bytes());
        out.push(b' ');
        let at = out.len();
        out.resize(at + STAMP_LEN, b'0');
        out.push(b' ');
        out.extend_from_slice(from.as_bytes());
        if let Some(r) = reference {
            out.push(b' ');
            out.extend_from_slice(r.as_bytes());
        }
        out.push(b'\n');
        for part in [room, " ", to, "\n", frame] {
            out.extend_from_slice(part.as_bytes());
        }
        (out, at)
    }

    /// What a direct message's first line says after the kind.
    #[derive(Debug, PartialEq, Eq)]
    pub struct DirectHead<'a> {
        pub node: &'a str,
        /// The stamp, the sender's peer id and its request's `id`: absent
        /// when an older node sent it.
        pub sender: Option<Sender<'a>>,
    }

    #[derive(Debug, PartialEq, Eq)]
    pub struct Sender<'a> {
        pub stamp: &'a str,
        pub peer: &'a str,
        pub reference: Option<&'a str>,
    }

    pub fn direct_head(head: &str) -> DirectHead<'_> {
        let mut parts = head.splitn(4, ' ');
        let node = parts.next().unwrap_or_default();
        let sender = match (parts.next(), parts.next()) {
            (Some(stamp), Some(peer)) => Some(Sender {
                stamp,
                peer,
                reference: parts.next(),
            }),
            _ => None,
        };
        DirectHead { node, sender }
    }

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
    use super::super::sequence::STAMP_LEN;
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
    fn direct_messages_carry_a_stamp_a_sender_and_a_ref() {
        let (p, at) = payload::encode_direct("n1", "p1", Some("\"o 7\""), "r", "p2", "{}");
        assert_eq!(&p[at..at + STAMP_LEN], "0".repeat(STAMP_LEN).as_bytes());
        let (kind, head, body) = payload::decode(&p).expect("decodes");
        assert_eq!((kind, body), (b'D', "r p2\n{}"));
        let stamp = "0".repeat(STAMP_LEN);
        assert_eq!(
            payload::direct_head(head),
            payload::DirectHead {
                node: "n1",
                sender: Some(payload::Sender {
                    stamp: &stamp,
                    peer: "p1",
                    reference: Some("\"o 7\""),
                }),
            }
        );
        let (p, _) = payload::encode_direct("n1", "p1", None, "r", "p2", "{}");
        let (_, head, _) = payload::decode(&p).expect("decodes");
        let sender = payload::direct_head(head).sender.expect("a sender");
        assert_eq!(sender.reference, None);
        assert_eq!(payload::direct_head("n1").sender, None, "an older node's");
    }

    #[test]
    fn channels_map_back_to_rooms() {
        let k = Keys::new("sig");
        let ch = k.room_channel(&RoomId::new("a.b-c"));
        assert_eq!(k.room_of_channel(&ch), Some("a.b-c"));
        assert_eq!(k.room_of_channel("other:ch:room:x"), None);
    }
}
