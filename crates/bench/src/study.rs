//! `hashsink-bench study`: Monte Carlo paths per second on the bundled nuclear study, by thread
//! count.

use std::fmt::Write;

use anyhow::{Context, Result};
use hashsink_study::format::money;

const BENCH_STUDY: &str = include_str!("../../../examples/nuclear-study.toml");

/// `hashsink-bench study`: the bundled nuclear study with `paths` paths over `years`, on one
/// thread and on all cores; a table of stage times, paths per second and the scaling.
pub fn run(paths: usize, horizon_years: f64) -> Result<String> {
    let mut inputs = hashsink_study::parse(BENCH_STUDY, "examples/nuclear-study.toml", None)?;
    anyhow::ensure!(paths >= 1, "--paths must be at least 1");
    anyhow::ensure!(
        (0.25..=15.0).contains(&horizon_years),
        "--years must be between 0.25 and 15"
    );
    inputs.finance.horizon_years = horizon_years;
    if let hashsink_study::config::MarketMode::MonteCarlo { paths: p, .. } = &mut inputs.market {
        *p = paths;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut counts = vec![1, cores];
    counts.dedup();
    let designs = inputs.candidates.len() * inputs.sizes_mw.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hashsink-bench study: examples/nuclear-study.toml, {paths} paths x {horizon_years} years, {designs} designs (fleet sweep), the bundled year dispatched through the twin\n"
    );
    let _ = writeln!(
        out,
        "| threads | dispatch s | sweep s | paths s | sensitivity s | total s | paths drawn/s (sweep+detail) | design-paths/s | speed-up |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut first_total = None;
    let mut npv_check = None;
    for threads in counts {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("starting the worker threads")?;
        let started = std::time::Instant::now();
        let report = pool.install(|| hashsink_study::run(&inputs, &|_, _| {}))?;
        let total = started.elapsed().as_secs_f64();
        let t = report.timings_s;
        // The verdict's own trend is the detail pass; the others are drawn again.
        let extra_trends = report.drift_cases.len().saturating_sub(1);
        let mc = t.sweep + t.paths;
        let speedup = first_total.map(|f: f64| f / total).unwrap_or(1.0);
        first_total.get_or_insert(total);
        // Same seed, any thread count: the same figures.
        let npv = report.npv_usd.p50;
        if let Some(prev) = npv_check {
            anyhow::ensure!(
                prev == npv,
                "the median NPV changed with the thread count ({prev:?} vs {npv:?})"
            );
        }
        npv_check = Some(npv);
        let _ = writeln!(
            out,
            "| {threads} | {:.2} | {:.2} | {:.2} | {:.2} | {total:.2} | {:.0} | {:.0} | {speedup:.2}x |",
            t.dispatch,
            t.sweep,
            t.paths,
            t.sensitivity,
            // Paths drawn: the sweep's two sets (reported and selection), the detail, and the
            // chosen design under each other price trend; each of the sweep's paths is valued
            // for every design.
            (paths * (3 + extra_trends)) as f64 / mc,
            (paths * (2 * designs + 1 + extra_trends)) as f64 / mc,
        );
    }
    let _ = writeln!(
        out,
        "\nGoal: 10,000 paths over 5 years with the dispatch, under 10 s on 2 cores (total column). Same median NPV at every thread count: {}.",
        npv_check.flatten().map(money).unwrap_or_else(|| "-".into())
    );
    Ok(out)
}
