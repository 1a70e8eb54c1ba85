//! Calls over the whole fleet: telemetry sweeps and commands, each call bounded by a timeout
//! and all of them by one concurrency limit, so that a hung or malformed miner costs one slot
//! for one timeout and never holds up the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{Control, DriverError, MinerDriver, Telemetry};

pub struct FleetIo {
    drivers: Vec<Arc<dyn MinerDriver>>,
    permits: Arc<Semaphore>,
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
    /// `concurrency`: calls in flight at once; `timeout`: the limit on any one call.
    pub fn new(drivers: Vec<Arc<dyn MinerDriver>>, concurrency: usize, timeout: Duration) -> Self {
        hashsink_clock::raise_open_file_limit(concurrency as u64 * 4 + 1024);
        Self {
            drivers,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
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
        let driver = self.drivers[index].clone();
        let permits = self.permits.clone();
        let timeout = self.timeout;
        async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| DriverError::Connect("shutting down".into()))?;
            tokio::time::timeout(timeout, driver.telemetry())
                .await
                .unwrap_or(Err(DriverError::Timeout(timeout.as_millis() as u64)))
        }
    }

    /// Sends one instruction to one miner.
    pub fn apply(
        &self,
        index: usize,
        control: Control,
    ) -> impl std::future::Future<Output = Result<(), DriverError>> + Send + 'static {
        let driver = self.drivers[index].clone();
        let permits = self.permits.clone();
        // Writes may take a logon or a read-modify-write: allow them three calls' time.
        let timeout = self.timeout * 3;
        async move {
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
        for driver in &self.drivers {
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
    /// up the others' results); returns how long the whole sweep took.
    pub async fn sweep_each(
        &self,
        mut each: impl FnMut(usize, Result<Telemetry, DriverError>),
    ) -> std::time::Duration {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for i in 0..self.drivers.len() {
            let read = self.read(i);
            tasks.spawn(async move { (i, read.await) });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined {
                each(i, r);
            }
        }
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
