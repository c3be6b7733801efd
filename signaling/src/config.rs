//! Command-line flags and `SIGNALING_*` environment variables (a config
//! file adds to them: `config_file.rs`).

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// WebRTC signaling server (protocol v1): rooms, relay of offers, answers and
/// ICE candidates, and room presence.
///
/// Every flag can also be set by the environment variable shown with it.
/// Durations take a unit: `500ms`, `10s`, `2m` (a bare number means seconds).
#[derive(Parser, Debug, Clone)]
#[command(name = "signaling", version)]
pub struct Config {
    /// A TOML file of settings: the flags' long names as keys (`redis-url =
    /// "redis://..."`, lists for the comma-separated ones). A flag, then its
    /// environment variable, take precedence over the file.
    #[arg(long, env = "SIGNALING_CONFIG")]
    pub config: Option<PathBuf>,

    /// Prints the effective configuration (as a file `--config` takes, each
    /// value with where it came from, secrets redacted) and exits.
    #[arg(long)]
    pub print_config: bool,

    /// Address to listen on for HTTP and WebSocket (`/ws`). Without it (from
    /// a flag, the environment or the file), `PORT`, if set, gives the port.
    #[arg(long, env = "SIGNALING_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address to serve `/metrics` on, on a listener of its own (plain
    /// HTTP, nothing else served there), so it can stay on an internal
    /// network while `--listen` faces clients. `/metrics` is then not served
    /// on `--listen`. Without it, `/metrics` is served on `--listen`.
    #[arg(long, env = "SIGNALING_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A PEM certificate chain (the server's certificate first) to serve
    /// HTTPS and `wss://` on `--listen` instead of plain HTTP. Needs
    /// `--tls-key`. The files are watched: a renewed certificate is used for
    /// new connections without a restart.
    #[arg(long, env = "SIGNALING_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, SEC1 or PKCS#1) of `--tls-cert`.
    #[arg(long, env = "SIGNALING_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the `--tls-cert` / `--tls-key` files are checked for a
    /// change. A change that does not load (a key of another certificate,
    /// a half-written file) is logged and the previous certificate kept.
    #[arg(long, env = "SIGNALING_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_period)]
    pub tls_reload_interval: Duration,

