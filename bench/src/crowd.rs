//! A crowd: many cheap connections ([`conn`]) opened and joined with a
//! bounded number in flight, then kept open until dispersed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Error;
use crate::conn::{self, Parked, Target};

/// When one member got in.
pub struct Entry {
    /// TCP connect plus WebSocket handshake.
    pub connect: Duration,
    /// From sending `join` to reading `joined`.
    pub join: Duration,
    pub join_sent: Instant,
    pub joined_at: Instant,
}

pub struct Crowd {
    /// One per connection that got in.
    pub entries: Vec<Entry>,
    pub failed: usize,
    first_failure: Option<Error>,
    lost: Arc<Lost>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Members the server closed or dropped while they were parked.
#[derive(Default)]
struct Lost {
    count: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Crowd {
    /// Opens `n` connections to `target`, connection `i` joining
    /// `room_of(i)`, at most `concurrency` of them connecting or joining at
    /// once, and returns when each has joined or failed.
    pub async fn gather(
        target: Arc<Target>,
        n: usize,
        concurrency: usize,
        room_of: impl Fn(usize) -> String,
    ) -> Crowd {
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let stop = CancellationToken::new();
        let lost = Arc::new(Lost::default());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Entry, Error>>();
        let mut crowd = Crowd {
            entries: Vec::with_capacity(n),
            failed: 0,
            first_failure: None,
            lost: lost.clone(),
            stop: stop.clone(),
            tasks: JoinSet::new(),
        };
        for i in 0..n {
            // Take in what has finished meanwhile, so progress shows.
            while let Ok(r) = done_rx.try_recv() {
                crowd.count(r, n);
            }
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let (target, room, stop, lost) =
                (target.clone(), room_of(i), stop.clone(), lost.clone());
            let done = done_tx.clone();
            crowd.tasks.spawn(async move {
                let entered = enter(&target, i, &room).await;
                drop(permit);
                let ws = match entered {
                    Ok((ws, entry)) => {
                        let _ = done.send(Ok(entry));
                        ws
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                        return;
                    }
                };
                drop(done);
                if let Parked::Lost(why) = conn::park(ws, stop).await {
                    lost.count.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = lost.first.lock() {
                        first.get_or_insert(why);
                    }
                }
            });
        }
        drop(done_tx);
        while let Some(r) = done_rx.recv().await {
            crowd.count(r, n);
        }
        crowd
    }

    fn count(&mut self, r: Result<Entry, Error>, n: usize) {
        match r {
            Ok(e) => self.entries.push(e),
            Err(e) => {
                if self.first_failure.is_none() {
                    eprintln!("first failure: {e}");
                    self.first_failure = Some(e);
                }
                self.failed += 1;
            }
        }
        let done = self.entries.len() + self.failed;
        if n >= 20_000 && done % (n / 10) == 0 {
            eprintln!("{done}/{n} done ({} failed)", self.failed);
        }
    }

    /// Members that were closed or dropped by the server after joining.
    pub fn lost(&self) -> usize {
        self.lost.count.load(Ordering::Relaxed)
    }

    /// Closes every connection cleanly and waits until they are gone.
    pub async fn disperse(mut self) {
        if let Some(why) = self.lost.first.lock().ok().and_then(|f| f.clone()) {
            eprintln!("first member lost: {why}");
        }
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn enter(target: &Target, i: usize, room: &str) -> Result<(conn::Ws, Entry), Error> {
    let t0 = Instant::now();
    let mut ws = target.open(i).await?;
    let join_sent = Instant::now();
    conn::request(&mut ws, &conn::join_request(room), "joined").await?;
    let joined_at = Instant::now();
    Ok((
        ws,
        Entry {
            connect: join_sent - t0,
            join: joined_at - join_sent,
            join_sent,
            joined_at,
        },
    ))
}
