//! Surplus profiles: the power a site has to spare, over time.
//!
//! A profile is a list of `(time, MW)` points followed by linear interpolation (negative values
//! read as zero), so hourly or 5-minute data becomes a signal at any resolution. Bundled:
//!
//! * `nuclear`: one nuclear unit's share of what Ontario's 2016 grid could not absorb
//!   (`data/ontario_2016_hourly.csv`, IESO). Two definitions:
//!   - `excess` (default): `unit_mw * max(0, generation - demand - export_limit) / nuclear_output`,
//!     capped at `unit_mw`: the unit's pro-rata share of the generation above demand plus what the
//!     interties can take (`export_limit_mw`, default 1,000 MW). This gives a night valley on most
//!     days (5,855 hours with surplus, about one drop to zero a day).
//!   - `price`: the unit's whole output in hours when the market price (HOEP) is at or below zero.
//!
//!   Each hourly value is placed at the middle of its hour.
//! * `wind`: a 799 MW wind plant's output above an export cap (default 500 MW), every 5 minutes
//!   of 2020 (`data/rts_gmlc_wind317_5min_2020.csv`, RTS-GMLC, NREL/GridMod).
//! * a user CSV with the header `timestamp,surplus_mw`: RFC 3339 timestamps (or naive ISO 8601
//!   date-times, read as UTC), strictly increasing, surplus a finite number of MW, zero or more.

use std::time::Duration;

use hashsink_units::{Timestamp, Watts, format_time, parse_time};

const ONTARIO_CSV: &str = include_str!("../../../data/ontario_2016_hourly.csv");
const WIND_CSV: &str = include_str!("../../../data/rts_gmlc_wind317_5min_2020.csv");

/// A surplus signal over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub name: String,
    /// How the surplus was derived, for reports.
    pub definition: String,
    /// `(time, watts)`, strictly increasing in time. Values may be negative (a deficit); the
    /// surplus is their positive part after interpolation.
    points: Vec<(Timestamp, f64)>,
}

/// What is wrong with a profile file; the message names the file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{origin}:{line}: {field}: {message}")]
pub struct ProfileError {
    pub origin: String,
    pub line: u64,
    pub field: &'static str,
    pub message: String,
}

/// How the `nuclear` profile defines the unit's surplus.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NuclearMethod {
    /// Pro-rata share of generation above demand plus an export limit.
    Excess { export_limit_mw: f64 },
    /// The whole unit in hours priced at or below zero.
    Price,
}

impl Default for NuclearMethod {
    fn default() -> Self {
        NuclearMethod::Excess {
            export_limit_mw: 1000.0,
        }
    }
}

/// A reader over the bundled Ontario data, and the index of a column by name.
fn ontario() -> (csv::Reader<&'static [u8]>, impl Fn(&str) -> usize) {
    let mut reader = csv::Reader::from_reader(ONTARIO_CSV.as_bytes());
    let headers = reader.headers().expect("bundled csv has headers").clone();
    let col = move |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .expect("bundled csv column")
    };
    (reader, col)
}

fn file_stem(origin: &str) -> String {
    std::path::Path::new(origin)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("file")
        .to_string()
}

