//! The site file for `hashsink run`: which miners are where, where the surplus comes from, and
//! how the daemon talks to the fleet. Validated whole before anything starts: unknown keys,
//! bad values and bad addresses are reported with the file and line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hashsink_core::fleet::line_of;
use hashsink_core::{
    Catalogue, ControllerConfig, ControllerSettings, FirmwareKind, Fleet, GroupConfig,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    #[serde(default)]
    pub site: SiteSection,
    pub surplus: SurplusSection,
    #[serde(default)]
    pub io: IoSection,
    #[serde(default)]
    pub controller: ControllerSettings,
    #[serde(rename = "group", default)]
    pub groups: Vec<toml::Spanned<SiteGroup>>,
    #[serde(rename = "signal", default)]
    pub signals: Vec<toml::Spanned<crate::signals::SignalTable>>,
    #[serde(default)]
    pub ledger: LedgerSection,
    #[serde(default)]
    pub api: ApiSection,
}

/// `[api]`: where the daemon serves its API and dashboard, over TLS or not, and who may use it
/// (`[[api.token]]` tables).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Where to listen (default: nowhere, unless the surplus source is `http`).
    pub listen: Option<String>,
    /// PEM certificate chain and private key (relative to the site file): serve HTTPS.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Serve tokens over plain HTTP off loopback (a network the site trusts end to end). Off by
    /// default: off loopback, tokens need TLS.
    pub allow_plain_http: bool,
    #[serde(rename = "token")]
    pub tokens: Vec<toml::Spanned<crate::auth::TokenFile>>,
}

/// `[ledger]`: where energy, hashes, coins and every command are recorded.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// Keep a ledger (default true).
    pub enabled: bool,
    /// A SQLite file (relative to the site file) or a `postgres://` URL.
    pub url: String,
    /// The accounting interval, seconds of the daemon's clock (default 60).
    pub interval_s: f64,
    /// Days of per-miner interval rows to keep (older ones are deleted hourly; per-miner daily
    /// totals and the site's intervals are kept forever). 0: keep every row.
    pub keep_miner_intervals_days: f64,
}

impl Default for LedgerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            url: "hashsink-ledger.db".into(),
            interval_s: 60.0,
            keep_miner_intervals_days: 7.0,
        }
    }
}

/// A validated `[ledger]`.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// A SQLite path (absolute) or a PostgreSQL URL.
    pub url: String,
    pub interval: Duration,
    /// How long per-miner interval rows are kept (None: forever).
    pub keep_miner_intervals: Option<Duration>,
    /// Where batches the database refuses are set aside (JSON lines): beside a SQLite file,
    /// else in the site file's folder.
    pub quarantine: std::path::PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteSection {
    pub name: String,
    /// What the miners are left doing when the daemon stops: "sleep" (the safe default) or
    /// "leave" (as they are).
    pub safe_state: SafeState,
    /// Refuse to start if any configured miner does not answer (default: start, report them,
    /// and route around them).
    pub require_all_miners: bool,
}

