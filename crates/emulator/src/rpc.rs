//! The cgminer-style JSON API on port 4028: one request per connection, answered and closed.
//!
//! Requests are `{"command": "summary+power", "parameter": "..."}` (or cgminer's plain
//! `summary|param`). Several commands joined by `+` come back as one object keyed by command,
//! each answer wrapped in a list, as cgminer does. The dialect decides the vocabulary.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::HANG_FOR;
use hashsink_core::MinerSpec;

use crate::model::{ATM_REFUSAL, Dialect, Fault, Shared, Snapshot, World, nearest_level};

const MAX_REQUEST: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves a listener of one miner or of the whole fleet (wildcard): each connection goes to the
/// miner whose address it was made to, and is closed when no miner has that address.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let index = stream
            .local_addr()
            .ok()
            .and_then(|a| shared.index_at(a.ip()));
        if let Some(index) = index {
            tokio::spawn(handle(stream, shared.clone(), index));
        }
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>, index: u32) {
    let fault = shared.fault(index);
    if fault == Fault::Hang {
        // Keep the connection open and say nothing, until the client gives up (or HANG_FOR).
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(HANG_FOR, async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        return;
    }
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    if let Fault::Slow(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    let mut reply = match parse_request(&request) {
        Some((command, parameter)) => answer(&shared, index, &command, parameter.as_deref()),
        None => status_only(&shared, index, "E", 14, "Invalid JSON or command"),
    };
    if fault == Fault::Garbage {
        reply = garbage(&reply);
    }
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads until the request is a complete JSON value, a newline-terminated line, or EOF.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_REQUEST {
                return None;
            }
            if buf.ends_with(b"\n") || serde_json::from_slice::<Value>(&buf).is_ok() {
                break;
            }
        }
        Some(())
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.ok()??;
    let text = String::from_utf8(buf).ok()?;
    Some(
        text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string(),
    )
}

fn parse_request(request: &str) -> Option<(String, Option<String>)> {
    if request.starts_with('{') {
        let value: Value = serde_json::from_str(request).ok()?;
        let command = value.get("command")?.as_str()?.to_string();
        let parameter = match value.get("parameter") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        Some((command, parameter))
    } else if !request.is_empty() {
        let (command, parameter) = match request.split_once('|') {
            Some((c, p)) => (c, Some(p.to_string())),
            None => (request, None),
        };
        Some((command.to_string(), parameter))
    } else {
        None
    }
}

/// Malformed JSON in the shape a broken firmware produces: cut short, with a stray byte.
fn garbage(reply: &str) -> String {
    let cut = reply.len() / 2;
    let mut cut_at = cut;
    while !reply.is_char_boundary(cut_at) {
        cut_at -= 1;
    }
    format!("{}\u{1}{{\"STATUS\":[", &reply[..cut_at])
}

fn answer(shared: &Shared, index: u32, command: &str, parameter: Option<&str>) -> String {
    let commands: Vec<&str> = command.split('+').filter(|c| !c.is_empty()).collect();
    let (mut world, now) = shared.world();
    let dialect = shared.dialect(index);
    if commands.len() <= 1 {
        let value = one(shared, &mut world, index, now, dialect, command, parameter);
        return value.to_string();
    }
    let mut out = serde_json::Map::new();
    for c in commands {
        out.insert(
            c.to_string(),
            json!([one(shared, &mut world, index, now, dialect, c, None)]),
        );
    }
    out.insert("id".into(), json!(1));
    Value::Object(out).to_string()
}

fn status_only(shared: &Shared, index: u32, status: &str, code: u32, msg: &str) -> String {
    let (world, now) = shared.world();
    let snap = world.snapshot(shared.spec(index), index, now);
    json!({"STATUS": [status_block(shared.dialect(index), &snap, status, code, msg)], "id": 1})
        .to_string()
}

pub(crate) const LUX_VERSION: &str = "2025.4.8.220305-emu";
pub(crate) const BOS_VERSION: &str = "25.07";
pub(crate) const BMMINER_VERSION: &str = "2.0.0";

fn description(dialect: Dialect) -> String {
    match dialect {
        Dialect::LuxOs => format!("LUXminer {LUX_VERSION}"),
        Dialect::BraiinsOs => format!("BOSer boser-buildroot {BOS_VERSION}"),
        Dialect::StockAntminer => "cgminer 1.0.0".to_string(),
    }
}

fn status_block(dialect: Dialect, snap: &Snapshot, status: &str, code: u32, msg: &str) -> Value {
    json!({
        "STATUS": status,
        "When": snap.unix_secs(),
        "Code": code,
        "Msg": msg,
        "Description": description(dialect),
    })
}

fn with_status(
    dialect: Dialect,
    snap: &Snapshot,
    code: u32,
    msg: &str,
    key: &str,
    body: Value,
) -> Value {
    json!({ "STATUS": [status_block(dialect, snap, "S", code, msg)], key: body, "id": 1 })
}

fn error(dialect: Dialect, snap: &Snapshot, code: u32, msg: &str) -> Value {
    json!({ "STATUS": [status_block(dialect, snap, "E", code, msg)], "id": 1 })
}

/// The display name a firmware gives the model: "Antminer S19k Pro", "Antminer S21".
pub(crate) fn type_name(model: &str) -> String {
    let model = model.trim();
    if model.to_ascii_lowercase().starts_with("antminer") {
        model.to_string()
    } else {
        format!("Antminer {model}")
    }
}

/// What a read of one miner replies from: its spec and state now, in its dialect.
struct Ask<'a> {
    shared: &'a Shared,
    spec: &'a MinerSpec,
    snap: Snapshot,
    dialect: Dialect,
    index: u32,
    /// The model as the firmware names it.
    kind: String,
    ghs: f64,
    nominal_ghs: f64,
    per_board: f64,
}

