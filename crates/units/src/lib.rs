//! Quantities as types: power, energy, hashrate, hashes, efficiency, money and time.
//!
//! Every number that crosses a module boundary in hashsink carries its unit in its type, so that a
//! watt can never be added to a megawatt-hour or a timestamp passed where a duration was meant.
//! Config files carry the unit in the key instead (`ramp_w_per_s`, `max_age_ms`); the parsing
//! layer turns those into these types.
//!
//! Floating-point quantities are `f64` newtypes. They are deterministic on one platform, which is
//! what the twin's "same seed, same bytes" promise needs. Time is an integer count of milliseconds
//! since the Unix epoch (UTC): the pure crates never read a clock, they are handed a [`Timestamp`].

#![forbid(unsafe_code)]

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Defines an `f64` newtype with the arithmetic that makes sense for any additive quantity.
macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl $name {
            pub const ZERO: Self = Self(0.0);

            /// The larger of two quantities.
            #[inline]
            pub fn max(self, other: Self) -> Self {
                Self(self.0.max(other.0))
            }

            /// The smaller of two quantities.
            #[inline]
            pub fn min(self, other: Self) -> Self {
                Self(self.0.min(other.0))
            }

            /// `self` limited to `lo..=hi`.
            #[inline]
            pub fn clamp(self, lo: Self, hi: Self) -> Self {
                Self(self.0.clamp(lo.0, hi.0))
            }

            /// Zero for negative values.
            #[inline]
            pub fn positive_part(self) -> Self {
                Self(self.0.max(0.0))
            }

            #[inline]
            pub fn abs(self) -> Self {
                Self(self.0.abs())
            }

            #[inline]
            pub fn is_finite(self) -> bool {
                self.0.is_finite()
            }
        }

        impl Add for $name {
            type Output = Self;
            #[inline]
            fn add(self, rhs: Self) -> Self {
                Self(self.0 + rhs.0)
            }
        }
        impl AddAssign for $name {
            #[inline]
            fn add_assign(&mut self, rhs: Self) {
                self.0 += rhs.0;
            }
        }
        impl Sub for $name {
            type Output = Self;
            #[inline]
            fn sub(self, rhs: Self) -> Self {
                Self(self.0 - rhs.0)
            }
        }
        impl SubAssign for $name {
            #[inline]
            fn sub_assign(&mut self, rhs: Self) {
                self.0 -= rhs.0;
            }
        }
        impl Neg for $name {
            type Output = Self;
            #[inline]
            fn neg(self) -> Self {
                Self(-self.0)
            }
        }
        impl Mul<f64> for $name {
            type Output = Self;
            #[inline]
            fn mul(self, rhs: f64) -> Self {
                Self(self.0 * rhs)
            }
        }
        impl Div<f64> for $name {
            type Output = Self;
            #[inline]
            fn div(self, rhs: f64) -> Self {
                Self(self.0 / rhs)
            }
        }
        /// The ratio of two quantities of the same kind is a plain number.
        impl Div for $name {
            type Output = f64;
            #[inline]
            fn div(self, rhs: Self) -> f64 {
                self.0 / rhs.0
            }
        }
        impl Sum for $name {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                Self(iter.map(|q| q.0).sum())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match f.precision() {
                    Some(p) => write!(f, "{:.*} {}", p, self.0, $suffix),
                    None => write!(f, "{} {}", self.0, $suffix),
                }
            }
        }
    };
}

quantity!(
    /// Electrical power in watts.
    Watts,
    "W"
);
quantity!(
    /// Electrical energy in watt-hours.
    WattHours,
    "Wh"
);
quantity!(
    /// Hashrate in terahashes per second (TH/s), the unit miners and pools quote.
    HashRate,
    "TH/s"
);
quantity!(
    /// A count of hashes, in terahashes (1e12 hashes).
    Terahashes,
    "TH"
);
quantity!(
    /// Energy efficiency of a miner in joules per terahash (J/TH), lower is better.
    JoulesPerTerahash,
    "J/TH"
);
quantity!(
    /// An amount of US dollars.
    Usd,
    "USD"
);

