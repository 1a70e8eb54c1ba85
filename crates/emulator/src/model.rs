//! The state behind every emulated miner: the twin's fleet model plus what each firmware keeps
//! on the side (LuxOS session, Braiins power target, Antminer work mode, injected faults).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashsink_clock::ScaledClock;
use hashsink_core::{Fleet, MinerSpec};
use hashsink_twin::miners::{Mode, Reading, SimFleet};
use hashsink_units::{HashRate, Timestamp, Watts};

use crate::FleetTotals;

/// The firmware a miner pretends to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    LuxOs,
    BraiinsOs,
    StockAntminer,
}

impl Dialect {
    pub fn has_web(self) -> bool {
        !matches!(self, Dialect::LuxOs)
    }
}

/// A way for one miner to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Answers, but only after this long (wall time).
    Slow(Duration),
    /// Accepts connections and never answers.
    Hang,
    /// Answers with malformed JSON.
    Garbage,
    /// Acknowledges commands and does not carry them out.
    IgnoresCommands,
    /// Reports ten times the power it draws (a firmware's unit or scaling bug); what it really
    /// draws, and the site meter, are unchanged.
    TenfoldPower,
    /// LuxOS with ATM (its autotuner) on: it owns the profile, so `profileset` is refused with
    /// the firmware's reason; `curtail sleep|wakeup` still works. Other firmware: no effect.
    AtmOn,
    /// Braiins OS with its tuner locked (a fixed power target set by its owner): a new power
    /// target is refused with the firmware's reason; pause and resume still work. Other
    /// firmware: no effect.
    TunerLocked,
    /// LuxOS whose session expires `SESSION_LIFETIME` after logon (emulator clock): a
    /// privileged command then gets "Invalid session id" until the client logs on again.
    SessionExpires,
    /// Stock Antminer firmware that reports no draw at all (no `chain_power`, `power` or `watt`
    /// in its stats). Other firmware: no effect.
    NoPowerField,
    /// Wakes at three times its firmware's wake delay (reports booting meanwhile).
    SlowWake,
    /// Reports its draw as "nan", "inf", a negative number and ten times the truth, in turn
    /// (10 s of the emulator's clock each), and the truth one slot in five.
    BadReadings,
    /// Told to sleep, reports itself asleep (curtailed) and keeps hashing at its full draw.
    AsleepDrawing,
    /// Its web interface answers with a body of 8 MiB (a broken or hostile miner).
    HugeReply,
}

/// How long an emulated LuxOS session lasts with `Fault::SessionExpires`.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(180);

/// What the emulated LuxOS answers to `profileset` while ATM is on.
pub const ATM_REFUSAL: &str = "Cannot change profile while ATM is enabled: disable ATM first";

/// What the emulated Braiins OS answers to a power target while its tuner is locked.
pub const TUNER_LOCKED_REFUSAL: &str =
    "Power target is locked by the tuner configuration; unlock the tuner to change it";

pub(crate) struct MinerSide {
    pub fault: Fault,
    /// A client asked this miner to sleep and has not woken it since (what the firmware
    /// reports as its curtail state or work mode).
    pub sleep_requested: bool,
    pub sleep_received: Option<Instant>,
    pub lux_session: Option<String>,
    /// When the session was opened (for `Fault::SessionExpires`).
    pub session_opened: Timestamp,
    /// Braiins OS power target (W); the level it maps to is in the model.
    pub power_target: Option<f64>,
    /// Stock Antminer work mode ("0" normal, "1" sleep, "2" high, "3" low).
    pub booted_at: Timestamp,
    pub commands: u64,
    /// The first command it took since the last `mark_commands` (for benchmarks).
    pub first_command_since_mark: Option<Instant>,
}

impl MinerSide {
    /// Counts a command this miner took, and when (the first since the mark).
    fn took_command(&mut self) {
        self.commands += 1;
        self.first_command_since_mark
            .get_or_insert_with(Instant::now);
    }
}

pub(crate) struct World {
    pub sim: SimFleet,
    pub side: Vec<MinerSide>,
    pub last: Timestamp,
    /// Wakes held back by `Fault::SlowWake`: (when they start, miner, level).
    pub slow_wakes: Vec<(Timestamp, u32, u8)>,
}

pub(crate) struct Shared {
    pub clock: ScaledClock,
    pub fleet: Arc<Fleet>,
    dialects: Vec<Dialect>,
    /// Address index of miner 0.
    pub first_index: u32,
    world: Mutex<World>,
    sessions: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(
        fleet: Arc<Fleet>,
        clock: ScaledClock,
        dialects: Vec<Dialect>,
        first_index: u32,
    ) -> Self {
        let now = clock.now();
        let side = (0..fleet.len())
            .map(|_| MinerSide {
                fault: Fault::None,
                sleep_requested: true,
                sleep_received: None,
                lux_session: None,
                session_opened: now,
                power_target: None,
                booted_at: now - Duration::from_secs(3600),
                commands: 0,
                first_command_since_mark: None,
            })
            .collect();
        Self {
            clock,
            world: Mutex::new(World {
                sim: SimFleet::new(fleet.clone(), now),
                side,
                last: now,
                slow_wakes: Vec::new(),
            }),
            fleet,
            dialects,
            first_index,
            sessions: std::sync::atomic::AtomicU64::new(0x5e55_1000),
        }
    }

