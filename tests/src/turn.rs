//! coturn (`turnserver`) processes of the tests' own, on free loopback
//! ports: with the loopback test configuration (relaying between peers on
//! 127.0.0.1), or with the production configuration, only its listening and
//! relay addresses, ports, secret, certificate and file paths overridden.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::redis::free_port;
use crate::tls::TestCert;

/// The shipped production config and the loopback test config.
pub const PROD_CONF: &str = "turn-config/turnserver.conf";
pub const TEST_CONF: &str = "turn-config/turnserver-loopback-test.conf";

pub struct Turn {
    pub port: u16,
    /// The TLS listener's port, when the config has one (production).
    pub tls_port: Option<u16>,
    /// Given as `--static-auth-secret`; None: only what the config has.
    secret: Option<String>,
    dir: PathBuf,
    conf: PathBuf,
    /// The addresses it listens on.
    listen: Vec<IpAddr>,
    /// Options after `-c conf`; coturn lets the command line override it.
    overrides: Vec<OsString>,
    child: Option<Child>,
}

impl Turn {
    /// coturn with the loopback test config.
    pub fn start(secret: &str) -> Turn {
        let listen = vec![IpAddr::from([127, 0, 0, 1])];
        Turn::launch(
            crate::workspace_root().join(TEST_CONF),
            Some(secret),
            None,
            listen,
            Vec::new(),
        )
    }

    /// coturn with the shipped production config, on 127.0.0.1 and ::1
    /// (listening and relaying, so both families can be tested), its TLS
    /// listener using `cert`.
    pub fn start_production(secret: &str, cert: &TestCert) -> Turn {
        let conf = crate::workspace_root().join(PROD_CONF);
        Turn::start_production_conf(&conf, Some(secret), cert)
    }

    /// The same with another file in the production config's place (a test
    /// running a variant of it), and with no secret on the command line if
    /// `secret` is None.
    pub fn start_production_conf(conf: &Path, secret: Option<&str>, cert: &TestCert) -> Turn {
        Turn::start_production_with(conf, secret, cert, &[])
    }

