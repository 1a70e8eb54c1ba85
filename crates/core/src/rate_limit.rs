//! A token bucket: at most `rate` commands a second on average, `burst` at once; and the
//! outbox the reference controllers send through it.

use std::collections::VecDeque;

use hashsink_units::Timestamp;

use crate::api::{Action, Command, CommandId, Reason};
use crate::fleet::MinerId;

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

/// Per-miner actions queued in order and sent as numbered commands under a token bucket (the
/// on/off automation and the setpoint dispatch; the hashsink controller has its own, with cuts
/// before raises).
#[derive(Clone, Debug)]
pub struct Outbox {
    tokens: TokenBucket,
    queued: VecDeque<(u32, Action)>,
    out: VecDeque<Command>,
    next_id: u64,
}

impl Outbox {
    pub fn new(rate_per_s: f64, now: Timestamp) -> Self {
        Self {
            tokens: TokenBucket::new(rate_per_s, rate_per_s, now),
            queued: VecDeque::new(),
            out: VecDeque::new(),
            next_id: 1,
        }
    }

    pub fn queue(&mut self, miner: u32, action: Action) {
        self.queued.push_back((miner, action));
    }

    /// Sends what the tokens allow, with `reason`; `current` drops an action that a later
    /// decision has made stale (it is not sent and costs no token).
    pub fn flush(
        &mut self,
        now: Timestamp,
        reason: Reason,
        mut current: impl FnMut(u32, Action) -> bool,
    ) {
        self.tokens.refill(now);
        while self.tokens.available() {
            let Some((m, action)) = self.queued.pop_front() else {
                break;
            };
            if !current(m, action) {
                continue;
            }
            self.tokens.take();
            self.out.push_back(Command {
                id: CommandId(self.next_id),
                miner: MinerId(m),
                action,
                reason,
            });
            self.next_id += 1;
        }
    }

    pub fn poll(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// When the next queued action can go (the bucket's next token), if any is queued: the
    /// owner wakes then rather than at its next tick, so a shed of a large fleet is not held up
    /// by the cadence.
    pub fn next_send(&self) -> Option<Timestamp> {
        (!self.queued.is_empty()).then(|| self.tokens.next_token_at())
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
