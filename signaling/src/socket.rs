//! One connection's WebSocket, driven by its one task: reading frames,
//! writing what the outbox holds (batched), heartbeat pings, and the close
//! handshake.
//!
//! Reading and writing happen in the same task, polled side by side: a
//! socket whose peer does not read still has its frames read (and its
//! outbox, bounded, closes it), and an idle connection is one task and one
//! timer, not two tasks with a timer each.

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::metrics::Metrics;
use crate::outbox::{CloseCause, ConnCtl, Frame};
use crate::upgrade::{Violation, WebSocket};

/// Frames written before a flush, so a burst costs one syscall, not one each,
/// and a long burst still goes out in pieces.
const BATCH: usize = 32;
/// How long the close frame (and what was queued before it) may take to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a connection the server closed may take to answer the close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// What woke the connection.
pub enum Event {
    /// A frame from the client.
    Frame(Message),
    /// The client's stream ended without a close frame.
    Ended,
    /// Reading failed.
    ReadFailed(Error),
    /// Writing failed: the client is gone.
    WriteFailed(Error),
    /// Someone closed the connection through its [`ConnCtl`].
    Closing,
    /// The connection's timer fired.
    Timer,
}

pub struct Socket {
    ws: WebSocket,
    ctl: Arc<ConnCtl>,
    metrics: Arc<Metrics>,
    /// A frame taken from the outbox that the socket was not ready for.
    pending: Option<Frame>,
    ping_due: bool,
    /// Frames handed to the socket since it was last flushed.
    written: usize,
}

impl Socket {
    pub fn new(ws: WebSocket, ctl: Arc<ConnCtl>, metrics: Arc<Metrics>) -> Socket {
        Socket {
            ws,
            ctl,
            metrics,
            pending: None,
            ping_due: false,
            written: 0,
        }
    }

    /// The frame rule the client broke, if reading ended for that.
    pub fn violation(&self) -> Option<Violation> {
        self.ws.get_ref().violation()
    }

    /// Sends a ping with the next write.
    pub fn ping(&mut self) {
        self.ping_due = true;
    }

    /// Writes what is queued while waiting for the next event.
    pub async fn next(&mut self, mut timer: Pin<&mut Sleep>) -> Event {
        poll_fn(|cx| self.poll_event(timer.as_mut(), cx)).await
    }

    fn poll_event(&mut self, timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<Event> {
        self.ctl.register(cx.waker());
        if self.ctl.is_closing() {
            return Poll::Ready(Event::Closing);
        }
        if let Err(e) = self.poll_write(cx) {
            return Poll::Ready(Event::WriteFailed(e));
        }
        // The timer before the read: a client that never stops sending (tiny
        // control frames, many to a read) must not keep its deadlines away.
        if timer.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        Pin::new(&mut self.ws).poll_next(cx).map(|read| match read {
            Some(Ok(m)) => Event::Frame(m),
            Some(Err(e)) => Event::ReadFailed(e),
            None => Event::Ended,
        })
    }

    /// Moves queued frames (and a due ping) into the socket and flushes
    /// them, as far as the socket takes them without waiting. What the
    /// socket is not ready for stays where it was, for the next poll.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        while self.written < BATCH {
            if self.pending.is_none() && !self.ping_due {
                self.pending = self.ctl.pop();
                if self.pending.is_none() {
                    break;
                }
            }
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
            let message = if std::mem::take(&mut self.ping_due) {
                Message::Ping(Default::default())
            } else if let Some(f) = self.pending.take() {
                if let Some(t) = f.relayed_at {
                    self.metrics.relay_latency(t.elapsed());
                }
                text(f.text.into_ws())
            } else {
                break;
            };
            Pin::new(&mut self.ws).start_send(message)?;
            self.written += 1;
        }
        let batch_full = self.written >= BATCH;
        if self.written > 0 {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.written = 0,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        if batch_full && self.written == 0 {
            // A full batch went out: come back for the rest after others ran.
            cx.waker().wake_by_ref();
        }
        Ok(())
    }

    /// Ends the connection: the close frame its cause calls for (after what
    /// was queued, unless the queue is the problem), or the end of the close
    /// handshake the client started. Returns the frames never written, which
    /// a peer that resumes still gets.
    pub async fn close(&mut self, cause: Option<CloseCause>) -> Vec<Frame> {
        let frame = cause.and_then(CloseCause::close_frame);
        match (cause, frame) {
            (Some(cause), Some((code, reason))) => {
                let flush_first = cause != CloseCause::SlowReader;
                let close = CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                let sent = timeout(CLOSE_WAIT, async {
                    while let Some(f) = flush_first.then(|| self.take_next()).flatten() {
                        // Kept until the socket took it: if the wait runs
                        // out first, it is still there for a resume.
                        self.pending = Some(f.clone());
                        self.ws.feed(text(f.text.into_ws())).await?;
                        self.pending = None;
                    }
                    self.ws.send(Message::Close(Some(close))).await
                })
                .await;
                if matches!(sent, Ok(Ok(()))) {
                    // Read (and discard) until the client answers the close
                    // frame, so the socket is not closed under unread data,
                    // which would reset the connection and lose the frame.
                    let _ = timeout(CLOSE_LINGER, async {
                        while let Some(Ok(m)) = self.ws.next().await {
                            if matches!(m, Message::Close(_)) {
                                return;
                            }
                        }
                        // Reading ended on a broken frame rule: what the
                        // client still sends is left unread (its backlog
                        // stops it, at no cost here), and the socket stays
                        // open for the rest of the linger, for the same
                        // reason as above.
                        if self.violation().is_some() {
                            std::future::pending::<()>().await;
                        }
                    })
                    .await;
                }
            }
            // A peer that stopped answering gets no close frame.
            (Some(_), None) => {}
            // The client closed (or dropped): complete the handshake.
            (None, _) => {
                // The sink's close, not the stream's own `close`: that one
                // sends a close frame, refused once the client sent one,
                // and would never flush the answer tungstenite queued.
                let _ = timeout(CLOSE_WAIT, SinkExt::close(&mut self.ws)).await;
            }
        }
        let mut unwritten: Vec<Frame> = self.pending.take().into_iter().collect();
        unwritten.extend(self.ctl.take_all());
        unwritten
    }

    fn take_next(&mut self) -> Option<Frame> {
        self.pending.take().or_else(|| self.ctl.pop())
    }
}

/// A text frame of `text`, as tungstenite's `Message::Text` would make it.
/// The outbox's [`Text`](crate::text::Text) holds axum's `Utf8Bytes`, which
/// wraps tungstenite's but does not give it up; its bytes do (without a
/// copy), and a frame takes them without checking their UTF-8 again, which
/// axum's type guarantees.
fn text(text: Utf8Bytes) -> Message {
    Message::Frame(WsFrame::message(
        Bytes::from(text),
        OpCode::Data(Data::Text),
        true,
    ))
}
