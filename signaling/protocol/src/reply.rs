//! Encoding server → client messages.
//!
//! Messages are written straight into a `String`: peer objects are encoded
//! once when a peer joins or updates and then pasted into every `joined` and
//! `peer-*` message, and relayed payloads are pasted as the raw JSON they came
//! in as. Field order is fixed: `type`, then `ref` when there is one.

use serde_json::value::RawValue;
use std::fmt::Write;

use crate::{ErrorCode, RelayKind};

/// Why a peer left, as `peer-left.reason` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its connection closed cleanly (a close frame from the client).
    Disconnected,
    /// It dropped and did not resume within the grace.
    Timeout,
    /// Its server instance died.
    NodeLost,
    /// The application's backend removed it (admin API), or closed its room.
    Kicked,
    /// A newer connection with the same verified identity took its place
    /// (the room's same-identity policy is `replace`).
    Replaced,
}

impl LeaveReason {
    pub const ALL: [LeaveReason; 6] = [
        LeaveReason::Left,
        LeaveReason::Disconnected,
        LeaveReason::Timeout,
        LeaveReason::NodeLost,
        LeaveReason::Kicked,
        LeaveReason::Replaced,
    ];

    pub fn parse(s: &str) -> Option<LeaveReason> {
        LeaveReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Timeout => "timeout",
            LeaveReason::NodeLost => "node-lost",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Replaced => "replaced",
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn open(ty: &str, reference: Option<&RawValue>, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity + 32);
    out.push_str("{\"type\":\"");
    out.push_str(ty);
    out.push('"');
    if let Some(r) = reference {
        out.push_str(",\"ref\":");
        out.push_str(r.get());
    }
    out
}

/// A peer object: `{"peer_id","name","meta","joined_at"}`, and `identity`
/// when its token gave one. `meta` is raw JSON (an object).
pub fn peer_object(
    peer_id: &str,
    name: &str,
    meta: &str,
    joined_at_ms: u64,
    identity: Option<&str>,
) -> String {
    let extra = identity.map_or(0, |i| i.len() + 16);
    let mut out = String::with_capacity(peer_id.len() + name.len() + meta.len() + 64 + extra);
    out.push_str("{\"peer_id\":");
    push_str(&mut out, peer_id);
    out.push_str(",\"name\":");
    push_str(&mut out, name);
    out.push_str(",\"meta\":");
    out.push_str(meta);
    let _ = write!(out, ",\"joined_at\":{joined_at_ms}");
    if let Some(identity) = identity {
        out.push_str(",\"identity\":");
        push_str(&mut out, identity);
    }
    out.push('}');
    out
}

/// The reply to `join`. `peers` are encoded peer objects, oldest first;
/// `ice_servers` is a JSON array; `room_meta` a JSON object.
pub fn joined<'p>(
    reference: Option<&RawValue>,
    room: &str,
    peer_id: &str,
    peers: impl IntoIterator<Item = &'p str>,
    ice_servers: &str,
    resume: &str,
    room_meta: &str,
) -> String {
    let mut out = open(
        "joined",
        reference,
        256 + ice_servers.len() + room_meta.len(),
    );
    out.push_str(",\"room\":");
    push_str(&mut out, room);
    out.push_str(",\"peer_id\":");
    push_str(&mut out, peer_id);
    out.push_str(",\"peers\":[");
    for (i, p) in peers.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push_str("],\"ice_servers\":");
    out.push_str(ice_servers);
    out.push_str(",\"resume\":");
    push_str(&mut out, resume);
    let _ = write!(out, ",\"protocol\":{}", crate::PROTOCOL_VERSION);
    out.push_str(",\"room_meta\":");
    out.push_str(room_meta);
    out.push('}');
    out
}

/// `room-updated`: the room's `meta` (a JSON object) was set.
pub fn room_updated(room: &str, meta: &str) -> String {
    let mut out = open("room-updated", None, room.len() + meta.len() + 24);
    out.push_str(",\"room\":");
    push_str(&mut out, room);
    out.push_str(",\"meta\":");
    out.push_str(meta);
    out.push('}');
    out
}

/// `updated`: the server changed the receiver's own peer object (its
/// `name` or `meta`, through the admin API).
pub fn updated(peer: &str) -> String {
    with_peer("updated", peer)
}

/// What a server message says it is from: no peer id can be this.
pub const SERVER_SENDER: &str = "server";

/// `peer-joined` about an encoded peer object.
pub fn peer_joined(peer: &str) -> String {
    with_peer("peer-joined", peer)
}

/// `peer-updated` about an encoded peer object.
pub fn peer_updated(peer: &str) -> String {
    with_peer("peer-updated", peer)
}

fn with_peer(ty: &str, peer: &str) -> String {
    let mut out = open(ty, None, peer.len() + 12);
    out.push_str(",\"peer\":");
    out.push_str(peer);
    out.push('}');
    out
}

