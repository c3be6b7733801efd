//! Webhooks: every room event (`event.rs`) POSTed to each configured
//! endpoint, signed (`sign.rs`), retried with backoff, in order per room,
//! dead-lettered after the last try (`deliver.rs`). The events come from
//! the cluster engine's [`EventLog`], where they were recorded with the
//! changes themselves: delivery is off the join path, and a receiver that
//! is down delays nobody but its own events. `docs/events.md` is the
//! receiver's side of it.

pub mod cli;
pub mod deliver;
pub mod sign;

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::bus::EventLog;
use crate::config::Config;
use crate::ids::NodeId;
use crate::metrics::Metrics;
pub use sign::Signer;

/// How endpoints are tried (`--webhook-*`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// One try's limit, connection included.
    pub timeout: Duration,
    /// Tries before an event is dead-lettered (the first included).
    pub max_attempts: u32,
    /// The wait after the first failed try; it doubles after each one.
    pub retry_base: Duration,
    /// The longest wait between tries.
    pub retry_max: Duration,
    /// Rooms delivered at once per endpoint (one event of a room at a time).
    pub concurrency: usize,
    /// How long a delivering node may be silent before another takes its
    /// endpoints and the events it held.
    pub claim_after: Duration,
}

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        Policy {
            timeout: c.webhook_timeout,
            max_attempts: c.webhook_max_attempts.max(1),
            retry_base: c.webhook_retry_base,
            retry_max: c.webhook_retry_max.max(c.webhook_retry_base),
            concurrency: c.webhook_concurrency.max(1),
            claim_after: c.webhook_claim_after.max(Duration::from_millis(100)),
        }
    }
}

/// One receiver.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: reqwest::Url,
    /// Its stable name: the same on every node and across restarts, so
    /// they share its delivery (Redis keys, metrics label, admin API).
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook-url {0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error(
        "--webhook-url needs --webhook-secret (or SIGNALING_WEBHOOK_SECRET_FILE): receivers must be able to tell our events from forged ones"
    )]
    NoSecret,
    #[error("--webhook-secret: {0}")]
    BadSecret(#[from] sign::KeyError),
    #[error("webhook HTTP client: {0}")]
    Client(String),
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, WebhookError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| WebhookError::BadUrl(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(WebhookError::BadUrl(url.to_owned()));
        }
        let digest = Sha256::digest(url.as_bytes());
        let id = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Endpoint { url: parsed, id })
    }
}

impl Endpoint {
    /// The URL without user info, query or fragment, which may hold
    /// credentials: what logs and the admin API show.
    pub fn redacted(&self) -> String {
        let url = &self.url;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        )
    }
}

/// What the server runs for its webhooks: the endpoints and what they share.
pub struct Webhooks {
    pub endpoints: Vec<Endpoint>,
    signer: Signer,
    policy: Policy,
    client: reqwest::Client,
}

impl Webhooks {
    /// The webhooks `config` asks for (`None`: no `--webhook-url`). Checked
    /// before the server starts: a bad URL or a missing or weak secret is a
    /// start error.
    pub fn from_config(config: &Config) -> Result<Option<Webhooks>, WebhookError> {
        if config.webhook_url.is_empty() {
            return Ok(None);
        }
        let endpoints = config
            .webhook_url
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let secret = config
            .webhook_secret
            .as_ref()
            .ok_or(WebhookError::NoSecret)?;
        let signer = Signer::new(secret.expose())?;
        let policy = Policy::from_config(config);
        let tls = crate::jwks::tls_config(None).map_err(|e| WebhookError::Client(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            // A redirect is an answer that is not 2xx: retried, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("signaling/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Some(Webhooks {
            endpoints,
            signer,
            policy,
            client,
        }))
    }

    /// Starts one deliverer per endpoint; they stop when `stop` is cancelled.
    pub fn start(
        self,
        log: Arc<dyn EventLog>,
        node: &NodeId,
        metrics: &Metrics,
        stop: CancellationToken,
    ) {
        for endpoint in self.endpoints {
            let deliverer = deliver::Deliverer {
                metrics: metrics.webhook(&endpoint.id),
                endpoint,
                log: log.clone(),
                node: node.as_str().to_owned(),
                signer: self.signer.clone(),
                policy: self.policy.clone(),
                client: self.client.clone(),
            };
            tokio::spawn(deliverer.run(stop.clone()));
        }
    }
}

/// Waits, at most `within`, until no event is left to deliver to any of
/// `endpoints` (the end of a drain).
pub async fn drained(log: &dyn EventLog, endpoints: &[Endpoint], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    for e in endpoints {
        while matches!(log.backlog(&e.id).await, Ok((waiting, _)) if waiting > 0) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(endpoint = %e.id, "stopping with webhook events undelivered");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_named_by_their_url_alone() {
        let a = Endpoint::parse("http://127.0.0.1:9/hook").unwrap();
        let b = Endpoint::parse("http://127.0.0.1:9/hook").unwrap();
        let c = Endpoint::parse("http://127.0.0.1:9/other").unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.len(), 12);
        for bad in ["ftp://x/", "not a url", "http://", "unix:/tmp/s"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
