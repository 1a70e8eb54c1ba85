//! IEC 60870-5-104 source: a client of the plant's SCADA station (the standard telecontrol link
//! in Europe and the CIS), built on the `iec104` crate. It reads one measured value for the
//! surplus (short float M_ME_NC_1/TC_1/TF_1, scaled M_ME_NB_1/TB_1/TE_1 or normalised
//! M_ME_NA_1/TA_1/TD_1/ND_1) at a configured common address and information object address,
//! from spontaneous, cyclic and interrogation replies, and sends a station interrogation every
//! `interrogate_every` so that an unchanging value still arrives fresh. A single point (M_SP)
//! may carry the plant's trip flag. A value flagged invalid, not topical or overflowed, or a
//! point of the wrong type, is rejected with the reason; a lost link is a failed source (the
//! crate reconnects on its own every `t0`).

use std::time::Duration;

use async_trait::async_trait;
use hashsink_clock::ScaledClock;
use hashsink_signals::{Reading, SourceId};
use iec104::asdu::Asdu;
use iec104::client::{Client, ClientCallback};
use iec104::config::{ClientConfig, ProtocolConfig};
use iec104::cot::Cot;
use iec104::types::commands::{CIcNa1, Qoi};
use iec104::types::information_elements::Spi;
use iec104::types::quality_descriptors::Qds;
use iec104::types::{GenericObject, InformationObjects};
use iec104::types_id::TypeId;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::SignalEvent;
use crate::{FleetReport, PowerUnit};

/// A configured IEC 104 source.
#[derive(Clone, Debug)]
pub struct Iec104Source {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The station's common address (ASDU address).
    pub common_address: u16,
    /// The information object address of the surplus.
    pub surplus_ioa: u32,
    /// watts = value * scale * unit (normalised values are first divided by 32768).
    pub scale: f64,
    pub unit: PowerUnit,
    /// A single point whose ON state is the plant's trip flag.
    pub trip_ioa: Option<u32>,
    pub interrogate_every: Duration,
    /// Connection timeout and reconnection period (the protocol's t0).
    pub timeout: Duration,
}

/// What a message says about the surplus point.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    /// The raw value (engineering units before `scale` and `unit`).
    Value(f64),
    /// Present but unusable, with why.
    Unusable(String),
}

fn quality(qds: &Qds) -> Option<String> {
    let mut bad = Vec::new();
    if qds.iv {
        bad.push("invalid");
    }
    if qds.nt {
        bad.push("not topical");
    }
    if qds.ov {
        bad.push("overflow");
    }
    (!bad.is_empty()).then(|| format!("quality flags: {}", bad.join(", ")))
}

fn find<T: iec104::types::FromBytes + iec104::types::ToBytes + Default>(
    objects: &[GenericObject<T>],
    ioa: u32,
) -> Option<&T> {
    objects
        .iter()
        .rev()
        .find(|o| o.address == ioa)
        .map(|o| &o.object)
}

/// Reads the surplus point from an ASDU, if the ASDU carries it.
pub fn surplus_in(asdu: &Asdu, common_address: u16, ioa: u32) -> Option<PointValue> {
    use InformationObjects as I;
    if asdu.address_field != common_address {
        return None;
    }
    let checked = |v: f64, q: Option<&Qds>| match q.and_then(quality) {
        Some(bad) => PointValue::Unusable(bad),
        None => PointValue::Value(v),
    };
    const NORM: f64 = 32768.0;
    match &asdu.information_objects {
        I::MMeNc1(o) => find(o, ioa).map(|p| checked(f64::from(p.value), Some(&p.qds))),
        I::MMeTc1(o) => find(o, ioa).map(|p| checked(f64::from(p.value), Some(&p.qds))),
        I::MMeTf1(o) => find(o, ioa).map(|p| checked(f64::from(p.value), Some(&p.qds))),
        I::MMeNb1(o) => find(o, ioa).map(|p| checked(f64::from(p.sva), Some(&p.qds))),
        I::MMeTb1(o) => find(o, ioa).map(|p| checked(f64::from(p.sva), Some(&p.qds))),
        I::MMeTe1(o) => find(o, ioa).map(|p| checked(f64::from(p.sva), Some(&p.qds))),
        I::MMeNa1(o) => find(o, ioa).map(|p| checked(f64::from(p.nva) / NORM, Some(&p.qds))),
        I::MMeTa1(o) => find(o, ioa).map(|p| checked(f64::from(p.nva) / NORM, Some(&p.qds))),
        I::MMeTd1(o) => find(o, ioa).map(|p| checked(f64::from(p.nva) / NORM, Some(&p.qds))),
        I::MMeNd1(o) => find(o, ioa).map(|p| checked(f64::from(p.nva) / NORM, None)),
        I::MSpNa1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        I::MSpTb1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        I::MDpNa1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        I::MDpTb1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        I::MStNa1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        I::MBoNa1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        I::MItNa1(o) => find(o, ioa).map(|_| wrong(asdu.type_id)),
        _ => None,
    }
}

