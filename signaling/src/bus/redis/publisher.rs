//! The one ordered queue of everything this node writes to Redis: presence
//! changes and relayed messages. One task drains it in pipelined batches over
//! a connection of its own (`resp.rs`), so each peer's events and each
//! sender's messages keep their order, and a batch that fails on a lost
//! connection is sent again once Redis is back.

use signaling_protocol::reply::LeaveReason;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::keys::{Keys, payload};
use super::{Shared, resp, scripts};
use crate::bus::{PeerInfo, PresenceEvent};
use crate::ids::{NodeId, PeerId, RoomId, unix_ms};

/// Most operations sent in one round trip.
const BATCH: usize = 512;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long connecting, or the answers to one batch, may take.
const TIMEOUT: Duration = Duration::from_secs(2);

pub enum Op {
    /// A change of one of this node's peers.
    Presence { room: RoomId, event: PresenceEvent },
    /// A relayed message for another node or a room channel (or resume
    /// traffic on a node channel).
    Publish { channel: String, payload: Vec<u8> },
}

/// Roughly what an operation costs beyond its strings (the queue's slot,
/// the command's framing).
const OP_OVERHEAD: usize = 64;

impl Op {
    /// What the operation counts against the queue's byte cap: the same
    /// figure when it is queued and when it is written.
    pub fn bytes(&self) -> usize {
        OP_OVERHEAD
            + match self {
                Op::Publish { channel, payload } => channel.len() + payload.len(),
                Op::Presence { room, event } => {
                    room.as_str().len()
                        + match event {
                            PresenceEvent::Joined(p)
                            | PresenceEvent::Updated(p)
                            | PresenceEvent::Moved(p) => p.object.len(),
                            PresenceEvent::Left { peer, .. } => peer.as_str().len(),
                        }
                }
            }
    }
}

pub async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut batch: Vec<Op> = Vec::with_capacity(BATCH);
    // Our own connection, and the link's connect it was made under.
    let mut conn: Option<(resp::Conn, u64)> = None;
    let mut next_connect = 1;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(op) => batch.push(op),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let (mut c, connect) = match conn.take() {
            Some(c) => c,
            None => {
                // Only once the link has (re)connected and re-asserted this
                // node's peers: what waited must go out after that.
                let connect = shared.wait_connect(next_connect).await;
                let info = shared.client.get_connection_info();
                let name = shared.keys.client_name(&shared.node, "queue");
                match resp::within(TIMEOUT, resp::Conn::connect(info, &name)).await {
                    Ok(c) => (c, connect),
                    Err(error) => {
                        warn!(%error, pending = batch.len(), "redis write connection failed: retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                }
            }
        };
        let mut pipe = redis::pipe();
        for op in &batch {
            add(
                &mut pipe,
                op,
                &shared.keys,
                &shared.node,
                shared.config.stream_maxlen,
            );
        }
        let n = batch.len();
        let packed = pipe.get_packed_pipeline();
        match resp::within(TIMEOUT, exchange(&mut c, &packed, pipe.len())).await {
            Ok(refused) => {
                if let Some((count, first)) = refused {
                    error!(refused = count, of = n, error = %first, "redis refused operations");
                }
                let bytes: usize = batch.iter().map(Op::bytes).sum();
                batch.clear();
                let before = shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                if shared.refusing.load(Ordering::Relaxed)
                    && before.saturating_sub(bytes) <= shared.config.queue_bytes / 2
                {
                    shared.refusing.store(false, Ordering::Release);
                    info!("redis write queue below half its cap: relays accepted again");
                }
                conn = Some((c, connect));
            }
            Err(error) => {
                warn!(%error, pending = batch.len(), "redis write failed: retrying when it is back");
                // Whatever the batch did is unknown, and Redis may have
                // restarted empty: the link reconnects and re-asserts this
                // node's peers before the batch goes again, as after any outage.
                shared.relink(connect);
                next_connect = connect + 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Writes one pipelined batch of `commands` and reads their answers:
/// how many Redis refused, and the first refusal.
async fn exchange(
    conn: &mut resp::Conn,
    packed: &[u8],
    commands: usize,
) -> Result<Option<(usize, String)>, resp::RespError> {
    conn.write(packed).await?;
    let mut refused: Option<(usize, String)> = None;
    for _ in 0..commands {
        if let resp::Frame::Error(e) = conn.read().await? {
            refused.get_or_insert((0, e)).0 += 1;
        }
    }
    Ok(refused)
}

fn add(pipe: &mut redis::Pipeline, op: &Op, keys: &Keys, node: &NodeId, maxlen: usize) {
    match op {
        Op::Publish { channel, payload } => {
            pipe.publish(channel, payload.as_slice()).ignore();
        }
        Op::Presence { room, event } => match event {
            PresenceEvent::Joined(p) => {
                upsert(pipe, keys, room, p, 'J', "peer-joined", false, maxlen)
            }
            PresenceEvent::Updated(p) => {
                upsert(pipe, keys, room, p, 'U', "peer-updated", false, maxlen)
            }
            PresenceEvent::Moved(p) => {
                upsert(pipe, keys, room, p, 'U', "peer-moved", false, maxlen)
            }
            PresenceEvent::Left { peer, reason } => {
                remove(pipe, keys, room, peer, node, *reason, false, maxlen)
            }
        },
    }
}

/// Records and announces a peer (`quiet_if_known`: only if Redis lost it).
#[allow(clippy::too_many_arguments)]
pub fn upsert(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    room: &RoomId,
    peer: &PeerInfo,
    kind: char,
    event: &str,
    quiet_if_known: bool,
    maxlen: usize,
) {
    let announce = payload::encode(kind, peer.node.as_str(), &[&peer.object]);
    pipe.cmd("EVAL")
        .arg(scripts::UPSERT)
        .arg(5)
        .arg(keys.room(room))
        .arg(keys.rooms())
        .arg(keys.node_peers(&peer.node))
        .arg(keys.room_channel(room))
        .arg(keys.stream())
        .arg(room.as_str())
        .arg(peer.id.as_str())
        .arg(peer.node.as_str())
        .arg(&*peer.object)
        .arg(announce)
        .arg(unix_ms())
        .arg(maxlen)
        .arg(event)
        .arg(if quiet_if_known { "1" } else { "0" })
        .arg(keys.node_peers_prefix())
        .ignore();
}

/// Removes and announces a peer held by `node` (`only_if_present`: when
/// announcing a dead node, so no peer is announced twice).
#[allow(clippy::too_many_arguments)]
pub fn remove(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    room: &RoomId,
    peer: &PeerId,
    node: &NodeId,
    reason: LeaveReason,
    only_if_present: bool,
    maxlen: usize,
) {
    let announce = payload::encode('L', node.as_str(), &[peer.as_str(), " ", reason.as_str()]);
    pipe.cmd("EVAL")
        .arg(scripts::REMOVE)
        .arg(5)
        .arg(keys.room(room))
        .arg(keys.rooms())
        .arg(keys.node_peers(node))
        .arg(keys.room_channel(room))
        .arg(keys.stream())
        .arg(room.as_str())
        .arg(peer.as_str())
        .arg(node.as_str())
        .arg(reason.as_str())
        .arg(announce)
        .arg(unix_ms())
        .arg(maxlen)
        .arg(if only_if_present { "1" } else { "0" })
        .ignore();
}
