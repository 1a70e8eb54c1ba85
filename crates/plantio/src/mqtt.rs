//! MQTT source: subscribes to the plant's surplus (or cap) topic on its broker, and publishes the
//! fleet's load and setpoint for the plant. Payloads are a plain number (`12.5`) or a JSON object
//! with the value in a configured field (`{"available_kw": 12.5, "at": "2026-11-24T10:00:00Z"}`),
//! optionally with the time it was measured (RFC 3339, or milliseconds since the epoch); without
//! one a reading is stamped when it arrives. Built on rumqttc; TLS (optional) through the
//! system's OpenSSL (native-tls), as its rustls stack pins a rustls-webpki with open advisories.

use std::time::Duration;

use hashsink_clock::ScaledClock;
use hashsink_signals::{Reading, SourceId};
use hashsink_units::Timestamp;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::SignalEvent;
use crate::{FleetReport, PowerUnit};

/// A configured MQTT source.
#[derive(Clone, Debug)]
pub struct MqttSource {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub topic: String,
    /// How a reading is written in a message on `topic`.
    pub payload: Payload,
    /// Where to publish the fleet's load and setpoint (JSON), and how often.
    pub publish_topic: Option<String>,
    pub publish_every: Duration,
    pub keep_alive: Duration,
    /// The plant's trip topic: "1", "true" or "trip" sheds the fleet at once; "0", "false" or
    /// "clear" lets it come back (staggered).
    pub trip_topic: Option<String>,
    /// TLS to the broker (None: plain TCP).
    pub tls: Option<MqttTls>,
}

/// How the plant writes a reading: a plain number, or a JSON object with the value in `field`
/// (and the measurement time in `time_field`, if the plant sends one), in `unit`.
#[derive(Clone, Debug, Default)]
pub struct Payload {
    /// The JSON field holding the value; None for a plain-number payload.
    pub field: Option<String>,
    /// The JSON field holding the measurement time, if the plant sends one.
    pub time_field: Option<String>,
    pub unit: PowerUnit,
}

/// TLS settings: the CA to trust (None: the system's roots) and an optional client identity.
#[derive(Clone, Debug, Default)]
pub struct MqttTls {
    /// PEM of the CA that signed the broker's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// A PKCS#12 client identity and its password, for brokers that require client certificates.
    pub client_pkcs12: Option<(Vec<u8>, String)>,
}

impl MqttTls {
    pub(crate) fn transport(&self) -> rumqttc::Transport {
        match (&self.ca_pem, &self.client_pkcs12) {
            (None, None) => rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Native),
            (ca, client) => {
                rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::SimpleNative {
                    ca: ca.clone().unwrap_or_default(),
                    client_auth: client.clone(),
                })
            }
        }
    }
}

/// Reads a trip payload: Some(true) to shed, Some(false) to clear, None if it is neither.
pub fn trip_of(payload: &[u8]) -> Option<bool> {
    match std::str::from_utf8(payload)
        .ok()?
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "1" | "true" | "trip" | "shed" | "on" => Some(true),
        "0" | "false" | "clear" | "off" => Some(false),
        _ => None,
    }
}

/// Why a payload was not a reading.
#[derive(Debug, PartialEq)]
pub struct PayloadError(pub String);

