//! A study file (`hashsink study`): validated whole or refused with where and why.
#![no_main]

use hashsink_study::config::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse(text, "fuzz.toml", None);
});
