//! One WebSocket connection, from upgrade to clean-up.
//!
//! A connection is one task. The session waits on its [`Socket`] (which
//! writes whatever the outbox holds in the meantime) and turns each frame it
//! reads into hub calls and replies. The session ends when the client closes
//! or drops, when a deadline passes, or when anyone closes the connection
//! through its [`ConnCtl`](crate::outbox::ConnCtl); clean-up then happens in
//! one place, whatever ended it.

use serde_json::value::RawValue;
use signaling_protocol::reply::{self, LeaveReason};
use signaling_protocol::request::Join;
use signaling_protocol::{
    ErrorCode, RelayKind, Request, decode, room::is_valid_name, room::is_valid_room,
};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info};

use crate::admission::Slot;
use crate::app::SessionContext;
use crate::auth::{Grants, SameIdentity, now_unix};
use crate::hub::room::ConnId;
use crate::hub::{JoinRequest, Membership, Refusal};
use crate::ids::RoomId;
use crate::outbox::{CloseCause, Frame, Outbox};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::socket::{Event, Socket};
use crate::upgrade::WebSocket;

/// A join under way: it may wait on the bus.
type Joining<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// How the connection's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent a close frame.
    Clean,
    /// The stream ended or failed without a close frame.
    Dropped,
    /// The server closed it.
    Forced(CloseCause),
}

struct Session {
    ctx: Arc<SessionContext>,
    conn: ConnId,
    outbox: Outbox,
    rate: RateLimiter,
    /// The `?token=` of the upgrade request.
    query_token: Option<String>,
    membership: Option<Membership>,
    /// What the join token of the membership grants (everything in open mode).
    grants: Grants,
    ever_joined: bool,
    remote: Remote,
}

/// Where a connection comes from: the client's address (through trusted
/// proxies) and its place under the per-address cap, held for its life.
pub struct Remote {
    pub client: IpAddr,
    /// `None` for the host itself, which is not held to per-address limits.
    pub slot: Option<Slot>,
}

/// Registers the connection and returns its task, which runs until the
/// connection ends.
pub fn run(
    ws: WebSocket,
    ctx: Arc<SessionContext>,
    query_token: Option<String>,
    remote: Remote,
) -> impl Future<Output = ()> {
    let limits = &ctx.limits;
    let outbox = Outbox::new(limits.outbox_frames, limits.outbox_bytes);
    let conn = ctx.conns.register(outbox.clone());
    ctx.metrics.connection_opened();
    info!(conn, client = %remote.client, "connection opened");
    let mut socket = Socket::new(ws, outbox.ctl().clone(), ctx.metrics.clone());
    let mut session = Session {
        rate: RateLimiter::new(limits.rate, limits.rate_burst, limits.flood_close_after),
        ctx,
        conn,
        outbox,
        query_token,
        membership: None,
        grants: Grants::default(),
        ever_joined: false,
        remote,
    };
    // An async block, not an async fn, and the two are only borrowed in it:
    // an async fn's future keeps its arguments twice (as they came, and
    // where the body put them), and this future lives as long as the
    // connection.
    async move {
        let end = session.drive(&mut socket).await;
        // Boxed: it runs once, at the end, and its timers would otherwise
        // sit in every connection's task for its whole life.
        Box::pin(session.finish(&mut socket, end)).await;
    }
}

impl Session {
    /// Clean-up, whatever ended the connection.
    async fn finish(&mut self, socket: &mut Socket, end: End) {
        let (ctx, conn) = (&self.ctx, self.conn);
        let cause = match end {
            End::Forced(c) => Some(c),
            _ => None,
        };
        if let Some(c) = cause {
            ctx.metrics.forced_close(c);
        }
        self.outbox.ctl().close(cause);
        let unwritten = socket.close(cause).await;
        let membership = self.membership.take();
        if let Some(m) = &membership {
            // During a drain every client is told to resume elsewhere, so even a
            // clean close is a drop: nobody should see it leave.
            let dropped = match end {
                End::Clean => ctx.conns.is_draining(),
                End::Dropped => true,
                End::Forced(c) => c.is_drop(),
            };
            ctx.hub.disconnect(m, conn, dropped, unwritten);
        }
        ctx.conns.unregister(conn);
        ctx.metrics.connection_closed();
        match &membership {
            Some(m) => info!(conn, room = %m.room, peer = %m.peer, end = ?end, "connection closed"),
            None => info!(conn, end = ?end, "connection closed"),
        }
    }

