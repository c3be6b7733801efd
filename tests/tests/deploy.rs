//! The deployment files, checked offline (no Docker engine runs on the CI
//! machine): docker-compose.yml, the Dockerfile, deploy/nginx.conf and
//! turn-config/ must agree with each other and with the server's real flags.
//!
//! Some checks run real tools, and fail (never skip) when they are missing:
//! `docker-compose config` (Debian package `docker-compose`), `turnserver -h`
//! and turnserver itself (Debian package `coturn`) as compose's coturn user
//! reading the mounted key (that one needs root for `setpriv`, and says it
//! skipped without). scripts/test installs both packages.

use clap::{CommandFactory, Parser};
use serde_yaml_ng::{Mapping, Value};
use signaling::Config;
use signaling_e2e::turn::conf_value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const COMPOSE: &str = "docker-compose.yml";
const NGINX: &str = "deploy/nginx.conf";
const TURN_PROD: &str = "turn-config/turnserver.conf";

// ---------------------------------------------------------------------------
// Reading the files

fn root() -> PathBuf {
    signaling_e2e::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// docker-compose.yml with its `<<` merge keys applied, as compose sees it.
fn compose() -> Value {
    let mut v: Value = serde_yaml_ng::from_str(&read(COMPOSE)).expect("docker-compose.yml parses");
    v.apply_merge().expect("docker-compose.yml merge keys");
    v
}

fn services(c: &Value) -> &Mapping {
    c["services"]
        .as_mapping()
        .expect("docker-compose.yml has services")
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The signaling nodes: the services built from this repository.
fn nodes(c: &Value) -> Vec<(&str, &Value)> {
    services(c)
        .iter()
        .filter(|(_, svc)| svc.get("build").is_some())
        .map(|(k, svc)| (k.as_str().expect("service name"), svc))
        .collect()
}

/// A service's environment, in either of compose's two forms. `None` is a
/// variable passed through from the shell (`KEY:` or `- KEY`).
fn environment(svc: &Value) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match &svc["environment"] {
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().expect("environment name").to_string();
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    other => panic!("environment {k}: unexpected {other:?}"),
                };
                env.insert(k, v);
            }
        }
        Value::Sequence(s) => {
            for item in s {
                let item = item.as_str().expect("environment entry");
                match item.split_once('=') {
                    Some((k, v)) => env.insert(k.to_string(), Some(v.to_string())),
                    None => env.insert(item.to_string(), None),
                };
            }
        }
        Value::Null => {}
        other => panic!("environment: unexpected {other:?}"),
    }
    env
}

/// Compose's interpolation with no variable set: `${V:-default}` and
/// `${V-default}` give the default, a required `${V:?message}` gives
/// `required` (as if the user had set it), a bare `${V}` gives "".
fn interpolate(s: &str, required: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {s}"));
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_len = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let op = expr[name_len..].trim_start_matches(':');
            if let Some(default) = op.strip_prefix('-') {
                out.push_str(default);
            } else if op.starts_with('?') {
                out.push_str(required);
            }
        } else {
            panic!("bare $ in {s:?}: write $$ or ${{VAR}}");
        }
    }
    out.push_str(rest);
    out
}

/// The variable names a compose value refers to (`${NAME...}`).
fn variables(s: &str) -> Vec<&str> {
    s.split("${")
        .skip(1)
        .filter_map(|r| r.split(['}', ':', '-', '?']).next())
        .collect()
}

/// Short port syntax: `[ip:]host:container[/proto]`, each side a port or a
/// range. Returns (host side, container side, protocol).
fn ports(svc: &Value) -> Vec<(Option<String>, String, String)> {
    strings(&svc["ports"])
        .into_iter()
        .map(|p| {
            let (spec, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let parts: Vec<&str> = spec.split(':').collect();
            let container = parts.last().expect("port").to_string();
            let host = (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string());
            (host, container, proto.to_string())
        })
        .collect()
}

fn port_range(s: &str) -> (u16, u16) {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    (
        a.parse().unwrap_or_else(|_| panic!("port {s}")),
        b.parse().unwrap_or_else(|_| panic!("port {s}")),
    )
}

/// Compose durations: `30s`, `1m30s`, `500ms`, `1h`.
fn compose_duration(s: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or_else(|| panic!("duration {s:?} needs a unit"));
        let n: f64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("duration {s:?}"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            "us" => n / 1e6,
            other => panic!("duration {s:?}: unit {other:?}"),
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_len..];
    }
    total
}

/// Every (env var, long flag) of the server, from its own clap definition.
fn server_flags() -> BTreeMap<String, String> {
    Config::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            Some((env, a.get_long()?.to_string()))
        })
        .collect()
}

/// A node's configuration exactly as the server would parse its compose
/// environment (every `SIGNALING_*` variable given as its flag).
fn node_config(name: &str, svc: &Value) -> Config {
    let flags = server_flags();
    let mut args = vec!["signaling".to_string()];
    for (k, v) in environment(svc) {
        let Some(v) = v else { continue };
        let flag = flags
            .get(&k)
            .unwrap_or_else(|| panic!("{name}: {k} is not an environment variable of the server"));
        args.push(format!("--{flag}"));
        args.push(interpolate(&v, "a-secret"));
    }
    Config::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("{name}: the server refuses its environment {args:?}: {e}"))
}

