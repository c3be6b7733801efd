//! Real parts for the cluster tests: redis-server processes on free loopback
//! ports, signaling instances (in-process or as child processes), and a small
//! WebSocket client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use signaling_e2e::client::{Client, WAIT, http_get, peer_ids};
pub use signaling_e2e::redis::{Redis, free_port};
pub use signaling_e2e::server::api_room;

/// An in-process instance of the cluster.
pub struct Node {
    pub addr: std::net::SocketAddr,
    server: signaling_e2e::server::TestServer,
}

impl Node {
    pub async fn start(redis: &str, id: &str, tweak: impl FnOnce(&mut signaling::Config)) -> Node {
        let (redis, id) = (redis.to_string(), id.to_string());
        let server = signaling_e2e::server::TestServer::start(move |c| {
            c.redis_url = Some(redis);
            c.node_id = Some(id);
            tweak(c);
        })
        .await;
        let node = Node {
            addr: server.addr,
            server,
        };
        node.wait_ready().await;
        node
    }

    pub fn ws(&self) -> String {
        self.server.ws()
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while http_get(self.addr, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "node {} never ready", self.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
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
