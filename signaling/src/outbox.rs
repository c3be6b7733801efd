//! A connection's bounded outbound queue, and the handle that closes the
//! connection from anywhere.
//!
//! Whoever sends to a connection (its own session, the hub fanning out a
//! room event, a relay from another peer) calls [`Outbox::push`], which never
//! waits: a full queue means the reader is too slow, and the connection is
//! closed with 1013 instead of anyone else slowing down.

use crate::text::Text;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

/// One text frame for the socket. Fan-out shares the bytes.
#[derive(Clone, Debug)]
pub struct Frame {
    pub text: Text,
    /// When the relayed message this frame carries was read, for the latency
    /// histogram; `None` for anything that is not a relayed message. Only
    /// relayed frames are kept for a peer that resumes.
    pub relayed_at: Option<Instant>,
}

impl Frame {
    pub fn reply(text: String) -> Self {
        Frame {
            text: Text::from(text),
            relayed_at: None,
        }
    }

    pub fn relayed(text: String, read_at: Instant) -> Self {
        Frame {
            text: Text::from(text),
            relayed_at: Some(read_at),
        }
    }
}

/// Why the server ends a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// Its outbound queue filled up (1013). Counts as a drop: it may resume.
    SlowReader,
    /// It kept sending past the rate limit (1008).
    Flood,
    /// It did not join in time (1008).
    JoinDeadline,
    /// Nothing came from it, not even a pong, for the heartbeat timeout.
    /// Counts as a drop; no close frame is sent to a peer that is gone.
    HeartbeatTimeout,
    /// A frame beyond the read limit (1009).
    TooBig,
    /// The server is shutting down and the drain ended (1012).
    Shutdown,
    /// The peer resumed on another connection; this one is stale (4000).
    Replaced,
    /// The application's backend removed the peer (admin API) (4001).
    Kicked,
    /// The application's backend closed the room (4002).
    RoomClosed,
    /// A newer connection with the same verified identity took the peer's
    /// place (4003).
    Superseded,
}

impl CloseCause {
    pub const ALL: [CloseCause; 10] = [
        CloseCause::SlowReader,
        CloseCause::Flood,
        CloseCause::JoinDeadline,
        CloseCause::HeartbeatTimeout,
        CloseCause::TooBig,
        CloseCause::Shutdown,
        CloseCause::Replaced,
        CloseCause::Kicked,
        CloseCause::RoomClosed,
        CloseCause::Superseded,
    ];

    /// The close code and reason to send, if a close frame is sent at all.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseCause::SlowReader => Some((1013, "slow reader: outbound queue full")),
            CloseCause::Flood => Some((1008, "rate limit exceeded repeatedly")),
            CloseCause::JoinDeadline => Some((1008, "no join within the deadline")),
            CloseCause::HeartbeatTimeout => None,
            CloseCause::TooBig => Some((1009, "frame too large to read")),
            CloseCause::Shutdown => Some((1012, "server restarting")),
            CloseCause::Replaced => Some((4000, "resumed on another connection")),
            CloseCause::Kicked => Some((4001, "removed from the room by the server")),
            CloseCause::RoomClosed => Some((4002, "the room was closed")),
            CloseCause::Superseded => Some((4003, "the same identity joined again")),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CloseCause::SlowReader => "slow_reader",
            CloseCause::Flood => "flood",
            CloseCause::JoinDeadline => "join_deadline",
            CloseCause::HeartbeatTimeout => "heartbeat_timeout",
            CloseCause::TooBig => "too_big",
            CloseCause::Shutdown => "shutdown",
            CloseCause::Replaced => "replaced",
            CloseCause::Kicked => "kicked",
            CloseCause::RoomClosed => "room_closed",
            CloseCause::Superseded => "superseded",
        }
    }

    /// Whether the peer is held for resume (a drop) rather than announced as gone.
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            CloseCause::SlowReader | CloseCause::HeartbeatTimeout | CloseCause::Shutdown
        )
    }

    fn code(self) -> u8 {
        CloseCause::ALL.iter().position(|c| *c == self).unwrap_or(0) as u8 + 1
    }

    fn from_code(code: u8) -> Option<CloseCause> {
        CloseCause::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }
}

/// Frames waiting to be written, and their size.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Room past the bounds, for a resumed peer's backlog (see
    /// [`Outbox::preload`]); it shrinks as frames are written.
    extra_frames: usize,
    extra_bytes: usize,
}

