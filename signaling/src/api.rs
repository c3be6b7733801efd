//! The admin API under `/api`: what an application's backend reads and does
//! to rooms, from any node, for peers on any node. Reads go to the cluster's
//! presence store; actions go to the hub, which applies them to this node's
//! members and sends them to the room's other nodes ([`crate::hub`]'s
//! `admin.rs`). With auth on, every route but the OpenAPI document needs an
//! admin token (`Authorization: Bearer`).
//!
//! `/api/webhooks` shows each webhook endpoint's queue as the event log
//! records it (every node reads the same one with Redis), lists its dead
//! letters and sends them again: the same log the deliverers read, so a
//! replay is delivered by whichever node delivers the endpoint.
//!
//! Every request and answer body is a type here, and the OpenAPI document
//! (`/api/openapi.json`) is generated from them and from the routes'
//! annotations, so the two cannot drift apart.

// The helpers' errors are the handlers' answers, returned as they are; a
// Response is large, but these run once per admin request, off the hot path.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use signaling_protocol::reply;
use signaling_protocol::room::{is_valid_name, is_valid_room};
use signaling_protocol::{RelayKind, ijson};
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::App;
use crate::auth::now_unix;
use crate::bus::{BusError, DeadLetter, PeerInfo, RoomCommand};
use crate::event::RoomEvent;
use crate::ids::RoomId;
use crate::webhook::Endpoint;
use signaling_protocol::reply::LeaveReason;

/// Bodies past this are refused before they are read (413, by axum); the
/// documented limits (`meta`, `data`) are checked on what is read.
const MAX_BODY: usize = 1024 * 1024;
/// Lines per page of a list (rooms, dead letters) unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// How long a kick, a room close or a peer update may take to show in the
/// cluster's record before the API answers that it was not confirmed.
const CONFIRM_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/rooms", get(list_rooms))
        .route("/api/rooms/{room}", get(get_room).delete(close_room))
        .route(
            "/api/rooms/{room}/meta",
            get(get_room_meta).put(set_room_meta),
        )
        .route(
            "/api/rooms/{room}/peers/{peer}",
            get(get_peer).patch(update_peer).delete(kick_peer),
        )
        .route("/api/rooms/{room}/messages", post(send_message))
        .route("/api/webhooks", get(list_webhooks))
        .route("/api/webhooks/{endpoint}/dead-letters", get(dead_letters))
        .route("/api/webhooks/{endpoint}/replay", post(replay))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signaling admin API",
        description = "Rooms and peers across the cluster: read them, and act on them. See docs/protocol.md, section 14."
    ),
    paths(
        list_rooms,
        get_room,
        close_room,
        get_room_meta,
        set_room_meta,
        get_peer,
        update_peer,
        kick_peer,
        send_message,
        list_webhooks,
        dead_letters,
        replay
    ),
    components(schemas(
        RoomList,
        RoomLine,
        Room,
        Peer,
        RoomMeta,
        Closed,
        PeerChange,
        ServerMessage,
        Sent,
        WebhookList,
        WebhookLine,
        DeadLetterList,
        DeadLetterLine,
        Replay,
        Replayed,
        ApiError
    )),
    modifiers(&BearerAuth),
    security(("admin_token" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with `\"admin\": true` (docs/protocol.md 12.2); not needed in open mode",
                    ))
                    .build(),
            ),
        );
    }
}

/// One page of rooms, sorted by name.
#[derive(Serialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<RoomLine>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A room with members, in a list.
#[derive(Serialize, ToSchema)]
pub struct RoomLine {
    pub room: String,
    /// Members across the cluster, held ones included.
    pub peer_count: usize,
}

/// A room with its members.
#[derive(Serialize, ToSchema)]
pub struct Room {
    pub room: String,
    /// The room's metadata as last set (`{}` until then).
    #[schema(value_type = Object)]
    pub meta: Box<RawValue>,
    pub peer_count: usize,
    /// Peer objects, oldest first.
    pub peers: Vec<Peer>,
}

/// A peer object, as clients see it in `joined` and `peer-joined`.
#[derive(Serialize, ToSchema)]
pub struct Peer {
    pub peer_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub meta: Box<RawValue>,
    /// Unix milliseconds.
    pub joined_at: u64,
    /// The verified identity (the join token's `sub`), when auth is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// A room's metadata.
#[derive(Serialize, ToSchema)]
pub struct RoomMeta {
    pub room: String,
    #[schema(value_type = Object)]
    pub meta: Box<RawValue>,
}

/// A closed room.
#[derive(Serialize, ToSchema)]
pub struct Closed {
    pub room: String,
    /// Members removed (`peer-left` reason `kicked`, close code 4002).
    pub removed: usize,
}

/// What to change of a peer: either or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerChange {
    /// A new display name (at most `--max-name-chars` characters, no control characters).
    #[serde(default)]
    pub name: Option<String>,
    /// A new `meta` object (at most `--max-meta-bytes`), replacing the old one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Box<RawValue>>,
}

