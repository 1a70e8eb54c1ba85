//! Plant signal sources in the site file (`[[signal]]` tables, `[surplus] source = "signals"`):
//! their validation, and at run time one task per source feeding a shared
//! `hashsink_signals::Judge`, with every rejection and failure logged with its reason.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashsink_clock::ScaledClock;
use hashsink_core::OperatorCommand;
use hashsink_plantio::SignalEvent;
use hashsink_plantio::iec104::Iec104Source;
use hashsink_plantio::modbus::{Measure, ModbusSource, Register, Table};
use hashsink_plantio::mqtt::{MqttSource, MqttTls};
use hashsink_plantio::openadr::OpenAdrSource;
use hashsink_plantio::openadr::events::EventMapping;
use hashsink_plantio::{FleetReport, PowerUnit};
use hashsink_signals::{Judge, Policy, SourceId, SourceRules, TrustConfig};
use hashsink_units::Watts;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// One `[[signal]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalFile {
    pub name: String,
    /// "modbus", "mqtt" or "openadr".
    pub kind: String,
    /// modbus: host:port of the meter or PLC; mqtt: broker:port; openadr: the VTN's base URL.
    pub address: Option<String>,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// How often to read (modbus, default 500; openadr, default: as the VTN asks).
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
    /// modbus: the register holding the surplus...
    pub surplus: Option<Register>,
    /// ... or generation and consumption, with the export limit.
    pub generation: Option<Register>,
    pub consumption: Option<Register>,
    pub export_limit_mw: Option<f64>,
    /// modbus: registers the plant reads: the fleet's load and the controller's setpoint.
    pub write_fleet_load: Option<Register>,
    pub write_setpoint: Option<Register>,
    /// mqtt: the topic carrying the surplus.
    pub topic: Option<String>,
    /// mqtt: the JSON field with the value (omit for a plain-number payload).
    pub field: Option<String>,
    /// mqtt: the JSON field with the measurement time (RFC 3339 or epoch ms), if sent.
    pub time_field: Option<String>,
    /// mqtt: the unit of the value (w, kw, mw; default kw).
    pub unit: Option<PowerUnit>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// mqtt: where to publish the fleet's load and setpoint (JSON), every `publish_ms`.
    pub publish_topic: Option<String>,
    #[serde(default = "default_publish_ms")]
    pub publish_ms: u64,
    /// mqtt: connect over TLS (mqtts; port 8883 usually), verifying the broker's certificate.
    #[serde(default)]
    pub tls: bool,
    /// mqtt: the PEM file of the CA that signed the broker's certificate (default: the system's
    /// roots); relative to the site file.
    pub ca_file: Option<String>,
    /// mqtt: a PKCS#12 client identity (certificate + key) for brokers that require one.
    pub client_pkcs12: Option<String>,
    pub client_pkcs12_password: Option<String>,
    /// mqtt: the plant's trip topic ("1"/"true"/"trip" sheds at once, "0"/"false"/"clear" lets
    /// the fleet come back, staggered).
    pub trip_topic: Option<String>,
    /// modbus: the plant's trip flag register (non-zero sheds at once).
    pub trip: Option<TripRegister>,
    /// iec104: the station's common address (ASDU address).
    pub common_address: Option<u16>,
    /// iec104: the information object address of the surplus (a measured value, M_ME_*).
    pub surplus_ioa: Option<u32>,
    /// iec104: a single point (M_SP_*) whose ON state is the plant's trip flag.
    pub trip_ioa: Option<u32>,
    /// iec104: watts = value * scale * unit (default 1).
    pub scale: Option<f64>,
    /// openadr: the name this VEN registers under.
    pub ven_name: Option<String>,
    /// openadr: the cap when no event is active (default `max_mw`).
    pub no_event_mw: Option<f64>,
    /// openadr: the caps for SIMPLE levels 0-3 (default: `no_event_mw`, then 0, 0, 0).
    pub simple_levels_mw: Option<[f64; 4]>,
    /// openadr: above this ELECTRICITY_PRICE (in the event's units) the fleet draws nothing.
    pub price_ceiling: Option<f64>,
    /// openadr: offer the fleet's load to the VTN as a telemetry report (default true).
    #[serde(default = "yes")]
    pub report: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripRegister {
    #[serde(default = "holding")]
    pub table: Table,
    pub address: u16,
}

