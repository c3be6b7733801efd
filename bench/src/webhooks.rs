//! The webhook scenarios. The bench runs the receiver itself: a plain
//! HTTP/1.1 server (hyper, keep-alive) on a loopback `--hook-listen` address
//! that answers every POST 204 and counts what arrives, while clients churn
//! rooms on the server: each joins a fresh room and leaves it again, which
//! gives four events (`room-opened`, `peer-joined`, `peer-left`,
//! `room-closed`). The server must have been started with `--webhook-url
//! http://ADDR/...` for that address.
//!
//! - `webhook-throughput`: the clients churn as fast as they can for
//!   `--duration`; events generated and received per second, and how long
//!   the receiver takes to catch up once the load stops.
//! - `webhook-join-latency`: the clients churn at a moderate fixed rate of
//!   joins; `join`→`joined` percentiles, to compare a server with webhooks
//!   with one without (the receiver then hears nothing).
//!
//! With webhooks on, both first warm up: one join and leave, and a wait
//! until the receiver has its four events (`warm_up_s`), so the load meets
//! delivery under way.

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Error;
use crate::conn::{self, Target, Ws};
use crate::names::room_name;
use crate::proc_stats;
use crate::report::{Report, per_second, round, server_fields, spread};

/// Events one join and leave of a fresh room give.
const EVENTS_PER_CYCLE: u64 = 4;
/// After the load: how long the receiver may hear nothing new before the
/// events still missing count as lost.
const QUIET: Duration = Duration::from_secs(10);
/// After the load: the longest wait for the receiver to catch up.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
/// The longest wait for the warm-up's events.
const WARM_UP_LIMIT: Duration = Duration::from_secs(30);
/// How long a clean close of a client may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the receiver has heard.
#[derive(Default)]
pub struct Counts {
    /// Requests answered 204, repeats included.
    events: AtomicU64,
    /// Requests answered 400: not a POST, no `webhook-id`, or an empty body.
    refused: AtomicU64,
    /// Connections the server opened to the receiver.
    connections: AtomicU64,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    ids: HashSet<String>,
    duplicates: u64,
    last: Option<Instant>,
}

impl Counts {
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    fn last(&self) -> Option<Instant> {
        self.tally.lock().ok().and_then(|t| t.last)
    }

    fn duplicates(&self) -> u64 {
        self.tally.lock().map(|t| t.duplicates).unwrap_or(0)
    }

    fn heard(&self, id: String) {
        let now = Instant::now();
        if let Ok(mut t) = self.tally.lock() {
            if !t.ids.insert(id) {
                t.duplicates += 1;
            }
            t.last = Some(now);
        }
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// The webhook receiver: runs until dropped.
pub struct Receiver {
    pub counts: Arc<Counts>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    pub async fn start(addr: SocketAddr) -> Result<Receiver, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("webhook receiver: bind {addr}: {e}"))?;
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        let (c, s) = (counts.clone(), stop.clone());
        tokio::spawn(async move {
            // Dropped with the accept loop: the connections go too.
            let mut conns = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => break,
                    a = listener.accept() => a,
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                let Ok((tcp, _)) = accepted else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                c.connections.fetch_add(1, Ordering::Relaxed);
                let c = c.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| answer(req, c.clone()));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Receiver { counts, stop })
    }
}

