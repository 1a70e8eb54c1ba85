//! Firmware kinds and how each lets a controller change a miner's power.
//!
//! The numbers (envelope, standby draw, wake delay, ramp rates) are data, not code: they live in
//! `firmware.toml` next to this crate, embedded at build time, and a fleet file can override any
//! of them per group of miners.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const BUNDLED_TOML: &str = include_str!("../firmware.toml");

/// The firmware families hashsink can drive.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareKind {
    /// The default: continuous power target, the most controllable.
    #[default]
    BraiinsOs,
    WhatsminerV3,
    Vnish,
    Luxos,
    StockAntminer,
    OnOff,
}

impl FirmwareKind {
    pub const ALL: [FirmwareKind; 6] = [
        FirmwareKind::BraiinsOs,
        FirmwareKind::WhatsminerV3,
        FirmwareKind::Vnish,
        FirmwareKind::Luxos,
        FirmwareKind::StockAntminer,
        FirmwareKind::OnOff,
    ];

    /// The key used in config files and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            FirmwareKind::BraiinsOs => "braiins-os",
            FirmwareKind::WhatsminerV3 => "whatsminer-v3",
            FirmwareKind::Vnish => "vnish",
            FirmwareKind::Luxos => "luxos",
            FirmwareKind::StockAntminer => "stock-antminer",
            FirmwareKind::OnOff => "on-off",
        }
    }
}

impl fmt::Display for FirmwareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for FirmwareKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        let alias = match wanted.as_str() {
            "braiins" | "bos" => "braiins-os",
            "whatsminer" => "whatsminer-v3",
            "stock" | "antminer" => "stock-antminer",
            "onoff" | "pdu" => "on-off",
            other => other,
        };
        FirmwareKind::ALL
            .into_iter()
            .find(|k| k.key() == alias)
            .ok_or_else(|| {
                let known: Vec<&str> = FirmwareKind::ALL.iter().map(|k| k.key()).collect();
                format!("unknown firmware '{s}'; known: {}", known.join(", "))
            })
    }
}

/// How the firmware exposes power control.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlKind {
    /// A continuous watt setpoint (Braiins OS, Whatsminer v3, VNish).
    PowerTarget,
    /// Discrete frequency profiles (LuxOS).
    Profiles,
    /// Stock work modes: sleep, low, normal, high.
    Modes,
    /// Whole machine on or off.
    OnOff,
}

/// The default behaviour of one firmware kind, as read from `firmware.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareTraits {
    pub name: String,
    pub control: ControlKind,
    #[serde(default)]
    pub min_fraction: Option<f64>,
    #[serde(default)]
    pub max_fraction: Option<f64>,
    #[serde(default)]
    pub step_fraction: Option<f64>,
    #[serde(default)]
    pub profiles: Option<u32>,
    #[serde(default)]
    pub low_fraction: Option<f64>,
    #[serde(default)]
    pub normal_fraction: Option<f64>,
    #[serde(default)]
    pub high_fraction: Option<f64>,
    pub standby_w: f64,
    pub wake_delay_s: f64,
    pub setpoint_delay_s: f64,
    pub ramp_up_w_per_s: f64,
    pub ramp_down_w_per_s: f64,
}

/// The bundled firmware table.
pub fn bundled_traits() -> BTreeMap<FirmwareKind, FirmwareTraits> {
    toml::from_str(BUNDLED_TOML).expect("the bundled firmware.toml is valid (checked by a test)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_covers_every_kind_with_usable_numbers() {
        let table = bundled_traits();
        for kind in FirmwareKind::ALL {
            let t = &table[&kind];
            assert!(t.standby_w >= 0.0 && t.wake_delay_s > 0.0, "{kind}");
            assert!(
                t.ramp_up_w_per_s > 0.0 && t.ramp_down_w_per_s > 0.0,
                "{kind}"
            );
            match t.control {
                ControlKind::PowerTarget => {
                    assert!(t.min_fraction.unwrap() < t.max_fraction.unwrap());
                    assert!(t.step_fraction.unwrap() > 0.0);
                }
                ControlKind::Profiles => assert!(t.profiles.unwrap() >= 2),
                ControlKind::Modes => assert!(t.low_fraction.unwrap() < t.high_fraction.unwrap()),
                ControlKind::OnOff => {}
            }
        }
    }

    #[test]
    fn stock_firmware_wakes_in_minutes_luxos_in_seconds() {
        let table = bundled_traits();
        assert!(table[&FirmwareKind::StockAntminer].wake_delay_s >= 60.0);
        assert!(table[&FirmwareKind::Luxos].wake_delay_s <= 10.0);
    }

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!(
            "braiins".parse::<FirmwareKind>().unwrap(),
            FirmwareKind::BraiinsOs
        );
        assert_eq!(
            "LuxOS".parse::<FirmwareKind>().unwrap(),
            FirmwareKind::Luxos
        );
        assert_eq!(
            "stock_antminer".parse::<FirmwareKind>().unwrap(),
            FirmwareKind::StockAntminer
        );
        let err = "bitaxe".parse::<FirmwareKind>().unwrap_err();
        assert!(err.contains("known: braiins-os"), "{err}");
    }
}
