//! `hashsink-bench quirks`: the demo's night on the emulated fleet with the quirks of real
//! firmware, beside the same night without them, on the same terms (same profile, fleet, clock
//! speed and controller; each case a separate `hashsink demo` process with its own ledger).
//! The goals (issue 15): with 30 % of the LuxOS miners in ATM-on mode and 20 % of the Braiins
//! miners tuner-locked, absorption within 2 points of the night without quirks and no import;
//! with 5 % of the miners reporting NaN, inf, negative or tenfold draws, every ledger interval
//! committed and the miners' own readings within 1 % of the site meter (the emulator's truth).

use std::process::Command;

use anyhow::{Context, Result, bail};
use hashsink_ledger::Store;
use hashsink_ledger::sqlite::SqliteStore;
use hashsink_units::Timestamp;
use serde_json::Value;

/// The cases: a name and the `--quirks` they pass.
const CASES: [(&str, &str); 3] = [
    ("none", ""),
    (
        "ATM on 30 % of LuxOS, tuner locked on 20 % of Braiins",
        "atm=30,locked=20",
    ),
    (
        "5 % of the fleet reports nan, inf, negative or 10x",
        "badread=5",
    ),
];

pub fn run(hours: f64, speed: f64) -> Result<String> {
    let mut out = String::from(
        "| quirks | absorbed | import | used on/off | faulted | readings refused | ledger intervals | miners' readings vs meter |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    // One build for every case: the same binary runs each night.
    let exe = crate::product::hashsink()?;
    for (k, (name, quirks)) in CASES.iter().enumerate() {
        let dir =
            std::env::temp_dir().join(format!("hashsink-bench-quirks-{}-{k}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("ledger.db");
        let report = demo(&exe, hours, speed, quirks, 41_000 + 200 * k as u32, &db)?;
        let row = row(name, &report, &db, hours);
        let _ = std::fs::remove_dir_all(&dir);
        out += &row?;
    }
    Ok(out)
}

fn demo(
    exe: &std::path::Path,
    hours: f64,
    speed: f64,
    quirks: &str,
    first_index: u32,
    db: &std::path::Path,
) -> Result<Value> {
    let mut cmd = Command::new(exe);
    cmd.args(["demo", "--json", "--listen", "off"])
        .args(["--hours", &hours.to_string(), "--speed", &speed.to_string()])
        .args(["--first-index", &first_index.to_string()])
        .arg("--ledger")
        .arg(db);
    if !quirks.is_empty() {
        cmd.args(["--quirks", quirks]);
    }
    let out = cmd.output().context("run hashsink demo")?;
    if !out.status.success() {
        bail!(
            "hashsink demo failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn row(name: &str, report: &Value, db: &std::path::Path, hours: f64) -> Result<String> {
    let status = &report["status"];
    let kpis = &status["kpis"];
    let number = |v: &Value| v.as_f64().unwrap_or(0.0);
    let absorbed = number(&kpis["absorbed_kwh"]) / number(&kpis["surplus_kwh"]).max(1e-9);
    let refused: u64 = (status["malformed_readings"]
        .as_object()
        .into_iter()
        .flatten())
    .map(|(_, n)| n.as_u64().unwrap_or(0))
    .sum();
    let mut ledger = SqliteStore::open(db)?;
    let all = (Timestamp::from_millis(0), Timestamp::from_millis(i64::MAX));
    let intervals = ledger.intervals("demo", all.0, all.1)?;
    let metered: f64 = intervals.iter().map(|i| i.fleet_wh).sum();
    let per_miner: f64 = match (intervals.first(), intervals.last()) {
        (Some(first), Some(last)) => (ledger.miner_totals("demo", first.start, last.end)?.iter())
            .map(|t| t.energy_wh)
            .sum(),
        _ => 0.0,
    };
    let gaps = intervals
        .windows(2)
        .filter(|w| w[0].end != w[1].start)
        .count();
    Ok(format!(
        "| {name} | {:.2} % | {:.2} kWh | {} | {} | {refused} | {} of {:.0}, {gaps} gaps, {} set aside | {:+.2} % |\n",
        100.0 * absorbed,
        number(&kpis["import_kwh"]),
        status["miners_by_control"]["on_off"].as_u64().unwrap_or(0),
        status["faulted"].as_u64().unwrap_or(0),
        intervals.len(),
        hours * 60.0,
        status["ledger_set_aside"].as_u64().unwrap_or(0),
        100.0 * (per_miner - metered) / metered.max(1e-9),
    ))
}
