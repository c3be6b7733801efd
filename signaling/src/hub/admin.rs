//! Acting on a room from outside it: the admin API's kicks, room closes,
//! peer updates, room metadata and server messages, and the removal of a
//! member whose identity joined again. Each is a [`RoomCommand`]: the node
//! that is asked applies it to its own members and sends it to the room's
//! other nodes, which apply it to theirs ([`Hub::apply_command`]). A command
//! acts only on members a node holds, so applying it everywhere is what
//! reaches a peer wherever it is, and no member is acted on twice.

use signaling_protocol::reply::{self, LeaveReason};
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

use super::room::Presence;
use super::{Hub, Membership};
use crate::bus::{BusError, PeerInfo, PresenceEvent, RoomCommand};
use crate::ids::{PeerId, RoomId};
use crate::outbox::{CloseCause, Frame};

impl Hub {
    /// Applies `cmd` to this node's members of `room` and sends it to the
    /// other nodes of the room. `Err`: the other nodes could not be told
    /// (this node's members were acted on all the same).
    pub fn act(&self, room: &RoomId, cmd: RoomCommand) -> Result<(), BusError> {
        self.apply_command(room, &cmd);
        self.bus.command(room, &cmd)
    }

    /// Sets the room's `meta` (a JSON object): recorded in the cluster,
    /// then every member gets `room-updated`. `Ok(false)`: the room has no
    /// members, and nothing changed.
    pub async fn set_room_meta(&self, room: &RoomId, meta: String) -> Result<bool, BusError> {
        // The store sends the other nodes the command once the meta is
        // recorded, so a node that syncs the room meanwhile reads it or is
        // sent it.
        if !self.bus.set_room_meta(room, &meta).await? {
            return Ok(false);
        }
        self.apply_command(room, &RoomCommand::Meta { meta });
        Ok(true)
    }

    /// What `cmd` does to this node's members. Takes the room's lock: never
    /// called under it.
    pub(super) fn apply_command(&self, room_id: &RoomId, cmd: &RoomCommand) {
        match cmd {
            RoomCommand::Kick { peer, reason } => {
                let cause = match reason {
                    LeaveReason::Replaced => CloseCause::Superseded,
                    _ => CloseCause::Kicked,
                };
                self.kick(room_id, peer, *reason, cause);
            }
            RoomCommand::Close => {
                let local: Vec<PeerId> = match self.rooms.get(room_id) {
                    Some(room) => room
                        .members
                        .values()
                        .filter(|m| m.presence.is_local())
                        .map(|m| m.info.id.clone())
                        .collect(),
                    None => return,
                };
                for peer in local {
                    self.kick(room_id, &peer, LeaveReason::Kicked, CloseCause::RoomClosed);
                }
            }
            RoomCommand::Update { peer, name, meta } => {
                self.update_by_server(room_id, peer, name.as_deref(), meta.as_deref());
            }
            RoomCommand::Meta { meta } => {
                let Some(mut room) = self.rooms.get_mut(room_id) else {
                    return;
                };
                room.meta = Some(meta.clone());
                let frame = Frame::reply(reply::room_updated(room_id.as_str(), meta));
                for m in room.members.values() {
                    m.notify(&frame);
                }
            }
            RoomCommand::Message { to, text } => {
                let Some(mut room) = self.rooms.get_mut(room_id) else {
                    return;
                };
                let frame = Frame {
                    text: text.clone(),
                    relayed_at: Some(Instant::now()),
                };
                let cap = self.limits.resume_queue;
                // A held member whose queue is full misses it, as it would
                // miss a peer's broadcast.
                for m in room.members.values_mut().filter(|m| m.presence.is_local()) {
                    if to.as_ref().is_none_or(|to| *to == m.info.id) {
                        let _ = m.relay(&frame, cap);
                    }
                }
            }
        }
    }

    /// Removes this node's member `peer` (connected or held): the others see
    /// `peer-left` with `reason`, its connection is closed with `cause`, and
    /// its resume token dies with the membership.
    fn kick(&self, room: &RoomId, peer: &PeerId, reason: LeaveReason, cause: CloseCause) {
        let who = Membership {
            room: room.clone(),
            peer: peer.clone(),
        };
        let Some(m) = self.remove_member(&who, reason, |m| m.presence.is_local()) else {
            return;
        };
        info!(%room, %peer, reason = reason.as_str(), "peer removed by the server");
        if let Presence::Connected { outbox, .. } = &m.presence {
            outbox.close(cause);
        }
    }

    /// A joiner with `identity` takes the place of the room's members with
    /// the same identity: this node's are removed now, the others' by
    /// their nodes.
    pub(super) fn replace_identity(&self, room_id: &RoomId, identity: &str) {
        let same: Vec<(PeerId, bool)> = match self.rooms.get(room_id) {
            Some(room) => room
                .members
                .values()
                .filter(|m| m.info.identity.as_deref() == Some(identity))
                .map(|m| (m.info.id.clone(), m.presence.is_local()))
                .collect(),
            None => return,
        };
        for (peer, local) in same {
            let reason = LeaveReason::Replaced;
            if local {
                self.kick(room_id, &peer, reason, CloseCause::Superseded);
            } else if let Err(e) = self
                .bus
                .command(room_id, &RoomCommand::Kick { peer, reason })
            {
                tracing::warn!(room = %room_id, error = %e, "an older connection of the same identity could not be removed");
            }
        }
    }

    /// The server sets this node's member `peer`'s `name` and/or `meta`:
    /// the others get `peer-updated`, the peer itself `updated`.
    fn update_by_server(
        &self,
        room_id: &RoomId,
        peer: &PeerId,
        name: Option<&str>,
        meta: Option<&str>,
    ) {
        let info = {
            let Some(mut room) = self.rooms.get_mut(room_id) else {
                return;
            };
            let Some(member) = room.members.get_mut(peer) else {
                return;
            };
            if !member.presence.is_local() {
                return;
            }
            let old = &member.info;
            let info = Arc::new(PeerInfo::renamed(
                old,
                name.map_or_else(|| old.name.clone(), str::to_owned),
                meta.map_or_else(|| old.meta.clone(), str::to_owned),
            ));
            member.info = info.clone();
            member.notify(&Frame::reply(reply::updated(&info.object)));
            room.notify_others(peer, &Frame::reply(reply::peer_updated(&info.object)));
            info
        };
        self.bus.publish(room_id, PresenceEvent::Updated(info));
    }
}
