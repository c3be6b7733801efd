//! TLS termination (`--tls-cert` / `--tls-key`), so the one-binary
//! deployment can serve the call page to browsers on a secure origin
//! (cameras need one) without a proxy in front.
//!
//! The certificate lives behind a [`CertResolver`]: every handshake takes the
//! current one, and [`watch`] swaps it when the files change, so a renewal
//! (certbot, a Kubernetes secret) needs no restart. The watch polls the
//! files' metadata and content rather than using inotify: it works on every
//! filesystem (network mounts, overlay) and through symlink swaps, as
//! certbot's `live/` links and Kubernetes' `..data` link do. A reload that
//! fails (half-written files, a key of another certificate) is logged and
//! the previous certificate stays in use.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("give both --tls-cert and --tls-key (or neither): only {given} was given")]
    HalfConfigured { given: &'static str },
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate file {path} is not valid PEM: {source}")]
    CertPem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate (-----BEGIN CERTIFICATE-----) in {0}")]
    NoCertificate(PathBuf),
    #[error(
        "no private key (-----BEGIN PRIVATE KEY-----, EC or RSA PRIVATE KEY) in {path}: {source}"
    )]
    NoKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the private key in {path} is not usable (an unsupported or corrupt key): {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {path} is not usable: {source}")]
    BadCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Both paths or neither: one alone is a mistake worth refusing to start
    /// over, not a reason to serve plain HTTP.
    pub fn from_flags(
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::HalfConfigured {
                given: "--tls-cert",
            }),
            (None, Some(_)) => Err(TlsError::HalfConfigured { given: "--tls-key" }),
        }
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok((read("certificate", &self.cert)?, read("key", &self.key)?))
    }

    /// The certificate chain and key from these bytes (the files' content).
    fn parse(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::CertPem {
                path: self.cert.clone(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::NoKey {
            path: self.key.clone(),
            source,
        })?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::BadKey {
                path: self.key.clone(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            // `Unknown`: the key cannot tell its public half; rustls's own
            // loader lets that pass too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
            }),
            Err(source) => Err(TlsError::BadCertificate {
                path: self.cert.clone(),
                source,
            }),
        }
    }
}

/// The certificate every new handshake presents; swapped by [`watch`].
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock only means a panic elsewhere while swapping an
        // `Arc`: the value inside is whole either way.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut c) => *c = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// A loaded TLS setup: the acceptor handshakes use, and what [`watch`]
/// needs to reload it.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    files: TlsFiles,
    /// The files' content as last loaded (or last refused), so an unchanged
    /// file is neither reloaded nor reported again.
    seen: (Vec<u8>, Vec<u8>),
}

impl Tls {
    /// Reads and checks the files; any error refuses the start.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, key_pem) = files.read()?;
        let key = files.parse(&cert_pem, &key_pem, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only, as the plain listener: WebSockets and the page need
        // nothing else (see accept.rs).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            provider,
            files,
            seen: (cert_pem, key_pem),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reloads if the files' content changed since the last look. `Ok(true)`:
    /// a new certificate is in use; `Ok(false)`: nothing changed. On an
    /// error the previous certificate stays.
    pub fn reload_if_changed(&mut self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = self.files.read()?;
        if (&cert_pem, &key_pem) == (&self.seen.0, &self.seen.1) {
            return Ok(false);
        }
        let parsed = self.files.parse(&cert_pem, &key_pem, &self.provider);
        // Refused content counts as seen too: it is reported once, and
        // tried again only once the files change again.
        self.seen = (cert_pem, key_pem);
        self.resolver.set(Arc::new(parsed?));
        Ok(true)
    }
}

/// Polls the files every `interval` until `stop`, swapping the certificate
/// when they change. Reading two small files every few seconds costs next
/// to nothing, and comparing content (not only the modification time) also
/// catches a symlink swapped to older files and a rewrite within one tick
/// of a coarse filesystem clock.
pub async fn watch(mut tls: Tls, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // A missing file is reported once per outage, not once per poll.
    let mut unreadable = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // The reads are small but blocking; off the runtime's threads.
        let (back, result) = match tokio::task::spawn_blocking(move || {
            let r = tls.reload_if_changed();
            (tls, r)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                error!(error = %e, "TLS certificate watch failed: certificate reload stopped");
                return;
            }
        };
        tls = back;
        match result {
            Ok(true) => {
                unreadable = false;
                info!(cert = %tls.files.cert.display(), "TLS certificate reloaded");
            }
            Ok(false) => unreadable = false,
            Err(e @ TlsError::Read { .. }) => {
                if !unreadable {
                    error!(error = %e, "TLS certificate reload failed: keeping the previous certificate");
                }
                unreadable = true;
            }
            Err(e) => {
                unreadable = false;
                error!(error = %e, "TLS certificate reload failed: keeping the previous certificate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_flags_or_neither() {
        let p = PathBuf::from("x.pem");
        assert!(matches!(TlsFiles::from_flags(None, None), Ok(None)));
        assert!(matches!(
            TlsFiles::from_flags(Some(&p), Some(&p)),
            Ok(Some(_))
        ));
        let half = TlsFiles::from_flags(Some(&p), None).unwrap_err();
        assert!(half.to_string().contains("both --tls-cert and --tls-key"));
        assert!(TlsFiles::from_flags(None, Some(&p)).is_err());
    }

    #[test]
    fn files_without_pem_are_refused_with_what_is_missing() {
        let files = TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        let provider = rustls::crypto::ring::default_provider();
        let e = files
            .parse(b"not a certificate\n", b"", &provider)
            .unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        let e = files
            .parse(
                b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
                b"",
                &provider,
            )
            .unwrap_err();
        assert!(matches!(e, TlsError::CertPem { .. }), "{e}");
    }
}
