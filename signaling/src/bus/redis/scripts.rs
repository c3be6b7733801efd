//! Lua scripts that change presence atomically: the room hash, the room set,
//! the node's peer index, the pub/sub announcement and the stream entries move
//! together or not at all.

/// The Lua function every script below writes the presence stream with:
/// `emit(stream, seq key, maxlen, event, room, node, ts, {extra fields})`.
/// It numbers the room's events (`seq`, from 1 at `room-opened`) and
/// stamps them with the room's incarnation (`sid`, the stream id of its
/// `room-opened`), both kept in the room's seq hash, which goes with the
/// room. The fields are the event schema's (`event.rs`, `docs/events.md`).
macro_rules! emit_lua {
    () => {
        r#"
local function emit(stream, seqkey, maxlen, event, room, node, ts, extra)
  if event == 'room-opened' then
    redis.call('DEL', seqkey)
  end
  local seq = redis.call('HINCRBY', seqkey, 'seq', 1)
  local sid = redis.call('HGET', seqkey, 'sid') or ''
  local args = {'XADD', stream, 'MAXLEN', '~', maxlen, '*', 'v', '1',
    'event', event, 'room', room, 'seq', seq, 'sid', sid, 'node', node, 'ts', ts}
  for i = 1, #extra do
    args[#args + 1] = extra[i]
  end
  local id = redis.call(unpack(args))
  if event == 'room-opened' then
    redis.call('HSET', seqkey, 'sid', id)
  elseif event == 'room-closed' then
    redis.call('DEL', seqkey)
  end
  return id
end
"#
    };
}

/// KEYS: room hash, rooms set, node peers, room channel, stream, room seq.
/// ARGV: room, peer, node, peer object, payload, ts, maxlen, event,
/// quiet_if_known, node-peers key prefix.
/// `event` is `peer-joined`, `peer-updated` or `peer-moved`. With
/// `quiet_if_known` = 1 (a node re-asserting its peers after an outage) a
/// peer recorded exactly so is neither announced nor streamed again; one
/// recorded differently (Redis came back with older data) is rewritten and
/// streamed as `peer-updated`. A peer that moved leaves its old node's
/// index, so that node's death cannot take it.
/// A reservation ([`RESERVE`]) in the peer's place is not a known peer: it
/// is replaced and announced. The room is opened (streamed `room-opened`)
/// when it enters the rooms set, not when its hash appears, which a
/// reservation does first.
pub const UPSERT: &str = concat!(
    emit_lua!(),
    r#"
local prev = redis.call('HGET', KEYS[1], ARGV[2])
local event = ARGV[8]
if prev and string.sub(prev, -1) == '\n' then
  prev = false
end
if prev and ARGV[9] == '1' then
  if prev == ARGV[3] .. '\n' .. ARGV[4] then
    redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
    return 0
  end
  event = 'peer-updated'
end
if prev then
  local old = string.match(prev, '^[^\n]*')
  if old ~= ARGV[3] then
    redis.call('HDEL', ARGV[10] .. old .. ':peers', ARGV[2])
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '\n' .. ARGV[4])
local opened = redis.call('SADD', KEYS[2], ARGV[1]) == 1
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[4], ARGV[5])
if opened then
  emit(KEYS[5], KEYS[6], ARGV[7], 'room-opened', ARGV[1], ARGV[3], ARGV[6], {})
end
emit(KEYS[5], KEYS[6], ARGV[7], event, ARGV[1], ARGV[3], ARGV[6],
  {'peer_id', ARGV[2], 'peer', ARGV[4]})
return 1
"#
);

