//! `hashsink demo`: the whole thing on one machine. An emulated fleet of about 100 miners of
//! mixed firmware listens on loopback; the daemon identifies it with asic-rs, replays a night of
//! a nuclear unit's surplus at 60x and drives the miners over their real protocols, with a live
//! view. At the end it sheds the fleet and checks that every miner went to sleep.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use hashsink_clock::ScaledClock;
use hashsink_core::ControllerConfig;
use hashsink_fleetio::firmwares::CallSettings;
use hashsink_fleetio::fleet::FleetIo;
use hashsink_twin::{NuclearMethod, Profile};
use hashsink_units::{format_time, parse_time};

use crate::emulate::{self, DEMO_MIX, EmulateArgs};
use hashsink_core::Fleet;
use hashsink_daemon::recorder::Recorder;
use hashsink_daemon::{self as daemon, Daemon, Handle, OnStop, Setup, Status, SurplusSource};
use hashsink_emulator::Emulator;
use hashsink_units::Timestamp;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Clock speed (60: a minute of the night per second).
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// Hours of the night to replay.
    #[arg(long, default_value_t = 4.0)]
    pub hours: f64,
    /// Start of the replay (UTC). The default is the evening the surplus of a nuclear unit
    /// rises from nothing to its night plateau (Ontario, 1-2 May 2016, 22:30 local time).
    #[arg(long, default_value = "2016-05-02T02:30:00Z")]
    pub start: String,
    /// The emulated fleet (MODEL:COUNT:FIRMWARE, comma separated).
    #[arg(long, default_value = DEMO_MIX)]
    pub mix: String,
    /// Misbehaving miners, e.g. `hang=5,garbage=5,ignore=2,slow=2` (percent of the fleet; see
    /// `hashsink emulate --help`). The daemon routes around them.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Quirks of real firmware, e.g. `atm=30,locked=20` (percent of the miners of that
    /// firmware; see `hashsink emulate --help`). The daemon uses such miners on/off.
    #[arg(long, default_value = "")]
    pub quirks: String,
    /// Print the final status as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Start the emulated miners at this address index (127.1.0.1 + index).
    #[arg(long, default_value_t = 0)]
    pub first_index: u32,
    /// How often the daemon reads every miner (simulated seconds).
    #[arg(long, default_value_t = 10.0)]
    pub telemetry_interval_s: f64,
    /// Serve the dashboard and the API here ("off": not at all). If the default port is
    /// taken, another one is picked and printed.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Keep the demo's ledger (SQLite) at this path; by default it is written to a temporary
    /// file and deleted at the end. Read it with `hashsink report --ledger PATH --site demo`.
    #[arg(long)]
    pub ledger: Option<std::path::PathBuf>,
    /// After the replay, keep the dashboard up until Ctrl-C.
    #[arg(long)]
    pub stay: bool,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The demo's ledger file: the path asked for, or a temporary one removed on drop.
