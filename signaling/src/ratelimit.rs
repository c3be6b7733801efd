//! Per-connection rate limit: a token bucket, plus the rule that tells a
//! burst from a flood.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Refusals counted over this window decide whether a client keeps flooding.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this message with `rate_limited`.
    Refuse,
    /// The client keeps flooding: close the connection (1008).
    Close,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    refused: u32,
    window_start: Instant,
    close_after: u32,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, close_after: u32) -> Self {
        let now = Instant::now();
        RateLimiter {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: now,
            refused: 0,
            window_start: now,
            close_after,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > FLOOD_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.close_after {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// A token bucket per client address, shared by all its connections (the
/// per-IP join rate). Buckets that have refilled carry no information and
/// are swept once the map grows, so its size follows the addresses active
/// within the last `burst / rate` seconds.
pub struct PerIpRate {
    rate: f64,
    burst: f64,
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

/// Buckets kept before full ones are swept.
const SWEEP_AT: usize = 4096;

impl PerIpRate {
    pub fn new(rate: f64, burst: f64) -> Self {
        PerIpRate {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= SWEEP_AT {
            self.sweep(now);
        }
        let mut b = self.buckets.entry(ip).or_insert((self.burst, now));
        let (tokens, last) = *b;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.burst);
        let allowed = tokens >= 1.0;
        *b = (if allowed { tokens - 1.0 } else { tokens }, now);
        allowed
    }

    fn sweep(&self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, (tokens, last)| {
            *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn per_ip_rate_is_shared_and_refills() {
        let r = PerIpRate::new(1.0, 3.0);
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        let t = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t)));
        assert!(!r.allow(a, t), "burst spent");
        assert!(r.allow(b, t), "another address has its own bucket");
        assert!(r.allow(a, t + Duration::from_millis(1100)), "refilled");
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn per_ip_rate_forgets_full_buckets() {
        let r = PerIpRate::new(1000.0, 1.0);
        let t = Instant::now();
        for i in 0..(SWEEP_AT as u32 + 10) {
            r.allow(IpAddr::from(i.to_be_bytes()), t);
        }
        r.allow("192.0.2.9".parse().expect("ip"), t + Duration::from_secs(1));
        assert!(r.buckets.len() < 100, "{} buckets kept", r.buckets.len());
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn burst_then_refuse_then_close() {
        let t = Instant::now();
        let mut r = RateLimiter::new(50.0, 100.0, 10);
        for _ in 0..100 {
            assert_eq!(r.check(t), Verdict::Allow);
        }
        for _ in 0..10 {
            assert_eq!(r.check(t), Verdict::Refuse);
        }
        assert_eq!(r.check(t), Verdict::Close);
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn refills_at_the_rate() {
        let t = Instant::now();
        let mut r = RateLimiter::new(50.0, 100.0, 1000);
        for _ in 0..100 {
            r.check(t);
        }
        assert_eq!(r.check(t), Verdict::Refuse);
        let later = t + Duration::from_millis(100);
        let allowed = (0..10).filter(|_| r.check(later) == Verdict::Allow).count();
        assert_eq!(allowed, 5, "50/s for 100 ms refills 5 tokens");
    }

    /// Asserts docs/protocol.md §2.2.
    #[test]
    fn a_steady_sender_under_the_rate_is_never_refused() {
        let t = Instant::now();
        let mut r = RateLimiter::new(50.0, 100.0, 10);
        for i in 0..10_000u64 {
            assert_eq!(r.check(t + Duration::from_millis(25 * i)), Verdict::Allow);
        }
    }
}