impl Ask<'_> {
    /// The reply to a command that only reads, if it is one this dialect knows.
    fn read(&self, command: &str) -> Option<Value> {
        (self.identity(command))
            .or_else(|| self.mining(command))
            .or_else(|| self.hardware(command))
            .or_else(|| self.luxos_config(command))
    }

    /// The miner's identity: its firmware's version and its boards.
    fn identity(&self, command: &str) -> Option<Value> {
        let snap = &self.snap;
        let dialect = self.dialect;
        let kind = &self.kind;
        Some(match command {
            "version" => {
                let body = match dialect {
                    Dialect::LuxOs => json!([{
                        "API": "3.7", "LUXminer": LUX_VERSION, "Miner": "2025.4.8.220305",
                        "CompileTime": "Tue Apr  8 22:05:35 UTC 2025", "Type": kind,
                    }]),
                    Dialect::BraiinsOs => {
                        json!([{ "API": "3.7", "BOSer": format!("boser-buildroot {BOS_VERSION}") }])
                    }
                    Dialect::StockAntminer => json!([{
                        "API": "3.1", "BMMiner": BMMINER_VERSION, "Miner": "uart_trans.1.3",
                        "CompileTime": "Thu Jun 29 17:08:24 CST 2023", "Type": kind,
                    }]),
                };
                with_status(dialect, snap, 22, "Versions", "VERSION", body)
            }
            "devdetails" => {
                let model = match dialect {
                    Dialect::BraiinsOs => format!("Bitmain {kind}"),
                    _ => kind.clone(),
                };
                let boards: Vec<Value> = (0..3)
                    .map(|i| json!({"DEVDETAILS": i, "Name": "BC5", "ID": i, "Driver": "bitmain", "Model": model, "Device Path": ""}))
                    .collect();
                with_status(
                    dialect,
                    snap,
                    69,
                    "Device Details",
                    "DEVDETAILS",
                    json!(boards),
                )
            }
            _ => return None,
        })
    }

    /// What it mines: the summary, the per-board stats and devices.
    fn mining(&self, command: &str) -> Option<Value> {
        let snap = &self.snap;
        let dialect = self.dialect;
        let kind = &self.kind;
        let ghs = self.ghs;
        let nominal_ghs = self.nominal_ghs;
        let per_board = self.per_board;
        Some(match command {
            "summary" => with_status(
                dialect,
                snap,
                11,
                "Summary",
                "SUMMARY",
                json!([{
                    "Elapsed": snap.uptime_s,
                    "GHS 5s": round2(ghs), "GHS av": round2(ghs), "GHS 30m": round2(ghs),
                    "MHS 5s": round2(ghs * 1000.0), "MHS 1m": round2(ghs * 1000.0), "MHS av": round2(ghs * 1000.0),
                    "Accepted": 0, "Rejected": 0, "Hardware Errors": 0, "Utility": 0.0,
                    "Total MH": round2(ghs * 1000.0 * snap.uptime_s as f64),
                }]),
            ),
            "stats" => {
                let temps = |t: f64| format!("{0}-{0}-{0}-{0}", t as i64);
                let mut board = serde_json::Map::new();
                board.insert("ID".into(), json!("BTM_SOC0"));
                board.insert("Elapsed".into(), json!(snap.uptime_s));
                board.insert("GHS 5s".into(), json!(round2(ghs)));
                board.insert("GHS av".into(), json!(round2(ghs)));
                board.insert("total_rateideal".into(), json!(round2(nominal_ghs)));
                board.insert(
                    "Mode".into(),
                    json!(if snap.sleep_requested { 1 } else { 2 }),
                );
                board.insert("miner_count".into(), json!(3));
                board.insert("fan_num".into(), json!(4));
                for f in 1..=4 {
                    board.insert(format!("fan{f}"), json!(snap.fan_rpm));
                }
                for b in 1..=3 {
                    board.insert(format!("chain_rate{b}"), json!(format!("{:.2}", per_board)));
                    board.insert(format!("chain_acn{b}"), json!(77));
                    board.insert(format!("chain_acs{b}"), json!(" oooooooo oooooooo oooooooo oooooooo oooooooo oooooooo oooooooo oooooooo oooooooo o"));
                    board.insert(format!("chain_hw{b}"), json!(0));
                    board.insert(format!("temp_chip{b}"), json!(temps(snap.chip_temp_c)));
                    board.insert(format!("temp_pcb{b}"), json!(temps(snap.board_temp_c)));
                    board.insert(format!("temp{b}"), json!(snap.board_temp_c));
                    board.insert(format!("temp2_{b}"), json!(snap.chip_temp_c));
                    board.insert(format!("chain_power{b}"), json!(round2(snap.watts() / 3.0)));
                }
                // Older stock firmware reports no draw at all.
                if snap.fault != Fault::NoPowerField {
                    let watts = match snap.watts_json() {
                        Value::String(s) => s,
                        number => number.to_string(),
                    };
                    board.insert("chain_power".into(), json!(format!("{watts} W")));
                }
                with_status(
                    dialect,
                    snap,
                    70,
                    "CGMiner stats",
                    "STATS",
                    json!([{ "Type": kind, "Miner": "emu", "CompileTime": "" }, Value::Object(board)]),
                )
            }
            "devs" => {
                let devs: Vec<Value> = (0..3)
                    .map(|i| {
                        json!({
                            "ASC": i, "ID": i, "Enabled": "Y",
                            "Status": if snap.mining() { "Alive" } else { "Dead" },
                            "Temperature": snap.board_temp_c,
                            "MHS 5s": round2(per_board * 1000.0), "MHS av": round2(per_board * 1000.0),
                            "Nominal MHS": round2(nominal_ghs * 1000.0 / 3.0),
                            "Profile": lux_profile_name(snap.level),
                            "IsUserShutdown": snap.sleep_requested,
                        })
                    })
                    .collect();
                with_status(dialect, snap, 9, "3 ASC(s)", "DEVS", json!(devs))
            }
            _ => return None,
        })
    }

    /// Pools, fans, temperatures, and the draw where the firmware reports it.
    fn hardware(&self, command: &str) -> Option<Value> {
        let spec = self.spec;
        let snap = &self.snap;
        let dialect = self.dialect;
        Some(match command {
            "pools" => with_status(
                dialect,
                snap,
                7,
                "1 Pool(s)",
                "POOLS",
                json!([{
                    "POOL": 0, "URL": "stratum+tcp://pool.invalid:3333", "Status": "Alive", "Priority": 0,
                    "User": "hashsink.emulated", "Accepted": 0, "Rejected": 0, "Stratum Active": snap.mining(),
                }]),
            ),
            "fans" => with_status(
                dialect,
                snap,
                202,
                "4 Fan(s)",
                "FANS",
                json!((0..4).map(|i| json!({"ID": i, "FAN": format!("FAN{}", i + 1), "RPM": snap.fan_rpm, "Speed": 40})).collect::<Vec<_>>()),
            ),
            "temps" => with_status(
                dialect,
                snap,
                201,
                "3 Temp(s)",
                "TEMPS",
                json!((0..3).map(|i| json!({
                    "ID": i, "TEMP": i, "Board": snap.board_temp_c, "Chip": snap.chip_temp_c,
                    "TopLeft": snap.chip_temp_c, "TopRight": snap.board_temp_c,
                    "BottomLeft": snap.chip_temp_c, "BottomRight": snap.board_temp_c,
                })).collect::<Vec<_>>()),
            ),
            // LuxOS and BOSer report the machine's draw; bmminer has no such command.
            "power" if dialect == Dialect::LuxOs => with_status(
                dialect,
                snap,
                311,
                "Power usage",
                "POWER",
                json!([{"PSU": false, "Watts": snap.watts_json()}]),
            ),
            "tunerstatus" if dialect == Dialect::BraiinsOs => with_status(
                dialect,
                snap,
                22,
                "Tuner Status",
                "TUNERSTATUS",
                json!([{
                    "ApproximateMinerPowerConsumption": snap.watts_json(),
                    "PowerLimit": snap.power_target.unwrap_or(spec.nameplate_power.w()).round() as i64,
                    "TunerChainStatus": [],
                }]),
            ),
            _ => return None,
        })
    }

    /// LuxOS's configuration and profile list.
    fn luxos_config(&self, command: &str) -> Option<Value> {
        let shared = self.shared;
        let spec = self.spec;
        let snap = &self.snap;
        let dialect = self.dialect;
        let index = self.index;
        let kind = &self.kind;
        Some(match command {
            "config" if dialect == Dialect::LuxOs => with_status(
                dialect,
                snap,
                33,
                "LUXminer config",
                "CONFIG",
                json!([{
                    "Model": kind, "OS": "LuxOS", "ASC Count": 3,
                    "CurtailMode": if snap.sleep_requested { "Sleep" } else { "None" },
                    "Profile": lux_profile_name(snap.level),
                    "IsAtmEnabled": snap.fault == Fault::AtmOn, "IsTuning": false, "IsPowerSupplyOn": true,
                    "MACAddr": mac(index), "Hostname": format!("luxos-{index}"), "IPAddr": crate::miner_address(shared.first_index + index).to_string(),
                    "NameplateTHS": spec.nameplate_hashrate.ths(),
                }]),
            ),
            "profiles" if dialect == Dialect::LuxOs => {
                let profiles: Vec<Value> = spec
                    .levels
                    .iter()
                    .zip(&spec.level_hashrate)
                    .enumerate()
                    .map(|(i, (w, h))| {
                        json!({
                            "Profile Name": lux_profile_name(i as u8), "Frequency": lux_frequency(i as u8),
                            "Step": (i as i64 - spec.preferred_level as i64).to_string(),
                            "Watts": w.w().round() as i64, "Hashrate": round2(h.ths()),
                            "Voltage": 12.0, "IsDynamic": true, "IsTuned": false, "CanRestore": true, "HasOverrides": false,
                        })
                    })
                    .collect();
                with_status(dialect, snap, 37, "Profiles", "PROFILES", json!(profiles))
            }
            _ => return None,
        })
    }
}

