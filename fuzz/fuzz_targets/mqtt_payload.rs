//! A message on the plant's broker: a plain number, a JSON object with the value and its time,
//! or a trip flag. Each is a reading or a `PayloadError`, never a panic.
#![no_main]

use std::time::Duration;

use hashsink_plantio::PowerUnit;
use hashsink_plantio::mqtt::{MqttSource, trip_of};
use libfuzzer_sys::fuzz_target;

fn source(field: Option<&str>, time_field: Option<&str>) -> MqttSource {
    MqttSource {
        name: "fuzz".into(),
        host: "127.0.0.1".into(),
        port: 1883,
        client_id: "fuzz".into(),
        credentials: None,
        topic: "plant/surplus".into(),
        field: field.map(str::to_string),
        time_field: time_field.map(str::to_string),
        unit: PowerUnit::Kw,
        publish_topic: None,
        publish_every: Duration::from_secs(1),
        keep_alive: Duration::from_secs(5),
        trip_topic: None,
        tls: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = source(None, None).decode(data);
    let _ = source(Some("available_kw"), Some("time")).decode(data);
    let _ = trip_of(data);
});
