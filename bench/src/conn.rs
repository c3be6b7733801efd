//! Cheap connections for the scenarios that open thousands of them: one task
//! each, owning a WebSocket stream with small buffers, bound to one of
//! several loopback source addresses so the ephemeral ports do not run out.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::client::Error;

pub type Ws = WebSocketStream<TcpStream>;

/// Connections per source address: well under the ~28k ephemeral ports
/// Linux has by default for each.
const PER_SOURCE: usize = 20_000;
/// How long connecting, or a reply to a request, may take.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a clean close may take before the socket is just dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The server's frames are small (no relay here): 4 KiB chunks, not
/// tungstenite's default 128 KiB, which it allocates for every connection.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// The `host:port` (or `host`) part of a `ws://` URL.
pub fn authority(url: &str) -> Option<&str> {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next())
}

/// Where the connections go, and the source addresses they come from.
pub struct Target {
    url: String,
    addr: SocketAddr,
    sources: Vec<IpAddr>,
}

impl Target {
    /// Resolves `url` (loopback, already checked) and picks
    /// ceil(`connections` / 20,000) sources 127.0.0.1, 127.0.0.2, ... for an
    /// IPv4 target; an IPv6 one (`[::1]`) has a single source.
    pub async fn resolve(url: &str, connections: usize) -> Result<Target, Error> {
        let authority = authority(url).ok_or_else(|| format!("{url}: not a ws:// URL"))?;
        let default_port = if url.starts_with("wss://") { 443 } else { 80 };
        let host_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port.as_str())
            .await
            .map_err(|e| format!("resolve {host_port}: {e}"))?
            .collect();
        // IPv4 first: only it has many loopback source addresses.
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{host_port} resolves to nothing"))?;
        let sources = match addr.ip() {
            IpAddr::V4(_) => {
                let k = connections.div_ceil(PER_SOURCE).clamp(1, 254);
                (1..=k as u8)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                    .collect()
            }
            IpAddr::V6(ip) => vec![IpAddr::V6(ip)],
        };
        Ok(Target {
            url: url.to_string(),
            addr,
            sources,
        })
    }

    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Opens connection number `i` (it picks the source) and completes the
    /// WebSocket handshake.
    pub async fn open(&self, i: usize) -> Result<Ws, Error> {
        let source = self.sources[i % self.sources.len()];
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        // Best effort: without it only bind() is slower.
        let _ = port_at_connect(&socket);
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let opening = async {
            let tcp = socket
                .connect(self.addr)
                .await
                .map_err(|e| format!("connect {} from {source}: {e}", self.addr))?;
            tcp.set_nodelay(true)
                .map_err(|e| format!("set_nodelay: {e}"))?;
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                self.url.as_str(),
                tcp,
                Some(ws_config()),
            )
            .await
            .map_err(|e| format!("handshake {}: {e}", self.url))?;
            Ok(ws)
        };
        tokio::time::timeout(PATIENCE, opening)
            .await
            .map_err(|_| format!("connect {}: no answer within {PATIENCE:?}", self.url))?
    }
}

/// Sets IP_BIND_ADDRESS_NO_PORT: `bind(127.0.0.k:0)` then picks no port, and
/// `connect` picks one unique for the 4-tuple. Otherwise each bind hunts for
/// a port no socket holds at all, which grows slow (kernel time) past the
/// first ~14,000 connections of a source.
#[cfg(target_os = "linux")]
fn port_at_connect(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int that lives
    // through the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn port_at_connect(_socket: &TcpSocket) -> std::io::Result<()> {
    Ok(())
}

/// Sends `request` and reads until a text frame of type `want` arrives, which
/// it returns parsed; an `error` fails it. Frames of other types (presence
/// events) are skipped.
pub async fn request(ws: &mut Ws, request: &str, want: &str) -> Result<Value, Error> {
    ws.send(Message::text(request))
        .await
        .map_err(|e| format!("send: {e}"))?;
    read_until(ws, want).await
}

/// Reads until a text frame of type `want`; see [`request`].
async fn read_until(ws: &mut Ws, want: &str) -> Result<Value, Error> {
    let reading = async {
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(c))) => {
                    return Err(format!(
                        "closed by the server while waiting for {want}: {c:?}"
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err(format!("connection ended while waiting for {want}")),
            };
            let v: Value = serde_json::from_str(text.as_str())
                .map_err(|e| format!("not JSON from the server ({e}): {text}"))?;
            match v.get("type").and_then(Value::as_str) {
                Some(t) if t == want => return Ok(v),
                Some("error") => return Err(format!("refused: {v}")),
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .map_err(|_| format!("no {want} within {PATIENCE:?}"))?
}

/// `{"type":"join","room":...}`.
pub fn join_request(room: &str) -> String {
    serde_json::json!({"type": "join", "room": room}).to_string()
}

/// How a parked connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Parked {
    /// `stop` fired and it was closed cleanly.
    Stopped,
    /// The server closed or dropped it first.
    Lost(String),
}

/// Keeps `ws` open until `stop`: reads (and discards) whatever arrives, which
/// is also what makes tungstenite answer the server's pings, the only
/// keepalive protocol v1 needs. Then closes it with a close frame, so the
/// server announces `disconnected` at once rather than holding a grace.
pub async fn park(mut ws: Ws, stop: CancellationToken) -> Parked {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(c))) => {
                    return Parked::Lost(format!("closed by the server: {c:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Parked::Lost(format!("read: {e}")),
                None => return Parked::Lost("connection ended".into()),
            },
        }
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(None).await.is_ok() {
            // Wait for the server's close frame, so it sees a clean close.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    Parked::Stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_spread_over_loopback_sources() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let server = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..3 {
                let (tcp, from) = listener.accept().await.expect("accept");
                peers.push(from.ip());
                let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
                ws.send(Message::text(r#"{"type":"joined","peer_id":"p"}"#))
                    .await
                    .expect("send");
                tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
            }
            peers
        });
        let url = format!("ws://127.0.0.1:{port}/ws");
        let target = Target::resolve(&url, 45_000).await.expect("resolve");
        assert_eq!(target.sources(), 3);
        let mut open = Vec::new();
        for i in 0..3 {
            let mut ws = target.open(i).await.expect("open");
            let joined = request(&mut ws, &join_request("r"), "joined")
                .await
                .expect("joined");
            assert_eq!(joined["peer_id"], "p");
            open.push(ws);
        }
        let peers = server.await.expect("server");
        let want: Vec<IpAddr> = (1..=3)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect();
        assert_eq!(peers, want);
    }
}
