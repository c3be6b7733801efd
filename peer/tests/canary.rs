//! The binary as a canary: two `signaling-peer` processes against a real
//! server connect, one streams messages and a file, the other echoes.

use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peer_processes_connect_and_report() {
    let cfg = signaling::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    let server = signaling::bind(cfg).await.expect("bind");
    let url = format!("ws://{}/ws", server.local_addr());
    tokio::spawn(server.serve());
    let file = std::env::temp_dir().join(format!("canary-{}.bin", std::process::id()));
    std::fs::write(&file, vec![7u8; 40_000]).expect("file");
    let bin = env!("CARGO_BIN_EXE_signaling-peer");
    let room = format!("canary-{}", std::process::id());
    let (u, r) = (url.clone(), room.clone());
    let echo = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["--url", &u, "--room", &r, "--echo", "--seconds", "4"])
            .output()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (u, r, f) = (url.clone(), room.clone(), file.clone());
    let sender = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["--url", &u, "--room", &r, "--send", "10", "--seconds", "2"])
            .arg("--file")
            .arg(&f)
            .output()
    });
    let sender = sender.await.expect("task").expect("sender runs");
    let echo = echo.await.expect("task").expect("echo runs");
    let _ = std::fs::remove_file(&file);
    let out = String::from_utf8_lossy(&sender.stdout);
    assert!(out.contains("open "), "{out}");
    assert!(out.contains("sent 40000 bytes of file"), "{out}");
    // 10 messages and 3 file chunks go out, and all come back echoed.
    assert!(
        out.contains("sent 13 msgs / 40050 bytes, received 13 msgs / 40050 bytes"),
        "{out}"
    );
    let echo_out = String::from_utf8_lossy(&echo.stdout);
    assert!(
        echo_out.contains("received 13 msgs / 40050 bytes"),
        "{echo_out}"
    );
}
