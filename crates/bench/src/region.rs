//! `hashsink-bench region`: one site's fleet run by one daemon, then by `--shards` daemons under
//! `hashsink coordinate`, on the same night and the same terms, through one mosquitto. The
//! emulator runs in this process (half S21, half S19 XP, LuxOS, every miner asleep at the start
//! of each case); the grid is this process too: it replays a night of the bundled nuclear
//! profile (scaled so its peak is 90 % of the fleet's nameplate) on an MQTT topic every 100 ms
//! of wall time. One daemon reads that topic itself; in the coordinated case the coordinator
//! reads it and each shard follows its cap. Each case's night starts once its chain is up (the
//! daemon's endpoint listens, which it does once it has adopted the fleet; for the shards, once
//! the coordinator sends caps). Measured in each case from the emulator's own
//! account of what the fleet draws (the site meter's view), every 100 ms:
//! - absorption: the surplus energy the fleet used (its draw, up to the surplus) over the
//!   surplus energy, and the energy drawn above the surplus (import);
//! - then falls of the surplus from a steady 80 % of nameplate to 40 %: from the fall's
//!   publication to the first command each daemon's miners take (the emulator's receipt), the
//!   slowest of the daemons that act counted (a shard whose cap stays above its load has
//!   nothing to do), and whether the fleet is within the new surplus 10 s later; three falls.
//!
//! Both cases use the same controller settings; caps are stamped on arrival (the daemons' clocks
//! run at `--speed` and the coordinator's at the wall's, so a cap's own time would not compare).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hashsink_core::{Catalogue, FleetConfig};
use hashsink_emulator::{Binding, Emulator, Listen, miner_address};
use hashsink_twin::{NuclearMethod, Profile};
use hashsink_units::{Timestamp, parse_time};

use crate::product::KillOnDrop;

const BROKER: u16 = 18964;
const FIRST_INDEX: u32 = 70_000;
const RPC_PORT: u16 = 14029;
const WEB_PORT: u16 = 18181;
/// Where the single daemon and the shards serve their status: 18970, 18971, ...
const FIRST_LISTEN_PORT: u16 = 18970;
const NIGHT: &str = "2016-05-02T02:30:00Z";

/// What the grid publishes: the night replayed from an instant, or a constant.
#[derive(Clone, Copy)]
enum Grid {
    Replay(Instant),
    Constant(f64),
}

/// The grid on the broker: publishes the surplus every 100 ms (and at once when it is set),
/// keeps the value it last sent, and watches the coordinator's allocation for its first caps.
struct GridPublisher {
    client: rumqttc::Client,
    mode: Arc<Mutex<Grid>>,
    now_w: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// A coordinator has sent caps (its allocation no longer holding).
    caps_flow: Arc<AtomicBool>,
}

