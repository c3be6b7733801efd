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

/// Asserts docs/protocol.md §7.1, §10, §12.1, §14.
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

/// Asserts docs/protocol.md §12.1.
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

/// Asserts docs/protocol.md §12.1.
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

/// A self-signed certificate for the loopback addresses in a new folder,
/// by the shipped `scripts/make-cert`; (dir, cert, key).
fn make_cert(label: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "sig-proc-cert-{label}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/make-cert"))
        .arg(&dir)
        .output()
        .expect("scripts/make-cert runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.clone(), dir.join("cert.pem"), dir.join("key.pem"))
}

/// The binary's exit status and output when it is expected not to start.
fn refused(args: &[&std::ffi::OsStr], env: &[(&str, &std::ffi::OsStr)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signaling"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("SIGNALING_TLS_CERT")
        .env_remove("SIGNALING_TLS_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // A server that did start would never exit: give it a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text.to_string())
}

#[test]
fn tls_needs_both_flags_and_a_readable_matching_pair() {
    let (dir, cert, key) = make_cert("flags");
    let (other_dir, _, other_key) = make_cert("flags-other");
    let os = |p: &std::path::Path| p.as_os_str().to_owned();
    let (cert, key, other_key) = (os(&cert), os(&key), os(&other_key));
    let flag = |f: &str| std::ffi::OsString::from(f);

    let (code, text) = refused(&[&flag("--tls-cert"), &cert], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--tls-key"), "{text}");
    let (code, text) = refused(&[], &[("SIGNALING_TLS_KEY", &key)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--tls-cert"), "{text}");

    let missing = dir.join("missing.pem").into_os_string();
    let (code, text) = refused(
        &[&flag("--tls-cert"), &missing, &flag("--tls-key"), &key],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("cannot read certificate file") && text.contains("missing.pem"),
        "{text}"
    );
    let (code, text) = refused(
        &[&flag("--tls-cert"), &cert, &flag("--tls-key"), &missing],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot read key file"), "{text}");

    // The certificate where the key belongs and the other way round.
    let (code, text) = refused(&[&flag("--tls-cert"), &key, &flag("--tls-key"), &key], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no certificate"), "{text}");
    let (code, text) = refused(
        &[&flag("--tls-cert"), &cert, &flag("--tls-key"), &cert],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no private key"), "{text}");
    let (code, text) = refused(
        &[&flag("--tls-cert"), &cert, &flag("--tls-key"), &other_key],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("does not match the certificate"), "{text}");

    let help = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for documented in [
        "--tls-cert",
        "SIGNALING_TLS_CERT",
        "--tls-key",
        "SIGNALING_TLS_KEY",
        "--tls-reload-interval",
    ] {
        assert!(help.contains(documented), "--help lacks {documented}");
    }
    for d in [dir, other_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The DER certificate a new TLS handshake with `addr` is shown.
async fn presented_cert(addr: &str, trust_pem: &[u8]) -> Vec<u8> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(trust_pem) {
        roots.add(der.expect("PEM")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(rustls::pki_types::ServerName::from(addr.ip()), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

#[tokio::test]
async fn tls_logs_https_and_a_broken_renewal_keeps_the_old_certificate() {
    let (dir, cert, key) = make_cert("renew");
    let pem = std::fs::read(&cert).expect("cert");
    let der = {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(&pem).expect("PEM").to_vec()
    };
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());

    // The listening line names the https and wss addresses.
    let mut child = Command::new(env!("CARGO_BIN_EXE_signaling"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--tls-cert", &cert_s, "--tls-key", &key_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("\"addr\""))
        .expect("a listening line");
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(&line).expect("json");
    let addr = v["fields"]["addr"].as_str().expect("addr");
    assert_eq!(v["fields"]["url"], format!("https://{addr}/"), "{line}");
    assert_eq!(
        v["fields"]["websocket"],
        format!("wss://{addr}/ws"),
        "{line}"
    );

    let mut srv = start(&[
        "--tls-cert",
        &cert_s,
        "--tls-key",
        &key_s,
        "--tls-reload-interval",
        "200ms",
    ]);
    assert_eq!(presented_cert(&srv.addr, &pem).await, der);
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        let l = srv
            .logs
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a log line for the broken key within 5 s");
        if l.contains("TLS certificate reload failed") {
            break l;
        }
    };
    let v: Value = serde_json::from_str(&refusal).expect("json");
    assert_eq!(v["level"], "ERROR", "{refusal}");
    assert!(
        v["fields"]["error"].as_str().unwrap_or("").contains(&key_s),
        "the error names the file: {refusal}"
    );
    // Reported once, not on every poll.
    std::thread::sleep(Duration::from_millis(1000));
    let again: Vec<String> = srv
        .logs
        .try_iter()
        .filter(|l| l.contains("reload failed"))
        .collect();
    assert!(again.is_empty(), "the same refusal logged again: {again:?}");
    // The old certificate is still served.
    assert_eq!(presented_cert(&srv.addr, &pem).await, der);
    assert_eq!(
        tokio::task::spawn_blocking({
            let a = srv.addr.clone();
            move || http_status(&a, "/healthz")
        })
        .await
        .expect("task"),
        400,
        "plain HTTP on the TLS port gets 400"
    );
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
