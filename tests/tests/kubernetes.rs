//! `deploy/kubernetes/`: valid for the Kubernetes API (the real
//! `kubernetes-validate`, which checks against the API's own schemas), and
//! what its Deployment gives the container is what the real server takes:
//! each `SIGNALING_*` variable a setting the server reads (`--print-config`
//! says where every value came from), the probes and Service on the port it
//! listens on, the grace longer than its drain. No cluster runs here; a
//! server started with the manifest's settings (its Secret's files made
//! locally) serves its probes.

use serde::Deserialize;
use serde_yaml_ng::Value;
use signaling_e2e::client::http_get;
use signaling_e2e::redis::{Redis, free_port};
use signaling_e2e::server::ServerProcess;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

fn manifest_path() -> PathBuf {
    signaling_e2e::workspace_root().join("deploy/kubernetes/signaling.yaml")
}

/// The manifest's documents, by kind.
fn documents() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(manifest_path()).expect("the manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let v = Value::deserialize(d).expect("YAML");
            (v["kind"].as_str().expect("a kind").to_owned(), v)
        })
        .collect()
}

/// The container's plain `env` values, and the names of those from elsewhere.
fn container_env(deployment: &Value) -> (BTreeMap<String, String>, Vec<String>) {
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut plain = BTreeMap::new();
    let mut from = Vec::new();
    for e in c["env"].as_sequence().expect("env") {
        let name = e["name"].as_str().expect("a name").to_owned();
        match e["value"].as_str() {
            Some(v) => {
                plain.insert(name, v.to_owned());
            }
            None => from.push(name),
        }
    }
    (plain, from)
}

/// `signaling --print-config` with `env` (nothing else of this process's).
fn print_config(env: &BTreeMap<String, String>) -> String {
    let out = Command::new(ServerProcess::binary())
        .arg("--print-config")
        .env_clear()
        .envs(env)
        .output()
        .expect("signaling runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The manifest's variable name for a flag's long name.
fn variable(long: &str) -> String {
    format!("SIGNALING_{}", long.to_uppercase().replace('-', "_"))
}

#[test]
fn the_manifests_are_valid_kubernetes() {
    let tool =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let out = Command::new(&tool)
        .arg("--strict")
        .arg(manifest_path())
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs (scripts/test installs it): {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for kind in ["deployment", "service", "poddisruptionbudget"] {
        assert!(
            text.contains(&format!("passed for resource {kind}/signaling")),
            "{text}"
        );
    }
}

#[test]
fn the_deployment_sets_only_settings_the_server_reads() {
    let docs = documents();
    let deployment = &docs["Deployment"];
    let (mut env, from_elsewhere) = container_env(deployment);
    // The node id comes from the pod's name: one of its own per replica.
    assert_eq!(from_elsewhere, ["SIGNALING_NODE_ID"]);
    env.insert("SIGNALING_NODE_ID".into(), "signaling-7d9f-abcde".into());
    let printed = print_config(&env);
    for (name, value) in &env {
        let line = printed
            .lines()
            .find(|l| {
                l.split(" = ")
                    .next()
                    .is_some_and(|long| variable(long) == *name)
            })
            .unwrap_or_else(|| panic!("{name} is no setting of the server:\n{printed}"));
        assert!(line.ends_with("# environment"), "{name} not read: {line}");
        let shown = line.split(" = ").nth(1).unwrap_or_default();
        if !name.contains("SECRET") || name.ends_with("_FILE") {
            let first = value.split(',').next().unwrap_or_default();
            assert!(shown.contains(first), "{name}: {line}");
        }
    }
}

/// Seconds of a duration as the server prints it (`20s`, `1m`).
fn seconds(printed: &str, long: &str) -> u64 {
    let line = printed
        .lines()
        .find(|l| l.starts_with(&format!("{long} = ")))
        .unwrap_or_else(|| panic!("no {long}"));
    let value = line.split('"').nth(1).expect("a quoted value");
    signaling::config::parse_duration(value)
        .expect("a duration")
        .as_secs()
}

#[test]
fn probes_service_and_grace_agree_with_the_server() {
    let docs = documents();
    let deployment = &docs["Deployment"];
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let (env, _) = container_env(deployment);
    let listen: SocketAddr = env["SIGNALING_LISTEN"].parse().expect("an address");
    let port = &c["ports"][0];
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(listen.port()))
    );
    let port_name = port["name"].as_str().expect("a named port");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"].as_str(), Some(port_name));
    }
    let service = &docs["Service"];
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some(port_name)
    );
    // /metrics on its own port, which the Service does not carry.
    let metrics: SocketAddr = env["SIGNALING_METRICS_LISTEN"].parse().expect("an address");
    assert_eq!(
        c["ports"][1]["containerPort"].as_u64(),
        Some(u64::from(metrics.port()))
    );
    assert_eq!(
        service["spec"]["ports"].as_sequence().map(Vec::len),
        Some(1)
    );
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &service["spec"]["selector"],
        &docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["selector"]["matchLabels"],
    ] {
        assert_eq!(selector, labels, "selects the pods");
    }
    // The drain (after the preStop pause) ends before the kubelet's SIGKILL.
    let printed = print_config(&env);
    let drain = seconds(&printed, "drain-timeout");
    let command = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("a preStop command");
    assert_eq!(command[0], "sleep");
    let pause: u64 = command[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace");
    assert!(
        grace > pause + drain,
        "grace {grace} s <= {pause} s + drain {drain} s"
    );
    // The image's user, by number (Dockerfile), so runAsNonRoot can hold.
    let dockerfile = std::fs::read_to_string(signaling_e2e::workspace_root().join("Dockerfile"))
        .expect("the Dockerfile");
    let uid = pod["securityContext"]["runAsUser"].as_u64().expect("a uid");
    assert!(
        dockerfile.contains(&format!("--uid {uid} ")),
        "the image's user is not {uid}"
    );
}

/// The container's settings, with the Secret's files made here and a real
/// Redis for its URL: the server starts on them and serves both probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_the_deployments_settings_serves_its_probes() {
    let docs = documents();
    let (mut env, _) = container_env(&docs["Deployment"]);
    let redis = Redis::start();
    let secrets = tempfile::tempdir().expect("a temp dir");
    for (name, value) in env.iter_mut().filter(|(n, _)| n.ends_with("_FILE")) {
        let file = value.rsplit('/').next().expect("a file name").to_owned();
        let content = match name.as_str() {
            "SIGNALING_REDIS_URL_FILE" => redis.url(),
            _ => signaling::ids::random_hex(32),
        };
        let path = secrets.path().join(file);
        std::fs::write(&path, content + "\n").expect("a secret file");
        *value = path.to_str().expect("utf-8").to_owned();
    }
    env.insert("SIGNALING_NODE_ID".into(), "signaling-7d9f-abcde".into());
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    env.insert("SIGNALING_LISTEN".into(), addr.to_string());
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    env.insert("SIGNALING_METRICS_LISTEN".into(), metrics.to_string());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = ServerProcess::start_at(addr, &[], &env).await;
    server.wait_ready(std::time::Duration::from_secs(15)).await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(
        http_get(addr, "/metrics").await.0,
        404,
        "not on the Service's port"
    );
    assert_eq!(http_get(metrics, "/metrics").await.0, 200);
    let log = server.log();
    assert!(log.contains("signaling-7d9f-abcde"), "{log}");
}
