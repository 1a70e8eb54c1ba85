//! Statements: what a site drew, absorbed and earned, month by month, read back from a
//! [`Store`] (`hashsink report` prints them; the ledger benchmark times them).

use std::collections::BTreeMap;

use hashsink_units::{Timestamp, WattHours, format_time};

use crate::{Result, Store};

/// One month's (or the whole period's) statement.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Statement {
    pub period: String,
    pub intervals: u64,
    pub energy_mwh: f64,
    pub absorbed_mwh: f64,
    pub import_mwh: f64,
    pub surplus_mwh: f64,
    pub hours_mining: f64,
    pub curtailments: u64,
    /// Median and worst time from a shed or curtailment to its last acknowledged command, s.
    pub response_median_s: Option<f64>,
    pub response_max_s: Option<f64>,
    pub hashes_eh: f64,
    pub expected_btc: f64,
    pub paid_btc: f64,
    pub sold_btc: f64,
    /// Fiat received, by currency, in major units.
    pub sales: BTreeMap<String, f64>,
    /// Fiat per MWh absorbed, by currency.
    pub revenue_per_mwh: BTreeMap<String, f64>,
}

/// The calendar month (UTC) a time falls in, "2026-05".
fn month_of(t: Timestamp) -> String {
    let text = format_time(t);
    match text.get(..7) {
        Some(month) if text.as_bytes().get(4) == Some(&b'-') => month.to_string(),
        _ => "?".into(),
    }
}

/// Builds the statements: one per calendar month (UTC) touched, then the total.
pub fn statements(
    store: &mut dyn Store,
    site: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Statement>> {
    let mut sum = Sum::default();
    sum.add_site(store, site, from, to)?;
    Ok(sum.finish())
}

/// What [`all_sites`] names the sum of every site.
pub const ALL_SITES: &str = "all sites";

/// Every site's statements, by site name, then those of all of them together (named
/// [`ALL_SITES`]): energy, hashes and coins added up, response times pooled.
pub fn all_sites(
    store: &mut dyn Store,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<(String, Vec<Statement>)>> {
    let mut out = Vec::new();
    let mut region = Sum::default();
    for site in store.sites()? {
        let mut one = Sum::default();
        one.add_site(store, &site, from, to)?;
        region.add_site(store, &site, from, to)?;
        out.push((site, one.finish()));
    }
    out.push((ALL_SITES.to_string(), region.finish()));
    Ok(out)
}

/// Statements being added up, site by site.
#[derive(Default)]
struct Sum {
    months: BTreeMap<String, Statement>,
    total: Statement,
    /// Response times, by period ("total" for the whole).
    responses: BTreeMap<String, Vec<f64>>,
}

impl Sum {
    fn add_site(
        &mut self,
        store: &mut dyn Store,
        site: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<()> {
        let Sum {
            months,
            total,
            responses,
        } = self;
        for i in store.intervals(site, from, to)? {
            let m = months.entry(month_of(i.start)).or_default();
            for s in [&mut *m, &mut *total] {
                s.intervals += 1;
                let mwh = |wh: f64| WattHours(wh).mwh();
                s.energy_mwh += mwh(i.fleet_wh);
                s.import_mwh += mwh(i.import_wh);
                s.absorbed_mwh += mwh((i.fleet_wh - i.import_wh).max(0.0));
                s.surplus_mwh += mwh(i.surplus_wh.unwrap_or(0.0));
                if i.mining > 0 {
                    s.hours_mining += i.end.secs_since(i.start) / 3600.0;
                }
                s.hashes_eh += i.hashes_th / 1e6;
                s.expected_btc += i.expected_sat / 1e8;
            }
        }
        let audit = store.audit(site, from, to)?;
        for e in store.events(site, from, to)? {
            if !matches!(e.kind.as_str(), "shed" | "curtail") {
                continue;
            }
            let month = month_of(e.at);
            months.entry(month.clone()).or_default().curtailments += 1;
            total.curtailments += 1;
            // The last acknowledged command it caused (same actor, within a minute).
            let last = audit
                .iter()
                .filter(|a| {
                    a.command.actor == e.actor
                        && a.command.at >= e.at
                        && a.command.at.secs_since(e.at) < 60.0
                })
                .filter_map(|a| a.outcome.as_ref().filter(|o| o.1 == "applied").map(|o| o.0))
                .max();
            if let Some(t) = last {
                let s = t.secs_since(e.at);
                responses.entry(month).or_default().push(s);
                responses.entry("total".into()).or_default().push(s);
            }
        }
        for p in store.payouts(site, from, to)? {
            let btc = p.sat as f64 / 1e8;
            months.entry(month_of(p.at)).or_default().paid_btc += btc;
            total.paid_btc += btc;
        }
        for s in store.sales(site, from, to)? {
            let (btc, fiat) = (s.sat as f64 / 1e8, s.fiat_minor as f64 / 100.0);
            let m = months.entry(month_of(s.at)).or_default();
            for st in [&mut *m, &mut *total] {
                st.sold_btc += btc;
                *st.sales.entry(s.currency.clone()).or_default() += fiat;
            }
        }
        Ok(())
    }

    /// The months, then the total, with their response times and revenue per MWh.
    fn finish(self) -> Vec<Statement> {
        let Sum {
            months,
            mut total,
            mut responses,
        } = self;
        total.period = "total".into();
        let mut out: Vec<Statement> = months
            .into_iter()
            .map(|(k, mut s)| {
                s.period = k;
                s
            })
            .collect();
        out.push(total);
        for s in &mut out {
            if let Some(r) = responses.get_mut(&s.period) {
                r.sort_by(f64::total_cmp);
                s.response_median_s = Some(r[r.len() / 2]);
                s.response_max_s = r.last().copied();
            }
            if s.absorbed_mwh > 0.0 {
                s.revenue_per_mwh = s
                    .sales
                    .iter()
                    .map(|(c, v)| (c.clone(), v / s.absorbed_mwh))
                    .collect();
            }
        }
        out
    }
}