fn holding() -> Table {
    Table::Holding
}

fn default_publish_ms() -> u64 {
    1000
}

fn default_unit_id() -> u8 {
    1
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_max_age_s() -> f64 {
    5.0
}
fn default_confirmations() -> u8 {
    3
}

/// A validated source.
#[derive(Clone, Debug)]
pub enum Source {
    Modbus(ModbusSource),
    Mqtt(MqttSource),
    OpenAdr(OpenAdrSource),
    Iec104(Iec104Source),
}

/// Splits "host:port".
fn host_port(address: &str) -> Option<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
}

/// The TLS settings of an mqtt table, with its files read now (a missing or wrong file stops
/// the site from loading, not the source later).
fn mqtt_tls(f: &SignalFile, at: &str, base_dir: &std::path::Path) -> Result<Option<MqttTls>> {
    let given =
        f.ca_file.is_some() || f.client_pkcs12.is_some() || f.client_pkcs12_password.is_some();
    if !f.tls {
        if given {
            bail!("{at}: `ca_file` and `client_pkcs12` need `tls = true`");
        }
        return Ok(None);
    }
    let read = |key: &str, name: &str| -> Result<Vec<u8>> {
        let path = base_dir.join(name);
        std::fs::read(&path).map_err(|e| {
            anyhow!(
                "{at}: {key} = {name:?}: cannot read {}: {e}",
                path.display()
            )
        })
    };
    let ca_pem = f
        .ca_file
        .as_deref()
        .map(|name| {
            let pem = read("ca_file", name)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!("{at}: ca_file = {name:?} is not a PEM certificate (-----BEGIN CERTIFICATE-----)");
            }
            Ok(pem)
        })
        .transpose()?;
    let client_pkcs12 = match (&f.client_pkcs12, &f.client_pkcs12_password) {
        (Some(name), Some(password)) => {
            if ca_pem.is_none() {
                bail!("{at}: a client identity (`client_pkcs12`) needs `ca_file` too");
            }
            Some((read("client_pkcs12", name)?, password.clone()))
        }
        (None, None) => None,
        _ => bail!("{at}: give both `client_pkcs12` and `client_pkcs12_password`, or neither"),
    };
    Ok(Some(MqttTls {
        ca_pem,
        client_pkcs12,
    }))
}

/// Refuses the Modbus and MQTT keys in a table of another `kind`, naming the keys it has.
fn refuse_modbus_and_mqtt_keys(f: &SignalFile, at: &str, kind: &str, its_keys: &str) -> Result<()> {
    for (k, present) in [
        ("topic", f.topic.is_some()),
        ("surplus", f.surplus.is_some()),
        ("generation", f.generation.is_some()),
        ("consumption", f.consumption.is_some()),
        ("trip", f.trip.is_some()),
        ("trip_topic", f.trip_topic.is_some()),
        ("publish_topic", f.publish_topic.is_some()),
        ("write_fleet_load", f.write_fleet_load.is_some()),
        ("write_setpoint", f.write_setpoint.is_some()),
        ("tls", f.tls),
        ("ca_file", f.ca_file.is_some()),
    ] {
        if present {
            bail!("{at}: `{k}` is not an {kind} setting; an {kind} signal has {its_keys}");
        }
    }
    Ok(())
}

