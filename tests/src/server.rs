//! A real server in the test process, on a free loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{Client, http_get};

/// A config tweak that makes an instance node `id` of the cluster on `redis_url`.
pub fn clustered(redis_url: String, id: &str) -> impl FnOnce(&mut signaling::Config) {
    let id = id.to_string();
    move |c| {
        c.redis_url = Some(redis_url);
        c.node_id = Some(id);
    }
}

/// Waits until `/api/rooms/{room}` on `addr` mentions `needle` (a peer id or
/// name): a join on another instance reaches Redis just after its reply.
pub async fn wait_listed(addr: SocketAddr, room: &str, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !http_get(addr, &format!("/api/rooms/{room}"))
        .await
        .1
        .contains(needle)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} never listed in {room} on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: signaling::ShutdownHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Defaults, a 1 s drain, then whatever `tweak` changes.
    pub async fn start(tweak: impl FnOnce(&mut signaling::Config)) -> TestServer {
        let mut cfg = signaling::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        tweak(&mut cfg);
        let server = signaling::bind(cfg).await.expect("bind");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let task = tokio::spawn(server.serve());
        TestServer { addr, handle, task }
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self, label: &str) -> Client {
        Client::connect(&self.ws(), label).await
    }

    /// The value of the first `/metrics` line starting with `line_start`.
    pub async fn metric(&self, line_start: &str) -> u64 {
        let (_, body) = http_get(self.addr, "/metrics").await;
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Shuts down (drain included) and waits for the server to stop.
    pub async fn stop(self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}
