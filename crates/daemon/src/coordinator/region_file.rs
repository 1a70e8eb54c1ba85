//! The region file for `hashsink coordinate`: the broker, the surplus (a national one, each
//! site's local one, or both) from the same `[[signal]]` tables as a site file, and the
//! daemons the surplus is shared among. Validated whole before anything starts, with the file
//! and line of what is wrong.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hashsink_core::fleet::line_of;
use hashsink_core::region::{RegionConfig, ShardConfig};
use hashsink_plantio::region::{CAP_FIELD, CAP_TIME_FIELD, LinkConfig};
use hashsink_units::Watts;
use serde::Deserialize;

use crate::signals::{self, SignalTable, SignalsSetup, Source, TlsKeys};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    coordinator: CoordinatorSection,
    #[serde(default)]
    surplus: SurplusSection,
    /// The national surplus (or cap): every daemon's caps add up to no more.
    #[serde(rename = "signal", default)]
    signals: Vec<toml::Spanned<SignalTable>>,
    #[serde(rename = "site", default)]
    sites: Vec<toml::Spanned<SiteSection>>,
    #[serde(rename = "daemon", default)]
    daemons: Vec<toml::Spanned<DaemonSection>>,
}

/// `[coordinator]`: the broker and the cadence.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordinatorSection {
    /// broker:port, where the daemons report and take their caps.
    broker: String,
    #[serde(default = "default_client_id")]
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    tls: bool,
    ca_file: Option<String>,
    client_pkcs12: Option<String>,
    client_pkcs12_password: Option<String>,
    /// The root of the default topics: `{prefix}/{id}/report`, `{prefix}/{id}/cap`,
    /// `{prefix}/coordinator/state` and `{prefix}/coordinator/allocation`.
    #[serde(default = "default_prefix")]
    topic_prefix: String,
    /// How often caps go out, ms.
    #[serde(default = "default_publish_ms")]
    publish_ms: u64,
    /// A daemon not heard from for this long is silent, s.
    #[serde(default = "default_silent_after_s")]
    silent_after_s: f64,
    /// After a start, caps wait this long at most for every daemon's first report and the
    /// surplus's first reading, s (each daemon holds its cap meanwhile).
    #[serde(default = "default_adopt_for_s")]
    adopt_for_s: f64,
}

fn default_client_id() -> String {
    "hashsink-coordinator".into()
}
fn default_prefix() -> String {
    "hashsink".into()
}
fn default_publish_ms() -> u64 {
    1000
}
fn default_silent_after_s() -> f64 {
    3.0
}
fn default_adopt_for_s() -> f64 {
    10.0
}

/// `[surplus]`: how the national `[[signal]]` tables combine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SurplusSection {
    policy: Option<String>,
    disagreement_mw: Option<f64>,
}

/// `[[site]]`: a site's local surplus, which its daemons together never exceed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteSection {
    name: String,
    policy: Option<String>,
    disagreement_mw: Option<f64>,
    #[serde(rename = "signal", default)]
    signals: Vec<toml::Spanned<SignalTable>>,
}

/// `[[daemon]]`: one daemon of the region, a shard of a site or a whole site.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    id: String,
    site: String,
    /// The most its site file lets it draw, MW: a report of more is refused.
    capacity_mw: f64,
    /// The load it goes to once it has lost its caps for its hold time, MW.
    #[serde(default)]
    failsafe_mw: f64,
    /// How long, from its last report, until its load is surely at `failsafe_mw`, s: its
    /// cap signal's `max_age_s` plus its shed time; for a daemon that dies, until the plant's
    /// interlock on its heartbeat opens its feeder.
    failsafe_after_s: f64,
    report_topic: Option<String>,
    cap_topic: Option<String>,
}

/// A region file, validated: what `hashsink coordinate` runs.
#[derive(Clone, Debug)]
pub struct CoordinatorSetup {
    pub region: RegionConfig,
    pub link: LinkConfig,
    /// Each daemon's cap topic, in the region's order.
    pub cap_topics: Vec<String>,
    /// Where the allocation is published (retained JSON) every round.
    pub allocation_topic: String,
    pub publish_every: Duration,
    /// The national surplus's sources, if the region has them.
    pub national: Option<SignalsSetup>,
    /// Each site with a local surplus, and its sources.
    pub sites: Vec<(String, SignalsSetup)>,
}

