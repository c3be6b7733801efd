//! One endpoint's deliverer. While this node holds the endpoint's lease it
//! takes events from the log (a bounded read-ahead), queues them per room,
//! and delivers the head of each room's queue, up to `concurrency` rooms at
//! once: a room's next event waits until the one before was accepted or
//! dead-lettered, and a slow room holds up no other. Each event is tried
//! until a 2xx, with exponential backoff and jitter between tries, at most
//! `max_attempts` times; then it is dead-lettered. Either way it is settled
//! in the log, which is what lets the next holder of the lease skip it.

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Endpoint, Policy, Signer};
use crate::bus::{BusError, DeadLetter, EventLog, Lead, Taken};
use crate::event::EventKind;
use crate::metrics::WebhookMetrics;

/// Events held in memory per endpoint, taken and not yet settled.
const READ_AHEAD: usize = 2_000;
/// Events asked for per read.
const TAKE_BATCH: usize = 200;
/// How long one read waits for new events.
const TAKE_WAIT: Duration = Duration::from_secs(1);
/// The wait after a read or a settle failed (the log unreachable).
const LOG_RETRY: Duration = Duration::from_secs(1);
/// How often the backlog gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(2);

pub struct Deliverer {
    pub endpoint: Endpoint,
    pub log: Arc<dyn EventLog>,
    /// This node: the lease holder's and the consumer's name.
    pub node: String,
    pub signer: Signer,
    pub policy: Policy,
    pub client: reqwest::Client,
    pub metrics: WebhookMetrics,
}

/// What the deliverer holds: events per room, in order, and which rooms
/// have one on the way.
#[derive(Default)]
struct Held {
    rooms: HashMap<String, VecDeque<Taken>>,
    /// Rooms with events and none on the way, in the order they became so.
    ready: VecDeque<String>,
    sending: HashSet<String>,
    /// Every event held (queued or on the way), so one claimed again is
    /// not held twice.
    ids: HashSet<String>,
    /// Each room incarnation's last `seq` taken, to see gaps.
    last_seq: HashMap<String, u64>,
}

impl Held {
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Holds `t`, unless it is held already; says whether it was new.
    fn add(&mut self, t: Taken, metrics: &WebhookMetrics, endpoint: &str) -> bool {
        let key = key(&t);
        if !self.ids.insert(key) {
            return false;
        }
        let e = &t.event;
        if t.replay.is_none() && e.seq > 0 {
            let last = self.last_seq.get(&e.room_sid).copied();
            if let Some(last) = last
                && e.seq > last + 1
            {
                metrics.gaps.inc_by(e.seq - last - 1);
                tracing::error!(
                    endpoint,
                    room = %e.room,
                    from = last + 1,
                    to = e.seq - 1,
                    "room events missing before this one (lost upstream of delivery)"
                );
            }
            if last.is_none_or(|l| e.seq > l) {
                self.last_seq.insert(e.room_sid.clone(), e.seq);
            }
            if e.kind == EventKind::RoomClosed {
                self.last_seq.remove(&e.room_sid);
            }
        }
        let room = e.room.clone();
        let queue = self.rooms.entry(room.clone()).or_default();
        queue.push_back(t);
        if queue.len() == 1 && !self.sending.contains(&room) {
            self.ready.push_back(room);
        }
        true
    }

    /// The next event to send, if a room is ready.
    fn next(&mut self) -> Option<Taken> {
        let room = self.ready.pop_front()?;
        let t = self.rooms.get_mut(&room)?.pop_front()?;
        self.sending.insert(room);
        Some(t)
    }

    fn done(&mut self, t: &Taken) {
        let room = &t.event.room;
        self.ids.remove(&key(t));
        self.sending.remove(room);
        match self.rooms.get(room) {
            Some(q) if !q.is_empty() => self.ready.push_back(room.clone()),
            _ => {
                self.rooms.remove(room);
            }
        }
    }

