//! Tokens: JWTs as identity providers issue them, verified with the
//! `jsonwebtoken` crate (its Rust Crypto backend). Join tokens carry the
//! room they open (`room`, or `*` for any) and the peer's identity
//! (`sub`); admin tokens carry `"admin": true`. A join token never opens
//! `/api/*`: only the `admin` claim does.
//!
//! Keys, any number at once ([`AuthKeys`]): shared secrets for HS256,
//! HS384 and HS512 (at least [`MIN_SECRET_BYTES`] bytes, refused at start
//! otherwise), public keys in PEM files (RSA for RS256/384/512 and
//! PS256/384/512, EC P-256 and P-384 for ES256 and ES384, Ed25519 for
//! EdDSA), and the keys of a JWKS document, chosen by `kid`. A token's
//! algorithm picks the keys that may check it, so no `none`, and no
//! RS-to-HS confusion: a public key is never taken for a secret.
//!
//! Claims: `exp` is required (whole or fractional seconds); `nbf` and `iat`
//! are honoured if present (a token issued in the future is refused);
//! `iss` and `aud` are required when the server is given them. Each time
//! check allows a small leeway for clocks that disagree. Secrets and tokens
//! never reach logs.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shortest shared secret the server accepts (RFC 7518 §3.2: a key of
/// at least the hash's size, 256 bits for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("no key for the token's algorithm and key id")]
    NoKey,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token from another issuer")]
    Issuer,
    #[error("token for another audience")]
    Audience,
    #[error("token is not valid for this room")]
    WrongRoom,
    #[error("token does not grant admin access")]
    NotAdmin,
}

/// Why the keys given at start cannot be used: the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the auth secret is {0} bytes: at least {MIN_SECRET_BYTES} are required (try `openssl rand -base64 32`)"
    )]
    WeakSecret(usize),
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no RSA, EC (P-256, P-384) or Ed25519 public key in PEM")]
    NotAKey { path: PathBuf },
    #[error("the JWKS document {path} cannot be used: {reason}")]
    Jwks { path: PathBuf, reason: String },
}

/// The verified claims the server reads; others are ignored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Claims {
    pub sub: Option<String>,
    /// The rooms it admits to (`room` and `rooms`); `*` is every room.
    pub rooms: Vec<String>,
    pub exp: f64,
    pub admin: bool,
    /// What a member may do, and how it joins ([`Grants`]).
    pub grants: Grants,
}

/// What the server is told to check tokens with.
#[derive(Debug, Default, Clone)]
pub struct AuthKeys {
    pub secret: Option<String>,
    /// PEM files of public keys.
    pub key_files: Vec<PathBuf>,
    /// A JWKS document (a file).
    pub jwks: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

impl AuthKeys {
    /// Whether any key is given: auth is on.
    pub fn any(&self) -> bool {
        self.secret.is_some() || !self.key_files.is_empty() || self.jwks.is_some()
    }
}

/// One key and the algorithms it may check.
struct Key {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];

pub struct Auth {
    keys: Vec<Key>,
    /// The secret, to mint tokens with (`signaling token`, tests).
    signer: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: f64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth {{ keys: {}, <redacted> }}", self.keys.len())
    }
}

impl Auth {
    /// Checks tokens with one shared secret (any length: the start-up
    /// check is [`Auth::from_keys`]'s), and mints them with it.
    pub fn new(secret: &str) -> Self {
        Auth {
            keys: vec![Key {
                kid: None,
                algs: HMAC.to_vec(),
                key: DecodingKey::from_secret(secret.as_bytes()),
            }],
            signer: Some(EncodingKey::from_secret(secret.as_bytes())),
            issuer: None,
            audience: None,
            leeway: 0.0,
        }
    }

