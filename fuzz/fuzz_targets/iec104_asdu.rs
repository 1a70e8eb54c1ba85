//! What the plant's IEC 104 station sends: an ASDU, read for the surplus point and the trip
//! point at a common address and IOA taken from the input.
//!
//! The `iec104` crate (0.6) itself panics on some ASDUs ("chunk size must be non-zero": a
//! sequence of objects with no payload, found here). We cannot fix it, so its parse runs with
//! the panic caught, and the daemon's side is handled where it bites: the crate's link task dies
//! silently, and our source's silence limit reconnects and marks the trip flag unknown
//! (`plantio::iec104`, tested there). Our own readers get every ASDU the crate does parse.
#![no_main]

use hashsink_plantio::iec104::{surplus_in, trip_in};
use iec104::asdu::Asdu;
use libfuzzer_sys::fuzz_target;

/// `Asdu::parse`, its known panic caught (libFuzzer's hook, which aborts, set aside meanwhile).
fn parse(body: &[u8]) -> Option<Asdu> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let parsed = std::panic::catch_unwind(|| Asdu::parse(body));
    std::panic::set_hook(hook);
    parsed.ok()?.ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let common_address = u16::from_le_bytes([data[0], data[1]]);
    let ioa = u32::from_le_bytes([data[2], data[3], data[4], 0]);
    if let Some(asdu) = parse(&data[5..]) {
        let _ = surplus_in(&asdu, common_address, ioa);
        let _ = trip_in(&asdu, common_address, ioa);
    }
});
