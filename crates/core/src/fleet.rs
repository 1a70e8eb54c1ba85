//! The fleet model: which miners there are and what each can do.
//!
//! Miners that share a model, a firmware and overrides share one [`MinerSpec`]; the fleet is a
//! list of specs and a list of miners pointing at them. A spec turns the firmware's control kind
//! into a ladder of mining power *levels* (a watt grid for power-target firmware, the profiles of
//! LuxOS, the low/normal/high modes of stock firmware, the single nameplate level of an on/off
//! machine), so that the controller can treat every firmware alike.
//!
//! Hashrate as a function of power follows `h(p) = h_nameplate * (p / p_nameplate)^k` with
//! `k < 1` (default 0.7): efficiency worsens as power rises, as underclocking tables show
//! (an S19j Pro tuned from 3068 W to 2100 W keeps about 77 % of its hashrate: k = 0.69).

use std::time::Duration;

use hashsink_units::{HashRate, JoulesPerTerahash, Watts};
use serde::Deserialize;

use crate::catalogue::{Catalogue, CatalogueError};
use crate::firmware::{ControlKind, FirmwareKind, FirmwareTraits, bundled_traits};

/// The most miners a fleet may have (a 3.5 GW site of 3.5 kW machines): a bound on memory, and
/// a guard against a typo of a few zeros.
pub const MAX_FLEET_MINERS: usize = 1_000_000;

/// Default exponent of the hashrate-power curve.
pub const DEFAULT_HASHRATE_EXPONENT: f64 = 0.7;

/// Index of a miner in its fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct MinerId(pub u32);

impl MinerId {
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a spec in its fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecId(pub u16);

/// Everything the controller and the twin need to know about one kind of miner.
#[derive(Clone, Debug, PartialEq)]
pub struct MinerSpec {
    pub model: String,
    pub firmware: FirmwareKind,
    pub control: ControlKind,
    pub nameplate_power: Watts,
    pub nameplate_hashrate: HashRate,
    /// Mining power levels, ascending. Level 0 is the lowest power at which the miner hashes.
    pub levels: Vec<Watts>,
    /// Hashrate at each level.
    pub level_hashrate: Vec<HashRate>,
    /// The highest level at or below nameplate power: where the controller parks miners before
    /// it wakes more of them.
    pub preferred_level: u8,
    /// Draw while asleep (or switched off).
    pub standby: Watts,
    /// From a wake command to hashing at the commanded level's ramp start.
    pub wake_delay: Duration,
    /// From a setpoint command to the start of the ramp (stock firmware's web page, for example).
    pub setpoint_delay: Duration,
    pub ramp_up_w_per_s: f64,
    pub ramp_down_w_per_s: f64,
    pub hashrate_exponent: f64,
}

impl MinerSpec {
    /// Hashrate while drawing `power` (zero below the lowest level).
    pub fn hashrate_at(&self, power: Watts) -> HashRate {
        if power < self.levels[0] * 0.999 {
            return HashRate::ZERO;
        }
        self.nameplate_hashrate * (power / self.nameplate_power).powf(self.hashrate_exponent)
    }

    pub fn max_level(&self) -> u8 {
        (self.levels.len() - 1) as u8
    }

    pub fn level_power(&self, level: u8) -> Watts {
        self.levels[level as usize]
    }

    pub fn max_power(&self) -> Watts {
        *self.levels.last().expect("a spec has at least one level")
    }

    pub fn min_power(&self) -> Watts {
        self.levels[0]
    }

    /// Efficiency at nameplate, the ranking key for "most efficient first".
    pub fn nameplate_efficiency(&self) -> JoulesPerTerahash {
        JoulesPerTerahash::of(self.nameplate_power, self.nameplate_hashrate)
    }

    /// From a cut command to the draw having come down from maximum to standby.
    pub fn cut_reaction(&self) -> Duration {
        self.setpoint_delay + self.ramp_time(self.max_power(), self.standby)
    }

