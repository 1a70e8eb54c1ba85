//! OpenADR 2.0b messages on the wire: the few a pull-mode VEN sends (built as text, in the
//! element order the 2.0b schema requires: a VTN validates them) and what it reads back
//! (parsed with roxmltree into [`Incoming`]). Anything that does not parse is an [`XmlError`]
//! naming what was wrong; nothing half-read is acted on.

use std::fmt::Write as _;
use std::time::Duration;

use roxmltree::{Document, Node};

pub const OADR: &str = "http://openadr.org/oadr-2.0b/2012/07";
pub const EI: &str = "http://docs.oasis-open.org/ns/energyinterop/201110";
pub const PYLD: &str = "http://docs.oasis-open.org/ns/energyinterop/201110/payloads";
pub const EMIX: &str = "http://docs.oasis-open.org/ns/emix/2011/06";
pub const XCAL: &str = "urn:ietf:params:xml:ns:icalendar-2.0";
pub const STRM: &str = "urn:ietf:params:xml:ns:icalendar-2.0:stream";
pub const SCALE: &str = "http://docs.oasis-open.org/ns/emix/2011/06/siscale";

/// Why a VTN's message was not understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, XmlError> {
    Err(XmlError(what.into()))
}

/// Escapes text for an XML element body.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The envelope every message travels in (unsigned: signatures belong to TLS deployments).
fn payload(message: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<oadr:oadrPayload xmlns:oadr=\"{OADR}\"><oadr:oadrSignedObject oadr:Id=\"oadrSignedObject\"><oadr:{message} ei:schemaVersion=\"2.0b\" xmlns:ei=\"{EI}\" xmlns:pyld=\"{PYLD}\" xmlns:xcal=\"{XCAL}\" xmlns:strm=\"{STRM}\" xmlns:emix=\"{EMIX}\" xmlns:scale=\"{SCALE}\">{body}</oadr:{message}></oadr:oadrSignedObject></oadr:oadrPayload>"
    )
}

/// A time as the schema writes it (UTC, microseconds).
pub fn date_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn query_registration(request_id: &str) -> String {
    payload(
        "oadrQueryRegistration",
        &format!("<pyld:requestID>{}</pyld:requestID>", esc(request_id)),
    )
}

/// Registration in the pull model over simpleHttp; `ids` (registration, VEN) when re-registering.
pub fn create_party_registration(
    request_id: &str,
    ven_name: &str,
    ids: Option<(&str, &str)>,
) -> String {
    let mut body = format!("<pyld:requestID>{}</pyld:requestID>", esc(request_id));
    if let Some((registration, ven)) = ids {
        let _ = write!(
            body,
            "<ei:registrationID>{}</ei:registrationID><ei:venID>{}</ei:venID>",
            esc(registration),
            esc(ven)
        );
    }
    let _ = write!(
        body,
        "<oadr:oadrProfileName>2.0b</oadr:oadrProfileName><oadr:oadrTransportName>simpleHttp</oadr:oadrTransportName><oadr:oadrReportOnly>false</oadr:oadrReportOnly><oadr:oadrXmlSignature>false</oadr:oadrXmlSignature><oadr:oadrVenName>{}</oadr:oadrVenName><oadr:oadrHttpPullModel>true</oadr:oadrHttpPullModel>",
        esc(ven_name)
    );
    payload("oadrCreatePartyRegistration", &body)
}

/// What the VEN can report: the fleet's real power, in W, sampled every `period`.
pub struct FleetPowerReport<'a> {
    pub r_id: &'a str,
    pub specifier_id: &'a str,
    pub resource_id: &'a str,
    pub period: Duration,
}

pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("PT{}S", ms / 1000)
    } else {
        format!("PT{}.{:03}S", ms / 1000, ms % 1000)
    }
}

