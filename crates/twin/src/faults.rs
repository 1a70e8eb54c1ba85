//! Seeded faults: what goes wrong in the twin's world, and when.
//!
//! A [`FaultPlan`] is a list of episodes, each a kind of fault, a start, a duration and (for miner
//! faults) the miners it hits. [`FaultPlan::random`] draws one from a seed, so a failing scenario
//! is replayed by its seed alone.

use std::time::Duration;

use hashsink_units::Timestamp;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// The miners stop answering: commands time out, reads fail. They keep drawing what they drew.
    MinerSilent,
    /// The miners say yes to every command and do nothing (asic-rs issue 310).
    MinerIgnores,
    /// The miners reboot and come back hashing at their firmware's default setting.
    MinerReboot,
    /// The fleet power meter stops updating.
    MeterStale,
    /// The surplus meter keeps sending fresh timestamps with a frozen value.
    SurplusFrozen,
    /// The surplus signal drops out and comes back every few seconds.
    SignalFlapping,
    /// The surplus signal is lost.
    SignalLoss,
    /// The surplus source's clock steps by this many seconds (either way).
    ClockStep(i64),
}

impl Fault {
    /// Faults of the surplus signal (as opposed to miners or the fleet meter).
    pub fn is_signal_fault(self) -> bool {
        matches!(
            self,
            Fault::SurplusFrozen | Fault::SignalFlapping | Fault::SignalLoss | Fault::ClockStep(_)
        )
    }
    pub fn is_miner_fault(self) -> bool {
        matches!(
            self,
            Fault::MinerSilent | Fault::MinerIgnores | Fault::MinerReboot
        )
    }
}

/// One fault, for a time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultEpisode {
    pub fault: Fault,
    pub start: Timestamp,
    pub duration: Duration,
    /// The miners it hits (miner faults only).
    pub miners: Vec<u32>,
}

impl FaultEpisode {
    pub fn end(&self) -> Timestamp {
        self.start + self.duration
    }
    pub fn active_at(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end()
    }
}

/// The faults of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultPlan {
    pub episodes: Vec<FaultEpisode>,
}

impl FaultPlan {
    pub fn none() -> Self {
        Self::default()
    }

    /// Draws `count` episodes over `[start, start + span)` for a fleet of `fleet_len` miners.
    /// Miner faults hit up to 10 % of the fleet.
    pub fn random(
        seed: u64,
        start: Timestamp,
        span: Duration,
        fleet_len: usize,
        count: usize,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6661_756c_7473);
        let span_s = span.as_secs().max(600);
        let mut episodes = Vec::with_capacity(count);
        for _ in 0..count {
            let fault = match rng.random_range(0..8u8) {
                0 => Fault::MinerSilent,
                1 => Fault::MinerIgnores,
                2 => Fault::MinerReboot,
                3 => Fault::MeterStale,
                4 => Fault::SurplusFrozen,
                5 => Fault::SignalFlapping,
                6 => Fault::SignalLoss,
                _ => {
                    let step = rng.random_range(60..7200i64);
                    Fault::ClockStep(if rng.random_bool(0.5) { step } else { -step })
                }
            };
            let begin = start + Duration::from_secs(rng.random_range(0..span_s * 9 / 10));
            let duration = Duration::from_secs(match fault {
                Fault::MinerReboot => 1,
                _ => rng.random_range(20..1800),
            });
            let miners = if fault.is_miner_fault() && fleet_len > 0 {
                let n = rng.random_range(1..=(fleet_len / 10).max(1));
                let mut picked: Vec<u32> = (0..n)
                    .map(|_| rng.random_range(0..fleet_len as u32))
                    .collect();
                picked.sort_unstable();
                picked.dedup();
                picked
            } else {
                Vec::new()
            };
            episodes.push(FaultEpisode {
                fault,
                start: begin,
                duration,
                miners,
            });
        }
        episodes.sort_by_key(|e| e.start);
        Self { episodes }
    }

    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan_and_miners_within_the_fleet() {
        let a = FaultPlan::random(
            7,
            Timestamp::from_secs(0),
            Duration::from_secs(86_400),
            200,
            12,
        );
        let b = FaultPlan::random(
            7,
            Timestamp::from_secs(0),
            Duration::from_secs(86_400),
            200,
            12,
        );
        assert_eq!(a, b);
        let c = FaultPlan::random(
            8,
            Timestamp::from_secs(0),
            Duration::from_secs(86_400),
            200,
            12,
        );
        assert_ne!(a, c);
        for e in &a.episodes {
            assert!(e.miners.iter().all(|&m| m < 200));
            assert_eq!(e.fault.is_miner_fault(), !e.miners.is_empty());
        }
    }
}