/// Reads a CSV with exactly the header `columns` (a timestamp, then numbers): rows as (line,
/// time, values), times strictly increasing, numbers finite. Profiles and price series share it.
pub fn read_rows(
    text: &str,
    origin: &str,
    columns: &[&'static str],
) -> Result<Vec<(u64, Timestamp, Vec<f64>)>, ProfileError> {
    let err = |line: u64, field: &'static str, message: String| ProfileError {
        origin: origin.into(),
        line,
        field,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| err(1, "header", e.to_string()))?
        .clone();
    if headers.iter().collect::<Vec<_>>() != columns {
        return Err(err(
            1,
            "header",
            format!(
                "expected '{}', found '{}'",
                columns.join(","),
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    let mut rows: Vec<(u64, Timestamp, Vec<f64>)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            err(line, "row", e.to_string())
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() != columns.len() {
            return Err(err(
                line,
                "row",
                format!(
                    "expected {} fields ({}), found {}",
                    columns.len(),
                    columns.join(","),
                    record.len()
                ),
            ));
        }
        let t = parse_time(&record[0]).map_err(|m| err(line, "timestamp", m))?;
        let mut values = Vec::with_capacity(columns.len() - 1);
        for (k, field) in columns.iter().enumerate().skip(1) {
            let v: f64 = record[k]
                .parse()
                .map_err(|_| err(line, field, format!("'{}' is not a number", &record[k])))?;
            if !v.is_finite() {
                return Err(err(
                    line,
                    field,
                    format!("'{}' is not a finite number", &record[k]),
                ));
            }
            values.push(v);
        }
        if let Some((_, prev, _)) = rows.last() {
            if t <= *prev {
                return Err(err(
                    line,
                    "timestamp",
                    format!(
                        "{} is not after the previous row's {}",
                        format_time(t),
                        format_time(*prev)
                    ),
                ));
            }
        }
        rows.push((line, t, values));
    }
    Ok(rows)
}

/// A profile needs two points to span any time.
fn at_least_two(rows: &[(u64, Timestamp, Vec<f64>)], origin: &str) -> Result<(), ProfileError> {
    if rows.len() < 2 {
        return Err(ProfileError {
            origin: origin.into(),
            line: 1,
            field: "row",
            message: "a profile needs at least two rows".into(),
        });
    }
    Ok(())
}

impl Profile {
    /// A profile from points; they must be strictly increasing in time.
    pub fn from_points(name: &str, definition: &str, points: Vec<(Timestamp, Watts)>) -> Self {
        assert!(
            points.windows(2).all(|w| w[0].0 < w[1].0),
            "profile points must be increasing"
        );
        assert!(!points.is_empty(), "a profile needs a point");
        Self {
            name: name.into(),
            definition: definition.into(),
            points: points.into_iter().map(|(t, w)| (t, w.w())).collect(),
        }
    }

    /// A constant surplus from `start` for `duration`.
    pub fn constant(power: Watts, start: Timestamp, duration: Duration) -> Self {
        Self::from_points(
            "constant",
            &format!("a constant {power:.0}"),
            vec![(start, power), (start + duration, power)],
        )
    }

    /// The bundled nuclear profile for a unit of `unit_mw`.
    pub fn nuclear(unit_mw: f64, method: NuclearMethod) -> Self {
        let (mut reader, col) = ontario();
        let (t_col, demand, nuclear, price) = (
            col("timestamp_utc_start"),
            col("demand_mw"),
            col("nuclear_mw"),
            col("hoep_cad_per_kwh"),
        );
        let fuels: Vec<usize> = [
            "nuclear_mw",
            "gas_mw",
            "hydro_mw",
            "wind_mw",
            "solar_mw",
            "biofuel_mw",
        ]
        .iter()
        .map(|c| col(c))
        .collect();
        let mut points = Vec::new();
        for record in reader.records() {
            let r = record.expect("bundled csv is valid");
            let num = |i: usize| r[i].parse::<f64>().expect("bundled csv numbers");
            let t =
                parse_time(&r[t_col]).expect("bundled csv timestamps") + Duration::from_secs(1800);
            let mw = match method {
                NuclearMethod::Excess { export_limit_mw } => {
                    let generation: f64 = fuels.iter().map(|&i| num(i)).sum();
                    let excess = (generation - num(demand) - export_limit_mw).max(0.0);
                    (unit_mw * excess / num(nuclear).max(1.0)).min(unit_mw)
                }
                NuclearMethod::Price => {
                    if num(price) <= 0.0 {
                        unit_mw
                    } else {
                        0.0
                    }
                }
            };
            points.push((t, mw * 1e6));
        }
        let definition = match method {
            NuclearMethod::Excess { export_limit_mw } => format!(
                "a {unit_mw:.0} MW nuclear unit's pro-rata share of Ontario 2016 generation above demand + {export_limit_mw:.0} MW exports (IESO, hourly)"
            ),
            NuclearMethod::Price => format!(
                "a {unit_mw:.0} MW nuclear unit's output in hours with HOEP <= 0 (Ontario 2016, IESO, hourly)"
            ),
        };
        Self {
            name: "nuclear".into(),
            definition,
            points,
        }
    }

    /// The bundled Ontario market price (HOEP) by hour, CAD per MWh, each hour from its start.
    pub fn ontario_prices_cad_per_mwh() -> Vec<(Timestamp, f64)> {
        let (mut reader, col) = ontario();
        let (t_col, price) = (col("timestamp_utc_start"), col("hoep_cad_per_kwh"));
        reader
            .records()
            .map(|r| {
                let r = r.expect("bundled csv is valid");
                let t = parse_time(&r[t_col]).expect("bundled csv timestamps");
                let kwh: f64 = r[price].parse().expect("bundled csv numbers");
                (t, kwh * 1000.0)
            })
            .collect()
    }

    /// The profile's points: times and surplus in watts (negative values read as zero).
    pub fn points(&self) -> &[(Timestamp, f64)] {
        &self.points
    }

    /// The bundled wind profile: output above `export_cap_mw`.
    pub fn wind(export_cap_mw: f64) -> Self {
        let mut reader = csv::Reader::from_reader(WIND_CSV.as_bytes());
        let points = reader
            .records()
            .map(|r| {
                let r = r.expect("bundled csv is valid");
                let t = parse_time(&r[0]).expect("bundled csv timestamps");
                (
                    t,
                    (r[1].parse::<f64>().expect("bundled csv numbers") - export_cap_mw) * 1e6,
                )
            })
            .collect();
        Self {
            name: "wind".into(),
            definition: format!(
                "a 799 MW wind plant's output above a {export_cap_mw:.0} MW export cap (RTS-GMLC 2020, 5-minute)"
            ),
            points,
        }
    }

    /// A user profile from CSV text with the header `timestamp,surplus_mw`.
    pub fn from_csv(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let rows = read_rows(text, origin, &["timestamp", "surplus_mw"])?;
        at_least_two(&rows, origin)?;
        let mut points = Vec::with_capacity(rows.len());
        for (line, t, values) in rows {
            let mw = values[0];
            if mw < 0.0 {
                return Err(ProfileError {
                    origin: origin.into(),
                    line,
                    field: "surplus_mw",
                    message: format!(
                        "{mw} is negative; a surplus is zero or more (write 0 for a deficit)"
                    ),
                });
            }
            points.push((t, mw * 1e6));
        }
        Ok(Self {
            name: file_stem(origin),
            definition: format!("user profile {origin}"),
            points,
        })
    }

    /// A profile from CSV text with the header `timestamp,generation_mw,demand_mw`: the surplus
    /// is generation above demand plus `export_limit_mw` (what the grid takes), zero below.
    pub fn from_generation_csv(
        text: &str,
        origin: &str,
        export_limit_mw: f64,
    ) -> Result<Self, ProfileError> {
        let rows = read_rows(text, origin, &["timestamp", "generation_mw", "demand_mw"])?;
        at_least_two(&rows, origin)?;
        let mut points = Vec::with_capacity(rows.len());
        for (line, t, values) in rows {
            if let Some(i) = values.iter().position(|v| *v < 0.0) {
                return Err(ProfileError {
                    origin: origin.into(),
                    line,
                    field: ["generation_mw", "demand_mw"][i],
                    message: format!("{} is negative; power is zero or more", values[i]),
                });
            }
            let surplus_mw = (values[0] - values[1] - export_limit_mw).max(0.0);
            points.push((t, surplus_mw * 1e6));
        }
        Ok(Self {
            name: file_stem(origin),
            definition: format!(
                "generation above demand + {export_limit_mw} MW exports in {origin}"
            ),
            points,
        })
    }

    /// The same profile with every value multiplied by `factor` (to fit a fleet's size).
    pub fn scaled(&self, factor: f64, definition: String) -> Self {
        Self {
            name: self.name.clone(),
            definition,
            points: self.points.iter().map(|&(t, w)| (t, w * factor)).collect(),
        }
    }

    pub fn start(&self) -> Timestamp {
        self.points[0].0
    }

    pub fn end(&self) -> Timestamp {
        self.points[self.points.len() - 1].0
    }

    pub fn duration(&self) -> Duration {
        self.end().saturating_since(self.start())
    }

    /// The highest surplus of the profile.
    pub fn peak(&self) -> Watts {
        Watts(self.points.iter().map(|p| p.1).fold(0.0, f64::max))
    }

    /// The surplus at `t` (held flat outside the profile's span).
    pub fn at(&self, t: Timestamp) -> Watts {
        let i = self.points.partition_point(|p| p.0 <= t);
        self.interpolate(i, t)
    }

    fn interpolate(&self, i: usize, t: Timestamp) -> Watts {
        let raw = if i == 0 {
            self.points[0].1
        } else if i >= self.points.len() {
            self.points[self.points.len() - 1].1
        } else {
            let (t0, v0) = self.points[i - 1];
            let (t1, v1) = self.points[i];
            v0 + (v1 - v0) * (t.secs_since(t0) / t1.secs_since(t0))
        };
        Watts(raw.max(0.0))
    }

    /// A reader for times that only move forward: O(1) per call.
    pub fn cursor(&self) -> ProfileCursor<'_> {
        ProfileCursor {
            profile: self,
            next: 0,
        }
    }

    /// Returns the same profile limited to `[start, start + duration]`.
    pub fn window(&self, start: Timestamp, duration: Duration) -> Self {
        let end = start + duration;
        let mut points = vec![(start, self.at(start).w())];
        points.extend(
            self.points
                .iter()
                .copied()
                .filter(|p| p.0 > start && p.0 < end),
        );
        points.push((end, self.at(end).w()));
        Self {
            name: self.name.clone(),
            definition: self.definition.clone(),
            points,
        }
    }
}

/// Sequential access to a profile.
pub struct ProfileCursor<'a> {
    profile: &'a Profile,
    next: usize,
}

impl ProfileCursor<'_> {
    /// The surplus at `t`; `t` must not go backwards between calls.
    #[inline]
    pub fn at(&mut self, t: Timestamp) -> Watts {
        let pts = &self.profile.points;
        while self.next < pts.len() && pts[self.next].0 <= t {
            self.next += 1;
        }
        self.profile.interpolate(self.next, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_above_demand_and_exports_is_the_surplus() {
        let p = Profile::from_generation_csv(
            "timestamp,generation_mw,demand_mw\n2026-01-01T00:00:00Z,1500,1000\n2026-01-01T01:00:00Z,1100,1000\n",
            "plant.csv",
            200.0,
        )
        .unwrap();
        assert_eq!(
            p.points(),
            &[
                (parse_time("2026-01-01T00:00:00Z").unwrap(), 300e6),
                (parse_time("2026-01-01T01:00:00Z").unwrap(), 0.0)
            ]
        );
        let e = Profile::from_generation_csv(
            "timestamp,generation_mw,demand_mw\n2026-01-01T00:00:00Z,1500,-3\n2026-01-01T01:00:00Z,1,1\n",
            "plant.csv",
            0.0,
        )
        .unwrap_err();
        assert_eq!((e.line, e.field), (2, "demand_mw"));
        let e =
            Profile::from_generation_csv("timestamp,surplus_mw\n", "plant.csv", 0.0).unwrap_err();
        assert!(
            e.message.contains("timestamp,generation_mw,demand_mw"),
            "{}",
            e.message
        );
    }

    #[test]
    fn interpolates_linearly_and_clamps_at_zero() {
        let p = Profile::from_points(
            "t",
            "t",
            vec![
                (Timestamp::from_secs(0), Watts(-100.0)),
                (Timestamp::from_secs(10), Watts(100.0)),
                (Timestamp::from_secs(20), Watts(300.0)),
            ],
        );
        assert_eq!(p.at(Timestamp::from_secs(5)), Watts(0.0));
        assert_eq!(p.at(Timestamp::from_secs(15)), Watts(200.0));
        assert_eq!(p.at(Timestamp::from_secs(99)), Watts(300.0));
        let mut c = p.cursor();
        for s in 0..25 {
            assert_eq!(c.at(Timestamp::from_secs(s)), p.at(Timestamp::from_secs(s)));
        }
    }

    #[test]
    fn wind_profile_is_output_above_the_cap() {
        let p = Profile::wind(500.0);
        assert_eq!(p.points.len(), 105_408);
        // First row: 782.7 MW of wind.
        assert!((p.at(p.start()).mw() - 282.7).abs() < 1e-6);
        assert!((p.peak().mw() - 296.3).abs() < 0.01, "{}", p.peak());
    }

    #[test]
    fn nuclear_profile_has_a_night_valley() {
        let p = Profile::nuclear(1200.0, NuclearMethod::default());
        let hours_with_surplus = p.points.iter().filter(|x| x.1 > 0.0).count();
        assert_eq!(hours_with_surplus, 5855);
        assert!(p.peak().mw() <= 1200.0);
        let price = Profile::nuclear(1200.0, NuclearMethod::Price);
        assert_eq!(price.points.iter().filter(|x| x.1 > 0.0).count(), 1996);
    }

    #[test]
    fn user_csv_errors_name_line_and_field() {
        let cases = [
            ("time,mw\n", "f.csv:1: header"),
            (
                "timestamp,surplus_mw\n2026-01-01T00:00:00Z,5\n2026-01-01T00:05:00Z,abc\n",
                "f.csv:3: surplus_mw: 'abc' is not a number",
            ),
            (
                "timestamp,surplus_mw\n2026-01-01T00:00:00Z,5\nyesterday,4\n",
                "f.csv:3: timestamp",
            ),
            (
                "timestamp,surplus_mw\n2026-01-01T00:00:00Z,5\n2026-01-01T00:00:00Z,4\n",
                "f.csv:3: timestamp",
            ),
            (
                "timestamp,surplus_mw\n2026-01-01T00:00:00Z,5\n2026-01-01T00:05:00Z,-4\n",
                "f.csv:3: surplus_mw: -4 is negative",
            ),
            (
                "timestamp,surplus_mw\n2026-01-01T00:00:00Z,5\n2026-01-01T00:05:00Z,4,7\n",
                "f.csv:3: row",
            ),
            (
                "timestamp,surplus_mw\n2026-01-01T00:00:00Z,NaN\n",
                "f.csv:2: surplus_mw",
            ),
        ];
        for (text, want) in cases {
            let e = Profile::from_csv(text, "f.csv").unwrap_err().to_string();
            assert!(e.starts_with(want), "{want} <- {e}");
        }
    }

    #[test]
    fn user_csv_accepts_naive_and_offset_times() {
        let p = Profile::from_csv(
            "timestamp,surplus_mw\n2026-01-01T00:00:00,5\n2026-01-01T01:00:00+01:00,7\n2026-01-01T00:10:00Z,1\n",
            "x.csv",
        );
        // 01:00+01:00 is 00:00Z: not after the first row.
        assert!(p.is_err());
        let p = Profile::from_csv(
            "timestamp,surplus_mw\n2026-01-01T00:00:00,5\n2026-01-01T00:10:00Z,1\n",
            "x.csv",
        )
        .unwrap();
        assert_eq!(
            p.at(Timestamp::from_millis(p.start().as_millis() + 300_000)),
            Watts(3e6)
        );
    }
}
