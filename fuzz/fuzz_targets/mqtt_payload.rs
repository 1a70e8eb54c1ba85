//! A message on the plant's broker: a plain number, a JSON object with the value and its time,
//! or a trip flag; or a daemon's report on a region's broker. Each is a reading, a report or an
//! error, never a panic.
#![no_main]

use hashsink_plantio::PowerUnit;
use hashsink_plantio::mqtt::{Payload, trip_of};
use libfuzzer_sys::fuzz_target;

fn payload(field: Option<&str>, time_field: Option<&str>) -> Payload {
    Payload {
        field: field.map(str::to_string),
        time_field: time_field.map(str::to_string),
        unit: PowerUnit::Kw,
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = payload(None, None).decode(data);
    let _ = payload(Some("available_kw"), Some("time")).decode(data);
    let _ = trip_of(data);
    let _ = hashsink_plantio::region::parse_report(data);
});
