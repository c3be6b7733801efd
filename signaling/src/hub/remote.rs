//! The hub's side of the cluster: learning a room's remote members when a
//! first local peer joins it, and applying what other nodes send.
//!
//! Remote events are idempotent here (a join of a known peer, a leave of an
//! unknown one change nothing), which is what makes the subscribe-then-read
//! snapshot safe: anything published in between is either in the snapshot,
//! or buffered and applied after it, or both.

use dashmap::mapref::entry::Entry;
use signaling_protocol::reply::{self, LeaveReason};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use super::room::{Member, Presence, Room, SyncState};
use super::{Hub, JoinHold};
use crate::bus::{Handoff, Inbound, InboundHandler, Origin, PeerInfo, PresenceEvent};
use crate::ids::{NodeId, PeerId, RoomId};
use crate::outbox::Frame;

/// After a first sync the cluster did not answer: the first retry's wait,
/// doubled after each failure up to the last.
const SYNC_RETRY_FIRST: Duration = Duration::from_secs(1);
const SYNC_RETRY_MAX: Duration = Duration::from_secs(10);

impl Hub {
    /// Makes sure this node knows `room`'s remote members, asking the
    /// cluster if it is the first to need them. Concurrent joiners wait.
    /// The room stays at least as long as the returned hold.
    pub(super) async fn ensure_view(self: &Arc<Self>, room: &RoomId) -> JoinHold<'_> {
        enum Next {
            Ready,
            Wait(tokio::sync::watch::Receiver<bool>),
            Sync,
        }
        let next = match self.rooms.entry(room.clone()) {
            Entry::Occupied(mut e) => {
                let r = e.get_mut();
                r.joining += 1;
                match &r.sync {
                    SyncState::Ready => Next::Ready,
                    SyncState::Pending { done, .. } => Next::Wait(done.subscribe()),
                }
            }
            Entry::Vacant(v) => {
                let mut r = Room::pending().0;
                r.joining = 1;
                v.insert(r);
                Next::Sync
            }
        };
        // Taken before any wait, so that even a join given up half-way
        // releases the room.
        let hold = JoinHold {
            hub: self,
            room: room.clone(),
        };
        match next {
            Next::Ready => {}
            Next::Wait(mut rx) => {
                let _ = rx.wait_for(|done| *done).await;
            }
            Next::Sync => {
                if !self.sync_view(room, false).await {
                    self.retry_sync(room.clone());
                }
            }
        }
        hold
    }

    /// Asks the cluster for the room's remote members and applies them, then
    /// what was buffered meanwhile. Members found are announced to the local
    /// ones if `announce` (a sync again, after members joined here), and
    /// only listed otherwise (the first joiner's `joined` lists them).
    /// Returns whether the cluster answered.
    async fn sync_view(&self, room_id: &RoomId, announce: bool) -> bool {
        let snapshot = self.bus.watch(room_id).await;
        // Read after the watch: a meta set since is read here or sent
        // after (as a command, buffered until the snapshot is applied).
        let meta = match &snapshot {
            Ok(peers) if !peers.is_empty() => self.bus.room_meta(room_id).await.ok().flatten(),
            _ => None,
        };
        let Some(mut room) = self.rooms.get_mut(room_id) else {
            return true;
        };
        let answered = snapshot.is_ok();
        let (buffered, done) = match std::mem::replace(&mut room.sync, SyncState::Ready) {
            SyncState::Pending { buffered, done } => (buffered, Some(done)),
            SyncState::Ready => (Vec::new(), None),
        };
        if meta.is_some() {
            room.meta = meta;
        }
        match snapshot {
            Ok(peers) => {
                for p in peers {
                    if p.node == self.node || room.members.contains_key(&p.id) {
                        continue;
                    }
                    if announce {
                        self.upsert_remote(&mut room, p);
                    } else {
                        room.insert_ordered(Member::remote(p));
                    }
                }
            }
            Err(e) => {
                warn!(room = %room_id, error = %e, "room served locally until the cluster answers")
            }
        }
        let mut commands = Vec::new();
        for msg in buffered {
            match msg {
                Inbound::Command(cmd) => commands.push(cmd),
                msg => self.apply(&mut room, room_id, msg),
            }
        }
        drop(room);
        for cmd in commands {
            self.apply_command(room_id, &cmd);
        }
        if let Some(done) = done {
            let _ = done.send(true);
        }
        answered
    }

    /// A room whose first sync got no answer (the cluster slow or away)
    /// asks again, backing off, until it gets one or nobody here needs the
    /// room any more. A reconnect's resync may fix the view sooner; a sync
    /// again is harmless (remote events are idempotent), and it is what
    /// fixes the view when no reconnect comes (a slow answer, not a lost
    /// connection).
    fn retry_sync(self: &Arc<Self>, room: RoomId) {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = SYNC_RETRY_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                let Some(hub) = hub.upgrade() else { return };
                {
                    let Some(mut r) = hub.rooms.get_mut(&room) else {
                        return;
                    };
                    // A sync under way (a join's) answers for this one.
                    if !matches!(r.sync, SyncState::Ready) {
                        continue;
                    }
                    // Traffic arriving during the sync waits for it, as
                    // during a first sync.
                    r.sync = SyncState::Pending {
                        buffered: Vec::new(),
                        done: tokio::sync::watch::channel(false).0,
                    };
                }
                if hub.sync_view(&room, true).await {
                    debug!(%room, "room synced with the cluster after all");
                    return;
                }
                wait = (wait * 2).min(SYNC_RETRY_MAX);
            }
        });
    }

    fn apply(&self, room: &mut Room, room_id: &RoomId, msg: Inbound) {
        match msg {
            Inbound::Presence(
                PresenceEvent::Joined(info)
                | PresenceEvent::Updated(info)
                | PresenceEvent::Moved(info),
            ) => {
                if info.node != self.node {
                    self.upsert_remote(room, info);
                }
            }
            Inbound::Presence(PresenceEvent::Left { peer, reason }) => {
                self.remove_remote(room, &peer, reason);
            }
            Inbound::Broadcast { from_node, text } => {
                if from_node != self.node {
                    let frame = Frame {
                        text,
                        relayed_at: Some(Instant::now()),
                    };
                    let cap = self.limits.resume_queue;
                    for m in room.members.values_mut().filter(|m| m.presence.is_local()) {
                        let _ = m.relay(&frame, cap);
                    }
                }
            }
            Inbound::Direct { to, text, origin } => {
                let frame = Frame {
                    text,
                    relayed_at: Some(Instant::now()),
                };
                let delivered = match room.members.get_mut(&to) {
                    Some(m) if m.presence.is_local() => {
                        m.relay(&frame, self.limits.resume_queue).is_ok()
                    }
                    // It left, or moved on before its sender's node knew.
                    _ => false,
                };
                if !delivered {
                    self.refuse_direct(room_id, &to, origin.as_ref());
                }
            }
            Inbound::Refused { sender, reference } => self.tell_undelivered(
                room,
                &sender,
                reference.as_deref(),
                "the peer was no longer on its instance, or its message queue was full: message not delivered",
            ),
            // Commands take the room's lock themselves: `deliver` and
            // `sync_view` apply them once it is released, never here.
            Inbound::Command(cmd) => {
                warn!(room = %room_id, ?cmd, "a room command reached the locked path: not applied");
            }
        }
    }

    /// A direct message from another node that this one cannot deliver
    /// (its peer is not here, or waits for a resume with a full queue): its
    /// sender is told, through its own node.
    fn refuse_direct(&self, room: &RoomId, to: &PeerId, origin: Option<&Origin>) {
        debug!(%room, peer = %to, "direct message not delivered: its sender is told");
        if let Some(origin) = origin {
            self.bus.refuse(room, origin);
        }
    }

    /// A remote peer joined or changed; local members hear of it once.
    fn upsert_remote(&self, room: &mut Room, info: Arc<PeerInfo>) {
        match room.members.get_mut(&info.id) {
            Some(m) if !m.presence.is_local() => {
                m.presence = Presence::Remote {
                    node: info.node.clone(),
                };
                // Kept up to date even when nothing a member sees changed:
                // a peer handed over to another node moves on in here.
                let changed = m.info.object != info.object;
                m.info = info.clone();
                if changed {
                    let frame = Frame::reply(reply::peer_updated(&info.object));
                    room.notify_others(&info.id, &frame);
                }
            }
            // A local member's own echo, or a stale event about it.
            Some(_) => {}
            None => {
                let frame = Frame::reply(reply::peer_joined(&info.object));
                room.insert_ordered(Member::remote(info.clone()));
                room.notify_others(&info.id, &frame);
            }
        }
    }

    fn remove_remote(&self, room: &mut Room, peer: &PeerId, reason: LeaveReason) {
        if room
            .members
            .get(peer)
            .is_some_and(|m| !m.presence.is_local())
        {
            room.members.shift_remove(peer);
            room.notify_others(peer, &Frame::reply(reply::peer_left(peer.as_str(), reason)));
        }
    }
}

