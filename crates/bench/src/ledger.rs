//! `hashsink-bench ledger`: the ledger's write throughput for a fleet writing one-minute
//! intervals (rows a second, and the share of one core that a minute's interval takes), and the
//! time to build a month's statement with every miner's totals. SQLite always (a temporary
//! file); PostgreSQL too with `--postgres URL` (a database it may fill: it writes into a schema
//! of its own and drops it).

use std::time::{Duration, Instant};

use anyhow::Result;
use hashsink_ledger::{Batch, CommandRecord, Interval, MinerInterval, Store};
use hashsink_units::Timestamp;

const MINUTE: i64 = 60_000;

fn interval(start_ms: i64, len_ms: i64, miners: u32) -> Interval {
    let per_miner: Vec<MinerInterval> = (0..miners)
        .map(|m| MinerInterval {
            miner: m,
            energy_wh: 3010.0 * len_ms as f64 / 3.6e6 * (0.9 + 0.1 * f64::from(m % 7) / 7.0),
            hashes_th: 141.0 * len_ms as f64 / 1000.0,
            state: if m % 5 == 0 { "asleep" } else { "mining" }.into(),
        })
        .collect();
    site_interval(start_ms, len_ms, per_miner)
}

fn site_interval(start_ms: i64, len_ms: i64, miners: Vec<MinerInterval>) -> Interval {
    let fleet_wh: f64 = miners.iter().map(|m| m.energy_wh).sum();
    let hashes_th: f64 = miners.iter().map(|m| m.hashes_th).sum();
    Interval {
        start: Timestamp::from_millis(start_ms),
        end: Timestamp::from_millis(start_ms + len_ms),
        surplus_wh: Some(fleet_wh * 1.05),
        fleet_wh,
        import_wh: 0.0,
        hashes_th,
        expected_sat: hashes_th * 0.000_37,
        difficulty: Some(1.4e14),
        mining: miners.iter().filter(|m| m.state == "mining").count() as u32,
        asleep: 0,
        faulted: 0,
        miners,
    }
}

struct Row {
    backend: &'static str,
    interval: Duration,
    rows_per_s: f64,
    commands: Duration,
    month_write: Duration,
    month_rows: usize,
    report: Duration,
    miners_reported: usize,
}

fn bench(backend: &'static str, store: &mut dyn Store, miners: u32) -> Result<Row> {
    store.migrate(Timestamp::from_millis(0))?;
    let site = "bench";
    // A minute's interval of the whole fleet, ten times (best of ten).
    let t0: i64 = 1_798_761_600_000; // 2027-01-01
    let mut best = Duration::MAX;
    for k in 0..10 {
        let batch = Batch {
            intervals: vec![interval(t0 - (20 - k) * MINUTE, MINUTE, miners)],
            ..Batch::default()
        };
        let started = Instant::now();
        store.write(site, 1, &batch)?;
        best = best.min(started.elapsed());
    }
    let rows = miners as f64 + 1.0;
    // A burst of commands: every miner told something at once (a shed), with outcomes.
    let commands = Batch {
        commands: (0..miners)
            .map(|m| CommandRecord {
                id: u64::from(m) + 1,
                at: Timestamp::from_millis(t0),
                miner: Some(m),
                action: "sleep".into(),
                reason: "operator".into(),
                actor: "operator:bench".into(),
            })
            .collect(),
        ..Batch::default()
    };
    let started = Instant::now();
    store.write(site, 2, &commands)?;
    let command_time = started.elapsed();
    // A month: 43,200 one-minute site intervals; every miner's row once an hour (720 rows a
    // miner, to keep this to about a minute; the statement reads miners from daily totals).
    let month_start = t0;
    let started = Instant::now();
    let mut written = 0usize;
    for hour in 0..720 {
        let mut intervals = Vec::with_capacity(60);
        for minute in 0..60 {
            let start = month_start + (hour * 60 + minute) * MINUTE;
            if minute == 0 {
                intervals.push(interval(start, MINUTE, miners));
            } else {
                let mut i = interval(start, MINUTE, 0);
                i.fleet_wh = miners as f64 * 45.0;
                i.hashes_th = miners as f64 * 8460.0;
                intervals.push(i);
            }
        }
        written += intervals.iter().map(|i| 1 + i.miners.len()).sum::<usize>();
        store.write(
            site,
            3,
            &Batch {
                intervals,
                ..Batch::default()
            },
        )?;
    }
    let month_write = started.elapsed();
    let started = Instant::now();
    let from = Timestamp::from_millis(month_start);
    let to = Timestamp::from_millis(month_start + 30 * 24 * 60 * MINUTE);
    let statements = hashsink_ledger::statement::statements(store, site, from, to)?;
    let totals = store.miner_totals(site, from, to)?;
    let report = started.elapsed();
    anyhow::ensure!(
        statements.last().is_some_and(|s| s.intervals == 43_200),
        "the month's statement does not have 43,200 intervals"
    );
    Ok(Row {
        backend,
        interval: best,
        rows_per_s: rows / best.as_secs_f64(),
        commands: command_time,
        month_write,
        month_rows: written,
        report,
        miners_reported: totals.len(),
    })
}

pub fn run(miners: u32, postgres: Option<&str>) -> Result<String> {
    anyhow::ensure!(miners > 0, "--miners must be at least 1");
    let mut rows = Vec::new();
    let dir = std::env::temp_dir().join(format!("hashsink-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    {
        let mut store = hashsink_ledger::sqlite::SqliteStore::open(&dir.join("ledger.db"))?;
        rows.push(bench("SQLite (WAL, synchronous=FULL)", &mut store, miners)?);
    }
    let size_mb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / 1e6;
    std::fs::remove_dir_all(&dir).ok();
    if let Some(url) = postgres {
        let schema = format!("hashsink_bench_{}", std::process::id());
        let mut admin = postgres::Client::connect(url, postgres::NoTls)?;
        admin.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut store = hashsink_ledger::postgres::PgStore::connect(&format!(
            "{url}{sep}options=-csearch_path%3D{schema}"
        ))?;
        let result = bench("PostgreSQL", &mut store, miners);
        admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
        rows.push(result?);
    }
    let mut out = format!(
        "{miners} miners, one-minute intervals\n\n| backend | one interval (best of 10) | rows/s | share of one core at 1/min | {miners} commands in one batch | a month written ({{rows}} rows) | month statement + every miner's totals (goal < 5 s) |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in &rows {
        out = out.replace("{rows}", &r.month_rows.to_string());
        out += &format!(
            "| {} | {:.1} ms | {:.0} | {:.3} % | {:.1} ms | {:.1} s | {:.2} s ({} miners) |\n",
            r.backend,
            r.interval.as_secs_f64() * 1000.0,
            r.rows_per_s,
            r.interval.as_secs_f64() / 60.0 * 100.0,
            r.commands.as_secs_f64() * 1000.0,
            r.month_write.as_secs_f64(),
            r.report.as_secs_f64(),
            r.miners_reported,
        );
    }
    out += &format!("\nSQLite file after the run: {size_mb:.0} MB\n");
    Ok(out)
}
