//! Start-up and shutdown: [`bind`] builds everything and takes the port,
//! [`Server::serve`] runs until a shutdown is asked for and the drain ends.
//! Keeping the two apart lets tests start a real server on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admission::PerIp;
use crate::app::{App, SessionContext};
use crate::auth::{Auth, AuthKeys};
use crate::bus::redis::{RedisBus, RedisConfig};
use crate::bus::{Bus, linked::LinkedCluster, memory::MemoryBus};
use crate::config::Config;
use crate::connections::Connections;
use crate::hub::{Hub, HubLimits};
use crate::ice::IceConfig;
use crate::ids::{NodeId, random_hex};
use crate::metrics::Metrics;
use crate::outbox::CloseCause;
use crate::ratelimit::PerIpRate;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] crate::bus::redis::BadUrl),
    #[error("--max-read-bytes ({read}) must be at least --max-frame-bytes ({frame})")]
    ReadLimit { read: usize, frame: usize },
    #[error("cannot read the secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret file {0} is empty")]
    EmptySecret(PathBuf),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::KeyError),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

/// The token keys and checks the flags give.
fn auth_keys(config: &Config) -> AuthKeys {
    AuthKeys {
        secret: config.auth_secret.as_ref().map(|s| s.expose().to_owned()),
        key_files: config.auth_key.clone(),
        jwks: config.auth_jwks.clone(),
        jwks_url: config
            .auth_jwks_url
            .as_ref()
            .map(|url| crate::jwks::JwksUrl {
                url: url.clone(),
                ca: config.auth_jwks_ca.clone(),
                refresh: config.auth_jwks_refresh,
            }),
        admin_secret: config
            .admin_auth_secret
            .as_ref()
            .map(|s| s.expose().to_owned()),
        admin_key_files: config.admin_auth_key.clone(),
        issuer: config.auth_issuer.clone(),
        audience: config.auth_audience.clone(),
        leeway: config.auth_leeway,
    }
}

/// A secret from `--*-secret-file`: the file's text without its trailing
/// newline (what `echo secret > file` leaves).
fn read_secret(path: &std::path::Path) -> Result<crate::config::Secret, StartError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartError::SecretFile {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(StartError::EmptySecret(path.to_path_buf()));
    }
    Ok(secret.into())
}

/// Fills `auth_secret`, `admin_auth_secret`, `turn_secret` and `redis_url`
/// from their `_FILE` forms.
pub fn resolve_secrets(config: &mut Config) -> Result<(), StartError> {
    if let Some(p) = &config.auth_secret_file {
        config.auth_secret = Some(read_secret(p)?);
    }
    if let Some(p) = &config.admin_auth_secret_file {
        config.admin_auth_secret = Some(read_secret(p)?);
    }
    if let Some(p) = &config.webhook_secret_file {
        config.webhook_secret = Some(read_secret(p)?);
    }
    if let Some(p) = &config.turn_secret_file {
        config.turn_secret = Some(read_secret(p)?);
    }
    if let Some(p) = &config.redis_url_file {
        config.redis_url = Some(read_secret(p)?.expose().to_owned());
    }
    Ok(())
}

/// A bound, not yet serving server.
pub struct Server {
    listener: TcpListener,
    /// `--metrics-listen`: `/metrics` on a listener of its own.
    metrics_listener: Option<TcpListener>,
    app: Arc<App>,
    /// `--tls-cert` / `--tls-key`, loaded: HTTPS instead of plain HTTP.
    tls: Option<crate::tls::Tls>,
    shutdown: CancellationToken,
    /// Stops the webhook deliverers when dropped: at the end of the drain
    /// (whose leaves and closes are events too), or with the server.
    stop_webhooks: tokio_util::sync::DropGuard,
}

/// Asks a running server to drain and stop.
#[derive(Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

/// How long clients are told to wait before reconnecting after `goaway`.
const GOAWAY_RETRY_AFTER: Duration = Duration::from_millis(250);
/// After the drain, how long closed connections get to finish their close.
const FINAL_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Builds the server `config` describes (its engine from `--redis-url`)
/// and takes its port.
pub async fn bind(config: Config) -> Result<Server, StartError> {
    bind_on(config, None).await
}

/// Like [`bind`], as a node of a cluster held in this process
/// ([`LinkedCluster`]) whatever `--redis-url` says: several nodes of one
/// cluster in one test, without a redis-server.
pub async fn bind_linked(config: Config, cluster: &LinkedCluster) -> Result<Server, StartError> {
    bind_on(config, Some(cluster)).await
}

