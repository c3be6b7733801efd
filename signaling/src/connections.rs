//! This node's open WebSocket connections, joined or not, and the drain:
//! what `goaway` goes to, what the end of a shutdown closes, and the flag
//! that refuses new joins (and new WebSockets) while the node drains.
//! Rooms know members, not connections; this knows connections, not rooms.

use dashmap::DashMap;
use signaling_protocol::reply;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::hub::room::ConnId;
use crate::outbox::{CloseCause, Frame, Outbox};

#[derive(Default)]
pub struct Connections {
    open: DashMap<ConnId, Outbox>,
    next: AtomicU64,
    draining: AtomicBool,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks a new connection; its id is unique on this node.
    pub fn register(&self, outbox: Outbox) -> ConnId {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.insert(id, outbox);
        id
    }

    pub fn unregister(&self, conn: ConnId) {
        self.open.remove(&conn);
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain: from now on joins are refused, and every open
    /// connection gets `goaway` with `retry_after`.
    pub fn start_drain(&self, retry_after: Duration) {
        self.draining.store(true, Ordering::Release);
        let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        let frame = Frame::reply(reply::goaway("shutdown", ms));
        for c in self.open.iter() {
            c.value().push(frame.clone());
        }
    }

    /// Closes every connection still open (the end of the drain).
    pub fn close_all(&self, cause: CloseCause) {
        for c in self.open.iter() {
            c.value().close(cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(o: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| o.ctl().pop())
            .map(|f| f.text.as_str().to_owned())
            .collect()
    }

    #[test]
    fn the_drain_sends_goaway_to_every_open_connection_and_refuses_from_then_on() {
        let conns = Connections::new();
        let (a, b, gone) = (
            Outbox::new(8, 4096),
            Outbox::new(8, 4096),
            Outbox::new(8, 4096),
        );
        let ids = [
            conns.register(a.clone()),
            conns.register(b.clone()),
            conns.register(gone.clone()),
        ];
        assert_ne!(ids[0], ids[1]);
        conns.unregister(ids[2]);
        assert_eq!(conns.len(), 2);
        assert!(!conns.is_draining());
        conns.start_drain(Duration::from_millis(250));
        assert!(conns.is_draining());
        for o in [&a, &b] {
            let got = texts(o);
            assert_eq!(got.len(), 1, "{got:?}");
            let v: serde_json::Value = serde_json::from_str(&got[0]).expect("json");
            assert_eq!(
                (
                    v["type"].as_str(),
                    v["reason"].as_str(),
                    v["retry_after_ms"].as_u64()
                ),
                (Some("goaway"), Some("shutdown"), Some(250))
            );
        }
        assert!(
            texts(&gone).is_empty(),
            "an unregistered connection hears nothing"
        );
    }

    #[test]
    fn close_all_closes_every_open_connection_with_its_cause() {
        let conns = Connections::new();
        let (a, b) = (Outbox::new(8, 4096), Outbox::new(8, 4096));
        conns.register(a.clone());
        conns.register(b.clone());
        conns.close_all(CloseCause::Shutdown);
        for o in [&a, &b] {
            assert_eq!(o.ctl().cause(), Some(CloseCause::Shutdown));
        }
    }
}
