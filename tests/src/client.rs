//! A small WebSocket test client of protocol v1, and a raw HTTP GET.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long an expected message may take.
pub const WAIT: Duration = Duration::from_secs(5);

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[]).await
}

/// GET with extra request headers (`("Authorization", "Bearer ...")`).
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await else {
        return (0, String::new());
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = status_of(&text);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An HTTP response: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request on a connection of its own (`body` sent as JSON),
/// and the whole response (the server's bodies here have a known length).
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().map(status_of).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The status code of an HTTP response (or of its head), 0 without one.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub label: String,
    ws: Ws,
    pub peer_id: String,
    pub resume: String,
}

impl Client {
    pub async fn connect(url: &str, label: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("{label}: connect {url}: {e}"));
        Client::over(ws, label)
    }

    /// A `wss://` connection that trusts `cert` (a test certificate).
    pub async fn connect_tls(url: &str, cert: &crate::tls::TestCert, label: &str) -> Client {
        let ws = crate::tls::connect_wss(url, cert)
            .await
            .unwrap_or_else(|e| panic!("{label}: connect {url}: {e}"));
        Client::over(ws, label)
    }

    fn over(ws: WebSocketStream<MaybeTlsStream<TcpStream>>, label: &str) -> Client {
        Client {
            label: label.into(),
            ws,
            peer_id: String::new(),
            resume: String::new(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{}: send: {e}", self.label));
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("{}: send: {e}", self.label));
    }

    /// The next text message within `within` (pings and pongs do not count,
    /// nor restart the wait).
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("json"));
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Hands `f` every message that arrives until `deadline` (or until the
    /// connection ends).
    pub async fn each_until(&mut self, deadline: std::time::Instant, mut f: impl FnMut(Value)) {
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.next(left).await {
                Some(v) => f(v),
                None => break,
            }
        }
    }

    /// The next message, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        self.expect_within(ty, WAIT).await
    }

    pub async fn expect_within(&mut self, ty: &str, within: Duration) -> Value {
        match self.next(within).await {
            Some(v) if v["type"] == ty => v,
            other => panic!("{}: expected {ty}, got {other:?}", self.label),
        }
    }

    /// Joins `room` and learns of every peer in `others`, whether listed in
    /// `joined` or announced right after (a join on another instance may
    /// still be on its way). Returns the ids `joined` listed.
    pub async fn join_seeing(&mut self, room: &str, others: &[&str]) -> Vec<String> {
        let j = self.join(room).await;
        let listed = peer_ids(&j["peers"]);
        for id in others {
            if !listed.iter().any(|l| l == id) {
                let pj = self.expect("peer-joined").await;
                assert_eq!(pj["peer"]["peer_id"], *id, "{}: {pj}", self.label);
            }
        }
        listed
    }

    /// Collects messages until `done` holds for what has been seen, or
    /// `within` passes.
    pub async fn collect_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + within;
        let mut seen = Vec::new();
        while !done(&seen) {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            match self.next(left).await {
                Some(v) => seen.push(v),
                None => break,
            }
        }
        seen
    }

    /// Nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(v) = self.next(d).await {
            panic!("{}: expected nothing, got {v}", self.label);
        }
    }

    pub async fn join_with(&mut self, room: &str, extra: Value) -> Value {
        let mut msg = json!({"type":"join","room":room});
        if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        self.send(msg).await;
        let j = self.expect("joined").await;
        self.peer_id = j["peer_id"].as_str().expect("peer_id").to_string();
        self.resume = j["resume"].as_str().expect("resume").to_string();
        j
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.join_with(room, json!({})).await
    }

    /// Reads until the server's close frame and returns its code (`None`:
    /// the connection ended without one).
    pub async fn closed(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return None,
                Err(_) => panic!("{}: no close within {within:?}", self.label),
            }
        }
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        drop(self.ws.into_inner());
    }

    /// A clean close, as a browser does it: a close frame, then whatever the
    /// server still sends, up to its own close frame. Dropping the socket
    /// with unread data in it would reset the connection, and the server
    /// could lose the close frame and take the end for a drop.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

pub fn peer_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["peer_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `seen` holds a `ty` event (`peer-joined`, `peer-left`, ...)
/// about `peer`.
pub fn has_event(seen: &[Value], ty: &str, peer: &str) -> bool {
    seen.iter()
        .any(|v| v["type"] == ty && (v["peer_id"] == peer || v["peer"]["peer_id"] == peer))
}
