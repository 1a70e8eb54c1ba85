//! `hashsink simulate` and `hashsink demo`: the twin on a profile, one or both controllers, and
//! the KPI table or JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hashsink_core::{
    Catalogue, ControllerConfig, ControllerSettings, Envelope, Fleet, FleetConfig,
};
use hashsink_twin::compare::{self, Comparison, Terms};
use hashsink_twin::{
    ControllerChoice, MeterSettings, NuclearMethod, Profile, RunReport, StepSettings,
};
use hashsink_units::Watts;
use hashsink_units::format_time;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    Hashsink,
    /// The on/off automation (Home Assistant style).
    Baseline,
    /// The 5 s proportional setpoint dispatch of commercial fleet managers.
    Setpoint,
    /// hashsink and the on/off baseline.
    Both,
    /// hashsink, the setpoint dispatch and the on/off baseline.
    All,
}

/// The fleet envelope every controller of a run is limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnvelopeArg {
    /// Every miner at or below nameplate, for every controller; hashsink also runs on the
    /// firmware's full range, in a column of its own, where the fleet has one.
    Nameplate,
    /// The firmware's whole range (Braiins OS up to 110 %) for every controller, the on/off
    /// baseline included (it runs its miners at the top level).
    Full,
}

impl From<EnvelopeArg> for Envelope {
    fn from(arg: EnvelopeArg) -> Self {
        match arg {
            EnvelopeArg::Nameplate => Envelope::Nameplate,
            EnvelopeArg::Full => Envelope::Full,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NuclearDefinition {
    /// The unit's pro-rata share of generation above demand plus the export limit.
    Excess,
    /// The unit's whole output in hours priced at or below zero.
    Price,
}

/// Options shared by `simulate` and `demo`.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Surplus profile: `nuclear`, `wind`, or a CSV file with the header `timestamp,surplus_mw`.
    #[arg(long, default_value = "wind")]
    pub profile: String,
    /// Fleet: a TOML fleet file, or MODEL:COUNT[:FIRMWARE] groups separated by commas, where COUNT
    /// may be a power such as 100MW (e.g. `s21:100MW` or `s21xp:20000:luxos,s19jpro:5000:stock`).
    #[arg(long, default_value = "s21:100MW:braiins-os")]
    pub fleet: String,
    /// Which controller to run; `all` prints hashsink and both references side by side, on the
    /// same fleet.
    #[arg(long, value_enum, default_value = "all")]
    pub controller: Which,
    /// The fleet envelope, the same for every controller (default: `nameplate` when a reference
    /// controller runs, `full` when hashsink runs alone). Under `nameplate` hashsink runs a second
    /// time on the firmware's full range (`hashsink+headroom`) where the fleet has one, and the
    /// table says how much energy the headroom adds.
    #[arg(long, value_enum)]
    pub envelope: Option<EnvelopeArg>,
    /// Seed for noise and faults. The same seed gives byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Simulate this many days from the start (default: the whole profile).
    #[arg(long)]
    pub days: Option<f64>,
    /// Start at this date (YYYY-MM-DD, UTC) instead of the profile's start.
    #[arg(long)]
    pub start: Option<String>,
    /// Measurement noise on the surplus reading: sigma as a percentage of the profile's peak
    /// (AR(1), 60 s correlation).
    #[arg(long, default_value_t = 0.0)]
    pub noise_pct: f64,
    /// Inject this many seeded fault episodes (silent, disobedient and rebooting miners, stale
    /// meters, frozen, flapping, lost and clock-stepped surplus signals).
    #[arg(long, default_value_t = 0)]
    pub faults: usize,
    /// Controller settings: a TOML file with a `[controller]` table (see examples/controller.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Nuclear profile: the unit's size in MW.
    #[arg(long, default_value_t = 1200.0)]
    pub unit_mw: f64,
    /// Nuclear profile: how the unit's surplus is defined.
    #[arg(long, value_enum, default_value = "excess")]
    pub nuclear_definition: NuclearDefinition,
    /// Nuclear profile (excess definition): MW the interties absorb before the unit is in surplus.
    #[arg(long, default_value_t = 1000.0)]
    pub export_limit_mw: f64,
    /// Wind profile: the plant's export cap in MW; output above it is the surplus.
    #[arg(long, default_value_t = 500.0)]
    pub export_cap_mw: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write a one-row-a-minute CSV of surplus, allowed and actual load per controller to FILE
    /// (for plotting).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Draw the surplus and each controller's fleet load to an SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub disturb: DisturbArgs,
}

/// Steps on the surplus and a lagging meter (`simulate`'s stepped and late-meter scenarios).
#[derive(Args, Debug, Clone, Default)]
pub struct DisturbArgs {
    /// Add seeded steps to the profile: dips of 10-45 % for 5-60 s, and lasting steps to 70-100 %
    /// of the profile, each every 5-30 minutes (the `--dip-*`/`--step-*` options change them).
    #[arg(long)]
    pub steps: bool,
    /// Share of the surplus a dip takes away, percent, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range)]
    pub dip_depth_pct: Option<(f64, f64)>,
    /// How long a dip lasts, seconds, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range)]
    pub dip_length_s: Option<(f64, f64)>,
    /// Minutes from the end of one dip to the start of the next, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range)]
    pub dip_every_min: Option<(f64, f64)>,
    /// The level a lasting step sets, percent of the profile, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range)]
    pub step_level_pct: Option<(f64, f64)>,
    /// Minutes between lasting steps, as LOW-HIGH.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range)]
    pub step_every_min: Option<(f64, f64)>,
    /// The surplus meter's delay from measurement to the controller, ms (0: none).
    #[arg(long, default_value_t = 0)]
    pub meter_delay_ms: u64,
    /// A further delay per reading, drawn from 0 to this many ms.
    #[arg(long, default_value_t = 0)]
    pub meter_jitter_ms: u64,
    /// How often the surplus meter updates, ms (Modbus about 1000, SCADA 2000-4000; 0: every
    /// one-second twin sample).
    #[arg(long, default_value_t = 0)]
    pub meter_period_ms: u64,
    /// The meter's resolution, kW: readings are rounded to a multiple of it (0: exact).
    #[arg(long, default_value_t = 0.0)]
    pub meter_resolution_kw: f64,
}

/// `LOW-HIGH` (or one number for both).
fn parse_range(text: &str) -> Result<(f64, f64), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                format!("'{t}' is not a non-negative number (write LOW-HIGH, e.g. 10-45)")
            })
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let v = parse(text)?;
            (v, v)
        }
    };
    if lo > hi {
        return Err(format!("{lo} is above {hi}: write the low end first"));
    }
    Ok((lo, hi))
}

