//! A WebRTC signaling server: peers meet in rooms, swap SDP offers/answers
//! and ICE candidates through it, and always know who else is in the room.
//! The wire protocol is `shared/PROTOCOL.md` (v1); what this server adds to
//! it is in `docs/protocol-additions.md`.
//!
//! # Architecture
//!
//! A connection is two tasks: the [session](session) reads frames and acts on
//! them, the [writer](writer) owns the socket's sending half. Everything sent
//! to a connection goes through its bounded [outbox](outbox), which never
//! blocks the sender: a client that does not read is closed, and nobody else
//! waits for it.
//!
//! The [hub](hub) holds this node's rooms. Each membership change and each
//! relay happens under its room's lock and queues its frames before the lock
//! is released, which is what orders every member's view. The hub tells the
//! presence [bus](bus) about every change of its own peers; the bus is the one
//! boundary to the rest of the cluster, with an in-memory engine (the default,
//! one instance) behind a trait that the Redis engine will also implement.
//!
//! # Layout
//!
//! | file | holds |
//! | --- | --- |
//! | `main.rs` | the binary: flags, logging, signals |
//! | `config.rs` | flags and `SIGNALING_*` variables, limits |
//! | `server.rs` | [`bind`] / [`Server::serve`], the drain on shutdown |
//! | `http.rs` | routes: `/ws`, `/healthz`, `/readyz`, `/metrics`, `/api/*`, `/` |
//! | `session.rs` | one connection's read loop, request handling, clean-up |
//! | `writer.rs` | one connection's writer: batching, pings, close frames |
//! | `outbox.rs` | the bounded outbound queue and close causes |
//! | `hub/mod.rs` | rooms: join, relay, update, leave, drop |
//! | `hub/room.rs` | one room's members and how each is reached |
//! | `hub/resume.rs` | resume tokens and taking a held peer back |
//! | `bus/mod.rs` | the engine boundary: the `Bus` trait and its value types |
//! | `bus/memory.rs` | the in-memory engine |
//! | `auth.rs` | HS256 join and admin tokens |
//! | `ratelimit.rs` | per-connection token bucket and flood rule |
//! | `metrics.rs` | counters and the Prometheus text |
//! | `ids.rs` | `RoomId`, `PeerId`, `NodeId` |
//!
//! The JSON shape of every message lives in the `signaling-protocol` crate.

pub mod auth;
pub mod bus;
pub mod config;
pub mod http;
pub mod hub;
pub mod ids;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod writer;

pub use config::Config;
pub use server::{Server, ShutdownHandle, StartError, bind};
