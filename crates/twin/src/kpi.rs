//! Key performance indicators of a run, integrated at the twin's sample period.
//!
//! * absorption: energy drawn from the surplus / energy of min(surplus, fleet capacity);
//! * control import: energy the fleet drew above the surplus beyond what its sleeping miners'
//!   standby alone would have drawn, as a share of absorbed energy;
//! * standby import: the sleeping miners' standby draw not covered by the surplus, on its own;
//! * within tolerance: share of 5-minute intervals whose mean load is within the tolerance of the
//!   mean of min(surplus, capacity);
//! * cycles: wakes of a sleeping miner, per miner per day;
//! * TH per MWh: terahashes done per MWh the fleet drew.

use std::time::Duration;

use hashsink_units::{HashRate, Terahashes, WattHours, Watts};
use serde::Serialize;

/// Accumulates KPIs sample by sample.
#[derive(Clone, Debug)]
pub struct KpiAccumulator {
    capacity: Watts,
    tolerance: Watts,
    absorbed: WattHours,
    reachable: WattHours,
    drawn: WattHours,
    import_total: WattHours,
    import_standby: WattHours,
    surplus_energy: WattHours,
    hashes: Terahashes,
    interval: Duration,
    interval_elapsed: Duration,
    interval_load: f64,
    interval_target: f64,
    intervals: u64,
    intervals_within: u64,
    drops: u64,
    was_positive: bool,
    elapsed: Duration,
}

/// The KPIs of one run, as printed and as written to JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Kpis {
    pub absorption_pct: f64,
    pub import_pct_of_absorbed: f64,
    pub standby_pct_of_absorbed: f64,
    pub within_tolerance_pct: f64,
    pub cycles_per_miner_day: f64,
    pub shed95_s: Option<f64>,
    pub th_per_mwh: f64,
    pub absorbed_mwh: f64,
    pub control_import_mwh: f64,
    pub standby_import_mwh: f64,
    pub surplus_mwh: f64,
    pub reachable_mwh: f64,
    pub hashes_eh: f64,
    pub commands: u64,
    pub days: f64,
}

impl KpiAccumulator {
    /// `tolerance` is the band for the 5-minute tracking check.
    pub fn new(capacity: Watts, tolerance: Watts) -> Self {
        Self {
            capacity,
            tolerance,
            absorbed: WattHours::ZERO,
            reachable: WattHours::ZERO,
            drawn: WattHours::ZERO,
            import_total: WattHours::ZERO,
            import_standby: WattHours::ZERO,
            surplus_energy: WattHours::ZERO,
            hashes: Terahashes::ZERO,
            interval: Duration::from_secs(300),
            interval_elapsed: Duration::ZERO,
            interval_load: 0.0,
            interval_target: 0.0,
            intervals: 0,
            intervals_within: 0,
            drops: 0,
            was_positive: false,
            elapsed: Duration::ZERO,
        }
    }

    /// Adds one sample held for `dt`: the true surplus, the load of running miners, the standby
    /// of sleeping ones and the fleet hashrate.
    #[inline]
    pub fn add(
        &mut self,
        dt: Duration,
        surplus: Watts,
        running: Watts,
        standby: Watts,
        hashrate: HashRate,
    ) {
        let load = running + standby;
        self.absorbed += load.min(surplus) * dt;
        self.reachable += surplus.min(self.capacity) * dt;
        self.surplus_energy += surplus * dt;
        self.drawn += load * dt;
        self.import_total += (load - surplus).positive_part() * dt;
        self.import_standby += (standby - surplus).positive_part() * dt;
        self.hashes += hashrate.over(dt);
        let positive = surplus > Watts::ZERO;
        if self.was_positive && !positive {
            self.drops += 1;
        }
        self.was_positive = positive;
        let secs = dt.as_secs_f64();
        self.interval_load += load.w() * secs;
        self.interval_target += surplus.min(self.capacity).w() * secs;
        self.interval_elapsed += dt;
        self.elapsed += dt;
        if self.interval_elapsed >= self.interval {
            let span = self.interval_elapsed.as_secs_f64();
            let diff = (self.interval_load - self.interval_target).abs() / span;
            self.intervals += 1;
            if diff <= self.tolerance.w() {
                self.intervals_within += 1;
            }
            self.interval_elapsed = Duration::ZERO;
            self.interval_load = 0.0;
            self.interval_target = 0.0;
        }
    }

