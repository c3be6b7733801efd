//! The shipped production coturn config (turn-config/turnserver.conf), run
//! by the real coturn on loopback with only its addresses, ports, secret,
//! certificate and file paths overridden (`Turn::start_production`).
//!
//! Peers are tested with CreatePermission only: it sends nothing to the
//! peer, so naming public addresses is safe; nothing here sends Send or
//! ChannelData, and every packet goes to coturn on 127.0.0.1 or ::1.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use signaling_e2e::stun::{
    FORBIDDEN, Family, QUOTA_REACHED, TurnClient, UNAUTHORIZED, rest_credentials, rest_password,
};
use signaling_e2e::tls::TestCert;
use signaling_e2e::turn::{MUST_DENY, PROD_CONF, Turn, conf_entries, parse_range};

const SECRET: &str = "coturn-prod-test-secret";
const TTL: Duration = Duration::from_secs(3600);

fn prod_conf() -> Vec<(String, String)> {
    let path = signaling_e2e::workspace_root().join(PROD_CONF);
    conf_entries(&std::fs::read_to_string(path).expect("production coturn config"))
}

fn conf_number(conf: &[(String, String)], key: &str) -> usize {
    conf.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("{PROD_CONF}: no numeric {key}"))
}

/// The config's `denied-peer-ip` ranges, first and last address.
fn denied_ranges(conf: &[(String, String)]) -> Vec<(IpAddr, IpAddr)> {
    conf.iter()
        .filter(|(k, _)| k == "denied-peer-ip")
        .map(|(_, v)| parse_range(v).unwrap_or_else(|| panic!("denied-peer-ip={v}")))
        .collect()
}

fn num(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a).into()),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4(u32::try_from(n).expect("an IPv4 number").into())
    }
}

fn within(x: IpAddr, (lo, hi): (IpAddr, IpAddr)) -> bool {
    let ((v6, x), (lv6, lo), (_, hi)) = (num(x), num(lo), num(hi));
    v6 == lv6 && lo <= x && x <= hi
}

/// First, middle and last address of a range.
fn samples((lo, hi): (IpAddr, IpAddr)) -> Vec<IpAddr> {
    let ((v6, a), (_, b)) = (num(lo), num(hi));
    vec![lo, ip(v6, a + (b - a) / 2), hi]
}

/// coturn with the production config, and one allocation of each family
/// (IPv4 over 127.0.0.1, IPv6 over ::1) to ask for permissions on.
struct Relays {
    turn: Turn,
    v4: TurnClient,
    v6: TurnClient,
}

impl Relays {
    async fn start(conf: &Path, cert: &TestCert) -> Relays {
        let turn = Turn::start_production_conf(conf, Some(SECRET), cert);
        let v4 = allocated(&turn, "127.0.0.1", Family::V4, "alice").await;
        let v6 = allocated(&turn, "::1", Family::V6, "alice").await;
        Relays { turn, v4, v6 }
    }

    /// CreatePermission for `peer` on the allocation of its family: None
    /// if granted, else the error code and reason.
    async fn permission(&mut self, peer: IpAddr) -> Option<String> {
        let client = if peer.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        let r = client
            .create_permission(peer)
            .await
            .unwrap_or_else(|e| panic!("CreatePermission {peer}: {e}\n{}", self.turn.log()));
        (!r.success).then(|| r.to_string())
    }
}

async fn allocated(turn: &Turn, server: &str, family: Family, name: &str) -> TurnClient {
    let (user, pass) = rest_credentials(SECRET, name, TTL);
    let mut c = TurnClient::udp(turn.addr(server), &user, &pass)
        .await
        .expect("UDP socket");
    let r = c.allocate(family).await.expect("Allocate answered");
    assert!(
        r.success,
        "{family:?} allocation via {server}: {r}\n{}",
        turn.log()
    );
    let relayed = c.relayed.expect("XOR-RELAYED-ADDRESS");
    assert!(relayed.ip().is_loopback(), "relayed on {relayed}");
    c
}

