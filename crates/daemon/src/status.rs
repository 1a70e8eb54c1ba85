//! What the daemon shows: [`Status`] (the live view, `GET /status`, `/metrics`, the end-of-run
//! table) and the run's [`RunKpis`], integrated tick by tick from the miners' reports (or the
//! site meter) and the surplus.

use std::time::Duration;

use hashsink_core::MinerStatus;
use hashsink_units::{HashRate, Watts};

/// What the daemon shows: the live view, `GET /status`, the end-of-run table.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    pub now_ms: i64,
    pub surplus_w: Option<f64>,
    /// Fleet draw: the site meter's where there is one, else the sum of miner reports.
    pub fleet_w: f64,
    pub hashrate_ths: f64,
    pub mining: u32,
    pub booting: u32,
    pub asleep: u32,
    pub unreachable: u32,
    /// Miners routed around: faults and operator exclusions.
    pub faulted: u32,
    /// Of those, the ones an operator excluded.
    pub excluded: u32,
    /// Miners by how the controller uses them: "levels", "on_off" (they refused levels, or
    /// have one), "none" (routed around).
    pub miners_by_control: std::collections::BTreeMap<&'static str, u32>,
    /// The miners routed around for a fault, with why (the first 100).
    pub faulted_miners: Vec<FaultedMiner>,
    pub commands: u64,
    pub last_sweep_ms: u64,
    pub kpis: RunKpis,
    /// Plant signal sources and whether each is trusted (source = "signals").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<SignalStatus>,
    /// What the controller allows the fleet to draw now, W.
    pub allowed_w: f64,
    /// What the controller's plan adds up to (the miners' planned levels, standby, the load it
    /// cannot control), W. It leads the measured draw while commands land; a gap that stays is
    /// commands that did not take.
    pub planned_w: f64,
    /// What the controller expects to be allowed by the time a miner woken now is ready (the
    /// surplus's trend and forecast ahead), W: sleeping miners are woken into this, not into
    /// `allowed_w`.
    pub ahead_w: f64,
    /// The plan by miner state against the miners' last reports: where a gap between
    /// `planned_w` and `fleet_w` lies.
    pub plan: hashsink_core::PlanBreakdown,
    /// Blocks in the day-ahead schedule last loaded (0: none).
    pub schedule_blocks: usize,
    /// The plant's protection holding the fleet ("tripped by SOURCE", "trip unreadable at
    /// SOURCE"); none when every trip is clear. An operator's resume does not lift it.
    pub protection: Option<String>,
    /// What the operator last asked: "follow" (the surplus), "shed" or "curtail".
    pub mode: &'static str,
    /// The operator's cap while curtailed, W.
    pub curtail_w: Option<f64>,
    /// Who gave the operator command in force ("" while following the surplus).
    pub mode_by: String,
    /// Commands that failed, by kind (rejected, unsupported, busy, timeout, ...).
    pub command_failures: std::collections::BTreeMap<String, u64>,
    /// Miner readings refused at the door, by reason (see `readings.rs`).
    pub malformed_readings: std::collections::BTreeMap<String, u64>,
    /// Ledger batches the database refused, set aside in the quarantine file.
    pub ledger_set_aside: u64,
    /// Ledger batches lost (not even the quarantine file could take them).
    pub ledger_lost: u64,
    /// What waits in the loop's inbound queues at the tick (operator commands, signal events,
    /// miner I/O results, pushed surplus): a queue that grows is a loop that cannot keep up.
    pub queues: std::collections::BTreeMap<&'static str, usize>,
    /// Tasks alive on the daemon's runtime (a count that grows without bound is a leak).
    pub tasks: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SignalStatus {
    pub name: String,
    pub trusted: bool,
    pub mw: Option<f64>,
    /// Why it is not trusted.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FaultedMiner {
    pub address: String,
    pub fault: hashsink_core::FaultKind,
}

/// Running totals since the daemon started, while it followed the surplus (time under an
/// operator's shed or curtailment is left out: not absorbing then is the operator's choice).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunKpis {
    pub seconds: f64,
    /// Energy the fleet drew, with or without a surplus reading.
    pub fleet_kwh: f64,
    pub surplus_kwh: f64,
    pub absorbed_kwh: f64,
    /// Fleet draw above the surplus (or above the fleet's standby draw, whichever is higher):
    /// what control let through.
    pub import_kwh: f64,
    /// Standby draw of sleeping miners while there was less surplus than that.
    pub standby_import_kwh: f64,
    pub hashes_eh: f64,
    pub max_import_w: f64,
}

impl RunKpis {
    pub fn absorption(&self) -> f64 {
        if self.surplus_kwh > 0.0 {
            self.absorbed_kwh / self.surplus_kwh
        } else {
            0.0
        }
    }
    pub fn import_share(&self) -> f64 {
        if self.surplus_kwh > 0.0 {
            self.import_kwh / self.surplus_kwh
        } else {
            0.0
        }
    }
}

/// The miners' reports counted by state, with their summed draw and hashrate.
#[derive(Clone, Copy, Debug, Default)]
pub struct FleetCount {
    pub mining: u32,
    pub booting: u32,
    pub asleep: u32,
    pub unreachable: u32,
    pub power: Watts,
    pub hashrate: HashRate,
}

impl FleetCount {
    pub fn of(reports: &[MinerStatus]) -> Self {
        let mut c = Self::default();
        for s in reports {
            match *s {
                MinerStatus::Mining { power, hashrate } => {
                    c.mining += 1;
                    c.power += power;
                    c.hashrate += hashrate;
                }
                MinerStatus::Booting { power } => {
                    c.booting += 1;
                    c.power += power;
                }
                MinerStatus::Asleep { power } => {
                    c.asleep += 1;
                    c.power += power;
                }
                MinerStatus::Unreachable => c.unreachable += 1,
            }
        }
        c
    }
}

impl RunKpis {
    /// Adds `dt` of the fleet drawing `fleet` and hashing at `hashrate` against `surplus` (None:
    /// no reading, or the operator's override; only the fleet's energy counts then). `standby`
    /// is what the whole fleet draws asleep: draw up to it is not control's import.
    pub fn integrate(
        &mut self,
        dt: Duration,
        fleet: Watts,
        hashrate: HashRate,
        surplus: Option<Watts>,
        standby: Watts,
    ) {
        self.fleet_kwh += fleet.over(dt).kwh();
        let Some(surplus) = surplus else { return };
        self.seconds += dt.as_secs_f64();
        self.surplus_kwh += surplus.over(dt).kwh();
        self.absorbed_kwh += fleet.min(surplus).over(dt).kwh();
        let import = (fleet - surplus.max(standby)).positive_part();
        self.import_kwh += import.over(dt).kwh();
        self.standby_import_kwh += (fleet.min(standby) - surplus)
            .positive_part()
            .over(dt)
            .kwh();
        self.max_import_w = self.max_import_w.max(import.w());
        self.hashes_eh += hashrate.over(dt).th() / 1e6;
    }
}

impl Status {
    /// Takes in the miners' counts and the fleet's draw (the meter's if any) and hashrate.
    pub fn show_fleet(
        &mut self,
        count: &FleetCount,
        fleet: Watts,
        hashrate: HashRate,
        faulted: u32,
    ) {
        self.fleet_w = fleet.w();
        self.hashrate_ths = hashrate.ths();
        self.mining = count.mining;
        self.booting = count.booting;
        self.asleep = count.asleep;
        self.unreachable = count.unreachable;
        self.faulted = faulted;
    }
}