    /// Time to ramp from `from` to `to` at this spec's ramp rates.
    pub fn ramp_time(&self, from: Watts, to: Watts) -> Duration {
        let dw = (to - from).w();
        let secs = if dw >= 0.0 {
            dw / self.ramp_up_w_per_s
        } else {
            -dw / self.ramp_down_w_per_s
        };
        Duration::from_secs_f64(secs)
    }
}

/// How far above nameplate a fleet may draw. A comparison between controllers gives every one of
/// them the same envelope, so that none gains from headroom another is not allowed to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Envelope {
    /// Every miner at or below its nameplate power (its preferred level): what any controller,
    /// an on/off automation included, can use.
    #[default]
    Nameplate,
    /// The firmware's whole range: Braiins OS lets an S21 draw 110 % of nameplate, stock
    /// firmware has a 110 % mode.
    Full,
}

impl Envelope {
    pub fn name(self) -> &'static str {
        match self {
            Envelope::Nameplate => "nameplate",
            Envelope::Full => "full",
        }
    }
}

impl MinerSpec {
    /// This spec with its levels limited to `envelope`: under `Nameplate`, no level above the
    /// preferred one.
    pub fn within(&self, envelope: Envelope) -> MinerSpec {
        let mut spec = self.clone();
        if envelope == Envelope::Nameplate {
            let keep = self.preferred_level as usize + 1;
            spec.levels.truncate(keep);
            spec.level_hashrate.truncate(keep);
        }
        debug_assert!(spec.preferred_level <= spec.max_level());
        spec
    }
}

/// A fleet: specs, and miners that point at them. Miners of one spec are contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub specs: Vec<MinerSpec>,
    /// The spec of each miner, indexed by [`MinerId`].
    pub miner_spec: Vec<SpecId>,
}

impl Fleet {
    pub fn len(&self) -> usize {
        self.miner_spec.len()
    }

    pub fn is_empty(&self) -> bool {
        self.miner_spec.is_empty()
    }

    pub fn spec_of(&self, miner: MinerId) -> &MinerSpec {
        &self.specs[self.miner_spec[miner.index()].0 as usize]
    }

    /// Power of every miner at its highest level.
    pub fn max_power(&self) -> Watts {
        self.miner_spec
            .iter()
            .map(|s| self.specs[s.0 as usize].max_power())
            .sum()
    }

    /// Power of every miner at nameplate.
    pub fn nameplate_power(&self) -> Watts {
        self.miner_spec
            .iter()
            .map(|s| self.specs[s.0 as usize].nameplate_power)
            .sum()
    }

    /// Spec indices, the most efficient (J/TH at nameplate) first: the order miners are woken.
    pub fn specs_by_efficiency(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.specs.len()).collect();
        let joules = |s: usize| self.specs[s].nameplate_efficiency().j_per_th();
        order.sort_by(|&a, &b| joules(a).total_cmp(&joules(b)));
        order
    }

    pub fn miner_ids(&self) -> impl Iterator<Item = MinerId> + '_ {
        (0..self.len() as u32).map(MinerId)
    }

    /// The same miners with every spec limited to `envelope`.
    pub fn within(&self, envelope: Envelope) -> Fleet {
        Fleet {
            specs: self.specs.iter().map(|s| s.within(envelope)).collect(),
            miner_spec: self.miner_spec.clone(),
        }
    }

    /// Whether some miner may draw above nameplate (the full envelope differs from nameplate).
    pub fn has_headroom(&self) -> bool {
        self.specs.iter().any(|s| s.max_level() > s.preferred_level)
    }

    /// A one-line description: "28571 x Antminer S21 (braiins-os)".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let n = self.miner_spec.iter().filter(|s| s.0 as usize == i).count();
            parts.push(format!("{n} x {} ({})", spec.model, spec.firmware));
        }
        parts.join(" + ")
    }
}

/// What went wrong building a fleet. Messages name the file, the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{origin}: {source}")]
    Catalogue {
        origin: String,
        #[source]
        source: CatalogueError,
    },
}

