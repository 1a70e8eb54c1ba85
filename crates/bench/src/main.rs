//! `hashsink-bench`: the project's benchmarks, apart from the shipping `hashsink` binary. Each
//! prints the table the README shows; speed and memory goals live here, not in timed tests.
//! Run them with `cargo hashsink-bench COMMAND` (an alias for a release build of this crate).
//! The fleet, signal and dashboard benchmarks drive the product binary as a separate process:
//! it is built beside this one first (`product`).

#![forbid(unsafe_code)]

/// The shipping binary's allocator, for the emulator that runs in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod control;
mod dashboard;
mod fleet;
mod flood;
mod ledger;
mod product;
mod quirks;
mod region;
mod restart;
mod scale;
mod signals;
mod soak;
mod study;
mod twin;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hashsink-bench",
    about = "hashsink's benchmarks: each prints the table the README shows."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time the twin: a year of the wind profile at several fleet sizes, as a table.
    Twin {
        /// Days of the wind profile per row (366 for the full year).
        #[arg(long, default_value_t = 366.0)]
        days: f64,
        /// Fleet sizes in MW of S21 on Braiins OS.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        sizes_mw: Vec<f64>,
    },
    /// The README's control tables: hashsink, the setpoint dispatch of fleet managers and the
    /// on/off automation on the same fleets, on the bundled years, stepped surpluses and late
    /// meters, against the step-following ideal (markdown on stdout; about 5 minutes on 2 cores).
    Control {
        /// The bundled years shortened to 30 days (a quick check, not the README's figures).
        #[arg(long)]
        quick: bool,
    },
    /// Time the fleet I/O on an emulated LuxOS fleet, side by side with pyasic: telemetry sweep,
    /// shed, memory.
    Fleet {
        /// Fleet sizes.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        sizes: Vec<u32>,
        /// Also time pyasic (pip install pyasic==0.79.0) on the same fleet.
        #[arg(long)]
        pyasic: bool,
        /// hashsink's calls in flight at once.
        #[arg(long, default_value_t = 1024)]
        concurrency: usize,
        /// How long to run the daemon before the shed (it waits 60 s of live signal before it
        /// wakes miners).
        #[arg(long, default_value_t = 75)]
        daemon_secs: u64,
    },
    /// Plant-signal benchmark: signal to first miner command, shed fan-out and time to shed
    /// 95 % of the load, through real MQTT (mosquitto) and Modbus (pymodbus) peers to an
    /// emulated LuxOS fleet.
    Signals {
        /// Emulated miners.
        #[arg(long, default_value_t = 10_000)]
        miners: u32,
    },
    /// Dashboard benchmark: from a change in an emulated fleet (1 % of the miners rebooted) to
    /// the daemon's live stream that the dashboard reads, with the fleet read every second.
    Dashboard {
        /// Fleet sizes (emulated LuxOS miners), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        miners: Vec<u32>,
        /// Changes measured per size.
        #[arg(long, default_value_t = 10)]
        trials: u32,
    },
    /// One daemon and a very large emulated fleet (S21 on Braiins OS; the emulator in this
    /// process, on one wildcard listener per port): startup, telemetry sweeps, the daemon's CPU
    /// per sweep, a shed's fan-out, the ledger's intervals, peak memory.
    Scale {
        #[arg(long, default_value_t = 100_000)]
        miners: u32,
        /// The miners' firmware: braiins-os (REST, two reads a sweep) or luxos (cgminer API).
        #[arg(long, default_value = "braiins-os", value_parser = ["braiins-os", "luxos"])]
        firmware: String,
        /// Sweeps to time once the fleet is up.
        #[arg(long, default_value_t = 10)]
        sweeps: u32,
        /// The site's command rate (`max_commands_per_s`, and its burst): a shed of N miners
        /// takes N / rate seconds of tokens at least.
        #[arg(long, default_value_t = 100_000.0)]
        commands_per_s: f64,
    },
    /// A site's fleet run by one daemon, then by shards under `hashsink coordinate`, on the same
    /// night: absorption, energy drawn above the surplus, and the time from a surplus fall to
    /// every shard's first command through the broker (needs mosquitto).
    Region {
        #[arg(long, default_value_t = 10_000)]
        miners: u32,
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Hours of the night to replay.
        #[arg(long, default_value_t = 2.0)]
        hours: f64,
        /// How much faster than the wall the daemons and the miners run.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Falls of the surplus to time after the night, in each case.
        #[arg(long, default_value_t = 5)]
        falls: usize,
        /// One case alone (to look into it): `one` daemon or the `coordinated` shards.
        #[arg(long, value_enum)]
        only: Option<region::Only>,
    },
    /// Ledger benchmark: write throughput for one-minute intervals of the whole fleet, and a
    /// month's statement with every miner's totals; SQLite, and PostgreSQL with --postgres.
    Ledger {
        #[arg(long, default_value_t = 10_000)]
        miners: u32,
        /// Also on this PostgreSQL database (postgres://...).
        #[arg(long)]
        postgres: Option<String>,
    },
    /// The demo's night with the quirks of real firmware beside the same night without: ATM
    /// on and tuner locked (absorption, import), bad readings (the ledger, the miners' readings
    /// against the site meter). Three `hashsink demo` runs.
    Quirks {
        /// Hours of the night.
        #[arg(long, default_value_t = 4.0)]
        hours: f64,
        /// Clock speed of each demo.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
    },
    /// Restart under load: a daemon stopped with `safe_state = "leave"` and started again at
    /// once on an emulated LuxOS fleet that mines at full load; the fleet's draw through the
    /// restart against what it was.
    Restart {
        /// Fleet sizes (emulated LuxOS miners), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        sizes: Vec<u32>,
        /// How long each of the two daemons runs.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// The endpoint under attack: the operator's shed of an emulated LuxOS fleet timed quiet,
    /// then while idle sockets, status streams and a flood of MQTT readings load the daemon
    /// (needs mosquitto).
    Flood {
        /// Emulated miners.
        #[arg(long, default_value_t = 10_000)]
        miners: u32,
        /// Idle sockets opened to the endpoint.
        #[arg(long, default_value_t = 10_000)]
        idle: u32,
        /// Status streams read.
        #[arg(long, default_value_t = 200)]
        streams: u32,
        /// MQTT surplus readings a second.
        #[arg(long, default_value_t = 5_000)]
        mqtt_rate: u32,
        /// Sheds timed in each condition (quiet and flooded in turn).
        #[arg(long, default_value_t = 2)]
        trials: u32,
    },
    /// A long run with everything going wrong: flapping broker, PostgreSQL restarts, floods and
    /// sheds each minute, 5 % misbehaving miners; the daemon's memory, descriptors, tasks and
    /// queues sampled each minute (needs mosquitto; PostgreSQL through .ci/postgres.sh, else
    /// SQLite).
    Soak {
        /// Emulated miners.
        #[arg(long, default_value_t = 1_000)]
        miners: u32,
        /// Minutes to run.
        #[arg(long, default_value_t = 30)]
        minutes: u32,
        /// Idle sockets opened each minute.
        #[arg(long, default_value_t = 2_000)]
        idle: u32,
        /// Status streams read each minute.
        #[arg(long, default_value_t = 50)]
        streams: u32,
        /// MQTT surplus readings a second during each minute's flood.
        #[arg(long, default_value_t = 1_000)]
        mqtt_rate: u32,
    },
    /// (Used by flood and soak.) Hold idle sockets to an address until told to stop.
    #[command(hide = true)]
    HoldIdle {
        #[arg(long)]
        to: String,
        #[arg(long)]
        count: u32,
    },
    /// Study benchmark: Monte Carlo paths per second on the bundled nuclear study, by thread
    /// count.
    Study {
        /// Paths to value.
        #[arg(long, default_value_t = 10_000)]
        paths: usize,
        /// Horizon, years.
        #[arg(long, default_value_t = 5.0)]
        years: f64,
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
        Command::Twin { days, sizes_mw } => {
            print!("{}", twin::run(days, &sizes_mw)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Control { quick } => {
            print!("{}", control::run(quick, std::io::stderr().is_terminal())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet {
            sizes,
            pyasic,
            concurrency,
            daemon_secs,
        } => {
            print!(
                "{}",
                runtime()?.block_on(fleet::run(&sizes, pyasic, concurrency, daemon_secs))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Signals { miners } => {
            print!("{}", runtime()?.block_on(signals::run(miners))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboard { miners, trials } => {
            print!("{}", runtime()?.block_on(dashboard::run(&miners, trials))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale {
            miners,
            firmware,
            sweeps,
            commands_per_s,
        } => {
            print!(
                "{}",
                runtime()?.block_on(scale::run(miners, &firmware, sweeps, commands_per_s))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Region {
            miners,
            shards,
            hours,
            speed,
            falls,
            only,
        } => {
            print!(
                "{}",
                runtime()?.block_on(region::run(miners, shards, hours, speed, falls, only))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger { miners, postgres } => {
            print!("{}", ledger::run(miners, postgres.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Quirks { hours, speed } => {
            print!("{}", quirks::run(hours, speed)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { sizes, secs } => {
            print!("{}", runtime()?.block_on(restart::run(&sizes, secs))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Flood {
            miners,
            idle,
            streams,
            mqtt_rate,
            trials,
        } => {
            let flood = flood::Flood {
                idle,
                streams,
                mqtt_rate,
            };
            print!(
                "{}",
                runtime()?.block_on(flood::run(miners, flood, trials))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Soak {
            miners,
            minutes,
            idle,
            streams,
            mqtt_rate,
        } => {
            let load = flood::Flood {
                idle,
                streams,
                mqtt_rate,
            };
            print!("{}", runtime()?.block_on(soak::run(miners, minutes, load))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::HoldIdle { to, count } => {
            flood::hold_idle(&to, count)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Study { paths, years } => {
            print!("{}", study::run(paths, years)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