pub fn register_report(
    request_id: &str,
    ven_id: &str,
    report: &FleetPowerReport,
    now: jiff::Timestamp,
) -> String {
    let period = duration(report.period);
    payload(
        "oadrRegisterReport",
        &format!(
            "<pyld:requestID>{}</pyld:requestID><oadr:oadrReport><xcal:duration><xcal:duration>PT1H</xcal:duration></xcal:duration><oadr:oadrReportDescription><ei:rID>{}</ei:rID><ei:reportDataSource><ei:resourceID>{}</ei:resourceID></ei:reportDataSource><ei:reportType>usage</ei:reportType><oadr:customUnit><oadr:itemDescription>RealPower</oadr:itemDescription><oadr:itemUnits>W</oadr:itemUnits><scale:siScaleCode>none</scale:siScaleCode></oadr:customUnit><ei:readingType>Direct Read</ei:readingType><oadr:oadrSamplingRate><oadr:oadrMinPeriod>{period}</oadr:oadrMinPeriod><oadr:oadrMaxPeriod>{period}</oadr:oadrMaxPeriod><oadr:oadrOnChange>false</oadr:oadrOnChange></oadr:oadrSamplingRate></oadr:oadrReportDescription><ei:reportRequestID>0</ei:reportRequestID><ei:reportSpecifierID>{}</ei:reportSpecifierID><ei:reportName>METADATA_TELEMETRY_USAGE</ei:reportName><ei:createdDateTime>{}</ei:createdDateTime></oadr:oadrReport><ei:venID>{}</ei:venID>",
            esc(request_id),
            esc(report.r_id),
            esc(report.resource_id),
            esc(report.specifier_id),
            date_time(now),
            esc(ven_id)
        ),
    )
}

fn ei_response(code: u16, description: &str, request_id: &str) -> String {
    format!(
        "<ei:eiResponse><ei:responseCode>{code}</ei:responseCode><ei:responseDescription>{}</ei:responseDescription><pyld:requestID>{}</pyld:requestID></ei:eiResponse>",
        esc(description),
        esc(request_id)
    )
}

/// Acknowledges report requests: the ones now pending (being sent).
pub fn created_report(request_id: &str, pending: &[String], ven_id: &str) -> String {
    let mut ids = String::new();
    for p in pending {
        let _ = write!(ids, "<ei:reportRequestID>{}</ei:reportRequestID>", esc(p));
    }
    payload(
        "oadrCreatedReport",
        &format!(
            "{}<oadr:oadrPendingReports>{ids}</oadr:oadrPendingReports><ei:venID>{}</ei:venID>",
            ei_response(200, "OK", request_id),
            esc(ven_id)
        ),
    )
}

pub fn request_event(request_id: &str, ven_id: &str) -> String {
    payload(
        "oadrRequestEvent",
        &format!(
            "<pyld:eiRequestEvent><pyld:requestID>{}</pyld:requestID><ei:venID>{}</ei:venID></pyld:eiRequestEvent>",
            esc(request_id),
            esc(ven_id)
        ),
    )
}

/// The VEN's answer to one event: opt in or out.
#[derive(Clone, Debug, PartialEq)]
pub struct OptResponse {
    pub event_id: String,
    pub modification: u32,
    pub opt_in: bool,
    /// The requestID of the oadrDistributeEvent that carried the event.
    pub request_id: String,
}

pub fn created_event(responses: &[OptResponse], ven_id: &str) -> String {
    let mut body = String::new();
    for r in responses {
        let _ = write!(
            body,
            "<ei:eventResponse><ei:responseCode>200</ei:responseCode><ei:responseDescription>OK</ei:responseDescription><pyld:requestID>{}</pyld:requestID><ei:qualifiedEventID><ei:eventID>{}</ei:eventID><ei:modificationNumber>{}</ei:modificationNumber></ei:qualifiedEventID><ei:optType>{}</ei:optType></ei:eventResponse>",
            esc(&r.request_id),
            esc(&r.event_id),
            r.modification,
            if r.opt_in { "optIn" } else { "optOut" }
        );
    }
    payload(
        "oadrCreatedEvent",
        &format!(
            "<pyld:eiCreatedEvent>{}<ei:eventResponses>{body}</ei:eventResponses><ei:venID>{}</ei:venID></pyld:eiCreatedEvent>",
            ei_response(200, "OK", ""),
            esc(ven_id)
        ),
    )
}

pub fn poll(ven_id: &str) -> String {
    payload("oadrPoll", &format!("<ei:venID>{}</ei:venID>", esc(ven_id)))
}

