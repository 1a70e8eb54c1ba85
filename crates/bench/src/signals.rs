//! `hashsink-bench signals`: the plant-signal path end to end, per source kind (MQTT through a
//! real mosquitto broker, Modbus TCP through a real pymodbus server polled every 10 ms). This
//! process plays the plant (it writes the surplus and the trip flag to the peer) and hosts the
//! emulated LuxOS fleet on a runtime of its own, so that both ends are read on one clock; the
//! daemon is `hashsink run` in a child process, as in production; it starts by putting every
//! miner to sleep and wakes the fleet as the surplus allows, and the measurements start once the
//! whole fleet runs and no command has gone out for 3 s. Measured:
//! - signal to first command: from the plant's write of a lower surplus to the first command
//!   any miner takes (five falls of 10 % each);
//! - shed fan-out: from the plant's trip flag to the last running miner taking its sleep;
//! - 95 % shed: from the trip flag until the fleet's draw (by the emulated firmware's ramps) is
//!   5 % of what it was.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use hashsink_core::{Catalogue, FleetConfig};
use hashsink_emulator::{Emulator, Listen};

use crate::product::{
    KillOnDrop, mosquitto, mosquitto_installed, run_daemon, status, wait_port, wait_settled,
};

const FIRST_INDEX: u32 = 40_000;
const MQTT_PORT: u16 = 18931;
const MODBUS_PORT: u16 = 15031;
const STATUS: &str = "127.0.0.1:18932";

/// One source kind's results.
struct Row {
    kind: &'static str,
    latencies_ms: Vec<f64>,
    running_at_trip: usize,
    fan_out: Option<Duration>,
    shed_95: Option<Duration>,
}

/// The emulated S19 XP fleet on LuxOS on a runtime of its own, from address index
/// `first_index`.
pub(crate) fn start_fleet(miners: u32, first_index: u32) -> Result<Arc<Emulator>> {
    let listen = Listen {
        first_index,
        ..Listen::default()
    };
    crate::product::start_emulator(&format!("s19xp:{miners}:luxos"), listen)
}

/// The emulated S19 XP fleet's nameplate power (W) and its addresses as a TOML list's items.
pub(crate) fn fleet_of(emulator: &Emulator, miners: u32) -> Result<(f64, String)> {
    let nameplate =
        FleetConfig::build_from_shorthand(&format!("s19xp:{miners}:luxos"), &Catalogue::bundled())?
            .max_power()
            .w();
    let addresses: Vec<String> = emulator
        .addresses()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    Ok((nameplate, addresses.join(", ")))
}

/// How the plant sends its surplus and trip flag. A meter on MQTT publishes its value every
/// 100 ms (the repeater); a Modbus meter holds it in its registers.
enum Plant {
    Mqtt(rumqttc::AsyncClient, Arc<std::sync::Mutex<f64>>),
    Modbus(tokio_modbus::client::Context),
}

impl Plant {
    async fn surplus(&mut self, watts: f64) -> Result<()> {
        match self {
            Plant::Mqtt(c, value) => {
                *value.lock().unwrap_or_else(|p| p.into_inner()) = watts;
                c.publish(
                    "plant/surplus",
                    rumqttc::QoS::AtMostOnce,
                    false,
                    format!("{}", watts / 1000.0),
                )
                .await
                .map_err(|e| anyhow!("publish: {e}"))
            }
            Plant::Modbus(ctx) => {
                use tokio_modbus::client::Writer;
                let bits = ((watts / 1000.0) as f32).to_bits();
                ctx.write_multiple_registers(0, &[(bits >> 16) as u16, bits as u16])
                    .await?
                    .map_err(|e| anyhow!("modbus exception {e:?}"))
            }
        }
    }

    async fn trip(&mut self) -> Result<()> {
        match self {
            Plant::Mqtt(c, _) => c
                .publish("plant/trip", rumqttc::QoS::AtMostOnce, false, "1")
                .await
                .map_err(|e| anyhow!("publish: {e}")),
            Plant::Modbus(ctx) => {
                use tokio_modbus::client::Writer;
                ctx.write_single_register(20, 1)
                    .await?
                    .map_err(|e| anyhow!("modbus exception {e:?}"))
            }
        }
    }
}

