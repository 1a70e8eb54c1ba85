//! Coins as people write them: payouts and sales entered from a CSV file or through the API,
//! parsed exactly (satoshis and minor units, no floating point) and checked before they reach a
//! [`Store`](crate::Store).

use hashsink_units::parse_time;

use crate::{Payout, Sale};

/// A BTC amount as written ("0.00123456") in satoshis, exactly (no floating point).
pub fn parse_sat(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!("{t:?} is not an amount of BTC like 0.00123456"));
    }
    if frac.len() > 8 {
        return Err(format!(
            "{t:?} has more than 8 decimals (a satoshi is 0.00000001)"
        ));
    }
    let int: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| format!("{t:?} is too large"))?
    };
    let frac: i64 = format!("{frac:0<8}").parse().unwrap_or(0);
    int.checked_mul(100_000_000)
        .and_then(|v| v.checked_add(frac))
        .filter(|v| *v <= 21_000_000 * 100_000_000)
        .ok_or_else(|| format!("{t:?} is more bitcoin than there will ever be"))
}

/// Fiat as written ("1234.56") in minor units.
pub fn parse_minor(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(format!("{t:?} is not an amount like 1234.56"));
    }
    let int: i64 = int.parse().map_err(|_| format!("{t:?} is too large"))?;
    let frac: i64 = format!("{frac:0<2}").parse().unwrap_or(0);
    int.checked_mul(100)
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(|| format!("{t:?} is too large"))
}

/// A payout as entered (CSV row or API body): time, pool's reference, BTC as written, source.
pub fn payout_of(time: &str, reference: &str, btc: &str, source: &str) -> Result<Payout, String> {
    if reference.trim().is_empty() || reference.len() > 200 {
        return Err(
            "the reference must be the pool's payout or transaction id (1 to 200 characters)"
                .into(),
        );
    }
    if source.len() > 200 {
        return Err("the source is longer than 200 characters".into());
    }
    Ok(Payout {
        at: parse_time(time)?,
        reference: reference.trim().to_string(),
        sat: parse_sat(btc)?,
        source: source.trim().to_string(),
    })
}

/// A sale as entered: time, reference, BTC sold, fiat received ("1234.56") and its currency.
pub fn sale_of(
    time: &str,
    reference: &str,
    btc: &str,
    fiat: &str,
    currency: &str,
) -> Result<Sale, String> {
    let code = currency.trim().to_ascii_uppercase();
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(format!("currency {currency:?} is not a code like USD"));
    }
    if reference.trim().is_empty() || reference.len() > 200 {
        return Err("the reference must be the trade or invoice id (1 to 200 characters)".into());
    }
    Ok(Sale {
        at: parse_time(time)?,
        reference: reference.trim().to_string(),
        sat: parse_sat(btc)?,
        fiat_minor: parse_minor(fiat)?,
        currency: code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btc_amounts_are_exact_satoshis() {
        assert_eq!(parse_sat("0.00123456"), Ok(123_456));
        assert_eq!(parse_sat("1"), Ok(100_000_000));
        assert_eq!(parse_sat("1.5"), Ok(150_000_000));
        assert_eq!(parse_sat(".1"), Ok(10_000_000));
        assert!(parse_sat("0.000000001").unwrap_err().contains("8 decimals"));
        assert!(parse_sat("-1").is_err());
        assert!(parse_sat("1e3").is_err());
        assert!(parse_sat("30000000").unwrap_err().contains("ever be"));
        assert_eq!(parse_minor("1234.5"), Ok(123_450));
        assert!(parse_minor("12.345").is_err());
        // Near the top of i64: an error, not an overflow.
        assert!(
            parse_minor("9223372036854775807.01")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_minor("92233720368547758.07").is_ok());
    }
}
