//! Test certificates, made by the shipped `scripts/make-cert` (so the script
//! is exercised by every TLS test) in a folder of the test's own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    /// A self-signed certificate for localhost, 127.0.0.1 and ::1 in a new
    /// temporary folder named after `label`.
    pub fn new(label: &str) -> TestCert {
        let dir = std::env::temp_dir().join(format!(
            "sig-cert-{label}-{}-{}",
            std::process::id(),
            crate::redis::free_port()
        ));
        TestCert::make(dir, &[])
    }

    /// A self-signed certificate for `names` (default: localhost and the
    /// loopback addresses) written into `dir`; again into the same folder
    /// replaces the files, as a renewal does.
    pub fn make(dir: PathBuf, names: &[&str]) -> TestCert {
        let script = crate::workspace_root().join("scripts/make-cert");
        let out = Command::new(&script)
            .arg(&dir)
            .args(names)
            .output()
            .expect("scripts/make-cert runs");
        assert!(
            out.status.success(),
            "scripts/make-cert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        }
    }

    /// The certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint`
    /// prints it: tells two certificates apart (a reload test).
    pub fn fingerprint(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&self.cert)
            .output()
            .expect("openssl runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl TestCert {
    /// A rustls client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(&self.cert).expect("test certificate") {
            roots.add(der.expect("PEM")).expect("a usable root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Opens a `wss://` WebSocket that trusts `cert`.
pub async fn connect_wss(
    url: &str,
    cert: &TestCert,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    let connector = Connector::Rustls(cert.client_config());
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector)).await?;
    Ok(ws)
}

/// A TLS connection to `addr` (its IP address as the server name) with
/// `config`; the handshake must end within 5 s.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connect = TlsConnector::from(config).connect(ServerName::from(addr.ip()), tcp);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The SHA-256 fingerprint of a DER certificate, as `openssl x509
/// -fingerprint -sha256` prints it (what [`TestCert::fingerprint`] returns).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let hex: Vec<String> = sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    format!("sha256 Fingerprint={}", hex.join(":"))
}

/// The fingerprint of the certificate a new handshake with `addr` is shown.
pub async fn presented(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> String {
    let s = tls_connect(addr, config).await.expect("TLS handshake");
    let chain = s.get_ref().1.peer_certificates().expect("a certificate");
    fingerprint(chain[0].as_ref())
}