impl InboundHandler for Hub {
    fn deliver(&self, room_id: &RoomId, msg: Inbound) {
        if let Inbound::Command(cmd) = msg {
            if let Some(mut room) = self.rooms.get_mut(room_id) {
                if let SyncState::Pending { buffered, .. } = &mut room.sync {
                    buffered.push(Inbound::Command(cmd));
                    return;
                }
            }
            self.apply_command(room_id, &cmd);
            return;
        }
        let Some(mut room) = self.rooms.get_mut(room_id) else {
            if let Inbound::Direct { to, origin, .. } = &msg {
                self.refuse_direct(room_id, to, origin.as_ref());
            }
            return;
        };
        if let SyncState::Pending { buffered, .. } = &mut room.sync {
            buffered.push(msg);
            return;
        }
        self.apply(&mut room, room_id, msg);
    }

    fn watched_rooms(&self) -> Vec<RoomId> {
        self.rooms.iter().map(|r| r.key().clone()).collect()
    }

    fn local_peers(&self) -> Vec<(RoomId, Arc<PeerInfo>)> {
        let mut out = Vec::new();
        for r in self.rooms.iter() {
            for m in r.members.values().filter(|m| m.presence.is_local()) {
                out.push((r.key().clone(), m.info.clone()));
            }
        }
        out
    }

