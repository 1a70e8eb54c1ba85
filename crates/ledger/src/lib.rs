//! The ledger: a durable record of what the fleet drew and produced, interval by interval, per
//! miner; every control command with its outcome (the audit log: who or what, why, when, what
//! came of it); events (sheds, fail-safe, sources lost, miner faults); and the coins, expected
//! from hashes and difficulty and actually paid out and sold. [`Store`] is the one interface,
//! with an embedded SQLite database in WAL mode ([`sqlite::SqliteStore`], the default) and
//! PostgreSQL ([`postgres::PgStore`]) for a site that runs one or many sites reporting to one
//! place. Each write is one transaction: a batch is there whole or not at all. Rows are keyed
//! naturally (site, interval start, miner; site, daemon run, command id) and inserted with
//! `ON CONFLICT DO NOTHING`, so a batch retried after an error is not counted twice.

#![forbid(unsafe_code)]

pub mod coins;
pub mod conformance;
pub mod postgres;
pub mod schema;
pub mod sql;
pub mod sqlite;
pub mod statement;

use hashsink_units::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error(
        "the ledger's schema is version {found}, newer than this hashsink knows ({known}): upgrade hashsink, or point it at another database"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, LedgerError>;

impl LedgerError {
    /// Whether writing the same rows again would fail again: the database refused what they hold
    /// (a constraint, a value it cannot store), as opposed to being unreachable or busy. Such a
    /// batch is set aside instead of retried, so that it never blocks the batches after it.
    pub fn is_permanent(&self) -> bool {
        match self {
            LedgerError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TypeMismatch
                    | rusqlite::ErrorCode::TooBig
            ),
            LedgerError::Sqlite(rusqlite::Error::ToSqlConversionFailure(_)) => true,
            // SQLSTATE class 22 (data exception) and 23 (integrity constraint violation).
            LedgerError::Postgres(e) => e
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
            LedgerError::Invalid(_) => true,
            _ => false,
        }
    }
}

/// One accounting interval of the whole site (default one minute).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Energy the trusted surplus offered (None: no trusted reading for part of it).
    pub surplus_wh: Option<f64>,
    pub fleet_wh: f64,
    /// Energy drawn above the surplus.
    pub import_wh: f64,
    /// Hashes done, in terahashes.
    pub hashes_th: f64,
    /// Expected satoshis for those hashes at the network's difficulty and block reward.
    pub expected_sat: f64,
    pub difficulty: Option<f64>,
    pub mining: u32,
    pub asleep: u32,
    pub faulted: u32,
    pub miners: Vec<MinerInterval>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MinerInterval {
    pub miner: u32,
    pub energy_wh: f64,
    pub hashes_th: f64,
    /// The state at the interval's end: mining, asleep, booting, unreachable, faulted.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MinerInfo {
    pub miner: u32,
    pub address: String,
    pub model: String,
    pub firmware: String,
}

/// A command as sent: the audit log's line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CommandRecord {
    pub id: u64,
    pub at: Timestamp,
    /// None for a fleet-wide operator command.
    pub miner: Option<u32>,
    pub action: String,
    pub reason: String,
    /// Who or what: "controller", "operator:NAME", "plant:SOURCE", "signal:SIGUSR1".
    pub actor: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Outcome {
    pub id: u64,
    pub at: Timestamp,
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EventRecord {
    pub seq: u64,
    pub at: Timestamp,
    /// shed, resume, curtail, failsafe, source-lost, source-back, miner-fault, start, stop, ...
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

/// Coins a pool paid, in satoshis; `reference` (the pool's payout id or transaction id) keys it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Payout {
    pub reference: String,
    pub at: Timestamp,
    pub sat: i64,
    pub source: String,
}

/// Coins sold: satoshis for fiat in minor units (cents).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sale {
    pub reference: String,
    pub at: Timestamp,
    pub sat: i64,
    pub fiat_minor: i64,
    pub currency: String,
}

/// What one transaction writes.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Batch {
    pub miners: Vec<MinerInfo>,
    pub intervals: Vec<Interval>,
    pub commands: Vec<CommandRecord>,
    pub outcomes: Vec<Outcome>,
    pub events: Vec<EventRecord>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.miners.is_empty()
            && self.intervals.is_empty()
            && self.commands.is_empty()
            && self.outcomes.is_empty()
            && self.events.is_empty()
    }

    /// Rows it writes (a miner's interval is a row).
    pub fn rows(&self) -> usize {
        self.miners.len()
            + self
                .intervals
                .iter()
                .map(|i| 1 + i.miners.len())
                .sum::<usize>()
            + self.commands.len()
            + self.outcomes.len()
            + self.events.len()
    }
}

