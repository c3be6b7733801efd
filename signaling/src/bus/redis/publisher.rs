//! The one ordered queue of everything this node writes to Redis: presence
//! changes and relayed messages. One task drains it in pipelined batches over
//! a connection of its own (`resp.rs`), so each peer's events and each
//! sender's messages keep their order, and a batch that fails on a lost
//! connection is sent again once Redis is back.
//!
//! Traffic for a node's channel (direct relays, resume hand-overs) must reach
//! that node even while its subscription is re-linking: Redis answers each
//! PUBLISH with how many subscribers got it, and a 0 there means the node
//! heard nothing. Such a message is held ([`Held`]) and sent again, along with
//! everything queued after it for the same node, until the node hears it or
//! [`HOLD`] passes; then its sender is told ([`Direct::undelivered`]). Only a
//! 0 is sent again, so nothing arrives twice.

use rustc_hash::FxHashMap;
use signaling_protocol::reply::LeaveReason;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::keys::Keys;
use super::sequence::{Outgoing, STAMP_LEN, Stamp};
use super::wire;
use super::{Shared, resp, scripts};
use crate::bus::{PeerInfo, PresenceEvent, Reservation, Undelivered};
use crate::ids::{NodeId, PeerId, RoomId, cluster_ms};

/// Most operations sent in one round trip.
const BATCH: usize = 512;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long connecting, or the answers to one batch, may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a message for a node that hears nothing (its subscription is
/// re-linking: a reconnect takes about 0.1-0.3 s) is held and sent again
/// before its sender is told it was not delivered.
pub const HOLD: Duration = Duration::from_secs(2);
/// How often a held node is tried again, with the oldest message held for it.
const RETRY: Duration = Duration::from_millis(100);

pub enum Op {
    /// A change of one of this node's peers.
    Presence { room: RoomId, event: PresenceEvent },
    /// A broadcast on a room channel. Best effort: its PUBLISH answers how
    /// many nodes got it, and 0 is what a room with no member elsewhere
    /// gives as well, so a node that missed it cannot be told apart.
    Publish { channel: String, payload: Vec<u8> },
    /// Traffic for one node's channel, held while that node hears nothing.
    Direct(Direct),
    /// One of this node's peers as it is now, found missing from Redis
    /// (anti-entropy, `repair.rs`): written back and announced only if
    /// Redis does not record it so already.
    Reassert { room: RoomId, info: Arc<PeerInfo> },
    /// A slot in a room for a join of ours, granted or refused by Redis
    /// (`scripts::RESERVE`). In the queue with presence, so the join queued
    /// after it replaces the reservation. `answer` is taken by the first
    /// answer; a batch that is sent again does not answer twice.
    Reserve {
        room: RoomId,
        peer: PeerId,
        cap: usize,
        answer: Option<oneshot::Sender<Reservation>>,
    },
    /// Gives a reserved slot back: its join did not complete.
    Unreserve { room: RoomId, peer: PeerId },
}

/// A message for one node's channel: a relay to one of its peers, or resume
/// traffic (claims, hand-overs, refusals).
pub struct Direct {
    pub channel: String,
    pub payload: Vec<u8>,
    /// Tells the sender if the message is given up on (none for resume
    /// traffic: its claimant times out on its own).
    pub undelivered: Option<Undelivered>,
    /// Since when it has been held.
    held_since: Option<Instant>,
    /// It is out as its channel's probe: the oldest message held for the
    /// node, tried alone so a node that is gone is not sent everything again.
    probe: bool,
    /// A relay: where in `payload` its [`sequence::Stamp`] goes, written the
    /// first time it is sent (and kept when it is sent again).
    stamp_at: Option<usize>,
    seq: Option<u64>,
    epoch: u32,
}

impl Direct {
    pub fn new(channel: String, payload: Vec<u8>, undelivered: Option<Undelivered>) -> Self {
        Direct {
            channel,
            payload,
            undelivered,
            held_since: None,
            probe: false,
            stamp_at: None,
            seq: None,
            epoch: 0,
        }
    }

    /// A relay, numbered in order with the others for its node: `payload`
    /// has room for the stamp at `stamp_at`.
    pub fn relay(
        channel: String,
        payload: Vec<u8>,
        stamp_at: usize,
        undelivered: Undelivered,
    ) -> Self {
        Direct {
            stamp_at: Some(stamp_at),
            ..Direct::new(channel, payload, Some(undelivered))
        }
    }

    fn bytes(&self) -> usize {
        OP_OVERHEAD + self.channel.len() + self.payload.len()
    }

    /// Given up on: its sender hears of it.
    fn give_up(self) {
        if let Some(tell) = self.undelivered {
            tell();
        }
    }
}

/// Messages for nodes that heard nothing, by channel, oldest first. While a
/// channel has an entry every newer message for it waits behind, so no
/// message overtakes a held one of the same sender (or of anyone else).
#[derive(Default)]
struct Held {
    channels: FxHashMap<String, HeldChannel>,
}

struct HeldChannel {
    ops: VecDeque<Direct>,
    /// When to try again; `None` while the probe is out.
    next_try: Option<Instant>,
    /// The last probe was heard: everything held goes out at once.
    heard: bool,
}

impl Held {
    /// The lowest number of a relay held for `channel` (sent, unheard).
    fn lowest_seq(&self, channel: &str) -> Option<u64> {
        self.channels
            .get(channel)?
            .ops
            .iter()
            .filter_map(|d| d.seq)
            .min()
    }

    fn next_due(&self) -> Option<Instant> {
        self.channels.values().filter_map(|c| c.next_try).min()
    }

    /// Holds `d` behind whatever its channel holds already.
    fn push_back(&mut self, mut d: Direct, now: Instant) {
        d.held_since.get_or_insert(now);
        d.probe = false;
        self.channels
            .entry(d.channel.clone())
            .or_insert_with(|| HeldChannel {
                ops: VecDeque::new(),
                next_try: Some(now + RETRY),
                heard: false,
            })
            .ops
            .push_back(d);
    }

    /// Puts the due messages first in `batch` (all of a channel whose probe
    /// was heard, else its oldest as the probe) and holds the batch's newer
    /// messages for held channels behind them. Gives up on what was held
    /// past [`HOLD`] for a node still unheard, and returns its bytes.
    fn compose(&mut self, batch: &mut Vec<Op>, now: Instant) -> usize {
        if self.channels.is_empty() {
            return 0;
        }
        let mut out = Vec::with_capacity(batch.len() + 1);
        let mut freed = 0;
        self.channels.retain(|_, ch| {
            if ch.next_try.is_none_or(|t| t > now) {
                return true;
            }
            if ch.heard {
                out.extend(ch.ops.drain(..).map(Op::Direct));
                return false;
            }
            while let Some(d) = ch.ops.pop_front() {
                if d.held_since.is_some_and(|t| now < t + HOLD) {
                    ch.ops.push_front(d);
                    break;
                }
                freed += d.bytes();
                d.give_up();
            }
            let Some(mut probe) = ch.ops.pop_front() else {
                return false;
            };
            probe.probe = true;
            out.push(Op::Direct(probe));
            ch.next_try = None;
            true
        });
        for op in batch.drain(..) {
            match op {
                Op::Direct(d) if !d.probe && self.channels.contains_key(&d.channel) => {
                    self.push_back(d, now)
                }
                op => out.push(op),
            }
        }
        *batch = out;
        freed
    }

    /// Redis answered a message of the batch: `heard` if its node got it.
    /// Returns it back if it is done with (heard, or overtaking a held one:
    /// its node has it already, so it must not go again).
    fn answered(&mut self, mut d: Direct, heard: bool, now: Instant) -> Option<Direct> {
        let entry = self.channels.get_mut(&d.channel);
        match (entry, std::mem::take(&mut d.probe)) {
            (Some(ch), true) => {
                if heard {
                    ch.heard = true;
                    ch.next_try = Some(now);
                    if ch.ops.is_empty() {
                        self.channels.remove(&d.channel);
                    }
                    return Some(d);
                }
                ch.next_try = Some(now + RETRY);
                ch.ops.push_front(d);
                None
            }
            (Some(_), false) if heard => {
                // The node came back between two messages of one batch: it
                // holds this one until the older one arrives (`sequence.rs`).
                debug!(channel = %d.channel, "a relay reached its node ahead of an older held one");
                Some(d)
            }
            (_, _) if heard => Some(d),
            _ => {
                self.push_back(d, now);
                None
            }
        }
    }
}

/// Roughly what an operation costs beyond its strings (the queue's slot,
/// the command's framing).
const OP_OVERHEAD: usize = 64;

impl Op {
    /// What the operation counts against the queue's byte cap: the same
    /// figure when it is queued and when it is written.
    pub fn bytes(&self) -> usize {
        OP_OVERHEAD
            + match self {
                Op::Publish { channel, payload } => channel.len() + payload.len(),
                Op::Direct(d) => return d.bytes(),
                Op::Reassert { room, info } => room.as_str().len() + info.object.len(),
                Op::Reserve { room, peer, .. } | Op::Unreserve { room, peer } => {
                    room.as_str().len() + peer.as_str().len()
                }
                Op::Presence { room, event } => {
                    room.as_str().len()
                        + match event {
                            PresenceEvent::Joined(p)
                            | PresenceEvent::Updated(p)
                            | PresenceEvent::Moved(p) => p.object.len(),
                            PresenceEvent::Left { peer, .. } => peer.as_str().len(),
                        }
                }
            }
    }

    /// Tells a reservation's joiner what became of it, if nobody has yet.
    fn answer(&mut self, reservation: Reservation) {
        if let Op::Reserve { answer, .. } = self {
            if let Some(tx) = answer.take() {
                // The joiner may have stopped waiting: what it queued
                // behind this (its join, or the slot given back) settles it.
                let _ = tx.send(reservation);
            }
        }
    }
}

/// The write queue: operations in the order they were made, and the bytes
/// they count ([`Op::bytes`]) until written.
///
/// Relays are admitted only under the byte cap. Presence changes always
/// are, but past the cap a change of a peer whose previous state has not
/// been written yet replaces that state in place instead of queueing behind
/// it: what Redis and the other nodes need is a peer's latest state, and a
/// member that keeps sending `update` while Redis is stalled must not grow
/// the queue without bound. (Joins and leaves are never merged: each is a
/// stream entry other services may count.)
#[derive(Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    /// Bytes of the operations queued or being written; zero once
    /// everything is out.
    bytes: AtomicUsize,
    more: Notify,
    /// Sequence number below which every operation has been written and
    /// answered by Redis ([`Queue::written_through`]).
    done: AtomicU64,
    done_changed: Notify,
    /// The peers whose presence changes were in a batch that failed: it
    /// goes out again once Redis is back, and may or may not have landed.
    unsure: Mutex<Vec<PeerKey>>,
}