/// Validates a `kind = "iec104"` table.
fn iec104(f: &SignalFile, at: &str, poll_ms: u64) -> Result<Iec104Source> {
    refuse_modbus_and_mqtt_keys(
        f,
        at,
        "iec104",
        "`address`, `common_address`, `surplus_ioa`, `trip_ioa`, `scale`, `unit`",
    )?;
    let address = f
        .address
        .as_deref()
        .ok_or_else(|| anyhow!("{at}: an iec104 signal needs `address = \"rtu.plant:2404\"`"))?;
    let (host, port) = host_port(address)
        .ok_or_else(|| anyhow!("{at}: address = {address:?} is not like 10.0.0.5:2404"))?;
    let common_address = f
        .common_address
        .filter(|&a| a != 0 && a != 0xFFFF)
        .ok_or_else(|| anyhow!("{at}: an iec104 signal needs `common_address` (1-65534), the station's ASDU address"))?;
    let ioa = |key: &str, v: Option<u32>| -> Result<Option<u32>> {
        match v {
            Some(v) if v > 0xFF_FFFF => bail!("{at}: {key} = {v} is above 16777215 (three octets)"),
            v => Ok(v),
        }
    };
    let surplus_ioa = ioa("surplus_ioa", f.surplus_ioa)?.ok_or_else(|| {
        anyhow!("{at}: an iec104 signal needs `surplus_ioa`, the information object address of the surplus (M_ME_NC_1 ...)")
    })?;
    let trip_ioa = ioa("trip_ioa", f.trip_ioa)?;
    if trip_ioa == Some(surplus_ioa) {
        bail!("{at}: trip_ioa and surplus_ioa must differ");
    }
    let scale = f.scale.unwrap_or(1.0);
    if !(scale.is_finite() && scale != 0.0) {
        bail!("{at}: scale must be a non-zero number");
    }
    Ok(Iec104Source {
        name: f.name.clone(),
        host,
        port,
        common_address,
        surplus_ioa,
        scale,
        unit: f.unit.unwrap_or_default(),
        trip_ioa,
        interrogate_every: Duration::from_millis(poll_ms),
        timeout: Duration::from_millis(f.timeout_ms),
    })
}

/// Validates an `kind = "openadr"` table.
fn openadr(f: &SignalFile, at: &str, max: Watts) -> Result<OpenAdrSource> {
    refuse_modbus_and_mqtt_keys(
        f,
        at,
        "openadr",
        "`address` (the VTN URL), `ven_name`, `no_event_mw`, `simple_levels_mw`, `price_ceiling`, `unit`",
    )?;
    let url = f.address.as_deref().ok_or_else(|| {
        anyhow!("{at}: an openadr signal needs `address = \"http://vtn.example:8080/OpenADR2/Simple/2.0b\"`")
    })?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow!("{at}: address = {url:?} is not a URL ({e})"))?;
    if parsed.scheme() != "http" {
        bail!(
            "{at}: address = {url:?}: only http:// VTNs are supported (TLS is not built in yet; put the VEN behind a TLS-terminating proxy)"
        );
    }
    let ven_name = f
        .ven_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| anyhow!("{at}: an openadr signal needs `ven_name = \"...\"`, the name the utility knows this site by"))?;
    let mw = |key: &str, v: f64| -> Result<Watts> {
        if v.is_finite() && v >= 0.0 && Watts::from_mw(v) <= max {
            Ok(Watts::from_mw(v))
        } else {
            Err(anyhow!(
                "{at}: {key} = {v} must be between 0 and max_mw = {}",
                max.mw()
            ))
        }
    };
    let no_event = f
        .no_event_mw
        .map(|v| mw("no_event_mw", v))
        .transpose()?
        .unwrap_or(max);
    let simple_levels = match f.simple_levels_mw {
        Some(levels) => {
            let mut out = [Watts(0.0); 4];
            for (i, v) in levels.into_iter().enumerate() {
                out[i] = mw(&format!("simple_levels_mw[{i}]"), v)?;
            }
            out
        }
        None => [no_event, Watts(0.0), Watts(0.0), Watts(0.0)],
    };
    if let Some(p) = f.price_ceiling.filter(|p| !p.is_finite()) {
        bail!("{at}: price_ceiling = {p} must be a number");
    }
    Ok(OpenAdrSource {
        name: f.name.clone(),
        vtn_url: url.to_string(),
        ven_name,
        poll: f.poll_ms.map(Duration::from_millis),
        max_age: Duration::from_secs_f64(f.max_age_s),
        timeout: Duration::from_millis(f.timeout_ms),
        mapping: EventMapping {
            no_event,
            default_watts_per_unit: f.unit.unwrap_or_default().watts(),
            simple_levels,
            price_ceiling: f.price_ceiling,
        },
        report: f.report,
    })
}