    /// The verifier `keys` describe, or `None` when no key is given (open
    /// mode). Every key is read and checked now.
    pub fn from_keys(keys: &AuthKeys) -> Result<Option<Auth>, KeyError> {
        if !keys.any() {
            return Ok(None);
        }
        let mut auth = match &keys.secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(KeyError::WeakSecret(secret.len()));
            }
            Some(secret) => Auth::new(secret),
            None => Auth {
                keys: Vec::new(),
                signer: None,
                issuer: None,
                audience: None,
                leeway: 0.0,
            },
        };
        auth.issuer = keys.issuer.clone();
        auth.audience = keys.audience.clone();
        auth.leeway = keys.leeway.as_secs_f64();
        for path in &keys.key_files {
            auth.keys.push(pem_key(path)?);
        }
        if let Some(path) = &keys.jwks {
            auth.keys.extend(jwks_keys(path)?);
        }
        Ok(Some(auth))
    }

    /// Verifies the signature and the time, issuer and audience claims, and
    /// returns the claims the server reads.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let mut validation = Validation::new(header.alg);
        // The claims are checked below, with fractional times and leeway.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        // Each key the token may be checked with is tried: a key of the
        // right kind but another size (an EC key of the other curve) fails
        // as a key, not as a signature, and the next one may fit.
        let mut result = Err(AuthError::NoKey);
        for k in self.keys.iter().filter(|k| k.fits(&header)) {
            use jsonwebtoken::errors::ErrorKind;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => return self.check(data.claims, now_unix as f64),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_) => return Err(AuthError::Malformed),
                    _ => result = Err(AuthError::Signature),
                },
            }
        }
        result
    }

    fn check(&self, claims: Map<String, Value>, now: f64) -> Result<Claims, AuthError> {
        let time = |name: &str| -> Result<Option<f64>, AuthError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or(AuthError::Malformed),
            }
        };
        let exp = time("exp")?.ok_or(AuthError::Malformed)?;
        if exp + self.leeway <= now {
            return Err(AuthError::Expired);
        }
        if time("nbf")?.is_some_and(|nbf| nbf - self.leeway > now) {
            return Err(AuthError::NotYetValid);
        }
        if time("iat")?.is_some_and(|iat| iat - self.leeway > now) {
            return Err(AuthError::IssuedInFuture);
        }
        if let Some(want) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(AuthError::Issuer);
            }
        }
        if let Some(want) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == want,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::Audience);
            }
        }
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let mut rooms: Vec<String> = text("room").into_iter().collect();
        if let Some(Value::Array(list)) = claims.get("rooms") {
            rooms.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        Ok(Claims {
            sub: text("sub"),
            rooms,
            exp,
            admin: claims.get("admin") == Some(&Value::Bool(true)),
            grants: Grants::read(&claims).ok_or(AuthError::Malformed)?,
        })
    }

    /// A join token for `room`: its claims (for the identity) if valid.
    pub fn verify_join(&self, token: &str, room: &str, now_unix: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now_unix)?;
        if claims.rooms.iter().any(|r| r == "*" || r == room) {
            Ok(claims)
        } else {
            Err(AuthError::WrongRoom)
        }
    }

    pub fn verify_admin(&self, token: &str, now_unix: u64) -> Result<(), AuthError> {
        if self.verify(token, now_unix)?.admin {
            Ok(())
        } else {
            Err(AuthError::NotAdmin)
        }
    }

    /// Signs `claims` (a JSON object) as an HS256 JWT with the secret. For
    /// operators (`signaling token`) and tests.
    ///
    /// # Panics
    /// Without a secret (a server checking public keys only cannot mint).
    pub fn sign(&self, claims: &Value) -> String {
        let key = self
            .signer
            .as_ref()
            .expect("minting needs the shared secret");
        // A JSON object always encodes.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .expect("claims are a JSON value")
    }
}

