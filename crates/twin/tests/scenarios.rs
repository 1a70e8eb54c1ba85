//! Whole-run tests of the twin: seeded fault scenarios with invariants, determinism, and the
//! controller against the baseline.

use std::sync::Arc;
use std::time::Duration;

use hashsink_core::{
    Catalogue, ControllerConfig, ControllerSettings, Envelope, Fleet, FleetConfig, OperatorCommand,
};
use hashsink_twin::{
    ControllerChoice, Disturbance, FaultPlan, MeterSettings, Profile, RunReport, Scenario,
    StepSettings, run,
};
use hashsink_units::{Timestamp, Watts};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Firmware whose cuts land within seconds.
const FAST: [&str; 5] = [
    "s21:braiins-os",
    "s21xp:luxos",
    "m60s:whatsminer-v3",
    "s21pro:vnish",
    "s19xp:on-off",
];
/// Stock firmware: three modes, 40 s to change them, minutes to wake.
const SLOW: [&str; 2] = ["s19jpro:stock-antminer", "s21:stock-antminer"];

fn random_fleet(rng: &mut ChaCha8Rng, groups: &[&str]) -> Fleet {
    let n = rng.random_range(1..=3);
    let parts: Vec<String> = (0..n)
        .map(|_| {
            let g = groups[rng.random_range(0..groups.len())];
            let (model, fw) = g.split_once(':').unwrap();
            format!("{model}:{}:{fw}", rng.random_range(10..120))
        })
        .collect();
    FleetConfig::build_from_shorthand(&parts.join(","), &Catalogue::bundled()).unwrap()
}

/// A surplus that wanders every 5 minutes, with cliffs to zero and jumps back.
fn random_profile(rng: &mut ChaCha8Rng, start: Timestamp, hours: u64, scale: Watts) -> Profile {
    let mut points = Vec::new();
    let mut level: f64 = rng.random_range(0.0..1.2);
    for i in 0..=hours * 12 {
        let t = start + Duration::from_secs(i * 300);
        if rng.random_bool(0.05) {
            // A cliff: the surplus is gone within a second.
            points.push((t, scale * level));
            level = 0.0;
            points.push((t + Duration::from_secs(1), Watts::ZERO));
            continue;
        }
        level = (level + rng.random_range(-0.25..0.25)).clamp(0.0, 1.3);
        if let Some(&(last, _)) = points.last() {
            if t <= last {
                continue;
            }
        }
        points.push((t, scale * level));
    }
    Profile::from_points("random", "seeded random walk with cliffs", points)
}

/// These fleets are small (a few hundred kW) and the profile steep (a quarter of the fleet per
/// five minutes, cliffs), so they run with a 1 % margin rather than the default 0.2 %. Stock
/// firmware needs 40 s to change mode: its margin must cover the fall of the surplus in that time.
const MARGIN: f64 = 0.01;
const SLOW_MARGIN: f64 = 0.04;

fn fault_scenario(seed: u64) -> Scenario {
    scenario_for(seed, &FAST, MARGIN)
}

