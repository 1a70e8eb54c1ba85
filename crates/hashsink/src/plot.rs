//! SVG charts of a run: the surplus and each controller's load over time.

use std::path::Path;

use anyhow::{Context, Result};
use hashsink_twin::RunReport;
use hashsink_units::format_time;
use plotters::prelude::*;

/// At most this many points a line: longer runs are averaged into buckets.
const MAX_POINTS: usize = 1500;

fn bucketed(values: impl ExactSizeIterator<Item = f64>) -> Vec<(f64, f64)> {
    let n = values.len();
    let per = n.div_ceil(MAX_POINTS).max(1);
    let collected: Vec<f64> = values.collect();
    collected
        .chunks(per)
        .enumerate()
        .map(|(i, c)| {
            (
                (i * per) as f64 / 1440.0,
                c.iter().sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}

/// Draws surplus and fleet load (running + standby) per controller, from the runs' traces.
pub fn write_svg(path: &Path, title: &str, reports: &[RunReport]) -> Result<()> {
    let first = reports.first().context("no run to plot")?;
    let rows = &first.trace;
    if rows.len() < 2 {
        anyhow::bail!("the run is too short to plot");
    }
    // One trace row a minute; the x axis is in days.
    let days = rows.len() as f64 / 1440.0;
    let surplus = bucketed(rows.iter().map(|r| r.surplus_mw));
    let peak = rows.iter().map(|r| r.surplus_mw).fold(0.0, f64::max);
    let loads: Vec<(String, Vec<(f64, f64)>)> = reports
        .iter()
        .map(|r| {
            (
                r.controller.clone(),
                bucketed(r.trace.iter().map(|t| t.running_mw + t.standby_mw)),
            )
        })
        .collect();
    let top = loads
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(peak, f64::max)
        * 1.05
        + 0.1;

    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..days, 0.0..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = rows[0].t;
    chart
        .configure_mesh()
        .y_desc("MW")
        .x_desc(format!("days from {}", format_time(start)))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(surplus, BLACK.stroke_width(1)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("surplus")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let colours = [BLUE, RED, GREEN, MAGENTA];
    for ((name, series), colour) in loads.into_iter().zip(colours) {
        chart
            .draw_series(LineSeries::new(series, colour.stroke_width(1)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(format!("{name} fleet load"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("cannot write plot '{}'", path.display()))?;
    Ok(())
}