/// Validated signal sources and how they combine.
#[derive(Clone, Debug)]
pub struct SignalsSetup {
    pub trust: TrustConfig,
    pub sources: Vec<Source>,
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

/// Validates the `[[signal]]` tables; `at(i)` names the i-th table's file and line.
pub fn validate(
    files: Vec<SignalFile>,
    base_dir: &std::path::Path,
    at: &dyn Fn(usize) -> String,
    policy: Policy,
    disagreement_mw: Option<f64>,
) -> Result<SignalsSetup> {
    if files.is_empty() {
        bail!(
            "[surplus] source = \"signals\" needs at least one [[signal]] table (kind = \"modbus\", \"mqtt\", \"openadr\" or \"iec104\"; see examples/site-signals.toml)"
        );
    }
    let mut rules = Vec::new();
    let mut sources = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = at(i);
        if !names.insert(f.name.clone()) {
            bail!(
                "{at}: a second signal named {:?}; names must differ",
                f.name
            );
        }
        let mw = |key: &str, v: f64| -> Result<Watts> {
            if v.is_finite() && (0.0..=100_000.0).contains(&v) {
                Ok(Watts::from_mw(v))
            } else {
                Err(anyhow!("{at}: {key} = {v} must be between 0 and 100000 MW"))
            }
        };
        let (min, max) = (mw("min_mw", f.min_mw)?, mw("max_mw", f.max_mw)?);
        if max <= min {
            bail!("{at}: max_mw must be above min_mw");
        }
        if !(f.max_age_s.is_finite() && (0.1..=3600.0).contains(&f.max_age_s)) {
            bail!(
                "{at}: max_age_s = {} must be between 0.1 and 3600",
                f.max_age_s
            );
        }
        let poll_ms = f.poll_ms.unwrap_or(500);
        if !(10..=60_000).contains(&poll_ms) || !(10..=60_000).contains(&f.timeout_ms) {
            bail!("{at}: poll_ms and timeout_ms must be between 10 and 60000");
        }
        if Duration::from_millis(poll_ms).as_secs_f64() >= f.max_age_s {
            bail!(
                "{at}: poll_ms = {poll_ms} is not shorter than max_age_s = {}: every reading would be stale",
                f.max_age_s
            );
        }
        if f.kind != "iec104" {
            for (k, present) in [
                ("common_address", f.common_address.is_some()),
                ("surplus_ioa", f.surplus_ioa.is_some()),
                ("trip_ioa", f.trip_ioa.is_some()),
                ("scale", f.scale.is_some()),
            ] {
                if present {
                    bail!(
                        "{at}: `{k}` is an iec104 setting; this signal is kind = {:?}",
                        f.kind
                    );
                }
            }
        }
        if f.kind != "openadr" {
            for (k, present) in [
                ("ven_name", f.ven_name.is_some()),
                ("no_event_mw", f.no_event_mw.is_some()),
                ("simple_levels_mw", f.simple_levels_mw.is_some()),
                ("price_ceiling", f.price_ceiling.is_some()),
            ] {
                if present {
                    bail!(
                        "{at}: `{k}` is an openadr setting; this signal is kind = {:?}",
                        f.kind
                    );
                }
            }
        }
        rules.push(SourceRules {
            name: f.name.clone(),
            max_age: Duration::from_secs_f64(f.max_age_s),
            min,
            max,
            max_step: f.max_step_mw.map(|v| mw("max_step_mw", v)).transpose()?,
            jump_confirmations: f.jump_confirmations.max(1),
        });
        match f.kind.as_str() {
            "modbus" => {
                for (k, present) in [
                    ("topic", f.topic.is_some()),
                    ("trip_topic", f.trip_topic.is_some()),
                    ("publish_topic", f.publish_topic.is_some()),
                    ("tls", f.tls),
                    ("ca_file", f.ca_file.is_some()),
                ] {
                    if present {
                        bail!(
                            "{at}: `{k}` is an mqtt setting; a modbus signal has registers (`surplus`, `trip`, ...)"
                        );
                    }
                }
                let address = f.address.as_deref().ok_or_else(|| {
                    anyhow!("{at}: a modbus signal needs `address = \"host:502\"`")
                })?;
                let address = address.parse().map_err(|_| {
                    anyhow!("{at}: address = {address:?} is not like 192.168.1.20:502")
                })?;
                let check = |key: &str, r: &Option<Register>| -> Result<()> {
                    if let Some(r) = r {
                        if !(r.scale.is_finite() && r.scale != 0.0) {
                            bail!("{at}: {key}.scale must be a non-zero number");
                        }
                    }
                    Ok(())
                };
                for (k, r) in [
                    ("surplus", &f.surplus),
                    ("generation", &f.generation),
                    ("consumption", &f.consumption),
                    ("write_fleet_load", &f.write_fleet_load),
                    ("write_setpoint", &f.write_setpoint),
                ] {
                    check(k, r)?;
                }
                for (k, r) in [
                    ("write_fleet_load", &f.write_fleet_load),
                    ("write_setpoint", &f.write_setpoint),
                ] {
                    if r.is_some_and(|r| r.table == Table::Input) {
                        bail!(
                            "{at}: {k} must be a holding register (input registers are read-only)"
                        );
                    }
                }
                let measure = match (f.surplus, f.generation, f.consumption, f.export_limit_mw) {
                    (Some(r), None, None, None) => Measure::Surplus(r),
                    (None, Some(g), Some(c), Some(limit)) => Measure::Balance {
                        generation: g,
                        consumption: c,
                        export_limit: mw("export_limit_mw", limit)?,
                    },
                    _ => bail!(
                        "{at}: give either `surplus = {{ address = .., type = .. }}` or `generation`, `consumption` and `export_limit_mw`"
                    ),
                };
                sources.push(Source::Modbus(ModbusSource {
                    name: f.name,
                    address,
                    unit_id: f.unit_id,
                    poll: Duration::from_millis(poll_ms),
                    timeout: Duration::from_millis(f.timeout_ms),
                    measure,
                    write_fleet_load: f.write_fleet_load,
                    write_setpoint: f.write_setpoint,
                    trip: f.trip.map(|t| (t.table, t.address)),
                }));
            }
            "mqtt" => {
                let address = f.address.as_deref().ok_or_else(|| {
                    anyhow!("{at}: an mqtt signal needs `address = \"broker:1883\"`")
                })?;
                let (host, port) = host_port(address).ok_or_else(|| {
                    anyhow!("{at}: address = {address:?} is not like broker.plant.local:1883")
                })?;
                let topic = f
                    .topic
                    .clone()
                    .filter(|t| !t.is_empty() && !t.contains(['+', '#']))
                    .ok_or_else(|| anyhow!("{at}: an mqtt signal needs `topic = \"plant/surplus\"` (one topic, no wildcards)"))?;
                if f.username.is_some() != f.password.is_some() {
                    bail!("{at}: give both `username` and `password`, or neither");
                }
                if !(100..=60_000).contains(&f.publish_ms) {
                    bail!("{at}: publish_ms must be between 100 and 60000");
                }
                for (k, present) in [
                    ("surplus", f.surplus.is_some()),
                    ("generation", f.generation.is_some()),
                    ("consumption", f.consumption.is_some()),
                    ("write_fleet_load", f.write_fleet_load.is_some()),
                    ("write_setpoint", f.write_setpoint.is_some()),
                ] {
                    if present {
                        bail!(
                            "{at}: `{k}` is a modbus setting; an mqtt signal has `topic`, `field` and `unit`"
                        );
                    }
                }
                let tls = mqtt_tls(&f, &at, base_dir)?;
                sources.push(Source::Mqtt(MqttSource {
                    name: f.name.clone(),
                    host,
                    port,
                    client_id: f
                        .client_id
                        .clone()
                        .unwrap_or_else(|| format!("hashsink-{}-{}", std::process::id(), i)),
                    credentials: f.username.clone().zip(f.password.clone()),
                    topic,
                    field: f.field.clone(),
                    time_field: f.time_field.clone(),
                    unit: f.unit.unwrap_or_default(),
                    publish_topic: f.publish_topic.clone(),
                    publish_every: Duration::from_millis(f.publish_ms),
                    keep_alive: Duration::from_secs(5),
                    trip_topic: f.trip_topic.clone().filter(|t| !t.is_empty()),
                    tls,
                }));
            }
            "openadr" => sources.push(Source::OpenAdr(openadr(&f, &at, max)?)),
            "iec104" => sources.push(Source::Iec104(iec104(&f, &at, poll_ms)?)),
            other => bail!(
                "{at}: kind = {other:?}: the signal kinds are \"modbus\", \"mqtt\", \"openadr\" and \"iec104\""
            ),
        }
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
            max_future_skew: Duration::from_secs(2),
        },
        sources,
    })
}

