//! The SQL both backends run as written: standard statements with `$N` parameters, which
//! PostgreSQL numbers and SQLite binds by their order of first appearance (each appears once, in
//! order). What the dialects write differently (PostgreSQL's `unnest` batches and `::BIGINT`
//! sums, SQLite's catalogue) stays in each backend.

pub const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, description, applied_ms) VALUES ($1, $2, $3)";
pub const MAX_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
pub const UPSERT_MINER: &str = concat!(
    "INSERT INTO miners (site, miner, address, model, firmware) VALUES ($1, $2, $3, $4, $5) ",
    "ON CONFLICT (site, miner) DO UPDATE SET ",
    "address = excluded.address, model = excluded.model, firmware = excluded.firmware",
);
pub const INSERT_INTERVAL: &str = concat!(
    "INSERT INTO intervals (site, start_ms, end_ms, surplus_wh, fleet_wh, import_wh, ",
    "hashes_th, expected_sat, difficulty, mining, asleep, faulted) ",
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
);
pub const INSERT_EVENT: &str = concat!(
    "INSERT INTO events (site, run_ms, seq, at_ms, kind, actor, detail) ",
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
);
pub const INSERT_PAYOUT: &str = concat!(
    "INSERT INTO payouts (site, reference, at_ms, sat, source) ",
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
);
pub const INSERT_SALE: &str = concat!(
    "INSERT INTO sales (site, reference, at_ms, sat, fiat_minor, currency) ",
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
);
pub const DELETE_MINER_INTERVALS: &str =
    "DELETE FROM miner_intervals WHERE site = $1 AND start_ms < $2";
/// Every site with a row of its own: an interval, a miner, an event.
pub const SELECT_SITES: &str = concat!(
    "SELECT site FROM intervals UNION SELECT site FROM miners UNION SELECT site FROM events ",
    "ORDER BY site"
);
pub const SELECT_MINERS: &str =
    "SELECT miner, address, model, firmware FROM miners WHERE site = $1 ORDER BY miner";
pub const SELECT_INTERVALS: &str = concat!(
    "SELECT start_ms, end_ms, surplus_wh, fleet_wh, import_wh, hashes_th, expected_sat, ",
    "mining, asleep, faulted FROM intervals ",
    "WHERE site = $1 AND start_ms >= $2 AND start_ms < $3 ORDER BY start_ms",
);
pub const SELECT_EVENTS: &str = concat!(
    "SELECT seq, at_ms, kind, actor, detail FROM events ",
    "WHERE site = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY at_ms, run_ms, seq",
);
pub const SELECT_PAYOUTS: &str = concat!(
    "SELECT reference, at_ms, sat, source FROM payouts ",
    "WHERE site = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY at_ms, reference",
);
pub const SELECT_SALES: &str = concat!(
    "SELECT reference, at_ms, sat, fiat_minor, currency FROM sales ",
    "WHERE site = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY at_ms, reference",
);
pub const SELECT_AUDIT: &str = concat!(
    "SELECT c.run_ms, c.id, c.at_ms, c.miner, c.action, c.reason, c.actor, o.at_ms, o.result ",
    "FROM commands c LEFT JOIN command_outcomes o ",
    "ON o.site = c.site AND o.run_ms = c.run_ms AND o.id = c.id ",
    "WHERE c.site = $1 AND c.at_ms >= $2 AND c.at_ms < $3 ORDER BY c.at_ms, c.run_ms, c.id",
);
