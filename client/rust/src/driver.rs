//! The task that owns the socket: it sends, turns frames into events,
//! heartbeats, and reconnects with resume when the connection is lost. A
//! close that ends the membership (4000 resumed elsewhere, 4001-4003
//! removed by the server) is final: no reconnect.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signaling_protocol::messages::{ClientMessage, ServerMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;

use crate::{ClientConfig, ClientError, Event, JoinOptions, Joined, Removal};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the handle can read without asking the driver.
#[derive(Default)]
pub struct Shared {
    pub peer_id: Option<String>,
    /// Why the driver stopped, once it has: what later calls fail with.
    pub ended: Option<ClientError>,
}

pub enum Command {
    Send(ClientMessage),
    Join {
        room: String,
        options: JoinOptions,
        reply: oneshot::Sender<Result<Joined, ClientError>>,
    },
    Leave {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Close,
}

/// A request waiting for the reply that carries its `ref`.
enum Pending {
    Join(oneshot::Sender<Result<Joined, ClientError>>),
    Leave(oneshot::Sender<Result<(), ClientError>>),
    /// Our own join after a reconnect: `resuming` until the server refuses
    /// the resume token, then a fresh join.
    Rejoin {
        resuming: bool,
    },
}

/// The room this client is in, enough to get back into it.
struct Session {
    room: String,
    options: JoinOptions,
    resume: String,
}

/// Why a connection ended.
enum End {
    Closed,
    Lost,
    Goaway(Duration),
    Replaced,
    /// Removed by the server (4001-4003): the membership is gone.
    Removed {
        why: Removal,
        reason: String,
    },
}

pub async fn connect(config: &ClientConfig) -> Result<Ws, ClientError> {
    let url = config.url_with_token();
    // No Nagle: a candidate written behind an unacknowledged offer would
    // otherwise wait for the delayed ACK (up to 40 ms).
    let attempt = tokio::time::timeout(
        config.timeout,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    );
    match attempt.await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(ClientError::Connect {
            url: config.url.clone(),
            reason: e.to_string(),
        }),
        Err(_) => Err(ClientError::Connect {
            url: config.url.clone(),
            reason: "timed out".into(),
        }),
    }
}

struct Driver {
    config: ClientConfig,
    cmds: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Mutex<Shared>>,
    session: Option<Session>,
    pending: HashMap<String, Pending>,
    /// Sends that wait for a reconnect (or for the rejoin to complete).
    queue: VecDeque<ClientMessage>,
    next_id: u64,
}

pub async fn run(
    config: ClientConfig,
    ws: Ws,
    cmds: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut d = Driver {
        config,
        cmds,
        events,
        shared,
        session: None,
        pending: HashMap::new(),
        queue: VecDeque::new(),
        next_id: 1,
    };
    let mut ws = ws;
    loop {
        let end = d.serve(ws).await;
        let mut wait = match end {
            End::Closed => return d.finish(ClientError::Closed),
            End::Replaced => return d.finish(ClientError::Replaced),
            End::Removed { why, reason } => {
                return d.finish(ClientError::Removed { why, reason });
            }
            End::Lost | End::Goaway(_) if !d.config.reconnect => {
                return d.finish(ClientError::Closed);
            }
            End::Goaway(hint) => hint,
            End::Lost => Duration::from_millis(100),
        };
        d.fail_pending(&ClientError::Closed);
        let mut attempt = 0;
        ws = loop {
            attempt += 1;
            if attempt > d.config.max_attempts {
                return d.finish(ClientError::GaveUp {
                    attempts: attempt - 1,
                });
            }
            d.emit(Event::Reconnecting { attempt });
            if !d.pause(wait).await {
                return d.finish(ClientError::Closed);
            }
            match connect(&d.config).await {
                Ok(ws) => break ws,
                Err(e) => debug!(error = %e, attempt, "reconnect failed"),
            }
            wait = (wait * 2).clamp(Duration::from_millis(100), d.config.max_backoff);
        };
    }
}

impl Driver {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Stops for good: what is pending, and every later call, fails with
    /// `why`, which is also the last event.
    fn finish(&mut self, why: ClientError) {
        if let Ok(mut sh) = self.shared.lock() {
            sh.peer_id = None;
            sh.ended = Some(why.clone());
        }
        self.fail_pending(&why);
        self.session = None;
        self.emit(Event::Closed(why));
    }

