//! The study's stages, in the order [`run`](crate::run) calls them: every design dispatched
//! through the twin, the market paths, the sweep (every design on every path), the chosen
//! design's paths in detail, and the report that gathers them.

use std::sync::atomic::{AtomicUsize, Ordering};

use hashsink_market::forward::{MarketDay, Shocks, historical_path};
use rayon::prelude::*;

use crate::config::{Candidate, Inputs, MarketMode, StudyError};
use crate::dispatch::{self, Dispatch, dispatch};
use crate::finance::{Economics, MONTH_DAYS, PathOutcome, breakeven_hashprice, evaluate};
use crate::report::{
    Design, MarketReport, MonthBand, Percentiles, Progress, Risk, Sensitivity, Stage, StudyReport,
    SweepRow, Timings, inputs_fit, quantile_sorted, share,
};

/// The study's base economics: its costs and finance, no capex change, no early stop.
pub(crate) fn economics(inputs: &Inputs) -> Economics {
    Economics {
        costs: inputs.costs,
        finance: inputs.finance,
        capex_factor: 1.0,
        stop_after_days: None,
    }
}

/// Hardware and site capex of a design.
pub(crate) fn capex_of(d: &Dispatch, c: &Candidate, e: &Economics) -> (f64, f64) {
    crate::finance::capex(d, c.usd_per_th, c.model.nameplate_hashrate.ths(), e)
}

/// Market paths: drawn or historical.
pub(crate) struct PathSource<'a> {
    mode: &'a MarketMode,
    history: Option<Vec<MarketDay>>,
}

impl<'a> PathSource<'a> {
    /// The study's paths; a backtest's history is loaded once here.
    pub(crate) fn new(inputs: &'a Inputs) -> Result<Self, StudyError> {
        let history = match &inputs.market {
            MarketMode::Backtest { start } => Some(
                historical_path(&inputs.history, *start, inputs.horizon_days()).map_err(|e| {
                    StudyError {
                        origin: "[market]".into(),
                        message: e.to_string(),
                    }
                })?,
            ),
            MarketMode::MonteCarlo { .. } => None,
        };
        Ok(Self {
            mode: &inputs.market,
            history,
        })
    }

    /// Path number `path` under `shocks`, into `out` (one entry per day of the horizon).
    pub(crate) fn fill(&self, path: usize, shocks: &Shocks, out: &mut [MarketDay]) {
        match (self.mode, &self.history) {
            (MarketMode::MonteCarlo { model, seed, .. }, _) => {
                model.path(*seed, path as u64, shocks, out)
            }
            (MarketMode::Backtest { .. }, Some(h)) => shocked_history(h, shocks, out),
            (MarketMode::Backtest { .. }, None) => unreachable!("backtest paths are loaded"),
        }
    }
}

/// The historical path with the market shocks applied.
fn shocked_history(h: &[MarketDay], shocks: &Shocks, out: &mut [MarketDay]) {
    for (t, (o, d)) in out.iter_mut().zip(h).enumerate() {
        // Faster hashrate growth means higher difficulty: a PH/s earns that much less.
        let dilution = (1.0 + shocks.hashrate_growth_shift).powf(-(t as f64) / 365.25);
        let fee_share = if d.btc_per_ph_day > 0.0 {
            d.fee_btc_per_ph_day / d.btc_per_ph_day
        } else {
            0.0
        };
        let fee = d.fee_btc_per_ph_day * shocks.fee_factor;
        let mut subsidy = d.btc_per_ph_day * (1.0 - fee_share);
        if shocks.ignore_halving && d.subsidy_per_block_btc > 0.0 {
            subsidy *= h[0].subsidy_per_block_btc / d.subsidy_per_block_btc;
        }
        *o = MarketDay {
            price_usd: d.price_usd * shocks.price_factor,
            btc_per_ph_day: (subsidy + fee) * dilution,
            fee_btc_per_ph_day: fee,
            ..*d
        };
    }
}

