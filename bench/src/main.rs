//! `signaling-bench`: a load generator that speaks protocol v1 to a running
//! server (or two instances of one cluster) and prints one summary line per
//! scenario (`--json` for machines).
//!
//! Scenarios:
//! - `relay-latency`: `--pairs` pairs in separate rooms send `--size`-byte
//!   `offer`s to each other at a fixed total `--rate` for `--duration`
//!   seconds; one-way latency percentiles, lost, errors.
//! - `relay-throughput`: the pairs send as fast as a bounded `--window`
//!   allows; relayed messages per second and, with `--pid`, the server's CPU
//!   time per relayed message (the figure that holds when the generator shares
//!   the cores).
//! - `idle-connections`: `--connections` (10,000; `--many` for 100,000)
//!   connections join rooms of `--room-size` (10), `--concurrency` (500) at a
//!   time, and stay open, silent, for `--hold` seconds (2); joined, failed,
//!   lost (closed by the server while idle), joins per second over the connect
//!   phase, and with `--pid` the server's RSS before and after and per
//!   connection. Each connection is one task with a 4 KiB read buffer; it
//!   keeps reading, so the server's pings get their pongs (the only keepalive
//!   protocol v1 asks for). The connections come from 127.0.0.1, 127.0.0.2, ...
//!   (one source per 20,000, so the ephemeral ports last), and the open-file
//!   limit is raised as far as it goes: the server needs as many descriptors,
//!   so start it with a high enough `ulimit -n`. Measure RSS on a freshly
//!   started server: memory freed by an earlier run stays in its allocator.
//! - `fanout`: one room of `--room-size` (50) members and one extra peer that
//!   joins and leaves it `--rounds` (200) times, a round every
//!   `--interval-ms` (50, which keeps the extra under the default rate limit);
//!   p50/p99/max in µs from `join` until every member has its `peer-joined`,
//!   and from `leave` until every member has its `peer-left`. The room holds
//!   members + 1 peers: the server's `--max-room-peers` (default 50) must
//!   allow it. With `--url2`, the members use the second instance.
//! - `join-storm`: `--clients` (5,000) clients join `--rooms` (500) rooms,
//!   client i room i mod rooms, `--concurrency` (500) connecting or joining
//!   at a time; joins per second (from the first `join` sent to the last
//!   `joined`), `join`→`joined` latency in ms, the connect (TCP + WebSocket
//!   handshake) time apart, failures.
//! - `webhook-throughput`: the bench runs a webhook receiver (HTTP/1.1,
//!   keep-alive, 204 to every POST) on `--hook-listen`, where the server's
//!   `--webhook-url` points; `--clients` (32) connections each join a fresh
//!   room and leave it, as fast as they can for `--duration` seconds (or at
//!   `--rate` joins per second in all), each round giving four events. Events
//!   generated and received per second, then how long the receiver takes to
//!   catch up once the load stops (`drain_s`) and the rate it is served at
//!   meanwhile; missing and duplicate events; with `--pid`, server CPU per
//!   event. Before the load, one join and leave, and a wait until the
//!   receiver has heard them (`warm_up_s`). Give the server a
//!   `--webhook-backlog` above what the run generates, or the oldest events
//!   are dead-lettered unsent.
//! - `webhook-join-latency`: the same churn at a moderate fixed `--rate`
//!   (200 joins per second over `--clients` (20) connections) for
//!   `--duration`; `join`→`joined` p50/p99/max in µs. Run it against a server
//!   with webhooks and one without: delivery is off the join path, so the two
//!   should not differ. `webhooks` says whether the server has an endpoint
//!   (its `/metrics` has `signaling_webhook_delivered_total`); with
//!   `--hook-listen` the receiver runs, the line has what it heard
//!   (`hook_events`), and a server with webhooks is warmed up first as above.
//!
//! With `--pid`, every scenario reports the server's CPU time over the
//! measured phase and its RSS, from /proc. `idle-connections` and
//! `join-storm` also report `listen_overflows`, connections the kernel
//! dropped for a full listen queue (counted for the whole network namespace):
//! each is retried a second later, so a `--concurrency` above the server's
//! listen backlog shows as connect times of about 1 s.
//!
//! With `--url2`, each relay pair's receiver connects to the second instance,
//! so every message crosses Redis; `idle-connections` and `join-storm` use
//! `--url` only. `relay-latency` across instances also gives each pair a
//! receiver on the sender's instance and alternates between the two every
//! 250 ms: `local_p50_us`, `local_p99_us` and `added_p50_us` (what crossing
//! adds at the median) come from one run and one state of the machine. Raise the server's `--rate`/`--rate-burst` for throughput
//! runs: the default limit (50/s per connection) is the ceiling otherwise.
//! Only loopback addresses are accepted.

mod client;
mod conn;
mod crowd;
mod fanout;
mod fd_limit;
mod idle;
mod join_storm;
mod names;
mod proc_stats;
mod relay;
mod report;
mod webhooks;

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    RelayLatency,
    RelayThroughput,
    IdleConnections,
    Fanout,
    JoinStorm,
    WebhookThroughput,
    WebhookJoinLatency,
}

