//! The event log of a Redis cluster: the presence stream the scripts write
//! (one entry per event, in the same script as the change it describes),
//! read by one consumer group per webhook endpoint.
//!
//! - One node at a time delivers an endpoint's events: it holds the
//!   endpoint's lease (`SET NX PX`, renewed), so a room's events go out in
//!   order. Entries it took stay in the group's pending list until settled;
//!   a node that takes the lease over claims the ones left idle
//!   (`XAUTOCLAIM`) before reading new ones.
//! - Dead letters go to a stream of their own per endpoint, in the same
//!   `MULTI` as the `XACK`; a replay moves them to a replay stream the group
//!   reads as well (and acknowledges and deletes once settled).
//! - If Redis comes back empty, the group is gone (`NOGROUP`): it is made
//!   again from the start of the new stream, so nothing written since is
//!   skipped. What the old stream held and no node had taken is lost with
//!   it (`docs/events.md` says so).

use futures_util::future::{BoxFuture, FutureExt};
use redis::AsyncConnectionConfig;
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, warn};

use super::{QUERY_TIMEOUT, Shared, unavailable};
use crate::bus::{BusError, DeadLetter, EventLog, Lead, Taken};
use crate::event::RoomEvent;

/// Dead letters kept per endpoint (approximately: `MAXLEN ~`).
const DEAD_MAXLEN: usize = 10_000;

/// Renews a lease, or takes it if free and asked to. KEYS: lease. ARGV:
/// holder, ttl ms, take (1 or 0). Returns 1 (ours now), 0 (another
/// holder's) or 2 (free, not taken).
const LEAD: &str = r#"
local h = redis.call('GET', KEYS[1])
if h and h ~= ARGV[1] then
  return 0
end
if not h and ARGV[3] ~= '1' then
  return 2
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

pub struct RedisLog {
    shared: Arc<Shared>,
    /// Its own connection for the blocking reads, so that a wait never
    /// holds up the engine's queries on the shared one.
    reader: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Where a new group starts: the stream as of this process's start
    /// (events of changes made before it are not this node's to deliver).
    since_ms: u64,
    /// Where each group's claims go on in each stream.
    cursors: std::sync::Mutex<HashMap<String, String>>,
}

fn failed(e: redis::RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl RedisLog {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        RedisLog {
            shared,
            reader: tokio::sync::Mutex::new(None),
            since_ms: crate::ids::cluster_ms(),
            cursors: std::sync::Mutex::default(),
        }
    }

    fn group_name(group: &str) -> String {
        format!("webhook:{group}")
    }

    fn conn(&self) -> Result<MultiplexedConnection, BusError> {
        self.shared.conn().ok_or_else(unavailable)
    }

    /// Runs `cmd` on the shared connection, within the query timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BusError> {
        let mut conn = self.conn()?;
        tokio::time::timeout(QUERY_TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| unavailable())?
            .map_err(failed)
    }

    /// Creates the group on the stream (from `start`) and on the replay
    /// stream; one that exists is left as it is.
    async fn create(&self, group: &str, start: &str) -> Result<(), BusError> {
        let keys = &self.shared.keys;
        for (stream, from) in [(keys.stream(), start), (keys.webhook_replay(group), "0")] {
            let made: Result<Value, BusError> = self
                .query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(stream)
                        .arg(Self::group_name(group))
                        .arg(from)
                        .arg("MKSTREAM"),
                )
                .await;
            match made {
                Err(BusError::Unavailable(e)) if e.contains("BUSYGROUP") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Redis lost the group (it came back empty, or someone removed it):
    /// made again, from the start of the stream, since everything it holds
    /// now is new.
    async fn regroup_if_lost(
        &self,
        group: &str,
        result: Result<Vec<Taken>, BusError>,
    ) -> Result<Vec<Taken>, BusError> {
        match result {
            Err(BusError::Unavailable(e)) if e.contains("NOGROUP") => {
                warn!(
                    group,
                    "webhook consumer group missing: made again from the stream's start"
                );
                self.create(group, "0").await?;
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn reader(&self) -> Result<MultiplexedConnection, BusError> {
        let mut slot = self.reader.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(QUERY_TIMEOUT))
            .set_response_timeout(None);
        let conn = self
            .shared
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(failed)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Entries as taken events; an entry that is not an event (written by
    /// something else, or broken) is acknowledged and logged, so it cannot
    /// block the group, and never misread.
    async fn events(&self, group: &str, stream: &str, entries: Vec<StreamId>) -> Vec<Taken> {
        let replays = stream != self.shared.keys.stream();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let fields = strings(&entry);
            let id = if replays {
                fields.get("id").cloned().unwrap_or_default()
            } else {
                entry.id.clone()
            };
            match RoomEvent::from_fields(&id, &fields) {
                Ok(event) => out.push(Taken {
                    event: Arc::new(event),
                    replay: replays.then(|| entry.id.clone()),
                }),
                Err(e) => {
                    error!(stream, entry = %entry.id, "not an event ({e}): skipped");
                    let _: Result<Value, _> = self
                        .query(
                            redis::cmd("XACK")
                                .arg(stream)
                                .arg(Self::group_name(group))
                                .arg(&entry.id),
                        )
                        .await;
                }
            }
        }
        out
    }

    /// [`EventLog::claim`], but for a missing group. Each stream's scan
    /// goes on from where the last one stopped (`XAUTOCLAIM`'s cursor),
    /// back to the start once it reached the end.
    async fn claim_pending(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        idle: Duration,
    ) -> Result<Vec<Taken>, BusError> {
        let keys = &self.shared.keys;
        let mut out = Vec::new();
        for stream in [keys.stream(), keys.webhook_replay(group)] {
            let cursor_key = format!("{group} {stream}");
            let from = self
                .cursors
                .lock()
                .ok()
                .and_then(|c| c.get(&cursor_key).cloned())
                .unwrap_or_else(|| "0-0".to_owned());
            let reply: StreamAutoClaimReply = self
                .query(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&stream)
                        .arg(Self::group_name(group))
                        .arg(consumer)
                        .arg(idle.as_millis() as u64)
                        .arg(&from)
                        .arg("COUNT")
                        .arg(max),
                )
                .await?;
            if let Ok(mut c) = self.cursors.lock() {
                c.insert(cursor_key, reply.next_stream_id.clone());
            }
            if !reply.deleted_ids.is_empty() {
                error!(
                    group,
                    lost = reply.deleted_ids.len(),
                    "pending events were trimmed from the stream before delivery (raise --presence-stream-maxlen)"
                );
                let mut ack = redis::cmd("XACK");
                ack.arg(&stream)
                    .arg(Self::group_name(group))
                    .arg(&reply.deleted_ids);
                let _: Result<Value, _> = self.query(&ack).await;
            }
            out.extend(self.events(group, &stream, reply.claimed).await);
        }
        Ok(out)
    }

    /// [`EventLog::take`], but for a missing group.
    async fn read(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Taken>, BusError> {
        let keys = &self.shared.keys;
        let (stream, replays) = (keys.stream(), keys.webhook_replay(group));
        let mut conn = self.reader().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(Self::group_name(group))
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&replays)
            .arg(&stream)
            .arg(">")
            .arg(">");
        let read = cmd.query_async::<Option<StreamReadReply>>(&mut conn);
        let reply = match tokio::time::timeout(wait + QUERY_TIMEOUT, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    *self.reader.lock().await = None;
                }
                return Err(failed(e));
            }
            Err(_) => {
                *self.reader.lock().await = None;
                return Err(unavailable());
            }
        };
        let mut out = Vec::new();
        // Replays first: the order the streams were named in.
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            out.extend(self.events(group, &key.key, key.ids).await);
        }
        Ok(out)
    }
}