struct DemoLedger {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for DemoLedger {
    fn drop(&mut self) {
        if !self.keep {
            for suffix in ["", "-wal", "-shm", ".quarantine.jsonl"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

pub async fn run(args: DemoArgs) -> Result<std::process::ExitCode> {
    if !(args.speed >= 1.0 && args.speed <= 3600.0) {
        bail!("--speed {} must be between 1 and 3600", args.speed);
    }
    if !(args.hours > 0.0 && args.hours <= 48.0) {
        bail!("--hours {} must be between 0 and 48", args.hours);
    }
    let start = parse_time(&args.start).map_err(|e| anyhow::anyhow!("--start: {e}"))?;
    let clock = ScaledClock::starting_at(start, args.speed);
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    let (emulator, fleet, addrs) = start_fleet(&args, clock).await?;
    say(format!(
        "hashsink demo: {} emulated miners ({}) on {} .. {}, speaking LuxOS, Braiins OS and stock Antminer protocols",
        fleet.len(),
        fleet.describe(),
        addrs[0],
        addrs[addrs.len() - 1]
    ));
    let duration = Duration::from_secs_f64(args.hours * 3600.0);
    let profile = night_profile(start, duration, &fleet);
    say(format!(
        "surplus: {} from {} for {} h at {}x ({:.0} s)",
        profile.definition,
        format_time(start),
        args.hours,
        args.speed,
        duration.as_secs_f64() / args.speed
    ));
    let io = connect_fleet(&fleet, &addrs, &say).await?;
    let ledger_file = DemoLedger {
        path: args.ledger.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("hashsink-demo-{}.db", std::process::id()))
        }),
        keep: args.ledger.is_some(),
    };
    let ledger_config = hashsink_daemon::site::LedgerConfig {
        url: ledger_file.path.display().to_string(),
        quarantine: hashsink_daemon::site::quarantine_beside(&ledger_file.path),
        interval: Duration::from_secs(60),
        keep_miner_intervals: None,
    };
    let recorder = Recorder::open("demo", &fleet, &addrs, &ledger_config, clock.now())?;
    let meter_emulator = emulator.clone();
    let (daemon, handle) = Daemon::start(Setup {
        fleet: fleet.clone(),
        io: io.clone(),
        controller: ControllerConfig::default(),
        clock,
        surplus: SurplusSource::Replay {
            profile: profile.clone(),
            offset: clock.now().saturating_since(start),
        },
        meter: Some(Arc::new(move || {
            let t = meter_emulator.totals();
            (t.power, t.hashrate)
        })),
        telemetry_interval: Duration::from_secs_f64(args.telemetry_interval_s),
        on_stop: OnStop::Leave,
        ledger: Some(recorder),
    });
    if let Some(bound) = serve_dashboard(&args, &handle, clock, &ledger_config.url).await? {
        let after = if args.stay {
            " and after it, until Ctrl-C"
        } else {
            "; --stay keeps it up after"
        };
        say(format!(
            "dashboard: http://{bound}/ (live while the replay runs{after})"
        ));
    }
    // The replay runs for `hours` from when the daemon starts (identification takes a moment).
    let shed = ShedAtEnd::default();
    let stop = shed.clone().run(
        clock,
        clock.now() + duration,
        handle.clone(),
        emulator.clone(),
    );
    let live = !args.json && std::io::stdout().is_terminal();
    let view = spawn_view(
        &handle,
        live,
        args.json,
        fleet.max_power().w(),
        clock.now().saturating_since(start),
    );
    let status = daemon.run(stop).await?;
    drop(handle);
    let _ = view.await;
    let report = check_shed(status, &emulator, &io, shed.sent_at()).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if live {
            println!();
        }
        print!("{}", render_table(&report));
        if ledger_file.keep {
            println!(
                "\n  ledger: {} (hashsink report --ledger {} --site demo --from .. --to ..)",
                ledger_file.path.display(),
                ledger_file.path.display()
            );
        }
    }
    if args.stay && args.listen != "off" {
        say("the dashboard stays up: Ctrl-C to end".into());
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(ledger_file);
    Ok(std::process::ExitCode::SUCCESS)
}

/// The emulated fleet on loopback, its model for the daemon, and its addresses.
async fn start_fleet(
    args: &DemoArgs,
    clock: ScaledClock,
) -> Result<(Arc<Emulator>, Arc<Fleet>, Vec<std::net::IpAddr>)> {
    let emulate_args = EmulateArgs {
        mix: args.mix.clone(),
        speed: args.speed,
        faults: args.faults.clone(),
        quirks: args.quirks.clone(),
        rpc_port: 4028,
        web_port: 80,
        first_index: args.first_index,
        bind: emulate::BindArg::Auto,
        mining: false,
    };
    let emulator = Arc::new(emulate::start(&emulate_args, clock).await?);
    let fleet = hashsink_core::FleetConfig::build_from_shorthand(
        &args.mix,
        &hashsink_core::Catalogue::bundled(),
    )?;
    let addrs = emulator.addresses().into_iter().map(Into::into).collect();
    Ok((emulator, Arc::new(fleet), addrs))
}

/// The night of a nuclear unit's surplus from `start`, scaled so that its peak is 90 % of what
/// the fleet can draw.
fn night_profile(start: Timestamp, duration: Duration, fleet: &Fleet) -> Arc<Profile> {
    let nuclear = Profile::nuclear(
        1.0,
        NuclearMethod::Excess {
            export_limit_mw: 1000.0,
        },
    )
    .window(start, duration + Duration::from_secs(4 * 3600));
    let peak = nuclear.peak().w().max(1.0);
    let fit = fleet.max_power().w() * 0.9 / peak;
    Arc::new(nuclear.scaled(
        fit,
        format!("Ontario 2016 generation above demand + 1000 MW exports, scaled so its peak is 90 % of the fleet's {:.0} kW", fleet.max_power().w() / 1e3),
    ))
}

/// asic-rs identification of the emulated miners, and the drivers prepared.
async fn connect_fleet(
    fleet: &Fleet,
    addrs: &[std::net::IpAddr],
    say: &dyn Fn(String),
) -> Result<Arc<FleetIo>> {
    let identify_started = Instant::now();
    let settings = CallSettings {
        timeout: Duration::from_millis(1500),
        ..CallSettings::default()
    };
    let inventory =
        daemon::connect::connect(fleet, addrs, settings, 256, Duration::from_secs(2), false)
            .await?;
    say(format!(
        "asic-rs identification: {} ({:.1} s)",
        inventory.report(),
        identify_started.elapsed().as_secs_f64()
    ));
    let io = Arc::new(FleetIo::new(
        inventory.drivers,
        256,
        Duration::from_millis(1500),
    ));
    let ready = io.prepare_all().await;
    tracing::debug!(ready, "drivers prepared (sessions, profile lists)");
    Ok(io)
}

/// The dashboard and the API on loopback (another port if the default one is taken), or none
/// with `--listen off`.
async fn serve_dashboard(
    args: &DemoArgs,
    handle: &Handle,
    clock: ScaledClock,
    ledger_url: &str,
) -> Result<Option<std::net::SocketAddr>> {
    if args.listen == "off" {
        return Ok(None);
    }
    let asked: std::net::SocketAddr = args.listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "--listen {:?} is not an address like 127.0.0.1:8080 (or off)",
            args.listen
        )
    })?;
    if !asked.ip().is_loopback() {
        bail!(
            "--listen {asked}: the demo's dashboard has no tokens, so it listens on loopback only"
        );
    }
    let listener = match daemon::http::bind(asked) {
        Ok(l) => l,
        // The default port is taken: any free one will do.
        Err(_) if args.listen == DEFAULT_LISTEN => daemon::http::bind((asked.ip(), 0).into())?,
        Err(e) => return Err(e),
    };
    let router = daemon::http::router(daemon::http::ApiSetup {
        handle: handle.clone(),
        clock,
        tokens: Arc::new(hashsink_daemon::auth::Tokens::default()),
        ledger: Some((ledger_url.to_string(), "demo".into())),
    });
    Ok(Some(daemon::http::serve(listener, router, None).await?))
}