/// What a join token grants beyond the room, as LiveKit's video grant
/// does: the `grants` claim (an object, every field optional) and the
/// `name` and `same_identity` claims. Without a token (open mode) a member
/// may do everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// `grants.update_meta` (default true): may send `update`.
    pub update_meta: bool,
    /// `grants.broadcast` (default true): may send `message` without `to`.
    pub broadcast: bool,
    /// `name`: the display name, which the client's own `name` cannot change.
    pub name: Option<String>,
    /// `same_identity`: what a join does to a member of the room with the
    /// same `sub` (`None`: as the server's `--same-identity` says).
    pub same_identity: Option<SameIdentity>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            update_meta: true,
            broadcast: true,
            name: None,
            same_identity: None,
        }
    }
}

/// A room's rule for a second connection with the same verified identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SameIdentity {
    /// Both stay members, each with its own `peer_id`.
    #[default]
    Allow,
    /// The newer connection takes the place of the older one, which is
    /// removed (`peer-left` reason `replaced`, close code 4003).
    Replace,
}

impl Grants {
    /// The grants of a token's claims; `None` if one is of the wrong type
    /// (the token is then malformed, not silently granted more).
    fn read(claims: &Map<String, Value>) -> Option<Grants> {
        let mut g = Grants::default();
        match claims.get("grants") {
            None => {}
            Some(Value::Object(o)) => {
                let flag = |name: &str, default: bool| match o.get(name) {
                    None => Some(default),
                    Some(v) => v.as_bool(),
                };
                g.update_meta = flag("update_meta", true)?;
                g.broadcast = flag("broadcast", true)?;
            }
            Some(_) => return None,
        }
        g.name = match claims.get("name") {
            None => None,
            Some(v) => Some(v.as_str()?.to_owned()),
        };
        g.same_identity = match claims.get("same_identity").map(Value::as_str) {
            None => None,
            Some(Some("allow")) => Some(SameIdentity::Allow),
            Some(Some("replace")) => Some(SameIdentity::Replace),
            Some(_) => return None,
        };
        Some(g)
    }
}

impl Key {
    /// Whether this key may check a token with `header`: its algorithm is
    /// one of the key's, and its `kid`, if both have one, is the key's.
    fn fits(&self, header: &Header) -> bool {
        self.algs.contains(&header.alg)
            && match (&header.kid, &self.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A public key from a PEM file, whatever its type.
fn pem_key(path: &Path) -> Result<Key, KeyError> {
    let pem = read(path)?;
    let (key, algs) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        (k, RSA.to_vec())
    } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        (k, EC.to_vec())
    } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        (k, vec![Algorithm::EdDSA])
    } else {
        return Err(KeyError::NotAKey {
            path: path.to_path_buf(),
        });
    };
    Ok(Key {
        kid: None,
        algs,
        key,
    })
}

/// Every usable key of a JWKS document, each with its `kid`.
fn jwks_keys(path: &Path) -> Result<Vec<Key>, KeyError> {
    let bad = |reason: String| KeyError::Jwks {
        path: path.to_path_buf(),
        reason,
    };
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| bad(e.to_string()))?;
    let keys: Vec<Key> = set.keys.iter().filter_map(jwk_key).collect();
    if keys.is_empty() {
        return Err(bad("no key in it can verify a signature".into()));
    }
    Ok(keys)
}

