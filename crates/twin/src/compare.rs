//! Controllers on equal terms: one fleet, one window of one profile, one seed, the same faults,
//! steps and meter for every controller of a comparison. `hashsink simulate` and the control
//! benchmark build a [`Comparison`] and run its scenarios; what differs between its reports is
//! the controllers', not the dice's. Every controller gets the same fleet envelope (by default
//! nameplate, which an on/off automation can use as well as a power-target dispatch); the
//! headroom above it, where the firmware allows one, is run as a scenario of its own
//! ([`HEADROOM`]) so that a table can say how much of a lead it is.

use std::sync::Arc;
use std::time::Duration;

use hashsink_core::{BaselineConfig, ControllerConfig, Envelope, Fleet, SetpointConfig};
use hashsink_units::{Timestamp, format_time};

use crate::disturb::{Disturbance, MeterSettings, StepSettings};
use crate::faults::FaultPlan;
use crate::profile::Profile;
use crate::world::{ControllerChoice, RunReport, Scenario, run, shed_drill};

/// What every controller of a comparison shares.
#[derive(Clone, Debug)]
pub struct Terms {
    pub fleet: Arc<Fleet>,
    /// The whole profile; the comparison runs a window of it.
    pub profile: Profile,
    /// Where the window starts (default: the profile's start).
    pub start: Option<Timestamp>,
    /// How long it lasts (default: to the profile's end).
    pub days: Option<f64>,
    pub seed: u64,
    /// Measurement noise, sigma as a share of the profile's peak (0 to 0.5).
    pub noise_fraction: f64,
    /// Seeded fault episodes.
    pub faults: usize,
    /// Seeded steps and dips on the surplus (none: the profile as it is).
    pub steps: Option<StepSettings>,
    pub meter: MeterSettings,
    /// A trace row this often (none: no trace).
    pub trace_every: Option<Duration>,
    /// The envelope every controller's fleet is limited to.
    pub envelope: Envelope,
    /// Under the nameplate envelope, also run hashsink on the firmware's full range (labelled
    /// [`HEADROOM`]) where the fleet has one.
    pub headroom: bool,
}

/// The label of hashsink's run on the full envelope beside a nameplate comparison.
pub const HEADROOM: &str = "hashsink+headroom";

impl Terms {
    /// A plain comparison: the whole profile, seed 0, no noise, faults, steps or meter lag.
    pub fn plain(fleet: Arc<Fleet>, profile: Profile) -> Self {
        Self {
            fleet,
            profile,
            start: None,
            days: None,
            seed: 0,
            noise_fraction: 0.0,
            faults: 0,
            steps: None,
            meter: MeterSettings::default(),
            trace_every: None,
            envelope: Envelope::Nameplate,
            headroom: false,
        }
    }
}

/// hashsink and the two references it is measured against, on the same terms: the setpoint
/// dispatch with hashsink's margin, `min_off` and wake confirmation, and the on/off automation.
pub fn all_three(config: &ControllerConfig) -> Vec<ControllerChoice> {
    vec![
        ControllerChoice::Hashsink(config.clone()),
        ControllerChoice::Setpoint(SetpointConfig::same_terms_as(config)),
        ControllerChoice::Baseline(BaselineConfig::default()),
    ]
}

/// One scenario per controller, alike in everything else.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The fleet every controller runs, limited to `envelope`.
    pub fleet: Arc<Fleet>,
    pub envelope: Envelope,
    /// The same fleet on its full envelope, where a [`HEADROOM`] scenario runs it.
    pub headroom_fleet: Option<Arc<Fleet>>,
    /// The window of the profile that runs.
    pub profile: Arc<Profile>,
    pub start: Timestamp,
    pub duration: Duration,
    pub disturbance: Arc<Disturbance>,
    pub meter: MeterSettings,
    pub scenarios: Vec<Scenario>,
}