impl DisturbArgs {
    /// The step settings, if any step option was given.
    pub fn step_settings(&self) -> Result<Option<StepSettings>> {
        let any = self.dip_depth_pct.is_some()
            || self.dip_length_s.is_some()
            || self.dip_every_min.is_some()
            || self.step_level_pct.is_some()
            || self.step_every_min.is_some();
        if !(self.steps || any) {
            return Ok(None);
        }
        let secs = |(a, b): (f64, f64), unit: f64| {
            (
                Duration::from_secs_f64(a * unit),
                Duration::from_secs_f64(b * unit),
            )
        };
        for (name, range) in [
            ("--dip-depth-pct", self.dip_depth_pct),
            ("--step-level-pct", self.step_level_pct),
        ] {
            if let Some((_, high)) = range.filter(|&(_, high)| high > 100.0) {
                bail!("{name}: {high} is above 100 (a percentage of the surplus)");
            }
        }
        let mut set = StepSettings::default();
        if let Some((a, b)) = self.dip_depth_pct {
            set.dip_depth = (a / 100.0, b / 100.0);
        }
        if let Some(r) = self.dip_length_s {
            set.dip_length = secs(r, 1.0);
        }
        if let Some(r) = self.dip_every_min {
            set.dip_gap = secs(r, 60.0);
        }
        if let Some((a, b)) = self.step_level_pct {
            set.step_level = (a / 100.0, b / 100.0);
        }
        if let Some(r) = self.step_every_min {
            set.step_gap = secs(r, 60.0);
        }
        set.validate()
            .map_err(|e| anyhow::anyhow!("--steps: {e}"))?;
        Ok(Some(set))
    }

