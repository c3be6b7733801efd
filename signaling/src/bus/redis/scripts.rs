//! Lua scripts that change presence atomically: the room hash, the room set,
//! the node's peer index, the pub/sub announcement and the stream entries move
//! together or not at all.

/// KEYS: room hash, rooms set, node peers, room channel, stream.
/// ARGV: room, peer, node, peer object, payload, ts, maxlen, event, quiet_if_known.
/// `event` is `peer-joined` or `peer-updated`. With `quiet_if_known` = 1 (a
/// node re-asserting its peers after an outage) a peer already recorded is
/// neither announced nor streamed again.
pub const UPSERT: &str = r#"
local known = redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1
if known and ARGV[9] == '1' then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
  return 0
end
local opened = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '\n' .. ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[4], ARGV[5])
if opened then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*',
    'event', 'room-opened', 'room', ARGV[1], 'ts', ARGV[6])
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*',
  'event', ARGV[8], 'room', ARGV[1], 'peer_id', ARGV[2], 'node', ARGV[3],
  'peer', ARGV[4], 'ts', ARGV[6])
return 1
"#;

/// KEYS: room hash, rooms set, node peers, room channel, stream.
/// ARGV: room, peer, node, reason, payload, ts, maxlen, only_if_present.
/// With `only_if_present` = 1 (announcing a dead node's peers) a peer that is
/// already gone is not announced again, so two announcers cannot duplicate.
pub const REMOVE: &str = r#"
local existed = redis.call('HDEL', KEYS[1], ARGV[2]) == 1
redis.call('HDEL', KEYS[3], ARGV[2])
if not existed and ARGV[8] == '1' then
  return 0
end
redis.call('PUBLISH', KEYS[4], ARGV[5])
if existed then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*',
    'event', 'peer-left', 'room', ARGV[1], 'peer_id', ARGV[2], 'node', ARGV[3],
    'reason', ARGV[4], 'ts', ARGV[6])
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[1])
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*',
      'event', 'room-closed', 'room', ARGV[1], 'ts', ARGV[6])
  end
end
return 1
"#;
