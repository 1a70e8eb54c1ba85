//! The study's stages, in the order [`run`](crate::run) calls them: every design dispatched
//! through the twin, the market paths, the sweep (every design on every path), the chosen
//! design's paths in detail, and the report that gathers them.

use std::sync::atomic::{AtomicUsize, Ordering};

use hashsink_market::forward::{ForwardModel, MarketDay, Shocks, historical_path};
use rayon::prelude::*;

use crate::config::{Candidate, Inputs, MarketMode, PriceDrift, StudyError};
use crate::dispatch::{self, Dispatch, dispatch};
use crate::finance::{Economics, MONTH_DAYS, PathOutcome, breakeven_hashprice, evaluate};
use crate::report::{
    Design, DriftCase, MarketReport, MonthBand, Percentiles, Progress, Risk, Selection,
    Sensitivity, Stage, StudyReport, SweepRow, Timings, inputs_fit, quantile_sorted, share,
    verdict,
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

/// Market paths: drawn or historical. Paths `0..paths` are the ones reported; a Monte Carlo
/// study chooses its design on another set of the same size (`selection`), so that the figures
/// reported are not those the choice was made on.
pub(crate) struct PathSource<'a> {
    mode: &'a MarketMode,
    history: Option<Vec<MarketDay>>,
}

