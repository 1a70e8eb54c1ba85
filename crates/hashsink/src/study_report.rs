//! The study's self-contained HTML report: the headline answer, tables, and inline SVG charts
//! (load duration curve, fleet sizing curve, revenue and hashprice fans, NPV histogram,
//! tornado) drawn with plotters. No scripts, no external files: it opens anywhere.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use hashsink_study::{Percentiles, StudyReport};
use plotters::prelude::*;

use hashsink_study::format::{money, years};

const W: u32 = 900;
const H: u32 = 380;
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(200, 40, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Draws the legend and writes the chart out.
fn finish<'a, X, Y>(
    c: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn range_of(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// The surplus sorted from highest to lowest hour, with the installed size.
fn load_duration(r: &StudyReport) -> Result<String> {
    let mut v = r.hourly_surplus_mw.clone();
    v.sort_by(|a, b| b.total_cmp(a));
    let peak = v.first().copied().unwrap_or(1.0).max(r.design.installed_mw) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption("Load duration curve of the surplus", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..v.len() as f64, 0.0..peak.max(1e-3))
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("hours of the year at or above")
            .y_desc("surplus, MW")
            .draw()
            .map_err(err)?;
        let step = (v.len() / 1500).max(1);
        c.draw_series(
            AreaSeries::new(
                v.iter()
                    .enumerate()
                    .step_by(step)
                    .map(|(i, &x)| (i as f64, x)),
                0.0,
                BLUE.mix(0.3),
            )
            .border_style(BLUE),
        )
        .map_err(err)?
        .label("surplus")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], BLUE.mix(0.4).filled()));
        let mw = r.design.installed_mw;
        c.draw_series(LineSeries::new(
            [(0.0, mw), (v.len() as f64, mw)],
            ORANGE.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("installed {mw:.1} MW"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], ORANGE.stroke_width(2)));
        finish(&mut c, &root)?;
    }
    Ok(svg)
}

/// Median NPV against installed MW, per model, with the P10-P90 band.
fn sizing(r: &StudyReport) -> Result<String> {
    let mut models: Vec<String> = r
        .fleet_sweep
        .iter()
        .map(|s| format!("{} ({})", s.model, s.firmware))
        .collect();
    models.dedup();
    let xs = range_of(r.fleet_sweep.iter().map(|s| s.installed_mw));
    let ys = range_of(
        r.fleet_sweep
            .iter()
            .flat_map(|s| [s.npv_usd.p10, s.npv_usd.p90])
            .flatten()
            .chain([0.0]),
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Fleet sizing: NPV against installed MW (P50 line, P10-P90 band)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(xs.0.max(0.0)..xs.1, (ys.0 / 1e6)..(ys.1 / 1e6))
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("installed MW")
            .y_desc("NPV, million USD")
            .draw()
            .map_err(err)?;
        c.draw_series(LineSeries::new([(xs.0.max(0.0), 0.0), (xs.1, 0.0)], GREY))
            .map_err(err)?;
        let colours = [BLUE, ORANGE, GREEN, RED];
        for (k, name) in models.iter().enumerate() {
            let colour = colours[k % colours.len()];
            let rows: Vec<_> = r
                .fleet_sweep
                .iter()
                .filter(|s| &format!("{} ({})", s.model, s.firmware) == name)
                .collect();
            let mut band: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|s| Some((s.installed_mw, s.npv_usd.p90? / 1e6)))
                .collect();
            band.extend(
                rows.iter()
                    .rev()
                    .filter_map(|s| Some((s.installed_mw, s.npv_usd.p10? / 1e6))),
            );
            c.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.15))))
                .map_err(err)?;
            c.draw_series(LineSeries::new(
                rows.iter()
                    .filter_map(|s| Some((s.installed_mw, s.npv_usd.p50? / 1e6))),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], colour.stroke_width(2)));
            c.draw_series(rows.iter().filter_map(|s| {
                Some(Circle::new(
                    (s.installed_mw, s.npv_usd.p50? / 1e6),
                    3,
                    colour.filled(),
                ))
            }))
            .map_err(err)?;
        }
        finish(&mut c, &root)?;
    }
    Ok(svg)
}