impl CoordinatorSetup {
    pub fn load(path: &Path) -> Result<CoordinatorSetup> {
        let text = hashsink_units::read_input_file(path)
            .with_context(|| format!("cannot read the region file {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &path.display().to_string(), &base)
    }

    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<CoordinatorSetup> {
        let file: RegionFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            anyhow!("{origin}:{line}: {}", e.message())
        })?;
        let c = &file.coordinator;
        let seconds =
            |key: &str, v: f64, range: std::ops::RangeInclusive<f64>| -> Result<Duration> {
                if v.is_finite() && range.contains(&v) {
                    Ok(Duration::from_secs_f64(v))
                } else {
                    bail!(
                        "{origin}: [coordinator] {key} = {v} must be between {} and {} s",
                        range.start(),
                        range.end()
                    )
                }
            };
        if !(100..=60_000).contains(&c.publish_ms) {
            bail!("{origin}: [coordinator] publish_ms must be between 100 and 60000");
        }
        let publish_every = Duration::from_millis(c.publish_ms);
        let silent_after = seconds("silent_after_s", c.silent_after_s, 0.2..=3600.0)?;
        if silent_after < publish_every * 2 {
            bail!(
                "{origin}: [coordinator] silent_after_s = {} is under two rounds ({} ms each): a daemon would fall silent between two reports",
                c.silent_after_s,
                c.publish_ms
            );
        }
        let adopt_for = seconds("adopt_for_s", c.adopt_for_s, 0.0..=3600.0)?;
        let prefix = topic(origin, "topic_prefix", &c.topic_prefix)?;
        let shards = daemons(&file.daemons, text, origin, &prefix, silent_after)?;
        let site_names: BTreeSet<&str> = shards.iter().map(|(s, _, _)| s.site.as_str()).collect();
        let sites = site_surpluses(file.sites, text, origin, base_dir, &site_names)?;
        let national = national_surplus(file.signals, &file.surplus, text, origin, base_dir)?;
        if national.is_none() && !site_names.iter().all(|s| sites.iter().any(|(n, _)| n == s)) {
            bail!(
                "{origin}: the region has no surplus to share: give [[signal]] tables (the national surplus or cap), or a [[site]] with [[site.signal]] tables for every site its daemons name"
            );
        }
        let mut report_topics = Vec::new();
        let mut cap_topics = Vec::new();
        let mut region_shards = Vec::new();
        for (shard, report, cap) in shards {
            region_shards.push(shard);
            report_topics.push(report);
            cap_topics.push(cap);
        }
        let mut seen = BTreeSet::new();
        for t in report_topics.iter().chain(&cap_topics) {
            if !seen.insert(t.as_str()) {
                bail!(
                    "{origin}: topic {t:?} is given to two daemons, or as both a report and a cap topic"
                );
            }
        }
        let link = LinkConfig {
            host: String::new(),
            port: 0,
            client_id: c.client_id.clone(),
            credentials: None,
            tls: None,
            keep_alive: Duration::from_secs(5),
            report_topics,
            state_topic: Some(format!("{prefix}/coordinator/state")),
        };
        let link = broker(c, origin, base_dir, link)?;
        Ok(CoordinatorSetup {
            region: RegionConfig {
                shards: region_shards,
                silent_after,
                adopt_for,
            },
            link,
            cap_topics,
            allocation_topic: format!("{prefix}/coordinator/allocation"),
            publish_every,
            national,
            sites,
        })
    }
}

