//! The accept loop: every TCP connection is served by hyper with a deadline
//! for its request headers and a cap on its life while it is plain HTTP,
//! and plain HTTP connections are bounded in number, in all and per peer.
//! A WebSocket leaves these bounds at its upgrade: from then on the
//! session's own heartbeat and limits apply.
//!
//! `axum::serve` has none of these, so slow or silent sockets (slowloris)
//! could hold every file descriptor until `/healthz` and new joins failed.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::admission::{self, PerIp};
use crate::config::Config;

/// How long a connection asked to stop gets to finish its request.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// After a failed accept (out of file descriptors), a pause before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// The bounds of plain HTTP connections.
#[derive(Clone)]
pub struct HttpLimits {
    pub max: usize,
    pub max_per_ip: usize,
    pub header_timeout: Duration,
    pub lifetime: Duration,
    pub trusted: Vec<ipnet::IpNet>,
}

impl HttpLimits {
    pub fn from_config(c: &Config) -> HttpLimits {
        HttpLimits {
            max: c.limits.max_http_connections,
            max_per_ip: c.limits.max_http_connections_per_ip,
            header_timeout: c.limits.http_header_timeout,
            lifetime: c.limits.http_idle_timeout,
            trusted: c.trusted_proxies.clone(),
        }
    }
}

/// Serves `router` on `listener` until `stop`, then lets open requests end.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let per_ip = Arc::new(PerIp::default());
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        // The count first: one over is taken back at once.
        if open.fetch_add(1, Ordering::Relaxed) >= limits.max {
            open.fetch_sub(1, Ordering::Relaxed);
            debug!(%peer, "plain HTTP connections at their cap: closed at accept");
            continue;
        }
        let ip = admission::client_addr(peer, &Default::default(), &[]);
        let slot = if admission::is_trusted(ip, &limits.trusted) || admission::is_exempt(ip) {
            None
        } else {
            match per_ip.acquire(ip, limits.max_per_ip) {
                Ok(s) => Some(s),
                Err(_) => {
                    open.fetch_sub(1, Ordering::Relaxed);
                    debug!(%peer, "plain HTTP connections from this peer at their cap");
                    continue;
                }
            }
        };
        // Signaling frames are small and each one is urgent: without
        // TCP_NODELAY, Nagle holds a frame written while an earlier one is
        // unacknowledged, up to the peer's delayed ACK (40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = router
            .clone()
            .map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let (open, limits, stop) = (open.clone(), limits.clone(), stop.clone());
        conns.spawn(async move {
            // hyper's header deadline starts at the first byte: a socket
            // that never sends one is closed here.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(limits.header_timeout, tcp.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                debug!(%peer, "silent connection closed");
                drop(slot);
                open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            // HTTP/1 only: WebSockets and the page need nothing else, and
            // telling HTTP/2 apart first waits for bytes with no deadline,
            // which is where a silent socket would sit.
            let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(tcp),
                TowerToHyperService::new(service),
            );
            tokio::pin!(conn);
            // The future ends at an upgrade too: the WebSocket then lives on
            // in its session, outside these bounds.
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = tokio::time::sleep(limits.lifetime) => None,
                _ = stop.cancelled() => None,
            };
            if ended.is_none() {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(STOP_WAIT, conn).await;
            } else if let Some(Err(e)) = ended {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    conns.close();
    let _ = tokio::time::timeout(STOP_WAIT * 2, conns.wait()).await;
    Ok(())
}