/// One group of identical miners as written in a fleet file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub model: String,
    #[serde(default)]
    pub count: Option<u32>,
    /// Alternative to `count`: as many miners as fit this nameplate power.
    #[serde(default)]
    pub installed_mw: Option<f64>,
    #[serde(default = "default_firmware")]
    pub firmware: FirmwareKind,
    pub min_power_w: Option<f64>,
    pub max_power_w: Option<f64>,
    pub step_w: Option<f64>,
    pub profiles: Option<u32>,
    pub standby_w: Option<f64>,
    pub wake_delay_s: Option<f64>,
    pub setpoint_delay_s: Option<f64>,
    pub ramp_up_w_per_s: Option<f64>,
    pub ramp_down_w_per_s: Option<f64>,
    pub hashrate_power_exponent: Option<f64>,
}

fn default_firmware() -> FirmwareKind {
    FirmwareKind::BraiinsOs
}

/// A fleet file: `[[group]]` tables.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    #[serde(rename = "group", default)]
    pub groups: Vec<toml::Spanned<GroupConfig>>,
}

/// The 1-based line of byte `offset` in `text` (for file:line errors from TOML spans).
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

impl FleetConfig {
    /// Parses and builds a fleet from a TOML fleet file. `origin` names the file in errors.
    pub fn build_from_toml(
        text: &str,
        origin: &str,
        catalogue: &Catalogue,
    ) -> Result<Fleet, FleetError> {
        let config: FleetConfig = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            FleetError::Invalid {
                origin: format!("{origin}{at}"),
                message: e.message().to_string(),
            }
        })?;
        if config.groups.is_empty() {
            return Err(FleetError::Invalid {
                origin: origin.to_string(),
                message: "no [[group]] of miners; add one with `model` and `count`".into(),
            });
        }
        let groups: Vec<(String, GroupConfig)> = config
            .groups
            .into_iter()
            .map(|g| {
                let at = format!("{origin}:{}", line_of(text, g.span().start));
                (at, g.into_inner())
            })
            .collect();
        build_fleet(&groups, catalogue)
    }

    /// Parses the command-line shorthand `MODEL:COUNT[:FIRMWARE][,MODEL:COUNT...]`, where COUNT
    /// is a number of miners or an installed nameplate power such as `100MW`.
    pub fn build_from_shorthand(spec: &str, catalogue: &Catalogue) -> Result<Fleet, FleetError> {
        let mut groups = Vec::new();
        for (i, part) in spec.split(',').enumerate() {
            let origin = format!("--fleet group {} ('{part}')", i + 1);
            let fields: Vec<&str> = part.trim().split(':').collect();
            let invalid = |message: String| FleetError::Invalid {
                origin: origin.clone(),
                message,
            };
            if fields.len() < 2 || fields.len() > 3 {
                return Err(invalid("expected MODEL:COUNT or MODEL:COUNT:FIRMWARE, e.g. s21:1000:braiins-os or s21:100MW".into()));
            }
            let mut group = GroupConfig {
                model: fields[0].to_string(),
                ..GroupConfig::default()
            };
            let amount = fields[1].trim();
            let lower = amount.to_ascii_lowercase();
            if let Some(mw) = lower.strip_suffix("mw") {
                let mw: f64 = mw
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("count: '{amount}' is not a power like 100MW")))?;
                group.installed_mw = Some(mw);
            } else {
                let n: u32 = amount.parse().map_err(|_| {
                    invalid(format!(
                        "count: '{amount}' is not a whole number of miners (or a power like 100MW)"
                    ))
                })?;
                group.count = Some(n);
            }
            group.firmware = match fields.get(2) {
                Some(fw) => fw
                    .parse()
                    .map_err(|e: String| invalid(format!("firmware: {e}")))?,
                None => default_firmware(),
            };
            groups.push((origin, group));
        }
        build_fleet(&groups, catalogue)
    }
}

