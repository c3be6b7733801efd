//! The connections to Redis and what happens on every (re)connect.
//!
//! Order on each connect: take (or keep) this node's lease, so that no
//! second instance under the same node id touches what is the first's (see
//! `liveness.rs`); subscribe to this node's channel and to every room
//! the hub has members in; on the first connect of this process, announce the
//! peers a previous run under the same node id left behind; re-assert this
//! node's peers (Redis may have lost them); heartbeat; only then open the
//! queue, so what waited during the outage is written after the re-assertion.
//! A resync then brings every room's view in line with Redis.

use redis::{AsyncCommands, AsyncConnectionConfig};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::publisher::{Direct, Op};
use super::resp;
use super::sequence::{GAP, Gap, Stamp};
use super::subscriber::{Push, Subscriber};
use super::wire::{self, Msg};
use super::{Shared, SubCmd, liveness, parse_peer, repair, resync};
use crate::bus::{Inbound, InboundHandler, Origin, PresenceEvent};
use crate::ids::{NodeId, PeerId, RoomId};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often this node heartbeats and probes its own subscription.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A subscription that has not echoed our probe for this long is dead,
/// even if its socket looks fine.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(shared: Arc<Shared>, mut subs: mpsc::UnboundedReceiver<SubCmd>) {
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    // When this process started waiting for another instance's lease.
    let mut waiting = None;
    loop {
        match session(&shared, &mut subs, &mut first, &mut waiting).await {
            Ok(()) => return, // the bus is gone
            // Another instance is this node: nothing more of ours may reach Redis.
            Err(_) if shared.lease.stopped.is_cancelled() => {
                shared.set_conn(None);
                return;
            }
            Err(e) => {
                if shared.ready.load(Ordering::Acquire) {
                    warn!(error = %e, "lost redis: serving local rooms, reconnecting");
                    // A blip after a good session: retry soon, not after
                    // the backoff a past outage grew.
                    backoff = BACKOFF_MIN;
                } else {
                    debug!(error = %e, "redis still unreachable");
                }
                shared.set_conn(None);
            }
        }
        // Refuse subscriptions while down; the rooms are re-subscribed on reconnect.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                cmd = subs.recv() => match cmd {
                    Some(SubCmd::Subscribe(_, tx)) => { let _ = tx.send(false); }
                    Some(SubCmd::Unsubscribe(_)) => {}
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connected period. Returns `Ok` only when the bus is dropped.
async fn session(
    shared: &Arc<Shared>,
    subs: &mut mpsc::UnboundedReceiver<SubCmd>,
    first: &mut bool,
    waiting: &mut Option<(Instant, Instant)>,
) -> redis::RedisResult<()> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let mut conn = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    // Before the node channel: a second instance must not take the first's
    // directed messages and resume claims either.
    liveness::take_lease(shared, &mut conn, *first, waiting).await?;
    let info = shared.client.get_connection_info();
    let mut sub = Subscriber::new(
        resp::within(
            CONNECT_TIMEOUT,
            resp::Conn::connect(info, &shared.keys.client_name(&shared.node, "subscriber")),
        )
        .await?,
    );
    let node_channel = shared.keys.node_channel(&shared.node);
    subscribe_all(shared, &mut sub, &node_channel, vec![node_channel.clone()]).await?;
    if *first {
        liveness::announce_dead(shared, &mut conn, &shared.node).await?;
        // Only once it went through: a failure retries on the next connect.
        *first = false;
    }
    let handler = shared.handler();
    if let Some(h) = &handler {
        let rooms = h
            .watched_rooms()
            .iter()
            .map(|room| shared.keys.room_channel(room))
            .collect();
        subscribe_all(shared, &mut sub, &node_channel, rooms).await?;
        repair::reassert(shared, &mut conn, h.local_peers()).await?;
    }
    // Redis's clock, as the other nodes' heartbeats are stamped.
    let connected_ms = liveness::heartbeat(shared, &mut conn).await?;
    shared.set_conn(Some(conn.clone()));
    info!(node = %shared.node, format = wire::VERSION, stream = wire::STREAM_VERSION, "connected to redis");
    // Only the rooms the hub holds now can have missed anything while this
    // node was away; a room watched from here on reads its snapshot under a
    // live subscription, and must not be resynced: a peer of a settled node
    // that Redis lost meanwhile (eviction, FLUSHALL) is not gone, and its
    // node's verification writes it back.
    let rooms = handler
        .as_ref()
        .map(|h| h.watched_rooms())
        .unwrap_or_default();
    tokio::spawn(resync::resync(shared.clone(), connected_ms, rooms));

    let connected = Instant::now();
    let mut last_probe = Instant::now();
    let reaping = Arc::new(AtomicBool::new(false));
    let verifying = Arc::new(AtomicBool::new(false));
    let verify_every = repair::verify_every(shared.config.node_timeout);
    let mut last_verify = Instant::now();
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            push = sub.next() => match push? {
                Push::Message { channel, payload } => {
                    if channel == node_channel.as_bytes() && wire::is_probe(&payload) {
                        last_probe = Instant::now();
                    } else {
                        dispatch(shared, &node_channel, &channel, &payload);
                    }
                }
                Push::Confirmed => {}
            },
            cmd = subs.recv() => match cmd {
                Some(SubCmd::Subscribe(ch, tx)) => {
                    sub.subscribe(&[ch], Some(tx)).await?;
                }
                Some(SubCmd::Unsubscribe(ch)) => {
                    sub.unsubscribe(&ch).await?;
                }
                None => return Ok(()),
            },
            _ = shared.relink.notified() => return Err(relink_error()),
            _ = tick.tick() => {
                liveness::heartbeat(shared, &mut conn).await?;
                let _: () = conn.publish(&node_channel, wire::probe(shared.node.as_str())).await?;
                if last_probe.elapsed() > PROBE_DEADLINE {
                    return Err(dropped_error());
                }
                if last_verify.elapsed() >= verify_every && !verifying.swap(true, Ordering::AcqRel) {
                    last_verify = Instant::now();
                    let (shared, verifying, mut conn) = (shared.clone(), verifying.clone(), conn.clone());
                    tokio::spawn(async move {
                        if let Some(h) = shared.handler() {
                            if let Err(e) = repair::verify(&shared, &mut conn, h.as_ref()).await {
                                debug!(error = %e, "verifying this node's peers in redis failed");
                            }
                        }
                        verifying.store(false, Ordering::Release);
                    });
                }
                if connected.elapsed() >= shared.config.node_timeout
                    && !reaping.swap(true, Ordering::AcqRel)
                {
                    let (shared, reaping, mut conn) = (shared.clone(), reaping.clone(), conn.clone());
                    tokio::spawn(async move {
                        if let Err(e) = liveness::reap(&shared, &mut conn).await {
                            debug!(error = %e, "reaping dead nodes failed");
                        }
                        reaping.store(false, Ordering::Release);
                    });
                }
            }
        }
    }
}