fn scenario_for(seed: u64, groups: &[&str], margin: f64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fleet = Arc::new(random_fleet(&mut rng, groups));
    let start = Timestamp::from_secs(1_767_225_600);
    let hours = 8;
    let profile = Arc::new(random_profile(&mut rng, start, hours, fleet.max_power()));
    // Frozen-meter detection on: these scenarios freeze the meter on purpose.
    let cfg = ControllerSettings {
        frozen_after_s: 60.0,
        margin_fraction: margin,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut sc = Scenario::new(
        fleet.clone(),
        profile,
        ControllerChoice::Hashsink(cfg),
        Duration::from_secs(hours * 3600),
    );
    sc.seed = seed;
    sc.faults = FaultPlan::random(
        seed,
        start,
        sc.duration,
        fleet.len(),
        rng.random_range(2..8),
    );
    let shed_at = start + Duration::from_secs(rng.random_range(3600..hours * 3600 - 3600));
    sc.operator = vec![
        (shed_at, OperatorCommand::ShedAll),
        (shed_at + Duration::from_secs(600), OperatorCommand::Resume),
    ];
    sc
}

#[test]
fn seeded_fault_scenarios_keep_the_invariants() {
    check_scenarios(0..120, &FAST, MARGIN);
}

#[test]
fn seeded_fault_scenarios_with_stock_firmware_keep_the_invariants() {
    check_scenarios(1000..1030, &SLOW, SLOW_MARGIN);
}

/// The same scenarios with steps and dips on the surplus and a plant meter that reads it late,
/// now and then and coarsely (issue 13). Fast firmware only: stock firmware restarts its 40 s
/// mode change on every new command, so a surplus that steps again within it cannot be followed
/// within one reaction (measured by `cargo hashsink-bench control`, not asserted).
#[test]
fn seeded_stepped_scenarios_with_a_late_meter_keep_the_invariants() {
    check_stepped(2000..2060, &FAST, MARGIN);
}

fn stepped_scenario(seed: u64, groups: &[&str], margin: f64) -> Scenario {
    let mut sc = scenario_for(seed, groups, margin);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x13);
    sc.disturbance = Arc::new(Disturbance::draw(
        &StepSettings::default(),
        seed,
        sc.start,
        sc.duration,
    ));
    sc.meter = MeterSettings {
        period: Some(Duration::from_millis(rng.random_range(500..4000))),
        delay: Duration::from_millis(rng.random_range(0..2000)),
        jitter: Duration::from_millis(rng.random_range(0..500)),
        // Up to four times the margin: a reading off by up to twice the margin.
        resolution: sc.fleet.max_power() * rng.random_range(0.0..0.04),
    };
    sc
}