    pub fn len(&self) -> usize {
        self.dialects.len()
    }

    /// The miner of this fleet at `address`, if any.
    pub fn index_at(&self, address: std::net::IpAddr) -> Option<u32> {
        let std::net::IpAddr::V4(v4) = address else {
            return None;
        };
        let index = crate::miner_index(v4)?.checked_sub(self.first_index)?;
        (index < self.len() as u32).then_some(index)
    }

    pub fn dialect(&self, index: u32) -> Dialect {
        self.dialects[index as usize]
    }

    pub fn spec(&self, index: u32) -> &MinerSpec {
        self.fleet.spec_of(hashsink_core::MinerId(index))
    }

    /// Locks the world with the model advanced to the clock's time.
    pub fn world(&self) -> (MutexGuard<'_, World>, Timestamp) {
        let mut world = self
            .world
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = self.clock.now().max(world.last);
        world.last = now;
        while world.sim.process_next(now).is_some() {}
        world.start_slow_wakes(now);
        (world, now)
    }

    pub fn fault(&self, index: u32) -> Fault {
        self.world().0.side[index as usize].fault
    }

    pub fn set_fault(&self, index: u32, fault: Fault) {
        self.world().0.side[index as usize].fault = fault;
    }

    pub fn reboot(&self, index: u32) {
        let (mut world, now) = self.world();
        world.sim.reboot(index, now);
        let side = &mut world.side[index as usize];
        side.sleep_requested = false;
        side.power_target = None;
        side.booted_at = now;
    }

    pub fn wake_one(&self, index: u32) {
        let (mut world, now) = self.world();
        let level = self.spec(index).preferred_level;
        world.wake(index, level, now);
    }

    pub fn wake_all(&self) {
        let (mut world, now) = self.world();
        for m in 0..self.len() as u32 {
            let level = self.spec(m).preferred_level;
            world.wake(m, level, now);
        }
    }

    pub fn sleep_received_at(&self, index: u32) -> Option<Instant> {
        self.world().0.side[index as usize].sleep_received
    }

    /// Forgets the first command seen, and returns the instant of the mark.
    pub fn mark_commands(&self) -> Instant {
        let mut world = self.world().0;
        for side in &mut world.side {
            side.first_command_since_mark = None;
        }
        Instant::now()
    }

    /// The first command any miner took since the mark.
    pub fn first_command_since_mark(&self) -> Option<Instant> {
        self.first_command_since_mark_among(0..self.len() as u32)
    }

    /// The first command any of the miners `indices` took since the mark.
    pub fn first_command_since_mark_among(&self, indices: std::ops::Range<u32>) -> Option<Instant> {
        let world = self.world().0;
        (world.side[indices.start as usize..indices.end as usize].iter())
            .filter_map(|side| side.first_command_since_mark)
            .min()
    }

    pub fn new_session(&self) -> String {
        let n = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{n:x}")
    }

    /// Which miners are not asleep (mining or booting) now.
    pub fn awake(&self) -> Vec<bool> {
        let (world, now) = self.world();
        (0..self.len() as u32)
            .map(|m| world.sim.reading(m, now).mode != Mode::Asleep)
            .collect()
    }

    pub fn totals(&self) -> FleetTotals {
        let (world, now) = self.world();
        let mut totals = FleetTotals::default();
        let mut power = 0.0;
        let mut hash = 0.0;
        for m in 0..self.len() as u32 {
            let r = world.sim.reading(m, now);
            power += r.power.w();
            hash += r.hashrate.ths();
            match r.mode {
                Mode::Mining => totals.mining += 1,
                Mode::Booting => totals.booting += 1,
                Mode::Asleep => totals.asleep += 1,
            }
        }
        totals.power = Watts(power);
        totals.hashrate = HashRate(hash);
        totals
    }
}

/// One miner's readable state at one instant, in the units firmwares report.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub now: Timestamp,
    pub reading: Reading,
    pub level: u8,
    pub sleep_requested: bool,
    pub power_target: Option<f64>,
    pub uptime_s: i64,
    pub board_temp_c: f64,
    pub chip_temp_c: f64,
    pub fan_rpm: u32,
    pub fault: Fault,
}

impl Snapshot {
    pub fn ghs(&self) -> f64 {
        self.reading.hashrate.ths() * 1000.0
    }
    pub fn watts(&self) -> f64 {
        self.reading.power.w()
    }

