//! The shipped nginx front (deploy/nginx.conf) run by the real nginx (Debian
//! `nginx`) in front of two real signaling nodes clustered through a real
//! redis-server, all on loopback. What the test changes in the file, and
//! why (Debian 12's nginx 1.22 has no `resolve` on upstream servers), is
//! listed in tests/src/nginx.rs. The nodes run as compose runs them: joins
//! need a token signed with the auth secret, and nginx's address is their
//! only trusted proxy.

use serde_json::{Value, json};
use signaling_e2e::client::{Client, http_get, http_get_with};
use signaling_e2e::nginx::{Nginx, Response};
use signaling_e2e::redis::Redis;
use signaling_e2e::server::{TestServer, clustered};
use signaling_e2e::tls::TestCert;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::Connector;

/// Every header the front must put on each HTTPS response, with its value:
/// the same policy as the server's own (which the browser tests check
/// against a real page), and HSTS.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", signaling::http::CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", signaling::http::PERMISSIONS_POLICY),
    ("x-frame-options", "DENY"),
    ("strict-transport-security", "max-age=31536000"),
];

/// The nodes' SIGNALING_AUTH_SECRET (compose refuses to start without one).
const SECRET: &str = "nginx-front-test-auth-secret-0123456789abcdef";

struct Front {
    nginx: Nginx,
    nodes: [TestServer; 2],
    cert: TestCert,
    _redis: Redis,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cert.dir);
    }
}

/// Two clustered nodes configured like compose's (auth on, nginx's address
/// trusted for X-Forwarded-For, `/metrics` on a listener of its own that
/// nginx is not told of), node `i` tweaked by `tweak(i, config)`,
/// and the shipped front before them.
async fn front(label: &str, tweak: impl Fn(usize, &mut signaling::Config)) -> Front {
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for (i, id) in ["node-a", "node-b"].into_iter().enumerate() {
        nodes.push(
            TestServer::start(|c| {
                clustered(redis.url(), id)(c);
                c.auth_secret = Some(SECRET.into());
                c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
                c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
                tweak(i, c);
            })
            .await,
        );
    }
    let cert = TestCert::new(label);
    let [a, b]: [TestServer; 2] = nodes.try_into().ok().expect("two nodes");
    let nginx = Nginx::start(&[a.addr, b.addr], &cert);
    Front {
        nginx,
        nodes: [a, b],
        cert,
        _redis: redis,
    }
}

/// A join token for `room`, valid for a minute.
fn token(room: &str) -> String {
    signaling::auth::Auth::new(SECRET).sign(&json!({
        "room": room,
        "exp": signaling::auth::now_unix() + 60,
    }))
}

fn admin_token() -> String {
    signaling::auth::Auth::new(SECRET).sign(&json!({
        "admin": true,
        "exp": signaling::auth::now_unix() + 60,
    }))
}

impl Front {
    /// A wss client through the front that has joined `room`.
    async fn joined(&self, room: &str, label: &str) -> Client {
        let mut c = Client::connect_tls(&self.nginx.wss(), &self.cert, label).await;
        c.join_with(room, json!({"token": token(room), "name": label}))
            .await;
        c
    }

    /// Each node's own count of open WebSockets, read from the node itself
    /// (not through the front).
    async fn connections(&self) -> [u64; 2] {
        [
            self.nodes[0].metric("signaling_connections_open ").await,
            self.nodes[1].metric("signaling_connections_open ").await,
        ]
    }