    /// Redis URL (`redis://host:port/db`, `redis+unix:///path`) that joins this
    /// instance to a cluster: every instance on the same Redis and prefix
    /// shares rooms, presence and relay. Without it the instance stands alone.
    /// Its password never shows in `--help` or logs.
    #[arg(
        long,
        env = "SIGNALING_REDIS_URL",
        hide_env_values = true,
        conflicts_with = "redis_url_file"
    )]
    pub redis_url: Option<String>,

    /// Reads `--redis-url` (which may carry a password) from this file.
    #[arg(long, env = "SIGNALING_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,

    /// Bytes of relayed messages the Redis write queue may hold while Redis
    /// is slow or away; past it relays get `error` `unavailable` (presence
    /// changes are never refused).
    #[arg(long, env = "SIGNALING_REDIS_QUEUE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub redis_queue_bytes: usize,

    /// Prefix of every Redis key and channel this cluster uses.
    #[arg(long, env = "SIGNALING_REDIS_PREFIX", default_value = "sig")]
    pub redis_prefix: String,

    /// An instance that has not heartbeated for this long is dead: a survivor
    /// announces its peers as `peer-left` with reason `node-lost`.
    #[arg(long, env = "SIGNALING_NODE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub node_timeout: Duration,

    /// Approximate length cap of the Redis presence stream (`<prefix>:presence`).
    #[arg(
        long,
        env = "SIGNALING_PRESENCE_STREAM_MAXLEN",
        default_value_t = 100_000
    )]
    pub presence_stream_maxlen: usize,

    /// This instance's id in logs and metrics (default: a random id).
    #[arg(long, env = "SIGNALING_NODE_ID")]
    pub node_id: Option<String>,

    /// Folder of the browser client served at `/` (default: `client/web`).
    #[arg(long, env = "SIGNALING_WEB_ROOT")]
    pub web_root: Option<PathBuf>,

    /// Shared secret for HS256/384/512 join and admin tokens (at least 32
    /// bytes). Without it, `--auth-key`, `--auth-jwks` and
    /// `--auth-jwks-url`, joining is open and
    /// `/api/*` needs no token: for development only, and the server says so
    /// loudly at start.
    #[arg(long, env = "SIGNALING_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret, conflicts_with = "auth_secret_file")]
    pub auth_secret: Option<Secret>,

    /// A file holding the auth secret (a trailing newline is ignored), so the
    /// secret stays out of the environment and the process list.
    #[arg(long, env = "SIGNALING_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// Public keys that sign tokens (RS256/384/512, PS256/384/512 with RSA;
    /// ES256, ES384 with EC P-256, P-384; EdDSA with Ed25519): PEM files,
    /// comma-separated. Any of them, the secret or the JWKS keys may sign.
    #[arg(long, env = "SIGNALING_AUTH_KEY", value_delimiter = ',')]
    pub auth_key: Vec<PathBuf>,

    /// A JWKS document (a file) of the keys that sign tokens, as an identity
    /// provider publishes it: a token's `kid` picks its key.
    #[arg(long, env = "SIGNALING_AUTH_JWKS")]
    pub auth_jwks: Option<PathBuf>,

    /// The URL (`https://` or `http://`) of a JWKS document, as an identity
    /// provider publishes it (e.g. its `jwks_uri`): fetched at start (the
    /// server does not start without a usable one), every
    /// `--auth-jwks-refresh`, and again when a token names a `kid` no key
    /// held has (then at most once per 10 s; the token waits up to 3 s for
    /// it). A failed refresh keeps the keys held.
    #[arg(long, env = "SIGNALING_AUTH_JWKS_URL", value_parser = parse_jwks_url)]
    pub auth_jwks_url: Option<String>,

    /// How often `--auth-jwks-url` is fetched again.
    #[arg(long, env = "SIGNALING_AUTH_JWKS_REFRESH", default_value = "5m", value_parser = parse_period)]
    pub auth_jwks_refresh: Duration,

    /// PEM certificates of the CA that `--auth-jwks-url`'s HTTPS server
    /// certificate must chain to, trusted instead of the platform's roots
    /// (for a private CA). Without it the platform's roots are used
    /// (`SSL_CERT_FILE` honoured).
    #[arg(long, env = "SIGNALING_AUTH_JWKS_CA", requires = "auth_jwks_url")]
    pub auth_jwks_ca: Option<PathBuf>,

    /// Webhook endpoints (http or https URLs, comma-separated) that get
    /// every room event (`docs/events.md`): signed, retried, in order per
    /// room, dead-lettered after the last try. Needs `--webhook-secret`.
    #[arg(long, env = "SIGNALING_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_url: Vec<String>,

    /// The key webhook requests are signed with (`webhook-signature`,
    /// Standard Webhooks): `whsec_` and base64, or at least 24 bytes of text.
    #[arg(long, env = "SIGNALING_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_secret, conflicts_with = "webhook_secret_file")]
    pub webhook_secret: Option<Secret>,

    /// A file holding the webhook secret (a trailing newline is ignored).
    #[arg(long, env = "SIGNALING_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// How long one webhook try may take before it counts as failed.
    #[arg(long, env = "SIGNALING_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_period)]
    pub webhook_timeout: Duration,

    /// Tries per event (the first included) before it is dead-lettered.
    #[arg(long, env = "SIGNALING_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10)]
    pub webhook_max_attempts: u32,

    /// The wait after an event's first failed try; it doubles after each
    /// further one (jittered), up to `--webhook-retry-max`.
    #[arg(long, env = "SIGNALING_WEBHOOK_RETRY_BASE", default_value = "1s", value_parser = parse_period)]
    pub webhook_retry_base: Duration,

    /// The longest wait between two tries of an event.
    #[arg(long, env = "SIGNALING_WEBHOOK_RETRY_MAX", default_value = "5m", value_parser = parse_period)]
    pub webhook_retry_max: Duration,

    /// Rooms whose events are sent at once, per endpoint (a room's events
    /// are always sent one after the other).
    #[arg(long, env = "SIGNALING_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,

    /// Without Redis: undelivered events kept per endpoint; past it the
    /// oldest is dead-lettered unsent (logged).
    #[arg(long, env = "SIGNALING_WEBHOOK_BACKLOG", default_value_t = 100_000)]
    pub webhook_backlog: usize,

    /// With Redis: how long the node delivering an endpoint's events may be
    /// silent (dead, cut off) before another takes them over, with the
    /// events it had taken and not settled.
    #[arg(long, env = "SIGNALING_WEBHOOK_CLAIM_AFTER", default_value = "15s", value_parser = parse_period)]
    pub webhook_claim_after: Duration,

    /// A shared secret (HS256/384/512, at least 32 bytes) for admin tokens
    /// alone. With it or `--admin-auth-key`, admin tokens (`/api/*`) are
    /// checked with the admin keys only, and join tokens never with them.
    #[arg(long, env = "SIGNALING_ADMIN_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret, conflicts_with = "admin_auth_secret_file")]
    pub admin_auth_secret: Option<Secret>,

    /// A file holding the admin auth secret (a trailing newline is ignored).
    #[arg(long, env = "SIGNALING_ADMIN_AUTH_SECRET_FILE")]
    pub admin_auth_secret_file: Option<PathBuf>,

    /// Public keys (PEM files, comma-separated, of the kinds `--auth-key`
    /// takes) that sign admin tokens alone; see `--admin-auth-secret`.
    #[arg(long, env = "SIGNALING_ADMIN_AUTH_KEY", value_delimiter = ',')]
    pub admin_auth_key: Vec<PathBuf>,

    /// Tokens must carry this `iss` (your identity provider's issuer).
    #[arg(long, env = "SIGNALING_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// Tokens must carry this `aud` (alone or in a list).
    #[arg(long, env = "SIGNALING_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// How far the clocks of token issuers and this server may disagree
    /// when `exp`, `nbf` and `iat` are checked (none by default: a token is
    /// refused from its `exp` on, and one issued a second in the future is
    /// refused; give a few seconds if your issuer's clock may run ahead).
    #[arg(long, env = "SIGNALING_AUTH_LEEWAY", default_value = "0s", value_parser = parse_duration)]
    pub auth_leeway: Duration,

    /// STUN URLs handed to clients in `joined.ice_servers`, comma-separated
    /// (e.g. `stun:stun.example.org:3478`).
    #[arg(long, env = "SIGNALING_STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,

    /// TURN URLs handed to clients with ephemeral credentials, comma-separated
    /// (e.g. `turn:turn.example.org:3478?transport=udp,turn:turn.example.org:3478?transport=tcp,turns:turn.example.org:5349?transport=tcp`;
    /// `turns:` passes firewalls that allow only TLS). Needs `--turn-secret`.
    #[arg(long, env = "SIGNALING_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,

    /// The TURN server's shared secret (coturn's `static-auth-secret`): each
    /// peer gets username `<expiry>:<who>` (`who`: its token's `sub` when it
    /// has one, else its peer id) and password base64(HMAC-SHA1(secret,
    /// username)).
    #[arg(long, env = "SIGNALING_TURN_SECRET", hide_env_values = true, value_parser = parse_secret, conflicts_with = "turn_secret_file")]
    pub turn_secret: Option<Secret>,

    /// A file holding the TURN secret (a trailing newline is ignored).
    #[arg(long, env = "SIGNALING_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,

    /// How long TURN credentials stay valid.
    #[arg(long, env = "SIGNALING_TURN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub turn_ttl: Duration,

    /// With auth on, what a join does to a member of the room with the same
    /// verified identity (the token's `sub`): `allow` keeps both, `replace`
    /// removes the older one (`peer-left` reason `replaced`, close code
    /// 4003), on whichever instance it is. A token's `same_identity` claim
    /// chooses for its own joins.
    #[arg(long, env = "SIGNALING_SAME_IDENTITY", value_enum, default_value_t = crate::auth::SameIdentity::Allow)]
    pub same_identity: crate::auth::SameIdentity,

    /// How long a dropped connection's peer is held for `resume` before the
    /// others get `peer-left` with reason `timeout`.
    #[arg(long, env = "SIGNALING_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,

    /// On SIGTERM, how long to wait for clients to leave after `goaway` before
    /// closing the rest with code 1012.
    #[arg(long, env = "SIGNALING_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(long, env = "SIGNALING_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Addresses of reverse proxies (CIDRs or single addresses, comma-separated,
    /// e.g. `10.0.0.0/8,::1`) whose `X-Forwarded-For` names the real client.
    /// From anyone else the header is ignored: the client is the TCP peer.
    #[arg(long, env = "SIGNALING_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// Origins whose pages may open `/ws` (comma-separated, e.g.
    /// `https://app.example.org`; `*` allows any). Requests without `Origin`
    /// (non-browser clients) and same-origin pages are always allowed; other
    /// origins get HTTP 403.
    #[arg(long, env = "SIGNALING_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    #[command(flatten)]
    pub limits: Limits,

    /// A command other than serving (none: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Mints a join token with the auth secret (`--auth-secret`,
    /// `SIGNALING_AUTH_SECRET` or its `_FILE`) and prints an invite link for
    /// the browser client, with the token in the link's fragment (never sent
    /// to any server, so it stays out of access logs).
    Token(TokenArgs),
    /// The webhook dead letters of a Redis cluster: lists them, or sends
    /// them again. Reads `--redis-url` (or `SIGNALING_REDIS_URL`, its
    /// `_FILE`, the config file) and `--redis-prefix` as the servers do;
    /// give the flags before `webhooks`. Without Redis the dead letters
    /// live in the server process: use the admin API (`/api/webhooks`).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum WebhooksCommand {
    /// Prints the endpoint's dead letters, oldest first, one JSON object a
    /// line: `event`, `error`, `attempts`, `failed_at`.
    DeadLetters {
        /// The endpoint: its id (12 hex digits, as `/api/webhooks` lists
        /// it) or its URL exactly as `--webhook-url` gives it.
        #[arg(long)]
        endpoint: String,
        /// Prints at most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Moves the endpoint's dead letters back to delivery: the instance
    /// delivering the endpoint sends them again, with their ids unchanged.
    Replay {
        /// The endpoint: its id or its URL, as for `dead-letters`.
        #[arg(long)]
        endpoint: String,
        /// The event id of a dead letter to send again (repeat the flag for
        /// more); without it, every one.
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The room the token admits to (`*` for any room).
    #[arg(long)]
    pub room: String,
    /// The display name (the token's `sub`).
    #[arg(long)]
    pub name: Option<String>,
    /// How long the token stays valid.
    #[arg(long, default_value = "24h", value_parser = parse_period)]
    pub ttl: Duration,
    /// The call page's address, as the people you invite reach it.
    #[arg(long, default_value = "http://localhost:8080/")]
    pub url: String,
}

/// A secret from the command line or environment; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    /// An empty secret would sign with an empty key: refused at start.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a secret must not be empty".into());
        }
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The limits of the protocol (`docs/protocol.md`, section 2.2), and the
/// server's own bounds.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Longest room name, in characters.
    #[arg(long, env = "SIGNALING_MAX_ROOM_LEN", default_value_t = 64)]
    pub max_room_len: usize,

    /// Longest display name, in characters.
    #[arg(long, env = "SIGNALING_MAX_NAME_CHARS", default_value_t = 64)]
    pub max_name_chars: usize,

    /// Largest `meta` object, in bytes of JSON.
    #[arg(long, env = "SIGNALING_MAX_META_BYTES", default_value_t = 1024)]
    pub max_meta_bytes: usize,

    /// Largest text frame, in bytes; a larger one gets `too_large` and is dropped.
    #[arg(long, env = "SIGNALING_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Frames beyond this size are not read at all: the connection is closed
    /// with code 1009. Keeps memory bounded against huge frames. Must be at
    /// least `--max-frame-bytes`.
    #[arg(long, env = "SIGNALING_MAX_READ_BYTES", default_value_t = 256 * 1024)]
    pub max_read_bytes: usize,

    /// Bytes read from a socket at a time; every connection holds this much
    /// (a frame larger than it still arrives whole, over several reads).
    /// Smaller saves memory per idle connection, larger saves reads.
    #[arg(long, env = "SIGNALING_READ_CHUNK", default_value_t = 2 * 1024)]
    pub read_chunk: usize,

    /// Largest `message.data`, in bytes of JSON.
    #[arg(long, env = "SIGNALING_MAX_DATA_BYTES", default_value_t = 16 * 1024)]
    pub max_data_bytes: usize,

    /// Sustained messages per second allowed per connection.
    #[arg(long, env = "SIGNALING_RATE", default_value_t = 50.0)]
    pub rate: f64,

    /// Burst of messages allowed above the sustained rate.
    #[arg(long, env = "SIGNALING_RATE_BURST", default_value_t = 100.0)]
    pub rate_burst: f64,

    /// A connection that has this many messages refused for rate within 10 s
    /// keeps flooding: it is closed with code 1008.
    #[arg(long, env = "SIGNALING_FLOOD_CLOSE_AFTER", default_value_t = 100)]
    pub flood_close_after: u32,

    /// Most peers in one room; the next `join` gets `room_full`.
    #[arg(long, env = "SIGNALING_MAX_ROOM_PEERS", default_value_t = 50)]
    pub max_room_peers: usize,

    /// A connection that has not joined within this time is closed with code 1008.
    #[arg(long, env = "SIGNALING_JOIN_DEADLINE", default_value = "10s", value_parser = parse_period)]
    pub join_deadline: Duration,

    /// A connection silent for this long (no frame, not even a pong) is
    /// treated as dropped.
    #[arg(long, env = "SIGNALING_HEARTBEAT_TIMEOUT", default_value = "30s", value_parser = parse_period)]
    pub heartbeat_timeout: Duration,

    /// How often the server pings each connection.
    #[arg(long, env = "SIGNALING_PING_INTERVAL", default_value = "10s", value_parser = parse_period)]
    pub ping_interval: Duration,

    /// Frames queued for one connection before it counts as a slow reader
    /// and is closed with code 1013.
    #[arg(long, env = "SIGNALING_OUTBOX_FRAMES", default_value_t = 512)]
    pub outbox_frames: usize,

    /// Bytes queued for one connection before it counts as a slow reader.
    #[arg(long, env = "SIGNALING_OUTBOX_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub outbox_bytes: usize,

    /// Most WebSocket connections at once; more get HTTP 503.
    #[arg(long, env = "SIGNALING_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Most WebSocket connections from one client address (see
    /// `--trusted-proxies`); more get HTTP 429.
    #[arg(long, env = "SIGNALING_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// Sustained `join` requests per second from one client address, over
    /// all its connections; past it (and the burst) joins get `rate_limited`.
    #[arg(long, env = "SIGNALING_JOIN_RATE_PER_IP", default_value_t = 10.0)]
    pub join_rate_per_ip: f64,

    /// Burst of joins from one client address above the sustained rate.
    #[arg(long, env = "SIGNALING_JOIN_BURST_PER_IP", default_value_t = 30.0)]
    pub join_burst_per_ip: f64,

    /// Most plain HTTP connections (not yet WebSockets) at once; further ones
    /// are closed at accept. Keeps slow or silent sockets from taking every
    /// file descriptor.
    #[arg(long, env = "SIGNALING_MAX_HTTP_CONNECTIONS", default_value_t = 512)]
    pub max_http_connections: usize,

    /// Most plain HTTP connections from one TCP peer (trusted proxies exempt).
    #[arg(
        long,
        env = "SIGNALING_MAX_HTTP_CONNECTIONS_PER_IP",
        default_value_t = 32
    )]
    pub max_http_connections_per_ip: usize,

    /// How long a client may take to send a request's headers (and a TLS
    /// handshake) before the connection is closed.
    #[arg(long, env = "SIGNALING_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_period)]
    pub http_header_timeout: Duration,

    /// How long a plain HTTP connection may stay open before it is closed
    /// (kept-alive connections included; WebSockets are not affected).
    #[arg(long, env = "SIGNALING_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_period)]
    pub http_idle_timeout: Duration,

    /// Messages kept for a dropped peer until it resumes.
    #[arg(long, env = "SIGNALING_RESUME_QUEUE", default_value_t = 256)]
    pub resume_queue: usize,
}

