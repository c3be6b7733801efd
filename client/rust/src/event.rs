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
    /// The room's metadata as the application's backend set it (`{}` until
    /// then); later changes come as [`Event::RoomUpdated`].
    pub room_meta: Value,
}

/// What happens to the client, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    PeerJoined(Peer),
    PeerUpdated(Peer),
    /// `reason` as the protocol names it: `left`, `disconnected`,
    /// `timeout`, `node-lost`, `kicked` (removed by the application's
    /// backend, or its room closed), `replaced` (a newer connection of the
    /// same identity took its place), or one a later server adds.
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
    /// From a peer, or from the application's backend when `from` is
    /// `"server"` (no peer has that id).
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
    /// The client stopped for good: closed by this side, given up
    /// reconnecting, or ended by the server ([`ClientError::Replaced`],
    /// [`ClientError::Removed`]: kicked, room closed, or replaced by a
    /// newer connection of the same identity). Nothing reconnects after it.
    Closed(ClientError),
}

/// The stream of [`Event`]s.
pub type Events = mpsc::UnboundedReceiver<Event>;