impl CoordinatorSetup {
    /// What the file says, for `coordinate --check`: the broker, each surplus, each daemon
    /// and its topics, and the lines a daemon's site file needs to follow its cap.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let link = &self.link;
        let tls = if link.tls.is_some() { " (TLS)" } else { "" };
        let _ = writeln!(
            out,
            "broker {}:{}{tls}, client id {:?}",
            link.host, link.port, link.client_id
        );
        let _ = writeln!(
            out,
            "a round every {} ms; a daemon is silent after {} s; adoption waits up to {} s",
            self.publish_every.as_millis(),
            self.region.silent_after.as_secs_f64(),
            self.region.adopt_for.as_secs_f64()
        );
        let names = |s: &SignalsSetup| {
            (s.trust.sources.iter())
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.national {
            Some(s) => _ = writeln!(out, "national surplus: {} ({:?})", names(s), s.trust.policy),
            None => _ = writeln!(out, "national surplus: the sites' surpluses added up"),
        }
        for (site, s) in &self.sites {
            let _ = writeln!(
                out,
                "site {site:?}: local surplus from {} ({:?})",
                names(s),
                s.trust.policy
            );
        }
        for (i, d) in self.region.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "daemon {:?} at site {:?}: up to {:.3} MW, fail-safe {:.3} MW after {} s; reports on {}, cap on {}",
                d.id,
                d.site,
                d.capacity.mw(),
                d.failsafe_load.mw(),
                d.failsafe_after.as_secs_f64(),
                link.report_topics[i],
                self.cap_topics[i]
            );
        }
        let _ = writeln!(
            out,
            "allocation (retained JSON) on {}; coordinator state on {}",
            self.allocation_topic,
            link.state_topic.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "\na daemon follows its cap with these tables in its site file (shown for {:?}):\n{}",
            self.region.shards[0].id,
            self.daemon_signal(0)
        );
        out
    }

    /// The tables with which daemon `i` follows its cap and reports: its `[[signal]]`, and
    /// the `[controller]` keys that make it hold a lost cap for half its fail-safe time and
    /// reach its fail-safe load within the other half (a daemon holds a reading for the
    /// longer of the signal's `max_age_s` and the controller's `max_reading_age_ms`).
    pub fn daemon_signal(&self, i: usize) -> String {
        let shard = &self.region.shards[i];
        let half_ms = (shard.failsafe_after.as_millis() as u64 / 2).clamp(1000, 600_000);
        format!(
            "[[signal]]\nname = \"coordinator\"\nkind = \"mqtt\"\naddress = \"{}:{}\"\ntopic = \"{}\"\nfield = \"{CAP_FIELD}\"\ntime_field = \"{CAP_TIME_FIELD}\"\nunit = \"w\"\nmax_mw = {}\nmax_age_s = {}\npublish_topic = \"{}\"\npublish_ms = {}\n\n[controller]\nmax_reading_age_ms = {half_ms}   # a lost cap is held this long\nfailsafe_within_ms = {half_ms}   # then the fail-safe load is reached within this\nfailsafe_load_w = {}\n",
            self.link.host,
            self.link.port,
            self.cap_topics[i],
            shard.capacity.mw(),
            half_ms as f64 / 1000.0,
            self.link.report_topics[i],
            self.publish_every.as_millis(),
            shard.failsafe_load.w()
        )
    }
}

/// A topic to publish on: not empty, no wildcards.
fn topic(origin: &str, key: &str, t: &str) -> Result<String> {
    if t.is_empty() || t.contains(['+', '#']) || t.starts_with('/') || t.ends_with('/') {
        bail!(
            "{origin}: {key} = {t:?} must be a topic like \"region/north-1/cap\" (no wildcards, no leading or trailing /)"
        );
    }
    Ok(t.to_string())
}

/// The `[[daemon]]` tables, with their report and cap topics.
fn daemons(
    tables: &[toml::Spanned<DaemonSection>],
    text: &str,
    origin: &str,
    prefix: &str,
    silent_after: Duration,
) -> Result<Vec<(ShardConfig, String, String)>> {
    if tables.is_empty() {
        bail!(
            "{origin}: the region has no [[daemon]] table (id, site, capacity_mw, failsafe_after_s)"
        );
    }
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for spanned in tables {
        let at = format!("{origin}:{}", line_of(text, spanned.span().start));
        let d = spanned.get_ref();
        let id_ok = !d.id.is_empty()
            && d.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            bail!(
                "{at}: daemon id {:?} must be letters, digits, '-', '_' or '.'",
                d.id
            );
        }
        if !ids.insert(d.id.as_str()) {
            bail!("{at}: a second daemon with id {:?}; ids must differ", d.id);
        }
        if d.site.is_empty() {
            bail!("{at}: daemon {:?} needs `site = \"...\"`", d.id);
        }
        let mw = |key: &str, v: f64| -> Result<Watts> {
            if v.is_finite() && (0.0..=100_000.0).contains(&v) {
                Ok(Watts::from_mw(v))
            } else {
                bail!("{at}: {key} = {v} must be between 0 and 100000 MW")
            }
        };
        let capacity = mw("capacity_mw", d.capacity_mw)?;
        let failsafe_load = mw("failsafe_mw", d.failsafe_mw)?;
        if failsafe_load > capacity {
            bail!("{at}: failsafe_mw is above capacity_mw");
        }
        let failsafe_after = (d.failsafe_after_s.is_finite() && d.failsafe_after_s <= 86_400.0)
            .then(|| Duration::from_secs_f64(d.failsafe_after_s.max(0.0)))
            .filter(|&f| f >= silent_after)
            .ok_or_else(|| {
                anyhow!(
                    "{at}: failsafe_after_s = {} must be at least silent_after_s ({} s) and at most a day",
                    d.failsafe_after_s,
                    silent_after.as_secs_f64()
                )
            })?;
        let report = d
            .report_topic
            .clone()
            .unwrap_or_else(|| format!("{prefix}/{}/report", d.id));
        let cap = d
            .cap_topic
            .clone()
            .unwrap_or_else(|| format!("{prefix}/{}/cap", d.id));
        out.push((
            ShardConfig {
                id: d.id.clone(),
                site: d.site.clone(),
                capacity,
                failsafe_load,
                failsafe_after,
            },
            topic(&at, "report_topic", &report)?,
            topic(&at, "cap_topic", &cap)?,
        ));
    }
    Ok(out)
}

