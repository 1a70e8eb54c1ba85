//! The ledger's schema as numbered migrations, applied in order, each in its own transaction,
//! and recorded in `schema_migrations`. The SQL is the common dialect of SQLite and PostgreSQL
//! (BIGINT, DOUBLE PRECISION, TEXT; no autoincrement: every key is natural). A database newer
//! than this binary is refused rather than written to.

/// (version, what it does, SQL statements).
pub type Migration = (u32, &'static str, &'static [&'static str]);

pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        "intervals, per-miner intervals, miners, commands and outcomes, events, payouts, sales",
        &[
            "CREATE TABLE intervals (
            site TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            surplus_wh DOUBLE PRECISION,
            fleet_wh DOUBLE PRECISION NOT NULL,
            import_wh DOUBLE PRECISION NOT NULL,
            hashes_th DOUBLE PRECISION NOT NULL,
            expected_sat DOUBLE PRECISION NOT NULL,
            difficulty DOUBLE PRECISION,
            mining INTEGER NOT NULL,
            asleep INTEGER NOT NULL,
            faulted INTEGER NOT NULL,
            PRIMARY KEY (site, start_ms)
        )",
            "CREATE TABLE miner_intervals (
            site TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            miner INTEGER NOT NULL,
            energy_wh DOUBLE PRECISION NOT NULL,
            hashes_th DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (site, start_ms, miner)
        )",
            "CREATE TABLE miners (
            site TEXT NOT NULL,
            miner INTEGER NOT NULL,
            address TEXT NOT NULL,
            model TEXT NOT NULL,
            firmware TEXT NOT NULL,
            PRIMARY KEY (site, miner)
        )",
            "CREATE TABLE commands (
            site TEXT NOT NULL,
            run_ms BIGINT NOT NULL,
            id BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            miner INTEGER,
            action TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            PRIMARY KEY (site, run_ms, id)
        )",
            "CREATE TABLE command_outcomes (
            site TEXT NOT NULL,
            run_ms BIGINT NOT NULL,
            id BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            result TEXT NOT NULL,
            PRIMARY KEY (site, run_ms, id)
        )",
            "CREATE TABLE events (
            site TEXT NOT NULL,
            run_ms BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT NOT NULL,
            PRIMARY KEY (site, run_ms, seq)
        )",
            "CREATE INDEX events_at ON events (site, at_ms)",
            "CREATE INDEX commands_at ON commands (site, at_ms)",
            "CREATE TABLE payouts (
            site TEXT NOT NULL,
            reference TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            sat BIGINT NOT NULL,
            source TEXT NOT NULL,
            PRIMARY KEY (site, reference)
        )",
            "CREATE TABLE sales (
            site TEXT NOT NULL,
            reference TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            sat BIGINT NOT NULL,
            fiat_minor BIGINT NOT NULL,
            currency TEXT NOT NULL,
            PRIMARY KEY (site, reference)
        )",
        ],
    ),
    (
        2,
        "per-miner daily totals, kept as intervals are written (a month's report reads 30 rows a miner, not 43,200)",
        &["CREATE TABLE miner_days (
            site TEXT NOT NULL,
            day_ms BIGINT NOT NULL,
            miner INTEGER NOT NULL,
            energy_wh DOUBLE PRECISION NOT NULL,
            hashes_th DOUBLE PRECISION NOT NULL,
            mining_intervals BIGINT NOT NULL,
            PRIMARY KEY (site, day_ms, miner)
        )"],
    ),
];

pub const DAY_MS: i64 = 86_400_000;

/// The UTC day (its first millisecond) of `ms`.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

pub const UPSERT_DAY: &str = "ON CONFLICT (site, day_ms, miner) DO UPDATE SET
    energy_wh = miner_days.energy_wh + excluded.energy_wh,
    hashes_th = miner_days.hashes_th + excluded.hashes_th,
    mining_intervals = miner_days.mining_intervals + excluded.mining_intervals";

pub const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_ms BIGINT NOT NULL
)";

/// The newest schema this binary knows.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The migrations a database at version `have` still needs, oldest first; a database newer than
/// this binary is an error.
pub fn pending(have: u32) -> Result<Vec<&'static Migration>, crate::LedgerError> {
    if have > latest() {
        return Err(crate::LedgerError::NewerSchema {
            found: have,
            known: latest(),
        });
    }
    Ok(MIGRATIONS.iter().filter(|m| m.0 > have).collect())
}