impl Default for SiteSection {
    fn default() -> Self {
        Self {
            name: "unnamed site".into(),
            safe_state: SafeState::Sleep,
            require_all_miners: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SafeState {
    Sleep,
    Leave,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurplusSection {
    /// "replay" (a profile or CSV, played on the daemon's clock) or "http" (POST /surplus).
    pub source: SurplusKind,
    /// replay: "nuclear", "wind" or a CSV path (relative to the site file).
    pub profile: Option<String>,
    /// replay: nuclear unit size or wind export cap (MW).
    pub unit_mw: Option<f64>,
    /// replay: where in the profile to start (RFC 3339, UTC); default: its start.
    pub start: Option<String>,
    /// http: where to listen for the surplus and operator commands.
    pub listen: Option<String>,
    /// signals: how the [[signal]] sources combine: "minimum" (default), "median", "priority".
    pub policy: Option<String>,
    /// signals: report two sources further apart than this.
    pub disagreement_mw: Option<f64>,
    /// Any source: the plant's day-ahead schedule (CSV `start,cap_mw` or JSON blocks), relative
    /// to the site file; re-read when it changes. The controller wakes slow miners ahead of it.
    pub schedule: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SurplusKind {
    Replay,
    Http,
    /// Plant signals: the [[signal]] tables (Modbus TCP, ...), judged and combined.
    Signals,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoSection {
    /// Limit on one call to one miner.
    pub timeout_ms: u64,
    /// Reads in flight at once, fleet-wide, and as many commands.
    pub concurrency: usize,
    /// How often every miner is read.
    pub telemetry_interval_s: f64,
    /// Limit on identifying one miner at startup.
    pub identify_timeout_ms: u64,
    pub rpc_port: u16,
    pub web_port: u16,
}

impl Default for IoSection {
    fn default() -> Self {
        Self {
            timeout_ms: 2000,
            concurrency: 1024,
            telemetry_interval_s: 5.0,
            identify_timeout_ms: 5000,
            rpc_port: 4028,
            web_port: 80,
        }
    }
}

/// One group of identical miners and their addresses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteGroup {
    pub model: String,
    pub firmware: FirmwareKind,
    /// Addresses: single IPs, CIDR blocks ("10.0.1.0/24", network and broadcast excluded) or
    /// ranges ("10.0.1.10-10.0.1.60").
    pub addresses: Vec<String>,
    pub min_power_w: Option<f64>,
    pub max_power_w: Option<f64>,
    pub standby_w: Option<f64>,
    pub wake_delay_s: Option<f64>,
    pub setpoint_delay_s: Option<f64>,
}

impl IoSection {
    fn check(&self, origin: &str) -> Result<()> {
        if !(50..=60_000).contains(&self.timeout_ms) {
            bail!(
                "{origin}: [io] timeout_ms = {} must be between 50 and 60000",
                self.timeout_ms
            );
        }
        if !(1..=65_536).contains(&self.concurrency) {
            bail!(
                "{origin}: [io] concurrency = {} must be between 1 and 65536",
                self.concurrency
            );
        }
        if !(self.telemetry_interval_s.is_finite()
            && (0.1..=3600.0).contains(&self.telemetry_interval_s))
        {
            bail!(
                "{origin}: [io] telemetry_interval_s = {} must be between 0.1 and 3600",
                self.telemetry_interval_s
            );
        }
        Ok(())
    }
}

impl SurplusSection {
    /// The keys its source needs, the schedule file, the unit's size.
    fn check(&self, origin: &str, base_dir: &Path) -> Result<()> {
        match self.source {
            SurplusKind::Replay if self.profile.is_none() => {
                bail!(
                    "{origin}: [surplus] source = \"replay\" needs `profile` (nuclear, wind or a CSV path)"
                )
            }
            SurplusKind::Http => {
                let listen = self.listen.as_deref().unwrap_or("127.0.0.1:8077");
                listen
                .parse::<std::net::SocketAddr>()
                .map_err(|_| anyhow!("{origin}: [surplus] listen = {listen:?} is not an address like 127.0.0.1:8077"))?;
            }
            _ => {}
        }
        if let Some(schedule) = &self.schedule {
            let path = base_dir.join(schedule);
            let text = hashsink_units::read_input_file(&path).map_err(|e| {
                anyhow!(
                    "{origin}: [surplus] schedule = {schedule:?}: cannot read {}: {e}",
                    path.display()
                )
            })?;
            hashsink_signals::schedule::parse_schedule(&text, &path.display().to_string())
                .map_err(|e| anyhow!("{e} (the [surplus] schedule of {origin})"))?;
        }
        if let Some(mw) = self.unit_mw
            && !(mw.is_finite() && mw > 0.0)
        {
            bail!("{origin}: [surplus] unit_mw = {mw} must be a positive number of MW");
        }
        Ok(())
    }
}

/// The `[[signal]]` tables, read only with `source = "signals"`.
fn signals(
    tables: Vec<toml::Spanned<crate::signals::SignalTable>>,
    surplus: &SurplusSection,
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<Option<crate::signals::SignalsSetup>> {
    let signal_lines: Vec<usize> = tables
        .iter()
        .map(|s| line_of(text, s.span().start))
        .collect();
    let signal_files: Vec<_> = tables.into_iter().map(|s| s.into_inner()).collect();
    Ok(match surplus.source {
        SurplusKind::Signals => {
            let policy = crate::signals::parse_policy(surplus.policy.as_deref())
                .map_err(|e| anyhow!("{origin}: [surplus] {e}"))?;
            Some(
                crate::signals::validate(
                    signal_files,
                    base_dir,
                    &|i| format!("{origin}:{} ([[signal]] {})", signal_lines[i], i + 1),
                    "",
                    policy,
                    surplus.disagreement_mw,
                )
                .map_err(|e| anyhow!("{e}"))?,
            )
        }
        _ if !signal_files.is_empty() => bail!(
            "{origin}:{}: [[signal]] tables are read only with [surplus] source = \"signals\"",
            signal_lines[0]
        ),
        _ => None,
    })
}

/// The `[[group]]`s: every address once, the fleet built from the catalogue, and only
/// firmware with a network driver.
fn groups(
    tables: Vec<toml::Spanned<SiteGroup>>,
    text: &str,
    origin: &str,
) -> Result<(Fleet, Vec<IpAddr>)> {
    let catalogue = Catalogue::bundled();
    let mut groups = Vec::new();
    let mut addresses = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in tables {
        let at = format!("{origin}:{}", line_of(text, g.span().start));
        let g = g.into_inner();
        let mut ips = Vec::new();
        for a in &g.addresses {
            ips.extend(expand_addresses(a).map_err(|e| anyhow!("{at}: addresses: {e}"))?);
        }
        if ips.is_empty() {
            bail!("{at}: the group has no addresses");
        }
        for ip in &ips {
            if !seen.insert(*ip) {
                bail!("{at}: address {ip} is listed twice");
            }
        }
        groups.push((
            at,
            GroupConfig {
                model: g.model.clone(),
                count: Some(ips.len() as u32),
                firmware: g.firmware,
                min_power_w: g.min_power_w,
                max_power_w: g.max_power_w,
                standby_w: g.standby_w,
                wake_delay_s: g.wake_delay_s,
                setpoint_delay_s: g.setpoint_delay_s,
                ..GroupConfig::default()
            },
        ));
        addresses.extend(ips);
    }
    let fleet = hashsink_core::build_fleet(&groups, &catalogue).map_err(|e| anyhow!("{e}"))?;
    for id in fleet.miner_ids() {
        let fw = fleet.spec_of(id).firmware;
        if !matches!(
            fw,
            FirmwareKind::Luxos | FirmwareKind::BraiinsOs | FirmwareKind::StockAntminer
        ) {
            bail!(
                "{origin}: firmware {} has no network driver yet; hashsink run drives luxos, braiins-os and stock-antminer",
                fw.key()
            );
        }
    }
    Ok((fleet, addresses))
}

impl LedgerSection {
    fn validate(&self, origin: &str, base_dir: &Path) -> Result<Option<LedgerConfig>> {
        if !self.enabled {
            return Ok(None);
        }
        let l = self;
        if !(l.interval_s.is_finite() && (1.0..=3600.0).contains(&l.interval_s)) {
            bail!(
                "{origin}: [ledger] interval_s = {} must be between 1 and 3600 seconds",
                l.interval_s
            );
        }
        if l.url.trim().is_empty() {
            bail!(
                "{origin}: [ledger] url is empty: give a file name, a postgres:// URL, or enabled = false"
            );
        }
        let (url, quarantine) =
            if l.url.starts_with("postgres://") || l.url.starts_with("postgresql://") {
                (l.url.clone(), base_dir.join("ledger-quarantine.jsonl"))
            } else {
                let path = base_dir.join(l.url.strip_prefix("sqlite://").unwrap_or(&l.url));
                let quarantine = quarantine_beside(&path);
                (path.display().to_string(), quarantine)
            };
        let keep = l.keep_miner_intervals_days;
        if !(keep.is_finite() && (0.0..=36_500.0).contains(&keep)) {
            bail!(
                "{origin}: [ledger] keep_miner_intervals_days = {keep} must be between 0 (keep all) and 36500"
            );
        }
        Ok(Some(LedgerConfig {
            url,
            quarantine,
            interval: Duration::from_secs_f64(l.interval_s),
            keep_miner_intervals: (keep > 0.0).then(|| Duration::from_secs_f64(keep * 86_400.0)),
        }))
    }
}

/// The quarantine file beside a SQLite ledger: `ledger.db` -> `ledger.db.quarantine.jsonl`.
pub fn quarantine_beside(ledger: &Path) -> std::path::PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".quarantine.jsonl");
    name.into()
}

impl ApiSection {
    /// The tokens, the address to listen on, and the TLS files.
    fn validate(
        &self,
        text: &str,
        origin: &str,
        base_dir: &Path,
    ) -> Result<(
        crate::auth::Tokens,
        Option<std::net::SocketAddr>,
        Option<TlsFiles>,
    )> {
        let token_files: Vec<crate::auth::TokenFile> =
            self.tokens.iter().map(|t| t.get_ref().clone()).collect();
        let token_lines: Vec<usize> = self
            .tokens
            .iter()
            .map(|t| line_of(text, t.span().start))
            .collect();
        let tokens = crate::auth::Tokens::new(&token_files, &|i| {
            format!("{origin}:{} ([[api.token]] {})", token_lines[i], i + 1)
        })
        .map_err(|e| anyhow!(e))?;
        let api_listen = match &self.listen {
            Some(l) => Some(l.parse().map_err(|_| {
                anyhow!("{origin}: [api] listen = {l:?} is not an address like 127.0.0.1:8077")
            })?),
            None => None,
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let (cert, key) = (base_dir.join(cert), base_dir.join(key));
                for (name, p) in [("tls_cert", &cert), ("tls_key", &key)] {
                    if !p.is_file() {
                        bail!(
                            "{origin}: [api] {name} = {} is not a file (PEM, relative to the site file)",
                            p.display()
                        );
                    }
                }
                Some(TlsFiles { cert, key })
            }
            _ => bail!("{origin}: [api] needs both tls_cert and tls_key (PEM files), or neither"),
        };
        Ok((tokens, api_listen, tls))
    }
}

/// A validated site.
pub struct Site {
    pub name: String,
    pub safe_state: SafeState,
    pub require_all_miners: bool,
    pub fleet: Arc<Fleet>,
    /// Address of each miner, aligned with the fleet's miner ids.
    pub addresses: Vec<IpAddr>,
    pub surplus: SurplusSection,
    pub io: IoSection,
    pub controller: ControllerConfig,
    /// The plant signal sources (source = "signals").
    pub signals: Option<crate::signals::SignalsSetup>,
    /// The folder of the site file (CSV paths are relative to it).
    pub base_dir: std::path::PathBuf,
    pub ledger: Option<LedgerConfig>,
    /// The endpoint's tokens (none: open, loopback only).
    pub tokens: crate::auth::Tokens,
    /// `[api] listen`, checked.
    pub api_listen: Option<std::net::SocketAddr>,
    /// `[api] tls_cert` and `tls_key`, resolved against the site file's folder.
    pub tls: Option<TlsFiles>,
    /// `[api] allow_plain_http`.
    pub allow_plain_http: bool,
}

impl Site {
    pub fn load(path: &Path) -> Result<Site> {
        let text = hashsink_units::read_input_file(path)
            .with_context(|| format!("cannot read the site file {}", path.display()))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Site::parse(&text, &path.display().to_string(), base_dir)
    }

    pub fn parse(text: &str, origin: &str, base_dir: std::path::PathBuf) -> Result<Site> {
        let file: SiteFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            anyhow!("{origin}{at}: {}", e.message())
        })?;
        if file.groups.is_empty() {
            bail!(
                "{origin}: no [[group]] of miners; add one with `model`, `firmware` and `addresses`"
            );
        }
        let controller = file
            .controller
            .validate()
            .map_err(|e| anyhow!("{origin}: [controller] {e}"))?;
        file.io.check(origin)?;
        file.surplus.check(origin, &base_dir)?;
        let signals = signals(file.signals, &file.surplus, text, origin, &base_dir)?;
        let (fleet, addresses) = groups(file.groups, text, origin)?;
        let ledger = file.ledger.validate(origin, &base_dir)?;
        let (tokens, api_listen, tls) = file.api.validate(text, origin, &base_dir)?;
        Ok(Site {
            tokens,
            api_listen,
            tls,
            allow_plain_http: file.api.allow_plain_http,
            ledger,
            name: file.site.name,
            safe_state: file.site.safe_state,
            require_all_miners: file.site.require_all_miners,
            fleet: Arc::new(fleet),
            addresses,
            surplus: file.surplus,
            io: file.io,
            controller,
            signals,
            base_dir,
        })
    }

    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io.timeout_ms)
    }

    /// The least time the command rate lets a shed of the whole fleet take: the burst goes at
    /// once, the rest at `max_commands_per_s`.
    pub fn shed_takes(&self) -> Duration {
        let after_burst = (self.fleet.len() as f64 - self.controller.command_burst).max(0.0);
        Duration::from_secs_f64(after_burst / self.controller.max_commands_per_s)
    }
}

