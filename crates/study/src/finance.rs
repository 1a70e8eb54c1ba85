//! Cash flows of one design on one market path: capex up front (the site sized for the fleet's
//! maximum draw); every day the dispatched energy and hashes (times uptime, the machines still
//! alive and their efficiency), coins mined after the pool fee, sold or held as the policy says,
//! opex, the alternative value of the energy and the energy imported (sleeping miners' standby
//! with no surplus) as costs; held coins and salvage realised at the horizon. Pure arithmetic,
//! no allocation on the hot path.

use hashsink_market::forward::MarketDay;

use crate::config::{Costs, Finance};
use crate::dispatch::Dispatch;

/// Days per month for the monthly series (a 12th of a Julian year).
pub const MONTH_DAYS: f64 = 365.25 / 12.0;

/// Economic parameters with the sensitivity multipliers applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Economics {
    pub costs: Costs,
    pub finance: Finance,
    /// Multiplies hardware and site capex (the sensitivity's capex case; 1 otherwise).
    pub capex_factor: f64,
    /// Stop operating (and earning) after this many days; the horizon otherwise.
    pub stop_after_days: Option<usize>,
}

/// What one path gives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PathOutcome {
    pub npv_usd: f64,
    /// Years until cash plus held coins at market cover the capex; None if not in the horizon.
    pub payback_years: Option<f64>,
    pub irr: Option<f64>,
    /// The flat BTC price at which the NPV is zero (coins sold as mined).
    pub breakeven_btc_usd: f64,
    /// Market value of the coins when mined, USD.
    pub revenue_usd: f64,
    pub btc_mined: f64,
    pub absorbed_mwh: f64,
    pub alternative_usd: f64,
    pub capex_usd: f64,
    /// Days the fleet stayed asleep because mining did not pay for the energy.
    pub idle_days: u32,
}

/// Capex of a design: hardware plus site infrastructure, the site per MW of the fleet's maximum
/// draw (its connection, transformers and cooling carry the 110 % that Braiins OS allows).
pub fn capex(
    dispatch: &Dispatch,
    usd_per_th: f64,
    hashrate_ths_per_miner: f64,
    e: &Economics,
) -> (f64, f64) {
    let hardware =
        f64::from(dispatch.miners) * hashrate_ths_per_miner * usd_per_th * e.capex_factor;
    let infrastructure = dispatch.max_draw_mw * e.costs.infrastructure_usd_per_mw * e.capex_factor;
    (hardware, infrastructure)
}

