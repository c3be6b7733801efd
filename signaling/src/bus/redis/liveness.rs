//! Node liveness: each node stamps its last heartbeat in a sorted set; a node
//! whose stamp is older than the node timeout is dead, and exactly one
//! survivor (the one that wins a `SET NX` claim) announces its peers as
//! `node-lost`. A node only judges others after it has itself been connected
//! for a whole timeout, so that after a Redis outage nobody mistakes the
//! others' missed heartbeats for death.
//!
//! One clock: stamps and the reaper's cutoff are both Redis's `TIME`, read
//! inside the scripts, so a node whose own clock is off is neither taken for
//! dead while it runs nor kept alive after it died. Each heartbeat also
//! teaches this process the offset of Redis's clock ([`cluster_ms`]), which
//! the timestamps it writes (`joined_at`) use.
//!
//! One instance per node id: a node holds a lease (`<prefix>:node:<id>:lease`,
//! a random token per process), taken before it touches anything of the
//! node's and renewed by every heartbeat. An instance that finds the lease
//! held by another waits for it to lapse (what a crashed previous run leaves
//! behind lapses within [`lease_time`]); if it is still held after that, a
//! live instance is renewing it, and this one refuses to run: it logs why and
//! exits with status 2, without having announced, subscribed or written
//! anything of the node's.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use signaling_protocol::reply::LeaveReason;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, info};

use super::{Shared, publisher, scripts};
use crate::ids::{NodeId, PeerId, RoomId, learn_cluster_clock, random_hex, unix_ms};

/// How long a claim on a dead node's peers lasts.
const CLAIM_MS: u64 = 60_000;
/// How often an instance waiting for the lease asks again.
const LEASE_POLL: Duration = Duration::from_millis(250);
/// Beyond the lease's remaining time, how long a waiting instance gives the
/// holder's lease to lapse before it takes the holder for alive.
const LEASE_GRACE: Duration = Duration::from_secs(2);

/// This process's claim on its node id.
pub struct Lease {
    token: String,
    /// Set once this process must stop serving as the node (another
    /// instance is it): the server stops with this error.
    pub fatal: std::sync::OnceLock<LeaseError>,
    pub stopped: tokio_util::sync::CancellationToken,
    /// Given up at a clean shutdown: heartbeats must not take it back.
    released: AtomicBool,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            token: random_hex(16),
            fatal: std::sync::OnceLock::new(),
            stopped: tokio_util::sync::CancellationToken::new(),
            released: AtomicBool::new(false),
        }
    }
}

/// Why this process cannot be the node it was told to be.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "node id {node} is in use by another running instance (its lease in Redis is renewed; \
         waited {waited:?}): give every instance its own --node-id (SIGNALING_NODE_ID)"
    )]
    InUse { node: NodeId, waited: Duration },
    #[error(
        "another instance took node id {node} while this one could not renew its lease: \
         it now serves as {node}, so this one stops"
    )]
    Lost { node: NodeId },
}

/// How long a lease lasts unrenewed: a crashed instance's restart waits at
/// most this long. Half the node timeout (several heartbeats), so that a
/// restart still comes before the others would find the node dead.
pub fn lease_time(node_timeout: Duration) -> Duration {
    (node_timeout / 2).max(Duration::from_secs(3))
}

/// This process must not serve as a node another instance is: the link
/// stops for good and the server stops with `e` (`Transport::fatal`).
fn refuse(shared: &Shared, e: LeaseError) -> redis::RedisError {
    error!("{e}");
    let message = e.to_string();
    let _ = shared.lease.fatal.set(e);
    shared.lease.stopped.cancel();
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::AddrInUse, message))
}

enum LeaseState {
    Ours,
    Held(Duration),
}

/// Runs the lease script; learns Redis's clock from it. Returns the state
/// and Redis's time.
async fn lease(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    heartbeat: bool,
) -> redis::RedisResult<(LeaseState, u64)> {
    let ttl = lease_time(shared.config.node_timeout).as_millis() as u64;
    let sent = unix_ms();
    let reply: Vec<i64> = redis::cmd("EVAL")
        .arg(scripts::LEASE)
        .arg(2)
        .arg(shared.keys.node_lease(&shared.node))
        .arg(shared.keys.nodes())
        .arg(&shared.lease.token)
        .arg(ttl)
        .arg(shared.node.as_str())
        .arg(if heartbeat { "1" } else { "0" })
        .query_async(conn)
        .await?;
    let now = reply.first().copied().unwrap_or(0).max(0) as u64;
    learn_cluster_clock(sent, now, unix_ms());
    let state = match reply.get(1) {
        Some(0) => LeaseState::Held(Duration::from_millis(
            reply.get(2).copied().unwrap_or(0).max(0) as u64,
        )),
        _ => LeaseState::Ours,
    };
    Ok((state, now))
}

