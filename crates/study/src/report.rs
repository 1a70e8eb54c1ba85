//! What the study reports: the stages it goes through, percentiles, and the report the JSON,
//! the CSVs and the HTML show; with the small statistics the stages share.

use hashsink_market::forward::FitSummary;
use serde::Serialize;

use crate::config::{Costs, Inputs, MarketMode};
use crate::dispatch::Dispatch;
use crate::finance::PathOutcome;

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
    /// What the site is sized for (and its capex priced on), MW.
    pub max_draw_mw: f64,
    pub miners: u32,
    pub capex_usd: f64,
    pub capture_factor: f64,
    pub utilisation: f64,
    pub absorbed_mwh_per_year: f64,
    /// On the reported paths.
    pub npv_usd: Percentiles,
    /// The median NPV on the paths the design was chosen on.
    pub npv_p50_on_selection_usd: f64,
    pub probability_of_loss: f64,
}

/// How the design was chosen, and how much better it looked on the paths it was chosen on.
#[derive(Clone, Debug, Serialize)]
pub struct Selection {
    /// Chosen on paths other than those reported.
    pub out_of_sample: bool,
    pub method: String,
    pub chosen_npv_p50_on_selection_usd: f64,
    pub chosen_npv_p50_on_reported_usd: f64,
    /// The first less the second: what choosing on the reported paths would have overstated.
    pub in_sample_gap_usd: f64,
    /// The design the reported paths would have chosen, where it is another.
    pub in_sample_choice: Option<String>,
}

/// The chosen design under one BTC price trend.
#[derive(Clone, Debug, Serialize)]
pub struct DriftCase {
    pub label: String,
    pub price_drift_per_year: f64,
    /// The trend the study's verdict uses.
    pub verdict_basis: bool,
    pub verdict: String,
    pub npv_usd: Percentiles,
    pub probability_of_loss: f64,
    pub breakeven_btc_usd: f64,
}

/// The verdict on a design from its median NPV and its probability of loss.
pub fn verdict(npv_p50: Option<f64>, probability_of_loss: f64) -> &'static str {
    match npv_p50 {
        Some(v) if v > 0.0 && probability_of_loss < 0.2 => {
            "Mining the surplus pays in most market paths."
        }
        Some(v) if v > 0.0 => {
            "Mining the surplus pays in the median path, with a material chance of loss."
        }
        _ => "Mining the surplus does not pay in the median path.",
    }
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
    /// The fleet's maximum draw, MW: the site's size.
    pub max_draw_mw: f64,
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
    /// What that import costs a year, USD.
    pub import_usd_per_year: f64,
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
    /// One sentence on the chosen design under `verdict_basis`.
    pub verdict: String,
    /// What the verdict's market paths assume.
    pub verdict_basis: String,
    /// The chosen design under each price trend (Monte Carlo only).
    pub drift_cases: Vec<DriftCase>,
    pub selection: Selection,
    /// What imported energy is costed at, in words.
    pub import_priced_at: String,
    pub title: String,
    pub profile: String,
    pub profile_days: usize,
    pub alternative: String,
    pub horizon_years: f64,
    pub discount_rate: f64,
    pub sell_share: f64,
    pub costs: Costs,
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

pub(crate) fn inputs_fit(inputs: &Inputs) -> Option<FitSummary> {
    match &inputs.market {
        MarketMode::MonteCarlo { model, .. } => Some(model.summary()),
        MarketMode::Backtest { .. } => None,
    }
}

pub(crate) fn share(v: &[f64], f: impl Fn(f64) -> bool) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().filter(|x| f(**x)).count() as f64 / v.len() as f64
}