/// Public peers that must be granted: well-known resolvers, and every
/// address just outside a denied range that is not itself in one (a range
/// that is too wide shows here), IPv6 only inside global unicast 2000::/3.
fn public_peers(conf: &[(String, String)]) -> Vec<IpAddr> {
    let denied = denied_ranges(conf);
    let global_v6 = parse_range("2000::/3").expect("cidr");
    let mut peers: Vec<IpAddr> = [
        "8.8.8.8",
        "1.1.1.1",
        "9.9.9.9",
        "93.184.215.14",
        "2001:4860:4860::8888",
        "2606:4700:4700::1111",
        "2620:fe::fe",
        "2a00:1450:4001:82b::200e",
    ]
    .iter()
    .map(|s| s.parse().expect("address"))
    .collect();
    for &(lo, hi) in &denied {
        let ((v6, a), (_, b)) = (num(lo), num(hi));
        let max = if v6 { u128::MAX } else { u32::MAX.into() };
        for n in [a.checked_sub(1), (b < max).then(|| b + 1)]
            .into_iter()
            .flatten()
        {
            let p = ip(v6, n);
            let public = !denied.iter().any(|&r| within(p, r))
                && !MUST_DENY
                    .iter()
                    .any(|r| within(p, parse_range(r).expect("range")))
                && (!v6 || within(p, global_v6));
            if public && !peers.contains(&p) {
                peers.push(p);
            }
        }
    }
    peers
}

/// The public peers coturn refuses (none, when the config is right).
async fn refused_public_peers(conf: &Path) -> Vec<String> {
    let cert = TestCert::new("coturn-prod");
    let mut relays = Relays::start(conf, &cert).await;
    let peers = public_peers(&prod_conf());
    assert!(
        peers.iter().filter(|p| p.is_ipv6()).count() >= 8,
        "{peers:?}"
    );
    let mut refused = Vec::new();
    for &p in &peers {
        if let Some(e) = relays.permission(p).await {
            refused.push(format!("{p}: {e}"));
        }
    }
    println!("{} public peers tried: {peers:?}", peers.len());
    refused
}

#[tokio::test]
async fn public_peers_get_permissions() {
    let conf = signaling_e2e::workspace_root().join(PROD_CONF);
    let refused = refused_public_peers(&conf).await;
    assert!(
        refused.is_empty(),
        "{PROD_CONF} refuses public peers:\n{}",
        refused.join("\n")
    );
}

#[tokio::test]
async fn the_old_denied_line_refused_every_peer() {
    // The line the config had until issue 11: coturn 4.6 reads a `::`
    // bound as unbounded, so it denied every peer of both families. The
    // check above must catch it.
    let dir = TestCert::new("coturn-old-line");
    let conf = dir.dir.join("turnserver-old.conf");
    let mut text =
        std::fs::read_to_string(signaling_e2e::workspace_root().join(PROD_CONF)).expect("conf");
    text.push_str("\ndenied-peer-ip=::\n");
    std::fs::write(&conf, text).expect("write the old config");
    let refused = refused_public_peers(&conf).await;
    for p in ["8.8.8.8", "2001:4860:4860::8888"] {
        assert!(
            refused
                .iter()
                .any(|r| r.starts_with(&format!("{p}: ")) && r.contains("403")),
            "with denied-peer-ip=:: coturn refuses {p} with 403: {refused:?}"
        );
    }
    println!(
        "with denied-peer-ip=:: {} public peers refused",
        refused.len()
    );
}

