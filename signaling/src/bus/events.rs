//! The in-process event log: the outbox of a node without Redis (and of a
//! linked cluster, which shares one). Each delivery group (a webhook
//! endpoint) has its own bounded queue, so one slow endpoint never holds
//! another up; nothing is kept when no group is open.
//!
//! What it promises is what a process can: events survive a receiver that
//! is down or failing (up to [`MemoryLog::cap`] per group, past which the
//! oldest is dead-lettered, logged, not dropped), but not the death of the
//! process, which takes the queue and the dead letters with it.

use futures_util::future::{BoxFuture, FutureExt};
use serde_json::value::RawValue;
use signaling_protocol::reply::LeaveReason;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::error;

use super::{BusError, DeadLetter, EventLog, Lead, PeerInfo, PresenceEvent, Taken};
use crate::event::{EVENT_VERSION, EventKind, RoomEvent};
use crate::ids::{NodeId, PeerId, RoomId};

/// Events kept per group by default (`--webhook-backlog`).
pub const DEFAULT_CAP: usize = 100_000;

/// Dead letters kept per group; past it the oldest goes, logged.
pub const DEAD_CAP: usize = 10_000;

pub struct MemoryLog {
    state: Mutex<State>,
    /// Woken when an event is recorded or replayed.
    recorded: Notify,
    cap: usize,
    /// Tells this run's ids from an earlier run's.
    boot: String,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Each open room's incarnation (`room_sid`) and last `seq`.
    rooms: HashMap<RoomId, (String, u64)>,
    next_id: u64,
}

#[derive(Default)]
struct Group {
    waiting: VecDeque<Arc<RoomEvent>>,
    replays: VecDeque<Arc<RoomEvent>>,
    /// Taken and not settled, by when and by whom.
    pending: BTreeMap<String, (Arc<RoomEvent>, String, Instant)>,
    dead: VecDeque<DeadLetter>,
    lease: Option<(String, Instant)>,
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog::new(DEFAULT_CAP)
    }
}

