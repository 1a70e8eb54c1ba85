//! `hashsink report`: the monthly energy and production statement from the ledger, the one a
//! regulator asks of a licensed mining operation and the finance team reconciles against: per
//! month and in total, energy drawn, absorbed from the surplus and imported, hours of operation,
//! curtailment events and how fast the fleet answered them, hashes, expected against paid
//! bitcoin, sales, and revenue per MWh. As a table, CSV, or a self-contained HTML page.
//! `hashsink ledger import-payouts|import-sales` enters the actual coins from CSV files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hashsink_ledger::{Payout, Sale, Store};
use hashsink_twin::profile::parse_time;
use hashsink_units::Timestamp;

use crate::daemon::site::Site;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Html,
}

/// Where the ledger is: the site file's `[ledger]`, or a URL.
#[derive(Args, Debug, Clone)]
pub struct LedgerArgs {
    /// The site file whose `[ledger]` and `[site] name` to use.
    #[arg(long, required_unless_present = "ledger")]
    pub config: Option<PathBuf>,
    /// The ledger itself (a SQLite path or postgres:// URL), instead of the site file's.
    #[arg(long, requires = "site")]
    pub ledger: Option<String>,
    /// The site name in the ledger (default: the site file's `[site] name`).
    #[arg(long)]
    pub site: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub at: LedgerArgs,
    /// Start (RFC 3339 or 2026-11-01; UTC), inclusive.
    #[arg(long)]
    pub from: String,
    /// End, exclusive.
    #[arg(long)]
    pub to: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also list every miner's energy, hashes and mining time (CSV and HTML).
    #[arg(long)]
    pub miners: bool,
}

pub fn open(at: &LedgerArgs) -> Result<(Box<dyn Store>, String)> {
    let (url, site) = match (&at.ledger, &at.config) {
        (Some(url), _) => (url.clone(), at.site.clone().unwrap_or_default()),
        (None, Some(path)) => {
            let site = Site::load(path)?;
            let Some(l) = site.ledger else {
                bail!(
                    "{}: [ledger] enabled = false: there is no ledger to read",
                    path.display()
                );
            };
            (l.url, at.site.clone().unwrap_or(site.name))
        }
        (None, None) => bail!("give --config site.toml or --ledger URL --site NAME"),
    };
    if !url.starts_with("postgres") && !std::path::Path::new(&url).exists() {
        bail!("no ledger at {url}: has `hashsink run` written one yet?");
    }
    let mut store =
        hashsink_ledger::open(&url).with_context(|| format!("opening the ledger {url}"))?;
    let version = store.version()?;
    if version != hashsink_ledger::schema::latest() {
        bail!(
            "the ledger at {url} is at schema version {version}, this hashsink reads {}: run the daemon once to migrate it",
            hashsink_ledger::schema::latest()
        );
    }
    Ok((store, site))
}

fn time_arg(name: &str, text: &str) -> Result<Timestamp> {
    parse_time(text).map_err(|e| anyhow::anyhow!("--{name} {text:?}: {e}"))
}

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

fn month_of(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.as_millis())
        .map(|ts| {
            let d = jiff::tz::Offset::UTC.to_datetime(ts).date();
            format!("{:04}-{:02}", d.year(), d.month())
        })
        .unwrap_or_else(|_| "?".into())
}

