//! Frame floods against the real `signaling` binary: a raw TCP client does
//! the WebSocket handshake itself and streams frames no library would send
//! (a text message that never ends, unsolicited pongs, pings) as fast as
//! loopback takes them. The server must close it with 1008 quickly and
//! cheaply (its CPU time read from /proc), count it as a flood, and keep
//! relaying for a pair of honest clients in a room throughout.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The floods each want the two cores to themselves, for the CPU figures.
/// (tokio's mutex: it is held across awaits, and works across the tests'
/// runtimes.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a flood may go on, and how long the server may take to end it.
const FLOOD_FOR: Duration = Duration::from_secs(5);
/// CPU the server may spend from the flood's start to the close. Unchecked,
/// an empty continuation flood (or pongs) took 5 s of CPU in 5 s, and a
/// ping flood, closed at once by the message limit, 2 s: the close waited
/// two seconds for an answer, reading the flood all the while. Budgeted,
/// each takes 10-20 ms in a debug build (most of it the honest pair, as
/// the writer waits out the server's linger); the bound leaves room for a
/// busy machine.
const CPU_BOUND: Duration = Duration::from_millis(250);

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: this crate's, or `SIGNALING_FLOOD_BIN` (to take
/// the same figures from an older build, for comparison).
fn binary() -> String {
    std::env::var("SIGNALING_FLOOD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_signaling").into())
}

fn start() -> Running {
    let mut child = Command::new(binary())
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the signaling binary starts");
    let Some(out) = child.stdout.take() else {
        panic!("no stdout")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(a) = v["fields"]["addr"].as_str() {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server logs its address");
    Running { child, addr }
}

/// utime + stime of a process.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after_name = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

fn flood_closes(addr: &str) -> u64 {
    let mut s = TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix("signaling_forced_closes_total{cause=\"flood\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A client frame: masked, as RFC 6455 requires of clients.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A raw WebSocket client over a blocking socket.
struct Raw {
    s: TcpStream,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake written");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).expect("handshake answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "RFC 6455's sample accept key: {head}"
        );
        Raw { s }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("frame written");
    }

    /// The next frame from the server (unmasked): opcode and payload;
    /// `None` when the connection ended or nothing came in time.
    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b).ok()?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b).ok()?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).ok()?];
        self.s.read_exact(&mut payload).ok()?;
        Some((h[0] & 0x0f, payload))
    }

    /// Reads until a text frame containing `needle` arrives.
    fn expect_text(&mut self, needle: &str) -> String {
        loop {
            match self.read_frame() {
                Some((OP_TEXT, p)) => {
                    let t = String::from_utf8_lossy(&p).into_owned();
                    if t.contains(needle) {
                        return t;
                    }
                }
                Some(_) => continue,
                None => panic!("connection ended before a frame with {needle}"),
            }
        }
    }

    fn join(&mut self, room: &str) {
        let join = json!({"type":"join","room":room}).to_string();
        self.send(&frame(true, OP_TEXT, join.as_bytes()));
        self.expect_text("\"joined\"");
    }

    /// Reads until the server closes: the close code, if a close frame came,
    /// and when; `None` if it had not closed within `within`.
    fn until_closed(&mut self, within: Duration) -> Option<(Option<u16>, Duration)> {
        let started = Instant::now();
        self.s
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok();
        while started.elapsed() < within {
            match self.read_frame() {
                Some((OP_CLOSE, p)) => {
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    return Some((code, started.elapsed()));
                }
                Some(_) => continue,
                None => {
                    // A timeout leaves the stream open; anything else ended it.
                    let mut probe = [0u8; 1];
                    match self.s.peek(&mut probe) {
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            continue;
                        }
                        _ => return Some((None, started.elapsed())),
                    }
                }
            }
        }
        None
    }
}

