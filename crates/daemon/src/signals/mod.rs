//! Plant signal sources in the site file (`[[signal]]` tables, `[surplus] source = "signals"`).
//! Each table is the keys every source has ([`Common`]: name, trust rules, polling) and those
//! of its kind ([`SourceConfig`], tagged by `kind`); each kind's module owns its keys, their
//! validation and the source it builds, and a key of another kind is refused by name. At run
//! time one task per source sends its events to the daemon's loop, and the [`SignalDesk`] there
//! judges them.

mod desk;
mod iec104;
mod modbus;
mod mqtt;
mod openadr;

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashsink_clock::ScaledClock;
use hashsink_plantio::iec104::Iec104Source;
use hashsink_plantio::modbus::ModbusSource;
use hashsink_plantio::mqtt::MqttSource;
use hashsink_plantio::openadr::OpenAdrSource;
use hashsink_plantio::{FleetReport, SignalEvent};
use hashsink_signals::{Policy, SourceId, SourceRules, TrustConfig};
use hashsink_units::Watts;
use serde::{Deserialize, Deserializer};
use tokio::sync::{mpsc, watch};

pub use desk::{Protection, SignalAction, SignalDesk};
pub use iec104::Iec104Config;
pub use modbus::{ModbusConfig, TripRegister};
pub use mqtt::MqttConfig;
pub(crate) use mqtt::TlsKeys;
pub use openadr::OpenAdrConfig;

/// The largest surplus a source may report, MW.
const MAX_SOURCE_MW: f64 = 100_000.0;
/// How far ahead of the daemon's clock a reading's own time may be before it is refused.
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(2);

/// The keys every `[[signal]]` table has, whatever its kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    pub name: String,
    /// How often to read (modbus and iec104: default 500; openadr: as the VTN asks).
    pub poll_ms: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A reading older than this is stale.
    #[serde(default = "default_max_age_s")]
    pub max_age_s: f64,
    #[serde(default)]
    pub min_mw: f64,
    pub max_mw: f64,
    /// A rise larger than this is implausible until confirmed by `jump_confirmations` readings.
    pub max_step_mw: Option<f64>,
    #[serde(default = "default_confirmations")]
    pub jump_confirmations: u8,
}

/// [`Common`]'s keys, which a table's kind does not see.
const COMMON_KEYS: [&str; 8] = [
    "name",
    "poll_ms",
    "timeout_ms",
    "max_age_s",
    "min_mw",
    "max_mw",
    "max_step_mw",
    "jump_confirmations",
];

fn default_timeout_ms() -> u64 {
    1000
}
fn default_max_age_s() -> f64 {
    5.0
}
fn default_confirmations() -> u8 {
    3
}

impl Common {
    /// The polling period where the kind polls (modbus, iec104).
    pub fn poll_ms(&self) -> u64 {
        self.poll_ms.unwrap_or(500)
    }
}

/// The `kind`s [`SourceConfig`] knows.
const KINDS: [&str; 4] = ["modbus", "mqtt", "openadr", "iec104"];

/// The keys of a table's kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Modbus(ModbusConfig),
    Mqtt(MqttConfig),
    OpenAdr(OpenAdrConfig),
    Iec104(Iec104Config),
}

/// One `[[signal]]` table as written.
#[derive(Clone, Debug)]
pub struct SignalTable {
    pub common: Common,
    pub source: SourceConfig,
}

impl<'de> Deserialize<'de> for SignalTable {
    /// The common keys go to [`Common`], the rest (with `kind`) to the kind's own table: each
    /// refuses a key it does not know, naming the keys it has.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let mut common = toml::Table::new();
        for key in COMMON_KEYS {
            if let Some(value) = table.remove(key) {
                common.insert(key.to_string(), value);
            }
        }
        let kind = table
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if !KINDS.contains(&kind.as_str()) {
            return Err(D::Error::custom(format!(
                "kind = {kind:?}: the signal kinds are \"modbus\", \"mqtt\", \"openadr\" and \"iec104\""
            )));
        }
        let common: Common = common.try_into().map_err(D::Error::custom)?;
        let source: SourceConfig = table.try_into().map_err(|e: toml::de::Error| {
            D::Error::custom(format!("kind = {kind:?}: {}", e.message()))
        })?;
        Ok(SignalTable { common, source })
    }
}

/// A validated source.
#[derive(Clone, Debug)]
pub enum Source {
    Modbus(ModbusSource),
    Mqtt(MqttSource),
    OpenAdr(OpenAdrSource),
    Iec104(Iec104Source),
}

