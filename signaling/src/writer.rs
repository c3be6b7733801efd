//! The writer task: the only owner of a connection's socket sink. It drains
//! the outbox, batches writes, sends the heartbeat pings, and on close sends
//! the close frame its [`CloseCause`] calls for.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval_at, timeout};

use crate::metrics::Metrics;
use crate::outbox::{CloseCause, ConnCtl, Frame};

/// Frames written before a flush, so a burst costs one syscall, not one each.
const BATCH: usize = 32;
/// How long a close frame may take to go out before the socket is just dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs until the connection is closing or the socket fails. Returns the
/// queue so frames not yet written can be kept for a resume.
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    ctl: Arc<ConnCtl>,
    ping_every: Duration,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<Frame> {
    let mut ping = interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = ctl.closing() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let write = write_batch(&mut sink, &mut rx, frame, &ctl, &metrics);
                let ok = tokio::select! {
                    ok = write => ok,
                    _ = ctl.closing() => false,
                };
                if !ok {
                    break;
                }
            }
            _ = ping.tick() => {
                let sent = tokio::select! {
                    r = sink.send(Message::Ping(Default::default())) => r.is_ok(),
                    _ = ctl.closing() => false,
                };
                if !sent {
                    break;
                }
            }
        }
    }
    match ctl.cause() {
        Some(cause) => {
            if let Some((code, reason)) = cause.close_frame() {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                // Whatever was queued before the close (the `rate_limited` errors
                // before a flood close, say) goes out first, unless the queue is
                // the problem.
                let flush_first = cause != CloseCause::SlowReader;
                let _ = timeout(CLOSE_WAIT, async {
                    while let Some(f) = rx.try_recv().ok().filter(|_| flush_first) {
                        ctl.dequeued(f.text.len());
                        if sink.feed(Message::Text(f.text)).await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.send(Message::Close(Some(frame))).await;
                })
                .await;
            }
        }
        // The session ended (the client closed): complete the close handshake.
        None => {
            let _ = timeout(CLOSE_WAIT, sink.close()).await;
        }
    }
    rx
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Frame>,
    first: Frame,
    ctl: &ConnCtl,
    metrics: &Metrics,
) -> bool {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(frame) = next.take() {
        ctl.dequeued(frame.text.len());
        if sink.feed(Message::Text(frame.text)).await.is_err() {
            return false;
        }
        if let Some(t) = frame.relayed_at {
            metrics.relay_latency(t.elapsed());
        }
        n += 1;
        if n < BATCH {
            next = rx.try_recv().ok();
        }
    }
    sink.flush().await.is_ok()
}