/// nginx.conf without comments.
fn nginx() -> String {
    read(NGINX)
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of the block opened by `header` (e.g. `location = /ws`).
fn nginx_block<'a>(conf: &'a str, header: &str) -> &'a str {
    let start = conf
        .find(header)
        .unwrap_or_else(|| panic!("{NGINX} has no `{header}` block"));
    let open = start + conf[start..].find('{').expect("block opens");
    let mut depth = 0;
    for (i, c) in conf[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &conf[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("{NGINX}: `{header}` block never closes")
}

/// The simple directives of a block, as words (nested blocks are skipped).
fn directives(block: &str) -> Vec<Vec<String>> {
    let mut flat = String::new();
    let mut depth = 0;
    for c in block.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    flat.split(';')
        .map(|d| d.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .collect()
}

fn directive<'a>(block: &'a [Vec<String>], name: &str) -> Option<&'a [String]> {
    block.iter().find(|d| d[0] == name).map(|d| &d[1..])
}

/// nginx times: `120s`, `2m`, `120` (seconds).
fn nginx_time(s: &str) -> Duration {
    if let Some(m) = s.strip_suffix('m') {
        Duration::from_secs(60 * m.parse::<u64>().expect("minutes"))
    } else {
        Duration::from_secs(s.trim_end_matches('s').parse().expect("seconds"))
    }
}

/// The upstream the nginx front balances over: its name and `server` lines.
fn nginx_upstream(conf: &str) -> (String, Vec<Vec<String>>) {
    let name = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("upstream "))
        .and_then(|r| r.split_whitespace().next())
        .expect("an upstream block")
        .to_string();
    let servers = directives(nginx_block(conf, &format!("upstream {name}")))
        .into_iter()
        .filter(|d| d[0] == "server")
        .collect();
    (name, servers)
}