/// Validated signal sources and how they combine.
#[derive(Clone, Debug)]
pub struct SignalsSetup {
    pub trust: TrustConfig,
    pub sources: Vec<Source>,
}

impl SignalsSetup {
    /// Where the plant can watch the daemon's heartbeat, one line a source that carries it (for
    /// `run --check`); empty when none does.
    pub fn heartbeat_lines(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|source| match source {
                Source::Modbus(m) => m.write_heartbeat.map(|at| {
                    format!(
                        "{:?} (modbus {}): holding register {at}, a u16 counter written after every poll",
                        m.name, m.address
                    )
                }),
                Source::Mqtt(m) => m.publish_topic.as_ref().map(|t| {
                    format!(
                        "{:?} (mqtt {}:{}): field \"heartbeat\" on {t} every {} ms; {t}/status says online, and offline (the broker's last will) once the daemon's connection dies",
                        m.name,
                        m.host,
                        m.port,
                        m.publish_every.as_millis()
                    )
                }),
                Source::OpenAdr(v) if v.report => Some(format!(
                    "{:?} (openadr {}): the TELEMETRY_USAGE reports stop once the loop has not turned for {} s",
                    v.name,
                    v.vtn_url,
                    hashsink_plantio::LoopPulse::STALE.as_secs()
                )),
                Source::OpenAdr(_) | Source::Iec104(_) => None,
            })
            .collect()
    }
}

pub fn parse_policy(policy: Option<&str>) -> Result<Policy, String> {
    match policy.unwrap_or("minimum") {
        "minimum" => Ok(Policy::Minimum),
        "median" => Ok(Policy::Median),
        "priority" => Ok(Policy::Priority),
        other => Err(format!(
            "policy = {other:?}: use \"minimum\" (any source can hold the fleet down), \"median\" or \"priority\""
        )),
    }
}

/// Splits "host:port".
pub(crate) fn host_port(address: &str) -> Option<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
}

/// A power in MW as a source's table may give it.
fn mw(at: &str, key: &str, v: f64) -> Result<Watts> {
    if v.is_finite() && (0.0..=MAX_SOURCE_MW).contains(&v) {
        Ok(Watts::from_mw(v))
    } else {
        Err(anyhow!(
            "{at}: {key} = {v} must be between 0 and {MAX_SOURCE_MW} MW"
        ))
    }
}

/// Validates the `[[signal]]` tables; `at(i)` names the i-th table's file and line; `tag`
/// tells these tables' default MQTT client ids from those of other tables in the same process.
pub fn validate(
    tables: Vec<SignalTable>,
    base_dir: &std::path::Path,
    at: &dyn Fn(usize) -> String,
    tag: &str,
    policy: Policy,
    disagreement_mw: Option<f64>,
) -> Result<SignalsSetup> {
    if tables.is_empty() {
        bail!(
            "[surplus] source = \"signals\" needs at least one [[signal]] table (kind = \"modbus\", \"mqtt\", \"openadr\" or \"iec104\"; see examples/site-signals.toml)"
        );
    }
    let mut rules = Vec::new();
    let mut sources = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, table) in tables.into_iter().enumerate() {
        let at = at(i);
        let common = &table.common;
        if !names.insert(common.name.clone()) {
            bail!(
                "{at}: a second signal named {:?}; names must differ",
                common.name
            );
        }
        let rule = trust_rules(common, &at)?;
        let max = rule.max;
        rules.push(rule);
        sources.push(match &table.source {
            SourceConfig::Modbus(m) => Source::Modbus(m.build(common, &at)?),
            SourceConfig::Mqtt(m) => {
                Source::Mqtt(m.build(common, &at, &format!("{tag}{i}"), base_dir)?)
            }
            SourceConfig::OpenAdr(o) => Source::OpenAdr(o.build(common, &at, max)?),
            SourceConfig::Iec104(s) => Source::Iec104(s.build(common, &at)?),
        });
    }
    let disagreement = disagreement_mw
        .map(|v| {
            if v.is_finite() && v > 0.0 {
                Ok(Watts::from_mw(v))
            } else {
                Err(anyhow!("[surplus] disagreement_mw = {v} must be above 0"))
            }
        })
        .transpose()?;
    Ok(SignalsSetup {
        trust: TrustConfig {
            sources: rules,
            policy,
            disagreement,
            max_future_skew: MAX_FUTURE_SKEW,
        },
        sources,
    })
}

