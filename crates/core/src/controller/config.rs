//! Controller settings: raw (as written in TOML, units in the key names) and validated.

use std::time::Duration;

use hashsink_units::Watts;
use serde::{Deserialize, Serialize};

/// The controller's settings as written in a config file's `[controller]` table.
/// Every field has a default; unknown keys are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSettings {
    /// Control cadence.
    pub cadence_ms: u64,
    /// Safety margin kept below the surplus, absolute.
    pub margin_w: f64,
    /// Safety margin kept below the surplus, as a share of the fleet's maximum power (the larger
    /// of the two margins applies).
    pub margin_fraction: f64,
    /// The fleet is raised only when at least this share of fleet power is unused (hysteresis);
    /// the controller widens it to eight times the surplus reading's jitter on a noisy meter.
    pub deadband_fraction: f64,
    /// When the surplus is falling, act on where it will be this far ahead.
    pub lookahead_ms: u64,
    /// Time constant of the surplus trend estimate.
    pub trend_time_constant_s: f64,
    /// A surplus reading older than this is not trusted.
    pub max_reading_age_ms: u64,
    /// A reading stamped further than this in the future is rejected (clock step at the source).
    pub max_future_skew_ms: u64,
    /// A reading whose value has not changed at all for this long is treated as a frozen meter.
    /// Zero disables the check (a profile with flat stretches would trip it).
    pub frozen_after_s: f64,
    /// Load the fleet goes to when no trusted reading remains.
    pub failsafe_load_w: f64,
    /// Time within which the fleet reaches the fail-safe load after the reading went stale.
    pub failsafe_within_ms: u64,
    /// After the signal returns, it must stay good this long before the fleet resumes.
    pub resume_after_s: f64,
    /// A miner stays awake at least this long before a voluntary sleep.
    pub min_on_s: f64,
    /// A miner stays asleep at least this long before it is woken again, except after a short
    /// dip (`short_dip_s`).
    pub min_off_s: f64,
    /// A fall of the surplus that comes back within this time is a dip: the allowed load returns
    /// to where it was before the fall without the rise limit, and the miners the dip put to
    /// sleep may be woken inside their minimum off-time (at once, without `wake_confirm_s`; at
    /// most once per miner per `min_off_s`; each such wake is a cycle, sent with the reason
    /// `rewake`). Zero: every fall is treated as lasting.
    pub short_dip_s: f64,
    /// Spare power must persist this long before miners are woken.
    pub wake_confirm_s: f64,
    /// The most the fleet's allowed load may rise per second (staggered reconnection), as a share
    /// of fleet maximum power.
    pub max_rise_fraction_per_s: f64,
    /// How many power levels one setpoint command may move a miner. 1 keeps the running miners
    /// of a model within one level of each other (the most hashrate per watt, and the most
    /// commands); 0 means no limit: a few miners regulate across their whole range while the rest
    /// hold. On a week of the wind case that sent 5x fewer setpoint changes (firmware retunes,
    /// wear, traffic) for 0.05 % less hashrate per watt.
    pub max_levels_per_command: u8,
    /// Running miners are filled to this share of their nameplate power before another miner is
    /// woken (1: nameplate). Lower runs more miners at a lower, more efficient power (hashrate
    /// grows slower than power) and leaves them more room to come down, for more wakes when the
    /// surplus falls below what they can turn down to. Measured in the README.
    pub fill_fraction: f64,
    /// Write commands per second, fleet-wide.
    pub max_commands_per_s: f64,
    /// Token-bucket burst for write commands.
    pub command_burst: f64,
    /// Extra time beyond the modelled settle time before a command is checked by reading back.
    pub verify_grace_s: f64,
    /// A miner that has not answered for this long is routed around.
    pub silent_after_s: f64,
    /// How often a faulted miner is asked again to sleep.
    pub fault_retry_s: f64,
    /// How often a miner that refused power levels (and is used on/off) is offered levels
    /// again: an operator may have turned its autotuner off. Zero: only on operator request.
    pub reprobe_s: f64,
    /// Measured fleet power above the controller's own account by more than this share of
    /// fleet maximum, for `meter_grace_s`, is treated as load it cannot control.
    pub meter_tolerance_fraction: f64,
    pub meter_grace_s: f64,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            cadence_ms: 1000,
            margin_w: 0.0,
            margin_fraction: 0.002,
            deadband_fraction: 0.001,
            lookahead_ms: 4000,
            trend_time_constant_s: 20.0,
            max_reading_age_ms: 10_000,
            max_future_skew_ms: 5_000,
            frozen_after_s: 0.0,
            failsafe_load_w: 0.0,
            failsafe_within_ms: 10_000,
            resume_after_s: 30.0,
            min_on_s: 600.0,
            min_off_s: 600.0,
            short_dip_s: 120.0,
            wake_confirm_s: 30.0,
            max_rise_fraction_per_s: 0.01,
            max_levels_per_command: 0,
            fill_fraction: 1.0,
            max_commands_per_s: 10_000.0,
            command_burst: 10_000.0,
            verify_grace_s: 15.0,
            silent_after_s: 60.0,
            fault_retry_s: 600.0,
            reprobe_s: 3600.0,
            meter_tolerance_fraction: 0.01,
            meter_grace_s: 15.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("controller setting `{field}`: {message}")]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

