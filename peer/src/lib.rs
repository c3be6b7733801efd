//! A headless WebRTC peer on the signaling protocol, built on webrtc-rs
//! (`webrtc` 0.17) and `signaling-client`.
//!
//! It joins a room and connects to every other member with one
//! `RTCPeerConnection` and one data channel each, following the protocol's
//! negotiation convention: the newcomer offers to everyone listed in
//! `joined.peers`; later renegotiations (an ICE restart) use perfect
//! negotiation with the lower `peer_id` polite: the impolite side ignores a
//! crossing offer. webrtc-rs has no implicit rollback and 0.17 refuses the
//! explicit one, so the polite side resolves glare without it: crossed first
//! offers restart its link as the answerer (nothing is connected yet), and
//! crossed renegotiations pair the two offers, each taken as the answer to
//! the other (see `link.rs`).
//!
//! All signaling for all links is handled by one task, in the order the
//! server delivers it; webrtc-rs callbacks only forward into that task.

mod link;
mod webrtc_setup;

use bytes::Bytes;
use signaling_client::{Client, ClientConfig, ClientError, Event, JoinOptions, Joined};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, warn};

pub use link::Link;

/// How a peer behaves.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub url: String,
    pub room: String,
    pub name: Option<String>,
    /// Only relay (TURN) candidates: `iceTransportPolicy: "relay"`.
    pub relay_only: bool,
    /// Send every data-channel message back to its sender.
    pub echo: bool,
    /// Offer to newcomers too, breaking the convention on purpose: two such
    /// peers joining together offer at once (glare), for tests.
    pub offer_to_newcomers: bool,
    /// Gather loopback candidates only (tests on one machine).
    pub loopback: bool,
}

impl PeerOptions {
    pub fn new(url: impl Into<String>, room: impl Into<String>) -> Self {
        PeerOptions {
            url: url.into(),
            room: room.into(),
            name: None,
            relay_only: false,
            echo: false,
            offer_to_newcomers: false,
            loopback: true,
        }
    }
}

/// What happens to the peer's links.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// The data channel to `peer` is open, `after` this peer joined.
    Open {
        peer: String,
        after: Duration,
    },
    Data {
        from: String,
        data: Bytes,
    },
    /// The link to `peer` is gone (it left, or the connection failed).
    Closed {
        peer: String,
    },
    /// The signaling connection resumed after a drop.
    SignalingResumed,
    /// Something could not be done.
    Failed {
        peer: String,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Signaling(#[from] ClientError),
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::Error),
    #[error("no open data channel to {0}")]
    NotConnected(String),
}

pub(crate) struct State {
    pub opts: PeerOptions,
    pub client: Client,
    pub me: Mutex<String>,
    pub joined_at: Instant,
    pub links: Mutex<HashMap<String, Arc<Link>>>,
    pub ice: Mutex<Vec<serde_json::Value>>,
    pub events: mpsc::UnboundedSender<PeerEvent>,
}

/// A running peer. Dropping it leaves the room.
pub struct Peer {
    state: Arc<State>,
}

impl Peer {
    /// Connects, joins, and starts connecting to every member.
    pub async fn start(
        opts: PeerOptions,
    ) -> Result<(Peer, mpsc::UnboundedReceiver<PeerEvent>), PeerError> {
        let mut config = ClientConfig::new(opts.url.clone());
        config.ping_interval = Duration::from_secs(2);
        config.timeout = Duration::from_secs(6);
        config.max_backoff = Duration::from_millis(500);
        let (client, signals) = Client::connect(config).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let joined_at = Instant::now();
        let joined = client
            .join(
                &opts.room,
                JoinOptions {
                    name: opts.name.clone(),
                    ..Default::default()
                },
            )
            .await?;
        let state = Arc::new(State {
            opts,
            client,
            me: Mutex::new(joined.peer_id.clone()),
            joined_at,
            links: Mutex::new(HashMap::new()),
            ice: Mutex::new(joined.ice_servers.clone()),
            events: tx,
        });
        for p in &joined.peers {
            link::offer_to(&state, &p.peer_id, false).await;
        }
        tokio::spawn(run(state.clone(), signals));
        Ok((Peer { state }, rx))
    }

    pub async fn peer_id(&self) -> String {
        self.state.me.lock().await.clone()
    }

    /// Sends on the data channel to `to`.
    pub async fn send(&self, to: &str, data: Bytes) -> Result<(), PeerError> {
        let link = self.state.links.lock().await.get(to).cloned();
        let link = link.ok_or_else(|| PeerError::NotConnected(to.into()))?;
        link.send(data).await
    }

    /// Renegotiates with `to` with an ICE restart.
    pub async fn restart_ice(&self, to: &str) {
        link::offer_to(&self.state, to, true).await;
    }

    /// ICE/DTLS connection state of the link to `to`, if any.
    pub async fn connection_state(&self, to: &str) -> Option<String> {
        let link = self.state.links.lock().await.get(to).cloned()?;
        Some(link.pc.connection_state().to_string())
    }

    /// The ICE username fragment of the remote description of the link to
    /// `to`: it changes when an ICE restart has gone through.
    pub async fn remote_ice_ufrag(&self, to: &str) -> Option<String> {
        let link = self.state.links.lock().await.get(to).cloned()?;
        let sdp = link.pc.remote_description().await?.sdp;
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(|u| u.trim().to_string())
    }

    /// Leaves and closes every connection.
    pub async fn close(&self) {
        self.state.client.close();
        let links: Vec<_> = self
            .state
            .links
            .lock()
            .await
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in links {
            let _ = l.pc.close().await;
        }
    }
}

/// The signaling loop: every event in order.
async fn run(state: Arc<State>, mut signals: signaling_client::Events) {
    while let Some(ev) = signals.recv().await {
        match ev {
            Event::PeerJoined(p) if state.opts.offer_to_newcomers => {
                link::offer_to(&state, &p.peer_id, false).await;
            }
            Event::Offer { from, sdp } => link::on_offer(&state, &from, sdp).await,
            Event::Answer { from, sdp } => link::on_answer(&state, &from, sdp).await,
            Event::Candidate { from, candidate } => {
                link::on_candidate(&state, &from, candidate).await
            }
            Event::PeerLeft { peer_id, .. } => {
                let gone = state.links.lock().await.remove(&peer_id);
                if let Some(l) = gone {
                    let _ = l.pc.close().await;
                    let _ = state.events.send(PeerEvent::Closed { peer: peer_id });
                }
            }
            Event::Resumed(j) => {
                *state.ice.lock().await = j.ice_servers.clone();
                let _ = state.events.send(PeerEvent::SignalingResumed);
            }
            Event::Rejoined(Joined {
                peer_id,
                peers,
                ice_servers,
                ..
            }) => {
                // A new identity: the old links are of no use to anyone.
                warn!(peer = %peer_id, "resume failed: rejoined as a new peer");
                *state.me.lock().await = peer_id;
                *state.ice.lock().await = ice_servers;
                let old: Vec<_> = state.links.lock().await.drain().map(|(_, l)| l).collect();
                for l in old {
                    let _ = l.pc.close().await;
                }
                for p in peers {
                    link::offer_to(&state, &p.peer_id, false).await;
                }
            }
            Event::Error { code, message } => debug!(%code, %message, "signaling error"),
            Event::Closed(e) => {
                warn!(error = %e, "signaling closed");
                return;
            }
            _ => {}
        }
    }
}