    /// Waits until the nodes together hold `total` WebSockets; returns the
    /// split.
    async fn wait_connections(&self, total: u64) -> [u64; 2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.connections().await;
            if c[0] + c[1] == total {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes never held {total} WebSockets: {c:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The next message of type `ty`, past presence news (`peer-joined`,
/// `peer-left`): across the cluster, a peer may hear of another that joined
/// on the other node just before, after its own `joined`.
async fn expect_past_presence(c: &mut Client, ty: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next(left).await {
            Some(v) if v["type"] == ty => return v,
            Some(v) if v["type"] == "peer-joined" || v["type"] == "peer-left" => continue,
            other => panic!("{}: expected {ty}, got {other:?}", c.label),
        }
    }
}

fn assert_security_headers(path: &str, r: &Response) {
    for (name, want) in SECURITY_HEADERS {
        let got = r.all(name);
        assert_eq!(
            got,
            [*want],
            "{path} (status {}): {name} must be sent once, as {want:?}; headers: {:?}",
            r.status,
            r.headers
        );
    }
}

/// A TLS client that trusts `cert` and speaks only `versions`.
fn tls_config(
    cert: &TestCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(&cert.cert).expect("test certificate") {
        roots.add(der.expect("PEM")).expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Waits until the front's access logs mention `needle`: nginx writes a
/// WebSocket's line when its connection ends.
async fn wait_logged(n: &Nginx, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let logs = n.access_logs();
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "the access log never showed {needle:?}:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_location_sends_the_security_headers() {
    let f = front("nginx-headers", |_, _| {}).await;
    let n = &f.nginx;
    // The static client, each of its files (with a type that nosniff lets
    // the browser use), a missing file, the proxied endpoints and the
    // refused ones: every location of the server block.
    for (path, status, content_type) in [
        ("/", 200, Some("text/html")),
        ("/index.html", 200, Some("text/html")),
        ("/app.js", 200, Some("application/javascript")),
        ("/style.css", 200, Some("text/css")),
        ("/no-such-file", 404, None),
        ("/healthz", 200, None),
        ("/readyz", 200, None),
        ("/api/rooms", 404, None),
        ("/metrics", 404, None),
    ] {
        let r = n.https_get(path, &[]).await;
        assert_eq!(r.status, status, "{path}: {r:?}");
        if let Some(ct) = content_type {
            assert!(
                r.header("content-type").is_some_and(|v| v.starts_with(ct)),
                "{path}: content-type {ct}: {:?}",
                r.header("content-type")
            );
        }
        assert_security_headers(path, &r);
    }
    // A WebSocket handshake's answer carries them too (/ws location), and
    // the node's own copies are hidden, not doubled.
    let (ws, answer) = tokio_tungstenite::connect_async_tls_with_config(
        n.wss(),
        None,
        false,
        Some(Connector::Rustls(n.tls.clone())),
    )
    .await
    .expect("wss through the front");
    let r = Response {
        status: answer.status().as_u16(),
        headers: answer
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::new(),
    };
    assert_eq!(r.status, 101, "/ws upgrade through the front: {r:?}");
    assert_security_headers("/ws", &r);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_metrics_are_not_served_publicly() {
    let f = front("nginx-private", |_, _| {}).await;
    let n = &f.nginx;
    // Something to list: a joined peer with a name.
    let mut c = f.nodes[0].client("lister").await;
    c.join_with(
        "private-room",
        json!({"name": "Alice Private", "token": token("private-room")}),
    )
    .await;
    // The node itself serves what the front must not (so the refusals below
    // mean something): its metrics on its metrics address (and not on the
    // address nginx proxies to), and its room list to an admin.
    let admin = format!("Bearer {}", admin_token());
    assert_ne!(f.nodes[0].metrics, f.nodes[0].addr);
    let direct = http_get(f.nodes[0].metrics, "/metrics").await;
    assert!(
        direct.0 == 200 && direct.1.contains("signaling_connections"),
        "the node serves /metrics on its metrics address: {direct:?}"
    );
    let main = http_get(f.nodes[0].addr, "/metrics").await;
    assert!(
        main.0 == 404 && !main.1.contains("signaling_connections"),
        "the node's proxied address serves no /metrics: {main:?}"
    );
    // (Polled: the cluster's room list shows a join once it reached Redis,
    // just after the join's reply.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let direct = http_get_with(
            f.nodes[0].addr,
            "/api/rooms/private-room",
            &[("Authorization", &admin)],
        )
        .await;
        if direct.0 == 200 && direct.1.contains("Alice Private") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node lists the room to an admin directly: {direct:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for path in [
        "/api/rooms",
        "/api/rooms/private-room",
        "/api",
        "/api/",
        "/metrics",
        // Spellings that nginx normalizes to the same paths.
        "/%61pi/rooms",
        "//api/rooms",
        "/./api/rooms/private-room",
        "/healthz/../api/rooms",
        "/ws/../metrics",
        "/%6detrics",
        // Spellings a node might read differently than nginx does: nginx
        // sends the node the path it matched, never this raw form.
        "/api/rooms/..%2F..%2Fhealthz",
        "/api/rooms/private-room%2F..%2F..%2F..%2Fhealthz",
    ] {
        // Even with the admin token: the front does not serve these at all.
        let r = n.https_get(path, &[("Authorization", &admin)]).await;
        // The %2F spellings are /healthz to nginx, and it sends the node
        // /healthz: a 200 there is the health answer, not the API's.
        if !path.contains("%2F") {
            assert_eq!(r.status, 404, "{path} through the front: {r:?}");
        }
        for leak in ["private-room", "Alice Private", "signaling_connections"] {
            assert!(
                !r.body.contains(leak),
                "{path}: the front's answer shows {leak:?}: {r:?}"
            );
        }
        // Plain HTTP only redirects, never proxies.
        let r = n.http_get(path, &[("Authorization", &admin)]).await;
        assert_eq!(r.status, 301, "http {path}: {r:?}");
        assert!(!r.body.contains("private-room"), "http {path}: {r:?}");
    }
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_certificate_and_http_redirects_to_https() {
    let f = front("nginx-tls", |_, _| {}).await;
    let n = &f.nginx;
    let r = n.https_get("/index.html", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("<html") || r.body.contains("<!doctype"),
        "{r:?}"
    );

    // The front serves the mounted certificate: trusting only it works
    // (above), trusting only another certificate does not.
    let other = TestCert::new("nginx-tls-other");
    let refused = n
        .get_with(Some(other.client_config()), n.https_port, "/", &[])
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("certificate") || e.contains("Certificate")),
        "another certificate's client must refuse the front: {refused:?}"
    );
    let _ = std::fs::remove_dir_all(&other.dir);
    // TLS 1.2 and 1.3 both work.
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let r = n
            .get_with(
                Some(tls_config(&f.cert, &[v])),
                n.https_port,
                "/healthz",
                &[],
            )
            .await;
        assert!(r.as_ref().is_ok_and(|r| r.status == 200), "{v:?}: {r:?}");
    }

    for path in ["/", "/index.html?room=r1", "/ws?token=abc", "/a/b%20c"] {
        let r = n.http_get(path, &[]).await;
        assert_eq!(r.status, 301, "http {path}: {r:?}");
        // $host has no port: in production HTTPS is on 443.
        assert_eq!(
            r.header("location"),
            Some(format!("https://127.0.0.1{path}").as_str()),
            "http {path} redirects to the same path on https: {r:?}"
        );
    }
}

/// A call set up through the front, over wss: two browsers-to-be join one
/// room (least-conn puts them on different nodes, so the relay crosses the
/// cluster) and an offer and its answer go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_the_front_joins_and_relays_an_offer() {
    let f = front("nginx-wss", |_, _| {}).await;
    let mut alice = f.joined("call", "alice").await;
    let mut bob = f.joined("call", "bob").await;
    expect_past_presence(&mut alice, "peer-joined").await;
    assert_eq!(
        f.wait_connections(2).await,
        [1, 1],
        "least-conn puts the second WebSocket on the other node"
    );
    alice
        .send(json!({"type": "offer", "to": bob.peer_id, "sdp": "v=0 alice's offer"}))
        .await;
    let offer = expect_past_presence(&mut bob, "offer").await;
    assert_eq!(offer["from"], Value::from(alice.peer_id.clone()), "{offer}");
    assert_eq!(offer["sdp"], "v=0 alice's offer", "{offer}");
    bob.send(json!({"type": "answer", "to": alice.peer_id, "sdp": "v=0 bob's answer"}))
        .await;
    let answer = expect_past_presence(&mut alice, "answer").await;
    assert_eq!(answer["from"], Value::from(bob.peer_id.clone()), "{answer}");
    alice.close().await;
    bob.close().await;
}

/// Which node (0 or 1) took the WebSocket `connect` opened, by the nodes'
/// own counts before and after.
async fn landed(f: &Front, label: &str, room: &str) -> (Client, usize) {
    let before = f.connections().await;
    let c = f.joined(room, label).await;
    let after = f.wait_connections(before[0] + before[1] + 1).await;
    let node = if after[1] > before[1] { 1 } else { 0 };
    (c, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_held_websockets_over_both_nodes() {
    let f = front("nginx-least-conn", |_, _| {}).await;
    let mut held: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for i in 0..6 {
        let (c, node) = landed(&f, &format!("p{i}"), "spread").await;
        held[node].push(c);
        // Each new one goes to the node with fewer: never more than one
        // apart, counted by the nodes themselves.
        let [a, b] = f.connections().await;
        assert!(
            a.abs_diff(b) <= 1,
            "after {} WebSockets: {a} and {b}",
            i + 1
        );
    }
    assert_eq!(f.wait_connections(6).await, [3, 3]);
    // Two of node a's leave: the next two both go to a, which has fewer
    // (round robin would give b one of them, ip_hash both).
    for _ in 0..2 {
        if let Some(c) = held[0].pop() {
            c.close().await;
        }
    }
    assert_eq!(f.wait_connections(4).await, [1, 3]);
    // nginx counts a connection until it has seen it end too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..2 {
        let (c, node) = landed(&f, &format!("q{i}"), "spread").await;
        assert_eq!(node, 0, "the emptier node takes newcomer q{i}");
        held[node].push(c);
    }
    assert_eq!(f.connections().await, [3, 3]);
    for c in held.into_iter().flatten() {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_nodes_503_is_retried_on_the_other_node() {
    // Node a drains for long enough for the test: a client that ignores its
    // `goaway` keeps it in the draining state (answering, with 503).
    let f = front("nginx-drain", |i, c| {
        if i == 0 {
            c.drain_timeout = Duration::from_secs(30);
        }
    })
    .await;
    let [a, b] = &f.nodes;
    // Two WebSockets through the front held on b and none on a, so
    // least-conn sends the next one to a: open four (two land on each),
    // then close those a took.
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for i in 0..4 {
        let (c, node) = landed(&f, &format!("held{i}"), "drain").await;
        if node == 1 {
            on_b.push(c);
        } else {
            on_a.push(c);
        }
    }
    assert_eq!((on_a.len(), on_b.len()), (2, 2), "least-conn alternates");
    for c in on_a {
        c.close().await;
    }
    f.wait_connections(2).await;
    // nginx counts a connection until it has seen it end too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Directly on a (not through the front, so nginx still counts 0 there),
    // ignoring goaway.
    let mut stays = a.client("stays-on-a").await;
    stays
        .join_with("drain", json!({"token": token("drain")}))
        .await;
    assert_eq!(f.wait_connections(3).await, [1, 2]);

    a.handle.shutdown();
    expect_past_presence(&mut stays, "goaway").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(a.addr, "/ws").await.0 != 503 {
        assert!(Instant::now() < deadline, "node a never refused /ws");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A new client through the front: nginx tries a (fewest connections),
    // gets its 503, and hands the handshake to b.
    let mut late = f.joined("drain", "late").await;
    assert_eq!(f.wait_connections(4).await, [1, 3], "the newcomer is on b");
    late.send(json!({"type": "offer", "to": on_b[0].peer_id, "sdp": "v=0"}))
        .await;
    late.close().await;
    let logs = wait_logged(&f.nginx, "upstream_status=503, 101").await;
    let line = logs
        .lines()
        .find(|l| l.contains("upstream_status=503, 101"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("upstream={}, {}", a.addr, b.addr)),
        "a refused it first, b took it: {line}"
    );
    assert!(line.contains("\"GET /ws HTTP/1.1\" 101"), "{line}");
    for c in on_b {
        c.close().await;
    }
    stays.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_stay_out_of_the_access_log() {
    let f = front("nginx-log", |_, _| {}).await;
    let n = &f.nginx;
    let secret_token = token("logged");
    // The token only in /ws's query: the join works, so the query reached
    // the node through nginx.
    let mut c = Client::connect_tls(
        &format!("{}?token={secret_token}", n.wss()),
        &f.cert,
        "query-token",
    )
    .await;
    c.send(json!({"type": "join", "room": "logged"})).await;
    c.expect("joined").await;
    c.close().await;
    // An invite link's page with the token in its query and in the Referer,
    // and the same on plain HTTP (the redirect's log line).
    let page = format!("/index.html?room=logged&token={secret_token}");
    let referer = format!("https://127.0.0.1/?token={secret_token}");
    let r = n.https_get(&page, &[("Referer", &referer)]).await;
    assert_eq!(r.status, 200);
    let r = n.http_get(&page, &[("Referer", &referer)]).await;
    assert_eq!(r.status, 301);

    // The WebSocket's line (written when it closed), in whatever format.
    let logs = wait_logged(n, "\" 101 ").await;
    for needle in [secret_token.as_str(), "token=", "?"] {
        assert!(
            !logs.contains(needle),
            "the access log shows {needle:?}:\n{logs}"
        );
    }
    // Not blind: every request above has its line, path without query.
    for line in [
        "\"GET /ws HTTP/1.1\" 101",
        "\"GET /index.html HTTP/1.1\" 200",
        "\"GET /index.html HTTP/1.1\" 301",
    ] {
        assert!(logs.contains(line), "{line} is logged: {logs}");
    }
    assert!(
        logs.contains("\"https://127.0.0.1/\""),
        "the Referer is logged without its query: {logs}"
    );
}

/// A wss handshake through the front from the loopback address `from`
/// (nginx sees it as the client), with an `X-Forwarded-For` of the client's
/// own if `forged`; the HTTP status nginx answered (101 when upgraded).
async fn handshake_from(
    f: &Front,
    from: [u8; 4],
    forged: Option<&str>,
) -> (
    u16,
    Option<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    let tcp = socket
        .connect(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            f.nginx.https_port,
        )))
        .await
        .expect("connect to the front");
    let mut req = f.nginx.wss().into_client_request().expect("request");
    if let Some(xff) = forged {
        req.headers_mut()
            .insert("X-Forwarded-For", xff.parse().expect("header value"));
    }
    match tokio_tungstenite::client_async_tls_with_config(
        req,
        tcp,
        None,
        Some(Connector::Rustls(f.nginx.tls.clone())),
    )
    .await
    {
        Ok((ws, answer)) => (answer.status().as_u16(), Some(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            (answer.status().as_u16(), None)
        }
        Err(e) => panic!("handshake from {from:?}: {e}"),
    }
}

/// Compose's trust of nginx's address: behind the front, the nodes' per-address
/// WebSocket cap counts the client nginx saw, not nginx (which, on the host
/// itself, would be exempt) and not what the client claims in its own
/// `X-Forwarded-For`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limits_key_on_the_client_behind_the_front() {
    let f = front("nginx-per-ip", |_, c| c.limits.max_connections_per_ip = 1).await;
    // One per node from 127.0.0.3 (least-conn puts them on both nodes).
    let mut held = Vec::new();
    for i in 0..2 {
        let (status, ws) = handshake_from(&f, [127, 0, 0, 3], None).await;
        assert_eq!(status, 101, "127.0.0.3's WebSocket {i}");
        held.push(ws);
    }
    assert_eq!(f.wait_connections(2).await, [1, 1]);
    // A third from the same address is over the cap on either node, also
    // when it names another address itself.
    for forged in [None, Some("127.0.0.9"), Some("198.51.100.7, 127.0.0.9")] {
        let (status, _) = handshake_from(&f, [127, 0, 0, 3], forged).await;
        assert_eq!(status, 429, "127.0.0.3 again, X-Forwarded-For {forged:?}");
    }
    // Another client is not.
    let (status, ws) = handshake_from(&f, [127, 0, 0, 4], None).await;
    assert_eq!(status, 101, "127.0.0.4 has a budget of its own");
    held.push(ws);
    drop(held);
}

/// The page's own origin gets through the front to a node's Origin check
/// (nginx passes the browser's Host), another site's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_origin_passes_the_front_and_other_sites_are_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let f = front("nginx-origin", |_, _| {}).await;
    let n = &f.nginx;
    let page = format!("https://127.0.0.1:{}", n.https_port);
    for (origin, want) in [(page.as_str(), 101), ("https://evil.example", 403)] {
        let mut req = n.wss().into_client_request().expect("request");
        req.headers_mut()
            .insert("Origin", origin.parse().expect("header value"));
        let status = match tokio_tungstenite::connect_async_tls_with_config(
            req,
            None,
            false,
            Some(Connector::Rustls(n.tls.clone())),
        )
        .await
        {
            Ok((_ws, answer)) => answer.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => answer.status().as_u16(),
            Err(e) => panic!("Origin {origin}: {e}"),
        };
        assert_eq!(status, want, "Origin {origin} through the front");
    }
}