fn check_stepped(seeds: std::ops::Range<u64>, groups: &[&str], margin: f64) {
    let n = seeds.end - seeds.start;
    let mut failures = Vec::new();
    let mut steps = 0;
    for seed in seeds {
        let sc = stepped_scenario(seed, groups, margin);
        steps += sc.disturbance.steps() + sc.disturbance.dips();
        let report = run(&sc, &mut |_| {});
        if report.violation_count > 0 {
            failures.push(format!(
                "seed {seed} ({}, meter {:?}): {} violations, first: {:?}",
                sc.fleet.describe(),
                sc.meter,
                report.violation_count,
                report.violations.first()
            ));
        }
    }
    assert!(
        steps as u64 > 20 * n,
        "the scenarios step the surplus ({steps})"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} stepped scenarios broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_scenarios(seeds: std::ops::Range<u64>, groups: &[&str], margin: f64) {
    let n = seeds.end - seeds.start;
    let mut failures = Vec::new();
    let mut faults_seen = 0;
    // A silent miner cannot be shed, so a shed is measured only where none was running.
    let mut sheds_measured = 0;
    for seed in seeds {
        let sc = scenario_for(seed, groups, margin);
        faults_seen += sc.faults.episodes.len();
        let report = run(&sc, &mut |_| {});
        if report.violation_count > 0 {
            failures.push(format!(
                "seed {seed} ({}): {} violations, first: {:?}",
                sc.fleet.describe(),
                report.violation_count,
                report.violations.first()
            ));
        }
        sheds_measured += report.shed_times_s.len();
    }
    assert!(
        faults_seen as u64 > 3 * n,
        "the scenarios inject faults ({faults_seen})"
    );
    assert!(
        sheds_measured as u64 > n * 3 / 4,
        "sheds measured: {sheds_measured}"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} scenarios broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn wind_days(
    days: u64,
    spec: &str,
    noise: f64,
    seed: u64,
    controller: ControllerChoice,
) -> RunReport {
    let fleet = Arc::new(FleetConfig::build_from_shorthand(spec, &Catalogue::bundled()).unwrap());
    let profile = Arc::new(Profile::wind(500.0));
    let mut sc = Scenario::new(
        fleet,
        profile,
        controller,
        Duration::from_secs(days * 86_400),
    );
    sc.noise_fraction = noise;
    sc.seed = seed;
    run(&sc, &mut |_| {})
}

#[test]
fn same_seed_same_report_bit_for_bit() {
    let go = |seed| {
        let mut sc = fault_scenario(seed);
        sc.noise_fraction = 0.005;
        serde_json::to_string(&run(&sc, &mut |_| {})).unwrap()
    };
    let a = go(11);
    assert_eq!(a, go(11));
    assert_ne!(a, go(12));
}

#[test]
fn hashsink_beats_the_baseline_with_noise() {
    let hs = wind_days(
        20,
        "s21:20MW",
        0.0025,
        5,
        ControllerChoice::Hashsink(ControllerConfig::default()),
    );
    let base = wind_days(
        20,
        "s21:20MW",
        0.0025,
        5,
        ControllerChoice::Baseline(Default::default()),
    );
    assert_eq!(hs.violation_count, 0, "{:?}", hs.violations);
    assert!(
        hs.kpis.absorption_pct > base.kpis.absorption_pct,
        "{} vs {}",
        hs.kpis.absorption_pct,
        base.kpis.absorption_pct
    );
    assert!(hs.kpis.import_pct_of_absorbed < base.kpis.import_pct_of_absorbed);
}

/// A flat surplus at 80 % of the fleet with a 20 s dip to 30 % every hour (the case).
fn hourly_dips(fleet: &Fleet, hours: u64) -> Profile {
    let start = Timestamp::from_secs(1_767_225_600);
    let high = fleet.max_power() * 0.8;
    let low = fleet.max_power() * 0.3;
    let mut points = vec![(start, high)];
    for h in 0..hours {
        let dip = start + Duration::from_secs(h * 3600 + 1800);
        points.push((dip - Duration::from_secs(1), high));
        points.push((dip, low));
        points.push((dip + Duration::from_secs(19), low));
        points.push((dip + Duration::from_secs(20), high));
    }
    points.push((start + Duration::from_secs(hours * 3600), high));
    Profile::from_points(
        "hourly dips",
        "80 % with a 20 s dip to 30 % every hour",
        points,
    )
}

/// The hourly dips for a day on `spec`'s fleet limited to `envelope`.
fn dips_report(spec: &str, controller: ControllerChoice, envelope: Envelope) -> RunReport {
    let fleet = FleetConfig::build_from_shorthand(spec, &Catalogue::bundled()).unwrap();
    let fleet = Arc::new(fleet.within(envelope));
    let profile = Arc::new(hourly_dips(&fleet, 24));
    let sc = Scenario::new(fleet, profile, controller, Duration::from_secs(86_400));
    run(&sc, &mut |_| {})
}

#[test]
fn a_dip_shorter_than_the_stock_mode_change_is_taken_back_not_slept_through() {
    // Stock firmware takes 40 s to change mode: the sleeps a 20 s dip asks for have not landed
    // when it ends, and are taken back: no miner is woken from sleep but at the start. The fleet
    // imports what no controller could avoid (the dip is over before any command lands) and
    // mines as much as the on/off automation that rides the dips out. Both on the same envelope
    // (the three modes, 75 to 110 %: the automation runs its miners at the top one).
    //
    // Known gap (issue 17's notes): within nameplate (two modes, 75 and 100 %) at 80 % with dips
    // to 30 %, the sleeps are not taken back (24 woken early per dip, 10.8 cycles per miner per
    // day against the automation's 0.78).
    let spec = "s19jpro:60:stock";
    let hs = dips_report(
        spec,
        ControllerChoice::Hashsink(ControllerConfig::default()),
        Envelope::Full,
    );
    let base = dips_report(
        spec,
        ControllerChoice::Baseline(Default::default()),
        Envelope::Full,
    );
    assert_eq!(hs.violation_count, 0, "{:?}", hs.violations);
    // Woken from sleep no more than once a day on average: the start's boot, no dip's.
    assert!(
        hs.kpis.cycles_per_miner_day <= 1.0 + 1e-9,
        "{} cycles per miner per day: a dip's sleeps were slept through",
        hs.kpis.cycles_per_miner_day
    );
    assert!(
        hs.kpis.control_import_mwh <= hs.ideal.floor_import_mwh * 1.05,
        "{} MWh imported, the floor is {}",
        hs.kpis.control_import_mwh,
        hs.ideal.floor_import_mwh
    );
    // As much mined as the automation that rides the dips out (both lose the first minutes to
    // the three-minute boot that the ideal does not have).
    assert!(
        hs.kpis.absorption_pct >= base.kpis.absorption_pct,
        "{} against the baseline's {}",
        hs.kpis.absorption_pct,
        base.kpis.absorption_pct
    );
}

#[test]
fn a_short_dip_on_fast_firmware_costs_a_cycle_only_for_the_miners_that_did_not_fit() {
    // Braiins OS: down to 45 % of nameplate. At 80 % every running miner is at nameplate; the
    // dip to 30 % leaves room for 30/45 of them at their minimum, so a third sleep and come back
    // at once when the dip ends: 24 dips a day, a third of the running miners each time.
    let spec = "s21:60:braiins-os";
    let hs = dips_report(
        spec,
        ControllerChoice::Hashsink(ControllerConfig::default()),
        Envelope::Full,
    );
    assert_eq!(hs.violation_count, 0, "{:?}", hs.violations);
    let stats = hs.stats.as_ref().unwrap();
    let per_dip = stats.rewake_commands as f64 / 24.0;
    let running = 60.0 * 0.8 / 1.1; // nameplate is 1/1.1 of the maximum
    assert!(
        per_dip > 0.2 * running && per_dip < 0.45 * running,
        "{per_dip} woken early per dip of {running:.0} running"
    );
    assert!(
        hs.kpis.absorption_pct > hs.ideal.absorption_pct - 1.0,
        "{} against the ideal's {}",
        hs.kpis.absorption_pct,
        hs.ideal.absorption_pct
    );
    assert!(hs.kpis.control_import_mwh <= hs.ideal.floor_import_mwh * 2.0);
}

#[test]
fn a_stock_miner_told_a_level_while_booting_is_not_read_back_before_it_is_up() {
    // A stepped surplus on stock firmware: a miner woken to take back a sleep that, by the time
    // the wake went out, had landed boots for three minutes; a cut sent meanwhile is judged from
    // when it is up. Before, every such miner was read back and sent its command again.
    let fleet = Arc::new(
        FleetConfig::build_from_shorthand("s19jpro:300:stock", &Catalogue::bundled()).unwrap(),
    );
    let start = Timestamp::from_secs(1_767_225_600);
    let days = Duration::from_secs(3 * 86_400);
    let level = fleet.max_power() * 0.8;
    let profile = Arc::new(Profile::from_points(
        "flat",
        "80 % of the fleet",
        vec![(start, level), (start + days, level)],
    ));
    let mut sc = Scenario::new(
        fleet,
        profile,
        ControllerChoice::Hashsink(ControllerConfig::default()),
        days,
    );
    sc.disturbance = Arc::new(Disturbance::draw(&StepSettings::default(), 0, start, days));
    let report = run(&sc, &mut |_| {});
    let stats = report.stats.unwrap();
    assert!(stats.rewake_commands > 100, "{stats:?}");
    assert_eq!(stats.queries, 0, "healthy miners read back: {stats:?}");
}

#[test]
fn a_coarse_meter_reading_above_the_truth_is_the_meters_error_not_the_controllers() {
    // A 10 kW meter resolution on a 190 kW fleet whose margin is 385 W: a surplus of 95.1 kW
    // reads as 100 kW. The fleet follows the reading (it cannot see the truth) and imports
    // what the meter hides, as the ideal does; the invariant allows half a resolution for it.
    let fleet = Arc::new(
        FleetConfig::build_from_shorthand("s21:50:braiins-os", &Catalogue::bundled()).unwrap(),
    );
    let start = Timestamp::from_secs(1_767_225_600);
    let hours = Duration::from_secs(4 * 3600);
    let level = Watts::from_kw(95.1);
    let profile = Arc::new(Profile::from_points(
        "flat",
        "95.1 kW",
        vec![(start, level), (start + hours, level)],
    ));
    let mut sc = Scenario::new(
        fleet,
        profile,
        ControllerChoice::Hashsink(ControllerConfig::default()),
        hours,
    );
    sc.meter = MeterSettings {
        resolution: Watts::from_kw(10.0),
        ..MeterSettings::default()
    };
    let report = run(&sc, &mut |_| {});
    assert_eq!(report.violation_count, 0, "{:?}", report.violations);
    assert!(
        report.kpis.control_import_mwh > 0.0,
        "the reading is above the truth"
    );
    assert!(
        report.kpis.control_import_mwh <= report.ideal.floor_import_mwh,
        "{} MWh against the ideal's {}",
        report.kpis.control_import_mwh,
        report.ideal.floor_import_mwh
    );
}
