//! The `hashsink` command: study, simulate, run and account for an ASIC fleet that soaks up a
//! power surplus.

mod bench;
mod plot;
mod progress;
mod simulate;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hashsink",
    version,
    about = "Turn a power surplus into bitcoin, and give the power back the moment the grid needs it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow a surplus profile with a simulated fleet (the digital twin) and print the KPIs.
    Simulate {
        #[command(flatten)]
        args: simulate::SimulateArgs,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Time the twin: a year of the wind profile at several fleet sizes, as a table.
    Bench {
        /// Days of the wind profile per row (366 for the full year).
        #[arg(long, default_value_t = 366.0)]
        days: f64,
        /// Fleet sizes in MW of S21 on Braiins OS.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        sizes_mw: Vec<f64>,
    },
    /// The first thing to run: the twin on the bundled nuclear profile, hashsink vs the baseline.
    Demo {
        /// Days of the nuclear profile to replay.
        #[arg(long, default_value_t = 30.0)]
        days: f64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where to draw the chart of surplus and fleet load.
        #[arg(long, default_value = "hashsink-demo.svg")]
        plot: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Simulate { args, quiet } => {
            let show = !quiet && std::io::stderr().is_terminal();
            let outcome = simulate::execute(&args, show)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&simulate::to_json(&outcome, args.seed))?
                );
            } else {
                print!("{}", simulate::render_table(&outcome));
            }
            if !quiet {
                eprintln!("{}", simulate::render_speed(&outcome));
            }
            let violated = outcome.reports.iter().any(|r| r.violation_count > 0);
            Ok(if violated {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bench { days, sizes_mw } => {
            print!("{}", bench::run(days, &sizes_mw)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { days, seed, plot } => {
            let mut args = simulate::SimulateArgs::demo(days, seed);
            args.plot = Some(plot.clone());
            let show = std::io::stderr().is_terminal();
            println!(
                "hashsink demo: the digital twin replays {days} days of a nuclear unit's surplus (Ontario 2016)"
            );
            println!(
                "with a mixed fleet, driven by the hashsink controller and by a Home Assistant style baseline.\n"
            );
            let outcome = simulate::execute(&args, show)?;
            print!("{}", simulate::render_table(&outcome));
            println!("\nChart of surplus and fleet load: {}", plot.display());
            println!(
                "Next: `hashsink simulate --help` for other profiles, fleets, noise and faults."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
