//! Owned, typed messages for clients of the protocol (the Rust client
//! crate, test peers): what a client sends, and what the server sends back.
//! The server itself uses the zero-copy [`request`](crate::request) and
//! [`reply`](crate::reply) modules; the tests of this module hold the two
//! sides to the same JSON shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A peer as the server describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub meta: Value,
    #[serde(default)]
    pub joined_at: u64,
    /// The verified identity (the token's `sub`) when auth is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// An ICE candidate as browsers give it (`RTCIceCandidateInit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    Offer {
        to: String,
        sdp: String,
    },
    Answer {
        to: String,
        sdp: String,
    },
    Candidate {
        to: String,
        /// `None` is the end of candidates.
        candidate: Option<IceCandidate>,
    },
    Message {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        data: Value,
    },
    Update {
        meta: Value,
    },
    Leave,
    Ping,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    Joined {
        room: String,
        peer_id: String,
        peers: Vec<Peer>,
        #[serde(default)]
        ice_servers: Vec<Value>,
        resume: String,
        protocol: u32,
        /// The room's `meta`, as the application's backend set it.
        #[serde(default)]
        room_meta: Value,
    },
    /// The server changed this client's own peer object (admin API).
    Updated {
        peer: Peer,
    },
    /// The room's `meta` was set (admin API).
    RoomUpdated {
        room: String,
        meta: Value,
    },
    PeerJoined {
        peer: Peer,
    },
    PeerUpdated {
        peer: Peer,
    },
    PeerLeft {
        peer_id: String,
        reason: String,
    },
    Offer {
        from: String,
        sdp: String,
    },
    Answer {
        from: String,
        sdp: String,
    },
    Candidate {
        from: String,
        candidate: Option<IceCandidate>,
    },
    Message {
        from: String,
        data: Value,
    },
    Left {
        room: String,
    },
    Pong,
    Goaway {
        reason: String,
        retry_after_ms: u64,
    },
    Error {
        code: String,
        message: String,
    },
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every field is plain data.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerMessage {
    pub fn from_json(text: &str) -> Result<ServerMessage, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{self, LeaveReason};
    use crate::{ErrorCode, RelayKind, Request, decode};
    use serde_json::json;

    #[test]
    fn what_clients_send_the_server_decodes() {
        let msgs = [
            ClientMessage::Join {
                room: "r".into(),
                name: Some("n".into()),
                meta: Some(json!({"a":1})),
                token: None,
                resume: Some("t".into()),
            },
            ClientMessage::Offer {
                to: "p".into(),
                sdp: "v=0\r\n".into(),
            },
            ClientMessage::Candidate {
                to: "p".into(),
                candidate: None,
            },
            ClientMessage::Candidate {
                to: "p".into(),
                candidate: Some(IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                }),
            },
            ClientMessage::Message {
                to: None,
                data: json!([1]),
            },
            ClientMessage::Update { meta: json!({}) },
            ClientMessage::Leave,
            ClientMessage::Ping,
        ];
        for m in msgs {
            let text = m.to_json();
            let env = decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            if let (
                ClientMessage::Candidate {
                    candidate: Some(_), ..
                },
                Request::Relay { payload, .. },
            ) = (&m, &env.request)
            {
                assert!(
                    payload.get().contains("\"sdpMLineIndex\":0"),
                    "{}",
                    payload.get()
                );
            }
        }
    }

    #[test]
    fn what_the_server_sends_clients_parse() {
        let peer = reply::peer_object("p1", "al", r#"{"m":1}"#, 5, Some("user-1"));
        let cases = [
            reply::joined(None, "r", "p2", [peer.as_str()], "[]", "tok", "{}"),
            reply::peer_joined(&peer),
            reply::updated(&peer),
            reply::room_updated("r", r#"{"topic":"x"}"#),
            reply::peer_left("p1", LeaveReason::Kicked),
            reply::relayed(RelayKind::Message, reply::SERVER_SENDER, "{}"),
            reply::peer_updated(&peer),
            reply::peer_left("p1", LeaveReason::Timeout),
            reply::relayed(RelayKind::Offer, "p1", "\"v=0\""),
            reply::relayed(RelayKind::Candidate, "p1", "null"),
            reply::relayed(RelayKind::Message, "p1", "{\"x\":[1]}"),
            reply::left(None, "r"),
            reply::pong(None),
            reply::goaway("shutdown", 250),
            reply::error(None, ErrorCode::RoomFull, "full"),
        ];
        for c in cases {
            ServerMessage::from_json(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
        let j = ServerMessage::from_json(&reply::joined(
            None,
            "r",
            "p2",
            [peer.as_str()],
            "[]",
            "t",
            "{}",
        ));
        match j {
            Ok(ServerMessage::Joined { peers, .. }) => assert_eq!(peers[0].meta, json!({"m":1})),
            other => panic!("{other:?}"),
        }
    }
}