/// Every candidate at every size (and the size asked for) through the twin, in parallel.
/// Returns the designs and the size of each.
pub(crate) fn dispatch_designs(
    inputs: &Inputs,
    site: &dispatch::Site,
    progress: Progress,
) -> Result<(Vec<Dispatch>, Vec<f64>), StudyError> {
    let mut sizes = inputs.sizes_mw.clone();
    if let Some(mw) = inputs.installed_mw
        && !sizes.iter().any(|s| (s - mw).abs() < 1e-9)
    {
        sizes.push(mw);
        sizes.sort_by(f64::total_cmp);
    }
    let jobs: Vec<(usize, f64)> = (0..inputs.candidates.len())
        .flat_map(|c| sizes.iter().map(move |&s| (c, s)))
        .collect();
    let done = AtomicUsize::new(0);
    progress(Stage::Dispatch, 0.0);
    let designs: Vec<Dispatch> = jobs
        .par_iter()
        .map(|&(c, mw)| {
            let d = dispatch(site, c, &inputs.candidates[c], mw, 1.0);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(Stage::Dispatch, n as f64 / jobs.len() as f64);
            d
        })
        .collect::<Result<_, _>>()?;
    Ok((designs, jobs.iter().map(|j| j.1).collect()))
}

/// The sweep's result: each design's capex and NPVs, the chosen design, the table's rows.
pub(crate) struct Sweep {
    pub capex: Vec<(f64, f64)>,
    pub chosen: usize,
    pub rows: Vec<SweepRow>,
}

/// Progress is reported every this many paths.
fn progress_step(paths: usize) -> usize {
    (paths / 100).max(1)
}

/// Every design on every path; the design with the highest median NPV is chosen (among those
/// of the size asked for, if one was).
pub(crate) fn sweep(
    inputs: &Inputs,
    designs: &[Dispatch],
    sizes: &[f64],
    source: &PathSource,
    base: &Economics,
    progress: Progress,
) -> Sweep {
    let (paths, horizon) = (inputs.paths(), inputs.horizon_days());
    let capex: Vec<(f64, f64)> = designs
        .iter()
        .map(|d| capex_of(d, &inputs.candidates[d.candidate], base))
        .collect();
    let done = AtomicUsize::new(0);
    let step = progress_step(paths);
    let npvs: Vec<Vec<f64>> = (0..paths)
        .into_par_iter()
        .map_init(
            || vec![MarketDay::default(); horizon],
            |buf, p| {
                source.fill(p, &Shocks::default(), buf);
                let row = (designs.iter().zip(&capex))
                    .map(|(d, &(hw, infra))| {
                        evaluate(d, hw, infra, base, 1.0, buf, None, None).npv_usd
                    })
                    .collect::<Vec<f64>>();
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    progress(Stage::Sweep, n as f64 / paths as f64);
                }
                row
            },
        )
        .collect();
    let per_design: Vec<Vec<f64>> = (0..designs.len())
        .map(|j| npvs.iter().map(|row| row[j]).collect())
        .collect();
    let medians: Vec<f64> = (per_design.iter())
        .map(|v| Percentiles::of(v).p50.unwrap_or(f64::NEG_INFINITY))
        .collect();
    let asked = |j: &usize| {
        inputs
            .installed_mw
            .is_none_or(|mw| (sizes[*j] - mw).abs() < 1e-9)
    };
    let chosen = (0..designs.len())
        .filter(asked)
        .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
        .expect("at least one design, and the asked size is in the sweep");
    let rows = (designs.iter().enumerate())
        .map(|(j, d)| sweep_row(inputs, d, capex[j], &per_design[j]))
        .collect();
    Sweep {
        capex,
        chosen,
        rows,
    }
}

fn sweep_row(inputs: &Inputs, d: &Dispatch, capex: (f64, f64), npvs: &[f64]) -> SweepRow {
    let c = &inputs.candidates[d.candidate];
    let years = d.days.len() as f64 / 365.25;
    SweepRow {
        model: c.model.model.clone(),
        firmware: c.firmware.key().into(),
        installed_mw: d.installed_mw,
        miners: d.miners,
        capex_usd: capex.0 + capex.1,
        capture_factor: d.capture_factor,
        utilisation: d.utilisation,
        absorbed_mwh_per_year: d.days.iter().map(|x| x.absorbed_mwh).sum::<f64>() / years,
        npv_usd: Percentiles::of(npvs),
        probability_of_loss: share(npvs, |x| x < 0.0),
    }
}

