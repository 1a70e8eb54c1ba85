//! The report a daemon publishes on MQTT every `publish_ms`, as JSON: what a plant's system
//! reads (`fleet_w`, `setpoint_w`, `heartbeat`) and what a region's coordinator reads to
//! share a surplus out (`run`, `tiers`, `cap_w`, `healthy`; see `hashsink_core::region`).
//! Written and read here, so that the two sides cannot drift apart.
//!
//! ```json
//! {"source": "hashsink", "at_ms": 1796596494404, "run": "5e3a0c1f00000001",
//!  "fleet_w": 3480000.0, "setpoint_w": 3600000.0, "heartbeat": 120,
//!  "tiers": [{"w": 3500000.0, "j_per_th": 17.5}], "cap_w": 3800000.0, "healthy": true}
//! ```

use hashsink_core::region::{Report, Tier};
use hashsink_units::{Timestamp, Watts};
use serde::{Deserialize, Serialize};

use crate::FleetReport;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    source: String,
    at_ms: i64,
    run: String,
    fleet_w: f64,
    setpoint_w: f64,
    heartbeat: u64,
    tiers: Vec<WireTier>,
    cap_w: Option<f64>,
    healthy: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTier {
    w: f64,
    j_per_th: f64,
}

/// The daemon's report at `now`, as JSON.
pub fn report_json(r: &FleetReport, now: Timestamp) -> String {
    let wire = Wire {
        source: "hashsink".into(),
        at_ms: now.as_millis(),
        run: format!("{:016x}", r.run),
        fleet_w: r.load.w(),
        setpoint_w: r.setpoint.w(),
        heartbeat: r.heartbeat,
        tiers: r
            .tiers
            .iter()
            .map(|t| WireTier {
                w: t.watts.w(),
                j_per_th: t.j_per_th,
            })
            .collect(),
        cap_w: r.following.map(Watts::w),
        healthy: r.healthy,
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// A daemon's report as the coordinator takes it; the reason where it is not one. Its numbers
/// are checked by `Allocator::report`.
pub fn parse_report(body: &[u8]) -> Result<Report, String> {
    let wire: Wire =
        serde_json::from_slice(body).map_err(|e| format!("not a hashsink report: {e}"))?;
    let run = u64::from_str_radix(&wire.run, 16)
        .map_err(|_| format!("run {:?} is not a hexadecimal number", wire.run))?;
    Ok(Report {
        at: Timestamp::from_millis(wire.at_ms),
        run,
        load: Watts(wire.fleet_w),
        tiers: wire
            .tiers
            .into_iter()
            .map(|t| Tier {
                watts: Watts(t.w),
                j_per_th: t.j_per_th,
            })
            .collect(),
        cap: wire.cap_w.map(Watts),
        healthy: wire.healthy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_it_was_written() {
        let fleet = FleetReport {
            load: Watts(3_480_000.0),
            setpoint: Watts(3_600_000.0),
            heartbeat: 120,
            run: 0x5e3a_0c1f_0000_0001,
            tiers: vec![
                Tier {
                    watts: Watts(3_500_000.0),
                    j_per_th: 17.5,
                },
                Tier {
                    watts: Watts(1_000_000.0),
                    j_per_th: 29.5,
                },
            ]
            .into(),
            following: Some(Watts(3_800_000.0)),
            healthy: true,
        };
        let at = Timestamp::from_millis(1_796_596_494_404);
        let report = parse_report(report_json(&fleet, at).as_bytes()).unwrap();
        assert_eq!(report.at, at);
        assert_eq!(report.run, fleet.run);
        assert_eq!(report.load, fleet.load);
        assert_eq!(report.tiers, fleet.tiers.to_vec());
        assert_eq!(report.cap, fleet.following);
        assert!(report.healthy);
    }

    #[test]
    fn what_is_not_a_report_says_why() {
        let e = parse_report(b"{\"fleet_w\": 1}").unwrap_err();
        assert!(e.contains("not a hashsink report"), "{e}");
        let body = report_json(&FleetReport::default(), Timestamp::from_millis(0))
            .replace("\"0000000000000000\"", "\"zz\"");
        let e = parse_report(body.as_bytes()).unwrap_err();
        assert!(e.contains("not a hexadecimal"), "{e}");
    }
}