/// Validated settings, in domain types.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    pub cadence: Duration,
    pub margin: Watts,
    pub margin_fraction: f64,
    pub deadband_fraction: f64,
    pub lookahead: Duration,
    pub trend_time_constant: Duration,
    pub max_reading_age: Duration,
    pub max_future_skew: Duration,
    pub frozen_after: Option<Duration>,
    pub failsafe_load: Watts,
    pub failsafe_within: Duration,
    pub resume_after: Duration,
    pub min_on: Duration,
    pub min_off: Duration,
    pub short_dip: Duration,
    pub wake_confirm: Duration,
    pub max_rise_fraction_per_s: f64,
    /// Levels one setpoint command may move a miner (`u8::MAX` for no limit).
    pub max_levels_per_command: u8,
    pub fill_fraction: f64,
    pub max_commands_per_s: f64,
    pub command_burst: f64,
    pub verify_grace: Duration,
    pub silent_after: Duration,
    pub fault_retry: Duration,
    /// Zero: never on a timer.
    pub reprobe: Duration,
    pub meter_tolerance_fraction: f64,
    pub meter_grace: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerSettings::default()
            .validate()
            .expect("defaults are valid")
    }
}

impl ControllerSettings {
    pub fn validate(&self) -> Result<ControllerConfig, SettingsError> {
        fn err(field: &'static str, message: impl Into<String>) -> SettingsError {
            SettingsError {
                field,
                message: message.into(),
            }
        }
        fn secs(field: &'static str, v: f64) -> Result<Duration, SettingsError> {
            if v.is_finite() && (0.0..=7.0 * 86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(err(
                    field,
                    format!("{v} must be between 0 and 604800 seconds"),
                ))
            }
        }
        fn fraction(field: &'static str, v: f64, max: f64) -> Result<f64, SettingsError> {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(v)
            } else {
                Err(err(field, format!("{v} must be between 0 and {max}")))
            }
        }
        if !(10..=60_000).contains(&self.cadence_ms) {
            return Err(err(
                "cadence_ms",
                format!("{} must be between 10 and 60000", self.cadence_ms),
            ));
        }
        if self.max_reading_age_ms < self.cadence_ms {
            return Err(err(
                "max_reading_age_ms",
                "must be at least one control cadence",
            ));
        }
        if !(self.max_commands_per_s.is_finite() && self.max_commands_per_s >= 1.0) {
            return Err(err("max_commands_per_s", "must be at least 1"));
        }
        if !(self.command_burst.is_finite() && self.command_burst >= 1.0) {
            return Err(err("command_burst", "must be at least 1"));
        }
        if !(self.margin_w.is_finite() && self.margin_w >= 0.0) {
            return Err(err("margin_w", "must be zero or more"));
        }
        if !(self.failsafe_load_w.is_finite() && self.failsafe_load_w >= 0.0) {
            return Err(err("failsafe_load_w", "must be zero or more"));
        }
        let max_rise = fraction("max_rise_fraction_per_s", self.max_rise_fraction_per_s, 1.0)?;
        if max_rise == 0.0 {
            return Err(err(
                "max_rise_fraction_per_s",
                "must be above zero or the fleet never starts",
            ));
        }
        Ok(ControllerConfig {
            cadence: Duration::from_millis(self.cadence_ms),
            margin: Watts(self.margin_w),
            margin_fraction: fraction("margin_fraction", self.margin_fraction, 0.5)?,
            deadband_fraction: fraction("deadband_fraction", self.deadband_fraction, 0.5)?,
            lookahead: Duration::from_millis(self.lookahead_ms),
            trend_time_constant: secs("trend_time_constant_s", self.trend_time_constant_s)?
                .max(Duration::from_millis(1)),
            max_reading_age: Duration::from_millis(self.max_reading_age_ms),
            max_future_skew: Duration::from_millis(self.max_future_skew_ms),
            frozen_after: match secs("frozen_after_s", self.frozen_after_s)? {
                d if d.is_zero() => None,
                d => Some(d),
            },
            failsafe_load: Watts(self.failsafe_load_w),
            failsafe_within: Duration::from_millis(self.failsafe_within_ms),
            resume_after: secs("resume_after_s", self.resume_after_s)?,
            min_on: secs("min_on_s", self.min_on_s)?,
            min_off: secs("min_off_s", self.min_off_s)?,
            short_dip: secs("short_dip_s", self.short_dip_s)?,
            wake_confirm: secs("wake_confirm_s", self.wake_confirm_s)?,
            max_rise_fraction_per_s: max_rise,
            max_levels_per_command: if self.max_levels_per_command == 0 {
                u8::MAX
            } else {
                self.max_levels_per_command
            },
            fill_fraction: match self.fill_fraction {
                f if f.is_finite() && (0.3..=1.0).contains(&f) => f,
                f => {
                    return Err(err(
                        "fill_fraction",
                        format!("{f} must be between 0.3 and 1 (a share of nameplate power)"),
                    ));
                }
            },
            max_commands_per_s: self.max_commands_per_s,
            command_burst: self.command_burst,
            verify_grace: secs("verify_grace_s", self.verify_grace_s)?,
            silent_after: secs("silent_after_s", self.silent_after_s)?,
            fault_retry: secs("fault_retry_s", self.fault_retry_s)?.max(Duration::from_secs(1)),
            reprobe: secs("reprobe_s", self.reprobe_s)?,
            meter_tolerance_fraction: fraction(
                "meter_tolerance_fraction",
                self.meter_tolerance_fraction,
                1.0,
            )?,
            meter_grace: secs("meter_grace_s", self.meter_grace_s)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = ControllerConfig::default();
        assert_eq!(c.cadence, Duration::from_secs(1));
        assert_eq!(c.frozen_after, None);
    }

    #[test]
    fn bad_values_name_the_field() {
        let s = ControllerSettings {
            cadence_ms: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "cadence_ms");
        let s = ControllerSettings {
            min_on_s: -1.0,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "min_on_s");
        let s = ControllerSettings {
            margin_fraction: f64::NAN,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "margin_fraction");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<ControllerSettings>("cadense_ms = 500")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cadense_ms"), "{err}");
    }
}
