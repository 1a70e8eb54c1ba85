//! The daemon's side of the ledger: it integrates energy and hashes per miner and for the site
//! on every control tick, closes an interval at each boundary (aligned to the clock: 12:00,
//! 12:01, ...), collects every command, outcome and event as it happens, and hands batches to a
//! writer thread that owns the store. The control loop never waits on the database: a batch
//! that fails to write is kept and retried, and the writer is flushed and joined when the
//! daemon stops. Each committed interval is logged ("ledger: interval committed"). A batch the
//! database refuses (a constraint, a value it cannot store) is set aside in the quarantine file
//! (JSON lines, with why) and never blocks the batches after it; the writer's queue is bounded,
//! and what overflows is set aside too. What was set aside, and what could not even be, is
//! counted (`Recorder::set_aside`) and logged.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use hashsink_core::MinerStatus;
use hashsink_ledger::{
    Batch, CommandRecord, EventRecord, Interval, MinerInfo, MinerInterval, Outcome, Store,
};
use hashsink_market::MarketHistory;
use hashsink_units::{Timestamp, Watts};
use tracing::{error, info, warn};

/// What the writer thread takes.
enum Msg {
    Write(Batch),
    /// Delete per-miner interval rows older than this.
    Prune(Timestamp),
    Stop,
    /// (Internal) nothing arrived: try the queued batches again.
    Retry,
}

/// The satoshis a terahash earns on a date: the network's difficulty and block reward that day
/// (the bundled history; after its last day, that day's).
pub struct Reward {
    history: MarketHistory,
}

impl Reward {
    pub fn bundled() -> Self {
        Self {
            history: MarketHistory::bundled(),
        }
    }

    /// (difficulty, satoshis per terahash) at `t`.
    pub fn at(&self, t: Timestamp) -> (f64, f64) {
        let date = jiff::Timestamp::from_millisecond(t.as_millis())
            .map(|ts| jiff::tz::Offset::UTC.to_datetime(ts).date())
            .unwrap_or(self.history.last());
        let date = date.clamp(self.history.first(), self.history.last());
        match self.history.day(date) {
            Ok(day) => (
                day.difficulty,
                1e12 / (day.difficulty * 4_294_967_296.0) * day.reward_per_block_btc() * 1e8,
            ),
            Err(_) => (f64::NAN, 0.0),
        }
    }
}

/// Rows the writer keeps queued while the database fails (about 200 one-minute intervals of a
/// 10,000-miner fleet); beyond that the oldest batches are set aside.
const MAX_QUEUED_ROWS: usize = 2_000_000;

/// Where refused and overflowing batches go, and how many did.
#[derive(Clone)]
pub struct SetAside {
    path: PathBuf,
    /// Batches written to the quarantine file.
    kept: Arc<AtomicU64>,
    /// Batches lost: neither written to the database nor to the file.
    lost: Arc<AtomicU64>,
}

impl SetAside {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            kept: Arc::default(),
            lost: Arc::default(),
        }
    }

    /// (batches set aside in the file, batches lost).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.kept.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }

    /// Appends the batch to the quarantine file with why; counts it lost if even that fails.
    fn keep(&self, site: &str, run_ms: i64, batch: &Batch, why: &str) {
        let line = serde_json::json!({"site": site, "run_ms": run_ms, "why": why, "batch": batch});
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        let path = self.path.display();
        match written {
            Ok(()) => {
                self.kept.fetch_add(1, Ordering::Relaxed);
                error!(%path, rows = batch.rows(), %why, "ledger: batch set aside in the quarantine file; the batches after it go on");
            }
            Err(e) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                error!(%path, rows = batch.rows(), %why, error = %e, "ledger: batch lost: the quarantine file cannot be written either");
            }
        }
    }
}

/// How often a failing write is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Tries a failing database gets once the daemon is stopping, before the rest is given up.
const TRIES_AT_STOP: u32 = 10;