/// Takes this node's lease before anything of the node's is touched.
/// `waiting` (kept across reconnects) is when this process's wait ends. On
/// a reconnect (`first` false) a lease another instance holds means it took
/// the node over meanwhile.
pub async fn take_lease(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    first: bool,
    waiting: &mut Option<(Instant, Instant)>,
) -> redis::RedisResult<()> {
    loop {
        match lease(shared, conn, false).await?.0 {
            LeaseState::Ours => {
                if waiting.take().is_some() {
                    info!(node = %shared.node, "node lease taken: the previous holder let it lapse");
                }
                return Ok(());
            }
            LeaseState::Held(_) if !first => {
                return Err(refuse(
                    shared,
                    LeaseError::Lost {
                        node: shared.node.clone(),
                    },
                ));
            }
            LeaseState::Held(left) => {
                let now = Instant::now();
                let (since, until) = *waiting.get_or_insert_with(|| {
                    info!(
                        node = %shared.node,
                        left = ?left,
                        "node id held by another instance's lease: waiting for it to lapse \
                         (a previous run that crashed), not serving as this node meanwhile"
                    );
                    (now, now + left + LEASE_GRACE)
                });
                if now >= until {
                    return Err(refuse(
                        shared,
                        LeaseError::InUse {
                            node: shared.node.clone(),
                            waited: now - since,
                        },
                    ));
                }
                tokio::time::sleep(LEASE_POLL).await;
            }
        }
    }
}

/// Renews the lease and stamps the heartbeat (both with Redis's clock).
/// Returns Redis's time.
pub async fn heartbeat(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<u64> {
    if shared.lease.released.load(Ordering::Acquire) {
        return Ok(crate::ids::cluster_ms());
    }
    match lease(shared, conn, true).await? {
        (LeaseState::Ours, now) => {
            // For `/metrics` only: a failure here is not the heartbeat's.
            let live_since = now.saturating_sub(shared.config.node_timeout.as_millis() as u64);
            if let Ok(n) = conn
                .zcount::<_, _, _, usize>(shared.keys.nodes(), live_since, "+inf")
                .await
            {
                shared.nodes.store(n, Ordering::Relaxed);
            }
            Ok(now)
        }
        (LeaseState::Held(_), _) => Err(refuse(
            shared,
            LeaseError::Lost {
                node: shared.node.clone(),
            },
        )),
    }
}

/// Gives the lease up (a clean shutdown, after the last write): a restart
/// under the same id can take it at once.
pub async fn release(shared: &Shared) {
    shared.lease.released.store(true, Ordering::Release);
    let Some(mut conn) = shared.conn() else {
        return;
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("EVAL")
            .arg(scripts::RELEASE)
            .arg(1)
            .arg(shared.keys.node_lease(&shared.node))
            .arg(&shared.lease.token)
            .query_async::<i64>(&mut conn),
    )
    .await;
}

/// Announces the peers of every node that stopped heartbeating.
pub async fn reap(shared: &Shared, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let stale: Vec<String> = redis::cmd("EVAL")
        .arg(scripts::STALE_NODES)
        .arg(1)
        .arg(shared.keys.nodes())
        .arg(shared.config.node_timeout.as_millis() as u64)
        .query_async(conn)
        .await?;
    for node in stale
        .into_iter()
        .map(NodeId::new)
        .filter(|n| *n != shared.node)
    {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(shared.keys.reap_claim(&node))
            .arg(shared.node.as_str())
            .arg("NX")
            .arg("PX")
            .arg(CLAIM_MS)
            .query_async(conn)
            .await?;
        if claimed.is_some() {
            announce_dead(shared, conn, &node).await?;
        }
    }
    Ok(())
}

/// Removes and announces every peer `node` held, then forgets the node.
pub async fn announce_dead(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    node: &NodeId,
) -> redis::RedisResult<()> {
    let peers: HashMap<String, String> = conn.hgetall(shared.keys.node_peers(node)).await?;
    let mut pipe = redis::pipe();
    for (peer, room) in &peers {
        publisher::remove(
            &mut pipe,
            &shared.keys,
            &RoomId::new(room.as_str()),
            &PeerId::new(peer.as_str()),
            node,
            LeaveReason::NodeLost,
            true,
            shared.config.stream_maxlen,
        );
    }
    pipe.del(shared.keys.node_peers(node)).ignore();
    if *node != shared.node {
        pipe.zrem(shared.keys.nodes(), node.as_str()).ignore();
    }
    pipe.query_async::<()>(conn).await?;
    if !peers.is_empty() {
        info!(node = %node, peers = peers.len(), "node lost: its peers announced as node-lost");
    }
    Ok(())
}
