//! One room as this node sees it: its members in join order (those held by
//! other nodes included), and how to reach each of them.

use indexmap::IndexMap;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

use crate::bus::{Inbound, PeerInfo};
use crate::ids::{NodeId, PeerId};
use crate::outbox::{Frame, Outbox};

/// Identifies one WebSocket connection on this node.
pub type ConnId = u64;

/// Where a member's messages go.
pub enum Presence {
    /// Connected here: frames go straight to its outbox. Once that
    /// connection is closing, relayed messages collect in `overflow` until
    /// the session hands the member over to `Held`, so none is lost in between.
    Connected {
        conn: ConnId,
        outbox: Outbox,
        overflow: VecDeque<Frame>,
    },
    /// Dropped, within its reconnect grace: relayed messages wait here for the
    /// resume. `epoch` tells this hold from a later one when the timer fires.
    Held { queue: VecDeque<Frame>, epoch: u64 },
    /// Held by another node: messages go through the bus.
    Remote { node: NodeId },
}

impl Presence {
    pub fn connected(conn: ConnId, outbox: Outbox) -> Self {
        Presence::Connected {
            conn,
            outbox,
            overflow: VecDeque::new(),
        }
    }

    pub fn is_local(&self) -> bool {
        !matches!(self, Presence::Remote { .. })
    }
}

pub struct Member {
    pub info: Arc<PeerInfo>,
    /// The secret half of its resume token (local members only).
    pub resume_secret: Option<String>,
    pub presence: Presence,
}

/// Why a relayed message could not be delivered to one member.
#[derive(Debug, PartialEq, Eq)]
pub enum Undeliverable {
    /// The member is held and its resume queue is full.
    QueueFull,
}

/// Where a relayed message went.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Local,
    /// To be sent through the bus to this node.
    Remote(NodeId),
}

impl Member {
    pub fn remote(info: Arc<PeerInfo>) -> Self {
        Member {
            presence: Presence::Remote {
                node: info.node.clone(),
            },
            info,
            resume_secret: None,
        }
    }

    /// Delivers a room event (`peer-joined`, ...) to a local member. A held
    /// member gets none: on resume its `joined` carries the room as it is then.
    pub fn notify(&self, frame: &Frame) {
        if let Presence::Connected { outbox, .. } = &self.presence {
            outbox.push(frame.clone());
        }
    }

    /// Delivers a relayed message, queueing it while the member is held.
    pub fn relay(&mut self, frame: &Frame, queue_cap: usize) -> Result<Route, Undeliverable> {
        match &mut self.presence {
            Presence::Connected {
                outbox, overflow, ..
            } => {
                // A full outbox closes that connection as a slow reader; what it
                // still holds, and what arrives until it is held, is kept for
                // its resume.
                if !outbox.push(frame.clone()) {
                    if overflow.len() >= queue_cap {
                        return Err(Undeliverable::QueueFull);
                    }
                    overflow.push_back(frame.clone());
                }
                Ok(Route::Local)
            }
            Presence::Held { queue, .. } if queue.len() < queue_cap => {
                queue.push_back(frame.clone());
                Ok(Route::Local)
            }
            Presence::Held { .. } => Err(Undeliverable::QueueFull),
            Presence::Remote { node } => Ok(Route::Remote(node.clone())),
        }
    }
}

/// Whether the room's remote members are known yet.
pub enum SyncState {
    Ready,
    /// The first local member is joining and the cluster is being asked who
    /// else is there; traffic that arrives meanwhile waits in `buffered`.
    Pending {
        buffered: Vec<Inbound>,
        done: watch::Sender<bool>,
    },
}

pub struct Room {
    pub members: IndexMap<PeerId, Member>,
    pub sync: SyncState,
    /// Joins (and resumes) under way into this room. While any is, the room
    /// stays, so it cannot be forgotten (and unwatched) under a joiner; the
    /// last one to end forgets it if nobody local is in it by then.
    pub joining: u32,
    /// The room's `meta` (a JSON object) as the admin API set it, if it did.
    pub meta: Option<String>,
}

impl Room {
    /// A room whose remote members are known (or, with one node, none).
    pub fn ready() -> Room {
        Room {
            members: IndexMap::new(),
            sync: SyncState::Ready,
            joining: 0,
            meta: None,
        }
    }

    pub fn pending() -> (Room, watch::Receiver<bool>) {
        let (done, rx) = watch::channel(false);
        let room = Room {
            members: IndexMap::new(),
            sync: SyncState::Pending {
                buffered: Vec::new(),
                done,
            },
            joining: 0,
            meta: None,
        };
        (room, rx)
    }