    pub fn meter(&self) -> Result<MeterSettings> {
        if !(self.meter_resolution_kw.is_finite() && self.meter_resolution_kw >= 0.0) {
            bail!(
                "--meter-resolution-kw {} must be a non-negative number",
                self.meter_resolution_kw
            );
        }
        if [
            self.meter_period_ms,
            self.meter_delay_ms,
            self.meter_jitter_ms,
        ]
        .iter()
        .any(|&ms| ms > 600_000)
        {
            bail!(
                "--meter-period-ms, --meter-delay-ms and --meter-jitter-ms must each be at most 600000 (10 minutes)"
            );
        }
        Ok(MeterSettings {
            period: (self.meter_period_ms > 0).then(|| Duration::from_millis(self.meter_period_ms)),
            delay: Duration::from_millis(self.meter_delay_ms),
            jitter: Duration::from_millis(self.meter_jitter_ms),
            resolution: Watts::from_kw(self.meter_resolution_kw),
        })
    }
}

/// The demo's nuclear unit: a quarter of the default 1,200 MW, so that its surplus (peaks of
/// about 80 MW) both fills the 56 MW demo fleet and falls well below it at night.
const DEMO_UNIT_MW: f64 = 300.0;

impl SimulateArgs {
    /// The demo: the nuclear night valley, a mixed fleet of the four firmware kinds.
    pub fn demo(days: f64, seed: u64) -> Self {
        Self {
            profile: "nuclear".into(),
            fleet:
                "s21xp:6000:braiins-os,m60s:4000:whatsminer-v3,s21:4000:luxos,s19jpro:2000:stock"
                    .into(),
            controller: Which::All,
            envelope: None,
            seed,
            days: Some(days),
            start: None,
            noise_pct: 0.0,
            faults: 0,
            config: None,
            unit_mw: DEMO_UNIT_MW,
            nuclear_definition: NuclearDefinition::Excess,
            export_limit_mw: 1000.0,
            export_cap_mw: 500.0,
            json: false,
            trace: None,
            plot: None,
            disturb: DisturbArgs::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    #[serde(default)]
    controller: ControllerSettings,
}

/// Loads the profile the user named.
pub fn load_profile(args: &SimulateArgs) -> Result<Profile> {
    Ok(match args.profile.as_str() {
        "nuclear" => {
            if !(args.unit_mw.is_finite() && args.unit_mw > 0.0) {
                bail!("--unit-mw {} must be a positive number of MW", args.unit_mw);
            }
            let method = match args.nuclear_definition {
                NuclearDefinition::Excess => NuclearMethod::Excess {
                    export_limit_mw: args.export_limit_mw,
                },
                NuclearDefinition::Price => NuclearMethod::Price,
            };
            Profile::nuclear(args.unit_mw, method)
        }
        "wind" => Profile::wind(args.export_cap_mw),
        path => {
            let text = hashsink_units::read_input_file(path).with_context(|| {
                format!("cannot read profile '{path}': give `nuclear`, `wind` or a CSV file with the header timestamp,surplus_mw")
            })?;
            Profile::from_csv(&text, path)?
        }
    })
}

/// Builds the fleet the user named.
pub fn load_fleet(spec: &str) -> Result<Fleet> {
    let catalogue = Catalogue::bundled();
    if spec.ends_with(".toml") || Path::new(spec).is_file() {
        let text = hashsink_units::read_input_file(spec)
            .with_context(|| format!("cannot read fleet file '{spec}'"))?;
        Ok(FleetConfig::build_from_toml(&text, spec, &catalogue)?)
    } else {
        Ok(FleetConfig::build_from_shorthand(spec, &catalogue)?)
    }
}

/// Reads controller settings from a file's `[controller]` table.
pub fn load_settings(path: Option<&Path>) -> Result<ControllerConfig> {
    let Some(path) = path else {
        return Ok(ControllerConfig::default());
    };
    let text = hashsink_units::read_input_file(path)
        .with_context(|| format!("cannot read config '{}'", path.display()))?;
    let file: SettingsFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].lines().count().max(1))
            .unwrap_or(0);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })?;
    file.controller
        .validate()
        .with_context(|| format!("{}", path.display()))
}

