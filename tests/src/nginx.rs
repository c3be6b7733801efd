//! nginx processes of the tests' own (Debian `nginx`), on free loopback
//! ports, running the shipped `deploy/nginx.conf`.
//!
//! The shipped file is what compose mounts inside the nginx image's `http`
//! block. A test runs it rendered with only what cannot work on this machine
//! changed: the upstream `server` addresses (to real in-process nodes on
//! 127.0.0.1), the `listen` ports (free loopback ports), the certificate
//! paths, the static root (the repo's client/web), and the `resolve`
//! parameter of the upstream servers, which Debian 12's nginx 1.22 lacks (it
//! needs 1.27.3+; nothing is resolved at run time here, the upstreams are IP
//! addresses). The rest, `resolver` line included (unused without `resolve`),
//! stays byte for byte. Around it goes a main context like the image's own
//! nginx.conf (its `main` access log too, so a test sees what that one would
//! write), with pid, logs and temp paths inside the test's folder.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::redis::free_port;
use crate::tls::TestCert;

/// The shipped front, relative to the repo.
pub const SHIPPED: &str = "deploy/nginx.conf";

/// The image's main-context defaults (nginx:stable-alpine's
/// /etc/nginx/nginx.conf), with every path moved into `dir`.
fn main_context(dir: &Path, front: &Path) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log {d}/image-access.log main;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {front};
}}
"#,
        front = front.display()
    )
}

/// Where a rendered front listens and what it serves.
pub struct Render<'a> {
    /// The nodes, in the order of the upstream's `server` lines.
    pub upstreams: &'a [SocketAddr],
    pub http_port: u16,
    pub https_port: u16,
    pub cert: &'a TestCert,
}

/// `conf` (the text of a front config, shipped or an older one) with only
/// the overrides listed at the top of this file applied. Panics when the
/// file has something this cannot map (an unknown listen port, a different
/// number of upstream servers), rather than testing a config it guessed at.
pub fn render(conf: &str, r: &Render) -> String {
    let web = crate::workspace_root().join("client/web");
    let mut out = String::new();
    let mut upstream_servers = 0;
    let mut in_upstream = false;
    for line in conf.lines() {
        let code = line.split('#').next().unwrap_or("");
        let words: Vec<&str> = code.split_whitespace().collect();
        let indent = &line[..line.len() - line.trim_start().len()];
        let rendered = match words.as_slice() {
            ["upstream", ..] => {
                in_upstream = true;
                line.to_string()
            }
            ["}"] if in_upstream => {
                in_upstream = false;
                line.to_string()
            }
            ["server", _addr, params @ ..] if in_upstream => {
                let addr = r.upstreams.get(upstream_servers).unwrap_or_else(|| {
                    panic!("the front has more upstream servers than the test's nodes")
                });
                upstream_servers += 1;
                let params: Vec<&str> = params
                    .iter()
                    .map(|p| p.trim_end_matches(';'))
                    .filter(|p| !p.is_empty() && *p != "resolve")
                    .collect();
                format!("{indent}server {addr} {};", params.join(" "))
            }
            ["listen", port, rest @ ..] => {
                let port = port.trim_end_matches(';');
                let to = match port {
                    "80" => r.http_port,
                    "443" => r.https_port,
                    other => panic!("the front listens on {other}: map it in tests/src/nginx.rs"),
                };
                let rest = rest.join(" ");
                let rest = rest.trim_end_matches(';').trim();
                format!("{indent}listen 127.0.0.1:{to} {rest};")
            }
            ["ssl_certificate", ..] => {
                format!("{indent}ssl_certificate {};", r.cert.cert.display())
            }
            ["ssl_certificate_key", ..] => {
                format!("{indent}ssl_certificate_key {};", r.cert.key.display())
            }
            ["root", "/usr/share/nginx/html;"] => format!("{indent}root {};", web.display()),
            _ => line.to_string(),
        };
        out.push_str(&rendered);
        out.push('\n');
    }
    assert_eq!(
        upstream_servers,
        r.upstreams.len(),
        "the front balances over {upstream_servers} servers, the test runs {}",
        r.upstreams.len()
    );
    out
}

/// A running nginx with a rendered front.
pub struct Nginx {
    pub dir: PathBuf,
    pub http_port: u16,
    pub https_port: u16,
    /// A TLS client configuration that trusts the test certificate the
    /// front serves, and nothing else.
    pub tls: Arc<rustls::ClientConfig>,
    child: Option<Child>,
}

/// One HTTP exchange, as the client of this module saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in order, repeats kept.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }
}