/// Subscribes to `channels` and waits until Redis confirms them, handing
/// on whatever the channels already subscribed carry meanwhile.
async fn subscribe_all(
    shared: &Shared,
    sub: &mut Subscriber,
    node_channel: &str,
    channels: Vec<String>,
) -> redis::RedisResult<()> {
    let confirming = async {
        sub.subscribe(&channels, None).await?;
        while sub.unconfirmed() > 0 {
            if let Push::Message { channel, payload } = sub.next().await? {
                dispatch(shared, node_channel, &channel, &payload);
            }
        }
        Ok(())
    };
    Ok(resp::within(CONNECT_TIMEOUT, confirming).await?)
}

fn relink_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the publish queue lost its redis connection",
    ))
}

fn dropped_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "redis subscription ended",
    ))
}

/// Hands one pub/sub message to the hub. Never blocks. A message this node
/// cannot read is counted and logged (at the 1st, 2nd, 4th, 8th, ...
/// occurrence, so a stream of them cannot flood the log), never guessed at.
fn dispatch(shared: &Shared, node_channel: &str, channel: &[u8], payload: &[u8]) {
    let Some(handler) = shared.handler() else {
        return;
    };
    let Ok(channel) = std::str::from_utf8(channel) else {
        return;
    };
    let msg = match wire::decode(payload) {
        Ok(msg) => msg,
        Err(e) => {
            let n = shared.undecodable.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(channel, error = %e, kind = e.label(), total = n, "a message from another instance could not be read");
            }
            return;
        }
    };
    if channel == node_channel {
        match msg {
            Msg::Claim {
                node,
                id,
                room,
                peer,
                secret,
            } => super::answer_claim(shared, node, id, room, peer, secret),
            Msg::Handoff { node, id, body } => super::complete_claim(shared, node, id, Some(body)),
            Msg::NoHandoff { node, id } => super::complete_claim(shared, node, id, None),
            Msg::Direct {
                head,
                room,
                to,
                frame,
            } => direct(shared, &*handler, head, room, to, frame),
            Msg::Refused {
                room,
                sender,
                reference,
            } => refused(&*handler, room, sender, reference),
            Msg::Gap { node, epoch, lost } => self::lost(shared, node, epoch, lost),
            // Probes are taken before dispatch; room traffic has no business here.
            _ => {}
        }
        return;
    }
    let Some(room) = shared.keys.room_of_channel(channel) else {
        return;
    };
    let room = RoomId::new(room);
    let inbound = match msg {
        Msg::Joined { node, peer } | Msg::Updated { node, peer } => {
            let Some(p) = parse_peer(node, peer) else {
                return;
            };
            Inbound::Presence(if matches!(msg, Msg::Joined { .. }) {
                PresenceEvent::Joined(p)
            } else {
                PresenceEvent::Updated(p)
            })
        }
        Msg::Left { peer, reason, .. } => Inbound::Presence(PresenceEvent::Left {
            peer: PeerId::new(peer),
            reason,
        }),
        Msg::Broadcast { node, frame } => Inbound::Broadcast {
            from_node: NodeId::new(node),
            text: frame.to_owned().into(),
        },
        // Our own commands were applied here before they were sent.
        Msg::Act { node, .. } if node == shared.node.as_str() => return,
        Msg::Act { body, .. } => match wire::command_body(body).and_then(super::decode_command) {
            Some(cmd) => Inbound::Command(cmd),
            None => {
                shared.undecodable.fetch_add(1, Ordering::Relaxed);
                warn!(
                    channel,
                    "a room command from another instance could not be read"
                );
                return;
            }
        },
        _ => return,
    };
    handler.deliver(&room, inbound);
}

