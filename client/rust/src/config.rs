use serde_json::Value;
use std::time::Duration;

/// How to reach the server and how hard to hold on to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws` (or `wss://`).
    pub url: String,
    /// An auth token, sent as `?token=` on every connection.
    pub token: Option<String>,
    /// How often the client pings (protocol `ping`) to find a dead connection.
    pub ping_interval: Duration,
    /// Silence after which the connection counts as lost.
    pub timeout: Duration,
    /// Reconnect (and resume) when the connection is lost.
    pub reconnect: bool,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Reconnect attempts before giving up (`Event::Closed`).
    pub max_attempts: u32,
    /// Messages kept while reconnecting, sent once back.
    pub queue: usize,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            token: None,
            ping_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            reconnect: true,
            max_backoff: Duration::from_secs(5),
            max_attempts: 20,
            queue: 1024,
        }
    }

    pub(crate) fn url_with_token(&self) -> String {
        match &self.token {
            Some(t) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}token={t}", self.url)
            }
            None => self.url.clone(),
        }
    }
}

/// What to join with.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    pub name: Option<String>,
    pub meta: Option<Value>,
    /// A join token (instead of, or besides, the connection's `?token=`).
    pub token: Option<String>,
}
