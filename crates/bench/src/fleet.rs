//! `hashsink-bench fleet`: the fleet I/O against an emulated LuxOS fleet in a separate process,
//! side by side with pyasic on the same fleet. Per fleet size: asic-rs identification, then the
//! telemetry sweeps of both clients on the same terms (identification not timed, one cold sweep,
//! then the best of three warm ones; hashsink logs on to each LuxOS miner between its cold and
//! warm sweeps, as the daemon does at start), then the daemon itself for 75 s
//! (controller, sweeps every 5 s, commands), then a shed of the miners that run: time until the
//! last one acknowledged its sleep command (the emulator's receive times are not visible across processes; an
//! acknowledgement comes after the receipt, so this bounds the fan-out from above) and until a
//! read-back sweep confirmed every miner asleep. Peak RSS is this process's: the daemon with all
//! its drivers and asic-rs handles.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hashsink_core::{Catalogue, ControllerConfig, FleetConfig};
use hashsink_fleetio::firmwares::CallSettings;
use hashsink_fleetio::fleet::FleetIo;
use hashsink_fleetio::{Control, MinerState};

const FIRST_INDEX: u32 = 20_000;

pub async fn run(
    sizes: &[u32],
    pyasic: bool,
    concurrency: usize,
    daemon_secs: u64,
) -> Result<String> {
    let mut out = String::from(
        "| miners | asic-rs identification | hashsink sweep cold / warm (answered) | pyasic sweep cold / warm (answered) | speed-up cold / warm | daemon run: mining, commands, last sweep | shed: running miners acked (fan-out) | all confirmed asleep | daemon peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &n in sizes {
        let first = FIRST_INDEX.to_string();
        let mix = format!("s19xp:{n}:luxos");
        let mut emulator =
            crate::product::emulate(&["--speed", "1", "--first-index", &first, "--mix", &mix])?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let addrs: Vec<std::net::IpAddr> = (0..n)
            .map(|i| hashsink_emulator::miner_address(FIRST_INDEX + i).into())
            .collect();
        let settings = CallSettings {
            timeout: Duration::from_secs(3),
            ..CallSettings::default()
        };
        let fleet = Arc::new(FleetConfig::build_from_shorthand(
            &format!("s19xp:{n}:luxos"),
            &Catalogue::bundled(),
        )?);
        let identify_start = Instant::now();
        let inventory = hashsink_daemon::connect::connect(
            &fleet,
            &addrs,
            settings,
            1024,
            Duration::from_secs(5),
            false,
        )
        .await?;
        let identify = identify_start.elapsed();
        let identified = n as usize - inventory.unreachable.len() - inventory.mismatched.len();
        let io = Arc::new(FleetIo::new(
            inventory.drivers,
            concurrency,
            Duration::from_secs(3),
        ));
        let cold = io.sweep().await;
        let (cold_took, cold_answered) = (cold.took, cold.answered());
        // A running daemon is logged on to every LuxOS miner (see MinerDriver::prepare).
        io.prepare_all().await;
        let mut best = Duration::MAX;
        let mut answered = 0;
        for _ in 0..3 {
            let s = io.sweep().await;
            best = best.min(s.took);
            answered = s.answered();
        }
        let py = if pyasic {
            Some(pyasic_sweep(&addrs[0], n)?)
        } else {
            None
        };
        // The daemon for `daemon_secs` (the controller waits 30 s of live signal, then 30 s of
        // confirmation, before it wakes miners): half the fleet's power available, sweeps every 5 s.
        let daemon = crate::restart::daemon(
            &fleet,
            &io,
            fleet.max_power() * 0.5,
            &ControllerConfig::default(),
        );
        let status = daemon
            .run(tokio::time::sleep(Duration::from_secs(daemon_secs)))
            .await?;
        // The shed goes to the miners that run, as the controller's does (it knows which from
        // its telemetry; here a sweep just before, not timed).
        let before = io.sweep().await;
        let running: Vec<usize> = (0..io.len())
            .filter(|&i| !matches!(&before.results[i], Ok(t) if t.state == MinerState::Asleep))
            .collect();
        let shed_start = Instant::now();
        let acks = io.apply_all(&running, Control::Sleep).await;
        let fan_out = shed_start.elapsed();
        let acked = acks.iter().filter(|(_, r)| r.is_ok()).count();
        let confirm = io.sweep().await;
        let confirmed = confirm
            .results
            .iter()
            .filter(|r| matches!(r, Ok(t) if t.state == MinerState::Asleep))
            .count();
        let confirmed_after = shed_start.elapsed();
        let _ = emulator.kill();
        let _ = emulator.wait();
        let rss = peak_rss_mb();
        out += &format!(
            "| {n} | {identified} in {:.1} s | {:.3} s / {:.3} s ({cold_answered} / {answered}) | {} | {} | {}, {}, {} ms | {acked} of {} in {:.3} s | {confirmed} after {:.3} s | {rss:.0} MB |\n",
            identify.as_secs_f64(),
            cold_took.as_secs_f64(),
            best.as_secs_f64(),
            py.as_ref().map_or("-".into(), |p| format!(
                "{:.3} s / {:.3} s ({} / {})",
                p.cold, p.warm, p.cold_answered, p.warm_answered
            )),
            py.as_ref().map_or("-".into(), |p| format!(
                "{:.1}x / {:.1}x",
                p.cold / cold_took.as_secs_f64(),
                p.warm / best.as_secs_f64()
            )),
            status.mining,
            status.commands,
            status.last_sweep_ms,
            running.len(),
            fan_out.as_secs_f64(),
            confirmed_after.as_secs_f64(),
        );
    }
    Ok(out)
}

/// pyasic's sweeps: the cold one and the best of three warm ones, seconds and miners answered.
struct PyasicSweeps {
    cold: f64,
    cold_answered: u64,
    warm: f64,
    warm_answered: u64,
}

/// pyasic 0.79's sweeps of the same miners (tests/pyasic/sweep.py).
fn pyasic_sweep(first: &std::net::IpAddr, n: u32) -> Result<PyasicSweeps> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/pyasic/sweep.py");
    let o = Command::new("python3")
        .args([script, &first.to_string(), &n.to_string()])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).with_context(|| {
        format!(
            "pyasic sweep (pip install pyasic==0.79.0): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })?;
    let number = |key: &str| {
        v[key]
            .as_f64()
            .with_context(|| format!("pyasic sweep printed no {key}: {v}"))
    };
    Ok(PyasicSweeps {
        cold: number("cold_seconds")?,
        cold_answered: number("cold_answered")? as u64,
        warm: number("seconds")?,
        warm_answered: number("answered")? as u64,
    })
}

fn peak_rss_mb() -> f64 {
    crate::product::process_usage(std::process::id()).map_or(0.0, |(peak_mb, _)| peak_mb)
}