/// Runs one source kind: a fresh daemon on the mining fleet, five falls, then the trip.
async fn one_kind(
    kind: &'static str,
    signal: &str,
    mut plant: Plant,
    emulator: &Emulator,
    miners: u32,
    dir: &std::path::Path,
) -> Result<Row> {
    // The daemon starts by putting every miner to sleep (a known state), then wakes them as the
    // surplus allows: give it the fleet's full power and some.
    let (nameplate, addresses) = fleet_of(emulator, miners)?;
    plant.surplus(nameplate * 1.05).await?;
    let site = format!(
        "[surplus]\nsource = \"signals\"\n\n[[signal]]\n{signal}max_mw = {}\nmax_age_s = 10\n\n[controller]\nfailsafe_load_w = 0\n\n[io]\ntelemetry_interval_s = 5\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [{}]\n",
        nameplate * 1.5 / 1e6,
        addresses
    );
    let tag: String = kind
        .split(' ')
        .next()
        .unwrap_or("source")
        .to_ascii_lowercase();
    let path = dir.join(format!("site-{tag}.toml"));
    std::fs::write(&path, site)?;
    let log = dir.join(format!("daemon-{tag}.log"));
    let daemon = run_daemon(&path, STATUS, &log, "info", &[])?;
    // Ready: every miner woken and mining, the signal trusted, then 3 s without a command.
    wait_settled(
        STATUS,
        emulator,
        miners,
        |s| s["signals"][0]["trusted"] == true,
        kind,
        Duration::from_secs(300),
    )
    .await?;
    let full = emulator.totals().power.w();
    let mut latencies_ms = Vec::new();
    for step in 1..=5 {
        emulator.mark_commands();
        let sent = Instant::now();
        plant.surplus(full * (1.0 - 0.1 * f64::from(step))).await?;
        let first = loop {
            if let Some(t) = emulator.first_command_since_mark() {
                break t;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{kind}: no command 10 s after the surplus fell to {:.0} W (daemon log: {}): {}",
                    full * (1.0 - 0.1 * f64::from(step)),
                    log.display(),
                    status(STATUS).await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies_ms.push(first.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        // Let the fleet settle before the next fall.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The trip: every running miner must be told to sleep.
    let before = emulator.totals();
    let awake = emulator.awake();
    let running_at_trip = awake.iter().filter(|&&a| a).count();
    let power_at_trip = before.power.w();
    let tripped = Instant::now();
    plant.trip().await?;
    let mut shed_95 = None;
    let mut fan_out = None;
    while tripped.elapsed() < Duration::from_secs(30) && (shed_95.is_none() || fan_out.is_none()) {
        if shed_95.is_none() && emulator.totals().power.w() <= 0.05 * power_at_trip {
            shed_95 = Some(tripped.elapsed());
        }
        if fan_out.is_none() {
            let mut last = None::<Instant>;
            let mut all = true;
            for (i, _) in awake.iter().enumerate().filter(|(_, a)| **a) {
                match emulator.sleep_received_at(i as u32) {
                    Some(t) if t >= tripped => last = Some(last.map_or(t, |l| l.max(t))),
                    _ => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                fan_out = last.map(|l| l.saturating_duration_since(tripped));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(daemon);
    Ok(Row {
        kind,
        latencies_ms,
        running_at_trip,
        fan_out,
        shed_95,
    })
}

pub async fn run(miners: u32) -> Result<String> {
    if miners == 0 {
        bail!("--miners must be at least 1");
    }
    let dir = std::env::temp_dir().join(format!("hashsink-bench-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let emulator = start_fleet(miners, FIRST_INDEX)?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    if mosquitto_installed() {
        let _broker = mosquitto(MQTT_PORT)?;
        let mut opts = rumqttc::MqttOptions::new("bench-plant", "127.0.0.1", MQTT_PORT);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
        let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let value = Arc::new(std::sync::Mutex::new(0.0));
        let repeater = {
            let (client, value) = (client.clone(), value.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let kw = *value.lock().unwrap_or_else(|p| p.into_inner()) / 1000.0;
                    let _ = client
                        .publish(
                            "plant/surplus",
                            rumqttc::QoS::AtMostOnce,
                            false,
                            kw.to_string(),
                        )
                        .await;
                }
            })
        };
        let signal = format!(
            "name = \"plant broker\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{MQTT_PORT}\"\ntopic = \"plant/surplus\"\nunit = \"kw\"\ntrip_topic = \"plant/trip\"\n"
        );
        rows.push(
            one_kind(
                "MQTT (mosquitto)",
                &signal,
                Plant::Mqtt(client, value),
                &emulator,
                miners,
                &dir,
            )
            .await?,
        );
        repeater.abort();
        pump.abort();
    } else {
        skipped.push("MQTT: mosquitto is not installed (apt-get install mosquitto)");
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/modbus_server.py");
    let have_pymodbus = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .status()
        .is_ok_and(|s| s.success());
    if have_pymodbus && script.exists() {
        let _server = KillOnDrop(
            Command::new("python3")
                .arg(&script)
                .args(["--port", &MODBUS_PORT.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_port(MODBUS_PORT, "pymodbus")?;
        let addr: SocketAddr = ([127, 0, 0, 1], MODBUS_PORT).into();
        let ctx = tokio_modbus::client::tcp::connect(addr).await?;
        let signal = format!(
            "name = \"export meter\"\nkind = \"modbus\"\naddress = \"127.0.0.1:{MODBUS_PORT}\"\npoll_ms = 10\ntimeout_ms = 500\nsurplus = {{ address = 0, type = \"f32\", unit = \"kw\" }}\ntrip = {{ address = 20 }}\n"
        );
        rows.push(
            one_kind(
                "Modbus TCP (pymodbus, 10 ms poll)",
                &signal,
                Plant::Modbus(ctx),
                &emulator,
                miners,
                &dir,
            )
            .await?,
        );
    } else {
        skipped.push("Modbus: pymodbus is not installed (pip install pymodbus==3.11.4), or tests/peers is not beside the binary's source");
    }
    std::fs::remove_dir_all(&dir).ok();
    let mut out = format!(
        "{miners} emulated S19 XP (LuxOS), daemon `hashsink run` in a child process\n\n| source | signal to first command, 5 falls (goal < 100 ms) | median | running at trip | trip to last sleep taken (goal < 1 s) | trip to 95 % shed (goal < 16 s) |\n|---|---:|---:|---:|---:|---:|\n"
    );
    let secs = |d: Option<Duration>| {
        d.map_or("not reached".to_string(), |d| {
            format!("{:.3} s", d.as_secs_f64())
        })
    };
    for r in rows {
        let mut l = r.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        out += &format!(
            "| {} | {} ms | {:.1} ms | {} | {} | {} |\n",
            r.kind,
            r.latencies_ms
                .iter()
                .map(|v| format!("{v:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            l[l.len() / 2],
            r.running_at_trip,
            secs(r.fan_out),
            secs(r.shed_95),
        );
    }
    for s in skipped {
        out += &format!("\nskipped: {s}\n");
    }
    Ok(out)
}
