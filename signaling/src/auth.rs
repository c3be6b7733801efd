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
//! EdDSA), and the keys of a JWKS document, chosen by `kid`: from a file,
//! or from a URL, fetched at start and kept fresh (`jwks.rs`). A token's
//! algorithm picks the keys that may check it, so no `none`, and no
//! RS-to-HS confusion: a public key is never taken for a secret.
//!
//! Admin keys apart (`--admin-auth-*`): when any is given, admin tokens are
//! checked with those keys only and join tokens never with them, so a
//! leaked join key (or an identity provider that signs every user's token)
//! cannot mint an admin token. Without them both are checked with the same
//! keys, and only the `admin` claim tells them apart.
//!
//! Claims: `exp` is required (whole or fractional seconds); `nbf` and `iat`
//! are honoured if present (a token issued in the future is refused);
//! `iss` and `aud` are required when the server is given them. Each time
//! check allows a small leeway for clocks that disagree. Secrets and tokens
//! never reach logs.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::jwks::{FetchError, JwksUrl, RemoteJwks};

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
    #[error(
        "the admin auth secret is {0} bytes: at least {MIN_SECRET_BYTES} are required (try `openssl rand -base64 32`)"
    )]
    WeakAdminSecret(usize),
    #[error(
        "admin keys (--admin-auth-secret, --admin-auth-key) are given without join keys: give --auth-secret, --auth-key, --auth-jwks or --auth-jwks-url too"
    )]
    AdminWithoutJoinKeys,
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no RSA, EC (P-256, P-384) or Ed25519 public key in PEM")]
    NotAKey { path: PathBuf },
    #[error("the JWKS document {path} cannot be used: {reason}")]
    Jwks { path: PathBuf, reason: String },
    #[error("cannot use the JWKS at {url}: {source}")]
    JwksUrl { url: String, source: FetchError },
    #[error("cannot use {path} as the CA of --auth-jwks-url: {reason}")]
    JwksCa { path: PathBuf, reason: String },
    #[error("cannot set up the HTTP client of --auth-jwks-url: {0}")]
    HttpClient(String),
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
    /// A JWKS document at a URL, kept fresh.
    pub jwks_url: Option<JwksUrl>,
    /// Admin keys apart: a secret and PEM files that alone check admin
    /// tokens, when any is given.
    pub admin_secret: Option<String>,
    pub admin_key_files: Vec<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

impl AuthKeys {
    /// Whether any join key is given: auth is on.
    pub fn any(&self) -> bool {
        self.secret.is_some()
            || !self.key_files.is_empty()
            || self.jwks.is_some()
            || self.jwks_url.is_some()
    }

    /// Whether admin keys are given apart.
    pub fn any_admin(&self) -> bool {
        self.admin_secret.is_some() || !self.admin_key_files.is_empty()
    }
}

/// One key and the algorithms it may check.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// The keys one kind of token is checked with: those read at start, and
/// those of a JWKS URL as last fetched.
#[derive(Default)]
struct KeyRing {
    fixed: Vec<Key>,
    remote: Option<Arc<RemoteJwks>>,
}

