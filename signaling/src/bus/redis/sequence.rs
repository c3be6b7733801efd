//! Relays between two nodes arrive once and in order, although the write
//! queue may send one twice (a batch whose connection failed part-way goes
//! again whole) or late (a message its node did not hear is held and sent
//! again after newer ones went out in the same batch).
//!
//! The sending node stamps each relay for a node with a number that grows by
//! one per message to that node ([`Outgoing`]), under an epoch of its own
//! (a restarted node, or a counter dropped after a long silence, starts a new
//! one), and with a *floor*: the lowest number it may still send to that
//! node. Everything below the floor was delivered or given up (its sender
//! was told). The receiving node ([`Incoming`]) passes on each number once,
//! in order: a duplicate is dropped, a message past a gap waits until the gap
//! is filled, the floor moves past it, or [`GAP`] passes (the sender died
//! with it held). A number skipped that way still goes through if it comes
//! after all: late, but not lost.
//!
//! On the wire the stamp is [`STAMP_LEN`] hex digits (epoch, number, floor),
//! written in place into a payload made with room for it, so a relay is
//! still encoded once. The maps are keyed by node ids, which only the
//! cluster's own instances choose: a fast hash (Fx) is safe there.

use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;
use tokio::time::Instant;

/// Hex digits of a stamp: an 8-digit epoch, a 16-digit number, a 16-digit floor.
pub const STAMP_LEN: usize = 40;
/// How long a message past a gap waits for the missing ones. A missing one
/// held by its sender (this node's subscription was re-linking) comes within
/// a few hundred ms, or is given up (`publisher::HOLD`, 2 s) and the next
/// floor says so; one that comes later still passes, out of order. One that
/// Redis lost after all (it counted this node, then dropped the unsent
/// message with a killed connection) never comes: its sender's node hears
/// of the gap ([`Gap`]) and tells the relay's sender.
pub const GAP: Duration = Duration::from_secs(1);
/// Messages (and bytes) that may wait past one sender's gap; past either,
/// they go on as if the gap had timed out.
const MAX_WAITING: usize = 4096;
const MAX_WAITING_BYTES: usize = 16 << 20;
/// Skipped numbers remembered per sender, as ranges (a late one still passes).
const MAX_SKIPPED: usize = 64;
/// A sender or destination unheard this long is forgotten.
const IDLE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: u32,
    pub seq: u64,
    pub floor: u64,
}

impl Stamp {
    /// Writes the stamp into `out` (exactly [`STAMP_LEN`] bytes).
    pub fn write(&self, out: &mut [u8]) {
        fn hex(mut v: u64, out: &mut [u8]) {
            for b in out.iter_mut().rev() {
                *b = b"0123456789abcdef"[(v & 15) as usize];
                v >>= 4;
            }
        }
        hex(u64::from(self.epoch), &mut out[0..8]);
        hex(self.seq, &mut out[8..24]);
        hex(self.floor, &mut out[24..40]);
    }

    pub fn parse(text: &str) -> Option<Stamp> {
        let b = text.as_bytes();
        if b.len() != STAMP_LEN {
            return None;
        }
        // By hand: on every relay, and `from_str_radix` costs several times
        // as much (callgrind).
        fn hex(digits: &[u8]) -> Option<u64> {
            digits.iter().try_fold(0u64, |v, &d| {
                let n = match d {
                    b'0'..=b'9' => d - b'0',
                    b'a'..=b'f' => d - b'a' + 10,
                    _ => return None,
                };
                Some(v << 4 | u64::from(n))
            })
        }
        Some(Stamp {
            epoch: u32::try_from(hex(&b[0..8])?).ok()?,
            seq: hex(&b[8..24])?,
            floor: hex(&b[24..40])?,
        })
    }
}

/// The sending side: the next number for each destination channel.
#[derive(Default)]
pub struct Outgoing {
    channels: FxHashMap<String, Counter>,
}