    /// Waits before a reconnect, still taking commands. `false`: closed.
    async fn pause(&mut self, d: Duration) -> bool {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.cmds.recv() => match cmd {
                    None | Some(Command::Close) => return false,
                    Some(c) => self.command_offline(c),
                },
            }
        }
    }

    /// A command while no connection is up.
    fn command_offline(&mut self, c: Command) {
        match c {
            Command::Send(m) => self.enqueue(m),
            Command::Join { reply, .. } => {
                let _ = reply.send(Err(ClientError::Closed));
            }
            Command::Leave { reply } => {
                let _ = reply.send(Err(ClientError::Closed));
            }
            Command::Close => {}
        }
    }

    fn enqueue(&mut self, m: ClientMessage) {
        if self.queue.len() >= self.config.queue {
            self.queue.pop_front();
        }
        self.queue.push_back(m);
    }

    fn fail_pending(&mut self, why: &ClientError) {
        for (_, p) in std::mem::take(&mut self.pending) {
            match p {
                Pending::Join(r) => {
                    // Never got in: nothing to resume.
                    self.session = None;
                    let _ = r.send(Err(why.clone()));
                }
                Pending::Leave(r) => {
                    let _ = r.send(Err(why.clone()));
                }
                Pending::Rejoin { .. } => {}
            }
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    fn rejoining(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Rejoin { .. }))
    }

    fn join_message(
        &self,
        room: &str,
        options: &JoinOptions,
        resume: Option<String>,
    ) -> ClientMessage {
        ClientMessage::Join {
            room: room.to_string(),
            name: options.name.clone(),
            meta: options.meta.clone(),
            token: options.token.clone(),
            resume,
        }
    }

    /// One connection's life.
    async fn serve(&mut self, ws: Ws) -> End {
        let (mut sink, mut stream) = ws.split();
        let mut out: Vec<String> = Vec::new();
        // Back after a reconnect: get into the room again before anything else.
        if let Some(s) = &self.session {
            let msg = self.join_message(&s.room, &s.options, Some(s.resume.clone()));
            let id = self.id();
            self.pending
                .insert(id.clone(), Pending::Rejoin { resuming: true });
            out.push(encode(&msg, Some(&id)));
        } else {
            while let Some(m) = self.queue.pop_front() {
                out.push(encode(&m, None));
            }
        }
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.tick().await;
        loop {
            for text in out.drain(..) {
                if sink.send(Message::text(text)).await.is_err() {
                    return End::Lost;
                }
            }
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    None | Some(Command::Close) => {
                        let _ = sink.send(Message::Close(None)).await;
                        return End::Closed;
                    }
                    Some(Command::Send(m)) => {
                        if self.rejoining() {
                            self.enqueue(m);
                        } else {
                            out.push(encode(&m, None));
                        }
                    }
                    Some(Command::Join { room, options, reply }) => {
                        if self.session.is_some() {
                            let _ = reply.send(Err(ClientError::Refused {
                                code: "already_joined".into(),
                                message: "already in a room".into(),
                            }));
                        } else {
                            let id = self.id();
                            out.push(encode(&self.join_message(&room, &options, None), Some(&id)));
                            self.pending.insert(id, Pending::Join(reply));
                            // Remember how to get back in once the server says yes.
                            self.session = Some(Session { room, options, resume: String::new() });
                        }
                    }
                    Some(Command::Leave { reply }) => {
                        if self.session.is_none() {
                            let _ = reply.send(Err(ClientError::NotJoined));
                        } else {
                            let id = self.id();
                            out.push(encode(&ClientMessage::Leave, Some(&id)));
                            self.pending.insert(id, Pending::Leave(reply));
                        }
                    }
                },
                frame = stream.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(end) = self.on_text(t.as_str(), &mut out) {
                                let _ = sink.send(Message::Close(None)).await;
                                return end;
                            }
                        }
                        Some(Ok(Message::Close(f))) => return close_end(f.as_ref()),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return End::Lost,
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > self.config.timeout {
                        return End::Lost;
                    }
                    out.push(encode(&ClientMessage::Ping, None));
                }
            }
        }
    }

    /// Handles one server message; `Some` ends the connection.
    fn on_text(&mut self, text: &str, out: &mut Vec<String>) -> Option<End> {
        let Ok(mut v) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        let pending = v
            .as_object_mut()
            .and_then(|o| o.remove("ref"))
            .and_then(|r| r.as_str().map(String::from))
            .and_then(|r| self.pending.remove(&r));
        let msg = match serde_json::from_value::<ServerMessage>(v) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "unexpected message from the server");
                return None;
            }
        };
        match (msg, pending) {
            (
                ServerMessage::Joined {
                    room,
                    peer_id,
                    peers,
                    ice_servers,
                    resume,
                    room_meta,
                    ..
                },
                Some(p),
            ) => {
                if let Some(s) = &mut self.session {
                    s.resume = resume;
                }
                if let Ok(mut sh) = self.shared.lock() {
                    sh.peer_id = Some(peer_id.clone());
                }
                let joined = Joined {
                    room,
                    peer_id,
                    peers,
                    ice_servers,
                    // A server older than 1.5 sends none: no metadata set.
                    room_meta: if room_meta.is_null() {
                        Value::Object(Default::default())
                    } else {
                        room_meta
                    },
                };
                match p {
                    Pending::Join(reply) => {
                        let _ = reply.send(Ok(joined));
                    }
                    Pending::Rejoin { resuming } => {
                        self.emit(if resuming {
                            Event::Resumed(joined)
                        } else {
                            Event::Rejoined(joined)
                        });
                        while let Some(m) = self.queue.pop_front() {
                            out.push(encode(&m, None));
                        }
                    }
                    Pending::Leave(_) => {}
                }
            }
            (ServerMessage::Error { code, message }, Some(p)) => match p {
                Pending::Join(reply) => {
                    self.session = None;
                    let _ = reply.send(Err(ClientError::Refused { code, message }));
                }
                Pending::Leave(reply) => {
                    let _ = reply.send(Err(ClientError::Refused { code, message }));
                }
                Pending::Rejoin { resuming: true } if code == "resume_failed" => {
                    if let Some(s) = &self.session {
                        let msg = self.join_message(&s.room, &s.options, None);
                        let id = self.id();
                        out.push(encode(&msg, Some(&id)));
                        self.pending.insert(id, Pending::Rejoin { resuming: false });
                    }
                }
                Pending::Rejoin { .. } => {
                    // The room will not take us back (full, unauthorized, ...).
                    self.session = None;
                    self.emit(Event::Error { code, message });
                }
            },
            (ServerMessage::Left { .. }, Some(Pending::Leave(reply))) => {
                self.session = None;
                if let Ok(mut sh) = self.shared.lock() {
                    sh.peer_id = None;
                }
                let _ = reply.send(Ok(()));
            }
            (ServerMessage::Goaway { retry_after_ms, .. }, _) => {
                return Some(End::Goaway(Duration::from_millis(retry_after_ms)));
            }
            (msg, _) => self.event(msg),
        }
        None
    }

    fn event(&self, msg: ServerMessage) {
        let e = match msg {
            ServerMessage::PeerJoined { peer } => Event::PeerJoined(peer),
            ServerMessage::PeerUpdated { peer } => Event::PeerUpdated(peer),
            ServerMessage::Updated { peer } => Event::Updated(peer),
            ServerMessage::RoomUpdated { room, meta } => Event::RoomUpdated { room, meta },
            ServerMessage::PeerLeft { peer_id, reason } => Event::PeerLeft { peer_id, reason },
            ServerMessage::Offer { from, sdp } => Event::Offer { from, sdp },
            ServerMessage::Answer { from, sdp } => Event::Answer { from, sdp },
            ServerMessage::Candidate { from, candidate } => Event::Candidate { from, candidate },
            ServerMessage::Message { from, data } => Event::Message { from, data },
            ServerMessage::Error { code, message } => Event::Error { code, message },
            ServerMessage::Joined { .. }
            | ServerMessage::Left { .. }
            | ServerMessage::Pong
            | ServerMessage::Goaway { .. } => return,
        };
        self.emit(e);
    }
}

/// How a close frame from the server ends the connection: 4000 and
/// 4001-4003 for good, anything else as a loss to recover from.
fn close_end(frame: Option<&CloseFrame>) -> End {
    let Some(f) = frame else {
        return End::Lost;
    };
    let code = u16::from(f.code);
    if code == 4000 {
        return End::Replaced;
    }
    match Removal::from_close_code(code) {
        Some(why) => End::Removed {
            why,
            reason: f.reason.to_string(),
        },
        None => End::Lost,
    }
}

/// The JSON of `m`, with `id` when a reply must be matched to it.
fn encode(m: &ClientMessage, id: Option<&str>) -> String {
    let Some(id) = id else {
        return m.to_json();
    };
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), Value::String(id.to_string()));
    }
    v.to_string()
}
