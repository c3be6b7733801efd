//! `--auth-jwks-url`: the keys of an identity provider's JWKS document,
//! fetched over HTTP(S) and kept fresh, so a key the provider rotates in is
//! taken without a restart.
//!
//! The document is fetched at start (the server does not start without a
//! usable one), then every `--auth-jwks-refresh`, and again when a token
//! names a `kid` that no key held has: the provider has likely rotated.
//! That refetch is the only network wait a token check can meet, and it is
//! bounded: the check waits at most [`UNKNOWN_KID_WAIT`] for it (the fetch
//! goes on in the background if it takes longer, for the next token), and
//! such refetches start at most once per [`UNKNOWN_KID_REFETCH_EVERY`], so
//! made-up kids cost the provider one request per interval; a token whose
//! kid is unknown while that interval runs is refused at once. Waiting,
//! rather than refusing the first token signed with a new key, means a
//! rotation costs nobody a failed join. A fetch that fails or brings no
//! usable key keeps the keys held (a warning is logged).
//!
//! The keys are swapped whole ([`ArcSwap`]): a check reads the current set
//! without a lock and never sees half of a refresh.
//!
//! HTTPS verifies the provider's certificate: against `--auth-jwks-ca` when
//! given (instead of the platform's roots, for a private CA), else against
//! the platform's roots (`SSL_CERT_FILE` honoured). A redirect from HTTPS
//! may not leave HTTPS. Every fetch is bounded in time ([`FETCH_TIMEOUT`])
//! and size ([`MAX_JWKS_BYTES`]).

use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::auth::{Key, KeyError, document_keys};

/// The largest document taken: real ones are a few kB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A whole fetch (connect, TLS, headers, body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a token with an unknown `kid` waits for the refetch it causes.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(3);
/// At most one refetch for unknown kids per this interval.
pub const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;

/// Where the keys come from and how often they are fetched again.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    /// `http://` or `https://`.
    pub url: String,
    /// PEM certificates trusted for HTTPS instead of the platform's roots.
    pub ca: Option<PathBuf>,
    pub refresh: Duration,
}

/// Why one fetch brought no keys.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the document is over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The request failed (connection, TLS, time): the whole chain of causes.
    #[error("{0}")]
    Http(String),
    #[error("not a JWKS document: {0}")]
    Document(String),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's own message leaves out the cause (a refused connection,
        // an untrusted certificate) that an operator needs.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        FetchError::Http(text)
    }
}

/// The keys of one JWKS URL, as last fetched.
pub(crate) struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    keys: ArcSwap<Vec<Key>>,
    /// Counts finished fetches (whatever their outcome): a token waiting for
    /// a refetch watches it.
    fetched: watch::Sender<u64>,
    refetch: Mutex<Refetch>,
}

#[derive(Default)]
struct Refetch {
    /// When the last refetch for an unknown kid started.
    last: Option<Instant>,
    running: bool,
}

impl RemoteJwks {
    /// Fetches the document (a failure is a start error) and starts the
    /// periodic refresh, which ends when the returned value is dropped.
    pub(crate) async fn start(config: &JwksUrl) -> Result<Arc<RemoteJwks>, KeyError> {
        let client = client(config)?;
        let keys = fetch(&client, &config.url)
            .await
            .map_err(|source| KeyError::JwksUrl {
                url: config.url.clone(),
                source,
            })?;
        info!(url = %config.url, keys = keys.len(), every = ?config.refresh, "JWKS fetched: refreshed periodically");
        let remote = Arc::new(RemoteJwks {
            url: config.url.clone(),
            client,
            keys: ArcSwap::from_pointee(keys),
            fetched: watch::Sender::new(0),
            refetch: Mutex::new(Refetch::default()),
        });
        tokio::spawn(refresh_every(Arc::downgrade(&remote), config.refresh));
        Ok(remote)
    }

    /// The keys held now.
    pub(crate) fn keys(&self) -> arc_swap::Guard<Arc<Vec<Key>>> {
        self.keys.load()
    }

