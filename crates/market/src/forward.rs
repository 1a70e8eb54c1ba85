//! Market paths for the study: forward Monte Carlo paths fitted on the bundled history, and the
//! historical path itself (the backtest).
//!
//! Forward paths are a fixed-length block bootstrap of three daily log-returns drawn
//! together (so their correlation survives): BTC price, network hashrate (of its 14-day mean, so
//! the estimate's day-to-day noise does not compound) and fees per block (of their 7-day mean,
//! held inside the range seen in the fit window). Difficulty is not drawn: it follows hashrate
//! the way the protocol makes it, retargeting every 2016 blocks to the time the epoch took
//! (clamped x4), so blocks come faster than 144 a day while hashrate grows. The subsidy halves by
//! block height. Each path is a pure function of (seed, path index, model): reproducible, and
//! independent of how paths are spread over threads.

use jiff::civil::Date;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    HALVING_INTERVAL, HASHES_PER_DIFFICULTY, MarketError, MarketHistory, subsidy_at_height,
};

/// Blocks between difficulty retargets.
pub const RETARGET_INTERVAL: f64 = 2016.0;
const TARGET_EPOCH_DAYS: f64 = RETARGET_INTERVAL * 600.0 / 86_400.0;
const HASHRATE_SMOOTHING_DAYS: usize = 14;
const FEE_SMOOTHING_DAYS: usize = 7;

/// One day of a market path, as the study needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MarketDay {
    pub price_usd: f64,
    /// BTC one PH/s earns in the day (subsidy and fees, before any pool fee).
    pub btc_per_ph_day: f64,
    /// The part of `btc_per_ph_day` that is fees.
    pub fee_btc_per_ph_day: f64,
    pub difficulty: f64,
    /// Network hashrate, EH/s.
    pub hashrate_ehs: f64,
    /// The block subsidy at the end of the day (an average over the day for history), BTC.
    pub subsidy_per_block_btc: f64,
}

impl MarketDay {
    pub fn hashprice_usd_per_ph_day(&self) -> f64 {
        self.btc_per_ph_day * self.price_usd
    }
}

/// Shifts applied to every path (the study's sensitivity analysis and risk register).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shocks {
    /// Multiplies the BTC price on every day.
    pub price_factor: f64,
    /// Added to the network hashrate's growth, as a share per year (0.2: 20 %/year faster).
    pub hashrate_growth_shift: f64,
    /// Multiplies fees per block.
    pub fee_factor: f64,
    /// Keep the subsidy as it is at the start (what the path would earn without the halving).
    pub ignore_halving: bool,
}

impl Default for Shocks {
    fn default() -> Self {
        Self {
            price_factor: 1.0,
            hashrate_growth_shift: 0.0,
            fee_factor: 1.0,
            ignore_halving: false,
        }
    }
}

/// The state of the network on the first day of a path.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StartState {
    price_usd: f64,
    hashrate_ths: f64,
    difficulty: f64,
    fees_per_block: f64,
    height: f64,
    /// Days already spent in the current difficulty epoch.
    epoch_days: f64,
}

/// A bootstrap model fitted on a window of history.
#[derive(Clone, Debug)]
pub struct ForwardModel {
    /// Daily (price, hashrate, fees per block) log-returns of the fit window, in date order.
    returns: Vec<[f64; 3]>,
    /// The same as growth factors (`exp` of the returns), for the paths.
    factors: Vec<[f64; 3]>,
    block_days: usize,
    fee_range: (f64, f64),
    start: StartState,
    start_date: Date,
    fit: (Date, Date),
}

/// Summary statistics of the fitted returns, for the report.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FitSummary {
    pub days: usize,
    pub price_drift_per_year: f64,
    pub price_volatility_per_year: f64,
    pub hashrate_growth_per_year: f64,
    pub price_hashrate_correlation: f64,
}