/// The runs of one `simulate` call.
pub struct Outcome {
    pub profile: Arc<Profile>,
    /// The fleet every controller ran, within `envelope`.
    pub fleet: Arc<Fleet>,
    pub envelope: Envelope,
    /// The full-envelope fleet of the `hashsink+headroom` run, if there was one.
    pub headroom_fleet: Option<Arc<Fleet>>,
    pub start: hashsink_units::Timestamp,
    pub duration: Duration,
    pub reports: Vec<RunReport>,
    pub wall: Vec<Duration>,
    /// What steps and meter lag the run added, in words (none for a plain profile).
    pub disturbance: Option<String>,
}

fn parse_date(text: &str) -> Result<hashsink_units::Timestamp> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    hashsink_units::parse_time(&full).map_err(|e| anyhow::anyhow!("--start: {e}"))
}

/// Runs the scenario(s) the arguments describe.
pub fn execute(args: &SimulateArgs, show_progress: bool) -> Result<Outcome> {
    let cfg = load_settings(args.config.as_deref())?;
    execute_on(
        load_profile(args)?,
        load_fleet(&args.fleet)?,
        cfg,
        args,
        show_progress,
    )
}

/// Runs the scenario(s) the arguments describe on `profile`, `fleet` and the controller settings
/// `cfg` (in place of `--profile`, `--fleet` and `--config`).
pub fn execute_on(
    profile: Profile,
    fleet: Fleet,
    cfg: ControllerConfig,
    args: &SimulateArgs,
    show_progress: bool,
) -> Result<Outcome> {
    if !(args.noise_pct.is_finite() && (0.0..=50.0).contains(&args.noise_pct)) {
        bail!("--noise-pct {} must be between 0 and 50", args.noise_pct);
    }
    let terms = Terms {
        fleet: Arc::new(fleet),
        profile,
        start: args.start.as_deref().map(parse_date).transpose()?,
        days: args.days,
        seed: args.seed,
        noise_fraction: args.noise_pct / 100.0,
        faults: args.faults,
        steps: args.disturb.step_settings()?,
        meter: args.disturb.meter()?,
        trace_every: (args.trace.is_some() || args.plot.is_some()).then(|| Duration::from_secs(60)),
        envelope: args.envelope.map_or(
            if args.controller == Which::Hashsink {
                Envelope::Full
            } else {
                Envelope::Nameplate
            },
            Envelope::from,
        ),
        headroom: args.controller != Which::Hashsink,
    };
    let wanted: &[&str] = match args.controller {
        Which::Hashsink => &["hashsink"],
        Which::Baseline => &["baseline"],
        Which::Setpoint => &["setpoint"],
        Which::Both => &["hashsink", "baseline"],
        Which::All => &["hashsink", "setpoint", "baseline"],
    };
    // The three on the same terms, in their order, less those not asked for.
    let choices: Vec<ControllerChoice> = compare::all_three(&cfg)
        .into_iter()
        .filter(|c| wanted.contains(&c.name()))
        .collect();
    // The comparison's errors name the option ("start ...", "days ...").
    let comparison = Comparison::new(terms, choices).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let (mut reports, mut wall) = (Vec::new(), Vec::new());
    for scenario in &comparison.scenarios {
        let label = format!(
            "{} on {}",
            scenario.label.unwrap_or(scenario.controller.name()),
            comparison.profile.name
        );
        let bar = crate::progress::bar(show_progress, &label);
        let began = Instant::now();
        let report =
            compare::run_with_drill(scenario, &mut |f| bar.set_position((f * 1000.0) as u64));
        wall.push(began.elapsed());
        bar.finish_and_clear();
        reports.push(report);
    }
    if let Some(path) = &args.trace {
        write_trace(path, &reports)
            .with_context(|| format!("cannot write trace '{}'", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} surplus and the load of a {:.0} MW fleet ({} miners)",
            comparison.profile.name,
            comparison.fleet.nameplate_power().mw(),
            comparison.fleet.len()
        );
        crate::plot::write_svg(path, &title, &reports)?;
    }
    Ok(Outcome {
        disturbance: comparison.describe_disturbance(),
        profile: comparison.profile,
        fleet: comparison.fleet,
        envelope: comparison.envelope,
        headroom_fleet: comparison.headroom_fleet,
        start: comparison.start,
        duration: comparison.duration,
        reports,
        wall,
    })
}

