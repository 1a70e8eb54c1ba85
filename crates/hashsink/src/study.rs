//! `hashsink study SITE.toml --out DIR`: validates the study file, runs the study with a progress
//! bar, and writes the HTML report, the JSON and the CSVs.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hashsink_study::{Stage, StudyReport};

use crate::progress;
use crate::study_report;
use hashsink_study::format::{money, years};

#[derive(clap::Args, Debug)]
pub struct StudyArgs {
    /// The study file (see examples/nuclear-study.toml and examples/wind-study.toml).
    pub config: PathBuf,
    /// Where to write report.html, study.json and the CSVs.
    #[arg(long, default_value = "study-out")]
    pub out: PathBuf,
    /// Override the number of Monte Carlo paths.
    #[arg(long)]
    pub paths: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Validate the study file and stop.
    #[arg(long)]
    pub check: bool,
    /// Print the JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Loads the study file and applies the command-line overrides.
pub fn load(args: &StudyArgs) -> Result<hashsink_study::Inputs> {
    let mut inputs = hashsink_study::load(&args.config)?;
    if let hashsink_study::config::MarketMode::MonteCarlo { paths, seed, .. } = &mut inputs.market {
        if let Some(p) = args.paths {
            anyhow::ensure!(
                (1..=1_000_000).contains(&p),
                "--paths {p}: must be between 1 and 1000000"
            );
            *paths = p;
        }
        if let Some(s) = args.seed {
            *seed = s;
        }
    } else if args.paths.is_some() || args.seed.is_some() {
        anyhow::bail!(
            "--paths and --seed apply to mode = \"monte-carlo\"; this study is a backtest"
        );
    }
    Ok(inputs)
}

pub fn run(args: &StudyArgs) -> Result<()> {
    let inputs = load(args)?;
    if args.check {
        println!(
            "{}: valid; {} candidate model(s) x {} size(s), {} path(s) over {} years",
            args.config.display(),
            inputs.candidates.len(),
            inputs.sizes_mw.len(),
            inputs.paths(),
            inputs.finance.horizon_years
        );
        return Ok(());
    }
    let show = !args.quiet && std::io::stderr().is_terminal();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the worker threads")?;
    // One bar over the whole run; each stage has its share of it (dispatch is most of the time).
    let bar = progress::bar(show, Stage::Dispatch.label());
    let share = |stage: Stage| match stage {
        Stage::Dispatch => (0.0, 0.6),
        Stage::Sweep => (0.6, 0.2),
        Stage::Paths => (0.8, 0.05),
        Stage::Sensitivity => (0.85, 0.15),
    };
    let report = pool.install(|| {
        hashsink_study::run(&inputs, &|stage, done| {
            let (start, width) = share(stage);
            bar.set_message(stage.label());
            bar.set_position(((start + width * done.clamp(0.0, 1.0)) * 1000.0) as u64);
        })
    })?;
    bar.finish_and_clear();
    write_outputs(&report, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report, &args.out));
    }
    Ok(())
}

