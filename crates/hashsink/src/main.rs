//! The `hashsink` command: study, simulate, run and account for an ASIC fleet that soaks up a
//! power surplus.

#![forbid(unsafe_code)]

/// mimalloc, not glibc's malloc: see the workspace's Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod coordinate;
mod demo;
mod discover;
mod emulate;
mod market;
mod plot;
mod progress;
mod report;
mod run_daemon;
mod simulate;
mod study;
mod study_report;

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
        args: Box<simulate::SimulateArgs>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// The first thing to run: an emulated fleet of ~100 miners on loopback, driven over its real
    /// protocols by the daemon through a replayed night of nuclear surplus, with a live view.
    Demo {
        #[command(flatten)]
        args: demo::DemoArgs,
    },
    /// The controller against a real fleet: read the surplus, drive the miners (see
    /// examples/site.toml).
    Run {
        #[command(flatten)]
        args: run_daemon::RunArgs,
        /// Log filter (tracing's EnvFilter syntax), e.g. "info" or "hashsink=debug".
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// A region's coordinator: shares a surplus (a national one, each site's, or both) out
    /// among daemons as caps over an MQTT broker, most efficient capacity first, with room
    /// for a daemon gone silent (see examples/region.toml).
    Coordinate {
        #[command(flatten)]
        args: coordinate::CoordinateArgs,
        /// Log filter (tracing's EnvFilter syntax), e.g. "info" or "hashsink=debug".
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// The energy and production statement from the ledger, per month: energy absorbed and
    /// imported, hours, curtailments and response times, hashes, expected against paid
    /// bitcoin, sales, revenue per MWh.
    Report {
        #[command(flatten)]
        args: report::ReportArgs,
    },
    /// Make an API token: prints the token (give it to its holder) and the `[[api.token]]`
    /// table with its hash (put it in the site file).
    Token {
        /// Who holds it (shown in the audit log as operator:NAME).
        #[arg(long)]
        name: String,
        /// viewer (reads), operator (also sheds, resumes, curtails), admin.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// Enter actual pool payouts and coin sales into the ledger (CSV).
    Ledger {
        #[command(subcommand)]
        command: report::LedgerCommand,
    },
    /// Feasibility and risk of mining a site's surplus: fleet sizing, NPV/IRR/payback
    /// distributions, break-even, sensitivity and a risk register, as HTML, JSON and CSV.
    Study {
        #[command(flatten)]
        args: study::StudyArgs,
    },
    /// One day of the Bitcoin market from the bundled history: price, difficulty, network
    /// hashrate, fees and hashprice.
    Market {
        #[command(flatten)]
        args: market::MarketArgs,
    },
    /// Scan addresses for miners (asic-rs identification) and print [[group]] tables for a site
    /// file.
    Discover {
        #[command(flatten)]
        args: discover::DiscoverArgs,
    },
    /// An emulated fleet on loopback (LuxOS, Braiins OS, stock Antminer), until Ctrl-C.
    Emulate {
        #[command(flatten)]
        args: emulate::EmulateArgs,
    },
    /// The twin's month on the bundled nuclear profile, hashsink vs the baseline (the previous
    /// demo), with a chart.
    TwinDemo {
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
        Command::Demo { args } => runtime()?.block_on(demo::run(args)),
        Command::Run { args, log } => {
            init_logging(&log)?;
            runtime()?.block_on(run_daemon::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Coordinate { args, log } => {
            init_logging(&log)?;
            runtime()?.block_on(coordinate::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { args } => {
            report::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { name, role } => {
            let (token, hash) =
                hashsink_daemon::auth::new_token().map_err(|e| anyhow::anyhow!(e))?;
            println!("token (give it to {name}; it is not stored anywhere): {token}\n");
            println!("[[api.token]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger { command } => {
            report::ledger(&command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Study { args } => {
            study::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Market { args } => {
            print!("{}", market::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Discover { args } => {
            runtime()?.block_on(discover::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulate { args } => {
            runtime()?.block_on(emulate::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::TwinDemo { days, seed, plot } => {
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("--log {filter:?}: {e}"))?;
    // Colours on a terminal only: a log file or journal gets plain `key=value` fields.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}
