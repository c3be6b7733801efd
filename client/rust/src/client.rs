//! The handle applications call. Everything goes through the driver task.

use serde_json::Value;
use signaling_protocol::messages::{ClientMessage, IceCandidate};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{self, Command, Shared};
use crate::{ClientConfig, ClientError, Events, JoinOptions, Joined};

/// How long `join` and `leave` wait for the server's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the signaling server. Cheap to clone; dropping the last
/// clone closes the connection.
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
}

impl Client {
    /// Connects. Events (including those of later reconnects) arrive on the
    /// returned stream.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let ws = driver::connect(&config).await?;
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(driver::run(config, ws, cmd_rx, ev_tx, shared.clone()));
        Ok((Client { cmds, shared }, events))
    }

    /// Joins `room` and returns the room as it is (peers oldest first).
    pub async fn join(&self, room: &str, options: JoinOptions) -> Result<Joined, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Join {
            room: room.to_string(),
            options,
            reply,
        })?;
        self.wait(rx).await?
    }

    /// Leaves the room; the connection stays and may join again.
    pub async fn leave(&self) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Leave { reply })?;
        self.wait(rx).await?
    }

    pub fn offer(&self, to: &str, sdp: impl Into<String>) -> Result<(), ClientError> {
        self.send(ClientMessage::Offer {
            to: to.into(),
            sdp: sdp.into(),
        })
    }

    pub fn answer(&self, to: &str, sdp: impl Into<String>) -> Result<(), ClientError> {
        self.send(ClientMessage::Answer {
            to: to.into(),
            sdp: sdp.into(),
        })
    }

    /// `None` tells `to` there are no more candidates.
    pub fn candidate(&self, to: &str, candidate: Option<IceCandidate>) -> Result<(), ClientError> {
        self.send(ClientMessage::Candidate {
            to: to.into(),
            candidate,
        })
    }

    /// To one peer, or to every other member with `to: None`.
    pub fn message(&self, to: Option<&str>, data: Value) -> Result<(), ClientError> {
        self.send(ClientMessage::Message {
            to: to.map(String::from),
            data,
        })
    }

    /// Replaces this peer's `meta`; the others get `peer-updated`.
    pub fn update(&self, meta: Value) -> Result<(), ClientError> {
        self.send(ClientMessage::Update { meta })
    }

    /// This peer's id while in a room.
    pub fn peer_id(&self) -> Option<String> {
        self.shared.lock().ok().and_then(|s| s.peer_id.clone())
    }

    /// Why the client stopped for good, once it has (the error of the last
    /// event, [`Event::Closed`](crate::Event::Closed)); `None` while it runs.
    pub fn closed_because(&self) -> Option<ClientError> {
        self.shared.lock().ok().and_then(|s| s.ended.clone())
    }

    /// Closes the connection (cleanly: the others see `disconnected`).
    pub fn close(&self) {
        let _ = self.cmds.send(Command::Close);
    }

    fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.command(Command::Send(msg))
    }

    fn command(&self, c: Command) -> Result<(), ClientError> {
        self.cmds.send(c).map_err(|_| self.ended())
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, ClientError> {
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(self.ended()),
            Err(_) => Err(ClientError::Timeout(REPLY_TIMEOUT)),
        }
    }

    /// Why the driver stopped (what [`Event::Closed`](crate::Event::Closed)
    /// said): every call after that fails with it.
    fn ended(&self) -> ClientError {
        self.shared
            .lock()
            .ok()
            .and_then(|s| s.ended.clone())
            .unwrap_or(ClientError::Closed)
    }
}
