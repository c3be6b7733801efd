//! The accept loop: every TCP connection (after its TLS handshake, with
//! `--tls-cert`) is served by hyper with a deadline for its request headers
//! (and the handshake) and a cap on its life while it is plain HTTP,
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
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

/// Serves `router` on `listener` until `stop`, then lets open requests end;
/// over TLS when `tls` is given (`--tls-cert`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
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
        let (open, limits, stop, tls) = (open.clone(), limits.clone(), stop.clone(), tls.clone());
        let router = router.clone();
        conns.spawn(async move {
            serve_connection(tcp, peer, router, tls, &limits, &stop).await;
            drop(slot);
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    conns.close();
    let _ = tokio::time::timeout(STOP_WAIT * 2, conns.wait()).await;
    Ok(())
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long the refusal of plain HTTP on the TLS port may take.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// What a plain HTTP request to the TLS port gets, so a mistyped
/// `http://` shows why rather than a reset.
const PLAIN_ON_TLS: &str = "This server speaks HTTPS only: use https:// (and wss:// for /ws).\n";

/// One connection, from its first byte to its end or its upgrade.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: &HttpLimits,
    stop: &CancellationToken,
) {
    // One deadline for the first byte and, over TLS, the whole handshake:
    // a client that is silent, or stalls halfway through its handshake,
    // holds its slot no longer than one that is slow with its headers.
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    // hyper's header deadline starts at the first byte: a socket that never
    // sends one is closed here.
    let mut first = [0u8; 1];
    if !matches!(
        tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await,
        Ok(Ok(1..))
    ) {
        debug!(%peer, "silent connection closed");
        return;
    }
    let Some(acceptor) = tls else {
        return serve_http(tcp, peer, router, limits, stop).await;
    };
    if first[0] != TLS_HANDSHAKE_RECORD {
        debug!(%peer, "plain HTTP on the TLS port: refused");
        return refuse_plain_http(tcp).await;
    }
    let handshake = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => r,
        _ = stop.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_http(stream, peer, router, limits, stop).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake not done by the header deadline: closed"),
    }
}

/// hyper on `io`, plain TCP or TLS: generic, so the plain path reads its
/// socket directly, with no indirection added for TLS.
async fn serve_http<S>(
    io: S,
    peer: SocketAddr,
    router: Router,
    limits: &HttpLimits,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: axum::extract::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    // HTTP/1 only: WebSockets and the page need nothing else, and telling
    // HTTP/2 apart first waits for bytes with no deadline, which is where a
    // silent socket would sit.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    // The future ends at an upgrade too: the WebSocket then lives on in its
    // session, outside these bounds.
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
}

/// Answers plain HTTP on the TLS port with a 400 that says to use https.
async fn refuse_plain_http(mut tcp: TcpStream) {
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_ON_TLS}",
        PLAIN_ON_TLS.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        tcp.write_all(reply.as_bytes()).await?;
        tcp.shutdown().await?;
        // What the client sent is read before the socket closes: closing
        // with unread bytes sends a reset, which can discard the reply
        // before the client has read it. Bounded, as is the time.
        let mut sink = [0u8; 1024];
        let mut budget = 16 * 1024usize;
        while budget > 0 {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => budget = budget.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
