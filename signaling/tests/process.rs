//! The `signaling` binary as an operator runs it: flags, JSON logs that never
//! show secrets, tokens or SDP, and SIGTERM's drain ending in exit status 0.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "process-test-secret-0123456789";
const SDP_MARKER: &str = "a=x-process-test-marker";

struct Running {
    child: Child,
    addr: String,
    logs: mpsc::Receiver<String>,
}

fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the signaling binary starts");
    let (tx, logs) = mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let addr = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .expect("the server logs its address");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(a) = v["fields"]["addr"].as_str() {
            break a.to_string();
        }
    };
    Running { child, addr, logs }
}

fn http_status(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn connect(addr: &str, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws{query}"))
        .await
        .expect("ws connect");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("json");
        }
    }
}

async fn expect_type(ws: &mut Ws, ty: &str) -> Value {
    let v = next_json(ws).await;
    assert_eq!(v["type"], ty, "expected {ty}, got {v}");
    v
}

async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

fn sign(claims: Value) -> String {
    signaling::auth::Auth::new(SECRET).sign(&claims)
}

#[tokio::test]
async fn sigterm_drains_with_goaway_and_exits_zero() {
    let mut srv = start(&["--drain-timeout", "1500ms", "--auth-secret", SECRET]);
    let exp = signaling::auth::now_unix() + 600;
    let token = sign(json!({"sub":"alice","room":"drain","exp":exp}));
    let mut a = connect(&srv.addr, &format!("?token={token}")).await;
    a.send(Message::text(
        json!({"type":"join","room":"drain"}).to_string(),
    ))
    .await
    .expect("send");
    let joined = expect_type(&mut a, "joined").await;
    let mut b = connect(&srv.addr, "").await;
    let token_b = sign(json!({"sub":"bob","room":"*","exp":exp}));
    b.send(Message::text(
        json!({"type":"join","room":"drain","token":token_b}).to_string(),
    ))
    .await
    .expect("send");
    expect_type(&mut b, "joined").await;
    assert_eq!(
        expect_type(&mut a, "peer-joined").await["peer"]["name"],
        "bob"
    );
    b.send(Message::text(
        json!({"type":"offer","to":joined["peer_id"],"sdp":format!("v=0\r\n{SDP_MARKER}\r\n")})
            .to_string(),
    ))
    .await
    .expect("send");
    expect_type(&mut a, "offer").await;
    let mut idle = connect(&srv.addr, "").await;
    assert_eq!(http_status(&srv.addr, "/readyz"), 200);

    let pid = srv.child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());

    for ws in [&mut a, &mut b, &mut idle] {
        let g = expect_type(ws, "goaway").await;
        assert!(g["retry_after_ms"].as_u64().is_some(), "{g}");
    }
    assert_eq!(
        http_status(&srv.addr, "/readyz"),
        503,
        "readyz while draining"
    );
    assert_eq!(
        http_status(&srv.addr, "/healthz"),
        200,
        "liveness while draining"
    );
    // `a` leaves as told; the others stay and are closed with 1012 at the end.
    a.close(None).await.expect("close");
    assert_eq!(close_code(&mut b).await, Some(CloseCode::Restart));
    assert_eq!(close_code(&mut idle).await, Some(CloseCode::Restart));

    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = srv.child.try_wait().expect("wait") {
                return (s, srv.logs);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("wait task");
    assert!(status.0.success(), "exit status {:?}", status.0);

    let logs: Vec<String> = status.1.try_iter().collect();
    let all = logs.join("\n");
    assert!(all.contains("peer joined"), "join lines are logged:\n{all}");
    assert!(
        all.contains("\"room\":\"drain\""),
        "with their room:\n{all}"
    );
    for secret in [SECRET, token.as_str(), token_b.as_str(), SDP_MARKER] {
        assert!(!all.contains(secret), "the logs leak {secret:?}");
    }
}

#[test]
fn a_malformed_redis_url_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .args(["--listen", "127.0.0.1:0", "--redis-url", "not a url"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("invalid --redis-url"), "{text}");
}

#[test]
fn help_documents_every_flag_and_its_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--redis-url",
        "--node-id",
        "--grace",
        "--drain-timeout",
        "--log-format",
        "--auth-secret",
        "--max-room-len",
        "--max-frame-bytes",
        "--max-data-bytes",
        "--max-meta-bytes",
        "--rate",
        "--rate-burst",
        "--max-room-peers",
        "--join-deadline",
        "--heartbeat-timeout",
        "--outbox-frames",
        "--resume-queue",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(
        help.contains("SIGNALING_LISTEN"),
        "--help names the env variables"
    );
}

#[test]
fn token_prints_an_invite_link_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .args(["token", "--room", "standup", "--name", "Ada", "--ttl", "1h"])
        .args(["--url", "https://call.example/"])
        .env("SIGNALING_AUTH_SECRET", SECRET)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let token = lines.next().expect("the token").to_string();
    let link = lines.next().expect("the invite link");
    assert_eq!(
        link,
        format!("https://call.example/?room=standup#token={token}")
    );
    let claims = signaling::auth::Auth::new(SECRET)
        .verify_join(&token, "standup", signaling::auth::now_unix())
        .expect("a valid join token for the room");
    assert_eq!(claims.sub.as_deref(), Some("Ada"));
    let ttl = claims.exp - signaling::auth::now_unix();
    assert!((3500..=3600).contains(&ttl), "exp {ttl} s away");
    assert!(
        signaling::auth::Auth::new(SECRET)
            .verify_join(&token, "another-room", signaling::auth::now_unix())
            .is_err()
    );

    // Without a secret it says what is missing.
    let out = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .args(["token", "--room", "standup"])
        .env_remove("SIGNALING_AUTH_SECRET")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no auth secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_says_so_and_the_redis_password_never_shows() {
    let url = "redis://:hunter2-redis-password@127.0.0.1:1/";
    let help = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .arg("--help")
        .env("SIGNALING_REDIS_URL", url)
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--redis-url"));
    assert!(!help.contains("hunter2"), "--help shows the Redis password");

    let mut server = start(&["--redis-url", url]);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Ok(l) = server.logs.recv_timeout(Duration::from_millis(100)) {
            seen.push(l);
        }
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    while let Ok(l) = server.logs.try_recv() {
        seen.push(l);
    }
    let all = seen.join("\n");
    assert!(
        all.contains("OPEN MODE"),
        "no open-mode warning at start:\n{all}"
    );
    assert!(
        !all.contains("hunter2"),
        "a log shows the Redis password:\n{all}"
    );
}