/// The writer thread: writes batches in order, keeps a batch that fails and tries it again every
/// second, prunes when asked; at `Stop` (or when the daemon is gone) it writes what is queued,
/// giving a failing database `TRIES_AT_STOP` more tries so that the daemon's stop never hangs.
fn write_until_stopped(
    store: &mut dyn Store,
    site: &str,
    run_ms: i64,
    rx: &mpsc::Receiver<Msg>,
    aside: &SetAside,
) {
    let mut queue: std::collections::VecDeque<Batch> = Default::default();
    let mut stopping = false;
    let mut tries_at_stop = 0;
    loop {
        if !stopping {
            // Block while idle; with batches waiting, wake to retry them.
            let msg = if queue.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(RETRY) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => Some(Msg::Retry),
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            };
            match msg {
                Some(Msg::Write(b)) => queue.push_back(b),
                Some(Msg::Prune(before)) => match store.prune_miner_intervals(site, before) {
                    Ok(0) => {}
                    Ok(n) => info!(
                        rows = n,
                        before_ms = before.as_millis(),
                        "ledger: old per-miner rows deleted (daily totals kept)"
                    ),
                    Err(e) => warn!(error = %e, "ledger: pruning old per-miner rows failed"),
                },
                Some(Msg::Retry) => {}
                Some(Msg::Stop) | None => stopping = true,
            }
        }
        while let Some(b) = queue.front() {
            let writing = std::time::Instant::now();
            match store.write(site, run_ms, b) {
                Ok(()) => {}
                Err(e) if e.is_permanent() => {
                    let why = format!("the database refused it: {e}");
                    aside.keep(site, run_ms, b, &why);
                    queue.pop_front();
                    continue;
                }
                Err(e) => {
                    error!(error = %e, queued = queue.len(), "ledger: write failed; kept, retrying");
                    break;
                }
            }
            let write_ms = writing.elapsed().as_secs_f64() * 1000.0;
            for i in &b.intervals {
                info!(
                    start_ms = i.start.as_millis(),
                    fleet_kwh = i.fleet_wh / 1000.0,
                    expected_sat = i.expected_sat,
                    rows = b.rows(),
                    write_ms,
                    "ledger: interval committed"
                );
            }
            queue.pop_front();
        }
        let mut rows: usize = queue.iter().map(Batch::rows).sum();
        while rows > MAX_QUEUED_ROWS
            && let Some(b) = queue.pop_front()
        {
            rows -= b.rows();
            aside.keep(
                site,
                run_ms,
                &b,
                "the database kept failing and the queue is full",
            );
        }
        if stopping {
            if queue.is_empty() {
                return;
            }
            tries_at_stop += 1;
            if tries_at_stop >= TRIES_AT_STOP {
                error!(
                    batches = queue.len(),
                    "ledger: the database kept failing at stop; the queued batches are set aside"
                );
                for b in &queue {
                    aside.keep(site, run_ms, b, "the database kept failing at stop");
                }
                return;
            }
            std::thread::sleep(RETRY);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct MinerAcc {
    energy_wh: f64,
    hashes_th: f64,
}

/// The ledger as the control loop sees it.
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    writer: Option<std::thread::JoinHandle<()>>,
    interval: Duration,
    start: Timestamp,
    last_t: Timestamp,
    miners: Vec<MinerAcc>,
    surplus_wh: f64,
    surplus_missing: bool,
    fleet_wh: f64,
    import_wh: f64,
    reward: Reward,
    /// Where refused batches go, and the counts.
    aside: SetAside,
    pending: Batch,
    seq: u64,
    keep_miner_intervals: Option<Duration>,
}

fn floor_to(t: Timestamp, interval: Duration) -> Timestamp {
    let step = interval.as_millis().max(1) as i64;
    Timestamp::from_millis(t.as_millis().div_euclid(step) * step)
}

fn state_name(s: &MinerStatus) -> &'static str {
    match s {
        MinerStatus::Mining { .. } => "mining",
        MinerStatus::Booting { .. } => "booting",
        MinerStatus::Asleep { .. } => "asleep",
        MinerStatus::Unreachable => "unreachable",
    }
}