struct Counter {
    epoch: u32,
    next: u64,
    used: Instant,
}

impl Outgoing {
    /// The epoch and the number of the next message for `channel`.
    pub fn next(&mut self, channel: &str, now: Instant) -> (u32, u64) {
        if self.channels.len() > 64 {
            self.channels.retain(|_, c| now < c.used + IDLE);
        }
        let c = match self.channels.get_mut(channel) {
            Some(c) => c,
            None => self.channels.entry(channel.to_owned()).or_insert(Counter {
                epoch: new_epoch(),
                next: 0,
                used: now,
            }),
        };
        c.used = now;
        let seq = c.next;
        c.next += 1;
        (c.epoch, seq)
    }
}

fn new_epoch() -> u32 {
    let mut b = [0u8; 4];
    // The OS RNG failing is not something a server can recover from.
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    u32::from_le_bytes(b)
}

/// How long a relay its node heard is remembered, so that a gap the node
/// reports ([`Incoming::expired`]) still reaches the relay's sender.
const REMEMBER: Duration = Duration::from_secs(10);
/// Relays remembered per destination, at most.
const MAX_REMEMBERED: usize = 1 << 16;

/// The sending side's memory of relays their node heard (Redis counted it
/// as a subscriber), by destination channel: Redis still loses such a
/// message when the subscriber's connection dies with it unsent (a
/// `CLIENT KILL`, a reset). The receiving node sees the gap and names it;
/// each relay in it gets its sender told, once.
pub struct Sent<U> {
    channels: FxHashMap<String, std::collections::VecDeque<(u32, u64, Instant, U)>>,
}

impl<U> Default for Sent<U> {
    fn default() -> Self {
        Sent {
            channels: FxHashMap::default(),
        }
    }
}

impl<U> Sent<U> {
    /// Remembers a heard relay (numbers grow per channel and epoch).
    pub fn heard(&mut self, channel: &str, epoch: u32, seq: u64, tell: U, now: Instant) {
        let q = match self.channels.get_mut(channel) {
            Some(q) => q,
            None => self.channels.entry(channel.to_owned()).or_default(),
        };
        while q
            .front()
            .is_some_and(|(_, _, at, _)| now >= *at + REMEMBER || q.len() >= MAX_REMEMBERED)
        {
            q.pop_front();
        }
        q.push_back((epoch, seq, now, tell));
    }

    /// The remembered relays of `channel` in `lost`: taken, to be told.
    pub fn lost(&mut self, channel: &str, epoch: u32, lost: Range<u64>) -> Vec<U> {
        let Some(q) = self.channels.get_mut(channel) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut kept = std::collections::VecDeque::with_capacity(q.len());
        for entry in q.drain(..) {
            if entry.0 == epoch && lost.contains(&entry.1) {
                out.push(entry.3);
            } else {
                kept.push_back(entry);
            }
        }
        *q = kept;
        out
    }

    /// Forgets what is past [`REMEMBER`] (a quiet channel is not pruned by
    /// [`Sent::heard`]).
    pub fn prune(&mut self, now: Instant) {
        self.channels.retain(|_, q| {
            while q.front().is_some_and(|(_, _, at, _)| now >= *at + REMEMBER) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }
}

/// Numbers a receiving node stopped waiting for: lost on the way, unless
/// they still come (then they pass, late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub node: String,
    pub epoch: u32,
    pub lost: Range<u64>,
}

/// The receiving side: one ordered stream per sending node.
pub struct Incoming<T> {
    senders: FxHashMap<String, Stream<T>>,
}

impl<T> Default for Incoming<T> {
    fn default() -> Self {
        Incoming {
            senders: FxHashMap::default(),
        }
    }
}

struct Stream<T> {
    epoch: u32,
    /// The number passed on next.
    next: u64,
    /// Messages past a gap, by number, and their bytes.
    waiting: BTreeMap<u64, T>,
    waiting_bytes: usize,
    /// Since when the oldest gap is open.
    gap_since: Option<Instant>,
    /// Numbers given up waiting for: one that comes still passes.
    skipped: Vec<Range<u64>>,
    used: Instant,
}

impl<T> Stream<T> {
    fn new(epoch: u32, next: u64, now: Instant) -> Self {
        Stream {
            epoch,
            next,
            waiting: BTreeMap::new(),
            waiting_bytes: 0,
            gap_since: None,
            skipped: Vec::new(),
            used: now,
        }
    }