impl ForwardModel {
    /// Fits the model on `[fit_from, fit_to]` and starts paths at the state of `start` (which
    /// must be in the data). `block_days` is the bootstrap block length.
    pub fn fit(
        history: &MarketHistory,
        fit_from: Date,
        fit_to: Date,
        start: Date,
        block_days: usize,
    ) -> Result<Self, MarketError> {
        let lead = HASHRATE_SMOOTHING_DAYS.max(FEE_SMOOTHING_DAYS) as i64;
        let from_with_lead = fit_from
            .checked_sub(jiff::Span::new().days(lead))
            .unwrap_or(fit_from)
            .max(history.first());
        history.day(fit_from)?;
        history.day(fit_to)?;
        let days: Vec<_> = history.range(from_with_lead, fit_to).copied().collect();
        let smooth = |k: usize, f: &dyn Fn(&crate::Day) -> f64| -> Vec<f64> {
            (0..days.len())
                .map(|i| {
                    let lo = (i + 1).saturating_sub(k);
                    days[lo..=i].iter().map(f).sum::<f64>() / (i + 1 - lo) as f64
                })
                .collect()
        };
        let hashrate = smooth(HASHRATE_SMOOTHING_DAYS, &|d| d.hashrate_ths);
        let fees = smooth(FEE_SMOOTHING_DAYS, &|d| (d.fees_btc / d.blocks).max(1e-6));
        let first = days
            .iter()
            .position(|d| d.date >= fit_from)
            .unwrap_or(0)
            .max(1);
        let returns: Vec<[f64; 3]> = (first..days.len())
            .map(|i| {
                [
                    (days[i].price_usd / days[i - 1].price_usd).ln(),
                    (hashrate[i] / hashrate[i - 1]).ln(),
                    (fees[i] / fees[i - 1]).ln(),
                ]
            })
            .collect();
        if returns.len() < 2 * block_days.max(1) || returns.len() < 60 {
            return Err(MarketError::Invalid {
                origin: "market fit window".into(),
                line: 0,
                message: format!(
                    "{fit_from} .. {fit_to} gives {} daily returns; the bootstrap needs at least 60 and two blocks of {block_days} days",
                    returns.len()
                ),
            });
        }
        let fit_fees = &fees[first..];
        let fee_range = (
            fit_fees.iter().copied().fold(f64::INFINITY, f64::min),
            fit_fees.iter().copied().fold(0.0, f64::max),
        );

        // The start state: smoothed hashrate and fees up to `start`.
        let s = history.day(start)?;
        let back = |k: i64| {
            start
                .checked_sub(jiff::Span::new().days(k - 1))
                .unwrap_or(start)
                .max(history.first())
        };
        let mean = |k: i64, f: &dyn Fn(&crate::Day) -> f64| {
            let v: Vec<f64> = history.range(back(k), start).map(f).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let height = history.height_at_start(start)?;
        let hashrate_ths = mean(HASHRATE_SMOOTHING_DAYS as i64, &|d| d.hashrate_ths);
        let blocks_per_day =
            86_400.0 * hashrate_ths * 1e12 / (s.difficulty * HASHES_PER_DIFFICULTY);
        Ok(Self {
            factors: returns.iter().map(|r| r.map(f64::exp)).collect(),
            returns,
            block_days: block_days.max(1),
            fee_range,
            start: StartState {
                price_usd: s.price_usd,
                hashrate_ths,
                difficulty: s.difficulty,
                fees_per_block: mean(FEE_SMOOTHING_DAYS as i64, &|d| d.fees_btc / d.blocks),
                height,
                epoch_days: (height % RETARGET_INTERVAL) / blocks_per_day,
            },
            start_date: start,
            fit: (fit_from, fit_to),
        })
    }

    /// The same model with the price drift and/or the hashrate growth (per year, 0.1 for
    /// +10 %/yr) set instead of fitted: the returns are re-centred, their spread and
    /// co-movement kept.
    pub fn with_drifts(mut self, price: Option<f64>, hashrate: Option<f64>) -> Self {
        let n = self.returns.len() as f64;
        for (k, target) in [(0usize, price), (1usize, hashrate)] {
            if let Some(per_year) = target {
                let mean = self.returns.iter().map(|r| r[k]).sum::<f64>() / n;
                let wanted = (1.0 + per_year).max(1e-6).ln() / 365.25;
                for r in &mut self.returns {
                    r[k] += wanted - mean;
                }
            }
        }
        self.factors = self.returns.iter().map(|r| r.map(f64::exp)).collect();
        self
    }

    pub fn start_date(&self) -> Date {
        self.start_date
    }

    pub fn fit_window(&self) -> (Date, Date) {
        self.fit
    }

    /// Drift, volatility and correlation of the fitted returns (annualised).
    pub fn summary(&self) -> FitSummary {
        let n = self.returns.len() as f64;
        let mean = |k: usize| self.returns.iter().map(|r| r[k]).sum::<f64>() / n;
        let (mp, mh) = (mean(0), mean(1));
        let var =
            |k: usize, m: f64| self.returns.iter().map(|r| (r[k] - m).powi(2)).sum::<f64>() / n;
        let cov = self
            .returns
            .iter()
            .map(|r| (r[0] - mp) * (r[1] - mh))
            .sum::<f64>()
            / n;
        FitSummary {
            days: self.returns.len(),
            price_drift_per_year: (mp * 365.25).exp() - 1.0,
            price_volatility_per_year: (var(0, mp) * 365.25).sqrt(),
            hashrate_growth_per_year: (mh * 365.25).exp() - 1.0,
            price_hashrate_correlation: cov / (var(0, mp) * var(1, mh)).sqrt(),
        }
    }

    /// Fills `out` with path number `path` of the model for `seed` (one entry per day).
    pub fn path(&self, seed: u64, path: u64, shocks: &Shocks, out: &mut [MarketDay]) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(path);
        let s = self.start;
        let growth = (1.0 + shocks.hashrate_growth_shift)
            .max(1e-3)
            .powf(1.0 / 365.25);
        let (mut price, mut hashrate, mut fee) = (s.price_usd, s.hashrate_ths, s.fees_per_block);
        let mut network = Network::new(s.difficulty, s.height, s.epoch_days, shocks.ignore_halving);
        let n = self.factors.len();
        let mut block_pos = self.block_days; // start a new block at once
        let mut idx = 0;
        for (day, slot) in out.iter_mut().enumerate() {
            if day > 0 {
                if block_pos >= self.block_days {
                    idx = rng.random_range(0..=n - self.block_days);
                    block_pos = 0;
                }
                let f = self.factors[idx + block_pos];
                block_pos += 1;
                price *= f[0];
                hashrate *= f[1] * growth;
                fee = (fee * f[2]).clamp(self.fee_range.0, self.fee_range.1);
            }
            let fees = fee * shocks.fee_factor;
            let (btc, fee_btc) = network.advance_day(hashrate, fees);
            *slot = MarketDay {
                price_usd: price * shocks.price_factor,
                btc_per_ph_day: btc,
                fee_btc_per_ph_day: fee_btc,
                difficulty: network.difficulty,
                hashrate_ehs: hashrate / 1e6,
                subsidy_per_block_btc: network.subsidy,
            };
        }
    }
}