    /// Runs the connection until something ends it.
    async fn drive(&mut self, socket: &mut Socket) -> End {
        let limits = &self.ctx.limits;
        let (heartbeat, join_deadline, ping_every) = (
            limits.heartbeat_timeout,
            limits.join_deadline,
            limits.ping_interval,
        );
        let opened = Instant::now();
        let mut last_heard = opened;
        let mut next_ping = opened + ping_every;
        // One timer for the ping and both deadlines, made once: a frame
        // only moves `last_heard`, and the timer, when it fires, sends the
        // ping that is due or sets itself to what comes next.
        let due = |last_heard: Instant, next_ping: Instant, joined: bool| {
            let due = (last_heard + heartbeat).min(next_ping);
            if joined {
                due
            } else {
                due.min(opened + join_deadline)
            }
        };
        let timer = tokio::time::sleep_until(due(last_heard, next_ping, false).into());
        tokio::pin!(timer);
        loop {
            let frame = match socket.next(timer.as_mut()).await {
                Event::Frame(frame) => frame,
                Event::Timer => {
                    let now = Instant::now();
                    if !self.ever_joined && now >= opened + join_deadline {
                        return End::Forced(CloseCause::JoinDeadline);
                    }
                    if now >= last_heard + heartbeat {
                        return End::Forced(CloseCause::HeartbeatTimeout);
                    }
                    if now >= next_ping {
                        socket.ping();
                        next_ping = now + ping_every;
                    }
                    timer
                        .as_mut()
                        .reset(due(last_heard, next_ping, self.ever_joined).into());
                    continue;
                }
                Event::Closing => {
                    let cause = self.outbox.ctl().cause();
                    return End::Forced(cause.unwrap_or(CloseCause::Replaced));
                }
                Event::Ended => return End::Dropped,
                Event::WriteFailed(e) => {
                    debug!(conn = self.conn, error = %e, "write failed");
                    return End::Dropped;
                }
                Event::ReadFailed(e) => {
                    debug!(conn = self.conn, error = %e, "read failed");
                    // Too many frames, or too many fragments in one message:
                    // a flood that never reached the message rate limit.
                    if let Some(v) = socket.violation() {
                        info!(conn = self.conn, violation = %v, "frame flood");
                        return End::Forced(CloseCause::Flood);
                    }
                    return if is_capacity_error(&e) {
                        End::Forced(CloseCause::TooBig)
                    } else {
                        End::Dropped
                    };
                }
            };
            let now = Instant::now();
            last_heard = now;
            let text = match frame {
                Message::Close(_) => return End::Clean,
                // Pings cost us a pong each: they count against the rate,
                // silently, and a ping flood is closed like any other.
                Message::Ping(_) => match self.rate.check(now) {
                    Verdict::Close => return End::Forced(CloseCause::Flood),
                    Verdict::Allow | Verdict::Refuse => continue,
                },
                Message::Pong(_) => continue,
                // Only written, never read.
                Message::Frame(_) => continue,
                Message::Binary(_) => None,
                Message::Text(text) => Some(text),
            };
            match self.admit(now, text.as_ref().map(|t| t.as_str())) {
                Ok(None) => {}
                Ok(Some(joining)) => joining.await,
                Err(cause) => return End::Forced(cause),
            }
        }
    }