/// One telemetry report: the fleet's real power `watts` at `at`.
pub struct UpdateReport<'a> {
    pub request_id: &'a str,
    pub report_request_id: &'a str,
    pub specifier_id: &'a str,
    pub r_id: &'a str,
    pub at: jiff::Timestamp,
    pub watts: f64,
}

pub fn update_report(u: &UpdateReport, ven_id: &str, now: jiff::Timestamp) -> String {
    let at = date_time(u.at);
    payload(
        "oadrUpdateReport",
        &format!(
            "<pyld:requestID>{}</pyld:requestID><oadr:oadrReport><xcal:dtstart><xcal:date-time>{at}</xcal:date-time></xcal:dtstart><strm:intervals><ei:interval><xcal:dtstart><xcal:date-time>{at}</xcal:date-time></xcal:dtstart><oadr:oadrReportPayload><ei:rID>{}</ei:rID><ei:payloadFloat><ei:value>{}</ei:value></ei:payloadFloat></oadr:oadrReportPayload></ei:interval></strm:intervals><ei:eiReportID>{}</ei:eiReportID><ei:reportRequestID>{}</ei:reportRequestID><ei:reportSpecifierID>{}</ei:reportSpecifierID><ei:reportName>TELEMETRY_USAGE</ei:reportName><ei:createdDateTime>{}</ei:createdDateTime></oadr:oadrReport><ei:venID>{}</ei:venID>",
            esc(u.request_id),
            esc(u.r_id),
            if u.watts.is_finite() { u.watts } else { 0.0 },
            esc(u.request_id),
            esc(u.report_request_id),
            esc(u.specifier_id),
            date_time(now),
            esc(ven_id)
        ),
    )
}

/// A report the VTN asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportRequest {
    pub report_request_id: String,
    pub specifier_id: String,
    /// How often it wants a value (None: whenever the VEN likes).
    pub granularity: Option<Duration>,
    pub r_ids: Vec<String>,
}

/// One event as distributed.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    pub modification: u32,
    /// far, near, active, completed, cancelled, none.
    pub status: String,
    pub test: bool,
    pub priority: u32,
    pub response_required: bool,
    pub start: jiff::Timestamp,
    pub signals: Vec<Signal>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub name: String,
    /// level, setpoint, delta, price, ...
    pub kind: String,
    /// Watts per unit of the values, from the signal's itemBase when it has a power unit.
    pub watts_per_unit: Option<f64>,
    pub intervals: Vec<Interval>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub start: jiff::Timestamp,
    /// Zero means open-ended.
    pub duration: Duration,
    pub value: f64,
}

/// A message from the VTN.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// oadrResponse (or an empty body): nothing to do.
    Response {
        code: u16,
        description: String,
    },
    CreatedPartyRegistration {
        code: u16,
        description: String,
        ven_id: Option<String>,
        registration_id: Option<String>,
        poll_every: Option<Duration>,
    },
    RegisteredReport {
        code: u16,
        requests: Vec<ReportRequest>,
    },
    CreateReport {
        request_id: String,
        requests: Vec<ReportRequest>,
    },
    DistributeEvent {
        code: u16,
        request_id: String,
        events: Vec<Event>,
    },
    RequestReregistration,
    CancelPartyRegistration,
    UpdatedReport {
        code: u16,
    },
    /// A message this VEN does not use, by name.
    Other(String),
}

fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
    })
}

fn descendant<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
    })
}

fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
    })
}

fn text(node: Option<Node>) -> Option<String> {
    node.and_then(|n| n.text()).map(|t| t.trim().to_string())
}

fn need(node: Node, ns: &str, name: &str, within: &str) -> Result<String, XmlError> {
    text(descendant(node, ns, name)).ok_or_else(|| XmlError(format!("{within} has no {name}")))
}

/// An ISO 8601 duration such as PT2M, PT0.5S or P1D.
pub fn parse_duration(s: &str) -> Result<Duration, XmlError> {
    let span: jiff::Span = s
        .trim()
        .parse()
        .map_err(|e| XmlError(format!("duration {s:?} is not ISO 8601 ({e})")))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| XmlError(format!("duration {s:?}: {e}")))?;
    Duration::try_from(d).map_err(|_| XmlError(format!("duration {s:?} is negative")))
}

