//! Test certificates, made by the shipped `scripts/make-cert` (so the script
//! is exercised by every TLS test) in a folder of the test's own.

use std::path::PathBuf;
use std::process::Command;

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