    /// The same with `extra` options after the config's own (they override
    /// it), for a test that must change one setting and says why.
    pub fn start_production_with(
        conf: &Path,
        secret: Option<&str>,
        cert: &TestCert,
        extra: &[&str],
    ) -> Turn {
        let entries = conf_entries(&std::fs::read_to_string(conf).expect("coturn config"));
        let value = |k: &str| -> u16 {
            entries
                .iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or_else(|| panic!("{}: no {k}", conf.display()))
        };
        // The relay range keeps the config's width (total-quota is tied to
        // it) but moves above Linux's ephemeral range (32768-60999), where
        // other tests' sockets would take its ports, and above the loopback
        // test config's 61000-62000.
        let (min, max) = relay_window(value("max-port") - value("min-port"));
        let mut overrides: Vec<OsString> = Vec::new();
        let v6: IpAddr = std::net::Ipv6Addr::LOCALHOST.into();
        let listen: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), v6];
        for ip in &listen {
            overrides.extend(["--listening-ip".into(), ip.to_string().into()]);
            overrides.extend(["--relay-ip".into(), ip.to_string().into()]);
        }
        overrides.extend([
            "--min-port".into(),
            min.to_string().into(),
            "--max-port".into(),
            max.to_string().into(),
            "--cert".into(),
            cert.cert.clone().into(),
            "--pkey".into(),
            cert.key.clone().into(),
        ]);
        overrides.extend(extra.iter().map(OsString::from));
        Turn::launch(
            conf.to_path_buf(),
            secret,
            Some(free_port()),
            listen,
            overrides,
        )
    }

    fn launch(
        conf: PathBuf,
        secret: Option<&str>,
        tls_port: Option<u16>,
        listen: Vec<IpAddr>,
        overrides: Vec<OsString>,
    ) -> Turn {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sig-turn-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut t = Turn {
            port,
            tls_port,
            secret: secret.map(str::to_string),
            dir,
            conf,
            listen,
            overrides,
            child: None,
        };
        t.spawn();
        t
    }

    /// The UDP/TCP listener on `ip` (127.0.0.1 or, production only, ::1).
    pub fn addr(&self, ip: &str) -> SocketAddr {
        let ip: IpAddr = ip.parse().expect("a listening address");
        SocketAddr::new(ip, self.port)
    }

    /// What coturn logged so far (for failure messages).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let stderr: Vec<String> = read("stderr")
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_string)
            .collect();
        format!("{}{}", read("log"), stderr.join("\n"))
    }

    /// Kills the server (SIGKILL): every allocation and relay through it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same secret, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("turnserver");
        cmd.arg("-c")
            .arg(&self.conf)
            .args(&self.overrides)
            .args(["--listening-port", &self.port.to_string()]);
        if let Some(tls) = self.tls_port {
            cmd.args(["--tls-listening-port", &tls.to_string()]);
        }
        let child = cmd
            .args(
                self.secret
                    .iter()
                    .map(|s| format!("--static-auth-secret={s}")),
            )
            .arg("--pidfile")
            .arg(self.dir.join("pid"))
            .arg("--log-file")
            .arg(self.dir.join("log"))
            .arg("--userdb")
            .arg(self.dir.join("db.sqlite"))
            .stdout(Stdio::null())
            // Config errors go to stderr, not the log file.
            .stderr(
                std::fs::File::create(self.dir.join("stderr"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("turnserver must be installed (scripts/test installs coturn)");
        self.child = Some(child);
        // Ready when its TCP listeners accept and its UDP listeners answer
        // a Binding request on every address (coturn opens them in turn).
        let deadline = Instant::now() + Duration::from_secs(5);
        for &ip in &self.listen {
            for port in [Some(self.port), self.tls_port].into_iter().flatten() {
                while std::net::TcpStream::connect((ip, port)).is_err() {
                    self.not_yet(deadline);
                }
            }
            while !udp_answers(SocketAddr::new(ip, self.port)) {
                self.not_yet(deadline);
            }
        }
    }

    fn not_yet(&self, deadline: Instant) {
        assert!(
            Instant::now() < deadline,
            "turnserver did not start:\n{}",
            self.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Allocates a relay with these credentials and sends data through it
    /// (coturn's own `turnutils_uclient`); true if that worked.
    pub fn allocation_works(&self, username: &str, password: &str) -> bool {
        Command::new("turnutils_uclient")
            .args(["-p", &self.port.to_string(), "-u", username, "-w", password])
            .args(["-y", "-n", "1", "-l", "64", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// Whether a STUN Binding request to `addr` over UDP gets an answer.
fn udp_answers(addr: SocketAddr) -> bool {
    let Ok(req) = crate::stun::encode(&crate::stun::Request::Binding, None) else {
        return false;
    };
    let local: IpAddr = if addr.is_ipv4() {
        [127, 0, 0, 1].into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    let Ok(sock) = std::net::UdpSocket::bind((local, 0)) else {
        return false;
    };
    let mut buf = [0u8; 1500];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .is_ok()
        && sock.connect(addr).is_ok()
        && sock.send(&req.raw).is_ok()
        && sock
            .recv(&mut buf)
            .is_ok_and(|n| crate::stun::decode(&buf[..n], &req, None).is_ok_and(|r| r.success))
}

/// A relay port range of `width` + 1 ports in 62100-65499 that no other
/// production coturn of this process uses (and, offset by the process id,
/// probably none of another test process).
fn relay_window(width: u16) -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let size = u32::from(width) + 1;
    let windows = (65500 - 62100) / size;
    assert!(
        windows > 0,
        "relay range of {size} ports too wide for a test"
    );
    let n = (u32::from(NEXT.fetch_add(1, Ordering::Relaxed)) + std::process::id()) % windows;
    let min = 62100 + n * size;
    (min as u16, (min + size - 1) as u16)
}

/// The active `key[=value]` lines of a coturn config, in order.
pub fn conf_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The value of `key` in `conf_entries`' output (the first, as coturn
/// reads a single-valued option).
pub fn conf_value<'a>(conf: &'a [(String, String)], key: &str) -> Option<&'a str> {
    conf.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Ranges the production config must deny as peers (checked offline by
/// coturn_conf.rs against its lines, and live by coturn_prod.rs against
/// coturn): loopback, private, link-local, CGNAT, multicast, reserved,
/// documentation, and their IPv6 equivalents and IPv4-embedding forms.
pub const MUST_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    // `::` itself coturn always refuses; the rest of ::/96
    // (IPv4-compatible, ::7f00:1 = 127.0.0.1) is denied by the config.
    "::1-::ffff:ffff",
    "::1/128",
    "::ffff:0.0.0.0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// An address range as coturn's `denied-peer-ip` writes it (`a-b` or one
/// address) or as CIDR (`a/len`): its first and last address.
pub fn parse_range(s: &str) -> Option<(IpAddr, IpAddr)> {
    if let Some((a, len)) = s.split_once('/') {
        let len: u32 = len.parse().ok()?;
        return match a.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if len <= 32 => {
                let host = u32::MAX.checked_shr(len).unwrap_or(0);
                let lo = u32::from(a) & !host;
                Some((IpAddr::V4(lo.into()), IpAddr::V4((lo | host).into())))
            }
            IpAddr::V6(a) if len <= 128 => {
                let host = u128::MAX.checked_shr(len).unwrap_or(0);
                let lo = u128::from(a) & !host;
                Some((IpAddr::V6(lo.into()), IpAddr::V6((lo | host).into())))
            }
            _ => None,
        };
    }
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (IpAddr, IpAddr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a.is_ipv4() == b.is_ipv4()).then_some((a, b))
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