    fn with_local(&self, room_id: &RoomId, peer: &PeerId, f: &mut dyn FnMut(&Arc<PeerInfo>)) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        if let Some(m) = room.members.get(peer).filter(|m| m.presence.is_local()) {
            f(&m.info);
        }
    }

    fn remote_members(&self, room_id: &RoomId) -> Vec<(PeerId, NodeId)> {
        let Some(room) = self.rooms.get(room_id) else {
            return Vec::new();
        };
        room.members
            .values()
            .filter_map(|m| match &m.presence {
                Presence::Remote { node } => Some((m.info.id.clone(), node.clone())),
                _ => None,
            })
            .collect()
    }

    fn hand_over(
        &self,
        room_id: &RoomId,
        peer: &PeerId,
        secret: &str,
        to: &NodeId,
    ) -> Option<Handoff> {
        let (info, queued) = {
            let mut room = self.rooms.get_mut(room_id)?;
            let member = room.members.get_mut(peer)?;
            // The peer stays a member here, in its place, now held by the
            // node that claimed it: the members of this node hear nothing
            // (the `moved` event that follows changes nothing they know), and
            // their relays to it go straight to its new node meanwhile.
            let next = Presence::Remote { node: to.clone() };
            let waiting = self.take_over(member, secret, None, next)?;
            (member.info.clone(), waiting)
        };
        self.metrics.peer_departed();
        self.forget_if_unused(room_id);
        Some(Handoff {
            info,
            queued: queued.into_iter().map(|f| f.text).collect(),
        })
    }
}
