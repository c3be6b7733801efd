//! The conformance probe of `shared/tools/sigprobe` against a real server:
//! every check that one instance can pass must pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The probe binary: `$SIGPROBE` if set, else built from `../shared/tools/sigprobe`.
fn sigprobe() -> PathBuf {
    if let Some(p) = std::env::var_os("SIGPROBE") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let manifest = root.join("../shared/tools/sigprobe/Cargo.toml");
    assert!(
        manifest.exists(),
        "the conformance probe is missing: expected {} (shared/ beside the repo)",
        manifest.display()
    );
    let target = root.join("target/sigprobe");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building sigprobe failed");
    target.join("release/sigprobe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigprobe_passes_every_single_instance_check() {
    let probe = tokio::task::spawn_blocking(sigprobe)
        .await
        .expect("build task");
    let cfg = signaling::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    let server = signaling::bind(cfg).await.expect("bind");
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let serving = tokio::spawn(server.serve());

    let out = tokio::task::spawn_blocking(move || {
        Command::new(probe)
            .arg("--url")
            .arg(format!("ws://{addr}/ws"))
            .arg("--http")
            .arg(format!("http://{addr}"))
            .output()
            .expect("sigprobe runs")
    })
    .await
    .expect("probe task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(fails.is_empty(), "sigprobe failures:\n{}", fails.join("\n"));
    assert!(out.status.success(), "sigprobe exited with {}", out.status);
    let passed = stdout.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(passed >= 40, "only {passed} checks ran");

    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .expect("server stops after shutdown")
        .expect("serve task")
        .expect("serve ok");
}
