//! The feasibility and risk study behind `hashsink study`: should a site mine its surplus, with
//! which machines, how many MW, what it earns and what could go wrong.
//!
//! Pipeline: [`config`] validates the study file; [`dispatch`] runs each candidate fleet size on
//! the surplus profile through the twin with the daemon's controller; the market paths come
//! from `hashsink_market::forward` (Monte Carlo) or the history (backtest); [`finance`] turns a
//! design and a path into cash flows, NPV, IRR, payback and break-even. [`run`] sweeps the
//! designs on every path, details the best one (or the one asked for), and measures the
//! sensitivity and the risk register on the same paths (common random numbers), so differences
//! between runs are the inputs', not the dice's. Everything is a function of the study file and
//! its seed. Pure and parallel (rayon); no I/O beyond reading the study's own files.

pub mod config;
pub mod dispatch;
pub mod finance;
pub mod format;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hashsink_market::forward::{FitSummary, MarketDay, Shocks, historical_path};
use rayon::prelude::*;
use serde::Serialize;

use config::{Candidate, MarketMode};
pub use config::{Inputs, StudyError, load, parse};
use dispatch::{Dispatch, dispatch};
use finance::{Economics, MONTH_DAYS, PathOutcome, breakeven_hashprice, evaluate};

/// Where the study is, for a progress bar: (stage, share of the stage done).
pub type Progress<'a> = &'a (dyn Fn(Stage, f64) + Sync);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Stage {
    Dispatch,
    Sweep,
    Paths,
    Sensitivity,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Dispatch => "dispatch (twin)",
            Stage::Sweep => "fleet sweep",
            Stage::Paths => "Monte Carlo",
            Stage::Sensitivity => "sensitivity",
        }
    }
}

/// P10, P50 and P90 of a quantity over the paths (None where it is not reached, e.g. a payback
/// beyond the horizon).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub mean: Option<f64>,
}

impl Percentiles {
    /// Over `values`, where infinities stand for "never" or "beyond the range" (sorted at their
    /// end, and shown as None) and NaN for "never" (sorted last).
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values
            .iter()
            .map(|x| if x.is_nan() { f64::INFINITY } else { *x })
            .collect();
        v.sort_by(f64::total_cmp);
        let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let pick = |q: f64| {
            if v.is_empty() {
                return None;
            }
            let x = quantile_sorted(&v, q);
            x.is_finite().then_some(x)
        };
        Self {
            p10: pick(0.1),
            p50: pick(0.5),
            p90: pick(0.9),
            mean: (finite.len() == v.len() && !v.is_empty())
                .then(|| finite.iter().sum::<f64>() / finite.len() as f64),
        }
    }
}

/// Linear interpolation between order statistics (type 7).
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    if v.len() == 1 {
        return v[0];
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    if i + 1 >= v.len() {
        return v[v.len() - 1];
    }
    if frac == 0.0 {
        return v[i];
    }
    v[i] + (v[i + 1] - v[i]) * frac
}

/// One row of the fleet sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub model: String,
    pub firmware: String,
    pub installed_mw: f64,
    pub miners: u32,
    pub capex_usd: f64,
    pub capture_factor: f64,
    pub utilisation: f64,
    pub absorbed_mwh_per_year: f64,
    pub npv_usd: Percentiles,
    pub probability_of_loss: f64,
}

/// A tornado bar: the median NPV with one input moved down and up.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    pub parameter: String,
    pub low: String,
    pub high: String,
    pub npv_p50_low_usd: f64,
    pub npv_p50_high_usd: f64,
}

/// One entry of the risk register, with the exposure the study measured.
#[derive(Clone, Debug, Serialize)]
pub struct Risk {
    pub risk: String,
    pub scenario: String,
    /// Median NPV under the scenario minus the base median NPV (negative is a loss), USD.
    pub npv_change_usd: f64,
    pub measure: String,
    pub mitigation: String,
}

