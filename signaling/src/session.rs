//! One WebSocket connection, from upgrade to clean-up.
//!
//! The session task reads frames and turns each into hub calls and replies;
//! the [writer] task owns the socket's sending half. The
//! session ends when the client closes or drops, when a deadline passes, or
//! when anyone closes the connection through its [`ConnCtl`]; clean-up then
//! happens in one place, whatever ended it.

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use serde_json::value::RawValue;
use signaling_protocol::reply::{self, LeaveReason};
use signaling_protocol::request::Join;
use signaling_protocol::{ErrorCode, RelayKind, Request, decode, room::is_valid_room};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use tracing::{debug, info};

use crate::auth::now_unix;
use crate::hub::room::ConnId;
use crate::hub::{JoinRequest, Membership, Refusal};
use crate::ids::RoomId;
use crate::outbox::{CloseCause, ConnCtl, Frame, Outbox};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::server::App;
use crate::writer;

/// How long a connection the server closed may take to answer the close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How the read loop ended.
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
    app: Arc<App>,
    conn: ConnId,
    outbox: Outbox,
    rate: RateLimiter,
    /// The `?token=` of the upgrade request.
    query_token: Option<String>,
    membership: Option<Membership>,
    ever_joined: bool,
}

/// Starts the connection's writer and returns the session, which runs until
/// the connection ends. Not an `async fn`: the socket is split here, before
/// the session's future exists, so that future (which lives as long as the
/// connection) does not keep a dead slot the size of a `WebSocket`.
pub fn run(
    socket: WebSocket,
    app: Arc<App>,
    query_token: Option<String>,
    remote: SocketAddr,
) -> impl Future<Output = ()> {
    let limits = &app.config.limits;
    let outbox = Outbox::new(limits.outbox_frames, limits.outbox_bytes);
    let ctl = outbox.ctl().clone();
    let conn = app.hub.register(outbox.clone());
    app.metrics.connection_opened();
    info!(conn, %remote, "connection opened");

    let (sink, stream) = socket.split();
    let writer = tokio::spawn(writer::run(
        sink,
        ctl.clone(),
        limits.ping_interval,
        app.metrics.clone(),
    ));
    let session = Session {
        rate: RateLimiter::new(limits.rate, limits.rate_burst, limits.flood_close_after),
        app: app.clone(),
        conn,
        outbox,
        query_token,
        membership: None,
        ever_joined: false,
    };
    serve(session, stream, writer, ctl)
}