/// Difficulty, height and epoch clock, advanced a day at a time. Blocks to the next retarget
/// and the next halving are counted down (no floating remainder on the hot path).
struct Network {
    difficulty: f64,
    height: f64,
    epoch_days: f64,
    to_retarget: f64,
    to_halving: f64,
    subsidy: f64,
    fixed_subsidy: bool,
}

impl Network {
    fn new(difficulty: f64, height: f64, epoch_days: f64, ignore_halving: bool) -> Self {
        Self {
            difficulty,
            height,
            epoch_days,
            to_retarget: RETARGET_INTERVAL - height % RETARGET_INTERVAL,
            to_halving: HALVING_INTERVAL as f64 - height % HALVING_INTERVAL as f64,
            subsidy: subsidy_at_height(height as u64),
            fixed_subsidy: ignore_halving,
        }
    }

    /// Advances one day at `hashrate_ths` with `fees` BTC per block; returns the BTC one PH/s
    /// earns that day and the fee part of it.
    #[inline]
    fn advance_day(&mut self, hashrate_ths: f64, fees: f64) -> (f64, f64) {
        const SECONDS_PER_DAY: f64 = 86_400.0;
        let mut left = 1.0f64;
        let (mut btc, mut fee_btc) = (0.0, 0.0);
        while left > 1e-12 {
            let per_hash = 1.0 / (self.difficulty * HASHES_PER_DIFFICULTY);
            let blocks_per_day = SECONDS_PER_DAY * hashrate_ths * 1e12 * per_hash;
            let wanted = blocks_per_day * left;
            let blocks = wanted.min(self.to_retarget).min(self.to_halving);
            let span = if blocks < wanted {
                blocks / blocks_per_day
            } else {
                left
            };
            // A PH/s finds 1e15 * seconds / (D * 2^32) blocks in `span` days.
            let found = 1e15 * span * SECONDS_PER_DAY * per_hash;
            btc += found * (self.subsidy + fees);
            fee_btc += found * fees;
            self.height += blocks;
            self.epoch_days += span;
            self.to_retarget -= blocks;
            self.to_halving -= blocks;
            left -= span;
            if self.to_retarget < 1e-6 {
                let factor = (TARGET_EPOCH_DAYS / self.epoch_days.max(1e-9)).clamp(0.25, 4.0);
                self.difficulty *= factor;
                self.epoch_days = 0.0;
                self.to_retarget = RETARGET_INTERVAL;
            }
            if self.to_halving < 1e-6 {
                self.to_halving = HALVING_INTERVAL as f64;
                if !self.fixed_subsidy {
                    self.subsidy = subsidy_at_height(self.height.round() as u64);
                }
            }
        }
        (btc, fee_btc)
    }
}

