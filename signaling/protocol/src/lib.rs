//! The wire format of signaling protocol v1 (`docs/protocol.md`), and the only
//! place that knows its JSON shape.
//!
//! - [`request`] decodes what a client sends into a borrowed [`Request`]: one
//!   parse, no copies of the relayed payloads (`sdp`, `candidate`, `data` stay
//!   as raw JSON slices of the received frame).
//! - [`reply`] encodes what the server sends. Relayed payloads are pasted as
//!   the raw JSON they arrived as, so relaying never re-encodes them.
//! - [`ijson`] checks that what is relayed is I-JSON (RFC 7493), so it parses
//!   wherever it is pasted.
//! - [`ErrorCode`] is the closed list of error codes.
//! - [`room`] holds the room-name rule.
//! - [`messages`] has owned, typed messages for clients (the Rust client
//!   crate and test peers), checked against the two modules above.

pub mod error;
pub mod ijson;
pub mod messages;
pub mod reply;
pub mod request;
pub mod room;

pub use error::ErrorCode;
pub use request::{DecodeError, RelayKind, Request, decode};

/// The protocol version announced in `joined.protocol`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