/// Two honest peers in a room: `a` sends a message every 20 ms, `b` must get
/// each one, in order, until `stop`. Returns how many went through.
async fn honest_pair(
    addr: String,
    stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> u32 {
    let url = format!("ws://{addr}/ws");
    let (mut a, _) = tokio_tungstenite::connect_async(&url).await.expect("a");
    let (mut b, _) = tokio_tungstenite::connect_async(&url).await.expect("b");
    async fn until(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
        ty: &str,
    ) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(3), ws.next())
                .await
                .expect("a message within 3 s while the flood runs")
                .expect("stream open")
                .expect("frame");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                if v["type"] == ty {
                    return v;
                }
            }
        }
    }
    let join = json!({"type":"join","room":"honest"}).to_string();
    a.send(Message::text(join.clone())).await.expect("join a");
    until(&mut a, "joined").await;
    b.send(Message::text(join)).await.expect("join b");
    until(&mut b, "joined").await;
    let _ = ready.send(());
    let mut n = 0u32;
    // Bounded: at most 1,000 messages (20 s at this pace).
    while !*stop.borrow() && n < 1_000 {
        let m = json!({"type":"message","data":{"n":n}}).to_string();
        a.send(Message::text(m)).await.expect("a sends");
        let got = until(&mut b, "message").await;
        assert_eq!(got["data"]["n"], n, "in order, none lost");
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

/// Floods one joined connection with `unit` (repeated) for at most
/// [`FLOOD_FOR`], while an honest pair relays; checks the close, the CPU the
/// server spent, the flood counter, and the pair.
async fn flood(name: &str, prelude: Vec<u8>, unit: Vec<u8>) {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = start();
    let addr = server.addr.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let pair = tokio::spawn(honest_pair(addr.clone(), stop_rx, ready_tx));
    ready_rx.await.expect("the honest pair joined");

    let mut flooder = Raw::connect(&addr);
    flooder.join("flooded");
    flooder.send(&prelude);
    let mut writer = flooder.s.try_clone().expect("clone");
    let cpu_before = cpu_time(server.child.id());
    let started = Instant::now();
    let sending = std::thread::spawn(move || {
        // Frames back to back, 64 KiB a write.
        let batch: Vec<u8> = unit
            .iter()
            .copied()
            .cycle()
            .take(unit.len() * (65536 / unit.len()))
            .collect();
        let mut frames = 0u64;
        // Bounded in time and count: 5 s, 200,000 writes at most.
        for _ in 0..200_000 {
            if started.elapsed() >= FLOOD_FOR || writer.write_all(&batch).is_err() {
                break;
            }
            frames += (batch.len() / unit.len()) as u64;
        }
        frames
    });
    let closed = tokio::task::spawn_blocking(move || flooder.until_closed(FLOOD_FOR * 2))
        .await
        .expect("reader");
    let sent = sending.join().expect("writer");
    let cpu = cpu_time(server.child.id()).saturating_sub(cpu_before);
    // The room carries on after the flooder is gone, not just until then.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).ok();
    let relayed = pair.await.expect("the honest pair kept relaying");
    // Printed before the checks, so a failing run (an old build) shows its
    // figures too.
    println!(
        "{name}: closed {closed:?} (code, after); {sent} frames sent; server CPU {cpu:?}; {relayed} honest messages relayed"
    );
    let Some((code, after)) = closed else {
        panic!(
            "{name}: not closed within {:?}; server CPU {cpu:?}",
            FLOOD_FOR * 2
        )
    };
    assert!(
        code.is_none() || code == Some(1008),
        "{name}: closed with {code:?}"
    );
    assert!(after < FLOOD_FOR, "{name}: closed only after {after:?}");
    assert!(
        cpu < CPU_BOUND,
        "{name}: the server spent {cpu:?} of CPU on the flood"
    );
    assert!(flood_closes(&addr) >= 1, "{name}: counted as a flood");
    assert!(relayed >= 5, "{name}: the honest pair relayed");
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_message_of_empty_continuations_is_closed_cheaply() {
    flood(
        "continuations",
        frame(false, OP_TEXT, b"{"),
        frame(false, OP_CONT, b""),
    )
    .await;
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_pongs_are_closed_cheaply() {
    flood("pongs", Vec::new(), frame(true, OP_PONG, b"")).await;
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_closed_cheaply() {
    flood("pings", Vec::new(), frame(true, OP_PING, b"")).await;
}

/// `text` cut into `n` fragments (the last one takes the rest), as frames.
fn fragments(text: &str, n: usize) -> Vec<u8> {
    let bytes = text.as_bytes();
    let size = bytes.len() / n;
    let mut out = Vec::new();
    for i in 0..n {
        let end = if i + 1 == n {
            bytes.len()
        } else {
            (i + 1) * size
        };
        let op = if i == 0 { OP_TEXT } else { OP_CONT };
        out.extend(frame(i + 1 == n, op, &bytes[i * size..end]));
    }
    out
}

/// Asserts docs/protocol.md §1, §2.2.
#[test]
fn an_honest_message_in_a_few_fragments_goes_through() {
    let server = start();
    let mut c = Raw::connect(&server.addr);
    c.join("fragments");
    // Five fragments with a ping between two of them, as RFC 6455 allows.
    let text = r#"{"type":"ping","id":"five-parts"}"#;
    let mut bytes = fragments(text, 5);
    // A short masked frame is 6 bytes of header and its payload.
    let second = 6 + text.len() / 5;
    bytes.splice(second..second, frame(true, OP_PING, b"p"));
    c.send(&bytes);
    let reply = c.expect_text("pong");
    assert!(reply.contains("five-parts"), "{reply}");
    // And one of 64, the most one message may have.
    let padded = format!(
        r#"{{"type":"ping","id":"sixty-four","pad":"{}"}}"#,
        "x".repeat(100)
    );
    c.send(&fragments(&padded, 64));
    let reply = c.expect_text("pong");
    assert!(reply.contains("sixty-four"), "{reply}");
}

/// Asserts docs/protocol.md §2.2, §7.1.
#[test]
fn a_message_in_more_fragments_than_the_bound_is_closed_with_1008() {
    let server = start();
    let mut c = Raw::connect(&server.addr);
    c.join("too-many-fragments");
    let padded = format!(
        r#"{{"type":"ping","id":"too-many","pad":"{}"}}"#,
        "x".repeat(100)
    );
    c.send(&fragments(&padded, 65));
    let mut reply = None;
    let started = Instant::now();
    c.s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let code = loop {
        match c.read_frame() {
            Some((OP_CLOSE, p)) => {
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                println!(
                    "closed with {code:?}: {}",
                    String::from_utf8_lossy(&p[2.min(p.len())..])
                );
                break code;
            }
            Some((OP_TEXT, p)) => reply = Some(String::from_utf8_lossy(&p).into_owned()),
            Some(_) => {}
            None => break None,
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no close");
    };
    assert_eq!(code, Some(1008), "closed as policy (reply seen: {reply:?})");
    assert!(
        !reply.is_some_and(|r| r.contains("too-many")),
        "the over-fragmented message was not handled"
    );
    assert!(flood_closes(&server.addr) >= 1, "counted as a flood");
}

/// The status line's code of the answer to a raw `request`.
fn status_of(addr: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(request.as_bytes()).expect("request written");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("a status line");
    let head = String::from_utf8_lossy(&head);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"))
}

/// The upgrade is the server's own now (so the guard can sit under
/// tungstenite): requests that are not a WebSocket handshake get the
/// answers axum's extractor gave.
/// Asserts docs/protocol.md §1.
#[test]
fn requests_that_are_not_websocket_handshakes_are_refused_as_before() {
    let server = start();
    let addr = &server.addr;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let request = |connection: &str, upgrade: &str, key: &str, version: &str| {
        format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{connection}{upgrade}{key}{version}\r\n")
    };
    let upgrade = "Upgrade: WebSocket\r\n";
    let connection = "Connection: keep-alive, Upgrade\r\n";
    let version = "Sec-WebSocket-Version: 13\r\n";
    // A plain GET, and each header missing or wrong in turn.
    assert_eq!(status_of(addr, &request("", "", "", "")), 400);
    assert_eq!(status_of(addr, &request("", upgrade, key, version)), 400);
    assert_eq!(
        status_of(addr, &request(connection, "Upgrade: h2c\r\n", key, version)),
        400
    );
    assert_eq!(
        status_of(addr, &request(connection, upgrade, "", version)),
        400
    );
    assert_eq!(
        status_of(
            addr,
            &request(connection, upgrade, key, "Sec-WebSocket-Version: 8\r\n")
        ),
        400
    );
    // Header names and tokens in any case, the Connection token in a list.
    assert_eq!(
        status_of(addr, &request(connection, upgrade, key, version)),
        101
    );
    // Not a GET: the route answers before the upgrade is looked at.
    let post = format!("POST /ws HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status_of(addr, &post), 405);
}