/// Monthly distribution across paths.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MonthBand {
    pub month: usize,
    pub revenue_usd: Percentiles,
    pub hashprice_usd_per_ph_day: Percentiles,
}

/// The design reported in detail.
#[derive(Clone, Debug, Serialize)]
pub struct Design {
    pub model: String,
    pub firmware: String,
    pub installed_mw: f64,
    pub miners: u32,
    pub simulated_miners: u32,
    pub hardware_usd: f64,
    pub infrastructure_usd: f64,
    pub usd_per_th: f64,
    pub efficiency_j_per_th: f64,
    /// Over the profile's span, before uptime.
    pub absorbed_mwh_per_year: f64,
    pub surplus_mwh_per_year: f64,
    pub import_mwh_per_year: f64,
    pub ph_days_per_year: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MarketReport {
    pub mode: String,
    pub start: String,
    pub paths: usize,
    pub seed: Option<u64>,
    pub fit_from: Option<String>,
    pub fit_to: Option<String>,
    pub fit: Option<FitSummary>,
    pub start_price_usd: f64,
    pub start_hashprice_usd_per_ph_day: f64,
    pub next_halving: Option<String>,
}

/// Everything the study found: what the JSON holds and the HTML shows.
#[derive(Clone, Debug, Serialize)]
pub struct StudyReport {
    pub title: String,
    pub profile: String,
    pub profile_days: usize,
    pub alternative: String,
    pub horizon_years: f64,
    pub discount_rate: f64,
    pub sell_share: f64,
    pub costs: config::Costs,
    pub design: Design,
    pub npv_usd: Percentiles,
    pub irr: Percentiles,
    pub payback_years: Percentiles,
    pub probability_of_loss: f64,
    /// The loss not exceeded in 95 % of paths (0 where the 5th percentile NPV is a gain), USD.
    pub value_at_risk_95_usd: f64,
    /// Mean loss in the worst 5 % of paths, USD.
    pub expected_shortfall_95_usd: f64,
    /// The flat BTC price at which a path's NPV is zero (coins sold as mined, the path's
    /// difficulty, fees and operating days): the median over the paths.
    pub breakeven_btc_usd: f64,
    pub breakeven_btc_usd_range: Percentiles,
    pub breakeven_hashprice_usd_per_ph_day: f64,
    /// Absorbed surplus over available surplus.
    pub capture_factor: f64,
    pub utilisation: f64,
    pub revenue_usd_per_mwh: Percentiles,
    pub alternative_usd_per_mwh: f64,
    pub fleet_sweep: Vec<SweepRow>,
    pub sensitivity: Vec<Sensitivity>,
    pub risks: Vec<Risk>,
    pub monthly: Vec<MonthBand>,
    pub market: MarketReport,
    /// Per path: NPV, IRR, payback, break-even (for the CSV and the histogram).
    #[serde(skip)]
    pub paths: Vec<PathOutcome>,
    #[serde(skip)]
    pub chosen_dispatch: Dispatch,
    /// Hourly surplus, MW, for the load duration curve.
    #[serde(skip)]
    pub hourly_surplus_mw: Vec<f64>,
    pub attributions: Vec<String>,
    pub timings_s: Timings,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    pub dispatch: f64,
    pub sweep: f64,
    pub paths: f64,
    pub sensitivity: f64,
    pub threads: usize,
}

/// One valuation of the sensitivity analysis or the risk register.
#[derive(Clone, Copy)]
struct Case<'a> {
    design: &'a Dispatch,
    econ: Economics,
    shocks: Shocks,
    energy: f64,
}

fn case(design: &Dispatch, econ: Economics, shocks: Shocks, energy: f64) -> Case<'_> {
    Case {
        design,
        econ,
        shocks,
        energy,
    }
}