    /// Whether a key held now has this `kid`.
    pub(crate) fn knows(&self, kid: &str) -> bool {
        self.keys().iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Fetches the document again and keeps its keys, or, if that fails,
    /// the ones held.
    async fn refresh(&self) {
        match fetch(&self.client, &self.url).await {
            Ok(keys) => {
                debug!(url = %self.url, keys = keys.len(), "JWKS refreshed");
                self.keys.store(Arc::new(keys));
            }
            Err(e) => warn!(
                url = %self.url,
                error = %e,
                "JWKS refresh failed: the keys fetched before stay in use"
            ),
        }
    }

    fn refetch_state(&self) -> std::sync::MutexGuard<'_, Refetch> {
        // The state is two plain fields, valid whatever a panicking holder
        // did.
        self.refetch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// For a token whose `kid` no key held has: starts a refetch if none
    /// runs and the rate allows one, and waits (at most
    /// [`UNKNOWN_KID_WAIT`]) for a running one. Whether a key with `kid` is
    /// held afterwards.
    pub(crate) async fn refetch_for(self: &Arc<Self>, kid: &str) -> bool {
        // Subscribed before the fetch can start, so its end is never missed.
        let mut fetched = self.fetched.subscribe();
        {
            let mut state = self.refetch_state();
            if !state.running {
                let now = Instant::now();
                if state
                    .last
                    .is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_REFETCH_EVERY)
                {
                    return self.knows(kid);
                }
                state.last = Some(now);
                state.running = true;
                debug!(url = %self.url, "a token names an unknown kid: fetching the JWKS again");
                let me = self.clone();
                // Not tied to this check: a fetch slower than the wait still
                // serves the tokens after it.
                tokio::spawn(async move {
                    me.refresh().await;
                    me.refetch_state().running = false;
                    me.fetched.send_modify(|n| *n += 1);
                });
            }
        }
        let deadline = tokio::time::Instant::now() + UNKNOWN_KID_WAIT;
        loop {
            if self.knows(kid) {
                return true;
            }
            if !self.refetch_state().running {
                return false;
            }
            match tokio::time::timeout_at(deadline, fetched.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.knows(kid),
            }
        }
    }
}

/// Refreshes every `every` while the keys are in use.
async fn refresh_every(remote: Weak<RemoteJwks>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(remote) = remote.upgrade() else {
            return;
        };
        remote.refresh().await;
        remote.fetched.send_modify(|n| *n += 1);
    }
}

/// The HTTP client: rustls on ring (the server's own TLS stack), the
/// certificate checked against `--auth-jwks-ca` or the platform's roots.
fn client(config: &JwksUrl) -> Result<reqwest::Client, KeyError> {
    let tls = tls_config(config.ca.as_deref())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .https_only(config.url.starts_with("https://"))
        .user_agent(concat!("signaling/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| KeyError::HttpClient(FetchError::from(e).to_string()))
}

/// The TLS side of an HTTP client (here and for webhooks): rustls on ring
/// (the server's own stack), certificates checked against the PEM roots of
/// `ca`, else the platform's.
pub fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, KeyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KeyError::HttpClient(e.to_string()))?;
    Ok(match ca {
        Some(path) => builder
            .with_root_certificates(ca_roots(path)?)
            .with_no_client_auth(),
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| KeyError::HttpClient(e.to_string()))?
                .with_no_client_auth()
        }
    })
}

/// The certificates of a PEM file, as the only roots trusted.
fn ca_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, KeyError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| KeyError::JwksCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let der = der.map_err(|e| bad(e.to_string()))?;
        roots.add(der).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// One GET of the document: its usable keys.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<Key>, FetchError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    // Read a chunk at a time: a body without a length, or with a false
    // one, is still cut at the bound.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    document_keys(&body).map_err(FetchError::Document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/1.1 server on loopback answering every request with what
    /// `answer` holds (status, body); counts the requests.
    async fn serve(answer: Arc<Mutex<(u16, String)>>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer.lock().expect("answer").clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (url, hits)
    }

    fn doc(kids: &[&str]) -> String {
        use base64::Engine;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode("a-key-of-thirty-two-bytes-or-more-for-hs256");
        let keys: Vec<_> = kids
            .iter()
            .map(|kid| serde_json::json!({"kty":"oct","kid":kid,"alg":"HS256","k":k}))
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn config(url: &str) -> JwksUrl {
        JwksUrl {
            url: url.into(),
            ca: None,
            refresh: Duration::from_secs(300),
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let answer = Arc::new(Mutex::new((200, doc(&["a"]))));
        let (url, hits) = serve(answer.clone()).await;
        let remote = RemoteJwks::start(&config(&url)).await.expect("fetched");
        assert!(remote.knows("a"));
        *answer.lock().expect("answer") = (200, doc(&["b"]));
        assert!(remote.refetch_for("b").await, "the rotated key is fetched");
        assert!(!remote.knows("a"));
        assert!(!remote.refetch_for("c").await);
        assert!(!remote.refetch_for("a").await);
        assert_eq!(hits.load(Ordering::SeqCst), 2, "one refetch per interval");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_keys_and_bad_documents_stop_the_start() {
        let answer = Arc::new(Mutex::new((200, doc(&["a"]))));
        let (url, _) = serve(answer.clone()).await;
        let remote = RemoteJwks::start(&config(&url)).await.expect("fetched");
        for bad in [
            (500, doc(&["b"])),
            (200, "garbage".into()),
            (200, "{\"keys\":[]}".into()),
            (200, "x".repeat(MAX_JWKS_BYTES + 1)),
        ] {
            *answer.lock().expect("answer") = bad.clone();
            remote.refresh().await;
            assert!(remote.knows("a"), "{:?}", bad.0);
            let start = RemoteJwks::start(&config(&url)).await;
            assert!(
                matches!(start, Err(KeyError::JwksUrl { .. })),
                "{:?}",
                bad.0
            );
        }
    }
}
