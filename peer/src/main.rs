//! `signaling-peer`: a headless WebRTC peer, useful on its own as a canary
//! against a deployment:
//!
//!   signaling-peer --url ws://127.0.0.1:8080/ws --room canary --echo
//!
//! It joins, connects to every member, and prints one line per event
//! (data channel open with the time since joining, messages, departures).

use bytes::Bytes;
use clap::Parser;
use signaling_peer::{Peer, PeerEvent, PeerOptions};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Headless WebRTC peer on the signaling protocol")]
struct Args {
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    #[arg(long)]
    room: String,
    #[arg(long)]
    name: Option<String>,
    /// Send every received data-channel message back.
    #[arg(long)]
    echo: bool,
    /// Use TURN relays only.
    #[arg(long)]
    relay_only: bool,
    /// Gather every interface's candidates, not only loopback.
    #[arg(long)]
    all_interfaces: bool,
    /// Send this many numbered test messages to each peer once connected.
    #[arg(long, default_value_t = 0)]
    send: u32,
    /// Exit after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let a = Args::parse();
    let mut opts = PeerOptions::new(a.url, a.room);
    opts.name = a.name;
    opts.echo = a.echo;
    opts.relay_only = a.relay_only;
    opts.loopback = !a.all_interfaces;
    let (peer, mut events) = match Peer::start(opts).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    println!("joined as {}", peer.peer_id().await);
    let run = async {
        while let Some(ev) = events.recv().await {
            match ev {
                PeerEvent::Open { peer: other, after } => {
                    println!("open {other} after {} ms", after.as_millis());
                    for i in 0..a.send {
                        let _ = peer.send(&other, Bytes::from(format!("msg {i}"))).await;
                    }
                }
                PeerEvent::Data { from, data } => {
                    println!("data from {from}: {} bytes", data.len())
                }
                PeerEvent::Closed { peer } => println!("closed {peer}"),
                PeerEvent::SignalingResumed => println!("signaling resumed"),
                PeerEvent::Failed { peer, reason } => println!("failed {peer}: {reason}"),
            }
        }
    };
    if a.seconds > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(a.seconds), run).await;
    } else {
        run.await;
    }
    peer.close().await;
}
