//! What a VTN sends the VEN: any body is parsed into a message or refused with an `XmlError`;
//! so is any ISO 8601 duration in it.
#![no_main]

use hashsink_plantio::openadr::xml::{parse, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse(text);
    let _ = parse_duration(text);
});
