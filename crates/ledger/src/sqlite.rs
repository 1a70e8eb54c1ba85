//! The embedded ledger: one SQLite file in WAL mode with `synchronous = FULL`, so that a
//! committed transaction survives a killed process and a lost machine alike; readers (the API,
//! reports) do not block the writer. Needs the system's libsqlite3 (Debian: libsqlite3-dev).

use std::path::Path;

use hashsink_units::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::schema::CREATE_VERSIONS;
use crate::sql;
use crate::{
    AuditRow, Batch, CommandRecord, EventRecord, IntervalRow, LedgerError, MinerInfo, MinerTotal,
    Payout, Result, Sale, Store,
};

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Invalid(format!(
                "{}: SQLite would not use WAL mode (got {mode}); is it on a network file system?",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(Self { conn })
    }

    /// `PRAGMA integrity_check`: "ok", or what is wrong.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

impl Store for SqliteStore {
    fn migrate(&mut self, now: Timestamp) -> Result<Vec<u32>> {
        self.conn.execute_batch(CREATE_VERSIONS)?;
        let have = self.version()?;
        let mut applied = Vec::new();
        for (version, description, statements) in crate::schema::pending(have)? {
            let tx = self.conn.transaction()?;
            for sql in *statements {
                tx.execute_batch(sql)?;
            }
            tx.execute(
                sql::RECORD_MIGRATION,
                params![version, description, now.as_millis()],
            )?;
            tx.commit()?;
            applied.push(*version);
        }
        Ok(applied)
    }

    fn version(&mut self) -> Result<u32> {
        let exists: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(0);
        }
        Ok(self.conn.query_row(sql::MAX_VERSION, [], |r| r.get(0))?)
    }

    fn write(&mut self, site: &str, run_ms: i64, batch: &Batch) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut miner = tx.prepare(sql::UPSERT_MINER)?;
            for m in &batch.miners {
                miner.execute(params![site, m.miner, m.address, m.model, m.firmware])?;
            }
            let mut interval = tx.prepare(sql::INSERT_INTERVAL)?;
            let mut per_miner = tx.prepare(
                "INSERT INTO miner_intervals (site, start_ms, miner, energy_wh, hashes_th, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?;
            let mut day = tx.prepare(&format!(
                "INSERT INTO miner_days (site, day_ms, miner, energy_wh, hashes_th, mining_intervals)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) {}",
                crate::schema::UPSERT_DAY
            ))?;
            for i in &batch.intervals {
                let new = interval.execute(params![
                    site,
                    i.start.as_millis(),
                    i.end.as_millis(),
                    i.surplus_wh,
                    i.fleet_wh,
                    i.import_wh,
                    i.hashes_th,
                    i.expected_sat,
                    i.difficulty,
                    i.mining,
                    i.asleep,
                    i.faulted
                ])?;
                if new == 0 {
                    // Written before (a retried batch): its miners and daily totals too.
                    continue;
                }
                let day_ms = crate::schema::day_of(i.start.as_millis());
                for m in &i.miners {
                    day.execute(params![
                        site,
                        day_ms,
                        m.miner,
                        m.energy_wh,
                        m.hashes_th,
                        i64::from(m.state == "mining")
                    ])?;
                    per_miner.execute(params![
                        site,
                        i.start.as_millis(),
                        m.miner,
                        m.energy_wh,
                        m.hashes_th,
                        m.state
                    ])?;
                }
            }
            let mut command = tx.prepare(
                "INSERT INTO commands (site, run_ms, id, at_ms, miner, action, reason, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            )?;
            for c in &batch.commands {
                command.execute(params![
                    site,
                    run_ms,
                    c.id as i64,
                    c.at.as_millis(),
                    c.miner,
                    c.action,
                    c.reason,
                    c.actor
                ])?;
            }
            let mut outcome = tx.prepare(
                "INSERT INTO command_outcomes (site, run_ms, id, at_ms, result)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            )?;
            for o in &batch.outcomes {
                outcome.execute(params![
                    site,
                    run_ms,
                    o.id as i64,
                    o.at.as_millis(),
                    o.result
                ])?;
            }
            let mut event = tx.prepare(sql::INSERT_EVENT)?;
            for e in &batch.events {
                event.execute(params![
                    site,
                    run_ms,
                    e.seq as i64,
                    e.at.as_millis(),
                    e.kind,
                    e.actor,
                    e.detail
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn add_payouts(&mut self, site: &str, payouts: &[Payout]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        {
            let mut stmt = tx.prepare(sql::INSERT_PAYOUT)?;
            for p in payouts {
                new += stmt.execute(params![
                    site,
                    p.reference,
                    p.at.as_millis(),
                    p.sat,
                    p.source
                ])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn add_sales(&mut self, site: &str, sales: &[Sale]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        {
            let mut stmt = tx.prepare(sql::INSERT_SALE)?;
            for s in sales {
                new += stmt.execute(params![
                    site,
                    s.reference,
                    s.at.as_millis(),
                    s.sat,
                    s.fiat_minor,
                    s.currency
                ])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn intervals(
        &mut self,
        site: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<IntervalRow>> {
        let mut stmt = self.conn.prepare(sql::SELECT_INTERVALS)?;
        let rows = stmt.query_map(params![site, from.as_millis(), to.as_millis()], |r| {
            Ok(IntervalRow {
                start: ts(r.get(0)?),
                end: ts(r.get(1)?),
                surplus_wh: r.get(2)?,
                fleet_wh: r.get(3)?,
                import_wh: r.get(4)?,
                hashes_th: r.get(5)?,
                expected_sat: r.get(6)?,
                mining: r.get(7)?,
                asleep: r.get(8)?,
                faulted: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn miner_day_totals(
        &mut self,
        site: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<MinerTotal>> {
        let mut stmt = self.conn.prepare(
            "SELECT miner, SUM(energy_wh), SUM(hashes_th), SUM(mining_intervals)
             FROM miner_days WHERE site = ?1 AND day_ms >= ?2 AND day_ms < ?3
             GROUP BY miner ORDER BY miner",
        )?;
        let rows = stmt.query_map(params![site, from_day, to_day], |r| {
            Ok(MinerTotal {
                miner: r.get(0)?,
                energy_wh: r.get(1)?,
                hashes_th: r.get(2)?,
                mining_intervals: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn miner_interval_totals(
        &mut self,
        site: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MinerTotal>> {
        let mut stmt = self.conn.prepare(
            "SELECT miner, SUM(energy_wh), SUM(hashes_th), SUM(CASE WHEN state = 'mining' THEN 1 ELSE 0 END)
             FROM miner_intervals WHERE site = ?1 AND start_ms >= ?2 AND start_ms < ?3
             GROUP BY miner ORDER BY miner",
        )?;
        let rows = stmt.query_map(params![site, from.as_millis(), to.as_millis()], |r| {
            Ok(MinerTotal {
                miner: r.get(0)?,
                energy_wh: r.get(1)?,
                hashes_th: r.get(2)?,
                mining_intervals: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn miners(&mut self, site: &str) -> Result<Vec<MinerInfo>> {
        let mut stmt = self.conn.prepare(sql::SELECT_MINERS)?;
        let rows = stmt.query_map(params![site], |r| {
            Ok(MinerInfo {
                miner: r.get(0)?,
                address: r.get(1)?,
                model: r.get(2)?,
                firmware: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn sites(&mut self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(sql::SELECT_SITES)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn events(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<EventRecord>> {
        let mut stmt = self.conn.prepare(sql::SELECT_EVENTS)?;
        let rows = stmt.query_map(params![site, from.as_millis(), to.as_millis()], |r| {
            Ok(EventRecord {
                seq: r.get::<_, i64>(0)? as u64,
                at: ts(r.get(1)?),
                kind: r.get(2)?,
                actor: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn audit(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AuditRow>> {
        let mut stmt = self.conn.prepare(sql::SELECT_AUDIT)?;
        let rows = stmt.query_map(params![site, from.as_millis(), to.as_millis()], |r| {
            let outcome_at: Option<i64> = r.get(7)?;
            let result: Option<String> = r.get(8)?;
            Ok(AuditRow {
                run_ms: r.get(0)?,
                command: CommandRecord {
                    id: r.get::<_, i64>(1)? as u64,
                    at: ts(r.get(2)?),
                    miner: r.get(3)?,
                    action: r.get(4)?,
                    reason: r.get(5)?,
                    actor: r.get(6)?,
                },
                outcome: outcome_at.zip(result).map(|(at, r)| (ts(at), r)),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn payouts(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Payout>> {
        let mut stmt = self.conn.prepare(sql::SELECT_PAYOUTS)?;
        let rows = stmt.query_map(params![site, from.as_millis(), to.as_millis()], |r| {
            Ok(Payout {
                reference: r.get(0)?,
                at: ts(r.get(1)?),
                sat: r.get(2)?,
                source: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn prune_miner_intervals(&mut self, site: &str, before: Timestamp) -> Result<usize> {
        Ok(self.conn.execute(
            sql::DELETE_MINER_INTERVALS,
            params![site, before.as_millis()],
        )?)
    }

    fn sales(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Sale>> {
        let mut stmt = self.conn.prepare(sql::SELECT_SALES)?;
        let rows = stmt.query_map(params![site, from.as_millis(), to.as_millis()], |r| {
            Ok(Sale {
                reference: r.get(0)?,
                at: ts(r.get(1)?),
                sat: r.get(2)?,
                fiat_minor: r.get(3)?,
                currency: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_passes_the_ledger_checks() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        crate::conformance::check_all(&mut || {
            n += 1;
            let mut s = SqliteStore::open(&dir.path().join(format!("l{n}.db"))).unwrap();
            assert_eq!(s.migrate(Timestamp::from_millis(0)).unwrap(), vec![1, 2]);
            Box::new(s)
        });
    }

    #[test]
    fn a_ledger_of_an_older_version_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("l.db")).unwrap();
        // As an earlier hashsink left it: version 1 only, with a day of data.
        s.conn.execute_batch(CREATE_VERSIONS).unwrap();
        for sql in crate::schema::MIGRATIONS[0].2 {
            s.conn.execute_batch(sql).unwrap();
        }
        s.conn
            .execute("INSERT INTO schema_migrations VALUES (1, 'v1', 0)", [])
            .unwrap();
        assert_eq!(s.version().unwrap(), 1);
        assert_eq!(s.migrate(Timestamp::from_millis(0)).unwrap(), vec![2]);
        assert_eq!(s.version().unwrap(), crate::schema::latest());
        s.write("plant", 1, &crate::conformance::sample_batch())
            .unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_and_wal_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut s = SqliteStore::open(&path).unwrap();
        s.migrate(Timestamp::from_millis(0)).unwrap();
        s.conn
            .execute(
                "INSERT INTO schema_migrations (version, description, applied_ms) VALUES (99, 'future', 0)",
                [],
            )
            .unwrap();
        let e = s.migrate(Timestamp::from_millis(0)).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }
}
