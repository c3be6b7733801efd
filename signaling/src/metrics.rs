//! Process-wide counters, rendered in the Prometheus text format at `/metrics`.
//!
//! Plain atomics: every hot-path update is one relaxed add, and a scrape
//! reads them all without stopping anyone.

use signaling_protocol::{ErrorCode, RelayKind, reply::LeaveReason};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::outbox::CloseCause;

/// Upper bounds of the relay latency histogram, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

const REASONS: [LeaveReason; 4] = [
    LeaveReason::Left,
    LeaveReason::Disconnected,
    LeaveReason::Timeout,
    LeaveReason::NodeLost,
];

#[derive(Default)]
pub struct Metrics {
    connections: AtomicI64,
    connections_total: AtomicU64,
    peers: AtomicI64,
    held: AtomicI64,
    joins: AtomicU64,
    resumes: AtomicU64,
    relayed: [AtomicU64; 4],
    errors: [AtomicU64; 11],
    leaves: [AtomicU64; 4],
    forced_closes: [AtomicU64; CloseCause::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }
    pub fn peer_joined(&self) {
        self.peers.fetch_add(1, Relaxed);
        self.joins.fetch_add(1, Relaxed);
    }
    pub fn peer_left(&self, reason: LeaveReason) {
        self.peers.fetch_sub(1, Relaxed);
        self.leaves[reason_index(reason)].fetch_add(1, Relaxed);
    }
    /// A peer resumed here from another node.
    pub fn peer_arrived(&self) {
        self.peers.fetch_add(1, Relaxed);
    }
    /// A peer was handed over to another node.
    pub fn peer_departed(&self) {
        self.peers.fetch_sub(1, Relaxed);
    }
    pub fn held_changed(&self, delta: i64) {
        self.held.fetch_add(delta, Relaxed);
    }
    pub fn resumed(&self) {
        self.resumes.fetch_add(1, Relaxed);
    }
    pub fn relayed(&self, kind: RelayKind, recipients: u64) {
        self.relayed[kind.index()].fetch_add(recipients, Relaxed);
    }
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Relaxed);
    }
    pub fn forced_close(&self, why: CloseCause) {
        if let Some(i) = CloseCause::ALL.iter().position(|w| *w == why) {
            self.forced_closes[i].fetch_add(1, Relaxed);
        }
    }
    /// Time from reading a relayed frame to writing it to the recipient's socket.
    pub fn relay_latency(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    pub fn connections(&self) -> i64 {
        self.connections.load(Relaxed)
    }

    /// The Prometheus text exposition; `rooms` is the number of rooms with local members.
    pub fn render(&self, rooms: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            );
        };
        gauge(
            "signaling_connections",
            "Open WebSocket connections.",
            self.connections(),
        );
        gauge(
            "signaling_rooms",
            "Rooms with members on this instance.",
            rooms as i64,
        );
        gauge(
            "signaling_peers",
            "Peers joined on this instance, held ones included.",
            self.peers.load(Relaxed),
        );
        gauge(
            "signaling_peers_held",
            "Dropped peers held for resume.",
            self.held.load(Relaxed),
        );
        counter(
            &mut out,
            "signaling_connections_total",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed),
        );
        counter(
            &mut out,
            "signaling_joins_total",
            "Successful joins (resumes excluded).",
            self.joins.load(Relaxed),
        );
        counter(
            &mut out,
            "signaling_resumes_total",
            "Successful resumes.",
            self.resumes.load(Relaxed),
        );
        labelled(
            &mut out,
            "signaling_messages_relayed_total",
            "Relayed messages by type, counted per recipient.",
            "type",
            RelayKind::ALL
                .iter()
                .map(|k| (k.type_name(), self.relayed[k.index()].load(Relaxed))),
        );
        labelled(
            &mut out,
            "signaling_errors_total",
            "Error replies by code.",
            "code",
            ErrorCode::ALL
                .iter()
                .map(|c| (c.as_str(), self.errors[c.index()].load(Relaxed))),
        );
        labelled(
            &mut out,
            "signaling_peers_left_total",
            "Peers that left, by reason.",
            "reason",
            REASONS
                .iter()
                .map(|r| (r.as_str(), self.leaves[reason_index(*r)].load(Relaxed))),
        );
        labelled(
            &mut out,
            "signaling_forced_closes_total",
            "Connections closed by the server, by cause.",
            "cause",
            CloseCause::ALL
                .iter()
                .enumerate()
                .map(|(i, w)| (w.label(), self.forced_closes[i].load(Relaxed))),
        );
        let name = "signaling_relay_latency_seconds";
        let _ = write!(
            out,
            "# HELP {name} Time from reading a relayed frame to writing it to the recipient.\n# TYPE {name} histogram\n"
        );
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *le as f64 / 1e6
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

fn reason_index(r: LeaveReason) -> usize {
    REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
    );
}

fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (l, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {v}");
    }
}
