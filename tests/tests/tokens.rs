//! Tokens as identity providers issue them, against the real binary: every
//! JWS algorithm the server takes, minted by PyJWT (an implementation
//! independent of the server's), with keys made by Python's `cryptography`
//! for this test; public keys given as PEM files and as a JWKS document;
//! issuer and audience checks; a weak secret refused at start; join tokens
//! that never open the admin API. A JWKS served by the test itself over
//! HTTP and HTTPS (`--auth-jwks-url`): a key rotated there taken without a
//! restart, refreshes, a failed refresh, starts refused. Admin keys apart
//! (`--admin-auth-*`). `scripts/test` installs PyJWT into its venv and names
//! its Python in `SIGNALING_TEST_PYTHON`.

use serde_json::{Value, json};
use signaling_e2e::client::{Client, http_get_with};
use signaling_e2e::room;
use signaling_e2e::server::ServerProcess;
use signaling_e2e::tls::TestCert;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "tokens-test-secret-of-at-least-32-bytes";
/// The admin secret of the tests of admin keys apart.
const ADMIN_SECRET: &str = "tokens-test-admin-secret-of-32-bytes-or-more";

/// Makes the keys the first time (private ones in `NAME.key`, for the
/// next call), writes the public ones to `dir` (`rsa.pem`, `ec256.pem`,
/// `ec384.pem`, `ed.pem`, `other-rsa.pem`,
/// `jwks.json` with `rsa` and `ec256` under kids `k-rsa`, `k-ec`, and
/// `jwks-other.json` with `other-rsa` alone under kid `k-other`: the key an
/// identity provider rotates to), and prints, as one JSON object, a token
/// per case named on the command line after the claims: `ALG[:kid[:key]]`,
/// HS tokens signed with the secret given after `dir`.
const MINT: &str = r#"
import json, sys, time, jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519
from cryptography.hazmat.primitives import serialization as s

out_dir, secret, claims = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import os
make = {
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "other-rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed": lambda: ed25519.Ed25519PrivateKey.generate(),
}
keys = {}
for name, new in make.items():
    private = f"{out_dir}/{name}.key"
    if os.path.exists(private):
        keys[name] = s.load_pem_private_key(open(private, "rb").read(), password=None)
        continue
    keys[name] = k = new()
    open(private, "wb").write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    pem = k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    open(f"{out_dir}/{name}.pem", "wb").write(pem)
jwks = {"keys": [
    dict(json.loads(RSAAlgorithm.to_jwk(keys["rsa"].public_key())), kid="k-rsa", alg="RS256", use="sig"),
    dict(json.loads(ECAlgorithm.to_jwk(keys["ec256"].public_key())), kid="k-ec", alg="ES256", use="sig"),
]}
open(f"{out_dir}/jwks.json", "w").write(json.dumps(jwks))
other = {"keys": [
    dict(json.loads(RSAAlgorithm.to_jwk(keys["other-rsa"].public_key())), kid="k-other", alg="RS256", use="sig"),
]}
open(f"{out_dir}/jwks-other.json", "w").write(json.dumps(other))
key_for = {"RS": "rsa", "PS": "rsa", "ES256": "ec256", "ES384": "ec384", "EdDSA": "ed"}
claims = dict(claims, exp=time.time() + 300.5, iat=int(time.time()))
tokens = {}
for case in sys.argv[4:]:
    alg, kid, key = (case.split(":") + [None, None])[:3]
    if alg.startswith("HS"):
        signing = secret
    else:
        signing = keys[key or key_for.get(alg, key_for.get(alg[:2]))]
    headers = {"kid": kid} if kid else None
    tokens[case] = jwt.encode(claims, signing, algorithm=alg, headers=headers)
print(json.dumps(tokens))
"#;