impl Payload {
    /// Decodes one payload into watts and, if present, the time it was measured.
    pub fn decode(&self, payload: &[u8]) -> Result<(f64, Option<Timestamp>), PayloadError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| PayloadError("payload is not UTF-8".into()))?
            .trim();
        let scale = self.unit.watts();
        let Some(field) = &self.field else {
            let v: f64 = text
                .parse()
                .map_err(|_| PayloadError(format!("payload {:?} is not a number", clip(text))))?;
            return Ok((v * scale, None));
        };
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| PayloadError(format!("payload is not JSON ({e}): {:?}", clip(text))))?;
        let value = json
            .get(field)
            .ok_or_else(|| PayloadError(format!("payload has no field {field:?}")))?
            .as_f64()
            .ok_or_else(|| PayloadError(format!("field {field:?} is not a number")))?;
        let at = match &self.time_field {
            None => None,
            Some(tf) => match json.get(tf) {
                None => None,
                Some(serde_json::Value::String(s)) => Some(
                    s.parse::<jiff::Timestamp>()
                        .map(|t| Timestamp::from_millis(t.as_millisecond()))
                        .map_err(|_| {
                            PayloadError(format!("field {tf:?} = {s:?} is not an RFC 3339 time"))
                        })?,
                ),
                Some(serde_json::Value::Number(n)) => {
                    Some(Timestamp::from_millis(n.as_i64().ok_or_else(|| {
                        PayloadError(format!("field {tf:?} is not whole milliseconds"))
                    })?))
                }
                Some(_) => return Err(PayloadError(format!("field {tf:?} is not a time"))),
            },
        };
        Ok((value * scale, at))
    }
}