/// Writes report.html, study.json and the CSVs into `out`.
pub fn write_outputs(report: &StudyReport, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("study.json", serde_json::to_string_pretty(report)?)?;
    write("report.html", study_report::html(report)?)?;

    let mut csv = String::from(
        "model,firmware,installed_mw,max_draw_mw,miners,capex_usd,capture_factor,utilisation,absorbed_mwh_per_year,npv_p10_usd,npv_p50_usd,npv_p90_usd,probability_of_loss,npv_p50_on_selection_usd\n",
    );
    for r in &report.fleet_sweep {
        let _ = writeln!(
            csv,
            "{},{},{:.3},{:.3},{},{:.0},{:.5},{:.5},{:.1},{},{},{},{:.4},{:.0}",
            r.model,
            r.firmware,
            r.installed_mw,
            r.max_draw_mw,
            r.miners,
            r.capex_usd,
            r.capture_factor,
            r.utilisation,
            r.absorbed_mwh_per_year,
            opt(r.npv_usd.p10),
            opt(r.npv_usd.p50),
            opt(r.npv_usd.p90),
            r.probability_of_loss,
            r.npv_p50_on_selection_usd
        );
    }
    write("fleet_sweep.csv", csv)?;

    let mut csv = String::from(
        "path,npv_usd,irr,payback_years,breakeven_btc_usd,revenue_usd,btc_mined,absorbed_mwh\n",
    );
    for (i, p) in report.paths.iter().enumerate() {
        let _ = writeln!(
            csv,
            "{i},{:.2},{},{},{:.2},{:.2},{:.8},{:.3}",
            p.npv_usd,
            opt(p.irr),
            opt(p.payback_years),
            p.breakeven_btc_usd,
            p.revenue_usd,
            p.btc_mined,
            p.absorbed_mwh
        );
    }
    write("paths.csv", csv)?;

    let mut csv = String::from(
        "month,revenue_p10_usd,revenue_p50_usd,revenue_p90_usd,hashprice_p10_usd_per_ph_day,hashprice_p50_usd_per_ph_day,hashprice_p90_usd_per_ph_day\n",
    );
    for m in &report.monthly {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{}",
            m.month + 1,
            opt(m.revenue_usd.p10),
            opt(m.revenue_usd.p50),
            opt(m.revenue_usd.p90),
            opt(m.hashprice_usd_per_ph_day.p10),
            opt(m.hashprice_usd_per_ph_day.p50),
            opt(m.hashprice_usd_per_ph_day.p90)
        );
    }
    write("monthly.csv", csv)?;

    let mut csv = String::from("hour,surplus_mwh,absorbed_mwh,ph_hours,alternative_usd_per_mwh\n");
    for (i, h) in report.chosen_dispatch.hours.iter().enumerate() {
        let _ = writeln!(
            csv,
            "{i},{:.4},{:.4},{:.4},{:.3}",
            h.surplus_mwh, h.absorbed_mwh, h.ph_hours, h.alternative_usd_per_mwh
        );
    }
    write("dispatch_hourly.csv", csv)?;

    let mut csv = String::from("parameter,low,high,npv_p50_low_usd,npv_p50_high_usd\n");
    for s in &report.sensitivity {
        let _ = writeln!(
            csv,
            "{},{},{},{:.0},{:.0}",
            s.parameter, s.low, s.high, s.npv_p50_low_usd, s.npv_p50_high_usd
        );
    }
    write("sensitivity.csv", csv)?;

    let mut csv = String::from("risk,scenario,npv_change_usd,measure,mitigation\n");
    for r in &report.risks {
        let _ = writeln!(
            csv,
            "{},\"{}\",{:.0},\"{}\",\"{}\"",
            r.risk,
            r.scenario.replace('"', "'"),
            r.npv_change_usd,
            r.measure.replace('"', "'"),
            r.mitigation.replace('"', "'")
        );
    }
    write("risks.csv", csv)?;
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