    /// Passes on what waited and is no longer behind a gap.
    fn release(&mut self, out: &mut Vec<T>, bytes: impl Fn(&T) -> usize) {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let seq = *entry.key();
            let item = entry.remove();
            self.waiting_bytes -= bytes(&item);
            out.push(item);
            self.next = self.next.max(seq + 1);
        }
        if self.waiting.is_empty() {
            self.gap_since = None;
        }
    }

    /// Stops waiting for the numbers before the first message that waits,
    /// and returns them.
    fn skip_gap(&mut self, out: &mut Vec<T>, bytes: impl Fn(&T) -> usize) -> Option<Range<u64>> {
        let mut skipped = None;
        if let Some(&first) = self.waiting.keys().next() {
            if first > self.next {
                if self.skipped.len() == MAX_SKIPPED {
                    self.skipped.remove(0);
                }
                self.skipped.push(self.next..first);
                skipped = Some(self.next..first);
            }
            self.next = first;
            self.gap_since = None;
            self.release(out, &bytes);
            if !self.waiting.is_empty() {
                self.gap_since = Some(self.used);
            }
        }
        skipped
    }

    /// Takes `seq` out of the skipped ranges if it is in one.
    fn unskip(&mut self, seq: u64) -> bool {
        let Some(i) = self.skipped.iter().position(|r| r.contains(&seq)) else {
            return false;
        };
        let r = self.skipped.remove(i);
        if r.start < seq {
            self.skipped.push(r.start..seq);
        }
        if seq + 1 < r.end {
            self.skipped.push(seq + 1..r.end);
        }
        true
    }
}

impl<T> Incoming<T> {
    /// Takes a message from `node` and returns what may be passed on now,
    /// in order (nothing if it is a duplicate or waits behind a gap), and
    /// the numbers given up on meanwhile: passed by the sender's floor
    /// without ever arriving (the sender gave them up and told their
    /// senders, or Redis lost them after counting this node: the sender's
    /// node tells those), or waited for past the bound. `bytes` weighs a
    /// message, for the bound on what waits.
    pub fn accept(
        &mut self,
        node: &str,
        stamp: Stamp,
        item: T,
        now: Instant,
        bytes: impl Fn(&T) -> usize,
    ) -> (Vec<T>, Vec<Range<u64>>) {
        let mut lost = Vec::new();
        let out = self.accept_into(node, stamp, item, now, &bytes, &mut lost);
        (out, lost)
    }

