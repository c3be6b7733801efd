//! The hub: this node's rooms and the peers connected to it.
//!
//! Every membership change happens under its room's lock (one shard of a
//! `DashMap`), and the frames it causes are queued to the members' outboxes
//! before the lock is released. That is what keeps each member's view in
//! order: a joiner's `joined` snapshot is queued before any event that
//! follows it, and events about one peer reach each member in the order they
//! happened. Nothing here waits while holding a lock: outbox pushes and bus
//! sends only queue, and presence changes go to the bus after the lock is
//! released. Members held by other nodes are part of the room too
//! ([`room::Presence::Remote`]); `remote.rs` keeps them in step. The one
//! wait in a join, for the cluster to grant the new peer a slot in the room
//! ([`crate::bus::PresenceStore::reserve`]), happens between two holds of the room's lock, never
//! under one.

mod admin;
#[cfg(test)]
mod cluster_tests;
mod remote;
mod resume;
pub mod room;

use dashmap::DashMap;
use serde_json::value::RawValue;
use signaling_protocol::reply::{self, LeaveReason};
use signaling_protocol::{ErrorCode, RelayKind};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::info;

use crate::bus::{Bus, PeerInfo, PresenceEvent, Reservation, Undelivered};
use crate::connections::Connections;
use crate::ice::IceConfig;
use crate::ids::{NodeId, PeerId, RoomId, cluster_ms, random_hex};
use crate::metrics::Metrics;
use crate::outbox::{Frame, Hold, Outbox};
use room::{ConnId, Member, Presence, Room, Route, SyncState, Undeliverable};

/// The bounds the hub enforces itself.
#[derive(Debug, Clone)]
pub struct HubLimits {
    pub max_room_peers: usize,
    pub resume_queue: usize,
    pub grace: Duration,
}

/// A peer's place in a room, as its session keeps it.
#[derive(Debug, Clone)]
pub struct Membership {
    pub room: RoomId,
    pub peer: PeerId,
}

/// An error to send back to the client that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    /// Mostly fixed texts; some name a configured limit.
    pub message: std::borrow::Cow<'static, str>,
}

fn refuse(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// A join under way into `room`: while it lives the room stays (see
/// [`Room::joining`]); dropped, however the join ended (joined, refused for
/// any reason, or abandoned), it forgets the room if nothing else needs it,
/// so a failed join leaves no room and no bus subscription behind.
pub(crate) struct JoinHold<'a> {
    hub: &'a Hub,
    room: RoomId,
}

impl Drop for JoinHold<'_> {
    fn drop(&mut self) {
        if let Some(mut r) = self.hub.rooms.get_mut(&self.room) {
            r.joining = r.joining.saturating_sub(1);
        }
        self.hub.forget_if_unused(&self.room);
    }
}

/// A new peer's slot in a room across the cluster ([`PresenceStore::reserve`]),
/// taken before the peer is let in. Dropped before [`Slot::filled`],
/// however the join ended (refused here after all, or abandoned while the
/// cluster was asked), it gives the slot back, so no failed join keeps a
/// place in a full room.
struct Slot<'a> {
    bus: &'a dyn Bus,
    room: RoomId,
    peer: PeerId,
    held: bool,
}

impl Slot<'_> {
    /// The peer is in: its published join takes the slot's place.
    fn filled(mut self) {
        self.held = false;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.bus.unreserve(&self.room, &self.peer);
        }
    }
}

/// What a session asks for when it joins.
pub struct JoinRequest<'a> {
    pub room: RoomId,
    pub name: String,
    /// A JSON object.
    pub meta: String,
    /// The `resume` token, if the client is resuming.
    pub resume: Option<&'a str>,
    /// The request's `id`, echoed as `ref`.
    pub reference: Option<&'a RawValue>,
    pub conn: ConnId,
    pub outbox: Outbox,
    /// What goes into `joined.ice_servers` (TURN credentials are per peer).
    pub ice: &'a IceConfig,
    /// The token's verified identity (`sub`), when auth is on: the peer
    /// object carries it, and the TURN username names it.
    pub identity: Option<&'a str>,
    /// Whether a member with the same identity is removed (`replaced`)
    /// when this one joins, rather than kept beside it.
    pub replace_same_identity: bool,
}