/// Builds the statements: one per calendar month (UTC) touched, then the total.
pub fn statements(
    store: &mut dyn Store,
    site: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Statement>> {
    let mut months: BTreeMap<String, Statement> = BTreeMap::new();
    let mut total = Statement {
        period: "total".into(),
        ..Statement::default()
    };
    let mut responses: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for i in store.intervals(site, from, to)? {
        let m = months.entry(month_of(i.start)).or_default();
        for s in [&mut *m, &mut total] {
            s.intervals += 1;
            s.energy_mwh += i.fleet_wh / 1e6;
            s.import_mwh += i.import_wh / 1e6;
            s.absorbed_mwh += (i.fleet_wh - i.import_wh).max(0.0) / 1e6;
            s.surplus_mwh += i.surplus_wh.unwrap_or(0.0) / 1e6;
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
        for st in [&mut *m, &mut total] {
            st.sold_btc += btc;
            *st.sales.entry(s.currency.clone()).or_default() += fiat;
        }
    }
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
    Ok(out)
}

const COLUMNS: [&str; 15] = [
    "period",
    "intervals",
    "energy_mwh",
    "absorbed_mwh",
    "import_mwh",
    "surplus_mwh",
    "hours_mining",
    "curtailments",
    "response_median_s",
    "response_max_s",
    "hashes_eh",
    "expected_btc",
    "paid_btc",
    "sold_btc",
    "sales",
];

fn cells(s: &Statement) -> Vec<String> {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    vec![
        s.period.clone(),
        s.intervals.to_string(),
        format!("{:.3}", s.energy_mwh),
        format!("{:.3}", s.absorbed_mwh),
        format!("{:.3}", s.import_mwh),
        format!("{:.3}", s.surplus_mwh),
        format!("{:.1}", s.hours_mining),
        s.curtailments.to_string(),
        opt(s.response_median_s),
        opt(s.response_max_s),
        format!("{:.4}", s.hashes_eh),
        format!("{:.8}", s.expected_btc),
        format!("{:.8}", s.paid_btc),
        format!("{:.8}", s.sold_btc),
        s.sales
            .iter()
            .map(|(c, v)| {
                format!(
                    "{v:.2} {c} ({:.2}/MWh)",
                    s.revenue_per_mwh.get(c).unwrap_or(&0.0)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    ]
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let from = time_arg("from", &args.from)?;
    let to = time_arg("to", &args.to)?;
    if to <= from {
        bail!("--to must be after --from");
    }
    let (mut store, site) = open(&args.at)?;
    let started = std::time::Instant::now();
    let rows = statements(store.as_mut(), &site, from, to)?;
    let miners = if args.miners {
        // By miner id: looked up once per miner's row.
        let info: BTreeMap<u32, hashsink_ledger::MinerInfo> = store
            .miners(&site)?
            .into_iter()
            .map(|m| (m.miner, m))
            .collect();
        let totals = store.miner_totals(&site, from, to)?;
        Some((info, totals))
    } else {
        None
    };
    tracing::info!(ms = started.elapsed().as_millis() as u64, "report built");
    let text = match args.format {
        Format::Table => {
            let mut t = format!(
                "{site}: {} to {}\n\n| {} |\n|{}\n",
                args.from,
                args.to,
                COLUMNS.join(" | "),
                "---|".repeat(COLUMNS.len())
            );
            for r in &rows {
                t += &format!("| {} |\n", cells(r).join(" | "));
            }
            t
        }
        Format::Csv => {
            // Two sections of different widths: the statement, then (with --miners) the miners.
            let mut w = csv::WriterBuilder::new()
                .flexible(true)
                .from_writer(Vec::new());
            w.write_record(COLUMNS)?;
            for r in &rows {
                w.write_record(cells(r))?;
            }
            if let Some((info, totals)) = &miners {
                w.write_record([
                    "miner",
                    "address",
                    "model",
                    "energy_kwh",
                    "hashes_ph",
                    "mining_intervals",
                ])?;
                for t in totals {
                    let i = info.get(&t.miner);
                    w.write_record([
                        t.miner.to_string(),
                        i.map(|i| i.address.clone()).unwrap_or_default(),
                        i.map(|i| i.model.clone()).unwrap_or_default(),
                        format!("{:.3}", t.energy_wh / 1000.0),
                        format!("{:.3}", t.hashes_th / 1000.0),
                        t.mining_intervals.to_string(),
                    ])?;
                }
            }
            String::from_utf8(w.into_inner()?)?
        }
        Format::Html => {
            let mut h = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}: energy and production statement</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}</style></head><body><h1>{0}</h1><p>Energy and production statement, {1} to {2} (UTC), from the ledger.</p><table><tr>",
                html_escape(&site),
                html_escape(&args.from),
                html_escape(&args.to)
            );
            for c in COLUMNS {
                h += &format!("<th>{c}</th>");
            }
            h += "</tr>";
            for r in &rows {
                h += "<tr>";
                for c in cells(r) {
                    h += &format!("<td>{}</td>", html_escape(&c));
                }
                h += "</tr>";
            }
            h += "</table>";
            if let Some((info, totals)) = &miners {
                h += "<h2>Miners</h2><table><tr><th>miner</th><th>address</th><th>model</th><th>energy kWh</th><th>hashes PH</th><th>mining intervals</th></tr>";
                for t in totals {
                    let i = info.get(&t.miner);
                    h += &format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                        t.miner,
                        html_escape(i.map_or("", |i| i.address.as_str())),
                        html_escape(i.map_or("", |i| i.model.as_str())),
                        t.energy_wh / 1000.0,
                        t.hashes_th / 1000.0,
                        t.mining_intervals
                    );
                }
                h += "</table>";
            }
            h += "<p>Expected bitcoin: hashes at each day's network difficulty and block reward (subsidy and fees). Paid and sold: as entered with <code>hashsink ledger import-payouts</code> and <code>import-sales</code>. Response: from a shed or curtailment to the last command it caused that a miner acknowledged.</p></body></html>\n";
            h
        }
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum LedgerCommand {
    /// Enter pool payouts from a CSV file: `time,reference,btc,source` (a reference seen before
    /// is skipped, so a file can be imported again).
    ImportPayouts {
        #[command(flatten)]
        at: LedgerArgs,
        file: PathBuf,
    },
    /// Enter coin sales from a CSV file: `time,reference,btc,fiat,currency`.
    ImportSales {
        #[command(flatten)]
        at: LedgerArgs,
        file: PathBuf,
    },
}

/// A BTC amount as written ("0.00123456") in satoshis, exactly (no floating point).
pub fn parse_sat(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!("{t:?} is not an amount of BTC like 0.00123456"));
    }
    if frac.len() > 8 {
        return Err(format!(
            "{t:?} has more than 8 decimals (a satoshi is 0.00000001)"
        ));
    }
    let int: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| format!("{t:?} is too large"))?
    };
    let frac: i64 = format!("{frac:0<8}").parse().unwrap_or(0);
    int.checked_mul(100_000_000)
        .and_then(|v| v.checked_add(frac))
        .filter(|v| *v <= 21_000_000 * 100_000_000)
        .ok_or_else(|| format!("{t:?} is more bitcoin than there will ever be"))
}