impl MemoryLog {
    pub fn new(cap: usize) -> Self {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        MemoryLog {
            state: Mutex::new(State::default()),
            recorded: Notify::new(),
            cap: cap.max(1),
            boot: b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the events of one presence change of `node`'s: `opened` if
    /// it gave the room its first member, `closed` if it took the last.
    pub fn presence(
        &self,
        room: &RoomId,
        event: &PresenceEvent,
        node: &NodeId,
        opened: bool,
        closed: bool,
    ) {
        let mut s = self.state();
        if s.groups.is_empty() {
            return;
        }
        if opened {
            self.push(&mut s, room, EventKind::RoomOpened, node, Detail::None);
        }
        let (kind, detail) = match event {
            PresenceEvent::Joined(p) => (EventKind::PeerJoined, Detail::Peer(p)),
            PresenceEvent::Updated(p) => (EventKind::PeerUpdated, Detail::Peer(p)),
            PresenceEvent::Moved(p) => (EventKind::PeerMoved, Detail::Peer(p)),
            PresenceEvent::Left { peer, reason } => {
                (EventKind::PeerLeft, Detail::Left(peer, *reason))
            }
        };
        let holder = match detail {
            Detail::Peer(p) => p.node.clone(),
            _ => node.clone(),
        };
        self.push(&mut s, room, kind, &holder, detail);
        if closed {
            self.push(&mut s, room, EventKind::RoomClosed, node, Detail::None);
        }
    }

    /// Records `room-meta-updated`.
    pub fn room_meta(&self, room: &RoomId, meta: &str, node: &NodeId) {
        let mut s = self.state();
        if !s.groups.is_empty() {
            self.push(
                &mut s,
                room,
                EventKind::RoomMetaUpdated,
                node,
                Detail::Meta(meta),
            );
        }
    }

    fn push(&self, s: &mut State, room: &RoomId, kind: EventKind, node: &NodeId, detail: Detail) {
        s.next_id += 1;
        let id = format!("{}-{}", self.boot, s.next_id);
        let (sid, seq) = match kind {
            EventKind::RoomOpened => (id.clone(), 1),
            _ => {
                let entry = s
                    .rooms
                    .entry(room.clone())
                    .or_insert_with(|| (String::new(), 0));
                entry.1 += 1;
                entry.clone()
            }
        };
        match kind {
            EventKind::RoomOpened => {
                s.rooms.insert(room.clone(), (sid.clone(), 1));
            }
            EventKind::RoomClosed => {
                s.rooms.remove(room);
            }
            _ => {}
        }
        let raw = |t: &str| RawValue::from_string(t.to_owned()).ok();
        let mut event = RoomEvent {
            v: EVENT_VERSION,
            id,
            kind,
            room: room.as_str().to_owned(),
            room_sid: sid,
            seq,
            ts: crate::ids::cluster_ms(),
            node: node.as_str().to_owned(),
            peer_id: None,
            peer: None,
            reason: None,
            meta: None,
        };
        match detail {
            Detail::None => {}
            Detail::Peer(p) => {
                event.peer_id = Some(p.id.as_str().to_owned());
                event.peer = raw(&p.object);
            }
            Detail::Left(peer, reason) => {
                event.peer_id = Some(peer.as_str().to_owned());
                event.reason = Some(reason.as_str().to_owned());
            }
            Detail::Meta(m) => event.meta = raw(m),
        }
        let event = Arc::new(event);
        for (name, g) in s.groups.iter_mut() {
            if g.waiting.len() >= self.cap
                && let Some(oldest) = g.waiting.pop_front()
            {
                error!(
                    group = %name,
                    cap = self.cap,
                    "webhook backlog full: the oldest event is dead-lettered undelivered"
                );
                bury(g, dead(&oldest, "the backlog was full: never sent", 0));
            }
            g.waiting.push_back(event.clone());
        }
        self.recorded.notify_waiters();
    }
}

enum Detail<'a> {
    None,
    Peer(&'a Arc<PeerInfo>),
    Left(&'a PeerId, LeaveReason),
    Meta(&'a str),
}

fn dead(event: &RoomEvent, error: &str, attempts: u32) -> DeadLetter {
    DeadLetter {
        event: event.clone(),
        error: error.to_owned(),
        attempts,
        failed_at: crate::ids::cluster_ms(),
    }
}

fn bury(g: &mut Group, letter: DeadLetter) {
    if g.dead.len() >= DEAD_CAP {
        error!(
            cap = DEAD_CAP,
            "webhook dead letters full: the oldest is discarded"
        );
        g.dead.pop_front();
    }
    g.dead.push_back(letter);
}

impl EventLog for MemoryLog {
    fn open_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        self.state().groups.entry(group.to_owned()).or_default();
        futures_util::future::ready(Ok(())).boxed()
    }

    fn lead<'a>(
        &'a self,
        group: &'a str,
        holder: &'a str,
        ttl: Duration,
        take: bool,
    ) -> BoxFuture<'a, Result<Lead, BusError>> {
        let mut s = self.state();
        let now = Instant::now();
        let g = s.groups.entry(group.to_owned()).or_default();
        let lead = match &g.lease {
            Some((h, until)) if h != holder && *until > now => Lead::Other,
            Some((h, until)) if h == holder && *until > now => Lead::Ours,
            _ if !take => Lead::Free,
            _ => Lead::Ours,
        };
        if lead == Lead::Ours {
            g.lease = Some((holder.to_owned(), now + ttl));
        }
        futures_util::future::ready(Ok(lead)).boxed()
    }

    fn resign<'a>(&'a self, group: &'a str, holder: &'a str) -> BoxFuture<'a, ()> {
        if let Some(g) = self.state().groups.get_mut(group)
            && g.lease.as_ref().is_some_and(|(h, _)| h == holder)
        {
            g.lease = None;
        }
        futures_util::future::ready(()).boxed()
    }

    fn take<'a>(
        &'a self,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Taken>, BusError>> {
        async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let recorded = self.recorded.notified();
                {
                    let mut s = self.state();
                    let g = s.groups.entry(group.to_owned()).or_default();
                    let mut out = Vec::new();
                    while out.len() < max {
                        let (event, replay) = match g.replays.pop_front() {
                            Some(e) => {
                                let handle = e.id.clone();
                                (e, Some(handle))
                            }
                            None => match g.waiting.pop_front() {
                                Some(e) => (e, None),
                                None => break,
                            },
                        };
                        if replay.is_none() {
                            g.pending.insert(
                                event.id.clone(),
                                (event.clone(), consumer.to_owned(), Instant::now()),
                            );
                        }
                        out.push(Taken { event, replay });
                    }
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
                if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        }
        .boxed()
    }

    /// What other consumers left pending: in one process a consumer's
    /// own pending events are the ones it holds.
    fn claim<'a>(
        &'a self,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Vec<Taken>, BusError>> {
        let mut s = self.state();
        let now = Instant::now();
        let mut out: Vec<Taken> = Vec::new();
        if let Some(g) = s.groups.get_mut(group) {
            let mut claimed: Vec<&mut (Arc<RoomEvent>, String, Instant)> = g
                .pending
                .values_mut()
                .filter(|(_, who, at)| who != consumer && now.duration_since(*at) >= idle)
                .collect();
            // In the order they were recorded (ids of one run number them).
            claimed.sort_by_key(|(e, _, _)| {
                e.id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok())
            });
            for (e, who, at) in claimed.into_iter().take(max) {
                *who = consumer.to_owned();
                *at = now;
                out.push(Taken {
                    event: e.clone(),
                    replay: None,
                });
            }
        }
        futures_util::future::ready(Ok(out)).boxed()
    }

    fn settle<'a>(
        &'a self,
        group: &'a str,
        taken: &'a Taken,
        dead: Option<DeadLetter>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        if let Some(g) = self.state().groups.get_mut(group) {
            g.pending.remove(&taken.event.id);
            if let Some(letter) = dead {
                bury(g, letter);
            }
        }
        futures_util::future::ready(Ok(())).boxed()
    }

    fn dead_letters<'a>(
        &'a self,
        group: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        let list = self
            .state()
            .groups
            .get(group)
            .map(|g| g.dead.iter().take(max).cloned().collect())
            .unwrap_or_default();
        futures_util::future::ready(Ok(list)).boxed()
    }

    fn replay<'a>(
        &'a self,
        group: &'a str,
        ids: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, BusError>> {
        let mut s = self.state();
        let mut n = 0;
        if let Some(g) = s.groups.get_mut(group) {
            let (again, kept): (Vec<_>, Vec<_>) = g
                .dead
                .drain(..)
                .partition(|d| ids.is_none_or(|ids| ids.contains(&d.event.id)));
            g.dead = kept.into();
            n = again.len();
            g.replays
                .extend(again.into_iter().map(|d| Arc::new(d.event)));
        }
        drop(s);
        self.recorded.notify_waiters();
        futures_util::future::ready(Ok(n)).boxed()
    }

    fn backlog<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(u64, u64), BusError>> {
        let counts = self.state().groups.get(group).map_or((0, 0), |g| {
            (
                (g.waiting.len() + g.replays.len() + g.pending.len()) as u64,
                g.dead.len() as u64,
            )
        });
        futures_util::future::ready(Ok(counts)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_its_cap_the_oldest_event_is_dead_lettered_not_dropped() {
        let log = MemoryLog::new(3);
        let (room, node) = (RoomId::new("r"), NodeId::new("n"));
        let peer = Arc::new(PeerInfo::new(
            PeerId::new("p"),
            node.clone(),
            String::new(),
            "{}".into(),
            1,
        ));
        // Nothing is kept while no group is open.
        log.presence(
            &room,
            &PresenceEvent::Joined(peer.clone()),
            &node,
            true,
            false,
        );
        log.open_group("g").await.unwrap();
        assert_eq!(log.backlog("g").await.unwrap(), (0, 0));
        let left = PresenceEvent::Left {
            peer: peer.id.clone(),
            reason: LeaveReason::Left,
        };
        log.presence(&room, &left, &node, false, true);
        log.presence(&room, &PresenceEvent::Joined(peer), &node, true, false);
        // Four events into room for three: the oldest is a dead letter.
        assert_eq!(log.backlog("g").await.unwrap(), (3, 1));
        let dead = log.dead_letters("g", 10).await.unwrap();
        let kinds: Vec<&str> = dead.iter().map(|d| d.event.kind.as_str()).collect();
        assert_eq!(kinds, ["peer-left"]);
        assert!(
            dead.iter()
                .all(|d| d.error.contains("backlog was full") && d.attempts == 0)
        );
    }
}
