//! The drivers against the emulator over real sockets: asic-rs identifies each dialect, every
//! driver reads and commands its miner, commands land on the twin's model (the settled power is
//! the spec's level power), and injected faults come back as the right errors without holding
//! up the other miners. Binds 127.1.24.x and 127.1.25.x on ports 4028 and 80 (root); the wildcard
//! fleet binds 0.0.0.0:14028 and 0.0.0.0:18180.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hashsink_clock::ScaledClock;
use hashsink_core::{Catalogue, FleetConfig, MinerId};
use hashsink_emulator::{Binding, Dialect, Emulator, Fault, Listen};
use hashsink_fleetio::discovery::{Family, identify};
use hashsink_fleetio::firmwares::{AntminerDriver, BraiinsDriver, CallSettings, LuxOsDriver};
use hashsink_fleetio::fleet::FleetIo;
use hashsink_fleetio::{Control, DriverError, MinerDriver, MinerState};
use hashsink_units::Timestamp;

/// `first`: the first address index, distinct per test (tests run in parallel).
async fn fleet_and_drivers(
    speed: f64,
    first: u32,
) -> (Emulator, Arc<hashsink_core::Fleet>, FleetIo) {
    let fleet = Arc::new(
        FleetConfig::build_from_shorthand(
            "s19xp:2:luxos,s21:2:braiins-os,s19jpro:2:stock-antminer",
            &Catalogue::bundled(),
        )
        .unwrap(),
    );
    let clock = ScaledClock::starting_at(Timestamp::from_secs(1_700_000_000), speed);
    let emulator = Emulator::start(
        fleet.clone(),
        clock,
        Listen {
            first_index: first,
            ..Listen::default()
        },
    )
    .await
    .expect("bind the emulated miners (needs root for port 80)");
    let addrs: Vec<IpAddr> = emulator.addresses().into_iter().map(Into::into).collect();
    let found = identify(&addrs, 16, Duration::from_secs(5)).await;
    let families: Vec<Family> = found
        .iter()
        .map(|f| f.as_ref().expect("identified").family())
        .collect();
    assert_eq!(
        families,
        [
            Family::LuxOs,
            Family::LuxOs,
            Family::BraiinsOs,
            Family::BraiinsOs,
            Family::StockAntminer,
            Family::StockAntminer
        ],
        "asic-rs identifies every dialect: {found:?}"
    );
    let http = reqwest::Client::new();
    let settings = CallSettings {
        timeout: Duration::from_millis(800),
        ..CallSettings::default()
    };
    let drivers: Vec<Arc<dyn MinerDriver>> = found
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.unwrap();
            let s = settings.clone();
            let spec = fleet.spec_of(MinerId(i as u32));
            match f.family() {
                Family::LuxOs => {
                    Arc::new(LuxOsDriver::new(f.ip, Some(f.miner), s)) as Arc<dyn MinerDriver>
                }
                Family::BraiinsOs => Arc::new(BraiinsDriver::new(f.ip, s, http.clone())),
                _ => Arc::new(AntminerDriver::new(
                    f.ip,
                    Some(f.miner),
                    s,
                    http.clone(),
                    spec,
                )),
            }
        })
        .collect();
    (
        emulator,
        fleet,
        FleetIo::new(drivers, 64, Duration::from_millis(800)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_reads_commands_and_settles_on_the_model() {
    // 600x: a stock Antminer's 180 s boot is 0.3 s.
    let (emulator, fleet, io) = fleet_and_drivers(600.0, 6000).await;
    let sweep = io.sweep().await;
    for (i, r) in sweep.results.iter().enumerate() {
        let t = r.as_ref().unwrap_or_else(|e| panic!("miner {i}: {e}"));
        assert_eq!(
            t.state,
            MinerState::Asleep,
            "miner {i} starts asleep: {t:?}"
        );
    }
    // Each miner to its lowest level, then wait out boot, setpoint delay and ramp.
    for i in 0..io.len() {
        let spec = fleet.spec_of(MinerId(i as u32));
        io.apply(
            i,
            Control::Run {
                level: 0,
                watts: spec.level_power(0),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("miner {i}: {e}"));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sweep = io.sweep().await;
    for (i, r) in sweep.results.iter().enumerate() {
        let spec = fleet.spec_of(MinerId(i as u32));
        let t = r.as_ref().unwrap();
        assert_eq!(
            t.state,
            MinerState::Mining,
            "miner {i} ({}) mines: {t:?}",
            io.driver(i).firmware()
        );
        let want = spec.level_power(0).w();
        assert!(
            (t.power.w() - want).abs() <= 1.0,
            "miner {i} ({}) settles at level 0 = {want} W: {t:?}",
            io.driver(i).firmware()
        );
        assert!(t.hashrate.ths() > 0.0);
    }
    // Up to the top level (LuxOS: the highest profile; Braiins: the highest target; stock: high),
    // as a level alone: they hash already.
    for i in 0..io.len() {
        let spec = fleet.spec_of(MinerId(i as u32));
        let top = spec.max_level();
        io.apply(
            i,
            Control::Level {
                level: top,
                watts: spec.level_power(top),
            },
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sweep = io.sweep().await;
    for (i, r) in sweep.results.iter().enumerate() {
        let spec = fleet.spec_of(MinerId(i as u32));
        let want = spec.max_power().w();
        let t = r.as_ref().unwrap();
        assert!(
            (t.power.w() - want).abs() <= 1.0,
            "miner {i} ({}) at its top level {want} W: {t:?}",
            io.driver(i).firmware()
        );
    }
    assert!((emulator.totals().power.w() - fleet.max_power().w()).abs() < 10.0);
    // Sleep everyone; commands to an already sleeping miner are fine too.
    let all: Vec<usize> = (0..io.len()).collect();
    for (i, r) in io.apply_all(&all, Control::Sleep).await {
        r.unwrap_or_else(|e| panic!("miner {i}: {e}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, r) in io.apply_all(&all, Control::Sleep).await {
        r.unwrap_or_else(|e| panic!("sleeping miner {i} told to sleep again: {e}"));
    }
    // A level alone is stored by a sleeping LuxOS or Braiins OS miner, which stays asleep.
    for i in 0..4 {
        let spec = fleet.spec_of(MinerId(i as u32));
        let level = Control::Level {
            level: 0,
            watts: spec.level_power(0),
        };
        io.apply(i, level)
            .await
            .unwrap_or_else(|e| panic!("sleeping miner {i} given a level: {e}"));
    }
    let sweep = io.sweep().await;
    for (i, r) in sweep.results.iter().enumerate() {
        let spec = fleet.spec_of(MinerId(i as u32));
        let t = r.as_ref().unwrap();
        assert_eq!(t.state, MinerState::Asleep, "miner {i}: {t:?}");
        assert!(
            (t.power.w() - spec.standby.w()).abs() <= 1.0,
            "miner {i} at standby: {t:?}"
        );
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_come_back_as_errors_and_never_hold_up_the_others() {
    let (emulator, _fleet, io) = fleet_and_drivers(60.0, 6250).await;
    emulator.set_fault(0, Fault::Hang);
    emulator.set_fault(2, Fault::Garbage);
    emulator.set_fault(4, Fault::Hang);
    emulator.set_fault(5, Fault::IgnoresCommands);
    let started = std::time::Instant::now();
    let sweep = io.sweep().await;
    // Bounded by one call timeout (0.8 s), not by the hung miners.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "sweep took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(sweep.results[0], Err(DriverError::Timeout(_))),
        "{:?}",
        sweep.results[0]
    );
    assert!(
        matches!(sweep.results[2], Err(DriverError::Malformed(_))),
        "{:?}",
        sweep.results[2]
    );
    assert!(
        matches!(sweep.results[4], Err(DriverError::Timeout(_))),
        "{:?}",
        sweep.results[4]
    );
    for i in [1, 3, 5] {
        assert!(
            sweep.results[i].is_ok(),
            "miner {i}: {:?}",
            sweep.results[i]
        );
    }
    // The ignoring miner acknowledges a wake and stays asleep: only a read-back shows it.
    io.apply(
        5,
        Control::Run {
            level: 1,
            watts: hashsink_units::Watts(3068.0),
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t = io.read(5).await.unwrap();
    assert_eq!(
        t.state,
        MinerState::Asleep,
        "an ignoring miner does not move: {t:?}"
    );
    // A reboot brings a miner back mining at its default, whatever it was told.
    emulator.set_fault(1, Fault::None);
    emulator.reboot(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = io.read(1).await.unwrap();
    assert_ne!(t.state, MinerState::Asleep, "a rebooted miner boots: {t:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_quirks_answer_as_real_firmware_does() {
    // 600x: a stock Antminer's 180 s boot is 0.3 s; a LuxOS session of 180 s the same.
    let (emulator, fleet, io) = fleet_and_drivers(600.0, 6500).await;
    emulator.set_fault(0, Fault::AtmOn);
    emulator.set_fault(1, Fault::SessionExpires);
    emulator.set_fault(2, Fault::TunerLocked);
    emulator.set_fault(3, Fault::BadReadings);
    emulator.set_fault(4, Fault::NoPowerField);
    emulator.set_fault(5, Fault::SlowWake);
    // A web reply of 8 MiB is malformed, not read to the end.
    emulator.set_fault(3, Fault::HugeReply);
    match io.read(3).await {
        Err(DriverError::Malformed(why)) => assert!(why.contains("longer than"), "{why}"),
        other => panic!("a huge reply: {other:?}"),
    }
    emulator.set_fault(3, Fault::BadReadings);
    let run = |i: usize| {
        let spec = fleet.spec_of(MinerId(i as u32));
        Control::Run {
            level: spec.preferred_level,
            watts: spec.level_power(spec.preferred_level),
        }
    };
    // LuxOS with ATM on says so, refuses a profile in its own words, and wakes without one.
    assert!(io.read(0).await.unwrap().level_owned);
    match io.apply(0, run(0)).await {
        Err(DriverError::LevelRefused(why)) => assert!(why.contains("ATM"), "{why}"),
        other => panic!("ATM on: {other:?}"),
    }
    io.apply(0, Control::Resume).await.unwrap();
    // Braiins OS with its tuner locked: the same, in its words.
    match io.apply(2, run(2)).await {
        Err(DriverError::LevelRefused(why)) => assert!(why.contains("locked"), "{why}"),
        other => panic!("tuner locked: {other:?}"),
    }
    io.apply(2, Control::Resume).await.unwrap();
    // A LuxOS session that expired is opened again by the driver: the command goes through.
    io.apply(1, Control::Sleep).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    io.apply(1, run(1)).await.unwrap();
    // Stock firmware without a power reading: its work mode's rated draw, marked estimated.
    let t = io.read(4).await.unwrap();
    assert!(t.power_estimated, "{t:?}");
    // A slow wake: booting at twice the table's delay, mining by four times.
    io.apply(5, run(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(io.read(5).await.unwrap().state, MinerState::Booting);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(io.read(5).await.unwrap().state, MinerState::Mining);
    // Bad readings: "nan", "inf", negative and tenfold in turn, over 50 s of its clock.
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(io.read(3).await.unwrap().power.w());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.iter().any(|w| w.is_nan()), "{seen:?}");
    assert!(seen.iter().any(|w| w.is_infinite()), "{seen:?}");
    assert!(seen.iter().any(|w| *w < 0.0), "{seen:?}");
    emulator.shutdown().await;
}

/// A fleet bound on the wildcard address (one listener per port, as for 100,000 miners) serves
/// each connection as the miner whose address it was made to, and nothing for an address outside
/// the fleet. Its own ports, so that the per-miner emulators of the other tests keep 4028 and 80.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_fleet_serves_each_connection_as_the_miner_it_was_made_to() {
    let fleet = Arc::new(
        FleetConfig::build_from_shorthand(
            "s19xp:2:luxos,s21:2:braiins-os,s19jpro:2:stock-antminer",
            &Catalogue::bundled(),
        )
        .unwrap(),
    );
    let first = 12_500;
    let listen = Listen {
        rpc_port: 14_028,
        web_port: 18_180,
        first_index: first,
        binding: Binding::Wildcard,
    };
    let clock = ScaledClock::starting_at(Timestamp::from_secs(1_700_000_000), 600.0);
    let emulator = Emulator::start(fleet.clone(), clock, listen)
        .await
        .expect("bind the wildcard listeners");
    let settings = CallSettings {
        timeout: Duration::from_millis(800),
        rpc_port: listen.rpc_port,
        web_port: listen.web_port,
        // As for a large fleet: every call closes its connection.
        keep_alive: false,
    };
    let http = reqwest::Client::new();
    let drivers: Vec<Arc<dyn MinerDriver>> = emulator
        .addresses()
        .into_iter()
        .enumerate()
        .map(|(i, ip)| {
            let (ip, s) = (IpAddr::from(ip), settings.clone());
            match emulator.dialect(i as u32) {
                Dialect::LuxOs => Arc::new(LuxOsDriver::new(ip, None, s)) as Arc<dyn MinerDriver>,
                Dialect::BraiinsOs => Arc::new(BraiinsDriver::new(ip, s, http.clone())),
                Dialect::StockAntminer => Arc::new(AntminerDriver::new(
                    ip,
                    None,
                    s,
                    http.clone(),
                    fleet.spec_of(MinerId(i as u32)),
                )),
            }
        })
        .collect();
    let io = FleetIo::new(drivers, 64, Duration::from_millis(800));
    // Wake miners 1, 3 and 5 (one of each dialect) to their lowest level; the others sleep on.
    for i in [1, 3, 5] {
        let spec = fleet.spec_of(MinerId(i as u32));
        let level = Control::Run {
            level: 0,
            watts: spec.level_power(0),
        };
        io.apply(i, level)
            .await
            .unwrap_or_else(|e| panic!("miner {i}: {e}"));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sweep = io.sweep().await;
    for (i, r) in sweep.results.iter().enumerate() {
        let t = r.as_ref().unwrap_or_else(|e| panic!("miner {i}: {e}"));
        let want = if i % 2 == 1 {
            MinerState::Mining
        } else {
            MinerState::Asleep
        };
        assert_eq!(
            t.state,
            want,
            "miner {i} ({:?}): {t:?}",
            emulator.dialect(i as u32)
        );
    }
    let awake = emulator.awake();
    assert_eq!(awake, [false, true, false, true, false, true]);

    // An address of no miner of this fleet: the RPC connection is closed unanswered, and the
    // web port says there is no miner there.
    let stranger = hashsink_emulator::miner_address(first + 100);
    let mut stream = tokio::net::TcpStream::connect((stranger, listen.rpc_port))
        .await
        .expect("the wildcard listener accepts");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(br#"{"command":"summary"}"#).await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    assert!(reply.is_empty(), "no miner answers: {reply:?}");
    let url = format!("http://{stranger}:{}/", listen.web_port);
    let response = http
        .get(url)
        .send()
        .await
        .expect("the web listener answers");
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    // A second wildcard fleet on the same ports is refused with the way out.
    let again = Emulator::start(
        fleet.clone(),
        ScaledClock::wall(),
        Listen {
            first_index: first + 50,
            ..listen
        },
    )
    .await;
    let err = again.err().expect("the ports are taken").to_string();
    assert!(err.contains("its own ports"), "{err}");
    emulator.shutdown().await;
}