/// One JWK as a key, if it is one the server can use.
fn jwk_key(jwk: &Jwk) -> Option<Key> {
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => HMAC.to_vec(),
    };
    // A key that names its algorithm checks that one only.
    let algs = match jwk.common.key_algorithm {
        Some(named) => {
            let alg: Algorithm = named.to_string().parse().ok()?;
            by_type.into_iter().filter(|a| *a == alg).collect()
        }
        None => by_type,
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algs,
        key,
    })
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    crate::ids::unix_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!";

    fn hs(alg: Algorithm, secret: &str, claims: Value) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("encodes")
    }

    fn with(keys: AuthKeys) -> Auth {
        Auth::from_keys(&keys).expect("keys").expect("auth on")
    }

    /// Asserts docs/protocol.md §12.1, §12.2.
    #[test]
    fn accepts_a_valid_token_for_its_room_or_any() {
        let a = Auth::new(SECRET);
        let t = a.sign(&json!({"sub":"alice","room":"r1","exp":NOW + 60}));
        assert_eq!(
            a.verify_join(&t, "r1", NOW).unwrap().sub.as_deref(),
            Some("alice")
        );
        assert_eq!(
            a.verify_join(&t, "r2", NOW).unwrap_err(),
            AuthError::WrongRoom
        );
        let any = a.sign(&json!({"room":"*","exp":NOW + 60}));
        assert!(a.verify_join(&any, "whatever", NOW).is_ok());
    }

    /// Asserts docs/protocol.md §12.1, §12.2.
    #[test]
    fn refuses_forged_expired_and_unsigned_tokens() {
        let a = Auth::new(SECRET);
        let other = Auth::new("another-secret-of-thirty-two-bytes!!")
            .sign(&json!({"room":"*","exp":NOW + 60}));
        assert_eq!(a.verify(&other, NOW).unwrap_err(), AuthError::Signature);
        let old = a.sign(&json!({"room":"*","exp":NOW - 1}));
        assert_eq!(a.verify(&old, NOW).unwrap_err(), AuthError::Expired);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_alg = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none"}"#),
            b64.encode(br#"{"room":"*","exp":9999999999}"#)
        );
        assert!(a.verify(&none_alg, NOW).is_err());
        for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(a.verify(junk, NOW).is_err(), "{junk}");
        }
        let no_exp = a.sign(&json!({"room":"*"}));
        assert_eq!(a.verify(&no_exp, NOW).unwrap_err(), AuthError::Malformed);
    }

    /// Asserts docs/protocol.md §12.1, §12.2.
    #[test]
    fn admin_needs_the_claim() {
        let a = Auth::new(SECRET);
        assert!(
            a.verify_admin(&a.sign(&json!({"admin":true,"exp":NOW + 5})), NOW)
                .is_ok()
        );
        for not in [
            json!({"exp":NOW + 5}),
            json!({"room":"*","exp":NOW + 5}),
            json!({"admin":"true","exp":NOW + 5}),
        ] {
            assert_eq!(
                a.verify_admin(&a.sign(&not), NOW).unwrap_err(),
                AuthError::NotAdmin,
                "{not}"
            );
        }
    }

    #[test]
    fn every_hmac_size_is_checked_with_the_secret() {
        let a = with(AuthKeys {
            secret: Some(SECRET.into()),
            ..AuthKeys::default()
        });
        for alg in HMAC {
            let t = hs(alg, SECRET, json!({"room":"*","exp":NOW + 60}));
            assert!(a.verify(&t, NOW).is_ok(), "{alg:?}");
            let forged = hs(
                alg,
                "not-the-secret-but-just-as-long-!!!",
                json!({"room":"*","exp":NOW + 60}),
            );
            assert_eq!(
                a.verify(&forged, NOW).unwrap_err(),
                AuthError::Signature,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn a_short_secret_is_refused_at_start() {
        let short = AuthKeys {
            secret: Some("x".repeat(MIN_SECRET_BYTES - 1)),
            ..AuthKeys::default()
        };
        assert!(matches!(
            Auth::from_keys(&short),
            Err(KeyError::WeakSecret(31))
        ));
        assert!(
            Auth::from_keys(&AuthKeys::default())
                .expect("no keys")
                .is_none()
        );
    }

    #[test]
    fn times_are_checked_with_the_leeway_and_may_be_fractional() {
        let a = with(AuthKeys {
            secret: Some(SECRET.into()),
            leeway: Duration::from_secs(5),
            ..AuthKeys::default()
        });
        let t = |claims: Value| a.verify(&hs(Algorithm::HS256, SECRET, claims), NOW);
        let now = NOW as f64;
        assert!(t(json!({"exp": now - 4.5})).is_ok(), "within the leeway");
        assert_eq!(t(json!({"exp": now - 5.0})), Err(AuthError::Expired));
        assert!(t(json!({"exp": now + 0.25})).is_ok(), "fractional exp");
        assert_eq!(t(json!({"exp": "soon"})), Err(AuthError::Malformed));
        assert!(t(json!({"exp": now + 60.0, "nbf": now + 4.0})).is_ok());
        assert_eq!(
            t(json!({"exp": now + 60.0, "nbf": now + 6.0})),
            Err(AuthError::NotYetValid)
        );
        assert!(t(json!({"exp": now + 60.0, "iat": now + 4.0})).is_ok());
        assert_eq!(
            t(json!({"exp": now + 60.0, "iat": now + 60.0})),
            Err(AuthError::IssuedInFuture)
        );
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let a = with(AuthKeys {
            secret: Some(SECRET.into()),
            issuer: Some("https://id.example".into()),
            audience: Some("signaling".into()),
            ..AuthKeys::default()
        });
        let t = |claims: Value| a.verify(&hs(Algorithm::HS256, SECRET, claims), NOW);
        let exp = NOW + 60;
        assert!(t(json!({"exp":exp,"iss":"https://id.example","aud":"signaling"})).is_ok());
        assert!(t(json!({"exp":exp,"iss":"https://id.example","aud":["x","signaling"]})).is_ok());
        assert_eq!(
            t(json!({"exp":exp,"iss":"https://evil.example","aud":"signaling"})),
            Err(AuthError::Issuer)
        );
        assert_eq!(
            t(json!({"exp":exp,"aud":"signaling"})),
            Err(AuthError::Issuer)
        );
        assert_eq!(
            t(json!({"exp":exp,"iss":"https://id.example","aud":"other"})),
            Err(AuthError::Audience)
        );
        assert_eq!(
            t(json!({"exp":exp,"iss":"https://id.example"})),
            Err(AuthError::Audience)
        );
    }

    #[test]
    fn a_jwks_key_is_chosen_by_kid_and_checks_only_its_algorithm() {
        let dir = std::env::temp_dir().join(format!("auth-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("jwks.json");
        use base64::Engine;
        let k = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let one = "the-first-key-of-thirty-two-bytes-or-more";
        let two = "the-second-key-of-thirty-two-bytes-or-more";
        let doc = json!({"keys":[
            {"kty":"oct","kid":"one","alg":"HS256","k":k(one)},
            {"kty":"oct","kid":"two","alg":"HS512","k":k(two)},
        ]});
        std::fs::write(&path, doc.to_string()).expect("written");
        let a = with(AuthKeys {
            jwks: Some(path.clone()),
            ..AuthKeys::default()
        });
        let signed = |alg, kid: &str, secret: &str| {
            let mut h = Header::new(alg);
            h.kid = Some(kid.into());
            let key = EncodingKey::from_secret(secret.as_bytes());
            jsonwebtoken::encode(&h, &json!({"room":"*","exp":NOW + 60}), &key).expect("encodes")
        };
        assert!(a.verify(&signed(Algorithm::HS256, "one", one), NOW).is_ok());
        assert!(a.verify(&signed(Algorithm::HS512, "two", two), NOW).is_ok());
        assert_eq!(
            a.verify(&signed(Algorithm::HS256, "two", two), NOW)
                .unwrap_err(),
            AuthError::NoKey,
            "two is for HS512 only"
        );
        assert_eq!(
            a.verify(&signed(Algorithm::HS256, "one", two), NOW)
                .unwrap_err(),
            AuthError::Signature
        );
        assert_eq!(
            a.verify(&signed(Algorithm::HS256, "three", one), NOW)
                .unwrap_err(),
            AuthError::NoKey
        );
        std::fs::write(&path, "{\"keys\":[]}").expect("written");
        assert!(matches!(
            Auth::from_keys(&AuthKeys {
                jwks: Some(path),
                ..AuthKeys::default()
            }),
            Err(KeyError::Jwks { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
