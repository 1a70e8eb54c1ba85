//! The plant's day-ahead schedule: blocks of the power the fleet may use (`start`, MW), each
//! valid until the next, from CSV (`start,cap_mw`) or JSON (`[{"start": .., "cap_mw": ..}]`).
//! The controller uses it to wake slow miners ahead of a rise. Parsing only (pure).

use hashsink_units::{Timestamp, Watts};

/// Why a schedule was refused: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.origin, self.line, self.message)
    }
}

fn time(text: &str) -> Result<Timestamp, String> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| Timestamp::from_millis(t.as_millisecond()))
        .map_err(|_| format!("{:?} is not a time like 2026-11-24T18:00:00Z", text.trim()))
}

/// Parses a schedule; JSON if the text starts with `[` or `{`, else CSV.
pub fn parse_schedule(text: &str, origin: &str) -> Result<Vec<(Timestamp, Watts)>, ScheduleError> {
    let err = |line: usize, message: String| ScheduleError {
        origin: origin.to_string(),
        line,
        message,
    };
    let trimmed = text.trim_start();
    let mut blocks: Vec<(usize, Timestamp, f64)> = Vec::new();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(e.line(), format!("not JSON: {e}")))?;
        let list = match &v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => {
                o.get("blocks").and_then(|b| b.as_array()).ok_or_else(|| {
                    err(
                        1,
                        "a JSON schedule is a list of blocks or {\"blocks\": [...]}".into(),
                    )
                })?
            }
            _ => return Err(err(1, "a JSON schedule is a list of blocks".into())),
        };
        for (i, b) in list.iter().enumerate() {
            let at = |m: String| err(1, format!("block {}: {m}", i + 1));
            let start = b
                .get("start")
                .and_then(|s| s.as_str())
                .ok_or_else(|| at("needs \"start\" (RFC 3339)".into()))?;
            let mw = b
                .get("cap_mw")
                .and_then(|m| m.as_f64())
                .ok_or_else(|| at("needs \"cap_mw\" (a number)".into()))?;
            blocks.push((i + 1, time(start).map_err(at)?, mw));
        }
    } else {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            Some((_, h)) if h.replace(' ', "") == "start,cap_mw" => {}
            Some((i, h)) => {
                return Err(err(
                    i + 1,
                    format!("the header must be start,cap_mw, found {:?}", h.trim()),
                ));
            }
            None => return Err(err(1, "the schedule is empty".into())),
        }
        for (i, l) in lines {
            let (start, mw) = l
                .split_once(',')
                .ok_or_else(|| err(i + 1, "expected start,cap_mw".into()))?;
            let mw: f64 = mw
                .trim()
                .parse()
                .map_err(|_| err(i + 1, format!("cap_mw {:?} is not a number", mw.trim())))?;
            blocks.push((i + 1, time(start).map_err(|m| err(i + 1, m))?, mw));
        }
    }
    if blocks.is_empty() {
        return Err(err(1, "the schedule has no blocks".into()));
    }
    let mut out: Vec<(Timestamp, Watts)> = Vec::with_capacity(blocks.len());
    for (line, t, mw) in blocks {
        if !mw.is_finite() || mw < 0.0 {
            return Err(err(
                line,
                format!("cap_mw {mw} must be a number, 0 or more"),
            ));
        }
        if out.last().is_some_and(|(prev, _)| t <= *prev) {
            return Err(err(
                line,
                "blocks must be in time order, each starting after the last".into(),
            ));
        }
        out.push((t, Watts::from_mw(mw)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_give_the_same_blocks() {
        let csv = "start,cap_mw\n2026-11-24T18:00:00Z,0\n2026-11-24T23:00:00Z,40.5\n\n";
        let json = r#"{"blocks": [{"start": "2026-11-24T18:00:00Z", "cap_mw": 0},
                                  {"start": "2026-11-24T23:00:00Z", "cap_mw": 40.5}]}"#;
        let a = parse_schedule(csv, "s.csv").unwrap();
        assert_eq!(a, parse_schedule(json, "s.json").unwrap());
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].1, Watts::from_mw(40.5));
        assert_eq!(
            parse_schedule(&format!("[{}]", &json[12..json.len() - 2]), "s.json").unwrap(),
            a
        );
    }

    #[test]
    fn bad_schedules_name_the_line() {
        let e = parse_schedule("start,mw\n", "s.csv").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_schedule("start,cap_mw\n2026-11-24T18:00:00Z,ten\n", "s.csv").unwrap_err();
        assert_eq!((e.line, e.message.contains("not a number")), (2, true));
        let e = parse_schedule("start,cap_mw\n2026-11-24T18:00:00Z,-1\n", "s.csv").unwrap_err();
        assert!(e.message.contains("0 or more"), "{e}");
        let e = parse_schedule(
            "start,cap_mw\n2026-11-24T18:00:00Z,1\n2026-11-24T17:00:00Z,1\n",
            "s.csv",
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_schedule("start,cap_mw\ntomorrow,1\n", "s.csv").unwrap_err();
        assert!(e.message.contains("not a time"), "{e}");
        let e = parse_schedule(r#"[{"start": "2026-11-24T18:00:00Z"}]"#, "s.json").unwrap_err();
        assert!(e.message.contains("cap_mw"), "{e}");
        assert!(
            parse_schedule("[1, 2", "s.json")
                .unwrap_err()
                .message
                .contains("not JSON")
        );
    }
}
