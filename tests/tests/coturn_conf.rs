//! turn-config/: the coturn configurations.

use signaling_e2e::turn::conf_value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use signaling_e2e::turn::{MUST_DENY, PROD_CONF as TURN_PROD, TEST_CONF as TURN_TEST};

fn root() -> PathBuf {
    signaling_e2e::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The active `key[=value]` lines of a coturn config.
fn turn_conf(path: &str) -> Vec<(String, String)> {
    signaling_e2e::turn::conf_entries(&read(path))
}

fn ip_number(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a).into()),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// A coturn peer range `a-b` or a single address, as numbers.
fn ip_range(s: &str) -> (bool, u128, u128) {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| -> IpAddr { x.parse().unwrap_or_else(|_| panic!("address {x:?}")) };
    let ((v6, lo), (v6b, hi)) = (ip_number(parse(a)), ip_number(parse(b)));
    assert_eq!(v6, v6b, "range {s} mixes address families");
    assert!(lo <= hi, "range {s} is backwards");
    (v6, lo, hi)
}

fn cidr(s: &str) -> (bool, u128, u128) {
    let (addr, len) = s.split_once('/').unwrap_or((s, "128"));
    let (v6, base) = ip_number(addr.parse().expect("cidr address"));
    let bits = if v6 { 128 } else { 32 };
    let len: u32 = len.parse::<u32>().expect("prefix length").min(bits);
    let host = if len == 0 {
        if v6 { u128::MAX } else { u32::MAX.into() }
    } else {
        (1u128 << (bits - len)) - 1
    };
    (v6, base & !host, (base & !host) | host)
}

#[test]
fn turnserver_conf_is_safe_for_production() {
    let conf = turn_conf(TURN_PROD);
    let keys: BTreeSet<&str> = conf.iter().map(|(k, _)| k.as_str()).collect();
    for needed in [
        "use-auth-secret",
        "realm",
        "fingerprint",
        "no-cli",
        "no-multicast-peers",
        "stale-nonce",
        "user-quota",
        "total-quota",
        "min-port",
        "max-port",
    ] {
        assert!(keys.contains(needed), "{TURN_PROD} lacks {needed}");
    }
    for banned in [
        "allow-loopback-peers",
        "allowed-peer-ip",
        "lt-cred-mech",
        "user",
        "cli-password",
    ] {
        assert!(
            !keys.contains(banned),
            "{TURN_PROD}: never {banned} in production"
        );
    }
    // The secret comes from the command line only: coturn accepts every
    // static-auth-secret it is given, so one in the file (even a
    // placeholder) would stay valid beside the real one.
    assert!(
        !keys.contains("static-auth-secret"),
        "{TURN_PROD}: no static-auth-secret in the file"
    );

    // TLS for `turns:` from the mounted certificate; no DTLS (no browser
    // speaks it).
    for needed in ["tls-listening-port", "cert", "pkey", "no-dtls"] {
        assert!(keys.contains(needed), "{TURN_PROD} lacks {needed}");
    }
    assert!(
        !keys.contains("no-tls"),
        "{TURN_PROD}: the TLS listener is on"
    );
    assert_eq!(conf_value(&conf, "tls-listening-port"), Some("5349"));
    assert_eq!(
        conf_value(&conf, "cert"),
        Some("/etc/coturn/certs/cert.pem")
    );
    assert_eq!(conf_value(&conf, "pkey"), Some("/etc/coturn/certs/key.pem"));
    for needed in ["max-bps", "bps-capacity"] {
        assert!(keys.contains(needed), "{TURN_PROD} lacks {needed}");
    }

    // Every loopback, private, link-local, CGNAT, multicast and IPv6
    // equivalent range is denied as a peer.
    let denied: Vec<(bool, u128, u128)> = conf
        .iter()
        .filter(|(k, _)| k == "denied-peer-ip")
        .map(|(_, v)| ip_range(v))
        .collect();
    for &(v6, lo, hi) in &denied {
        if !v6 {
            continue;
        }
        // coturn 4.6 reads a `::` bound as "no bound": `denied-peer-ip=::`
        // denied every peer of both families.
        assert!(
            lo != 0 && hi != 0,
            "{TURN_PROD}: an IPv6 denied range starts or ends at ::"
        );
        assert!(
            is_byte_box(lo, hi),
            "{TURN_PROD}: coturn compares IPv6 bounds byte by byte, {lo:x}-{hi:x} is not a prefix-shaped range"
        );
    }
    let merged = merge(denied);
    for range in MUST_DENY {
        let (v6, lo, hi) = if range.contains('-') {
            ip_range(range)
        } else {
            cidr(range)
        };
        assert!(
            merged
                .iter()
                .any(|&(dv6, dlo, dhi)| dv6 == v6 && dlo <= lo && hi <= dhi),
            "{TURN_PROD}: denied-peer-ip must cover {range}"
        );
    }
}

