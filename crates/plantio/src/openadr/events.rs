//! The VEN's book of OpenADR events and what they allow the fleet to draw. Each distribution
//! replaces the book (2.0b: an event missing from it is over); an event the VEN can act on is
//! opted in, one it cannot (an unknown signal, a price with no ceiling configured) opted out and
//! ignored; test and cancelled events are acknowledged and not acted on. At any instant the cap
//! is the lowest of the active events' caps, or `no_event` when none is active.

use std::collections::BTreeMap;
use std::time::Duration;

use hashsink_units::Watts;

use super::xml::{Event, OptResponse, Signal};

/// How events translate into the power the fleet may draw.
#[derive(Clone, Debug, PartialEq)]
pub struct EventMapping {
    /// The cap when no event is active (the programme's normal allowance).
    pub no_event: Watts,
    /// Watts per unit of a `LOAD_DISPATCH` value when the signal names no unit.
    pub default_watts_per_unit: f64,
    /// The caps for `SIMPLE` levels 0 (normal), 1 (moderate), 2 (high), 3 (special).
    pub simple_levels: [Watts; 4],
    /// `ELECTRICITY_PRICE`: above this price (in the event's units) the fleet draws nothing.
    pub price_ceiling: Option<f64>,
}

impl EventMapping {
    /// The cap one signal value means, or why the VEN cannot act on the signal.
    pub fn cap(&self, signal: &Signal, value: f64) -> Result<Watts, String> {
        let per_unit = signal.watts_per_unit.unwrap_or(self.default_watts_per_unit);
        match (signal.name.as_str(), signal.kind.as_str()) {
            ("LOAD_DISPATCH", "setpoint") => Ok(Watts((value * per_unit).max(0.0))),
            ("LOAD_DISPATCH", "delta") => Ok(Watts((self.no_event.0 + value * per_unit).max(0.0))),
            ("SIMPLE", "level") => {
                let level = value.round();
                if (0.0..=3.0).contains(&level) {
                    Ok(self.simple_levels[level as usize])
                } else {
                    Err(format!("SIMPLE level {value} is not 0-3"))
                }
            }
            ("ELECTRICITY_PRICE", "price") => match self.price_ceiling {
                Some(ceiling) if value > ceiling => Ok(Watts(0.0)),
                Some(_) => Ok(self.no_event),
                None => Err("ELECTRICITY_PRICE needs `price_ceiling` in the signal's table".into()),
            },
            (name, kind) => Err(format!(
                "signal {name} ({kind}) is not one this VEN acts on"
            )),
        }
    }