impl Watts {
    #[inline]
    pub const fn new(watts: f64) -> Self {
        Self(watts)
    }
    #[inline]
    pub fn from_kw(kw: f64) -> Self {
        Self(kw * 1e3)
    }
    #[inline]
    pub fn from_mw(mw: f64) -> Self {
        Self(mw * 1e6)
    }
    #[inline]
    pub fn w(self) -> f64 {
        self.0
    }
    #[inline]
    pub fn kw(self) -> f64 {
        self.0 / 1e3
    }
    #[inline]
    pub fn mw(self) -> f64 {
        self.0 / 1e6
    }
    /// Energy of this power held for `d`.
    #[inline]
    pub fn over(self, d: Duration) -> WattHours {
        WattHours(self.0 * d.as_secs_f64() / 3600.0)
    }
}

impl Mul<Duration> for Watts {
    type Output = WattHours;
    #[inline]
    fn mul(self, d: Duration) -> WattHours {
        self.over(d)
    }
}

impl WattHours {
    #[inline]
    pub fn from_kwh(kwh: f64) -> Self {
        Self(kwh * 1e3)
    }
    #[inline]
    pub fn from_mwh(mwh: f64) -> Self {
        Self(mwh * 1e6)
    }
    /// The energy in joules (what Prometheus counts energy in).
    #[inline]
    pub fn joules(self) -> f64 {
        self.0 * 3600.0
    }
    #[inline]
    pub fn wh(self) -> f64 {
        self.0
    }
    #[inline]
    pub fn kwh(self) -> f64 {
        self.0 / 1e3
    }
    #[inline]
    pub fn mwh(self) -> f64 {
        self.0 / 1e6
    }
}

impl HashRate {
    #[inline]
    pub const fn from_ths(ths: f64) -> Self {
        Self(ths)
    }
    #[inline]
    pub fn ths(self) -> f64 {
        self.0
    }
    #[inline]
    pub fn phs(self) -> f64 {
        self.0 / 1e3
    }
    #[inline]
    pub fn ehs(self) -> f64 {
        self.0 / 1e6
    }
    /// Hashes done at this rate over `d`.
    #[inline]
    pub fn over(self, d: Duration) -> Terahashes {
        Terahashes(self.0 * d.as_secs_f64())
    }
}

impl Terahashes {
    #[inline]
    pub fn th(self) -> f64 {
        self.0
    }
    /// Terahashes per megawatt-hour of energy: the fleet's useful output per unit of surplus.
    pub fn per_mwh(self, energy: WattHours) -> f64 {
        if energy.0 > 0.0 {
            self.0 / energy.mwh()
        } else {
            0.0
        }
    }
}

impl JoulesPerTerahash {
    /// Efficiency of a machine drawing `power` while hashing at `rate`.
    pub fn of(power: Watts, rate: HashRate) -> Self {
        Self(power.0 / rate.0)
    }
    #[inline]
    pub fn j_per_th(self) -> f64 {
        self.0
    }
}

impl Usd {
    #[inline]
    pub fn usd(self) -> f64 {
        self.0
    }
}

/// A point in time: milliseconds since 1970-01-01T00:00:00Z.
///
/// The pure crates are handed timestamps; only the binary reads the system clock. Arithmetic
/// saturates rather than wrapping, so a clock that steps backwards yields a zero duration.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const EPOCH: Self = Self(0);
    pub const MAX: Self = Self(i64::MAX);

    #[inline]
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    #[inline]
    pub const fn from_secs(s: i64) -> Self {
        Self(s * 1000)
    }
    #[inline]
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    #[inline]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    #[inline]
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
    /// Signed seconds from `earlier` to `self`.
    #[inline]
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }
}

