//! `GET /metrics`: the daemon's state in the Prometheus text format (prometheus-client), built
//! from the live status at each scrape. Conventional names and base units: power in `_watts`,
//! energy in `_joules_total`, work in `_hashes_total`, time in `_seconds`; miners by state as
//! one gauge with a `state` label; each plant signal source's trust as a gauge with a `source`
//! label. `deploy/grafana-dashboard.json` charts them.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use hashsink_units::WattHours;

use super::Status;

type GaugeF = Gauge<f64, AtomicU64>;
type CounterF = Counter<f64, AtomicU64>;

fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let g = GaugeF::default();
    g.set(value);
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, g),
        None => registry.register(name, help, g),
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let c = CounterF::default();
    c.inc_by(value.max(0.0));
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, c),
        None => registry.register(name, help, c),
    }
}

/// Miners by how the controller uses them.
fn register_control(r: &mut Registry, status: &Status) {
    let by_control = Family::<Vec<(String, String)>, Gauge>::default();
    for kind in hashsink_core::ControlUse::ALL {
        let n = status.miners_by_control.get(kind.label()).copied();
        by_control
            .get_or_create(&vec![("control".to_string(), kind.label().to_string())])
            .set(i64::from(n.unwrap_or(0)));
    }
    r.register(
        "miners_by_control",
        "Miners by how the controller uses them: every power level, on/off (refused levels \
         or has one), none (routed around)",
        by_control,
    );
}

/// What failed: commands by kind, readings refused at the door by reason, ledger batches set
/// aside or lost.
fn register_failures(r: &mut Registry, status: &Status) {
    let failures = Family::<Vec<(String, String)>, Counter<f64>>::default();
    for (kind, n) in &status.command_failures {
        failures
            .get_or_create(&vec![("kind".to_string(), kind.clone())])
            .inc_by(*n as f64);
    }
    r.register(
        "command_failures",
        "Write commands that failed, by kind (the log and the audit have the firmware's words)",
        failures,
    );
    let malformed = Family::<Vec<(String, String)>, Counter<f64>>::default();
    for reason in crate::readings::REASONS {
        let n = status.malformed_readings.get(reason).copied().unwrap_or(0);
        malformed
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(n as f64);
    }
    r.register(
        "malformed_readings",
        "Miner readings refused at the door (the miner's last good reading stands), by reason",
        malformed,
    );
    counter(
        r,
        "ledger_batches_set_aside",
        "Ledger batches the database refused, kept in the quarantine file",
        None,
        status.ledger_set_aside as f64,
    );
    counter(
        r,
        "ledger_batches_lost",
        "Ledger batches neither the database nor the quarantine file could take",
        None,
        status.ledger_lost as f64,
    );
}