impl JoinRequest<'_> {
    /// Queues `joined` to the joiner: the room as it is now, without `peer`
    /// itself, and a resume token made of `secret`.
    fn welcome(&self, room: &Room, peer: &PeerId, secret: &str) {
        let joined = reply::joined(
            self.reference,
            self.room.as_str(),
            peer.as_str(),
            room.peer_objects(peer),
            &self
                .ice
                .for_peer(peer, self.identity, crate::auth::now_unix()),
            &resume::make_token(peer, secret),
            room.meta_json(),
        );
        self.outbox.push(Frame::reply(joined));
    }
}

pub struct Hub {
    node: NodeId,
    limits: HubLimits,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    rooms: DashMap<RoomId, Room>,
    /// This node's connections: joins are refused once they drain.
    conns: Arc<Connections>,
    next_epoch: AtomicU64,
}

impl Hub {
    pub fn new(
        node: NodeId,
        limits: HubLimits,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        conns: Arc<Connections>,
    ) -> Self {
        Hub {
            node,
            limits,
            bus,
            metrics,
            rooms: DashMap::new(),
            conns,
            next_epoch: AtomicU64::new(1),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Rooms with members on this node.
    pub fn local_rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Wires the hub to its bus so other nodes' traffic reaches it.
    pub fn attach_to_bus(self: &Arc<Self>) {
        let me: Arc<dyn crate::bus::InboundHandler> = self.clone();
        self.bus.attach(Arc::downgrade(&me));
    }

    /// Joins (or resumes into) a room. On success the `joined` reply is
    /// already queued to the joiner, ahead of any event that follows it.
    pub async fn join(self: &Arc<Self>, mut req: JoinRequest<'_>) -> Result<Membership, Refusal> {
        if self.conns.is_draining() {
            return Err(refuse(
                ErrorCode::Unavailable,
                "this instance is shutting down",
            ));
        }
        if let Some(token) = req.resume {
            return self.resume(token, req).await;
        }
        let peer = PeerId::random();
        let info = Arc::new(PeerInfo::with_identity(
            peer.clone(),
            self.node.clone(),
            std::mem::take(&mut req.name),
            std::mem::take(&mut req.meta),
            cluster_ms(),
            req.identity.map(str::to_owned),
        ));
        let secret = random_hex(16);
        let _hold = self.ensure_view(&req.room).await;
        if let (true, Some(identity)) = (req.replace_same_identity, req.identity) {
            self.replace_identity(&req.room, identity);
        }
        let cap = self.limits.max_room_peers;
        let full = || refuse(ErrorCode::RoomFull, "the room is full");
        // Full as this node sees it: no need to ask the cluster.
        if self.room_held(&req.room)?.members.len() >= cap {
            return Err(full());
        }
        // This node's view lags the others' joins: only the cluster's own
        // count, taken atomically, keeps racing joins under the cap.
        let mut slot = Slot {
            bus: &*self.bus,
            room: req.room.clone(),
            peer: peer.clone(),
            held: true,
        };
        let holds;
        if self.bus.reserve(&req.room, &peer, cap).await == Reservation::Full {
            slot.held = false; // refused: nothing was recorded
            return Err(full());
        }
        {
            let mut room = self.room_held(&req.room)?;
            if room.members.len() >= cap {
                return Err(full());
            }
            holds = self.hold_until_written(&room, Some(&req.outbox));
            req.welcome(&room, &peer, &secret);
            room.notify_others(&peer, &Frame::reply(reply::peer_joined(&info.object)));
            room.members.insert(
                peer.clone(),
                Member {
                    info: info.clone(),
                    resume_secret: Some(secret),
                    presence: Presence::connected(req.conn, req.outbox),
                },
            );
        }
        slot.filled();
        self.metrics.peer_joined();
        self.bus.publish(&req.room, PresenceEvent::Joined(info));
        self.release_when_written(holds);
        Ok(Membership {
            room: req.room,
            peer,
        })
    }

    /// Relays a message from `from` to `to`, or to every other member when
    /// `to` is `None`. Returns how many members it reached. A message for a
    /// peer on another instance that the bus accepts but cannot deliver
    /// after all gets its sender a late `error` (`unavailable`, with
    /// `reference` as its `ref`).
    pub fn relay(
        self: &Arc<Self>,
        from: &Membership,
        kind: RelayKind,
        to: Option<&str>,
        payload: &str,
        read_at: Instant,
        reference: Option<&RawValue>,
    ) -> Result<u64, Refusal> {
        let frame = Frame::relayed(reply::relayed(kind, from.peer.as_str(), payload), read_at);
        let mut room = self
            .rooms
            .get_mut(&from.room)
            .ok_or(refuse(ErrorCode::NotJoined, "not in a room"))?;
        let cap = self.limits.resume_queue;
        let queue_full = || {
            refuse(
                ErrorCode::Unavailable,
                "the peer is reconnecting and its message queue is full",
            )
        };
        let reached = match to {
            Some(to) => {
                let member = room
                    .members
                    .get_mut(to)
                    .ok_or(refuse(ErrorCode::UnknownPeer, "no such peer in this room"))?;
                let route = member
                    .relay(&frame, cap)
                    .map_err(|Undeliverable::QueueFull| queue_full())?;
                if let Route::Remote(node) = route {
                    // Queued in order behind this sender's earlier messages.
                    let to = member.info.id.clone();
                    let undelivered = self.undelivered(&from.room, &from.peer, reference);
                    self.bus
                        .send_direct(
                            &node,
                            &from.room,
                            &to,
                            &from.peer,
                            reference,
                            frame.text.clone(),
                            undelivered,
                        )
                        .map_err(|_| {
                            refuse(
                                ErrorCode::Unavailable,
                                "the link to the peer's instance is backed up: message not sent",
                            )
                        })?;
                }
                1
            }
            None => {
                let mut n = 0;
                for m in room.members.values_mut().filter(|m| m.info.id != from.peer) {
                    // A held member whose queue is full misses the broadcast.
                    if let Ok(Route::Local) = m.relay(&frame, cap) {
                        n += 1;
                    }
                }
                if room.has_remote() && self.bus.broadcast(&from.room, frame.text.clone()).is_err()
                {
                    drop(room);
                    self.metrics.relayed(kind, n);
                    return Err(refuse(
                        ErrorCode::Unavailable,
                        "the link to other instances is backed up: the message reached only peers on this one",
                    ));
                }
                n
            }
        };
        drop(room);
        self.metrics.relayed(kind, reached);
        Ok(reached)
    }

    /// What tells `sender` that a relay the bus took could not be delivered
    /// after all (the peer's instance stayed unreachable): the `error` it
    /// would have got at once had the bus known. It goes to the sender as it
    /// is when the bus gives up, seconds later: on the connection it resumed
    /// on since, or into its resume queue while it is away.
    fn undelivered(
        self: &Arc<Self>,
        room: &RoomId,
        sender: &PeerId,
        reference: Option<&RawValue>,
    ) -> Undelivered {
        let hub = Arc::downgrade(self);
        let (room, sender) = (room.clone(), sender.clone());
        let reference: Option<Box<RawValue>> = reference.map(|r| r.to_owned());
        Box::new(move || {
            let Some(hub) = hub.upgrade() else {
                return;
            };
            if let Some(mut room) = hub.rooms.get_mut(&room) {
                hub.tell_undelivered(
                    &mut room,
                    &sender,
                    reference.as_deref(),
                    "the peer's instance could not be reached: message not delivered",
                );
            }
        })
    }

    /// Gives `sender` a late `error` (`unavailable`) for a relay of its that
    /// was not delivered, on the connection it has now (or into its resume
    /// queue while it is away). A sender that left, or resumed on another
    /// instance, is not here to be told.
    fn tell_undelivered(
        &self,
        room: &mut Room,
        sender: &PeerId,
        reference: Option<&RawValue>,
        why: &str,
    ) {
        self.metrics.error(ErrorCode::Unavailable);
        let frame = Frame::reply(reply::error(reference, ErrorCode::Unavailable, why));
        if let Some(m) = room.members.get_mut(sender) {
            if m.presence.is_local() {
                let _ = m.relay(&frame, self.limits.resume_queue);
            }
        }
    }

    /// Replaces a member's `meta`; the others get `peer-updated`.
    pub fn update(&self, who: &Membership, meta: String) -> Result<(), Refusal> {
        let info = {
            let mut room = self
                .rooms
                .get_mut(&who.room)
                .ok_or(refuse(ErrorCode::NotJoined, "not in a room"))?;
            let member = room
                .members
                .get_mut(&who.peer)
                .ok_or(refuse(ErrorCode::NotJoined, "not in a room"))?;
            let info = Arc::new(member.info.with_meta(meta));
            member.info = info.clone();
            room.notify_others(&who.peer, &Frame::reply(reply::peer_updated(&info.object)));
            info
        };
        self.bus.publish(&who.room, PresenceEvent::Updated(info));
        Ok(())
    }

    /// Removes a member; the others get `peer-left` with `reason`.
    pub fn leave(&self, who: &Membership, reason: LeaveReason) {
        self.remove_if(who, reason, |_| true);
    }

    /// The connection `conn` of member `who` ended. A clean end is announced
    /// at once; a drop holds the member for the grace, keeping the relayed
    /// messages its connection had not written yet.
    pub fn disconnect(
        self: &Arc<Self>,
        who: &Membership,
        conn: ConnId,
        dropped: bool,
        unwritten: Vec<Frame>,
    ) {
        let is_this_conn =
            |m: &Member| matches!(&m.presence, Presence::Connected { conn: c, .. } if *c == conn);
        if !dropped {
            self.remove_if(who, LeaveReason::Disconnected, is_this_conn);
            return;
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        {
            let Some(mut room) = self.rooms.get_mut(&who.room) else {
                return;
            };
            let Some(member) = room.members.get_mut(&who.peer) else {
                return;
            };
            let Presence::Connected {
                conn: c, overflow, ..
            } = &mut member.presence
            else {
                return;
            };
            if *c != conn {
                return; // it has resumed on another connection already
            }
            // All of it, not cut to `--resume-queue`: these relays were
            // accepted, and nobody would be told of one cut off here. The
            // queue is bounded all the same (an outbox's worth plus the
            // overflow's `--resume-queue`); new relays find it full.
            let queue: VecDeque<Frame> = unwritten
                .into_iter()
                .filter(|f| f.relayed_at.is_some())
                .chain(overflow.drain(..))
                .collect();
            member.presence = Presence::Held { queue, epoch };
        }
        self.metrics.held_changed(1);
        let hub = Arc::clone(self);
        let who = who.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hub.limits.grace).await;
            let expired =
                |m: &Member| matches!(m.presence, Presence::Held { epoch: e, .. } if e == epoch);
            if hub.remove_if(&who, LeaveReason::Timeout, expired) {
                info!(room = %who.room, peer = %who.peer, "peer not back within the grace: gone");
            }
        });
    }

