//! One link: the peer connection and data channel to one other member, and
//! the offer/answer/candidate steps of the negotiation convention.

use bytes::Bytes;
use signaling_client::IceCandidate;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::Mutex;
use tracing::{debug, warn};
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;

use crate::{PeerError, PeerEvent, State, webrtc_setup};

pub struct Link {
    pub peer: String,
    pub pc: Arc<RTCPeerConnection>,
    channel: Mutex<Option<Arc<RTCDataChannel>>>,
    /// Remote candidates that came before the remote description.
    early: Mutex<Vec<RTCIceCandidateInit>>,
    has_remote: AtomicBool,
    opened: AtomicBool,
}

impl Link {
    pub async fn send(&self, data: Bytes) -> Result<(), PeerError> {
        let dc = self.channel.lock().await.clone();
        let dc = dc.ok_or_else(|| PeerError::NotConnected(self.peer.clone()))?;
        dc.send(&data).await?;
        Ok(())
    }

    async fn remote_described(&self) {
        self.has_remote.store(true, Ordering::Release);
        let early: Vec<_> = self.early.lock().await.drain(..).collect();
        for c in early {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                debug!(peer = %self.peer, error = %e, "early candidate refused");
            }
        }
    }
}

async fn new_link(state: &Arc<State>, peer: &str) -> Result<Arc<Link>, PeerError> {
    let ice = state.ice.lock().await.clone();
    let pc =
        webrtc_setup::new_peer_connection(&ice, state.opts.relay_only, state.opts.loopback).await?;
    let link = Arc::new(Link {
        peer: peer.to_string(),
        pc: pc.clone(),
        channel: Mutex::new(None),
        early: Mutex::new(Vec::new()),
        has_remote: AtomicBool::new(false),
        opened: AtomicBool::new(false),
    });
    let (client, to) = (state.client.clone(), peer.to_string());
    pc.on_ice_candidate(Box::new(move |c| {
        let (client, to) = (client.clone(), to.clone());
        Box::pin(async move {
            let candidate = match c.map(|c| c.to_json()) {
                Some(Ok(init)) => Some(IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid.filter(|m| !m.is_empty()).or(Some("0".into())),
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                }),
                Some(Err(_)) => return,
                None => None,
            };
            let _ = client.candidate(&to, candidate);
        })
    }));
    let (weak_state, weak_link) = (Arc::downgrade(state), Arc::downgrade(&link));
    pc.on_data_channel(Box::new(move |dc| {
        let (s, l) = (weak_state.clone(), weak_link.clone());
        Box::pin(async move { wire(s, l, dc).await })
    }));
    let (weak_state, to) = (Arc::downgrade(state), peer.to_string());
    pc.on_peer_connection_state_change(Box::new(move |st| {
        let (s, to) = (weak_state.clone(), to.clone());
        Box::pin(async move {
            if st == RTCPeerConnectionState::Failed {
                if let Some(s) = s.upgrade() {
                    let _ = s.events.send(PeerEvent::Failed {
                        peer: to,
                        reason: "ICE/DTLS connection failed".into(),
                    });
                }
            }
        })
    }));
    state
        .links
        .lock()
        .await
        .insert(peer.to_string(), link.clone());
    Ok(link)
}

/// Hooks a data channel up: open → event, messages → event (and echo).
async fn wire(state: Weak<State>, link: Weak<Link>, dc: Arc<RTCDataChannel>) {
    let Some(l) = link.upgrade() else { return };
    *l.channel.lock().await = Some(dc.clone());
    let (s1, l1) = (state.clone(), link.clone());
    dc.on_open(Box::new(move || {
        Box::pin(async move {
            if let (Some(s), Some(l)) = (s1.upgrade(), l1.upgrade()) {
                if !l.opened.swap(true, Ordering::AcqRel) {
                    let after = s.joined_at.elapsed();
                    let _ = s.events.send(PeerEvent::Open {
                        peer: l.peer.clone(),
                        after,
                    });
                }
            }
        })
    }));
    let (s2, l2, echo_dc) = (state, link, Arc::downgrade(&dc));
    dc.on_message(Box::new(move |msg| {
        let (s, l, echo_dc) = (s2.clone(), l2.clone(), echo_dc.clone());
        Box::pin(async move {
            let (Some(s), Some(l)) = (s.upgrade(), l.upgrade()) else {
                return;
            };
            if s.opts.echo {
                if let Some(dc) = echo_dc.upgrade() {
                    let _ = dc.send(&msg.data).await;
                }
            }
            let _ = s.events.send(PeerEvent::Data {
                from: l.peer.clone(),
                data: msg.data,
            });
        })
    }));
}

fn fail(state: &State, peer: &str, e: impl std::fmt::Display) {
    warn!(peer, error = %e, "negotiation step failed");
    let _ = state.events.send(PeerEvent::Failed {
        peer: peer.into(),
        reason: e.to_string(),
    });
}