    /// Drops to zero of the surplus per day so far: no controller can cycle less than this.
    pub fn surplus_drops_per_day(&self) -> f64 {
        let days = self.elapsed.as_secs_f64() / 86_400.0;
        if days > 0.0 {
            self.drops as f64 / days
        } else {
            0.0
        }
    }

    pub fn finish(&self, wakes: u64, miners: usize, commands: u64, shed95_s: Option<f64>) -> Kpis {
        let days = self.elapsed.as_secs_f64() / 86_400.0;
        let pct = |num: WattHours, den: WattHours| {
            if den.wh() > 0.0 {
                100.0 * num.wh() / den.wh()
            } else {
                0.0
            }
        };
        let control_import = (self.import_total - self.import_standby).positive_part();
        Kpis {
            absorption_pct: if self.reachable.wh() > 0.0 {
                pct(self.absorbed.min(self.reachable), self.reachable)
            } else {
                100.0
            },
            import_pct_of_absorbed: pct(control_import, self.absorbed),
            standby_pct_of_absorbed: pct(self.import_standby, self.absorbed),
            within_tolerance_pct: if self.intervals > 0 {
                100.0 * self.intervals_within as f64 / self.intervals as f64
            } else {
                100.0
            },
            cycles_per_miner_day: if days > 0.0 && miners > 0 {
                wakes as f64 / miners as f64 / days
            } else {
                0.0
            },
            shed95_s,
            th_per_mwh: self.hashes.per_mwh(self.drawn),
            absorbed_mwh: self.absorbed.mwh(),
            control_import_mwh: control_import.mwh(),
            standby_import_mwh: self.import_standby.mwh(),
            surplus_mwh: self.surplus_energy.mwh(),
            reachable_mwh: self.reachable.mwh(),
            hashes_eh: self.hashes.th() / 1e6,
            commands,
            days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_tracking_absorbs_everything_and_imports_nothing() {
        let mut k = KpiAccumulator::new(Watts(1000.0), Watts(20.0));
        for i in 0..3600 {
            let s = Watts(500.0 + (i % 100) as f64);
            k.add(
                Duration::from_secs(1),
                s,
                s - Watts(10.0),
                Watts(10.0),
                HashRate(1.0),
            );
        }
        let kpis = k.finish(0, 1, 0, None);
        assert!((kpis.absorption_pct - 100.0).abs() < 1e-9);
        assert_eq!(kpis.import_pct_of_absorbed, 0.0);
        assert_eq!(kpis.within_tolerance_pct, 100.0);
    }

    #[test]
    fn standby_import_is_kept_apart_from_control_import() {
        let mut k = KpiAccumulator::new(Watts(1000.0), Watts(20.0));
        // No surplus: sleeping miners still draw 10 W.
        k.add(
            Duration::from_secs(3600),
            Watts(0.0),
            Watts(0.0),
            Watts(10.0),
            HashRate(0.0),
        );
        // Surplus 100 W, running load 150 W: 50 W (+10 standby) over.
        k.add(
            Duration::from_secs(3600),
            Watts(100.0),
            Watts(150.0),
            Watts(10.0),
            HashRate(1.0),
        );
        let kpis = k.finish(0, 1, 0, None);
        assert!((kpis.standby_import_mwh - 10.0 / 1e6).abs() < 1e-12);
        assert!((kpis.control_import_mwh - 60.0 / 1e6).abs() < 1e-12);
        assert!((kpis.absorbed_mwh - 100.0 / 1e6).abs() < 1e-12);
    }

    #[test]
    fn counts_drops_to_zero() {
        let mut k = KpiAccumulator::new(Watts(1000.0), Watts(20.0));
        for v in [5.0, 0.0, 3.0, 0.0, 0.0, 2.0] {
            k.add(
                Duration::from_secs(43_200),
                Watts(v),
                Watts::ZERO,
                Watts::ZERO,
                HashRate(0.0),
            );
        }
        assert!((k.surplus_drops_per_day() - 2.0 / 3.0).abs() < 1e-12);
    }
}
