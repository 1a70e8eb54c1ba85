//! OpenADR 2.0b VEN (simpleHttp, pull model): registers with the utility's VTN, offers and sends
//! the fleet's load as a telemetry report, polls for events, opts in or out of each, and turns
//! the active events into the power the fleet may draw (`LOAD_DISPATCH` setpoints and deltas,
//! `SIMPLE` levels mapped to configured caps, `ELECTRICITY_PRICE` against a ceiling). The cap is
//! reported as a reading after every successful exchange and at every interval boundary, so an
//! event acts at its start time to the second, and an event that starts at once acts as soon as
//! the poll that brought it returns. Event times are the VTN's wall-clock times; a sped-up daemon
//! clock only stamps the readings.
//!
//! A VTN that cannot be reached, refuses the registration or answers an error code is a
//! `Failed` source; one that sends XML this VEN cannot read is `Rejected` (the message is logged,
//! nothing in it is used). Either way the VEN starts over with a back-off.

pub mod events;
pub mod xml;

use std::time::Duration;

use hashsink_clock::ScaledClock;
use hashsink_signals::{Reading, SourceId};
use hashsink_units::Watts;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::FleetReport;
use crate::SignalEvent;
use events::{EventBook, EventMapping};
use xml::{FleetPowerReport, Incoming, ReportRequest, UpdateReport};

/// A configured VEN.
#[derive(Clone, Debug)]
pub struct OpenAdrSource {
    pub name: String,
    /// The VTN's base URL, such as `http://vtn.utility.example:8080/OpenADR2/Simple/2.0b`.
    pub vtn_url: String,
    pub ven_name: String,
    /// Poll this often; None: as often as the VTN asks.
    pub poll: Option<Duration>,
    /// The source's staleness limit: polls are kept well inside it whatever the VTN asks.
    pub max_age: Duration,
    pub timeout: Duration,
    pub mapping: EventMapping,
    /// Offer the fleet's load as a TELEMETRY_USAGE report.
    pub report: bool,
}

/// Why a session with the VTN ended.
enum Fault {
    Transport(String),
    Malformed(String),
}

const R_ID: &str = "fleet_load";
const SPECIFIER: &str = "fleet_power";

struct Registered {
    ven_id: String,
    poll_every: Duration,
}

struct Session<'a> {
    source: &'a OpenAdrSource,
    http: &'a reqwest::Client,
    ven_id: String,
    requests: u64,
    /// The longest poll interval (wall time) that keeps readings inside `max_age`.
    max_poll: Duration,
}

