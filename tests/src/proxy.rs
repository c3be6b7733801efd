//! A TCP proxy on loopback that tests control: cut every connection (a
//! network drop without any close frame), refuse new ones for a while, or
//! point new ones at another backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    up: Arc<AtomicBool>,
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
        let (b, u, l) = (backend.clone(), up.clone(), live.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(Ordering::Acquire) {
                    continue; // dropped at once: connection refused, in effect
                }
                let target = *b.lock().expect("backend");
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
            live,
            accept,
        }
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

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
