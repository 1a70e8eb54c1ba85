//! Dispatch: a candidate fleet follows the surplus profile through the twin, driven by the same
//! controller (and its defaults) as the daemon, and the run is integrated hour by hour into
//! energy absorbed, hashes and the alternative value of the absorbed energy, then summed by day.
//!
//! A fleet of thousands of identical miners is run as `dispatch_miners` representative ones on the
//! profile scaled down by the same ratio, and the results scaled back up: the controller's
//! behaviour depends on the surplus relative to the fleet, and one simulated miner standing for
//! N real ones keeps that ratio. The granularity this costs is one representative miner, 1 % of
//! the fleet at the default 100.

use std::sync::Arc;
use std::time::Duration;

use hashsink_core::{ControllerConfig, ControllerSettings, GroupConfig, build_fleet};
use hashsink_twin::{ControllerChoice, Profile, Scenario};
use hashsink_units::Timestamp;

use crate::config::{Alternative, Candidate, StudyError};

/// The controller's cadence in study runs, and the twin's sampling step; the daemon's other
/// defaults are kept. Surplus data are hourly or 5-minute: on the nuclear year a 10 s cadence
/// gives the same capture and hashes as the daemon's 1 s to 0.01 % (a test checks a month), five
/// times faster.
pub const STUDY_CADENCE_MS: u64 = 10_000;

/// The daemon's controller settings with the study's cadence (the reading-age limit at least two
/// cadences).
pub fn study_controller() -> ControllerConfig {
    let defaults = ControllerSettings::default();
    ControllerSettings {
        cadence_ms: STUDY_CADENCE_MS,
        max_reading_age_ms: defaults.max_reading_age_ms.max(2 * STUDY_CADENCE_MS),
        ..defaults
    }
    .validate()
    .expect("study settings are valid")
}
const HOUR: Duration = Duration::from_secs(3600);

/// One day of a dispatched fleet at full size, before uptime, failures and decay.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct DayDispatch {
    pub surplus_mwh: f64,
    pub absorbed_mwh: f64,
    pub import_mwh: f64,
    /// PH/s-days of hashing.
    pub ph_days: f64,
    /// What the absorbed energy would have fetched in the alternative, USD.
    pub alternative_usd: f64,
    /// What the imported energy (`import_mwh`) cost, USD.
    pub import_usd: f64,
}

/// A fleet design and how it follows the profile.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Dispatch {
    pub candidate: usize,
    /// Nameplate power of the fleet, MW.
    pub installed_mw: f64,
    /// What the fleet can draw at its firmware's highest level (110 % of nameplate on Braiins
    /// OS), MW: what the site's connection, transformers and cooling must carry.
    pub max_draw_mw: f64,
    pub miners: u32,
    pub simulated_miners: u32,
    pub days: Vec<DayDispatch>,
    /// Absorbed energy over surplus energy for the profile's span.
    pub capture_factor: f64,
    /// Absorbed energy over what the fleet would draw at its maximum all the time.
    pub utilisation: f64,
    pub hours: Vec<HourDispatch>,
}

/// One hour of a dispatch (kept for the chosen design's CSV).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct HourDispatch {
    pub surplus_mwh: f64,
    pub absorbed_mwh: f64,
    pub ph_hours: f64,
    pub alternative_usd_per_mwh: f64,
}

/// Whole days of the profile (the part a study cycles over its horizon).
pub fn profile_days(profile: &Profile) -> usize {
    (profile.duration().as_secs_f64() / 86_400.0)
        .floor()
        .max(1.0) as usize
}

/// What every dispatch of a study shares: the surplus, what its energy is otherwise worth, and
/// how the fleet is simulated.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    pub profile: &'a Profile,
    pub alternative: &'a Alternative,
    /// Representative miners simulated per run.
    pub dispatch_miners: u32,
    pub controller: &'a ControllerConfig,
    /// The tariff for imported energy, USD/MWh (None: the alternative price, at least 0).
    pub import_usd_per_mwh: Option<f64>,
}