/// Validates one set of `[[signal]]` tables (the national ones, or a site's).
fn surplus_sources(
    tables: Vec<toml::Spanned<SignalTable>>,
    policy: Option<&str>,
    disagreement_mw: Option<f64>,
    (text, origin, base_dir): (&str, &str, &Path),
    what: &str,
    tag: &str,
) -> Result<SignalsSetup> {
    let lines: Vec<usize> = (tables.iter())
        .map(|s| line_of(text, s.span().start))
        .collect();
    let tables: Vec<SignalTable> = tables.into_iter().map(|s| s.into_inner()).collect();
    let policy = signals::parse_policy(policy).map_err(|e| anyhow!("{origin}: {what}: {e}"))?;
    let at = |i: usize| format!("{origin}:{} ({what}, signal {})", lines[i], i + 1);
    let setup = signals::validate(tables, base_dir, &at, tag, policy, disagreement_mw)?;
    for (i, source) in setup.sources.iter().enumerate() {
        if let Source::Mqtt(m) = source
            && m.publish_topic.is_some()
        {
            bail!(
                "{}: publish_topic: the coordinator's signals only read (the daemons publish their own reports)",
                at(i)
            );
        }
    }
    Ok(setup)
}

fn national_surplus(
    tables: Vec<toml::Spanned<SignalTable>>,
    surplus: &SurplusSection,
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<Option<SignalsSetup>> {
    if tables.is_empty() {
        return Ok(None);
    }
    let file = (text, origin, base_dir);
    let (policy, gap) = (surplus.policy.as_deref(), surplus.disagreement_mw);
    surplus_sources(tables, policy, gap, file, "national surplus", "n").map(Some)
}

/// The `[[site]]` tables: each names a site of the daemons, once, with its own sources.
fn site_surpluses(
    tables: Vec<toml::Spanned<SiteSection>>,
    text: &str,
    origin: &str,
    base_dir: &Path,
    daemon_sites: &BTreeSet<&str>,
) -> Result<Vec<(String, SignalsSetup)>> {
    let mut out: Vec<(String, SignalsSetup)> = Vec::new();
    for (k, spanned) in tables.into_iter().enumerate() {
        let at = format!("{origin}:{}", line_of(text, spanned.span().start));
        let site = spanned.into_inner();
        if !daemon_sites.contains(site.name.as_str()) {
            bail!(
                "{at}: [[site]] {:?} is no daemon's site (the daemons' sites: {})",
                site.name,
                daemon_sites.iter().copied().collect::<Vec<_>>().join(", ")
            );
        }
        if out.iter().any(|(n, _)| *n == site.name) {
            bail!("{at}: a second [[site]] named {:?}", site.name);
        }
        if site.signals.is_empty() {
            bail!(
                "{at}: [[site]] {:?} has no [[site.signal]] table: its local surplus comes from one",
                site.name
            );
        }
        let what = format!("site {:?}", site.name);
        let file = (text, origin, base_dir);
        let (policy, gap) = (site.policy.as_deref(), site.disagreement_mw);
        let setup = surplus_sources(site.signals, policy, gap, file, &what, &format!("s{k}-"))?;
        out.push((site.name, setup));
    }
    Ok(out)
}

/// The broker's address, login and TLS, into the link's settings.
fn broker(
    c: &CoordinatorSection,
    origin: &str,
    base_dir: &Path,
    link: LinkConfig,
) -> Result<LinkConfig> {
    let at = format!("{origin}: [coordinator]");
    let (host, port) = signals::host_port(&c.broker).ok_or_else(|| {
        anyhow!(
            "{at} broker = {:?} is not like broker.region.local:1883",
            c.broker
        )
    })?;
    if c.username.is_some() != c.password.is_some() {
        bail!("{at} give both `username` and `password`, or neither");
    }
    // The TLS keys are a signal's: read and checked the same way.
    let tls = TlsKeys {
        tls: c.tls,
        ca_file: c.ca_file.as_deref(),
        client_pkcs12: c.client_pkcs12.as_deref(),
        client_pkcs12_password: c.client_pkcs12_password.as_deref(),
    }
    .read(&at, base_dir)?;
    Ok(LinkConfig {
        host,
        port,
        credentials: c.username.clone().zip(c.password.clone()),
        tls,
        ..link
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CoordinatorSetup, String> {
        CoordinatorSetup::parse(text, "region.toml", Path::new(".")).map_err(|e| e.to_string())
    }

    const HEAD: &str = "[coordinator]\nbroker = \"127.0.0.1:1883\"\n";
    const NATIONAL: &str = "[[signal]]\nname = \"tso\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:1883\"\ntopic = \"grid/surplus\"\nmax_mw = 100\n";

    fn daemon(id: &str, site: &str) -> String {
        format!(
            "[[daemon]]\nid = \"{id}\"\nsite = \"{site}\"\ncapacity_mw = 10\nfailsafe_after_s = 20\n"
        )
    }

    #[test]
    fn the_example_region_parses_with_its_topics_and_sites() {
        let setup = parse(include_str!("../../../../examples/region.toml")).unwrap();
        let ids: Vec<&str> = (setup.region.shards.iter())
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, ["north-1", "north-2", "potash"]);
        assert_eq!(setup.link.report_topics[2], "hashsink/potash/report");
        assert_eq!(setup.cap_topics[0], "hashsink/north-1/cap");
        assert_eq!(setup.sites.len(), 1);
        assert_eq!(setup.sites[0].0, "north");
        assert!(setup.national.is_some());
        assert_eq!(setup.region.shards[0].capacity, Watts::from_mw(180.0));
        // What --check prints for a daemon's site file is a signal table that site files take.
        let text = setup.daemon_signal(0);
        let (signal, controller) = text.split_once("\n[controller]\n").unwrap();
        let table: SignalTable = toml::from_str(signal.trim_start_matches("[[signal]]\n")).unwrap();
        assert_eq!(table.common.name, "coordinator");
        assert_eq!(
            table.common.max_age_s, 10.0,
            "half of failsafe_after_s = 20"
        );
        let settings: hashsink_core::ControllerSettings = toml::from_str(controller).unwrap();
        assert_eq!(settings.max_reading_age_ms, 10_000);
        assert_eq!(settings.failsafe_within_ms, 10_000);
    }

    #[test]
    fn a_wrong_region_file_says_where_and_what_to_do() {
        let bad = |text: String| parse(&text).unwrap_err();
        let two = format!("{HEAD}{NATIONAL}{}{}", daemon("a", "n"), daemon("a", "s"));
        assert!(bad(two).contains("a second daemon with id \"a\""));
        let no_surplus = format!("{HEAD}{}", daemon("a", "n"));
        assert!(bad(no_surplus).contains("no surplus to share"));
        let stray_site = format!(
            "{HEAD}{NATIONAL}{}[[site]]\nname = \"sud\"\n[[site.signal]]\nname = \"m\"\nkind = \"iec104\"\nmax_mw = 1\n",
            daemon("a", "south")
        );
        let e = bad(stray_site);
        assert!(
            e.contains("[[site]] \"sud\" is no daemon's site (the daemons' sites: south)"),
            "{e}"
        );
        let quick = format!(
            "{HEAD}{NATIONAL}{}",
            daemon("a", "n").replace("= 20", "= 1")
        );
        assert!(bad(quick).contains("failsafe_after_s = 1 must be at least silent_after_s"));
        let clash = format!(
            "{HEAD}{NATIONAL}{}{}",
            daemon("a", "n"),
            daemon("b", "n") + "cap_topic = \"hashsink/a/report\"\n"
        );
        assert!(bad(clash).contains("topic \"hashsink/a/report\" is given to two daemons"));
        let publishing = format!(
            "{HEAD}{}publish_topic = \"x\"\n{}",
            NATIONAL,
            daemon("a", "n")
        );
        assert!(bad(publishing).contains("the coordinator's signals only read"));
        let wild = format!("{HEAD}{NATIONAL}{}cap_topic = \"a/+\"\n", daemon("a", "n"));
        assert!(bad(wild).contains("no wildcards"));
        let typo = format!("{HEAD}silent_afer_s = 3\n{NATIONAL}{}", daemon("a", "n"));
        let e = bad(typo);
        assert!(
            e.contains("region.toml:3") && e.contains("silent_afer_s"),
            "{e}"
        );
        let fast = format!("{HEAD}publish_ms = 2000\n{NATIONAL}{}", daemon("a", "n"));
        assert!(bad(fast).contains("under two rounds"));
    }
}