/// The historical path from `start` for `days` days (a backtest), or an error naming the last
/// day of the data when the horizon runs past it.
pub fn historical_path(
    history: &MarketHistory,
    start: Date,
    days: usize,
) -> Result<Vec<MarketDay>, MarketError> {
    history.day(start)?;
    let mut out = Vec::with_capacity(days);
    for d in history.range(start, history.last()).take(days) {
        out.push(MarketDay {
            price_usd: d.price_usd,
            btc_per_ph_day: d.hashprice_btc_per_ph_day(),
            fee_btc_per_ph_day: d.hashprice_btc_per_ph_day() * d.fees_btc
                / (d.fees_btc + d.subsidy_btc),
            difficulty: d.difficulty,
            hashrate_ehs: d.hashrate_ehs(),
            subsidy_per_block_btc: d.subsidy_per_block_btc(),
        });
    }
    if out.len() < days {
        let end = start
            .checked_add(jiff::Span::new().days(days as i64 - 1))
            .unwrap_or(start);
        return Err(MarketError::PastTheData {
            start,
            end,
            last: history.last(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(start: &str) -> ForwardModel {
        let h = MarketHistory::bundled();
        ForwardModel::fit(
            &h,
            "2022-01-01".parse().unwrap(),
            "2026-03-22".parse().unwrap(),
            start.parse().unwrap(),
            30,
        )
        .unwrap()
    }

    #[test]
    fn a_path_is_a_function_of_seed_and_index() {
        let m = model("2026-03-22");
        let mut a = vec![MarketDay::default(); 400];
        let mut b = a.clone();
        let mut c = a.clone();
        m.path(7, 3, &Shocks::default(), &mut a);
        m.path(7, 3, &Shocks::default(), &mut b);
        m.path(7, 4, &Shocks::default(), &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn first_day_matches_the_data_and_difficulty_steps_per_epoch() {
        let h = MarketHistory::bundled();
        let m = model("2026-03-22");
        let mut p = vec![MarketDay::default(); 120];
        m.path(1, 0, &Shocks::default(), &mut p);
        let day = h.day_str("2026-03-22").unwrap();
        assert!((p[0].price_usd / day.price_usd - 1.0).abs() < 1e-12);
        let rel = p[0].hashprice_usd_per_ph_day() / day.hashprice_usd_per_ph_day() - 1.0;
        assert!(rel.abs() < 0.1, "first-day hashprice off by {rel}");
        // Difficulty changes only at retargets: about 120 / 14 of them, not every day.
        let changes = p
            .windows(2)
            .filter(|w| w[0].difficulty != w[1].difficulty)
            .count();
        assert!(
            (6..=11).contains(&changes),
            "{changes} difficulty changes in 120 days"
        );
    }

    #[test]
    fn the_subsidy_halves_at_block_1050000_unless_told_not_to() {
        // From the start of 2028 with no price or hashrate change, the halving should cut what a
        // PH/s earns by about half (fees are small) around April-May 2028.
        let mut m = model("2026-03-22");
        m.factors.iter_mut().for_each(|r| *r = [1.0; 3]);
        let mut p = vec![MarketDay::default(); 1000];
        m.path(1, 0, &Shocks::default(), &mut p);
        let mut flat = p.clone();
        m.path(
            1,
            0,
            &Shocks {
                ignore_halving: true,
                ..Shocks::default()
            },
            &mut flat,
        );
        let cut = p
            .windows(2)
            .position(|w| w[1].btc_per_ph_day < 0.75 * w[0].btc_per_ph_day)
            .expect("a halving in 1000 days");
        let date = m
            .start_date()
            .checked_add(jiff::Span::new().days(cut as i64 + 1))
            .unwrap();
        assert!(
            date >= "2028-03-01".parse().unwrap() && date <= "2028-07-01".parse().unwrap(),
            "halving on {date}"
        );
        assert!(flat[cut + 5].btc_per_ph_day > 1.8 * p[cut + 5].btc_per_ph_day);
        // With flat hashrate difficulty settles: blocks at 144 a day after the first retarget.
        let d = p[200].difficulty;
        assert!((p[300].difficulty / d - 1.0).abs() < 1e-9);
    }

    #[test]
    fn hashrate_growth_raises_difficulty_and_cuts_earnings() {
        let m = model("2026-03-22");
        let mut base = vec![MarketDay::default(); 730];
        let mut fast = base.clone();
        m.path(2, 9, &Shocks::default(), &mut base);
        m.path(
            2,
            9,
            &Shocks {
                hashrate_growth_shift: 0.5,
                ..Shocks::default()
            },
            &mut fast,
        );
        assert!(fast[729].difficulty > 1.3 * base[729].difficulty);
        assert!(fast[729].btc_per_ph_day < 0.8 * base[729].btc_per_ph_day);
        assert_eq!(fast[729].price_usd, base[729].price_usd);
    }

    #[test]
    fn the_paths_reproduce_the_fitted_drift_and_volatility() {
        // A year-long path's log price change should have the fit's mean and spread (blocks of
        // 30 days keep the returns' autocorrelation, so the spread is close, not exact), and
        // hashrate should grow at the fitted pace.
        let m = model("2026-03-22");
        let fit = m.summary();
        let mut p = vec![MarketDay::default(); 366];
        let (mut price, mut hash) = (Vec::new(), Vec::new());
        for i in 0..2000 {
            m.path(3, i, &Shocks::default(), &mut p);
            price.push((p[365].price_usd / p[0].price_usd).ln());
            hash.push((p[365].hashrate_ehs / p[0].hashrate_ehs).ln());
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let sd = |v: &[f64]| {
            let m = mean(v);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let drift = (1.0 + fit.price_drift_per_year).ln();
        assert!(
            (mean(&price) - drift).abs() < 0.05,
            "{} vs {drift}",
            mean(&price)
        );
        let vol = fit.price_volatility_per_year;
        assert!(
            (sd(&price) / vol - 1.0).abs() < 0.25,
            "{} vs {vol}",
            sd(&price)
        );
        let growth = (1.0 + fit.hashrate_growth_per_year).ln();
        assert!(
            (mean(&hash) - growth).abs() < 0.03,
            "{} vs {growth}",
            mean(&hash)
        );
        // Hashrate is far steadier than price.
        assert!(sd(&hash) < 0.5 * sd(&price));
        // Drifts set by hand move the centre, not the spread.
        let flat = model("2026-03-22").with_drifts(Some(0.0), Some(0.2));
        assert!(flat.summary().price_drift_per_year.abs() < 1e-9);
        assert!((flat.summary().hashrate_growth_per_year - 0.2).abs() < 1e-9);
        assert!((flat.summary().price_volatility_per_year / vol - 1.0).abs() < 1e-9);
    }

    #[test]
    fn backtest_past_the_data_is_an_error_naming_the_last_day() {
        let h = MarketHistory::bundled();
        let e = historical_path(&h, "2025-01-01".parse().unwrap(), 5 * 365).unwrap_err();
        assert!(e.to_string().contains("2026-03-22"), "{e}");
        let ok = historical_path(&h, "2020-01-01".parse().unwrap(), 366).unwrap();
        assert_eq!(ok.len(), 366);
    }
}