/// Whether the numbers lo..=hi are exactly the addresses whose every byte
/// lies between lo's and hi's byte (how coturn 4.6 tests an IPv6 range):
/// equal leading bytes, one byte that differs, then 00.. and ff...
fn is_byte_box(lo: u128, hi: u128) -> bool {
    let (a, b) = (lo.to_be_bytes(), hi.to_be_bytes());
    match (0..16).find(|&i| a[i] != b[i]) {
        None => true,
        Some(k) => {
            a[k] < b[k]
                && a[k + 1..].iter().all(|&x| x == 0)
                && b[k + 1..].iter().all(|&x| x == 0xff)
        }
    }
}

/// Overlapping or adjacent ranges of one family joined.
fn merge(mut ranges: Vec<(bool, u128, u128)>) -> Vec<(bool, u128, u128)> {
    ranges.sort();
    let mut out: Vec<(bool, u128, u128)> = Vec::new();
    for (v6, lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if last.0 == v6 && lo <= last.2.saturating_add(1) => last.2 = last.2.max(hi),
            _ => out.push((v6, lo, hi)),
        }
    }
    out
}

#[test]
fn loopback_test_conf_is_test_only() {
    let text = read(TURN_TEST);
    let header = text.lines().next().unwrap_or("").to_ascii_uppercase();
    assert!(
        header.contains("TEST ONLY") && header.contains("NEVER") && header.contains("PRODUCTION"),
        "{TURN_TEST} opens with a test-only warning: {header}"
    );
    let conf = turn_conf(TURN_TEST);
    let keys: BTreeSet<&str> = conf.iter().map(|(k, _)| k.as_str()).collect();
    for needed in [
        "allow-loopback-peers",
        "use-auth-secret",
        "no-tls",
        "no-dtls",
        "no-cli",
    ] {
        assert!(keys.contains(needed), "{TURN_TEST} lacks {needed}");
    }
    assert_eq!(conf_value(&conf, "allowed-peer-ip"), Some("127.0.0.1"));
    assert_eq!(conf_value(&conf, "listening-ip"), Some("127.0.0.1"));
    assert_eq!(conf_value(&conf, "relay-ip"), Some("127.0.0.1"));
    // Outside Linux's ephemeral range (32768-60999).
    let min: u16 = conf_value(&conf, "min-port")
        .expect("min-port")
        .parse()
        .expect("port");
    let max: u16 = conf_value(&conf, "max-port")
        .expect("max-port")
        .parse()
        .expect("port");
    assert!(min > 60999 && max >= min, "relay range {min}-{max}");
}

#[test]
fn turn_configs_use_only_options_coturn_knows() {
    // coturn does not stop at an unknown option: it logs "Bad configuration
    // format" and carries on without it. `turnserver -h` lists every option.
    let out = match Command::new("turnserver").arg("-h").output() {
        Ok(o) => o,
        Err(e) => panic!(
            "turnserver is needed to check the coturn configs ({e}); install it: \
             apt-get install -y --no-install-recommends coturn (scripts/test does)"
        ),
    };
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let known: BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split(['=', '[', '<']).next().unwrap_or(w))
        .collect();
    assert!(
        known.contains("use-auth-secret"),
        "unexpected turnserver -h output:\n{help}"
    );
    for path in [TURN_PROD, TURN_TEST] {
        for (k, _) in turn_conf(path) {
            assert!(
                known.contains(k.as_str()),
                "{path}: coturn has no option {k}"
            );
        }
    }
}