    /// The draw as the firmware writes it in a reply: a whole number of watts, or with
    /// `Fault::BadReadings` what a broken sensor or formatter writes.
    pub fn watts_json(&self) -> serde_json::Value {
        let w = self.watts().round();
        if self.fault != Fault::BadReadings {
            return serde_json::json!(w as i64);
        }
        match self.now.as_millis().div_euclid(10_000).rem_euclid(5) {
            0 => serde_json::json!("nan"),
            1 => serde_json::json!("inf"),
            2 => serde_json::json!(-(w as i64) - 1),
            3 => serde_json::json!(w as i64 * 10),
            _ => serde_json::json!(w as i64),
        }
    }
    pub fn unix_secs(&self) -> i64 {
        self.now.as_millis().div_euclid(1000)
    }
    pub fn mining(&self) -> bool {
        self.reading.mode == Mode::Mining && self.reading.hashrate.ths() > 0.0
    }
}

impl World {
    pub fn snapshot(&self, spec: &MinerSpec, index: u32, now: Timestamp) -> Snapshot {
        let mut reading = self.sim.reading(index, now);
        let side = &self.side[index as usize];
        let load = (reading.power / spec.nameplate_power).clamp(0.0, 1.3);
        if side.fault == Fault::TenfoldPower {
            reading.power = reading.power * 10.0;
        }
        if side.fault == Fault::AsleepDrawing && side.sleep_requested {
            reading.mode = Mode::Asleep;
        }
        Snapshot {
            now,
            reading,
            level: self.sim.miners[index as usize].level,
            sleep_requested: side.sleep_requested,
            power_target: side.power_target,
            uptime_s: now.secs_since(side.booted_at).max(0.0) as i64,
            board_temp_c: (25.0 + 40.0 * load).round(),
            chip_temp_c: (30.0 + 45.0 * load).round(),
            fan_rpm: (1500.0 + 4500.0 * load).round() as u32,
            fault: side.fault,
        }
    }

    /// Puts a miner to sleep, as a firmware does when told to (unless the miner ignores it).
    pub fn sleep(&mut self, index: u32, now: Timestamp) {
        let side = &mut self.side[index as usize];
        side.took_command();
        side.sleep_received = Some(Instant::now());
        if side.fault == Fault::IgnoresCommands {
            return;
        }
        side.sleep_requested = true;
        self.slow_wakes.retain(|w| w.1 != index);
        if side.fault == Fault::AsleepDrawing {
            return;
        }
        self.sim.command_sleep(index, now);
    }

    /// Wakes a miner (or keeps it mining) at `level`.
    pub fn wake(&mut self, index: u32, level: u8, now: Timestamp) {
        let side = &mut self.side[index as usize];
        side.took_command();
        if side.fault == Fault::IgnoresCommands {
            return;
        }
        if side.sleep_requested && self.sim.miners[index as usize].mode == Mode::Asleep {
            side.booted_at = now;
        }
        side.sleep_requested = false;
        let asleep = self.sim.miners[index as usize].mode == Mode::Asleep;
        if side.fault == Fault::SlowWake && asleep {
            // Twice the wake delay before it starts, then the model's own: three times in all.
            if !self.slow_wakes.iter().any(|w| w.1 == index) {
                let spec_delay = self
                    .sim
                    .fleet
                    .spec_of(hashsink_core::MinerId(index))
                    .wake_delay;
                self.slow_wakes.push((now + spec_delay * 2, index, level));
            }
            return;
        }
        self.sim.command_wake(index, level, now);
    }

    /// Starts the wakes `Fault::SlowWake` held back, once they are due.
    fn start_slow_wakes(&mut self, now: Timestamp) {
        if self.slow_wakes.is_empty() {
            return;
        }
        let due: Vec<(Timestamp, u32, u8)> = (self.slow_wakes.iter())
            .filter(|w| w.0 <= now)
            .copied()
            .collect();
        self.slow_wakes.retain(|w| w.0 > now);
        for (at, index, level) in due {
            self.sim.command_wake(index, level, at.min(now));
        }
    }

    /// Changes the running level; an asleep miner stores it for its next wake.
    pub fn set_level(&mut self, index: u32, level: u8, now: Timestamp) {
        let side = &mut self.side[index as usize];
        side.took_command();
        if side.fault == Fault::IgnoresCommands {
            return;
        }
        self.sim.command_level(index, level, now);
    }
}

/// The level whose power is nearest `watts`.
pub(crate) fn nearest_level(spec: &MinerSpec, watts: f64) -> u8 {
    let mut best = 0;
    for (i, w) in spec.levels.iter().enumerate() {
        if (w.w() - watts).abs() < (spec.levels[best].w() - watts).abs() {
            best = i;
        }
    }
    best as u8
}