pub fn build_fleet(
    groups: &[(String, GroupConfig)],
    catalogue: &Catalogue,
) -> Result<Fleet, FleetError> {
    let table = bundled_traits();
    let mut specs = Vec::new();
    let mut miner_spec = Vec::new();
    for (origin, group) in groups {
        let model = catalogue
            .find(&group.model)
            .map_err(|source| FleetError::Catalogue {
                origin: format!("{origin}: field `model`"),
                source,
            })?;
        let spec = build_spec(origin, group, &table[&group.firmware], model)?;
        let count = match (group.count, group.installed_mw) {
            (Some(n), None) => n,
            (None, Some(mw)) if mw.is_finite() && mw > 0.0 => {
                let n = (Watts::from_mw(mw) / spec.nameplate_power).round();
                if n > MAX_FLEET_MINERS as f64 {
                    return Err(invalid(
                        origin,
                        "installed_mw",
                        format!(
                            "{mw} MW is {n:.0} miners; hashsink handles up to {MAX_FLEET_MINERS}"
                        ),
                    ));
                }
                n as u32
            }
            (None, Some(mw)) => {
                return Err(invalid(
                    origin,
                    "installed_mw",
                    format!("{mw} must be a positive number of MW"),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    origin,
                    "count",
                    "give either `count` or `installed_mw`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    origin,
                    "count",
                    "missing: give `count` (miners) or `installed_mw`".into(),
                ));
            }
        };
        if count == 0 {
            return Err(invalid(
                origin,
                "count",
                "a group needs at least one miner".into(),
            ));
        }
        if miner_spec.len() + count as usize > MAX_FLEET_MINERS {
            return Err(invalid(
                origin,
                "count",
                format!(
                    "the fleet would have {} miners; hashsink handles up to {MAX_FLEET_MINERS}",
                    miner_spec.len() + count as usize
                ),
            ));
        }
        if specs.len() >= 1000 {
            return Err(invalid(
                origin,
                "model",
                "more than 1000 groups of miners".into(),
            ));
        }
        let id = SpecId(specs.len() as u16);
        specs.push(spec);
        miner_spec.extend(std::iter::repeat_n(id, count as usize));
    }
    Ok(Fleet { specs, miner_spec })
}

fn invalid(origin: &str, field: &str, message: String) -> FleetError {
    FleetError::Invalid {
        origin: format!("{origin}: field `{field}`"),
        message,
    }
}

/// `v` if it is a positive number, else an error naming the field.
fn positive(origin: &str, field: &str, v: f64) -> Result<f64, FleetError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid(
            origin,
            field,
            format!("{v} must be a positive number"),
        ))
    }
}

/// `v` if it is zero or more, else an error naming the field.
fn non_negative(origin: &str, field: &str, v: f64) -> Result<f64, FleetError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(invalid(origin, field, format!("{v} must be zero or more")))
    }
}

/// The most levels a power-target grid or a profile list may have.
const MAX_LEVELS: usize = 250;

/// The ladder of mining power levels a group's firmware offers, lowest first.
fn power_levels(
    origin: &str,
    g: &GroupConfig,
    fw: &FirmwareTraits,
    nameplate: Watts,
) -> Result<Vec<Watts>, FleetError> {
    let frac = |f: Option<f64>| f.map(|x| nameplate * x);
    let limits_given = g.min_power_w.is_some() || g.max_power_w.is_some() || g.step_w.is_some();
    match fw.control {
        ControlKind::PowerTarget | ControlKind::Profiles => {
            let min = (g.min_power_w.map(Watts).or(frac(fw.min_fraction))).expect("table has min");
            let max = (g.max_power_w.map(Watts).or(frac(fw.max_fraction))).expect("table has max");
            positive(origin, "min_power_w", min.w())?;
            positive(origin, "max_power_w", max.w())?;
            if min >= max {
                let message = format!("{min} is not below max_power_w {max}");
                return Err(invalid(origin, "min_power_w", message));
            }
            if fw.control == ControlKind::PowerTarget {
                let default_step = || (nameplate * fw.step_fraction.expect("table has step")).w();
                let step = positive(origin, "step_w", g.step_w.unwrap_or_else(default_step))?;
                watt_grid(origin, min, max, step)
            } else {
                let n = g.profiles.or(fw.profiles).expect("table has profiles");
                profile_levels(origin, min, max, n)
            }
        }
        ControlKind::Modes if limits_given => Err(invalid(
            origin,
            "min_power_w",
            "stock firmware has fixed modes; power limits cannot be set".into(),
        )),
        ControlKind::Modes => Ok([fw.low_fraction, fw.normal_fraction, fw.high_fraction]
            .iter()
            .map(|f| nameplate * f.expect("table has modes"))
            .collect()),
        ControlKind::OnOff if limits_given => Err(invalid(
            origin,
            "min_power_w",
            "an on/off miner has no power levels".into(),
        )),
        ControlKind::OnOff => Ok(vec![nameplate]),
    }
}