/// A site interval as read back (without its miners).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IntervalRow {
    pub start: Timestamp,
    pub end: Timestamp,
    pub surplus_wh: Option<f64>,
    pub fleet_wh: f64,
    pub import_wh: f64,
    pub hashes_th: f64,
    pub expected_sat: f64,
    pub mining: u32,
    pub asleep: u32,
    pub faulted: u32,
}

/// One miner's totals over a period.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MinerTotal {
    pub miner: u32,
    pub energy_wh: f64,
    pub hashes_th: f64,
    /// Intervals in which it was mining.
    pub mining_intervals: u64,
}

/// A command with its outcome, if one came.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AuditRow {
    pub command: CommandRecord,
    pub run_ms: i64,
    pub outcome: Option<(Timestamp, String)>,
}

/// What a store can do. Writes are transactions; reads take `[from, to)` by start time.
pub trait Store: Send {
    /// Brings the schema up to date; returns the versions applied now.
    fn migrate(&mut self, now: Timestamp) -> Result<Vec<u32>>;
    /// The schema version in the database.
    fn version(&mut self) -> Result<u32>;
    /// Writes a batch of one daemon run (`run_ms`: when it started) in one transaction.
    fn write(&mut self, site: &str, run_ms: i64, batch: &Batch) -> Result<()>;
    /// Adds payouts; returns how many were new (a reference seen before is skipped).
    fn add_payouts(&mut self, site: &str, payouts: &[Payout]) -> Result<usize>;
    fn add_sales(&mut self, site: &str, sales: &[Sale]) -> Result<usize>;
    fn intervals(&mut self, site: &str, from: Timestamp, to: Timestamp)
    -> Result<Vec<IntervalRow>>;
    /// Per-miner totals from the per-interval rows, intervals starting in `[from, to)`.
    fn miner_interval_totals(
        &mut self,
        site: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MinerTotal>>;
    /// Per-miner totals from the daily rows, days starting in `[from_day, to_day)`.
    fn miner_day_totals(
        &mut self,
        site: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<MinerTotal>>;
    /// Per-miner totals over `[from, to)`: whole UTC days from the daily totals, the partial
    /// days at either end from the intervals.
    fn miner_totals(
        &mut self,
        site: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MinerTotal>> {
        use schema::{DAY_MS, day_of};
        let (f, t) = (from.as_millis(), to.as_millis());
        let first_full = day_of(f.saturating_add(DAY_MS - 1));
        let end_full = day_of(t);
        let mut parts = Vec::new();
        if first_full < end_full {
            parts.push(self.miner_day_totals(site, first_full, end_full)?);
            parts.push(self.miner_interval_totals(
                site,
                from,
                Timestamp::from_millis(first_full),
            )?);
            parts.push(self.miner_interval_totals(site, Timestamp::from_millis(end_full), to)?);
        } else {
            parts.push(self.miner_interval_totals(site, from, to)?);
        }
        let mut by_miner: std::collections::BTreeMap<u32, MinerTotal> = Default::default();
        for t in parts.into_iter().flatten() {
            let e = by_miner.entry(t.miner).or_insert(MinerTotal {
                miner: t.miner,
                energy_wh: 0.0,
                hashes_th: 0.0,
                mining_intervals: 0,
            });
            e.energy_wh += t.energy_wh;
            e.hashes_th += t.hashes_th;
            e.mining_intervals += t.mining_intervals;
        }
        Ok(by_miner.into_values().collect())
    }
    fn miners(&mut self, site: &str) -> Result<Vec<MinerInfo>>;
    /// The sites the ledger holds (several where the daemons of a region share one), by name.
    fn sites(&mut self) -> Result<Vec<String>>;
    fn events(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<EventRecord>>;
    fn audit(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AuditRow>>;
    fn payouts(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Payout>>;
    fn sales(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Sale>>;
    /// Deletes per-miner interval rows that start before `before` (the daily totals stay);
    /// returns how many went. A site keeps its recent minutes and its history by the day.
    fn prune_miner_intervals(&mut self, site: &str, before: Timestamp) -> Result<usize>;
}

/// Opens a store by URL: `postgres://...` or `postgresql://...` for PostgreSQL, anything else a
/// SQLite file path (`sqlite://PATH` or a bare path).
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PgStore::connect(url)?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Box::new(sqlite::SqliteStore::open(std::path::Path::new(
            path,
        ))?))
    }
}
