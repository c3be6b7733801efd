//! `signaling webhooks dead-letters | replay`: a Redis cluster's webhook
//! dead letters, listed and sent again from the command line, for when no
//! instance is at hand to ask through the admin API, or none is up.
//!
//! It talks to Redis alone, over one connection, and is no node: it takes
//! no node lease and sends no heartbeat, so it can run beside the cluster
//! without counting as one of its instances. It reads and writes the
//! streams the Redis event log keeps (`bus/redis/events.rs`), named by
//! [`Keys`], and does to them what the log's own replay does: a replay is
//! then delivered by whichever instance delivers the endpoint.
//!
//! Without Redis the dead letters live in the server's memory, out of this
//! process's reach: the command says so and points at the admin API.

use redis::aio::MultiplexedConnection;
use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use super::Endpoint;
use crate::bus::DeadLetter;
use crate::bus::redis::{Keys, dead_letters_in, replay_dead};
use crate::config::{Config, WebhooksCommand};
use crate::server::StartError;

/// How long Redis may take to answer one command (or to connect).
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] StartError),
    #[error(
        "without Redis the dead letters live in the server process: use the admin API (GET /api/webhooks/...)"
    )]
    NoRedis,
    #[error("--endpoint {0:?} is neither an endpoint id (12 hex digits) nor an http(s) URL")]
    BadEndpoint(String),
    #[error("invalid --redis-url: {0}")]
    BadUrl(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The exit status: 2 for what the command line or the configuration
    /// got wrong (as for a refused start), 1 for Redis failing.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Redis(_) | CliError::Timeout(_) | CliError::Output(_) => 1,
            _ => 2,
        }
    }
}

/// Runs the command; returns the exit status (its error said on stderr).
pub async fn run(config: &mut Config, cmd: &WebhooksCommand) -> i32 {
    match execute(config, cmd).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("signaling webhooks: {e}");
            e.exit_code()
        }
    }
}

async fn execute(config: &mut Config, cmd: &WebhooksCommand) -> Result<(), CliError> {
    crate::server::resolve_secrets(config)?;
    let url = config.redis_url.clone().ok_or(CliError::NoRedis)?;
    let keys = Keys::new(&config.redis_prefix);
    match cmd {
        WebhooksCommand::DeadLetters { endpoint, limit } => {
            let group = endpoint_id(endpoint)?;
            let mut conn = connect(&url).await?;
            let letters = timed(dead_letters_in(&mut conn, &keys, &group, *limit as usize)).await?;
            print_letters(letters.into_iter())
        }
        WebhooksCommand::Replay { endpoint, ids } => {
            let group = endpoint_id(endpoint)?;
            let mut conn = connect(&url).await?;
            let wanted = (!ids.is_empty()).then_some(ids.as_slice());
            let replayed: HashSet<String> = timed(replay_dead(&mut conn, &keys, &group, wanted))
                .await?
                .into_iter()
                .collect();
            for id in ids.iter().filter(|id| !replayed.contains(*id)) {
                eprintln!("signaling webhooks: no dead letter of this endpoint has event id {id}");
            }
            println!("replayed {}", replayed.len());
            Ok(())
        }
    }
}

/// The endpoint's id: given as such, or computed from its URL as the
/// servers compute it (so it must be the URL exactly as they are given it).
fn endpoint_id(given: &str) -> Result<String, CliError> {
    if given.len() == 12 && given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(given.to_ascii_lowercase());
    }
    Endpoint::parse(given)
        .map(|e| e.id)
        .map_err(|_| CliError::BadEndpoint(given.to_owned()))
}

async fn connect(url: &str) -> Result<MultiplexedConnection, CliError> {
    // The error of a bad URL does not repeat the URL (it may hold a password).
    let client = redis::Client::open(url).map_err(|e| CliError::BadUrl(e.to_string()))?;
    timed(client.get_multiplexed_async_connection()).await
}

async fn timed<T>(op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, CliError> {
    tokio::time::timeout(TIMEOUT, op)
        .await
        .map_err(|_| CliError::Timeout(TIMEOUT))?
        .map_err(CliError::from)
}

/// One JSON object a line. A reader that stops early (`| head`) ends the
/// listing, not as an error.
fn print_letters(letters: impl Iterator<Item = DeadLetter>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for letter in letters {
        let line = serde_json::to_string(&letter).map_err(std::io::Error::other)?;
        match writeln!(out, "{line}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_named_by_its_id_or_its_url() {
        let url = "http://127.0.0.1:9/hook";
        let id = Endpoint::parse(url).expect("a URL").id;
        assert_eq!(endpoint_id(url).expect("by URL"), id);
        assert_eq!(endpoint_id(&id).expect("by id"), id);
        assert_eq!(endpoint_id(&id.to_ascii_uppercase()).expect("by id"), id);
        for bad in ["", "abc", "not a url", "ftp://x/"] {
            assert!(
                matches!(endpoint_id(bad), Err(CliError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }
}