impl MqttSource {
    /// Runs until the daemon goes away: readings and failures to `events`; the fleet's load and
    /// setpoint from `report` published every `publish_every`.
    pub async fn run(
        self,
        id: SourceId,
        clock: ScaledClock,
        events: mpsc::UnboundedSender<SignalEvent>,
        report: watch::Receiver<FleetReport>,
    ) {
        let mut opts = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        opts.set_keep_alive(self.keep_alive);
        opts.set_clean_session(true);
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(tls.transport());
        }
        // The plant's interlock may watch this: "online" (retained) once connected, and the
        // broker's "offline" (the last will) when the daemon's connection dies with it.
        let status_topic = self.publish_topic.as_ref().map(|t| format!("{t}/status"));
        if let Some(topic) = &status_topic {
            opts.set_last_will(rumqttc::LastWill::new(
                topic,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let mut publish = tokio::time::interval(self.publish_every);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        loop {
            if events.is_closed() {
                return;
            }
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // A clean session forgets subscriptions: subscribe on every connect.
                        info!(source = %self.name, broker = %format!("{}:{}", self.host, self.port), topic = %self.topic, "mqtt connected");
                        connected = true;
                        if let Some(topic) = &status_topic {
                            let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, true, "online");
                        }
                        for topic in std::iter::once(&self.topic).chain(self.trip_topic.as_ref()) {
                            if let Err(e) = client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                                let _ = events.send(SignalEvent::Failed(id, format!("subscribe to {topic}: {e}")));
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == self.topic => {
                        let received = clock.now();
                        match self.payload.decode(&p.payload).and_then(|r| fresh_enough(p.retain, r)) {
                            Ok((watts, at)) => {
                                let _ = events.send(SignalEvent::Reading(Reading {
                                    source: id,
                                    at: at.unwrap_or(received),
                                    watts,
                                }));
                            }
                            Err(PayloadError(e)) => {
                                // Garbage is not a reading: the source keeps its last trusted
                                // value until it goes stale.
                                let _ = events.send(SignalEvent::Rejected(id, e));
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if Some(&p.topic) == self.trip_topic.as_ref() => {
                        match trip_of(&p.payload).map(|set| retained_trip(p.retain, set)) {
                            Some(Ok(flag)) => {
                                let _ = events.send(SignalEvent::Trip(id, flag));
                            }
                            Some(Err(why)) => {
                                let _ = events.send(SignalEvent::Rejected(id, why));
                            }
                            None => {
                                let _ = events.send(SignalEvent::Rejected(id, format!("trip payload {:?} is not 1/0, true/false or trip/clear", clip(&String::from_utf8_lossy(&p.payload)))));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            warn!(source = %self.name, error = %e, "mqtt connection lost; reconnecting");
                        }
                        connected = false;
                        let _ = events.send(SignalEvent::Failed(id, format!("broker {}:{}: {e}", self.host, self.port)));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                _ = publish.tick(), if self.publish_topic.is_some() && connected => {
                    // Nothing is said before the daemon's loop has said it (a starting daemon
                    // adopting a running fleet is not a fleet at 0 W).
                    let body = (report.borrow().run != 0)
                        .then(|| crate::region::report_json(&report.borrow(), clock.now()));
                    if let (Some(topic), Some(body)) = (&self.publish_topic, body) {
                        let _ = client.try_publish(topic.clone(), QoS::AtMostOnce, false, body);
                    }
                }
            }
        }
    }
}

/// A retained message is the broker's copy of the last one published, of any age: as a reading
/// it is taken only if it says when it was measured (the judge then checks its age).
fn fresh_enough(
    retain: bool,
    reading: (f64, Option<Timestamp>),
) -> Result<(f64, Option<Timestamp>), PayloadError> {
    if retain && reading.1.is_none() {
        return Err(PayloadError(
            "a retained message without a time field: its age is unknown, not taken as a reading"
                .into(),
        ));
    }
    Ok(reading)
}

/// A retained trip flag: a trip is taken (failing safe), a clear is not, since it may be older
/// than a trip the broker's copy no longer shows; the plant clears a trip live.
fn retained_trip(retain: bool, set: bool) -> Result<crate::TripFlag, String> {
    if retain && !set {
        return Err(
            "a retained trip clear is not taken (it may predate a trip): publish the clear again, \
             not retained"
                .into(),
        );
    }
    Ok(crate::TripFlag::of(set))
}

fn clip(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_messages_of_unknown_age_are_not_taken() {
        // A retained reading counts only with its own time; a live one takes the arrival's.
        assert!(fresh_enough(true, (5.0, None)).is_err());
        assert!(fresh_enough(true, (5.0, Some(Timestamp::from_secs(1)))).is_ok());
        assert!(fresh_enough(false, (5.0, None)).is_ok());
        // A retained trip is taken, a retained clear is not; live ones both are.
        assert_eq!(retained_trip(true, true), Ok(crate::TripFlag::Set));
        assert!(
            retained_trip(true, false)
                .unwrap_err()
                .contains("not retained")
        );
        assert_eq!(retained_trip(false, false), Ok(crate::TripFlag::Clear));
    }

    fn source(field: Option<&str>, time_field: Option<&str>) -> Payload {
        Payload {
            field: field.map(str::to_string),
            time_field: time_field.map(str::to_string),
            unit: PowerUnit::Kw,
        }
    }

    #[test]
    fn plain_and_json_payloads_decode_and_garbage_is_refused() {
        let plain = source(None, None);
        assert_eq!(plain.decode(b" 12.5\n"), Ok((12_500.0, None)));
        assert!(
            plain
                .decode(b"twelve")
                .unwrap_err()
                .0
                .contains("not a number")
        );
        assert!(plain.decode(&[0xff, 0xfe]).unwrap_err().0.contains("UTF-8"));
        let json = source(Some("available_kw"), Some("at"));
        let (w, at) = json
            .decode(br#"{"available_kw": 3, "at": "2026-11-24T10:00:00Z"}"#)
            .unwrap();
        assert_eq!(w, 3000.0);
        assert_eq!(at, Some(Timestamp::from_millis(1_795_514_400_000)));
        assert_eq!(
            json.decode(br#"{"available_kw": 3, "at": 1000}"#)
                .unwrap()
                .1,
            Some(Timestamp::from_millis(1000))
        );
        assert!(
            json.decode(br#"{"available_kw": "3"}"#)
                .unwrap_err()
                .0
                .contains("not a number")
        );
        assert!(
            json.decode(br#"{"other": 3}"#)
                .unwrap_err()
                .0
                .contains("no field")
        );
        assert!(
            json.decode(b"{not json")
                .unwrap_err()
                .0
                .contains("not JSON")
        );
        assert!(
            json.decode(br#"{"available_kw": 3, "at": "yesterday"}"#)
                .unwrap_err()
                .0
                .contains("RFC 3339")
        );
    }
}