/// Runs `candidate` at `installed_mw` on the site's profile scaled by `surplus_factor`.
pub fn dispatch(
    site: &Site,
    candidate_index: usize,
    candidate: &Candidate,
    installed_mw: f64,
    surplus_factor: f64,
) -> Result<Dispatch, StudyError> {
    let Site {
        profile,
        alternative,
        dispatch_miners,
        controller,
        import_usd_per_mwh,
    } = *site;
    let miners = (installed_mw * 1e6 / candidate.model.nameplate_power.w())
        .round()
        .max(1.0) as u32;
    let simulated = miners.min(dispatch_miners);
    let scale = f64::from(simulated) / f64::from(miners);
    let group = GroupConfig {
        model: candidate.model.model.clone(),
        count: Some(simulated),
        firmware: candidate.firmware,
        ..GroupConfig::default()
    };
    let fleet = build_fleet(
        &[("study".into(), group)],
        &hashsink_core::Catalogue::bundled(),
    )
    .map_err(|e| StudyError {
        origin: format!("[[model]] {}", candidate.model.model),
        message: e.to_string(),
    })?;
    let max_power_w = fleet.specs[0].max_power().w();
    let days = profile_days(profile);
    let scaled = profile.scaled(scale * surplus_factor, profile.definition.clone());
    let duration = Duration::from_secs(days as u64 * 86_400);
    let mut scenario = Scenario::new(
        Arc::new(fleet),
        Arc::new(scaled),
        ControllerChoice::Hashsink(controller.clone()),
        duration,
    );
    scenario.sample_period = controller.cadence.max(Duration::from_secs(1));
    scenario.check_invariants = false;
    scenario.energy_buckets = Some(HOUR);
    let report = hashsink_twin::run(&scenario, &mut |_| {});
    let up = 1.0 / scale;
    let start = profile.start();
    let mut cursor = 0;
    let mut hours = Vec::with_capacity(report.buckets.len());
    let mut out = vec![DayDispatch::default(); days];
    for (i, b) in report.buckets.iter().enumerate() {
        let t: Timestamp = start + HOUR * i as u32;
        let price = alternative.price_at(t, &mut cursor);
        let h = HourDispatch {
            surplus_mwh: b.surplus_mwh * up,
            absorbed_mwh: b.absorbed_mwh * up,
            ph_hours: b.ph_hours * up,
            alternative_usd_per_mwh: price,
        };
        let d = &mut out[(i / 24).min(days - 1)];
        d.surplus_mwh += h.surplus_mwh;
        d.absorbed_mwh += h.absorbed_mwh;
        d.import_mwh += b.import_mwh * up;
        d.ph_days += h.ph_hours / 24.0;
        d.alternative_usd += h.absorbed_mwh * price;
        d.import_usd += b.import_mwh * up * import_usd_per_mwh.unwrap_or(price.max(0.0));
        hours.push(h);
    }
    let surplus: f64 = out.iter().map(|d| d.surplus_mwh).sum();
    let absorbed: f64 = out.iter().map(|d| d.absorbed_mwh).sum();
    let max_draw_mw = f64::from(miners) * max_power_w / 1e6;
    let max_draw = max_draw_mw * days as f64 * 24.0;
    Ok(Dispatch {
        candidate: candidate_index,
        installed_mw: f64::from(miners) * candidate.model.nameplate_power.mw(),
        max_draw_mw,
        miners,
        simulated_miners: simulated,
        days: out,
        capture_factor: if surplus > 0.0 {
            absorbed / surplus
        } else {
            0.0
        },
        utilisation: absorbed / max_draw,
        hours,
    })
}

