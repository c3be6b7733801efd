//! The HTTP side: the WebSocket endpoint, health, metrics, the room API and
//! the static browser client.

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use signaling_protocol::reply::push_str;
use signaling_protocol::room::is_valid_room;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::debug;

use crate::admission;
use crate::app::App;
use crate::auth::now_unix;
use crate::ids::RoomId;
use crate::metrics::Format;
use crate::session;
use crate::upgrade::{FrameBudget, UpgradeRefused, WsUpgrade};

/// Outgoing bytes buffered before a write is forced.
const WRITE_BUFFER: usize = 8 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let web = tower::ServiceBuilder::new()
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(
            HeaderName::from_static("permissions-policy"),
            PERMISSIONS_POLICY,
        ))
        .service(ServeDir::new(&app.web_root).append_index_html_on_directories(true));
    let router = Router::new()
        // Every method reaches the handler, so a request that is not a GET
        // still meets the drain, Origin and per-address checks first (the
        // order of docs/protocol.md, section 1); the upgrade answers 405.
        .route("/ws", any(ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // With a metrics listener of its own, `/metrics` is only there: the
    // main listener's `/metrics` falls through to the static files (404).
    let router = if app.config.metrics_listen.is_none() {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router
        .route("/api/rooms", get(api_rooms))
        .route("/api/rooms/{room}", get(api_room))
        .fallback_service(web)
        .with_state(app)
}

/// The call page's Content-Security-Policy: its own scripts and styles only,
/// its WebSocket (same origin: CSP3's `'self'` covers ws: and wss:), camera
/// streams, and no framing. The nginx front sends the same.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Camera, microphone and screen sharing for the page itself, nobody else.
pub const PERMISSIONS_POLICY: &str = "camera=(self), microphone=(self), display-capture=(self)";

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    upgrade: Result<WsUpgrade, UpgradeRefused>,
) -> Response {
    // Refused while draining whatever the request looks like, so load
    // balancers probing /ws see the drain too.
    if app.ctx.conns.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let client = admission::client_addr(peer, &headers, &app.config.trusted_proxies);
    if !admission::origin_allowed(&headers, &app.config.allowed_origins) {
        debug!(%client, origin = ?headers.get(header::ORIGIN), "websocket refused: origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let slot = if admission::is_exempt(client) {
        None
    } else {
        match app
            .per_ip
            .acquire(client, app.config.limits.max_connections_per_ip)
        {
            Ok(slot) => Some(slot),
            Err(e) => {
                debug!(%client, "websocket refused: {e}");
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address\n",
                )
                    .into_response();
            }
        }
    };
    let remote = session::Remote { client, slot };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = &app.config.limits;
    if app.ctx.conns.len() >= limits.max_connections {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    }
    let max_read = limits.max_read_bytes.max(limits.max_frame_bytes);
    let config = WebSocketConfig::default()
        // tungstenite's default chunk (128 KiB) would be held by every
        // idle connection.
        .read_buffer_size(limits.read_chunk.max(64))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(limits.outbox_bytes.max(WRITE_BUFFER * 2))
        .max_message_size(Some(max_read))
        .max_frame_size(Some(max_read));
    let budget = FrameBudget::for_messages(limits.rate, limits.rate_burst);
    upgrade.on_upgrade(config, budget, move |socket| {
        // A task of its own rather than inside the upgrade task, which
        // would keep its own state beside ours for the connection's life.
        let session = session::run(socket, app.ctx.clone(), q.token, remote);
        app.sessions.spawn(session);
    })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ctx.conns.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !app.transport.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "presence bus unavailable\n",
        )
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

/// The routes of `--metrics-listen`: `/metrics` alone.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let body = app
        .ctx
        .metrics
        .render(app.ctx.hub.local_rooms(), &app.transport.stats(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// With an auth secret, `/api/*` needs `Authorization: Bearer <admin JWT>`.
async fn admin_refusal(app: &App, headers: &HeaderMap) -> Option<Response> {
    let auth = app.ctx.auth.as_ref()?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let verified = match token {
        Some(t) => Some(auth.check_admin(t.trim(), now_unix()).await),
        None => None,
    };
    match verified {
        Some(Ok(())) => None,
        _ => Some(json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","message":"an admin token is required"}"#.into(),
        )),
    }
}

fn bus_unavailable(e: impl std::fmt::Display) -> Response {
    let mut body = String::from(r#"{"error":"unavailable","message":"#);
    push_str(&mut body, &e.to_string());
    body.push('}');
    json(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// `{"rooms":[{"room":"...","peers":N},...]}`
async fn api_rooms(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = admin_refusal(&app, &headers).await {
        return r;
    }
    let rooms = match app.store.rooms().await {
        Ok(r) => r,
        Err(e) => return bus_unavailable(e),
    };
    let mut body = String::from(r#"{"rooms":["#);
    for (i, r) in rooms.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"room":"#);
        push_str(&mut body, r.room.as_str());
        body.push_str(&format!(r#","peers":{}}}"#, r.peers));
    }
    body.push_str("]}");
    json(StatusCode::OK, body)
}

/// `{"room":"...","peers":[peer objects, oldest first]}`, 404 when empty.
async fn api_room(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_refusal(&app, &headers).await {
        return r;
    }
    let not_found = || {
        json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","message":"no such room"}"#.into(),
        )
    };
    if !is_valid_room(&room, app.config.limits.max_room_len) {
        return not_found();
    }
    let peers = match app.store.room_peers(&RoomId::new(room.as_str())).await {
        Ok(p) => p,
        Err(e) => return bus_unavailable(e),
    };
    if peers.is_empty() {
        return not_found();
    }
    let mut body = String::from(r#"{"room":"#);
    push_str(&mut body, &room);
    body.push_str(r#","peers":["#);
    for (i, p) in peers.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&p.object);
    }
    body.push_str("]}");
    json(StatusCode::OK, body)
}