/// The terminal summary.
pub fn summary(r: &StudyReport, out: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", r.title);
    let _ = writeln!(
        s,
        "Verdict     {} (paths with {})",
        r.verdict, r.verdict_basis
    );
    let d = &r.design;
    let _ = writeln!(
        s,
        "Design      {:.1} MW of {} ({}): {} miners, capex {} (hardware {}, site {} for {:.1} MW of maximum draw)",
        d.installed_mw,
        d.model,
        d.firmware,
        d.miners,
        money(d.hardware_usd + d.infrastructure_usd),
        money(d.hardware_usd),
        money(d.infrastructure_usd),
        d.max_draw_mw
    );
    let _ = writeln!(
        s,
        "Dispatch    absorbs {:.0} MWh/yr of {:.0} (capture factor {:.1} %, utilisation {:.1} %)",
        d.absorbed_mwh_per_year,
        d.surplus_mwh_per_year,
        r.capture_factor * 100.0,
        r.utilisation * 100.0
    );
    let _ = writeln!(
        s,
        "Import      {:.0} MWh/yr (sleeping miners' standby without surplus), {} a year at {}",
        d.import_mwh_per_year,
        money(d.import_usd_per_year),
        r.import_priced_at
    );
    let p = |x: Option<f64>| x.map(money).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "NPV         P10 {}   P50 {}   P90 {}   (probability of loss {:.1} %, VaR95 {})",
        p(r.npv_usd.p10),
        p(r.npv_usd.p50),
        p(r.npv_usd.p90),
        r.probability_of_loss * 100.0,
        money(r.value_at_risk_95_usd)
    );
    let _ = writeln!(
        s,
        "Payback     P10 {}   P50 {}   P90 {}",
        years(r.payback_years.p10, r.horizon_years),
        years(r.payback_years.p50, r.horizon_years),
        years(r.payback_years.p90, r.horizon_years)
    );
    let pct = |x: Option<f64>| {
        x.map(|v| format!("{:.0} %", v * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        s,
        "IRR         P10 {}   P50 {}   P90 {}",
        pct(r.irr.p10),
        pct(r.irr.p50),
        pct(r.irr.p90)
    );
    let _ = writeln!(
        s,
        "Break-even  BTC at {:.0} USD (today {:.0}); hashprice {:.1} USD/PH/day (today {:.1})",
        r.breakeven_btc_usd,
        r.market.start_price_usd,
        r.breakeven_hashprice_usd_per_ph_day,
        r.market.start_hashprice_usd_per_ph_day
    );
    let _ = writeln!(
        s,
        "Per MWh     mining earns {:.0} USD (P10-P90 {:.0}-{:.0}) against {:.1} USD for {}",
        r.revenue_usd_per_mwh.p50.unwrap_or(f64::NAN),
        r.revenue_usd_per_mwh.p10.unwrap_or(f64::NAN),
        r.revenue_usd_per_mwh.p90.unwrap_or(f64::NAN),
        r.alternative_usd_per_mwh,
        r.alternative
    );
    for c in &r.drift_cases {
        let _ = writeln!(
            s,
            "Price trend {:<38} NPV P50 {:>12}  loss {:>5.1} %  break-even BTC {:.0} USD{}",
            c.label,
            p(c.npv_usd.p50),
            c.probability_of_loss * 100.0,
            c.breakeven_btc_usd,
            if c.verdict_basis {
                "  (the verdict's)"
            } else {
                ""
            }
        );
    }
    let sel = &r.selection;
    let _ = writeln!(
        s,
        "Choice      by {}: median NPV {} there, {} on the reported paths (in-sample gap {}){}",
        sel.method,
        money(sel.chosen_npv_p50_on_selection_usd),
        money(sel.chosen_npv_p50_on_reported_usd),
        money(sel.in_sample_gap_usd),
        sel.in_sample_choice
            .as_ref()
            .map_or(String::new(), |c| format!(
                "; in sample it would have been {c}"
            ))
    );
    let _ = writeln!(s, "\nFleet sweep (median NPV on the reported paths)");
    for row in &r.fleet_sweep {
        let _ = writeln!(
            s,
            "  {:<22} {:>8.1} MW  capture {:>5.1} %  NPV P50 {:>12}  loss {:>5.1} %",
            format!("{} ({})", row.model, row.firmware),
            row.installed_mw,
            row.capture_factor * 100.0,
            p(row.npv_usd.p50),
            row.probability_of_loss * 100.0
        );
    }
    let _ = writeln!(
        s,
        "\n{} paths ({} market from {}), {} threads: dispatch {:.1} s, sweep {:.1} s, paths {:.1} s, sensitivity {:.1} s",
        r.market.paths,
        r.market.mode,
        r.market.start,
        r.timings_s.threads,
        r.timings_s.dispatch,
        r.timings_s.sweep,
        r.timings_s.paths,
        r.timings_s.sensitivity
    );
    let _ = writeln!(
        s,
        "Report: {}  (JSON and CSVs beside it)",
        out.join("report.html").display()
    );
    s
}
