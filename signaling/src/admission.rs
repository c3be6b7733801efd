//! Who may open a WebSocket: the real client address (through trusted
//! proxies only), the Origin check, and the per-address connection cap.
//!
//! These run before the upgrade, so a refused request costs one HTTP
//! response and no session.

use axum::http::{HeaderMap, header};
use dashmap::DashMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Why a WebSocket request is refused before the upgrade.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("origin not allowed")]
    Origin,
    #[error("too many connections from this address")]
    PerIpCap,
}

/// The client's address: the TCP peer, or, when the peer is a trusted
/// proxy, the last address in `X-Forwarded-For` that is not itself a
/// trusted proxy (the rightmost entries are the ones our proxies wrote;
/// anything left of them the client could have forged).
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let mut client = peer_ip;
    // Every X-Forwarded-For header, in order, as one list.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            // A garbled entry: nothing left of it can be believed.
            None => break,
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, maybe with a port or brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4
/// clients) count as the IPv4 address, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The host itself (127.0.0.1, ::1) is not held to per-address limits:
/// local tools, benchmarks and a proxy on the same host connect from there
/// (list such a proxy in `--trusted-proxies` to limit its clients instead).
pub fn is_exempt(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The Origin rule of `/ws`: requests without `Origin` (not from a browser
/// page) pass; a page of the same origin as the request passes; others only
/// when listed (`*` lists all). Cross-site pages would otherwise be able to
/// join calls with the visitor's network position and cookies.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        // `null` (sandboxed frames, file: pages) and other schemes.
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    same_authority(authority, host)
}

/// `authority` of the Origin against the request's `Host`. A proxy that
/// passes `Host` without its port (nginx's `$host`) still matches on the
/// host name alone.
fn same_authority(authority: &str, host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    if authority.eq_ignore_ascii_case(host) {
        return true;
    }
    let host_has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
        !h.ends_with(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }) && !host.ends_with(']');
    if host_has_port {
        return false;
    }
    let name = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    name.eq_ignore_ascii_case(host)
}

/// Open WebSockets per client address. An entry lives while its address
/// has a connection, so the map is as large as the set of connected
/// addresses, never larger.
#[derive(Default)]
pub struct PerIp {
    open: DashMap<IpAddr, usize>,
}

/// One connection's place in [`PerIp`], given back on drop.
pub struct Slot {
    registry: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Takes a slot for `ip`, or refuses when it already has `cap`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Result<Slot, Refused> {
        let mut n = self.open.entry(ip).or_insert(0);
        if *n >= cap {
            return Err(Refused::PerIpCap);
        }
        *n += 1;
        Ok(Slot {
            registry: self.clone(),
            ip,
        })
    }

    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open.get(&ip).map_or(0, |n| *n)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.open.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    /// Asserts docs/protocol.md §1.
    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7")]);
        let direct: SocketAddr = "198.51.100.1:5000".parse().expect("addr");
        assert_eq!(client_addr(direct, &xff, &trusted), direct.ip());
        let proxy: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        // The rightmost entry our proxy wrote; the forged 6.6.6.6 is ignored.
        assert_eq!(
            client_addr(proxy, &xff, &trusted),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        // Two proxies in a row.
        let chain = headers(&[("x-forwarded-for", "203.0.113.7, 10.9.9.9")]);
        assert_eq!(
            client_addr(proxy, &chain, &trusted),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        let garbled = headers(&[("x-forwarded-for", "6.6.6.6, nonsense")]);
        assert_eq!(client_addr(proxy, &garbled, &trusted), proxy.ip());
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &trusted), proxy.ip());
    }

    /// Asserts docs/protocol.md §1.
    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed(&headers(&[("host", "a.example")]), &none));
        let same = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert!(origin_allowed(&same, &none));
        let portless = headers(&[("host", "call.example"), ("origin", "https://call.example")]);
        assert!(origin_allowed(&portless, &none));
        let other_port = headers(&[("host", "localhost:8080"), ("origin", "http://localhost:9")]);
        assert!(!origin_allowed(&other_port, &none));
        let evil = headers(&[("host", "call.example"), ("origin", "https://evil.example")]);
        assert!(!origin_allowed(&evil, &none));
        assert!(origin_allowed(&evil, &["https://evil.example".to_string()]));
        assert!(origin_allowed(&evil, &["*".to_string()]));
        let null = headers(&[("host", "call.example"), ("origin", "null")]);
        assert!(!origin_allowed(&null, &none));
    }

    /// Asserts docs/protocol.md §1.
    #[test]
    fn per_ip_slots_are_given_back() {
        let reg = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let a = reg.acquire(ip, 2).expect("first");
        let _b = reg.acquire(ip, 2).expect("second");
        assert_eq!(reg.acquire(ip, 2).err(), Some(Refused::PerIpCap));
        drop(a);
        let _c = reg.acquire(ip, 2).expect("after one left");
        drop(_b);
        drop(_c);
        assert_eq!(reg.open_from(ip), 0);
        assert!(reg.open.is_empty(), "no entry kept for a gone address");
    }
}
