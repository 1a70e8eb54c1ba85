//! `hashsink study` as a user runs it: the bundled examples write the report, JSON and CSVs; the
//! JSON has the documented fields; the same seed gives the same figures on any thread count;
//! the HTML draws its charts in headless Chromium; a backtest reproduces published hashprice;
//! bad study files are refused with a clear error before anything runs.

mod common;

use common::{hashsink, num};

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs a study into `dir` and returns its JSON (from the file it wrote).
fn study(config: &str, dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["study", config, "--out", dir.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    let out = hashsink(&args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("study.json")).expect("study.json written");
    serde_json::from_str(&text).expect("study.json is JSON")
}

fn check_outputs(v: &Value, dir: &Path) {
    for key in ["npv_usd", "payback_years", "irr"] {
        for p in ["p10", "p50", "p90"] {
            assert!(v[key].get(p).is_some(), "{key}.{p} missing");
        }
    }
    let (p10, p50, p90) = (
        num(v, &["npv_usd", "p10"]),
        num(v, &["npv_usd", "p50"]),
        num(v, &["npv_usd", "p90"]),
    );
    assert!(p10 <= p50 && p50 <= p90, "NPV percentiles out of order");
    let loss = num(v, &["probability_of_loss"]);
    assert!((0.0..=1.0).contains(&loss));
    // The probability of loss agrees with the NPV percentiles.
    if p10 > 0.0 {
        assert!(loss < 0.1);
    }
    if p90 < 0.0 {
        assert!(loss > 0.9);
    }
    assert!(num(v, &["breakeven_btc_usd"]) > 0.0);
    let cf = num(v, &["capture_factor"]);
    assert!(cf > 0.0 && cf <= 1.0, "capture factor {cf}");
    let sweep = v["fleet_sweep"].as_array().expect("fleet_sweep is a list");
    assert!(sweep.len() >= 4);
    for row in sweep {
        assert!(num(row, &["installed_mw"]) > 0.0);
        assert!(row["npv_usd"]["p50"].is_number());
    }
    // A bigger fleet of one model captures more of the surplus (up to the controller's safety
    // margin, which grows with the fleet: near full capture a bigger fleet may give back a few
    // tenths of a point).
    let first_model = sweep[0]["model"].as_str().unwrap();
    let captures: Vec<f64> = sweep
        .iter()
        .filter(|r| r["model"] == first_model)
        .map(|r| num(r, &["capture_factor"]))
        .collect();
    assert!(
        captures.windows(2).all(|w| w[1] >= w[0] - 0.005),
        "{captures:?}"
    );
    assert!(
        captures[captures.len() - 1] > 2.0 * captures[0],
        "{captures:?}"
    );
    assert_eq!(v["sensitivity"].as_array().unwrap().len(), 7);
    let risks: Vec<&str> = v["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["risk"].as_str().unwrap())
        .collect();
    for r in [
        "BTC price",
        "Difficulty",
        "Halving",
        "Regulation",
        "Hardware",
        "Curtailment",
        "Counterparty",
    ] {
        assert!(risks.contains(&r), "risk register lacks {r}");
    }
    // A 30 % lower price costs money; the halving costs money.
    let measured = |name: &str| {
        v["risks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["risk"] == name)
            .map(|r| num(r, &["npv_change_usd"]))
            .unwrap()
    };
    assert!(measured("BTC price") < 0.0);
    assert!(measured("Halving") < 0.0);
    for file in [
        "report.html",
        "fleet_sweep.csv",
        "paths.csv",
        "monthly.csv",
        "dispatch_hourly.csv",
        "sensitivity.csv",
        "risks.csv",
    ] {
        let meta = std::fs::metadata(dir.join(file)).unwrap_or_else(|_| panic!("{file} missing"));
        assert!(meta.len() > 100, "{file} is nearly empty");
    }
    let paths = std::fs::read_to_string(dir.join("paths.csv")).unwrap();
    assert_eq!(
        paths.lines().count() - 1,
        num(v, &["market", "paths"]) as usize,
        "one CSV row per path"
    );
    check_terms(v);
}

/// Issue 17's terms: the site priced on the fleet's maximum draw, imported energy costed, the
/// design chosen on other paths than those reported, the verdict under both price trends.
fn check_terms(v: &Value) {
    let d = &v["design"];
    let (nameplate, max_draw) = (num(d, &["installed_mw"]), num(d, &["max_draw_mw"]));
    assert!(max_draw >= nameplate, "{max_draw} below {nameplate}");
    if d["firmware"] == "braiins-os" {
        assert!(
            (max_draw / nameplate - 1.1).abs() < 1e-6,
            "{max_draw} / {nameplate}"
        );
    }
    let per_mw = num(v, &["costs", "infrastructure_usd_per_mw"]);
    assert!((num(d, &["infrastructure_usd"]) - per_mw * max_draw).abs() < 1.0);
    // A fleet that sleeps through hours without surplus imports its standby, and pays for it
    // at the tariff where one is set.
    assert!(num(d, &["import_mwh_per_year"]) > 0.0);
    if let Some(tariff) = v["costs"]["import_usd_per_mwh"].as_f64() {
        let expected = tariff * num(d, &["import_mwh_per_year"]);
        assert!((num(d, &["import_usd_per_year"]) / expected - 1.0).abs() < 1e-6);
    }
    let selection = &v["selection"];
    let cases = v["drift_cases"].as_array().expect("drift_cases is a list");
    if v["market"]["mode"] == "monte-carlo" {
        assert_eq!(selection["out_of_sample"], true);
        let gap = num(selection, &["chosen_npv_p50_on_selection_usd"])
            - num(selection, &["chosen_npv_p50_on_reported_usd"]);
        assert!((gap - num(selection, &["in_sample_gap_usd"])).abs() < 1e-6);
        assert_eq!(
            num(selection, &["chosen_npv_p50_on_reported_usd"]),
            num(v, &["npv_usd", "p50"]),
            "the reported NPV is on the reported paths"
        );
        let labels: Vec<&str> = cases.iter().map(|c| c["label"].as_str().unwrap()).collect();
        assert!(labels.contains(&"no price drift"), "{labels:?}");
        assert!(
            labels
                .iter()
                .any(|l| l.starts_with("the fitted price drift")),
            "{labels:?}"
        );
        let basis: Vec<&Value> = cases
            .iter()
            .filter(|c| c["verdict_basis"] == true)
            .collect();
        assert_eq!(basis.len(), 1);
        // The verdict's figures are the report's headline.
        assert_eq!(
            num(basis[0], &["npv_usd", "p50"]),
            num(v, &["npv_usd", "p50"])
        );
        assert_eq!(basis[0]["verdict"], v["verdict"]);
        assert!(
            v["verdict_basis"]
                .as_str()
                .unwrap()
                .contains(basis[0]["label"].as_str().unwrap())
        );
    } else {
        assert_eq!(selection["out_of_sample"], false);
        assert!(cases.is_empty());
        assert!(v["verdict_basis"].as_str().unwrap().contains("historical"));
    }
}

/// A headline figure of a bundled example, pinned. The tolerances are a change of method's
/// budget: a change that moves a figure beyond them says why in the README ("Pinned figures").
struct Pinned {
    drift: &'static str,
    npv_p50_usd: f64,
    probability_of_loss: f64,
    breakeven_btc_usd: f64,
}

fn check_pinned(v: &Value, model: &str, installed_mw: f64, pins: &[Pinned]) {
    assert_eq!(v["design"]["model"], model);
    let mw = num(v, &["design", "installed_mw"]);
    assert!(
        (mw - installed_mw).abs() < 0.5,
        "{mw} MW, pinned {installed_mw}"
    );
    let cases = v["drift_cases"].as_array().unwrap();
    for pin in pins {
        let case = cases
            .iter()
            .find(|c| c["label"].as_str().unwrap().starts_with(pin.drift))
            .unwrap_or_else(|| panic!("no case {}", pin.drift));
        let npv = num(case, &["npv_usd", "p50"]);
        let spread = num(v, &["npv_usd", "p90"]) - num(v, &["npv_usd", "p10"]);
        assert!(
            (npv - pin.npv_p50_usd).abs() <= 0.01 * spread,
            "{}: median NPV {npv:.0} USD, pinned {:.0} (tolerance 1 % of the P10-P90 spread, {:.0})",
            pin.drift,
            pin.npv_p50_usd,
            0.01 * spread
        );
        let loss = num(case, &["probability_of_loss"]);
        assert!(
            (loss - pin.probability_of_loss).abs() <= 0.005,
            "{}: probability of loss {loss}, pinned {}",
            pin.drift,
            pin.probability_of_loss
        );
        let breakeven = num(case, &["breakeven_btc_usd"]);
        assert!(
            (breakeven / pin.breakeven_btc_usd - 1.0).abs() <= 0.005,
            "{}: break-even {breakeven:.0} USD, pinned {:.0}",
            pin.drift,
            pin.breakeven_btc_usd
        );
    }
}

/// Chromium's rendering of the report: every chart is an SVG with drawn shapes in it.
fn check_in_chromium(html: &Path) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("HASHSINK_REQUIRE_CHROMIUM").is_none(),
            "HASHSINK_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        hashsink_units::note_skipped_peer("Chromium", "apt-get install chromium");
        return;
    };
    let profile = html.with_file_name("chromium-profile");
    let shot = html.with_file_name("report.png");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let dom = Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    // The DOM Chromium built (not the file's text): charts as parsed SVG elements.
    let charts: Vec<&str> = dom.split("<figure class=\"chart\">").skip(1).collect();
    assert_eq!(charts.len(), 6, "six charts in the rendered page");
    for (i, chart) in charts.iter().enumerate() {
        let svg = chart.split("</figure>").next().unwrap();
        assert!(svg.contains("<svg"), "chart {i} has no svg");
        let shapes = svg.matches("<polyline").count()
            + svg.matches("<polygon").count()
            + svg.matches("<rect").count()
            + svg.matches("<path").count()
            + svg.matches("<circle").count();
        assert!(shapes >= 5, "chart {i} draws only {shapes} shapes");
        assert!(svg.contains("<text"), "chart {i} has no labels");
    }
    let status = Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1000,4000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(status.status.success());
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");
    // A blank white page compresses to a few kB; charts and tables do not.
    assert!(
        png.len() > 100_000,
        "screenshot is {} bytes: blank?",
        png.len()
    );
}

/// The nuclear example as shipped (2,000 paths, seed 42): its headline figures are pinned.
#[test]
fn nuclear_example_writes_the_report_and_its_charts_draw_in_chromium() {
    let dir = out_dir("study-nuclear");
    let v = study("examples/nuclear-study.toml", &dir, &[]);
    check_outputs(&v, &dir);
    check_pinned(
        &v,
        "Antminer S19j Pro",
        10.0,
        &[
            Pinned {
                drift: "no price drift",
                npv_p50_usd: 68_957.0,
                probability_of_loss: 0.4785,
                breakeven_btc_usd: 72_618.0,
            },
            Pinned {
                drift: "the fitted price drift",
                npv_p50_usd: 735_767.0,
                probability_of_loss: 0.344,
                breakeven_btc_usd: 72_701.0,
            },
        ],
    );
    assert_eq!(v["market"]["mode"], "monte-carlo");
    // Ontario's surplus is mostly nights: the recommended fleet is far below the peak.
    assert!(num(&v, &["design", "installed_mw"]) < 200.0);
    // The alternative (export at HOEP) has a value: it is counted.
    assert!(num(&v, &["alternative_usd_per_mwh"]) > 0.0);
    check_in_chromium(&dir.join("report.html"));
}

/// The wind example as shipped (2,000 paths, seed 7): its headline figures are pinned.
#[test]
fn wind_example_writes_the_report() {
    let dir = out_dir("study-wind");
    let v = study("examples/wind-study.toml", &dir, &[]);
    check_outputs(&v, &dir);
    check_pinned(
        &v,
        "Antminer S19j Pro",
        12.0,
        &[
            Pinned {
                drift: "no price drift",
                npv_p50_usd: -2_175_163.0,
                probability_of_loss: 0.8715,
                breakeven_btc_usd: 143_720.0,
            },
            Pinned {
                drift: "the fitted price drift",
                npv_p50_usd: -1_453_143.0,
                probability_of_loss: 0.717,
                breakeven_btc_usd: 142_505.0,
            },
        ],
    );
    // Curtailed energy is worth nothing otherwise.
    assert_eq!(num(&v, &["alternative_usd_per_mwh"]), 0.0);
    assert_eq!(num(&v, &["sell_share"]), 0.5);
}

#[test]
fn same_seed_same_figures_on_any_thread_count_and_another_seed_differs() {
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("timings_s");
        v
    };
    let args = ["--paths", "200", "--seed", "11"];
    let a = strip(study(
        "examples/wind-study.toml",
        &out_dir("seed-a"),
        &[&args[..], &["--threads", "1"]].concat(),
    ));
    let b = strip(study(
        "examples/wind-study.toml",
        &out_dir("seed-b"),
        &[&args[..], &["--threads", "2"]].concat(),
    ));
    assert_eq!(a, b, "same seed, different figures");
    let c = strip(study(
        "examples/wind-study.toml",
        &out_dir("seed-c"),
        &["--paths", "200", "--seed", "12"],
    ));
    assert_ne!(a["npv_usd"], c["npv_usd"]);
}

