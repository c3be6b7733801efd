//! The conformance probe of `shared/tools/sigprobe` against a real server:
//! every check that one instance can pass must pass.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigprobe_passes_every_single_instance_check() {
    let cfg = signaling::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    let server = signaling::bind(cfg).await.expect("bind");
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let serving = tokio::spawn(server.serve());

    let stdout = tokio::task::spawn_blocking(move || {
        let (ws, http) = (format!("ws://{addr}/ws"), format!("http://{addr}"));
        signaling_e2e::run_sigprobe(&["--url", &ws, "--http", &http])
    })
    .await
    .expect("probe task");
    if let Some(stdout) = stdout {
        let passed = stdout.lines().filter(|l| l.starts_with("PASS")).count();
        assert!(passed >= 40, "only {passed} checks ran");
    }

    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .expect("server stops after shutdown")
        .expect("serve task")
        .expect("serve ok");
}
