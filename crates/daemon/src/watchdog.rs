//! systemd's watchdog, petted from the daemon's loop and from nowhere else: if the loop stalls
//! (a hung await, a deadlock, a busy handler), the pets stop, and systemd (`WatchdogSec`,
//! `Restart=always` in `deploy/hashsink.service`) kills the daemon and starts it again; the
//! new one adopts the fleet as it finds it. The first link of the dead-man chain; the plant's
//! own interlock on the daemon's heartbeat is the last (README). Without systemd (no
//! `NOTIFY_SOCKET`) every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{info, warn};

pub struct Watchdog {
    /// How often to pet: half the watchdog's interval (none: no watchdog).
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd gave this process, if any: `WATCHDOG_USEC`, for this process
    /// (`WATCHDOG_PID` unset or ours, as libsystemd reads them).
    pub fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&u| u > 0);
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let every = usec.filter(|_| ours).map(|u| Duration::from_micros(u) / 2);
        if let Some(every) = every {
            info!(
                pet_every_ms = every.as_millis() as u64,
                "systemd watchdog on"
            );
        }
        Self { every, last: None }
    }

    /// How the watchdog stands, in a line (for `run --check`).
    pub fn describe(&self) -> String {
        match self.every {
            Some(every) => format!(
                "systemd watchdog: on, petted from the control loop every {} ms",
                every.as_millis()
            ),
            None => {
                "systemd watchdog: off here (no WATCHDOG_USEC); deploy/hashsink.service turns it on"
                    .to_string()
            }
        }
    }

    /// Start-up is over (adopted, listening): `READY=1`.
    pub fn ready(&self) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status("following the surplus"),
        ]);
    }

    /// Called on every turn of the loop; pets when half the interval has passed.
    pub fn pet(&mut self) {
        let Some(every) = self.every else { return };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        self.send(&[NotifyState::Watchdog]);
    }

    /// How long until the next pet is due (none: no watchdog); the loop wakes by then.
    pub fn due_in(&self) -> Option<Duration> {
        let every = self.every?;
        Some(
            self.last
                .map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed())),
        )
    }

    /// The daemon is stopping (applying its safe state): `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn send(&self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(false, state) {
            warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// The dead-man chain as configured, for `run --check`: the watchdog, and where the plant can
/// watch the heartbeat (a warning when nowhere).
pub fn describe_chain(signals: Option<&crate::signals::SignalsSetup>) -> String {
    let mut out = format!(
        "dead-man chain:\n  {}\n  heartbeat: +1 at each tick of the control loop (every controller cadence, 1 s by default); the plant should open the mining feeder when it has not changed for {} s",
        Watchdog::from_env().describe(),
        hashsink_plantio::LoopPulse::STALE.as_secs()
    );
    let lines = signals.map(|s| s.heartbeat_lines()).unwrap_or_default();
    if lines.is_empty() {
        out.push_str("\n  WARNING: no [[signal]] source carries the heartbeat, so the plant cannot see the daemon die: add `write_heartbeat = { address = N }` to a Modbus source or `publish_topic` to an MQTT one");
    }
    for line in lines {
        out.push_str(&format!("\n  - {line}"));
    }
    out
}