#[tokio::test]
async fn private_loopback_and_special_peers_are_refused() {
    let conf = prod_conf();
    let cert = TestCert::new("coturn-prod");
    let path = signaling_e2e::workspace_root().join(PROD_CONF);
    let mut relays = Relays::start(&path, &cert).await;

    let mut peers: Vec<IpAddr> = Vec::new();
    let mut add = |p: IpAddr| {
        if !peers.contains(&p) {
            peers.push(p);
        }
    };
    for range in denied_ranges(&conf) {
        samples(range).into_iter().for_each(&mut add);
    }
    for range in MUST_DENY {
        samples(parse_range(range).expect("range"))
            .into_iter()
            .for_each(&mut add);
    }
    for special in [
        "127.0.0.1",
        "0.0.0.0",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:192.168.1.1",
        "::7f00:1",
        "::a00:1",
        "fec0::1",
        "fe80::1",
        "fd00::1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "255.255.255.255",
        "169.254.169.254",
    ] {
        add(special.parse().expect("address"));
    }
    // The relay host itself: its relay and listening addresses.
    let relayed = [relays.v4.relayed, relays.v6.relayed];
    for r in relayed.into_iter().flatten() {
        add(r.ip());
    }

    let mut granted = Vec::new();
    let mut other = Vec::new();
    let total = peers.len();
    for p in peers {
        match relays.permission(p).await {
            None => granted.push(p.to_string()),
            Some(e) if e.contains(&format!("error {FORBIDDEN} ")) => {}
            Some(e) => other.push(format!("{p}: {e}")),
        }
    }
    println!("{total} denied samples tried");
    assert!(
        granted.is_empty(),
        "coturn with {PROD_CONF} grants permissions to {granted:?}"
    );
    assert!(
        other.is_empty(),
        "refused, but not with 403 Forbidden:\n{}",
        other.join("\n")
    );
}

#[tokio::test]
async fn user_quota_binds_per_identity() {
    let conf = prod_conf();
    let quota = conf_number(&conf, "user-quota");
    assert!(quota + 2 < conf_number(&conf, "total-quota"));
    let cert = TestCert::new("coturn-quota");
    let turn = Turn::start_production(SECRET, &cert);
    let server = turn.addr("127.0.0.1");
    // One identity, each allocation under a username with another expiry
    // (as each join mints): coturn counts the identity after the colon.
    let mut held = Vec::new();
    for i in 0..quota {
        let (user, pass) = rest_credentials(SECRET, "alice", TTL + Duration::from_secs(i as u64));
        let mut c = TurnClient::udp(server, &user, &pass).await.expect("socket");
        let r = c.allocate(Family::V4).await.expect("answer");
        assert!(r.success, "alice's allocation {}: {r}", i + 1);
        held.push(c);
    }
    let (user, pass) = rest_credentials(SECRET, "alice", TTL + Duration::from_secs(999));
    let mut extra = TurnClient::udp(server, &user, &pass).await.expect("socket");
    let r = extra.allocate(Family::V4).await.expect("answer");
    assert_eq!(
        r.code(),
        Some(QUOTA_REACHED),
        "alice's allocation {}: {r}",
        quota + 1
    );

    // Another identity is not affected.
    let (user, pass) = rest_credentials(SECRET, "bob", TTL);
    let mut bob = TurnClient::udp(server, &user, &pass).await.expect("socket");
    let r = bob.allocate(Family::V4).await.expect("answer");
    assert!(r.success, "bob's allocation: {r}");

    // The quota counts allocations held: one released makes room.
    let r = held[0].release().await.expect("answer");
    assert!(r.success, "release: {r}");
    // coturn frees the slot about a second after the Refresh (its session
    // closes on a timer), and not for a 5-tuple it already refused: a new
    // socket, as a browser's next candidate gathering would use.
    let released = std::time::Instant::now();
    loop {
        let (user, pass) = rest_credentials(SECRET, "alice", TTL + Duration::from_secs(2000));
        let mut c = TurnClient::udp(server, &user, &pass).await.expect("socket");
        let r = c.allocate(Family::V4).await.expect("answer");
        if r.success {
            break;
        }
        assert_eq!(r.code(), Some(QUOTA_REACHED), "after a release: {r}");
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "alice still over quota 5 s after releasing an allocation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "user-quota {quota}: allocation {} answered 486; a slot came back {:?} after a release",
        quota + 1,
        released.elapsed()
    );
}

