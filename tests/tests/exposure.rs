//! What a server exposed to the open internet refuses before a session
//! starts, against a real server: cross-site pages (Origin), one address
//! taking every connection slot or flooding joins (per-IP limits, with
//! `X-Forwarded-For` believed only from trusted proxies), and the security
//! headers of the call page. Also secrets read from files.

use serde_json::json;
use signaling_e2e::client::http_get;
use signaling_e2e::server::TestServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ATTACKER: &str = "127.0.0.3";

/// A socket bound to `ip` (a loopback address), to connect from.
fn from(ip: &str) -> tokio::net::TcpSocket {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind");
    s
}

/// Opens `/ws` with extra headers; the HTTP status of the handshake (101 on
/// success) and the socket, if it upgraded.
async fn open(
    server: &TestServer,
    headers: &[(&'static str, &str)],
) -> (
    u16,
    Option<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
) {
    let mut req = server.ws().into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).expect("header value"));
    }
    // From 127.0.0.3: the host itself (127.0.0.1) is exempt from the
    // per-address limits.
    let tcp = from(ATTACKER).connect(server.addr).await.expect("connect");
    match tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await
    {
        Ok((ws, resp)) => (resp.status().as_u16(), Some(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(e) => panic!("handshake failed without a status: {e}"),
    }
}

/// Asserts docs/protocol.md §1.
#[tokio::test]
async fn cross_site_pages_are_refused_before_the_upgrade() {
    let server = TestServer::start(|_| {}).await;
    let host = server.addr.to_string();
    // Non-browser clients send no Origin.
    assert_eq!(open(&server, &[]).await.0, 101);
    // The server's own page.
    let own = format!("http://{host}");
    assert_eq!(open(&server, &[("origin", &own)]).await.0, 101);
    // Someone else's page.
    assert_eq!(
        open(&server, &[("origin", "https://evil.example")]).await.0,
        403
    );
    assert_eq!(open(&server, &[("origin", "null")]).await.0, 403);
    server.stop().await;

    let listed =
        TestServer::start(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    assert_eq!(
        open(&listed, &[("origin", "https://app.example")]).await.0,
        101
    );
    assert_eq!(
        open(&listed, &[("origin", "https://evil.example")]).await.0,
        403
    );
    listed.stop().await;

    let any = TestServer::start(|c| c.allowed_origins = vec!["*".into()]).await;
    assert_eq!(
        open(&any, &[("origin", "https://evil.example")]).await.0,
        101
    );
    any.stop().await;
}

/// Asserts docs/protocol.md §1.
#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = TestServer::start(|c| c.limits.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, ws) = open(&server, &[]).await;
        assert_eq!(status, 101);
        held.push(ws);
    }
    assert_eq!(
        open(&server, &[]).await.0,
        429,
        "the fourth from one address"
    );
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    assert_eq!(
        open(&server, &[("x-forwarded-for", "203.0.113.9")]).await.0,
        429
    );
    // A slot comes back when its connection ends.
    held.pop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, ws) = open(&server, &[]).await;
        if status == 101 {
            held.push(ws);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Asserts docs/protocol.md §1.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_cap() {
    let server = TestServer::start(|c| {
        c.limits.max_connections_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let mut held = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2"] {
        for _ in 0..2 {
            let (status, ws) = open(&server, &[("x-forwarded-for", client)]).await;
            assert_eq!(status, 101, "{client}");
            held.push(ws);
        }
        assert_eq!(
            open(&server, &[("x-forwarded-for", client)]).await.0,
            429,
            "{client}'s third"
        );
    }
    // A client that puts a fake address in front: the proxy's rightmost
    // entry is what counts.
    assert_eq!(
        open(&server, &[("x-forwarded-for", "198.51.100.7, 203.0.113.1")])
            .await
            .0,
        429
    );
    server.stop().await;
}

/// Asserts docs/protocol.md §2.2, §6.
#[tokio::test]
async fn joins_are_rate_limited_per_address_across_connections() {
    let server = TestServer::start(|c| {
        c.limits.join_rate_per_ip = 0.5;
        c.limits.join_burst_per_ip = 4.0;
    })
    .await;
    let mut refused = 0;
    let mut joined = 0;
    // Each connection joins once and leaves: only the per-address budget
    // can stop this.
    for i in 0..8 {
        use futures_util::{SinkExt, StreamExt};
        let (_, ws) = open(&server, &[]).await;
        let mut ws = ws.expect("upgraded");
        let join = json!({"type": "join", "id": i, "room": format!("r{i}")});
        ws.send(join.to_string().into()).await.expect("send");
        let reply = loop {
            let m = tokio::time::timeout(signaling_e2e::client::WAIT, ws.next())
                .await
                .expect("a reply")
                .expect("open")
                .expect("frame");
            if let Ok(text) = m.to_text() {
                if !text.is_empty() {
                    break serde_json::from_str::<serde_json::Value>(text).expect("json");
                }
            }
        };
        match reply["type"].as_str() {
            Some("joined") => joined += 1,
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited", "{reply}");
                assert_eq!(reply["ref"], i, "{reply}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}: {reply}"),
        }
    }
    assert_eq!(joined, 4, "the burst");
    assert_eq!(refused, 4);
    server.stop().await;
}

/// Asserts docs/protocol.md §14.
#[tokio::test]
async fn the_call_page_carries_security_headers() {
    let server = TestServer::start(|_| {}).await;
    for path in ["/", "/index.html", "/app.js"] {
        let (status, text) = raw_get(server.addr, path).await;
        assert_eq!(status, 200, "{path}");
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        for needed in signaling_e2e::server::PAGE_SECURITY_HEADERS {
            assert!(head.contains(needed), "{path} lacks {needed}:\n{head}");
        }
    }
    server.stop().await;
}

/// A GET whose whole response, headers included, comes back.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(signaling_e2e::client::WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A join token signed with `secret`: `claims` and an `exp` a minute away.
fn join_token(secret: &str, mut claims: serde_json::Value) -> String {
    claims["exp"] = json!(signaling::auth::now_unix() + 60);
    signaling::auth::Auth::new(secret).sign(&claims)
}

/// Asserts docs/protocol.md §12.1, §12.2.
#[tokio::test]
async fn secrets_are_read_from_files() {
    let dir = std::env::temp_dir().join(format!("sig-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("auth");
    let secret = "a-secret-kept-in-a-file-of-its-own-0123456789";
    std::fs::write(&file, format!("{secret}\n")).expect("write");
    let server = TestServer::start(|c| c.auth_secret_file = Some(file.clone())).await;
    let token = join_token(secret, json!({"room": "filed"}));
    let mut c = server.client("c").await;
    c.send(json!({"type": "join", "room": "filed", "token": token}))
        .await;
    c.expect("joined").await;
    let mut wrong = server.client("wrong").await;
    let bad = join_token("another-secret-entirely", json!({"room": "filed"}));
    wrong
        .send(json!({"type": "join", "room": "filed", "token": bad}))
        .await;
    let e = wrong.expect("error").await;
    assert_eq!(e["code"], "unauthorized");
    let (status, _) = http_get(server.addr, "/api/rooms").await;
    assert_eq!(
        status, 401,
        "/api needs an admin token once the file sets a secret"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token's `sub` names the peer when the join gives no `name`, held to the
/// rule for names: control characters go, and it is cut to 64 characters.
/// Asserts docs/protocol.md §4.1, §12.1.
#[tokio::test]
async fn a_tokens_sub_becomes_a_valid_name() {
    let secret = "a-secret-of-well-over-thirty-two-bytes-0123";
    let server = TestServer::start(|c| c.auth_secret = Some(secret.into())).await;
    let sub = format!("ada\n{}", "x".repeat(100));
    let token = join_token(secret, json!({"sub": sub, "room": "subs"}));
    let mut c = server.client("c").await;
    c.send(json!({"type": "join", "room": "subs", "token": token}))
        .await;
    c.expect("joined").await;
    let token = join_token(secret, json!({"sub": "bo", "room": "subs"}));
    let mut d = server.client("d").await;
    d.send(json!({"type": "join", "room": "subs", "token": token}))
        .await;
    let j = d.expect("joined").await;
    assert_eq!(
        j["peers"][0]["name"],
        format!("ada{}", "x".repeat(61)),
        "{j}"
    );
    server.stop().await;
}

/// Reads until the server closes `s` (or `within` passes): whether it did.
async fn closed_by_server(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Asserts docs/protocol.md §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_sockets_cannot_starve_the_server() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(|c| {
        c.limits.max_http_connections_per_ip = 8;
        c.limits.max_http_connections = 64;
        c.limits.http_header_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    // One address opens 40 sockets: half silent, half sending headers a
    // byte at a time and never finishing them.
    let mut socks = Vec::new();
    for i in 0..40 {
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").await;
        }
        socks.push(s);
    }
    // Another client (another loopback address) is still served at once.
    let other = tokio::net::TcpSocket::new_v4().expect("socket");
    other
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let mut o = other
        .connect(server.addr)
        .await
        .expect("connect from 127.0.0.2");
    o.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(signaling_e2e::client::WAIT, {
        use tokio::io::AsyncReadExt;
        o.read_to_end(&mut reply)
    })
    .await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "/healthz from another address: {:?}",
        String::from_utf8_lossy(&reply)
    );
    // Every one of the 40 is closed by the server: those over the
    // per-address cap at once, the rest at the header deadline.
    let mut open_after = Vec::new();
    for (i, s) in socks.iter_mut().enumerate() {
        if !closed_by_server(s, std::time::Duration::from_secs(5)).await {
            open_after.push(i);
        }
    }
    assert!(
        open_after.is_empty(),
        "sockets the server never closed: {open_after:?}"
    );
    // And the address may connect again afterwards.
    let mut again = from(ATTACKER).connect(server.addr).await.expect("connect");
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(signaling_e2e::client::WAIT, {
        use tokio::io::AsyncReadExt;
        again.read_to_end(&mut reply)
    })
    .await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    server.stop().await;
}