/// Writing held back on one connection; dropped, it lets go.
pub struct Hold(Arc<ConnCtl>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
        self.0.task.wake();
    }
}

/// A drained queue keeps at most this many slots: an idle connection holds
/// almost nothing, and a busy one does not reallocate on every burst.
const KEEP_SLOTS: usize = 32;

/// State shared by a connection's task and every [`Outbox`] clone: the
/// queue itself, how the connection is being closed, and the one waker that
/// both a queued frame and a close wake. A plain locked `VecDeque` rather than
/// a channel, because a channel allocates its first block of slots up front,
/// and that block was the largest part of an idle connection's memory.
pub struct ConnCtl {
    closed: AtomicBool,
    /// Holds on writing ([`Outbox::hold`]): while above zero, frames queue
    /// but none is handed to the socket (until the connection closes).
    held: AtomicU32,
    cause: AtomicU8,
    queue: Mutex<Queue>,
    /// The connection's task, waiting for frames or a close.
    task: AtomicWaker,
    max_frames: usize,
    max_bytes: usize,
}

impl ConnCtl {
    pub fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The first cause given to [`ConnCtl::close`], if any.
    pub fn cause(&self) -> Option<CloseCause> {
        CloseCause::from_code(self.cause.load(Ordering::Acquire))
    }