impl GridPublisher {
    fn start(profile: Arc<Profile>, speed: f64) -> GridPublisher {
        let mut opts = rumqttc::MqttOptions::new("bench-grid", "127.0.0.1", BROKER);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = rumqttc::Client::new(opts, 64);
        let caps_flow = Arc::new(AtomicBool::new(false));
        let flowing = caps_flow.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = event {
                    let holding = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .map(|a| a["holding"] != false)
                        .unwrap_or(true);
                    flowing.store(!holding, Ordering::Relaxed);
                }
            }
        });
        let _ = client.subscribe("hashsink/coordinator/allocation", rumqttc::QoS::AtMostOnce);
        let grid = GridPublisher {
            client: client.clone(),
            mode: Arc::new(Mutex::new(Grid::Constant(0.0))),
            now_w: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            caps_flow,
        };
        let (mode, now_w, stop) = (grid.mode.clone(), grid.now_w.clone(), grid.stop.clone());
        std::thread::spawn(move || {
            let start = profile.start();
            while !stop.load(Ordering::Relaxed) {
                let watts = match *mode.lock().unwrap() {
                    Grid::Constant(w) => w,
                    Grid::Replay(from) => {
                        let elapsed = from.elapsed().as_secs_f64() * speed;
                        profile.at(start + Duration::from_secs_f64(elapsed)).w()
                    }
                };
                now_w.store(watts.to_bits(), Ordering::Relaxed);
                publish(&client, watts);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        grid
    }

    /// From now on, `mode`; a constant goes out at once (a fall is timed from here).
    fn set(&self, mode: Grid) {
        *self.mode.lock().unwrap() = mode;
        if let Grid::Constant(watts) = mode {
            self.now_w.store(watts.to_bits(), Ordering::Relaxed);
            publish(&self.client, watts);
        }
    }

    /// Waits (a minute at most) until a coordinator sends caps.
    async fn wait_for_caps(&self) -> Result<()> {
        let t0 = Instant::now();
        while !self.caps_flow.load(Ordering::Relaxed) {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the coordinator sent no caps within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn watts(&self) -> f64 {
        f64::from_bits(self.now_w.load(Ordering::Relaxed))
    }
}

impl Drop for GridPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn publish(client: &rumqttc::Client, watts: f64) {
    let body = format!("{{\"available_kw\": {}}}", watts / 1000.0);
    let _ = client.try_publish("grid/surplus", rumqttc::QoS::AtMostOnce, false, body);
}

/// One case's figures.
struct Case {
    name: String,
    surplus_mwh: f64,
    absorbed_mwh: f64,
    import_kwh: f64,
    falls: Vec<Fall>,
}

/// One fall of the surplus, as the fleet took it.
struct Fall {
    /// The slowest first command among the daemons whose cap fell below their draw (their
    /// reports' sum before the fall; the cap their status shows 10 s after it).
    slowest: Option<Duration>,
    /// How many of those daemons sent a command within 10 s, of how many had to cut (one whose
    /// cap stays above its draw, or with no miner mining, has nothing to cut), of how many.
    acted: usize,
    had_to_cut: usize,
    daemons: usize,
    /// Whether the fleet drew no more than the new surplus 10 s after the fall.
    followed: bool,
    /// Whether the fleet had settled near 80 % (within 10 %, no command for 2 s) before it.
    settled: bool,
}

impl Case {
    fn absorption(&self) -> f64 {
        100.0 * self.absorbed_mwh / self.surplus_mwh.max(1e-12)
    }
}

/// The bench's fleet: its mix, its size, and which miners each daemon drives.
struct Setup {
    mix: String,
    miners: u32,
    nameplate: f64,
    dir: std::path::PathBuf,
    speed: f64,
    hours: f64,
    falls: usize,
}

/// One case of the two, run alone.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    One,
    Coordinated,
}

pub async fn run(
    miners: u32,
    shards: u32,
    hours: f64,
    speed: f64,
    falls: usize,
    only: Option<Only>,
) -> Result<String> {
    if shards < 2 || miners == 0 || miners % (2 * shards) != 0 {
        bail!("--shards must be 2 or more and --miners a multiple of twice --shards");
    }
    if !crate::product::mosquitto_installed() {
        bail!("the region benchmark needs mosquitto (apt-get install mosquitto)");
    }
    hashsink_clock::raise_open_file_limit(1 << 20);
    let dir = std::env::temp_dir().join(format!("hashsink-bench-region-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let half = miners / 2;
    let mix = format!("s21:{half}:luxos,s19xp:{half}:luxos");
    let fleet = FleetConfig::build_from_shorthand(&mix, &Catalogue::bundled())?;
    let setup = Setup {
        nameplate: fleet.max_power().w(),
        mix,
        miners,
        dir,
        speed,
        hours,
        falls,
    };
    let listen = Listen {
        first_index: FIRST_INDEX,
        binding: Binding::for_fleet(miners as usize),
        rpc_port: RPC_PORT,
        web_port: WEB_PORT,
    };
    let clock = hashsink_clock::ScaledClock::starting_at(Timestamp::from_secs(0), speed);
    let emulator = crate::product::start_emulator_at(&setup.mix, listen, clock)?;
    let _broker = crate::product::mosquitto(BROKER)?;
    let start = parse_time(NIGHT).map_err(|e| anyhow!("{e}"))?;
    let night = Profile::nuclear(
        1.0,
        NuclearMethod::Excess {
            export_limit_mw: 1000.0,
        },
    )
    .window(start, Duration::from_secs_f64(hours * 3600.0));
    let fit = setup.nameplate * 0.9 / night.peak().w().max(1.0);
    let grid = GridPublisher::start(Arc::new(night.scaled(fit, String::new())), speed);
    crate::product::hashsink()?;
    let mut cases = Vec::new();
    if only != Some(Only::Coordinated) {
        cases.push(one_daemon(&setup, &emulator, &grid).await?);
    }
    if only != Some(Only::One) {
        cases.push(coordinated(&setup, shards, &emulator, &grid).await?);
    }
    let mut text = table(&setup, shards, &cases);
    text += &format!(
        "\nThe daemons' and the coordinator's logs: {}\n",
        setup.dir.display()
    );
    Ok(text)
}

/// The controller both cases share: a lost reading is held for a second of wall time.
fn controller(speed: f64) -> String {
    format!(
        "[controller]\nmax_reading_age_ms = {}\n",
        (1000.0 * speed).round() as u64
    )
}

/// `[[group]]` tables for miners `from..to` of the mix (S21 first, then S19 XP), one address
/// range a /24.
fn groups(setup: &Setup, from: u32, to: u32) -> String {
    let half = setup.miners / 2;
    let mut text = String::new();
    for (model, lo, hi) in [("S21", 0, half), ("S19 XP", half, setup.miners)] {
        let (a, b) = (from.max(lo), to.min(hi));
        if a >= b {
            continue;
        }
        let mut ranges = Vec::new();
        let mut first = a;
        while first < b {
            let index = FIRST_INDEX + first;
            let end_of_subnet = first + (250 - index % 250);
            let last = end_of_subnet.min(b) - 1;
            ranges.push(format!(
                "\"{}-{}\"",
                miner_address(index),
                miner_address(FIRST_INDEX + last)
            ));
            first = last + 1;
        }
        text += &format!(
            "[[group]]\nmodel = \"{model}\"\nfirmware = \"luxos\"\naddresses = [{}]\n\n",
            ranges.join(", ")
        );
    }
    text
}

fn site(name: &str, signal: &str, setup: &Setup, from: u32, to: u32) -> String {
    format!(
        "[site]\nname = \"{name}\"\n\n[surplus]\nsource = \"signals\"\n\n[[signal]]\n{signal}\n[ledger]\nenabled = false\n\n[io]\nrpc_port = {RPC_PORT}\nweb_port = {WEB_PORT}\n\n{}\n{}",
        controller(setup.speed),
        groups(setup, from, to)
    )
}

fn start_daemon(setup: &Setup, name: &str, text: &str, k: u16) -> Result<(KillOnDrop, String)> {
    let path = setup.dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    let listen = format!("127.0.0.1:{}", FIRST_LISTEN_PORT + k);
    let log = setup.dir.join(format!("{name}.log"));
    let speed = setup.speed.to_string();
    let daemon = crate::product::run_daemon(&path, &listen, &log, "info", &["--speed", &speed])?;
    Ok((daemon, listen))
}

/// Case one: a daemon on the whole fleet, reading the grid's topic itself.
async fn one_daemon(setup: &Setup, emulator: &Emulator, grid: &GridPublisher) -> Result<Case> {
    let max_mw = setup.nameplate * 2.0 / 1e6;
    let signal = format!(
        "name = \"grid\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{BROKER}\"\ntopic = \"grid/surplus\"\nfield = \"available_kw\"\nmax_age_s = {}\nmax_mw = {max_mw}\n",
        setup.speed
    );
    let text = site("one daemon", &signal, setup, 0, setup.miners);
    let (daemon, _) = start_daemon(setup, "one", &text, 0)?;
    let whole = std::iter::once(0..setup.miners).collect::<Vec<_>>();
    let case = run_case("one daemon".into(), setup, emulator, grid, &whole).await;
    stop(daemon, emulator).await;
    case
}

/// Case two: `shards` daemons, a contiguous share of the fleet each, under a coordinator that
/// reads the grid's topic.
async fn coordinated(
    setup: &Setup,
    shards: u32,
    emulator: &Emulator,
    grid: &GridPublisher,
) -> Result<Case> {
    let each = setup.miners / shards;
    let catalogue = Catalogue::bundled();
    let mut region = format!(
        "[coordinator]\nbroker = \"127.0.0.1:{BROKER}\"\nclient_id = \"bench-coordinator\"\npublish_ms = 100\nsilent_after_s = 2\nadopt_for_s = 5\n\n[[signal]]\nname = \"grid\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{BROKER}\"\ntopic = \"grid/surplus\"\nfield = \"available_kw\"\nmax_age_s = 1\nmax_mw = {}\n\n",
        setup.nameplate * 2.0 / 1e6
    );
    let mut daemons = Vec::new();
    let mut ranges = Vec::new();
    for k in 0..shards {
        let (from, to) = (k * each, (k + 1) * each);
        let half = setup.miners / 2;
        let (s21, xp) = (
            to.min(half).saturating_sub(from),
            to.saturating_sub(from.max(half)),
        );
        let mix: Vec<String> = [("s21", s21), ("s19xp", xp)]
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| format!("{m}:{n}:luxos"))
            .collect();
        let capacity = FleetConfig::build_from_shorthand(&mix.join(","), &catalogue)?
            .max_power()
            .mw()
            * 1.01;
        region += &format!(
            "[[daemon]]\nid = \"shard-{k}\"\nsite = \"plant\"\ncapacity_mw = {capacity}\nfailsafe_after_s = 10\n\n"
        );
        let signal = format!(
            "name = \"coordinator\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{BROKER}\"\ntopic = \"hashsink/shard-{k}/cap\"\nfield = \"cap_w\"\nunit = \"w\"\nmax_age_s = {}\nmax_mw = {capacity}\npublish_topic = \"hashsink/shard-{k}/report\"\npublish_ms = 100\n",
            setup.speed
        );
        let name = format!("shard-{k}");
        let text = site(&name, &signal, setup, from, to);
        daemons.push(start_daemon(setup, &name, &text, 1 + k as u16)?.0);
        ranges.push(from..to);
    }
    let path = setup.dir.join("region.toml");
    std::fs::write(&path, region)?;
    let log = std::fs::File::create(setup.dir.join("coordinator.log"))?;
    let coordinator = KillOnDrop(
        std::process::Command::new(crate::product::hashsink()?)
            .args(["coordinate", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("start hashsink coordinate")?,
    );
    // The night starts once the chain is up, as it does for one daemon (its endpoint listens
    // once it has adopted the fleet): here once the coordinator sends caps.
    grid.wait_for_caps().await?;
    let name = format!("{shards} shards, coordinated");
    let case = run_case(name, setup, emulator, grid, &ranges).await;
    drop(coordinator);
    for daemon in daemons {
        stop(daemon, emulator).await;
    }
    case
}

/// The night replayed, then the falls; `shards` are the miners each daemon drives.
async fn run_case(
    name: String,
    setup: &Setup,
    emulator: &Emulator,
    grid: &GridPublisher,
    shards: &[std::ops::Range<u32>],
) -> Result<Case> {
    let wall = Duration::from_secs_f64(setup.hours * 3600.0 / setup.speed);
    grid.set(Grid::Replay(Instant::now()));
    let (mut surplus_j, mut absorbed_j, mut import_j) = (0.0, 0.0, 0.0);
    let started = Instant::now();
    let mut last = Instant::now();
    while started.elapsed() < wall {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let dt = last.elapsed().as_secs_f64() * setup.speed;
        last = Instant::now();
        let (surplus, drawn) = (grid.watts(), emulator.totals().power.w());
        surplus_j += surplus * dt;
        absorbed_j += drawn.min(surplus) * dt;
        import_j += (drawn - surplus).max(0.0) * dt;
    }
    let mut falls = Vec::new();
    for _ in 0..setup.falls {
        falls.push(fall(setup, emulator, grid, shards).await);
    }
    Ok(Case {
        name,
        surplus_mwh: surplus_j / 3.6e9,
        absorbed_mwh: absorbed_j / 3.6e9,
        import_kwh: import_j / 3.6e6,
        falls,
    })
}

/// A steady 80 % of nameplate until the fleet draws within 10 % of it and no command has
/// reached it for 2 s (two minutes at most), then a fall to 40 %: each daemon's first command
/// after its publication, and whether the fleet is within the new surplus 10 s later.
async fn fall(
    setup: &Setup,
    emulator: &Emulator,
    grid: &GridPublisher,
    shards: &[std::ops::Range<u32>],
) -> Fall {
    let high = setup.nameplate * 0.8;
    grid.set(Grid::Constant(high));
    let settle_by = Instant::now() + Duration::from_secs(120);
    let mut mark = emulator.mark_commands();
    let mut settled = false;
    let mut next_note = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle_by && !settled {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if Instant::now() > next_note {
            // A slow return: what each daemon says, every 30 s.
            next_note += Duration::from_secs(30);
            say_where(emulator, shards.len(), "settling at 80 %").await;
        }
        let near = emulator.totals().power.w() > high * 0.9;
        if emulator.first_command_since_mark().is_some() {
            mark = emulator.mark_commands();
        } else {
            settled = near && mark.elapsed() > Duration::from_secs(2);
        }
    }
    if !settled {
        say_where(emulator, shards.len(), "not settled at 80 % after 2 min").await;
    }
    // What each daemon draws by its own reports before the fall, against its cap after it: a
    // daemon whose cap stays above its draw, or with no miner mining, has nothing to cut (its
    // commands are other work).
    let before = daemons_field(shards.len(), "fleet_w").await;
    let mining = daemons_field(shards.len(), "mining").await;
    let marked = emulator.mark_commands();
    let low = setup.nameplate * 0.4;
    grid.set(Grid::Constant(low));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cap_after = daemons_field(shards.len(), "surplus_w").await;
    let mut firsts = Vec::new();
    let mut each = Vec::new();
    let mut had_to_cut = 0;
    for (k, r) in shards.iter().enumerate() {
        let first = emulator.first_command_since_mark_among(r.clone());
        // One with no miner mining draws its standby, which no command lowers.
        let must_cut = match (before[k], cap_after[k], mining[k]) {
            (_, _, Some(0.0)) => false,
            (Some(draw), Some(cap), _) => cap < draw,
            _ => true,
        };
        let ms = first.map_or("none".into(), |t| {
            format!("{:.0}", (t - marked).as_secs_f64() * 1000.0)
        });
        if must_cut {
            had_to_cut += 1;
            firsts.extend(first);
            each.push(ms);
        } else {
            each.push(format!("({ms}: nothing to cut)"));
        }
    }
    eprintln!("fall: first commands after {} ms", each.join(", "));
    let followed = emulator.totals().power.w() <= low * 1.001;
    if !followed {
        say_where(
            emulator,
            shards.len(),
            "OVER the surplus 10 s after the fall",
        )
        .await;
    }
    Fall {
        slowest: firsts.iter().max().map(|t| *t - marked),
        acted: firsts.len(),
        had_to_cut,
        daemons: shards.len(),
        followed,
        settled,
    }
}

/// One number from each daemon's status, in order (`fleet_w`: its draw by its miners' reports;
/// `surplus_w`: the cap it follows).
async fn daemons_field(daemons: usize, key: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for listen in daemon_listens(daemons) {
        let s = crate::product::status(&listen).await;
        out.push(s.and_then(|s| s[key].as_f64()));
    }
    out
}

/// Prints what the fleet draws and what each daemon says of it (a slow return to 80 %).
async fn say_where(emulator: &Emulator, daemons: usize, when: &str) {
    let t = emulator.totals();
    eprintln!(
        "fall: {when}: the fleet draws {:.0} kW ({} mining, {} booting)",
        t.power.w() / 1e3,
        t.mining,
        t.booting
    );
    for listen in daemon_listens(daemons) {
        eprintln!("fall: {listen}: {}", status_line(&listen).await);
    }
}

/// Each daemon's endpoint: one daemon's, or the shards' in order.
fn daemon_listens(daemons: usize) -> Vec<String> {
    let first = if daemons == 1 { 0 } else { 1 };
    (0..daemons as u16)
        .map(|k| format!("127.0.0.1:{}", FIRST_LISTEN_PORT + first + k))
        .collect()
}

/// What a daemon's status says of its fleet and its limits, on one line.
async fn status_line(listen: &str) -> String {
    let Some(s) = crate::product::status(listen).await else {
        return "no status".into();
    };
    let kw = |k: &str| {
        s[k].as_f64()
            .map_or("-".into(), |w| format!("{:.0} kW", w / 1e3))
    };
    format!(
        "surplus {}, allowed {} (ahead {}), planned {}, fleet {}; mining {}, booting {}, asleep {}, faulted {}, unreachable {}; commands {}, queues {}, last sweep {} ms",
        kw("surplus_w"),
        kw("allowed_w"),
        kw("ahead_w"),
        kw("planned_w"),
        kw("fleet_w"),
        s["mining"],
        s["booting"],
        s["asleep"],
        s["faulted"],
        s["unreachable"],
        s["commands"],
        s["queues"],
        s["last_sweep_ms"]
    ) + &plan_parts(&s["plan"], &s["faulted_miners"])
}

/// The plan by miner state against the reports (the status's `plan`), kW, and the kinds of
/// the faults listed.
fn plan_parts(plan: &serde_json::Value, faulted: &serde_json::Value) -> String {
    let mut text = String::from("; plan (miners, planned / reported kW, pending):");
    for part in ["running", "waking", "asleep", "faulted"] {
        let p = &plan[part];
        let kw = |k: &str| p[k].as_f64().unwrap_or(f64::NAN) / 1e3;
        text += &format!(
            " {part} {}, {:.0} / {:.0}, {};",
            p["miners"],
            kw("planned_w"),
            kw("reported_w"),
            p["pending"]
        );
    }
    text += &format!(" {} above their plan", plan["above_plan"]);
    if let Some(faulted) = faulted.as_array().filter(|f| !f.is_empty()) {
        let mut kinds = std::collections::BTreeMap::<String, u32>::new();
        for f in faulted {
            *kinds.entry(f["fault"].to_string()).or_default() += 1;
        }
        text += &format!("; the first {} faulted by kind: {kinds:?}", faulted.len());
    }
    for example in plan["above_plan_examples"].as_array().into_iter().flatten() {
        text += &format!("\n    {}", example.as_str().unwrap_or_default());
    }
    text
}

/// Stops a daemon in order (it puts its miners to sleep) and waits for the fleet to sleep.
async fn stop(daemon: KillOnDrop, emulator: &Emulator) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let t0 = Instant::now();
    while emulator.totals().mining + emulator.totals().booting > 0 {
        if t0.elapsed() > Duration::from_secs(60) {
            // Whatever the daemons left awake, the next case starts from a sleeping fleet.
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(daemon);
}

fn fall_cell(f: &Fall) -> String {
    let took = f.slowest.map_or("none in 10 s".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    });
    let acted = if f.daemons > 1 {
        format!(
            " ({} of the {} of {} that had to cut acted)",
            f.acted, f.had_to_cut, f.daemons
        )
    } else {
        String::new()
    };
    let over = if f.followed {
        ""
    } else {
        ", OVER the surplus after 10 s"
    };
    let unsettled = if f.settled {
        ""
    } else {
        ", not settled at 80 % before"
    };
    format!("{took}{acted}{over}{unsettled}")
}

fn table(setup: &Setup, shards: u32, cases: &[Case]) -> String {
    let mut t = format!(
        "{} miners ({}), the bundled nuclear night from {NIGHT} for {} h at {}x, scaled to 90 % of the fleet's {:.0} kW; surplus on MQTT every 100 ms\n\n| case | surplus | absorbed | absorption | drawn above the surplus | surplus fall to the slowest daemon's first command ({} falls, 80 % to 40 % of nameplate) |\n|---|---:|---:|---:|---:|---|\n",
        setup.miners,
        setup.mix,
        setup.hours,
        setup.speed,
        setup.nameplate / 1000.0,
        setup.falls
    );
    for c in cases {
        let falls: Vec<String> = c.falls.iter().map(fall_cell).collect();
        t += &format!(
            "| {} | {:.3} MWh | {:.3} MWh | {:.2} % | {:.2} kWh | {} |\n",
            c.name,
            c.surplus_mwh,
            c.absorbed_mwh,
            c.absorption(),
            c.import_kwh,
            falls.join(", ")
        );
    }
    if let [one, many] = cases {
        t += &format!(
            "\n{shards} coordinated shards against one daemon: absorption {:+.2} points; goal within 0.5.\n",
            many.absorption() - one.absorption()
        );
    }
    t
}