impl Default for Config {
    /// The built-in defaults: no environment variable and no file is read
    /// (a developer's exported `SIGNALING_REDIS_URL` must not make every
    /// single-node test clustered). [`crate::config_file::load`] reads them.
    fn default() -> Self {
        crate::config_file::defaults()
    }
}

/// A non-empty secret.
pub fn parse_secret(s: &str) -> Result<Secret, String> {
    s.parse()
}

/// An `http://` or `https://` URL with a host.
pub fn parse_jwks_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{s}`: an http:// or https:// URL is required"));
    }
    Ok(s.to_owned())
}

/// A duration that must not be zero: a timer set to it would fire on every
/// turn of a connection's loop.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}`: must be more than zero")),
        d => Ok(d),
    }
}

/// Parses what `humantime` takes (`500ms`, `10s`, `2m`, `1h 30m`), or a
/// bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration (e.g. 500ms, 10s, 2m): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_that_run_per_connection_refuse_zero() {
        for flag in ["--ping-interval", "--heartbeat-timeout", "--join-deadline"] {
            let r = Config::try_parse_from(["signaling", flag, "0s"]);
            assert!(r.is_err(), "{flag} 0s was accepted");
            let ok = Config::try_parse_from(["signaling", flag, "250ms"]);
            assert!(ok.is_ok(), "{flag} 250ms was refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn jwks_urls_are_http_or_https() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8081/keys",
        ] {
            assert!(parse_jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "idp.example.com/jwks",
            "file:///etc/jwks.json",
            "ftp://x/y",
            "",
        ] {
            assert!(parse_jwks_url(bad).is_err(), "{bad}");
        }
        assert!(Config::try_parse_from(["signaling", "--auth-jwks-ca", "ca.pem"]).is_err());
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert!(Config::try_parse_from(["signaling", "--auth-secret", ""]).is_err());
        assert!(Config::try_parse_from(["signaling", "--admin-auth-secret", ""]).is_err());
        assert!(Config::try_parse_from(["signaling", "--turn-secret", ""]).is_err());
    }

    /// Asserts docs/protocol.md §1, §2.2.
    #[test]
    fn defaults_match_the_protocol_table() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.limits.max_frame_bytes, 65536);
        assert_eq!(c.limits.max_room_peers, 50);
        assert_eq!(c.grace, Duration::from_secs(10));
        assert_eq!(c.limits.heartbeat_timeout, Duration::from_secs(30));
    }
}