/// A message from the server to the room's members, or to one of them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerMessage {
    /// Any JSON value (I-JSON, at most `--max-data-bytes`): delivered as
    /// `{"type":"message","from":"server","data":...}`.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// A `peer_id`: only that peer gets it.
    #[serde(default)]
    pub to: Option<String>,
}

/// A message handed to the members' instances.
#[derive(Serialize, ToSchema)]
pub struct Sent {
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ApiError {
    /// `unauthorized`, `not_found`, `bad_request`, `too_large` or `unavailable`.
    pub error: &'static str,
    pub message: String,
}

/// The webhook endpoints (`--webhook-url`) and their queues.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub endpoints: Vec<WebhookLine>,
}

/// One webhook endpoint.
#[derive(Serialize, ToSchema)]
pub struct WebhookLine {
    /// Its name in this API and in metrics: 12 hex digits of the SHA-256
    /// of its URL as configured, the same on every instance.
    pub id: String,
    /// Its URL without user info, query or fragment (they may hold credentials).
    pub url: String,
    /// Events not yet delivered: waiting, being tried, or replayed.
    pub backlog: u64,
    /// Events given up on, kept until replayed.
    pub dead_letters: u64,
}

/// An endpoint's dead letters, oldest first.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterLine>,
}

/// An event given up on: every try failed, or it could not be kept.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterLine {
    /// The event, as a webhook delivers it (its `id` is what a replay names).
    #[schema(value_type = Object)]
    pub event: RoomEvent,
    /// Why the last try failed (e.g. `answered 500 Internal Server Error`).
    pub error: String,
    /// Tries made.
    pub attempts: u32,
    /// Unix milliseconds.
    pub failed_at: u64,
}

impl From<DeadLetter> for DeadLetterLine {
    fn from(d: DeadLetter) -> Self {
        DeadLetterLine {
            event: d.event,
            error: d.error,
            attempts: d.attempts,
            failed_at: d.failed_at,
        }
    }
}

/// Which dead letters to send again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Their events' `id`s; without it, every dead letter of the endpoint.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

/// Dead letters moved back to delivery.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: usize,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterPage {
    /// Dead letters to list, oldest first (1 to 1000; 100 by default).
    pub limit: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Rooms per page (1 to 1000; 100 by default).
    pub limit: Option<usize>,
    /// Only rooms whose name sorts after this one (the previous page's `next`).
    pub after: Option<String>,
}

fn error(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    let body = ApiError {
        error,
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such {what}"),
    )
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn unavailable(e: BusError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

/// What a handler answers: its answer, or the error answer a helper's `?`
/// brought back.
type Answer = Result<Response, Response>;

/// With auth on, an admin token is required.
async fn refusal(app: &App, headers: &HeaderMap) -> Option<Response> {
    let auth = app.ctx.auth.as_ref()?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let verified = match token {
        Some(t) => auth.check_admin(t.trim(), now_unix()).await,
        None => Err(crate::auth::AuthError::Missing),
    };
    match verified {
        Ok(()) => None,
        Err(_) => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an admin token is required",
        )),
    }
}

/// The room named in the path, for a request with the admin token auth
/// needs (an invalid name is a room that does not exist).
async fn admitted(app: &App, headers: &HeaderMap, room: &str) -> Result<RoomId, Response> {
    if let Some(r) = refusal(app, headers).await {
        return Err(r);
    }
    if is_valid_room(room, app.config.limits.max_room_len) {
        Ok(RoomId::new(room))
    } else {
        Err(not_found("room"))
    }
}

/// The webhook endpoint named in the path (by its id), for a request with
/// the admin token auth needs.
async fn admitted_endpoint<'a>(
    app: &'a App,
    headers: &HeaderMap,
    id: &str,
) -> Result<&'a Endpoint, Response> {
    if let Some(r) = refusal(app, headers).await {
        return Err(r);
    }
    app.webhooks
        .iter()
        .find(|e| e.id == id)
        .ok_or_else(|| not_found("webhook endpoint"))
}