/// A direct message for one of our peers: passed on once and in order with
/// the others from its node (`sequence.rs`).
fn direct(
    shared: &Shared,
    handler: &dyn InboundHandler,
    raw_head: &str,
    room: &str,
    to: &str,
    frame: &str,
) {
    let head = wire::direct_head(raw_head);
    let origin = head.sender.as_ref().map(|_| Origin(raw_head.into()));
    let relay = (
        RoomId::new(room),
        Inbound::Direct {
            to: PeerId::new(to),
            text: frame.to_owned().into(),
            origin,
        },
    );
    let Some(stamp) = head.sender.and_then(|s| Stamp::parse(s.stamp)) else {
        // From an older node: as it comes.
        let (room, msg) = relay;
        return handler.deliver(&room, msg);
    };
    // Delivered under the lock, so the timer's releases (`expire_gaps`) and
    // ours cannot interleave out of order.
    let Ok(mut incoming) = shared.incoming.lock() else {
        return;
    };
    let (passed, lost) = incoming.accept(
        head.node,
        stamp,
        relay,
        tokio::time::Instant::now(),
        relay_bytes,
    );
    for (room, msg) in passed {
        handler.deliver(&room, msg);
    }
    drop(incoming);
    for lost in lost {
        report_gap(
            shared,
            &Gap {
                node: head.node.to_owned(),
                epoch: stamp.epoch,
                lost,
            },
        );
    }
}

/// Tells a sender's node of relays of its that never arrived here: those
/// Redis counted as heard get their senders told (`lost`).
fn report_gap(shared: &Shared, gap: &Gap) {
    debug!(from = %gap.node, lost = ?gap.lost, "relays from another instance did not arrive");
    shared.enqueue(Op::Direct(Direct::new(
        shared.keys.node_channel(&NodeId::new(gap.node.as_str())),
        wire::gap(shared.node.as_str(), gap.epoch, &gap.lost),
        None,
    )));
}

/// What a waiting relay weighs, for the bound on what waits past a gap.
fn relay_bytes((_, msg): &(RoomId, Inbound)) -> usize {
    match msg {
        Inbound::Direct { text, .. } => text.len() + 64,
        _ => 64,
    }
}

/// Passes on the relays that waited past a gap for too long: their node
/// died with the missing ones held, say. Runs while the engine runs.
pub async fn expire_gaps(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(GAP / 6);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(handler) = shared.handler() else {
            continue;
        };
        let Ok(mut incoming) = shared.incoming.lock() else {
            return;
        };
        if !incoming.waiting() {
            continue;
        }
        let (passed, gaps) = incoming.expired(tokio::time::Instant::now(), relay_bytes);
        for (room, msg) in passed {
            handler.deliver(&room, msg);
        }
        drop(incoming);
        for gap in &gaps {
            report_gap(&shared, gap);
        }
        if let Ok(mut sent) = shared.sent.lock() {
            sent.prune(tokio::time::Instant::now());
        }
    }
}

/// Another node reports relays of ours that it never got, though Redis
/// counted it as a subscriber: their senders get `unavailable`.
fn lost(shared: &Shared, from: &str, epoch: u32, lost: std::ops::Range<u64>) {
    let channel = shared.keys.node_channel(&NodeId::new(from));
    let tells = match shared.sent.lock() {
        Ok(mut sent) => sent.lost(&channel, epoch, lost),
        Err(_) => return,
    };
    for tell in tells {
        tell();
    }
}

/// A direct message of one of our peers that its node could not deliver.
fn refused(handler: &dyn InboundHandler, room: &str, sender: &str, reference: Option<&str>) {
    let reference = reference.and_then(|r| RawValue::from_string(r.to_owned()).ok());
    handler.deliver(
        &RoomId::new(room),
        Inbound::Refused {
            sender: PeerId::new(sender),
            reference,
        },
    );
}
