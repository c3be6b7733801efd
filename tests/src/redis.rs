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
        let redis::Value::Array(items) = self.query(args)? else {
            return None;
        };
        items
            .into_iter()
            .map(|item| match item {
                redis::Value::Int(i) => Some(i.to_string()),
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// One command on a connection of its own (as the default user); the
    /// reply's first line as Redis writes it (RESP): `+OK`, `+PONG`, `:1`,
    /// `-ERR ...`, or `$<length>` and `*<items>` for a bulk string and an
    /// array.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        Some(match self.query(args)? {
            redis::Value::Okay => "+OK".to_string(),
            redis::Value::SimpleString(s) => format!("+{s}"),
            redis::Value::Int(i) => format!(":{i}"),
            redis::Value::BulkString(b) => format!("${}", b.len()),
            redis::Value::Array(items) => format!("*{}", items.len()),
            redis::Value::Nil => "$-1".to_string(),
            redis::Value::ServerError(e) => {
                format!("-{} {}", e.code(), e.details().unwrap_or_default())
            }
            other => format!("{other:?}"),
        })
    }

    /// The id of the client connection named `name` (`CLIENT LIST`).
    pub fn client_id(&self, name: &str) -> Option<String> {
        let redis::Value::BulkString(list) = self.query(&["CLIENT", "LIST"])? else {
            return None;
        };
        let list = String::from_utf8_lossy(&list);
        let line = list
            .lines()
            .find(|l| l.split(' ').any(|f| f == format!("name={name}")))?;
        let id = line.split(' ').find_map(|f| f.strip_prefix("id="))?;
        Some(id.to_string())
    }

    /// Sends one command on a new connection (authenticated if the server
    /// requires it) and reads its reply, an error reply included; `None`
    /// if Redis cannot be reached or does not answer within 2 s.
    fn query(&self, args: &[&str]) -> Option<redis::Value> {
        use redis::{ConnectionLike, IntoConnectionInfo, RedisConnectionInfo};
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        let info = ("127.0.0.1", self.port)
            .into_connection_info()
            .ok()?
            .set_redis_settings(settings);
        let timeout = Duration::from_secs(2);
        let mut con = redis::Client::open(info)
            .ok()?
            .get_connection_with_timeout(timeout)
            .ok()?;
        con.set_read_timeout(Some(timeout)).ok()?;
        let mut cmd = redis::cmd(args.first()?);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        con.req_command(&cmd).ok()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
