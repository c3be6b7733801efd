//! The server terminating TLS itself (`--tls-cert` / `--tls-key`), against
//! a real server on loopback with certificates from `scripts/make-cert`:
//! the page and `wss://` over TLS, plain HTTP on the TLS port, certificate
//! renewal without a restart (and a broken renewal refused), and silent or
//! stalled handshakes dropped at the deadline.

use serde_json::json;
use signaling_e2e::client::{Client, http_get};
use signaling_e2e::server::TestServer;
use signaling_e2e::tls::{TestCert, presented, tls_connect};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

const RELOAD_EVERY: Duration = Duration::from_millis(200);

/// A server on `cert`, its files polled every [`RELOAD_EVERY`].
async fn tls_server(cert: &TestCert, tweak: impl FnOnce(&mut signaling::Config)) -> TestServer {
    let (c, k) = (cert.cert.clone(), cert.key.clone());
    TestServer::start(move |cfg| {
        cfg.tls_cert = Some(c);
        cfg.tls_key = Some(k);
        cfg.tls_reload_interval = RELOAD_EVERY;
        tweak(cfg);
    })
    .await
}

fn wss(addr: SocketAddr) -> String {
    format!("wss://{addr}/ws")
}

/// A GET over TLS: status, response head (lower-cased) and body.
async fn https_get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> (u16, String, String) {
    let mut s = tls_connect(addr, config).await.expect("TLS handshake");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// A client that trusts each of these PEM certificates.
fn trusting(pems: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for pem in pems {
        for der in CertificateDer::pem_slice_iter(pem) {
            roots.add(der.expect("PEM")).expect("a usable root");
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Asserts docs/protocol.md §1.
#[tokio::test]
async fn https_serves_the_page_and_wss_relays_an_offer() {
    let cert = TestCert::new("tls-serve");
    let server = tls_server(&cert, |_| {}).await;

    let (status, head, body) = https_get(server.addr, cert.client_config(), "/").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    for needed in signaling_e2e::server::PAGE_SECURITY_HEADERS {
        assert!(head.contains(needed), "/ lacks {needed}:\n{head}");
    }
    assert_eq!(
        https_get(server.addr, cert.client_config(), "/healthz")
            .await
            .0,
        200
    );

    // A browser offers h2 first: the server picks HTTP/1.1, all it speaks.
    let mut alpn = (*cert.client_config()).clone();
    alpn.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let s = tls_connect(server.addr, Arc::new(alpn))
        .await
        .expect("TLS with ALPN");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(s);

    let mut a = Client::connect_tls(&wss(server.addr), &cert, "a").await;
    let mut b = Client::connect_tls(&wss(server.addr), &cert, "b").await;
    a.join("tls-room").await;
    b.join("tls-room").await;
    assert_eq!(a.expect("peer-joined").await["peer"]["peer_id"], b.peer_id);
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0\r\n"}))
        .await;
    let offer = a.expect("offer").await;
    assert_eq!(offer["from"], b.peer_id);
    assert_eq!(offer["sdp"], "v=0\r\n");
    a.send(json!({"type":"answer","to":b.peer_id,"sdp":"v=0\r\na=answer\r\n"}))
        .await;
    assert_eq!(b.expect("answer").await["from"], a.peer_id);
    a.close().await;
    b.close().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&cert.dir);
}

/// Asserts docs/protocol.md §1.
#[tokio::test]
async fn plain_http_and_bad_handshakes_on_the_tls_port_fail_cleanly() {
    let cert = TestCert::new("tls-plain");
    let server = tls_server(&cert, |_| {}).await;

    // A mistyped http:// gets a 400 that says why, not a reset.
    let (status, body) = http_get(server.addr, "/").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("https://"), "{body}");
    // A plain WebSocket client is refused the same way.
    assert!(tokio_tungstenite::connect_async(server.ws()).await.is_err());
    // A TLS client that does not trust the certificate aborts its handshake.
    let stranger = TestCert::new("tls-plain-stranger");
    assert!(
        tls_connect(server.addr, stranger.client_config())
            .await
            .is_err()
    );
    // Bytes that are neither TLS nor HTTP.
    let mut junk = TcpStream::connect(server.addr).await.expect("connect");
    junk.write_all(&[0xff; 64]).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), junk.read_to_end(&mut buf)).await;
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"));

    // And the server carries on.
    assert_eq!(
        https_get(server.addr, cert.client_config(), "/healthz")
            .await
            .0,
        200
    );
    let mut a = Client::connect_tls(&wss(server.addr), &cert, "a").await;
    a.join("after").await;
    a.close().await;
    server.stop().await;
    for dir in [&cert.dir, &stranger.dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Asserts docs/protocol.md §1.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_refused() {
    let cert = TestCert::new("tls-renew");
    let old_pem = std::fs::read(&cert.cert).expect("cert");
    let old_fp = cert.fingerprint();
    let server = tls_server(&cert, |_| {}).await;
    assert_eq!(presented(server.addr, trusting(&[&old_pem])).await, old_fp);

    // A client connected before the renewal, mid-call.
    let mut a = Client::connect_tls(&wss(server.addr), &cert, "before").await;
    a.join("renew").await;

    // The renewal: new files in place of the old (as certbot's do).
    let renewed = TestCert::make(cert.dir.clone(), &[]);
    let new_pem = std::fs::read(&renewed.cert).expect("cert");
    let new_fp = renewed.fingerprint();
    assert_ne!(new_fp, old_fp, "make-cert made the same certificate");
    let both = trusting(&[&old_pem, &new_pem]);
    let swapped = Instant::now();
    loop {
        if presented(server.addr, both.clone()).await == new_fp {
            break;
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(5),
            "the renewed certificate is not served {:?} after the swap (polled every {RELOAD_EVERY:?})",
            swapped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "renewed certificate served {:?} after the swap",
        swapped.elapsed()
    );
    // A client that trusts only the new certificate gets in; the one from
    // before is still up and relays with it.
    let mut b = Client::connect_tls(&wss(server.addr), &renewed, "after").await;
    b.join("renew").await;
    assert_eq!(a.expect("peer-joined").await["peer"]["peer_id"], b.peer_id);
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0\r\n"}))
        .await;
    assert_eq!(a.expect("offer").await["from"], b.peer_id);
    a.send(json!({"type":"answer","to":b.peer_id,"sdp":"v=0\r\n"}))
        .await;
    assert_eq!(b.expect("answer").await["from"], a.peer_id);

    // Broken renewals: a garbage key, then the key of another certificate.
    // Each is refused (logged) and the renewed certificate stays in use.
    std::fs::write(&renewed.key, b"not a key\n").expect("write");
    tokio::time::sleep(RELOAD_EVERY * 5).await;
    assert_eq!(
        presented(server.addr, both.clone()).await,
        new_fp,
        "after a garbage key"
    );
    let other = TestCert::new("tls-renew-other");
    std::fs::copy(&other.key, &renewed.key).expect("copy");
    tokio::time::sleep(RELOAD_EVERY * 5).await;
    assert_eq!(
        presented(server.addr, both.clone()).await,
        new_fp,
        "after a mismatched key"
    );
    assert_eq!(
        https_get(server.addr, renewed.client_config(), "/healthz")
            .await
            .0,
        200
    );

    // The watch keeps going after a refusal: the next good pair is taken.
    let third = TestCert::make(cert.dir.clone(), &[]);
    let third_pem = std::fs::read(&third.cert).expect("cert");
    let third_fp = third.fingerprint();
    let all = trusting(&[&old_pem, &new_pem, &third_pem]);
    let swapped = Instant::now();
    while presented(server.addr, all.clone()).await != third_fp {
        assert!(
            swapped.elapsed() < Duration::from_secs(5),
            "the third certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Both WebSockets lived through all of it.
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"v=0\r\n"}))
        .await;
    assert_eq!(a.expect("offer").await["from"], b.peer_id);
    a.close().await;
    b.close().await;
    server.stop().await;
    for dir in [&cert.dir, &other.dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Reads until the server closes `s`; how long that took from `since`.
async fn closed_after(mut s: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open 10 s after connecting"),
        }
    }
}

/// Asserts docs/protocol.md §1, §14.
#[tokio::test]
async fn silent_and_stalled_handshakes_are_dropped_at_the_deadline() {
    const DEADLINE: Duration = Duration::from_millis(600);
    const SLOTS: usize = 6;
    let cert = TestCert::new("tls-silent");
    let server = tls_server(&cert, |c| {
        c.limits.http_header_timeout = DEADLINE;
        c.limits.max_http_connections = SLOTS;
    })
    .await;

    let start = Instant::now();
    let mut idle = Vec::new();
    // Connects and sends nothing.
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Starts a ClientHello (a handshake record header promising 512
    // bytes) and stalls: past the first byte, only the handshake deadline
    // can close it.
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .expect("write");
        idle.push(s);
    }
    // Five of six slots are held; others are served at once meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    assert_eq!(
        https_get(server.addr, cert.client_config(), "/healthz")
            .await
            .0,
        200
    );
    let served_in = t.elapsed();
    assert!(
        served_in < DEADLINE,
        "a request waited {served_in:?} behind silent sockets"
    );
    let mut c = Client::connect_tls(&wss(server.addr), &cert, "meanwhile").await;
    c.join("silent").await;

    let mut waits = Vec::new();
    for s in idle {
        waits.push(closed_after(s, start).await);
    }
    println!("silent/stalled sockets closed after {waits:?} (deadline {DEADLINE:?})");
    for w in &waits {
        assert!(
            *w >= DEADLINE - Duration::from_millis(50) && *w < DEADLINE + Duration::from_secs(1),
            "closed after {w:?}, deadline {DEADLINE:?}"
        );
    }
    // Their slots are free again: all six can be taken by real handshakes.
    let mut held = Vec::new();
    for _ in 0..SLOTS {
        held.push(
            tls_connect(server.addr, cert.client_config())
                .await
                .expect("a free slot"),
        );
    }
    drop(held);
    // The WebSocket that joined meanwhile is outside these bounds and up.
    c.send(json!({"type":"ping"})).await;
    assert!(
        c.next(Duration::from_secs(2)).await.is_some(),
        "the session is gone"
    );
    c.close().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&cert.dir);
}