/// LuxOS's session commands and the writes that need a session (curtail, profileset).
fn luxos_session(
    ask: &Ask,
    world: &mut World,
    now: hashsink_units::Timestamp,
    command: &str,
    parameter: Option<&str>,
) -> Option<Value> {
    let shared = ask.shared;
    let spec = ask.spec;
    let snap = &ask.snap;
    let dialect = ask.dialect;
    let index = ask.index;
    Some(match command {
        "session" => {
            let id = world.side[index as usize]
                .lux_session
                .clone()
                .unwrap_or_default();
            with_status(
                dialect,
                snap,
                100,
                "Session",
                "SESSION",
                json!([{"SessionID": id}]),
            )
        }
        "logon" => {
            let side = &mut world.side[index as usize];
            let id = match &side.lux_session {
                Some(id) => id.clone(),
                None => {
                    let id = shared.new_session();
                    side.lux_session = Some(id.clone());
                    side.session_opened = now;
                    id
                }
            };
            with_status(
                dialect,
                snap,
                100,
                "Session created",
                "SESSION",
                json!([{"SessionID": id}]),
            )
        }
        "logoff" => {
            world.side[index as usize].lux_session = None;
            with_status(dialect, snap, 100, "Session closed", "SESSION", json!([]))
        }
        "curtail" | "profileset" => {
            let (token, arg) = match parameter.and_then(|p| p.split_once(',')) {
                Some((t, a)) => (t.trim(), a.trim()),
                None => {
                    return Some(error(
                        dialect,
                        snap,
                        45,
                        "Access denied: a session id is required",
                    ));
                }
            };
            let side = &mut world.side[index as usize];
            let expired = side.fault == Fault::SessionExpires
                && now.saturating_since(side.session_opened) > crate::model::SESSION_LIFETIME;
            if expired {
                side.lux_session = None;
            }
            if side.lux_session.as_deref() != Some(token) {
                return Some(error(dialect, snap, 45, "Invalid session id"));
            }
            match (command, arg) {
                ("curtail", "sleep") => {
                    if snap.sleep_requested {
                        return Some(error(dialect, snap, 400, "Miner is already in sleep mode"));
                    }
                    world.sleep(index, now);
                    with_status(
                        dialect,
                        snap,
                        400,
                        "Curtail sleep",
                        "CURTAIL",
                        json!([{"Mode": "sleep"}]),
                    )
                }
                ("curtail", "wakeup") => {
                    world.wake(index, snap.level, now);
                    with_status(
                        dialect,
                        snap,
                        400,
                        "Curtail wakeup",
                        "CURTAIL",
                        json!([{"Mode": "wakeup"}]),
                    )
                }
                ("curtail", other) => error(
                    dialect,
                    snap,
                    401,
                    &format!("Invalid curtail mode '{other}': use sleep or wakeup"),
                ),
                (_, _) if world.side[index as usize].fault == Fault::AtmOn => {
                    error(dialect, snap, 38, ATM_REFUSAL)
                }
                (_, profile) => match lux_profile_level(spec, profile) {
                    Some(level) => {
                        world.set_level(index, level, now);
                        with_status(
                            dialect,
                            snap,
                            37,
                            "Profile set",
                            "PROFILE",
                            json!([{"Profile": lux_profile_name(level)}]),
                        )
                    }
                    None => error(dialect, snap, 38, &format!("Invalid profile '{profile}'")),
                },
            }
        }

        _ => return None,
    })
}

