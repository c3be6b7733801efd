//! A TCP proxy on loopback that tests control: cut every connection (a
//! network drop without any close frame), refuse new ones for a while,
//! point new ones at another backend, or make what the client sends arrive
//! late (a slow network on the way to the backend).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    up: Arc<AtomicBool>,
    /// Microseconds each chunk from the client waits before it goes on.
    delay_us: Arc<AtomicU64>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(backend: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let backend = Arc::new(Mutex::new(backend));
        let up = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let delay_us = Arc::new(AtomicU64::new(0));
        let (b, u, l, dl) = (backend.clone(), up.clone(), live.clone(), delay_us.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(Ordering::Acquire) {
                    continue; // dropped at once: connection refused, in effect
                }
                let target = *b.lock().expect("backend");
                let delay = dl.clone();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let (mut from_client, mut to_client) = client.split();
                        let (mut from_server, to_server) = server.into_split();
                        let up = forward_late(&mut from_client, to_server, &delay);
                        let down = tokio::io::copy(&mut from_server, &mut to_client);
                        let _ = tokio::join!(up, down);
                    }
                });
                l.lock().expect("live").push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            backend,
            up,
            delay_us,
            live,
            accept,
        }
    }

    /// From now on, what clients send reaches the backend `delay` late
    /// (in order; answers come back as soon as the backend gives them).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Release);
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every open connection without a word to either side.
    pub fn cut(&self) {
        for h in self.live.lock().expect("live").drain(..) {
            h.abort();
        }
    }

    /// While down, new connections are dropped at once.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    pub fn set_backend(&self, addr: SocketAddr) {
        *self.backend.lock().expect("backend") = addr;
    }
}

/// Copies `from` into `to`, each chunk `delay` after it was read.
async fn forward_late(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: &AtomicU64,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let due = Instant::now() + Duration::from_micros(delay.load(Ordering::Acquire));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