impl Session<'_> {
    fn request_id(&mut self) -> String {
        self.requests += 1;
        format!("hashsink-{}-{}", std::process::id(), self.requests)
    }

    async fn exchange(&self, service: &str, body: String) -> Result<Incoming, Fault> {
        let url = format!("{}/{service}", self.source.vtn_url.trim_end_matches('/'));
        let reply = self
            .http
            .post(&url)
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| Fault::Transport(format!("{url}: {}", error_chain(&e))))?;
        let status = reply.status();
        let text = read_reply(reply, &url).await?;
        if !status.is_success() {
            return Err(Fault::Transport(format!(
                "{url}: HTTP {status}: {}",
                text.chars().take(120).collect::<String>()
            )));
        }
        xml::parse(&text).map_err(|e| Fault::Malformed(format!("VTN reply to {service}: {e}")))
    }

    async fn register(&mut self) -> Result<Registered, Fault> {
        let id = self.request_id();
        let asked = match self
            .exchange("EiRegisterParty", xml::query_registration(&id))
            .await?
        {
            Incoming::CreatedPartyRegistration { poll_every, .. } => poll_every,
            _ => None,
        };
        let id = self.request_id();
        let body = xml::create_party_registration(&id, &self.source.ven_name, None);
        match self.exchange("EiRegisterParty", body).await? {
            Incoming::CreatedPartyRegistration {
                code: 200,
                ven_id: Some(ven_id),
                registration_id: Some(_),
                poll_every,
                ..
            } => {
                let asked = poll_every.or(asked).unwrap_or(Duration::from_secs(10));
                let limit = self.max_poll;
                let mut poll_every = self.source.poll.unwrap_or(asked);
                if poll_every > limit {
                    warn!(source = %self.source.name, "the VTN asks for a poll every {asked:?}, longer than half of max_age_s: polling every {limit:?}");
                    poll_every = limit;
                }
                Ok(Registered {
                    ven_id,
                    poll_every: poll_every.max(Duration::from_millis(100)),
                })
            }
            Incoming::CreatedPartyRegistration {
                code, description, ..
            } => Err(Fault::Transport(format!(
                "the VTN refused the registration of {:?} (code {code} {description})",
                self.source.ven_name
            ))),
            other => Err(Fault::Malformed(format!(
                "the VTN answered the registration with {}",
                name_of(&other)
            ))),
        }
    }

    /// Offers the fleet's load; returns what the VTN asked to receive.
    async fn register_report(&mut self) -> Result<Vec<ReportRequest>, Fault> {
        let id = self.request_id();
        let offer = FleetPowerReport {
            r_id: R_ID,
            specifier_id: SPECIFIER,
            resource_id: "fleet",
            period: Duration::from_secs(5),
        };
        let body = xml::register_report(&id, &self.ven_id, &offer, jiff::Timestamp::now());
        match self.exchange("EiReport", body).await? {
            Incoming::RegisteredReport {
                code: 200,
                requests,
            } => {
                self.created_report(&id, &requests).await?;
                Ok(requests)
            }
            Incoming::RegisteredReport { code, .. } => Err(Fault::Transport(format!(
                "the VTN answered the report registration with code {code}"
            ))),
            other => Err(Fault::Malformed(format!(
                "the VTN answered oadrRegisterReport with {}",
                name_of(&other)
            ))),
        }
    }

    async fn created_report(
        &mut self,
        request_id: &str,
        requests: &[ReportRequest],
    ) -> Result<(), Fault> {
        if requests.is_empty() {
            return Ok(());
        }
        let pending: Vec<String> = requests
            .iter()
            .map(|r| r.report_request_id.clone())
            .collect();
        self.exchange(
            "EiReport",
            xml::created_report(request_id, &pending, &self.ven_id),
        )
        .await
        .map(drop)
    }
}