#[tokio::test]
async fn total_quota_binds() {
    let conf = prod_conf();
    let (user_quota, total) = (
        conf_number(&conf, "user-quota"),
        conf_number(&conf, "total-quota"),
    );
    let cert = TestCert::new("coturn-total");
    let turn = Turn::start_production(SECRET, &cert);
    let server = turn.addr("127.0.0.1");
    let mut held = Vec::new();
    for i in 0..total {
        // Spread over identities so that no user-quota binds first.
        let name = format!("user{}", i / user_quota);
        let (user, pass) = rest_credentials(SECRET, &name, TTL);
        let mut c = TurnClient::udp(server, &user, &pass).await.expect("socket");
        let r = c.allocate(Family::V4).await.expect("answer");
        assert!(r.success, "allocation {} ({name}): {r}", i + 1);
        held.push(c);
    }
    let (user, pass) = rest_credentials(SECRET, "latecomer", TTL);
    let mut c = TurnClient::udp(server, &user, &pass).await.expect("socket");
    let r = c.allocate(Family::V4).await.expect("answer");
    assert_eq!(
        r.code(),
        Some(QUOTA_REACHED),
        "allocation {}: {r}",
        total + 1
    );
}

/// Allocates with credentials made from `secret`: the error code, None
/// for a success.
async fn allocate_with(turn: &Turn, secret: &str, name: &str) -> Option<u16> {
    let (user, pass) = rest_credentials(secret, name, TTL);
    let mut c = TurnClient::udp(turn.addr("127.0.0.1"), &user, &pass)
        .await
        .expect("socket");
    c.allocate(Family::V4).await.expect("answer").code()
}

#[tokio::test]
async fn only_the_command_line_secret_authenticates() {
    // docker-compose gives the secret on the command line. coturn adds
    // every static-auth-secret to a list, so a secret left in the file (the
    // placeholder the config used to have) would stay valid beside it.
    let conf = prod_conf();
    let mut wrong = vec![
        "not-the-secret".to_string(),
        "REPLACE-ME-WITH-A-LONG-RANDOM-SECRET".to_string(),
        String::new(),
    ];
    wrong.extend(
        conf.iter()
            .filter(|(k, _)| k == "static-auth-secret")
            .map(|(_, v)| v.clone()),
    );
    let cert = TestCert::new("coturn-secret");
    let turn = Turn::start_production(SECRET, &cert);
    for secret in &wrong {
        assert_eq!(
            allocate_with(&turn, secret, "mallory").await,
            Some(UNAUTHORIZED),
            "credentials from secret {secret:?}"
        );
    }
    // An expired credential is refused too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let expired = format!("{}:alice", now.as_secs() - 60);
    let pass = rest_password(SECRET, &expired);
    let mut c = TurnClient::udp(turn.addr("127.0.0.1"), &expired, &pass)
        .await
        .expect("socket");
    let r = c.allocate(Family::V4).await.expect("answer");
    assert_eq!(r.code(), Some(UNAUTHORIZED), "expired: {r}");
    // And the right one works.
    assert_eq!(allocate_with(&turn, SECRET, "alice").await, None);
}

#[tokio::test]
async fn without_a_secret_nobody_authenticates() {
    // Started from the file alone (the secret forgotten), coturn must fail
    // closed rather than accept some default.
    let cert = TestCert::new("coturn-nosecret");
    let path = signaling_e2e::workspace_root().join(PROD_CONF);
    let turn = Turn::start_production_conf(&path, None, &cert);
    for secret in ["", SECRET, "REPLACE-ME-WITH-A-LONG-RANDOM-SECRET"] {
        assert_eq!(
            allocate_with(&turn, secret, "alice").await,
            Some(UNAUTHORIZED),
            "credentials from secret {secret:?} with no secret configured"
        );
    }
}

