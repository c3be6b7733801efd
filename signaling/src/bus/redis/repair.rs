//! Making what Redis records of this node's peers exactly what this node
//! holds, whatever Redis lost or brought back.
//!
//! - On every (re)connect, before the queue writes anything ([`reassert`]):
//!   each local peer is written back (quietly where Redis records it so
//!   already; announced where Redis lost it or holds an older state), and
//!   every peer Redis files under this node that is no longer here (Redis
//!   came back from an older snapshot, say) is removed and announced.
//! - While connected, every [`VERIFY_EVERY`] ([`verify`]): Redis can lose
//!   data with every connection up (`FLUSHALL`, eviction under `maxmemory`).
//!   One script per [`VERIFY_CHUNK`] peers asks which of them Redis no
//!   longer records; each goes back through the write queue, queued while
//!   the hub guarantees the peer is still here, so a leave that follows is
//!   written after it and no ghost is made.
//!
//! Peers whose changes are still queued are left to the queue, and peers
//! just handed over to another node (a resume elsewhere) are left to that
//! node: its record of them may not have landed yet.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use signaling_protocol::reply::LeaveReason;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::info;

use super::publisher::{self, Op, PeerKey};
use super::{Shared, scripts};
use crate::bus::{InboundHandler, PeerInfo};
use crate::ids::{PeerId, RoomId};

/// How often a connected node checks that Redis still records its peers.
pub fn verify_every(node_timeout: Duration) -> Duration {
    (node_timeout / 2).max(Duration::from_secs(1))
}

/// Peers per verification script: small enough that Redis is never busy
/// with one for long (about 0.1 ms for 256 lookups).
const VERIFY_CHUNK: usize = 256;
/// How long a verification waits for this node's queued writes.
const OWN_WRITES: Duration = Duration::from_secs(2);
/// How long a peer handed over to another node is that node's to record.
const HANDED_OVER_FOR: Duration = Duration::from_secs(30);

/// Peers this node handed over lately, by when.
#[derive(Default)]
pub struct HandedOver(Mutex<HashMap<PeerKey, Instant>>);

impl HandedOver {
    pub fn record(&self, room: &RoomId, peer: &PeerId) {
        if let Ok(mut m) = self.0.lock() {
            let now = Instant::now();
            m.retain(|_, at| now < *at + HANDED_OVER_FOR);
            m.insert((room.clone(), peer.clone()), now);
        }
    }

    fn recent(&self) -> HashSet<PeerKey> {
        let now = Instant::now();
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, at)| now < **at + HANDED_OVER_FOR)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Peers whose record in Redis is someone else's to write right now.
fn in_motion(shared: &Shared) -> HashSet<PeerKey> {
    let mut keys = shared.queue.pending_peers();
    keys.extend(shared.handed_over.recent());
    keys
}

/// After a connect: Redis's record of this node becomes `peers`.
pub async fn reassert(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    peers: Vec<(RoomId, Arc<PeerInfo>)>,
) -> redis::RedisResult<()> {
    let moving = in_motion(shared);
    let filed: HashMap<String, String> = conn.hgetall(shared.keys.node_peers(&shared.node)).await?;
    let here: HashSet<(&str, &str)> = peers
        .iter()
        .map(|(room, p)| (room.as_str(), p.id.as_str()))
        .collect();
    let mut pipe = redis::pipe();
    for (room, p) in &peers {
        if moving.contains(&(room.clone(), p.id.clone())) {
            continue;
        }
        publisher::upsert(
            &mut pipe,
            &shared.keys,
            room,
            p,
            true,
            "peer-joined",
            true,
            shared.config.stream_maxlen,
        );
    }
    let mut stale = 0;
    for (peer, room) in &filed {
        let key = (RoomId::new(room.as_str()), PeerId::new(peer.as_str()));
        if here.contains(&(room.as_str(), peer.as_str())) || moving.contains(&key) {
            continue;
        }
        // Only if the room still records it as ours: then it is announced.
        publisher::remove(
            &mut pipe,
            &shared.keys,
            &key.0,
            &key.1,
            &shared.node,
            LeaveReason::Disconnected,
            true,
            shared.config.stream_maxlen,
        );
        stale += 1;
    }
    if stale > 0 {
        info!(
            stale,
            "redis recorded peers of this node that are gone (older data?): removing them"
        );
    }
    if pipe.is_empty() {
        return Ok(());
    }
    pipe.query_async::<()>(conn).await
}

/// While connected: queues back every local peer Redis no longer records.
/// Returns how many.
pub async fn verify(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    handler: &dyn InboundHandler,
) -> redis::RedisResult<usize> {
    // This node's own writes first, so a join still queued is not taken
    // for lost. A queue that does not drain in time (Redis is slow) skips
    // the round: what it would queue back could only pile up behind.
    if !shared.queue.written_through_now(OWN_WRITES).await {
        return Ok(0);
    }
    let peers = handler.local_peers();
    let index = shared.keys.node_peers(&shared.node);
    let room_prefix = shared.keys.room_prefix();
    let mut restored = 0;
    for chunk in peers.chunks(VERIFY_CHUNK) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(scripts::VERIFY)
            .arg(1)
            .arg(&index)
            .arg(shared.node.as_str())
            .arg(&room_prefix);
        for (room, p) in chunk {
            cmd.arg(room.as_str()).arg(p.id.as_str());
        }
        let missing: Vec<usize> = cmd.query_async(conn).await?;
        for (room, p) in missing
            .into_iter()
            .filter_map(|n| chunk.get(n.checked_sub(1)?))
        {
            handler.with_local(room, &p.id, &mut |now| {
                shared.enqueue(Op::Reassert {
                    room: room.clone(),
                    info: now.clone(),
                });
                restored += 1;
            });
        }
    }
    if restored > 0 {
        info!(
            restored,
            "redis had lost peers of this node while connected: written back"
        );
    }
    Ok(restored)
}
