//! A real server in the test process, on a free loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{Client, WAIT, http_get};

/// A config tweak that makes an instance node `id` of the cluster on `redis_url`.
pub fn clustered(redis_url: String, id: &str) -> impl FnOnce(&mut signaling::Config) {
    let id = id.to_string();
    move |c| {
        c.redis_url = Some(redis_url);
        c.node_id = Some(id);
    }
}

/// What every response carrying the call page must say (lower-cased, as
/// found in a lower-cased response head).
pub const PAGE_SECURITY_HEADERS: &[&str] = &[
    "content-security-policy: default-src 'self'; script-src 'self';",
    "frame-ancestors 'none'",
    "x-content-type-options: nosniff",
    "referrer-policy: no-referrer",
    "permissions-policy: camera=(self), microphone=(self)",
    "x-frame-options: deny",
];

/// The peer ids `/api/rooms/{room}` on `addr` lists, sorted (empty on 404).
pub async fn api_room(addr: SocketAddr, room: &str) -> Vec<String> {
    let (status, body) = http_get(addr, &format!("/api/rooms/{room}")).await;
    if status != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    let mut ids = crate::client::peer_ids(&v["peers"]);
    ids.sort();
    ids
}

/// Waits until `/api/rooms/{room}` on `addr` lists exactly `want` (sorted
/// peer ids, as [`api_room`] gives them), within [`WAIT`].
pub async fn wait_api_room(addr: SocketAddr, room: &str, want: &[String]) {
    let deadline = std::time::Instant::now() + WAIT;
    while api_room(addr, room).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{room} on {addr} never listed {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    /// Where `/metrics` is served: `addr`, or the `--metrics-listen` one.
    pub metrics: SocketAddr,
    pub handle: signaling::ShutdownHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The runtime it runs on, when it has one of its own
    /// ([`start_alone`](Self::start_alone)): dropping it is a kill.
    runtime: Option<tokio::runtime::Runtime>,
    killed: bool,
}

/// Which engine an instance started by [`TestServer::start_alone`] joins
/// its cluster through.
#[derive(Clone)]
pub enum Engine {
    /// The one `--redis-url` names (or none: a node on its own).
    FromConfig,
    /// A cluster held in the test process ([`signaling::bus::linked`]).
    Linked(signaling::bus::linked::LinkedCluster),
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
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
        let metrics = server.metrics_addr();
        let handle = server.shutdown_handle();
        let task = tokio::spawn(server.serve());
        TestServer {
            addr,
            metrics,
            handle,
            task,
            runtime: None,
            killed: false,
        }
    }

    /// Like [`start`](Self::start), on a runtime of its own, through
    /// `engine`: [`kill`](Self::kill) then ends it at once, every task and
    /// socket of it, as a killed process would end.
    pub async fn start_alone(
        tweak: impl FnOnce(&mut signaling::Config),
        engine: Engine,
    ) -> TestServer {
        let mut cfg = signaling::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        tweak(&mut cfg);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-node")
            .enable_all()
            .build()
            .expect("a runtime");
        let server = runtime
            .spawn(async move {
                match &engine {
                    Engine::FromConfig => signaling::bind(cfg).await,
                    Engine::Linked(cluster) => signaling::bind_linked(cfg, cluster).await,
                }
            })
            .await
            .expect("bind runs")
            .expect("bind");
        let addr = server.local_addr();
        let metrics = server.metrics_addr();
        let handle = server.shutdown_handle();
        let task = runtime.spawn(server.serve());
        TestServer {
            addr,
            metrics,
            handle,
            task,
            runtime: Some(runtime),
            killed: false,
        }
    }

    /// Ends an instance started with [`start_alone`](Self::start_alone)
    /// at once: no drain, no goodbye; its sockets close, its cluster
    /// records stay behind until the others find it dead.
    pub fn kill(&mut self) {
        let rt = self
            .runtime
            .take()
            .expect("kill needs a server started alone");
        rt.shutdown_background();
        self.killed = true;
    }

    /// Waits up to `within` for it to stop serving by itself: what
    /// [`signaling::Server::serve`] returned, or `None` if it still serves.
    pub async fn ended(&mut self, within: Duration) -> Option<std::io::Result<()>> {
        match tokio::time::timeout(within, &mut self.task).await {
            Ok(Ok(result)) => Some(result),
            Ok(Err(join)) => panic!("the server task failed: {join}"),
            Err(_) => None,
        }
    }

    /// Whether [`kill`](Self::kill) ended it.
    pub fn is_killed(&self) -> bool {
        self.killed
    }

    /// An instance of the cluster on `redis_url` as node `id`, with
    /// `tweak` applied, once it is ready (connected to Redis; within 10 s,
    /// as [`ServerProcess::node`]).
    pub async fn node(
        redis_url: &str,
        id: &str,
        tweak: impl FnOnce(&mut signaling::Config),
    ) -> TestServer {
        let cluster = clustered(redis_url.to_string(), id);
        let server = TestServer::start(|c| {
            cluster(c);
            tweak(c);
        })
        .await;
        server.wait_ready_within(Duration::from_secs(10)).await;
        server
    }

    /// Waits until `/readyz` answers 200 (in a cluster: connected to Redis),
    /// within [`WAIT`].
    pub async fn wait_ready(&self) {
        self.wait_ready_within(WAIT).await;
    }

    /// Waits until `/readyz` answers 200, within `within` (longer after an
    /// outage: the reconnect backs off).
    pub async fn wait_ready_within(&self, within: Duration) {
        wait_readyz(self.addr, 200, within).await;
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self, label: &str) -> Client {
        Client::connect(&self.ws(), label).await
    }

    /// The value of the first `/metrics` line starting with `line_start`.
    pub async fn metric(&self, line_start: &str) -> u64 {
        let (_, body) = http_get(self.metrics, "/metrics").await;
        crate::metrics::value(&body, line_start).unwrap_or(0)
    }

    /// Waits until the first `/metrics` line starting with `line_start`
    /// reads `value` (within [`WAIT`]).
    pub async fn wait_metric(&self, line_start: &str, value: u64) {
        let deadline = std::time::Instant::now() + WAIT;
        while self.metric(line_start).await != value {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {line_start:?} never {value}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until it holds `n` peers for a resume (their connection's loss
    /// noticed): until then a relay to one of them would go to the dead
    /// connection.
    pub async fn wait_held(&self, n: u64) {
        self.wait_metric("signaling_peers_held ", n).await;
    }

    /// The whole `/metrics` exposition (the Prometheus text format).
    pub async fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics").await;
        assert_eq!(status, 200, "/metrics on {}: {body}", self.metrics);
        body
    }

    /// Shuts down (drain included) and waits for the server to stop.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
    }
}

/// The real `signaling` binary as a child process, for what only a process
/// of its own shows (its memory, say). Killed when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl ServerProcess {
    /// The binary: `$SIGNALING_BIN` if set (say another commit's build, to
    /// see a test fail without a fix), else built first (debug profile,
    /// `CARGO_TARGET_DIR` honoured).
    pub fn binary() -> std::path::PathBuf {
        if let Some(bin) = std::env::var_os("SIGNALING_BIN") {
            return bin.into();
        }
        let root = crate::workspace_root();
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "signaling", "--bin", "signaling"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the server failed");
        std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug/signaling")
    }

    /// Runs the binary to its end with `args` and `env` added (a
    /// subcommand, `--help`): its exit status and output.
    pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        std::process::Command::new(Self::binary())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("the server binary runs")
    }

    /// Starts it on a free loopback port with `args` and waits for `/healthz`.
    pub async fn start(args: &[&str]) -> ServerProcess {
        Self::start_with_env(args, &[]).await
    }

    /// As [`start`](Self::start), with `env` added to its environment (say
    /// `LD_PRELOAD` and `FAKETIME` for a shifted clock). Its log (stdout and
    /// stderr) is kept for [`log`](Self::log).
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let p = Self::spawn_with_env(args, env);
        p.wait_up().await;
        p
    }

    /// Starts it on a free loopback port with `args` without waiting for
    /// it: for one that plain HTTP cannot ask (on TLS, say), to be waited
    /// for with [`wait_logged`](Self::wait_logged).
    pub fn spawn(args: &[&str]) -> ServerProcess {
        Self::spawn_with_env(args, &[])
    }

    fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let port = crate::redis::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let listen = addr.to_string();
        let args: Vec<&str> = ["--listen", listen.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Self::spawn_at(addr, &args, env)
    }

    /// Starts it with `args` and `env` alone, which must make it listen on
    /// `addr` (a config file, `PORT`), and waits for `/healthz` there.
    pub async fn start_at(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let p = Self::spawn_at(addr, args, env);
        p.wait_up().await;
        p
    }

    fn spawn_at(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let log = std::env::temp_dir().join(format!(
            "sig-proc-{}-{}.log",
            std::process::id(),
            addr.port()
        ));
        let stdout = std::fs::File::create(&log).expect("a log file in the temp dir");
        let stderr = stdout.try_clone().expect("the log file, twice");
        let child = std::process::Command::new(Self::binary())
            .args(args)
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("the server starts");
        ServerProcess { addr, child, log }
    }

    /// Waits for `/healthz`.
    async fn wait_up(&self) {
        // Generous: a debug build starting on a loaded 2-core machine (the
        // suite runs test binaries side by side) once took over 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while http_get(self.addr, "/healthz").await.0 != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never up",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An instance of the cluster on `redis_url` as node `id` (with `extra`
    /// arguments), once it is connected to Redis.
    pub async fn node(redis_url: &str, id: &str, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--redis-url", redis_url, "--node-id", id];
        args.extend_from_slice(extra);
        let p = Self::start(&args).await;
        p.wait_ready(Duration::from_secs(10)).await;
        p
    }

    /// Waits until `/readyz` answers 200 (in a cluster: connected to Redis).
    pub async fn wait_ready(&self, within: Duration) {
        wait_readyz(self.addr, 200, within).await;
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a whole line of its log contains `needle`, within
    /// `within`; returns the first such line (without its line feed).
    pub async fn wait_logged(&self, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let log = self.log();
            let line = log
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .find(|l| l.contains(needle));
            if let Some(line) = line {
                return line.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never logged {needle:?} within {within:?}:\n{log}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its exit status if it exits within `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: a clean shutdown (`goaway` to every client, then a drain).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGKILL: gone without a goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Resident memory, from `/proc/<pid>/status` (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server runs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Waits until `/readyz` on `addr` answers `status` within `within`: 200
/// once ready (in a cluster: connected to Redis), 503 once an outage or a
/// drain shows.
pub async fn wait_readyz(addr: SocketAddr, status: u16, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while http_get(addr, "/readyz").await.0 != status {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz on {addr} never answered {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