    /// Lets go of what is queued and not on the way (the lease was lost:
    /// another node will claim it).
    fn drop_queued(&mut self) {
        for (_, q) in self.rooms.drain() {
            for t in q {
                self.ids.remove(&key(&t));
            }
        }
        self.ready.clear();
    }
}

fn key(t: &Taken) -> String {
    match &t.replay {
        Some(entry) => format!("replay {entry}"),
        None => t.event.id.clone(),
    }
}

/// A read: whether it claimed, and what it got.
type Reading = BoxFuture<'static, (bool, Result<Vec<Taken>, BusError>)>;

impl Deliverer {
    pub async fn run(self, stop: CancellationToken) {
        let me = Arc::new(self);
        let group = me.endpoint.id.clone();
        let mut warned = false;
        while let Err(e) = me.log.open_group(&group).await {
            if !warned {
                warn!(endpoint = %group, "webhook delivery waits for the event log: {e}");
                warned = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LOG_RETRY) => {}
            }
        }
        info!(endpoint = %group, url = %me.endpoint.redacted(), "webhook delivery on");
        let mut held = Held::default();
        let mut sending = FuturesUnordered::new();
        let mut reading: FuturesUnordered<Reading> = FuturesUnordered::new();
        let mut leader = false;
        // Just became the holder: every pending event is an earlier
        // holder's, taken over at once and before new ones (room order).
        let mut takeover = false;
        // At start a free lease is taken at once: no holder of this run
        // can be waiting to renew it.
        let mut seen_free = true;
        let now = Instant::now();
        let (mut lease_at, mut claim_at, mut stats_at, mut read_at) = (now, now, now, now);
        let renew = me.policy.claim_after / 3;
        loop {
            let now = Instant::now();
            if now >= lease_at {
                lease_at = now + renew;
                // A free lease is taken only when seen free twice in a row:
                // a holder that is alive renews it in between (after Redis
                // came back empty, say), and keeps the events it holds.
                let lead = me
                    .log
                    .lead(&group, &me.node, me.policy.claim_after, seen_free)
                    .await;
                seen_free = matches!(lead, Ok(Lead::Free));
                match lead {
                    Ok(Lead::Ours) if !leader => {
                        info!(endpoint = %group, "this node delivers the endpoint's events now");
                        leader = true;
                        claim_at = now;
                        takeover = true;
                    }
                    Ok(Lead::Other) if leader => {
                        warn!(endpoint = %group, "another node delivers the endpoint's events now");
                        leader = false;
                        held.drop_queued();
                    }
                    // Unreachable: what is held goes on; nothing new is read.
                    Ok(_) | Err(_) => {}
                }
            }
            if now >= stats_at {
                stats_at = now + STATS_EVERY;
                if let Ok((waiting, dead)) = me.log.backlog(&group).await {
                    me.metrics.backlog.set(waiting as i64);
                    me.metrics.dead_letters.set(dead as i64);
                }
            }
            if leader && reading.is_empty() && now >= read_at && held.len() < READ_AHEAD {
                // Later claims catch what an earlier holder still took
                // as it lost the lease.
                let claim = if takeover {
                    Some(Duration::ZERO)
                } else {
                    (now >= claim_at).then_some(me.policy.claim_after)
                };
                if claim.is_some() {
                    claim_at = now + me.policy.claim_after / 2;
                }
                let (log, group, node) = (me.log.clone(), group.clone(), me.node.clone());
                let max = TAKE_BATCH.min(READ_AHEAD - held.len());
                reading.push(Box::pin(async move {
                    let taken = match claim {
                        Some(idle) => log.claim(&group, &node, max, idle).await,
                        None => log.take(&group, &node, max, TAKE_WAIT).await,
                    };
                    (claim.is_some(), taken)
                }));
            }
            while sending.len() < me.policy.concurrency {
                let Some(t) = held.next() else { break };
                sending.push(me.clone().deliver(t));
            }
            let mut wake = lease_at.min(stats_at);
            if read_at > now {
                wake = wake.min(read_at);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                Some((claimed, r)) = reading.next(), if !reading.is_empty() => match r {
                    // Taken as the lease was lost: left pending for the
                    // node that holds it now to claim.
                    Ok(_) if !leader => {}
                    Ok(list) => {
                        let mut fresh = 0;
                        for t in list {
                            fresh += usize::from(held.add(t, &me.metrics, &group));
                        }
                        // A takeover claims until a claim brings nothing new.
                        takeover &= !claimed || fresh > 0;
                    }
                    Err(e) => {
                        debug!(endpoint = %group, "reading events failed: {e}");
                        read_at = Instant::now() + LOG_RETRY;
                    }
                },
                Some(t) = sending.next(), if !sending.is_empty() => held.done(&t),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        if leader {
            me.log.resign(&group, &me.node).await;
        }
    }

    /// Tries `t` until it is accepted or out of tries, then settles it.
    async fn deliver(self: Arc<Self>, t: Taken) -> Taken {
        let body = t.event.to_json();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.post(&t.event.id, &body).await {
                Ok(()) => break None,
                Err(why) if attempt >= self.policy.max_attempts => {
                    warn!(
                        endpoint = %self.endpoint.id,
                        event = %t.event.id,
                        attempts = attempt,
                        "webhook event dead-lettered: {why}"
                    );
                    break Some(DeadLetter {
                        event: (*t.event).clone(),
                        error: why,
                        attempts: attempt,
                        failed_at: crate::ids::cluster_ms(),
                    });
                }
                Err(why) => {
                    self.metrics.retried.inc();
                    let wait = backoff(&self.policy, attempt);
                    debug!(endpoint = %self.endpoint.id, event = %t.event.id, attempt, ?wait, "webhook try failed: {why}");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        match &outcome {
            None => {
                self.metrics.delivered.inc();
                let age = crate::ids::cluster_ms().saturating_sub(t.event.ts);
                self.metrics.latency.observe(age as f64 / 1000.0);
            }
            Some(_) => {
                self.metrics.dead_lettered.inc();
            }
        }
        self.settle(&t, outcome).await;
        t
    }

    /// Records the outcome in the log, trying for a while if it cannot be
    /// reached. Unsettled, the event is delivered again later (same id).
    async fn settle(&self, t: &Taken, dead: Option<DeadLetter>) {
        for _ in 0..30 {
            match self.log.settle(&self.endpoint.id, t, dead.clone()).await {
                Ok(()) => return,
                // The group went with Redis's data: nothing left to settle.
                Err(BusError::Unavailable(e)) if e.contains("NOGROUP") => return,
                Err(_) => tokio::time::sleep(LOG_RETRY).await,
            }
        }
        warn!(endpoint = %self.endpoint.id, event = %t.event.id, "could not record the event's delivery: it will be sent again");
    }

    /// One try: `Err` says why it failed.
    async fn post(&self, id: &str, body: &str) -> Result<(), String> {
        let timestamp = crate::ids::cluster_ms() / 1000;
        let answer = self
            .client
            .post(self.endpoint.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.signer.sign(id, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| describe(e.without_url()))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}

/// The wait after failed try number `attempt`: the base doubled for each
/// try before, capped, then jittered down by up to half ("equal jitter"),
/// so waits still grow while a fleet of retries spreads out.
pub fn backoff(policy: &Policy, attempt: u32) -> Duration {
    let doubled = policy.retry_base.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX),
    );
    let full = doubled.min(policy.retry_max);
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    full / 2 + full.mul_f64(r / 2.0)
}

/// A transport error with its causes (reqwest's own message leaves out
/// whether the connection was refused or timed out).
fn describe(e: reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_jitter_and_stops_at_the_cap() {
        let p = Policy {
            timeout: Duration::from_secs(1),
            max_attempts: 10,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            concurrency: 1,
            claim_after: Duration::from_secs(1),
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let b = backoff(&p, attempt);
                assert!(b >= full / 2 && b <= full, "attempt {attempt}: {b:?}");
            }
        }
    }
}