fn python() -> String {
    std::env::var("SIGNALING_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Public keys written to `dir`, and a token per case with `claims`.
fn mint(dir: &Path, claims: Value, cases: &[&str]) -> serde_json::Map<String, Value> {
    mint_with(dir, SECRET, claims, cases)
}

/// As [`mint`], HS tokens signed with `secret`.
fn mint_with(
    dir: &Path,
    secret: &str,
    claims: Value,
    cases: &[&str],
) -> serde_json::Map<String, Value> {
    let out = Command::new(python())
        .arg("-c")
        .arg(MINT)
        .arg(dir)
        .arg(secret)
        .arg(claims.to_string())
        .args(cases)
        .output()
        .unwrap_or_else(|e| panic!("python runs (scripts/test installs PyJWT): {e}"));
    assert!(
        out.status.success(),
        "minting failed (scripts/test installs PyJWT): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("tokens as JSON") {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokens-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// One token of `mint`'s answer.
fn token(tokens: &serde_json::Map<String, Value>, case: &str) -> String {
    tokens[case].as_str().expect("a token").to_owned()
}

/// The first answer to a join with `token`: `joined` or `error`.
async fn join_answer(server: &ServerProcess, room: &str, token: &str) -> Value {
    let mut c = Client::connect(&server.ws(), "joiner").await;
    c.send(json!({"type":"join","room":room,"token":token}))
        .await;
    c.next(std::time::Duration::from_secs(5))
        .await
        .expect("an answer to the join")
}

/// Asserts docs/protocol.md §12.1: every algorithm, each with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_every_algorithm_open_their_room() {
    let dir = temp_dir("algs");
    let r = room("algs");
    let algs = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
    ];
    let mut cases: Vec<&str> = algs.to_vec();
    // Signed by an RSA key the server was not given, and an EC token
    // claiming to be HS256 with the public key as its secret can't be made
    // by PyJWT (it refuses): the forged one is enough here.
    cases.push("RS256::other-rsa");
    let tokens = mint(&dir, json!({"sub":"ada","room":r}), &cases);
    let keys = ["rsa.pem", "ec256.pem", "ec384.pem", "ed.pem"]
        .map(|k| path(&dir, k))
        .join(",");
    let server =
        ServerProcess::start(&["--auth-secret", SECRET, "--auth-key", keys.as_str()]).await;
    for alg in algs {
        let v = join_answer(&server, &r, tokens[alg].as_str().expect("a token")).await;
        assert_eq!(v["type"], "joined", "{alg}: {v}");
    }
    let v = join_answer(
        &server,
        &r,
        tokens["RS256::other-rsa"].as_str().expect("a token"),
    )
    .await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("unauthorized")),
        "a key the server was not given: {v}"
    );
    let other_room = join_answer(
        &server,
        &room("other"),
        tokens["ES256"].as_str().expect("t"),
    )
    .await;
    assert_eq!(other_room["code"], "unauthorized", "{other_room}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts docs/protocol.md §12.1: a JWKS document's keys, chosen by `kid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_document_s_keys_are_chosen_by_kid() {
    let dir = temp_dir("jwks");
    let r = room("jwks");
    let tokens = mint(
        &dir,
        json!({"room":"*"}),
        &[
            "RS256:k-rsa",
            "ES256:k-ec",
            "RS256:k-ec:rsa",
            "RS256:nobody",
            "ES384",
        ],
    );
    let server = ServerProcess::start(&["--auth-jwks", &path(&dir, "jwks.json")]).await;
    let answer =
        async |case: &str| join_answer(&server, &r, tokens[case].as_str().expect("t")).await;
    assert_eq!(answer("RS256:k-rsa").await["type"], "joined");
    assert_eq!(answer("ES256:k-ec").await["type"], "joined");
    for refused in ["RS256:k-ec:rsa", "RS256:nobody", "ES384"] {
        let v = answer(refused).await;
        assert_eq!(v["code"], "unauthorized", "{refused}: {v}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts docs/protocol.md §12.1, §14: `--auth-issuer` and
/// `--auth-audience` are required claims; a join token never opens the
/// admin API, an admin token does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_audience_and_the_admin_claim_are_checked() {
    let dir = temp_dir("claims");
    let r = room("claims");
    let token = |claims: Value| -> String {
        mint(&dir, claims, &["ES256"])["ES256"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    let join = token(json!({"room":"*","iss":"https://id.test","aud":["x","signaling"]}));
    let wrong_iss = token(json!({"room":"*","iss":"https://evil.test","aud":"signaling"}));
    let no_iss = token(json!({"room":"*","aud":"signaling"}));
    let wrong_aud = token(json!({"room":"*","iss":"https://id.test","aud":"other"}));
    let admin = token(json!({"admin":true,"iss":"https://id.test","aud":"signaling"}));
    let server = ServerProcess::start(&[
        "--auth-key",
        &path(&dir, "ec256.pem"),
        "--auth-issuer",
        "https://id.test",
        "--auth-audience",
        "signaling",
    ])
    .await;
    assert_eq!(join_answer(&server, &r, &join).await["type"], "joined");
    for (why, t) in [
        ("issuer", &wrong_iss),
        ("no issuer", &no_iss),
        ("audience", &wrong_aud),
    ] {
        let v = join_answer(&server, &r, t).await;
        assert_eq!(v["code"], "unauthorized", "{why}: {v}");
    }
    let api = async |t: &str| {
        let bearer = format!("Bearer {t}");
        http_get_with(
            server.addr,
            "/api/rooms",
            &[("Authorization", bearer.as_str())],
        )
        .await
    };
    let (status, body) = api(&join).await;
    assert_eq!(status, 401, "a join token opens no admin API: {body}");
    let (status, body) = api(&admin).await;
    assert_eq!(status, 200, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A secret under 32 bytes, or a key file that holds no key, stops the
/// start with a message saying why.
#[test]
fn weak_secrets_and_bad_key_files_are_refused_at_start() {
    let out = ServerProcess::run(&["--listen", "127.0.0.1:0", "--auth-secret", "short"], &[]);
    assert!(!out.status.success());
    let said = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let err = said(&out);
    assert!(err.contains("at least 32"), "{err}");
    let dir = temp_dir("bad");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a key").expect("written");
    let out = ServerProcess::run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--auth-key",
            &junk.display().to_string(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = said(&out);
    assert!(err.contains("junk.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A JWKS endpoint of the test's own on 127.0.0.1: HTTP/1.1, one request
/// per connection, every request answered with what [`set`](Self::set)
/// last gave; over TLS with a certificate of the test's when given one.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(status: u16, body: String, tls: Option<&TestCert>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(|cert| {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let chain = CertificateDer::pem_file_iter(&cert.cert)
                .expect("the certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("PEM");
            let key = PrivateKeyDer::from_pem_file(&cert.key).expect("the key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("a usable certificate");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let server = JwksServer {
            url: format!("{scheme}://{addr}/.well-known/jwks.json"),
            answer: Arc::new(Mutex::new((status, body))),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let (answer, hits) = (server.answer.clone(), server.hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (answer, hits, acceptor) = (answer.clone(), hits.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            // A client that refuses the certificate ends
                            // here: no request, no hit.
                            if let Ok(s) = a.accept(tcp).await {
                                respond(s, &answer, &hits).await;
                            }
                        }
                        None => respond(tcp, &answer, &hits).await,
                    }
                });
            }
        });
        server
    }

    fn set(&self, status: u16, body: String) {
        *self.answer.lock().expect("the answer") = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits until it has answered `n` requests in all.
    async fn wait_hits(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.hits() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} requests, not {n}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one request's head and answers it with `answer`; counted once
/// answered.
async fn respond<S>(mut s: S, answer: &Mutex<(u16, String)>, hits: &AtomicUsize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = answer.lock().expect("the answer").clone();
    let reply = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
    hits.fetch_add(1, Ordering::SeqCst);
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("minted")
}

/// Asserts docs/protocol.md §12.1: a key rotated in at the identity
/// provider is taken without a restart (its unknown `kid` makes the server
/// fetch the JWKS again, and the join waits for it), and the key rotated
/// out is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_s_rotated_key_is_taken_without_a_restart() {
    let dir = temp_dir("jwks-url");
    let r = room("jwks-url");
    let tokens = mint(
        &dir,
        json!({"room":"*"}),
        &["RS256:k-rsa", "RS256:k-other:other-rsa"],
    );
    let a = token(&tokens, "RS256:k-rsa");
    let b = token(&tokens, "RS256:k-other:other-rsa");
    let jwks = JwksServer::start(200, read(&dir, "jwks.json"), None).await;
    let server = ServerProcess::start(&["--auth-jwks-url", &jwks.url]).await;
    assert_eq!(jwks.hits(), 1, "fetched once at start");
    assert_eq!(join_answer(&server, &r, &a).await["type"], "joined");
    assert_eq!(jwks.hits(), 1, "a known kid fetches nothing");

    // The provider rotates: A out, B in.
    jwks.set(200, read(&dir, "jwks-other.json"));
    let v = join_answer(&server, &r, &b).await;
    assert_eq!(v["type"], "joined", "the rotated-in key: {v}");
    assert_eq!(jwks.hits(), 2, "the unknown kid fetched the JWKS again");
    let v = join_answer(&server, &r, &a).await;
    assert_eq!(v["code"], "unauthorized", "the rotated-out key: {v}");
    assert_eq!(
        jwks.hits(),
        2,
        "refetches for unknown kids are spaced: none again at once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts docs/protocol.md §12.1: `--auth-jwks-refresh` fetches the JWKS
/// again on its own; a refresh that fails keeps the keys held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_refreshed_and_a_failed_refresh_keeps_the_keys() {
    let dir = temp_dir("jwks-refresh");
    let r = room("jwks-refresh");
    let tokens = mint(
        &dir,
        json!({"room":"*"}),
        &["RS256:k-rsa", "RS256:k-other:other-rsa"],
    );
    let a = token(&tokens, "RS256:k-rsa");
    let b = token(&tokens, "RS256:k-other:other-rsa");
    let jwks = JwksServer::start(200, read(&dir, "jwks.json"), None).await;
    let server =
        ServerProcess::start(&["--auth-jwks-url", &jwks.url, "--auth-jwks-refresh", "200ms"]).await;
    jwks.wait_hits(3).await;
    for (status, body) in [(503, "down".to_string()), (200, "garbage".to_string())] {
        jwks.set(status, body);
        let seen = jwks.hits();
        // Two more: at least one whole refresh after the change.
        jwks.wait_hits(seen + 2).await;
        let v = join_answer(&server, &r, &a).await;
        assert_eq!(v["type"], "joined", "after a {status} refresh: {v}");
    }
    server
        .wait_logged("JWKS refresh failed", Duration::from_secs(5))
        .await;
    jwks.set(200, read(&dir, "jwks-other.json"));
    let seen = jwks.hits();
    jwks.wait_hits(seen + 2).await;
    let v = join_answer(&server, &r, &b).await;
    assert_eq!(v["type"], "joined", "{v}");
    let v = join_answer(&server, &r, &a).await;
    assert_eq!(v["code"], "unauthorized", "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts docs/protocol.md §12.1: an HTTPS JWKS URL's certificate is
/// verified, against `--auth-jwks-ca` when given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_jwks_url_is_trusted_through_its_ca() {
    let dir = temp_dir("jwks-https");
    let r = room("jwks-https");
    let tokens = mint(&dir, json!({"room":"*"}), &["ES256:k-ec"]);
    let cert = TestCert::new("jwks-https");
    let other = TestCert::new("jwks-https-other");
    let jwks = JwksServer::start(200, read(&dir, "jwks.json"), Some(&cert)).await;
    assert!(jwks.url.starts_with("https://127.0.0.1:"), "{}", jwks.url);
    let ca = cert.cert.display().to_string();
    let server = ServerProcess::start(&["--auth-jwks-url", &jwks.url, "--auth-jwks-ca", &ca]).await;
    let v = join_answer(&server, &r, &token(&tokens, "ES256:k-ec")).await;
    assert_eq!(v["type"], "joined", "{v}");
    // Neither the platform's roots nor another CA vouch for it.
    let other_ca = other.cert.display().to_string();
    for args in [
        vec!["--auth-jwks-url", jwks.url.as_str()],
        vec![
            "--auth-jwks-url",
            jwks.url.as_str(),
            "--auth-jwks-ca",
            &other_ca,
        ],
    ] {
        let log = refused_start(&args).await;
        assert!(
            log.contains("cannot use the JWKS at https://127.0.0.1:"),
            "{log}"
        );
        assert!(log.to_lowercase().contains("certificate"), "{log}");
    }
    assert_eq!(jwks.hits(), 1, "no request without a trusted certificate");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&cert.dir);
    let _ = std::fs::remove_dir_all(&other.dir);
}

/// The server started with `args`, which must stop it: its log.
async fn refused_start(args: &[&str]) -> String {
    let mut p = ServerProcess::spawn(args);
    let status = p.exited(Duration::from_secs(30)).await;
    let log = p.log();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?}: {log}");
    log
}

/// A JWKS URL that answers with no usable key, or not at all, stops the
/// start with a message saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_without_usable_keys_stops_the_start() {
    let jwks = JwksServer::start(404, "not here".into(), None).await;
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(1024 * 1024));
    for (status, body, said) in [
        (404, "not here".to_string(), "HTTP status 404"),
        (200, "<html>garbage</html>".into(), "not a JWKS document"),
        (200, r#"{"keys":[]}"#.into(), "no key in it can verify"),
        (
            200,
            r#"{"keys":[{"kty":"oct","use":"enc","k":"AAAA"}]}"#.into(),
            "no key in it can verify",
        ),
        (200, big, "over 1048576 bytes"),
    ] {
        jwks.set(status, body);
        let log = refused_start(&["--auth-jwks-url", &jwks.url]).await;
        assert!(
            log.contains(&jwks.url) && log.contains(said),
            "{said}: {log}"
        );
    }
    // Nobody listening.
    let closed = format!(
        "http://127.0.0.1:{}/jwks.json",
        signaling_e2e::redis::free_port()
    );
    let log = refused_start(&["--auth-jwks-url", &closed]).await;
    assert!(log.contains("cannot use the JWKS at"), "{log}");
}

/// Asserts docs/protocol.md §12.2: with admin keys apart, admin tokens are
/// checked with them alone (a join key cannot mint one) and join tokens
/// never with them; the `admin` claim is still needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_apart_sign_admin_tokens_alone() {
    let dir = temp_dir("admin-keys");
    let r = room("admin-keys");
    let admin = json!({"admin":true,"room":"*"});
    let by_join_keys = mint(&dir, admin.clone(), &["HS256", "ES256"]);
    let by_admin_keys = mint_with(&dir, ADMIN_SECRET, admin, &["HS256", "EdDSA"]);
    let no_claim = mint_with(&dir, ADMIN_SECRET, json!({"room":"*"}), &["HS256", "EdDSA"]);
    let server = ServerProcess::start(&[
        "--auth-secret",
        SECRET,
        "--auth-key",
        &path(&dir, "ec256.pem"),
        "--admin-auth-secret",
        ADMIN_SECRET,
        "--admin-auth-key",
        &path(&dir, "ed.pem"),
    ])
    .await;
    let api = async |t: &str| {
        let bearer = format!("Bearer {t}");
        http_get_with(
            server.addr,
            "/api/rooms",
            &[("Authorization", bearer.as_str())],
        )
        .await
    };
    for alg in ["HS256", "ES256"] {
        let (status, body) = api(&token(&by_join_keys, alg)).await;
        assert_eq!(
            status, 401,
            "an admin token signed with a join key ({alg}): {body}"
        );
        let v = join_answer(&server, &r, &token(&by_join_keys, alg)).await;
        assert_eq!(
            v["type"], "joined",
            "join keys still open joins ({alg}): {v}"
        );
    }
    for alg in ["HS256", "EdDSA"] {
        let (status, body) = api(&token(&by_admin_keys, alg)).await;
        assert_eq!(
            status, 200,
            "an admin token signed with an admin key ({alg}): {body}"
        );
        let (status, body) = api(&token(&no_claim, alg)).await;
        assert_eq!(status, 401, "no admin claim ({alg}): {body}");
        for t in [&by_admin_keys, &no_claim] {
            let v = join_answer(&server, &r, &token(t, alg)).await;
            assert_eq!(
                v["code"], "unauthorized",
                "a join with an admin key ({alg}): {v}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