const MAX_ADDRESSES_PER_ENTRY: u64 = 1 << 20;

/// Expands "10.0.0.5", "10.0.0.0/24" (hosts only) or "10.0.0.10-10.0.0.60".
pub fn expand_addresses(entry: &str) -> Result<Vec<IpAddr>, String> {
    let entry = entry.trim();
    if let Some((a, b)) = entry.split_once('-') {
        let a: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} in {entry:?} is not an IPv4 address"))?;
        let b: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} in {entry:?} is not an IPv4 address"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a {
            return Err(format!("range {entry:?} ends before it starts"));
        }
        if (b - a) as u64 >= MAX_ADDRESSES_PER_ENTRY {
            return Err(format!(
                "range {entry:?} is larger than {MAX_ADDRESSES_PER_ENTRY} addresses"
            ));
        }
        return Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect());
    }
    if entry.contains('/') {
        let net: ipnet::Ipv4Net = entry
            .parse()
            .map_err(|_| format!("{entry:?} is not a CIDR block like 10.0.1.0/24"))?;
        if net.prefix_len() < 12 {
            return Err(format!("{entry:?} is larger than a /12"));
        }
        return Ok(net.hosts().map(IpAddr::V4).collect());
    }
    entry
        .parse::<IpAddr>()
        .map(|ip| vec![ip])
        .map_err(|_| format!("{entry:?} is not an IP address, a CIDR block or a range a-b"))
}