/// Fiat as written ("1234.56") in minor units.
fn parse_minor(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(format!("{t:?} is not an amount like 1234.56"));
    }
    let int: i64 = int.parse().map_err(|_| format!("{t:?} is too large"))?;
    Ok(int.saturating_mul(100) + format!("{frac:0<2}").parse::<i64>().unwrap_or(0))
}

fn read_rows(file: &PathBuf, header: &[&str]) -> Result<Vec<(usize, csv::StringRecord)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let got: Vec<String> = r.headers()?.iter().map(str::to_string).collect();
    if got != header {
        bail!(
            "{}:1: the header must be `{}` (found `{}`)",
            file.display(),
            header.join(","),
            got.join(",")
        );
    }
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}:{}", file.display(), i + 2))?;
        rows.push((i + 2, rec));
    }
    Ok(rows)
}

/// A payout as entered (CSV row or API body): time, pool's reference, BTC as written, source.
pub fn payout_of(time: &str, reference: &str, btc: &str, source: &str) -> Result<Payout, String> {
    if reference.trim().is_empty() || reference.len() > 200 {
        return Err(
            "the reference must be the pool's payout or transaction id (1 to 200 characters)"
                .into(),
        );
    }
    if source.len() > 200 {
        return Err("the source is longer than 200 characters".into());
    }
    Ok(Payout {
        at: parse_time(time)?,
        reference: reference.trim().to_string(),
        sat: parse_sat(btc)?,
        source: source.trim().to_string(),
    })
}

/// A sale as entered: time, reference, BTC sold, fiat received ("1234.56") and its currency.
pub fn sale_of(
    time: &str,
    reference: &str,
    btc: &str,
    fiat: &str,
    currency: &str,
) -> Result<Sale, String> {
    let code = currency.trim().to_ascii_uppercase();
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(format!("currency {currency:?} is not a code like USD"));
    }
    if reference.trim().is_empty() || reference.len() > 200 {
        return Err("the reference must be the trade or invoice id (1 to 200 characters)".into());
    }
    Ok(Sale {
        at: parse_time(time)?,
        reference: reference.trim().to_string(),
        sat: parse_sat(btc)?,
        fiat_minor: parse_minor(fiat)?,
        currency: code,
    })
}

pub fn ledger(cmd: &LedgerCommand) -> Result<()> {
    match cmd {
        LedgerCommand::ImportPayouts { at, file } => {
            let mut payouts = Vec::new();
            for (line, r) in read_rows(file, &["time", "reference", "btc", "source"])? {
                payouts.push(
                    payout_of(&r[0], &r[1], &r[2], &r[3])
                        .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", file.display()))?,
                );
            }
            let (mut store, site) = open(at)?;
            let new = store.add_payouts(&site, &payouts)?;
            println!(
                "{new} new payouts entered ({} already there)",
                payouts.len() - new
            );
        }
        LedgerCommand::ImportSales { at, file } => {
            let mut sales = Vec::new();
            for (line, r) in read_rows(file, &["time", "reference", "btc", "fiat", "currency"])? {
                sales.push(
                    sale_of(&r[0], &r[1], &r[2], &r[3], &r[4])
                        .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", file.display()))?,
                );
            }
            let (mut store, site) = open(at)?;
            let new = store.add_sales(&site, &sales)?;
            println!(
                "{new} new sales entered ({} already there)",
                sales.len() - new
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btc_amounts_are_exact_satoshis() {
        assert_eq!(parse_sat("0.00123456"), Ok(123_456));
        assert_eq!(parse_sat("1"), Ok(100_000_000));
        assert_eq!(parse_sat("1.5"), Ok(150_000_000));
        assert_eq!(parse_sat(".1"), Ok(10_000_000));
        assert!(parse_sat("0.000000001").unwrap_err().contains("8 decimals"));
        assert!(parse_sat("-1").is_err());
        assert!(parse_sat("1e3").is_err());
        assert!(parse_sat("30000000").unwrap_err().contains("ever be"));
        assert_eq!(parse_minor("1234.5"), Ok(123_450));
        assert!(parse_minor("12.345").is_err());
    }
}