async fn bind_on(mut config: Config, linked: Option<&LinkedCluster>) -> Result<Server, StartError> {
    resolve_secrets(&mut config)?;
    if config.limits.max_read_bytes < config.limits.max_frame_bytes {
        return Err(StartError::ReadLimit {
            read: config.limits.max_read_bytes,
            frame: config.limits.max_frame_bytes,
        });
    }
    // Before the port is taken: a bad certificate is a start error, not a
    // server that listens and fails every handshake.
    let tls = crate::tls::TlsFiles::from_flags(config.tls_cert.as_ref(), config.tls_key.as_ref())?
        .map(crate::tls::Tls::load)
        .transpose()?;
    let listener = listen(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics_listener = config
        .metrics_listen
        .map(|addr| listen(addr).map_err(|source| StartError::Bind { addr, source }))
        .transpose()?;
    // Before serving: a weak secret, an unreadable key or a JWKS URL that
    // gives no usable key stops the start.
    let auth = Auth::from_keys(&auth_keys(&config)).await?;
    let webhooks = crate::webhook::Webhooks::from_config(&config)?;
    let node = NodeId::new(config.node_id.clone().unwrap_or_else(|| random_hex(4)));
    let metrics = Arc::new(Metrics::default());
    let conns = Arc::new(Connections::new());
    let bus: Arc<dyn Bus> = match (linked, &config.redis_url) {
        (Some(cluster), _) => cluster.node(node.as_str()),
        (None, Some(url)) => Arc::new(RedisBus::start(
            RedisConfig {
                url: url.clone(),
                prefix: config.redis_prefix.clone(),
                node_timeout: config.node_timeout,
                stream_maxlen: config.presence_stream_maxlen,
                queue_bytes: config.redis_queue_bytes,
            },
            node.clone(),
        )?),
        (None, None) => Arc::new(MemoryBus::with_events(node.clone(), config.webhook_backlog)),
    };
    let hub = Arc::new(Hub::new(
        node,
        HubLimits {
            max_room_peers: config.limits.max_room_peers,
            resume_queue: config.limits.resume_queue,
            grace: config.grace,
        },
        bus.clone(),
        metrics.clone(),
        conns.clone(),
    ));
    hub.attach_to_bus();
    let stop_webhooks = CancellationToken::new();
    let endpoints = webhooks
        .as_ref()
        .map(|w| w.endpoints.clone())
        .unwrap_or_default();
    if let Some(w) = webhooks {
        w.start(bus.event_log(), hub.node(), &metrics, stop_webhooks.clone());
    }
    let ctx = Arc::new(SessionContext {
        limits: config.limits.clone(),
        hub,
        conns,
        metrics,
        auth,
        same_identity: config.same_identity,
        ice: IceConfig::from_config(&config),
        join_rate: PerIpRate::new(
            config.limits.join_rate_per_ip,
            config.limits.join_burst_per_ip,
        ),
    });
    let app = Arc::new(App {
        store: bus.clone(),
        transport: bus,
        web_root: config.web_root.clone().unwrap_or_else(default_web_root),
        per_ip: Arc::new(PerIp::default()),
        config,
        ctx,
        sessions: TaskTracker::new(),
        webhooks: endpoints,
    });
    Ok(Server {
        listener,
        metrics_listener,
        app,
        tls,
        shutdown: CancellationToken::new(),
        stop_webhooks: stop_webhooks.drop_guard(),
    })
}

/// How long a stopping instance without Redis waits for its webhook
/// events to be delivered.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(5);

/// Connections the kernel holds for us before we accept them. Tokio's
/// `TcpListener::bind` asks for 128, as the standard library does: in a join
/// storm the kernel then drops connections, and each dropped one waits a
/// second for its SYN to be retried. The kernel caps this at somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A restarted server can take its port back while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// `client/web` under the working directory, else next to this crate's sources.
fn default_web_root() -> PathBuf {
    let here = PathBuf::from("client/web");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../client/web"))
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.app.config.listen)
    }

    /// Where `/metrics` is served: the `--metrics-listen` listener, else
    /// the main one.
    pub fn metrics_addr(&self) -> SocketAddr {
        match &self.metrics_listener {
            Some(l) => l.local_addr().unwrap_or_else(|_| self.local_addr()),
            None => self.local_addr(),
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until shutdown is asked for, then drains: readiness goes to 503
    /// and new WebSockets are refused, every client gets `goaway`, clients
    /// get up to the drain timeout to leave, the rest are closed with 1012.
    pub async fn serve(self) -> std::io::Result<()> {
        let Server {
            listener,
            metrics_listener,
            app,
            tls,
            shutdown,
            stop_webhooks,
        } = self;
        let addr = listener.local_addr()?;
        let (http, ws) = if tls.is_some() {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        info!(
            %addr,
            url = %format_args!("{http}://{addr}/"),
            websocket = %format_args!("{ws}://{addr}/ws"),
            tls = tls.is_some(),
            node = %app.ctx.hub.node(),
            web_root = %app.web_root.display(),
            auth = app.ctx.auth.is_some(),
            cluster = app.transport.is_shared(),
            "signaling server listening"
        );
        if app.ctx.auth.is_none() {
            warn!(
                "OPEN MODE: no --auth-secret (nor --auth-key, --auth-jwks, --auth-jwks-url), so \
                 anyone who can \
                 reach this server can join any \
                 room, list every room and its members at /api/rooms, and answer the offers in \
                 them. Fine on a laptop; never expose it. Set --auth-secret (or \
                 SIGNALING_AUTH_SECRET_FILE) before anyone else can reach it."
            );
        }
        let stop_listening = CancellationToken::new();
        let router = crate::http::router(app.clone());
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        if let Some(tls) = tls {
            info!(
                cert = %tls.files().cert.display(),
                key = %tls.files().key.display(),
                every = ?app.config.tls_reload_interval,
                "TLS on: the certificate files are watched for renewals"
            );
            tokio::spawn(crate::tls::watch(
                tls,
                app.config.tls_reload_interval,
                stop_listening.clone(),
            ));
        }
        let http = tokio::spawn(crate::accept::serve(
            listener,
            router,
            crate::accept::HttpLimits::from_config(&app.config),
            acceptor,
            stop_listening.clone(),
        ));

        if let Some(listener) = metrics_listener {
            info!(addr = %listener.local_addr()?, "metrics on their own listener (plain HTTP): /metrics");
            // Stopped with the main listener, at the very end, so the drain
            // can be watched.
            tokio::spawn(crate::accept::serve(
                listener,
                crate::http::metrics_router(app.clone()),
                crate::accept::HttpLimits::from_config(&app.config),
                None,
                stop_listening.clone(),
            ));
        }

        tokio::select! {
            _ = shutdown.cancelled() => {}
            // Nothing to drain: this process must not serve as this node.
            e = app.transport.fatal() => {
                app.ctx.conns.close_all(CloseCause::Shutdown);
                stop_listening.cancel();
                let _ = tokio::time::timeout(FINAL_CLOSE_WAIT, http).await;
                return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, e));
            }
        }
        let drain = app.config.drain_timeout;
        info!(clients = app.ctx.conns.len(), timeout = ?drain, "draining");
        app.ctx.conns.start_drain(GOAWAY_RETRY_AFTER);
        app.sessions.close();
        // Clients leave; in a cluster they resume elsewhere, and this node
        // stays until it has handed their peers over.
        let clients_gone = async {
            app.sessions.wait().await;
            while app.transport.is_shared() && app.ctx.hub.held_peers() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(drain, clients_gone).await.is_err() {
            let left = app.ctx.conns.len();
            warn!(
                clients = left,
                "drain timeout: closing the remaining connections with 1012"
            );
            app.ctx.conns.close_all(CloseCause::Shutdown);
            let _ = tokio::time::timeout(FINAL_CLOSE_WAIT, app.sessions.wait()).await;
        }
        // Whoever did not come back elsewhere is gone: say so before leaving.
        app.ctx.hub.evict_all();
        app.transport.flush().await;
        if !app.transport.is_shared() {
            // Alone, the events live in this process: the drain's own
            // leaves and closes (and whatever waits) get a bounded chance
            // to go out. In a cluster they wait in Redis for another node.
            let log = app.store.event_log();
            crate::webhook::drained(log.as_ref(), &app.webhooks, WEBHOOK_DRAIN).await;
        }
        drop(stop_webhooks);
        stop_listening.cancel();
        match tokio::time::timeout(FINAL_CLOSE_WAIT, http).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => warn!(error = %join, "HTTP task failed"),
            Err(_) => warn!("HTTP connections still open at exit"),
        }
        info!("stopped");
        Ok(())
    }
}
