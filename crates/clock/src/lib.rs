//! The clock of the I/O crates (the daemon, the plant sources, the emulator): wall time,
//! optionally sped up; and the one process limit they all need raised.
//!
//! The controller and the emulator speak [`Timestamp`]s. In production the clock is the wall
//! clock (speed 1, origin = now). The demo and the end-to-end tests replay a day at 60x: the
//! emulator and the daemon then share one `ScaledClock`, so a miner's 30 s boot lasts half a
//! real second and the controller sees the same simulated time as the miners.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashsink_units::Timestamp;

#[derive(Clone, Copy, Debug)]
pub struct ScaledClock {
    origin_wall: Instant,
    origin: Timestamp,
    speed: f64,
}

impl ScaledClock {
    /// The wall clock: Unix time in milliseconds, at real speed.
    pub fn wall() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            origin_wall: Instant::now(),
            origin: Timestamp::from_millis(since_epoch.as_millis() as i64),
            speed: 1.0,
        }
    }

    /// A clock that reads `origin` now and runs `speed` times faster than the wall clock.
    pub fn starting_at(origin: Timestamp, speed: f64) -> Self {
        assert!(
            speed > 0.0 && speed.is_finite(),
            "clock speed must be positive"
        );
        Self {
            origin_wall: Instant::now(),
            origin,
            speed,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The clock's reading at a wall instant.
    pub fn at(&self, wall: Instant) -> Timestamp {
        let elapsed = wall
            .saturating_duration_since(self.origin_wall)
            .as_secs_f64();
        Timestamp::from_millis(self.origin.as_millis() + (elapsed * self.speed * 1000.0) as i64)
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The wall duration that `simulated` lasts on this clock.
    pub fn wall_duration(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.speed)
    }

    /// Sleeps until the clock reads `t` (at once if it already does).
    pub async fn sleep_until(&self, t: Timestamp) {
        let now = self.now();
        if t > now {
            let simulated = t.saturating_since(now);
            tokio::time::sleep(self.wall_duration(simulated)).await;
        }
    }
}

/// The process's file-descriptor limit now (its soft limit; 1024 where it cannot be read).
pub fn open_file_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft)
}

/// Raises the open-file limit towards `wanted` (a sweep of 10,000 miners holds thousands of
/// sockets at once). Best effort: without the privilege to raise it, the old limit stays.
pub fn raise_open_file_limit(wanted: u64) {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < wanted
        && rlimit::Resource::NOFILE
            .set(wanted, hard.max(wanted))
            .is_err()
    {
        let _ = rlimit::Resource::NOFILE.set(hard.min(wanted), hard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_runs_fast() {
        let clock = ScaledClock::starting_at(Timestamp::from_secs(1000), 60.0);
        let later = clock.at(clock.origin_wall + Duration::from_secs(2));
        assert_eq!(later, Timestamp::from_secs(1120));
        assert_eq!(
            clock.wall_duration(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }
}
