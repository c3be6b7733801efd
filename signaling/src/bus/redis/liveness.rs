//! Node liveness: each node stamps its last heartbeat in a sorted set; a node
//! whose stamp is older than the node timeout is dead, and exactly one
//! survivor (the one that wins a `SET NX` claim) announces its peers as
//! `node-lost`. A node only judges others after it has itself been connected
//! for a whole timeout, so that after a Redis outage nobody mistakes the
//! others' missed heartbeats for death.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use signaling_protocol::reply::LeaveReason;
use std::collections::HashMap;
use tracing::info;

use super::{Shared, publisher};
use crate::ids::{NodeId, PeerId, RoomId, unix_ms};

/// How long a claim on a dead node's peers lasts.
const CLAIM_MS: u64 = 60_000;

pub async fn heartbeat(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    conn.zadd::<_, _, _, ()>(shared.keys.nodes(), shared.node.as_str(), unix_ms())
        .await
}

/// Announces the peers of every node that stopped heartbeating.
pub async fn reap(shared: &Shared, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let cutoff = unix_ms().saturating_sub(shared.config.node_timeout.as_millis() as u64);
    let stale: Vec<String> = conn
        .zrangebyscore(shared.keys.nodes(), "-inf", cutoff)
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
