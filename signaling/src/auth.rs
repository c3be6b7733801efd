//! HS256 JWTs: join tokens (`sub`, `room`, `exp`) and admin tokens (`admin: true`).
//!
//! Only HS256 is accepted, whatever the header claims, so an `alg: none` or
//! RS/HS confusion token cannot pass. The secret and tokens never reach logs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm must be HS256")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token is not valid for this room")]
    WrongRoom,
    #[error("token does not grant admin access")]
    NotAdmin,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The claims the server reads; others are ignored.
#[derive(Deserialize, Debug, Default)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub admin: bool,
}

pub struct Auth {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { secret: <redacted> }")
    }
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        Auth {
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// Verifies signature and expiry, and returns the claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = decode_part(h)?;
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::Malformed)?;
        let mut mac = HmacSha256::new_from_slice(&self.secret).map_err(|_| AuthError::Signature)?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| AuthError::Signature)?;
        let claims: Claims = decode_part(p)?;
        if claims.exp <= now_unix {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    /// A join token for `room`: its claims (for the default name) if valid.
    pub fn verify_join(&self, token: &str, room: &str, now_unix: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now_unix)?;
        match claims.room.as_deref() {
            Some("*") => Ok(claims),
            Some(r) if r == room => Ok(claims),
            _ => Err(AuthError::WrongRoom),
        }
    }

    pub fn verify_admin(&self, token: &str, now_unix: u64) -> Result<(), AuthError> {
        if self.verify(token, now_unix)?.admin {
            Ok(())
        } else {
            Err(AuthError::NotAdmin)
        }
    }

    /// Signs `claims` (a JSON object) as an HS256 JWT. For operators and tests.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }
}

fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
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

    /// Asserts docs/protocol.md §12.1, §12.2.
    #[test]
    fn accepts_a_valid_token_for_its_room_or_any() {
        let a = Auth::new("s3cret");
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
        let a = Auth::new("s3cret");
        let other = Auth::new("other").sign(&json!({"room":"*","exp":NOW + 60}));
        assert_eq!(a.verify(&other, NOW).unwrap_err(), AuthError::Signature);
        let old = a.sign(&json!({"room":"*","exp":NOW - 1}));
        assert_eq!(a.verify(&old, NOW).unwrap_err(), AuthError::Expired);
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"room":"*","exp":9999999999}"#)
        );
        assert_eq!(a.verify(&none_alg, NOW).unwrap_err(), AuthError::Algorithm);
        for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(a.verify(junk, NOW).is_err(), "{junk}");
        }
        let no_exp = a.sign(&json!({"room":"*"}));
        assert_eq!(a.verify(&no_exp, NOW).unwrap_err(), AuthError::Malformed);
    }

    /// Asserts docs/protocol.md §12.1, §12.2.
    #[test]
    fn admin_needs_the_claim() {
        let a = Auth::new("k");
        assert!(
            a.verify_admin(&a.sign(&json!({"admin":true,"exp":NOW + 5})), NOW)
                .is_ok()
        );
        assert_eq!(
            a.verify_admin(&a.sign(&json!({"exp":NOW + 5})), NOW)
                .unwrap_err(),
            AuthError::NotAdmin
        );
    }
}
