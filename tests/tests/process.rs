//! The `signaling` binary as an operator runs it: flags, JSON logs that never
//! show secrets, tokens or SDP, and SIGTERM's drain ending in exit status 0.

use serde_json::{Value, json};
use signaling_e2e::client::{Client, http_get};
use signaling_e2e::server::ServerProcess;
use signaling_e2e::tls::{TestCert, presented};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "process-test-secret-0123456789abcdef";
const SDP_MARKER: &str = "a=x-process-test-marker";

fn sign(claims: Value) -> String {
    signaling::auth::Auth::new(SECRET).sign(&claims)
}

/// Asserts docs/protocol.md §7.1, §10, §12.1, §14.
#[tokio::test]
async fn sigterm_drains_with_goaway_and_exits_zero() {
    let mut srv = ServerProcess::start(&[
        "--log-format",
        "json",
        "--drain-timeout",
        "1500ms",
        "--auth-secret",
        SECRET,
    ])
    .await;
    let exp = signaling::auth::now_unix() + 600;
    let token = sign(json!({"sub":"alice","room":"drain","exp":exp}));
    let mut a = Client::connect(&format!("{}?token={token}", srv.ws()), "a").await;
    let joined = a.join("drain").await;
    let mut b = Client::connect(&srv.ws(), "b").await;
    let token_b = sign(json!({"sub":"bob","room":"*","exp":exp}));
    b.join_with("drain", json!({"token": token_b})).await;
    assert_eq!(a.expect("peer-joined").await["peer"]["name"], "bob");
    b.send(json!({"type":"offer","to":joined["peer_id"],"sdp":format!("v=0\r\n{SDP_MARKER}\r\n")}))
        .await;
    a.expect("offer").await;
    let mut idle = Client::connect(&srv.ws(), "idle").await;
    assert_eq!(http_get(srv.addr, "/readyz").await.0, 200);

    srv.terminate();

    for c in [&mut a, &mut b, &mut idle] {
        let g = c.expect("goaway").await;
        assert!(g["retry_after_ms"].as_u64().is_some(), "{g}");
    }
    assert_eq!(
        http_get(srv.addr, "/readyz").await.0,
        503,
        "readyz while draining"
    );
    assert_eq!(
        http_get(srv.addr, "/healthz").await.0,
        200,
        "liveness while draining"
    );
    // `a` leaves as told; the others stay and are closed with 1012 at the end.
    a.close().await;
    assert_eq!(b.closed(Duration::from_secs(10)).await, Some(1012));
    assert_eq!(idle.closed(Duration::from_secs(10)).await, Some(1012));

    let status = srv
        .exited(Duration::from_secs(10))
        .await
        .expect("still running 10 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let all = srv.log();
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
    let out = ServerProcess::run(
        &["--listen", "127.0.0.1:0", "--redis-url", "not a url"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("invalid --redis-url"), "{text}");
}

#[test]
fn help_documents_every_flag_and_its_variable() {
    let out = ServerProcess::run(&["--help"], &[]);
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
    let out = ServerProcess::run(
        &["token", "--room", "standup", "--name", "Ada", "--ttl", "1h"]
            .into_iter()
            .chain(["--url", "https://call.example/"])
            .collect::<Vec<_>>(),
        &[("SIGNALING_AUTH_SECRET", SECRET)],
    );
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
    let ttl = claims.exp - signaling::auth::now_unix() as f64;
    assert!((3500.0..=3600.0).contains(&ttl), "exp {ttl} s away");
    assert!(
        signaling::auth::Auth::new(SECRET)
            .verify_join(&token, "another-room", signaling::auth::now_unix())
            .is_err()
    );

    // Without a secret it says what is missing.
    let out = Command::new(ServerProcess::binary())
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
    let help = ServerProcess::run(&["--help"], &[("SIGNALING_REDIS_URL", url)]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--redis-url"));
    assert!(!help.contains("hunter2"), "--help shows the Redis password");

    let mut server = ServerProcess::start(&["--log-format", "json", "--redis-url", url]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.kill9();
    let all = server.log();
    assert!(
        all.contains("OPEN MODE"),
        "no open-mode warning at start:\n{all}"
    );
    assert!(
        !all.contains("hunter2"),
        "a log shows the Redis password:\n{all}"
    );
}

/// The binary's exit status and output when it is expected not to start.
fn refused(args: &[&std::ffi::OsStr], env: &[(&str, &std::ffi::OsStr)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(ServerProcess::binary());
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
    let TestCert { dir, cert, key } = TestCert::new("flags");
    let TestCert {
        dir: other_dir,
        key: other_key,
        ..
    } = TestCert::new("flags-other");
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

    let help = ServerProcess::run(&["--help"], &[]);
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

#[tokio::test]
async fn tls_logs_https_and_a_broken_renewal_keeps_the_old_certificate() {
    let cert = TestCert::new("renew");
    let fp = cert.fingerprint();
    let (cert_s, key_s) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );

    // The listening line names the https and wss addresses.
    let first = ServerProcess::spawn(&[
        "--log-format",
        "json",
        "--tls-cert",
        &cert_s,
        "--tls-key",
        &key_s,
    ]);
    let line = first.wait_logged("\"addr\"", Duration::from_secs(10)).await;
    drop(first);
    let v: Value = serde_json::from_str(&line).expect("json");
    let addr = v["fields"]["addr"].as_str().expect("addr");
    assert_eq!(v["fields"]["url"], format!("https://{addr}/"), "{line}");
    assert_eq!(
        v["fields"]["websocket"],
        format!("wss://{addr}/ws"),
        "{line}"
    );

    let srv = ServerProcess::spawn(&[
        "--log-format",
        "json",
        "--tls-cert",
        &cert_s,
        "--tls-key",
        &key_s,
        "--tls-reload-interval",
        "200ms",
    ]);
    srv.wait_logged("\"addr\"", Duration::from_secs(10)).await;
    assert_eq!(presented(srv.addr, cert.client_config()).await, fp);
    std::fs::write(
        &cert.key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let refusal = srv
        .wait_logged("TLS certificate reload failed", Duration::from_secs(5))
        .await;
    let v: Value = serde_json::from_str(&refusal).expect("json");
    assert_eq!(v["level"], "ERROR", "{refusal}");
    assert!(
        v["fields"]["error"].as_str().unwrap_or("").contains(&key_s),
        "the error names the file: {refusal}"
    );
    // Reported once, not on every poll.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = srv.log();
    let again: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("TLS certificate reload failed"))
        .skip(1)
        .filter(|l| l.contains("reload failed"))
        .collect();
    assert!(again.is_empty(), "the same refusal logged again: {again:?}");
    // The old certificate is still served.
    assert_eq!(presented(srv.addr, cert.client_config()).await, fp);
    assert_eq!(
        http_get(srv.addr, "/healthz").await.0,
        400,
        "plain HTTP on the TLS port gets 400"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(&cert.dir);
}