    fn accept_into(
        &mut self,
        node: &str,
        stamp: Stamp,
        item: T,
        now: Instant,
        bytes: &impl Fn(&T) -> usize,
        lost: &mut Vec<Range<u64>>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        if self.senders.len() > 64 {
            self.senders
                .retain(|_, s| !s.waiting.is_empty() || now < s.used + IDLE);
        }
        if self
            .senders
            .get(node)
            .is_none_or(|s| s.epoch != stamp.epoch)
        {
            // A sender first heard of, or a new epoch (it restarted): what
            // the old one left waiting goes on first, and what the new one
            // may still send starts at its floor.
            if let Some(mut old) = self.senders.remove(node) {
                while !old.waiting.is_empty() {
                    old.skip_gap(&mut out, bytes);
                }
            }
            let fresh = Stream::new(stamp.epoch, stamp.floor.min(stamp.seq), now);
            self.senders.insert(node.to_owned(), fresh);
        }
        let Some(s) = self.senders.get_mut(node) else {
            return out;
        };
        s.used = now;
        if stamp.floor > s.next {
            // Whatever was below the floor is settled: nothing waits for it,
            // and what never came is named.
            let mut cursor = s.next;
            for &k in s.waiting.range(s.next..stamp.floor).map(|(k, _)| k) {
                if k > cursor {
                    lost.push(cursor..k);
                }
                cursor = k + 1;
            }
            if cursor < stamp.floor {
                lost.push(cursor..stamp.floor);
            }
            s.next = stamp.floor;
            s.release(&mut out, bytes);
        }
        if stamp.seq < s.next {
            if s.unskip(stamp.seq) {
                out.push(item);
            }
            return out;
        }
        if stamp.seq == s.next {
            s.next += 1;
            out.push(item);
            s.release(&mut out, bytes);
            return out;
        }
        if s.waiting.contains_key(&stamp.seq) {
            return out;
        }
        s.waiting_bytes += bytes(&item);
        s.waiting.insert(stamp.seq, item);
        s.gap_since.get_or_insert(now);
        if s.waiting.len() > MAX_WAITING || s.waiting_bytes > MAX_WAITING_BYTES {
            lost.extend(s.skip_gap(&mut out, bytes));
        }
        out
    }

    /// What waited past [`GAP`] for a gap that never filled, in order, and
    /// the gaps given up on, for their senders' nodes to hear of.
    pub fn expired(&mut self, now: Instant, bytes: impl Fn(&T) -> usize) -> (Vec<T>, Vec<Gap>) {
        let mut out = Vec::new();
        let mut gaps = Vec::new();
        for (node, s) in self.senders.iter_mut() {
            if s.gap_since.is_some_and(|t| now >= t + GAP) {
                s.used = now;
                if let Some(lost) = s.skip_gap(&mut out, &bytes) {
                    gaps.push(Gap {
                        node: node.clone(),
                        epoch: s.epoch,
                        lost,
                    });
                }
            }
        }
        (out, gaps)
    }