/// The median NPV of each case over the first `paths` paths: one pass per distinct market
/// shock, each path drawn once and valued for every case that shares it.
fn median_npvs(
    cases: &[Case],
    source: &PathSource,
    cand: &Candidate,
    paths: usize,
    horizon: usize,
    progress: &(dyn Fn(f64) + Sync),
) -> Vec<f64> {
    let mut groups: Vec<(Shocks, Vec<usize>)> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == c.shocks) {
            Some(g) => g.1.push(i),
            None => groups.push((c.shocks, vec![i])),
        }
    }
    let mut medians = vec![f64::NAN; cases.len()];
    for (k, (shocks, members)) in groups.iter().enumerate() {
        let rows: Vec<Vec<f64>> = (0..paths)
            .into_par_iter()
            .map_init(
                || vec![MarketDay::default(); horizon],
                |buf, p| {
                    source.fill(p, shocks, buf);
                    members
                        .iter()
                        .map(|&i| {
                            let c = &cases[i];
                            let (hw, infra) = capex_of(c.design, cand, &c.econ);
                            evaluate(c.design, hw, infra, &c.econ, c.energy, buf, None, None)
                                .npv_usd
                        })
                        .collect()
                },
            )
            .collect();
        for (j, &i) in members.iter().enumerate() {
            let v: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            medians[i] = Percentiles::of(&v).p50.unwrap_or(f64::NAN);
        }
        progress((k + 1) as f64 / groups.len() as f64);
    }
    medians
}

/// Market paths: drawn or historical.
struct PathSource<'a> {
    mode: &'a MarketMode,
    history: Option<Vec<MarketDay>>,
}

impl PathSource<'_> {
    fn fill(&self, path: usize, shocks: &Shocks, out: &mut [MarketDay]) {
        match (self.mode, &self.history) {
            (MarketMode::MonteCarlo { model, seed, .. }, _) => {
                model.path(*seed, path as u64, shocks, out)
            }
            (MarketMode::Backtest { .. }, Some(h)) => {
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
            (MarketMode::Backtest { .. }, None) => unreachable!("backtest paths are loaded"),
        }
    }
}

fn economics(inputs: &Inputs) -> Economics {
    Economics {
        costs: inputs.costs,
        finance: inputs.finance,
        capex_factor: 1.0,
        stop_after_days: None,
    }
}

fn capex_of(d: &Dispatch, c: &Candidate, e: &Economics) -> (f64, f64) {
    finance::capex(d, c.usd_per_th, c.model.nameplate_hashrate.ths(), e)
}