    /// Starts closing the connection. The first cause wins; `None` closes
    /// quietly (the session ended on its own).
    pub fn close(&self, cause: Option<CloseCause>) {
        if let Some(c) = cause {
            let _ = self
                .cause
                .compare_exchange(0, c.code(), Ordering::AcqRel, Ordering::Acquire);
        }
        self.closed.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Asks to be woken by the next queued frame or close. Register first,
    /// then look at the queue: a frame pushed in between still wakes.
    pub fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// The oldest queued frame, if any and if writing is not held back.
    pub fn pop(&self) -> Option<Frame> {
        if self.held.load(Ordering::Acquire) > 0 && !self.is_closing() {
            return None;
        }
        let mut q = self.lock();
        let f = q.frames.pop_front()?;
        q.bytes -= f.text.len();
        q.extra_frames = q.extra_frames.saturating_sub(1);
        q.extra_bytes = q.extra_bytes.saturating_sub(f.text.len());
        if q.frames.is_empty() && q.frames.capacity() > KEEP_SLOTS {
            q.frames.shrink_to(KEEP_SLOTS);
        }
        Some(f)
    }

    /// Everything still queued: what a dropped connection never got to write.
    pub fn take_all(&self) -> Vec<Frame> {
        let mut q = self.lock();
        q.bytes = 0;
        q.extra_frames = 0;
        q.extra_bytes = 0;
        std::mem::take(&mut q.frames).into()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; if something did, the queue is
        // still a valid queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a connection's queue. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    ctl: Arc<ConnCtl>,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> Outbox {
        let ctl = Arc::new(ConnCtl {
            closed: AtomicBool::new(false),
            held: AtomicU32::new(0),
            cause: AtomicU8::new(0),
            queue: Mutex::new(Queue::default()),
            task: AtomicWaker::new(),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        });
        Outbox { ctl }
    }

    pub fn ctl(&self) -> &Arc<ConnCtl> {
        &self.ctl
    }

    /// Holds back writing until the returned [`Hold`] is dropped: frames
    /// pushed meanwhile (before it too, if not written yet) wait, in order.
    /// A close is not held back.
    pub fn hold(&self) -> Hold {
        self.ctl.held.fetch_add(1, Ordering::AcqRel);
        Hold(self.ctl.clone())
    }

    /// Queues `frame` without waiting. If the queue is full the connection is
    /// closed as a slow reader and `false` is returned; frames to a closing
    /// connection are dropped (its session hands what is queued to resume).
    pub fn push(&self, frame: Frame) -> bool {
        let ctl = &*self.ctl;
        if ctl.is_closing() {
            return false;
        }
        {
            let mut q = ctl.lock();
            let len = frame.text.len();
            if q.frames.len() >= ctl.max_frames + q.extra_frames
                || q.bytes + len > ctl.max_bytes + q.extra_bytes
            {
                drop(q);
                ctl.close(Some(CloseCause::SlowReader));
                return false;
            }
            q.bytes += len;
            q.frames.push_back(frame);
        }
        ctl.task.wake();
        true
    }

    /// Queues a resumed peer's backlog (what its dropped connection had not
    /// written, and what arrived while it was held) whole, past the bounds:
    /// the bounds grow by the backlog until it is written, so the new
    /// connection is not closed as a slow reader for what the old one could
    /// not take, and what comes after it still fits. The backlog is itself
    /// bounded (an outbox's worth plus `--resume-queue`).
    pub fn preload(&self, frames: impl IntoIterator<Item = Frame>) {
        {
            let mut q = self.ctl.lock();
            for f in frames {
                q.extra_frames += 1;
                q.extra_bytes += f.text.len();
                q.bytes += f.text.len();
                q.frames.push_back(f);
            }
        }
        self.ctl.task.wake();
    }

    pub fn close(&self, cause: CloseCause) {
        self.ctl.close(Some(cause));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(frames: Vec<Frame>) -> Vec<String> {
        frames.iter().map(|f| f.text.to_string()).collect()
    }

    #[test]
    fn a_hold_keeps_frames_until_let_go_but_not_past_a_close() {
        let o = Outbox::new(8, 1 << 20);
        assert!(o.push(Frame::reply("a".into())));
        let first = o.hold();
        let second = o.hold();
        assert!(o.push(Frame::reply("b".into())));
        assert!(o.ctl().pop().is_none(), "held");
        drop(first);
        assert!(o.ctl().pop().is_none(), "still held by the second");
        drop(second);
        assert_eq!(texts(vec![o.ctl().pop().unwrap()]), ["a"]);
        let _held = o.hold();
        o.close(CloseCause::Kicked);
        assert_eq!(
            texts(vec![o.ctl().pop().unwrap()]),
            ["b"],
            "a close lets go"
        );
    }

    #[test]
    fn a_full_queue_closes_as_slow_reader() {
        let o = Outbox::new(2, 1 << 20);
        assert!(o.push(Frame::reply("a".into())));
        assert!(o.push(Frame::reply("b".into())));
        assert!(!o.push(Frame::reply("c".into())));
        assert_eq!(o.ctl().cause(), Some(CloseCause::SlowReader));
        assert!(
            !o.push(Frame::reply("d".into())),
            "closing: nothing more is queued"
        );
        assert_eq!(texts(o.ctl().take_all()), ["a", "b"]);
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let o = Outbox::new(100, 10);
        assert!(o.push(Frame::reply("12345".into())));
        assert!(!o.push(Frame::reply("123456".into())));
        assert_eq!(o.ctl().cause(), Some(CloseCause::SlowReader));
    }

    #[test]
    fn popping_frees_room_and_keeps_order() {
        let o = Outbox::new(3, 100);
        for t in ["1", "2", "3"] {
            assert!(o.push(Frame::reply(t.into())));
        }
        assert_eq!(
            o.ctl().pop().map(|f| f.text.to_string()).as_deref(),
            Some("1")
        );
        assert!(o.push(Frame::reply("4".into())), "a slot is free again");
        assert_eq!(texts(o.ctl().take_all()), ["2", "3", "4"]);
        assert!(o.ctl().pop().is_none());
        assert_eq!(o.ctl().cause(), None);
    }

    #[test]
    fn a_backlog_fits_past_the_bounds_and_the_bounds_return_as_it_is_written() {
        let o = Outbox::new(2, 100);
        assert!(o.push(Frame::reply("joined".into())));
        o.preload((0..5).map(|i| Frame::reply(format!("b{i}"))));
        assert_eq!(o.ctl().cause(), None, "the backlog alone closes nothing");
        assert!(o.push(Frame::reply("next".into())), "room for what follows");
        assert!(
            !o.push(Frame::reply("past".into())),
            "but no more than that"
        );
        let o = Outbox::new(2, 100);
        o.preload((0..3).map(|i| Frame::reply(format!("b{i}"))));
        for _ in 0..3 {
            assert!(o.ctl().pop().is_some());
        }
        for t in ["1", "2"] {
            assert!(o.push(Frame::reply(t.into())));
        }
        assert!(
            !o.push(Frame::reply("3".into())),
            "written out: the usual bound again"
        );
    }

    #[test]
    fn the_first_cause_wins() {
        let o = Outbox::new(1, 10);
        o.close(CloseCause::Flood);
        o.close(CloseCause::Shutdown);
        assert_eq!(o.ctl().cause(), Some(CloseCause::Flood));
    }
}
