//! The relay scenarios: pairs of peers in rooms of their own send `offer`s
//! to each other, at a fixed rate (`relay-latency`) or as fast as a window
//! allows (`relay-throughput`).

use serde_json::json;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::client::{self, Error, Outgoing, Peer};
use crate::names::room_name;
use crate::proc_stats;
use crate::report::{Report, percentile, server_fields};

pub struct Setup {
    pub url: String,
    pub url2: String,
    pub cross: bool,
    pub pairs: usize,
    pub duration: Duration,
    pub size: usize,
    pub pids: Vec<u32>,
}

/// What the receivers saw.
#[derive(Default)]
struct Tally {
    latencies_us: Mutex<Vec<u64>>,
    /// Across instances, what the pairs' same-instance receivers saw.
    local_us: Mutex<Vec<u64>>,
    received: AtomicU64,
    errors: AtomicU64,
}

/// Across instances, relay-latency alternates between the two receivers of
/// each pair in slices this long, so that both see the machine in the same
/// state: what crossing costs is their difference within one run, which
/// holds where two runs minutes apart differ by more than the cost itself.
const SLICE: Duration = Duration::from_millis(250);

/// One pair: `a` sends to `b` (on the second instance with `--url2`).
struct Pair {
    a: Peer,
    b_id: Arc<str>,
    /// Kept so its connection stays open.
    _b: Peer,
    /// Across instances (relay-latency): a second receiver on `a`'s instance.
    local: Option<(Arc<str>, Peer)>,
    in_flight: Arc<AtomicUsize>,
    room_free: Arc<Notify>,
}

/// Which receiver a latency is for.
#[derive(Clone, Copy)]
enum Side {
    Far,
    Local,
}

/// A receiver's frame handler: records the latency of a stamped offer.
fn receiver(
    t: Arc<Tally>,
    side: Side,
    origin: Instant,
    flight: Arc<AtomicUsize>,
    free: Arc<Notify>,
) -> impl FnMut(&str) + Send + 'static {
    move |text| {
        if let Some(sent) = stamp_of(text) {
            let us = now_ns(origin).saturating_sub(sent) / 1000;
            let list = match side {
                Side::Far => &t.latencies_us,
                Side::Local => &t.local_us,
            };
            if let Ok(mut l) = list.lock() {
                l.push(us);
            }
            t.received.fetch_add(1, Ordering::Relaxed);
            flight.fetch_sub(1, Ordering::AcqRel);
            free.notify_one();
        } else if text.contains("\"type\":\"error\"")
            && t.errors.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("first error at a receiver: {text}");
        }
    }
}

/// The clock every timestamp is read from: one process, one monotonic origin.
fn now_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// `"t=<ns>;"` inside the payload: the receiver finds it without parsing JSON.
fn stamp_of(text: &str) -> Option<u64> {
    let at = text.find("\"sdp\":\"t=")? + 9;
    let end = text[at..].find(';')? + at;
    text[at..end].parse().ok()
}

/// Lines of a browser's offer, cycled to fill the payload. Real SDP has a
/// `\r\n` escape every 40 characters or so, and escapes are most of what a
/// JSON decoder spends on it: a payload of plain letters would flatter the
/// server.
const SDP_LINES: [&str; 8] = [
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtcp-fb:96 nack pli",
    "a=candidate:1467250027 1 udp 2122260223 192.168.1.20 54321 typ host generation 0",
    "a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=ice-ufrag:F7gI",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0",
];

/// An SDP-like body of `size` bytes, as it appears inside a JSON string.
fn sdp_body(size: usize) -> Arc<str> {
    let mut body = String::with_capacity(size);
    for line in SDP_LINES.iter().cycle() {
        if body.len() + line.len() + 4 > size {
            break;
        }
        body.push_str(line);
        body.push_str("\\r\\n");
    }
    while body.len() < size {
        body.push('x');
    }
    body.into()
}

/// An offer whose SDP starts with the send time, `t=<ns>;`.
fn offer(to: &str, ns: u64, body: &str) -> String {
    format!(r#"{{"type":"offer","to":"{to}","sdp":"t={ns};{body}"}}"#)
}

/// The offer to `to`, stamped by the writer just before it goes out.
fn stamped_offer(to: &Arc<str>, body: &Arc<str>, origin: Instant) -> Outgoing {
    let (to, body) = (to.clone(), body.clone());
    Box::new(move || offer(&to, now_ns(origin), &body))
}

/// Connects the pairs; `with_local`: each also gets a receiver on the
/// sender's instance (only meaningful across instances).
async fn connect_pairs(
    s: &Setup,
    origin: Instant,
    tally: &Arc<Tally>,
    with_local: bool,
) -> Result<Vec<Pair>, Error> {
    let mut pairs = Vec::with_capacity(s.pairs);
    for i in 0..s.pairs {
        let room = room_name(i);
        let t = tally.clone();
        let errors = tally.clone();
        let sees_b = Arc::new(Notify::new());
        let sees = sees_b.clone();
        let (a, _) = client::join(
            &s.url,
            &room,
            |_| true,
            move |text| {
                if text.contains("\"type\":\"peer-joined\"") {
                    sees.notify_one();
                } else if text.contains("\"type\":\"error\"")
                    && errors.errors.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("first error at a sender: {text}");
                }
            },
        )
        .await?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let room_free = Arc::new(Notify::new());
        let (flight, free) = (in_flight.clone(), room_free.clone());
        let far = receiver(t.clone(), Side::Far, origin, flight.clone(), free.clone());
        let (b, _) = client::join(&s.url2, &room, |_| true, far).await?;
        // The sender's instance must know the receiver (across Redis too)
        // before the clock starts.
        tokio::time::timeout(Duration::from_secs(10), sees_b.notified())
            .await
            .map_err(|_| format!("pair {i}: the sender never saw the receiver join"))?;
        let local = if with_local {
            let near = receiver(t, Side::Local, origin, flight, free);
            let (c, _) = client::join(&s.url, &room, |_| true, near).await?;
            tokio::time::timeout(Duration::from_secs(10), sees_b.notified())
                .await
                .map_err(|_| format!("pair {i}: the sender never saw its local receiver"))?;
            Some((c.peer_id.as_str().into(), c))
        } else {
            None
        };
        pairs.push(Pair {
            a,
            b_id: b.peer_id.as_str().into(),
            _b: b,
            local,
            in_flight,
            room_free,
        });
    }
    Ok(pairs)
}

