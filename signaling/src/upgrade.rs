//! The WebSocket upgrade, taken from hyper directly, and the guard under
//! tungstenite that budgets the frames a client sends.
//!
//! tungstenite assembles fragments and answers pings inside its read loop:
//! a client streaming empty continuation frames, or pongs, never makes it
//! return a message, so nothing above it can count them. [`Guarded`] sits
//! between the upgraded socket and tungstenite and follows the frame headers
//! as the bytes stream through (payloads are skipped, not looked at). Every
//! frame (data, continuation, ping, pong, close) takes a token from a bucket,
//! and a message may have at most [`MAX_FRAGMENTS`] frames. A client that
//! breaks either rule finds its read side ended with a [`Violation`], which
//! the session closes with 1008 and counts as a flood.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

/// A connection's WebSocket, with its frames budgeted.
pub type WebSocket = WebSocketStream<Guarded<TokioIo<Upgraded>>>;

/// Frames one message may be made of. Browsers send a message as one frame;
/// libraries that fragment do it in large pieces, so a few suffice.
pub const MAX_FRAGMENTS: u8 = 64;

/// Frames allowed per message of the message rate limit: room for fragments,
/// pongs and pings, far beyond what an honest client sends.
const FRAMES_PER_MESSAGE: f64 = 10.0;
/// The least frame budget, whatever the message limits: 100 frames/s and a
/// burst of 200.
const MIN_FRAME_RATE: f64 = 100.0;

/// Why a client's read side was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("too many frames")]
    FrameRate,
    #[error("too many fragments in one message")]
    Fragments,
}

/// How many frames a connection may send: a sustained rate and a burst.
#[derive(Debug, Clone, Copy)]
pub struct FrameBudget {
    pub per_second: u32,
    pub burst: u32,
}

impl FrameBudget {
    /// Derived from the message limits, so an operator who raises those (the
    /// benches lift them) raises this with them.
    pub fn for_messages(rate: f64, burst: f64) -> FrameBudget {
        let clamp = |f: f64| f.clamp(1.0, f64::from(u32::MAX)) as u32;
        FrameBudget {
            per_second: clamp((rate * FRAMES_PER_MESSAGE).max(MIN_FRAME_RATE)),
            burst: clamp((burst * FRAMES_PER_MESSAGE).max(2.0 * MIN_FRAME_RATE)),
        }
    }
}

/// Where in the frame the next byte is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// FIN and opcode.
    First,
    /// Mask bit and 7-bit length.
    Second,
    /// Extended length bytes still to come.
    Length { left: u8, masked: bool },
    /// Masking key bytes still to come.
    Mask(u8),
    /// Payload bytes still to come: `FrameGuard::left`.
    Payload,
}

/// Follows the frame headers of a client's byte stream and keeps its frame
/// budget. A few words: every connection has one.
#[derive(Debug)]
pub struct FrameGuard {
    /// Payload bytes left in the current frame (while reading an extended
    /// length: the length so far).
    left: u64,
    /// When the bucket was last refilled.
    refilled: Instant,
    tokens: u32,
    budget: FrameBudget,
    stage: Stage,
    /// Frames of the message under way; 0 between messages.
    fragments: u8,
    violation: Option<Violation>,
}

