//! Tokens as identity providers issue them, against the real binary: every
//! JWS algorithm the server takes, minted by PyJWT (an implementation
//! independent of the server's), with keys made by Python's `cryptography`
//! for this test; public keys given as PEM files and as a JWKS document;
//! issuer and audience checks; a weak secret refused at start; join tokens
//! that never open the admin API. `scripts/test` installs PyJWT into its
//! venv and names its Python in `SIGNALING_TEST_PYTHON`.

use serde_json::{Value, json};
use signaling_e2e::client::{Client, http_get_with};
use signaling_e2e::room;
use signaling_e2e::server::ServerProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET: &str = "tokens-test-secret-of-at-least-32-bytes";

/// Makes the keys the first time (private ones in `NAME.key`, for the
/// next call), writes the public ones to `dir` (`rsa.pem`, `ec256.pem`,
/// `ec384.pem`, `ed.pem`, `other-rsa.pem`,
/// and `jwks.json` with `rsa` and `ec256` under kids `k-rsa`, `k-ec`), and
/// prints, as one JSON object, a token per case named on the command line
/// after `dir`: `ALG[:kid[:key]]`, claims from the JSON given last.
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
    let out = Command::new(python())
        .arg("-c")
        .arg(MINT)
        .arg(dir)
        .arg(SECRET)
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