fn parse_time(s: &str) -> Result<jiff::Timestamp, XmlError> {
    s.trim()
        .parse()
        .map_err(|e| XmlError(format!("date-time {s:?} is not RFC 3339 ({e})")))
}

fn code_of(node: Node) -> Result<(u16, String), XmlError> {
    let Some(response) = descendant(node, EI, "eiResponse") else {
        return err("no eiResponse");
    };
    let code = need(response, EI, "responseCode", "eiResponse")?;
    let code = code
        .parse()
        .map_err(|_| XmlError(format!("responseCode {code:?} is not a number")))?;
    Ok((
        code,
        text(child(response, EI, "responseDescription")).unwrap_or_default(),
    ))
}

fn report_requests(node: Node) -> Result<Vec<ReportRequest>, XmlError> {
    children(node, OADR, "oadrReportRequest")
        .map(|rr| {
            let specifier = child(rr, EI, "reportSpecifier")
                .ok_or_else(|| XmlError("oadrReportRequest has no reportSpecifier".into()))?;
            let granularity = descendant(specifier, XCAL, "granularity")
                .and_then(|g| text(child(g, XCAL, "duration")))
                .map(|d| parse_duration(&d))
                .transpose()?;
            Ok(ReportRequest {
                report_request_id: need(rr, EI, "reportRequestID", "oadrReportRequest")?,
                specifier_id: need(specifier, EI, "reportSpecifierID", "reportSpecifier")?,
                granularity: granularity.filter(|g| !g.is_zero()),
                r_ids: specifier
                    .descendants()
                    .filter(|n| n.is_element() && n.tag_name().name() == "rID")
                    .filter_map(|n| text(Some(n)))
                    .collect(),
            })
        })
        .collect()
}

/// The power unit of a signal's itemBase, as watts per unit, if it is one.
fn watts_per_unit(signal: Node) -> Option<f64> {
    let units = signal
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "itemUnits")
        .and_then(|n| n.text())?
        .trim()
        .to_string();
    if !units.eq_ignore_ascii_case("W") {
        return None;
    }
    let scale = signal
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "siScaleCode")
        .and_then(|n| n.text())
        .map(str::trim)
        .unwrap_or("none");
    Some(match scale {
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "m" => 1e-3,
        _ => 1.0,
    })
}

fn event(node: Node) -> Result<Event, XmlError> {
    let ei_event =
        child(node, EI, "eiEvent").ok_or_else(|| XmlError("oadrEvent has no eiEvent".into()))?;
    let descriptor = child(ei_event, EI, "eventDescriptor")
        .ok_or_else(|| XmlError("eiEvent has no eventDescriptor".into()))?;
    let id = need(descriptor, EI, "eventID", "eventDescriptor")?;
    let number = |name: &str| -> Result<u32, XmlError> {
        match text(child(descriptor, EI, name)) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| XmlError(format!("event {id}: {name} {v:?} is not a number"))),
        }
    };
    let modification = number("modificationNumber")?;
    let priority = number("priority")?;
    let period = child(ei_event, EI, "eiActivePeriod")
        .ok_or_else(|| XmlError(format!("event {id} has no eiActivePeriod")))?;
    let start = parse_time(&need(period, XCAL, "date-time", "eiActivePeriod")?)?;
    let mut signals = Vec::new();
    for s in child(ei_event, EI, "eiEventSignals")
        .into_iter()
        .flat_map(|n| children(n, EI, "eiEventSignal"))
    {
        let name = need(s, EI, "signalName", "eiEventSignal")?;
        let kind = need(s, EI, "signalType", "eiEventSignal")?;
        let mut at = start;
        let mut intervals = Vec::new();
        for i in descendant(s, STRM, "intervals")
            .into_iter()
            .flat_map(|n| children(n, EI, "interval"))
        {
            let duration =
                text(child(i, XCAL, "duration").and_then(|d| child(d, XCAL, "duration")))
                    .map(|d| parse_duration(&d))
                    .transpose()?
                    .unwrap_or_default();
            let interval_start = child(i, XCAL, "dtstart")
                .and_then(|d| text(child(d, XCAL, "date-time")))
                .map(|t| parse_time(&t))
                .transpose()?
                .unwrap_or(at);
            let value = need(i, EI, "value", "interval")?;
            let value: f64 = value.parse().map_err(|_| {
                XmlError(format!(
                    "event {id}: signal {name}: value {value:?} is not a number"
                ))
            })?;
            if !value.is_finite() {
                return err(format!(
                    "event {id}: signal {name}: value {value} is not finite"
                ));
            }
            let span =
                jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX);
            at = interval_start
                .saturating_add(span)
                .unwrap_or(interval_start);
            intervals.push(Interval {
                start: interval_start,
                duration,
                value,
            });
        }
        if intervals.is_empty() {
            return err(format!("event {id}: signal {name} has no intervals"));
        }
        signals.push(Signal {
            name,
            kind,
            watts_per_unit: watts_per_unit(s),
            intervals,
        });
    }
    Ok(Event {
        test: text(child(descriptor, EI, "testEvent")).is_some_and(|t| t != "false"),
        status: text(child(descriptor, EI, "eventStatus")).unwrap_or_else(|| "none".into()),
        response_required: text(child(node, OADR, "oadrResponseRequired")).as_deref()
            != Some("never"),
        id,
        modification,
        priority,
        start,
        signals,
    })
}

