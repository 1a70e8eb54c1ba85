//! The plant's day-ahead schedule, a CSV the operator drops next to the site file: parsed into
//! (time, watts) steps or refused with the line that is wrong.
#![no_main]

use hashsink_signals::schedule::parse_schedule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(steps) = parse_schedule(text, "fuzz.csv") {
        assert!(steps.iter().all(|(_, w)| w.w().is_finite()), "{steps:?}");
    }
});
