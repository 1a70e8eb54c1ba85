//! What the two reference controllers (the on/off automation and the setpoint dispatch) share:
//! the outbox they send through and the operator's shed and curtailment.

use std::collections::VecDeque;

use hashsink_units::{Timestamp, Watts};

use crate::api::{Action, Command, CommandId, OperatorCommand, Reason};
use crate::fleet::MinerId;
use crate::rate_limit::TokenBucket;

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

    /// When the owner, whose next tick is at `next_tick`, should be woken: sooner if an
    /// action is queued and a token comes first, so that a shed of a large fleet is not held up
    /// by the cadence.
    pub fn wake_at(&self, next_tick: Timestamp) -> Timestamp {
        if self.queued.is_empty() {
            next_tick
        } else {
            self.tokens.next_token_at().min(next_tick)
        }
    }
}

/// The operator's commands as the references take them: a shed until resumed, a cap until
/// resumed; per-miner exclusion is not theirs.
#[derive(Clone, Copy, Debug, Default)]
pub struct OperatorState {
    pub shed: bool,
    pub curtail: Option<Watts>,
    /// The plant's protection limit (`Input::Protection`), which an operator cannot lift.
    pub protection: Option<Watts>,
}

impl OperatorState {
    /// Takes `cmd`; true if it is a shed, which the owner acts on at once.
    pub fn take(&mut self, cmd: OperatorCommand) -> bool {
        match cmd {
            OperatorCommand::ShedAll => self.shed = true,
            OperatorCommand::Resume => {
                self.shed = false;
                self.curtail = None;
            }
            OperatorCommand::CurtailTo(w) => self.curtail = Some(w),
            OperatorCommand::Exclude(_) | OperatorCommand::Include(_) => {}
            OperatorCommand::Reprobe => {}
        }
        cmd == OperatorCommand::ShedAll
    }

    /// The surplus the owner may follow: capped by a curtailment, nothing while shed.
    pub fn limit(&self, surplus: Watts) -> Watts {
        if self.shed {
            Watts::ZERO
        } else {
            let capped = self.curtail.map_or(surplus, |cap| surplus.min(cap));
            self.protection.map_or(capped, |cap| capped.min(cap))
        }
    }

    /// The reason the owner's commands carry.
    pub fn reason(&self) -> Reason {
        if self.shed || self.protection.is_some() {
            Reason::Operator
        } else {
            Reason::Dispatch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shed_holds_until_resumed_and_a_cap_limits_the_surplus() {
        let mut op = OperatorState::default();
        let kw = Watts::from_kw;
        assert!(!op.take(OperatorCommand::CurtailTo(kw(40.0))));
        assert_eq!(op.limit(kw(100.0)), kw(40.0));
        assert_eq!(op.reason(), Reason::Dispatch);
        assert!(op.take(OperatorCommand::ShedAll));
        assert_eq!(op.limit(kw(100.0)), Watts::ZERO);
        assert_eq!(op.reason(), Reason::Operator);
        op.take(OperatorCommand::Resume);
        assert_eq!(op.limit(kw(100.0)), kw(100.0));
    }

    #[test]
    fn queued_actions_go_as_tokens_come_and_wake_the_owner_for_them() {
        let t0 = Timestamp::from_secs(1_000);
        let mut outbox = Outbox::new(2.0, t0);
        for m in 0..5 {
            outbox.queue(m, Action::Sleep);
        }
        let next_tick = t0 + std::time::Duration::from_secs(5);
        outbox.flush(t0, Reason::Dispatch, |m, _| m != 1);
        // Two tokens: miners 0 and 2 (1 was stale and cost none).
        let sent: Vec<u32> = std::iter::from_fn(|| outbox.poll())
            .map(|c| c.miner.0)
            .collect();
        assert_eq!(sent, [0, 2]);
        let wake = outbox.wake_at(next_tick);
        assert_eq!(wake, Timestamp::from_millis(t0.as_millis() + 500));
        outbox.flush(wake, Reason::Dispatch, |_, _| true);
        assert_eq!(outbox.poll().map(|c| c.miner.0), Some(3));
        outbox.flush(next_tick, Reason::Dispatch, |_, _| true);
        assert_eq!(outbox.poll().map(|c| c.miner.0), Some(4));
        assert_eq!(outbox.wake_at(next_tick), next_tick);
    }
}
