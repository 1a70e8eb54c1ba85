//! A site file (`hashsink run --config`) and a region file (`hashsink coordinate --config`):
//! each validated whole or refused with where and why. Files they name are looked for under a
//! folder that does not exist.
#![no_main]

use hashsink_daemon::coordinator::CoordinatorSetup;
use hashsink_daemon::site::Site;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Site::parse(text, "fuzz.toml", "/nonexistent/hashsink-fuzz".into());
    let nowhere = std::path::Path::new("/nonexistent/hashsink-fuzz");
    let _ = CoordinatorSetup::parse(text, "fuzz.toml", nowhere);
});
