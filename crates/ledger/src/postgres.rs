//! The ledger in PostgreSQL: for a site that already runs one, or many sites reporting to one
//! place (every row carries its site). The same schema and semantics as SQLite; a site's
//! per-miner rows go in one `unnest` statement per interval rather than one round trip per
//! miner. Plain TCP or a Unix socket (`postgres://user@%2Frun%2Fpostgresql/db`); TLS is not
//! built in.

use hashsink_units::Timestamp;
use postgres::{Client, NoTls, Row};

use crate::schema::CREATE_VERSIONS;
use crate::sql;
use crate::{
    AuditRow, Batch, CommandRecord, EventRecord, IntervalRow, MinerInfo, MinerTotal, Payout,
    Result, Sale, Store,
};

pub struct PgStore {
    url: String,
    connection: Client,
}

impl PgStore {
    pub fn connect(url: &str) -> Result<Self> {
        Ok(Self {
            url: url.to_string(),
            connection: Client::connect(url, NoTls)?,
        })
    }

    /// The connection, opened again if the server closed it (a restart, a failover): without
    /// this a restarted PostgreSQL left the ledger's writer retrying on a dead connection for
    /// good (found by `hashsink-bench soak`). A failed reconnect is the caller's transient
    /// error, tried again on its next write.
    fn client(&mut self) -> Result<&mut Client> {
        if self.connection.is_closed() {
            self.connection = Client::connect(&self.url, NoTls)?;
        }
        Ok(&mut self.connection)
    }
}

/// For the test suites: the database `HASHSINK_TEST_POSTGRES` names (CI starts one with
/// `.ci/postgres.sh`), or None after noting the skip; with `HASHSINK_REQUIRE_POSTGRES` set a
/// missing one fails the test instead.
pub fn test_database_url() -> Option<String> {
    let Ok(url) = std::env::var("HASHSINK_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("HASHSINK_REQUIRE_POSTGRES").is_none(),
            "HASHSINK_REQUIRE_POSTGRES is set but HASHSINK_TEST_POSTGRES is not"
        );
        hashsink_units::note_skipped_peer(
            "PostgreSQL",
            "set HASHSINK_TEST_POSTGRES=postgres://...; .ci/postgres.sh starts one",
        );
        return None;
    };
    Some(url)
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn u(v: i32) -> u32 {
    v.max(0) as u32
}

fn interval_row(r: &Row) -> IntervalRow {
    IntervalRow {
        start: ts(r.get(0)),
        end: ts(r.get(1)),
        surplus_wh: r.get(2),
        fleet_wh: r.get(3),
        import_wh: r.get(4),
        hashes_th: r.get(5),
        expected_sat: r.get(6),
        mining: u(r.get(7)),
        asleep: u(r.get(8)),
        faulted: u(r.get(9)),
    }
}

impl Store for PgStore {
    fn migrate(&mut self, now: Timestamp) -> Result<Vec<u32>> {
        self.client()?.batch_execute(CREATE_VERSIONS)?;
        let have = self.version()?;
        let mut applied = Vec::new();
        for (version, description, statements) in crate::schema::pending(have)? {
            let mut tx = self.client()?.transaction()?;
            for sql in *statements {
                tx.batch_execute(sql)?;
            }
            tx.execute(
                sql::RECORD_MIGRATION,
                &[&(*version as i32), description, &now.as_millis()],
            )?;
            tx.commit()?;
            applied.push(*version);
        }
        Ok(applied)
    }

