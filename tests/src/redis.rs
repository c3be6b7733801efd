//! redis-server processes of the tests' own, on free loopback ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on (bind to 0, read it, let it go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A redis-server of our own, killable and restartable on the same port,
/// listening on loopback TCP and on a Unix socket (`socket()`).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The `default` user's password, when the server requires one.
    password: Option<String>,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(None, &[])
    }

    /// A server that requires a password: `admin_password` for the default
    /// user (what `cmd` uses), and an ACL user `user` with `password` for
    /// everything but the `CLIENT` command, as a cautious deployment would
    /// give the signaling nodes.
    pub fn start_secured(admin_password: &str, user: &str, password: &str) -> Redis {
        let password = format!(">{password}");
        Redis::start_with(
            Some(admin_password),
            &[
                "--requirepass",
                admin_password,
                "--user",
                user,
                "on",
                &password,
                "~*",
                "&*",
                "+@all",
                "-client",
            ],
        )
    }

    fn start_with(password: Option<&str>, extra: &[&str]) -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sig-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut r = Redis {
            port,
            dir,
            child: None,
            password: password.map(str::to_string),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        r.restart();
        r
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Writes its data to disk now (`SAVE`): the next [`restart`](Self::restart)
    /// comes back with this older data, as a restore from a snapshot does.
    pub fn snapshot(&self) {
        assert_eq!(self.cmd(&["SAVE"]).as_deref(), Some("+OK"), "SAVE");
    }

    /// Starts it again (after `kill`), on the same port: empty, or with
    /// the data of the last [`snapshot`](Self::snapshot) if one was taken.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("log"))
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: an outage with no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The redis-server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP: Redis stalls without closing anything (a long fork, a
    /// swapped-out host). Connections stay open and writes to them pile up
    /// in the kernel until `cont`.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `stop`: Redis works through what waited.
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis-server is running");
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// One command whose reply is an array (`KEYS`, `PUBSUB CHANNELS`,
    /// `PUBSUB NUMSUB`, `SMEMBERS`, `HKEYS`): its items, bulk strings and
    /// integers alike, as text. `None` if Redis does not answer with a flat
    /// array.
    pub fn list(&self, args: &[&str]) -> Option<Vec<String>> {
        use std::io::{BufRead, BufReader, Read};
        let mut reader = BufReader::new(self.send(args)?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let head = line.trim_end();
            if let Some(i) = head.strip_prefix(':') {
                items.push(i.to_string());
            } else {
                let len: usize = head.strip_prefix('$')?.parse().ok()?;
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).ok()?;
                body.truncate(len);
                items.push(String::from_utf8_lossy(&body).into_owned());
            }
        }
        Some(items)
    }

    /// One command over a raw connection (as the default user); the first
    /// reply line.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        self.reply(args).map(|(line, _)| line)
    }

    /// The id of the client connection named `name` (`CLIENT LIST`).
    pub fn client_id(&self, name: &str) -> Option<String> {
        let (_, list) = self.reply(&["CLIENT", "LIST"])?;
        let line = list?
            .lines()
            .find(|l| l.split(' ').any(|f| f == format!("name={name}")))?
            .to_string();
        let id = line.split(' ').find_map(|f| f.strip_prefix("id="))?;
        Some(id.to_string())
    }

    /// The reply's first line, and a bulk string's body.
    fn reply(&self, args: &[&str]) -> Option<(String, Option<String>)> {
        use std::io::{BufRead, BufReader, Read};
        let mut reader = BufReader::new(self.send(args)?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        let body = match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => {
                let mut body = vec![0; n];
                reader.read_exact(&mut body).ok()?;
                Some(String::from_utf8_lossy(&body).into_owned())
            }
            None => None,
        };
        Some((line, body))
    }

    /// Connects, authenticates if needed (its `+OK` already read) and sends
    /// one command; the stream is left at the command's reply.
    fn send(&self, args: &[&str]) -> Option<std::net::TcpStream> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let encode = |c: &[&str]| {
            let mut req = format!("*{}\r\n", c.len());
            for a in c {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            req
        };
        if let Some(p) = &self.password {
            s.write_all(encode(&["AUTH", p]).as_bytes()).ok()?;
            // Byte by byte, so nothing of the command's reply is read ahead.
            let mut reader = BufReader::with_capacity(1, &s);
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
        }
        s.write_all(encode(args).as_bytes()).ok()?;
        Some(s)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
