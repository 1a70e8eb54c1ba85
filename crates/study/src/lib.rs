//! The feasibility and risk study behind `hashsink study`: should a site mine its surplus, with
//! which machines, how many MW, what it earns and what could go wrong.
//!
//! Pipeline: [`config`] validates the study file; [`dispatch`] runs each candidate fleet size on
//! the surplus profile through the twin with the daemon's controller; the market paths come
//! from `hashsink_market::forward` (Monte Carlo) or the history (backtest); [`finance`] turns a
//! design and a path into cash flows, NPV, IRR, payback and break-even. [`run`] sweeps the
//! designs on every path, chooses the best one (or the one asked for) on paths drawn apart from
//! those it reports, details it under the study's BTC price trend and the other one ("no drift"
//! or "fitted"), and measures the sensitivity and the risk register on the reported paths (common
//! random numbers), so differences between runs are the inputs', not the dice's. Everything is a function of the study file and
//! its seed. Pure and parallel (rayon); no I/O beyond reading the study's own files.

#![forbid(unsafe_code)]

pub mod config;
pub mod dispatch;
pub mod finance;
pub mod format;
pub mod report;
mod risks;
mod stages;

use std::time::Instant;

pub use config::{Inputs, StudyError, load, parse};
use dispatch::dispatch;
pub use report::{
    Design, DriftCase, MarketReport, MonthBand, Percentiles, Progress, Risk, Selection,
    Sensitivity, Stage, StudyReport, SweepRow, Timings, quantile_sorted, verdict,
};
use stages::{PathSource, economics};

/// Runs the study: dispatch -> market paths -> sweep -> the chosen design's paths ->
/// sensitivity and risks, then the report.
pub fn run(inputs: &Inputs, progress: Progress) -> Result<StudyReport, StudyError> {
    let threads = rayon::current_num_threads();
    let base = economics(inputs);
    let controller = dispatch::study_controller();
    let site = dispatch::Site {
        profile: &inputs.profile,
        alternative: &inputs.alternative,
        dispatch_miners: inputs.dispatch_miners,
        controller: &controller,
        import_usd_per_mwh: inputs.costs.import_usd_per_mwh,
    };
    let t0 = Instant::now();
    let (designs, sizes) = stages::dispatch_designs(inputs, &site, progress)?;
    let dispatch_s = t0.elapsed().as_secs_f64();
    let source = PathSource::new(inputs)?;
    let t1 = Instant::now();
    let sweep = stages::sweep(inputs, &designs, &sizes, &source, &base, progress);
    let sweep_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let d = &designs[sweep.chosen];
    let (hw, infra) = sweep.capex[sweep.chosen];
    let detail = stages::detail(inputs, d, (hw, infra), &source, &base, progress);
    let drift_cases = stages::drift_cases(inputs, d, (hw, infra), &base, &detail);
    let paths_s = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let cand = &inputs.candidates[d.candidate];
    // Curtailment: the plant keeps a fifth more of its surplus; the fleet is dispatched again.
    let curtailed = dispatch(&site, d.candidate, cand, d.installed_mw, 0.8)?;
    let sensitivity = risks::sensitivity(inputs, d, &curtailed, &source, &base, progress);
    let risks = risks::register(inputs, d, &curtailed, &sensitivity, &detail, (hw, infra));
    let sensitivity_s = t3.elapsed().as_secs_f64();
    let timings = Timings {
        dispatch: dispatch_s,
        sweep: sweep_s,
        paths: paths_s,
        sensitivity: sensitivity_s,
        threads,
    };
    Ok(stages::report(
        inputs,
        d,
        &base,
        sweep.rows,
        sweep.selection,
        drift_cases,
        detail,
        sensitivity.rows,
        risks,
        timings,
    ))
}
