//! Nearer the wire than [`Client`](crate::client::Client): a WebSocket
//! client that shows each text message as the server wrote it, the close
//! frame's code and reason, sends any frame (binary, control, fragmented),
//! connects from a loopback source address of its choice and can reset its
//! TCP connection; and raw HTTP requests (a WebSocket upgrade, say) from a
//! chosen loopback source address.
//!
//! Loopback source addresses: 127.0.0.1 is the host itself, exempt from the
//! per-address limits; any other 127.x.y.z is another address, held to them.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::WAIT;
use crate::server::TestServer;

/// A TCP connection to `addr` from the loopback address `ip` (an IPv6
/// `addr` is reached from the default source).
pub async fn connect_from(addr: SocketAddr, ip: &str) -> TcpStream {
    if addr.is_ipv6() {
        return TcpStream::connect(addr).await.expect("connect");
    }
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// A WebSocket upgrade request for `/ws` on `addr` (RFC 6455's sample key)
/// with `extra` header lines, each ending in `\r\n`.
pub fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` (a whole request, as written) on a connection of its own
/// from the loopback address `ip`: the status and the lower-cased response
/// head. The connection is closed afterwards.
pub async fn request_from(addr: SocketAddr, ip: &str, request: &str) -> (u16, String) {
    request_on(&mut connect_from(addr, ip).await, request).await
}

/// Sends `request` on `s` and reads the response head: the status and the
/// head, lower-cased (status 0 when nothing readable came within
/// [`WAIT`]). The connection stays open (say, upgraded).
pub async fn request_on(s: &mut TcpStream, request: &str) -> (u16, String) {
    s.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    (crate::client::status_of(&head), head)
}

/// What [`Raw::step`] saw.
pub enum Step {
    /// A text message, as written and parsed.
    Text(String, Value),
    /// The end of the connection: the close frame's code and reason
    /// (`None`: no close frame, or one without a code).
    Closed(Option<(u16, String)>),
    /// Nothing in time (the connection may stay open).
    Nothing,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client without the kit's [`Client`](crate::client::Client)
/// in between. It reads only when asked (so it answers no ping meanwhile),
/// skips frames other than text and close, and checks that every text
/// message it reads is a JSON object with a string `type` (§3).
pub struct Raw {
    ws: Ws,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Raw { ws }
    }

    /// A connection to `server` from the loopback address `ip`.
    pub async fn connect_from(server: &TestServer, ip: &str) -> Raw {
        let tcp = connect_from(server.addr, ip).await;
        let (ws, _) = tokio_tungstenite::client_async(server.ws(), MaybeTlsStream::Plain(tcp))
            .await
            .unwrap_or_else(|e| panic!("upgrade from {ip}: {e}"));
        Raw { ws }
    }

    /// Sends `v` as a text message.
    pub async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// Sends `text` as a text message, exactly as written.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send_frame(Message::text(text.into())).await;
    }

    /// Sends any message or frame: binary, ping, pong, close.
    pub async fn send_frame(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Sends `text` as one text message cut into `frames` frames (a first
    /// text frame, then continuations).
    pub async fn send_fragmented(&mut self, text: &str, frames: usize) {
        let bytes = text.as_bytes();
        let size = bytes.len() / frames;
        for i in 0..frames {
            let end = if i + 1 == frames {
                bytes.len()
            } else {
                (i + 1) * size
            };
            let op = if i == 0 { Data::Text } else { Data::Continue };
            let f = Frame::message(
                bytes[i * size..end].to_vec(),
                OpCode::Data(op),
                i + 1 == frames,
            );
            self.ws.feed(Message::Frame(f)).await.expect("feed");
        }
        self.ws.flush().await.expect("flush");
    }

    /// Joins `room`; returns `joined`.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type":"join","room":room})).await;
        self.expect("joined").await
    }

    /// The next text message or the end of the connection, within `within`.
    pub async fn step(&mut self, within: Duration) -> Step {
        self.step_until(Instant::now() + within).await
    }

    async fn step_until(&mut self, deadline: Instant) -> Step {
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"));
                    assert!(v["type"].is_string(), "no string type: {t}");
                    return Step::Text(t.to_string(), v);
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Step::Closed(f.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return Step::Closed(None),
                Err(_) => return Step::Nothing,
            }
        }
    }

    /// The next text message within `within`; `None` once the connection
    /// ends (or nothing comes).
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        match self.step(within).await {
            Step::Text(_, v) => Some(v),
            Step::Closed(_) | Step::Nothing => None,
        }
    }

    /// The next text message, exactly as the server wrote it (within
    /// [`WAIT`]; the connection's end fails the test).
    pub async fn text(&mut self) -> String {
        self.reply().await.0
    }

    /// The next text message, parsed (as [`text`](Self::text)).
    pub async fn json(&mut self) -> Value {
        self.reply().await.1
    }

    /// The next text message, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let (raw, v) = self.reply().await;
        assert_eq!(v["type"], ty, "{raw}");
        v
    }

    async fn reply(&mut self) -> (String, Value) {
        match self.step(WAIT).await {
            Step::Text(raw, v) => (raw, v),
            Step::Closed(close) => panic!("closed: {close:?}"),
            Step::Nothing => panic!("nothing within {WAIT:?}"),
        }
    }

    /// Reads until the connection ends: the close frame's code and reason
    /// (`None`: it ended without one). Still open after `within` fails the
    /// test.
    pub async fn closed(&mut self, within: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + within;
        loop {
            match self.step_until(deadline).await {
                Step::Text(..) => continue,
                Step::Closed(close) => return close,
                Step::Nothing => panic!("neither closed nor ended within {within:?}"),
            }
        }
    }

    /// No text message for `d` (the connection may stay open, or end).
    pub async fn expect_silence(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, self.ws.next()).await {
            assert!(!m.is_text(), "expected nothing, got {m}");
        }
    }

    /// Ends the TCP connection with a reset (RST), no close frame.
    pub fn reset(self) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            tcp.set_zero_linger().expect("SO_LINGER 0");
        }
        drop(self.ws);
    }
}
