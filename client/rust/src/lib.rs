//! An async client of signaling protocol v1 (`docs/protocol.md`) for Rust
//! peers: headless WebRTC peers, bots, and other people's tests.
//!
//! It joins a room, turns what the server sends into typed [`Event`]s, sends
//! offers, answers, candidates and messages, keeps the connection alive, and
//! when the connection drops (or the server says `goaway`) reconnects and
//! resumes the same peer, so the others never see it leave. When the server
//! ends the membership itself (the application's backend kicked it or
//! closed the room, or a newer connection of the same identity replaced
//! it), the client stops for good with [`ClientError::Removed`] instead.
//!
//! ```no_run
//! use signaling_client::{Client, ClientConfig, Event, JoinOptions};
//!
//! # async fn run() -> Result<(), signaling_client::ClientError> {
//! let (client, mut events) = Client::connect(ClientConfig::new("ws://127.0.0.1:8080/ws")).await?;
//! let joined = client.join("lobby", JoinOptions::default()).await?;
//! // The newcomer offers to everyone already there (the protocol's negotiation convention).
//! for peer in &joined.peers {
//!     client.offer(&peer.peer_id, "v=0\r\n...")?;
//! }
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Answer { from, sdp } => println!("answer from {from}: {} bytes", sdp.len()),
//!         Event::PeerLeft { peer_id, reason } => println!("{peer_id} left ({reason})"),
//!         Event::Closed(e) => return Err(e),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Layout: `client.rs` (the handle you call), `driver.rs` (the task that owns
//! the socket, heartbeats and reconnects), `event.rs`, `config.rs`, `error.rs`.

mod client;
mod config;
mod driver;
mod error;
mod event;

pub use client::Client;
pub use config::{ClientConfig, JoinOptions};
pub use error::{ClientError, Removal};
pub use event::{Event, Events, Joined};
pub use signaling_protocol::messages::{IceCandidate, Peer};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