/// A page size asked for (`limit`), checked; the default without one.
fn page_limit(limit: Option<usize>) -> Result<usize, Response> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_request(format!("`limit` must be 1 to {MAX_PAGE}")))
    }
}

/// A room's members and meta, 404 for a room without members.
async fn room_with_meta(
    app: &App,
    room: &RoomId,
) -> Result<(Vec<Arc<PeerInfo>>, Box<RawValue>), Response> {
    let (peers, meta) = tokio::try_join!(app.store.room_peers(room), app.store.room_meta(room))
        .map_err(unavailable)?;
    if peers.is_empty() {
        return Err(not_found("room"));
    }
    Ok((peers, raw(meta.as_deref().unwrap_or("{}"))))
}

/// Meta as stored: always a JSON object (checked when it was set).
fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Self {
        Peer {
            peer_id: p.id.as_str().to_owned(),
            name: p.name.clone(),
            meta: raw(&p.meta),
            joined_at: p.joined_at_ms,
            identity: p.identity.clone(),
        }
    }
}

/// A JSON object body of at most `max` bytes, as raw JSON.
fn object(json: &RawValue, field: &str, max: usize) -> Result<(), Response> {
    if !json.get().trim_start().starts_with('{') {
        return Err(bad_request(format!("`{field}` must be a JSON object")));
    }
    if json.get().len() > max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("`{field}` is larger than {max} bytes"),
        ));
    }
    ijson::check(json).map_err(|e| bad_request(format!("`{field}`: {e}")))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("the body is not valid: {e}")))
}

/// The peer, if it is a member of the room anywhere in the cluster.
async fn find_peer(app: &App, room: &RoomId, peer: &str) -> Result<Arc<PeerInfo>, Response> {
    let peers = app.store.room_peers(room).await.map_err(unavailable)?;
    peers
        .into_iter()
        .find(|p| p.id.as_str() == peer)
        .ok_or_else(|| not_found("peer in this room"))
}

/// Waits until the room's members, as the cluster records them, show what
/// an action did (`done`): the nodes holding them applied it. A node that
/// missed it (cut off from the cluster meanwhile) is not silently passed
/// over: the answer is then 503, and the action may be asked again.
async fn confirmed(
    app: &App,
    room: &RoomId,
    done: impl Fn(&[Arc<PeerInfo>]) -> bool,
) -> Result<(), Response> {
    let deadline = tokio::time::Instant::now() + CONFIRM_WITHIN;
    loop {
        if done(&app.store.room_peers(room).await.map_err(unavailable)?) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the instance holding the peer did not confirm it in time: ask again",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unavailable",
            e.to_string(),
        ),
    }
}

/// Lists the rooms that have members, across the cluster, by name.
#[utoipa::path(get, path = "/api/rooms", params(Page), tag = "rooms",
    responses(
        (status = 200, body = RoomList),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn list_rooms(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    if let Some(r) = refusal(&app, &headers).await {
        return Err(r);
    }
    let Ok(Query(page)) = page else {
        return Err(bad_request("`limit` must be a number"));
    };
    let limit = page_limit(page.limit)?;
    let rooms = app.store.rooms().await.map_err(unavailable)?;
    let after = page.after.as_deref().unwrap_or("");
    let mut rest = rooms.iter().filter(|r| r.room.as_str() > after);
    let lines: Vec<RoomLine> = rest
        .by_ref()
        .take(limit)
        .map(|r| RoomLine {
            room: r.room.as_str().to_owned(),
            peer_count: r.peers,
        })
        .collect();
    let next = match rest.next() {
        Some(_) => lines.last().map(|l| l.room.clone()),
        None => None,
    };
    Ok(axum::Json(RoomList { rooms: lines, next }).into_response())
}

/// One room: its metadata and its members, across the cluster.
#[utoipa::path(get, path = "/api/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, body = Room),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError, description = "No member, or not a room name"),
        (status = 503, body = ApiError)
    ))]
async fn get_room(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let (peers, meta) = room_with_meta(&app, &room).await?;
    Ok(axum::Json(Room {
        room: room.as_str().to_owned(),
        meta,
        peer_count: peers.len(),
        peers: peers.iter().map(|p| Peer::from(&**p)).collect(),
    })
    .into_response())
}