fn wrong(type_id: TypeId) -> PointValue {
    PointValue::Unusable(format!(
        "the surplus point carries {type_id:?}, not a measured value (M_ME_*)"
    ))
}

/// Reads the trip flag from an ASDU, if the ASDU carries it (None also for a flag of bad
/// quality: a doubtful trip neither sheds nor clears).
pub fn trip_in(asdu: &Asdu, common_address: u16, ioa: u32) -> Option<bool> {
    use InformationObjects as I;
    if asdu.address_field != common_address {
        return None;
    }
    let siq = match &asdu.information_objects {
        I::MSpNa1(o) => find(o, ioa).map(|p| &p.siq),
        I::MSpTb1(o) => find(o, ioa).map(|p| &p.siq),
        _ => None,
    }?;
    (!siq.iv && !siq.nt).then_some(siq.spi == Spi::On)
}

/// The general interrogation command for a station.
pub fn interrogation(common_address: u16) -> Asdu {
    Asdu {
        type_id: TypeId::C_IC_NA_1,
        cot: Cot::Activation,
        originator_address: 0,
        address_field: common_address,
        sequence: false,
        test: false,
        negative: false,
        information_objects: InformationObjects::CIcNa1(vec![GenericObject {
            address: 0,
            object: CIcNa1 { qoi: Qoi::Global },
        }]),
    }
}

enum Link {
    Started,
    Asdu(Box<Asdu>),
    Error(String),
}

/// Forwards the client's callbacks to the source's task.
struct Forward(mpsc::Sender<Link>);

#[async_trait]
impl ClientCallback for Forward {
    async fn on_new_objects(&self, asdu: Asdu) {
        let _ = self.0.try_send(Link::Asdu(Box::new(asdu)));
    }
    async fn on_connection_started(&self) {
        let _ = self.0.send(Link::Started).await;
    }
    async fn on_error(&self, error: iec104::error::Error) {
        let _ = self.0.send(Link::Error(error.to_string())).await;
    }
}

impl Iec104Source {
    /// Runs the source until the daemon stops.
    pub async fn run(
        self,
        id: SourceId,
        clock: ScaledClock,
        events: mpsc::UnboundedSender<SignalEvent>,
        _fleet: watch::Receiver<FleetReport>,
    ) {
        let mut backoff = Duration::from_millis(200);
        let peer = format!("{}:{}", self.host, self.port);
        loop {
            let (tx, mut rx) = mpsc::channel(1024);
            let config = ClientConfig {
                address: self.host.clone(),
                port: self.port,
                protocol: ProtocolConfig {
                    t0: self.timeout,
                    ..ProtocolConfig::default()
                },
                tls: None,
            };
            let mut client = Client::new(config, Forward(tx));
            let started = match client.connect().await {
                Ok(()) => client.start_receiving().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = started {
                let _ = events.send(SignalEvent::Failed(id, format!("iec104 {peer}: {e}")));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            backoff = Duration::from_millis(200);
            let mut live = false;
            let mut interrogate = tokio::time::interval(self.interrogate_every);
            interrogate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut heard = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = interrogate.tick(), if live => {
                        if let Err(e) = client.send_asdu(interrogation(self.common_address)).await {
                            warn!(source = %self.name, "iec104: interrogation not sent: {e}");
                        }
                    }
                    _ = tokio::time::sleep_until(heard + self.silence_limit()) => {
                        // A station that answers no interrogation, or the crate's link task
                        // gone (it panics on some malformed ASDUs and then says nothing):
                        // either way the source is blind, so drop the link and start again.
                        let why = format!(
                            "iec104 {peer}: nothing received for {:?} (the station or the link is dead); reconnecting",
                            self.silence_limit()
                        );
                        warn!(source = %self.name, "{why}");
                        self.lost(id, why, &events);
                        break;
                    }
                    link = rx.recv() => match link {
                        None => break,
                        Some(Link::Started) => {
                            live = true;
                            heard = tokio::time::Instant::now();
                            info!(source = %self.name, "iec104 connected to {peer}");
                            interrogate.reset_immediately();
                        }
                        Some(Link::Error(e)) => {
                            live = false;
                            self.lost(id, format!("iec104 {peer}: {e}"), &events);
                        }
                        Some(Link::Asdu(asdu)) => {
                            heard = tokio::time::Instant::now();
                            self.take(&asdu, id, &clock, &events);
                        }
                    },
                }
            }
        }
    }

