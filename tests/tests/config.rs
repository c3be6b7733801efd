//! Where the real `signaling` binary takes its settings from: a flag, else
//! its `SIGNALING_*` variable, else the config file (`--config`,
//! `SIGNALING_CONFIG`), else the default; `PORT` when nothing sets the
//! listen address; `--print-config` with secrets redacted.

use serde_json::json;
use signaling_e2e::client::Client;
use signaling_e2e::redis::free_port;
use signaling_e2e::server::ServerProcess;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

/// A config file with `text`, in a folder of its own.
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("signaling.toml");
    std::fs::write(&path, text).expect("the config file");
    (dir, path)
}

/// `signaling ARGS` with `env`, run to its end: (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(ServerProcess::binary())
        .args(args)
        .env_remove("SIGNALING_CONFIG")
        .env_remove("PORT")
        .envs(env.iter().copied())
        .output()
        .expect("signaling runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line `--print-config` gives for `key`.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{printed}"))
}

const FILE: &str = r#"
redis-prefix = "from-file"
node-timeout = "7s"
max_room_peers = 12
rate = 40
stun-urls = ["stun:a.example:3478", "stun:b.example:3478"]
auth-secret = "a-file-secret-of-well-over-32-bytes"
redis-url = "redis://app:hunter2@127.0.0.1:1/0"
"#;

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let (_dir, path) = file(FILE);
    let path = path.to_str().expect("utf-8 path");
    let (code, out, err) = run(
        &["--config", path, "--max-room-peers", "20", "--print-config"],
        &[
            ("SIGNALING_MAX_ROOM_PEERS", "15"),
            ("SIGNALING_NODE_TIMEOUT", "9s"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        line(&out, "max-room-peers"),
        r#"max-room-peers = "20"  # flag"#
    );
    assert_eq!(
        line(&out, "node-timeout"),
        r#"node-timeout = "9s"  # environment"#
    );
    assert_eq!(
        line(&out, "redis-prefix"),
        r#"redis-prefix = "from-file"  # file"#
    );
    assert_eq!(line(&out, "rate"), r#"rate = "40"  # file"#);
    assert_eq!(
        line(&out, "stun-urls"),
        r#"stun-urls = ["stun:a.example:3478", "stun:b.example:3478"]  # file"#
    );
    assert_eq!(line(&out, "rate-burst"), r#"rate-burst = "100"  # default"#);
    assert_eq!(
        line(&out, "auth-secret"),
        r#"auth-secret = "<redacted>"  # file"#
    );
    assert_eq!(
        line(&out, "redis-url"),
        r#"redis-url = "redis://app:<redacted>@127.0.0.1:1/0"  # file"#
    );
    assert!(
        !out.contains("hunter2") && !out.contains("a-file-secret"),
        "{out}"
    );
    // The printout is itself a config file the server takes back.
    let (_dir2, again) = file(
        &out.lines()
            .filter(|l| !l.contains("<redacted>") && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let (code, out2, err) = run(
        &["--config", again.to_str().expect("utf-8"), "--print-config"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        line(&out2, "max-room-peers"),
        r#"max-room-peers = "20"  # file"#
    );
}

#[test]
fn signaling_config_names_the_file_and_bad_files_are_refused_by_name() {
    let (_dir, path) = file("redis-prefix = \"env-named\"\n");
    let (code, out, err) = run(
        &["--print-config"],
        &[("SIGNALING_CONFIG", path.to_str().expect("utf-8"))],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        line(&out, "redis-prefix"),
        r#"redis-prefix = "env-named"  # file"#
    );

    let (_dir, path) = file("no-such-setting = 1\n");
    let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("`no-such-setting`"), "{err}");

    let (_dir, path) = file("max-room-peers = \"many\"\n");
    let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("many"), "{err}");

    let (_dir, path) = file("this is not toml\n");
    let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid TOML"), "{err}");

    let (code, _, err) = run(&["--config", "/nonexistent/signaling.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the config file"), "{err}");
}

/// The file's settings reach the running server, not only the printout:
/// its listen address, and its room cap refusing a second member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_on_its_config_file() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (_dir, path) = file(&format!("listen = \"{addr}\"\nmax-room-peers = 1\n"));
    let server =
        ServerProcess::start_at(addr, &["--config", path.to_str().expect("utf-8")], &[]).await;
    let room = signaling_e2e::room("config-file");
    let mut a = Client::connect(&server.ws(), "a").await;
    a.join(&room).await;
    let mut b = Client::connect(&server.ws(), "b").await;
    b.send(json!({"type":"join","room":room})).await;
    assert_eq!(b.expect("error").await["code"], "room_full");
}

/// `PORT` (what container platforms set) gives the port when nothing sets
/// the listen address, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_is_honoured_when_no_listen_address_is_given() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let port_text = port.to_string();
    // 0.0.0.0:PORT: reached here through loopback.
    let server = ServerProcess::start_at(addr, &[], &[("PORT", &port_text)]).await;
    drop(server);
    let (code, out, err) = run(
        &["--listen", "127.0.0.1:9999", "--print-config"],
        &[("PORT", &port_text)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "listen"), r#"listen = "127.0.0.1:9999"  # flag"#);
    let (code, _, err) = run(&["--print-config"], &[("PORT", "eighty")]);
    assert_eq!(code, 2);
    assert!(err.contains("PORT"), "{err}");
}