/// KEYS: room hash, rooms set, node peers, room channel, stream, room meta,
/// room seq.
/// ARGV: room, peer, node, reason, payload, ts, maxlen, only_if_present.
/// With `only_if_present` = 1 (announcing a dead node's peers) a peer that is
/// already gone is not announced again, so two announcers cannot duplicate.
/// A peer that another node holds now (it moved) is left alone. A
/// reservation in the peer's place (its join never completed) is removed
/// without a word: nobody was ever told of it. The room's meta goes with
/// its last member.
pub const REMOVE: &str = concat!(
    emit_lua!(),
    r#"
local cur = redis.call('HGET', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if cur and string.match(cur, '^[^\n]*') ~= ARGV[3] then
  return 0
end
local existed = redis.call('HDEL', KEYS[1], ARGV[2]) == 1
local reserved = cur and string.sub(cur, -1) == '\n'
if reserved or (not existed and ARGV[8] == '1') then
  if reserved and redis.call('EXISTS', KEYS[1]) == 0
    and redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
    redis.call('DEL', KEYS[6])
    emit(KEYS[5], KEYS[7], ARGV[7], 'room-closed', ARGV[1], ARGV[3], ARGV[6], {})
  end
  return 0
end
redis.call('PUBLISH', KEYS[4], ARGV[5])
if existed then
  emit(KEYS[5], KEYS[7], ARGV[7], 'peer-left', ARGV[1], ARGV[3], ARGV[6],
    {'peer_id', ARGV[2], 'reason', ARGV[4]})
  if redis.call('EXISTS', KEYS[1]) == 0
    and redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
    redis.call('DEL', KEYS[6])
    emit(KEYS[5], KEYS[7], ARGV[7], 'room-closed', ARGV[1], ARGV[3], ARGV[6], {})
  end
end
return 1
"#
);

/// KEYS: room hash, node peers. ARGV: peer, node, room, cap.
/// Takes a slot in the room for a join of `node`'s, if the room has one:
/// returns 1 and records a reservation (`<node>` and a newline, no peer
/// object) in the peer's place, or 0 if `cap` entries (peers and other
/// reservations) are there already. A peer already there keeps its entry
/// (and its slot). Nothing is announced: the join's
/// [`UPSERT`], queued after it, replaces the reservation and announces the
/// peer; a join that fails after all gives it back ([`UNRESERVE`]). The
/// node's index lists it, so that the node's death clears it too
/// ([`REMOVE`] takes it away silently).
pub const RESERVE: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\n')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"#;

/// KEYS: room hash, rooms set, node peers, stream, room meta, room seq.
/// ARGV: room, peer, node, ts, maxlen.
/// Gives back a slot [`RESERVE`] took for a join that did not complete:
/// only a reservation of `node`'s is removed, never a peer, and nothing is
/// announced. A room it leaves empty is closed (if a member had opened it).
pub const UNRESERVE: &str = concat!(
    emit_lua!(),
    r#"
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] .. '\n' then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0
  and redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[5])
  emit(KEYS[4], KEYS[6], ARGV[5], 'room-closed', ARGV[1], ARGV[3], ARGV[4], {})
end
return 1
"#
);

/// KEYS: room meta, room hash, rooms set, room channel, stream, room seq.
/// ARGV: room, meta, payload (the `A` message announcing it), node, ts,
/// maxlen.
/// Sets a room's meta, announces it and streams `room-meta-updated`, if the
/// room has members (it is in the rooms set): returns 1, else 0 and nothing
/// is written.
pub const SET_ROOM_META: &str = concat!(
    emit_lua!(),
    r#"
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0
  or redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[4], ARGV[3])
emit(KEYS[5], KEYS[6], ARGV[6], 'room-meta-updated', ARGV[1], ARGV[4], ARGV[5],
  {'meta', ARGV[2]})
return 1
"#
);

/// The node lease and heartbeat, on Redis's clock.
/// KEYS: lease, nodes zset. ARGV: instance token, lease ms, node, heartbeat.
/// Takes or renews the lease unless another instance holds it; with
/// `heartbeat` = 1 and the lease ours, also stamps the node's heartbeat with
/// Redis's `TIME`, so that every node's liveness is scored and judged on one
/// clock. Returns `{now_ms, 1}` when the lease is ours, `{now_ms, 0,
/// pttl_ms}` when another instance holds it (then nothing is written).
pub const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {now, 0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], now, ARGV[3])
end
return {now, 1}
"#;

/// KEYS: nodes zset. ARGV: node timeout ms.
/// The nodes whose last heartbeat is older than the timeout by Redis's
/// clock (the same clock that stamped them).
pub const STALE_NODES: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
"#;

/// KEYS: lease. ARGV: instance token. Gives the lease up if it is ours
/// (a clean shutdown), so a restart under the same node id need not wait.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Anti-entropy: which of this node's peers Redis no longer records
/// (`FLUSHALL`, eviction, a restore), without waiting for a reconnect.
/// KEYS: node peers index. ARGV: node, room-key prefix, then pairs of
/// room and peer id. Returns the 1-based pair numbers missing from their
/// room hash; a peer recorded under another node (it moved) is not this
/// node's to restore. A peer recorded under this node but missing from
/// the index (evicted alone) goes back into the index.
pub const VERIFY: &str = r#"
local missing = {}
local own = ARGV[1] .. '\n'
for i = 3, #ARGV, 2 do
  local cur = redis.call('HGET', ARGV[2] .. ARGV[i], ARGV[i + 1])
  if not cur then
    missing[#missing + 1] = (i - 1) / 2
  elseif string.sub(cur, 1, #own) == own then
    redis.call('HSETNX', KEYS[1], ARGV[i + 1], ARGV[i])
  end
end
return missing
"#;