    /// With interrogations every `interrogate_every`, a live station is heard from at least that
    /// often: twice that plus the link timeout is silence.
    fn silence_limit(&self) -> Duration {
        self.interrogate_every * 2 + self.timeout
    }

    /// The link is lost: the source failed, and its trip flag (if it has one) is unknown.
    fn lost(&self, id: SourceId, why: String, events: &mpsc::UnboundedSender<SignalEvent>) {
        if self.trip_ioa.is_some() {
            let _ = events.send(SignalEvent::Trip(id, crate::TripFlag::Unknown(why.clone())));
        }
        let _ = events.send(SignalEvent::Failed(id, why));
    }

    fn take(
        &self,
        asdu: &Asdu,
        id: SourceId,
        clock: &ScaledClock,
        events: &mpsc::UnboundedSender<SignalEvent>,
    ) {
        if let Some(ioa) = self.trip_ioa {
            if let Some(set) = trip_in(asdu, self.common_address, ioa) {
                let _ = events.send(SignalEvent::Trip(id, crate::TripFlag::of(set)));
            }
        }
        match surplus_in(asdu, self.common_address, self.surplus_ioa) {
            None => {}
            Some(PointValue::Value(v)) => {
                let _ = events.send(SignalEvent::Reading(Reading {
                    source: id,
                    at: clock.now(),
                    watts: v * self.scale * self.unit.watts(),
                }));
            }
            Some(PointValue::Unusable(why)) => {
                let _ = events.send(SignalEvent::Rejected(
                    id,
                    format!("IOA {}: {why}", self.surplus_ioa),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iec104::types::information_elements::Siq;
    use iec104::types::measurements::{MMeNb1, MMeNc1, MSpNa1};

    fn asdu(type_id: TypeId, ca: u16, objects: InformationObjects) -> Asdu {
        Asdu {
            type_id,
            cot: Cot::SpontaneousData,
            originator_address: 0,
            address_field: ca,
            sequence: false,
            test: false,
            negative: false,
            information_objects: objects,
        }
    }

    #[test]
    fn reads_the_surplus_point_and_refuses_bad_quality_and_wrong_types() {
        let float = |value: f32, iv: bool| {
            asdu(
                TypeId::M_ME_NC_1,
                47,
                InformationObjects::MMeNc1(vec![
                    GenericObject {
                        address: 10,
                        object: MMeNc1::default(),
                    },
                    GenericObject {
                        address: 11,
                        object: MMeNc1 {
                            value,
                            qds: Qds {
                                iv,
                                ..Qds::default()
                            },
                        },
                    },
                ]),
            )
        };
        assert_eq!(
            surplus_in(&float(12.5, false), 47, 11),
            Some(PointValue::Value(12.5))
        );
        assert_eq!(
            surplus_in(&float(12.5, false), 48, 11),
            None,
            "another station"
        );
        assert_eq!(
            surplus_in(&float(12.5, false), 47, 12),
            None,
            "another point"
        );
        assert_eq!(
            surplus_in(&float(12.5, true), 47, 11),
            Some(PointValue::Unusable("quality flags: invalid".into()))
        );
        let scaled = asdu(
            TypeId::M_ME_NB_1,
            47,
            InformationObjects::MMeNb1(vec![GenericObject {
                address: 11,
                object: MMeNb1 {
                    sva: -300,
                    qds: Qds::default(),
                },
            }]),
        );
        assert_eq!(surplus_in(&scaled, 47, 11), Some(PointValue::Value(-300.0)));
        let single = asdu(
            TypeId::M_SP_NA_1,
            47,
            InformationObjects::MSpNa1(vec![GenericObject {
                address: 11,
                object: MSpNa1 {
                    siq: Siq {
                        spi: Spi::On,
                        ..Siq::default()
                    },
                },
            }]),
        );
        let PointValue::Unusable(why) = surplus_in(&single, 47, 11).unwrap() else {
            panic!("a single point is not a surplus")
        };
        assert!(why.contains("M_SP_NA_1"), "{why}");
        assert_eq!(trip_in(&single, 47, 11), Some(true));
        assert_eq!(trip_in(&single, 47, 12), None);
    }

    /// A station (a raw socket: no real one sends this) that starts the link, then sends one
    /// I-frame whose ASDU makes the `iec104` crate's link task panic (a case fuzzing found), and
    /// then keeps the connection open and says nothing more. The source must not go blind: it
    /// marks the trip flag unknown, fails, and connects again.
    #[tokio::test]
    async fn a_frame_that_kills_the_crates_link_task_marks_the_trip_unknown_and_reconnects() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = accepted_tx.send(());
                tokio::spawn(async move {
                    let mut startdt = [0u8; 6];
                    socket.read_exact(&mut startdt).await.unwrap();
                    assert_eq!(startdt, [0x68, 4, 0x07, 0, 0, 0], "STARTDT act");
                    socket.write_all(&[0x68, 4, 0x0B, 0, 0, 0]).await.unwrap();
                    let asdu = [102u8, 138, 136, 136, 0, 0, 47, 0, 100];
                    let mut frame = vec![0x68, 4 + asdu.len() as u8, 0, 0, 0, 0];
                    frame.extend(asdu);
                    socket.write_all(&frame).await.unwrap();
                    let mut sink = [0u8; 1024];
                    while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let source = Iec104Source {
            name: "station".into(),
            host: "127.0.0.1".into(),
            port,
            common_address: 47,
            surplus_ioa: 11,
            scale: 1.0,
            unit: PowerUnit::Kw,
            trip_ioa: Some(20),
            interrogate_every: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
        };
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (_fleet, fleet_rx) = watch::channel(FleetReport::default());
        let task = tokio::spawn(source.run(SourceId(0), ScaledClock::wall(), events_tx, fleet_rx));
        let within = Duration::from_secs(10);
        tokio::time::timeout(within, accepted.recv()).await.unwrap();
        let unknown = tokio::time::timeout(within, async {
            loop {
                match events.recv().await.expect("the source lives") {
                    SignalEvent::Trip(_, crate::TripFlag::Unknown(why)) => return why,
                    SignalEvent::Trip(_, flag) => panic!("trip flag {flag:?}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the trip flag goes unknown");
        assert!(unknown.contains("nothing received"), "{unknown}");
        let failed = tokio::time::timeout(within, events.recv()).await.unwrap();
        assert!(
            matches!(&failed, Some(SignalEvent::Failed(_, why)) if why == &unknown),
            "{failed:?}"
        );
        tokio::time::timeout(within, accepted.recv())
            .await
            .expect("the source connects again");
        task.abort();
    }

    #[test]
    fn the_interrogation_command_encodes() {
        let mut bytes = Vec::new();
        interrogation(47).to_bytes(&mut bytes).unwrap();
        // type 100, one object, COT activation, originator 0, CA 47 (LE), IOA 0, QOI 20.
        assert_eq!(bytes, [100, 1, 6, 0, 47, 0, 0, 0, 0, 20]);
    }
}
