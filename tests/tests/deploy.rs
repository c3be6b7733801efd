//! The deployment files, checked offline (no Docker engine runs here):
//! docker-compose.yml, the Dockerfile, nginx and coturn configuration must
//! agree with each other and with the server's real flags.

use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    signaling_e2e::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses")
}

fn services(c: &Value) -> &serde_yaml_ng::Mapping {
    c["services"].as_mapping().expect("services")
}

fn env_of<'a>(svc: &'a Value, key: &str) -> Option<&'a str> {
    svc["environment"][key].as_str()
}

/// Every `SIGNALING_*` variable the server reads, from its flag definitions.
fn server_env_vars() -> BTreeSet<String> {
    let src = read("signaling/src/config.rs");
    src.split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect()
}

fn signaling_nodes(c: &Value) -> Vec<(String, &Value)> {
    services(c)
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str()?;
            name.starts_with("signaling").then(|| (name.to_string(), v))
        })
        .collect()
}

#[test]
fn compose_services_fit_together() {
    let c = compose();
    let names: BTreeSet<&str> = services(&c).keys().filter_map(Value::as_str).collect();
    for want in ["redis", "coturn", "web"] {
        assert!(names.contains(want), "service {want} is missing");
    }
    for (name, svc) in services(&c) {
        let deps: Vec<&str> = match &svc["depends_on"] {
            Value::Sequence(s) => s.iter().filter_map(Value::as_str).collect(),
            Value::Mapping(m) => m.keys().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for d in deps {
            assert!(names.contains(d), "{name:?} depends on unknown service {d}");
        }
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().expect("short volume syntax");
            if let Some(host) = spec.split(':').next().filter(|h| h.starts_with("./")) {
                assert!(root().join(host).exists(), "{name:?} mounts missing {host}");
            }
        }
    }
}

#[test]
fn the_nodes_form_one_cluster_with_real_flags() {
    let c = compose();
    let nodes = signaling_nodes(&c);
    assert!(nodes.len() >= 2, "at least two signaling nodes");
    let known = server_env_vars();
    assert!(
        known.contains("SIGNALING_REDIS_URL"),
        "config parsing found {known:?}"
    );
    let mut ids = BTreeSet::new();
    for (name, svc) in &nodes {
        for (k, _) in svc["environment"].as_mapping().expect("environment map") {
            let k = k.as_str().expect("env name");
            assert!(known.contains(k), "{name}: {k} is not a flag of the server");
        }
        let redis = env_of(svc, "SIGNALING_REDIS_URL").expect("redis url");
        assert_eq!(redis, "redis://redis:6379", "{name} uses the compose redis");
        assert_eq!(env_of(svc, "SIGNALING_LISTEN"), Some("0.0.0.0:8080"));
        assert!(
            ids.insert(env_of(svc, "SIGNALING_NODE_ID").expect("node id")),
            "{name}: node ids must differ"
        );
        assert_eq!(
            svc["build"].as_str(),
            Some("."),
            "{name} builds the Dockerfile"
        );
    }
    // nginx balances over exactly these nodes, on their listen port.
    let nginx = read("deploy/nginx.conf");
    let upstreams: BTreeSet<String> = nginx
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server ") && l.contains(':'))
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect();
    let expected: BTreeSet<String> = nodes.iter().map(|(n, _)| format!("{n}:8080")).collect();
    assert_eq!(upstreams, expected);
}

#[test]
fn nginx_proxies_websockets_properly() {
    let nginx = read("deploy/nginx.conf");
    let ws = nginx
        .split("location = /ws")
        .nth(1)
        .expect("a /ws location");
    let ws = ws.split("location").next().unwrap_or(ws);
    for needed in [
        "proxy_http_version 1.1",
        "Upgrade $http_upgrade",
        "Connection $connection_upgrade",
        "http_503",
    ] {
        assert!(ws.contains(needed), "/ws lacks {needed}");
    }
    let timeout: u64 = ws
        .split("proxy_read_timeout")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.trim_end_matches(';').trim_end_matches('s').parse().ok())
        .expect("proxy_read_timeout in seconds");
    assert!(
        timeout > 30,
        "proxy_read_timeout must outlast the 30 s heartbeat"
    );
    let c = compose();
    let web = &services(&c)["web"];
    let mounts: Vec<&str> = web["volumes"]
        .as_sequence()
        .expect("web volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(mounts.iter().any(|m| m.starts_with("./deploy/nginx.conf:")));
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./client/web:/usr/share/nginx/html"))
    );
}

#[test]
fn the_dockerfile_builds_the_server_with_every_workspace_member() {
    let d = read("Dockerfile");
    assert!(
        d.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    assert!(d.contains("cargo build --release --locked -p signaling"));
    assert!(d.contains("COPY client/web /srv/web") && d.contains("SIGNALING_WEB_ROOT=/srv/web"));
    assert!(d.contains("ENTRYPOINT [\"signaling\"]"));
    let manifest = read("Cargo.toml");
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("workspace members");
    for m in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let top = m.split('/').next().unwrap_or(m);
        assert!(
            d.contains(&format!("COPY {top} ./{top}")),
            "the Dockerfile must copy {top}"
        );
    }
}

#[test]
fn coturn_production_config_denies_loopback_and_private_peers() {
    let conf = read("turn-config/turnserver.conf");
    let active: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for needed in [
        "use-auth-secret",
        "fingerprint",
        "no-cli",
        "no-loopback-peers",
        "no-multicast-peers",
    ] {
        assert!(active.contains(&needed), "turnserver.conf lacks {needed}");
    }
    for range in [
        "127.0.0.0-",
        "10.0.0.0-",
        "172.16.0.0-",
        "192.168.0.0-",
        "169.254.0.0-",
        "100.64.0.0-",
    ] {
        assert!(
            active
                .iter()
                .any(|l| l.starts_with("denied-peer-ip=") && l.contains(range)),
            "turnserver.conf must deny {range}"
        );
    }
    assert!(active.contains(&"denied-peer-ip=::1"));
    assert!(
        !active.iter().any(|l| l.starts_with("allow-loopback-peers")),
        "never in production"
    );
    assert!(
        !active.iter().any(|l| l.starts_with("allowed-peer-ip")),
        "no exceptions in production"
    );
    let c = compose();
    let coturn = &services(&c)["coturn"];
    let mounts: Vec<&str> = coturn["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./turn-config/turnserver.conf:"))
    );
}

#[test]
fn docker_compose_accepts_the_file() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output();
    match out {
        Ok(o) => assert!(
            o.status.success(),
            "docker-compose config failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "docker-compose is needed to validate the compose file ({e}); \
             scripts/test installs it: apt-get install --no-install-recommends docker-compose"
        ),
    }
}