/// Offers to `peer`: a first offer with a data channel, or an ICE restart.
pub async fn offer_to(state: &Arc<State>, peer: &str, ice_restart: bool) {
    if let Err(e) = try_offer(state, peer, ice_restart).await {
        fail(state, peer, e);
    }
}

async fn try_offer(state: &Arc<State>, peer: &str, ice_restart: bool) -> Result<(), PeerError> {
    let existing = state.links.lock().await.get(peer).cloned();
    let link = match existing {
        Some(l) => l,
        None => new_link(state, peer).await?,
    };
    if link.channel.lock().await.is_none() {
        let dc = link.pc.create_data_channel("data", None).await?;
        wire(Arc::downgrade(state), Arc::downgrade(&link), dc).await;
    }
    let options = RTCOfferOptions {
        ice_restart,
        ..Default::default()
    };
    let offer = link.pc.create_offer(Some(options)).await?;
    link.pc.set_local_description(offer.clone()).await?;
    state.client.offer(peer, offer.sdp)?;
    Ok(())
}

pub async fn on_offer(state: &Arc<State>, from: &str, sdp: String) {
    if let Err(e) = try_answer(state, from, sdp).await {
        fail(state, from, e);
    }
}

async fn try_answer(state: &Arc<State>, from: &str, sdp: String) -> Result<(), PeerError> {
    let existing = state.links.lock().await.get(from).cloned();
    let link = match existing {
        Some(l) if l.pc.signaling_state() == RTCSignalingState::HaveLocalOffer => {
            // Glare: both offered. The lower peer_id is polite and yields.
            let polite = state.me.lock().await.as_str() < from;
            if !polite {
                debug!(peer = from, "glare: impolite, ignoring the offer");
                return Ok(());
            }
            if l.opened.load(Ordering::Acquire) {
                return cross_restart(state, &l, from, sdp).await;
            }
            yield_to_offer(state, l).await?
        }
        Some(l) => l,
        None => new_link(state, from).await?,
    };
    link.pc
        .set_remote_description(RTCSessionDescription::offer(sdp)?)
        .await?;
    link.remote_described().await;
    let answer = link.pc.create_answer(None).await?;
    link.pc.set_local_description(answer.clone()).await?;
    state.client.answer(from, answer.sdp)?;
    Ok(())
}

/// Crossed renegotiation offers on an established link, polite side. The
/// W3C way is an explicit rollback of our offer, but webrtc-rs 0.17 refuses
/// it ("invalid proposed signaling state transition from have-local-offer
/// applying local rollback"), so the two offers are paired instead:
/// theirs completes ours as its answer, and ours goes back as the answer to
/// theirs. The DTLS association and data channels are untouched; each side
/// ends up with the other's new ICE credentials.
async fn cross_restart(
    state: &Arc<State>,
    link: &Arc<Link>,
    from: &str,
    sdp: String,
) -> Result<(), PeerError> {
    let ours = link
        .pc
        .pending_local_description()
        .await
        .ok_or_else(|| PeerError::NotConnected(from.into()))?;
    let theirs = sdp.replace("a=setup:actpass", "a=setup:active");
    link.pc
        .set_remote_description(RTCSessionDescription::answer(theirs)?)
        .await?;
    link.remote_described().await;
    state
        .client
        .answer(from, ours.sdp.replace("a=setup:actpass", "a=setup:passive"))?;
    Ok(())
}

/// Crossed first offers, polite side: nothing is connected yet, so the link
/// starts afresh as the answerer.
async fn yield_to_offer(state: &Arc<State>, link: Arc<Link>) -> Result<Arc<Link>, PeerError> {
    let _ = link.pc.close().await;
    state.links.lock().await.remove(&link.peer);
    new_link(state, &link.peer).await
}

pub async fn on_answer(state: &Arc<State>, from: &str, sdp: String) {
    let link = state.links.lock().await.get(from).cloned();
    let Some(link) = link else { return };
    let result = async {
        link.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        link.remote_described().await;
        Ok::<(), PeerError>(())
    }
    .await;
    if let Err(e) = result {
        fail(state, from, e);
    }
}

pub async fn on_candidate(state: &Arc<State>, from: &str, candidate: Option<IceCandidate>) {
    let link = state.links.lock().await.get(from).cloned();
    let (Some(link), Some(c)) = (link, candidate) else {
        return;
    };
    let init = RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    };
    // Before the remote description, or while our offer waits for its answer
    // (a restart: these candidates belong to the answer's ICE session), keep
    // them for when the description is applied.
    if !link.has_remote.load(Ordering::Acquire)
        || link.pc.signaling_state() == RTCSignalingState::HaveLocalOffer
    {
        link.early.lock().await.push(init);
        return;
    }
    if let Err(e) = link.pc.add_ice_candidate(init).await {
        debug!(peer = from, error = %e, "candidate refused");
    }
}
