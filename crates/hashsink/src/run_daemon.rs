//! `hashsink run --config site.toml`: the daemon against a real fleet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use hashsink_clock::ScaledClock;
use hashsink_fleetio::firmwares::CallSettings;
use hashsink_fleetio::fleet::FleetIo;
use hashsink_twin::{NuclearMethod, Profile};
use hashsink_units::parse_time;
use tracing::info;

use hashsink_daemon::recorder::Recorder;
use hashsink_daemon::site::{SafeState, Site, SurplusKind};
use hashsink_daemon::{self as daemon, Daemon, Handle, OnStop, Setup, SurplusSource};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The site file (see examples/site.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Check the site file and the miners, print what was found, and exit.
    #[arg(long)]
    pub check: bool,
    /// Stop after this many seconds of the daemon's clock (default: run until Ctrl-C).
    #[arg(long)]
    pub for_secs: Option<f64>,
    /// Run the clock this many times faster than the wall (replays and tests; 1 on a real site).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Serve the API and the dashboard here (overrides `[api] listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Run without the ledger, whatever the site file says.
    #[arg(long)]
    pub no_ledger: bool,
}

/// A shed the command rate stretches past this is worth a warning at start.
const SHED_WARN_AFTER: Duration = Duration::from_secs(3);

pub async fn run(args: RunArgs) -> Result<()> {
    let site = Site::load(&args.config)?;
    if !(args.speed > 0.0 && args.speed <= 3600.0) {
        bail!("--speed {} must be between 0 and 3600", args.speed);
    }
    let surplus_profile = match site.surplus.source {
        SurplusKind::Replay => Some(load_profile(&site)?),
        SurplusKind::Http | SurplusKind::Signals => None,
    };
    let origin = match (&surplus_profile, &site.surplus.start) {
        (Some(_), Some(start)) => parse_time(start).map_err(|e| anyhow!("[surplus] start: {e}"))?,
        (Some(p), None) => p.start(),
        (None, _) => ScaledClock::wall().now(),
    };
    let clock = if args.speed == 1.0 && surplus_profile.is_none() {
        ScaledClock::wall()
    } else {
        ScaledClock::starting_at(origin, args.speed)
    };
    info!(site = %site.name, miners = site.fleet.len(), fleet = %site.fleet.describe(), "site file valid");
    if site.shed_takes() > SHED_WARN_AFTER {
        tracing::warn!(
            "a shed of the whole fleet takes at least {:.1} s at [controller] max_commands_per_s = {} and command_burst = {}: raise both (to the fleet's size for a shed at once)",
            site.shed_takes().as_secs_f64(),
            site.controller.max_commands_per_s,
            site.controller.command_burst
        );
    }
    let settings = CallSettings {
        timeout: site.io_timeout(),
        rpc_port: site.io.rpc_port,
        web_port: site.io.web_port,
        keep_alive: true,
    };
    let inventory = daemon::connect::connect(
        &site.fleet,
        &site.addresses,
        settings,
        site.io.concurrency,
        Duration::from_millis(site.io.identify_timeout_ms),
        site.require_all_miners,
    )
    .await?;
    let report = inventory.report();
    if inventory.unreachable.is_empty() && inventory.mismatched.is_empty() {
        info!("{report}");
    } else {
        tracing::warn!("{report}");
    }
    let io = Arc::new(FleetIo::new(
        inventory.drivers,
        site.io.concurrency,
        site.io_timeout(),
    ));
    if args.check {
        println!("{}: valid; {report}", args.config.display());
        println!("{}", describe_controls(&site.fleet, &io).await);
        println!(
            "{}",
            daemon::watchdog::describe_chain(site.signals.as_ref())
        );
        return Ok(());
    }
    let ready = io.prepare_all().await;
    tracing::debug!(ready, "drivers prepared (sessions, profile lists)");
    let listener = match api_address(&args, &site)? {
        Some(addr) => {
            if site.tokens.is_empty() && !addr.ip().is_loopback() {
                bail!(
                    "listening on {addr} with no [[api.token]] in the site file would let anyone on the network shed or curtail the fleet: add tokens (`hashsink token`) or listen on 127.0.0.1"
                );
            }
            check_plain_http(addr, &site)?;
            Some(daemon::http::bind(addr)?)
        }
        None => None,
    };
    let ledger = match &site.ledger {
        Some(l) if !args.no_ledger => Some(Recorder::open(
            &site.name,
            &site.fleet,
            &site.addresses,
            l,
            clock.now(),
        )?),
        _ => None,
    };
    let surplus = match (surplus_profile, &site.signals) {
        (Some(p), _) => SurplusSource::Replay {
            profile: Arc::new(p),
            offset: Duration::ZERO,
        },
        (None, Some(signals)) => SurplusSource::Signals(signals.clone()),
        (None, None) => SurplusSource::Pushed,
    };
    let (daemon, handle) = Daemon::start(Setup {
        fleet: site.fleet.clone(),
        io,
        controller: site.controller.clone(),
        clock,
        surplus,
        meter: None,
        telemetry_interval: Duration::from_secs_f64(site.io.telemetry_interval_s),
        on_stop: match site.safe_state {
            SafeState::Sleep => OnStop::Sleep,
            SafeState::Leave => OnStop::Leave,
        },
        ledger,
    });
    if let Some(listener) = listener {
        let router = daemon::http::router(daemon::http::ApiSetup {
            handle: handle.clone(),
            clock,
            tokens: Arc::new(site.tokens.clone()),
            ledger: site
                .ledger
                .as_ref()
                .filter(|_| !args.no_ledger)
                .map(|l| (l.url.clone(), site.name.clone())),
        });
        let bound = daemon::http::serve(listener, router, site.tls.as_ref()).await?;
        let scheme = if site.tls.is_some() { "https" } else { "http" };
        info!(%bound, "dashboard: {scheme}://{bound}/  API: {scheme}://{bound}/api/v1/openapi.json");
    }
    spawn_shed_signals(handle.clone());
    if let Some(schedule) = &site.surplus.schedule {
        spawn_schedule_watch(site.base_dir.join(schedule), handle.clone());
    }
    let until = args
        .for_secs
        .map(|s| clock.now() + Duration::from_secs_f64(s));
    let stop = async move {
        match until {
            Some(t) => tokio::select! {
                _ = clock.sleep_until(t) => {}
                _ = shutdown_signal() => {}
            },
            None => shutdown_signal().await,
        }
    };
    let status = daemon.run(stop).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

/// Where the API and dashboard listen: --listen, else [api] listen, else (for an http surplus)
/// [surplus] listen or 127.0.0.1:8077; None: nowhere.
fn api_address(args: &RunArgs, site: &Site) -> Result<Option<std::net::SocketAddr>> {
    Ok(match (&args.listen, site.api_listen) {
        (Some(a), _) => Some(
            a.parse()
                .with_context(|| format!("--listen {a:?} is not an address like 127.0.0.1:8077"))?,
        ),
        (None, Some(a)) => Some(a),
        (None, None) if site.surplus.source == SurplusKind::Http => Some(
            site.surplus
                .listen
                .as_deref()
                .unwrap_or("127.0.0.1:8077")
                .parse()
                .context("[surplus] listen")?,
        ),
        (None, None) => None,
    })
}

/// Tokens off loopback over plain HTTP cross the network in clear: refused unless the site file
/// says the network is trusted (`[api] allow_plain_http = true`), and then said at start.
fn check_plain_http(addr: std::net::SocketAddr, site: &Site) -> Result<()> {
    if site.tokens.is_empty() || addr.ip().is_loopback() || site.tls.is_some() {
        return Ok(());
    }
    if !site.allow_plain_http {
        bail!(
            "listening on {addr} over plain HTTP would send the API's tokens across the network in clear: add [api] tls_cert and tls_key (PEM), listen on 127.0.0.1 behind your own TLS proxy, or set [api] allow_plain_http = true if the network is trusted end to end"
        );
    }
    tracing::warn!(%addr, "[api] allow_plain_http = true: tokens travel in clear to this address");
    Ok(())
}

fn load_profile(site: &Site) -> Result<Profile> {
    let name = site.surplus.profile.as_deref().unwrap_or_default();
    Ok(match name {
        "nuclear" => Profile::nuclear(
            site.surplus.unit_mw.unwrap_or(300.0),
            NuclearMethod::Excess {
                export_limit_mw: 1000.0,
            },
        ),
        "wind" => Profile::wind(site.surplus.unit_mw.unwrap_or(100.0)),
        path => {
            let full = site.base_dir.join(path);
            let text = hashsink_units::read_input_file(&full)
                .with_context(|| format!("[surplus] profile: cannot read {}", full.display()))?;
            Profile::from_csv(&text, &full.display().to_string())?
        }
    })
}

/// Ctrl-C or SIGTERM (what systemd and container runtimes send).
/// Loads the day-ahead schedule now and again whenever the file changes (checked every 10 s);
/// a file that stops parsing is logged and the last good schedule kept.
fn spawn_schedule_watch(path: PathBuf, daemon: Handle) {
    tokio::spawn(async move {
        let mut seen: Option<std::time::SystemTime> = None;
        loop {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if modified.is_some() && modified != seen {
                seen = modified;
                let parsed = hashsink_units::read_input_file(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        hashsink_signals::schedule::parse_schedule(
                            &text,
                            &path.display().to_string(),
                        )
                        .map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(blocks) => {
                        if daemon.schedule(blocks).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "day-ahead schedule not loaded; keeping the last good one")
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            if daemon.is_closed() {
                return;
            }
        }
    });
}

/// SIGUSR1 sheds the whole fleet at once (the emergency path, as the HTTP `/shed`); SIGUSR2
/// resumes, with the staggered reconnection.
fn spawn_shed_signals(daemon: Handle) {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, command, what) in [
        (
            SignalKind::user_defined1(),
            hashsink_core::OperatorCommand::ShedAll,
            "SIGUSR1: emergency shed",
        ),
        (
            SignalKind::user_defined2(),
            hashsink_core::OperatorCommand::Resume,
            "SIGUSR2: resume",
        ),
    ] {
        let daemon = daemon.clone();
        match signal(kind) {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if command == hashsink_core::OperatorCommand::Resume
                            && let Some(held) = daemon.held_by_plant()
                        {
                            tracing::warn!(protection = %held, "{what} refused: the plant's trip holds the fleet");
                            continue;
                        }
                        tracing::warn!("{what}");
                        let actor = format!("signal:{}", what.split(':').next().unwrap_or("unix"));
                        if daemon.operator(command, actor).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for {what}"),
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C: stopping"),
        _ = term.recv() => info!("SIGTERM: stopping"),
    }
}

/// What one read of every miner says about how each can be used: every power level, on/off
/// (one level, or its firmware sets its own: LuxOS with ATM on), or not at all (no answer).
/// A refusal the read cannot foresee (a Braiins tuner locked) is learnt at the first write.
async fn describe_controls(fleet: &hashsink_core::Fleet, io: &FleetIo) -> String {
    let sweep = io.sweep().await;
    let (mut levels, mut one_level, mut owned, mut silent) = (0, 0, Vec::new(), Vec::new());
    for (i, result) in sweep.results.iter().enumerate() {
        let address = io.driver(i).address();
        match result {
            Err(e) => silent.push(format!("{address} ({e})")),
            Ok(t) if t.level_owned => owned.push(address.to_string()),
            Ok(_) if fleet.spec_of(hashsink_core::MinerId(i as u32)).levels.len() == 1 => {
                one_level += 1
            }
            Ok(_) => levels += 1,
        }
    }
    let mut out = format!(
        "controls: {levels} with every power level; {} on/off ({one_level} with one level, {} \
         whose firmware sets its own level); {} not usable (no answer)",
        one_level + owned.len(),
        owned.len(),
        silent.len()
    );
    for (what, list) in [
        ("sets its own level (ATM on)", &owned),
        ("no answer", &silent),
    ] {
        if !list.is_empty() {
            let shown: Vec<&str> = list.iter().take(10).map(String::as_str).collect();
            let more = list.len().saturating_sub(shown.len());
            out += &format!("\n  {what}: {}", shown.join(", "));
            if more > 0 {
                out += &format!(" and {more} more");
            }
        }
    }
    out + "\n  a level a firmware refuses at run time (a locked tuner) moves that miner to on/off"
}
