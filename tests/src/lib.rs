//! Shared helpers of the end-to-end tests (in this crate's `tests/` folder).

pub mod client;
pub mod deployment;
pub mod metrics;
pub mod nginx;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod server;
pub mod stun;
pub mod tls;
pub mod turn;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A room name of its own for one test: `tag` plus random characters, so
/// tests that share a server or a Redis never meet in a room.
pub fn room(tag: &str) -> String {
    format!("{tag}-{}", signaling::ids::random_hex(6))
}

/// A join token for `room` signed with `secret`, valid for ten minutes.
pub fn join_token(secret: &str, room: &str) -> String {
    let exp = signaling::auth::now_unix() + 600;
    signaling::auth::Auth::new(secret).sign(&serde_json::json!({"room": room, "exp": exp}))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The external conformance probe, an extra check where it sits beside the
/// repository: `$SIGPROBE` if set, else built from
/// `../shared/tools/sigprobe` into `target/sigprobe`; `None` where it is
/// absent (the project's own tests cover the protocol without it).
pub fn sigprobe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIGPROBE") {
        return Some(PathBuf::from(p));
    }
    let root = workspace_root();
    let manifest = root.join("../shared/tools/sigprobe/Cargo.toml");
    if !manifest.exists() {
        return None;
    }
    let target = root.join("target/sigprobe");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building sigprobe failed");
    Some(target.join("release/sigprobe"))
}

/// Runs the probe with `args` and fails with its FAIL lines if any check
/// fails. Returns its output, or `None` (saying so in one line) where the
/// probe is absent.
pub fn run_sigprobe(args: &[&str]) -> Option<String> {
    let Some(probe) = sigprobe() else {
        eprintln!("conformance probe not found beside the repository: its check is skipped");
        return None;
    };
    let out = Command::new(probe)
        .args(args)
        .output()
        .expect("sigprobe runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(fails.is_empty(), "sigprobe failures:\n{}", fails.join("\n"));
    assert!(out.status.success(), "sigprobe exited with {}", out.status);
    Some(stdout)
}
