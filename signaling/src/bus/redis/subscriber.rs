//! The pub/sub connection, read by the link's own task (see `resp.rs` for
//! why not redis-rs's `PubSub`): SUBSCRIBE and UNSUBSCRIBE out, messages and
//! confirmations in.

use std::collections::VecDeque;
use tokio::sync::oneshot;

use super::resp::{self, Conn, Frame, RespError};

/// What arrived on the subscribed connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// A message published on `channel`.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// A SUBSCRIBE or UNSUBSCRIBE took effect (its waiter already told).
    Confirmed,
}

pub struct Subscriber {
    conn: Conn,
    /// One entry per channel asked for, in order: who waits for the
    /// confirmation, if anyone.
    confirmations: VecDeque<Option<oneshot::Sender<bool>>>,
}

impl Subscriber {
    pub fn new(conn: Conn) -> Self {
        Subscriber {
            conn,
            confirmations: VecDeque::new(),
        }
    }

    /// Asks for `channels`; `done` hears `true` once all are in effect (or
    /// is dropped if the connection ends first).
    pub async fn subscribe(
        &mut self,
        channels: &[String],
        done: Option<oneshot::Sender<bool>>,
    ) -> Result<(), RespError> {
        if channels.is_empty() {
            if let Some(done) = done {
                let _ = done.send(true);
            }
            return Ok(());
        }
        let mut args = vec!["SUBSCRIBE"];
        args.extend(channels.iter().map(String::as_str));
        self.conn.write(&resp::command(&args)).await?;
        // Redis confirms each channel in turn; the last one says all are in.
        self.confirmations.extend((1..channels.len()).map(|_| None));
        self.confirmations.push_back(done);
        Ok(())
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), RespError> {
        self.conn
            .write(&resp::command(&["UNSUBSCRIBE", channel]))
            .await
    }

    /// Channels asked for and not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.confirmations.len()
    }

    /// The next message or confirmation. Cancel-safe.
    pub async fn next(&mut self) -> Result<Push, RespError> {
        let items = match self.conn.read().await? {
            Frame::Array(items) => items,
            // Say an ACL that does not allow a channel.
            Frame::Error(e) => return Err(RespError::Refused(e)),
            _ => return Err(RespError::Protocol("a pub/sub push that is not an array")),
        };
        let mut items = items.into_iter();
        match (items.next(), items.next(), items.next(), items.next()) {
            (
                Some(Frame::Bulk(kind)),
                Some(Frame::Bulk(channel)),
                Some(Frame::Bulk(payload)),
                None,
            ) if kind == b"message" => Ok(Push::Message { channel, payload }),
            (Some(Frame::Bulk(kind)), Some(_), Some(_), None) if kind == b"subscribe" => {
                if let Some(Some(done)) = self.confirmations.pop_front() {
                    let _ = done.send(true);
                }
                Ok(Push::Confirmed)
            }
            (Some(Frame::Bulk(kind)), Some(_), Some(_), None) if kind == b"unsubscribe" => {
                Ok(Push::Confirmed)
            }
            _ => Err(RespError::Protocol("an unknown pub/sub push")),
        }
    }
}