/// TLS for the endpoint: PEM certificate chain and private key (`[api] tls_cert`, `tls_key`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Source;
    use hashsink_plantio::modbus::{Measure, RegisterType, Table};

    #[test]
    fn the_signals_example_parses_into_judged_sources() {
        let examples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let site = Site::parse(
            include_str!("../../../examples/site-signals.toml"),
            "examples/site-signals.toml",
            examples.clone(),
        )
        .unwrap();
        assert_eq!(site.surplus.schedule.as_deref(), Some("day-ahead.csv"));
        // A schedule that does not parse stops the site from loading, with the line.
        let dir = std::env::temp_dir().join(format!("hashsink-schedule-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("day-ahead.csv"),
            "start,cap_mw\n2026-11-24T06:00:00Z,lots\n",
        )
        .unwrap();
        let e = Site::parse(
            include_str!("../../../examples/site-signals.toml"),
            "site.toml",
            dir.clone(),
        )
        .err()
        .expect("a bad schedule is refused")
        .to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            e.contains("day-ahead.csv:2") && e.contains("not a number"),
            "{e}"
        );
        let signals = site.signals.expect("source = signals");
        assert_eq!(signals.trust.policy, hashsink_signals::Policy::Minimum);
        assert_eq!(signals.trust.sources.len(), 5);
        assert_eq!(signals.trust.sources[0].max_age, Duration::from_secs(5));
        let Source::Modbus(meter) = &signals.sources[0] else {
            panic!("the meter is modbus")
        };
        let Measure::Surplus(r) = meter.measure else {
            panic!("the meter gives the surplus")
        };
        assert_eq!(
            (r.table, r.address, r.kind),
            (Table::Holding, 0, RegisterType::F32)
        );
        assert!(meter.write_fleet_load.is_some() && meter.write_setpoint.is_some());
        let Source::Modbus(plc) = &signals.sources[1] else {
            panic!("the PLC is modbus")
        };
        assert!(matches!(plc.measure, Measure::Balance { .. }));
        let Source::Mqtt(broker) = &signals.sources[2] else {
            panic!("the broker is mqtt")
        };
        assert_eq!((broker.host.as_str(), broker.port), ("127.0.0.1", 1883));
        assert_eq!(broker.payload.field.as_deref(), Some("available_kw"));
        assert_eq!(broker.publish_topic.as_deref(), Some("hashsink/fleet"));
        let Source::OpenAdr(ven) = &signals.sources[3] else {
            panic!("the utility is openadr")
        };
        assert_eq!(ven.ven_name, "minerfleet1");
        assert_eq!(ven.poll, None);
        assert_eq!(
            ven.mapping.simple_levels[1],
            hashsink_units::Watts::from_mw(0.25)
        );
        assert_eq!(ven.mapping.price_ceiling, Some(0.12));
        assert_eq!(ven.mapping.default_watts_per_unit, 1e3);
        let Source::Iec104(scada) = &signals.sources[4] else {
            panic!("the SCADA station is iec104")
        };
        assert_eq!(
            (
                scada.port,
                scada.common_address,
                scada.surplus_ioa,
                scada.trip_ioa
            ),
            (2404, 47, 11, Some(20))
        );
        assert_eq!(scada.interrogate_every, Duration::from_secs(2));
        assert_eq!(scada.unit.watts(), 1e6);
        assert_eq!(site.fleet.len(), 100);
    }

    #[test]
    fn bad_signal_tables_name_the_line_and_the_fix() {
        let group =
            "[[group]]\nmodel = \"S21\"\nfirmware = \"luxos\"\naddresses = [\"10.0.0.1\"]\n";
        let bad = |signal: &str| {
            let text = format!("[surplus]\nsource = \"signals\"\n{group}[[signal]]\n{signal}");
            match Site::parse(&text, "site.toml", ".".into()) {
                Ok(_) => panic!("accepted: {signal}"),
                Err(e) => e.to_string(),
            }
        };
        let e = bad("name = \"m\"\nkind = \"modbus\"\naddress = \"127.0.0.1:502\"\nmax_mw = 5\n");
        assert!(e.contains("site.toml:7") && e.contains("generation"), "{e}");
        let e = bad("name = \"m\"\nkind = \"opc\"\nmax_mw = 5\n");
        assert!(e.contains("\"openadr\" and \"iec104\""), "{e}");
        let e = bad(
            "name = \"s\"\nkind = \"iec104\"\naddress = \"127.0.0.1:2404\"\nsurplus_ioa = 11\nmax_mw = 5\n",
        );
        assert!(e.contains("common_address"), "{e}");
        let e = bad(
            "name = \"s\"\nkind = \"iec104\"\naddress = \"127.0.0.1:2404\"\ncommon_address = 1\nsurplus_ioa = 16777216\nmax_mw = 5\n",
        );
        assert!(e.contains("three octets"), "{e}");
        let e = bad(
            "name = \"s\"\nkind = \"modbus\"\naddress = \"127.0.0.1:502\"\nmax_mw = 5\nsurplus_ioa = 3\n",
        );
        assert!(e.contains("unknown field `surplus_ioa`"), "{e}");
        let e = bad(
            "name = \"u\"\nkind = \"openadr\"\naddress = \"https://vtn:8443/OpenADR2/Simple/2.0b\"\nven_name = \"v\"\nmax_mw = 5\n",
        );
        assert!(e.contains("only http://"), "{e}");
        let e =
            bad("name = \"u\"\nkind = \"openadr\"\naddress = \"http://vtn:8080/\"\nmax_mw = 5\n");
        assert!(e.contains("ven_name"), "{e}");
        let e = bad(
            "name = \"u\"\nkind = \"openadr\"\naddress = \"http://vtn:8080/\"\nven_name = \"v\"\nmax_mw = 5\nsimple_levels_mw = [5, 2, 0, 9]\n",
        );
        assert!(e.contains("simple_levels_mw[3]"), "{e}");
        let e = bad(
            "name = \"u\"\nkind = \"openadr\"\naddress = \"http://vtn:8080/\"\nven_name = \"v\"\nmax_mw = 5\ntopic = \"x\"\n",
        );
        assert!(
            e.contains("kind = \"openadr\": unknown field `topic`"),
            "{e}"
        );
        let e = bad(
            "name = \"m\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:1883\"\ntopic = \"p\"\nmax_mw = 5\nven_name = \"v\"\n",
        );
        assert!(
            e.contains("unknown field `ven_name`") && e.contains("topic"),
            "{e}"
        );
        let e = bad(
            "name = \"m\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:1883\"\ntopic = \"plant/#\"\nmax_mw = 5\n",
        );
        assert!(e.contains("no wildcards"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:1883\"\ntopic = \"p\"\nmax_mw = 5\nusername = \"u\"\n",
        );
        assert!(e.contains("password"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:8883\"\ntopic = \"p\"\nmax_mw = 5\nca_file = \"ca.pem\"\n",
        );
        assert!(e.contains("need `tls = true`"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:8883\"\ntopic = \"p\"\nmax_mw = 5\ntls = true\nca_file = \"no-such-ca.pem\"\n",
        );
        assert!(
            e.contains("no-such-ca.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = bad(
            "name = \"m\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:8883\"\ntopic = \"p\"\nmax_mw = 5\ntls = true\nca_file = \"Cargo.toml\"\n",
        );
        assert!(e.contains("not a PEM certificate"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"modbus\"\naddress = \"plc\"\nmax_mw = 5\nsurplus = { address = 0, type = \"f32\" }\n",
        );
        assert!(e.contains("not like"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"modbus\"\naddress = \"127.0.0.1:502\"\nmax_mw = 5\nsurplus = { address = 0, type = \"f64\" }\n",
        );
        assert!(e.contains("f64") || e.contains("unknown variant"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"modbus\"\naddress = \"127.0.0.1:502\"\nmax_mw = 5\nsurplus = { address = 0, type = \"u16\" }\nwrite_setpoint = { table = \"input\", address = 3, type = \"u16\" }\n",
        );
        assert!(e.contains("holding register"), "{e}");
        let e = bad(
            "name = \"m\"\nkind = \"modbus\"\naddress = \"127.0.0.1:502\"\nmax_mw = 5\npoll_ms = 6000\nsurplus = { address = 0, type = \"u16\" }\n",
        );
        assert!(e.contains("stale"), "{e}");
    }

    #[test]
    fn addresses_expand() {
        assert_eq!(expand_addresses("10.0.0.1-10.0.0.3").unwrap().len(), 3);
        assert_eq!(expand_addresses("10.0.0.0/30").unwrap().len(), 2);
        assert_eq!(expand_addresses("10.0.0.9").unwrap().len(), 1);
        assert!(
            expand_addresses("10.0.0.300")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(
            expand_addresses("10.0.0.9-10.0.0.1")
                .unwrap_err()
                .contains("ends before")
        );
    }

    #[test]
    fn the_shed_time_the_command_rate_allows_counts_the_burst_once() {
        let site = |controller: &str| {
            let text = format!(
                "[surplus]\nsource = \"replay\"\nprofile = \"nuclear\"\n{controller}[[group]]\nmodel = \"S21\"\nfirmware = \"luxos\"\naddresses = [\"10.0.0.0/16\"]\n"
            );
            Site::parse(&text, "site.toml", ".".into()).unwrap()
        };
        // 65,534 miners; the default rate and burst of 10,000: 5.5 s.
        let slow = site("").shed_takes().as_secs_f64();
        assert!((slow - 5.5534).abs() < 1e-3, "{slow}");
        let fast = "[controller]\nmax_commands_per_s = 100000\ncommand_burst = 70000\n";
        assert_eq!(site(fast).shed_takes(), Duration::ZERO);
    }

    #[test]
    fn typos_and_bad_values_name_the_line() {
        let text = "[surplus]\nsource = \"replay\"\nprofile = \"nuclear\"\n\n[[group]]\nmodel = \"S21\"\nfirmware = \"luxos\"\naddreses = [\"10.0.0.1\"]\n";
        let e = Site::parse(text, "site.toml", ".".into())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("site.toml:") && e.contains("addreses"), "{e}");
        let text = "[surplus]\nsource = \"replay\"\nprofile = \"nuclear\"\n[io]\ntimeout_ms = 5\n[[group]]\nmodel = \"S21\"\nfirmware = \"luxos\"\naddresses = [\"10.0.0.1\"]\n";
        let e = Site::parse(text, "site.toml", ".".into())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("timeout_ms"), "{e}");
        let text = "[surplus]\nsource = \"replay\"\nprofile = \"nuclear\"\n[[group]]\nmodel = \"S21\"\nfirmware = \"luxos\"\naddresses = [\"10.0.0.1\", \"10.0.0.1\"]\n";
        let e = Site::parse(text, "site.toml", ".".into())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }
}