pub fn peer_left(peer_id: &str, reason: LeaveReason) -> String {
    let mut out = open("peer-left", None, peer_id.len() + 40);
    out.push_str(",\"peer_id\":");
    push_str(&mut out, peer_id);
    out.push_str(",\"reason\":\"");
    out.push_str(reason.as_str());
    out.push_str("\"}");
    out
}

/// A relayed `offer`/`answer`/`candidate`/`message`, with `from` and the payload as sent.
pub fn relayed(kind: RelayKind, from: &str, payload: &str) -> String {
    let mut out = open(kind.type_name(), None, from.len() + payload.len() + 24);
    out.push_str(",\"from\":");
    push_str(&mut out, from);
    out.push_str(",\"");
    out.push_str(kind.payload_field());
    out.push_str("\":");
    out.push_str(payload);
    out.push('}');
    out
}

pub fn left(reference: Option<&RawValue>, room: &str) -> String {
    let mut out = open("left", reference, room.len() + 12);
    out.push_str(",\"room\":");
    push_str(&mut out, room);
    out.push('}');
    out
}

pub fn pong(reference: Option<&RawValue>) -> String {
    let mut out = open("pong", reference, 0);
    out.push('}');
    out
}

pub fn goaway(reason: &str, retry_after_ms: u64) -> String {
    let mut out = open("goaway", None, reason.len() + 40);
    out.push_str(",\"reason\":");
    push_str(&mut out, reason);
    let _ = write!(out, ",\"retry_after_ms\":{retry_after_ms}}}");
    out
}

pub fn error(reference: Option<&RawValue>, code: ErrorCode, message: &str) -> String {
    let mut out = open("error", reference, message.len() + 40);
    out.push_str(",\"code\":\"");
    out.push_str(code.as_str());
    out.push_str("\",\"message\":");
    push_str(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn strings_round_trip() {
        for s in [
            "",
            "plain",
            "q\"b\\s",
            "ctl\u{0}\u{1f}\n\r\t",
            "uni é中😀",
            "\u{7f}",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(parse(&out), json!(s), "{out}");
        }
    }

    /// Asserts docs/protocol.md §3.1, §3.2, §5.1, §5.2, §5.3, §5.4, §5.5, §5.6, §5.7, §5.8, §5.9.
    #[test]
    fn messages_have_the_documented_shape() {
        let id = RawValue::from_string("\"r-1\"".into()).unwrap();
        let peer = peer_object("p1", "al\"ice", r#"{"m":true}"#, 1_700_000_000_000, None);
        assert_eq!(
            parse(&joined(
                Some(&id),
                "room",
                "p2",
                [peer.as_str()],
                "[]",
                "tok",
                r#"{"topic":"t"}"#
            )),
            json!({"type":"joined","ref":"r-1","room":"room","peer_id":"p2",
                   "peers":[{"peer_id":"p1","name":"al\"ice","meta":{"m":true},"joined_at":1_700_000_000_000u64}],
                   "ice_servers":[],"resume":"tok","protocol":1,"room_meta":{"topic":"t"}})
        );
        assert_eq!(
            parse(&peer_object("p1", "a", "{}", 1, Some("u\"1"))),
            json!({"peer_id":"p1","name":"a","meta":{},"joined_at":1,"identity":"u\"1"})
        );
        assert_eq!(
            parse(&room_updated("r", r#"{"a":1}"#)),
            json!({"type":"room-updated","room":"r","meta":{"a":1}})
        );
        assert_eq!(parse(&updated(&peer))["type"], json!("updated"));
        assert_eq!(
            parse(&peer_left("p1", LeaveReason::Kicked))["reason"],
            json!("kicked")
        );
        assert_eq!(
            parse(&peer_left("p1", LeaveReason::NodeLost)),
            json!({"type":"peer-left","peer_id":"p1","reason":"node-lost"})
        );
        assert_eq!(
            parse(&relayed(RelayKind::Candidate, "p1", "null")),
            json!({"type":"candidate","from":"p1","candidate":null})
        );
        assert_eq!(
            parse(&error(None, ErrorCode::RoomFull, "full")),
            json!({"type":"error","code":"room_full","message":"full"})
        );
        assert_eq!(parse(&pong(Some(&id))), json!({"type":"pong","ref":"r-1"}));
        assert_eq!(
            parse(&goaway("shutdown", 500)),
            json!({"type":"goaway","reason":"shutdown","retry_after_ms":500})
        );
        assert_eq!(parse(&left(None, "r")), json!({"type":"left","room":"r"}));
        assert_eq!(
            parse(&peer_updated(&peer))["peer"]["name"],
            json!("al\"ice")
        );
        assert_eq!(parse(&peer_joined(&peer))["type"], json!("peer-joined"));
    }
}