    fn version(&mut self) -> Result<u32> {
        let exists: bool = self
            .client()?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations' AND table_schema = current_schema())",
                &[],
            )?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let v: i32 = self.client()?.query_one(sql::MAX_VERSION, &[])?.get(0);
        Ok(u(v))
    }

    fn write(&mut self, site: &str, run_ms: i64, batch: &Batch) -> Result<()> {
        let mut tx = self.client()?.transaction()?;
        if !batch.miners.is_empty() {
            let stmt = tx.prepare(sql::UPSERT_MINER)?;
            for m in &batch.miners {
                tx.execute(
                    &stmt,
                    &[&site, &(m.miner as i32), &m.address, &m.model, &m.firmware],
                )?;
            }
        }
        let interval = tx.prepare(sql::INSERT_INTERVAL)?;
        for i in &batch.intervals {
            let new = tx.execute(
                &interval,
                &[
                    &site,
                    &i.start.as_millis(),
                    &i.end.as_millis(),
                    &i.surplus_wh,
                    &i.fleet_wh,
                    &i.import_wh,
                    &i.hashes_th,
                    &i.expected_sat,
                    &i.difficulty,
                    &(i.mining as i32),
                    &(i.asleep as i32),
                    &(i.faulted as i32),
                ],
            )?;
            if new == 0 {
                // Written before (a retried batch): its miners and daily totals too.
                continue;
            }
            if !i.miners.is_empty() {
                let ids: Vec<i32> = i.miners.iter().map(|m| m.miner as i32).collect();
                let energy: Vec<f64> = i.miners.iter().map(|m| m.energy_wh).collect();
                let hashes: Vec<f64> = i.miners.iter().map(|m| m.hashes_th).collect();
                let states: Vec<&str> = i.miners.iter().map(|m| m.state.as_str()).collect();
                tx.execute(
                    "INSERT INTO miner_intervals (site, start_ms, miner, energy_wh, hashes_th, state)
                     SELECT $1, $2, m, e, h, s FROM unnest($3::int[], $4::float8[], $5::float8[], $6::text[]) AS t(m, e, h, s)
                     ON CONFLICT DO NOTHING",
                    &[&site, &i.start.as_millis(), &ids, &energy, &hashes, &states],
                )?;
                tx.execute(
                    &format!(
                        "INSERT INTO miner_days (site, day_ms, miner, energy_wh, hashes_th, mining_intervals)
                         SELECT $1, $2, m, e, h, CASE WHEN s = 'mining' THEN 1 ELSE 0 END
                         FROM unnest($3::int[], $4::float8[], $5::float8[], $6::text[]) AS t(m, e, h, s) {}",
                        crate::schema::UPSERT_DAY
                    ),
                    &[&site, &crate::schema::day_of(i.start.as_millis()), &ids, &energy, &hashes, &states],
                )?;
            }
        }
        if !batch.commands.is_empty() {
            // One statement for the whole batch (a shed is thousands of commands).
            let ids: Vec<i64> = batch.commands.iter().map(|c| c.id as i64).collect();
            let at: Vec<i64> = batch.commands.iter().map(|c| c.at.as_millis()).collect();
            let miners: Vec<Option<i32>> = batch
                .commands
                .iter()
                .map(|c| c.miner.map(|m| m as i32))
                .collect();
            let actions: Vec<&str> = batch.commands.iter().map(|c| c.action.as_str()).collect();
            let reasons: Vec<&str> = batch.commands.iter().map(|c| c.reason.as_str()).collect();
            let actors: Vec<&str> = batch.commands.iter().map(|c| c.actor.as_str()).collect();
            tx.execute(
                "INSERT INTO commands (site, run_ms, id, at_ms, miner, action, reason, actor)
                 SELECT $1, $2, i, a, m, ac, r, who
                 FROM unnest($3::int8[], $4::int8[], $5::int4[], $6::text[], $7::text[], $8::text[])
                   AS t(i, a, m, ac, r, who)
                 ON CONFLICT DO NOTHING",
                &[
                    &site, &run_ms, &ids, &at, &miners, &actions, &reasons, &actors,
                ],
            )?;
        }
        if !batch.outcomes.is_empty() {
            let ids: Vec<i64> = batch.outcomes.iter().map(|o| o.id as i64).collect();
            let at: Vec<i64> = batch.outcomes.iter().map(|o| o.at.as_millis()).collect();
            let results: Vec<&str> = batch.outcomes.iter().map(|o| o.result.as_str()).collect();
            tx.execute(
                "INSERT INTO command_outcomes (site, run_ms, id, at_ms, result)
                 SELECT $1, $2, i, a, r FROM unnest($3::int8[], $4::int8[], $5::text[]) AS t(i, a, r)
                 ON CONFLICT DO NOTHING",
                &[&site, &run_ms, &ids, &at, &results],
            )?;
        }
        if !batch.events.is_empty() {
            let stmt = tx.prepare(sql::INSERT_EVENT)?;
            for e in &batch.events {
                tx.execute(
                    &stmt,
                    &[
                        &site,
                        &run_ms,
                        &(e.seq as i64),
                        &e.at.as_millis(),
                        &e.kind,
                        &e.actor,
                        &e.detail,
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn add_payouts(&mut self, site: &str, payouts: &[Payout]) -> Result<usize> {
        let mut tx = self.client()?.transaction()?;
        let mut new = 0;
        for p in payouts {
            new += tx.execute(
                sql::INSERT_PAYOUT,
                &[&site, &p.reference, &p.at.as_millis(), &p.sat, &p.source],
            )? as usize;
        }
        tx.commit()?;
        Ok(new)
    }

    fn add_sales(&mut self, site: &str, sales: &[Sale]) -> Result<usize> {
        let mut tx = self.client()?.transaction()?;
        let mut new = 0;
        for s in sales {
            new += tx.execute(
                sql::INSERT_SALE,
                &[
                    &site,
                    &s.reference,
                    &s.at.as_millis(),
                    &s.sat,
                    &s.fiat_minor,
                    &s.currency,
                ],
            )? as usize;
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
        Ok(self
            .client()?
            .query(
                sql::SELECT_INTERVALS,
                &[&site, &from.as_millis(), &to.as_millis()],
            )?
            .iter()
            .map(interval_row)
            .collect())
    }

    fn miner_day_totals(
        &mut self,
        site: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<MinerTotal>> {
        Ok(self
            .client()?
            .query(
                "SELECT miner, SUM(energy_wh), SUM(hashes_th), SUM(mining_intervals)::BIGINT
                 FROM miner_days WHERE site = $1 AND day_ms >= $2 AND day_ms < $3
                 GROUP BY miner ORDER BY miner",
                &[&site, &from_day, &to_day],
            )?
            .iter()
            .map(|r| MinerTotal {
                miner: u(r.get(0)),
                energy_wh: r.get(1),
                hashes_th: r.get(2),
                mining_intervals: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }

    fn miner_interval_totals(
        &mut self,
        site: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MinerTotal>> {
        Ok(self
            .client()?
            .query(
                "SELECT miner, SUM(energy_wh), SUM(hashes_th), SUM(CASE WHEN state = 'mining' THEN 1 ELSE 0 END)::BIGINT
                 FROM miner_intervals WHERE site = $1 AND start_ms >= $2 AND start_ms < $3
                 GROUP BY miner ORDER BY miner",
                &[&site, &from.as_millis(), &to.as_millis()],
            )?
            .iter()
            .map(|r| MinerTotal {
                miner: u(r.get(0)),
                energy_wh: r.get(1),
                hashes_th: r.get(2),
                mining_intervals: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }

    fn miners(&mut self, site: &str) -> Result<Vec<MinerInfo>> {
        Ok(self
            .client()?
            .query(sql::SELECT_MINERS, &[&site])?
            .iter()
            .map(|r| MinerInfo {
                miner: u(r.get(0)),
                address: r.get(1),
                model: r.get(2),
                firmware: r.get(3),
            })
            .collect())
    }

    fn sites(&mut self) -> Result<Vec<String>> {
        let rows = self.client()?.query(sql::SELECT_SITES, &[])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn events(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<EventRecord>> {
        Ok(self
            .client()?
            .query(
                sql::SELECT_EVENTS,
                &[&site, &from.as_millis(), &to.as_millis()],
            )?
            .iter()
            .map(|r| EventRecord {
                seq: r.get::<_, i64>(0).max(0) as u64,
                at: ts(r.get(1)),
                kind: r.get(2),
                actor: r.get(3),
                detail: r.get(4),
            })
            .collect())
    }

    fn audit(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AuditRow>> {
        Ok(self
            .client()?
            .query(
                sql::SELECT_AUDIT,
                &[&site, &from.as_millis(), &to.as_millis()],
            )?
            .iter()
            .map(|r| {
                let outcome_at: Option<i64> = r.get(7);
                let result: Option<String> = r.get(8);
                AuditRow {
                    run_ms: r.get(0),
                    command: CommandRecord {
                        id: r.get::<_, i64>(1).max(0) as u64,
                        at: ts(r.get(2)),
                        miner: r.get::<_, Option<i32>>(3).map(u),
                        action: r.get(4),
                        reason: r.get(5),
                        actor: r.get(6),
                    },
                    outcome: outcome_at.zip(result).map(|(at, r)| (ts(at), r)),
                }
            })
            .collect())
    }

    fn payouts(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Payout>> {
        Ok(self
            .client()?
            .query(
                sql::SELECT_PAYOUTS,
                &[&site, &from.as_millis(), &to.as_millis()],
            )?
            .iter()
            .map(|r| Payout {
                reference: r.get(0),
                at: ts(r.get(1)),
                sat: r.get(2),
                source: r.get(3),
            })
            .collect())
    }

    fn prune_miner_intervals(&mut self, site: &str, before: Timestamp) -> Result<usize> {
        Ok(self
            .client()?
            .execute(sql::DELETE_MINER_INTERVALS, &[&site, &before.as_millis()])?
            as usize)
    }

    fn sales(&mut self, site: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Sale>> {
        Ok(self
            .client()?
            .query(
                sql::SELECT_SALES,
                &[&site, &from.as_millis(), &to.as_millis()],
            )?
            .iter()
            .map(|r| Sale {
                reference: r.get(0),
                at: ts(r.get(1)),
                sat: r.get(2),
                fiat_minor: r.get(3),
                currency: r.get(4),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server closes the store's connection (as a restart does; here by terminating its
    /// backend): the next call opens it again.
    #[test]
    fn a_connection_the_server_closed_is_opened_again() {
        let Some(url) = test_database_url() else {
            return;
        };
        let name = format!("hashsink-reconnect-{}", std::process::id());
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut store = PgStore::connect(&format!("{url}{sep}application_name={name}")).unwrap();
        store.version().unwrap();
        let mut admin = Client::connect(&url, NoTls).unwrap();
        let killed: i64 = admin
            .query_one(
                "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(killed, 1);
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The first call may learn of the close the hard way; the one after must go through.
        let _ = store.version();
        store
            .version()
            .expect("the store reconnects after the server closed it");
    }

    /// Runs against `HASHSINK_TEST_POSTGRES` (a URL of a database the test may fill: each
    /// check gets a fresh schema in it). Skipped without one, unless
    /// `HASHSINK_REQUIRE_POSTGRES` is set (CI sets both and starts Debian's PostgreSQL).
    #[test]
    fn postgres_passes_the_ledger_checks() {
        let Some(url) = test_database_url() else {
            return;
        };
        let mut n = 0;
        crate::conformance::check_all(&mut || {
            n += 1;
            let schema = format!("ledger_test_{}_{n}", std::process::id());
            let mut admin = Client::connect(&url, NoTls).expect("connect to PostgreSQL");
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                ))
                .unwrap();
            let sep = if url.contains('?') { '&' } else { '?' };
            let mut s =
                PgStore::connect(&format!("{url}{sep}options=-csearch_path%3D{schema}")).unwrap();
            assert_eq!(s.migrate(Timestamp::from_millis(0)).unwrap(), vec![1, 2]);
            Box::new(s)
        });
    }
}
