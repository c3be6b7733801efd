//! Per-connection rate limit: a token bucket, plus the rule that tells a
//! burst from a flood.

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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_steady_sender_under_the_rate_is_never_refused() {
        let t = Instant::now();
        let mut r = RateLimiter::new(50.0, 100.0, 10);
        for i in 0..10_000u64 {
            assert_eq!(r.check(t + Duration::from_millis(25 * i)), Verdict::Allow);
        }
    }
}