/// The judge's rules for a source: range, freshness, plausible rises; and the polling checks
/// every kind shares.
fn trust_rules(c: &Common, at: &str) -> Result<SourceRules> {
    let (min, max) = (mw(at, "min_mw", c.min_mw)?, mw(at, "max_mw", c.max_mw)?);
    if max <= min {
        bail!("{at}: max_mw must be above min_mw");
    }
    if !(c.max_age_s.is_finite() && (0.1..=3600.0).contains(&c.max_age_s)) {
        bail!(
            "{at}: max_age_s = {} must be between 0.1 and 3600",
            c.max_age_s
        );
    }
    let poll_ms = c.poll_ms();
    if !(10..=60_000).contains(&poll_ms) || !(10..=60_000).contains(&c.timeout_ms) {
        bail!("{at}: poll_ms and timeout_ms must be between 10 and 60000");
    }
    if Duration::from_millis(poll_ms).as_secs_f64() >= c.max_age_s {
        bail!(
            "{at}: poll_ms = {poll_ms} is not shorter than max_age_s = {}: every reading would be stale",
            c.max_age_s
        );
    }
    Ok(SourceRules {
        name: c.name.clone(),
        max_age: Duration::from_secs_f64(c.max_age_s),
        min,
        max,
        max_step: c
            .max_step_mw
            .map(|v| mw(at, "max_step_mw", v))
            .transpose()?,
        jump_confirmations: c.jump_confirmations.max(1),
    })
}

/// Starts one task per source; each sends its readings, failures and trip flags to `events`
/// (the daemon's loop, which judges them: no lock is shared with the sources).
pub fn start_sources(
    setup: &SignalsSetup,
    clock: ScaledClock,
    report: watch::Receiver<FleetReport>,
    events: mpsc::UnboundedSender<SignalEvent>,
) {
    for (i, source) in setup.sources.iter().enumerate() {
        let id = SourceId(i as u16);
        let (tx, report) = (events.clone(), report.clone());
        match source.clone() {
            Source::Modbus(m) => tokio::spawn(m.run(id, clock, tx, report)),
            Source::Mqtt(m) => tokio::spawn(m.run(id, clock, tx, report)),
            Source::OpenAdr(v) => tokio::spawn(v.run(id, clock, tx, report)),
            Source::Iec104(s) => tokio::spawn(s.run(id, clock, tx, report)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<SignalTable, String> {
        toml::from_str::<SignalTable>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn common_keys_are_the_common_tables_fields() {
        // Every key of COMMON_KEYS is a field of Common (deny_unknown_fields would refuse it),
        // and a table with all of them parses.
        let t = table(
            "name = \"n\"\nkind = \"iec104\"\npoll_ms = 100\ntimeout_ms = 200\nmax_age_s = 3\nmin_mw = 0\nmax_mw = 1\nmax_step_mw = 0.5\njump_confirmations = 2\n",
        )
        .unwrap();
        assert_eq!(t.common.poll_ms, Some(100));
        assert_eq!(t.common.jump_confirmations, 2);
        assert!(matches!(t.source, SourceConfig::Iec104(_)));
    }

    #[test]
    fn a_key_of_another_kind_is_refused_by_name() {
        let e = table("name = \"n\"\nkind = \"openadr\"\nmax_mw = 1\ntopic = \"x\"\n").unwrap_err();
        assert!(
            e.contains("kind = \"openadr\"") && e.contains("unknown field `topic`"),
            "{e}"
        );
        assert!(e.contains("ven_name"), "the keys it has are listed: {e}");
        let e =
            table("name = \"n\"\nkind = \"modbus\"\nmax_mw = 1\nsurplus_ioa = 3\n").unwrap_err();
        assert!(e.contains("unknown field `surplus_ioa`"), "{e}");
        let e = table("name = \"n\"\nkind = \"opc\"\nmax_mw = 1\n").unwrap_err();
        assert!(e.contains("\"openadr\" and \"iec104\""), "{e}");
        let e = table("name = \"n\"\nmax_mw = 1\n").unwrap_err();
        assert!(e.contains("the signal kinds are"), "{e}");
        let e = table("name = \"n\"\nkind = \"mqtt\"\nmax_mw = 1\nmax_ag_s = 3\n").unwrap_err();
        assert!(e.contains("unknown field `max_ag_s`"), "{e}");
    }
}