#[derive(Parser, Debug)]
#[command(about = "Load generator for the signaling server")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// WebSocket URL of the instance the senders use.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// WebSocket URL of a second instance of the cluster: receivers use it
    /// (relay), or the members (fanout).
    #[arg(long)]
    url2: Option<String>,
    /// Pairs of peers, each in a room of its own (relay).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Total messages per second (relay-latency, default 2000), or joins
    /// per second (webhook-join-latency, default 200; webhook-throughput,
    /// default as fast as the clients go).
    #[arg(long)]
    rate: Option<u32>,
    /// Messages in flight per pair (relay-throughput).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// How long to measure, in seconds (relay, webhook-*).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload (`sdp`) size in bytes (relay).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Connections to open (idle-connections).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// 100,000 connections instead of `--connections` (idle-connections).
    #[arg(long)]
    many: bool,
    /// Peers per room (idle-connections, default 10), or members of the room
    /// (fanout, default 50).
    #[arg(long)]
    room_size: Option<usize>,
    /// Connections connecting or joining at once (idle-connections, join-storm).
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
    /// Seconds every connection stays open before the server's RSS is read
    /// (idle-connections).
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Times the extra peer joins and leaves (fanout).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Milliseconds between the starts of two rounds; each round costs the
    /// extra peer two messages of its rate limit (fanout).
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Clients that join (join-storm, default 5000), or that churn rooms
    /// (webhook-throughput, default 32; webhook-join-latency, default 20).
    #[arg(long)]
    clients: Option<usize>,
    /// Rooms the clients share out (join-storm).
    #[arg(long, default_value_t = 500)]
    rooms: usize,
    /// Loopback address the bench's webhook receiver listens on; the
    /// server's `--webhook-url` must point there (webhook-*).
    #[arg(long)]
    hook_listen: Option<SocketAddr>,
    /// Server pids (comma-separated) whose CPU time and RSS to report.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// One JSON object per scenario instead of the text line.
    #[arg(long)]
    json: bool,
}

fn loopback_only(url: &str) -> Result<(), String> {
    let host = conn::authority(url).unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let ok = host == "localhost" || host == "[::1]" || host.starts_with("127.");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{url}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed"
        ))
    }
}

fn relay_setup(a: &Args) -> relay::Setup {
    relay::Setup {
        url: a.url.clone(),
        url2: a.url2.clone().unwrap_or_else(|| a.url.clone()),
        cross: a.url2.is_some(),
        pairs: a.pairs.max(1),
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        size: a.size,
        pids: a.pid.clone(),
    }
}

fn churn(a: &Args, clients: usize, rate: Option<u32>) -> webhooks::Churn {
    webhooks::Churn {
        url: a.url.clone(),
        clients: a.clients.unwrap_or(clients).max(1),
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        rate: a.rate.or(rate).map(|r| f64::from(r.max(1))),
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    for u in std::iter::once(&a.url).chain(a.url2.iter()) {
        if let Err(e) = loopback_only(u) {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
    if let Some(hook) = a.hook_listen
        && !hook.ip().is_loopback()
    {
        eprintln!("--hook-listen {hook}: only loopback addresses are allowed");
        std::process::exit(2);
    }
    let result = match a.scenario {
        Scenario::RelayLatency => {
            relay::relay_latency(&relay_setup(&a), a.rate.unwrap_or(2000).max(1)).await
        }
        Scenario::RelayThroughput => {
            relay::relay_throughput(&relay_setup(&a), a.window.max(1)).await
        }
        Scenario::IdleConnections => {
            idle::idle_connections(&idle::Idle {
                url: a.url.clone(),
                connections: if a.many {
                    100_000
                } else {
                    a.connections.max(1)
                },
                room_size: a.room_size.unwrap_or(10).max(1),
                concurrency: a.concurrency.max(1),
                hold: Duration::from_secs_f64(a.hold.max(0.0)),
                pids: a.pid.clone(),
            })
            .await
        }
        Scenario::Fanout => {
            fanout::fanout(&fanout::Fanout {
                url: a.url.clone(),
                members_url: a.url2.clone().unwrap_or_else(|| a.url.clone()),
                cross: a.url2.is_some(),
                members: a.room_size.unwrap_or(50).max(1),
                rounds: a.rounds.max(1),
                interval: Duration::from_millis(a.interval_ms.max(1)),
                pids: a.pid.clone(),
            })
            .await
        }
        Scenario::JoinStorm => {
            join_storm::join_storm(&join_storm::Storm {
                url: a.url.clone(),
                clients: a.clients.unwrap_or(5000).max(1),
                rooms: a.rooms.max(1),
                concurrency: a.concurrency.max(1),
                pids: a.pid.clone(),
            })
            .await
        }
        Scenario::WebhookThroughput => {
            let Some(hook) = a.hook_listen else {
                eprintln!(
                    "webhook-throughput needs --hook-listen (and the server's --webhook-url)"
                );
                std::process::exit(2);
            };
            webhooks::webhook_throughput(&webhooks::Throughput {
                churn: churn(&a, 32, None),
                hook,
                pids: a.pid.clone(),
            })
            .await
        }
        Scenario::WebhookJoinLatency => {
            webhooks::webhook_join_latency(&webhooks::JoinLatency {
                churn: churn(&a, 20, Some(200)),
                hook: a.hook_listen,
                pids: a.pid.clone(),
            })
            .await
        }
    };
    match result {
        Ok(report) => {
            if a.json {
                println!("{}", report.json());
            } else {
                println!("{}", report.line());
            }
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