impl Nginx {
    /// The shipped deploy/nginx.conf in front of `upstreams`.
    pub fn start(upstreams: &[SocketAddr], cert: &TestCert) -> Nginx {
        let conf = std::fs::read_to_string(crate::workspace_root().join(SHIPPED))
            .unwrap_or_else(|e| panic!("{SHIPPED}: {e}"));
        Nginx::start_conf(&conf, upstreams, cert)
    }

    /// Any front config text (e.g. an older commit's) rendered the same way.
    pub fn start_conf(conf: &str, upstreams: &[SocketAddr], cert: &TestCert) -> Nginx {
        let http_port = free_port();
        let https_port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "sig-nginx-{}-{http_port}-{https_port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("nginx test dir");
        let front = dir.join("front.conf");
        let rendered = render(
            conf,
            &Render {
                upstreams,
                http_port,
                https_port,
                cert,
            },
        );
        std::fs::write(&front, rendered).expect("write the rendered front");
        let main = dir.join("nginx.conf");
        std::fs::write(&main, main_context(&dir, &front)).expect("write nginx.conf");
        // The front's own access log goes to /dev/stdout (as in the image):
        // here that is a file of the test's.
        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("stdout log");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&main)
            .args(["-g", "daemon off;"])
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx must be installed (apt-get install -y nginx; scripts/test does)");
        let mut n = Nginx {
            dir,
            http_port,
            https_port,
            tls: cert.client_config(),
            child: Some(child),
        };
        n.wait_listening(conf);
        n
    }

    fn wait_listening(&mut self, conf: &str) {
        let mut ports = vec![self.http_port];
        if conf
            .lines()
            .any(|l| l.trim_start().starts_with("listen 443"))
        {
            ports.push(self.https_port);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!("nginx exited with {status}: {stderr}\n{}", self.error_log());
            }
            let up = ports.iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], *p)),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never listened on {ports:?}: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn https(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn wss(&self) -> String {
        format!("wss://127.0.0.1:{}/ws", self.https_port)
    }

    /// Everything nginx logged about requests: the front's own access log
    /// (its stdout) and the image's `main` log, should anything reach it.
    pub fn access_logs(&self) -> String {
        let mut all = String::new();
        for f in ["stdout.log", "image-access.log"] {
            all.push_str(&std::fs::read_to_string(self.dir.join(f)).unwrap_or_default());
        }
        all
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// A GET of `path` (sent exactly as given, never normalized) on the
    /// front's HTTPS port, trusting the test certificate only.
    pub async fn https_get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.get_with(Some(self.tls.clone()), self.https_port, path, headers)
            .await
            .unwrap_or_else(|e| panic!("GET https {path}: {e}"))
    }

    /// A GET of `path` on the front's plain HTTP port.
    pub async fn http_get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.get_with(None, self.http_port, path, headers)
            .await
            .unwrap_or_else(|e| panic!("GET http {path}: {e}"))
    }

    /// A GET on `port` over TLS with `tls` (any client configuration: other
    /// roots, other protocol versions) or in the clear; Err when the TLS
    /// handshake or the connection fails.
    pub async fn get_with(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let path = path.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Blocking I/O on a thread of its own: the nodes behind the front run
        // on the test's runtime and must keep answering meanwhile.
        tokio::task::spawn_blocking(move || get(tls, port, &path, &headers))
            .await
            .expect("the HTTP client thread")
    }
}

/// One HTTP/1.1 GET with `Connection: close` to 127.0.0.1:`port`, read to
/// the end. The Host header names the address and port, as a browser's does.
fn get(
    tls: Option<Arc<rustls::ClientConfig>>,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<Response, String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut stream: Box<dyn ReadWrite> = match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn =
                rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            // The handshake now, so a refused certificate or protocol version
            // is an Err here rather than an empty answer.
            while s.conn.is_handshaking() {
                s.conn
                    .complete_io(&mut s.sock)
                    .map_err(|e| format!("TLS handshake: {e}"))?;
            }
            Box::new(s)
        }
        None => Box::new(tcp),
    };
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A peer that closes without TLS close_notify, or a read timeout
            // after a complete answer: what arrived is the answer.
            Err(_) => break,
        }
    }
    parse(&raw).ok_or_else(|| format!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)))
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// A chunked body's data (what arrived of it).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&b[..eol]);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        b = &b[eol + 2..];
        if n == 0 || b.len() < n {
            out.extend_from_slice(&b[..n.min(b.len())]);
            break;
        }
        out.extend_from_slice(&b[..n]);
        b = b.get(n + 2..).unwrap_or(&[]);
    }
    out
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        // A failed test's logs stay for a look (its message names the folder
        // through the logs it quotes); a passed one leaves nothing behind.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Nginx {
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // TERM to the master (by its id) stops its workers too; a KILL would
        // leave them holding the ports.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
