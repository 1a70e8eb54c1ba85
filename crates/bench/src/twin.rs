//! `hashsink-bench twin`: how fast the twin runs a long profile, by fleet size, as a table.
//!
//! Speed goals live here rather than in timed tests: the numbers depend on the machine.

use std::time::Instant;

use anyhow::Result;

use std::sync::Arc;

use hashsink_core::{Catalogue, ControllerConfig, Envelope, FleetConfig};
use hashsink_twin::compare::{self, Comparison, Terms};
use hashsink_twin::{ControllerChoice, Profile};

/// The bundled wind plant's export cap, MW (`simulate`'s default): output above it is surplus.
const WIND_EXPORT_CAP_MW: f64 = 500.0;

/// Runs the hashsink controller on the wind profile for each fleet size and returns the table.
pub fn run(days: f64, sizes_mw: &[f64]) -> Result<String> {
    let mut out = String::new();
    out.push_str(&format!("twin speed: wind profile, {days} days, S21 on Braiins OS, 1 s control cadence, hashsink controller\n"));
    out.push_str(&format!(
        "{:>8} {:>8} {:>10} {:>16} {:>14} {:>14} {:>12}\n",
        "MW", "miners", "wall s", "miner-steps/s", "events/s", "commands", "absorption"
    ));
    for &mw in sizes_mw {
        let fleet = FleetConfig::build_from_shorthand(
            &format!("s21:{mw}MW:braiins-os"),
            &Catalogue::bundled(),
        )?;
        // hashsink alone, on the fleet as it ships (the firmware's full range).
        let terms = Terms {
            days: Some(days),
            envelope: Envelope::Full,
            ..Terms::plain(Arc::new(fleet), Profile::wind(WIND_EXPORT_CAP_MW))
        };
        let hashsink = vec![ControllerChoice::Hashsink(ControllerConfig::default())];
        let comparison = Comparison::new(terms, hashsink).map_err(|e| anyhow::anyhow!(e))?;
        let began = Instant::now();
        let r = compare::run_with_drill(&comparison.scenarios[0], &mut |_| {});
        let wall = began.elapsed().as_secs_f64();
        out.push_str(&format!(
            "{:>8} {:>8} {:>10.1} {:>16.3e} {:>14.3e} {:>14} {:>11.3}%\n",
            mw,
            comparison.fleet.len(),
            wall,
            r.miner_seconds / wall,
            r.events as f64 / wall,
            r.kpis.commands,
            r.kpis.absorption_pct
        ));
    }
    out.push_str("miner-steps/s: miners x simulated seconds per wall second (wall time includes a shed drill)\n");
    Ok(out)
}