/// A fan: P10-P90 band and P50 line over months.
fn fan(title: &str, y_desc: &str, scale: f64, rows: &[Percentiles]) -> Result<String> {
    let ys = range_of(
        rows.iter()
            .flat_map(|p| [p.p10, p.p90])
            .flatten()
            .map(|v| v / scale)
            .chain([0.0]),
    );
    let months = rows.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(1.0..months, ys.0.max(0.0)..ys.1)
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("month of the horizon")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        let mut band: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some(((i + 1) as f64, p.p90? / scale)))
            .collect();
        band.extend(
            rows.iter()
                .enumerate()
                .rev()
                .filter_map(|(i, p)| Some(((i + 1) as f64, p.p10? / scale))),
        );
        c.draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.2))))
            .map_err(err)?
            .label("P10-P90")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], BLUE.mix(0.3).filled()));
        c.draw_series(LineSeries::new(
            rows.iter()
                .enumerate()
                .filter_map(|(i, p)| Some(((i + 1) as f64, p.p50? / scale))),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("P50")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
        finish(&mut c, &root)?;
    }
    Ok(svg)
}

/// Histogram of NPV over the paths, with zero marked.
fn histogram(r: &StudyReport) -> Result<String> {
    let npv: Vec<f64> = r.paths.iter().map(|p| p.npv_usd / 1e6).collect();
    let (lo, hi) = range_of(npv.iter().copied().chain([0.0]));
    let bins = 40usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in &npv {
        let i = (((v - lo) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let top = f64::from(counts.iter().copied().max().unwrap_or(1)) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!("NPV over {} market paths", npv.len()),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("NPV, million USD")
            .y_desc("paths")
            .draw()
            .map_err(err)?;
        c.draw_series(counts.iter().enumerate().map(|(i, &n)| {
            let x0 = lo + i as f64 * width;
            let colour = if x0 + width <= 0.0 { RED } else { GREEN };
            Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.95, f64::from(n))],
                colour.mix(0.6).filled(),
            )
        }))
        .map_err(err)?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (0.0, top)],
            BLACK.stroke_width(2),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Tornado: median NPV with each input moved down and up, widest first.