fn write_trace(path: &Path, reports: &[RunReport]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "controller,timestamp,surplus_mw,allowed_mw,running_mw,standby_mw,hashrate_phs,faulted_miners"
    )?;
    for r in reports {
        for row in &r.trace {
            let allowed = if row.allowed_mw.is_nan() {
                String::new()
            } else {
                format!("{:.4}", row.allowed_mw)
            };
            writeln!(
                out,
                "{},{},{:.4},{},{:.4},{:.4},{:.3},{}",
                r.controller,
                format_time(row.t),
                row.surplus_mw,
                allowed,
                row.running_mw,
                row.standby_mw,
                row.hashrate_phs,
                row.faulted
            )?;
        }
    }
    out.flush()
}

#[derive(Serialize)]
struct ProfileJson<'a> {
    name: &'a str,
    definition: &'a str,
    start: String,
    days: f64,
    peak_mw: f64,
    surplus_mwh: f64,
    surplus_drops_per_day: f64,
}

/// The JSON document: deterministic (no timings), so the same seed gives the same bytes.
pub fn to_json(outcome: &Outcome, seed: u64) -> serde_json::Value {
    let mut controllers = serde_json::Map::new();
    for r in &outcome.reports {
        let mut v = serde_json::to_value(&r.kpis).expect("kpis serialise");
        let obj = v.as_object_mut().expect("kpis is an object");
        obj.insert("invariant_violations".into(), json!(r.violation_count));
        obj.insert(
            "command_counts".into(),
            serde_json::to_value(r.command_counts).expect("counts serialise"),
        );
        obj.insert("first_violations".into(), json!(r.violations));
        obj.insert(
            "absorption_below_ideal_points".into(),
            json!(r.ideal.absorption_pct - r.kpis.absorption_pct),
        );
        obj.insert("import_over_floor".into(), json!(r.import_over_floor()));
        if let Some(stats) = &r.stats {
            obj.insert(
                "controller_stats".into(),
                serde_json::to_value(stats).expect("stats serialise"),
            );
        }
        controllers.insert(r.controller.clone(), v);
    }
    let first = &outcome.reports[0];
    let profile = ProfileJson {
        name: &outcome.profile.name,
        definition: &outcome.profile.definition,
        start: format_time(outcome.start),
        days: outcome.duration.as_secs_f64() / 86_400.0,
        peak_mw: outcome.profile.peak().mw(),
        surplus_mwh: first.kpis.surplus_mwh,
        surplus_drops_per_day: first.surplus_drops_per_day,
    };
    json!({
        "controllers": controllers,
        "ideal": first.ideal,
        "disturbance": outcome.disturbance,
        "profile": profile,
        "envelope": outcome.envelope.name(),
        "fleet": {
            "description": outcome.fleet.describe(),
            "miners": outcome.fleet.len(),
            "nameplate_mw": outcome.fleet.nameplate_power().mw(),
            "max_mw": outcome.fleet.max_power().mw(),
            "full_envelope_max_mw": outcome.headroom_fleet.as_ref().map(|f| f.max_power().mw()),
        },
        "headroom": compare::headroom_gain(&outcome.reports),
        "seed": seed,
    })
}

