//! `fanout`: how long presence takes to reach a whole room. One room of N
//! members and one extra peer that joins and leaves it, round after round;
//! each round times `join` until every member has its `peer-joined`, and
//! `leave` until every member has its `peer-left`.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::client::{self, Error};
use crate::conn::{self, Target};
use crate::names::room_name;
use crate::proc_stats;
use crate::report::{Report, server_fields, spread};

/// How long a round may wait for the last member to hear of it.
const PATIENCE: Duration = Duration::from_secs(10);

pub struct Fanout {
    /// The extra peer's instance.
    pub url: String,
    /// The members' instance (the same one unless `--url2`).
    pub members_url: String,
    pub cross: bool,
    pub members: usize,
    pub rounds: usize,
    /// Time between the starts of two rounds.
    pub interval: Duration,
    pub pids: Vec<u32>,
}

/// A presence event one member read, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Joined,
    Left,
}

pub async fn fanout(p: &Fanout) -> Result<Report, Error> {
    let m = p.members.max(1);
    let room = room_name(0);
    let (tx, mut heard) = mpsc::unbounded_channel::<(Event, Instant)>();
    let errors = Arc::new(AtomicU64::new(0));
    let mut members = Vec::with_capacity(m);
    for i in 0..m {
        let (tx, errors) = (tx.clone(), errors.clone());
        let (member, _) = client::join(
            &p.members_url,
            &room,
            |_| true,
            move |text| {
                let at = Instant::now();
                if text.contains("\"type\":\"peer-joined\"") {
                    let _ = tx.send((Event::Joined, at));
                } else if text.contains("\"type\":\"peer-left\"") {
                    let _ = tx.send((Event::Left, at));
                } else if text.contains("\"type\":\"error\"")
                    && errors.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("first error at a member: {text}");
                }
            },
        )
        .await
        .map_err(|e| format!("member {i}: {}", explain(e, m)))?;
        members.push(member);
    }
    drop(tx);
    // Each member hears of every one that joined after it.
    all_heard(&mut heard, Event::Joined, m * (m - 1) / 2)
        .await
        .map_err(|e| format!("the room did not settle: {e}"))?;

    let target = Target::resolve(&p.url, 1).await?;
    let mut extra = target.open(0).await?;
    let join = conn::join_request(&room);
    let leave = json!({"type": "leave"}).to_string();
    let before = proc_stats::read_all(&p.pids);
    let (mut join_us, mut leave_us) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(p.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0..p.rounds {
        tick.tick().await;
        for (request, reply, event, samples) in [
            (&join, "joined", Event::Joined, &mut join_us),
            (&leave, "left", Event::Left, &mut leave_us),
        ] {
            let sent = Instant::now();
            let (replied, last) = tokio::join!(
                conn::request(&mut extra, request, reply),
                all_heard(&mut heard, event, m)
            );
            replied.map_err(|e| format!("round {round}: the extra peer: {}", explain(e, m)))?;
            let last = last.map_err(|e| format!("round {round}: {e}"))?;
            samples.push(last.saturating_duration_since(sent).as_micros() as u64);
        }
    }
    let mut fields = vec![
        ("cross_instance", json!(p.cross)),
        ("members", json!(m)),
        ("rounds", json!(p.rounds)),
        ("interval_ms", json!(p.interval.as_millis() as u64)),
        ("errors", json!(errors.load(Ordering::Relaxed))),
    ];
    fields.extend(spread(
        &mut join_us,
        ["join_all_p50_us", "join_all_p99_us", "join_all_max_us"],
        1.0,
    ));
    fields.extend(spread(
        &mut leave_us,
        ["leave_all_p50_us", "leave_all_p99_us", "leave_all_max_us"],
        1.0,
    ));
    let events = (p.rounds * 2 * m) as u64;
    fields.extend(server_fields(
        &p.pids,
        before,
        events,
        Some("server_cpu_us_per_event"),
    ));
    Ok(Report::new("fanout", fields))
}

/// Waits until `count` members have heard `want`; returns when the last did.
async fn all_heard(
    heard: &mut mpsc::UnboundedReceiver<(Event, Instant)>,
    want: Event,
    count: usize,
) -> Result<Instant, Error> {
    let mut last: Option<Instant> = None;
    let collecting = async {
        for got in 0..count {
            match heard.recv().await {
                Some((event, at)) if event == want => last = last.max(Some(at)),
                Some((event, _)) => {
                    return Err(format!("a member heard {event:?} while {want:?} was due"));
                }
                None => return Err(format!("the members are gone ({got}/{count} heard)")),
            }
        }
        Ok(last.unwrap_or_else(Instant::now))
    };
    tokio::time::timeout(PATIENCE, collecting)
        .await
        .map_err(|_| format!("not every member heard {want:?} within {PATIENCE:?}"))?
}

/// Adds what to do about a full room.
fn explain(e: Error, members: usize) -> Error {
    if e.contains("room_full") {
        format!(
            "{e} (a room of {members} members plus the extra peer needs the server's \
             --max-room-peers at {} or more)",
            members + 1
        )
    } else if e.contains("rate_limited") {
        format!("{e} (raise --interval-ms, or the server's --rate/--rate-burst)")
    } else {
        e
    }
}
