//! The Bitcoin market as the study and `hashsink market` see it, from bundled daily history
//! (Coin Metrics community data, 2015-01-01 .. 2026-03-22, `data/btc_daily.csv`).
//!
//! Hashprice is what one PH/s earns in a day: the share of the day's blocks that a PH/s finds at
//! the day's difficulty, times what a block paid (subsidy plus fees, per block that day):
//! `1e15 * 86400 / (D * 2^32) * (subsidy + fees) / blocks` BTC, times the price for USD. Pure: no
//! I/O beyond the embedded file, no clock.

#![forbid(unsafe_code)]

pub mod forward;

use std::collections::BTreeMap;

use jiff::civil::Date;

const BTC_DAILY: &str = include_str!("../../../data/btc_daily.csv");

/// Hashes per unit of difficulty.
pub(crate) const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;
/// Blocks between halvings.
pub const HALVING_INTERVAL: u64 = 210_000;
/// Block 840,000 (the fourth halving) was mined on 2024-04-20 at 00:09 UTC: heights are counted
/// from the start of that day with the data's daily block counts.
const HEIGHT_ANCHOR: (i16, i8, i8, f64) = (2024, 4, 20, 840_000.0);

/// One day of the Bitcoin network.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Day {
    #[serde(serialize_with = "date_string")]
    pub date: Date,
    pub price_usd: f64,
    pub difficulty: f64,
    /// Network hashrate, TH/s.
    pub hashrate_ths: f64,
    /// Fees paid to miners that day, BTC.
    pub fees_btc: f64,
    pub blocks: f64,
    /// New coins issued that day, BTC.
    pub subsidy_btc: f64,
}

fn date_string<S: serde::Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

impl Day {
    /// Network hashrate in EH/s.
    pub fn hashrate_ehs(&self) -> f64 {
        self.hashrate_ths / 1e6
    }

    /// What a block paid that day, on average: subsidy plus fees, BTC.
    pub fn reward_per_block_btc(&self) -> f64 {
        (self.subsidy_btc + self.fees_btc) / self.blocks
    }

    /// The subsidy per block that day (an average across a halving day).
    pub fn subsidy_per_block_btc(&self) -> f64 {
        self.subsidy_btc / self.blocks
    }

    /// BTC earned by 1 PH/s in a day at this day's difficulty and block reward.
    pub fn hashprice_btc_per_ph_day(&self) -> f64 {
        1e15 * 86_400.0 / (self.difficulty * HASHES_PER_DIFFICULTY) * self.reward_per_block_btc()
    }

    pub fn hashprice_usd_per_ph_day(&self) -> f64 {
        self.hashprice_btc_per_ph_day() * self.price_usd
    }

    /// Fees as a share of what miners earned that day.
    pub fn fee_share(&self) -> f64 {
        self.fees_btc / (self.fees_btc + self.subsidy_btc)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("{origin}:{line}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("no market data for {date}: the bundled history covers {first} .. {last}")]
    OutOfRange { date: Date, first: Date, last: Date },
    #[error(
        "the horizon {start} .. {end} runs past the bundled data's last day {last}: a backtest replays history only; use the Monte Carlo forward model (mode = \"monte-carlo\") or a shorter horizon or earlier start"
    )]
    PastTheData { start: Date, end: Date, last: Date },
    #[error("{0:?} is not a date like 2025-11-15")]
    BadDate(String),
}

/// Daily history, by date.
#[derive(Clone, Debug)]
pub struct MarketHistory {
    days: BTreeMap<Date, Day>,
}

impl MarketHistory {
    /// The bundled history.
    pub fn bundled() -> Self {
        Self::from_csv(BTC_DAILY, "data/btc_daily.csv")
            .expect("the bundled btc_daily.csv is valid (tested)")
    }