#[derive(Default)]
struct QueueState {
    ops: VecDeque<Op>,
    /// Sequence number of `ops[0]`.
    head: u64,
    /// The queued `Joined`/`Updated`/`Moved` holding a peer's latest state,
    /// by sequence number.
    latest: HashMap<(RoomId, PeerId), u64>,
}

/// A presence operation's peer and, unless it is a leave, its state.
fn presence_of(op: &Op) -> Option<(&RoomId, &PeerId, Option<&Arc<PeerInfo>>)> {
    match op {
        Op::Presence { room, event } => Some(match event {
            PresenceEvent::Joined(p) | PresenceEvent::Updated(p) | PresenceEvent::Moved(p) => {
                (room, &p.id, Some(p))
            }
            PresenceEvent::Left { peer, .. } => (room, peer, None),
        }),
        Op::Publish { .. }
        | Op::Direct(_)
        | Op::Reassert { .. }
        | Op::Reserve { .. }
        | Op::Unreserve { .. } => None,
    }
}

/// A room and one of its peers.
pub type PeerKey = (RoomId, PeerId);

impl Queue {
    /// Bytes queued or being written.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The sequence number the next queued operation will get.
    fn tail(&self) -> u64 {
        let st = self.lock();
        st.head + st.ops.len() as u64
    }