/// The chosen design on every path: each path's outcome, and the monthly revenue and
/// hashprice bands.
pub(crate) struct Detail {
    pub outcomes: Vec<PathOutcome>,
    pub npv: Vec<f64>,
    pub monthly: Vec<MonthBand>,
}

pub(crate) fn detail(
    inputs: &Inputs,
    d: &Dispatch,
    (hw, infra): (f64, f64),
    source: &PathSource,
    base: &Economics,
    progress: Progress,
) -> Detail {
    let (paths, horizon) = (inputs.paths(), inputs.horizon_days());
    let months = ((horizon as f64) / MONTH_DAYS).ceil() as usize;
    let done = AtomicUsize::new(0);
    let step = progress_step(paths);
    let detailed: Vec<(PathOutcome, Vec<f64>, Vec<f64>)> = (0..paths)
        .into_par_iter()
        .map_init(
            || (vec![MarketDay::default(); horizon], vec![0.0; months]),
            |(buf, cash), p| {
                source.fill(p, &Shocks::default(), buf);
                let mut revenue = vec![0.0; months];
                let o = evaluate(d, hw, infra, base, 1.0, buf, Some(&mut revenue), Some(cash));
                let hashprice = monthly_hashprice(buf, months);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    progress(Stage::Paths, n as f64 / paths as f64);
                }
                (o, revenue, hashprice)
            },
        )
        .collect();
    let outcomes: Vec<PathOutcome> = detailed.iter().map(|x| x.0).collect();
    let monthly = (0..months)
        .map(|k| MonthBand {
            month: k,
            revenue_usd: Percentiles::of(&detailed.iter().map(|x| x.1[k]).collect::<Vec<_>>()),
            hashprice_usd_per_ph_day: Percentiles::of(
                &detailed.iter().map(|x| x.2[k]).collect::<Vec<_>>(),
            ),
        })
        .collect();
    Detail {
        npv: outcomes.iter().map(|o| o.npv_usd).collect(),
        outcomes,
        monthly,
    }
}

/// A path's mean hashprice in each month.
fn monthly_hashprice(days: &[MarketDay], months: usize) -> Vec<f64> {
    let mut hashprice = vec![0.0; months];
    let mut counts = vec![0u32; months];
    for (t, m) in days.iter().enumerate() {
        let k = ((t as f64 / MONTH_DAYS) as usize).min(months - 1);
        hashprice[k] += m.hashprice_usd_per_ph_day();
        counts[k] += 1;
    }
    for (h, n) in hashprice.iter_mut().zip(&counts) {
        *h /= f64::from((*n).max(1));
    }
    hashprice
}

