//! Room events for the application's backend (webhooks, `docs/events.md`):
//! the one definition of their schema, version [`EVENT_VERSION`].
//!
//! An event is recorded with the change it describes (in Redis by the same
//! Lua script, in memory under the same call), so none is missed and each
//! room's events carry a sequence number that grows by one: a consumer sees
//! a gap or a reordering at once. The same event reaches a receiver as the
//! JSON body of a webhook ([`RoomEvent::to_json`]) and sits in the Redis
//! stream as a flat map of strings ([`RoomEvent::from_fields`]).

use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;

/// The version of the event schema (the `v` of every event). A later
/// version adds fields or event types; receivers ignore what they do not
/// know.
pub const EVENT_VERSION: u32 = 1;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The room's first member joined: a new incarnation (`room_sid`), `seq` 1.
    RoomOpened,
    /// The room's last member left.
    RoomClosed,
    PeerJoined,
    /// A peer's `name` or `meta` changed (by itself or by the admin API).
    PeerUpdated,
    /// A peer resumed on another node (`node` is the new one).
    PeerMoved,
    /// A peer left; `reason` says why (`kicked` by the admin API).
    PeerLeft,
    /// The room's `meta` was set through the admin API.
    RoomMetaUpdated,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::RoomOpened,
        EventKind::RoomClosed,
        EventKind::PeerJoined,
        EventKind::PeerUpdated,
        EventKind::PeerMoved,
        EventKind::PeerLeft,
        EventKind::RoomMetaUpdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomOpened => "room-opened",
            EventKind::RoomClosed => "room-closed",
            EventKind::PeerJoined => "peer-joined",
            EventKind::PeerUpdated => "peer-updated",
            EventKind::PeerMoved => "peer-moved",
            EventKind::PeerLeft => "peer-left",
            EventKind::RoomMetaUpdated => "room-meta-updated",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event, as delivered.
#[derive(Debug, Clone, Serialize)]
pub struct RoomEvent {
    pub v: u32,
    /// Unique across the cluster and across restarts: the idempotency key.
    /// A redelivery (a retry, a replay, another node taking over) carries
    /// the same id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub room: String,
    /// This incarnation of the room: the `id` of its `room-opened`. A
    /// room that closes and opens again has a new one (and `seq` from 1).
    pub room_sid: String,
    /// 1 for `room-opened`, then one more for each event of the incarnation.
    pub seq: u64,
    /// Unix milliseconds when the change was recorded.
    pub ts: u64,
    /// The instance that held the peer (peer events), or whose change
    /// opened, closed or set the room.
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// The peer object, as the protocol's `peer-joined` carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Box<RawValue>>,
    /// `peer-left` only: `left`, `disconnected`, `timeout`, `node-lost`,
    /// `kicked`, `replaced`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `room-meta-updated` only: the room's new `meta` object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
}