#[test]
fn backtest_from_november_2025_reproduces_the_published_hashprice() {
    // Luxor's hashprice index was about 38 USD/PH/day in November 2025; the study's backtest
    // path is the bundled history, valued the same way.
    let dir = out_dir("backtest-nov-2025");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("nov.toml");
    std::fs::write(
        &config,
        "[surplus]\nprofile = \"wind\"\n[[model]]\nname = \"Antminer S21\"\n[finance]\nhorizon_years = 0.25\n[market]\nmode = \"backtest\"\nstart = \"2025-11-01\"\n",
    )
    .unwrap();
    let v = study(config.to_str().unwrap(), &dir, &[]);
    assert_eq!(v["market"]["mode"], "backtest");
    assert_eq!(num(&v, &["market", "paths"]), 1.0);
    let november = num(&v["monthly"][0], &["hashprice_usd_per_ph_day", "p50"]);
    assert!(
        (november / 38.2 - 1.0).abs() < 0.06,
        "November 2025 hashprice {november:.1} USD/PH/day against Luxor's 38.2"
    );
    // The bundled backtest example runs end to end.
    let dir = out_dir("backtest-example");
    let v = study("examples/nuclear-backtest-study.toml", &dir, &[]);
    check_outputs(&v, &dir);
}

fn refused(name: &str, toml: &str, wanted: &[&str]) {
    let dir = out_dir(&format!("bad-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("study.toml");
    std::fs::write(&path, toml).unwrap();
    std::fs::write(
        dir.join("gappy.csv"),
        "timestamp,surplus_mw\n2026-01-01T00:00:00Z,5\n2026-01-01T01:00:00Z,5\n2026-01-01T02:00:00Z,5\n2026-01-05T00:00:00Z,5\n2026-01-05T01:00:00Z,5\n2026-01-09T01:00:00Z,5\n2026-01-09T02:00:00Z,5\n2026-01-09T03:00:00Z,5\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("prices.csv"),
        "timestamp,price_usd_per_mwh\n2020-01-01T00:00:00Z,30\n2020-01-01T01:00:00Z,-12.5\n",
    )
    .unwrap();
    let out = hashsink(&["study", path.to_str().unwrap(), "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name}: expected a refusal, got {err}"
    );
    for w in wanted {
        assert!(err.contains(w), "{name}: error lacks {w:?}: {err}");
    }
}

#[test]
fn bad_study_files_are_refused_with_a_clear_error() {
    let model = "[[model]]\nname = \"Antminer S21\"\n";
    refused(
        "gap",
        &format!("[surplus]\nprofile = \"csv\"\nfile = \"gappy.csv\"\n{model}"),
        &["gap", "2026-01-01T02:00:00Z", "fill it"],
    );
    refused(
        "negative-flat",
        &format!("[surplus]\nprofile = \"wind\"\n[alternative]\nflat_usd_per_mwh = -5\n{model}"),
        &["study.toml:4", "flat_usd_per_mwh", "negative"],
    );
    refused(
        "negative-series",
        &format!("[surplus]\nprofile = \"wind\"\n[alternative]\nfile = \"prices.csv\"\n{model}"),
        &["negative price", "allow_negative = true"],
    );
    refused(
        "unknown-model",
        "[surplus]\nprofile = \"wind\"\n[[model]]\nname = \"Antminer S99\"\n",
        &["study.toml:3", "unknown miner model", "Antminer S21 XP"],
    );
    refused(
        "past-the-data",
        &format!(
            "[surplus]\nprofile = \"wind\"\n{model}[finance]\nhorizon_years = 5\n[market]\nmode = \"backtest\"\nstart = \"2024-01-01\"\n"
        ),
        &["2026-03-22", "monte-carlo"],
    );
    refused(
        "typo",
        &format!("[surplus]\nprofile = \"wind\"\nexport_cap = 500\n{model}"),
        &[
            "study.toml:3",
            "unknown field `export_cap`",
            "export_cap_mw",
        ],
    );
    refused("no-model", "[surplus]\nprofile = \"wind\"\n", &["model"]);
    refused(
        "bad-sell",
        &format!("[surplus]\nprofile = \"wind\"\n{model}[finance]\nsell = \"weekly\"\n"),
        &["study.toml:6", "\"daily\", \"hold\""],
    );
    refused(
        "bad-drift",
        &format!(
            "[surplus]\nprofile = \"wind\"\n{model}[market]\nprice_drift_per_year = \"fited\"\n"
        ),
        &["study.toml:6", "price_drift_per_year", "\"fitted\""],
    );
    refused(
        "negative-tariff",
        &format!("[surplus]\nprofile = \"wind\"\n{model}[costs]\nimport_usd_per_mwh = -1\n"),
        &["study.toml:6", "import_usd_per_mwh", "out of range"],
    );
    refused(
        "short-profile",
        &format!("[surplus]\nprofile = \"csv\"\nfile = \"prices.csv\"\n{model}"),
        &["timestamp,surplus_mw"],
    );
}

#[test]
fn a_plant_file_with_generation_and_demand_is_accepted() {
    let dir = out_dir("generation-demand");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("timestamp,generation_mw,demand_mw\n");
    for h in 0..(8 * 24) {
        let (day, hour) = (h / 24, h % 24);
        let generation = if hour < 6 { 1300 } else { 1000 };
        csv.push_str(&format!(
            "2026-01-{:02}T{hour:02}:00:00Z,{generation},1000\n",
            day + 1
        ));
    }
    std::fs::write(dir.join("plant.csv"), csv).unwrap();
    let config = dir.join("study.toml");
    std::fs::write(
        &config,
        "[surplus]\nprofile = \"csv\"\nfile = \"plant.csv\"\nexport_limit_mw = 100\n[[model]]\nname = \"Antminer S21\"\n",
    )
    .unwrap();
    let out = hashsink(&["study", config.to_str().unwrap(), "--check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("valid"), "{text}");
    // Without the export limit the file cannot be read as a surplus.
    std::fs::write(
        &config,
        "[surplus]\nprofile = \"csv\"\nfile = \"plant.csv\"\n[[model]]\nname = \"Antminer S21\"\n",
    )
    .unwrap();
    let out = hashsink(&["study", config.to_str().unwrap(), "--check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("export_limit_mw"));
}