/// Evaluates a design on one path. `monthly_revenue` (if given) receives the market value of the
/// coins mined each month; `monthly_cash` is scratch space for the IRR (one slot per month).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    dispatch: &Dispatch,
    hardware_usd: f64,
    infrastructure_usd: f64,
    e: &Economics,
    surplus_factor_energy: f64,
    market: &[MarketDay],
    mut monthly_revenue: Option<&mut [f64]>,
    monthly_cash: Option<&mut [f64]>,
) -> PathOutcome {
    let c = &e.costs;
    let horizon = market.len();
    let operating = e.stop_after_days.unwrap_or(horizon).min(horizon);
    let days = &dispatch.days;
    let capex = hardware_usd + infrastructure_usd;
    let daily_discount = (1.0 + e.finance.discount_rate).powf(-1.0 / 365.25);
    let daily_alive = (1.0 - c.failure_rate_per_year).powf(1.0 / 365.25);
    let daily_efficiency = (1.0 - c.efficiency_decay_per_year).powf(1.0 / 365.25);
    let fixed_opex = dispatch.installed_mw * c.opex_usd_per_mw_year / 365.25;
    let sell = e.finance.sell_share;
    let keep = 1.0 - c.pool_fee;
    let (mut disc, mut alive, mut efficiency) = (1.0f64, 1.0f64, 1.0f64);
    let mut out = PathOutcome {
        capex_usd: capex,
        ..PathOutcome::default()
    };
    let (mut npv, mut pv_btc, mut pv_cost) = (-capex, 0.0, 0.0);
    let (mut cash, mut held) = (-capex, 0.0f64);
    let mut cash_months = monthly_cash;
    if let Some(m) = cash_months.as_deref_mut() {
        m.fill(0.0);
    }
    // Day of the profile and month of the horizon, counted along (no division per day).
    let (mut profile_day, mut month, mut next_month) = (0usize, 0usize, MONTH_DAYS);
    for (t, m) in market.iter().enumerate().take(operating) {
        if t as f64 >= next_month {
            month += 1;
            next_month = (month + 1) as f64 * MONTH_DAYS;
        }
        let d = &days[profile_day];
        profile_day += 1;
        if profile_day == days.len() {
            profile_day = 0;
        }
        let share = c.uptime * alive * surplus_factor_energy;
        let mut energy = d.absorbed_mwh * share;
        let mut btc = d.ph_days * share * efficiency * m.btc_per_ph_day * keep;
        let mut variable = energy * c.opex_usd_per_mwh + d.alternative_usd * share;
        // The operating option: on a day when the coins would not pay for the energy's
        // alternative value and the variable opex, the fleet stays asleep and the energy goes
        // to the alternative.
        if e.finance.mine_only_when_profitable && btc * m.price_usd < variable {
            energy = 0.0;
            btc = 0.0;
            variable = 0.0;
            out.idle_days += 1;
        }
        // Energy imported is paid for whether or not the day was worth mining: the sleeping
        // fleet draws its standby either way.
        let cost = variable + fixed_opex + d.import_usd * share;
        let cash_in = sell * btc * m.price_usd;
        held += (1.0 - sell) * btc;
        npv += disc * (cash_in - cost);
        pv_btc += disc * btc;
        pv_cost += disc * cost;
        cash += cash_in - cost;
        if out.payback_years.is_none() && cash + held * m.price_usd >= 0.0 {
            out.payback_years = Some((t + 1) as f64 / 365.25);
        }
        let revenue = btc * m.price_usd;
        out.revenue_usd += revenue;
        out.btc_mined += btc;
        out.absorbed_mwh += energy;
        if energy > 0.0 {
            out.alternative_usd += d.alternative_usd * share;
        }
        if let Some(r) = monthly_revenue.as_deref_mut() {
            if let Some(slot) = r.get_mut(month) {
                *slot += revenue;
            }
        }
        if let Some(cm) = cash_months.as_deref_mut() {
            if let Some(slot) = cm.get_mut(month) {
                *slot += cash_in - cost;
            }
        }
        disc *= daily_discount;
        alive *= daily_alive;
        efficiency *= daily_efficiency;
    }
    // At the end of operation: held coins sold at that day's price, salvage of the hardware
    // still alive.
    let end = operating.max(1) - 1;
    let end_disc = (1.0 + e.finance.discount_rate).powf(-(operating as f64) / 365.25);
    let salvage = hardware_usd * c.salvage_share * alive;
    let terminal = held * market[end].price_usd + salvage;
    npv += end_disc * terminal;
    if out.payback_years.is_none() && cash + terminal >= 0.0 && operating > 0 {
        out.payback_years = Some(operating as f64 / 365.25);
    }
    out.npv_usd = npv;
    out.breakeven_btc_usd = if pv_btc > 0.0 {
        (capex + pv_cost - end_disc * salvage) / pv_btc
    } else {
        f64::INFINITY
    };
    if let Some(cm) = cash_months {
        let last = ((end as f64 / MONTH_DAYS) as usize).min(cm.len().saturating_sub(1));
        if !cm.is_empty() {
            cm[last] += terminal;
            out.irr = irr(cm, capex);
        }
    }
    out
}

/// The annual rate at which `-capex` now plus `monthly[m]` at the end of month m is worth zero;
/// None where no rate in (-95 %, 1000 %) does it.
pub fn irr(monthly: &[f64], capex: f64) -> Option<f64> {
    let value = |r: f64| {
        let f = (1.0 + r).powf(-1.0 / 12.0);
        let mut d = f;
        let mut v = -capex;
        for &c in monthly {
            v += c * d;
            d *= f;
        }
        v
    };
    // The highest root: scan down from 1000 %/yr for the first change of sign, then bisect
    // (late negative flows can give a second, meaningless root near -100 %).
    const GRID: [f64; 21] = [
        10.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05, 0.0, -0.05, -0.1,
        -0.2, -0.3, -0.5, -0.7, -0.95,
    ];
    let (mut hi, mut lo) = (GRID[0], GRID[1]);
    let mut found = false;
    for w in GRID.windows(2) {
        let (a, b) = (value(w[0]), value(w[1]));
        if a.is_finite() && b.is_finite() && a.signum() != b.signum() {
            (hi, lo) = (w[0], w[1]);
            found = true;
            break;
        }
    }
    if !found {
        return None;
    }
    let vlo = value(lo);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if value(mid).signum() == vlo.signum() {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-7 {
            break;
        }
    }
    Some(0.5 * (lo + hi))
}