impl KeyRing {
    fn secret(secret: &str) -> Key {
        Key {
            kid: None,
            algs: HMAC.to_vec(),
            key: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    fn len(&self) -> usize {
        self.fixed.len() + self.remote.as_ref().map_or(0, |r| r.keys().len())
    }

    /// The claims of `token` (whose header is `header`) if a key that fits
    /// the header verifies its signature; the claims are not checked yet.
    fn decode(&self, token: &str, header: &Header) -> Result<Map<String, Value>, AuthError> {
        let mut validation = Validation::new(header.alg);
        // The claims are checked by `Auth::check`, with fractional times
        // and leeway.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let remote = self.remote.as_ref().map(|r| r.keys());
        let keys = self
            .fixed
            .iter()
            .chain(remote.iter().flat_map(|g| g.iter()));
        // Each key the token may be checked with is tried: a key of the
        // right kind but another size (an EC key of the other curve) fails
        // as a key, not as a signature, and the next one may fit.
        let mut result = Err(AuthError::NoKey);
        for k in keys.filter(|k| k.fits(header)) {
            use jsonwebtoken::errors::ErrorKind;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => return Ok(data.claims),
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

    /// As [`decode`](Self::decode); a token whose `kid` no fetched key has
    /// waits (bounded) for the JWKS to be fetched again, then is tried once
    /// more (`jwks.rs`).
    async fn decode_or_refetch(
        &self,
        token: &str,
        header: &Header,
    ) -> Result<Map<String, Value>, AuthError> {
        match self.decode(token, header) {
            Err(e @ (AuthError::NoKey | AuthError::Signature)) => {
                match (&header.kid, &self.remote) {
                    (Some(kid), Some(remote))
                        if !remote.knows(kid) && remote.refetch_for(kid).await =>
                    {
                        self.decode(token, header)
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }
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
    /// Join tokens, and admin tokens when no admin keys are given.
    join: KeyRing,
    /// `--admin-auth-*`: admin tokens are checked with these alone.
    admin: Option<KeyRing>,
    /// The secret, to mint tokens with (`signaling token`, tests).
    signer: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: f64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Auth {{ keys: {}, admin keys: {:?}, <redacted> }}",
            self.join.len(),
            self.admin.as_ref().map(KeyRing::len)
        )
    }
}

impl Auth {
    /// Checks tokens with one shared secret (any length: the start-up
    /// check is [`Auth::from_keys`]'s), and mints them with it.
    pub fn new(secret: &str) -> Self {
        Auth {
            join: KeyRing {
                fixed: vec![KeyRing::secret(secret)],
                remote: None,
            },
            admin: None,
            signer: Some(EncodingKey::from_secret(secret.as_bytes())),
            issuer: None,
            audience: None,
            leeway: 0.0,
        }
    }

    /// The verifier `keys` describe, or `None` when no key is given (open
    /// mode). Every key is read and checked now, and a JWKS URL fetched.
    pub async fn from_keys(keys: &AuthKeys) -> Result<Option<Auth>, KeyError> {
        if !keys.any() {
            if keys.any_admin() {
                return Err(KeyError::AdminWithoutJoinKeys);
            }
            return Ok(None);
        }
        let mut join = KeyRing::default();
        let mut signer = None;
        if let Some(secret) = &keys.secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(KeyError::WeakSecret(secret.len()));
            }
            join.fixed.push(KeyRing::secret(secret));
            signer = Some(EncodingKey::from_secret(secret.as_bytes()));
        }
        for path in &keys.key_files {
            join.fixed.push(pem_key(path)?);
        }
        if let Some(path) = &keys.jwks {
            join.fixed.extend(jwks_keys(path)?);
        }
        let admin = if keys.any_admin() {
            let mut admin = KeyRing::default();
            if let Some(secret) = &keys.admin_secret {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(KeyError::WeakAdminSecret(secret.len()));
                }
                admin.fixed.push(KeyRing::secret(secret));
            }
            for path in &keys.admin_key_files {
                admin.fixed.push(pem_key(path)?);
            }
            Some(admin)
        } else {
            None
        };
        // Last: a key file that cannot be read stops the start before the
        // network is asked.
        if let Some(url) = &keys.jwks_url {
            join.remote = Some(RemoteJwks::start(url).await?);
        }
        Ok(Some(Auth {
            join,
            admin,
            signer,
            issuer: keys.issuer.clone(),
            audience: keys.audience.clone(),
            leeway: keys.leeway.as_secs_f64(),
        }))
    }

    /// Verifies the signature (with the join keys held now, never waiting
    /// for a fetch) and the time, issuer and audience claims, and returns
    /// the claims the server reads.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let claims = self.join.decode(token, &header)?;
        self.check(claims, now_unix as f64)
    }

    /// As [`verify`](Self::verify) with `ring`, which may fetch a JWKS
    /// again for an unknown `kid`.
    async fn verify_with(
        &self,
        ring: &KeyRing,
        token: &str,
        now_unix: u64,
    ) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let claims = ring.decode_or_refetch(token, &header).await?;
        self.check(claims, now_unix as f64)
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

    /// A join token for `room`: its claims (for the identity) if valid,
    /// checked with the keys held now (never waiting for a fetch).
    pub fn verify_join(&self, token: &str, room: &str, now_unix: u64) -> Result<Claims, AuthError> {
        for_room(self.verify(token, now_unix)?, room)
    }

    /// An admin token, checked with the keys held now: with the admin keys
    /// when there are any, else with the join keys; either way it needs
    /// `"admin": true`.
    pub fn verify_admin(&self, token: &str, now_unix: u64) -> Result<(), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let claims = self.admin_keys().decode(token, &header)?;
        admin_only(self.check(claims, now_unix as f64)?)
    }

    /// What the server checks a join with: [`verify_join`](Self::verify_join),
    /// except that a token whose `kid` no fetched key has waits (bounded)
    /// for the JWKS URL to be fetched again.
    pub async fn check_join(
        &self,
        token: &str,
        room: &str,
        now_unix: u64,
    ) -> Result<Claims, AuthError> {
        for_room(self.verify_with(&self.join, token, now_unix).await?, room)
    }

    /// What the server checks `/api/*` with: [`verify_admin`](Self::verify_admin),
    /// with the JWKS refetch of [`check_join`](Self::check_join) when the
    /// join keys check admin tokens too.
    pub async fn check_admin(&self, token: &str, now_unix: u64) -> Result<(), AuthError> {
        admin_only(self.verify_with(self.admin_keys(), token, now_unix).await?)
    }

    fn admin_keys(&self) -> &KeyRing {
        self.admin.as_ref().unwrap_or(&self.join)
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

/// The claims of a join token if they open `room`.
fn for_room(claims: Claims, room: &str) -> Result<Claims, AuthError> {
    if claims.rooms.iter().any(|r| r == "*" || r == room) {
        Ok(claims)
    } else {
        Err(AuthError::WrongRoom)
    }
}

fn admin_only(claims: Claims) -> Result<(), AuthError> {
    if claims.admin {
        Ok(())
    } else {
        Err(AuthError::NotAdmin)
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

/// Every usable key of a JWKS document file, each with its `kid`.
fn jwks_keys(path: &Path) -> Result<Vec<Key>, KeyError> {
    document_keys(&read(path)?).map_err(|reason| KeyError::Jwks {
        path: path.to_path_buf(),
        reason,
    })
}

/// Every usable key of a JWKS document, each with its `kid`, or why there
/// is none.
pub(crate) fn document_keys(json: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let doc: Document = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    // One by one: providers publish keys this server has no use for
    // (encryption keys, algorithms it does not know), which must not spoil
    // the others.
    let keys: Vec<Key> = doc
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| jwk_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err("no key in it can verify a signature".into());
    }
    Ok(keys)
}

/// One JWK as a key, if it is one the server can use.
fn jwk_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
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
    if algs.is_empty() {
        return None;
    }
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

    /// `Auth::from_keys`, outside a runtime (no key here is fetched).
    fn from_keys(keys: &AuthKeys) -> Result<Option<Auth>, KeyError> {
        block_on(Auth::from_keys(keys))
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    fn with(keys: AuthKeys) -> Auth {
        from_keys(&keys).expect("keys").expect("auth on")
    }

    /// Asserts docs/protocol.md §12.1, §12.2.
    #[test]
    fn accepts_a_valid_token_for_its_room_or_any() {
        let a = Auth::new(SECRET);
        let t = a.sign(&json!({"sub":"alice","room":"r1","exp":NOW + 60}));
        assert_eq!(
            block_on(a.check_join(&t, "r1", NOW))
                .unwrap()
                .sub
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            block_on(a.check_join(&t, "r2", NOW)).unwrap_err(),
            AuthError::WrongRoom
        );
        let any = a.sign(&json!({"room":"*","exp":NOW + 60}));
        assert!(block_on(a.check_join(&any, "whatever", NOW)).is_ok());
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
            block_on(a.check_admin(&a.sign(&json!({"admin":true,"exp":NOW + 5})), NOW)).is_ok()
        );
        for not in [
            json!({"exp":NOW + 5}),
            json!({"room":"*","exp":NOW + 5}),
            json!({"admin":"true","exp":NOW + 5}),
        ] {
            assert_eq!(
                block_on(a.check_admin(&a.sign(&not), NOW)).unwrap_err(),
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
        assert!(matches!(from_keys(&short), Err(KeyError::WeakSecret(31))));
        assert!(from_keys(&AuthKeys::default()).expect("no keys").is_none());
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
            from_keys(&AuthKeys {
                jwks: Some(path),
                ..AuthKeys::default()
            }),
            Err(KeyError::Jwks { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Asserts docs/protocol.md §12.2: with admin keys, admin tokens are
    /// checked with them alone and join tokens never with them.
    #[test]
    fn admin_keys_apart_check_admin_tokens_alone() {
        const ADMIN: &str = "the-admin-secret-of-thirty-two-bytes!!";
        let a = with(AuthKeys {
            secret: Some(SECRET.into()),
            admin_secret: Some(ADMIN.into()),
            ..AuthKeys::default()
        });
        let admin = json!({"admin":true,"room":"*","exp":NOW + 60});
        let by_join_key = hs(Algorithm::HS256, SECRET, admin.clone());
        let by_admin_key = hs(Algorithm::HS256, ADMIN, admin);
        assert_eq!(
            block_on(a.check_admin(&by_join_key, NOW)),
            Err(AuthError::Signature)
        );
        assert_eq!(block_on(a.check_admin(&by_admin_key, NOW)), Ok(()));
        assert_eq!(a.verify_admin(&by_admin_key, NOW), Ok(()));
        assert_eq!(a.verify_admin(&by_join_key, NOW), Err(AuthError::Signature));
        assert_eq!(
            block_on(a.check_join(&by_admin_key, "r", NOW)).unwrap_err(),
            AuthError::Signature
        );
        assert!(block_on(a.check_join(&by_join_key, "r", NOW)).is_ok());
        let not_admin = hs(Algorithm::HS256, ADMIN, json!({"exp":NOW + 60}));
        assert_eq!(
            block_on(a.check_admin(&not_admin, NOW)),
            Err(AuthError::NotAdmin)
        );
        assert!(matches!(
            from_keys(&AuthKeys {
                admin_secret: Some(ADMIN.into()),
                ..AuthKeys::default()
            }),
            Err(KeyError::AdminWithoutJoinKeys)
        ));
        assert!(matches!(
            from_keys(&AuthKeys {
                secret: Some(SECRET.into()),
                admin_secret: Some("short".into()),
                ..AuthKeys::default()
            }),
            Err(KeyError::WeakAdminSecret(5))
        ));
    }

    #[test]
    fn a_document_s_keys_the_server_cannot_use_are_skipped() {
        use base64::Engine;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let doc = json!({"keys":[
            {"kty":"RSA","use":"enc","alg":"RSA-OAEP","kid":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"XYZ","kid":"unknown-type"},
            {"kty":"oct","kid":"enc-oct","use":"enc","k":k},
            {"kty":"oct","kid":"sig","alg":"HS256","k":k},
        ]});
        let keys = document_keys(doc.to_string().as_bytes()).expect("one usable key");
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("sig")]);
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"keys":[{"kty":"oct","use":"enc","k":"AA"}]}"#,
        ] {
            assert!(document_keys(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