/// For the test suites: a test that returns early because a peer it needs is missing (a broker,
/// a Python package, a browser, a database) says so here, with how to install it. The note goes
/// to stderr and, under `cargo xtask test` (which sets `HASHSINK_SKIPPED_DIR`), into a file that
/// the task lists at the end, so that a skip is never silent.
pub fn note_skipped_peer(peer: &str, install: &str) {
    eprintln!("skipping: {peer} is missing ({install})");
    let Some(dir) = std::env::var_os("HASHSINK_SKIPPED_DIR") else {
        return;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("test")
        .replace(['/', ':'], "_");
    let file = format!("{}--{test}--{}", peer.replace('/', "_"), std::process::id());
    let _ = std::fs::write(std::path::Path::new(&dir).join(file), install);
}

/// The largest input file hashsink reads whole (a site or study file, a surplus profile, a
/// schedule, a certificate): a year of one-minute readings is about 25 MiB.
pub const MAX_INPUT_FILE: u64 = 256 << 20;

/// Reads a text file the user named, refusing one larger than [`MAX_INPUT_FILE`] (a typo that
/// names a disk image or `/dev/zero` gets an error, not an exhausted memory).
pub fn read_input_file(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    String::from_utf8(read_input_bytes(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// [`read_input_file`] for bytes (a PKCS#12 identity).
pub fn read_input_bytes(path: impl AsRef<std::path::Path>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path.as_ref())?
        .take(MAX_INPUT_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "it is larger than {} MiB, too large for an input file (is the path right?)",
                MAX_INPUT_FILE >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// Parses an RFC 3339 timestamp, or a naive ISO 8601 date-time read as UTC.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(Timestamp::from_millis(ts.as_millisecond()));
    }
    match text.parse::<jiff::civil::DateTime>() {
        Ok(dt) => jiff::tz::TimeZone::UTC
            .to_timestamp(dt)
            .map(|ts| Timestamp::from_millis(ts.as_millisecond()))
            .map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "'{text}' is not a timestamp like 2026-01-31T13:45:00Z"
        )),
    }
}

/// Formats a timestamp as RFC 3339 UTC, for reports and logs.
pub fn format_time(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.as_millis())
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("{} ms", t.as_millis()))
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    #[inline]
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl AddAssign<Duration> for Timestamp {
    #[inline]
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    #[inline]
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_input_file_is_refused_after_the_cap() {
        let err = read_input_file(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(
            err.to_string().contains("too large for an input file"),
            "{err}"
        );
    }

    #[test]
    fn power_over_time_is_energy() {
        let e = Watts::from_mw(2.0) * Duration::from_secs(1800);
        assert!((e.mwh() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn hashrate_over_time_and_per_mwh() {
        let th = HashRate::from_ths(200.0).over(Duration::from_secs(3600));
        assert_eq!(th.th(), 720_000.0);
        assert_eq!(th.per_mwh(WattHours::from_mwh(0.0035)), 720_000.0 / 0.0035);
        assert_eq!(th.per_mwh(WattHours::ZERO), 0.0);
    }

    #[test]
    fn efficiency_of_nameplate() {
        let e = JoulesPerTerahash::of(Watts(3500.0), HashRate(200.0));
        assert_eq!(e.j_per_th(), 17.5);
    }

    #[test]
    fn timestamps_saturate_instead_of_wrapping() {
        let t = Timestamp::from_secs(10);
        assert_eq!(
            t.saturating_since(Timestamp::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(Timestamp::from_secs(4).saturating_since(t), Duration::ZERO);
        assert_eq!(t + Duration::from_millis(1500), Timestamp(11_500));
        assert_eq!(Timestamp::MAX + Duration::from_secs(1), Timestamp::MAX);
    }

    #[test]
    fn display_honours_precision() {
        assert_eq!(format!("{:.1}", Watts(1234.56)), "1234.6 W");
        assert_eq!(format!("{}", HashRate(5.0)), "5 TH/s");
    }
}
