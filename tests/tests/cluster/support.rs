//! Real parts for the cluster tests: redis-server processes on free loopback
//! ports, signaling instances (in-process or as child processes), and a small
//! WebSocket client.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A redis-server of our own, killable and restartable on the same port.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sig-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut r = Redis {
            port,
            dir,
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (after `kill`), on the same port, empty.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: an outage with no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command over a raw connection; the first reply line.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An in-process instance.
pub struct Node {
    pub addr: std::net::SocketAddr,
    handle: signaling::ShutdownHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    pub async fn start(redis: &str, id: &str, tweak: impl FnOnce(&mut signaling::Config)) -> Node {
        let mut cfg = signaling::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            redis_url: Some(redis.to_string()),
            node_id: Some(id.to_string()),
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        tweak(&mut cfg);
        let server = signaling::bind(cfg).await.expect("bind");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let task = tokio::spawn(server.serve());
        let node = Node { addr, handle, task };
        node.wait_ready().await;
        node
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while http_get(self.addr, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "node {} never ready", self.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// The `signaling` binary, built if needed.
pub fn server_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "signaling", "--bin", "signaling"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the server failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/signaling")
}

/// An instance as a child process, for SIGKILL.
pub struct Proc {
    pub addr: String,
    child: Child,
}

impl Proc {
    pub fn start(bin: &Path, redis: &str, id: &str, extra: &[&str]) -> Proc {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["--listen", &addr, "--redis-url", redis, "--node-id", id])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        Proc { addr, child }
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn wait_ready(&self) {
        let addr = self.addr.parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(addr, "/readyz").await.0 != 200 {
            assert!(
                Instant::now() < deadline,
                "process {} never ready",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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

    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(within, self.ws.next()).await {
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

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        drop(self.ws.into_inner());
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
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

/// Room API view of a node: the peer ids it lists (empty on 404).
pub async fn api_room(addr: std::net::SocketAddr, room: &str) -> Vec<String> {
    let (status, body) = http_get(addr, &format!("/api/rooms/{room}")).await;
    if status != 200 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut ids = peer_ids(&v["peers"]);
    ids.sort();
    ids
}