/// Starts every source and the task that feeds their readings to the judge. The judge is
/// shared with the control loop, which asks it for a verdict on every tick.
pub fn start(
    setup: &SignalsSetup,
    clock: ScaledClock,
    report: watch::Receiver<FleetReport>,
    daemon: mpsc::UnboundedSender<crate::daemon::Event>,
) -> Arc<Mutex<Judge>> {
    let judge = Arc::new(Mutex::new(Judge::new(setup.trust.clone())));
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, source) in setup.sources.iter().enumerate() {
        let id = SourceId(i as u16);
        match source.clone() {
            Source::Modbus(m) => {
                tokio::spawn(m.run(id, clock, tx.clone(), report.clone()));
            }
            Source::Mqtt(m) => {
                tokio::spawn(m.run(id, clock, tx.clone(), report.clone()));
            }
            Source::OpenAdr(v) => {
                tokio::spawn(v.run(id, clock, tx.clone(), report.clone()));
            }
            Source::Iec104(s) => {
                tokio::spawn(s.run(id, clock, tx.clone(), report.clone()));
            }
        }
    }
    drop(tx);
    let names: Vec<String> = setup.trust.sources.iter().map(|s| s.name.clone()).collect();
    let shared = judge.clone();
    tokio::spawn(async move {
        // The last complaint per source, so that a steady fault is logged once, not per poll.
        let mut last: Vec<Option<String>> = vec![None; names.len()];
        // Each source's trip flag as last reported.
        let mut tripped: Vec<Option<bool>> = vec![None; names.len()];
        while let Some(event) = rx.recv().await {
            let now = clock.now();
            // (kind of complaint, for de-duplication; what to log)
            let (id, complaint) = {
                let mut j = shared.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    SignalEvent::Reading(r) => {
                        let rejected = j.observe(now, r).err();
                        if rejected.is_none() {
                            // Acted on now (a fall reaches the miners within milliseconds).
                            let _ = daemon.send(crate::daemon::Event::SignalUpdate);
                        }
                        (
                            r.source,
                            rejected.map(|d| {
                                (
                                    format!("{:?}", std::mem::discriminant(&d)),
                                    format!("reading rejected: {d}"),
                                )
                            }),
                        )
                    }
                    SignalEvent::Trip(id, set) => {
                        // Acted on when it changes: a source that reports the flag on every poll
                        // (an IEC 104 interrogation) must not resume the fleet every poll, and a
                        // flag first seen clear lifts nothing.
                        let seen = &mut tripped[id.0 as usize];
                        let was = seen.replace(set);
                        if was == Some(set) || (!set && was.is_none()) {
                            continue;
                        }
                        let name = &names[id.0 as usize];
                        if set {
                            warn!(source = %name, "emergency shed: the plant's trip flag is set");
                            let _ = daemon.send(crate::daemon::Event::Operator(
                                OperatorCommand::ShedAll,
                                format!("plant:{name}"),
                            ));
                        } else {
                            info!(source = %name, "trip flag cleared: the fleet may come back (staggered)");
                            let _ = daemon.send(crate::daemon::Event::Operator(
                                OperatorCommand::Resume,
                                format!("plant:{name}"),
                            ));
                        }
                        continue;
                    }
                    SignalEvent::Failed(id, e) => {
                        j.failed(id, Some(e.clone()));
                        (
                            id,
                            Some((format!("failed: {e}"), format!("source failed: {e}"))),
                        )
                    }
                    SignalEvent::Rejected(id, e) => {
                        j.malformed(id, e.clone());
                        (
                            id,
                            Some((format!("malformed: {e}"), format!("reading rejected: {e}"))),
                        )
                    }
                }
            };
            let i = id.0 as usize;
            let key = complaint.as_ref().map(|c| c.0.clone());
            if key != last[i] {
                match &complaint {
                    Some((_, message)) => warn!(source = %names[i], "{message}"),
                    None => info!(source = %names[i], "source trusted again"),
                }
                last[i] = key;
            }
        }
    });
    judge
}