    /// Removes `who` if `pred` holds for it, announcing `reason`. Returns
    /// whether it did.
    fn remove_if(
        &self,
        who: &Membership,
        reason: LeaveReason,
        pred: impl Fn(&Member) -> bool,
    ) -> bool {
        self.remove_member(who, reason, pred).is_some()
    }

    /// Removes `who` if `pred` holds for it, announcing `reason`, and
    /// returns it.
    fn remove_member(
        &self,
        who: &Membership,
        reason: LeaveReason,
        pred: impl Fn(&Member) -> bool,
    ) -> Option<Member> {
        let holds;
        let removed = {
            let mut room = self.rooms.get_mut(&who.room)?;
            match room.members.get(&who.peer) {
                Some(m) if pred(m) => {}
                _ => return None,
            }
            let removed = room.members.shift_remove(&who.peer);
            holds = self.hold_until_written(&room, None);
            room.notify_others(
                &who.peer,
                &Frame::reply(reply::peer_left(who.peer.as_str(), reason)),
            );
            removed
        };
        self.forget_if_unused(&who.room);
        let m = removed?;
        if matches!(m.presence, Presence::Held { .. }) {
            self.metrics.held_changed(-1);
        }
        self.metrics.peer_left(reason);
        self.bus.publish(
            &who.room,
            PresenceEvent::Left {
                peer: who.peer.clone(),
                reason,
            },
        );
        self.release_when_written(holds);
        Some(m)
    }

