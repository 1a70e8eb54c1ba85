//! `hashsink bench`: how fast the twin runs a long profile, by fleet size, as a table.
//!
//! Speed goals live here rather than in timed tests: the numbers depend on the machine.

use std::time::Instant;

use anyhow::Result;

use crate::simulate::{self, SimulateArgs, Which};

/// Runs the hashsink controller on the wind profile for each fleet size and returns the table.
pub fn run(days: f64, sizes_mw: &[f64]) -> Result<String> {
    let mut out = String::new();
    out.push_str(&format!("twin speed: wind profile, {days} days, S21 on Braiins OS, 1 s control cadence, hashsink controller\n"));
    out.push_str(&format!(
        "{:>8} {:>8} {:>10} {:>16} {:>14} {:>14} {:>12}\n",
        "MW", "miners", "wall s", "miner-steps/s", "events/s", "commands", "absorption"
    ));
    for &mw in sizes_mw {
        let mut args = SimulateArgs::demo(days, 0);
        args.profile = "wind".into();
        args.fleet = format!("s21:{mw}MW:braiins-os");
        args.controller = Which::Hashsink;
        let began = Instant::now();
        let outcome = simulate::execute(&args, false)?;
        let wall = began.elapsed().as_secs_f64();
        let r = &outcome.reports[0];
        out.push_str(&format!(
            "{:>8} {:>8} {:>10.1} {:>16.3e} {:>14.3e} {:>14} {:>11.3}%\n",
            mw,
            outcome.fleet.len(),
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