/// A stream entry that is not a readable event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("no `{0}` field")]
    Missing(&'static str),
    #[error("field `{0}` is not valid")]
    Invalid(&'static str),
}

impl RoomEvent {
    /// The webhook body.
    pub fn to_json(&self) -> String {
        // Every field is a plain value or JSON already checked: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The event of a Redis stream entry `id` with its fields (what the
    /// scripts in `bus/redis/scripts.rs` write). Entries written before
    /// sequence numbers existed read with `seq` 0 and no `room_sid`.
    pub fn from_fields(
        id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<RoomEvent, EventError> {
        let get = |k: &'static str| fields.get(k).ok_or(EventError::Missing(k));
        let kind = EventKind::parse(get("event")?).ok_or(EventError::Invalid("event"))?;
        let number = |k: &'static str| -> Result<u64, EventError> {
            fields
                .get(k)
                .map_or(Ok(0), |s| s.parse().map_err(|_| EventError::Invalid(k)))
        };
        let json = |k: &'static str| -> Result<Option<Box<RawValue>>, EventError> {
            fields
                .get(k)
                .map(|s| RawValue::from_string(s.clone()).map_err(|_| EventError::Invalid(k)))
                .transpose()
        };
        let sid = fields.get("sid").cloned().unwrap_or_default();
        Ok(RoomEvent {
            v: EVENT_VERSION,
            id: id.to_owned(),
            kind,
            room: get("room")?.clone(),
            // The opening entry cannot hold its own id: it is its sid.
            room_sid: if sid.is_empty() && kind == EventKind::RoomOpened {
                id.to_owned()
            } else {
                sid
            },
            seq: number("seq")?,
            ts: number("ts")?,
            node: fields.get("node").cloned().unwrap_or_default(),
            peer_id: fields.get("peer_id").cloned(),
            peer: json("peer")?,
            reason: fields.get("reason").cloned(),
            meta: json("meta")?,
        })
    }

    /// The entry's fields, as [`RoomEvent::from_fields`] reads them (a
    /// dead letter or a replay carries the event whole).
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("v", self.v.to_string()),
            ("event", self.kind.as_str().to_owned()),
            ("room", self.room.clone()),
            ("sid", self.room_sid.clone()),
            ("seq", self.seq.to_string()),
            ("ts", self.ts.to_string()),
            ("node", self.node.clone()),
        ];
        let optional = [
            ("peer_id", self.peer_id.clone()),
            ("peer", self.peer.as_ref().map(|p| p.get().to_owned())),
            ("reason", self.reason.clone()),
            ("meta", self.meta.as_ref().map(|m| m.get().to_owned())),
        ];
        f.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_stream_entry_reads_as_the_event_and_back() {
        let f = fields(&[
            ("v", "1"),
            ("event", "peer-left"),
            ("room", "r1"),
            ("sid", "17-0"),
            ("seq", "4"),
            ("ts", "1700000000000"),
            ("node", "n1"),
            ("peer_id", "p1"),
            ("reason", "kicked"),
        ]);
        let e = RoomEvent::from_fields("18-3", &f).unwrap();
        assert_eq!(
            e.to_json(),
            r#"{"v":1,"id":"18-3","type":"peer-left","room":"r1","room_sid":"17-0","seq":4,"ts":1700000000000,"node":"n1","peer_id":"p1","reason":"kicked"}"#
        );
        let back: HashMap<String, String> = e
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(back, f);
    }

    #[test]
    fn room_opened_is_its_own_incarnation_and_json_stays_json() {
        let f = fields(&[
            ("event", "room-opened"),
            ("room", "r"),
            ("sid", ""),
            ("seq", "1"),
            ("ts", "5"),
        ]);
        assert_eq!(RoomEvent::from_fields("9-1", &f).unwrap().room_sid, "9-1");
        let meta = fields(&[
            ("event", "room-meta-updated"),
            ("room", "r"),
            ("meta", r#"{"a":[1]}"#),
        ]);
        assert!(
            RoomEvent::from_fields("1-0", &meta)
                .unwrap()
                .to_json()
                .contains(r#""meta":{"a":[1]}"#)
        );
    }

    #[test]
    fn broken_entries_are_refused_not_misread() {
        let cases = [
            (fields(&[("room", "r")]), EventError::Missing("event")),
            (
                fields(&[("event", "nope"), ("room", "r")]),
                EventError::Invalid("event"),
            ),
            (
                fields(&[("event", "peer-left")]),
                EventError::Missing("room"),
            ),
            (
                fields(&[("event", "peer-left"), ("room", "r"), ("seq", "x")]),
                EventError::Invalid("seq"),
            ),
            (
                fields(&[("event", "peer-joined"), ("room", "r"), ("peer", "{")]),
                EventError::Invalid("peer"),
            ),
        ];
        for (f, want) in cases {
            assert_eq!(RoomEvent::from_fields("1-0", &f).unwrap_err(), want);
        }
    }
}