/// Gathers the stages' results into the report.
#[allow(clippy::too_many_arguments, reason = "one argument per stage's result")]
pub(crate) fn report(
    inputs: &Inputs,
    d: &Dispatch,
    base: &Economics,
    fleet_sweep: Vec<SweepRow>,
    detail: Detail,
    sensitivity: Vec<Sensitivity>,
    risks: Vec<Risk>,
    timings: Timings,
) -> StudyReport {
    let cand = &inputs.candidates[d.candidate];
    let (hw, infra) = capex_of(d, cand, base);
    let (horizon, paths) = (inputs.horizon_days(), inputs.paths());
    let Detail {
        outcomes,
        npv,
        monthly,
    } = detail;
    let mut sorted = npv.clone();
    sorted.sort_by(f64::total_cmp);
    let p05 = quantile_sorted(&sorted, 0.05);
    let tail = &sorted[..((sorted.len() as f64 * 0.05).ceil() as usize).max(1)];
    let shortfall = -(tail.iter().sum::<f64>() / tail.len() as f64);
    let breakevens: Vec<f64> = outcomes.iter().map(|o| o.breakeven_btc_usd).collect();
    let breakeven_range = Percentiles::of(&breakevens);
    let revenue_per_mwh: Vec<f64> = (outcomes.iter())
        .map(|o| o.revenue_usd / o.absorbed_mwh.max(1e-9))
        .collect();
    let alt_per_mwh = outcomes[0].alternative_usd / outcomes[0].absorbed_mwh.max(1e-9);
    // No IRR root in (-95 %, 1000 %): below it for a loss, above it for a gain.
    let irr: Vec<f64> = (outcomes.iter())
        .map(|o| {
            o.irr.unwrap_or(if o.npv_usd < 0.0 {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        })
        .collect();
    let payback: Vec<f64> = (outcomes.iter())
        .map(|o| o.payback_years.unwrap_or(f64::INFINITY))
        .collect();
    StudyReport {
        title: inputs.title.clone(),
        profile: inputs.profile.definition.clone(),
        profile_days: d.days.len(),
        alternative: inputs.alternative_label.clone(),
        horizon_years: inputs.finance.horizon_years,
        discount_rate: inputs.finance.discount_rate,
        sell_share: inputs.finance.sell_share,
        costs: inputs.costs,
        design: design(d, cand, (hw, infra)),
        npv_usd: Percentiles::of(&npv),
        irr: Percentiles::of(&irr),
        payback_years: Percentiles::of(&payback),
        probability_of_loss: share(&npv, |x| x < 0.0),
        value_at_risk_95_usd: (-p05).max(0.0),
        expected_shortfall_95_usd: shortfall.max(0.0),
        breakeven_btc_usd: breakeven_range.p50.unwrap_or(f64::INFINITY),
        breakeven_btc_usd_range: breakeven_range,
        breakeven_hashprice_usd_per_ph_day: breakeven_hashprice(d, hw, infra, base, horizon),
        capture_factor: d.capture_factor,
        utilisation: d.utilisation,
        revenue_usd_per_mwh: Percentiles::of(&revenue_per_mwh),
        alternative_usd_per_mwh: alt_per_mwh,
        fleet_sweep,
        sensitivity,
        risks,
        monthly,
        market: market_report(inputs, paths),
        paths: outcomes,
        chosen_dispatch: d.clone(),
        hourly_surplus_mw: dispatch::hourly_surplus_mw(&inputs.profile),
        attributions: inputs.attributions.clone(),
        timings_s: timings,
    }
}

fn design(d: &Dispatch, cand: &Candidate, (hw, infra): (f64, f64)) -> Design {
    let years = d.days.len() as f64 / 365.25;
    let sum = |f: &dyn Fn(&dispatch::DayDispatch) -> f64| d.days.iter().map(f).sum::<f64>() / years;
    Design {
        model: cand.model.model.clone(),
        firmware: cand.firmware.key().into(),
        installed_mw: d.installed_mw,
        miners: d.miners,
        simulated_miners: d.simulated_miners,
        hardware_usd: hw,
        infrastructure_usd: infra,
        usd_per_th: cand.usd_per_th,
        efficiency_j_per_th: cand.model.efficiency().0,
        absorbed_mwh_per_year: sum(&|x| x.absorbed_mwh),
        surplus_mwh_per_year: sum(&|x| x.surplus_mwh),
        import_mwh_per_year: sum(&|x| x.import_mwh),
        ph_days_per_year: sum(&|x| x.ph_days),
    }
}

fn market_report(inputs: &Inputs, paths: usize) -> MarketReport {
    let start_day = inputs.history.day(inputs.market_start()).ok();
    let (fit_from, fit_to, seed, mode) = match &inputs.market {
        MarketMode::MonteCarlo { model, seed, .. } => (
            Some(model.fit_window().0.to_string()),
            Some(model.fit_window().1.to_string()),
            Some(*seed),
            "monte-carlo",
        ),
        MarketMode::Backtest { .. } => (None, None, None, "backtest"),
    };
    let next_halving = inputs
        .history
        .next_halving_after(inputs.market_start())
        .ok();
    MarketReport {
        mode: mode.into(),
        start: inputs.market_start().to_string(),
        paths,
        seed,
        fit_from,
        fit_to,
        fit: inputs_fit(inputs),
        start_price_usd: start_day.map(|d| d.price_usd).unwrap_or(f64::NAN),
        start_hashprice_usd_per_ph_day: start_day
            .map(|d| d.hashprice_usd_per_ph_day())
            .unwrap_or(f64::NAN),
        next_halving: next_halving.map(|(h, date)| format!("block {h}, about {date}")),
    }
}
