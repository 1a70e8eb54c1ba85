//! Calls over the whole fleet: telemetry sweeps and commands, each call bounded by a timeout
//! and by a concurrency limit, so that a hung or malformed miner costs one slot for one timeout
//! and never holds up the rest. Reads (sweeps, read-backs) and commands have a limit each: a
//! shed never queues behind reads (a sweep's, or the read-backs of the last round of commands).
//! Commands to one miner go out one at a time, in the order they were given: a cut and the
//! sleep right after it, or a wake and the sleep that cancels it, must not reach the miner the
//! other way round.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{Control, DriverError, MinerDriver, Telemetry};

/// How long a sweep's reader waits for the commands in flight before it reads its next miner.
const COMMANDS_FIRST_FOR: Duration = Duration::from_millis(250);

pub struct FleetIo {
    drivers: Arc<[Arc<dyn MinerDriver>]>,
    /// Reads in flight at once (sweeps, read-backs, preparation).
    permits: Arc<Semaphore>,
    /// Commands in flight at once.
    command_permits: Arc<Semaphore>,
    /// Commands sent and not yet answered: while there are any, a sweep's readers wait (up to
    /// `COMMANDS_FIRST_FOR` each) before their next miner, so that a shed of the whole fleet has
    /// the connections nearly to itself.
    commands: Arc<CommandsInFlight>,
    /// Each miner's commands, one at a time in the order given.
    lanes: Arc<Lanes>,
    /// Tasks a sweep reads with: the concurrency limit.
    readers: usize,
    timeout: Duration,
}

/// One sweep's results, aligned with the drivers, and how long it took.
pub struct Sweep {
    pub results: Vec<Result<Telemetry, DriverError>>,
    pub took: Duration,
}

impl Sweep {
    pub fn answered(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
    }
}

impl FleetIo {
    /// `concurrency`: reads in flight at once, and as many commands; `timeout`: the limit on
    /// any one call.
    pub fn new(drivers: Vec<Arc<dyn MinerDriver>>, concurrency: usize, timeout: Duration) -> Self {
        hashsink_clock::raise_open_file_limit(concurrency as u64 * 4 + 1024);
        Self {
            drivers: drivers.into(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            command_permits: Arc::new(Semaphore::new(concurrency.max(1))),
            commands: Arc::default(),
            lanes: Arc::default(),
            readers: concurrency.max(1),
            timeout,
        }
    }

    pub fn len(&self) -> usize {
        self.drivers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty()
    }

    pub fn driver(&self, index: usize) -> &Arc<dyn MinerDriver> {
        &self.drivers[index]
    }

    /// Reads one miner.
    pub fn read(
        &self,
        index: usize,
    ) -> impl std::future::Future<Output = Result<Telemetry, DriverError>> + Send + 'static {
        let (drivers, permits, timeout) =
            (self.drivers.clone(), self.permits.clone(), self.timeout);
        async move { read_one(&drivers[index], &permits, timeout).await }
    }

