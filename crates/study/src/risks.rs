//! The sensitivity analysis (the tornado, a table of low and high cases per parameter) and the
//! risk register, valued on the same paths as the base case (at most 2,000 of them) so that
//! their differences are the inputs', not the dice's.

use hashsink_market::forward::{MarketDay, Shocks};
use rayon::prelude::*;

use crate::config::{Candidate, Costs, Inputs};
use crate::dispatch::Dispatch;
use crate::finance::{Economics, evaluate};
use crate::report::{Percentiles, Progress, Risk, Sensitivity, Stage, inputs_fit, share};
use crate::stages::{Detail, PathSource, capex_of};

/// Paths the sensitivity and risk cases are valued on, at most.
const CASE_PATHS: usize = 2000;

/// One valuation of the sensitivity analysis or the risk register.
#[derive(Clone, Copy)]
struct Case<'a> {
    design: &'a Dispatch,
    econ: Economics,
    shocks: Shocks,
    /// Share of the surplus energy the design gets (1: as dispatched).
    energy: f64,
}

/// How a tornado case departs from the base.
#[derive(Clone, Copy)]
enum Change {
    Market(Shocks),
    Costs(fn(&mut Economics)),
    Energy(f64),
}

/// One bar of the tornado: a parameter, its low and high values as shown, and the change each
/// makes.
struct Bar {
    parameter: &'static str,
    low: (String, Change),
    high: (String, Change),
}

fn shock(f: impl Fn(&mut Shocks)) -> Change {
    let mut s = Shocks::default();
    f(&mut s);
    Change::Market(s)
}

fn uptime_low(c: &Costs) -> f64 {
    (c.uptime - 0.1).max(0.05)
}

fn uptime_high(c: &Costs) -> f64 {
    (c.uptime + 0.02).min(1.0)
}

fn failure_high(c: &Costs) -> f64 {
    (c.failure_rate_per_year * 2.0).max(0.05)
}

/// The tornado's parameters, worst case first in each pair.
fn tornado(costs: &Costs) -> Vec<Bar> {
    let pct = |v: f64| format!("{:.0} %", v * 100.0);
    vec![
        Bar {
            parameter: "BTC price",
            low: ("-30 %".into(), shock(|s| s.price_factor = 0.7)),
            high: ("+30 %".into(), shock(|s| s.price_factor = 1.3)),
        },
        Bar {
            parameter: "Network hashrate growth",
            low: ("+20 %/yr".into(), shock(|s| s.hashrate_growth_shift = 0.2)),
            high: ("-20 %/yr".into(), shock(|s| s.hashrate_growth_shift = -0.2)),
        },
        Bar {
            parameter: "Fees per block",
            low: ("x0.5".into(), shock(|s| s.fee_factor = 0.5)),
            high: ("x2".into(), shock(|s| s.fee_factor = 2.0)),
        },
        Bar {
            parameter: "Capex",
            low: ("+20 %".into(), Change::Costs(|e| e.capex_factor = 1.2)),
            high: ("-20 %".into(), Change::Costs(|e| e.capex_factor = 0.8)),
        },
        Bar {
            parameter: "Uptime",
            low: (
                pct(uptime_low(costs)),
                Change::Costs(|e| e.costs.uptime = uptime_low(&e.costs)),
            ),
            high: (
                pct(uptime_high(costs)),
                Change::Costs(|e| e.costs.uptime = uptime_high(&e.costs)),
            ),
        },
        Bar {
            parameter: "Hardware failure rate",
            low: (
                format!("{:.1} %/yr", failure_high(costs) * 100.0),
                Change::Costs(|e| e.costs.failure_rate_per_year = failure_high(&e.costs)),
            ),
            high: (
                format!("{:.1} %/yr", costs.failure_rate_per_year * 50.0),
                Change::Costs(|e| e.costs.failure_rate_per_year *= 0.5),
            ),
        },
        Bar {
            parameter: "Surplus energy",
            low: ("-20 %".into(), Change::Energy(0.8)),
            high: ("+10 %".into(), Change::Energy(1.1)),
        },
    ]
}

impl<'a> Case<'a> {
    fn base(design: &'a Dispatch, econ: Economics) -> Self {
        Self {
            design,
            econ,
            shocks: Shocks::default(),
            energy: 1.0,
        }
    }

    fn with(self, change: Change) -> Self {
        match change {
            Change::Market(shocks) => Self { shocks, ..self },
            Change::Costs(f) => {
                let mut econ = self.econ;
                f(&mut econ);
                Self { econ, ..self }
            }
            Change::Energy(energy) => Self { energy, ..self },
        }
    }
}

/// The tornado's rows (widest first) and the medians the risk register compares with.
pub(crate) struct SensitivityResult {
    pub rows: Vec<Sensitivity>,
    /// Median NPVs of the base, without the halving, stopped half way, and curtailed.
    base: f64,
    halving_free: f64,
    stopped: f64,
    curtailed: f64,
}