    /// Parses `date,price_usd,difficulty,hashrate_ths,fees_btc,blocks,subsidy_btc`.
    pub fn from_csv(text: &str, origin: &str) -> Result<Self, MarketError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let invalid = |line: usize, message: String| MarketError::Invalid {
            origin: origin.to_string(),
            line,
            message,
        };
        let headers = reader
            .headers()
            .map_err(|e| invalid(1, e.to_string()))?
            .clone();
        let want = [
            "date",
            "price_usd",
            "difficulty",
            "hashrate_ths",
            "fees_btc",
            "blocks",
            "subsidy_btc",
        ];
        if headers.iter().collect::<Vec<_>>() != want {
            return Err(invalid(1, format!("the header must be {}", want.join(","))));
        }
        let mut days = BTreeMap::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let r = record.map_err(|e| invalid(line, e.to_string()))?;
            let date: Date = r[0]
                .parse()
                .map_err(|_| invalid(line, format!("date: {:?} is not YYYY-MM-DD", &r[0])))?;
            let num = |k: usize| -> Result<f64, MarketError> {
                let v: f64 = r[k].trim().parse().map_err(|_| {
                    invalid(line, format!("{}: {:?} is not a number", want[k], &r[k]))
                })?;
                if !v.is_finite() || v < 0.0 {
                    return Err(invalid(
                        line,
                        format!("{}: {v} must be a finite number, 0 or more", want[k]),
                    ));
                }
                Ok(v)
            };
            let day = Day {
                date,
                price_usd: num(1)?,
                difficulty: num(2)?,
                hashrate_ths: num(3)?,
                fees_btc: num(4)?,
                blocks: num(5)?,
                subsidy_btc: num(6)?,
            };
            if day.difficulty <= 0.0 || day.blocks <= 0.0 {
                return Err(invalid(
                    line,
                    "difficulty and blocks must be above 0".into(),
                ));
            }
            if days.insert(date, day).is_some() {
                return Err(invalid(line, format!("date {date} appears twice")));
            }
        }
        if days.is_empty() {
            return Err(invalid(1, "no days".into()));
        }
        Ok(Self { days })
    }

    pub fn first(&self) -> Date {
        *self.days.keys().next().expect("not empty")
    }

    pub fn last(&self) -> Date {
        *self.days.keys().next_back().expect("not empty")
    }

    pub fn day(&self, date: Date) -> Result<&Day, MarketError> {
        self.days.get(&date).ok_or(MarketError::OutOfRange {
            date,
            first: self.first(),
            last: self.last(),
        })
    }

    /// Parses "YYYY-MM-DD" and looks the day up.
    pub fn day_str(&self, date: &str) -> Result<&Day, MarketError> {
        let d: Date = date
            .trim()
            .parse()
            .map_err(|_| MarketError::BadDate(date.to_string()))?;
        self.day(d)
    }

    /// The block height at the start of `date` (UTC), counted from the fourth halving with the
    /// daily block counts (exact to a few blocks: the anchor block came 9 minutes into its day).
    pub fn height_at_start(&self, date: Date) -> Result<f64, MarketError> {
        self.day(date)?;
        let anchor = jiff::civil::date(HEIGHT_ANCHOR.0, HEIGHT_ANCHOR.1, HEIGHT_ANCHOR.2);
        Ok(if date >= anchor {
            HEIGHT_ANCHOR.3
                + self
                    .days
                    .range(anchor..date)
                    .map(|(_, d)| d.blocks)
                    .sum::<f64>()
        } else {
            HEIGHT_ANCHOR.3
                - self
                    .days
                    .range(date..anchor)
                    .map(|(_, d)| d.blocks)
                    .sum::<f64>()
        })
    }

    /// The next halving after `date`: its height and the date it comes at the pace of the 30
    /// days up to `date` (blocks per day).
    pub fn next_halving_after(&self, date: Date) -> Result<(u64, Date), MarketError> {
        let height = self.height_at_start(date)?;
        let next = ((height as u64) / HALVING_INTERVAL + 1) * HALVING_INTERVAL;
        let from = date
            .checked_sub(jiff::Span::new().days(29))
            .unwrap_or(date)
            .max(self.first());
        let recent: Vec<f64> = self.range(from, date).map(|d| d.blocks).collect();
        let per_day = recent.iter().sum::<f64>() / recent.len() as f64;
        let days = ((next as f64 - height) / per_day).ceil() as i64;
        let when = date
            .checked_add(jiff::Span::new().days(days))
            .unwrap_or(date);
        Ok((next, when))
    }

    /// Days from `from` to `to`, both included.
    pub fn range(&self, from: Date, to: Date) -> impl Iterator<Item = &Day> {
        self.days.range(from..=to).map(|(_, d)| d)
    }
}