/// The exposition of one status.
pub fn render(status: &Status) -> String {
    let mut r = Registry::with_prefix("hashsink");
    let k = &status.kpis;
    let joules = |kwh: f64| WattHours::from_kwh(kwh).joules();
    if let Some(s) = status.surplus_w {
        gauge(
            &mut r,
            "surplus_power",
            "Power the trusted surplus signal offers now",
            Some(Unit::Other("watts".into())),
            s,
        );
    }
    gauge(
        &mut r,
        "fleet_power",
        "Power the fleet draws now (site meter, else the sum of miner reports)",
        Some(Unit::Other("watts".into())),
        status.fleet_w,
    );
    gauge(
        &mut r,
        "allowed_power",
        "Power the controller allows the fleet now",
        Some(Unit::Other("watts".into())),
        status.allowed_w,
    );
    gauge(
        &mut r,
        "fleet_hashrate",
        "Hashes a second the fleet does now",
        Some(Unit::Other("hashes_per_second".into())),
        status.hashrate_ths * 1e12,
    );
    counter(
        &mut r,
        "fleet_energy",
        "Energy the fleet drew since start",
        Some(Unit::Joules),
        joules(k.fleet_kwh),
    );
    counter(
        &mut r,
        "absorbed_energy",
        "Energy drawn from the surplus since start",
        Some(Unit::Joules),
        joules(k.absorbed_kwh),
    );
    counter(
        &mut r,
        "import_energy",
        "Energy drawn above the surplus since start",
        Some(Unit::Joules),
        joules(k.import_kwh),
    );
    counter(
        &mut r,
        "surplus_energy",
        "Energy the surplus offered since start",
        Some(Unit::Joules),
        joules(k.surplus_kwh),
    );
    counter(
        &mut r,
        "hashes",
        "Hashes done since start",
        None,
        k.hashes_eh * 1e18,
    );
    counter(
        &mut r,
        "commands",
        "Write commands sent to miners since start",
        None,
        status.commands as f64,
    );
    gauge(
        &mut r,
        "last_sweep_duration",
        "How long the last telemetry sweep of the fleet took",
        Some(Unit::Seconds),
        status.last_sweep_ms as f64 / 1000.0,
    );
    let miners = Family::<Vec<(String, String)>, Gauge>::default();
    for (state, n) in [
        ("mining", status.mining),
        ("booting", status.booting),
        ("asleep", status.asleep),
        ("unreachable", status.unreachable),
        ("faulted", status.faulted - status.excluded),
        ("excluded", status.excluded),
    ] {
        miners
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(i64::from(n));
    }
    r.register("miners", "Miners by state", miners);
    if !status.signals.is_empty() {
        let trusted = Family::<Vec<(String, String)>, Gauge>::default();
        for s in &status.signals {
            trusted
                .get_or_create(&vec![("source".to_string(), s.name.clone())])
                .set(i64::from(s.trusted));
        }
        r.register(
            "signal_trusted",
            "Whether each plant signal source is trusted (1) or not (0)",
            trusted,
        );
    }
    register_failures(&mut r, status);
    register_control(&mut r, status);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_values_follow_the_conventions() {
        let mut s = Status {
            surplus_w: Some(12_000.0),
            fleet_w: 9_000.0,
            hashrate_ths: 400.0,
            mining: 3,
            asleep: 7,
            commands: 42,
            ..Status::default()
        };
        s.kpis.fleet_kwh = 2.0;
        s.kpis.hashes_eh = 0.5;
        s.command_failures.insert("rejected".into(), 4);
        s.malformed_readings.insert("implausible".into(), 3);
        s.ledger_set_aside = 2;
        s.miners_by_control.insert("on_off", 5);
        s.signals.push(super::super::SignalStatus {
            name: "export meter".into(),
            trusted: true,
            mw: Some(0.012),
            reason: None,
        });
        let text = render(&s);
        for line in [
            "hashsink_surplus_power_watts 12000.0",
            "hashsink_fleet_power_watts 9000.0",
            "hashsink_fleet_hashrate_hashes_per_second 400000000000000.0",
            "hashsink_fleet_energy_joules_total 7200000.0",
            "hashsink_hashes_total 500000000000000000.0",
            "hashsink_commands_total 42.0",
            "hashsink_miners{state=\"asleep\"} 7",
            "hashsink_signal_trusted{source=\"export meter\"} 1",
            "hashsink_command_failures_total{kind=\"rejected\"} 4.0",
            "hashsink_malformed_readings_total{reason=\"implausible\"} 3.0",
            "hashsink_malformed_readings_total{reason=\"negative\"} 0.0",
            "hashsink_ledger_batches_set_aside_total 2.0",
            "hashsink_miners_by_control{control=\"on_off\"} 5",
            "hashsink_miners_by_control{control=\"levels\"} 0",
            "# TYPE hashsink_fleet_energy_joules counter",
            "# UNIT hashsink_fleet_energy_joules joules",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}

#[cfg(test)]
mod grafana {
    /// Every metric the bundled Grafana dashboard queries is one the daemon exports.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana-dashboard.json"))
                .expect("deploy/grafana-dashboard.json is JSON");
        let mut status = super::Status {
            surplus_w: Some(1.0),
            ..super::Status::default()
        };
        status.signals.push(super::super::SignalStatus {
            name: "s".into(),
            trusted: true,
            mw: None,
            reason: None,
        });
        let text = super::render(&status);
        let mut seen = 0;
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("hashsink_"))
                {
                    seen += 1;
                    assert!(
                        text.lines().any(|l| l.starts_with(name)
                            && l[name.len()..].starts_with([' ', '{'])),
                        "the dashboard queries {name}, which /metrics does not export:\n{text}"
                    );
                }
            }
        }
        assert!(seen >= 10, "{seen} metric references");
    }
}