async fn serve(
    mut session: Session,
    mut stream: SplitStream<WebSocket>,
    writer: tokio::task::JoinHandle<()>,
    ctl: Arc<ConnCtl>,
) {
    let (app, conn) = (session.app.clone(), session.conn);
    let end = session.read_loop(&mut stream, &ctl).await;

    // Clean-up, whatever ended the loop.
    let cause = match end {
        End::Forced(c) => Some(c),
        _ => None,
    };
    if let Some(c) = cause {
        app.metrics.forced_close(c);
    }
    ctl.close(cause);
    let _ = timeout(Duration::from_secs(2), writer).await;
    let unwritten = ctl.take_all();
    if cause.and_then(CloseCause::close_frame).is_some() {
        // Our close frame is out: read (and discard) until the client answers
        // it, so the socket is not closed under unread data, which would reset
        // the connection and lose the close frame on the way.
        let _ = timeout(CLOSE_LINGER, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(stream);
    let membership = session.membership.take();
    if let Some(m) = &membership {
        // During a drain every client is told to resume elsewhere, so even a
        // clean close is a drop: nobody should see it leave.
        let dropped = match end {
            End::Clean => app.hub.is_draining(),
            End::Dropped => true,
            End::Forced(c) => c.is_drop(),
        };
        app.hub.disconnect(m, conn, dropped, unwritten);
    }
    app.hub.unregister(conn);
    app.metrics.connection_closed();
    match &membership {
        Some(m) => info!(conn, room = %m.room, peer = %m.peer, end = ?end, "connection closed"),
        None => info!(conn, end = ?end, "connection closed"),
    }
}

impl Session {
    async fn read_loop(&mut self, stream: &mut SplitStream<WebSocket>, ctl: &ConnCtl) -> End {
        let limits = &self.app.config.limits;
        let (heartbeat, join_deadline) = (limits.heartbeat_timeout, limits.join_deadline);
        let opened = Instant::now();
        let mut last_heard = opened;
        // One timer for both deadlines, made once: a frame only moves
        // `last_heard`, and the timer, when it fires early, sets itself to
        // the deadline that then applies.
        let due = |last_heard: Instant, joined: bool| {
            let due = last_heard + heartbeat;
            if joined {
                due
            } else {
                due.min(opened + join_deadline)
            }
        };
        let timer = tokio::time::sleep_until(due(last_heard, false).into());
        let closing = ctl.closing();
        tokio::pin!(timer, closing);
        loop {
            let frame = tokio::select! {
                biased;
                _ = &mut closing => return End::Forced(ctl.cause().unwrap_or(CloseCause::Replaced)),
                _ = &mut timer => {
                    let now = Instant::now();
                    if !self.ever_joined && now >= opened + join_deadline {
                        return End::Forced(CloseCause::JoinDeadline);
                    }
                    if now >= last_heard + heartbeat {
                        return End::Forced(CloseCause::HeartbeatTimeout);
                    }
                    timer.as_mut().reset(due(last_heard, self.ever_joined).into());
                    continue;
                }
                frame = stream.next() => frame,
            };
            let now = Instant::now();
            last_heard = now;
            let verdict = match frame {
                None => return End::Dropped,
                Some(Err(e)) => {
                    debug!(conn = self.conn, error = %e, "read failed");
                    return if is_capacity_error(&e) {
                        End::Forced(CloseCause::TooBig)
                    } else {
                        End::Dropped
                    };
                }
                Some(Ok(Message::Close(_))) => return End::Clean,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => self.admit(now, None).await,
                Some(Ok(Message::Text(text))) => self.admit(now, Some(text.as_str())).await,
            };
            if let Some(cause) = verdict {
                return End::Forced(cause);
            }
        }
    }

    /// Rate-limits, size-checks and handles one data frame (`None` = binary).
    async fn admit(&mut self, now: Instant, text: Option<&str>) -> Option<CloseCause> {
        match self.rate.check(now) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.error(
                    None,
                    ErrorCode::RateLimited,
                    "rate limit exceeded: message dropped",
                );
                return None;
            }
            Verdict::Close => return Some(CloseCause::Flood),
        }
        match text {
            None => self.error(
                None,
                ErrorCode::BadMessage,
                "binary frames are not accepted",
            ),
            Some(t) if t.len() > self.app.config.limits.max_frame_bytes => self.error(
                None,
                ErrorCode::TooLarge,
                "frame larger than the limit: dropped",
            ),
            Some(t) => self.handle(t, now).await,
        }
        None
    }

    async fn handle(&mut self, text: &str, now: Instant) {
        let env = match decode(text) {
            Ok(env) => env,
            Err(e) => return self.error(e.id, e.code, &e.message),
        };
        let reference = env.id;
        let result = match env.request {
            Request::Ping => {
                self.outbox.push(Frame::reply(reply::pong(reference)));
                Ok(())
            }
            // Boxed: the only request that may wait (on the bus); inline, its
            // state would sit in every connection's task for its whole life.
            Request::Join(join) => Box::pin(self.join(join, reference)).await,
            Request::Relay { kind, to, payload } => self.relay(kind, to.as_deref(), payload, now),
            Request::Update { meta } => self.update(meta),
            Request::Leave => self.leave(reference),
        };
        if let Err(r) = result {
            self.error(reference, r.code, r.message);
        }
    }

    fn joined(&self) -> Result<&Membership, Refusal> {
        self.membership.as_ref().ok_or(Refusal {
            code: ErrorCode::NotJoined,
            message: "join a room first",
        })
    }

    async fn join(&mut self, join: Join<'_>, reference: Option<&RawValue>) -> Result<(), Refusal> {
        let limits = &self.app.config.limits;
        if self.membership.is_some() {
            return Err(refusal(
                ErrorCode::AlreadyJoined,
                "already in a room: leave it first",
            ));
        }
        if !is_valid_room(&join.room, limits.max_room_len) {
            return Err(refusal(
                ErrorCode::InvalidRoom,
                "room names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        if let Some(name) = &join.name {
            if name.chars().count() > limits.max_name_chars || name.chars().any(char::is_control) {
                return Err(refusal(
                    ErrorCode::BadMessage,
                    "`name` must be at most 64 characters, without control characters",
                ));
            }
        }
        let meta = match join.meta {
            Some(m) if m.get().len() > limits.max_meta_bytes => {
                return Err(refusal(ErrorCode::TooLarge, "`meta` is larger than 1 KiB"));
            }
            Some(m) => m.get().to_owned(),
            None => "{}".to_owned(),
        };
        let mut default_name = None;
        if let Some(auth) = &self.app.auth {
            let token = join.token.as_deref().or(self.query_token.as_deref());
            let claims = token
                .ok_or(crate::auth::AuthError::Missing)
                .and_then(|t| auth.verify_join(t, &join.room, now_unix()))
                .map_err(|e| {
                    debug!(conn = self.conn, error = %e, "join refused");
                    refusal(
                        ErrorCode::Unauthorized,
                        "a valid token for this room is required",
                    )
                })?;
            default_name = claims.sub;
        }
        let name = join
            .name
            .map(|n| n.into_owned())
            .or(default_name)
            .unwrap_or_default();
        let room = RoomId::new(join.room.as_ref());
        let resuming = join.resume.is_some();
        let m = self
            .app
            .hub
            .join(JoinRequest {
                room,
                name,
                meta,
                resume: join.resume.as_deref(),
                reference,
                conn: self.conn,
                outbox: self.outbox.clone(),
                ice: &self.app.ice,
            })
            .await?;
        info!(conn = self.conn, room = %m.room, peer = %m.peer, resumed = resuming, "peer joined");
        self.ever_joined = true;
        self.membership = Some(m);
        Ok(())
    }

    fn relay(
        &mut self,
        kind: RelayKind,
        to: Option<&str>,
        payload: &RawValue,
        now: Instant,
    ) -> Result<(), Refusal> {
        let from = self.joined()?;
        if kind == RelayKind::Message && payload.get().len() > self.app.config.limits.max_data_bytes
        {
            return Err(refusal(ErrorCode::TooLarge, "`data` is larger than 16 KiB"));
        }
        self.app
            .hub
            .relay(from, kind, to, payload.get(), now)
            .map(drop)
    }

    fn update(&mut self, meta: &RawValue) -> Result<(), Refusal> {
        let who = self.joined()?;
        if meta.get().len() > self.app.config.limits.max_meta_bytes {
            return Err(refusal(ErrorCode::TooLarge, "`meta` is larger than 1 KiB"));
        }
        self.app.hub.update(who, meta.get().to_owned())
    }

    fn leave(&mut self, reference: Option<&RawValue>) -> Result<(), Refusal> {
        self.joined()?;
        if let Some(m) = self.membership.take() {
            self.app.hub.leave(&m, LeaveReason::Left);
            info!(conn = self.conn, room = %m.room, peer = %m.peer, "peer left");
            self.outbox
                .push(Frame::reply(reply::left(reference, m.room.as_str())));
        }
        Ok(())
    }

    fn error(&self, reference: Option<&RawValue>, code: ErrorCode, message: &str) {
        self.app.metrics.error(code);
        self.outbox
            .push(Frame::reply(reply::error(reference, code, message)));
    }
}

fn refusal(code: ErrorCode, message: &'static str) -> Refusal {
    Refusal { code, message }
}

/// Whether reading failed because a frame was over the read limit.
fn is_capacity_error(e: &axum::Error) -> bool {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(tungstenite::Error::Capacity(_)) = s.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}
