//! `hashsink coordinate`: a region's coordinator over an MQTT broker (the loop is
//! `hashsink_daemon::coordinator`; this is its command line).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hashsink_clock::ScaledClock;
use hashsink_daemon::coordinator::{Coordinator, CoordinatorSetup};

#[derive(Args, Debug)]
pub struct CoordinateArgs {
    /// The region file: the broker, the surplus, the daemons (see examples/region.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Validate the region file, print what it says and exit.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(args: CoordinateArgs) -> Result<()> {
    let setup = CoordinatorSetup::load(&args.config)?;
    if args.check {
        print!("{}", setup.describe());
        return Ok(());
    }
    let coordinator = Coordinator::new(setup, ScaledClock::wall())?;
    coordinator.run(crate::run_daemon::shutdown_signal()).await
}
