//! Shared helpers of the end-to-end tests (in this crate's `tests/` folder).

pub mod client;
pub mod nginx;
pub mod proxy;
pub mod redis;
pub mod server;
pub mod stun;
pub mod tls;
pub mod turn;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A room name of its own for one test: `tag` plus random characters, so
/// tests that share a server or a Redis never meet in a room.
pub fn room(tag: &str) -> String {
    format!("{tag}-{}", signaling::ids::random_hex(6))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The conformance probe: `$SIGPROBE` if set, else built from
/// `../shared/tools/sigprobe` into `target/sigprobe`.
pub fn sigprobe() -> PathBuf {
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

/// Runs the probe with `args` and fails with its FAIL lines if any check
/// fails. Returns its output.
pub fn run_sigprobe(args: &[&str]) -> String {
    let out = Command::new(sigprobe())
        .args(args)
        .output()
        .expect("sigprobe runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(fails.is_empty(), "sigprobe failures:\n{}", fails.join("\n"));
    assert!(out.status.success(), "sigprobe exited with {}", out.status);
    stdout
}