/// The block subsidy at `height`, BTC (50 halved every 210,000 blocks).
pub fn subsidy_at_height(height: u64) -> f64 {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        0.0
    } else {
        50.0 / (1u64 << halvings) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_usd(h: &MarketHistory, from: &str, to: &str) -> f64 {
        let days: Vec<f64> = h
            .range(from.parse().unwrap(), to.parse().unwrap())
            .map(Day::hashprice_usd_per_ph_day)
            .collect();
        days.iter().sum::<f64>() / days.len() as f64
    }

    /// Luxor's hashprice index was about $38.2/PH/day in November 2025 and its 30-day mean about
    /// $30.4 in March 2026 (GUIDE.md, economics). The model from the bundled data must land near.
    #[test]
    fn hashprice_reproduces_published_values() {
        let h = MarketHistory::bundled();
        let nov = mean_usd(&h, "2025-11-01", "2025-11-30");
        assert!(
            (nov - 38.2).abs() / 38.2 < 0.06,
            "November 2025: {nov:.2} $/PH/day"
        );
        let march = mean_usd(&h, "2026-02-21", "2026-03-22");
        assert!(
            (march - 30.4).abs() / 30.4 < 0.05,
            "30 days to 2026-03-22: {march:.2} $/PH/day"
        );
    }

    #[test]
    fn the_subsidy_steps_on_the_halving_days() {
        let h = MarketHistory::bundled();
        for (before, after, from, to) in [
            ("2016-07-07", "2016-07-11", 25.0, 12.5),
            ("2020-05-09", "2020-05-13", 12.5, 6.25),
            ("2024-04-18", "2024-04-22", 6.25, 3.125),
        ] {
            let b = h.day_str(before).unwrap().subsidy_per_block_btc();
            let a = h.day_str(after).unwrap().subsidy_per_block_btc();
            assert!(
                (b - from).abs() < 0.01 && (a - to).abs() < 0.01,
                "{before}: {b}, {after}: {a}"
            );
        }
        assert_eq!(subsidy_at_height(839_999), 6.25);
        assert_eq!(subsidy_at_height(840_000), 3.125);
        assert_eq!(subsidy_at_height(1_050_000), 1.5625);
    }

    /// Counting blocks from the fourth halving puts the second and third halving blocks
    /// (420,000 on 2016-07-09, 630,000 on 2020-05-11) inside their days.
    #[test]
    fn heights_put_the_earlier_halvings_on_their_days() {
        let h = MarketHistory::bundled();
        for (day, block) in [("2016-07-09", 420_000.0), ("2020-05-11", 630_000.0)] {
            let d: Date = day.parse().unwrap();
            let start = h.height_at_start(d).unwrap();
            let end = h.height_at_start(d.tomorrow().unwrap()).unwrap();
            assert!(start <= block && block < end, "{day}: {start} .. {end}");
        }
        // The next one, block 1,050,000, comes about April 2028 (GUIDE.md).
        let (height, when) = h.next_halving_after(h.last()).unwrap();
        assert_eq!(height, 1_050_000);
        assert!(
            when >= "2028-02-01".parse().unwrap() && when <= "2028-06-30".parse().unwrap(),
            "{when}"
        );
    }

    #[test]
    fn bad_data_and_dates_say_what_is_wrong() {
        let e = MarketHistory::from_csv("date,price_usd,difficulty,hashrate_ths,fees_btc,blocks,subsidy_btc\n2020-01-01,1,2,3,4,x,6\n", "m.csv").unwrap_err();
        assert_eq!(e.to_string(), "m.csv:2: blocks: \"x\" is not a number");
        let e = MarketHistory::from_csv("date,price_usd,difficulty,hashrate_ths,fees_btc,blocks,subsidy_btc\n2020-01-01,-1,2,3,4,5,6\n", "m.csv").unwrap_err();
        assert!(e.to_string().contains("price_usd: -1"), "{e}");
        let h = MarketHistory::bundled();
        assert!(
            h.day_str("2030-01-01")
                .unwrap_err()
                .to_string()
                .contains("2015-01-01 .. 2026-03-22")
        );
        assert!(
            h.day_str("yesterday")
                .unwrap_err()
                .to_string()
                .contains("not a date")
        );
    }
}