    /// The sequence number of the next operation to be taken.
    fn head(&self) -> u64 {
        self.lock().head
    }

    /// Waits, at most `within`, until everything queued before this call
    /// has been written and answered, so a read from Redis that follows
    /// sees this node's own changes (a peer that was just told `joined`
    /// is listed by its node's `/api/rooms`). False if the wait ran out.
    pub async fn written_through_now(&self, within: Duration) -> bool {
        let target = self.tail();
        let wait = async {
            loop {
                let changed = self.done_changed.notified();
                if self.done.load(Ordering::Acquire) >= target {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// The peers with a presence change still to be written (queued, or in
    /// a batch that failed and goes again): what Redis records of them is
    /// about to change, so a re-assertion leaves them to the queue.
    pub fn pending_peers(&self) -> std::collections::HashSet<PeerKey> {
        let mut keys: std::collections::HashSet<PeerKey> = self
            .unsure
            .lock()
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default();
        let st = self.lock();
        for op in &st.ops {
            if let Some((room, peer, _)) = presence_of(op) {
                keys.insert((room.clone(), peer.clone()));
            }
        }
        keys
    }

    /// Everything below sequence number `through` has been answered.
    fn acknowledge(&self, through: u64) {
        self.done.fetch_max(through, Ordering::AcqRel);
        self.done_changed.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding it; if something did, the queue's
        // content is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues what must not be lost (presence, resume traffic), cap or not.
    /// Past `cap`, a peer's `Updated` merges into its queued state.
    pub fn push(&self, op: Op, cap: usize) {
        let n = op.bytes();
        let mut st = self.lock();
        if self.bytes() + n > cap {
            if let Op::Presence {
                room,
                event: PresenceEvent::Updated(info),
            } = &op
            {
                if st.merge(room, info, &self.bytes) {
                    return;
                }
            }
        }
        self.admit(st, op, n);
    }

    /// Queues a relay if it fits under `cap`; gives it back if not.
    pub fn push_within(&self, op: Op, cap: usize) -> Result<(), Op> {
        let n = op.bytes();
        let st = self.lock();
        if self.bytes() + n > cap {
            return Err(op);
        }
        self.admit(st, op, n);
        Ok(())
    }

    /// Appends `op` (of `n` bytes) under the lock `st`, and wakes the writer.
    fn admit(&self, mut st: MutexGuard<'_, QueueState>, op: Op, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
        st.push_back(op);
        drop(st);
        self.more.notify_one();
    }

    /// Moves up to `max` operations into `batch`, waiting for one if the
    /// queue is empty and `batch` too.
    async fn take(&self, batch: &mut Vec<Op>, max: usize) {
        loop {
            let more = self.more.notified();
            {
                let mut st = self.lock();
                while batch.len() < max {
                    match st.pop_front() {
                        Some(op) => batch.push(op),
                        None => break,
                    }
                }
            }
            if !batch.is_empty() {
                return;
            }
            more.await;
        }
    }

    /// `bytes` have been written (or given up on).
    fn written(&self, bytes: usize) -> usize {
        self.bytes
            .fetch_sub(bytes, Ordering::AcqRel)
            .saturating_sub(bytes)
    }
}

impl QueueState {
    fn push_back(&mut self, op: Op) {
        let seq = self.head + self.ops.len() as u64;
        if let Some((room, peer, state)) = presence_of(&op) {
            let key = (room.clone(), peer.clone());
            match state {
                Some(_) => self.latest.insert(key, seq),
                None => self.latest.remove(&key),
            };
        }
        self.ops.push_back(op);
    }

    fn pop_front(&mut self) -> Option<Op> {
        let op = self.ops.pop_front()?;
        let seq = self.head;
        self.head += 1;
        if let Some((room, peer, Some(_))) = presence_of(&op) {
            let key = (room.clone(), peer.clone());
            if self.latest.get(&key) == Some(&seq) {
                self.latest.remove(&key);
            }
        }
        Some(op)
    }

    /// Puts `info` into the queued state of its peer, if one is still
    /// queued (the operation keeps its kind: a join not yet written stays a
    /// join, with the newer state). `bytes` follows the size change.
    fn merge(&mut self, room: &RoomId, info: &Arc<PeerInfo>, bytes: &AtomicUsize) -> bool {
        let Some(&seq) = self.latest.get(&(room.clone(), info.id.clone())) else {
            return false;
        };
        let Some(op) = self.ops.get_mut((seq - self.head) as usize) else {
            return false;
        };
        let before = op.bytes();
        let Op::Presence {
            event: PresenceEvent::Joined(p) | PresenceEvent::Updated(p) | PresenceEvent::Moved(p),
            ..
        } = op
        else {
            return false;
        };
        *p = info.clone();
        let after = op.bytes();
        // Under the queue's lock, so the writer cannot take it in between.
        if after >= before {
            bytes.fetch_add(after - before, Ordering::AcqRel);
        } else {
            bytes.fetch_sub(before - after, Ordering::AcqRel);
        }
        true
    }
}

/// Numbers the relays of `batch` that go out for the first time, and gives
/// each the floor its node may count on: nothing below it will come any
/// more (see `sequence.rs`). What may still come is what is held for the
/// node, and the batch's own earlier relays to it (they may go unheard).
fn stamp(batch: &mut [Op], held: &Held, numbers: &mut Outgoing, now: Instant) {
    let mut first_in_batch: FxHashMap<&str, u64> = FxHashMap::default();
    for op in batch.iter_mut() {
        let Op::Direct(d) = op else { continue };
        let Some(at) = d.stamp_at else { continue };
        let seq = match d.seq {
            Some(seq) => seq,
            None => {
                let (epoch, seq) = numbers.next(&d.channel, now);
                let first = *first_in_batch.get(d.channel.as_str()).unwrap_or(&seq);
                let floor = held.lowest_seq(&d.channel).unwrap_or(seq).min(first);
                if let Some(slot) = d.payload.get_mut(at..at + STAMP_LEN) {
                    Stamp { epoch, seq, floor }.write(slot);
                }
                d.seq = Some(seq);
                d.epoch = epoch;
                seq
            }
        };
        first_in_batch.entry(d.channel.as_str()).or_insert(seq);
    }
}

pub async fn run(shared: Arc<Shared>) {
    let mut batch: Vec<Op> = Vec::with_capacity(BATCH);
    let mut held = Held::default();
    let mut numbers = Outgoing::default();
    let mut heard_relays = Vec::new();
    // Our own connection, and the link's connect it was made under.
    let mut conn: Option<(resp::Conn, u64)> = None;
    let mut next_connect = 1;
    loop {
        let due = held.next_due();
        tokio::select! {
            _ = shared.queue.take(&mut batch, BATCH) => {}
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
        }
        // Every operation below it is in `batch`, held, or already answered.
        let through = shared.queue.head();
        let now = Instant::now();
        let freed = held.compose(&mut batch, now);
        stamp(&mut batch, &held, &mut numbers, now);
        if freed > 0 {
            shared.queue.written(freed);
        }
        if batch.is_empty() {
            // All of it waits behind held messages.
            shared.queue.acknowledge(through);
            continue;
        }
        // A connection made before the link's latest connect is to a Redis
        // that went away (or restarted): writing on it would only fail.
        let current = shared.connects.load(Ordering::Acquire);
        let (mut c, connect) = match conn.take().filter(|(_, at)| *at == current) {
            Some(c) => c,
            None => {
                // Only once the link has (re)connected and re-asserted this
                // node's peers: what waited must go out after that.
                let connect = shared.wait_connect(next_connect).await;
                let info = shared.client.get_connection_info();
                let name = shared.keys.client_name(&shared.node, "queue");
                match resp::within(TIMEOUT, resp::Conn::connect(info, &name)).await {
                    Ok(c) => (c, connect),
                    Err(error) => {
                        warn!(%error, pending = batch.len(), "redis write connection failed: retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                }
            }
        };
        let mut pipe = redis::pipe();
        for op in &batch {
            add(
                &mut pipe,
                op,
                &shared.keys,
                &shared.node,
                shared.config.stream_maxlen,
            );
        }
        let n = batch.len();
        shared.batch_sizes.observe(n as u64);
        let packed = pipe.get_packed_pipeline();
        match resp::within(TIMEOUT, exchange(&mut c, &packed, pipe.len())).await {
            Ok(answers) => {
                let now = Instant::now();
                let mut refused: Option<(usize, String)> = None;
                let mut bytes = 0;
                for (op, answer) in batch.drain(..).zip(answers) {
                    if let resp::Frame::Error(e) = &answer {
                        refused.get_or_insert((0, e.clone())).0 += 1;
                    }
                    match (op, answer) {
                        (Op::Direct(d), resp::Frame::Error(_)) => {
                            bytes += d.bytes();
                            d.give_up();
                        }
                        (Op::Direct(d), answer) => {
                            let heard = !matches!(answer, resp::Frame::Integer(0));
                            if !heard && !d.probe && d.held_since.is_none() {
                                debug!(channel = %d.channel, "its node heard nothing: holding it");
                            }
                            if let Some(mut d) = held.answered(d, heard, now) {
                                bytes += d.bytes();
                                // Heard, yet Redis may lose it still: kept
                                // to tell its sender if its node says so.
                                if let (Some(seq), Some(tell)) = (d.seq, d.undelivered.take()) {
                                    heard_relays.push((d.channel, d.epoch, seq, tell));
                                }
                            }
                        }
                        (mut op @ Op::Reserve { .. }, answer) => {
                            bytes += op.bytes();
                            op.answer(match answer {
                                resp::Frame::Integer(1) => Reservation::Granted,
                                resp::Frame::Integer(0) => Reservation::Full,
                                _ => Reservation::Unconfirmed,
                            });
                        }
                        (op, _) => bytes += op.bytes(),
                    }
                }
                if !heard_relays.is_empty() {
                    if let Ok(mut sent) = shared.sent.lock() {
                        for (channel, epoch, seq, tell) in heard_relays.drain(..) {
                            sent.heard(&channel, epoch, seq, tell, now);
                        }
                    }
                }
                if let Some((count, first)) = refused {
                    error!(refused = count, of = n, error = %first, "redis refused operations");
                }
                if let Ok(mut unsure) = shared.queue.unsure.lock() {
                    unsure.clear();
                }
                let left = shared.queue.written(bytes);
                shared.queue.acknowledge(through);
                if shared.refusing.load(Ordering::Relaxed) && left <= shared.config.queue_bytes / 2
                {
                    shared.refusing.store(false, Ordering::Release);
                    info!("redis write queue below half its cap: relays accepted again");
                }
                conn = Some((c, connect));
            }
            Err(error) => {
                warn!(%error, pending = batch.len(), "redis write failed: retrying when it is back");
                if let Ok(mut unsure) = shared.queue.unsure.lock() {
                    unsure.clear();
                    unsure.extend(
                        batch
                            .iter()
                            .filter_map(presence_of)
                            .map(|(room, peer, _)| (room.clone(), peer.clone())),
                    );
                }
                // Joins waiting on a reservation go ahead on this node's view
                // rather than wait for the reconnect; the reservations stay
                // in the batch, ahead of those joins' own writes.
                for op in &mut batch {
                    op.answer(Reservation::Unconfirmed);
                }
                // Whatever the batch did is unknown, and Redis may have
                // restarted empty: the link reconnects and re-asserts this
                // node's peers before the batch goes again, as after any outage.
                shared.relink(connect);
                next_connect = connect + 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Writes one pipelined batch of `commands` and reads their answers, in
/// order (one per operation).
async fn exchange(
    conn: &mut resp::Conn,
    packed: &[u8],
    commands: usize,
) -> Result<Vec<resp::Frame>, resp::RespError> {
    conn.write(packed).await?;
    let mut answers = Vec::with_capacity(commands);
    for _ in 0..commands {
        answers.push(conn.read().await?);
    }
    Ok(answers)
}

fn add(pipe: &mut redis::Pipeline, op: &Op, keys: &Keys, node: &NodeId, maxlen: usize) {
    match op {
        Op::Publish { channel, payload } => {
            pipe.publish(channel, payload.as_slice()).ignore();
        }
        // Its answer (how many subscribers got it) is read in `run`.
        Op::Direct(d) => {
            pipe.publish(&d.channel, d.payload.as_slice()).ignore();
        }
        Op::Reassert { room, info } => {
            upsert(pipe, keys, room, info, true, "peer-joined", true, maxlen)
        }
        Op::Reserve {
            room, peer, cap, ..
        } => {
            pipe.cmd("EVAL")
                .arg(scripts::RESERVE)
                .arg(2)
                .arg(keys.room(room))
                .arg(keys.node_peers(node))
                .arg(peer.as_str())
                .arg(node.as_str())
                .arg(room.as_str())
                .arg(*cap)
                .ignore();
        }
        Op::Unreserve { room, peer } => {
            pipe.cmd("EVAL")
                .arg(scripts::UNRESERVE)
                .arg(6)
                .arg(keys.room(room))
                .arg(keys.rooms())
                .arg(keys.node_peers(node))
                .arg(keys.stream())
                .arg(keys.room_meta(room))
                .arg(keys.room_seq(room))
                .arg(room.as_str())
                .arg(peer.as_str())
                .arg(node.as_str())
                .arg(cluster_ms())
                .arg(maxlen)
                .ignore();
        }
        Op::Presence { room, event } => match event {
            PresenceEvent::Joined(p) => {
                upsert(pipe, keys, room, p, true, "peer-joined", false, maxlen)
            }
            PresenceEvent::Updated(p) => {
                upsert(pipe, keys, room, p, false, "peer-updated", false, maxlen)
            }
            PresenceEvent::Moved(p) => {
                upsert(pipe, keys, room, p, false, "peer-moved", false, maxlen)
            }
            PresenceEvent::Left { peer, reason } => {
                remove(pipe, keys, room, peer, node, *reason, false, maxlen)
            }
        },
    }
}

/// Records and announces a peer, as `joined` (else as changed or moved), in
/// the stream as `event` (`quiet_if_known`: only if Redis lost it).
#[allow(clippy::too_many_arguments)]
pub fn upsert(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    room: &RoomId,
    peer: &PeerInfo,
    joined: bool,
    event: &str,
    quiet_if_known: bool,
    maxlen: usize,
) {
    let announce = wire::peer(joined, peer.node.as_str(), &peer.object);
    pipe.cmd("EVAL")
        .arg(scripts::UPSERT)
        .arg(6)
        .arg(keys.room(room))
        .arg(keys.rooms())
        .arg(keys.node_peers(&peer.node))
        .arg(keys.room_channel(room))
        .arg(keys.stream())
        .arg(keys.room_seq(room))
        .arg(room.as_str())
        .arg(peer.id.as_str())
        .arg(peer.node.as_str())
        .arg(&*peer.object)
        .arg(announce)
        .arg(cluster_ms())
        .arg(maxlen)
        .arg(event)
        .arg(if quiet_if_known { "1" } else { "0" })
        .arg(keys.node_peers_prefix())
        .ignore();
}

/// Removes and announces a peer held by `node` (`only_if_present`: when
/// announcing a dead node, so no peer is announced twice).
#[allow(clippy::too_many_arguments)]
pub fn remove(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    room: &RoomId,
    peer: &PeerId,
    node: &NodeId,
    reason: LeaveReason,
    only_if_present: bool,
    maxlen: usize,
) {
    let announce = wire::left(node.as_str(), peer.as_str(), reason);
    pipe.cmd("EVAL")
        .arg(scripts::REMOVE)
        .arg(7)
        .arg(keys.room(room))
        .arg(keys.rooms())
        .arg(keys.node_peers(node))
        .arg(keys.room_channel(room))
        .arg(keys.stream())
        .arg(keys.room_meta(room))
        .arg(keys.room_seq(room))
        .arg(room.as_str())
        .arg(peer.as_str())
        .arg(node.as_str())
        .arg(reason.as_str())
        .arg(announce)
        .arg(cluster_ms())
        .arg(maxlen)
        .arg(if only_if_present { "1" } else { "0" })
        .ignore();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str, n: u32) -> Op {
        let info = PeerInfo::new(
            PeerId::new(id),
            NodeId::new("n1"),
            String::new(),
            format!(r#"{{"n":{n}}}"#),
            1,
        );
        Op::Presence {
            room: RoomId::new("r"),
            event: PresenceEvent::Updated(Arc::new(info)),
        }
    }

    /// What a batch holds, as `<kind> <peer> <meta>`.
    fn describe(batch: &[Op]) -> Vec<String> {
        batch
            .iter()
            .map(|op| match op {
                Op::Presence { event, .. } => match event {
                    PresenceEvent::Joined(p) => format!("J {} {}", p.id, p.meta),
                    PresenceEvent::Updated(p) => format!("U {} {}", p.id, p.meta),
                    PresenceEvent::Moved(p) => format!("M {} {}", p.id, p.meta),
                    PresenceEvent::Left { peer, .. } => format!("L {peer}"),
                },
                Op::Publish { channel, .. } => format!("P {channel}"),
                Op::Direct(d) => format!("D {}", d.channel),
                Op::Reassert { info, .. } => format!("A {}", info.id),
                Op::Reserve { peer, .. } => format!("R {peer}"),
                Op::Unreserve { peer, .. } => format!("X {peer}"),
            })
            .collect()
    }

    fn direct(channel: &str, n: u8, told: &Arc<Mutex<Vec<u8>>>) -> Direct {
        let told = told.clone();
        Direct::new(
            channel.into(),
            vec![n],
            Some(Box::new(move || {
                told.lock().unwrap_or_else(|e| e.into_inner()).push(n)
            })),
        )
    }

    /// The payloads of a batch's node-channel messages, probes marked.
    fn directs(batch: &[Op]) -> Vec<(u8, bool)> {
        batch
            .iter()
            .filter_map(|op| match op {
                Op::Direct(d) => Some((d.payload[0], d.probe)),
                _ => None,
            })
            .collect()
    }

    /// A relay for `channel` as `send_direct` makes it.
    fn relay(channel: &str, told: &Arc<Mutex<Vec<u8>>>) -> Direct {
        let (payload, at) = super::super::wire::direct("n", "p", None, "r", "q", "{}");
        let told = told.clone();
        Direct::relay(
            channel.into(),
            payload,
            at,
            Box::new(move || told.lock().unwrap_or_else(|e| e.into_inner()).push(0)),
        )
    }

    /// The `(seq, floor)` of each relay in `batch`, from its payload.
    fn stamps(batch: &[Op]) -> Vec<(u64, u64)> {
        batch
            .iter()
            .filter_map(|op| match op {
                Op::Direct(d) => {
                    let at = d.stamp_at?;
                    let text = std::str::from_utf8(&d.payload[at..at + STAMP_LEN]).ok()?;
                    Stamp::parse(text).map(|s| (s.seq, s.floor))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn relays_are_numbered_once_with_the_floor_their_node_may_count_on() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let mut held = Held::default();
        let mut numbers = Outgoing::default();
        let t0 = Instant::now();
        let mut batch = vec![
            Op::Direct(relay("x", &told)),
            Op::Direct(relay("x", &told)),
            Op::Direct(relay("y", &told)),
        ];
        held.compose(&mut batch, t0);
        stamp(&mut batch, &held, &mut numbers, t0);
        // 1 may go unheard while 2 is heard: 2's floor is 1's number.
        assert_eq!(stamps(&batch), [(0, 0), (1, 0), (0, 0)]);
        let mut answers = batch.into_iter();
        let Some(Op::Direct(first)) = answers.next() else {
            panic!("a relay");
        };
        assert!(held.answered(first, false, t0).is_none(), "held");
        // Sent again as the probe: the same number, and the next new one
        // (held behind it) gets none yet.
        let t1 = t0 + RETRY;
        let mut batch = vec![Op::Direct(relay("x", &told))];
        held.compose(&mut batch, t1);
        stamp(&mut batch, &held, &mut numbers, t1);
        assert_eq!(stamps(&batch), [(0, 0)]);
        let Some(Op::Direct(probe)) = batch.pop() else {
            panic!("the probe");
        };
        assert!(held.answered(probe, false, t1).is_none());
        // Given up on after HOLD: what goes next says nothing below it will come.
        let mut batch = Vec::new();
        held.compose(&mut batch, t0 + HOLD);
        stamp(&mut batch, &held, &mut numbers, t0 + HOLD);
        assert_eq!(stamps(&batch), [(2, 2)]);
        assert_eq!(
            told.lock().map(|t| t.len()).unwrap_or(0),
            1,
            "its sender told"
        );
    }

    #[test]
    fn an_unheard_message_is_held_tried_alone_then_released_in_order_or_given_up() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let mut held = Held::default();
        let t0 = Instant::now();
        // 1 for node x is unheard; 2 for x and 3 for y come next.
        assert!(held.answered(direct("x", 1, &told), false, t0).is_none());
        let mut batch = vec![
            Op::Direct(direct("x", 2, &told)),
            Op::Direct(direct("y", 3, &told)),
        ];
        assert_eq!(held.compose(&mut batch, t0), 0);
        assert_eq!(directs(&batch), [(3, false)], "2 waits behind 1");
        // Due: 1 goes alone, as the probe; 4 for x, queued since, waits.
        let t1 = t0 + RETRY;
        let mut batch = vec![Op::Direct(direct("x", 4, &told))];
        held.compose(&mut batch, t1);
        assert_eq!(directs(&batch), [(1, true)]);
        let Some(Op::Direct(probe)) = batch.pop() else {
            panic!("the probe");
        };
        // Unheard again: it keeps its place in front.
        assert!(held.answered(probe, false, t1).is_none());
        let t2 = t1 + RETRY;
        let mut batch = Vec::new();
        held.compose(&mut batch, t2);
        let Some(Op::Direct(probe)) = batch.pop() else {
            panic!("the probe again");
        };
        assert_eq!(probe.payload, [1]);
        // Heard: the rest goes at once, in order.
        assert!(held.answered(probe, true, t2).is_some());
        let mut batch = Vec::new();
        held.compose(&mut batch, t2);
        assert_eq!(directs(&batch), [(2, false), (4, false)]);
        for op in batch {
            let Op::Direct(d) = op else { continue };
            assert!(held.answered(d, true, t2).is_some());
        }
        assert!(held.channels.is_empty());
        // A node that stays unheard: its messages are given up on after HOLD.
        assert!(held.answered(direct("z", 5, &told), false, t2).is_none());
        let mut batch = vec![Op::Direct(direct("z", 6, &told))];
        held.compose(&mut batch, t2);
        assert!(batch.is_empty());
        let mut batch = Vec::new();
        let freed = held.compose(&mut batch, t2 + HOLD);
        assert_eq!(freed, 2 * (OP_OVERHEAD + 2));
        assert!(batch.is_empty());
        assert!(held.channels.is_empty());
        assert_eq!(*told.lock().unwrap_or_else(|e| e.into_inner()), [5, 6]);
    }

    fn reserve(peer: &str) -> (Op, oneshot::Receiver<Reservation>) {
        let (tx, rx) = oneshot::channel();
        let op = Op::Reserve {
            room: RoomId::new("r"),
            peer: PeerId::new(peer),
            cap: 50,
            answer: Some(tx),
        };
        (op, rx)
    }

    #[tokio::test]
    async fn reservations_are_queued_past_the_cap_in_order_and_answered_once() {
        let q = Queue::default();
        q.push(update("a", 1), usize::MAX);
        let (r, mut answer) = reserve("b");
        let reserve_bytes = r.bytes();
        assert_eq!(reserve_bytes, OP_OVERHEAD + "r".len() + "b".len());
        // Past the cap (0), as presence is: a join must not be refused
        // because relays filled the queue.
        q.push(r, 0);
        q.push(update("a", 2), 0);
        q.push(
            Op::Unreserve {
                room: RoomId::new("r"),
                peer: PeerId::new("b"),
            },
            0,
        );
        let mut batch = Vec::new();
        q.take(&mut batch, BATCH).await;
        // a's second update merged into its first; the reservation kept
        // its place ahead of what followed it.
        assert_eq!(describe(&batch), [r#"U a {"n":2}"#, "R b", "X b"]);
        let bytes: usize = batch.iter().map(Op::bytes).sum();
        assert_eq!(q.bytes(), bytes);
        // A failed batch answers (the join goes on), and the batch sent
        // again does not answer a second time.
        batch[1].answer(Reservation::Unconfirmed);
        batch[1].answer(Reservation::Full);
        assert_eq!(answer.try_recv().ok(), Some(Reservation::Unconfirmed));
        // A joiner that stopped waiting is no trouble.
        let (mut r, answer) = reserve("c");
        drop(answer);
        r.answer(Reservation::Granted);
    }

    #[tokio::test]
    async fn past_the_cap_updates_merge_relays_are_refused_and_leaves_stay() {
        let q = Queue::default();
        let join = match update("a", 0) {
            Op::Presence { room, event } => Op::Presence {
                room,
                event: match event {
                    PresenceEvent::Updated(p) => PresenceEvent::Joined(p),
                    other => other,
                },
            },
            op => op,
        };
        q.push(join, usize::MAX);
        q.push(update("a", 1), usize::MAX);
        // Past the cap (0): a's updates merge into its last queued state.
        q.push(update("a", 22), 0);
        q.push(update("a", 333), 0);
        let relay = Op::Publish {
            channel: "c".into(),
            payload: b"x".to_vec(),
        };
        assert!(q.push_within(relay, 0).is_err());
        q.push(
            Op::Presence {
                room: RoomId::new("r"),
                event: PresenceEvent::Left {
                    peer: PeerId::new("a"),
                    reason: LeaveReason::Left,
                },
            },
            0,
        );
        // Nothing of b's is queued: its update is, cap or not.
        q.push(update("b", 4), 0);
        let mut batch = Vec::new();
        q.take(&mut batch, BATCH).await;
        assert_eq!(
            describe(&batch),
            [
                r#"J a {"n":0}"#,
                r#"U a {"n":333}"#,
                "L a",
                r#"U b {"n":4}"#
            ]
        );
        let bytes: usize = batch.iter().map(Op::bytes).sum();
        assert_eq!(q.bytes(), bytes, "the count follows the merges");
        assert_eq!(q.written(bytes), 0);
        // A merge only reaches what is still queued.
        q.push(update("b", 5), 0);
        let mut batch = Vec::new();
        q.take(&mut batch, BATCH).await;
        assert_eq!(describe(&batch), [r#"U b {"n":5}"#]);
    }
}
