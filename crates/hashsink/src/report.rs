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
use hashsink_ledger::Store;
use hashsink_ledger::coins::{payout_of, sale_of};
use hashsink_ledger::statement::{ALL_SITES, Statement, all_sites, statements};
use hashsink_units::Timestamp;
use hashsink_units::parse_time;

use hashsink_daemon::site::Site;

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
    /// The ledger itself (a SQLite path or postgres:// URL), instead of the site file's
    /// (with --site, or `report --all-sites`).
    #[arg(long)]
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
    #[arg(long, conflicts_with = "all_sites")]
    pub miners: bool,
    /// Every site in the ledger (the daemons of a region sharing one PostgreSQL ledger), one
    /// after the other, then all of them together.
    #[arg(long)]
    pub all_sites: bool,
}

/// Opens the ledger `at` names, and the site in it; `any_site`: no site is needed (the
/// site returned is then empty where none was given).
pub fn open(at: &LedgerArgs, any_site: bool) -> Result<(Box<dyn Store>, String)> {
    let (url, site) = match (&at.ledger, &at.config) {
        (Some(_), _) if at.site.is_none() && !any_site => {
            bail!("--ledger needs --site NAME (the site's name in the ledger)")
        }
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
    let (mut store, site) = open(&args.at, args.all_sites)?;
    let started = std::time::Instant::now();
    let sections = if args.all_sites {
        all_sites(store.as_mut(), from, to)?
    } else {
        vec![(site.clone(), statements(store.as_mut(), &site, from, to)?)]
    };
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
            let mut t = String::new();
            for (site, rows) in &sections {
                t += &format!(
                    "{site}: {} to {}\n\n| {} |\n|{}\n",
                    args.from,
                    args.to,
                    COLUMNS.join(" | "),
                    "---|".repeat(COLUMNS.len())
                );
                for r in rows {
                    t += &format!("| {} |\n", cells(r).join(" | "));
                }
                t += if sections.len() > 1 { "\n" } else { "" };
            }
            t
        }
        Format::Csv => {
            // Two sections of different widths: the statement, then (with --miners) the miners.
            let mut w = csv::WriterBuilder::new()
                .flexible(true)
                .from_writer(Vec::new());
            // Every site's rows, each with its site first.
            let by_site = args.all_sites;
            let site_column = by_site.then_some("site");
            w.write_record(site_column.into_iter().chain(COLUMNS))?;
            for (site, rows) in &sections {
                for r in rows {
                    let site = by_site.then(|| site.clone());
                    w.write_record(site.into_iter().chain(cells(r)))?;
                }
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
            let title = if args.all_sites {
                ALL_SITES
            } else {
                site.as_str()
            };
            let mut h = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}: energy and production statement</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}</style></head><body><h1>{0}</h1><p>Energy and production statement, {1} to {2} (UTC), from the ledger.</p>",
                html_escape(title),
                html_escape(&args.from),
                html_escape(&args.to)
            );
            for (site, rows) in &sections {
                if args.all_sites {
                    h += &format!("<h2>{}</h2>", html_escape(site));
                }
                h += "<table><tr>";
                for c in COLUMNS {
                    h += &format!("<th>{c}</th>");
                }
                h += "</tr>";
                for r in rows {
                    h += "<tr>";
                    for c in cells(r) {
                        h += &format!("<td>{}</td>", html_escape(&c));
                    }
                    h += "</tr>";
                }
                h += "</table>";
            }
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

fn read_rows(file: &PathBuf, header: &[&str]) -> Result<Vec<(usize, csv::StringRecord)>> {
    let text = hashsink_units::read_input_file(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
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
            let (mut store, site) = open(at, false)?;
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
            let (mut store, site) = open(at, false)?;
            let new = store.add_sales(&site, &sales)?;
            println!(
                "{new} new sales entered ({} already there)",
                sales.len() - new
            );
        }
    }
    Ok(())
}
