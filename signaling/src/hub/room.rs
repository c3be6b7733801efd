//! One room as this node sees it: its members in join order, and how to reach
//! each of them.

use indexmap::IndexMap;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::PeerInfo;
use crate::ids::PeerId;
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
}

pub struct Member {
    pub info: Arc<PeerInfo>,
    /// The secret half of its resume token.
    pub resume_secret: String,
    pub presence: Presence,
}

/// Why a relayed message could not be delivered to one member.
#[derive(Debug, PartialEq, Eq)]
pub enum Undeliverable {
    /// The member is held and its resume queue is full.
    QueueFull,
}

impl Presence {
    pub fn connected(conn: ConnId, outbox: Outbox) -> Self {
        Presence::Connected {
            conn,
            outbox,
            overflow: VecDeque::new(),
        }
    }
}

impl Member {
    /// Delivers a room event (`peer-joined`, ...). A held member gets none: on
    /// resume its `joined` carries the room as it is then.
    pub fn notify(&self, frame: &Frame) {
        if let Presence::Connected { outbox, .. } = &self.presence {
            outbox.push(frame.clone());
        }
    }

    /// Delivers a relayed message, queueing it while the member is held.
    pub fn relay(&mut self, frame: &Frame, queue_cap: usize) -> Result<(), Undeliverable> {
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
                Ok(())
            }
            Presence::Held { queue, .. } if queue.len() < queue_cap => {
                queue.push_back(frame.clone());
                Ok(())
            }
            Presence::Held { .. } => Err(Undeliverable::QueueFull),
        }
    }
}

#[derive(Default)]
pub struct Room {
    pub members: IndexMap<PeerId, Member>,
}

impl Room {
    /// The encoded peer objects of everyone but `except`, oldest first.
    pub fn peer_objects<'a>(&'a self, except: &'a PeerId) -> impl Iterator<Item = &'a str> + 'a {
        self.members
            .values()
            .filter(move |m| &m.info.id != except)
            .map(|m| &*m.info.object)
    }

    /// Sends a room event to everyone but `except`.
    pub fn notify_others(&self, except: &PeerId, frame: &Frame) {
        for m in self.members.values().filter(|m| &m.info.id != except) {
            m.notify(frame);
        }
    }
}