    /// Where the cluster's record lags what is published (Redis's write
    /// queue), holds back writing to this node's connected members of
    /// `room` (and to `joiner`) until [`Hub::release_when_written`]: the
    /// presence change about to be queued to them is then only seen once
    /// every node's API reads it. Taken under the room's lock, before the
    /// frames are queued, so none slips out ahead.
    fn hold_until_written(&self, room: &Room, joiner: Option<&Outbox>) -> Vec<Hold> {
        if !self.bus.lags_reads() {
            return Vec::new();
        }
        let connected = room.members.values().filter_map(|m| match &m.presence {
            Presence::Connected { outbox, .. } => Some(outbox),
            _ => None,
        });
        joiner
            .into_iter()
            .chain(connected)
            .map(Outbox::hold)
            .collect()
    }

    /// Lets the holds go once what was published so far is written.
    fn release_when_written(&self, holds: Vec<Hold>) {
        if holds.is_empty() {
            return;
        }
        let written = self.bus.written();
        tokio::spawn(async move {
            written.await;
            drop(holds);
        });
    }

    /// The room a [`JoinHold`] keeps. Only a bug could make it vanish: then
    /// the join is refused rather than the server brought down.
    fn room_held(
        &self,
        room: &RoomId,
    ) -> Result<dashmap::mapref::one::RefMut<'_, RoomId, Room>, Refusal> {
        self.rooms.get_mut(room).ok_or(refuse(
            ErrorCode::Unavailable,
            "the room could not be opened: try again",
        ))
    }

    /// Drops the room from this node (and stops watching it) once nothing
    /// here needs it: no local member and no join under way.
    fn forget_if_unused(&self, room: &RoomId) {
        // The unwatch is queued while the room's entry is still locked: a
        // join that opens the room again right after queues its watch
        // behind it, not ahead (which would leave the new room unwatched).
        self.rooms.remove_if(room, |_, r| {
            let unused = !r.in_use() && matches!(r.sync, SyncState::Ready);
            if unused {
                self.bus.unwatch(room);
            }
            unused
        });
    }

    /// Dropped peers waiting here for a resume.
    pub fn held_peers(&self) -> usize {
        self.rooms
            .iter()
            .map(|r| {
                r.members
                    .values()
                    .filter(|m| matches!(m.presence, Presence::Held { .. }))
                    .count()
            })
            .sum()
    }

    /// The end of a shutdown: every peer still here is announced gone
    /// (`timeout` if it was waiting to resume, else `disconnected`), so no
    /// other node keeps a ghost.
    pub fn evict_all(&self) {
        let mut local = Vec::new();
        for r in self.rooms.iter() {
            for m in r.members.values() {
                let reason = match m.presence {
                    Presence::Held { .. } => LeaveReason::Timeout,
                    Presence::Connected { .. } => LeaveReason::Disconnected,
                    Presence::Remote { .. } => continue,
                };
                let who = Membership {
                    room: r.key().clone(),
                    peer: m.info.id.clone(),
                };
                local.push((who, reason));
            }
        }
        for (who, reason) in local {
            self.leave(&who, reason);
        }
    }
}