pub async fn relay_latency(s: &Setup, rate: u32) -> Result<Report, Error> {
    let origin = Instant::now();
    let tally = Arc::new(Tally::default());
    let pairs = connect_pairs(s, origin, &tally, s.cross).await?;
    let before = proc_stats::read_all(&s.pids);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next = 0usize;
    let body = sdp_body(s.size);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < s.duration {
        tick.tick().await;
        let elapsed = start.elapsed();
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        let local_slice = (elapsed.as_nanos() / SLICE.as_nanos()) % 2 == 1;
        while sent < due {
            let p = &pairs[next % pairs.len()];
            next += 1;
            let to = match &p.local {
                Some((local, _)) if local_slice => local,
                _ => &p.b_id,
            };
            let _ = p.a.tx.try_send(stamped_offer(to, &body, origin));
            sent += 1;
        }
    }
    // Let the last messages land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = tally.received.load(Ordering::Relaxed);
    let mut lat = tally
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let mut fields = vec![
        ("cross_instance", json!(s.cross)),
        ("pairs", json!(s.pairs)),
        ("rate", json!(rate)),
        ("size", json!(s.size)),
        ("sent", json!(sent)),
        ("received", json!(received)),
        ("lost", json!(sent.saturating_sub(received))),
        ("errors", json!(tally.errors.load(Ordering::Relaxed))),
        ("p50_us", json!(percentile(&lat, 0.50))),
        ("p90_us", json!(percentile(&lat, 0.90))),
        ("p99_us", json!(percentile(&lat, 0.99))),
        ("max_us", json!(lat.last().copied().unwrap_or(0))),
    ];
    if s.cross {
        let mut local = tally.local_us.lock().map(|l| l.clone()).unwrap_or_default();
        local.sort_unstable();
        let (far50, near50) = (percentile(&lat, 0.50), percentile(&local, 0.50));
        fields.extend([
            ("local_p50_us", json!(near50)),
            ("local_p99_us", json!(percentile(&local, 0.99))),
            ("added_p50_us", json!(far50 as i64 - near50 as i64)),
        ]);
    }
    fields.extend(server_fields(
        &s.pids,
        before,
        received,
        Some("server_cpu_us_per_msg"),
    ));
    Ok(Report::new("relay-latency", fields))
}

pub async fn relay_throughput(s: &Setup, window: usize) -> Result<Report, Error> {
    let origin = Instant::now();
    let tally = Arc::new(Tally::default());
    let pairs = connect_pairs(s, origin, &tally, false).await?;
    let before = proc_stats::read_all(&s.pids);
    let start = Instant::now();
    let deadline = start + s.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let body = sdp_body(s.size);
    for p in pairs {
        let (sent, body) = (sent.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            // The whole pair moves in and comes back out, so both of its
            // connections stay open until what is in flight has landed.
            let p = p;
            while Instant::now() < deadline {
                while p.in_flight.load(Ordering::Acquire) < window {
                    p.in_flight.fetch_add(1, Ordering::AcqRel);
                    if p.a
                        .tx
                        .send(stamped_offer(&p.b_id, &body, origin))
                        .await
                        .is_err()
                    {
                        return p;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), p.room_free.notified()).await;
            }
            p
        }));
    }
    let mut kept = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(p) = t.await {
            kept.push(p);
        }
    }
    let elapsed = start.elapsed();
    let received = tally.received.load(Ordering::Relaxed);
    // Closing a receiver while messages to it are in flight would earn its
    // sender `unknown_peer` errors that say nothing about the run.
    let landed = Instant::now() + Duration::from_secs(2);
    while kept.iter().any(|p| p.in_flight.load(Ordering::Acquire) > 0) && Instant::now() < landed {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lost = sent
        .load(Ordering::Relaxed)
        .saturating_sub(tally.received.load(Ordering::Relaxed));
    drop(kept);
    let mut fields = vec![
        ("cross_instance", json!(s.cross)),
        ("pairs", json!(s.pairs)),
        ("window", json!(window)),
        ("size", json!(s.size)),
        ("sent", json!(sent.load(Ordering::Relaxed))),
        ("received", json!(received)),
        ("lost", json!(lost)),
        ("errors", json!(tally.errors.load(Ordering::Relaxed))),
        (
            "msgs_per_s",
            json!((received as f64 / elapsed.as_secs_f64()).round() as u64),
        ),
    ];
    fields.extend(server_fields(
        &s.pids,
        before,
        received,
        Some("server_cpu_us_per_msg"),
    ));
    Ok(Report::new("relay-throughput", fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_an_offer() {
        let body = sdp_body(2048);
        assert_eq!(body.len(), 2048);
        assert!(body.matches("\\r\\n").count() > 30, "escaped like real SDP");
        let o = offer("peer", 123_456_789, &body);
        assert!(serde_json::from_str::<serde_json::Value>(&o).is_ok());
        let relayed = o.replace("\"to\":\"peer\"", "\"from\":\"x\"");
        assert_eq!(stamp_of(&relayed), Some(123_456_789));
    }
}