/// Runs the study.
pub fn run(inputs: &Inputs, progress: Progress) -> Result<StudyReport, StudyError> {
    let threads = rayon::current_num_threads();
    let horizon = inputs.horizon_days();
    let paths = inputs.paths();
    let base = economics(inputs);

    // 1. Dispatch every design through the twin.
    let t0 = Instant::now();
    let mut sizes = inputs.sizes_mw.clone();
    if let Some(mw) = inputs.installed_mw {
        if !sizes.iter().any(|s| (s - mw).abs() < 1e-9) {
            sizes.push(mw);
            sizes.sort_by(f64::total_cmp);
        }
    }
    let jobs: Vec<(usize, f64)> = (0..inputs.candidates.len())
        .flat_map(|c| sizes.iter().map(move |&s| (c, s)))
        .collect();
    let controller = dispatch::study_controller();
    let site = dispatch::Site {
        profile: &inputs.profile,
        alternative: &inputs.alternative,
        dispatch_miners: inputs.dispatch_miners,
        controller: &controller,
    };
    let done = AtomicUsize::new(0);
    progress(Stage::Dispatch, 0.0);
    let designs: Vec<Dispatch> = jobs
        .par_iter()
        .map(|&(c, mw)| {
            let d = dispatch(&site, c, &inputs.candidates[c], mw, 1.0);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(Stage::Dispatch, n as f64 / jobs.len() as f64);
            d
        })
        .collect::<Result<_, _>>()?;
    let dispatch_s = t0.elapsed().as_secs_f64();

    // 2. The market paths.
    let source = PathSource {
        mode: &inputs.market,
        history: match &inputs.market {
            MarketMode::Backtest { start } => Some(
                historical_path(&inputs.history, *start, horizon).map_err(|e| StudyError {
                    origin: "[market]".into(),
                    message: e.to_string(),
                })?,
            ),
            MarketMode::MonteCarlo { .. } => None,
        },
    };
    let capex: Vec<(f64, f64)> = designs
        .iter()
        .map(|d| capex_of(d, &inputs.candidates[d.candidate], &base))
        .collect();

    // 3. The sweep: every design on every path.
    let t1 = Instant::now();
    let done = AtomicUsize::new(0);
    let step = (paths / 100).max(1);
    let npvs: Vec<Vec<f64>> = (0..paths)
        .into_par_iter()
        .map_init(
            || vec![MarketDay::default(); horizon],
            |buf, p| {
                source.fill(p, &Shocks::default(), buf);
                let row = designs
                    .iter()
                    .zip(&capex)
                    .map(|(d, &(hw, infra))| {
                        evaluate(d, hw, infra, &base, 1.0, buf, None, None).npv_usd
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
    let sweep_s = t1.elapsed().as_secs_f64();
    let per_design: Vec<Vec<f64>> = (0..designs.len())
        .map(|j| npvs.iter().map(|row| row[j]).collect())
        .collect();
    let medians: Vec<f64> = per_design
        .iter()
        .map(|v| Percentiles::of(v).p50.unwrap_or(f64::NEG_INFINITY))
        .collect();
    let chosen = match inputs.installed_mw {
        Some(mw) => (0..designs.len())
            .filter(|&j| (jobs[j].1 - mw).abs() < 1e-9)
            .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
            .expect("the asked size is in the sweep"),
        None => (0..designs.len())
            .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
            .expect("at least one design"),
    };
    let fleet_sweep: Vec<SweepRow> = designs
        .iter()
        .enumerate()
        .map(|(j, d)| {
            let c = &inputs.candidates[d.candidate];
            let years = d.days.len() as f64 / 365.25;
            SweepRow {
                model: c.model.model.clone(),
                firmware: c.firmware.key().into(),
                installed_mw: d.installed_mw,
                miners: d.miners,
                capex_usd: capex[j].0 + capex[j].1,
                capture_factor: d.capture_factor,
                utilisation: d.utilisation,
                absorbed_mwh_per_year: d.days.iter().map(|x| x.absorbed_mwh).sum::<f64>() / years,
                npv_usd: Percentiles::of(&per_design[j]),
                probability_of_loss: share(&per_design[j], |x| x < 0.0),
            }
        })
        .collect();

    // 4. The chosen design in detail.
    let t2 = Instant::now();
    let d = &designs[chosen];
    let cand = &inputs.candidates[d.candidate];
    let (hw, infra) = capex[chosen];
    let months = ((horizon as f64) / MONTH_DAYS).ceil() as usize;
    let done = AtomicUsize::new(0);
    let detailed: Vec<(PathOutcome, Vec<f64>, Vec<f64>)> = (0..paths)
        .into_par_iter()
        .map_init(
            || (vec![MarketDay::default(); horizon], vec![0.0; months]),
            |(buf, cash), p| {
                source.fill(p, &Shocks::default(), buf);
                let mut revenue = vec![0.0; months];
                let o = evaluate(
                    d,
                    hw,
                    infra,
                    &base,
                    1.0,
                    buf,
                    Some(&mut revenue),
                    Some(cash),
                );
                let mut hashprice = vec![0.0; months];
                let mut counts = vec![0u32; months];
                for (t, m) in buf.iter().enumerate() {
                    let k = ((t as f64 / MONTH_DAYS) as usize).min(months - 1);
                    hashprice[k] += m.hashprice_usd_per_ph_day();
                    counts[k] += 1;
                }
                for (h, n) in hashprice.iter_mut().zip(&counts) {
                    *h /= f64::from((*n).max(1));
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    progress(Stage::Paths, n as f64 / paths as f64);
                }
                (o, revenue, hashprice)
            },
        )
        .collect();
    let paths_s = t2.elapsed().as_secs_f64();
    let outcomes: Vec<PathOutcome> = detailed.iter().map(|x| x.0).collect();
    let npv: Vec<f64> = outcomes.iter().map(|o| o.npv_usd).collect();
    let monthly: Vec<MonthBand> = (0..months)
        .map(|k| MonthBand {
            month: k,
            revenue_usd: Percentiles::of(&detailed.iter().map(|x| x.1[k]).collect::<Vec<_>>()),
            hashprice_usd_per_ph_day: Percentiles::of(
                &detailed.iter().map(|x| x.2[k]).collect::<Vec<_>>(),
            ),
        })
        .collect();
    drop(detailed);
    let npv_pct = Percentiles::of(&npv);
    let mut sorted = npv.clone();
    sorted.sort_by(f64::total_cmp);
    let p05 = quantile_sorted(&sorted, 0.05);
    let tail = &sorted[..((sorted.len() as f64 * 0.05).ceil() as usize).max(1)];
    let shortfall = -(tail.iter().sum::<f64>() / tail.len() as f64);
    let breakevens: Vec<f64> = outcomes.iter().map(|o| o.breakeven_btc_usd).collect();
    let breakeven_range = Percentiles::of(&breakevens);
    let revenue_per_mwh: Vec<f64> = outcomes
        .iter()
        .map(|o| o.revenue_usd / o.absorbed_mwh.max(1e-9))
        .collect();
    let alt_per_mwh = outcomes[0].alternative_usd / outcomes[0].absorbed_mwh.max(1e-9);

    // 5. Sensitivity and risks on the same paths (at most 2,000 of them).
    let t3 = Instant::now();
    let with_costs = |f: &dyn Fn(&mut Economics)| {
        let mut e = base;
        f(&mut e);
        e
    };
    let no_shock = Shocks::default();
    // Curtailment: the plant keeps a fifth more of its surplus; the fleet is dispatched again.
    let curtailed = dispatch(&site, d.candidate, cand, d.installed_mw, 0.8)?;
    let tornado: Vec<(String, String, String, Case, Case)> = vec![
        (
            "BTC price".into(),
            "-30 %".into(),
            "+30 %".into(),
            case(
                d,
                base,
                Shocks {
                    price_factor: 0.7,
                    ..no_shock
                },
                1.0,
            ),
            case(
                d,
                base,
                Shocks {
                    price_factor: 1.3,
                    ..no_shock
                },
                1.0,
            ),
        ),
        (
            "Network hashrate growth".into(),
            "+20 %/yr".into(),
            "-20 %/yr".into(),
            case(
                d,
                base,
                Shocks {
                    hashrate_growth_shift: 0.2,
                    ..no_shock
                },
                1.0,
            ),
            case(
                d,
                base,
                Shocks {
                    hashrate_growth_shift: -0.2,
                    ..no_shock
                },
                1.0,
            ),
        ),
        (
            "Fees per block".into(),
            "x0.5".into(),
            "x2".into(),
            case(
                d,
                base,
                Shocks {
                    fee_factor: 0.5,
                    ..no_shock
                },
                1.0,
            ),
            case(
                d,
                base,
                Shocks {
                    fee_factor: 2.0,
                    ..no_shock
                },
                1.0,
            ),
        ),
        (
            "Capex".into(),
            "+20 %".into(),
            "-20 %".into(),
            case(d, with_costs(&|e| e.capex_factor = 1.2), no_shock, 1.0),
            case(d, with_costs(&|e| e.capex_factor = 0.8), no_shock, 1.0),
        ),
        (
            "Uptime".into(),
            format!("{:.0} %", (base.costs.uptime - 0.1).max(0.05) * 100.0),
            format!("{:.0} %", (base.costs.uptime + 0.02).min(1.0) * 100.0),
            case(
                d,
                with_costs(&|e| e.costs.uptime = (e.costs.uptime - 0.1).max(0.05)),
                no_shock,
                1.0,
            ),
            case(
                d,
                with_costs(&|e| e.costs.uptime = (e.costs.uptime + 0.02).min(1.0)),
                no_shock,
                1.0,
            ),
        ),
        (
            "Hardware failure rate".into(),
            format!(
                "{:.1} %/yr",
                (base.costs.failure_rate_per_year * 2.0).max(0.05) * 100.0
            ),
            format!("{:.1} %/yr", base.costs.failure_rate_per_year * 50.0),
            case(
                d,
                with_costs(&|e| {
                    e.costs.failure_rate_per_year = (e.costs.failure_rate_per_year * 2.0).max(0.05)
                }),
                no_shock,
                1.0,
            ),
            case(
                d,
                with_costs(&|e| e.costs.failure_rate_per_year *= 0.5),
                no_shock,
                1.0,
            ),
        ),
        (
            "Surplus energy".into(),
            "-20 %".into(),
            "+10 %".into(),
            case(d, base, no_shock, 0.8),
            case(d, base, no_shock, 1.1),
        ),
    ];
    let half = horizon / 2;
    // The base and the risk register's scenarios, then the tornado's low and high cases.
    let mut cases = vec![
        case(d, base, no_shock, 1.0),
        case(
            d,
            base,
            Shocks {
                ignore_halving: true,
                ..no_shock
            },
            1.0,
        ),
        case(
            d,
            Economics {
                stop_after_days: Some(half),
                ..base
            },
            no_shock,
            1.0,
        ),
        case(&curtailed, base, no_shock, 1.0),
    ];
    for (_, _, _, lo, hi) in &tornado {
        cases.push(*lo);
        cases.push(*hi);
    }
    let medians = median_npvs(&cases, &source, cand, paths.min(2000), horizon, &|done| {
        progress(Stage::Sensitivity, done)
    });
    let (base_sens, halving_free, stopped, curtailed_npv) =
        (medians[0], medians[1], medians[2], medians[3]);
    let mut sensitivity: Vec<Sensitivity> = tornado
        .into_iter()
        .enumerate()
        .map(|(i, (name, lo, hi, _, _))| Sensitivity {
            parameter: name,
            low: lo,
            high: hi,
            npv_p50_low_usd: medians[4 + 2 * i],
            npv_p50_high_usd: medians[5 + 2 * i],
        })
        .collect();
    sensitivity.sort_by(|a, b| {
        let span = |s: &Sensitivity| (s.npv_p50_high_usd - s.npv_p50_low_usd).abs();
        span(b).total_cmp(&span(a))
    });
    let find = |name: &str| {
        sensitivity
            .iter()
            .find(|s| s.parameter == name)
            .expect("case")
    };
    let daily_revenue = npv_pct
        .p50
        .map(|_| {
            outcomes.iter().map(|o| o.revenue_usd).sum::<f64>()
                / outcomes.len() as f64
                / horizon as f64
        })
        .unwrap_or(0.0);
    let next_halving = inputs
        .history
        .next_halving_after(inputs.market_start())
        .ok();
    let price = find("BTC price");
    let growth = find("Network hashrate growth");
    let failure = find("Hardware failure rate");
    let risks = vec![
        Risk {
            risk: "BTC price".into(),
            scenario: "price 30 % lower on every day of every path".into(),
            npv_change_usd: price.npv_p50_low_usd - base_sens,
            measure: format!(
                "probability of loss {:.0} %; break-even BTC price {:.0} USD (P10-P90 {:.0}-{:.0})",
                share(&npv, |x| x < 0.0) * 100.0,
                breakeven_range.p50.unwrap_or(f64::NAN),
                breakeven_range.p10.unwrap_or(f64::NAN),
                breakeven_range.p90.unwrap_or(f64::NAN)
            ),
            mitigation: "sell daily or hedge forward; size for the P10 case, not the P50".into(),
        },
        Risk {
            risk: "Difficulty".into(),
            scenario: "network hashrate growing 20 %/yr faster than the fitted history".into(),
            npv_change_usd: growth.npv_p50_low_usd - base_sens,
            measure: format!(
                "fitted hashrate growth {:.0} %/yr",
                inputs_fit(inputs)
                    .map(|f| f.hashrate_growth_per_year * 100.0)
                    .unwrap_or(f64::NAN)
            ),
            mitigation: "buy efficient machines (J/TH), keep the payback short".into(),
        },
        Risk {
            risk: "Halving".into(),
            scenario: match next_halving {
                Some((h, date)) => {
                    format!("subsidy halves at block {h} (about {date}), against no halving")
                }
                None => "subsidy halving".into(),
            },
            npv_change_usd: base_sens - halving_free,
            measure: format!(
                "share of the horizon after it: {:.0} %",
                next_halving
                    .map(|(_, date)| {
                        let days = (date - inputs.market_start()).get_days() as f64;
                        ((horizon as f64 - days) / horizon as f64).clamp(0.0, 1.0) * 100.0
                    })
                    .unwrap_or(0.0)
            ),
            mitigation:
                "plan the payback before the halving; fees are about 1 % of revenue, no cushion"
                    .into(),
        },
        Risk {
            risk: "Regulation".into(),
            scenario: format!(
                "mining stopped by law after {:.1} years, machines not resold",
                half as f64 / 365.25
            ),
            npv_change_usd: stopped - base_sens,
            measure: "not modelled as a probability: the loss if it happens".into(),
            mitigation: "permits and grid agreements before capex; containers that can move".into(),
        },
        Risk {
            risk: "Hardware".into(),
            scenario: failure.low.clone() + " failure rate",
            npv_change_usd: failure.npv_p50_low_usd - base_sens,
            measure: format!("hardware is {:.0} % of capex", hw / (hw + infra) * 100.0),
            mitigation: "spares pool, warranty, dust and heat management".into(),
        },
        Risk {
            risk: "Curtailment".into(),
            scenario: "20 % less surplus (the plant finds other buyers), fleet dispatched again"
                .into(),
            npv_change_usd: curtailed_npv - base_sens,
            measure: format!(
                "absorbed {:.0} -> {:.0} MWh/yr",
                d.days.iter().map(|x| x.absorbed_mwh).sum::<f64>() * 365.25 / d.days.len() as f64,
                curtailed.days.iter().map(|x| x.absorbed_mwh).sum::<f64>() * 365.25
                    / curtailed.days.len() as f64
            ),
            mitigation: "contract the surplus volume; size the fleet below the surplus peak".into(),
        },
        Risk {
            risk: "Counterparty".into(),
            scenario: "the pool fails holding one day of earnings (daily payouts)".into(),
            npv_change_usd: -daily_revenue,
            measure: if inputs.finance.sell_share < 1.0 {
                let held: Vec<f64> = outcomes
                    .iter()
                    .map(|o| o.btc_mined * (1.0 - inputs.finance.sell_share))
                    .collect();
                format!(
                    "{daily_revenue:.0} USD of earnings sit with the pool at any time; coins held to the horizon: P50 {:.2} BTC in custody",
                    Percentiles::of(&held).p50.unwrap_or(0.0)
                )
            } else {
                format!("{daily_revenue:.0} USD of earnings sit with the pool at any time")
            },
            mitigation:
                "FPPS pool with daily payouts to your own keys; split hashrate across two pools"
                    .into(),
        },
    ];
    let sensitivity_s = t3.elapsed().as_secs_f64();

    let years = d.days.len() as f64 / 365.25;
    let sum = |f: &dyn Fn(&dispatch::DayDispatch) -> f64| d.days.iter().map(f).sum::<f64>() / years;
    let start_day = inputs.history.day(inputs.market_start()).ok();
    let (fit, fit_from, fit_to, seed, mode) = match &inputs.market {
        MarketMode::MonteCarlo { model, seed, .. } => (
            Some(model.summary()),
            Some(model.fit_window().0.to_string()),
            Some(model.fit_window().1.to_string()),
            Some(*seed),
            "monte-carlo",
        ),
        MarketMode::Backtest { .. } => (None, None, None, None, "backtest"),
    };
    Ok(StudyReport {
        title: inputs.title.clone(),
        profile: inputs.profile.definition.clone(),
        profile_days: d.days.len(),
        alternative: inputs.alternative_label.clone(),
        horizon_years: inputs.finance.horizon_years,
        discount_rate: inputs.finance.discount_rate,
        sell_share: inputs.finance.sell_share,
        costs: inputs.costs,
        design: Design {
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
        },
        npv_usd: npv_pct,
        irr: Percentiles::of(
            &outcomes
                .iter()
                // No root in (-95 %, 1000 %): below it for a loss, above it for a gain.
                .map(|o| {
                    o.irr.unwrap_or(if o.npv_usd < 0.0 {
                        f64::NEG_INFINITY
                    } else {
                        f64::INFINITY
                    })
                })
                .collect::<Vec<_>>(),
        ),
        payback_years: Percentiles::of(
            &outcomes
                .iter()
                .map(|o| o.payback_years.unwrap_or(f64::INFINITY))
                .collect::<Vec<_>>(),
        ),
        probability_of_loss: share(&npv, |x| x < 0.0),
        value_at_risk_95_usd: (-p05).max(0.0),
        expected_shortfall_95_usd: shortfall.max(0.0),
        breakeven_btc_usd: breakeven_range.p50.unwrap_or(f64::INFINITY),
        breakeven_btc_usd_range: breakeven_range,
        breakeven_hashprice_usd_per_ph_day: breakeven_hashprice(d, hw, infra, &base, horizon),
        capture_factor: d.capture_factor,
        utilisation: d.utilisation,
        revenue_usd_per_mwh: Percentiles::of(&revenue_per_mwh),
        alternative_usd_per_mwh: alt_per_mwh,
        fleet_sweep,
        sensitivity,
        risks,
        monthly,
        market: MarketReport {
            mode: mode.into(),
            start: inputs.market_start().to_string(),
            paths,
            seed,
            fit_from,
            fit_to,
            fit,
            start_price_usd: start_day.map(|d| d.price_usd).unwrap_or(f64::NAN),
            start_hashprice_usd_per_ph_day: start_day
                .map(|d| d.hashprice_usd_per_ph_day())
                .unwrap_or(f64::NAN),
            next_halving: next_halving.map(|(h, date)| format!("block {h}, about {date}")),
        },
        paths: outcomes,
        chosen_dispatch: d.clone(),
        hourly_surplus_mw: dispatch::hourly_surplus_mw(&inputs.profile),
        attributions: inputs.attributions.clone(),
        timings_s: Timings {
            dispatch: dispatch_s,
            sweep: sweep_s,
            paths: paths_s,
            sensitivity: sensitivity_s,
            threads,
        },
    })
}

fn inputs_fit(inputs: &Inputs) -> Option<FitSummary> {
    match &inputs.market {
        MarketMode::MonteCarlo { model, .. } => Some(model.summary()),
        MarketMode::Backtest { .. } => None,
    }
}

fn share(v: &[f64], f: impl Fn(f64) -> bool) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().filter(|x| f(**x)).count() as f64 / v.len() as f64
}
