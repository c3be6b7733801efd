//! A webhook receiver on loopback that records every request (when, its
//! headers, its event) and answers as the test says: accept, fail an
//! event's first tries, answer an error, answer slowly, or be down
//! (connections refused) for a while.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 204 to everything.
    Accept,
    /// 503 to each event's first `n` tries, then 204.
    FailFirst(usize),
    /// This status to everything.
    Status(u16),
    /// 204, after this long.
    Slow(Duration),
}

/// One request, as received.
#[derive(Debug, Clone)]
pub struct Try {
    pub at: Instant,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub event: Value,
    pub accepted: bool,
}

#[derive(Default)]
struct Record {
    tries: Vec<Try>,
    per_event: HashMap<String, usize>,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    record: Mutex<Record>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Option<AbortHandle>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            record: Mutex::default(),
        });
        let mut r = Receiver {
            addr,
            shared,
            serving: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.serving = Some(task.abort_handle());
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set(&self, b: Behaviour) {
        *self.shared.behaviour.lock().expect("behaviour") = b;
    }

    /// Stops listening: tries meet a refused connection.
    pub fn go_down(&mut self) {
        if let Some(t) = self.serving.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Every request so far, in arrival order.
    pub fn tries(&self) -> Vec<Try> {
        self.shared.record.lock().expect("record").tries.clone()
    }

    /// The accepted events in the order they were accepted (every one,
    /// duplicates included).
    pub fn accepted(&self) -> Vec<Value> {
        self.tries()
            .into_iter()
            .filter(|t| t.accepted)
            .map(|t| t.event)
            .collect()
    }

    /// The accepted events, each id once (what an idempotent receiver
    /// keeps), in the order first accepted.
    pub fn distinct(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        self.accepted()
            .into_iter()
            .filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// Waits until `done` holds for the distinct accepted events.
    pub async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.distinct();
            if done(&got) {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "the receiver did not get what was awaited within {within:?}; it has:\n{}",
                    describe(&got)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `room`'s events include one of type `kind` (and, for a
    /// peer event, of `peer`), and returns the room's distinct events.
    pub async fn wait_for(&self, room: &str, kind: &str, within: Duration) -> Vec<Value> {
        let got = self
            .wait_until(within, |evs| {
                evs.iter().any(|e| e["room"] == room && e["type"] == kind)
            })
            .await;
        of_room(&got, room)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.go_down();
    }
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = header("webhook-id");
    let behaviour = s.behaviour.lock().expect("behaviour").clone();
    let tries_of_event = {
        let mut r = s.record.lock().expect("record");
        let n = r.per_event.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match behaviour {
        Behaviour::Accept => StatusCode::NO_CONTENT,
        Behaviour::FailFirst(n) if tries_of_event <= n => StatusCode::SERVICE_UNAVAILABLE,
        Behaviour::FailFirst(_) => StatusCode::NO_CONTENT,
        Behaviour::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::NO_CONTENT
        }
    };
    s.record.lock().expect("record").tries.push(Try {
        at,
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        event,
        accepted: status.is_success(),
    });
    status
}

/// `room`'s events among `events`, in order.
pub fn of_room(events: &[Value], room: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["room"] == room)
        .cloned()
        .collect()
}

/// Events as `type peer_id/reason` lines, for assertions and failures.
pub fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let mut s = e["type"].as_str().unwrap_or("?").to_owned();
            if let Some(p) = e["peer_id"].as_str() {
                s.push(' ');
                s.push_str(p);
            }
            if let Some(r) = e["reason"].as_str() {
                s.push(' ');
                s.push_str(r);
            }
            s
        })
        .collect()
}

fn describe(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks that a room's distinct events are one incarnation numbered from
/// 1 with no gap, in order, and says which is not.
pub fn assert_in_order(events: &[Value]) {
    let mut expected: HashMap<String, u64> = HashMap::new();
    for e in events {
        let sid = e["room_sid"].as_str().unwrap_or_default().to_owned();
        let seq = e["seq"].as_u64().unwrap_or(0);
        let want = expected.entry(sid).or_insert(1);
        assert_eq!(
            seq,
            *want,
            "out of order or missing before:\n{}",
            describe(events)
        );
        *want += 1;
    }
}
