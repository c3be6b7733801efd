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
use std::collections::BTreeMap;
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
    /// Send this file to each peer once connected, in 16 KiB messages.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
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
    let file = match &a.file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                std::process::exit(1);
            }
        },
        None => None,
    };
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    let run = async {
        while let Some(ev) = events.recv().await {
            match ev {
                PeerEvent::Open { peer: other, after } => {
                    println!("open {other} after {} ms", after.as_millis());
                    let st = stats.entry(other.clone()).or_default();
                    for i in 0..a.send {
                        let msg = Bytes::from(format!("msg {i}"));
                        if peer.send(&other, msg.clone()).await.is_ok() {
                            st.count_sent(msg.len());
                        }
                    }
                    if let Some(f) = &file {
                        for chunk in f.chunks(16 * 1024) {
                            if peer.send(&other, f.slice_ref(chunk)).await.is_ok() {
                                st.count_sent(chunk.len());
                            }
                        }
                        println!("sent {} bytes of file to {other}", f.len());
                    }
                }
                PeerEvent::Data { from, data } => {
                    let st = stats.entry(from).or_default();
                    st.recv_msgs += 1;
                    st.recv_bytes += data.len() as u64;
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
        tokio::select! {
            _ = run => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    for (other, st) in &stats {
        println!(
            "stats {other}: sent {} msgs / {} bytes, received {} msgs / {} bytes",
            st.sent_msgs, st.sent_bytes, st.recv_msgs, st.recv_bytes
        );
    }
    peer.close().await;
}

#[derive(Default)]
struct Stats {
    sent_msgs: u64,
    sent_bytes: u64,
    recv_msgs: u64,
    recv_bytes: u64,
}

impl Stats {
    fn count_sent(&mut self, bytes: usize) {
        self.sent_msgs += 1;
        self.sent_bytes += bytes as u64;
    }
}