/// The Dockerfile as instructions (continuation lines joined, comments out).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (kw, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((kw.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// The Dockerfile's `ENV` settings.
fn dockerfile_env(instrs: &[(String, String)]) -> BTreeMap<String, String> {
    instrs
        .iter()
        .filter(|(kw, _)| kw == "ENV")
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The active `key[=value]` lines of a coturn config (the checks of the
/// configs themselves, against a real coturn, are in `coturn_conf.rs`).
fn turn_conf(path: &str) -> Vec<(String, String)> {
    signaling_e2e::turn::conf_entries(&read(path))
}

// ---------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_services_and_their_dependencies_exist() {
    let c = compose();
    let names: BTreeSet<&str> = services(&c).keys().filter_map(Value::as_str).collect();
    for want in ["redis", "signaling-1", "signaling-2", "coturn", "web"] {
        assert!(names.contains(want), "service {want} is missing");
    }
    for (name, svc) in services(&c) {
        let deps: Vec<&str> = match &svc["depends_on"] {
            Value::Sequence(s) => s.iter().filter_map(Value::as_str).collect(),
            Value::Mapping(m) => m.keys().filter_map(Value::as_str).collect(),
            Value::Null => Vec::new(),
            other => panic!("{name:?}: depends_on {other:?}"),
        };
        for d in deps {
            assert!(names.contains(d), "{name:?} depends on unknown service {d}");
        }
        assert!(
            svc.get("network_mode").is_none(),
            "{name:?}: no network_mode (no host networking), publish ports instead"
        );
    }
    // The front starts once both nodes answer.
    let web = service(&c, "web");
    for (node, _) in nodes(&c) {
        assert!(
            web["depends_on"].get(node).is_some() || strings(&web["depends_on"]).contains(&node),
            "web must depend on {node}"
        );
    }
}

#[test]
fn compose_bind_mounts_exist_in_the_repo() {
    let c = compose();
    let mut seen = 0;
    for (name, svc) in services(&c) {
        for spec in strings(&svc["volumes"]) {
            let host = spec.split(':').next().expect("volume");
            if !(host.starts_with("./") || host.starts_with("../") || host.starts_with('/')) {
                continue; // a named volume
            }
            assert!(
                !host.starts_with('/'),
                "{name:?}: {host} is outside the repo"
            );
            assert!(
                root().join(host).exists(),
                "{name:?} mounts {host}, which is not in the repo"
            );
            assert!(
                spec.ends_with(":ro"),
                "{name:?}: mount {spec} read-only (config and static files)"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "nginx.conf, client/web and turnserver.conf are mounted"
    );
}

#[test]
fn compose_and_dockerfile_set_only_real_server_flags() {
    let flags = server_flags();
    assert!(
        flags.contains_key("SIGNALING_REDIS_URL")
            && flags.contains_key("SIGNALING_HEARTBEAT_TIMEOUT"),
        "the flags' env vars come from the server's clap definition: {flags:?}"
    );
    // The same names as `env = "..."` in config.rs.
    let grepped: BTreeSet<String> = read("signaling/src/config.rs")
        .split("env = \"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .map(String::from)
        .collect();
    assert_eq!(grepped, flags.keys().cloned().collect::<BTreeSet<_>>());

    // Any SIGNALING_* word anywhere in the compose file, comments included.
    let text = read(COMPOSE);
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("SIGNALING_") {
            assert!(
                flags.contains_key(word),
                "{COMPOSE}: {word} is not a flag of the server"
            );
        }
    }
    let c = compose();
    for (name, svc) in services(&c) {
        let name = name.as_str().expect("service name");
        for (k, v) in environment(svc) {
            if !k.starts_with("SIGNALING_") {
                continue;
            }
            assert!(
                flags.contains_key(&k),
                "{name}: {k} is not a flag of the server"
            );
            // clap takes an empty variable as a value: an empty
            // SIGNALING_AUTH_SECRET would turn auth on with an empty key.
            if let Some(v) = v {
                assert!(
                    !interpolate(&v, "x").is_empty(),
                    "{name}: {k}={v:?} can be empty; pass it through (`{k}:`) instead"
                );
            }
        }
    }
    for (name, svc) in nodes(&c) {
        node_config(name, svc); // every value parses as the server parses it
    }

    let env = dockerfile_env(&dockerfile());
    for k in env.keys().filter(|k| k.starts_with("SIGNALING_")) {
        assert!(
            flags.contains_key(k),
            "Dockerfile: {k} is not a flag of the server"
        );
    }
}

#[test]
fn signaling_nodes_form_one_cluster() {
    let c = compose();
    let nodes = nodes(&c);
    assert!(nodes.len() >= 2, "at least two signaling nodes: {nodes:?}");
    let mut ids = BTreeSet::new();
    let mut redis_urls = BTreeSet::new();
    for (name, svc) in &nodes {
        let config = node_config(name, svc);
        assert_eq!(
            svc["build"].as_str(),
            Some("."),
            "{name} builds the Dockerfile"
        );

        let url = config
            .redis_url
            .clone()
            .unwrap_or_else(|| panic!("{name}: SIGNALING_REDIS_URL"));
        let host = url
            .strip_prefix("redis://")
            .and_then(|r| r.split([':', '/']).next())
            .unwrap_or_else(|| panic!("{name}: {url} is not redis://host:port"));
        assert!(
            services(&c).contains_key(host),
            "{name}: Redis host {host} is not a service"
        );
        assert_eq!(
            svc["depends_on"][host]["condition"].as_str(),
            Some("service_healthy"),
            "{name} waits for Redis to answer"
        );
        redis_urls.insert(url);

        let id = config
            .node_id
            .clone()
            .unwrap_or_else(|| panic!("{name}: SIGNALING_NODE_ID"));
        assert!(
            ids.insert(id.clone()),
            "{name}: node id {id} is taken by another node"
        );

        let grace = compose_duration(
            svc["stop_grace_period"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: stop_grace_period (Docker's default 10 s)")),
        );
        assert!(
            grace > config.drain_timeout,
            "{name}: stop_grace_period {grace:?} must outlast the drain ({:?})",
            config.drain_timeout
        );

        let check = strings(&svc["healthcheck"]["test"]).join(" ");
        assert!(
            check.contains("/healthz") && check.contains(&config.listen.port().to_string()),
            "{name}: healthcheck on /healthz at the listen port: {check}"
        );
        assert!(
            !check.contains("readyz"),
            "{name}: a draining node must not count as dead"
        );

        // The TURN credentials the node mints are for this stack's coturn.
        assert_eq!(
            config.turn_secret.is_some(),
            !config.turn_urls.is_empty(),
            "{name}: TURN URLs and secret go together"
        );
    }
    assert_eq!(
        redis_urls.len(),
        1,
        "every node on the same Redis: {redis_urls:?}"
    );

    let redis = service(&c, "redis");
    assert!(
        strings(&redis["healthcheck"]["test"])
            .join(" ")
            .contains("redis-cli ping"),
        "redis healthcheck"
    );
    let cmd = strings(&redis["command"]).join(" ");
    assert!(
        cmd.contains("--save ") && cmd.contains("--appendonly no"),
        "redis without persistence: {cmd}"
    );
}

/// The nodes believe `X-Forwarded-For` from nginx only: its address is
/// pinned in the compose network, and that one address (no wider range) is
/// the nodes' trusted proxy. The nodes publish no port, so nothing else can
/// reach them from outside (tests/nginx.rs checks that the limits then key on
/// the client nginx saw).
#[test]
fn nodes_trust_exactly_nginxs_pinned_address() {
    let c = compose();
    let web = service(&c, "web");
    let pinned: std::net::Ipv4Addr = web["networks"]["default"]["ipv4_address"]
        .as_str()
        .expect("web has a pinned ipv4_address on the default network")
        .parse()
        .expect("an IPv4 address");
    let subnet = c["networks"]["default"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("the default network has a fixed subnet");
    let (net, bits) = subnet.split_once('/').expect("a CIDR subnet");
    let net: std::net::Ipv4Addr = net.parse().expect("subnet address");
    let bits: u32 = bits.parse().expect("prefix length");
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    assert_eq!(
        u32::from(pinned) & mask,
        u32::from(net) & mask,
        "nginx's address {pinned} is inside {subnet}"
    );
    for (name, svc) in nodes(&c) {
        let node = node_config(name, svc);
        let trusted: Vec<String> = node.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            trusted,
            [format!("{pinned}/32")],
            "{name} trusts nginx's address and nothing else"
        );
        assert!(svc["ports"].is_null(), "{name} publishes no port");
        assert!(node.auth_secret.is_some(), "{name} runs with auth");
    }
}

#[test]
fn ports_agree_across_compose_nginx_and_dockerfile() {
    let c = compose();
    let conf = nginx();
    let (_, servers) = nginx_upstream(&conf);
    let upstream: BTreeSet<String> = servers.iter().map(|d| d[1].clone()).collect();
    let mut expected = BTreeSet::new();
    for (name, svc) in nodes(&c) {
        let port = node_config(name, svc).listen.port().to_string();
        assert!(
            strings(&svc["expose"]).contains(&port.as_str()),
            "{name}: expose the listen port {port}"
        );
        expected.insert(format!("{name}:{port}"));
    }
    assert_eq!(
        upstream, expected,
        "nginx balances over exactly the nodes, on their ports"
    );

    let instrs = dockerfile();
    let listen = dockerfile_env(&instrs)
        .get("SIGNALING_LISTEN")
        .cloned()
        .expect("Dockerfile sets SIGNALING_LISTEN");
    let port = listen.rsplit(':').next().expect("listen port");
    let exposed: Vec<&str> = instrs
        .iter()
        .filter(|(kw, _)| kw == "EXPOSE")
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(
        exposed,
        [port],
        "Dockerfile EXPOSE matches SIGNALING_LISTEN"
    );

    // web publishes exactly nginx's listen ports, each on the same host
    // port (the redirect to https://$host/ assumes 443).
    let mut listens = BTreeSet::new();
    let mut rest = conf.as_str();
    while let Some(at) = rest.find("server {") {
        let block = directives(nginx_block(rest, "server {"));
        for l in block.iter().filter(|d| d[0] == "listen") {
            listens.insert(l[1].clone());
        }
        rest = &rest[at + "server {".len()..];
    }
    assert_eq!(
        listens,
        BTreeSet::from(["80".to_string(), "443".to_string()]),
        "nginx listens on 80 (redirect) and 443 (TLS)"
    );
    let web: BTreeSet<String> = ports(service(&c, "web"))
        .into_iter()
        .map(|(host, container, proto)| {
            assert_eq!(
                host.as_deref(),
                Some(container.as_str()),
                "web: {container}"
            );
            assert_eq!(proto, "tcp");
            container
        })
        .collect();
    assert_eq!(web, listens, "web publishes nginx's ports");
}

// ---------------------------------------------------------------------------
// deploy/nginx.conf

#[test]
fn nginx_front_proxies_websockets_and_endpoints() {
    let c = compose();
    let conf = nginx();
    let (name, servers) = nginx_upstream(&conf);
    let upstream = directives(nginx_block(&conf, &format!("upstream {name}")));
    assert!(
        directive(&upstream, "least_conn").is_some(),
        "least_conn balancing"
    );
    assert!(
        directive(&upstream, "ip_hash").is_none() && directive(&upstream, "hash").is_none(),
        "no stickiness: any node serves any room"
    );
    for s in &servers {
        let host = s[1].split(':').next().expect("host");
        assert!(
            services(&c).contains_key(host),
            "upstream {host} is not a compose service"
        );
    }

    let ws = directives(nginx_block(&conf, "location = /ws"));
    assert_eq!(
        directive(&ws, "proxy_pass"),
        Some(&[format!("http://{name}/ws")][..]),
        "/ws goes to the upstream, with the matched path"
    );
    assert_eq!(
        directive(&ws, "proxy_http_version"),
        Some(&["1.1".to_string()][..])
    );
    let headers: Vec<String> = ws
        .iter()
        .filter(|d| d[0] == "proxy_set_header")
        .map(|d| d[1..].join(" "))
        .collect();
    assert!(
        headers.contains(&"Upgrade $http_upgrade".to_string()),
        "/ws: {headers:?}"
    );
    assert!(
        headers
            .iter()
            .any(|h| h == "Connection $connection_upgrade" || h == "Connection \"upgrade\""),
        "/ws: {headers:?}"
    );
    if headers.contains(&"Connection $connection_upgrade".to_string()) {
        assert!(
            conf.contains("map $http_upgrade $connection_upgrade"),
            "the upgrade map"
        );
    }
    let read_timeout =
        nginx_time(&directive(&ws, "proxy_read_timeout").expect("proxy_read_timeout")[0]);
    for (node, svc) in nodes(&c) {
        let heartbeat = node_config(node, svc).limits.heartbeat_timeout;
        assert!(
            read_timeout > heartbeat && read_timeout >= Duration::from_secs(60),
            "proxy_read_timeout {read_timeout:?} must outlast {node}'s heartbeat {heartbeat:?}"
        );
    }
    let next = directive(&ws, "proxy_next_upstream").expect("proxy_next_upstream on /ws");
    assert!(
        next.contains(&"http_503".to_string()),
        "a draining node's 503 goes to the next"
    );

    // The health endpoints go to the nodes too (retrying a draining one);
    // /api and /metrics are refused at the front.
    for e in ["healthz", "readyz"] {
        let block = directives(nginx_block(&conf, &format!("location = /{e}")));
        assert_eq!(
            directive(&block, "proxy_pass"),
            Some(&[format!("http://{name}/{e}")][..])
        );
        assert!(
            directive(&block, "proxy_next_upstream")
                .is_some_and(|n| n.contains(&"http_503".to_string())),
            "/{e} retries on 503"
        );
    }
    for refused in ["location ^~ /api", "location = /metrics"] {
        let block = directives(nginx_block(&conf, refused));
        assert_eq!(
            directive(&block, "return"),
            Some(&["404".to_string()][..]),
            "{refused}"
        );
    }
    assert_eq!(
        conf.matches("proxy_pass").count(),
        3,
        "only /ws, /healthz and /readyz reach the nodes"
    );

    let tls_at = conf.find("listen 443 ssl").expect("a TLS server");
    let tls_server = &conf[conf[..tls_at].rfind("server {").expect("server block")..];
    let server = directives(nginx_block(tls_server, "server {"));
    let html = directive(&server, "root").expect("root")[0].clone();
    let mounts = strings(&service(&c, "web")["volumes"]);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with(&format!("./client/web:{html}"))),
        "web mounts client/web at nginx's root {html}: {mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with(&format!("./{NGINX}:/etc/nginx/conf.d/"))),
        "web mounts {NGINX}: {mounts:?}"
    );
    // The certificate nginx serves is the mounted deploy/certs.
    for key in ["ssl_certificate", "ssl_certificate_key"] {
        let path = &directive(&server, key).unwrap_or_else(|| panic!("{key}"))[0];
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        assert!(
            mounts.contains(&format!("./deploy/certs:{dir}:ro").as_str()),
            "web mounts ./deploy/certs at {dir} for {key}: {mounts:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_builds_the_server_and_ships_the_client() {
    let instrs = dockerfile();
    let froms: Vec<&str> = instrs
        .iter()
        .filter(|(kw, _)| kw == "FROM")
        .map(|(_, r)| r.as_str())
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let build: Vec<&str> = froms[0].split_whitespace().collect();
    assert!(
        build[0].starts_with("rust:"),
        "build stage on a Rust image: {build:?}"
    );
    assert!(
        build.len() == 3 && build[1].eq_ignore_ascii_case("as"),
        "build stage named"
    );
    let stage = build[2];
    assert!(
        froms
            .last()
            .expect("runtime")
            .starts_with("debian:bookworm-slim"),
        "runtime on debian:bookworm-slim: {froms:?}"
    );

    // The binary: the server package's (no [[bin]] renames it).
    let manifest = read("signaling/Cargo.toml");
    assert!(
        !manifest.contains("[[bin]]"),
        "update this test for a [[bin]] section"
    );
    let bin = manifest
        .split("name = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("package name");

    let build_cmd = instrs
        .iter()
        .find(|(kw, r)| kw == "RUN" && r.contains("cargo build"))
        .map(|(_, r)| r.as_str())
        .expect("RUN cargo build");
    let words: Vec<&str> = build_cmd.split_whitespace().collect();
    assert!(
        words.contains(&"--release") && words.contains(&"--locked"),
        "{build_cmd}"
    );
    assert!(
        words
            .windows(2)
            .any(|w| (w[0] == "-p" || w[0] == "--package") && w[1] == bin),
        "builds -p {bin}: {build_cmd}"
    );

    let workdir = instrs
        .iter()
        .find(|(kw, _)| kw == "WORKDIR")
        .map(|(_, r)| r.as_str())
        .expect("WORKDIR in the build stage");
    let copy_bin = format!("--from={stage} {workdir}/target/release/{bin} /usr/local/bin/{bin}");
    assert!(
        instrs.iter().any(|(kw, r)| kw == "COPY" && *r == copy_bin),
        "COPY {copy_bin}"
    );
    let entry = instrs
        .iter()
        .rfind(|(kw, _)| kw == "ENTRYPOINT")
        .map(|(_, r)| r.as_str())
        .expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(entry).expect("ENTRYPOINT in exec form");
    assert_eq!(entry, [bin], "ENTRYPOINT runs the binary from PATH");

    let env = dockerfile_env(&instrs);
    let web_root = env.get("SIGNALING_WEB_ROOT").expect("SIGNALING_WEB_ROOT");
    assert!(
        instrs
            .iter()
            .any(|(kw, r)| kw == "COPY" && *r == format!("client/web {web_root}")),
        "COPY client/web {web_root}"
    );

    let user = instrs
        .iter()
        .rfind(|(kw, _)| kw == "USER")
        .map(|(_, r)| r.as_str())
        .expect("USER: not root");
    assert!(user != "root" && user != "0", "USER {user}");
    let runs: String = instrs
        .iter()
        .filter(|(kw, _)| kw == "RUN")
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        runs.contains("ca-certificates"),
        "the runtime has ca-certificates"
    );
    let health = instrs
        .iter()
        .find(|(kw, _)| kw == "HEALTHCHECK")
        .map(|(_, r)| r.as_str())
        .expect("HEALTHCHECK");
    assert!(
        health.contains("/healthz"),
        "HEALTHCHECK on /healthz: {health}"
    );
    if health.contains("curl") {
        assert!(
            runs.contains(" curl"),
            "the HEALTHCHECK needs curl installed"
        );
    }

    // cargo loads the whole workspace: every member must be in the context.
    let root_manifest = read("Cargo.toml");
    let members = root_manifest
        .split("members = [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("workspace members");
    let copies: Vec<&str> = instrs
        .iter()
        .filter(|(kw, _)| kw == "COPY")
        .map(|(_, r)| r.as_str())
        .collect();
    assert!(copies.contains(&"Cargo.toml Cargo.lock ./"), "{copies:?}");
    for m in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let top = m.split('/').next().unwrap_or(m);
        assert!(
            copies.contains(&format!("{top} ./{top}").as_str()),
            "the Dockerfile must copy the workspace member {m} (COPY {top} ./{top})"
        );
    }

    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .collect();
    for want in ["target", ".git", "tests/artifacts"] {
        assert!(
            ignore.iter().any(|l| l == want),
            ".dockerignore lacks {want}"
        );
    }
}

// ---------------------------------------------------------------------------
// coturn

/// coturn's user in compose (the image's nobody:nogroup, by number).
const COTURN_USER: &str = "65534:65534";

#[test]
fn coturn_service_runs_the_production_conf() {
    let c = compose();
    let conf = turn_conf(TURN_PROD);
    let coturn = service(&c, "coturn");
    let mounts = strings(&coturn["volumes"]);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with(&format!("./{TURN_PROD}:")) && m.ends_with(":ro")),
        "coturn mounts {TURN_PROD} read-only: {mounts:?}"
    );
    assert!(
        !read(COMPOSE).contains("loopback-test"),
        "the loopback test config never goes into the stack"
    );

    // The listener and exactly the relay range are published.
    let published = ports(coturn);
    let listen = conf_value(&conf, "listening-port").unwrap_or("3478");
    for proto in ["udp", "tcp"] {
        assert!(
            published
                .iter()
                .any(|(h, ct, p)| ct == listen && h.as_deref() == Some(listen) && p == proto),
            "coturn publishes {listen}/{proto}: {published:?}"
        );
    }
    let min: u16 = conf_value(&conf, "min-port")
        .expect("min-port")
        .parse()
        .expect("min-port");
    let max: u16 = conf_value(&conf, "max-port")
        .expect("max-port")
        .parse()
        .expect("max-port");
    assert!(
        published.iter().any(|(h, ct, p)| p == "udp"
            && port_range(ct) == (min, max)
            && h.as_deref().map(port_range) == Some((min, max))),
        "coturn publishes its relay range {min}-{max}/udp: {published:?}"
    );

    // Its user by number, as deploy/certs/README.md gives the key to it.
    assert_eq!(
        coturn["user"].as_str(),
        Some(COTURN_USER),
        "coturn runs as {COTURN_USER}"
    );

    // The TLS listener: published, with the certificate mounted.
    let tls = conf_value(&conf, "tls-listening-port").unwrap_or("5349");
    assert!(
        published
            .iter()
            .any(|(h, ct, p)| ct == tls && h.as_deref() == Some(tls) && p == "tcp"),
        "coturn publishes {tls}/tcp: {published:?}"
    );
    assert!(
        mounts.contains(&"./deploy/certs:/etc/coturn/certs:ro"),
        "coturn mounts deploy/certs: {mounts:?}"
    );
    for node in nodes(&c).iter().map(|(n, s)| node_config(n, s)) {
        assert!(
            node.turn_urls
                .iter()
                .any(|u| u.starts_with("turns:") && u.ends_with("?transport=tcp")),
            "a turns:...?transport=tcp URL: {:?}",
            node.turn_urls
        );
    }

    // The secret comes from one required variable, shared with the nodes.
    let cmd = strings(&coturn["command"]);
    let secret_arg = cmd
        .iter()
        .find(|a| a.starts_with("--static-auth-secret="))
        .expect("coturn gets --static-auth-secret from the environment");
    let var = variables(secret_arg);
    assert_eq!(var.len(), 1, "{secret_arg}");
    assert!(
        !secret_arg.contains(":-"),
        "no default TURN secret: {secret_arg}"
    );
    assert!(
        cmd.windows(2)
            .any(|w| w[0] == "-c" && mounts.iter().any(|m| m.contains(w[1])))
    );
    for (name, svc) in nodes(&c) {
        let env = environment(svc);
        let node_secret = env
            .get("SIGNALING_TURN_SECRET")
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{name}: SIGNALING_TURN_SECRET"));
        assert_eq!(
            variables(&node_secret),
            var,
            "{name} shares coturn's secret"
        );
        let config = node_config(name, svc);
        for url in config.turn_urls.iter().chain(&config.stun_urls) {
            let port = url
                .split('?')
                .next()
                .and_then(|u| u.rsplit(':').next())
                .unwrap_or("");
            let want = if url.starts_with("turns:") {
                conf_value(&conf, "tls-listening-port").unwrap_or("5349")
            } else {
                listen
            };
            assert_eq!(port, want, "{name}: {url} points at coturn's port");
        }
    }
}

// ---------------------------------------------------------------------------
// docker-compose itself

/// `docker-compose config -q` with only the variables in `vars` set:
/// neither the caller's variables nor a local `.env` file take part.
fn docker_compose_config(vars: &[(&str, &str)]) -> std::process::Output {
    let empty_env = std::env::temp_dir().join(format!(
        "signaling-deploy-{}-{}.env",
        std::process::id(),
        vars.iter().map(|(k, _)| *k).collect::<Vec<_>>().join("-")
    ));
    std::fs::write(&empty_env, "").expect("an empty env file");
    let mut cmd = Command::new("docker-compose");
    cmd.arg("--env-file")
        .arg(&empty_env)
        .args(["-f", COMPOSE, "config", "-q"])
        .current_dir(root())
        .env_remove("TURN_SECRET")
        .env_remove("TURN_HOST")
        .env_remove("SIGNALING_AUTH_SECRET");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output();
    let _ = std::fs::remove_file(&empty_env);
    out.unwrap_or_else(|e| {
        panic!(
            "docker-compose is needed to validate {COMPOSE} ({e}); install it: \
             apt-get install -y --no-install-recommends docker-compose (scripts/test does)"
        )
    })
}

#[test]
fn docker_compose_accepts_the_file() {
    const TURN: (&str, &str) = ("TURN_SECRET", "a-test-secret");
    const AUTH: (&str, &str) = (
        "SIGNALING_AUTH_SECRET",
        "a-test-auth-secret-of-more-than-32-bytes",
    );
    let out = docker_compose_config(&[TURN, AUTH]);
    assert!(
        out.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without either secret, no stack: never a default secret on a public
    // relay, never open joins by accident.
    for (given, missing) in [(AUTH, "TURN_SECRET"), (TURN, "SIGNALING_AUTH_SECRET")] {
        let out = docker_compose_config(&[given]);
        assert!(
            !out.status.success(),
            "the stack must refuse to start without {missing}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(missing),
            "the error names {missing}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// coturn, run as compose runs it (user 65534:65534), opens its `turns:`
/// listener with a key made by scripts/make-cert only after the command that
/// deploy/certs/README.md gives: with make-cert's mode 600 it warns and runs
/// without TLS. Needs root (to start coturn as another user, as Docker
/// does); elsewhere it says so and checks nothing.
#[test]
fn coturn_as_its_compose_user_reads_the_key_as_documented() {
    let id = Command::new("id").arg("-u").output().expect("id runs");
    if String::from_utf8_lossy(&id.stdout).trim() != "0" {
        eprintln!("SKIPPED: not root, cannot run turnserver as {COTURN_USER}");
        return;
    }
    let (uid, gid) = COTURN_USER.split_once(':').expect("uid:gid");
    let dir = std::env::temp_dir().join(format!("sig-coturn-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cert = signaling_e2e::tls::TestCert::make(dir.clone(), &[]);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let ids: (u32, u32) = (uid.parse().expect("uid"), gid.parse().expect("gid"));
    std::os::unix::fs::chown(&state, Some(ids.0), Some(ids.1)).expect("chown state");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");

    let run = |label: &str| -> bool {
        let port = signaling_e2e::redis::free_port();
        let tls_port = signaling_e2e::redis::free_port();
        let conf = dir.join(format!("{label}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nlistening-port={port}\ntls-listening-port={tls_port}\n\
                 cert={}\npkey={}\nno-dtls\nno-cli\nuse-auth-secret\nstatic-auth-secret=s\n\
                 realm=test\nmin-port=61000\nmax-port=61100\nlog-file={}/{label}.log\n\
                 pidfile={}/{label}.pid\nuserdb={}/turndb\n",
                cert.cert.display(),
                cert.key.display(),
                state.display(),
                state.display(),
                state.display()
            ),
        )
        .expect("write conf");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut child = Command::new("setpriv")
            .args([
                "--reuid",
                uid,
                "--regid",
                gid,
                "--clear-groups",
                "turnserver",
                "-c",
            ])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("setpriv and turnserver (util-linux, coturn)");
        let at = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&at(port), Duration::from_millis(200)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{label}: coturn never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A TLS handshake that trusts the test certificate.
        let tls_ok = std::net::TcpStream::connect_timeout(&at(tls_port), Duration::from_secs(2))
            .ok()
            .is_some_and(|tcp| {
                let name = rustls::pki_types::ServerName::IpAddress(at(tls_port).ip().into());
                let Ok(mut conn) = rustls::ClientConnection::new(cert.client_config(), name) else {
                    return false;
                };
                let mut tcp = tcp;
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        return false;
                    }
                }
                true
            });
        let _ = child.kill();
        let _ = child.wait();
        tls_ok
    };

    assert!(
        !run("make-cert-mode"),
        "coturn as {COTURN_USER} must not read make-cert's mode-600 key (else the README's step is moot)"
    );
    let readme = read("deploy/certs/README.md");
    let step = readme
        .lines()
        .map(str::trim)
        .find(|l| l.contains("chgrp") && l.contains("key.pem"))
        .expect("deploy/certs/README.md gives the command for coturn's read access");
    let step = step
        .replace("sudo ", "")
        .replace("deploy/certs/key.pem", &cert.key.display().to_string());
    let out = Command::new("sh").args(["-c", &step]).output().expect("sh");
    assert!(
        out.status.success(),
        "{step}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        run("documented-mode"),
        "coturn as {COTURN_USER} opens its TLS listener after `{step}`"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// The metrics listener

/// Compose gives every node a metrics listener of its own, on a port it
/// exposes to the compose network, that nginx has no upstream for.
#[test]
fn compose_nodes_serve_metrics_on_their_own_port() {
    let c = compose();
    let (_, servers) = nginx_upstream(&nginx());
    let upstream: BTreeSet<String> = servers.iter().map(|d| d[1].clone()).collect();
    for (name, svc) in nodes(&c) {
        let config = node_config(name, svc);
        let metrics = config
            .metrics_listen
            .unwrap_or_else(|| panic!("{name}: SIGNALING_METRICS_LISTEN is set"));
        let port = metrics.port().to_string();
        assert_ne!(metrics.port(), config.listen.port(), "{name}");
        assert!(
            strings(&svc["expose"]).contains(&port.as_str()),
            "{name}: expose the metrics port {port} to the compose network"
        );
        assert!(
            !upstream.contains(&format!("{name}:{port}")),
            "{name}: nginx must not balance over the metrics port"
        );
    }
}

/// The real server, run with each compose node's environment (addresses
/// moved to free loopback ports, Redis a real one of the test's), serves
/// `/metrics` on its metrics address and not on the address nginx proxies
/// to; the real nginx with the shipped front over both refuses `/metrics`
/// while it does proxy to them.
/// Asserts docs/protocol.md §14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_nodes_metrics_listener_is_reached_and_nginx_refuses_it() {
    use signaling_e2e::client::http_get;
    use signaling_e2e::redis::{Redis, free_port};
    use signaling_e2e::server::ServerProcess;

    let redis = Redis::start();
    let c = compose();
    let mut procs = Vec::new();
    for (name, svc) in nodes(&c) {
        let compose_metrics = node_config(name, svc)
            .metrics_listen
            .expect("SIGNALING_METRICS_LISTEN");
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in environment(svc) {
            let Some(v) = v else { continue };
            let v = match k.as_str() {
                // ServerProcess gives --listen, a free loopback port.
                "SIGNALING_LISTEN" => continue,
                "SIGNALING_METRICS_LISTEN" => metrics.to_string(),
                "SIGNALING_REDIS_URL" => redis.url(),
                _ => interpolate(&v, "a-secret-for-this-test-of-at-least-32-bytes"),
            };
            env.push((k, v));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = ServerProcess::start_with_env(&[], &env).await;
        p.wait_ready(Duration::from_secs(10)).await;
        procs.push((name.to_string(), p, metrics, compose_metrics));
    }
    for (name, p, metrics, compose_metrics) in &procs {
        let (status, body) = http_get(*metrics, "/metrics").await;
        assert_eq!(
            status, 200,
            "{name}: /metrics on its metrics address: {body}"
        );
        assert!(
            body.contains("signaling_bus_redis_connected 1"),
            "{name}: the node's own metrics, clustered: {body}"
        );
        let (status, body) = http_get(p.addr, "/metrics").await;
        assert_eq!(status, 404, "{name}: no /metrics on {}: {body}", p.addr);
        assert!(!body.contains("signaling_"), "{name}: {body}");
        assert!(
            p.log().contains(&format!("{metrics}")),
            "{name}: the log names the metrics listener (compose's {compose_metrics}): {}",
            p.log()
        );
    }
    let cert = signaling_e2e::tls::TestCert::new("deploy-metrics");
    let upstreams: Vec<std::net::SocketAddr> = procs.iter().map(|(_, p, ..)| p.addr).collect();
    let front = signaling_e2e::nginx::Nginx::start(&upstreams, &cert);
    let health = front.https_get("/healthz", &[]).await;
    assert_eq!(health.status, 200, "nginx proxies to the nodes: {health:?}");
    for path in ["/metrics", "/%6detrics", "/healthz/../metrics"] {
        let r = front.https_get(path, &[]).await;
        assert_eq!(r.status, 404, "{path} through nginx: {r:?}");
        assert!(!r.body.contains("signaling_"), "{path}: {r:?}");
    }
    drop(front);
    let _ = std::fs::remove_dir_all(&cert.dir);
}