fn tornado(r: &StudyReport) -> Result<String> {
    let base = r.npv_usd.p50.unwrap_or(0.0) / 1e6;
    let n = r.sensitivity.len();
    let (lo, hi) = range_of(
        r.sensitivity
            .iter()
            .flat_map(|s| [s.npv_p50_low_usd / 1e6, s.npv_p50_high_usd / 1e6])
            .chain([base]),
    );
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (W, (60 + 40 * n) as u32 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (chart_area, label_area) = root.split_horizontally(W - 230);
        let mut c = ChartBuilder::on(&chart_area)
            .caption(
                "Sensitivity of the median NPV (tornado)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(10)
            .build_cartesian_2d(lo..hi, 0.0..n as f64)
            .map_err(err)?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("median NPV, million USD")
            .draw()
            .map_err(err)?;
        for (i, s) in r.sensitivity.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            for (v, colour) in [
                (s.npv_p50_low_usd / 1e6, RED),
                (s.npv_p50_high_usd / 1e6, GREEN),
            ] {
                let (a, b) = if v < base { (v, base) } else { (base, v) };
                c.draw_series(std::iter::once(Rectangle::new(
                    [(a, y + 0.15), (b, y + 0.85)],
                    colour.mix(0.6).filled(),
                )))
                .map_err(err)?;
            }
        }
        c.draw_series(LineSeries::new(
            [(base, 0.0), (base, n as f64)],
            BLACK.stroke_width(2),
        ))
        .map_err(err)?;
        let plot_top = 40i32;
        let plot_height = (40 * n) as i32;
        for (i, s) in r.sensitivity.iter().enumerate() {
            let y = plot_top + (plot_height * i as i32) / n.max(1) as i32 + 10;
            label_area
                .draw(&Text::new(
                    format!("{}: {} / {}", s.parameter, s.low, s.high),
                    (5, y),
                    ("sans-serif", 13),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn pct3(p: &Percentiles, f: impl Fn(f64) -> String) -> [String; 3] {
    [p.p10, p.p50, p.p90].map(|v| v.map(&f).unwrap_or_else(|| "-".into()))
}

/// The whole report: the answer, the surplus, the fleet size, revenue and market, risk, and the
/// assumptions, each a section of one HTML file.
pub fn html(r: &StudyReport) -> Result<String> {
    let mut h = String::new();
    head(&mut h, r);
    answer(&mut h, r);
    surplus_and_sizing(&mut h, r)?;
    revenue_and_market(&mut h, r)?;
    risk(&mut h, r)?;
    assumptions(&mut h, r);
    Ok(h)
}

/// A chart with its caption.
fn chart(h: &mut String, svg: String, caption: &str) {
    let _ = writeln!(
        h,
        "<figure class=\"chart\">{svg}<figcaption class=\"note\">{}</figcaption></figure>",
        escape(caption)
    );
}

/// The page's head, style, title and the verdict.
fn head(h: &mut String, r: &StudyReport) {
    let d = &r.design;
    let verdict = format!("{} (Market paths with {}.)", r.verdict, r.verdict_basis);
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; padding: 0 1em; }}
h1 {{ font-size: 1.6em; }} h2 {{ margin-top: 1.8em; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: 0.8em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.2em; background: #f3f7fb; padding: 0.8em; border-left: 4px solid #1f77b4; }}
figure {{ margin: 1em 0; }} .note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>{title}</h1>
<p class="verdict">{verdict} Recommended design: <b>{mw:.1} MW of {model} ({fw})</b>, {miners} miners.</p>
"#,
        title = escape(&r.title),
        verdict = escape(&verdict),
        mw = d.installed_mw,
        model = escape(&d.model),
        fw = escape(&d.firmware),
        miners = d.miners,
    );
}

/// The headline figures of the chosen design, P10/P50/P90 over the paths.
fn answer(h: &mut String, r: &StudyReport) {
    let d = &r.design;
    let npv = pct3(&r.npv_usd, money);
    let payback = [
        r.payback_years.p10,
        r.payback_years.p50,
        r.payback_years.p90,
    ]
    .map(|v| years(v, r.horizon_years));
    let irr = pct3(&r.irr, |v| format!("{:.0} %", v * 100.0));
    let be = pct3(&r.breakeven_btc_usd_range, |v| format!("{v:.0} USD"));
    let rev = pct3(&r.revenue_usd_per_mwh, |v| format!("{v:.0} USD"));
    let _ = write!(
        h,
        r#"<h2>Answer</h2>
<table><tr><th>over {paths} market paths</th><th>P10</th><th>P50</th><th>P90</th></tr>
<tr><td>NPV at {disc:.0} %/yr</td><td>{n0}</td><td>{n1}</td><td>{n2}</td></tr>
<tr><td>Payback</td><td>{b0}</td><td>{b1}</td><td>{b2}</td></tr>
<tr><td>IRR</td><td>{i0}</td><td>{i1}</td><td>{i2}</td></tr>
<tr><td>Break-even BTC price</td><td>{e0}</td><td>{e1}</td><td>{e2}</td></tr>
<tr><td>Revenue per MWh absorbed</td><td>{r0}</td><td>{r1}</td><td>{r2}</td></tr>
</table>
<table>
<tr><td>Probability of loss (NPV &lt; 0)</td><td>{loss:.1} %</td></tr>
<tr><td>Value at risk (95 %)</td><td>{var}</td></tr>
<tr><td>Expected shortfall (worst 5 %)</td><td>{es}</td></tr>
<tr><td>Break-even hashprice</td><td>{bh:.1} USD/PH/day (today {th:.1})</td></tr>
<tr><td>Alternative value of the absorbed energy</td><td>{alt:.1} USD/MWh ({altl})</td></tr>
<tr><td>Capture factor (absorbed / surplus)</td><td>{cf:.1} %</td></tr>
<tr><td>Utilisation (absorbed / maximum draw x hours)</td><td>{ut:.1} %</td></tr>
<tr><td>Capex</td><td>{capex} (hardware {hw} at {usdth:.1} USD/TH, site {infra} for {maxmw:.1} MW of maximum draw)</td></tr>
<tr><td>Energy absorbed per year</td><td>{abs:.0} MWh of {sur:.0} MWh surplus</td></tr>
<tr><td>Energy imported per year (sleeping miners' standby without surplus)</td><td>{imp:.1} MWh, {impusd} a year at {impat}</td></tr>
</table>
"#,
        paths = r.market.paths,
        disc = r.discount_rate * 100.0,
        n0 = npv[0],
        n1 = npv[1],
        n2 = npv[2],
        b0 = payback[0],
        b1 = payback[1],
        b2 = payback[2],
        i0 = irr[0],
        i1 = irr[1],
        i2 = irr[2],
        e0 = be[0],
        e1 = be[1],
        e2 = be[2],
        r0 = rev[0],
        r1 = rev[1],
        r2 = rev[2],
        loss = r.probability_of_loss * 100.0,
        var = money(r.value_at_risk_95_usd),
        es = money(r.expected_shortfall_95_usd),
        bh = r.breakeven_hashprice_usd_per_ph_day,
        th = r.market.start_hashprice_usd_per_ph_day,
        alt = r.alternative_usd_per_mwh,
        altl = escape(&r.alternative),
        cf = r.capture_factor * 100.0,
        ut = r.utilisation * 100.0,
        capex = money(d.hardware_usd + d.infrastructure_usd),
        hw = money(d.hardware_usd),
        usdth = d.usd_per_th,
        infra = money(d.infrastructure_usd),
        maxmw = d.max_draw_mw,
        abs = d.absorbed_mwh_per_year,
        sur = d.surplus_mwh_per_year,
        imp = d.import_mwh_per_year,
        impusd = money(d.import_usd_per_year),
        impat = escape(&r.import_priced_at),
    );
    drift_and_choice(h, r);
}

/// The verdict under each BTC price trend, and how the design was chosen.
fn drift_and_choice(h: &mut String, r: &StudyReport) {
    if !r.drift_cases.is_empty() {
        h.push_str("<h3>The BTC price trend</h3>\n<table><tr><th>price trend</th><th>NPV P10</th><th>NPV P50</th><th>NPV P90</th><th>P(loss)</th><th>break-even BTC (P50)</th><th>verdict</th></tr>\n");
        for c in &r.drift_cases {
            let n = pct3(&c.npv_usd, money);
            let _ = writeln!(
                h,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} %</td><td>{:.0} USD</td><td>{}</td></tr>",
                escape(&c.label),
                if c.verdict_basis {
                    " (the verdict's)"
                } else {
                    ""
                },
                n[0],
                n[1],
                n[2],
                c.probability_of_loss * 100.0,
                c.breakeven_btc_usd,
                escape(&c.verdict)
            );
        }
        h.push_str("</table>\n<p class=\"note\">The same design on the same path numbers; only the price trend differs (the bootstrap's returns re-centred, their spread kept). Network hashrate grows as fitted in every row.</p>\n");
    }
    let s = &r.selection;
    let _ = writeln!(
        h,
        "<h3>How the design was chosen</h3>\n<p>By {}. Its median NPV is {} on the paths it was chosen on and {} on the paths reported: an in-sample gap of {}.{}</p>",
        escape(&s.method),
        money(s.chosen_npv_p50_on_selection_usd),
        money(s.chosen_npv_p50_on_reported_usd),
        money(s.in_sample_gap_usd),
        s.in_sample_choice
            .as_ref()
            .map_or(String::new(), |c| format!(
                " Chosen on the reported paths themselves, the pick would have been {}.",
                escape(c)
            ))
    );
}

fn surplus_and_sizing(h: &mut String, r: &StudyReport) -> Result<()> {
    h.push_str("<h2>The surplus</h2>\n");
    let _ = writeln!(
        h,
        "<p>{} ({} days, cycled over the {}-year horizon).</p>",
        escape(&r.profile),
        r.profile_days,
        r.horizon_years
    );
    chart(
        h,
        load_duration(r)?,
        "Hours of the profile's year with at least a given surplus; the line is the installed fleet.",
    );
    h.push_str("<h2>Fleet size</h2>\n");
    chart(
        h,
        sizing(r)?,
        "Each point is the fleet dispatched through the twin with the daemon's controller, valued on the same market paths.",
    );
    h.push_str("<table><tr><th>model</th><th>MW</th><th>max draw MW</th><th>miners</th><th>capex</th><th>capture</th><th>utilisation</th><th>NPV P10</th><th>NPV P50</th><th>NPV P90</th><th>P(loss)</th></tr>\n");
    for s in &r.fleet_sweep {
        let n = pct3(&s.npv_usd, money);
        let _ = writeln!(
            h,
            "<tr><td>{} ({})</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.1} %</td><td>{:.1} %</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} %</td></tr>",
            escape(&s.model),
            escape(&s.firmware),
            s.installed_mw,
            s.max_draw_mw,
            s.miners,
            money(s.capex_usd),
            s.capture_factor * 100.0,
            s.utilisation * 100.0,
            n[0],
            n[1],
            n[2],
            s.probability_of_loss * 100.0
        );
    }
    h.push_str("</table>\n");
    Ok(())
}

fn revenue_and_market(h: &mut String, r: &StudyReport) -> Result<()> {
    h.push_str("<h2>Revenue and market</h2>\n");
    let revenue: Vec<Percentiles> = r.monthly.iter().map(|m| m.revenue_usd).collect();
    let hashprice: Vec<Percentiles> = r
        .monthly
        .iter()
        .map(|m| m.hashprice_usd_per_ph_day)
        .collect();
    chart(
        h,
        fan(
            "Monthly mining revenue (market value when mined)",
            "thousand USD",
            1e3,
            &revenue,
        )?,
        "Fan of monthly revenue across the paths.",
    );
    chart(
        h,
        fan("Hashprice", "USD per PH/s per day", 1.0, &hashprice)?,
        "What a PH/s earns a day (before pool fee); the subsidy halves at the next halving.",
    );
    let m = &r.market;
    let _ = write!(
        h,
        "<p>Market: {} from {}",
        escape(&m.mode),
        escape(&m.start)
    );
    if let (Some(f), Some(from), Some(to)) = (&m.fit, &m.fit_from, &m.fit_to) {
        let _ = write!(
            h,
            "; block bootstrap of daily price, hashrate and fee returns fitted on {from} .. {to} ({} days: price drift {:.0} %/yr, volatility {:.0} %/yr, hashrate growth {:.0} %/yr, price-hashrate correlation {:.2}); seed {}",
            f.days,
            f.price_drift_per_year * 100.0,
            f.price_volatility_per_year * 100.0,
            f.hashrate_growth_per_year * 100.0,
            f.price_hashrate_correlation,
            m.seed.unwrap_or(0)
        );
    }
    let _ = writeln!(
        h,
        ". BTC {:.0} USD and hashprice {:.1} USD/PH/day at the start; next halving {}.</p>",
        m.start_price_usd,
        m.start_hashprice_usd_per_ph_day,
        escape(m.next_halving.as_deref().unwrap_or("-"))
    );
    Ok(())
}

fn risk(h: &mut String, r: &StudyReport) -> Result<()> {
    h.push_str("<h2>Risk</h2>\n");
    chart(h, histogram(r)?, "Red: paths that lose money.");
    chart(
        h,
        tornado(r)?,
        "Each bar moves one input to its low (red) and high (green) value, on the same paths.",
    );
    h.push_str("<h3>Risk register</h3>\n<table><tr><th>risk</th><th>scenario</th><th>median NPV change</th><th>measured</th><th>mitigation</th></tr>\n");
    for k in &r.risks {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{}</td><td style=\"text-align:left\">{}</td><td style=\"text-align:left\">{}</td></tr>",
            escape(&k.risk),
            escape(&k.scenario),
            money(k.npv_change_usd),
            escape(&k.measure),
            escape(&k.mitigation)
        );
    }
    h.push_str("</table>\n");
    Ok(())
}

fn assumptions(h: &mut String, r: &StudyReport) {
    let d = &r.design;
    let c = &r.costs;
    let _ = write!(
        h,
        r#"<h2>Assumptions</h2>
<table>
<tr><td>Horizon, discount rate</td><td>{hy} years, {dr:.1} %/yr</td></tr>
<tr><td>Coins sold as mined</td><td>{sell:.0} % (the rest sold at the horizon)</td></tr>
<tr><td>Site infrastructure</td><td>{infra:.0} USD per MW of the fleet's maximum draw</td></tr>
<tr><td>Imported energy</td><td>{impat}</td></tr>
<tr><td>Opex</td><td>{omw:.0} USD/MW/yr + {omwh:.2} USD/MWh</td></tr>
<tr><td>Pool fee</td><td>{pool:.1} %</td></tr>
<tr><td>Hardware failures, efficiency decay</td><td>{fail:.1} %/yr, {decay:.1} %/yr</td></tr>
<tr><td>Uptime</td><td>{up:.1} %</td></tr>
<tr><td>Salvage at the horizon</td><td>{salv:.0} % of hardware still alive</td></tr>
<tr><td>Dispatch</td><td>{sim} simulated miners for {miners} (twin, the daemon's controller at a 10 s cadence)</td></tr>
</table>
<p class="note">Every figure is reproducible from the study file and its seed. Run time: dispatch {td:.1} s, sweep {ts:.1} s, paths {tp:.1} s, sensitivity {tx:.1} s on {threads} threads.</p>
<p class="note">{attr}</p>
</body></html>
"#,
        hy = r.horizon_years,
        dr = r.discount_rate * 100.0,
        sell = r.sell_share * 100.0,
        infra = c.infrastructure_usd_per_mw,
        impat = escape(&r.import_priced_at),
        omw = c.opex_usd_per_mw_year,
        omwh = c.opex_usd_per_mwh,
        pool = c.pool_fee * 100.0,
        fail = c.failure_rate_per_year * 100.0,
        decay = c.efficiency_decay_per_year * 100.0,
        up = c.uptime * 100.0,
        salv = c.salvage_share * 100.0,
        sim = d.simulated_miners,
        miners = d.miners,
        td = r.timings_s.dispatch,
        ts = r.timings_s.sweep,
        tp = r.timings_s.paths,
        tx = r.timings_s.sensitivity,
        threads = r.timings_s.threads,
        attr = r
            .attributions
            .iter()
            .map(|a| escape(a))
            .collect::<Vec<_>>()
            .join("<br>"),
    );
}