/// The KPI table, controllers side by side, then the step-following ideal where it applies.
pub fn render_table(outcome: &Outcome) -> String {
    let mut out = String::new();
    let p = &outcome.profile;
    let first = &outcome.reports[0];
    out.push_str(&format!("profile  {}: {}\n", p.name, p.definition));
    out.push_str(&format!(
        "         {} for {:.1} days, peak {:.1} MW, {:.0} MWh of surplus, {:.2} drops to zero per day\n",
        format_time(outcome.start),
        outcome.duration.as_secs_f64() / 86_400.0,
        p.peak().mw(),
        first.kpis.surplus_mwh,
        first.surplus_drops_per_day
    ));
    if let Some(line) = &outcome.disturbance {
        out.push_str(&format!("         {line}\n"));
    }
    out.push_str(&format!(
        "fleet    {} ({:.1} MW nameplate, {:.1} MW max: the {} envelope), the same for every controller\n",
        outcome.fleet.describe(),
        outcome.fleet.nameplate_power().mw(),
        outcome.fleet.max_power().mw(),
        outcome.envelope.name()
    ));
    if let Some(full) = &outcome.headroom_fleet {
        out.push_str(&format!(
            "         {}: hashsink on the firmware's full range ({:.1} MW max), a capability the references are not given here\n",
            compare::HEADROOM,
            full.max_power().mw()
        ));
    }
    out.push('\n');
    type Cell = fn(&RunReport) -> String;
    // (label, a controller's value, the ideal's value where it has one)
    let rows: [(&str, Cell, Option<Cell>); 17] = [
        (
            "absorption (% of reachable surplus)",
            |r| format!("{:.3}", r.kpis.absorption_pct),
            Some(|r| format!("{:.3}", r.ideal.absorption_pct)),
        ),
        (
            "  below the step-following ideal (points)",
            |r| format!("{:.3}", r.ideal.absorption_pct - r.kpis.absorption_pct),
            None,
        ),
        (
            "control import (% of absorbed)",
            |r| format!("{:.4}", r.kpis.import_pct_of_absorbed),
            Some(|r| format!("{:.4}", r.ideal.floor_import_pct_of_absorbed)),
        ),
        (
            "  over the ideal's (physical floor, x)",
            |r| {
                r.import_over_floor()
                    .map_or("-".into(), |x| format!("{x:.2}"))
            },
            None,
        ),
        (
            "standby import (% of absorbed)",
            |r| format!("{:.4}", r.kpis.standby_pct_of_absorbed),
            None,
        ),
        (
            "5-min intervals within tolerance (%)",
            |r| format!("{:.2}", r.kpis.within_tolerance_pct),
            None,
        ),
        (
            "wake/sleep cycles per miner per day",
            |r| format!("{:.3}", r.kpis.cycles_per_miner_day),
            None,
        ),
        (
            "time to shed 95 % (s, drill)",
            |r| r.kpis.shed95_s.map_or("-".into(), |s| format!("{s:.1}")),
            None,
        ),
        ("TH per MWh", |r| format!("{:.0}", r.kpis.th_per_mwh), None),
        (
            "absorbed (MWh)",
            |r| format!("{:.1}", r.kpis.absorbed_mwh),
            Some(|r| format!("{:.1}", r.ideal.absorbed_mwh)),
        ),
        (
            "control import (MWh)",
            |r| format!("{:.3}", r.kpis.control_import_mwh),
            Some(|r| format!("{:.3}", r.ideal.floor_import_mwh)),
        ),
        ("hashes (EH)", |r| format!("{:.1}", r.kpis.hashes_eh), None),
        ("commands sent", |r| r.kpis.commands.to_string(), None),
        (
            "  setpoint / wake / sleep",
            |r| {
                format!(
                    "{}/{}/{}",
                    r.command_counts.set_level, r.command_counts.wake, r.command_counts.sleep
                )
            },
            None,
        ),
        (
            "  woken early after a short dip",
            |r| {
                r.stats
                    .as_ref()
                    .map_or("-".into(), |s| s.rewake_commands.to_string())
            },
            None,
        ),
        (
            "  surplus steps seen",
            |r| r.stats.as_ref().map_or("-".into(), |s| s.steps.to_string()),
            None,
        ),
        (
            "invariant violations",
            |r| {
                if r.controller.starts_with("hashsink") {
                    r.violation_count.to_string()
                } else {
                    "not checked".into()
                }
            },
            None,
        ),
    ];
    // One row of cells per KPI: each controller's value, then the ideal's.
    let header: Vec<String> = (outcome.reports.iter())
        .map(|r| r.controller.clone())
        .chain(["ideal".to_string()])
        .collect();
    let body: Vec<(&str, Vec<String>)> = rows
        .iter()
        .map(|(label, cell, ideal)| {
            let cells = (outcome.reports.iter().map(cell))
                .chain([ideal.map_or(String::new(), |f| f(first))])
                .collect();
            (*label, cells)
        })
        .collect();
    // A column is 22 wide, or wider with two spaces before its longest cell.
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            let longest = (body.iter().map(|(_, cells)| cells[c].len()))
                .chain([header[c].len()])
                .max()
                .unwrap_or(0);
            (longest + 2).max(22)
        })
        .collect();
    let mut push_row = |label: &str, cells: &[String]| {
        out.push_str(&format!("{label:<44}"));
        for (cell, w) in cells.iter().zip(&widths) {
            out.push_str(&format!("{cell:>w$}"));
        }
        out.push('\n');
    };
    push_row("KPI", &header);
    for (label, cells) in &body {
        push_row(label, cells);
    }
    out.push_str(
        "\nideal: the fleet at min(surplus reading, capacity), each model after its firmware's \
         setpoint delay and at its ramps, with no margin and no wake delay; its import is the \
         physical floor of the steps and the meter's lag.\n",
    );
    if let Some(gain) = compare::headroom_gain(&outcome.reports) {
        out.push_str(&render_headroom(&gain));
    }
    for r in &outcome.reports {
        for v in &r.violations {
            out.push_str(&format!("violation ({}): {v}\n", r.controller));
        }
    }
    out
}