/// Which set of paths to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathSet {
    /// The paths the report shows.
    Reported,
    /// The paths the design is chosen on (the same ones for a backtest: it has one).
    Selection,
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

    /// Whether the selection paths differ from the reported ones.
    pub(crate) fn out_of_sample(&self) -> bool {
        matches!(self.mode, MarketMode::MonteCarlo { .. })
    }

    /// Path number `path` under `shocks`, into `out` (one entry per day of the horizon).
    pub(crate) fn fill(&self, path: usize, shocks: &Shocks, out: &mut [MarketDay]) {
        self.fill_from(PathSet::Reported, path, shocks, out);
    }

    /// Path number `path` of `set`.
    pub(crate) fn fill_from(
        &self,
        set: PathSet,
        path: usize,
        shocks: &Shocks,
        out: &mut [MarketDay],
    ) {
        match (self.mode, &self.history) {
            (
                MarketMode::MonteCarlo {
                    model, seed, paths, ..
                },
                _,
            ) => {
                let index = match set {
                    PathSet::Reported => path,
                    PathSet::Selection => paths + path,
                };
                model.path(*seed, index as u64, shocks, out)
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

/// The sweep's result: each design's capex and NPVs, the chosen design, the table's rows, and
/// how the choice was made.
pub(crate) struct Sweep {
    pub capex: Vec<(f64, f64)>,
    pub chosen: usize,
    pub rows: Vec<SweepRow>,
    pub selection: Selection,
}

/// Progress is reported every this many paths.
fn progress_step(paths: usize) -> usize {
    (paths / 100).max(1)
}

/// Every design on every path of both sets; the design with the highest median NPV on the
/// selection paths is chosen (among those of the size asked for, if one was), and the table and
/// the report show the reported paths.
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
    let sets: &[PathSet] = if source.out_of_sample() {
        &[PathSet::Reported, PathSet::Selection]
    } else {
        &[PathSet::Reported]
    };
    let jobs: Vec<(PathSet, usize)> = (sets.iter())
        .flat_map(|&set| (0..paths).map(move |p| (set, p)))
        .collect();
    let done = AtomicUsize::new(0);
    let step = progress_step(jobs.len());
    let npvs: Vec<Vec<f64>> = jobs
        .par_iter()
        .map_init(
            || vec![MarketDay::default(); horizon],
            |buf, &(set, p)| {
                source.fill_from(set, p, &Shocks::default(), buf);
                let row = (designs.iter().zip(&capex))
                    .map(|(d, &(hw, infra))| {
                        evaluate(d, hw, infra, base, 1.0, buf, None, None).npv_usd
                    })
                    .collect::<Vec<f64>>();
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    progress(Stage::Sweep, n as f64 / jobs.len() as f64);
                }
                row
            },
        )
        .collect();
    // Each design's NPVs on the reported paths and on the selection paths.
    let column = |j: usize, set: PathSet| -> Vec<f64> {
        (jobs.iter().zip(&npvs))
            .filter(|((s, _), _)| *s == set)
            .map(|(_, row)| row[j])
            .collect()
    };
    let reported: Vec<Vec<f64>> = (0..designs.len())
        .map(|j| column(j, PathSet::Reported))
        .collect();
    let selection_set = *sets.last().expect("one set at least");
    let median = |v: &[f64]| Percentiles::of(v).p50.unwrap_or(f64::NEG_INFINITY);
    let on_selection: Vec<f64> = (0..designs.len())
        .map(|j| median(&column(j, selection_set)))
        .collect();
    let on_reported: Vec<f64> = reported.iter().map(|v| median(v)).collect();
    let asked = |j: &usize| {
        inputs
            .installed_mw
            .is_none_or(|mw| (sizes[*j] - mw).abs() < 1e-9)
    };
    let best_on = |medians: &[f64]| {
        (0..designs.len())
            .filter(asked)
            .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
            .expect("at least one design, and the asked size is in the sweep")
    };
    let chosen = best_on(&on_selection);
    let in_sample = best_on(&on_reported);
    let name = |j: usize| {
        let c = &inputs.candidates[designs[j].candidate];
        format!("{:.1} MW of {}", designs[j].installed_mw, c.name())
    };
    let selection = Selection {
        out_of_sample: source.out_of_sample(),
        method: if source.out_of_sample() {
            format!(
                "the highest median NPV on {paths} paths drawn apart from the {paths} reported (path numbers {paths} to {})",
                2 * paths - 1
            )
        } else {
            "the highest NPV on the one historical path, which is also the path reported (in sample)".into()
        },
        chosen_npv_p50_on_selection_usd: on_selection[chosen],
        chosen_npv_p50_on_reported_usd: on_reported[chosen],
        in_sample_gap_usd: on_selection[chosen] - on_reported[chosen],
        in_sample_choice: (in_sample != chosen).then(|| name(in_sample)),
    };
    let rows = (designs.iter().enumerate())
        .map(|(j, d)| sweep_row(inputs, d, capex[j], &reported[j], on_selection[j]))
        .collect();
    Sweep {
        capex,
        chosen,
        rows,
        selection,
    }
}

/// A design's row: `npvs` on the reported paths, `selection_p50` its median on the others.
fn sweep_row(
    inputs: &Inputs,
    d: &Dispatch,
    capex: (f64, f64),
    npvs: &[f64],
    selection_p50: f64,
) -> SweepRow {
    let c = &inputs.candidates[d.candidate];
    let years = d.days.len() as f64 / 365.25;
    SweepRow {
        model: c.model.model.clone(),
        firmware: c.firmware.key().into(),
        installed_mw: d.installed_mw,
        max_draw_mw: d.max_draw_mw,
        miners: d.miners,
        capex_usd: capex.0 + capex.1,
        capture_factor: d.capture_factor,
        utilisation: d.utilisation,
        absorbed_mwh_per_year: d.days.iter().map(|x| x.absorbed_mwh).sum::<f64>() / years,
        npv_usd: Percentiles::of(npvs),
        npv_p50_on_selection_usd: selection_p50,
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

/// The chosen design under each price trend: the study's own (the verdict's), and whichever of
/// "no drift" and "the fitted drift" it is not, on the same path numbers. A backtest has none.
pub(crate) fn drift_cases(
    inputs: &Inputs,
    d: &Dispatch,
    (hw, infra): (f64, f64),
    base: &Economics,
    detail: &Detail,
) -> Vec<DriftCase> {
    let MarketMode::MonteCarlo {
        fitted,
        drift,
        paths,
        seed,
        ..
    } = &inputs.market
    else {
        return Vec::new();
    };
    let fitted_rate = fitted.summary().price_drift_per_year;
    let label = |drift: PriceDrift| match drift {
        PriceDrift::Fitted => format!("the fitted price drift ({:+.1} %/yr)", fitted_rate * 100.0),
        PriceDrift::Set(0.0) => "no price drift".to_string(),
        PriceDrift::Set(x) => format!("a price drift of {:+.1} %/yr", x * 100.0),
    };
    // The verdict's own trend is the detail pass (`model`): its outcomes are taken as they are.
    // The others are drawn on the same path numbers.
    let mut cases: Vec<(PriceDrift, Option<ForwardModel>)> = vec![(*drift, None)];
    if *drift != PriceDrift::Set(0.0) {
        let no_drift = fitted.as_ref().clone().with_drifts(Some(0.0), None);
        cases.push((PriceDrift::Set(0.0), Some(no_drift)));
    }
    if *drift != PriceDrift::Fitted {
        cases.push((PriceDrift::Fitted, Some(fitted.as_ref().clone())));
    }
    let horizon = inputs.horizon_days();
    cases
        .into_iter()
        .map(|(case, other)| {
            let basis = other.is_none();
            let outcomes: Vec<PathOutcome> = match other {
                None => detail.outcomes.clone(),
                Some(model) => (0..*paths)
                    .into_par_iter()
                    .map_init(
                        || vec![MarketDay::default(); horizon],
                        |buf, p| {
                            model.path(*seed, p as u64, &Shocks::default(), buf);
                            evaluate(d, hw, infra, base, 1.0, buf, None, None)
                        },
                    )
                    .collect(),
            };
            let npv: Vec<f64> = outcomes.iter().map(|o| o.npv_usd).collect();
            let breakeven: Vec<f64> = outcomes.iter().map(|o| o.breakeven_btc_usd).collect();
            let npv_usd = Percentiles::of(&npv);
            let probability_of_loss = share(&npv, |x| x < 0.0);
            DriftCase {
                label: label(case),
                price_drift_per_year: match case {
                    PriceDrift::Fitted => fitted_rate,
                    PriceDrift::Set(x) => x,
                },
                verdict_basis: basis,
                verdict: verdict(npv_usd.p50, probability_of_loss).to_string(),
                npv_usd,
                probability_of_loss,
                breakeven_btc_usd: Percentiles::of(&breakeven).p50.unwrap_or(f64::INFINITY),
            }
        })
        .collect()
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
    selection: Selection,
    drift_cases: Vec<DriftCase>,
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
    let probability_of_loss = share(&npv, |x| x < 0.0);
    let npv_usd = Percentiles::of(&npv);
    StudyReport {
        verdict: verdict(npv_usd.p50, probability_of_loss).to_string(),
        verdict_basis: verdict_basis(inputs, &drift_cases),
        drift_cases,
        selection,
        import_priced_at: match inputs.costs.import_usd_per_mwh {
            Some(t) => format!("the import tariff, {t:.1} USD/MWh"),
            None => format!(
                "the alternative price of the hour ({}), at least 0",
                inputs.alternative_label
            ),
        },
        title: inputs.title.clone(),
        profile: inputs.profile.definition.clone(),
        profile_days: d.days.len(),
        alternative: inputs.alternative_label.clone(),
        horizon_years: inputs.finance.horizon_years,
        discount_rate: inputs.finance.discount_rate,
        sell_share: inputs.finance.sell_share,
        costs: inputs.costs,
        design: design(d, cand, (hw, infra)),
        npv_usd,
        irr: Percentiles::of(&irr),
        payback_years: Percentiles::of(&payback),
        probability_of_loss,
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

/// What the verdict's paths assume, in words.
fn verdict_basis(inputs: &Inputs, cases: &[DriftCase]) -> String {
    match &inputs.market {
        MarketMode::Backtest { start } => format!("the historical market from {start}"),
        MarketMode::MonteCarlo { .. } => {
            let basis = cases.iter().find(|c| c.verdict_basis);
            format!(
                "{}, hashrate growth as fitted",
                basis.map_or("the study's price drift", |c| c.label.as_str())
            )
        }
    }
}

fn design(d: &Dispatch, cand: &Candidate, (hw, infra): (f64, f64)) -> Design {
    let years = d.days.len() as f64 / 365.25;
    let sum = |f: &dyn Fn(&dispatch::DayDispatch) -> f64| d.days.iter().map(f).sum::<f64>() / years;
    Design {
        model: cand.model.model.clone(),
        firmware: cand.firmware.key().into(),
        installed_mw: d.installed_mw,
        max_draw_mw: d.max_draw_mw,
        miners: d.miners,
        simulated_miners: d.simulated_miners,
        hardware_usd: hw,
        infrastructure_usd: infra,
        usd_per_th: cand.usd_per_th,
        efficiency_j_per_th: cand.model.efficiency().0,
        absorbed_mwh_per_year: sum(&|x| x.absorbed_mwh),
        surplus_mwh_per_year: sum(&|x| x.surplus_mwh),
        import_mwh_per_year: sum(&|x| x.import_mwh),
        import_usd_per_year: sum(&|x| x.import_usd),
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
