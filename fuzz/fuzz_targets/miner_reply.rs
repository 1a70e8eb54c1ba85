//! A miner's reply, as the drivers read it: cgminer-style JSON (LuxOS, stock Antminer, with the
//! trailing NUL and the firmwares' known JSON slips) and Braiins OS's REST JSON. Every reading
//! either fails with a `DriverError` or gives a telemetry; a profile list is never empty and is
//! sorted by power.
#![no_main]

use hashsink_fleetio::cgminer::parse_reply;
use hashsink_fleetio::firmwares::{
    antminer_telemetry, braiins_telemetry, luxos_profiles, luxos_telemetry,
};
use hashsink_units::Watts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reply) = parse_reply(text) {
        let _ = luxos_telemetry(&reply);
        let _ = antminer_telemetry(
            &reply,
            &reply,
            &[Watts(1_000.0), Watts(3_000.0)],
            1,
            Watts(15.0),
        );
        let _ = antminer_telemetry(&reply, &reply, &[], 7, Watts(15.0));
        if let Ok(profiles) = luxos_profiles(&reply) {
            assert!(!profiles.is_empty());
            assert!(
                profiles
                    .windows(2)
                    .all(|w| w[0].1.total_cmp(&w[1].1).is_le())
            );
        }
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = braiins_telemetry(&json, &json);
    }
});