impl FrameGuard {
    pub fn new(budget: FrameBudget) -> FrameGuard {
        FrameGuard {
            left: 0,
            refilled: Instant::now(),
            tokens: budget.burst,
            budget,
            stage: Stage::First,
            fragments: 0,
            violation: None,
        }
    }

    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// Follows `bytes`, the next ones the client sent. The first broken rule
    /// is kept; bytes after it are not looked at.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.stage == Stage::First {
                // The usual case: the whole header is in this read, read at
                // once rather than a byte at a time through the stages.
                if let Some((header, len)) = whole_header(&bytes[i..]) {
                    if let Err(v) = self.frame(bytes[i]) {
                        self.violation = Some(v);
                        return Err(v);
                    }
                    i += header;
                    self.left = len;
                    self.stage = self.payload();
                    continue;
                }
            }
            if self.stage == Stage::Payload {
                let n = self.left.min((bytes.len() - i) as u64);
                self.left -= n;
                i += n as usize;
                if self.left == 0 {
                    self.stage = Stage::First;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.stage = match self.stage {
                Stage::First => {
                    if let Err(v) = self.frame(b) {
                        self.violation = Some(v);
                        return Err(v);
                    }
                    Stage::Second
                }
                Stage::Second => {
                    let masked = b & 0x80 != 0;
                    match b & 0x7f {
                        126 => self.length(2, masked),
                        127 => self.length(8, masked),
                        n => {
                            self.left = u64::from(n);
                            self.after_length(masked)
                        }
                    }
                }
                Stage::Length { left, masked } => {
                    self.left = (self.left << 8) | u64::from(b);
                    if left > 1 {
                        Stage::Length {
                            left: left - 1,
                            masked,
                        }
                    } else {
                        self.after_length(masked)
                    }
                }
                Stage::Mask(left) if left > 1 => Stage::Mask(left - 1),
                Stage::Mask(_) => self.payload(),
                Stage::Payload => Stage::Payload,
            };
        }
        Ok(())
    }

    fn length(&mut self, bytes: u8, masked: bool) -> Stage {
        self.left = 0;
        Stage::Length {
            left: bytes,
            masked,
        }
    }

    fn after_length(&self, masked: bool) -> Stage {
        if masked {
            Stage::Mask(4)
        } else {
            self.payload()
        }
    }

    fn payload(&self) -> Stage {
        if self.left == 0 {
            Stage::First
        } else {
            Stage::Payload
        }
    }

    /// A frame starts with `first` (FIN and opcode): it takes a token, and
    /// counts as a fragment of the message under way.
    fn frame(&mut self, first: u8) -> Result<(), Violation> {
        self.take_token()?;
        let fin = first & 0x80 != 0;
        match first & 0x0f {
            // Continuation.
            0 => {
                self.fragments = self.fragments.saturating_add(1);
                if self.fragments > MAX_FRAGMENTS {
                    return Err(Violation::Fragments);
                }
                if fin {
                    self.fragments = 0;
                }
            }
            // Text or binary (and reserved data opcodes, which tungstenite refuses).
            1..=7 => self.fragments = if fin { 0 } else { 1 },
            // Control frames may come between fragments; they are not part of the message.
            _ => {}
        }
        Ok(())
    }

    /// A token bucket refilled lazily: the clock is read only when the
    /// bucket is empty, once per `burst` frames at most, not per frame.
    fn take_token(&mut self) -> Result<(), Violation> {
        if self.tokens == 0 {
            let now = Instant::now();
            let earned = now.saturating_duration_since(self.refilled).as_secs_f64()
                * f64::from(self.budget.per_second);
            if earned < 1.0 {
                return Err(Violation::FrameRate);
            }
            // What was earned since the bucket last ran dry, capped at the
            // burst: over any time T at most burst + rate * T frames pass.
            self.tokens = earned.min(f64::from(self.budget.burst)) as u32;
            self.refilled = now;
        }
        self.tokens -= 1;
        Ok(())
    }
}

/// If `bytes` starts with a whole frame header: its length and the
/// payload's. `None` when part of it is still to come.
fn whole_header(bytes: &[u8]) -> Option<(usize, u64)> {
    let second = *bytes.get(1)?;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let header = 2 + extended + if second & 0x80 != 0 { 4 } else { 0 };
    let rest = bytes.get(2..header)?;
    let len = short.unwrap_or_else(|| {
        rest[..extended]
            .iter()
            .fold(0, |len, &b| (len << 8) | u64::from(b))
    });
    Some((header, len))
}

/// The upgraded socket, its reads followed by a [`FrameGuard`]. Once the
/// guard finds a broken rule, reads fail with the [`Violation`].
pub struct Guarded<T> {
    io: T,
    guard: FrameGuard,
}

impl<T> Guarded<T> {
    pub fn new(io: T, budget: FrameBudget) -> Guarded<T> {
        Guarded {
            io,
            guard: FrameGuard::new(budget),
        }
    }