    /// The encoded peer objects of everyone but `except`, oldest first.
    pub fn peer_objects<'a>(&'a self, except: &'a PeerId) -> impl Iterator<Item = &'a str> + 'a {
        self.members
            .values()
            .filter(move |m| &m.info.id != except)
            .map(|m| &*m.info.object)
    }

    /// The room's `meta` for `joined`: `{}` until one is set.
    pub fn meta_json(&self) -> &str {
        self.meta.as_deref().unwrap_or("{}")
    }

    /// Sends a room event to every local member but `except`.
    pub fn notify_others(&self, except: &PeerId, frame: &Frame) {
        for m in self.members.values().filter(|m| &m.info.id != except) {
            m.notify(frame);
        }
    }

    /// Whether this node needs the room: a local member, or a join under way.
    pub fn in_use(&self) -> bool {
        self.joining > 0 || self.has_local()
    }

    pub fn has_local(&self) -> bool {
        self.members.values().any(|m| m.presence.is_local())
    }

    pub fn has_remote(&self) -> bool {
        self.members.values().any(|m| !m.presence.is_local())
    }

    /// Inserts a member keeping the list oldest first.
    pub fn insert_ordered(&mut self, member: Member) {
        let at = member.info.joined_at_ms;
        let pos = self
            .members
            .values()
            .rposition(|m| m.info.joined_at_ms <= at)
            .map_or(0, |i| i + 1);
        self.members
            .shift_insert(pos, member.info.id.clone(), member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, node: &str, at: u64) -> Arc<PeerInfo> {
        Arc::new(PeerInfo::new(
            PeerId::new(id),
            NodeId::new(node),
            id.into(),
            "{}".into(),
            at,
        ))
    }

    fn connected(id: &str, at: u64, outbox: &Outbox) -> Member {
        Member {
            info: info(id, "here", at),
            resume_secret: Some("s".into()),
            presence: Presence::connected(1, outbox.clone()),
        }
    }

    fn held(id: &str) -> Member {
        Member {
            info: info(id, "here", 1),
            resume_secret: Some("s".into()),
            presence: Presence::Held {
                queue: VecDeque::new(),
                epoch: 1,
            },
        }
    }

    fn popped(o: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| o.ctl().pop())
            .map(|f| f.text.to_string())
            .collect()
    }

    #[test]
    fn members_are_kept_oldest_first_whatever_order_they_arrive_in() {
        let mut room = Room::ready();
        for (id, at) in [("c", 30), ("a", 10), ("d", 30), ("b", 20)] {
            room.insert_ordered(Member::remote(info(id, "far", at)));
        }
        let ids: Vec<&str> = room.members.keys().map(PeerId::as_str).collect();
        // Equally old members keep their arrival order.
        assert_eq!(ids, ["a", "b", "c", "d"]);
        let b = PeerId::new("b");
        let listed: Vec<&str> = room.peer_objects(&b).collect();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|o| !o.contains("\"b\"")), "{listed:?}");
    }

    #[test]
    fn a_relay_goes_to_the_outbox_the_resume_queue_or_the_members_node() {
        let out = Outbox::new(8, 4096);
        let frame = Frame::reply("{\"type\":\"x\"}".into());
        let mut here = connected("here", 1, &out);
        assert_eq!(here.relay(&frame, 2), Ok(Route::Local));
        assert_eq!(popped(&out), ["{\"type\":\"x\"}"]);

        let mut away = held("away");
        assert_eq!(away.relay(&frame, 2), Ok(Route::Local));
        assert_eq!(away.relay(&frame, 2), Ok(Route::Local));
        assert_eq!(away.relay(&frame, 2), Err(Undeliverable::QueueFull));

        let mut far = Member::remote(info("far", "n2", 1));
        assert_eq!(far.relay(&frame, 2), Ok(Route::Remote(NodeId::new("n2"))));
    }

    #[test]
    fn a_member_whose_outbox_is_full_keeps_what_comes_for_its_resume_up_to_the_cap() {
        let out = Outbox::new(1, 4096);
        let frame = Frame::reply("{}".into());
        let mut m = connected("slow", 1, &out);
        assert_eq!(m.relay(&frame, 1), Ok(Route::Local));
        // The outbox is full from here on: the overflow takes one more.
        assert_eq!(m.relay(&frame, 1), Ok(Route::Local));
        assert_eq!(m.relay(&frame, 1), Err(Undeliverable::QueueFull));
        let Presence::Connected { overflow, .. } = &m.presence else {
            panic!("still connected")
        };
        assert_eq!(overflow.len(), 1);
    }

    #[test]
    fn room_events_reach_connected_members_but_the_subject_held_ones_and_remote_ones() {
        let (a_out, b_out) = (Outbox::new(8, 4096), Outbox::new(8, 4096));
        let mut room = Room::ready();
        room.insert_ordered(connected("a", 1, &a_out));
        room.insert_ordered(connected("b", 2, &b_out));
        room.insert_ordered(held("h"));
        room.insert_ordered(Member::remote(info("r", "n2", 3)));
        room.notify_others(&PeerId::new("a"), &Frame::reply("{\"ev\":1}".into()));
        assert!(popped(&a_out).is_empty(), "no echo");
        assert_eq!(popped(&b_out), ["{\"ev\":1}"]);
        let Presence::Held { queue, .. } = &room.members["h"].presence else {
            panic!("held")
        };
        assert!(
            queue.is_empty(),
            "a held member gets the room in its next joined"
        );
        assert!(room.has_local() && room.has_remote() && room.in_use());
    }

    #[test]
    fn a_room_is_in_use_while_a_join_is_under_way_or_a_local_member_is_in_it() {
        let mut room = Room::ready();
        room.insert_ordered(Member::remote(info("r", "n2", 1)));
        assert!(!room.in_use(), "remote members alone do not keep it");
        room.joining = 1;
        assert!(room.in_use());
        room.joining = 0;
        room.insert_ordered(held("h"));
        assert!(room.in_use());
    }
}