impl Recorder {
    /// Opens and migrates the site's ledger and starts its writer. A ledger that cannot be
    /// opened stops the daemon before it drives anything (the error says how to run without
    /// one: `[ledger] enabled = false`).
    pub fn open(
        site_name: &str,
        fleet: &hashsink_core::Fleet,
        addresses: &[std::net::IpAddr],
        config: &crate::site::LedgerConfig,
        now: Timestamp,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let shown = if config.url.starts_with("postgres") {
            let host = config.url.split('@').next_back();
            host.unwrap_or("postgres").to_string()
        } else {
            config.url.clone()
        };
        // On a thread of its own: the PostgreSQL client blocks on a runtime of its own, which
        // cannot start on one of the daemon's (found by `hashsink-bench soak`).
        let (store, applied) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut store = hashsink_ledger::open(&config.url).with_context(|| {
                        format!("[ledger] cannot open {shown} (or set [ledger] enabled = false)")
                    })?;
                    let applied = store
                        .migrate(now)
                        .with_context(|| format!("[ledger] {shown}: migrating the schema"))?;
                    anyhow::Ok((store, applied))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("[ledger] {shown}: opening it panicked"))?
        })?;
        info!(ledger = %shown, migrations = ?applied, interval_s = config.interval.as_secs_f64(), "ledger open");
        let miners = fleet
            .miner_ids()
            .map(|m| {
                let spec = fleet.spec_of(m);
                MinerInfo {
                    miner: m.0,
                    address: addresses[m.index()].to_string(),
                    model: spec.model.clone(),
                    firmware: spec.firmware.key().to_string(),
                }
            })
            .collect();
        // This run's id: the wall clock's, whatever the daemon's clock reads.
        let run_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (interval, keep) = (config.interval, config.keep_miner_intervals);
        let aside = SetAside::new(config.quarantine.clone());
        let site = site_name.to_string();
        Ok(Self::start(
            store, site, run_ms, interval, keep, now, miners, aside,
        ))
    }

    /// Starts the writer thread on `store` (migrated already). `run_ms` tells this daemon run's
    /// commands from another's.
    #[allow(clippy::too_many_arguments, reason = "what a writer needs, named")]
    pub fn start(
        mut store: Box<dyn Store>,
        site: String,
        run_ms: i64,
        interval: Duration,
        keep_miner_intervals: Option<Duration>,
        now: Timestamp,
        miners: Vec<MinerInfo>,
        aside: SetAside,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Msg>();
        let writer_aside = aside.clone();
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_until_stopped(store.as_mut(), &site, run_ms, &rx, &writer_aside))
            .expect("start the ledger writer thread");
        let n = miners.len();
        let mut rec = Self {
            tx,
            writer: Some(writer),
            interval,
            start: now,
            last_t: now,
            miners: vec![MinerAcc::default(); n],
            surplus_wh: 0.0,
            surplus_missing: false,
            fleet_wh: 0.0,
            import_wh: 0.0,
            reward: Reward::bundled(),
            aside,
            pending: Batch::default(),
            seq: 0,
            keep_miner_intervals,
        };
        rec.pending.miners = miners;
        rec.event(now, "start", "daemon", format!("{n} miners"));
        rec.flush();
        rec
    }

    /// Accounts for the time since the last tick at the rates now: each miner's last report,
    /// the fleet's draw and the surplus (None: no trusted reading). Closes the interval(s) the
    /// time crosses.
    pub fn tick(
        &mut self,
        now: Timestamp,
        last: &[MinerStatus],
        fleet: Watts,
        surplus: Option<Watts>,
        standby: Watts,
        faulted: &dyn Fn(usize) -> bool,
    ) {
        while self.last_t < now {
            let end = self.end();
            let upto = now.min(end);
            let dt = upto.saturating_since(self.last_t);
            for (acc, s) in self.miners.iter_mut().zip(last) {
                match s {
                    MinerStatus::Mining { power, hashrate } => {
                        acc.energy_wh += power.over(dt).wh();
                        acc.hashes_th += hashrate.over(dt).th();
                    }
                    MinerStatus::Booting { power } | MinerStatus::Asleep { power } => {
                        acc.energy_wh += power.over(dt).wh();
                    }
                    MinerStatus::Unreachable => {}
                }
            }
            self.fleet_wh += fleet.over(dt).wh();
            match surplus {
                Some(s) => {
                    self.surplus_wh += s.over(dt).wh();
                    self.import_wh += (fleet - s.max(standby)).positive_part().over(dt).wh();
                }
                None => self.surplus_missing = true,
            }
            self.last_t = upto;
            if upto >= end {
                self.close(end, last, faulted);
            }
        }
    }

    /// The running interval's end: the next boundary (the first interval of a run starts when
    /// the run does, so that it never shares a start with the previous run's last one).
    fn end(&self) -> Timestamp {
        floor_to(self.start, self.interval) + self.interval
    }

    fn close(&mut self, end: Timestamp, last: &[MinerStatus], faulted: &dyn Fn(usize) -> bool) {
        let (difficulty, sat_per_th) = self.reward.at(self.start);
        let (mut mining, mut asleep, mut faults) = (0, 0, 0);
        let miners: Vec<MinerInterval> = self
            .miners
            .iter()
            .zip(last)
            .enumerate()
            .map(|(i, (acc, s))| {
                let state = if faulted(i) {
                    faults += 1;
                    "faulted"
                } else {
                    state_name(s)
                };
                match state {
                    "mining" => mining += 1,
                    "asleep" => asleep += 1,
                    _ => {}
                }
                MinerInterval {
                    miner: i as u32,
                    energy_wh: acc.energy_wh,
                    hashes_th: acc.hashes_th,
                    state: state.to_string(),
                }
            })
            .collect();
        let hashes_th: f64 = self.miners.iter().map(|m| m.hashes_th).sum();
        self.pending.intervals.push(Interval {
            start: self.start,
            end,
            surplus_wh: (!self.surplus_missing).then_some(self.surplus_wh),
            fleet_wh: self.fleet_wh,
            import_wh: self.import_wh,
            hashes_th,
            expected_sat: hashes_th * sat_per_th,
            difficulty: difficulty.is_finite().then_some(difficulty),
            mining,
            asleep,
            faulted: faults,
            miners,
        });
        self.miners
            .iter_mut()
            .for_each(|m| *m = MinerAcc::default());
        self.surplus_wh = 0.0;
        self.surplus_missing = false;
        self.fleet_wh = 0.0;
        self.import_wh = 0.0;
        let hour = Duration::from_secs(3600);
        let crossed_hour = floor_to(self.start, hour) != floor_to(end, hour);
        self.start = end;
        self.flush();
        if let (true, Some(keep)) = (crossed_hour, self.keep_miner_intervals) {
            let _ = self.tx.send(Msg::Prune(end - keep));
        }
    }

    pub fn command(&mut self, c: CommandRecord) {
        self.pending.commands.push(c);
    }

    pub fn outcome(&mut self, o: Outcome) {
        self.pending.outcomes.push(o);
    }

    pub fn event(&mut self, at: Timestamp, kind: &str, actor: &str, detail: String) {
        self.seq += 1;
        self.pending.events.push(EventRecord {
            seq: self.seq,
            at,
            kind: kind.to_string(),
            actor: actor.to_string(),
            detail,
        });
    }

    /// Hands what was collected to the writer.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        if self.tx.send(Msg::Write(batch)).is_err() {
            warn!("ledger: the writer has stopped; records are being lost");
        }
    }

    /// (batches set aside in the quarantine file, batches lost) so far.
    pub fn set_aside(&self) -> (u64, u64) {
        self.aside.counts()
    }

    /// Whether commands or events are waiting (flushed every few seconds).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Closes the running interval at `now` (a short last interval), writes everything and
    /// waits for the writer.
    pub fn stop(mut self, now: Timestamp, last: &[MinerStatus], faulted: &dyn Fn(usize) -> bool) {
        if now > self.start {
            self.close(now, last, faulted);
        }
        self.event(now, "stop", "daemon", String::new());
        self.flush();
        let _ = self.tx.send(Msg::Stop);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use hashsink_ledger::sqlite::SqliteStore;

    use super::*;

    fn interval(minute: i64, fleet_wh: f64) -> Interval {
        Interval {
            start: Timestamp::from_secs(minute * 60),
            end: Timestamp::from_secs(minute * 60 + 60),
            surplus_wh: Some(1000.0),
            fleet_wh,
            import_wh: 0.0,
            hashes_th: 1.0,
            expected_sat: 1.0,
            difficulty: Some(1.0),
            mining: 1,
            asleep: 0,
            faulted: 0,
            miners: Vec::new(),
        }
    }

    /// A real SQLite refuses a NaN (NOT NULL): that batch is set aside with why, and the batch
    /// after it is written, not held up behind it.
    #[test]
    fn a_batch_the_database_refuses_is_set_aside_and_the_next_one_commits() {
        let dir = std::env::temp_dir().join(format!("hashsink-quarantine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("ledger.db");
        let mut store = SqliteStore::open(&db).unwrap();
        store.migrate(Timestamp::from_secs(0)).unwrap();
        let quarantine = dir.join("ledger.db.quarantine.jsonl");
        let _ = std::fs::remove_file(&quarantine);
        let aside = SetAside::new(quarantine.clone());
        let (tx, rx) = mpsc::channel();
        for (minute, wh) in [(1, f64::NAN), (2, 500.0)] {
            let batch = Batch {
                intervals: vec![interval(minute, wh)],
                ..Batch::default()
            };
            tx.send(Msg::Write(batch)).unwrap();
        }
        tx.send(Msg::Stop).unwrap();
        write_until_stopped(&mut store, "site", 1, &rx, &aside);
        assert_eq!(aside.counts(), (1, 0));
        let rows = store
            .intervals("site", Timestamp::from_secs(0), Timestamp::from_secs(3600))
            .unwrap();
        assert_eq!(rows.len(), 1, "the batch after the refused one is written");
        assert_eq!(rows[0].fleet_wh, 500.0);
        let kept = std::fs::read_to_string(&quarantine).unwrap();
        assert_eq!(kept.lines().count(), 1);
        let line: serde_json::Value = serde_json::from_str(kept.trim()).unwrap();
        assert!(line["why"].as_str().unwrap().contains("refused"), "{line}");
        assert_eq!(line["batch"]["intervals"][0]["start"], 60_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
