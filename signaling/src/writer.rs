//! The writer task: the only owner of a connection's socket sink. It drains
//! the outbox, batches writes, sends the heartbeat pings, and on close sends
//! the close frame its [`CloseCause`] calls for.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval_at, timeout};

use crate::metrics::Metrics;
use crate::outbox::{CloseCause, ConnCtl, Frame};

/// Frames written before a flush, so a burst costs one syscall, not one each.
const BATCH: usize = 32;
/// How long a close frame may take to go out before the socket is just dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs until the connection is closing or the socket fails. Frames not
/// yet written stay in the queue, for a resume.
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    ctl: Arc<ConnCtl>,
    ping_every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut ping = interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Made once, not per frame: it registers with the cancellation token.
    let closing = ctl.closing();
    tokio::pin!(closing);
    loop {
        if let Some(frame) = ctl.pop() {
            let ok = tokio::select! {
                biased;
                _ = &mut closing => false,
                ok = write_batch(&mut sink, &ctl, frame, &metrics) => ok,
            };
            if !ok {
                break;
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = &mut closing => break,
            _ = ctl.queued() => {}
            _ = ping.tick() => {
                let sent = tokio::select! {
                    biased;
                    _ = &mut closing => false,
                    r = sink.send(Message::Ping(Default::default())) => r.is_ok(),
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
                    while let Some(f) = flush_first.then(|| ctl.pop()).flatten() {
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
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    ctl: &ConnCtl,
    first: Frame,
    metrics: &Metrics,
) -> bool {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(frame) = next.take() {
        if sink.feed(Message::Text(frame.text)).await.is_err() {
            return false;
        }
        if let Some(t) = frame.relayed_at {
            metrics.relay_latency(t.elapsed());
        }
        n += 1;
        if n < BATCH {
            next = ctl.pop();
        }
    }
    sink.flush().await.is_ok()
}