/// Reads the whole request (so the connection can be kept alive), then 204.
async fn answer(
    req: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<String>, Infallible> {
    let post = req.method() == Method::POST;
    let id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = std::pin::pin!(req.into_body());
    let mut bytes = 0;
    let mut whole = true;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        match frame {
            Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    let status = match id {
        Some(id) if post && whole && bytes > 0 => {
            counts.heard(id);
            StatusCode::NO_CONTENT
        }
        _ => {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            StatusCode::BAD_REQUEST
        }
    };
    let mut r = Response::new(String::new());
    *r.status_mut() = status;
    Ok(r)
}

/// The load: `clients` connections, each joining a fresh room and leaving
/// it, again and again.
pub struct Churn {
    pub url: String,
    pub clients: usize,
    pub duration: Duration,
    /// Joins per second over all clients; as fast as they go if `None`.
    pub rate: Option<f64>,
}

/// What the load did.
struct Churned {
    /// From the start to the end of the last client's last round.
    wall: Duration,
    started: Instant,
    ended: Instant,
    joins: u64,
    failed: u64,
    /// `join` sent → `joined` read, µs.
    join_us: Vec<u64>,
}

#[derive(Default)]
struct ClientRun {
    joins: u64,
    failed: u64,
    join_us: Vec<u64>,
    first_error: Option<Error>,
    /// When its last round ended (before the close).
    done: Option<Instant>,
}

async fn churn(p: &Churn) -> Result<Churned, Error> {
    let n = p.clients.max(1);
    let target = Target::resolve(&p.url, n).await?;
    // Connected before the clock starts: the handshakes are not measured.
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        sockets.push(target.open(i).await?);
    }
    let next_room = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + p.duration;
    let mut tasks = JoinSet::new();
    for (c, ws) in sockets.into_iter().enumerate() {
        let next_room = next_room.clone();
        // Client c takes the join slots c, c + n, c + 2n, ...
        let slot = p.rate.map(|r| {
            move |j: u64| started + Duration::from_secs_f64((c as f64 + (j * n as u64) as f64) / r)
        });
        tasks.spawn(async move {
            let mut ws = ws;
            let mut run = ClientRun::default();
            let leave = json!({"type": "leave"}).to_string();
            for j in 0.. {
                match &slot {
                    Some(at) => {
                        let at = at(j);
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                    }
                    None if Instant::now() >= deadline => break,
                    None => {}
                }
                let room = room_name(next_room.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let step = async {
                    conn::request(&mut ws, &conn::join_request(&room), "joined").await?;
                    let joined = sent.elapsed();
                    conn::request(&mut ws, &leave, "left").await?;
                    Ok::<_, Error>(joined)
                };
                match step.await {
                    Ok(joined) => {
                        run.joins += 1;
                        run.join_us.push(joined.as_micros() as u64);
                    }
                    Err(e) => {
                        run.failed += 1;
                        run.first_error.get_or_insert(e);
                        break;
                    }
                }
            }
            run.done = Some(Instant::now());
            close(ws).await;
            run
        });
    }
    let mut out = Churned {
        wall: Duration::ZERO,
        started,
        ended: started,
        joins: 0,
        failed: 0,
        join_us: Vec::new(),
    };
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        let run = r.map_err(|e| format!("client task: {e}"))?;
        out.ended = out.ended.max(run.done.unwrap_or(started));
        out.joins += run.joins;
        out.failed += run.failed;
        out.join_us.extend(run.join_us);
        if first_error.is_none() {
            first_error = run.first_error;
        }
    }
    if let Some(e) = first_error {
        eprintln!("first failure: {e}");
    }
    out.wall = out.ended - started;
    Ok(out)
}

/// A clean close, so the server sees no dropped connection.
async fn close(mut ws: Ws) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Waits until the receiver has heard `expected` events in all, or nothing
/// new for [`QUIET`], or [`DRAIN_LIMIT`] is over; true if it heard them all.
async fn drain(counts: &Counts, expected: u64) -> bool {
    let start = Instant::now();
    loop {
        if counts.events() >= expected {
            return true;
        }
        let now = Instant::now();
        let quiet_since = counts.last().unwrap_or(start).max(start);
        if now - quiet_since >= QUIET || now - start >= DRAIN_LIMIT {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Before the load: one client joins a room of its own and leaves it, and
/// this waits until the receiver has heard those four events, so the load
/// starts with delivery under way (a server may take a few seconds after
/// it starts to take up an endpoint). Returns how long that took.
async fn warm_up(url: &str, counts: &Counts) -> Result<Duration, Error> {
    let start = Instant::now();
    let target = Target::resolve(url, 1).await?;
    let mut ws = target.open(0).await?;
    let room = format!("{}-w", room_name(0));
    conn::request(&mut ws, &conn::join_request(&room), "joined").await?;
    conn::request(&mut ws, &json!({"type": "leave"}).to_string(), "left").await?;
    close(ws).await;
    let heard = counts.events() >= EVENTS_PER_CYCLE
        || tokio::time::timeout(WARM_UP_LIMIT, async {
            while counts.events() < EVENTS_PER_CYCLE {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok();
    if !heard {
        return Err(format!(
            "the receiver heard {} of the warm-up's {EVENTS_PER_CYCLE} events within \
             {WARM_UP_LIMIT:?}: is the server's --webhook-url this --hook-listen?",
            counts.events()
        ));
    }
    Ok(start.elapsed())
}

/// `signaling_webhook_delivered_total` from the server's `/metrics` (on
/// the WebSocket URL's host and port), summed over endpoints; `None` if
/// it cannot be read or has no such series.
async fn server_delivered(url: &str) -> Option<u64> {
    let authority = conn::authority(url)?;
    let reading = async {
        let mut tcp = TcpStream::connect(authority).await.ok()?;
        let request =
            format!("GET /metrics HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .ok()??;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("signaling_webhook_delivered_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

pub struct Throughput {
    pub churn: Churn,
    pub hook: SocketAddr,
    pub pids: Vec<u32>,
}

pub async fn webhook_throughput(p: &Throughput) -> Result<Report, Error> {
    let receiver = Receiver::start(p.hook).await?;
    let counts = receiver.counts.clone();
    let warm_up = warm_up(&p.churn.url, &counts).await?;
    // Counted from here: the warm-up's events are not the load's.
    let base = counts.events();
    let before = proc_stats::read_all(&p.pids);
    let own_before = proc_stats::read(std::process::id());
    let load = churn(&p.churn).await?;
    let heard_in_load = counts.events() - base;
    let at_load_end = proc_stats::read_all(&p.pids);
    let own_at_load_end = proc_stats::read(std::process::id());
    let generated = load.joins * EVENTS_PER_CYCLE;
    let complete = drain(&counts, base + generated).await;
    let after_drain = proc_stats::read_all(&p.pids);
    let own_after = proc_stats::read(std::process::id());
    let heard = counts.events() - base;
    let last = counts.last().filter(|l| *l > load.started);
    // From the end of the load to the receiver's last event (none after
    // it: caught up already).
    let drain = last
        .map(|l| l.saturating_duration_since(load.ended))
        .unwrap_or_default();
    let mut fields = vec![
        ("clients", json!(p.churn.clients)),
        ("warm_up_s", json!(round(warm_up.as_secs_f64(), 2))),
        ("load_s", json!(round(load.wall.as_secs_f64(), 2))),
        ("joins", json!(load.joins)),
        ("failed", json!(load.failed)),
        ("events_generated", json!(generated)),
        ("generated_per_s", json!(per_second(generated, load.wall))),
        ("received_in_load", json!(heard_in_load)),
        (
            "received_per_s_in_load",
            json!(per_second(heard_in_load, load.wall)),
        ),
        ("events_received", json!(heard)),
        ("missing", json!(generated.saturating_sub(heard))),
        ("duplicates", json!(counts.duplicates())),
        ("refused", json!(counts.refused.load(Ordering::Relaxed))),
        ("drain_s", json!(round(drain.as_secs_f64(), 2))),
    ];
    // Delivery with the load gone: the receiver and the server alone.
    let in_drain = heard.saturating_sub(heard_in_load);
    let timed_drain = drain >= Duration::from_millis(500) && in_drain > 0;
    if timed_drain {
        fields.push(("drain_per_s", json!(per_second(in_drain, drain))));
    }
    // From the first join to the last event heard.
    if let Some(l) = last {
        let span = l.saturating_duration_since(load.started);
        fields.push(("delivered_per_s", json!(per_second(heard, span))));
    }
    fields.push((
        "hook_connections",
        json!(counts.connections.load(Ordering::Relaxed)),
    ));
    if let Some(d) = server_delivered(&p.churn.url).await {
        fields.push(("server_delivered", json!(d)));
    }
    // Everything the server did (churn and delivery) per event, then what
    // the drain alone cost per event delivered in it.
    fields.extend(server_fields(
        &p.pids,
        before,
        heard,
        Some("server_cpu_us_per_event"),
    ));
    if let (Some((c0, _)), Some((c1, _))) = (at_load_end, after_drain)
        && timed_drain
    {
        let us = c1.saturating_sub(c0).as_secs_f64() * 1e6 / in_drain as f64;
        fields.push(("server_cpu_us_per_event_drain", json!(round(us, 1))));
    }
    if let (Some((c0, _)), Some((c1, _))) = (own_before, own_after) {
        fields.push((
            "bench_cpu_ms",
            json!(c1.saturating_sub(c0).as_millis() as u64),
        ));
    }
    // In the drain the bench only receives: the receiver's cost per event.
    if let (Some((c0, _)), Some((c1, _))) = (own_at_load_end, own_after)
        && timed_drain
    {
        let us = c1.saturating_sub(c0).as_secs_f64() * 1e6 / in_drain as f64;
        fields.push(("bench_cpu_us_per_event_drain", json!(round(us, 1))));
    }
    if !complete {
        eprintln!(
            "the receiver heard {heard} of {generated} events; nothing more within {QUIET:?} \
             (a backlog past the server's --webhook-backlog is dead-lettered)"
        );
    }
    Ok(Report::new("webhook-throughput", fields))
}

pub struct JoinLatency {
    pub churn: Churn,
    /// Where the receiver listens, if one runs.
    pub hook: Option<SocketAddr>,
    pub pids: Vec<u32>,
}

pub async fn webhook_join_latency(p: &JoinLatency) -> Result<Report, Error> {
    let receiver = match p.hook {
        Some(addr) => Some(Receiver::start(addr).await?),
        None => None,
    };
    // Whether the server delivers webhooks at all: its `/metrics` has the
    // series then.
    let on = server_delivered(&p.churn.url).await.is_some();
    let mut warm = None;
    if let (true, Some(r)) = (on, &receiver) {
        warm = Some(warm_up(&p.churn.url, &r.counts).await?);
    }
    let base = receiver.as_ref().map_or(0, |r| r.counts.events());
    let before = proc_stats::read_all(&p.pids);
    let mut load = churn(&p.churn).await?;
    // The server's CPU over the load only: with webhooks, delivery keeps up.
    let cpu = server_fields(&p.pids, before, load.joins, Some("server_cpu_us_per_join"));
    let mut fields = vec![
        ("webhooks", json!(on)),
        ("clients", json!(p.churn.clients)),
        ("load_s", json!(round(load.wall.as_secs_f64(), 2))),
        ("joins", json!(load.joins)),
        ("failed", json!(load.failed)),
        ("joins_per_s", json!(per_second(load.joins, load.wall))),
    ];
    fields.extend(spread(
        &mut load.join_us,
        ["join_p50_us", "join_p99_us", "join_max_us"],
        1.0,
    ));
    if let Some(r) = &receiver {
        let counts = &r.counts;
        if on {
            drain(counts, base + load.joins * EVENTS_PER_CYCLE).await;
        }
        fields.push(("hook_events", json!(counts.events() - base)));
        if let Some(l) = counts.last().filter(|l| *l > load.started) {
            let lag = l.saturating_duration_since(load.ended);
            fields.push(("drain_ms", json!(round(lag.as_secs_f64() * 1e3, 1))));
        }
    }
    if let Some(w) = warm {
        fields.push(("warm_up_s", json!(round(w.as_secs_f64(), 2))));
    }
    fields.extend(cpu);
    Ok(Report::new("webhook-join-latency", fields))
}
