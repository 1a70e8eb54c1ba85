//! Miner readings checked at the door, before anything counts them. A reading that is not a
//! number, negative, far above what the model can draw or hash, or hashing with no power is
//! malformed: it is counted by reason and logged once per miner and reason, and the controller
//! sees it as no answer (a reading it cannot use), while the status and the ledger keep the
//! miner's last good reading. So one firmware's NaN cannot poison the fleet's totals or stop the
//! ledger.
//!
//! A miner that reports asleep while drawing is not malformed here: its draw is real load, which
//! the controller counts (and routes the miner around if it persists), so it passes.

use hashsink_core::MinerSpec;
use hashsink_fleetio::Telemetry;

/// A reading above this multiple of the model's nameplate draw or hashrate is not believed.
pub const MAX_NAMEPLATE_MULTIPLE: f64 = 2.0;

/// Why a reading was not admitted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Malformed {
    /// A value that is not a finite number (NaN, "inf").
    NotANumber(&'static str),
    Negative(&'static str),
    /// Above `MAX_NAMEPLATE_MULTIPLE` times the model's nameplate.
    Implausible(&'static str),
    /// Hashing, with a measured draw of nothing.
    HashrateWithoutPower,
}

/// Every reason's `/metrics` label.
pub const REASONS: [&str; 4] = [
    "not_a_number",
    "negative",
    "implausible",
    "hashrate_without_power",
];

impl Malformed {
    /// The reason as `/metrics` labels it (one of `REASONS`).
    pub fn key(self) -> &'static str {
        match self {
            Malformed::NotANumber(_) => "not_a_number",
            Malformed::Negative(_) => "negative",
            Malformed::Implausible(_) => "implausible",
            Malformed::HashrateWithoutPower => "hashrate_without_power",
        }
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = MAX_NAMEPLATE_MULTIPLE;
        match self {
            Malformed::NotANumber(what) => write!(f, "{what} is not a number"),
            Malformed::Negative(what) => write!(f, "{what} is negative"),
            Malformed::Implausible(what) => {
                write!(f, "{what} is above {limit} times the model's nameplate")
            }
            Malformed::HashrateWithoutPower => write!(f, "hashing with a measured draw of 0 W"),
        }
    }
}

/// Admits a reading of a miner of model `spec`, or says why not.
pub fn admit(spec: &MinerSpec, t: &Telemetry) -> Result<(), Malformed> {
    let checks = [
        ("power", t.power.w(), spec.nameplate_power.w()),
        ("hashrate", t.hashrate.ths(), spec.nameplate_hashrate.ths()),
    ];
    for (what, value, nameplate) in checks {
        if !value.is_finite() {
            return Err(Malformed::NotANumber(what));
        }
        if value < 0.0 {
            return Err(Malformed::Negative(what));
        }
        if value > nameplate * MAX_NAMEPLATE_MULTIPLE {
            return Err(Malformed::Implausible(what));
        }
    }
    if t.hashrate.ths() > 0.0 && t.power.w() == 0.0 && !t.power_estimated {
        return Err(Malformed::HashrateWithoutPower);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hashsink_core::{Catalogue, FleetConfig};
    use hashsink_fleetio::MinerState;
    use hashsink_units::{HashRate, Watts};

    use super::*;

    fn reading(state: MinerState, w: f64, ths: f64) -> Telemetry {
        Telemetry {
            state,
            power: Watts(w),
            power_estimated: false,
            level_owned: false,
            hashrate: HashRate::from_ths(ths),
            board_temp_c: None,
            chip_temp_c: None,
            fan_rpm: None,
        }
    }

    #[test]
    fn readings_a_firmware_cannot_mean_are_refused_with_their_reason() {
        let fleet =
            FleetConfig::build_from_shorthand("s21:1:luxos", &Catalogue::bundled()).unwrap();
        let spec = &fleet.specs[0];
        let (w, ths) = (spec.nameplate_power.w(), spec.nameplate_hashrate.ths());
        let mining = |w, ths| reading(MinerState::Mining, w, ths);
        assert_eq!(admit(spec, &mining(w, ths)), Ok(()));
        assert_eq!(admit(spec, &mining(w * 1.1, ths * 1.05)), Ok(()));
        assert_eq!(admit(spec, &reading(MinerState::Asleep, 15.0, 0.0)), Ok(()));
        // Asleep while drawing is real load: it passes, for the controller to count.
        assert_eq!(admit(spec, &reading(MinerState::Asleep, w, 0.0)), Ok(()));
        let bad = [
            (mining(f64::NAN, ths), Malformed::NotANumber("power")),
            (mining(w, f64::INFINITY), Malformed::NotANumber("hashrate")),
            (mining(-5.0, ths), Malformed::Negative("power")),
            (mining(w * 10.0, ths), Malformed::Implausible("power")),
            (mining(w, ths * 10.0), Malformed::Implausible("hashrate")),
            (mining(0.0, ths), Malformed::HashrateWithoutPower),
        ];
        for (t, why) in bad {
            assert_eq!(admit(spec, &t), Err(why), "{t:?}");
        }
        assert!(
            Malformed::Implausible("power")
                .to_string()
                .contains("2 times")
        );
        // Stock firmware without a power reading gets its mode's rated draw: not "0 W".
        let estimated = Telemetry {
            power_estimated: true,
            ..mining(0.0, ths)
        };
        assert_eq!(admit(spec, &estimated), Ok(()));
    }
}