/// The flat hashprice (USD per PH/s per day, before the pool fee) at which the NPV is zero.
pub fn breakeven_hashprice(
    dispatch: &Dispatch,
    hardware_usd: f64,
    infrastructure_usd: f64,
    e: &Economics,
    horizon_days: usize,
) -> f64 {
    let c = &e.costs;
    let daily_discount = (1.0 + e.finance.discount_rate).powf(-1.0 / 365.25);
    let daily_alive = (1.0 - c.failure_rate_per_year).powf(1.0 / 365.25);
    let daily_efficiency = (1.0 - c.efficiency_decay_per_year).powf(1.0 / 365.25);
    let fixed_opex = dispatch.installed_mw * c.opex_usd_per_mw_year / 365.25;
    let (mut disc, mut alive, mut eff) = (1.0, 1.0, 1.0);
    let (mut pv_ph, mut pv_cost) = (0.0, 0.0);
    for t in 0..horizon_days {
        let d = &dispatch.days[t % dispatch.days.len()];
        let share = c.uptime * alive;
        // (At a flat hashprice the operating option is all-or-nothing; break-even is where
        // mining just pays, so it is taken as always mining.)
        pv_ph += disc * d.ph_days * share * eff * (1.0 - c.pool_fee);
        pv_cost += disc
            * (d.absorbed_mwh * share * c.opex_usd_per_mwh
                + (d.alternative_usd + d.import_usd) * share
                + fixed_opex);
        disc *= daily_discount;
        alive *= daily_alive;
        eff *= daily_efficiency;
    }
    let salvage = hardware_usd * c.salvage_share * alive;
    (hardware_usd + infrastructure_usd + pv_cost - disc * salvage) / pv_ph
}

#[cfg(test)]
mod tests_support {
    pub(super) use super::tests::{design, econ};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::DayDispatch;

    fn costs() -> Costs {
        Costs {
            infrastructure_usd_per_mw: 0.0,
            opex_usd_per_mw_year: 0.0,
            opex_usd_per_mwh: 0.0,
            pool_fee: 0.0,
            failure_rate_per_year: 0.0,
            efficiency_decay_per_year: 0.0,
            uptime: 1.0,
            salvage_share: 0.0,
            import_usd_per_mwh: None,
        }
    }

    pub(super) fn design(ph_days: f64) -> Dispatch {
        Dispatch {
            candidate: 0,
            installed_mw: 1.0,
            max_draw_mw: 1.1,
            miners: 10,
            simulated_miners: 10,
            days: vec![
                DayDispatch {
                    surplus_mwh: 24.0,
                    absorbed_mwh: 24.0,
                    import_mwh: 0.0,
                    ph_days,
                    alternative_usd: 0.0,
                    import_usd: 0.0,
                };
                365
            ],
            capture_factor: 1.0,
            utilisation: 1.0,
            hours: Vec::new(),
        }
    }

    pub(super) fn econ(rate: f64, sell: f64) -> Economics {
        Economics {
            costs: costs(),
            finance: Finance {
                horizon_years: 1.0,
                discount_rate: rate,
                sell_share: sell,
                mine_only_when_profitable: false,
            },
            capex_factor: 1.0,
            stop_after_days: None,
        }
    }

    fn flat_market(days: usize, price: f64, btc_per_ph: f64) -> Vec<MarketDay> {
        vec![
            MarketDay {
                price_usd: price,
                btc_per_ph_day: btc_per_ph,
                ..MarketDay::default()
            };
            days
        ]
    }

    #[test]
    fn undiscounted_flat_case_adds_up_by_hand() {
        // 1 PH/s-day a day at 1e-5 BTC per PH-day and 50,000 USD: 0.5 USD a day for 100 days.
        let d = design(1.0);
        let m = flat_market(100, 50_000.0, 1e-5);
        let o = evaluate(&d, 10.0, 0.0, &econ(0.0, 1.0), 1.0, &m, None, None);
        assert!((o.revenue_usd - 50.0).abs() < 1e-9);
        assert!((o.npv_usd - 40.0).abs() < 1e-9);
        // 10 USD of capex is earned back on day 20.
        assert!((o.payback_years.unwrap() - 20.0 / 365.25).abs() < 1e-12);
        // Break-even price: 10 USD / 0.001 BTC.
        assert!((o.breakeven_btc_usd - 10_000.0).abs() < 1e-6);
    }

