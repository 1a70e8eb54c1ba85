//! A region on MQTT: the report a daemon publishes every `publish_ms`, the cap a coordinator
//! sends it, and the coordinator's link to the broker. Both sides of the wire are written and
//! read here, so that they cannot drift apart.
//!
//! The report, as JSON: what a plant's system reads (`fleet_w`, `setpoint_w`, `heartbeat`)
//! and what the coordinator reads to share a surplus out (`run`, `tiers`, `cap_w`, `healthy`;
//! see `hashsink_core::region`):
//!
//! ```json
//! {"source": "hashsink", "at_ms": 1796596494404, "run": "5e3a0c1f00000001",
//!  "fleet_w": 3480000.0, "setpoint_w": 3600000.0, "heartbeat": 120,
//!  "tiers": [{"w": 3500000.0, "j_per_th": 17.5}], "cap_w": 3800000.0, "healthy": true}
//! ```
//!
//! The cap, as JSON, which a daemon reads with an MQTT `[[signal]]` (`field = "cap_w"`,
//! `time_field = "at_ms"`, `unit = "w"`): `{"cap_w": 3800000.0, "at_ms": 1796596494404}`.
//!
//! The coordinator's [`Link`] speaks MQTT 5: a cap expires in the broker after
//! [`CAP_EXPIRY_S`] (a cap queued behind a slow link is not delivered late), and the broker
//! publishes the coordinator's last will, `offline`, on its state topic when it dies.

use std::time::Duration;

use hashsink_core::region::{Report, Tier};
use hashsink_units::{Timestamp, Watts};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::FleetReport;
use crate::mqtt::MqttTls;

/// How long the broker keeps a cap it has not yet delivered, s.
pub const CAP_EXPIRY_S: u32 = 2;
/// The cap's JSON fields, as a daemon's MQTT `[[signal]]` names them (`field`, `time_field`).
pub const CAP_FIELD: &str = "cap_w";
pub const CAP_TIME_FIELD: &str = "at_ms";

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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCap {
    cap_w: f64,
    at_ms: i64,
}

/// A cap sent at `at`, as JSON.
pub fn cap_json(cap: Watts, at: Timestamp) -> String {
    let wire = WireCap {
        cap_w: cap.w(),
        at_ms: at.as_millis(),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Where and how the coordinator reaches its broker, and what it listens to.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls: Option<MqttTls>,
    pub keep_alive: Duration,
    /// Each daemon's report topic, in the region file's order.
    pub report_topics: Vec<String>,
    /// Where the coordinator says "online" (retained; its last will says "offline").
    pub state_topic: Option<String>,
}

/// What the link hears.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (again) and subscribed to every report topic.
    Connected,
    /// The broker is out of reach, with why; the link keeps trying.
    Lost(String),
    /// A message on daemon `daemon`'s report topic, as received.
    Report { daemon: usize, body: Vec<u8> },
}

/// The coordinator's side of the broker: caps and status out; reports in, through the
/// receiver [`Link::connect`] returns.
#[derive(Clone)]
pub struct Link {
    client: AsyncClient,
}

impl Link {
    /// Starts the link's task; it reconnects on its own and stops once the receiver is gone.
    pub fn connect(config: LinkConfig) -> (Link, mpsc::UnboundedReceiver<LinkEvent>) {
        let mut opts = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        opts.set_keep_alive(config.keep_alive);
        opts.set_clean_start(true);
        if let Some((user, password)) = &config.credentials {
            opts.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &config.tls {
            opts.set_transport(tls.transport());
        }
        if let Some(topic) = &config.state_topic {
            opts.set_last_will(LastWill::new(
                topic,
                "offline",
                QoS::AtLeastOnce,
                true,
                None,
            ));
        }
        // Room for a round of caps to every daemon of a large region.
        let capacity = (config.report_topics.len() * 2 + 16).max(64);
        let (client, eventloop) = AsyncClient::new(opts, capacity);
        let (events, heard) = mpsc::unbounded_channel();
        tokio::spawn(run_link(config, client.clone(), eventloop, events));
        (Link { client }, heard)
    }

    /// Sends `cap` to the daemon on `topic`; false where the link's queue is full or closed
    /// (the cap is dropped: the next round sends a fresh one).
    pub fn send_cap(&self, topic: &str, cap: Watts, at: Timestamp) -> bool {
        let properties = PublishProperties {
            message_expiry_interval: Some(CAP_EXPIRY_S),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        self.client
            .try_publish_with_properties(
                topic,
                QoS::AtMostOnce,
                false,
                cap_json(cap, at),
                properties,
            )
            .is_ok()
    }

    /// Publishes `body` on `topic`, retained (the coordinator's allocation, for operators).
    pub fn send_status(&self, topic: &str, body: String) -> bool {
        self.client
            .try_publish(topic, QoS::AtMostOnce, true, body)
            .is_ok()
    }
}

async fn run_link(
    config: LinkConfig,
    client: AsyncClient,
    mut eventloop: rumqttc::v5::EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let broker = format!("{}:{}", config.host, config.port);
    let mut connected = false;
    while !events.is_closed() {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(%broker, daemons = config.report_topics.len(), "region broker connected");
                connected = true;
                if let Some(topic) = &config.state_topic {
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, true, "online");
                }
                for topic in &config.report_topics {
                    if let Err(e) = client.subscribe(topic.clone(), QoS::AtMostOnce).await {
                        let _ = events.send(LinkEvent::Lost(format!("subscribe to {topic}: {e}")));
                    }
                }
                let _ = events.send(LinkEvent::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let daemon = (config.report_topics.iter()).position(|t| t.as_bytes() == p.topic);
                if let Some(daemon) = daemon {
                    let body = p.payload.to_vec();
                    let _ = events.send(LinkEvent::Report { daemon, body });
                }
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    warn!(%broker, error = %e, "region broker lost; reconnecting");
                }
                connected = false;
                let _ = events.send(LinkEvent::Lost(format!("broker {broker}: {e}")));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
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
    fn a_daemon_reads_a_cap_as_it_was_sent() {
        // The daemon's side: an MQTT signal with the cap's fields, in watts.
        let signal = crate::mqtt::Payload {
            field: Some(CAP_FIELD.into()),
            time_field: Some(CAP_TIME_FIELD.into()),
            unit: crate::PowerUnit::W,
        };
        let at = Timestamp::from_millis(1_796_596_494_404);
        let body = cap_json(Watts(3_800_000.0), at);
        assert_eq!(body, r#"{"cap_w":3800000.0,"at_ms":1796596494404}"#);
        assert_eq!(signal.decode(body.as_bytes()), Ok((3_800_000.0, Some(at))));
        assert!(signal.decode(b"{\"cap_w\": \"lots\"}").is_err());
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