impl EventLog for RedisLog {
    fn open_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        async move { self.create(group, &format!("{}-0", self.since_ms)).await }.boxed()
    }

    fn lead<'a>(
        &'a self,
        group: &'a str,
        holder: &'a str,
        ttl: Duration,
        take: bool,
    ) -> BoxFuture<'a, Result<Lead, BusError>> {
        async move {
            let answer: i64 = self
                .query(
                    redis::cmd("EVAL")
                        .arg(LEAD)
                        .arg(1)
                        .arg(self.shared.keys.webhook_lease(group))
                        .arg(holder)
                        .arg(ttl.as_millis() as u64)
                        .arg(if take { "1" } else { "0" }),
                )
                .await?;
            Ok(match answer {
                1 => Lead::Ours,
                2 => Lead::Free,
                _ => Lead::Other,
            })
        }
        .boxed()
    }

    fn resign<'a>(&'a self, group: &'a str, holder: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let _: Result<Value, _> = self
                .query(
                    redis::cmd("EVAL")
                        .arg(super::scripts::RELEASE)
                        .arg(1)
                        .arg(self.shared.keys.webhook_lease(group))
                        .arg(holder),
                )
                .await;
        }
        .boxed()
    }

    fn take<'a>(
        &'a self,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Taken>, BusError>> {
        async move {
            let read = self.read(group, consumer, max, wait).await;
            self.regroup_if_lost(group, read).await
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Vec<Taken>, BusError>> {
        async move {
            let claimed = self.claim_pending(group, consumer, max, idle).await;
            self.regroup_if_lost(group, claimed).await
        }
        .boxed()
    }

    fn settle<'a>(
        &'a self,
        group: &'a str,
        taken: &'a Taken,
        dead: Option<DeadLetter>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        async move {
            let keys = &self.shared.keys;
            let name = Self::group_name(group);
            let mut pipe = redis::pipe();
            pipe.atomic();
            if let Some(d) = dead {
                let cmd = pipe
                    .cmd("XADD")
                    .arg(keys.webhook_dead(group))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEAD_MAXLEN)
                    .arg("*")
                    .arg("id")
                    .arg(&d.event.id);
                for (k, v) in d.event.to_fields() {
                    cmd.arg(k).arg(v);
                }
                cmd.arg("error")
                    .arg(&d.error)
                    .arg("attempts")
                    .arg(d.attempts)
                    .arg("failed_at")
                    .arg(d.failed_at)
                    .ignore();
            }
            match &taken.replay {
                Some(entry) => {
                    let replays = keys.webhook_replay(group);
                    pipe.cmd("XACK")
                        .arg(&replays)
                        .arg(&name)
                        .arg(entry)
                        .ignore();
                    pipe.cmd("XDEL").arg(&replays).arg(entry).ignore();
                }
                None => {
                    pipe.cmd("XACK")
                        .arg(keys.stream())
                        .arg(&name)
                        .arg(&taken.event.id)
                        .ignore();
                }
            }
            let mut conn = self.conn()?;
            tokio::time::timeout(QUERY_TIMEOUT, pipe.query_async::<()>(&mut conn))
                .await
                .map_err(|_| unavailable())?
                .map_err(failed)
        }
        .boxed()
    }

    fn dead_letters<'a>(
        &'a self,
        group: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        async move {
            let mut conn = self.conn()?;
            let read = dead_letters_in(&mut conn, &self.shared.keys, group, max);
            tokio::time::timeout(QUERY_TIMEOUT, read)
                .await
                .map_err(|_| unavailable())?
                .map_err(failed)
        }
        .boxed()
    }

    fn replay<'a>(
        &'a self,
        group: &'a str,
        ids: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, BusError>> {
        async move {
            let mut conn = self.conn()?;
            let moved = replay_dead(&mut conn, &self.shared.keys, group, ids);
            tokio::time::timeout(QUERY_TIMEOUT, moved)
                .await
                .map_err(|_| unavailable())?
                .map(|ids| ids.len())
                .map_err(failed)
        }
        .boxed()
    }

    fn backlog<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(u64, u64), BusError>> {
        async move {
            let keys = &self.shared.keys;
            let name = Self::group_name(group);
            let mut waiting = 0;
            for stream in [keys.stream(), keys.webhook_replay(group)] {
                let groups: Vec<HashMap<String, Value>> = self
                    .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
                    .await
                    .unwrap_or_default();
                for g in groups {
                    let is_ours = g
                        .get("name")
                        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                        .is_some_and(|n| n == name);
                    if is_ours {
                        let count = |k: &str| {
                            g.get(k)
                                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
                                .unwrap_or(0)
                        };
                        waiting += count("pending") + count("lag");
                    }
                }
            }
            let dead: u64 = self
                .query(redis::cmd("XLEN").arg(keys.webhook_dead(group)))
                .await?;
            Ok((waiting, dead))
        }
        .boxed()
    }
}

