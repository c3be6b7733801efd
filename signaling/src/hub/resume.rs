//! Resume: a dropped peer's way back into its room within the grace.
//!
//! A resume token is `<peer_id>.<secret>`: the peer id says which member to
//! look for in the room named by the `join`, and the secret (128 random bits,
//! compared in constant time) proves the client is that member. Each resume
//! issues a new secret, so a token works once.

use signaling_protocol::ErrorCode;
use std::sync::Arc;

use super::room::{Member, Presence, Room};
use super::{Hub, JoinRequest, Membership, Refusal, refuse};
use crate::bus::{Handoff, PresenceEvent};
use crate::ids::{PeerId, random_hex};
use crate::outbox::{CloseCause, Frame};
use std::time::Instant;

pub fn make_token(peer: &PeerId, secret: &str) -> String {
    format!("{peer}.{secret}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Hub {
    pub(super) async fn resume(
        self: &Arc<Self>,
        token: &str,
        req: JoinRequest<'_>,
    ) -> Result<Membership, Refusal> {
        let failed = || {
            refuse(
                ErrorCode::ResumeFailed,
                "no session to resume: join without `resume`",
            )
        };
        let (peer, secret) = token.split_once('.').ok_or_else(failed)?;
        // Kept to the end, whatever fails: a resume that finds nobody must
        // not leave the room it opened to look (nor its subscription) behind.
        let _hold = self.ensure_view(&req.room).await;
        let holder = {
            let room = self.room_held(&req.room)?;
            match room.members.get(peer).map(|m| &m.presence) {
                None => return Err(failed()),
                Some(Presence::Remote { node }) => Some(node.clone()),
                Some(_) => None,
            }
        };
        if let Some(node) = holder {
            // Held by another node: ask it to hand the peer over.
            let peer = PeerId::new(peer);
            let handoff = self
                .bus
                .claim(&node, &req.room, &peer, secret)
                .await
                .ok()
                .flatten()
                .ok_or_else(failed)?;
            return self.adopt(handoff, req);
        }
        let mut room = self.room_held(&req.room)?;
        let member = room.members.get_mut(peer).ok_or_else(failed)?;
        let peer = member.info.id.clone();
        let fresh = random_hex(16);
        let connected = Presence::connected(req.conn, req.outbox.clone());
        let waiting = self
            .take_over(member, secret, Some(fresh.clone()), connected)
            .ok_or_else(failed)?;
        req.welcome(&room, &peer, &fresh);
        req.outbox.preload(waiting);
        drop(room);
        self.metrics.resumed();
        Ok(Membership {
            room: req.room,
            peer,
        })
    }
}

impl Hub {
    /// A member taken over by a resume, on this node or through another
    /// node's claim: if `secret` is its resume secret, its presence becomes
    /// `next` and its secret `new_secret`, and the connection it still had
    /// is retired (4000; frames already in that connection's outbox go down
    /// with it). Returns the relays waiting for it, in order, or `None` for a
    /// wrong secret (only local members have one).
    pub(super) fn take_over(
        &self,
        member: &mut Member,
        secret: &str,
        new_secret: Option<String>,
        next: Presence,
    ) -> Option<Vec<Frame>> {
        let known = member.resume_secret.as_deref()?;
        if !constant_time_eq(known.as_bytes(), secret.as_bytes()) {
            return None;
        }
        member.resume_secret = new_secret;
        Some(match std::mem::replace(&mut member.presence, next) {
            Presence::Held { queue, .. } => {
                self.metrics.held_changed(-1);
                queue.into()
            }
            Presence::Connected {
                outbox, overflow, ..
            } => {
                outbox.close(CloseCause::Replaced);
                overflow.into()
            }
            Presence::Remote { .. } => Vec::new(),
        })
    }

    /// Takes in a peer handed over by another node: same id, same place in
    /// the room, its queued messages after the `joined`. The others only
    /// learn where it lives now.
    fn adopt(&self, handoff: Handoff, req: JoinRequest<'_>) -> Result<Membership, Refusal> {
        let old = handoff.info;
        let info = Arc::new(old.moved_to(self.node.clone()));
        let peer = info.id.clone();
        let secret = random_hex(16);
        {
            let mut room = self
                .rooms
                .entry(req.room.clone())
                .or_insert_with(Room::ready);
            req.welcome(&room, &peer, &secret);
            let now = Instant::now();
            req.outbox
                .preload(handoff.queued.into_iter().map(|text| Frame {
                    text,
                    relayed_at: Some(now),
                }));
            let member = Member {
                info: info.clone(),
                resume_secret: Some(secret),
                presence: Presence::connected(req.conn, req.outbox),
            };
            match room.members.get_mut(&peer) {
                Some(m) => *m = member,
                None => room.insert_ordered(member),
            }
        }
        self.metrics.peer_arrived();
        self.metrics.resumed();
        self.bus.publish(&req.room, PresenceEvent::Moved(info));
        Ok(Membership {
            room: req.room,
            peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