/// Parses a VTN's reply. An empty body is an empty oadrResponse (openleadr sends one).
pub fn parse(body: &str) -> Result<Incoming, XmlError> {
    if body.trim().is_empty() {
        return Ok(Incoming::Response {
            code: 200,
            description: String::new(),
        });
    }
    let doc = Document::parse(body).map_err(|e| XmlError(format!("malformed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "oadrPayload" || root.tag_name().namespace() != Some(OADR) {
        return err(format!(
            "not an OpenADR 2.0b payload (root element {:?})",
            root.tag_name().name()
        ));
    }
    let Some(message) =
        child(root, OADR, "oadrSignedObject").and_then(|s| s.children().find(|c| c.is_element()))
    else {
        return err("oadrPayload has no message");
    };
    Ok(match message.tag_name().name() {
        "oadrResponse" => {
            let (code, description) = code_of(message)?;
            Incoming::Response { code, description }
        }
        "oadrCreatedPartyRegistration" => {
            let (code, description) = code_of(message)?;
            Incoming::CreatedPartyRegistration {
                code,
                description,
                ven_id: text(child(message, EI, "venID")).filter(|v| !v.is_empty()),
                registration_id: text(child(message, EI, "registrationID"))
                    .filter(|v| !v.is_empty()),
                // Lenient: openleadr writes a sub-second frequency as "P". Without a readable
                // one the VEN polls at its own configured rate.
                poll_every: child(message, OADR, "oadrRequestedOadrPollFreq")
                    .and_then(|f| text(descendant(f, XCAL, "duration")))
                    .and_then(|d| parse_duration(&d).ok())
                    .filter(|d| !d.is_zero()),
            }
        }
        "oadrRegisteredReport" => Incoming::RegisteredReport {
            code: code_of(message)?.0,
            requests: report_requests(message)?,
        },
        "oadrCreateReport" => Incoming::CreateReport {
            request_id: need(message, PYLD, "requestID", "oadrCreateReport")?,
            requests: report_requests(message)?,
        },
        "oadrDistributeEvent" => Incoming::DistributeEvent {
            code: code_of(message)?.0,
            request_id: text(child(message, PYLD, "requestID")).unwrap_or_default(),
            events: children(message, OADR, "oadrEvent")
                .map(event)
                .collect::<Result<_, _>>()?,
        },
        "oadrRequestReregistration" => Incoming::RequestReregistration,
        "oadrCancelPartyRegistration" => Incoming::CancelPartyRegistration,
        "oadrUpdatedReport" => Incoming::UpdatedReport {
            code: code_of(message)?.0,
        },
        other => Incoming::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire samples of a real openleadr exchange (shared data), split into messages.
    fn sample(name: &str) -> String {
        let text = include_str!("../../../../data/openadr2_sample_exchange.xml.txt");
        let start = text
            .find(&format!("replied oadr:{name}\n"))
            .unwrap_or_else(|| panic!("no {name} in the samples"));
        let body = &text[start..];
        let body = &body[body.find('\n').unwrap() + 1..];
        body[..body.find("\n#####").unwrap_or(body.len())].to_string()
    }

    #[test]
    fn reads_the_registration_reply_of_a_real_vtn() {
        let m = parse(&sample("oadrCreatedPartyRegistration")).unwrap();
        assert_eq!(
            m,
            Incoming::CreatedPartyRegistration {
                code: 200,
                description: "OK".into(),
                ven_id: None,
                registration_id: None,
                poll_every: Some(Duration::from_secs(2)),
            }
        );
    }

    #[test]
    fn reads_the_events_of_a_real_vtn() {
        let Incoming::DistributeEvent {
            events,
            request_id,
            code,
        } = parse(&sample("oadrDistributeEvent")).unwrap()
        else {
            panic!("not a distribution")
        };
        assert_eq!(code, 200);
        assert_eq!(request_id, "3003794e-2006-4b96-9b1e-e61d5f6886ac");
        assert_eq!(events.len(), 2);
        let simple = &events[0];
        assert_eq!(simple.signals[0].name, "SIMPLE");
        assert_eq!(simple.signals[0].kind, "level");
        let values: Vec<f64> = simple.signals[0]
            .intervals
            .iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(values, [1.0, 0.0]);
        assert_eq!(
            simple.signals[0].intervals[1].start,
            "2026-11-23T19:35:27.884441Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
        );
        assert!(simple.response_required && !simple.test);
        let dispatch = &events[1];
        assert_eq!(dispatch.signals[0].name, "LOAD_DISPATCH");
        assert_eq!(dispatch.signals[0].intervals[0].value, 2500.0);
        assert_eq!(
            dispatch.signals[0].intervals[0].duration,
            Duration::from_secs(900)
        );
        assert_eq!(dispatch.signals[0].watts_per_unit, None);
    }

    #[test]
    fn reads_report_requests() {
        let Incoming::RegisteredReport { requests, .. } =
            parse(&sample("oadrRegisteredReport")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            requests,
            [ReportRequest {
                report_request_id: "cab28494-194c-420c-a200-6c20368a4f60".into(),
                specifier_id: "fleet_power".into(),
                granularity: Some(Duration::from_secs(5)),
                r_ids: vec!["fc8396ae-6652-4da7-80fd-ba1cba743ed6".into()],
            }]
        );
    }

    #[test]
    fn garbage_is_an_error_that_says_what_was_wrong() {
        for (body, says) in [
            ("<oadrPayload><unclosed>", "malformed XML"),
            (
                "<html><body>502 Bad Gateway</body></html>",
                "not an OpenADR",
            ),
            (
                &sample("oadrDistributeEvent")
                    .replace("<ei:value>2500.0</ei:value>", "<ei:value>lots</ei:value>"),
                "\"lots\" is not a number",
            ),
            (
                &sample("oadrDistributeEvent").replace("PT15M", "fifteen minutes"),
                "not ISO 8601",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.0.contains(says), "{e} should say {says:?}");
        }
    }

    #[test]
    fn what_it_sends_parses_back_and_escapes_text() {
        let m = create_party_registration("r<1>", "fleet & co", None);
        let doc = Document::parse(&m).unwrap();
        let name = doc
            .descendants()
            .find(|n| n.tag_name().name() == "oadrVenName")
            .unwrap();
        assert_eq!(name.text(), Some("fleet & co"));
        for m in [
            poll("v"),
            request_event("r", "v"),
            created_report("r", &["a".into()], "v"),
            created_event(
                &[OptResponse {
                    event_id: "e".into(),
                    modification: 2,
                    opt_in: false,
                    request_id: "r".into(),
                }],
                "v",
            ),
            query_registration("q"),
        ] {
            Document::parse(&m).unwrap_or_else(|e| panic!("{e}: {m}"));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT2S").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("PT1H30M").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_duration("P1D").unwrap(), Duration::from_secs(86400));
        assert_eq!(duration(Duration::from_millis(1500)), "PT1.500S");
        assert!(parse_duration("-PT1S").is_err());
    }
}