pub(crate) fn sensitivity(
    inputs: &Inputs,
    d: &Dispatch,
    curtailed: &Dispatch,
    source: &PathSource,
    base: &Economics,
    progress: Progress,
) -> SensitivityResult {
    let horizon = inputs.horizon_days();
    let bars = tornado(&base.costs);
    let at_base = Case::base(d, *base);
    let no_halving = Shocks {
        ignore_halving: true,
        ..Shocks::default()
    };
    let stopped = Economics {
        stop_after_days: Some(horizon / 2),
        ..*base
    };
    // The base and the risk register's scenarios, then the tornado's low and high cases.
    let mut cases = vec![
        at_base,
        at_base.with(Change::Market(no_halving)),
        Case::base(d, stopped),
        Case::base(curtailed, *base),
    ];
    for bar in &bars {
        cases.push(at_base.with(bar.low.1));
        cases.push(at_base.with(bar.high.1));
    }
    let cand = &inputs.candidates[d.candidate];
    let paths = inputs.paths().min(CASE_PATHS);
    let medians = median_npvs(&cases, source, cand, paths, horizon, &|done| {
        progress(Stage::Sensitivity, done)
    });
    let mut rows: Vec<Sensitivity> = (bars.into_iter().enumerate())
        .map(|(i, bar)| Sensitivity {
            parameter: bar.parameter.into(),
            low: bar.low.0,
            high: bar.high.0,
            npv_p50_low_usd: medians[4 + 2 * i],
            npv_p50_high_usd: medians[5 + 2 * i],
        })
        .collect();
    rows.sort_by(|a, b| {
        let span = |s: &Sensitivity| (s.npv_p50_high_usd - s.npv_p50_low_usd).abs();
        span(b).total_cmp(&span(a))
    });
    SensitivityResult {
        rows,
        base: medians[0],
        halving_free: medians[1],
        stopped: medians[2],
        curtailed: medians[3],
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
                    (members.iter())
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

/// The risk register: each risk's scenario, its effect on the median NPV, a measure and a
/// mitigation.
pub(crate) fn register(
    inputs: &Inputs,
    d: &Dispatch,
    curtailed: &Dispatch,
    sens: &SensitivityResult,
    detail: &Detail,
    (hw, infra): (f64, f64),
) -> Vec<Risk> {
    let horizon = inputs.horizon_days();
    let find = |name: &str| {
        (sens.rows.iter())
            .find(|s| s.parameter == name)
            .expect("every tornado parameter has a row")
    };
    let (price, growth, failure) = (
        find("BTC price"),
        find("Network hashrate growth"),
        find("Hardware failure rate"),
    );
    let outcomes = &detail.outcomes;
    let breakeven: Vec<f64> = outcomes.iter().map(|o| o.breakeven_btc_usd).collect();
    let breakeven = Percentiles::of(&breakeven);
    let daily_revenue = Percentiles::of(&detail.npv)
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
    let absorbed_per_year = |x: &Dispatch| {
        x.days.iter().map(|x| x.absorbed_mwh).sum::<f64>() * 365.25 / x.days.len() as f64
    };
    vec![
        Risk {
            risk: "BTC price".into(),
            scenario: "price 30 % lower on every day of every path".into(),
            npv_change_usd: price.npv_p50_low_usd - sens.base,
            measure: format!(
                "probability of loss {:.0} %; break-even BTC price {:.0} USD (P10-P90 {:.0}-{:.0})",
                share(&detail.npv, |x| x < 0.0) * 100.0,
                breakeven.p50.unwrap_or(f64::NAN),
                breakeven.p10.unwrap_or(f64::NAN),
                breakeven.p90.unwrap_or(f64::NAN)
            ),
            mitigation: "sell daily or hedge forward; size for the P10 case, not the P50".into(),
        },
        Risk {
            risk: "Difficulty".into(),
            scenario: "network hashrate growing 20 %/yr faster than the fitted history".into(),
            npv_change_usd: growth.npv_p50_low_usd - sens.base,
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
            npv_change_usd: sens.base - sens.halving_free,
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
                (horizon / 2) as f64 / 365.25
            ),
            npv_change_usd: sens.stopped - sens.base,
            measure: "not modelled as a probability: the loss if it happens".into(),
            mitigation: "permits and grid agreements before capex; containers that can move".into(),
        },
        Risk {
            risk: "Hardware".into(),
            scenario: failure.low.clone() + " failure rate",
            npv_change_usd: failure.npv_p50_low_usd - sens.base,
            measure: format!("hardware is {:.0} % of capex", hw / (hw + infra) * 100.0),
            mitigation: "spares pool, warranty, dust and heat management".into(),
        },
        Risk {
            risk: "Curtailment".into(),
            scenario: "20 % less surplus (the plant finds other buyers), fleet dispatched again"
                .into(),
            npv_change_usd: sens.curtailed - sens.base,
            measure: format!(
                "absorbed {:.0} -> {:.0} MWh/yr",
                absorbed_per_year(d),
                absorbed_per_year(curtailed)
            ),
            mitigation: "contract the surplus volume; size the fleet below the surplus peak".into(),
        },
        Risk {
            risk: "Counterparty".into(),
            scenario: "the pool fails holding one day of earnings (daily payouts)".into(),
            npv_change_usd: -daily_revenue,
            measure: custody(inputs, detail, daily_revenue),
            mitigation:
                "FPPS pool with daily payouts to your own keys; split hashrate across two pools"
                    .into(),
        },
    ]
}

/// What sits with the pool, and the coins held to the horizon if not all are sold.
fn custody(inputs: &Inputs, detail: &Detail, daily_revenue: f64) -> String {
    let sell = inputs.finance.sell_share;
    if sell >= 1.0 {
        return format!("{daily_revenue:.0} USD of earnings sit with the pool at any time");
    }
    let held: Vec<f64> = (detail.outcomes.iter())
        .map(|o| o.btc_mined * (1.0 - sell))
        .collect();
    format!(
        "{daily_revenue:.0} USD of earnings sit with the pool at any time; coins held to the horizon: P50 {:.2} BTC in custody",
        Percentiles::of(&held).p50.unwrap_or(0.0)
    )
}