#[tokio::test]
async fn tls_listener_answers_binding_and_allocate() {
    let cert = TestCert::new("coturn-tls");
    let turn = Turn::start_production(SECRET, &cert);
    let port = turn
        .tls_port
        .expect("the production config has a TLS listener");
    for (host, name) in [("127.0.0.1", "localhost"), ("::1", "::1")] {
        let addr = std::net::SocketAddr::new(host.parse().expect("ip"), port);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("TCP to the TLS listener");
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&cert.client_config()));
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name, tcp))
            .await
            .expect("TLS handshake in time")
            .unwrap_or_else(|e| panic!("TLS handshake via {host}: {e}\n{}", turn.log()));
        let version = tls.get_ref().1.protocol_version();
        let (user, pass) = rest_credentials(SECRET, "alice", TTL);
        let mut c = TurnClient::over_stream(tls, &user, &pass);
        let r = c.binding().await.expect("Binding over TLS answered");
        assert!(r.success, "Binding over TLS: {r}");
        let mapped = r.mapped.expect("XOR-MAPPED-ADDRESS");
        assert_eq!(mapped.ip(), addr.ip(), "mapped address");
        // turns: as browsers use it: a UDP relay allocated over TLS.
        let r = c
            .allocate(Family::of(addr.ip()))
            .await
            .expect("Allocate over TLS answered");
        assert!(r.success, "Allocate over TLS: {r}");
        println!(
            "TLS via {host}: {version:?}, mapped {mapped}, relayed {:?}",
            c.relayed
        );
    }
}

/// Relays 1000-byte datagrams at about `rate` bytes/s for `secs` seconds
/// to a peer socket on 127.0.0.1 through a coturn started with the
/// production config and `extra`: the bytes per second sent and the bytes
/// per second the peer got.
async fn relayed_rate(extra: &[&str], rate: f64, secs: u64) -> (f64, f64) {
    let cert = TestCert::new("coturn-bps");
    let path = signaling_e2e::workspace_root().join(PROD_CONF);
    let turn = Turn::start_production_with(&path, Some(SECRET), &cert, extra);
    let mut c = allocated(&turn, "127.0.0.1", Family::V4, "alice").await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("peer");
    let peer_addr = peer.local_addr().expect("peer address");
    let r = c
        .create_permission(peer_addr.ip())
        .await
        .expect("CreatePermission answered");
    assert!(r.success, "permission for the loopback peer: {r}");

    let counter = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut got = 0usize;
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), peer.recv(&mut buf)).await
        {
            got += n;
        }
        got
    });
    let payload = vec![0x5au8; 1000];
    let tick = Duration::from_millis(20);
    let per_tick = (rate * tick.as_secs_f64() / payload.len() as f64).round() as usize;
    let start = tokio::time::Instant::now();
    let mut next = start;
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..per_tick {
            c.send_to_loopback(peer_addr, &payload).await.expect("send");
            sent += payload.len();
        }
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    let got = counter.await.expect("counter");
    (sent as f64 / secs as f64, got as f64 / secs as f64)
}

#[tokio::test]
async fn max_bps_limits_a_relay() {
    // Production relays only to public peers, so this test lets coturn
    // relay to 127.0.0.1 (allow-loopback-peers, allowed-peer-ip: the
    // loopback test config's two settings) and changes nothing else; the
    // control run also raises max-bps (coturn refuses max-bps=0 beside
    // bps-capacity).
    let conf = prod_conf();
    let max_bps = conf_number(&conf, "max-bps") as f64;
    let loopback = ["--allow-loopback-peers", "--allowed-peer-ip=127.0.0.1"];
    let raised = format!("--max-bps={}", max_bps as u64 * 100);
    let control = [loopback[0], loopback[1], raised.as_str()];
    // A stream under the cap (a call within its budget) is not clipped.
    let (sent, under) = relayed_rate(&loopback, max_bps * 0.8, 2).await;
    println!("max-bps {max_bps}: sent {sent:.0} B/s, relayed {under:.0} B/s");
    assert!(
        under > sent * 0.95,
        "under the cap: sent {sent:.0}, relayed {under:.0} B/s"
    );
    // Twice the cap is held to it, and carried with the cap raised.
    let (sent, limited) = relayed_rate(&loopback, max_bps * 2.0, 2).await;
    let (_, raised) = relayed_rate(&control, max_bps * 2.0, 2).await;
    println!(
        "max-bps {max_bps}: sent {sent:.0} B/s, relayed {limited:.0} B/s; with max-bps x100 {raised:.0} B/s"
    );
    assert!(
        raised > sent * 0.95,
        "with max-bps raised the relay carries the load: {raised:.0} of {sent:.0} B/s"
    );
    assert!(
        limited < max_bps * 1.1,
        "max-bps={max_bps} holds the relay to it: {limited:.0} B/s"
    );
}
