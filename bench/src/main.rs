//! `signaling-bench`: a load generator that speaks protocol v1 to a running
//! server (or two instances of one cluster) and prints one summary line per
//! scenario (`--json` for machines).
//!
//! Scenarios:
//! - `relay-latency`: P pairs in separate rooms send 2 KB `offer`s to each
//!   other at a fixed total rate; one-way latency percentiles, lost, errors.
//! - `relay-throughput`: P pairs send as fast as a bounded window allows;
//!   relayed messages per second and, with `--pid`, the server's CPU time per
//!   relayed message (the figure that holds when the generator shares the cores).
//!
//! With `--url2`, each pair's receiver connects to the second instance, so
//! every message crosses Redis. Raise the server's `--rate`/`--rate-burst` for
//! throughput runs: the default limit (50/s per connection) is the ceiling otherwise.
//! Only loopback addresses are accepted.

mod client;
mod proc_stats;
mod scenarios;

use clap::{Parser, ValueEnum};
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    RelayLatency,
    RelayThroughput,
}

#[derive(Parser, Debug)]
#[command(about = "Load generator for the signaling server")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// WebSocket URL of the instance the senders use.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// WebSocket URL of a second instance of the cluster: receivers use it.
    #[arg(long)]
    url2: Option<String>,
    /// Pairs of peers, each in a room of its own.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Total messages per second (relay-latency).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Messages in flight per pair (relay-throughput).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload (`sdp`) size in bytes.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Server pids (comma-separated) whose CPU time and RSS to report.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// One JSON object per scenario instead of the text line.
    #[arg(long)]
    json: bool,
}

fn loopback_only(url: &str) -> Result<(), String> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next())
        .unwrap_or("");
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

#[tokio::main]
async fn main() {
    let a = Args::parse();
    for u in std::iter::once(&a.url).chain(a.url2.iter()) {
        if let Err(e) = loopback_only(u) {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
    let setup = scenarios::Setup {
        url: a.url.clone(),
        url2: a.url2.clone().unwrap_or_else(|| a.url.clone()),
        cross: a.url2.is_some(),
        pairs: a.pairs.max(1),
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        size: a.size,
        pids: a.pid.clone(),
    };
    let result = match a.scenario {
        Scenario::RelayLatency => scenarios::relay_latency(&setup, a.rate.max(1)).await,
        Scenario::RelayThroughput => scenarios::relay_throughput(&setup, a.window.max(1)).await,
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