fn name_of(m: &Incoming) -> String {
    match m {
        Incoming::Other(name) => name.clone(),
        m => format!("{m:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("?")
            .to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// What the VEN owes the daemon and the VTN while registered.
struct Live<'a> {
    id: SourceId,
    name: &'a str,
    clock: ScaledClock,
    tx: &'a mpsc::UnboundedSender<SignalEvent>,
    book: EventBook,
    last_cap: Option<(Watts, Vec<String>)>,
}

impl Live<'_> {
    /// Sends the cap now in force as a fresh reading, logging when it changes.
    fn emit(&mut self, mapping: &EventMapping) {
        let (cap, from) = self.book.cap_at(jiff::Timestamp::now(), mapping);
        let from: Vec<String> = from.into_iter().map(str::to_string).collect();
        if self.last_cap.as_ref() != Some(&(cap, from.clone())) {
            if from.is_empty() {
                info!(source = %self.name, "openadr: no active event, the fleet may draw {:.3} MW", cap.mw());
            } else {
                info!(source = %self.name, events = ?from, "openadr: events active, the fleet may draw {:.3} MW", cap.mw());
            }
            self.last_cap = Some((cap, from));
        }
        let _ = self.tx.send(SignalEvent::Reading(Reading {
            source: self.id,
            at: self.clock.now(),
            watts: cap.w(),
        }));
    }
}

impl OpenAdrSource {
    /// Runs the VEN until the daemon stops.
    pub async fn run(
        self,
        id: SourceId,
        clock: ScaledClock,
        events: mpsc::UnboundedSender<SignalEvent>,
        fleet: watch::Receiver<FleetReport>,
    ) {
        // Plain bodies only (the 4 MiB cap counts decompressed bytes in any case).
        let http = match reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .no_gzip()
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                let _ = events.send(SignalEvent::Failed(id, format!("HTTP client: {e}")));
                return;
            }
        };
        let mut backoff = Duration::from_millis(500);
        loop {
            let started = std::time::Instant::now();
            let fault = self.session(&http, id, clock, &events, &fleet).await;
            let _ = events.send(match fault {
                Fault::Transport(e) => SignalEvent::Failed(id, e),
                Fault::Malformed(e) => SignalEvent::Rejected(id, e),
            });
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(500);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn session(
        &self,
        http: &reqwest::Client,
        id: SourceId,
        clock: ScaledClock,
        tx: &mpsc::UnboundedSender<SignalEvent>,
        fleet: &watch::Receiver<FleetReport>,
    ) -> Fault {
        let mut session = Session {
            source: self,
            http,
            ven_id: String::new(),
            requests: 0,
            max_poll: clock.wall_duration(self.max_age) / 2,
        };
        let mut live = Live {
            id,
            name: &self.name,
            clock,
            tx,
            book: EventBook::default(),
            last_cap: None,
        };
        // Re-registration (asked by the VTN) starts here again without dropping the source.
        loop {
            match self.registered(&mut session, &mut live, fleet).await {
                Ok(()) => {
                    info!(source = %self.name, "openadr: the VTN asks this VEN to register again")
                }
                Err(fault) => return fault,
            }
        }
    }

    /// One registration: returns Ok when the VTN asks for a new one.
    async fn registered(
        &self,
        session: &mut Session<'_>,
        live: &mut Live<'_>,
        fleet: &watch::Receiver<FleetReport>,
    ) -> Result<(), Fault> {
        let registered = session.register().await?;
        session.ven_id = registered.ven_id.clone();
        info!(source = %self.name, ven_id = %registered.ven_id, "openadr: registered with the VTN, polling every {:?}", registered.poll_every);
        let mut reports = if self.report {
            session.register_report().await?
        } else {
            Vec::new()
        };
        let rid = session.request_id();
        let first = session
            .exchange("EiEvent", xml::request_event(&rid, &session.ven_id))
            .await?;
        if self.handle(session, live, first, &mut reports).await? {
            return Ok(());
        }
        live.emit(&self.mapping);
        let start = tokio::time::Instant::now();
        let mut next_poll = start + registered.poll_every;
        let every = |r: &ReportRequest| {
            r.granularity
                .unwrap_or(Duration::from_secs(10))
                .max(Duration::from_secs(1))
        };
        let mut next_report: Vec<tokio::time::Instant> =
            reports.iter().map(|r| start + every(r)).collect();
        let mut pulse = crate::LoopPulse::new(crate::LoopPulse::STALE);
        loop {
            let boundary = live
                .book
                .next_change_after(jiff::Timestamp::now())
                .map(|t| {
                    let wait = jiff::Timestamp::now().duration_until(t);
                    tokio::time::Instant::now()
                        + Duration::try_from(wait).unwrap_or_default()
                        + Duration::from_millis(1)
                });
            let report_due = next_report.iter().min().copied();
            let wake = [Some(next_poll), boundary, report_due]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_poll);
            tokio::time::sleep_until(wake).await;
            let now = tokio::time::Instant::now();
            if now >= next_poll {
                next_poll = now + registered.poll_every;
                let reply = session
                    .exchange("OadrPoll", xml::poll(&session.ven_id))
                    .await?;
                if self.handle(session, live, reply, &mut reports).await? {
                    return Ok(());
                }
                next_report.resize(reports.len(), now);
                live.emit(&self.mapping);
            } else if boundary.is_some_and(|b| now >= b) {
                live.emit(&self.mapping);
            }
            for (i, r) in reports.iter().enumerate() {
                if now < next_report[i] {
                    continue;
                }
                next_report[i] = now + every(r);
                let FleetReport {
                    load, heartbeat, ..
                } = *fleet.borrow();
                if !pulse.alive(heartbeat, now.into_std()) {
                    // The VTN's view of the dead-man chain: the reports stop with the loop.
                    warn!(source = %self.name, "openadr: the control loop has not turned for {:?}; report withheld", crate::LoopPulse::STALE);
                    continue;
                }
                let load = load.w();
                let request_id = session.request_id();
                let body = xml::update_report(
                    &UpdateReport {
                        request_id: &request_id,
                        report_request_id: &r.report_request_id,
                        specifier_id: &r.specifier_id,
                        r_id: r.r_ids.first().map(String::as_str).unwrap_or(R_ID),
                        at: jiff::Timestamp::now(),
                        watts: load,
                    },
                    &session.ven_id,
                    jiff::Timestamp::now(),
                );
                match session.exchange("EiReport", body).await? {
                    Incoming::UpdatedReport { code: 200 }
                    | Incoming::Response { code: 200, .. } => {
                        debug!(source = %self.name, "openadr: reported {load:.0} W")
                    }
                    other => {
                        warn!(source = %self.name, "openadr: the VTN answered a report with {other:?}")
                    }
                }
            }
        }
    }

    /// Acts on one message from the VTN; Ok(true) when it asks for a new registration.
    async fn handle(
        &self,
        session: &mut Session<'_>,
        live: &mut Live<'_>,
        message: Incoming,
        reports: &mut Vec<ReportRequest>,
    ) -> Result<bool, Fault> {
        match message {
            Incoming::Response { code: 200, .. } => {}
            Incoming::Response { code, description } => {
                return Err(Fault::Transport(format!(
                    "the VTN answered with code {code} {description}"
                )));
            }
            Incoming::DistributeEvent {
                code: 200,
                request_id,
                events,
            } => {
                let now = jiff::Timestamp::now();
                let starts: Vec<(String, jiff::Timestamp)> =
                    events.iter().map(|e| (e.id.clone(), e.start)).collect();
                let changes = live.book.distribute(&request_id, events, &self.mapping);
                for (event, opted_out) in &changes.received {
                    let start = starts.iter().find(|(id, _)| id == event).map(|s| s.1);
                    let when = match start {
                        Some(s) if s <= now => "starts now".to_string(),
                        Some(s) => {
                            format!("starts in {:.1} s", now.duration_until(s).as_secs_f64())
                        }
                        None => String::new(),
                    };
                    match opted_out {
                        None => {
                            info!(source = %self.name, event = %event, "openadr: event received, opted in, {when}")
                        }
                        Some(why) => {
                            warn!(source = %self.name, event = %event, "openadr: event opted out: {why}")
                        }
                    }
                }
                for event in &changes.ended {
                    info!(source = %self.name, event = %event, "openadr: event over (no longer distributed)");
                }
                if !changes.responses.is_empty() {
                    // The cap first: an event that starts now is acted on before the answer.
                    live.emit(&self.mapping);
                    let body = xml::created_event(&changes.responses, &session.ven_id);
                    session.exchange("EiEvent", body).await?;
                }
            }
            Incoming::DistributeEvent { code, .. } => {
                return Err(Fault::Transport(format!(
                    "the VTN distributed events with code {code}"
                )));
            }
            Incoming::CreateReport {
                request_id,
                requests,
            } => {
                session.created_report(&request_id, &requests).await?;
                for r in requests {
                    reports.retain(|k| k.report_request_id != r.report_request_id);
                    reports.push(r);
                }
            }
            Incoming::RequestReregistration | Incoming::CancelPartyRegistration => {
                return Ok(true);
            }
            other => {
                warn!(source = %self.name, "openadr: ignored a {} from the VTN", name_of(&other));
            }
        }
        Ok(false)
    }
}
/// The most a VTN's reply may hold: an event list is kilobytes; more is a broken or hostile VTN.
const MAX_VTN_REPLY: usize = 4 << 20;

/// A VTN's reply as text, read up to `MAX_VTN_REPLY` bytes.
async fn read_reply(mut reply: reqwest::Response, url: &str) -> Result<String, Fault> {
    let transport = |e: reqwest::Error| Fault::Transport(format!("{url}: {}", error_chain(&e)));
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_VTN_REPLY {
            return Err(Fault::Malformed(format!(
                "{url}: reply longer than {MAX_VTN_REPLY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| Fault::Malformed(format!("{url}: reply is not UTF-8")))
}
