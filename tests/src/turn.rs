//! coturn (`turnserver`) processes of the tests' own, on free loopback
//! ports, with the loopback test configuration and a shared secret.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::free_port;

pub struct Turn {
    pub port: u16,
    secret: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Turn {
    pub fn start(secret: &str) -> Turn {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sig-turn-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut t = Turn {
            port,
            secret: secret.to_string(),
            dir,
            child: None,
        };
        t.spawn();
        t
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
        let conf = crate::workspace_root().join("turn-config/turnserver-loopback-test.conf");
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .args(["--listening-port", &self.port.to_string()])
            .arg(format!("--static-auth-secret={}", self.secret))
            .arg("--pidfile")
            .arg(self.dir.join("pid"))
            .arg("--log-file")
            .arg(self.dir.join("log"))
            .arg("--userdb")
            .arg(self.dir.join("db.sqlite"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver must be installed (scripts/test installs coturn)");
        self.child = Some(child);
        // Ready when its TCP listener answers.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "turnserver did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
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

impl Drop for Turn {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
