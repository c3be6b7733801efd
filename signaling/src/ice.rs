//! `joined.ice_servers`: the STUN URLs as configured, and TURN with
//! short-lived credentials in the TURN REST scheme that coturn checks with
//! `use-auth-secret`: username `<unix expiry>:<who>` (the token's `sub`, or
//! the peer id without one), password base64(HMAC-SHA1(secret, username)).
//! The secret never leaves this module.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;
use std::time::Duration;

use crate::config::{Config, Secret};
use crate::ids::PeerId;

pub struct IceConfig {
    stun: Vec<String>,
    turn: Option<Turn>,
}

struct Turn {
    urls: Vec<String>,
    secret: Secret,
    ttl: Duration,
}

impl IceConfig {
    pub fn from_config(c: &Config) -> IceConfig {
        let turn = match (&c.turn_secret, c.turn_urls.iter().all(|u| u.is_empty())) {
            (Some(secret), false) => Some(Turn {
                urls: c.turn_urls.clone(),
                secret: secret.clone(),
                ttl: c.turn_ttl,
            }),
            _ => None,
        };
        // `SIGNALING_STUN_URLS=""` parses as one empty URL: drop empties.
        IceConfig {
            stun: c
                .stun_urls
                .iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect(),
            turn,
        }
    }

    /// The `ice_servers` JSON array for `peer`, with credentials valid from
    /// `now_unix` for the configured TTL. The TURN username names the
    /// token's verified identity when there is one, so coturn's per-user
    /// quota binds a person, not each of their joins; else the peer id.
    pub fn for_peer(&self, peer: &PeerId, identity: Option<&str>, now_unix: u64) -> String {
        let mut list = Vec::new();
        if !self.stun.is_empty() {
            list.push(json!({ "urls": self.stun }));
        }
        if let Some(t) = &self.turn {
            let who = identity.unwrap_or(peer.as_str());
            let username = format!("{}:{who}", now_unix + t.ttl.as_secs());
            let credential = turn_password(t.secret.expose(), &username);
            list.push(json!({ "urls": t.urls, "username": username, "credential": credential }));
        }
        serde_json::Value::Array(list).to_string()
    }
}

/// base64(HMAC-SHA1(secret, username)).
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Asserts docs/protocol.md §12.3.
    #[test]
    fn password_is_base64_of_hmac_sha1() {
        // The well-known HMAC-SHA1 example; coturn itself checks the scheme
        // in tests/tests/turn.rs.
        assert_eq!(
            turn_password("key", "The quick brown fox jumps over the lazy dog"),
            "3nybhbi3iqa8ino29wqQcBydtNk="
        );
    }

    /// Asserts docs/protocol.md §12.3.
    #[test]
    fn ice_servers_carry_stun_and_ephemeral_turn() {
        let c = Config {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some(Secret::from("s3cret")),
            turn_ttl: Duration::from_secs(600),
            ..Default::default()
        };
        let ice = IceConfig::from_config(&c);
        let v: Value =
            serde_json::from_str(&ice.for_peer(&PeerId::new("p1"), None, 1_000)).unwrap();
        assert_eq!(v[0]["urls"][0], "stun:127.0.0.1:3478");
        assert_eq!(v[1]["username"], "1600:p1");
        assert_eq!(v[1]["credential"], turn_password("s3cret", "1600:p1"));
        assert!(
            !v.to_string().contains("s3cret"),
            "the secret is never handed out"
        );
        let none = IceConfig::from_config(&Config::default());
        assert_eq!(none.for_peer(&PeerId::new("p"), None, 0), "[]");
    }
}
