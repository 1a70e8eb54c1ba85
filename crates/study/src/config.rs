//! The study file (`hashsink study SITE.toml`): its TOML schema, and validation into [`Inputs`]
//! before anything runs. Every error names the file and line, what was wrong and how to fix it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashsink_core::fleet::line_of;
use hashsink_core::{AsicModel, Catalogue, FirmwareKind};
use hashsink_market::MarketHistory;
use hashsink_market::forward::ForwardModel;
use hashsink_twin::NuclearMethod;
use hashsink_twin::profile::Profile;
use hashsink_units::Timestamp;
use hashsink_units::format_time;
use jiff::civil::Date;
use serde::Deserialize;

/// A study file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// Shown at the top of the report.
    pub title: Option<String>,
    pub surplus: SurplusSection,
    #[serde(default)]
    pub alternative: AlternativeSection,
    #[serde(rename = "model")]
    pub models: Vec<ModelSection>,
    #[serde(default)]
    pub fleet: FleetSection,
    #[serde(default)]
    pub costs: CostsSection,
    #[serde(default)]
    pub finance: FinanceSection,
    #[serde(default)]
    pub market: MarketSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurplusSection {
    /// `nuclear`, `wind` or `csv`.
    pub profile: String,
    /// nuclear: the unit's size.
    pub unit_mw: Option<f64>,
    /// nuclear: exports the grid takes above demand; csv with generation and demand: the export
    /// limit above demand.
    pub export_limit_mw: Option<f64>,
    /// wind: the plant's export cap.
    pub export_cap_mw: Option<f64>,
    /// csv: the file, relative to the study file.
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlternativeSection {
    /// `hoep` (the bundled Ontario price) or none.
    pub series: Option<String>,
    /// A CSV `timestamp,price_usd_per_mwh`, relative to the study file.
    pub file: Option<PathBuf>,
    /// A flat price for the energy if it is not mined, USD/MWh.
    pub flat_usd_per_mwh: Option<f64>,
    /// US dollars per Canadian dollar, for `hoep`.
    pub usd_per_cad: Option<f64>,
    /// Allow negative prices in the series (a market that pays to take power).
    #[serde(default)]
    pub allow_negative: bool,
    /// What the alternative is, for the report ("export at HOEP", "electric boiler", ...).
    pub label: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model of the catalogue ("Antminer S21 XP", "s21xp").
    pub name: String,
    #[serde(default)]
    pub firmware: FirmwareKind,
    /// Hardware price, USD per TH/s; default: the catalogue's price over its hashrate.
    pub usd_per_th: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// Installed sizes to sweep, MW; default: eight sizes up to the profile's peak.
    pub sizes_mw: Option<Vec<f64>>,
    /// The design to report in detail; default: the sweep's best median NPV.
    pub installed_mw: Option<f64>,
    /// Miners simulated per dispatch run: each stands for installed / this many real ones.
    pub dispatch_miners: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostsSection {
    pub infrastructure_usd_per_mw: Option<f64>,
    pub opex_usd_per_mw_year: Option<f64>,
    pub opex_usd_per_mwh: Option<f64>,
    pub pool_fee: Option<f64>,
    pub failure_rate_per_year: Option<f64>,
    pub efficiency_decay_per_year: Option<f64>,
    pub uptime: Option<f64>,
    pub salvage_share: Option<f64>,
    /// What energy drawn from the grid costs (sleeping miners' standby when there is no
    /// surplus, and any control import), USD/MWh; default: the alternative price of the hour.
    pub import_usd_per_mwh: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinanceSection {
    pub horizon_years: Option<f64>,
    pub discount_rate: Option<f64>,
    /// `daily` (sell as mined), `hold` (sell at the horizon), or the share sold as mined (0..1).
    pub sell: Option<SellSetting>,
    /// Keep the fleet asleep on days when the coins would not pay for the energy's alternative
    /// value and the variable opex (default true).
    pub mine_only_when_profitable: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SellSetting {
    Word(String),
    Share(f64),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    /// `monte-carlo` (default) or `backtest`.
    pub mode: Option<String>,
    /// First day of the horizon; default: the last day of the bundled data.
    pub start: Option<String>,
    pub paths: Option<usize>,
    pub seed: Option<u64>,
    pub fit_from: Option<String>,
    pub fit_to: Option<String>,
    pub block_days: Option<usize>,
    /// BTC price drift per year: a share (0.0, the default: no trend) or "fitted" (the fit
    /// window's own trend). The report shows the verdict under both.
    pub price_drift_per_year: Option<DriftSetting>,
    /// Network hashrate growth per year instead of the fitted one.
    pub hashrate_growth_per_year: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum DriftSetting {
    Word(String),
    Rate(f64),
}

/// The BTC price trend the verdict's paths carry.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceDrift {
    /// The fit window's own trend.
    Fitted,
    /// This share per year (0: none).
    Set(f64),
}

/// What a study error says: where, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct StudyError {
    pub origin: String,
    pub message: String,
}

/// One candidate miner.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub model: AsicModel,
    pub firmware: FirmwareKind,
    pub usd_per_th: f64,
}

impl Candidate {
    pub fn name(&self) -> String {
        format!("{} ({})", self.model.model, self.firmware.key())
    }
}

/// The value of the surplus if it is not mined.
#[derive(Clone, Debug)]
pub enum Alternative {
    Flat(f64),
    /// Prices in USD/MWh, each from its time until the next.
    Series(Vec<(Timestamp, f64)>),
}

impl Alternative {
    /// A reader for times that only move forward.
    pub fn price_at(&self, t: Timestamp, cursor: &mut usize) -> f64 {
        match self {
            Alternative::Flat(p) => *p,
            Alternative::Series(s) => {
                while *cursor + 1 < s.len() && s[*cursor + 1].0 <= t {
                    *cursor += 1;
                }
                s[*cursor].1
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Costs {
    pub infrastructure_usd_per_mw: f64,
    pub opex_usd_per_mw_year: f64,
    pub opex_usd_per_mwh: f64,
    pub pool_fee: f64,
    pub failure_rate_per_year: f64,
    pub efficiency_decay_per_year: f64,
    pub uptime: f64,
    pub salvage_share: f64,
    /// What imported energy costs, USD/MWh (None: the alternative price of the hour, at least 0).
    pub import_usd_per_mwh: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Finance {
    pub horizon_years: f64,
    pub discount_rate: f64,
    /// Share of mined coins sold the day they are mined; the rest is sold at the horizon.
    pub sell_share: f64,
    pub mine_only_when_profitable: bool,
}

#[derive(Clone, Debug)]
pub enum MarketMode {
    MonteCarlo {
        /// The model of the verdict's paths (with the study's price drift).
        model: Box<ForwardModel>,
        /// The same fit with its own price trend, for the fitted-drift figures.
        fitted: Box<ForwardModel>,
        drift: PriceDrift,
        paths: usize,
        seed: u64,
    },
    Backtest {
        start: Date,
    },
}

/// A validated study, ready to run.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub title: String,
    pub profile: Arc<Profile>,
    pub alternative: Alternative,
    pub alternative_label: String,
    pub candidates: Vec<Candidate>,
    pub sizes_mw: Vec<f64>,
    pub installed_mw: Option<f64>,
    pub dispatch_miners: u32,
    pub costs: Costs,
    pub finance: Finance,
    pub market: MarketMode,
    pub history: Arc<MarketHistory>,
    /// Sources of the data used, for the report's attribution lines.
    pub attributions: Vec<String>,
}

impl Inputs {
    pub fn horizon_days(&self) -> usize {
        (self.finance.horizon_years * 365.25).round() as usize
    }

    pub fn market_start(&self) -> Date {
        match &self.market {
            MarketMode::MonteCarlo { model, .. } => model.start_date(),
            MarketMode::Backtest { start } => *start,
        }
    }

    pub fn paths(&self) -> usize {
        match &self.market {
            MarketMode::MonteCarlo { paths, .. } => *paths,
            MarketMode::Backtest { .. } => 1,
        }
    }
}

const COIN_METRICS: &str = "Data: Coin Metrics, Inc. (community data), CC BY-NC 4.0";
const IESO: &str = "Data: IESO (Ontario Independent Electricity System Operator)";
const NREL: &str = "Data: RTS-GMLC, NREL/GridMod";
const MAX_PATHS: usize = 1_000_000;

/// The line of `key = ` inside `[table]` (or the table's header, or 1).
fn key_line(text: &str, table: &str, key: &str) -> usize {
    let mut in_table = table.is_empty();
    let mut table_line = 1;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            let name = l.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = name == table;
            if in_table {
                table_line = i + 1;
            }
            continue;
        }
        if in_table {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim() == key {
                    return i + 1;
                }
            }
        }
    }
    table_line
}

struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Checker<'_> {
    fn err(&self, table: &str, key: &str, message: impl Into<String>) -> StudyError {
        StudyError {
            origin: format!(
                "{}:{} ([{table}] {key})",
                self.origin,
                key_line(self.text, table, key)
            ),
            message: message.into(),
        }
    }

    /// A number in `[lo, hi]`, or the default.
    fn number(
        &self,
        table: &str,
        key: &str,
        value: Option<f64>,
        default: f64,
        (lo, hi): (f64, f64),
        hint: &str,
    ) -> Result<f64, StudyError> {
        let v = value.unwrap_or(default);
        if !v.is_finite() || v < lo || v > hi {
            return Err(self.err(
                table,
                key,
                format!("{v} is out of range: it must be between {lo} and {hi}{hint}"),
            ));
        }
        Ok(v)
    }

    fn date(&self, table: &str, key: &str, text: &str) -> Result<Date, StudyError> {
        text.trim().parse().map_err(|_| {
            self.err(
                table,
                key,
                format!("{text:?} is not a date like 2026-03-22"),
            )
        })
    }
}

/// Reads, parses and validates a study file.
pub fn load(path: &Path) -> Result<Inputs, StudyError> {
    let text = hashsink_units::read_input_file(path).map_err(|e| StudyError {
        origin: path.display().to_string(),
        message: format!("cannot read the study file: {e}"),
    })?;
    parse(&text, &path.display().to_string(), path.parent())
}

/// Parses and validates study TOML; `base` resolves relative file names.
pub fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<Inputs, StudyError> {
    let file: StudyFile = toml::from_str(text).map_err(|e| StudyError {
        origin: match e.span() {
            Some(s) => format!("{origin}:{}", line_of(text, s.start)),
            None => origin.to_string(),
        },
        message: e.message().trim().to_string(),
    })?;
    let c = Checker { text, origin };
    let mut attributions = vec![COIN_METRICS.to_string()];
    let profile = surplus(&c, &file.surplus, base, &mut attributions)?;
    let (alternative, default_label) = alternative(&c, &file.alternative, base, &mut attributions)?;
    let candidates = candidates(&c, &file.models)?;
    let (sizes_mw, installed_mw, dispatch_miners) =
        fleet_sizes(&c, &file.fleet, profile.peak().mw())?;
    let costs = costs(&c, &file.costs)?;
    let finance = finance(&c, &file.finance)?;
    let (market, history) = market(&c, &file.market, finance.horizon_years)?;
    Ok(Inputs {
        title: file
            .title
            .clone()
            .unwrap_or_else(|| format!("Mining the surplus of {}", profile.definition)),
        alternative_label: file.alternative.label.clone().unwrap_or(default_label),
        profile: Arc::new(profile),
        alternative,
        candidates,
        sizes_mw,
        installed_mw,
        dispatch_miners,
        costs,
        finance,
        market,
        history,
        attributions,
    })
}

/// A file name of the study file, relative to its folder.
fn resolve(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// The surplus profile the `[surplus]` table names, checked for gaps, length and content.
fn surplus(
    c: &Checker,
    s: &SurplusSection,
    base: Option<&Path>,
    attributions: &mut Vec<String>,
) -> Result<Profile, StudyError> {
    let allowed = |keys: &[(&str, bool)]| -> Result<(), StudyError> {
        for (k, present) in keys {
            if *present {
                return Err(c.err(
                    "surplus",
                    k,
                    format!("`{k}` does not apply to profile = {:?}", s.profile),
                ));
            }
        }
        Ok(())
    };
    let profile = match s.profile.as_str() {
        "nuclear" => {
            allowed(&[
                ("export_cap_mw", s.export_cap_mw.is_some()),
                ("file", s.file.is_some()),
            ])?;
            let unit = c.number("surplus", "unit_mw", s.unit_mw, 1200.0, (1.0, 20_000.0), "")?;
            let limit = c.number(
                "surplus",
                "export_limit_mw",
                s.export_limit_mw,
                1000.0,
                (0.0, 50_000.0),
                "",
            )?;
            attributions.push(IESO.into());
            Profile::nuclear(
                unit,
                NuclearMethod::Excess {
                    export_limit_mw: limit,
                },
            )
        }
        "wind" => {
            allowed(&[
                ("unit_mw", s.unit_mw.is_some()),
                ("export_limit_mw", s.export_limit_mw.is_some()),
                ("file", s.file.is_some()),
            ])?;
            let cap = c.number(
                "surplus",
                "export_cap_mw",
                s.export_cap_mw,
                550.0,
                (0.0, 799.0),
                " (the bundled plant is 799 MW)",
            )?;
            attributions.push(NREL.into());
            Profile::wind(cap)
        }
        "csv" => {
            allowed(&[
                ("unit_mw", s.unit_mw.is_some()),
                ("export_cap_mw", s.export_cap_mw.is_some()),
            ])?;
            let Some(file_name) = &s.file else {
                return Err(c.err("surplus", "profile", "profile = \"csv\" needs `file = \"surplus.csv\"` with the header timestamp,surplus_mw or timestamp,generation_mw,demand_mw"));
            };
            let path = resolve(base, file_name);
            let csv = hashsink_units::read_input_file(&path).map_err(|e| {
                c.err(
                    "surplus",
                    "file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let shown = path.display().to_string();
            let first = csv.lines().next().unwrap_or("").replace(' ', "");
            let profile = if first.starts_with("timestamp,generation_mw,demand_mw") {
                let Some(limit) = s.export_limit_mw else {
                    return Err(c.err("surplus", "file", "a generation/demand file needs `export_limit_mw`: the surplus is generation - demand - export limit"));
                };
                let limit = c.number(
                    "surplus",
                    "export_limit_mw",
                    Some(limit),
                    0.0,
                    (0.0, 1e6),
                    "",
                )?;
                Profile::from_generation_csv(&csv, &shown, limit)
            } else {
                Profile::from_csv(&csv, &shown)
            };
            profile.map_err(|e| StudyError {
                origin: format!("{}:{}", e.origin, e.line),
                message: format!("{}: {}", e.field, e.message),
            })?
        }
        other => {
            return Err(c.err(
                "surplus",
                "profile",
                format!("unknown profile {other:?}: use \"nuclear\", \"wind\" or \"csv\""),
            ));
        }
    };
    check_gaps(&profile).map_err(|m| c.err("surplus", "profile", m))?;
    if profile.duration().as_secs_f64() < 7.0 * 86_400.0 {
        return Err(c.err(
            "surplus",
            "profile",
            "the profile covers less than 7 days; a study needs at least a week (a year shows the seasons)",
        ));
    }
    if profile.peak().w() <= 0.0 {
        return Err(c.err("surplus", "profile", "the profile has no surplus at all"));
    }
    Ok(profile)
}

/// The value of the energy if it is not mined, and the default words for it.
fn alternative(
    c: &Checker,
    a: &AlternativeSection,
    base: Option<&Path>,
    attributions: &mut Vec<String>,
) -> Result<(Alternative, String), StudyError> {
    let set = [
        a.series.is_some(),
        a.file.is_some(),
        a.flat_usd_per_mwh.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set > 1 {
        return Err(c.err(
            "alternative",
            "series",
            "give one of `series`, `file` or `flat_usd_per_mwh`",
        ));
    }
    let (alternative, default_label) = if let Some(series) = &a.series {
        if series != "hoep" {
            return Err(c.err(
                "alternative",
                "series",
                format!("unknown series {series:?}: the bundled one is \"hoep\" (Ontario 2016); use `file` for your own"),
            ));
        }
        let rate = c.number(
            "alternative",
            "usd_per_cad",
            a.usd_per_cad,
            0.74,
            (0.01, 10.0),
            "",
        )?;
        let prices: Vec<(Timestamp, f64)> = Profile::ontario_prices_cad_per_mwh()
            .into_iter()
            .map(|(t, p)| (t, p * rate))
            .collect();
        check_prices(c, &prices, a.allow_negative, "HOEP")?;
        if !attributions.iter().any(|x| x == IESO) {
            attributions.push(IESO.into());
        }
        (
            Alternative::Series(prices),
            format!("export at the Ontario market price (HOEP 2016, {rate} USD/CAD)"),
        )
    } else if let Some(f) = &a.file {
        let path = resolve(base, f);
        let csv = hashsink_units::read_input_file(&path).map_err(|e| {
            c.err(
                "alternative",
                "file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let prices = price_series(&csv, &path.display().to_string())?;
        check_prices(c, &prices, a.allow_negative, &path.display().to_string())?;
        (
            Alternative::Series(prices),
            format!("the prices in {}", path.display()),
        )
    } else {
        let p = a.flat_usd_per_mwh.unwrap_or(0.0);
        if !p.is_finite() || p < 0.0 {
            return Err(c.err(
                "alternative",
                "flat_usd_per_mwh",
                format!("{p} is negative: a flat alternative value is 0 or more (use `file` with allow_negative = true for a market that pays to take power)"),
            ));
        }
        (
            Alternative::Flat(p),
            if p == 0.0 {
                "curtailment (the energy is otherwise lost, worth 0)".to_string()
            } else {
                format!("a flat {p} USD/MWh")
            },
        )
    };
    Ok((alternative, default_label))
}

/// The `[[model]]`s, found in the catalogue and priced.
fn candidates(c: &Checker, models: &[ModelSection]) -> Result<Vec<Candidate>, StudyError> {
    let (text, origin) = (c.text, c.origin);
    let catalogue = Catalogue::bundled();
    if models.is_empty() {
        return Err(c.err(
            "",
            "model",
            "no [[model]]: add at least one, e.g. [[model]] name = \"Antminer S21 XP\"",
        ));
    }
    let mut candidates = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let line = nth_table_line(text, "[[model]]", i);
        let at = |message: String| StudyError {
            origin: format!("{origin}:{line} ([[model]] {})", i + 1),
            message,
        };
        let model = catalogue
            .find(&m.name)
            .map_err(|e| at(e.to_string()))?
            .clone();
        let usd_per_th = match (m.usd_per_th, model.price) {
            (Some(p), _) if p.is_finite() && p > 0.0 && p < 1000.0 => p,
            (Some(p), _) => {
                return Err(at(format!("usd_per_th {p} must be above 0 and below 1000")));
            }
            (None, Some(price)) => price.0 / model.nameplate_hashrate.ths(),
            (None, None) => {
                return Err(at(format!(
                    "the catalogue has no price for {}; set usd_per_th",
                    model.model
                )));
            }
        };
        candidates.push(Candidate {
            model,
            firmware: m.firmware,
            usd_per_th,
        });
    }
    Ok(candidates)
}

/// The sizes to sweep, the size asked for, and the miners each dispatch simulates.
fn fleet_sizes(
    c: &Checker,
    fleet: &FleetSection,
    peak_mw: f64,
) -> Result<(Vec<f64>, Option<f64>, u32), StudyError> {
    let sizes_mw = match &fleet.sizes_mw {
        Some(sizes) => {
            if sizes.is_empty() || sizes.len() > 40 {
                return Err(c.err("fleet", "sizes_mw", "give 1 to 40 sizes"));
            }
            for &mw in sizes {
                if !mw.is_finite() || mw <= 0.0 || mw > 2.0 * peak_mw.max(1.0) {
                    return Err(c.err(
                        "fleet",
                        "sizes_mw",
                        format!("{mw} MW must be above 0 and at most twice the profile's peak ({peak_mw:.1} MW)"),
                    ));
                }
            }
            let mut s = sizes.clone();
            s.sort_by(f64::total_cmp);
            s.dedup();
            s
        }
        None => default_sizes(peak_mw),
    };
    let installed_mw = match fleet.installed_mw {
        Some(mw) if mw.is_finite() && mw > 0.0 && mw <= 2.0 * peak_mw => Some(mw),
        Some(mw) => {
            return Err(c.err(
                "fleet",
                "installed_mw",
                format!(
                    "{mw} MW must be above 0 and at most twice the profile's peak ({peak_mw:.1} MW)"
                ),
            ));
        }
        None => None,
    };
    let dispatch_miners = c.number(
        "fleet",
        "dispatch_miners",
        fleet.dispatch_miners.map(f64::from),
        100.0,
        (10.0, 5000.0),
        "",
    )? as u32;
    Ok((sizes_mw, installed_mw, dispatch_miners))
}

/// Costs, each in its range or at its default.
fn costs(c: &Checker, k: &CostsSection) -> Result<Costs, StudyError> {
    let costs = Costs {
        infrastructure_usd_per_mw: c.number(
            "costs",
            "infrastructure_usd_per_mw",
            k.infrastructure_usd_per_mw,
            300_000.0,
            (0.0, 1e8),
            "",
        )?,
        opex_usd_per_mw_year: c.number(
            "costs",
            "opex_usd_per_mw_year",
            k.opex_usd_per_mw_year,
            25_000.0,
            (0.0, 1e8),
            "",
        )?,
        opex_usd_per_mwh: c.number(
            "costs",
            "opex_usd_per_mwh",
            k.opex_usd_per_mwh,
            2.0,
            (0.0, 1e4),
            "",
        )?,
        pool_fee: c.number(
            "costs",
            "pool_fee",
            k.pool_fee,
            0.02,
            (0.0, 0.5),
            " (a share: 0.02 is 2 %)",
        )?,
        failure_rate_per_year: c.number(
            "costs",
            "failure_rate_per_year",
            k.failure_rate_per_year,
            0.03,
            (0.0, 0.9),
            " (a share of machines per year)",
        )?,
        efficiency_decay_per_year: c.number(
            "costs",
            "efficiency_decay_per_year",
            k.efficiency_decay_per_year,
            0.02,
            (0.0, 0.5),
            " (a share per year)",
        )?,
        uptime: c.number(
            "costs",
            "uptime",
            k.uptime,
            0.97,
            (0.05, 1.0),
            " (a share of the time)",
        )?,
        salvage_share: c.number(
            "costs",
            "salvage_share",
            k.salvage_share,
            0.0,
            (0.0, 1.0),
            " (share of the hardware price recovered at the horizon)",
        )?,
        import_usd_per_mwh: k
            .import_usd_per_mwh
            .map(|v| {
                c.number(
                    "costs",
                    "import_usd_per_mwh",
                    Some(v),
                    0.0,
                    (0.0, 1e4),
                    " (the tariff for energy taken from the grid)",
                )
            })
            .transpose()?,
    };
    Ok(costs)
}

/// The horizon, discounting and how the coins are sold.
fn finance(c: &Checker, f: &FinanceSection) -> Result<Finance, StudyError> {
    let horizon_years = c.number(
        "finance",
        "horizon_years",
        f.horizon_years,
        5.0,
        (0.25, 15.0),
        "",
    )?;
    let discount_rate = c.number(
        "finance",
        "discount_rate",
        f.discount_rate,
        0.10,
        (-0.05, 1.0),
        " (0.10 is 10 %/year)",
    )?;
    let sell_share = match &f.sell {
        None => 1.0,
        Some(SellSetting::Word(w)) if w == "daily" => 1.0,
        Some(SellSetting::Word(w)) if w == "hold" => 0.0,
        Some(SellSetting::Word(w)) => {
            return Err(c.err(
                "finance",
                "sell",
                format!("{w:?}: use \"daily\", \"hold\", or the share sold as mined such as 0.5"),
            ));
        }
        Some(SellSetting::Share(s)) => c.number(
            "finance",
            "sell",
            Some(*s),
            1.0,
            (0.0, 1.0),
            " (the share sold as mined)",
        )?,
    };
    let finance = Finance {
        horizon_years,
        discount_rate,
        sell_share,
        mine_only_when_profitable: f.mine_only_when_profitable.unwrap_or(true),
    };
    Ok(finance)
}

/// The market paths: a Monte Carlo model fitted on the bundled history, or a backtest of it.
fn market(
    c: &Checker,
    m: &MarketSection,
    horizon_years: f64,
) -> Result<(MarketMode, Arc<MarketHistory>), StudyError> {
    let history = Arc::new(MarketHistory::bundled());
    let last = history.last();
    let start = match &m.start {
        Some(s) => {
            let d = c.date("market", "start", s)?;
            if d < history.first() || d > last {
                return Err(c.err(
                    "market",
                    "start",
                    format!(
                        "{d} is outside the bundled data ({} .. {last})",
                        history.first()
                    ),
                ));
            }
            d
        }
        None => last,
    };
    let horizon_days = (horizon_years * 365.25).round() as i64;
    let mode = m.mode.as_deref().unwrap_or("monte-carlo");
    let market = match mode {
        "backtest" => {
            for (key, present) in [
                ("paths", m.paths.is_some()),
                ("fit_from", m.fit_from.is_some()),
                ("block_days", m.block_days.is_some()),
                ("price_drift_per_year", m.price_drift_per_year.is_some()),
                (
                    "hashrate_growth_per_year",
                    m.hashrate_growth_per_year.is_some(),
                ),
            ] {
                if present {
                    return Err(c.err("market", key, format!("`{key}` applies to mode = \"monte-carlo\" only; a backtest replays history once")));
                }
            }
            let end = start
                .checked_add(jiff::Span::new().days(horizon_days - 1))
                .unwrap_or(start);
            if end > last {
                return Err(c.err(
                    "market",
                    "mode",
                    hashsink_market::MarketError::PastTheData { start, end, last }.to_string(),
                ));
            }
            MarketMode::Backtest { start }
        }
        "monte-carlo" => {
            let fit_to = match &m.fit_to {
                Some(s) => c.date("market", "fit_to", s)?,
                None => start,
            };
            let fit_from = match &m.fit_from {
                Some(s) => c.date("market", "fit_from", s)?,
                None => fit_to
                    .checked_sub(jiff::Span::new().years(4))
                    .unwrap_or(history.first())
                    .max(history.first()),
            };
            if fit_from >= fit_to {
                return Err(c.err(
                    "market",
                    "fit_from",
                    format!("{fit_from} is not before fit_to {fit_to}"),
                ));
            }
            let block_days = c.number(
                "market",
                "block_days",
                m.block_days.map(|b| b as f64),
                30.0,
                (1.0, 365.0),
                "",
            )? as usize;
            let paths = m.paths.unwrap_or(2000);
            if paths == 0 || paths > MAX_PATHS {
                return Err(c.err(
                    "market",
                    "paths",
                    format!("{paths} must be between 1 and {MAX_PATHS}"),
                ));
            }
            let rate = |key: &str, x: f64| {
                c.number(
                    "market",
                    key,
                    Some(x),
                    0.0,
                    (-0.9, 5.0),
                    " (a share per year: 0.1 is +10 %)",
                )
            };
            let drift = match &m.price_drift_per_year {
                None => PriceDrift::Set(0.0),
                Some(DriftSetting::Word(w)) if w == "fitted" => PriceDrift::Fitted,
                Some(DriftSetting::Word(w)) => {
                    return Err(c.err(
                        "market",
                        "price_drift_per_year",
                        format!("{w:?}: use \"fitted\" or a share per year such as 0.0 (no trend) or 0.1"),
                    ));
                }
                Some(DriftSetting::Rate(x)) => PriceDrift::Set(rate("price_drift_per_year", *x)?),
            };
            let hashrate_growth = m
                .hashrate_growth_per_year
                .map(|x| rate("hashrate_growth_per_year", x))
                .transpose()?;
            let fitted = ForwardModel::fit(&history, fit_from, fit_to, start, block_days)
                .map_err(|e| c.err("market", "fit_from", e.to_string()))?
                .with_drifts(None, hashrate_growth);
            let model = match drift {
                PriceDrift::Fitted => fitted.clone(),
                PriceDrift::Set(x) => fitted.clone().with_drifts(Some(x), None),
            };
            MarketMode::MonteCarlo {
                model: Box::new(model),
                fitted: Box::new(fitted),
                drift,
                paths,
                seed: m.seed.unwrap_or(1),
            }
        }
        other => {
            return Err(c.err(
                "market",
                "mode",
                format!("unknown mode {other:?}: use \"monte-carlo\" or \"backtest\""),
            ));
        }
    };
    Ok((market, history))
}

/// Eight sizes from 5 % to 100 % of the peak, rounded to two significant figures.
fn default_sizes(peak_mw: f64) -> Vec<f64> {
    let mut v: Vec<f64> = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0]
        .iter()
        .map(|f| round2(f * peak_mw))
        .filter(|&mw| mw > 0.0)
        .collect();
    v.dedup();
    v
}

fn round2(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mag = 10f64.powf(x.log10().floor() - 1.0);
    (x / mag).round() * mag
}

fn nth_table_line(text: &str, header: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(n)
        .map(|(i, _)| i + 1)
        .unwrap_or(1)
}

/// A profile must not skip time: a step more than twice the usual one is a gap.
fn check_gaps(profile: &Profile) -> Result<(), String> {
    let pts = profile.points();
    let mut steps: Vec<f64> = pts.windows(2).map(|w| w[1].0.secs_since(w[0].0)).collect();
    if steps.is_empty() {
        return Ok(());
    }
    steps.sort_by(f64::total_cmp);
    let usual = steps[steps.len() / 2];
    for w in pts.windows(2) {
        let step = w[1].0.secs_since(w[0].0);
        if step > 2.0 * usual {
            return Err(format!(
                "the profile has a gap: nothing between {} and {} ({:.1} h, against a usual step of {:.0} min); fill it (0 where there was no surplus) so the study does not guess",
                format_time(w[0].0),
                format_time(w[1].0),
                step / 3600.0,
                usual / 60.0
            ));
        }
    }
    Ok(())
}

fn check_prices(
    c: &Checker,
    prices: &[(Timestamp, f64)],
    allow_negative: bool,
    what: &str,
) -> Result<(), StudyError> {
    if allow_negative {
        return Ok(());
    }
    if let Some((t, p)) = prices.iter().find(|(_, p)| *p < 0.0) {
        return Err(c.err(
            "alternative",
            "allow_negative",
            format!(
                "{what} has a negative price ({p:.2} USD/MWh at {}); set allow_negative = true if the market pays to take power there",
                format_time(*t)
            ),
        ));
    }
    Ok(())
}

/// `timestamp,price_usd_per_mwh` (the same CSV rules as a surplus profile).
fn price_series(text: &str, origin: &str) -> Result<Vec<(Timestamp, f64)>, StudyError> {
    let rows = hashsink_twin::profile::read_rows(text, origin, &["timestamp", "price_usd_per_mwh"])
        .map_err(|e| StudyError {
            origin: format!("{}:{}", e.origin, e.line),
            message: format!("{}: {}", e.field, e.message),
        })?;
    if rows.is_empty() {
        return Err(StudyError {
            origin: format!("{origin}:1"),
            message: "no prices".into(),
        });
    }
    Ok(rows.into_iter().map(|(_, t, v)| (t, v[0])).collect())
}
