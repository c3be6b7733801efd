//! After a reconnect, the node's view of other nodes' members is brought in
//! line with what Redis records, as the presence events it may have missed
//! while its subscription was down. Which other nodes Redis is believed
//! about, and when a silent one counts as dead, are this engine's ideas:
//! the hub only receives ordinary `Joined`/`Updated`/`Left` events.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use signaling_protocol::reply::LeaveReason;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Shared, read_room};
use crate::bus::{Inbound, InboundHandler, PeerInfo, PresenceEvent};
use crate::ids::{NodeId, PeerId, RoomId};

/// Which other nodes a resync may believe Redis about.
#[derive(Debug, Default)]
pub struct SettledNodes {
    /// Nodes that have re-asserted their peers since this node reconnected.
    pub settled: HashSet<NodeId>,
    /// A whole node timeout has passed since: a node not settled is dead.
    pub timed_out: bool,
}

/// After a reconnect, brings the view of each room watched at the connect
/// (`rooms`) in line with Redis,
/// a few times over while the other nodes finish reconnecting too, the last
/// time once a whole node timeout has passed: a node that has not
/// re-asserted its peers by then is dead (it died while Redis was away, say,
/// and Redis came back without its heartbeat), and its members go as
/// `node-lost`. `connected_ms` is Redis's time at the connect, to compare
/// with the other nodes' heartbeats; the schedule runs on this machine's
/// monotonic clock.
pub async fn resync(shared: Arc<Shared>, connected_ms: u64, rooms: Vec<RoomId>) {
    if rooms.is_empty() {
        return;
    }
    let timeout = shared.config.node_timeout;
    let connected = tokio::time::Instant::now();
    let passes = [Duration::from_secs(1), Duration::from_secs(3)]
        .into_iter()
        .filter(|at| *at < timeout)
        .chain([timeout]);
    for at in passes {
        tokio::time::sleep_until(connected + at).await;
        let (Some(mut conn), Some(handler)) = (shared.conn(), shared.handler()) else {
            return;
        };
        // Nodes that heartbeated since we reconnected have re-asserted their
        // peers (each does so before its first heartbeat on a connect).
        let settled: Vec<String> = match conn
            .zrangebyscore(shared.keys.nodes(), connected_ms, "+inf")
            .await
        {
            Ok(s) => s,
            Err(_) => return,
        };
        let nodes = SettledNodes {
            settled: settled.into_iter().map(NodeId::new).collect(),
            timed_out: at >= timeout,
        };
        for room in &rooms {
            let Ok(peers) = read_room(&mut conn, &shared.keys, room).await else {
                return;
            };
            let Ok(listed) =
                still_listed(&shared, &mut conn, handler.as_ref(), room, &peers, &nodes).await
            else {
                return;
            };
            let remote = handler.remote_members(room);
            for msg in missed_events(&shared.node, remote, peers, &nodes, &listed) {
                handler.deliver(room, msg);
            }
        }
    }
}

/// The members of `room` on settled nodes that the room's record in Redis
/// lacks but their node's own index still lists under this room: the
/// record was lost (an evicted hash), not the peers, who leave only with
/// both entries removed.
async fn still_listed(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    handler: &dyn InboundHandler,
    room: &RoomId,
    snapshot: &[Arc<PeerInfo>],
    nodes: &SettledNodes,
) -> redis::RedisResult<HashSet<PeerId>> {
    let recorded: HashSet<&PeerId> = snapshot.iter().map(|p| &p.id).collect();
    let missing: Vec<(PeerId, NodeId)> = handler
        .remote_members(room)
        .into_iter()
        .filter(|(peer, node)| !recorded.contains(peer) && nodes.settled.contains(node))
        .collect();
    if missing.is_empty() {
        return Ok(HashSet::new());
    }
    let mut pipe = redis::pipe();
    for (peer, node) in &missing {
        pipe.hget(shared.keys.node_peers(node), peer.as_str());
    }
    // The link's connection has a response timeout of its own.
    let rooms: Vec<Option<String>> = pipe.query_async(conn).await?;
    Ok(missing
        .into_iter()
        .zip(rooms)
        .filter(|(_, r)| r.as_deref() == Some(room.as_str()))
        .map(|((peer, _), _)| peer)
        .collect())
}