fn one(
    shared: &Shared,
    world: &mut World,
    index: u32,
    now: hashsink_units::Timestamp,
    dialect: Dialect,
    command: &str,
    parameter: Option<&str>,
) -> Value {
    let spec = shared.spec(index);
    let snap = world.snapshot(spec, index, now);
    let ghs = snap.ghs();
    let ask = Ask {
        shared,
        spec,
        dialect,
        index,
        kind: type_name(&spec.model),
        ghs,
        nominal_ghs: spec.level_hashrate[snap.level as usize].ths() * 1000.0,
        per_board: ghs / 3.0,
        snap,
    };
    let reply = match ask.read(command) {
        Some(reply) => Some(reply),
        None if dialect == Dialect::LuxOs => luxos_session(&ask, world, now, command, parameter),
        None => None,
    };
    reply.unwrap_or_else(|| error(dialect, &ask.snap, 14, "Invalid command"))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn mac(index: u32) -> String {
    let b = index.to_be_bytes();
    format!("02:48:53:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
}

/// LuxOS names profiles by chip frequency; the emulator's ladder is 25 MHz apart from 190 MHz.
fn lux_frequency(level: u8) -> u32 {
    190 + 25 * level as u32
}

pub(crate) fn lux_profile_name(level: u8) -> String {
    format!("{}MHz", lux_frequency(level))
}

fn lux_profile_level(spec: &hashsink_core::MinerSpec, name: &str) -> Option<u8> {
    if name == "default" {
        return Some(spec.preferred_level);
    }
    (0..spec.levels.len() as u8).find(|&l| lux_profile_name(l) == name)
}

/// Braiins OS power target in watts → the model's level.
pub(crate) fn braiins_level(spec: &hashsink_core::MinerSpec, watts: f64) -> u8 {
    nearest_level(spec, watts)
}