    pub fn violation(&self) -> Option<Violation> {
        self.guard.violation()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(v) = this.guard.violation() {
            return Poll::Ready(Err(io::Error::other(v)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        // The read that broke a rule fails as a whole: none of its bytes go
        // up, so the frame over the bound (a 65th fragment, say) is never
        // assembled or acted on.
        match this.guard.scan(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(v) => {
                buf.set_filled(before);
                Poll::Ready(Err(io::Error::other(v)))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Why a request to `/ws` is not a WebSocket upgrade we take.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeRefused {
    #[error("WebSockets need HTTP/1.1 here")]
    Version,
    #[error("request method must be `GET`")]
    MethodNotGet,
    #[error("`Connection` header did not include 'upgrade'")]
    Connection,
    #[error("`Upgrade` header did not include 'websocket'")]
    Upgrade,
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    WsVersion,
    #[error("`Sec-WebSocket-Key` header missing")]
    KeyMissing,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        let status = match self {
            UpgradeRefused::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRefused::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// A valid WebSocket upgrade request (RFC 6455 section 4.2.1), not yet answered.
pub struct WsUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = UpgradeRefused;

    /// The checks and rejections of axum's `WebSocketUpgrade`, in its
    /// order, so clients see the same answers as before (the server speaks
    /// HTTP/1.1 only, so there is no HTTP/2 CONNECT case).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.version > Version::HTTP_11 {
            return Err(UpgradeRefused::Version);
        }
        if parts.method != Method::GET {
            return Err(UpgradeRefused::MethodNotGet);
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRefused::Connection);
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRefused::Upgrade);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRefused::KeyMissing)?;
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRefused::WsVersion);
        }
        // Base64 is ASCII, always a valid header value.
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
            .map_err(|_| UpgradeRefused::KeyMissing)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRefused::NotUpgradable)?;
        Ok(WsUpgrade { accept, on_upgrade })
    }
}

/// Whether the (first) header `name` is `value`, case-insensitively.
fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl WsUpgrade {
    /// Answers 101 and, once hyper hands the connection over, gives the
    /// budgeted WebSocket to `start`, which must not wait (it spawns).
    pub fn on_upgrade(
        self,
        config: WebSocketConfig,
        budget: FrameBudget,
        start: impl FnOnce(WebSocket) + Send + 'static,
    ) -> Response {
        let on_upgrade = self.on_upgrade;
        // Its own task: the 101 must be written before hyper hands over.
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let io = Guarded::new(TokioIo::new(upgraded), budget);
            start(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await);
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> FrameBudget {
        FrameBudget {
            per_second: 100,
            burst: 200,
        }
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match len {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn frames_of_every_length_form_are_followed_byte_by_byte() {
        let mut bytes = Vec::new();
        for len in [0, 5, 125, 126, 300, 65_535, 70_000] {
            bytes.extend(frame(true, 1, len));
        }
        // Split at every point a read could end: fed one byte at a time.
        let mut g = FrameGuard::new(budget());
        for b in &bytes {
            assert_eq!(g.scan(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(g.stage, Stage::First);
        assert_eq!(g.tokens, budget().burst - 7);
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn frames_split_across_two_reads_anywhere_are_followed() {
        let mut bytes = Vec::new();
        for len in [0, 5, 125, 126, 300, 65_535, 70_000] {
            bytes.extend(frame(true, 1, len));
        }
        // Every cut within the first frames (headers and short payloads),
        // then every hundredth byte.
        for cut in (0..400).chain((400..bytes.len()).step_by(100)) {
            let mut g = FrameGuard::new(budget());
            assert_eq!(g.scan(&bytes[..cut]), Ok(()));
            assert_eq!(g.scan(&bytes[cut..]), Ok(()));
            assert_eq!(g.stage, Stage::First, "cut at {cut}");
            assert_eq!(g.tokens, budget().burst - 7, "cut at {cut}");
        }
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn sixty_four_fragments_pass_and_the_sixty_fifth_is_refused() {
        let mut g = FrameGuard::new(budget());
        let mut ok = frame(false, 1, 3);
        for _ in 0..62 {
            ok.extend(frame(false, 0, 0));
            // A control frame between fragments is not one of them.
            ok.extend(frame(true, 9, 1));
        }
        ok.extend(frame(true, 0, 2));
        assert_eq!(g.scan(&ok), Ok(()));
        let mut g = FrameGuard::new(FrameBudget {
            per_second: 100,
            burst: 1000,
        });
        let mut bad = frame(false, 1, 3);
        for _ in 0..64 {
            bad.extend(frame(false, 0, 1));
        }
        assert_eq!(g.scan(&bad), Err(Violation::Fragments));
        assert_eq!(g.scan(&frame(true, 9, 0)), Err(Violation::Fragments));
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn the_burst_passes_then_frames_faster_than_the_rate_are_refused() {
        let mut g = FrameGuard::new(budget());
        let pongs: Vec<u8> = (0..200).flat_map(|_| frame(true, 0xA, 0)).collect();
        assert_eq!(g.scan(&pongs), Ok(()));
        assert_eq!(g.scan(&frame(true, 0xA, 0)), Err(Violation::FrameRate));
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn a_steady_client_under_the_rate_is_never_refused() {
        let mut g = FrameGuard::new(budget());
        // One frame every 10 ms, 100/s, the rate itself, for ten times the
        // burst (the clock moved back by hand rather than slept on).
        for _ in 0..1_000 {
            g.refilled -= std::time::Duration::from_millis(10);
            assert_eq!(g.scan(&frame(true, 1, 10)), Ok(()));
        }
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn the_budget_follows_the_message_limits() {
        let b = FrameBudget::for_messages(50.0, 100.0);
        assert_eq!((b.per_second, b.burst), (500, 1000));
        let b = FrameBudget::for_messages(0.0, 0.0);
        assert_eq!((b.per_second, b.burst), (100, 200));
        let b = FrameBudget::for_messages(1e12, 1e12);
        assert_eq!((b.per_second, b.burst), (u32::MAX, u32::MAX));
    }
}