/// The end of the replay: the operator sheds the fleet through the daemon, which keeps running
/// until the emulator's model shows no miner hashing for a simulated minute (a command sent
/// just before the shed may still land and be undone by the controller's read-back), or 30 s.
#[derive(Clone, Default)]
struct ShedAtEnd(Arc<std::sync::Mutex<Option<Instant>>>);

impl ShedAtEnd {
    async fn run(
        self,
        clock: ScaledClock,
        end: Timestamp,
        handle: Handle,
        emulator: Arc<Emulator>,
    ) {
        clock.sleep_until(end).await;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let _ = handle.operator(
            hashsink_core::OperatorCommand::ShedAll,
            "operator:demo".into(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut empty_since: Option<Timestamp> = None;
        while Instant::now() < deadline {
            let t = emulator.totals();
            let now = clock.now();
            if t.mining + t.booting == 0 {
                let since = *empty_since.get_or_insert(now);
                if now.saturating_since(since) >= Duration::from_secs(60) {
                    break;
                }
            } else {
                empty_since = None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When the shed was sent (the replay always ends with one).
    fn sent_at(&self) -> Instant {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expect("the replay ended with a shed")
    }
}

/// The live view on a terminal (redrawn four times a second), else a line every 30 s.
fn spawn_view(
    handle: &Handle,
    live: bool,
    json: bool,
    scale_w: f64,
    offset: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut status_rx = handle.status.clone();
    tokio::spawn(async move {
        let mut last_line = Instant::now() - Duration::from_secs(60);
        let mut drawn = false;
        while status_rx.changed().await.is_ok() {
            let s = status_rx.borrow().clone();
            if live {
                if last_line.elapsed() >= Duration::from_millis(250) {
                    if drawn {
                        print!("\x1b[5A");
                    }
                    print!("{}", render_live(&s, scale_w, offset));
                    let _ = std::io::stdout().flush();
                    drawn = true;
                    last_line = Instant::now();
                }
            } else if last_line.elapsed() >= Duration::from_secs(30) && !json {
                println!("{}", render_line(&s, offset));
                last_line = Instant::now();
            }
        }
    })
}

/// The shed: when did each miner receive its sleep (the emulator's own clock), and does a
/// read-back of every miner confirm it asleep?
async fn check_shed(
    status: Status,
    emulator: &Emulator,
    io: &FleetIo,
    shed_at: Instant,
) -> DemoReport {
    let received: Vec<Duration> = (0..emulator.len() as u32)
        .filter_map(|i| emulator.sleep_received_at(i))
        .filter(|t| *t >= shed_at)
        .map(|t| t - shed_at)
        .collect();
    let fan_out = received.iter().max().copied().unwrap_or_default();
    let sweep = io.sweep().await;
    let confirmed = sweep
        .results
        .iter()
        .filter(|r| matches!(r, Ok(t) if t.state == hashsink_fleetio::MinerState::Asleep))
        .count();
    let confirm_time = shed_at.elapsed();
    let after = emulator.totals();
    DemoReport {
        miners: io.len(),
        status,
        shed_received: received.len(),
        shed_confirmed_asleep: confirmed,
        shed_fan_out_ms: fan_out.as_millis() as u64,
        shed_confirmed_ms: confirm_time.as_millis() as u64,
        mining_after_shed: after.mining + after.booting,
        fleet_w_after_shed: after.power.w(),
    }
}

#[derive(serde::Serialize)]
struct DemoReport {
    status: Status,
    miners: usize,
    /// Miners that received a sleep command after the shed (the others were asleep already).
    shed_received: usize,
    shed_confirmed_asleep: usize,
    shed_fan_out_ms: u64,
    shed_confirmed_ms: u64,
    mining_after_shed: u32,
    fleet_w_after_shed: f64,
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
}

/// The replay's own time (the clock runs `offset` ahead of it: identification took a moment).
fn replay_time(s: &Status, offset: Duration) -> String {
    format_time(hashsink_units::Timestamp::from_millis(s.now_ms) - offset)
}

fn render_live(s: &Status, scale_w: f64, offset: Duration) -> String {
    let surplus = s.surplus_w.unwrap_or(0.0);
    let scale = scale_w.max(surplus).max(1.0);
    let k = &s.kpis;
    format!(
        "\x1b[2K{}  surplus {:>7.1} kW |{}|\n\x1b[2K                      fleet   {:>7.1} kW |{}|\n\x1b[2Kminers: {} mining, {} booting, {} asleep, {} not answering, {} faulted; {:.2} PH/s\n\x1b[2Kso far: absorbed {:.1} % of {:.0} kWh, import {:.3} %, {:.4} EH hashed, {} commands\n\x1b[2Klast telemetry sweep {} ms\n",
        replay_time(s, offset),
        surplus / 1e3,
        bar(surplus / scale, 40),
        s.fleet_w / 1e3,
        bar(s.fleet_w / scale, 40),
        s.mining,
        s.booting,
        s.asleep,
        s.unreachable,
        s.faulted,
        s.hashrate_ths / 1e3,
        k.absorption() * 100.0,
        k.surplus_kwh,
        k.import_share() * 100.0,
        k.hashes_eh,
        s.commands,
        s.last_sweep_ms,
    )
}

fn render_line(s: &Status, offset: Duration) -> String {
    format!(
        "{}  surplus {:>7.1} kW  fleet {:>7.1} kW  mining {:>3}  asleep {:>3}  absorbed {:>5.1} %",
        replay_time(s, offset),
        s.surplus_w.unwrap_or(0.0) / 1e3,
        s.fleet_w / 1e3,
        s.mining,
        s.asleep,
        s.kpis.absorption() * 100.0
    )
}

fn render_table(r: &DemoReport) -> String {
    let k = &r.status.kpis;
    let rows = [
        ("replayed", format!("{:.1} h", k.seconds / 3600.0)),
        ("surplus", format!("{:.1} kWh", k.surplus_kwh)),
        (
            "absorbed",
            format!(
                "{:.1} kWh ({:.1} %)",
                k.absorbed_kwh,
                k.absorption() * 100.0
            ),
        ),
        (
            "import (fleet above surplus)",
            format!(
                "{:.2} kWh ({:.3} %), worst {:.1} kW",
                k.import_kwh,
                k.import_share() * 100.0,
                k.max_import_w / 1e3
            ),
        ),
        (
            "standby draw without surplus",
            format!("{:.2} kWh", k.standby_import_kwh),
        ),
        ("hashes", format!("{:.4} EH", k.hashes_eh)),
        ("commands sent", r.status.commands.to_string()),
        (
            "miners faulted (routed around)",
            r.status.faulted.to_string(),
        ),
        (
            "shed: sleep commands received",
            format!("{} (the rest slept already)", r.shed_received),
        ),
        (
            "shed: fan-out (emulator clock)",
            format!("{} ms", r.shed_fan_out_ms),
        ),
        (
            "shed: confirmed asleep by read-back",
            format!(
                "{} of {} after {} ms",
                r.shed_confirmed_asleep, r.miners, r.shed_confirmed_ms
            ),
        ),
        (
            "after shed: fleet draw",
            format!(
                "{:.1} kW, {} miners hashing",
                r.fleet_w_after_shed / 1e3,
                r.mining_after_shed
            ),
        ),
    ];
    let mut out = String::from("\n");
    for (k, v) in rows {
        out += &format!("  {k:<36} {v}\n");
    }
    out
}