/// Closes a room: every member is removed (`peer-left` reason `kicked`,
/// close code 4002), on every instance.
#[utoipa::path(delete, path = "/api/rooms/{room}", tag = "rooms",
    params(("room" = String, Path)),
    responses(
        (status = 200, body = Closed),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn close_room(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let peers = app.store.room_peers(&room).await.map_err(unavailable)?;
    if peers.is_empty() {
        return Err(not_found("room"));
    }
    app.ctx
        .hub
        .act(&room, RoomCommand::Close)
        .map_err(unavailable)?;
    confirmed(&app, &room, |now| now.is_empty()).await?;
    Ok(axum::Json(Closed {
        room: room.as_str().to_owned(),
        removed: peers.len(),
    })
    .into_response())
}

/// A room's metadata (`{}` until set).
#[utoipa::path(get, path = "/api/rooms/{room}/meta", tag = "rooms",
    params(("room" = String, Path)),
    responses(
        (status = 200, body = RoomMeta),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn get_room_meta(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let (_, meta) = room_with_meta(&app, &room).await?;
    Ok(axum::Json(RoomMeta {
        room: room.as_str().to_owned(),
        meta,
    })
    .into_response())
}

/// Sets a room's metadata (a JSON object, replacing the old one). Members
/// get `room-updated`; later joiners find it in `joined.room_meta`. It goes
/// with the room's last member.
#[utoipa::path(put, path = "/api/rooms/{room}/meta", tag = "rooms",
    params(("room" = String, Path)),
    request_body(content = Object, description = "The new metadata: a JSON object of at most `--max-meta-bytes`"),
    responses(
        (status = 200, body = RoomMeta),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 413, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn set_room_meta(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let meta: Box<RawValue> = parse(&body)?;
    object(&meta, "meta", app.config.limits.max_meta_bytes)?;
    let hub = &app.ctx.hub;
    if !hub
        .set_room_meta(&room, meta.get().to_owned())
        .await
        .map_err(unavailable)?
    {
        return Err(not_found("room"));
    }
    Ok(axum::Json(RoomMeta {
        room: room.as_str().to_owned(),
        meta,
    })
    .into_response())
}

/// One peer of a room.
#[utoipa::path(get, path = "/api/rooms/{room}/peers/{peer}", tag = "peers",
    params(("room" = String, Path), ("peer" = String, Path, description = "A `peer_id`")),
    responses(
        (status = 200, body = Peer),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn get_peer(
    State(app): State<Arc<App>>,
    Path((room, peer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let p = find_peer(&app, &room, &peer).await?;
    Ok(axum::Json(Peer::from(&*p)).into_response())
}

/// Changes a peer's `name` and/or `meta`. The others get `peer-updated`,
/// the peer itself `updated`. Answers the peer as it will be.
#[utoipa::path(patch, path = "/api/rooms/{room}/peers/{peer}", tag = "peers",
    params(("room" = String, Path), ("peer" = String, Path)),
    request_body = PeerChange,
    responses(
        (status = 200, body = Peer),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 413, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn update_peer(
    State(app): State<Arc<App>>,
    Path((room, peer)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let change: PeerChange = parse(&body)?;
    let limits = &app.config.limits;
    if let Some(name) = &change.name {
        if !is_valid_name(name, limits.max_name_chars) {
            return Err(bad_request(format!(
                "`name` must be at most {} characters, without control characters",
                limits.max_name_chars
            )));
        }
    }
    if let Some(meta) = &change.meta {
        object(meta, "meta", limits.max_meta_bytes)?;
    }
    if change.name.is_none() && change.meta.is_none() {
        return Err(bad_request("give `name`, `meta` or both"));
    }
    let info = find_peer(&app, &room, &peer).await?;
    let name = change.name.unwrap_or_else(|| info.name.clone());
    let meta = change
        .meta
        .map_or_else(|| info.meta.clone(), |m| m.get().to_owned());
    let cmd = RoomCommand::Update {
        peer: info.id.clone(),
        name: Some(name.clone()),
        meta: Some(meta.clone()),
    };
    app.ctx.hub.act(&room, cmd).map_err(unavailable)?;
    let updated = info.renamed(name, meta);
    if updated.object != info.object {
        // Recorded changed (or gone meanwhile): its node applied it.
        confirmed(&app, &room, |now| {
            now.iter()
                .find(|p| p.id == info.id)
                .is_none_or(|p| p.object != info.object)
        })
        .await?;
    }
    Ok(axum::Json(Peer::from(&updated)).into_response())
}

/// Removes a peer: it is closed with code 4001, the others see `peer-left`
/// with reason `kicked`, and its resume token no longer works. Answers once
/// the cluster's record no longer lists it (503 if that takes over 3 s).
#[utoipa::path(delete, path = "/api/rooms/{room}/peers/{peer}", tag = "peers",
    params(("room" = String, Path), ("peer" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn kick_peer(
    State(app): State<Arc<App>>,
    Path((room, peer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let info = find_peer(&app, &room, &peer).await?;
    let cmd = RoomCommand::Kick {
        peer: info.id.clone(),
        reason: LeaveReason::Kicked,
    };
    app.ctx.hub.act(&room, cmd).map_err(unavailable)?;
    confirmed(&app, &room, |now| now.iter().all(|p| p.id != info.id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Sends a message from the server to every member of the room, or to one
/// (`to`): delivered as `message` with `"from":"server"`.
#[utoipa::path(post, path = "/api/rooms/{room}/messages", tag = "rooms",
    params(("room" = String, Path)),
    request_body = ServerMessage,
    responses(
        (status = 202, body = Sent),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 413, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn send_message(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let room = admitted(&app, &headers, &room).await?;
    let msg: ServerMessage = parse(&body)?;
    let max = app.config.limits.max_data_bytes;
    if msg.data.get().len() > max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("`data` is larger than {max} bytes"),
        ));
    }
    ijson::check(&msg.data).map_err(|e| bad_request(format!("`data`: {e}")))?;
    let to = match &msg.to {
        Some(peer) => Some(find_peer(&app, &room, peer).await?.id.clone()),
        None if app
            .store
            .room_peers(&room)
            .await
            .map_err(unavailable)?
            .is_empty() =>
        {
            return Err(not_found("room"));
        }
        None => None,
    };
    let text = reply::relayed(RelayKind::Message, reply::SERVER_SENDER, msg.data.get());
    let cmd = RoomCommand::Message {
        to,
        text: text.into(),
    };
    app.ctx.hub.act(&room, cmd).map_err(unavailable)?;
    let sent = Sent {
        room: room.as_str().to_owned(),
        to: msg.to,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(sent)).into_response())
}

/// The webhook endpoints, each with its backlog and dead letters as the
/// event log records them (with Redis, the cluster's: the same from every
/// instance).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses(
        (status = 200, body = WebhookList),
        (status = 401, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn list_webhooks(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    if let Some(r) = refusal(&app, &headers).await {
        return Err(r);
    }
    let log = app.store.event_log();
    let mut endpoints = Vec::with_capacity(app.webhooks.len());
    for e in &app.webhooks {
        let (backlog, dead_letters) = log.backlog(&e.id).await.map_err(unavailable)?;
        endpoints.push(WebhookLine {
            id: e.id.clone(),
            url: e.redacted(),
            backlog,
            dead_letters,
        });
    }
    Ok(axum::Json(WebhookList { endpoints }).into_response())
}

/// An endpoint's dead letters, oldest first.
#[utoipa::path(get, path = "/api/webhooks/{endpoint}/dead-letters", tag = "webhooks",
    params(
        ("endpoint" = String, Path, description = "The endpoint's `id`, as `/api/webhooks` lists it"),
        DeadLetterPage
    ),
    responses(
        (status = 200, body = DeadLetterList),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError, description = "No endpoint with this id"),
        (status = 503, body = ApiError)
    ))]
async fn dead_letters(
    State(app): State<Arc<App>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    page: Result<Query<DeadLetterPage>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let endpoint = admitted_endpoint(&app, &headers, &endpoint).await?;
    let Ok(Query(page)) = page else {
        return Err(bad_request("`limit` must be a number"));
    };
    let limit = page_limit(page.limit)?;
    let letters = app
        .store
        .event_log()
        .dead_letters(&endpoint.id, limit)
        .await
        .map_err(unavailable)?;
    let dead_letters = letters.into_iter().map(DeadLetterLine::from).collect();
    Ok(axum::Json(DeadLetterList { dead_letters }).into_response())
}

/// Sends an endpoint's dead letters again: those named (`ids`), or every
/// one (`{}`). They go back to delivery with their events' `id` and `seq`
/// unchanged, and are dead-lettered again if every try fails. Each arrives
/// after later events of its room (docs/events.md).
#[utoipa::path(post, path = "/api/webhooks/{endpoint}/replay", tag = "webhooks",
    params(("endpoint" = String, Path, description = "The endpoint's `id`")),
    request_body = Replay,
    responses(
        (status = 200, body = Replayed),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
        (status = 503, body = ApiError)
    ))]
async fn replay(
    State(app): State<Arc<App>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let endpoint = admitted_endpoint(&app, &headers, &endpoint).await?;
    let asked: Replay = parse(&body)?;
    let replayed = app
        .store
        .event_log()
        .replay(&endpoint.id, asked.ids.as_deref())
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(Replayed { replayed }).into_response())
}