/// A power target every `step` watts from `min`, and `max` itself.
fn watt_grid(origin: &str, min: Watts, max: Watts, step: f64) -> Result<Vec<Watts>, FleetError> {
    let n = ((max - min).w() / step).floor() as usize;
    if n > MAX_LEVELS {
        let message = format!(
            "{step} W gives {n} levels; use a step of at least {:.0} W",
            (max - min).w() / MAX_LEVELS as f64
        );
        return Err(invalid(origin, "step_w", message));
    }
    let mut levels: Vec<Watts> = (0..=n).map(|i| min + Watts(step * i as f64)).collect();
    if (max - *levels.last().expect("n >= 0")).w() > 1e-6 {
        levels.push(max);
    }
    Ok(levels)
}

/// `n` profiles evenly spread from `min` to `max`.
fn profile_levels(origin: &str, min: Watts, max: Watts, n: u32) -> Result<Vec<Watts>, FleetError> {
    if !(2..=MAX_LEVELS as u32).contains(&n) {
        let message = format!("{n} must be between 2 and {MAX_LEVELS}");
        return Err(invalid(origin, "profiles", message));
    }
    Ok((0..n)
        .map(|i| min + (max - min) * (i as f64 / (n - 1) as f64))
        .collect())
}

fn build_spec(
    origin: &str,
    g: &GroupConfig,
    fw: &FirmwareTraits,
    model: &crate::catalogue::AsicModel,
) -> Result<MinerSpec, FleetError> {
    let nameplate = model.nameplate_power;
    let levels = power_levels(origin, g, fw, nameplate)?;
    let exponent = g
        .hashrate_power_exponent
        .unwrap_or(DEFAULT_HASHRATE_EXPONENT);
    if !(exponent > 0.0 && exponent <= 1.0) {
        return Err(invalid(
            origin,
            "hashrate_power_exponent",
            format!("{exponent} must be in (0, 1]"),
        ));
    }
    let standby = non_negative(origin, "standby_w", g.standby_w.unwrap_or(fw.standby_w))?;
    let standby = Watts(standby);
    if standby >= levels[0] {
        return Err(invalid(
            origin,
            "standby_w",
            format!(
                "{standby} is not below the lowest mining power {}",
                levels[0]
            ),
        ));
    }
    let secs = |field: &str, v: Option<f64>, default: f64| -> Result<Duration, FleetError> {
        let v = non_negative(origin, field, v.unwrap_or(default))?;
        if v > 86_400.0 {
            return Err(invalid(origin, field, format!("{v} s is more than a day")));
        }
        Ok(Duration::from_secs_f64(v))
    };
    let ramp =
        |field: &str, v: Option<f64>, default: f64| positive(origin, field, v.unwrap_or(default));
    let preferred = levels
        .iter()
        .rposition(|&p| p <= nameplate * 1.0001)
        .unwrap_or(0) as u8;
    let mut spec = MinerSpec {
        model: model.model.clone(),
        firmware: g.firmware,
        control: fw.control,
        nameplate_power: nameplate,
        nameplate_hashrate: model.nameplate_hashrate,
        level_hashrate: Vec::new(),
        levels,
        preferred_level: preferred,
        standby,
        wake_delay: secs("wake_delay_s", g.wake_delay_s, fw.wake_delay_s)?,
        setpoint_delay: secs("setpoint_delay_s", g.setpoint_delay_s, fw.setpoint_delay_s)?,
        ramp_up_w_per_s: ramp("ramp_up_w_per_s", g.ramp_up_w_per_s, fw.ramp_up_w_per_s)?,
        ramp_down_w_per_s: ramp(
            "ramp_down_w_per_s",
            g.ramp_down_w_per_s,
            fw.ramp_down_w_per_s,
        )?,
        hashrate_exponent: exponent,
    };
    spec.level_hashrate = spec.levels.iter().map(|&p| spec.hashrate_at(p)).collect();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat() -> Catalogue {
        Catalogue::bundled()
    }

    #[test]
    fn the_nameplate_envelope_drops_every_level_above_nameplate_and_nothing_else() {
        let full =
            FleetConfig::build_from_shorthand("s21:3:braiins-os,s19jpro:2:stock-antminer", &cat())
                .unwrap();
        assert!(full.has_headroom());
        let capped = full.within(Envelope::Nameplate);
        assert!(!capped.has_headroom());
        assert_eq!(capped.len(), full.len());
        assert_eq!(capped.nameplate_power(), full.nameplate_power());
        assert_eq!(capped.max_power(), capped.nameplate_power());
        assert!(full.max_power() > capped.max_power() * 1.05);
        for (c, f) in capped.specs.iter().zip(&full.specs) {
            assert_eq!(c.max_power(), c.nameplate_power, "{}", c.model);
            assert_eq!(c.levels[..], f.levels[..c.levels.len()]);
            assert_eq!(c.level_hashrate.len(), c.levels.len());
            assert_eq!(c.preferred_level, f.preferred_level);
        }
        assert_eq!(full.within(Envelope::Full), full);
    }

    #[test]
    fn shorthand_builds_power_target_ladder() {
        let fleet = FleetConfig::build_from_shorthand("s21:10", &cat()).unwrap();
        assert_eq!(fleet.len(), 10);
        let spec = &fleet.specs[0];
        assert_eq!(spec.firmware, FirmwareKind::BraiinsOs);
        assert_eq!(spec.min_power(), Watts(3500.0 * 0.45));
        assert!((spec.max_power().w() - 3850.0).abs() < 1e-9);
        assert_eq!(spec.level_power(spec.preferred_level), Watts(3500.0));
        assert!(spec.levels.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn efficiency_worsens_as_power_rises() {
        let fleet = FleetConfig::build_from_shorthand("s21:1", &cat()).unwrap();
        let spec = &fleet.specs[0];
        let eff: Vec<f64> = spec
            .levels
            .iter()
            .zip(&spec.level_hashrate)
            .map(|(p, h)| p.w() / h.ths())
            .collect();
        assert!(eff.windows(2).all(|w| w[0] < w[1]), "{eff:?}");
        assert!((spec.hashrate_at(Watts(3500.0)).ths() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn installed_power_sizes_the_group() {
        let fleet =
            FleetConfig::build_from_shorthand("s21:100MW,s19jpro:3068:stock", &cat()).unwrap();
        assert_eq!(fleet.len(), 28_571 + 3068);
        assert_eq!(fleet.specs[1].levels.len(), 3);
        assert_eq!(fleet.specs[1].preferred_level, 1);
    }

    #[test]
    fn fleet_file_errors_name_line_and_field() {
        let text = "[[group]]\nmodel = \"s21\"\ncount = 5\n\n[[group]]\nmodel = \"s21\"\ncount = 5\nmin_power_w = 4000\n";
        let err = FleetConfig::build_from_toml(text, "fleet.toml", &cat())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("fleet.toml:5: field `min_power_w`"),
            "{err}"
        );

        let typo = "[[group]]\nmodel = \"s21\"\ncuont = 5\n";
        let err = FleetConfig::build_from_toml(typo, "fleet.toml", &cat())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("fleet.toml:3"), "{err}");
        assert!(err.contains("cuont"), "{err}");

        let unknown = "[[group]]\nmodel = \"S9\"\ncount = 5\n";
        let err = FleetConfig::build_from_toml(unknown, "fleet.toml", &cat())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("fleet.toml:1: field `model`: unknown miner model 'S9'"),
            "{err}"
        );
    }

    #[test]
    fn shorthand_errors_say_what_to_write() {
        for (bad, needle) in [
            ("s21", "expected MODEL:COUNT"),
            ("s21:many", "not a whole number"),
            ("s21:0", "at least one miner"),
            ("s21:5:bitaxe", "unknown firmware"),
            ("s21:4000000000", "hashsink handles up to 1000000"),
            ("s21:1e9MW", "is 285714285714 miners"),
            ("s21:100000000MW", "hashsink handles up to 1000000"),
        ] {
            let err = FleetConfig::build_from_shorthand(bad, &cat())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
