//! The state every request shares, in a leaf module: it names the server's
//! parts and depends on none of the modules that serve requests, so
//! `server` (which builds it), `http` (whose handlers read it) and
//! `session` (which runs a WebSocket) all point here and not at each other.
//!
//! A WebSocket session gets a [`SessionContext`]: the hub and the few
//! services a connection talks to. The rest of the [`App`] (the whole
//! configuration, the static files, the connection tracking of the HTTP
//! side) is for the HTTP handlers and the shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

use crate::admission::PerIp;
use crate::auth::Auth;
use crate::bus::{PresenceStore, Transport};
use crate::config::{Config, Limits};
use crate::connections::Connections;
use crate::hub::Hub;
use crate::ice::IceConfig;
use crate::metrics::Metrics;
use crate::ratelimit::PerIpRate;

/// What a WebSocket session needs of the server, and nothing more.
pub struct SessionContext {
    pub limits: Limits,
    pub hub: Arc<Hub>,
    /// This node's open connections and the drain.
    pub conns: Arc<Connections>,
    pub metrics: Arc<Metrics>,
    /// Join tokens are checked with it when auth is on.
    pub auth: Option<Auth>,
    /// `--same-identity`: the rule when a token does not choose one.
    pub same_identity: crate::auth::SameIdentity,
    /// What goes into `joined.ice_servers`.
    pub ice: IceConfig,
    /// Joins per client address (`--join-rate-per-ip`).
    pub join_rate: PerIpRate,
}

/// Everything the HTTP side shares: the sessions' context and the rest.
pub struct App {
    pub config: Config,
    pub ctx: Arc<SessionContext>,
    /// Who is in which room across the cluster (`/api/*`).
    pub store: Arc<dyn PresenceStore>,
    /// The cluster engine's health (`/readyz`, `/metrics`, the drain).
    pub transport: Arc<dyn Transport>,
    pub web_root: PathBuf,
    /// Every WebSocket session, so shutdown can wait for them (axum's graceful
    /// shutdown does not track upgraded connections).
    pub sessions: TaskTracker,
    /// Open WebSockets per client address (`--max-connections-per-ip`).
    pub per_ip: Arc<PerIp>,
    /// The webhook endpoints (`--webhook-url`), for `/api/webhooks`; their
    /// queues are read from [`PresenceStore::event_log`].
    pub webhooks: Vec<crate::webhook::Endpoint>,
}