/// The surplus by hour (MW, mean over the hour), for the load duration curve.
pub fn hourly_surplus_mw(profile: &Profile) -> Vec<f64> {
    let days = profile_days(profile);
    let mut cursor = profile.cursor();
    let start = profile.start();
    (0..days * 24)
        .map(|h| {
            let t0 = start + HOUR * h as u32;
            (0..12)
                .map(|k| cursor.at(t0 + Duration::from_secs(150 + 300 * k)).mw())
                .sum::<f64>()
                / 12.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Alternative;

    fn candidate() -> Candidate {
        let model = hashsink_core::Catalogue::bundled()
            .find("s19jpro")
            .expect("in the catalogue")
            .clone();
        Candidate {
            model,
            firmware: hashsink_core::FirmwareKind::BraiinsOs,
            usd_per_th: 3.0,
        }
    }

    fn site<'a>(
        profile: &'a Profile,
        alternative: &'a Alternative,
        dispatch_miners: u32,
        controller: &'a ControllerConfig,
    ) -> Site<'a> {
        Site {
            profile,
            alternative,
            dispatch_miners,
            controller,
            import_usd_per_mwh: None,
        }
    }

    fn month() -> Profile {
        let p = Profile::nuclear(
            1200.0,
            hashsink_twin::NuclearMethod::Excess {
                export_limit_mw: 1000.0,
            },
        );
        p.window(p.start(), Duration::from_secs(30 * 86_400))
    }

    #[test]
    fn study_cadence_matches_the_daemons_and_scales_back_up() {
        let p = month();
        let c = candidate();
        let flat = Alternative::Flat(10.0);
        let (study, daemon_cfg) = (study_controller(), ControllerConfig::default());
        let fast = dispatch(&site(&p, &flat, 100, &study), 0, &c, 40.0, 1.0).unwrap();
        let daemon = dispatch(&site(&p, &flat, 100, &daemon_cfg), 0, &c, 40.0, 1.0).unwrap();
        let sum = |d: &Dispatch, f: fn(&DayDispatch) -> f64| d.days.iter().map(f).sum::<f64>();
        let rel = |a: f64, b: f64| (a / b - 1.0).abs();
        assert!(
            rel(
                sum(&fast, |d| d.absorbed_mwh),
                sum(&daemon, |d| d.absorbed_mwh)
            ) < 0.002
        );
        assert!(rel(sum(&fast, |d| d.ph_days), sum(&daemon, |d| d.ph_days)) < 0.002);
        // 40 MW of S19j Pro is 13,038 miners, simulated as 100 and scaled back.
        assert_eq!(fast.miners, 13_038);
        assert_eq!(fast.simulated_miners, 100);
        // Surplus is the profile's, whatever the scale: the fleet sees its share, not more.
        let surplus: f64 = sum(&fast, |d| d.surplus_mwh);
        let truth: f64 = hourly_surplus_mw(&p).iter().sum();
        assert!(rel(surplus, truth) < 0.01, "{surplus} vs {truth}");
        // Absorbed never exceeds the surplus or the fleet, and hashes follow the energy at the
        // model's efficiency (29.5 J/TH at nameplate; standby draw and the overclock above
        // nameplate cost a little, lower power levels gain a little).
        let absorbed = sum(&fast, |d| d.absorbed_mwh);
        assert!(absorbed <= surplus);
        assert!(
            absorbed <= fast.installed_mw * 1.1 * 24.0 * 30.0,
            "above the overclocked fleet"
        );
        let th_per_mwh = sum(&fast, |d| d.ph_days) * 1000.0 * 86_400.0 / (absorbed * 3.6e9);
        assert!(
            (1.0 / 33.0..1.0 / 25.0).contains(&th_per_mwh),
            "{th_per_mwh} TH/s-s per J"
        );
        // The alternative value is the absorbed energy at the flat price.
        assert!(rel(sum(&fast, |d| d.alternative_usd), 10.0 * absorbed) < 1e-9);
    }

    #[test]
    fn imported_energy_is_costed_and_the_site_is_sized_for_the_fleets_maximum_draw() {
        let p = month();
        let c = candidate();
        let study = study_controller();
        let flat = Alternative::Flat(10.0);
        let at_alternative = dispatch(&site(&p, &flat, 50, &study), 0, &c, 20.0, 1.0).unwrap();
        let tariff = Site {
            import_usd_per_mwh: Some(80.0),
            ..site(&p, &flat, 50, &study)
        };
        let at_tariff = dispatch(&tariff, 0, &c, 20.0, 1.0).unwrap();
        let sum = |d: &Dispatch, f: fn(&DayDispatch) -> f64| d.days.iter().map(f).sum::<f64>();
        // The sleeping fleet's standby draw in the hours without surplus is imported.
        let import = sum(&at_alternative, |d| d.import_mwh);
        assert!(import > 1.0, "{import} MWh imported in a month");
        let cost = |d: &Dispatch| sum(d, |x| x.import_usd);
        assert!((cost(&at_alternative) - 10.0 * import).abs() < 1e-6 * import.max(1.0));
        assert!((cost(&at_tariff) - 80.0 * sum(&at_tariff, |d| d.import_mwh)).abs() < 1e-3);
        // Braiins OS lets an S19j Pro draw 110 % of nameplate: the site carries that.
        let ratio = at_alternative.max_draw_mw / at_alternative.installed_mw;
        assert!((ratio - 1.1).abs() < 1e-6, "{ratio}");
    }

    #[test]
    fn a_bigger_fleet_captures_more_but_uses_less_of_itself() {
        let p = month();
        let c = candidate();
        let flat = Alternative::Flat(0.0);
        let study = study_controller();
        let small = dispatch(&site(&p, &flat, 50, &study), 0, &c, 20.0, 1.0).unwrap();
        let big = dispatch(&site(&p, &flat, 50, &study), 0, &c, 200.0, 1.0).unwrap();
        assert!(big.capture_factor > small.capture_factor);
        assert!(big.utilisation < small.utilisation);
        let less = dispatch(&site(&p, &flat, 50, &study), 0, &c, 200.0, 0.8).unwrap();
        assert!(less.capture_factor > 0.0);
        let absorbed = |d: &Dispatch| d.days.iter().map(|x| x.absorbed_mwh).sum::<f64>();
        assert!(absorbed(&less) < absorbed(&big));
    }
}
