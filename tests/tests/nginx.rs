//! The shipped nginx front (deploy/nginx.conf) run by the real nginx (Debian
//! `nginx`) in front of two real signaling nodes clustered through a real
//! redis-server, all on loopback. What the test changes in the file, and
//! why (Debian 12's nginx 1.22 has no `resolve` on upstream servers), is
//! listed in tests/src/nginx.rs.

use serde_json::json;
use signaling_e2e::nginx::{Nginx, Response};
use signaling_e2e::redis::Redis;
use signaling_e2e::server::{TestServer, clustered};
use signaling_e2e::tls::TestCert;
use std::time::{Duration, Instant};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every header the front must put on each HTTPS response, with its value.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "camera=(self), microphone=(self), display-capture=(self)",
    ),
    ("x-frame-options", "DENY"),
    ("strict-transport-security", "max-age=31536000"),
];

struct Front {
    nginx: Nginx,
    nodes: [TestServer; 2],
    _redis: Redis,
    _cert: TestCert,
}

/// Two clustered nodes (tweaked by `tweak`) and the shipped front.
async fn front(label: &str, tweak: impl Fn(&mut signaling::Config)) -> Front {
    let redis = Redis::start();
    let a = TestServer::start(|c| {
        clustered(redis.url(), "node-a")(c);
        tweak(c);
    })
    .await;
    let b = TestServer::start(|c| {
        clustered(redis.url(), "node-b")(c);
        tweak(c);
    })
    .await;
    let cert = TestCert::new(label);
    let nginx = Nginx::start(&[a.addr, b.addr], &cert);
    Front {
        nginx,
        nodes: [a, b],
        _redis: redis,
        _cert: cert,
    }
}

async fn curl(n: &Nginx, url: String, extra: &[&str]) -> Response {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let cacert = n.cacert.clone();
    // curl blocks; the nodes run on this runtime and must keep answering.
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        signaling_e2e::nginx::curl(&cacert, &url, &extra)
    })
    .await
    .expect("curl task")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_location_sends_the_security_headers() {
    let f = front("nginx-headers", |_| {}).await;
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
        let r = curl(n, n.https(path), &[]).await;
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
    // A plain WebSocket handshake's answer carries them too (/ws location).
    let r = curl(
        n,
        n.https("/ws"),
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "--max-time",
            "2",
        ],
    )
    .await;
    assert_eq!(r.status, 101, "/ws upgrade through the front: {r:?}");
    assert_security_headers("/ws", &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_metrics_are_not_served_publicly() {
    let f = front("nginx-private", |_| {}).await;
    let n = &f.nginx;
    // Something to list: a joined peer with a name.
    let mut c = f.nodes[0].client("lister").await;
    c.join_with("private-room", json!({"name": "Alice Private"}))
        .await;
    // The node itself serves what the front must not (so the refusals below
    // mean something).
    let direct = signaling_e2e::client::http_get(f.nodes[0].addr, "/metrics").await;
    assert!(
        direct.0 == 200 && direct.1.contains("signaling_connections"),
        "the node serves /metrics directly: {direct:?}"
    );

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
        let r = curl(n, n.https(path), &[]).await;
        // The %2F spellings are /healthz to nginx, and it sends the node
        // /healthz: a 200 there is the health answer, not the API's.
        if !path.contains("%2F") {
            assert_ne!(r.status, 200, "{path} answered through the front: {r:?}");
        }
        for leak in ["private-room", "Alice Private", "signaling_connections"] {
            assert!(
                !r.body.contains(leak),
                "{path}: the front's answer shows {leak:?}: {r:?}"
            );
        }
        // Plain HTTP only redirects, never proxies.
        let r = curl(n, n.http(path), &[]).await;
        assert_eq!(r.status, 301, "http {path}: {r:?}");
        assert!(!r.body.contains("private-room"), "http {path}: {r:?}");
    }
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_certificate_and_http_redirects_to_https() {
    let f = front("nginx-tls", |_| {}).await;
    let n = &f.nginx;
    let r = curl(n, n.https("/index.html"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("<html") || r.body.contains("<!doctype"),
        "{r:?}"
    );

    // The front serves the mounted certificate: trusting only it works (above),
    // trusting only the system's CAs does not.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10"])
        .arg(n.https("/"))
        .output()
        .expect("curl runs");
    assert!(
        !out.status.success(),
        "a self-signed test certificate must not pass the system's CAs"
    );
    // TLS 1.2 and 1.3 only.
    for (flags, ok) in [
        (&["--tlsv1.2", "--tls-max", "1.2"][..], true),
        (&["--tlsv1.3"][..], true),
    ] {
        let r = curl(n, n.https("/healthz"), flags).await;
        assert_eq!(r.status == 200, ok, "{flags:?}: {r:?}");
    }

    for path in ["/", "/index.html?room=r1", "/ws?token=abc", "/a/b%20c"] {
        let r = curl(n, n.http(path), &[]).await;
        assert_eq!(r.status, 301, "http {path}: {r:?}");
        // $host has no port: in production HTTPS is on 443.
        assert_eq!(
            r.header("location"),
            Some(format!("https://127.0.0.1{path}").as_str()),
            "http {path} redirects to the same path on https: {r:?}"
        );
    }
}

#[allow(dead_code)] // for the access-log test (wss), still to come
/// Waits until the front's access log mentions `needle`: nginx writes a
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
