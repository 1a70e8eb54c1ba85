//! A token bucket: at most `rate` commands a second on average, `burst` at once.

use hashsink_units::Timestamp;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    at: Timestamp,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate_per_s: f64, burst: f64, now: Timestamp) -> Self {
        Self {
            rate_per_s,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Adds the tokens earned since the last refill.
    pub fn refill(&mut self, now: Timestamp) {
        let elapsed = now.secs_since(self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Whether a token is available now.
    pub fn available(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spends one token (the bucket may go negative for a command that must go regardless).
    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// When the next whole token will be there (at least 1 ms after the last refill).
    pub fn next_token_at(&self) -> Timestamp {
        let missing = (1.0 - self.tokens).max(0.0);
        let wait_ms = (missing / self.rate_per_s * 1000.0).ceil().max(1.0) as i64;
        Timestamp::from_millis(self.at.as_millis() + wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(10.0, 5.0, Timestamp::from_secs(0));
        let mut sent = 0;
        while b.available() {
            b.take();
            sent += 1;
        }
        assert_eq!(sent, 5);
        b.refill(Timestamp::from_millis(300));
        let mut more = 0;
        while b.available() {
            b.take();
            more += 1;
        }
        assert_eq!(more, 3);
        // A clock that steps back earns nothing.
        b.refill(Timestamp::from_millis(100));
        assert!(!b.available());
    }
}