/// Moves dead letters to the replay stream, atomically (two replays at
/// once cannot both move one). KEYS: dead, replay. ARGV: the event ids to
/// move (none: all). Returns the event ids moved.
const REPLAY: &str = r#"
local wanted = {}
for i = 1, #ARGV do
  wanted[ARGV[i]] = true
end
local moved = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local fields = e[2]
  local id
  for i = 1, #fields, 2 do
    if fields[i] == 'id' then
      id = fields[i + 1]
    end
  end
  if id and (#ARGV == 0 or wanted[id]) then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], e[1])
    moved[#moved + 1] = id
  end
end
return moved
"#;

/// The dead letters of endpoint `group`, oldest first, at most `max`: for
/// the log and for the command line (`webhook/cli.rs`), which brings its
/// own connection.
pub async fn dead_letters_in(
    conn: &mut MultiplexedConnection,
    keys: &super::Keys,
    group: &str,
    max: usize,
) -> redis::RedisResult<Vec<DeadLetter>> {
    let range: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.webhook_dead(group))
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(max)
        .query_async(conn)
        .await?;
    Ok(range.ids.iter().filter_map(dead_letter).collect())
}

/// Moves the dead letters of endpoint `group` with these event ids (all
/// with `None`) to its replay stream, which its deliverer reads; returns
/// the event ids moved.
pub async fn replay_dead(
    conn: &mut MultiplexedConnection,
    keys: &super::Keys,
    group: &str,
    ids: Option<&[String]>,
) -> redis::RedisResult<Vec<String>> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(REPLAY)
        .arg(2)
        .arg(keys.webhook_dead(group))
        .arg(keys.webhook_replay(group));
    match ids {
        // No id at all must not read as "all".
        Some([]) => return Ok(Vec::new()),
        Some(ids) => {
            cmd.arg(ids);
        }
        None => {}
    }
    cmd.query_async(conn).await
}

/// A dead-letter stream entry as a dead letter (`None`: not one).
fn dead_letter(entry: &StreamId) -> Option<DeadLetter> {
    DeadLetter::from_fields(&strings(entry))
}

/// A stream entry's fields as text (the scripts write nothing else).
fn strings(entry: &StreamId) -> HashMap<String, String> {
    entry
        .map
        .iter()
        .filter_map(|(k, v)| redis::from_redis_value_ref(v).ok().map(|v| (k.clone(), v)))
        .collect()
}
