//! A WebRTC signaling server: peers meet in rooms, swap SDP offers/answers
//! and ICE candidates through it, and always know who else is in the room.
//! The wire protocol (v1) is specified in `docs/protocol.md`.
//!
//! # Architecture
//!
//! A connection is one task: the [session] reads frames and acts on
//! them, its [socket] writes what the connection's bounded [outbox]
//! holds while it waits for the next frame. Everything sent to a connection
//! goes through that outbox, which never blocks the sender: a client that does not read is closed, and nobody else
//! waits for it.
//!
//! The [hub] holds this node's rooms. Each membership change and each
//! relay happens under its room's lock and queues its frames before the lock
//! is released, which is what orders every member's view. The hub records
//! every change of its own peers in the cluster's presence store and sends
//! relays to other nodes through the transport ([bus]: two narrow traits
//! one engine implements); the engine calls back into the hub with what
//! other nodes send. The engine is the one boundary to the rest of the
//! cluster: in memory (the default, one instance), Redis (`--redis-url`,
//! any number of instances; see `docs/cluster.md`), or linked (several
//! instances of one cluster in one process, for tests: [`bind_linked`]).
//! Nothing outside `bus/`
//! knows which one runs; the HTTP side sees only the presence store (the
//! reads of `/api/*`), the transport's health, and the hub (the admin API's
//! actions: room commands each node applies to its own members, see
//! `hub/admin.rs`).
//!
//! Every presence change is also recorded as a room event (`event.rs`) with
//! the change itself, in the engine's event log (the third boundary,
//! [`bus::EventLog`]); the webhook deliverers (`webhook/`) read it and POST
//! each event to the application's backend, off the join path.
//!
//! # Layout
//!
//! | file | holds |
//! | --- | --- |
//! | `main.rs` | the binary: flags, logging, signals |
//! | `config.rs` | flags and `SIGNALING_*` variables, limits |
//! | `config_file.rs` | the config file under flags and variables, `PORT`, `--print-config` |
//! | `server.rs` | [`bind`] / [`Server::serve`], the drain on shutdown |
//! | `app.rs` | the shared state (a leaf): [`app::App`] for the HTTP side, [`app::SessionContext`], all a session gets |
//! | `accept.rs` | the accept loop: hyper per connection, header deadline, plain-HTTP caps |
//! | `tls.rs` | `--tls-cert`/`--tls-key`: loading the pair, reloading it when the files change |
//! | `admission.rs` | who may open `/ws`: client address via trusted proxies, Origin, per-address cap |
//! | `http.rs` | routes: `/ws`, `/healthz`, `/readyz`, `/metrics` (or on `--metrics-listen`), `/` |
//! | `api.rs` | the admin API under `/api`: rooms and peers read and acted on across the cluster, its OpenAPI document |
//! | `upgrade.rs` | the WebSocket upgrade and the frame guard: every client frame budgeted, fragments per message bounded |
//! | `connections.rs` | this node's open connections and the drain flag: `goaway` to all, the final close |
//! | `session.rs` | one connection's loop and deadlines, request handling, clean-up |
//! | `socket.rs` | one connection's WebSocket: reads, batched writes, pings, close handshake |
//! | `outbox.rs` | the bounded outbound queue and close causes |
//! | `text.rs` | `Text`: an encoded frame, shared, as the hub, outboxes and engines pass it |
//! | `hub/mod.rs` | rooms: join, relay, update, leave, drop |
//! | `hub/room.rs` | one room's members and how each is reached |
//! | `hub/admin.rs` | room commands: kicks, room closes, peer updates, room meta, server messages, same-identity replacement |
//! | `hub/resume.rs` | resume tokens, the take-over of a member by a resume (here or for another node), adopting one from another node |
//! | `hub/remote.rs` | remote members: first sync of a room, applying other nodes' traffic |
//! | `bus/mod.rs` | the engine boundary: the `Transport` and `PresenceStore` traits (together `Bus`), `InboundHandler`, value types |
//! | `bus/memory.rs` | the in-memory engine (one instance) |
//! | `bus/linked.rs` | the linked engine: several nodes of one cluster in one process, for tests |
//! | `bus/events.rs` | the in-process event log: each webhook endpoint's bounded outbox (one instance, or a linked cluster) |
//! | `bus/redis/mod.rs` | the Redis engine: the `Bus` implementation, resume hand-over |
//! | `bus/redis/link.rs` | connections, reconnect, resync, pub/sub dispatch |
//! | `bus/redis/resync.rs` | after a reconnect: the presence events this node missed, from what Redis records of the nodes that re-asserted |
//! | `bus/redis/repair.rs` | Redis's record of this node's peers made what it holds (on connect, and periodically) |
//! | `bus/redis/publisher.rs` | the ordered, pipelined write queue |
//! | `bus/redis/sequence.rs` | relays between two nodes numbered: once, in order, gaps reported back |
//! | `bus/redis/liveness.rs` | the node lease, heartbeats and announcing dead nodes |
//! | `bus/redis/wire.rs` | the node-to-node format (version 1): every channel message's encoder, one decoder, the stream's version |
//! | `bus/redis/keys.rs`, `scripts.rs` | the key layout, the Lua scripts (they also number and stream each room's events) |
//! | `bus/redis/events.rs` | the event log in Redis: a consumer group per webhook endpoint on the stream, its lease, claims, dead letters and replays |
//! | `event.rs` | the room event schema (version 1): webhook JSON and stream fields |
//! | `webhook/mod.rs` | `--webhook-*`: the endpoints, their client and policy, one deliverer each |
//! | `webhook/deliver.rs` | one endpoint's deliverer: per-room order, retries with backoff, dead letters |
//! | `webhook/sign.rs` | the Standard Webhooks signature |
//! | `webhook/cli.rs` | `signaling webhooks dead-letters / replay` against Redis |
//! | `auth.rs` | join and admin tokens: JWTs checked with secrets, PEM keys, JWKS keys; admin keys apart; grants |
//! | `jwks.rs` | `--auth-jwks-url`: the JWKS fetched at start, refreshed, fetched again for an unknown `kid` |
//! | `ice.rs` | `joined.ice_servers`: STUN, TURN with ephemeral credentials |
//! | `ratelimit.rs` | per-connection and per-address token buckets, flood rule |
//! | `metrics.rs` | counters, gauges, histograms and their exposition (prometheus-client), `process_*` |
//! | `ids.rs` | `RoomId`, `PeerId`, `NodeId` |
//!
//! The JSON shape of every message lives in the `signaling-protocol` crate.

pub mod accept;
pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod config_file;
pub mod connections;
pub mod event;
pub mod http;
pub mod hub;
pub mod ice;
pub mod ids;
pub mod jwks;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod socket;
pub mod text;
pub mod tls;
pub mod upgrade;
pub mod webhook;

pub use config::Config;
pub use server::{Server, ShutdownHandle, StartError, bind, bind_linked};
