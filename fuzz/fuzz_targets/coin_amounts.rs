//! Coin amounts as people type them (payouts and sales, from a CSV or the API): parsed exactly
//! or refused. A parsed BTC amount is within the 21 million and prints back to itself.
#![no_main]

use hashsink_ledger::coins::{parse_minor, parse_sat, payout_of, sale_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sat) = parse_sat(text) {
        assert!(
            (0..=21_000_000 * 100_000_000).contains(&sat),
            "{text:?} -> {sat}"
        );
        let printed = format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000);
        assert_eq!(parse_sat(&printed), Ok(sat), "{text:?}");
    }
    if let Ok(minor) = parse_minor(text) {
        assert!(minor >= 0, "{text:?} -> {minor}");
    }
    let mut fields = text.splitn(5, ',');
    let mut next = || fields.next().unwrap_or("");
    let (time, reference, btc, fiat, currency) = (next(), next(), next(), next(), next());
    let _ = payout_of(time, reference, btc, currency);
    let _ = sale_of(time, reference, btc, fiat, currency);
});