    /// Whether every value of every signal of `event` can be acted on.
    fn judge(&self, event: &Event) -> Result<(), String> {
        if event.signals.is_empty() {
            return Err("the event has no signal".into());
        }
        for s in &event.signals {
            for i in &s.intervals {
                self.cap(s, i.value)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Booked {
    event: Event,
    /// Why the VEN opted out, if it did.
    opted_out: Option<String>,
}

impl Booked {
    fn acted_on(&self) -> bool {
        self.opted_out.is_none() && !self.event.test && self.event.status != "cancelled"
    }
}

/// What a distribution changed, for the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// New or modified events, with why each was opted out (None: opted in).
    pub received: Vec<(String, Option<String>)>,
    /// Events gone from the book.
    pub ended: Vec<String>,
    /// The responses to send (events that asked for one and are new or modified).
    pub responses: Vec<OptResponse>,
}

#[derive(Clone, Debug, Default)]
pub struct EventBook {
    events: BTreeMap<String, Booked>,
}

impl EventBook {
    /// Takes a distribution (the whole current set of events from the VTN).
    pub fn distribute(
        &mut self,
        request_id: &str,
        events: Vec<Event>,
        mapping: &EventMapping,
    ) -> Changes {
        let mut changes = Changes::default();
        let mut next = BTreeMap::new();
        for event in events {
            let known = self
                .events
                .remove(&event.id)
                .filter(|b| b.event.modification == event.modification);
            let booked = match known {
                Some(mut b) => {
                    b.event = event;
                    b
                }
                None => {
                    let opted_out = mapping.judge(&event).err();
                    changes.received.push((event.id.clone(), opted_out.clone()));
                    if event.response_required {
                        changes.responses.push(OptResponse {
                            event_id: event.id.clone(),
                            modification: event.modification,
                            opt_in: opted_out.is_none(),
                            request_id: request_id.to_string(),
                        });
                    }
                    Booked { event, opted_out }
                }
            };
            next.insert(booked.event.id.clone(), booked);
        }
        changes.ended = std::mem::take(&mut self.events).into_keys().collect();
        self.events = next;
        changes
    }

    /// The cap at `t` and the events it comes from (empty: no event is active).
    pub fn cap_at(&self, t: jiff::Timestamp, mapping: &EventMapping) -> (Watts, Vec<&str>) {
        let mut cap: Option<Watts> = None;
        let mut from = Vec::new();
        for b in self.events.values().filter(|b| b.acted_on()) {
            for s in &b.event.signals {
                let Some(i) = s.intervals.iter().find(|i| {
                    i.start <= t && (i.duration.is_zero() || t < add(i.start, i.duration))
                }) else {
                    continue;
                };
                if let Ok(c) = mapping.cap(s, i.value) {
                    if cap.is_none_or(|m| c < m) {
                        cap = Some(c);
                    }
                    from.push(b.event.id.as_str());
                }
            }
        }
        (cap.unwrap_or(mapping.no_event), from)
    }

    /// The first instant after `t` at which an acted-on interval starts or ends.
    pub fn next_change_after(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        self.events
            .values()
            .filter(|b| b.acted_on())
            .flat_map(|b| b.event.signals.iter())
            .flat_map(|s| s.intervals.iter())
            .flat_map(|i| {
                [
                    Some(i.start),
                    (!i.duration.is_zero()).then(|| add(i.start, i.duration)),
                ]
            })
            .flatten()
            .filter(|&x| x > t)
            .min()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

fn add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::xml::Interval;
    use super::*;

    fn ts(s: u64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s as i64).unwrap()
    }

    fn mapping() -> EventMapping {
        EventMapping {
            no_event: Watts::from_mw(10.0),
            default_watts_per_unit: 1e3,
            simple_levels: [
                Watts::from_mw(10.0),
                Watts::from_mw(5.0),
                Watts(0.0),
                Watts(0.0),
            ],
            price_ceiling: None,
        }
    }

    fn event(id: &str, name: &str, kind: &str, values: &[(u64, u64, f64)]) -> Event {
        Event {
            id: id.into(),
            modification: 0,
            status: "far".into(),
            test: false,
            priority: 0,
            response_required: true,
            start: ts(values[0].0),
            signals: vec![Signal {
                name: name.into(),
                kind: kind.into(),
                watts_per_unit: None,
                intervals: values
                    .iter()
                    .map(|&(start, secs, value)| Interval {
                        start: ts(start),
                        duration: Duration::from_secs(secs),
                        value,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn the_cap_follows_the_active_intervals_and_the_lowest_wins() {
        let m = mapping();
        let mut book = EventBook::default();
        let changes = book.distribute(
            "r1",
            vec![
                event(
                    "a",
                    "LOAD_DISPATCH",
                    "setpoint",
                    &[(100, 60, 6000.0), (160, 60, 2000.0)],
                ),
                event("b", "SIMPLE", "level", &[(130, 60, 1.0)]),
            ],
            &m,
        );
        assert_eq!(changes.responses.len(), 2);
        assert!(
            changes
                .responses
                .iter()
                .all(|r| r.opt_in && r.request_id == "r1")
        );
        assert_eq!(book.cap_at(ts(50), &m).0, Watts::from_mw(10.0));
        assert_eq!(book.cap_at(ts(100), &m), (Watts::from_mw(6.0), vec!["a"]));
        // SIMPLE 1 (5 MW) is lower than the 6 MW setpoint.
        assert_eq!(book.cap_at(ts(140), &m).0, Watts::from_mw(5.0));
        assert_eq!(book.cap_at(ts(170), &m).0, Watts::from_mw(2.0));
        assert_eq!(book.cap_at(ts(220), &m).0, Watts::from_mw(10.0));
        assert_eq!(book.next_change_after(ts(0)), Some(ts(100)));
        assert_eq!(book.next_change_after(ts(100)), Some(ts(130)));
        assert_eq!(book.next_change_after(ts(220)), None);
    }

    #[test]
    fn unknown_signals_and_prices_without_a_ceiling_are_opted_out_and_ignored() {
        let m = mapping();
        let mut book = EventBook::default();
        let changes = book.distribute(
            "r",
            vec![
                event("p", "ELECTRICITY_PRICE", "price", &[(0, 100, 0.5)]),
                event("x", "BID_LOAD", "setpoint", &[(0, 100, 1.0)]),
                event("s", "SIMPLE", "level", &[(0, 100, 7.0)]),
            ],
            &m,
        );
        assert!(changes.responses.iter().all(|r| !r.opt_in));
        assert!(
            changes.received[0]
                .1
                .as_ref()
                .unwrap()
                .contains("price_ceiling")
        );
        assert_eq!(book.cap_at(ts(10), &m).0, Watts::from_mw(10.0));
        let mut m = m;
        m.price_ceiling = Some(0.2);
        let mut book = EventBook::default();
        book.distribute(
            "r",
            vec![event(
                "p",
                "ELECTRICITY_PRICE",
                "price",
                &[(0, 100, 0.5), (100, 100, 0.1)],
            )],
            &m,
        );
        assert_eq!(book.cap_at(ts(10), &m).0, Watts(0.0));
        assert_eq!(book.cap_at(ts(110), &m).0, Watts::from_mw(10.0));
    }

    #[test]
    fn a_redistribution_answers_only_what_changed_and_drops_what_is_gone() {
        let m = mapping();
        let mut book = EventBook::default();
        book.distribute(
            "r1",
            vec![event("a", "SIMPLE", "level", &[(0, 100, 2.0)])],
            &m,
        );
        assert_eq!(book.cap_at(ts(10), &m).0, Watts(0.0));
        let same = book.distribute(
            "r2",
            vec![event("a", "SIMPLE", "level", &[(0, 100, 2.0)])],
            &m,
        );
        assert!(same.responses.is_empty() && same.ended.is_empty());
        let mut modified = event("a", "SIMPLE", "level", &[(0, 100, 1.0)]);
        modified.modification = 1;
        let changed = book.distribute("r3", vec![modified.clone()], &m);
        assert_eq!(changed.responses[0].modification, 1);
        assert_eq!(book.cap_at(ts(10), &m).0, Watts::from_mw(5.0));
        modified.status = "cancelled".into();
        modified.modification = 2;
        book.distribute("r4", vec![modified], &m);
        assert_eq!(book.cap_at(ts(10), &m).0, Watts::from_mw(10.0));
        let gone = book.distribute("r5", vec![], &m);
        assert_eq!(gone.ended, ["a"]);
        assert!(book.is_empty());
    }

    #[test]
    fn test_events_are_acknowledged_and_not_acted_on() {
        let m = mapping();
        let mut book = EventBook::default();
        let mut e = event("t", "SIMPLE", "level", &[(0, 100, 3.0)]);
        e.test = true;
        let changes = book.distribute("r", vec![e], &m);
        assert!(changes.responses[0].opt_in);
        assert_eq!(book.cap_at(ts(10), &m).0, Watts::from_mw(10.0));
    }

    #[test]
    fn units_from_the_signal_win_over_the_default() {
        let m = mapping();
        let mut s = event("a", "LOAD_DISPATCH", "setpoint", &[(0, 10, 2.5)]).signals[0].clone();
        s.watts_per_unit = Some(1e6);
        assert_eq!(m.cap(&s, 2.5).unwrap(), Watts::from_mw(2.5));
        s.kind = "delta".into();
        assert_eq!(m.cap(&s, -4.0).unwrap(), Watts::from_mw(6.0));
        assert_eq!(m.cap(&s, -40.0).unwrap(), Watts(0.0));
    }
}
