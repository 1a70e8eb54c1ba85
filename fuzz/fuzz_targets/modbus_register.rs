//! A plant meter's registers, decoded as each configured type and word order. The integer types
//! are exact: encoding a decoded value gives the same words back; a float's bits survive too
//! (NaN aside, which the judge rejects).
#![no_main]

use hashsink_plantio::PowerUnit;
use hashsink_plantio::modbus::{Register, RegisterType, Table, WordOrder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let kind = [
        RegisterType::U16,
        RegisterType::I16,
        RegisterType::U32,
        RegisterType::I32,
        RegisterType::F32,
    ][usize::from(pick % 5)];
    let word_order = if pick & 0x80 == 0 {
        WordOrder::Big
    } else {
        WordOrder::Little
    };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    let register = Register {
        table: Table::Holding,
        address: 0,
        kind,
        word_order,
        scale: 1.0,
        unit: PowerUnit::W,
    };
    let Ok(watts) = register.decode(&words) else {
        assert_ne!(words.len(), usize::from(register.words()));
        return;
    };
    if watts.is_nan() {
        return;
    }
    let again = register.encode(watts);
    assert_eq!(register.decode(&again), Ok(watts), "{kind:?} {words:?}");
    // Scaled and in kW or MW: still no panic, whatever the value.
    let scaled = Register {
        scale: 0.1,
        unit: PowerUnit::Mw,
        ..register
    };
    let _ = scaled.encode(scaled.decode(&words).unwrap_or(0.0));
});
