//! How the study's figures are written in the terminal summary and the HTML report.

/// An amount of US dollars, rounded to what a reader compares: "12.3 M USD".
pub fn money(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 1e9 {
        format!("{:.2} bn", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1} M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    };
    format!("{s} USD")
}

/// A payback or similar span in years, or "> horizon" when it never comes.
pub fn years(v: Option<f64>, horizon: f64) -> String {
    match v {
        Some(y) => format!("{y:.1} y"),
        None => format!("> {horizon} y"),
    }
}