    #[test]
    fn holding_realises_the_last_price_and_irr_solves_the_flows() {
        let d = design(1.0);
        let mut m = flat_market(365, 50_000.0, 1e-5);
        m[364].price_usd = 100_000.0;
        let sold = evaluate(&d, 100.0, 0.0, &econ(0.0, 1.0), 1.0, &m, None, None);
        let held = evaluate(&d, 100.0, 0.0, &econ(0.0, 0.0), 1.0, &m, None, None);
        // Held coins all sell at the doubled last price.
        assert!((held.npv_usd + 100.0 - 2.0 * (sold.npv_usd + 100.0 - 0.5)).abs() < 1e-6);
        let mut cash = vec![0.0; 12];
        let o = evaluate(
            &d,
            100.0,
            0.0,
            &econ(0.0, 1.0),
            1.0,
            &flat_market(365, 50_000.0, 1e-5),
            None,
            Some(&mut cash),
        );
        let r = o.irr.unwrap();
        // At the IRR the discounted flows are worth nothing.
        let f = (1.0 + r).powf(-1.0 / 12.0);
        let v: f64 = -100.0
            + cash
                .iter()
                .enumerate()
                .map(|(i, c)| c * f.powi(i as i32 + 1))
                .sum::<f64>();
        assert!(v.abs() < 1e-3, "{v}");
        assert!(
            r > 1.0,
            "182 USD a year on 100 of capex is well over 100 %: {r}"
        );
    }

    #[test]
    fn failures_and_decay_shrink_output_and_discounting_shrinks_npv() {
        let d = design(1.0);
        let m = flat_market(365, 50_000.0, 1e-5);
        let base = evaluate(&d, 10.0, 0.0, &econ(0.0, 1.0), 1.0, &m, None, None);
        let mut e = econ(0.0, 1.0);
        e.costs.failure_rate_per_year = 0.2;
        let failing = evaluate(&d, 10.0, 0.0, &e, 1.0, &m, None, None);
        assert!(
            failing.btc_mined < 0.92 * base.btc_mined && failing.btc_mined > 0.85 * base.btc_mined
        );
        let discounted = evaluate(&d, 10.0, 0.0, &econ(0.3, 1.0), 1.0, &m, None, None);
        assert!(discounted.npv_usd < base.npv_usd);
        let bh = breakeven_hashprice(&d, 10.0, 0.0, &econ(0.0, 1.0), 365);
        assert!((bh - 10.0 / 365.0).abs() < 1e-9);
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;
    use crate::dispatch::DayDispatch;

    /// `days` days at 50,000 USD and 1e-5 BTC per PH/s-day: 0.5 USD a day for 1 PH/s.
    fn half_a_dollar_a_day(days: usize) -> Vec<MarketDay> {
        vec![
            MarketDay {
                price_usd: 50_000.0,
                btc_per_ph_day: 1e-5,
                ..MarketDay::default()
            };
            days
        ]
    }

    #[test]
    fn the_fleet_sleeps_on_days_mining_does_not_pay() {
        let mut d = super::tests_support::design(1.0);
        for day in &mut d.days {
            day.alternative_usd = 24.0 * 30.0; // the energy fetches 30 USD/MWh otherwise
        }
        // 0.5 USD of coins a day against 720 USD of energy value: never worth mining.
        let m = half_a_dollar_a_day(100);
        let mut e = super::tests_support::econ(0.0, 1.0);
        let always = evaluate(&d, 0.0, 0.0, &e, 1.0, &m, None, None);
        e.finance.mine_only_when_profitable = true;
        let option = evaluate(&d, 0.0, 0.0, &e, 1.0, &m, None, None);
        assert!(always.npv_usd < -70_000.0);
        assert_eq!(option.idle_days, 100);
        assert_eq!(option.npv_usd, 0.0);
        let _ = DayDispatch::default();
    }

    #[test]
    fn imports_are_paid_on_idle_days_too_and_the_site_is_priced_on_the_maximum_draw() {
        let mut d = super::tests_support::design(1.0);
        for day in &mut d.days {
            day.alternative_usd = 24.0 * 30.0;
            day.import_usd = 5.0;
        }
        let m = half_a_dollar_a_day(100);
        let mut e = super::tests_support::econ(0.0, 1.0);
        e.finance.mine_only_when_profitable = true;
        let o = evaluate(&d, 0.0, 0.0, &e, 1.0, &m, None, None);
        assert_eq!(o.idle_days, 100);
        assert!((o.npv_usd + 500.0).abs() < 1e-9, "{}", o.npv_usd);
        e.costs.infrastructure_usd_per_mw = 1000.0;
        let (_, site) = capex(&d, 1.0, 1.0, &e);
        assert!(
            (site - 1100.0).abs() < 1e-9,
            "1.1 MW of maximum draw: {site}"
        );
    }

    #[test]
    fn irr_takes_the_meaningful_root_when_late_flows_turn_negative() {
        // 100 out, 60 back in each of the first two months, then small losses for a year.
        let mut flows = vec![60.0, 60.0];
        flows.extend(std::iter::repeat_n(-1.0, 12));
        let r = irr(&flows, 100.0).expect("a root");
        assert!(r > 0.5, "{r}");
    }
}
