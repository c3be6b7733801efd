//! Webhook signatures, after the Standard Webhooks scheme
//! (<https://www.standardwebhooks.com>), so receivers can check them with
//! its libraries or a few lines of their own (`docs/events.md`):
//!
//! - `webhook-id`: the event's id (the idempotency key);
//! - `webhook-timestamp`: unix seconds when this try was sent;
//! - `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 over
//!   `<id>.<timestamp>.<body>`.
//!
//! The key is the secret's bytes, or, for a secret written `whsec_<base64>`
//! (the scheme's own form), the bytes that base64 stands for.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a `whsec_` webhook secret must be base64 after the prefix")]
    NotBase64,
    #[error(
        "the webhook secret is too short: give at least 24 bytes (32 random bytes as base64 after `whsec_` is usual)"
    )]
    TooShort,
}

/// Keys shorter than this are refused: HMAC is only as strong as its key.
const MIN_KEY_BYTES: usize = 24;

impl Signer {
    pub fn new(secret: &str) -> Result<Signer, KeyError> {
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => STANDARD.decode(b64).map_err(|_| KeyError::NotBase64)?,
            None => secret.as_bytes().to_vec(),
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort);
        }
        Ok(Signer { key })
    }

    /// The `webhook-signature` value for `body` of event `id` sent at
    /// `timestamp` (unix seconds).
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The scheme's published example (its README and test vectors).
        let s = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn weak_or_broken_secrets_are_refused() {
        assert_eq!(Signer::new("short").unwrap_err(), KeyError::TooShort);
        assert_eq!(Signer::new("whsec_!!!").unwrap_err(), KeyError::NotBase64);
        assert!(Signer::new("a-plain-secret-of-enough-bytes-123").is_ok());
    }
}