    /// Sends one instruction to one miner, after the ones given to it before (its place in the
    /// miner's line is taken now, when called, not when the future is first polled).
    pub fn apply(
        &self,
        index: usize,
        control: Control,
    ) -> impl std::future::Future<Output = Result<(), DriverError>> + Send + 'static {
        let driver = self.drivers[index].clone();
        let permits = self.command_permits.clone();
        // Writes may take a logon or a read-modify-write: allow them three calls' time.
        let timeout = self.timeout * 3;
        let commands = self.commands.clone();
        let turn = Lanes::join(&self.lanes, index);
        async move {
            let _in_flight = commands.enter();
            let _turn = turn.wait().await;
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| DriverError::Connect("shutting down".into()))?;
            tokio::time::timeout(timeout, driver.apply(control))
                .await
                .unwrap_or(Err(DriverError::Timeout(timeout.as_millis() as u64)))
        }
    }

    /// Prepares every driver for commands (see [`MinerDriver::prepare`]); returns how many
    /// are ready.
    pub async fn prepare_all(&self) -> usize {
        let mut tasks = JoinSet::new();
        for driver in self.drivers.iter() {
            let driver = driver.clone();
            let permits = self.permits.clone();
            let timeout = self.timeout * 2;
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.ok()?;
                tokio::time::timeout(timeout, driver.prepare())
                    .await
                    .ok()?
                    .ok()
            });
        }
        let mut ready = 0;
        while let Some(joined) = tasks.join_next().await {
            if matches!(joined, Ok(Some(()))) {
                ready += 1;
            }
        }
        ready
    }

    /// Reads every miner.
    pub async fn sweep(&self) -> Sweep {
        let mut results: Vec<Result<Telemetry, DriverError>> = (0..self.drivers.len())
            .map(|_| Err(DriverError::Timeout(0)))
            .collect();
        let took = self.sweep_each(|i, r| results[i] = r).await;
        Sweep { results, took }
    }

    /// Reads every miner, handing each result to `each` as it lands (a slow miner does not hold
    /// up the others' results); returns how long the whole sweep took. As many readers as the
    /// concurrency limit take the miners in turn (no task per miner), each call under a permit
    /// of the reads' limit; while commands are in flight a reader waits up to
    /// `COMMANDS_FIRST_FOR` before it takes its next miner, so that a shed has the connections
    /// nearly to itself and a command never waits for the sweep.
    pub async fn sweep_each(
        &self,
        mut each: impl FnMut(usize, Result<Telemetry, DriverError>),
    ) -> std::time::Duration {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut readers = JoinSet::new();
        for _ in 0..self.readers.min(self.drivers.len()) {
            let (drivers, permits, next, tx) = (
                self.drivers.clone(),
                self.permits.clone(),
                next.clone(),
                tx.clone(),
            );
            let (timeout, commands) = (self.timeout, self.commands.clone());
            readers.spawn(async move {
                loop {
                    // Commands first, but a steady stream of them only slows the sweep.
                    let _ = tokio::time::timeout(COMMANDS_FIRST_FOR, commands.none_waiting()).await;
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(driver) = drivers.get(i) else {
                        return;
                    };
                    let read = read_one(driver, &permits, timeout).await;
                    if tx.send((i, read)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        while let Some((i, r)) = rx.recv().await {
            each(i, r);
        }
        while readers.join_next().await.is_some() {}
        started.elapsed()
    }

    /// Sends `control` to every listed miner at once; returns each result and when the last
    /// call returned.
    pub async fn apply_all(
        &self,
        indices: &[usize],
        control: Control,
    ) -> Vec<(usize, Result<(), DriverError>)> {
        let mut tasks = JoinSet::new();
        for &i in indices {
            let apply = self.apply(i, control);
            tasks.spawn(async move { (i, apply.await) });
        }
        let mut out = Vec::with_capacity(indices.len());
        while let Some(joined) = tasks.join_next().await {
            if let Ok(r) = joined {
                out.push(r);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out
    }
}

/// One miner's reading, under a permit of the reads' limit and the call timeout.
async fn read_one(
    driver: &Arc<dyn MinerDriver>,
    permits: &Semaphore,
    timeout: Duration,
) -> Result<Telemetry, DriverError> {
    let _permit = permits
        .acquire()
        .await
        .map_err(|_| DriverError::Connect("shutting down".into()))?;
    tokio::time::timeout(timeout, driver.telemetry())
        .await
        .unwrap_or(Err(DriverError::Timeout(timeout.as_millis() as u64)))
}

/// The count of commands in flight, and a wake-up for the sweep's readers when it falls to 0.
#[derive(Default)]
struct CommandsInFlight {
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

/// One command in flight, until dropped.
struct InFlight<'a>(&'a CommandsInFlight);

impl CommandsInFlight {
    fn enter(&self) -> InFlight<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    /// Returns once no command is in flight.
    async fn none_waiting(&self) {
        loop {
            // Registered before the check, so that a fall to 0 in between is not missed.
            let notified = self.none.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// The miners with commands given and not yet done, each with the commands waiting behind the
/// one that is out. A miner with none has no entry: 100,000 idle miners cost nothing.
#[derive(Default)]
struct Lanes(Mutex<HashMap<usize, VecDeque<tokio::sync::oneshot::Sender<()>>>>);

/// A command's place in its miner's line; dropping it (done, timed out or abandoned) hands the
/// turn to the next command given to that miner.
struct Turn {
    lanes: Arc<Lanes>,
    miner: usize,
    wait: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Lanes {
    fn join(lanes: &Arc<Lanes>, miner: usize) -> Turn {
        let mut map = lanes
            .0
            .lock()
            .expect("the lanes' lock is never held across a panic");
        let wait = match map.entry(miner) {
            Entry::Vacant(free) => {
                free.insert(VecDeque::new());
                None
            }
            Entry::Occupied(mut busy) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                busy.get_mut().push_back(tx);
                Some(rx)
            }
        };
        Turn {
            lanes: lanes.clone(),
            miner,
            wait,
        }
    }
}

impl Turn {
    /// Returns once the commands given to the miner before this one are done.
    async fn wait(mut self) -> Self {
        if let Some(rx) = self.wait.as_mut() {
            // An error only means the line was dropped with this turn in it: go on.
            let _ = rx.await;
        }
        self.wait = None;
        self
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Under the lock, as the turn is handed on under it: a turn given to a command that is
        // dropped before it saw it is still handed on, never lost.
        let mut map = (self.lanes.0.lock()).expect("the lanes' lock is never held across a panic");
        let holder = match self.wait.take() {
            None => true,
            Some(mut rx) => rx.try_recv().is_ok(),
        };
        if !holder {
            // Dropped before its turn came: skipped when reached (its receiver is gone).
            return;
        }
        let Entry::Occupied(mut line) = map.entry(self.miner) else {
            return;
        };
        // The next command still waiting gets the turn; those abandoned are passed over.
        while let Some(next) = line.get_mut().pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        line.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A miner whose command is held until released, counting the reads it gets.
    struct Held {
        release: Arc<tokio::sync::Notify>,
        reads: Arc<AtomicUsize>,
        holding: Arc<AtomicBool>,
    }

    #[async_trait::async_trait]
    impl MinerDriver for Held {
        fn address(&self) -> std::net::IpAddr {
            std::net::Ipv4Addr::LOCALHOST.into()
        }
        fn firmware(&self) -> &'static str {
            "test"
        }
        async fn telemetry(&self) -> Result<Telemetry, DriverError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Err(DriverError::Timeout(0))
        }
        async fn apply(&self, _: Control) -> Result<(), DriverError> {
            self.holding.store(true, Ordering::SeqCst);
            self.release.notified().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_sweep_holds_back_while_a_command_is_in_flight() {
        let (release, reads, holding) = (Arc::default(), Arc::default(), Arc::default());
        let drivers: Vec<Arc<dyn MinerDriver>> = (0..8)
            .map(|_| {
                Arc::new(Held {
                    release: Arc::clone(&release),
                    reads: Arc::clone(&reads),
                    holding: Arc::clone(&holding),
                }) as Arc<dyn MinerDriver>
            })
            .collect();
        let io = Arc::new(FleetIo::new(drivers, 2, Duration::from_secs(5)));
        let command = tokio::spawn(io.apply(0, Control::Sleep));
        until_holding(&holding).await;
        let sweeping = tokio::spawn({
            let io = io.clone();
            async move { io.sweep().await.results.len() }
        });
        tokio::time::sleep(COMMANDS_FIRST_FOR / 5).await;
        assert_eq!(
            reads.load(Ordering::SeqCst),
            0,
            "no read while the command is out"
        );
        release.notify_one();
        command.await.unwrap().unwrap();
        assert_eq!(sweeping.await.unwrap(), 8);
        assert_eq!(reads.load(Ordering::SeqCst), 8);
    }

    /// A miner that logs the commands it takes; a `Run` takes 50 ms, as a slow profile change.
    struct Logged(Arc<Mutex<Vec<Control>>>);

    #[async_trait::async_trait]
    impl MinerDriver for Logged {
        fn address(&self) -> std::net::IpAddr {
            std::net::Ipv4Addr::LOCALHOST.into()
        }
        fn firmware(&self) -> &'static str {
            "test"
        }
        async fn telemetry(&self) -> Result<Telemetry, DriverError> {
            Err(DriverError::Timeout(0))
        }
        async fn apply(&self, control: Control) -> Result<(), DriverError> {
            if matches!(control, Control::Run { .. }) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.0.lock().unwrap().push(control);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_miners_commands_land_in_the_order_given_even_when_polled_the_other_way() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let io = FleetIo::new(
            vec![Arc::new(Logged(log.clone())) as Arc<dyn MinerDriver>],
            8,
            Duration::from_secs(5),
        );
        let run = Control::Run {
            level: 1,
            watts: hashsink_units::Watts(2000.0),
        };
        let cut = io.apply(0, run);
        let sleep = io.apply(0, Control::Sleep);
        // The sleep's task starts first; without a line per miner it would land first too.
        let sleep = tokio::spawn(sleep);
        tokio::task::yield_now().await;
        let cut = tokio::spawn(cut);
        sleep.await.unwrap().unwrap();
        cut.await.unwrap().unwrap();
        assert_eq!(*log.lock().unwrap(), vec![run, Control::Sleep]);
        assert!(
            io.lanes.0.lock().unwrap().is_empty(),
            "an idle miner's line is removed"
        );
    }

    /// Waits until a `Held` miner holds a command, or fails after 5 s.
    async fn until_holding(holding: &AtomicBool) {
        let wait = async {
            while !holding.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        };
        (tokio::time::timeout(Duration::from_secs(5), wait).await)
            .expect("a command reaches the miner");
    }

    #[tokio::test]
    async fn an_abandoned_command_does_not_hold_up_the_next_to_the_same_miner() {
        let (release, reads, holding) = (Arc::default(), Arc::default(), Arc::default());
        let held = Held {
            release: Arc::clone(&release),
            reads,
            holding: Arc::clone(&holding),
        };
        let io = FleetIo::new(
            vec![Arc::new(held) as Arc<dyn MinerDriver>],
            8,
            Duration::from_secs(5),
        );
        let first = tokio::spawn(io.apply(0, Control::Sleep));
        let abandoned = io.apply(0, Control::Resume);
        let third = tokio::spawn(io.apply(0, Control::Sleep));
        until_holding(&holding).await;
        holding.store(false, Ordering::SeqCst);
        drop(abandoned);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !holding.load(Ordering::SeqCst),
            "the third waits for the first"
        );
        release.notify_one();
        first.await.unwrap().unwrap();
        until_holding(&holding).await;
        release.notify_one();
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third command runs once the first is done")
            .unwrap()
            .unwrap();
        assert!(io.lanes.0.lock().unwrap().is_empty());
    }
}