/// The events that bring a room's view of other nodes' members (`remote`,
/// as `(peer, node)`) in line with the room as Redis now records it
/// (`snapshot`, oldest first). What Redis holds of a node is believed only
/// once that node has re-asserted its own peers since the reconnect
/// (`nodes.settled`): before that, a node still reconnecting would look as
/// if its peers left, and data Redis restored from an older snapshot would
/// bring back peers that left. Once `nodes.timed_out`, a node not settled
/// is dead, and its members leave as `node-lost`. A member missing from the
/// snapshot whose node still lists it in its own index (`listed`) is kept:
/// Redis lost the room's record (an eviction), not the peer, and its node
/// writes it back. The hub applies these like any other node's events:
/// a join or an update of a member it knows as it is changes nothing.
pub fn missed_events(
    own: &NodeId,
    remote: Vec<(PeerId, NodeId)>,
    snapshot: Vec<Arc<PeerInfo>>,
    nodes: &SettledNodes,
    listed: &HashSet<PeerId>,
) -> Vec<Inbound> {
    let known: Vec<Arc<PeerInfo>> = snapshot
        .into_iter()
        .filter(|p| p.node != *own && nodes.settled.contains(&p.node))
        .collect();
    let recorded: HashSet<&PeerId> = known.iter().map(|p| &p.id).collect();
    let mut out = Vec::new();
    for (peer, node) in remote {
        if recorded.contains(&peer) {
            continue;
        }
        let reason = if nodes.settled.contains(&node) {
            if listed.contains(&peer) {
                continue;
            }
            LeaveReason::Disconnected
        } else if nodes.timed_out {
            LeaveReason::NodeLost
        } else {
            continue;
        };
        out.push(Inbound::Presence(PresenceEvent::Left { peer, reason }));
    }
    out.extend(
        known
            .into_iter()
            .map(|p| Inbound::Presence(PresenceEvent::Updated(p))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, node: &str, at: u64) -> Arc<PeerInfo> {
        Arc::new(PeerInfo::new(
            PeerId::new(id),
            NodeId::new(node),
            String::new(),
            "{}".into(),
            at,
        ))
    }

    /// `(peer, reason)` of the leaves and the ids of the joins or updates.
    fn summary(events: Vec<Inbound>) -> (Vec<(String, LeaveReason)>, Vec<String>) {
        let (mut left, mut upserted) = (Vec::new(), Vec::new());
        for e in events {
            match e {
                Inbound::Presence(PresenceEvent::Left { peer, reason }) => {
                    left.push((peer.as_str().to_string(), reason));
                }
                Inbound::Presence(PresenceEvent::Updated(p)) => {
                    upserted.push(p.id.as_str().to_string());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (left, upserted)
    }

    fn remote(members: &[(&str, &str)]) -> Vec<(PeerId, NodeId)> {
        members
            .iter()
            .map(|(p, n)| (PeerId::new(*p), NodeId::new(*n)))
            .collect()
    }

    /// §7.2, §15: after an outage, a member found missing without a
    /// recorded leave is announced `disconnected`, once its node has
    /// re-asserted its peers (and not while it may still be reconnecting).
    #[test]
    fn redis_is_believed_about_settled_nodes_only() {
        let nodes = SettledNodes {
            settled: [NodeId::new("b")].into(),
            timed_out: false,
        };
        let snapshot = vec![
            peer("own", "a", 1),
            peer("b-new", "b", 2),
            peer("b-kept", "b", 3),
            peer("c-restored", "c", 4),
        ];
        let listed: HashSet<PeerId> = [PeerId::new("b-evicted")].into();
        let (left, upserted) = summary(missed_events(
            &NodeId::new("a"),
            remote(&[
                ("b-kept", "b"),
                ("b-gone", "b"),
                ("b-evicted", "b"),
                ("c-quiet", "c"),
            ]),
            snapshot,
            &nodes,
            &listed,
        ));
        assert_eq!(left, [("b-gone".to_string(), LeaveReason::Disconnected)]);
        assert_eq!(
            upserted,
            ["b-new", "b-kept"],
            "in join order, own node skipped"
        );
    }

    /// §7.2, §15: an instance that died during an outage has its peers
    /// announced `node-lost` one node timeout after Redis is back.
    #[test]
    fn after_a_node_timeout_a_node_that_never_settled_is_lost() {
        let nodes = SettledNodes {
            settled: HashSet::new(),
            timed_out: true,
        };
        let (left, upserted) = summary(missed_events(
            &NodeId::new("a"),
            remote(&[("c1", "c"), ("c2", "c")]),
            vec![peer("c1", "c", 1)],
            &nodes,
            &HashSet::new(),
        ));
        assert_eq!(
            left,
            [
                ("c1".to_string(), LeaveReason::NodeLost),
                ("c2".to_string(), LeaveReason::NodeLost)
            ]
        );
        assert!(upserted.is_empty(), "nothing believed of a dead node");
    }
}
