use serde_json::Value;
use signaling_protocol::messages::{IceCandidate, Peer};
use tokio::sync::mpsc;

use crate::ClientError;

/// The room as the server described it when (re)joining.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub room: String,
    pub peer_id: String,
    /// The others, oldest first.
    pub peers: Vec<Peer>,
    /// Ready for `RTCPeerConnection` (TURN credentials included).
    pub ice_servers: Vec<Value>,
}

/// What happens to the client, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    PeerJoined(Peer),
    PeerUpdated(Peer),
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
    /// `None`: the sender has no more candidates.
    Candidate {
        from: String,
        candidate: Option<IceCandidate>,
    },
    Message {
        from: String,
        data: Value,
    },
    /// The server (the application's backend, through the admin API)
    /// changed this client's own `name` or `meta`.
    Updated(Peer),
    /// The room's `meta` was set (the application's backend).
    RoomUpdated {
        room: String,
        meta: Value,
    },
    /// The server refused something sent without waiting (`offer`, ...).
    Error {
        code: String,
        message: String,
    },
    /// The connection was lost (or the server is going away); reconnecting.
    Reconnecting {
        attempt: u32,
    },
    /// Back in the room as the same peer; `peers` is the room now (it replaces
    /// whatever happened while away).
    Resumed(Joined),
    /// The resume failed (too late): joined again as a new peer.
    Rejoined(Joined),
    /// The client stopped for good.
    Closed(ClientError),
}

/// The stream of [`Event`]s.
pub type Events = mpsc::UnboundedReceiver<Event>;