    /// Rate-limits, size-checks and handles one data frame (`None` =
    /// binary). A join, the only request that may wait (on the bus), comes
    /// back as a boxed future for the caller to await: inline, its state
    /// would sit in every connection's task for its whole life.
    fn admit<'a>(
        &'a mut self,
        now: Instant,
        text: Option<&'a str>,
    ) -> Result<Option<Joining<'a>>, CloseCause> {
        match self.rate.check(now) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.error(
                    None,
                    ErrorCode::RateLimited,
                    "rate limit exceeded: message dropped",
                );
                return Ok(None);
            }
            Verdict::Close => return Err(CloseCause::Flood),
        }
        match text {
            None => self.error(
                None,
                ErrorCode::BadMessage,
                "binary frames are not accepted",
            ),
            Some(t) if t.len() > self.ctx.limits.max_frame_bytes => self.error(
                None,
                ErrorCode::TooLarge,
                "frame larger than the limit: dropped",
            ),
            Some(t) => return Ok(self.handle(t, now)),
        }
        Ok(None)
    }

    fn handle<'a>(&'a mut self, text: &'a str, now: Instant) -> Option<Joining<'a>> {
        let env = match decode(text) {
            Ok(env) => env,
            Err(e) => {
                self.error(e.id, e.code, &e.message);
                return None;
            }
        };
        let reference = env.id;
        let result = match env.request {
            Request::Ping => {
                self.outbox.push(Frame::reply(reply::pong(reference)));
                Ok(())
            }
            Request::Join(join) => {
                return Some(Box::pin(async move {
                    if let Err(r) = self.join(join, reference).await {
                        self.error(reference, r.code, &r.message);
                    }
                }));
            }
            Request::Relay { kind, to, payload } => {
                self.relay(kind, to.as_deref(), payload, now, reference)
            }
            Request::Update { meta } => self.update(meta),
            Request::Leave => self.leave(reference),
        };
        if let Err(r) = result {
            self.error(reference, r.code, &r.message);
        }
        None
    }

    fn joined(&self) -> Result<&Membership, Refusal> {
        self.membership
            .as_ref()
            .ok_or_else(|| refusal(ErrorCode::NotJoined, "join a room first"))
    }

    async fn join(&mut self, join: Join<'_>, reference: Option<&RawValue>) -> Result<(), Refusal> {
        let limits = &self.ctx.limits;
        if self.membership.is_some() {
            return Err(refusal(
                ErrorCode::AlreadyJoined,
                "already in a room: leave it first",
            ));
        }
        // Shared by every connection of the address: a client cannot spread
        // a join storm over many sockets.
        if !crate::admission::is_exempt(self.remote.client)
            && !self.ctx.join_rate.allow(self.remote.client, Instant::now())
        {
            return Err(refusal(
                ErrorCode::RateLimited,
                "too many joins from this address: try again shortly",
            ));
        }
        if !is_valid_room(&join.room, limits.max_room_len) {
            return Err(refusal(
                ErrorCode::InvalidRoom,
                format!(
                    "room names are 1 to {} characters of A-Z a-z 0-9 _ . -",
                    limits.max_room_len
                ),
            ));
        }
        if let Some(name) = &join.name {
            if !is_valid_name(name, limits.max_name_chars) {
                return Err(refusal(
                    ErrorCode::BadMessage,
                    format!(
                        "`name` must be at most {} characters, without control characters",
                        limits.max_name_chars
                    ),
                ));
            }
        }
        let meta = match join.meta {
            Some(m) if m.get().len() > limits.max_meta_bytes => {
                return Err(too_large("meta", limits.max_meta_bytes));
            }
            Some(m) => m.get().to_owned(),
            None => "{}".to_owned(),
        };
        let mut identity = None;
        let mut grants = Grants::default();
        if let Some(auth) = &self.ctx.auth {
            let token = join.token.as_deref().or(self.query_token.as_deref());
            let verified = match token {
                Some(t) => auth.check_join(t, &join.room, now_unix()).await,
                None => Err(crate::auth::AuthError::Missing),
            };
            let claims = verified.map_err(|e| {
                debug!(conn = self.conn, error = %e, "join refused");
                refusal(
                    ErrorCode::Unauthorized,
                    "a valid token for this room is required",
                )
            })?;
            identity = claims.sub;
            grants = claims.grants;
        }
        // The token's `name` is the one shown; else the client's, else the
        // identity.
        let name = grants
            .name
            .as_deref()
            .map(|n| name_from(n, limits.max_name_chars))
            .or_else(|| join.name.map(|n| n.into_owned()))
            .or_else(|| {
                identity
                    .as_deref()
                    .map(|sub| name_from(sub, limits.max_name_chars))
            })
            .unwrap_or_default();
        let policy = grants.same_identity.unwrap_or(self.ctx.same_identity);
        let room = RoomId::new(join.room.as_ref());
        let resuming = join.resume.is_some();
        let m = self
            .ctx
            .hub
            .join(JoinRequest {
                room,
                name,
                meta,
                resume: join.resume.as_deref(),
                reference,
                conn: self.conn,
                outbox: self.outbox.clone(),
                ice: &self.ctx.ice,
                identity: identity.as_deref(),
                replace_same_identity: policy == SameIdentity::Replace,
            })
            .await?;
        info!(conn = self.conn, room = %m.room, peer = %m.peer, resumed = resuming, "peer joined");
        self.ever_joined = true;
        self.membership = Some(m);
        self.grants = grants;
        Ok(())
    }

    fn relay(
        &mut self,
        kind: RelayKind,
        to: Option<&str>,
        payload: &RawValue,
        now: Instant,
        reference: Option<&RawValue>,
    ) -> Result<(), Refusal> {
        let from = self.joined()?;
        if kind == RelayKind::Message && payload.get().len() > self.ctx.limits.max_data_bytes {
            return Err(too_large("data", self.ctx.limits.max_data_bytes));
        }
        if kind == RelayKind::Message && to.is_none() && !self.grants.broadcast {
            return Err(refusal(
                ErrorCode::Unauthorized,
                "the join token does not grant `message` to the whole room",
            ));
        }
        self.ctx
            .hub
            .relay(from, kind, to, payload.get(), now, reference)
            .map(drop)
    }

    fn update(&mut self, meta: &RawValue) -> Result<(), Refusal> {
        let who = self.joined()?;
        if meta.get().len() > self.ctx.limits.max_meta_bytes {
            return Err(too_large("meta", self.ctx.limits.max_meta_bytes));
        }
        if !self.grants.update_meta {
            return Err(refusal(
                ErrorCode::Unauthorized,
                "the join token does not grant `update`",
            ));
        }
        self.ctx.hub.update(who, meta.get().to_owned())
    }

    fn leave(&mut self, reference: Option<&RawValue>) -> Result<(), Refusal> {
        self.joined()?;
        if let Some(m) = self.membership.take() {
            self.ctx.hub.leave(&m, LeaveReason::Left);
            info!(conn = self.conn, room = %m.room, peer = %m.peer, "peer left");
            self.outbox
                .push(Frame::reply(reply::left(reference, m.room.as_str())));
        }
        Ok(())
    }

    fn error(&self, reference: Option<&RawValue>, code: ErrorCode, message: &str) {
        self.ctx.metrics.error(code);
        self.outbox
            .push(Frame::reply(reply::error(reference, code, message)));
    }
}

/// A token's `sub` as the default display name: held to the rule a client's
/// own `name` must meet (the backend that minted the token may use any
/// string as `sub`): control characters dropped, cut to `max` characters.
fn name_from(sub: &str, max: usize) -> String {
    sub.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `field` over its configured limit: the text says the limit in force.
fn too_large(field: &str, limit: usize) -> Refusal {
    refusal(
        ErrorCode::TooLarge,
        format!("`{field}` is larger than {limit} bytes"),
    )
}

fn refusal(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Whether reading failed because a frame was over the read limit.
fn is_capacity_error(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}