impl Comparison {
    /// Checks the terms and builds the scenarios. The error names the option at fault.
    pub fn new(terms: Terms, controllers: Vec<ControllerChoice>) -> Result<Self, String> {
        let noise = terms.noise_fraction;
        if !(noise.is_finite() && (0.0..=0.5).contains(&noise)) {
            return Err(format!(
                "noise {} % must be between 0 and 50",
                noise * 100.0
            ));
        }
        let whole = &terms.profile;
        let start = terms.start.unwrap_or(whole.start());
        if start < whole.start() || start >= whole.end() {
            return Err(format!(
                "start {} is outside the profile ({} to {})",
                format_time(start),
                format_time(whole.start()),
                format_time(whole.end())
            ));
        }
        let available = whole.end().saturating_since(start);
        let duration = match terms.days {
            Some(d) if d.is_finite() && d > 0.0 => {
                Duration::from_secs_f64(d * 86_400.0).min(available)
            }
            Some(d) => return Err(format!("days {d} must be a positive number")),
            None => available,
        };
        let profile = Arc::new(whole.window(start, duration));
        let faults =
            FaultPlan::random(terms.seed, start, duration, terms.fleet.len(), terms.faults);
        let disturbance = Arc::new(match &terms.steps {
            Some(set) => Disturbance::draw(set, terms.seed, start, duration),
            None => Disturbance::none(),
        });
        let fleet = Arc::new(terms.fleet.within(terms.envelope));
        let headroom_fleet =
            (terms.headroom && terms.envelope == Envelope::Nameplate && terms.fleet.has_headroom())
                .then(|| Arc::new(terms.fleet.within(Envelope::Full)));
        let headroom_run = headroom_fleet.as_ref().and_then(|full| {
            let hashsink = controllers
                .iter()
                .find(|c| matches!(c, ControllerChoice::Hashsink(_)))?;
            Some((full.clone(), hashsink.clone(), Some(HEADROOM)))
        });
        let runs = controllers
            .into_iter()
            .map(|choice| (fleet.clone(), choice, None))
            .chain(headroom_run);
        let scenarios = runs
            .map(|(fleet, choice, label)| {
                let mut s = Scenario::new(fleet, profile.clone(), choice, duration);
                s.label = label;
                s.start = start;
                s.seed = terms.seed;
                s.noise_fraction = noise;
                s.faults = faults.clone();
                s.disturbance = disturbance.clone();
                s.meter = terms.meter;
                s.trace_every = terms.trace_every;
                s
            })
            .collect();
        Ok(Self {
            fleet,
            envelope: terms.envelope,
            headroom_fleet,
            profile,
            start,
            duration,
            disturbance,
            meter: terms.meter,
            scenarios,
        })
    }

    /// One line on the steps drawn and the meter, if either is in play.
    pub fn describe_disturbance(&self) -> Option<String> {
        let (drawn, meter) = (&self.disturbance, &self.meter);
        let mut parts = Vec::new();
        if drawn.steps() + drawn.dips() > 0 {
            parts.push(format!(
                "with {} lasting steps and {} dips drawn from the seed",
                drawn.steps(),
                drawn.dips()
            ));
        }
        if *meter != MeterSettings::default() {
            parts.push(format!(
                "read by a meter every {} ms, {} ms late (+0..{} ms), to {} kW",
                meter.period.map_or(1000, |p| p.as_millis()),
                meter.delay.as_millis(),
                meter.jitter.as_millis(),
                meter.resolution.w() / 1000.0
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Runs one scenario and the same controller's shed drill on its fleet.
pub fn run_with_drill(scenario: &Scenario, progress: &mut dyn FnMut(f64)) -> RunReport {
    let mut report = run(scenario, progress);
    let (fleet, choice) = (scenario.fleet.clone(), scenario.controller.clone());
    report.kpis.shed95_s = shed_drill(fleet, choice, scenario.seed);
    report
}

/// What hashsink gains from the headroom above nameplate: the same controller, on the same
/// surplus, with the fleet at nameplate and on the firmware's full range. Absorption percentages
/// of the two are of different reachable surpluses (capacity differs), so the gain is in energy.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct HeadroomGain {
    pub nameplate_absorbed_mwh: f64,
    pub full_absorbed_mwh: f64,
    /// Energy the full range absorbs beyond the nameplate run, % of the nameplate run's.
    pub added_pct: f64,
    pub nameplate_reachable_mwh: f64,
    pub full_reachable_mwh: f64,
}

/// The headroom gain, where `reports` hold both hashsink runs.
pub fn headroom_gain(reports: &[RunReport]) -> Option<HeadroomGain> {
    let find = |name: &str| reports.iter().find(|r| r.controller == name);
    let (capped, full) = (find("hashsink")?, find(HEADROOM)?);
    let (a, b) = (capped.kpis.absorbed_mwh, full.kpis.absorbed_mwh);
    Some(HeadroomGain {
        nameplate_absorbed_mwh: a,
        full_absorbed_mwh: b,
        added_pct: if a > 0.0 { 100.0 * (b - a) / a } else { 0.0 },
        nameplate_reachable_mwh: capped.kpis.reachable_mwh,
        full_reachable_mwh: full.kpis.reachable_mwh,
    })
}

impl RunReport {
    /// Control import as a multiple of the physical floor (none when the floor is nil).
    pub fn import_over_floor(&self) -> Option<f64> {
        (self.ideal.floor_import_mwh > 1e-9)
            .then(|| self.kpis.control_import_mwh / self.ideal.floor_import_mwh)
    }
}