    /// Whether a gap is open anywhere (the timer need not run otherwise).
    pub fn waiting(&self) -> bool {
        self.senders.values().any(|s| !s.waiting.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(seq: u64, floor: u64) -> Stamp {
        Stamp {
            epoch: 7,
            seq,
            floor,
        }
    }

    fn take(i: &mut Incoming<u64>, seq: u64, floor: u64, now: Instant) -> Vec<u64> {
        i.accept("n", st(seq, floor), seq, now, |_| 1).0
    }

    #[test]
    fn stamps_round_trip_at_a_fixed_width() {
        let s = Stamp {
            epoch: u32::MAX,
            seq: 1 << 40,
            floor: 3,
        };
        let mut buf = [b'x'; STAMP_LEN];
        s.write(&mut buf);
        let text = std::str::from_utf8(&buf).expect("ascii");
        assert_eq!(Stamp::parse(text), Some(s));
        assert_eq!(Stamp::parse(&text[1..]), None);
        assert_eq!(Stamp::parse(&"g".repeat(STAMP_LEN)), None);
    }

    #[test]
    fn outgoing_numbers_grow_by_one_per_channel() {
        let mut o = Outgoing::default();
        let now = Instant::now();
        let (e, a0) = o.next("a", now);
        assert_eq!(o.next("a", now), (e, a0 + 1));
        assert_eq!(o.next("b", now).1, 0);
    }

    #[test]
    fn duplicates_are_dropped_and_a_late_one_waits_for_nobody() {
        let mut i = Incoming::default();
        let t = Instant::now();
        assert_eq!(take(&mut i, 0, 0, t), [0]);
        assert_eq!(take(&mut i, 1, 1, t), [1]);
        assert!(take(&mut i, 1, 1, t).is_empty(), "sent twice");
        assert!(take(&mut i, 0, 0, t).is_empty(), "sent twice");
        // 2 was held by the sender; 3 went out ahead of it.
        assert!(take(&mut i, 3, 2, t).is_empty(), "waits for 2");
        assert!(i.waiting());
        assert_eq!(take(&mut i, 2, 2, t), [2, 3]);
        assert!(!i.waiting());
    }

    #[test]
    fn the_floor_ends_a_wait_for_what_the_sender_gave_up() {
        let mut i = Incoming::default();
        let t = Instant::now();
        assert_eq!(take(&mut i, 0, 0, t), [0]);
        assert!(take(&mut i, 2, 1, t).is_empty(), "1 may still come");
        // 1 was given up (or lost): the next message's floor is past it,
        // and it is named for the sender's node.
        let (passed, lost) = i.accept("n", st(3, 3), 3, t, |_| 1);
        assert_eq!(passed, [2, 3]);
        assert_eq!((lost.len(), lost.first()), (1, Some(&(1..2))));
    }

    #[test]
    fn a_gap_that_never_fills_times_out_and_a_late_number_still_passes() {
        let mut i = Incoming::default();
        let t = Instant::now();
        assert_eq!(take(&mut i, 0, 0, t), [0]);
        assert!(take(&mut i, 2, 1, t).is_empty());
        assert!(take(&mut i, 3, 1, t).is_empty());
        assert!(i.expired(t + GAP / 2, |_| 1).0.is_empty());
        let (passed, gaps) = i.expired(t + GAP, |_| 1);
        assert_eq!(passed, [2, 3]);
        assert_eq!(
            gaps,
            [Gap {
                node: "n".into(),
                epoch: 7,
                lost: 1..2
            }],
            "its sender's node hears of it"
        );
        assert_eq!(take(&mut i, 1, 1, t + GAP), [1], "late, not lost");
        assert!(take(&mut i, 1, 1, t + GAP).is_empty(), "but once");
        assert_eq!(take(&mut i, 4, 4, t + GAP), [4]);
    }

    #[test]
    fn a_reported_gap_takes_the_heard_relays_in_it_once() {
        let mut sent = Sent::default();
        let t = Instant::now();
        for seq in 0..5 {
            sent.heard("ch", 7, seq, seq, t);
        }
        sent.heard("ch", 8, 2, 99, t);
        assert_eq!(sent.lost("ch", 7, 1..3), [1, 2]);
        assert!(sent.lost("ch", 7, 1..3).is_empty(), "told once");
        assert!(sent.lost("other", 7, 0..9).is_empty());
        sent.prune(t + REMEMBER);
        assert!(
            sent.lost("ch", 7, 0..9).is_empty(),
            "forgotten after a while"
        );
    }

    #[test]
    fn a_new_epoch_starts_over_at_its_floor() {
        let mut i = Incoming::default();
        let t = Instant::now();
        assert_eq!(take(&mut i, 10, 10, t), [10]);
        let restarted = Stamp {
            epoch: 8,
            seq: 1,
            floor: 0,
        };
        assert!(
            i.accept("n", restarted, 1, t, |_| 1).0.is_empty(),
            "0 first"
        );
        let first = Stamp {
            epoch: 8,
            seq: 0,
            floor: 0,
        };
        assert_eq!(i.accept("n", first, 0, t, |_| 1).0, [0, 1]);
    }

    #[test]
    fn what_waits_is_bounded() {
        let mut i = Incoming::default();
        let t = Instant::now();
        assert_eq!(take(&mut i, 0, 0, t), [0]);
        let mut passed = 0;
        for seq in 2..(MAX_WAITING as u64 + 3) {
            passed += take(&mut i, seq, 1, t).len();
        }
        assert_eq!(
            passed,
            MAX_WAITING + 1,
            "all went on once the bound was passed"
        );
        assert!(!i.waiting());
        assert_eq!(take(&mut i, 1, 1, t), [1], "the missing one still passes");
    }
}