/// What the headroom adds, in energy: the `hashsink+headroom` column's absorption is of a larger
/// reachable surplus and is not to be set beside the others'.
fn render_headroom(gain: &compare::HeadroomGain) -> String {
    format!(
        "headroom: on the firmware's full range hashsink absorbs {:.1} MWh, {:.1} MWh ({:+.2} %) \
         more than at nameplate: a gain of the capability, not of control. Its absorption % is of \
         the {:.1} MWh reachable on the full range (at nameplate: {:.1} MWh).\n",
        gain.full_absorbed_mwh,
        gain.full_absorbed_mwh - gain.nameplate_absorbed_mwh,
        gain.added_pct,
        gain.full_reachable_mwh,
        gain.nameplate_reachable_mwh
    )
}

/// Speed line for stderr: simulated miner-seconds per wall second.
pub fn render_speed(outcome: &Outcome) -> String {
    outcome
        .reports
        .iter()
        .zip(&outcome.wall)
        .map(|(r, w)| {
            format!(
                "{}: {:.1} s wall, {:.3e} miner-steps/s ({} miners x {:.0} one-second steps), {} miner events",
                r.controller,
                w.as_secs_f64(),
                r.miner_seconds / w.as_secs_f64(),
                outcome.fleet.len(),
                outcome.duration.as_secs_f64(),
                r.events
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
