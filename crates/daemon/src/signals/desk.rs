//! The plant signals as the daemon's loop sees them: every source's event judged as it arrives
//! (no lock shared with the sources), complaints logged once per change, the trip flags of
//! every source held as one protection state, and each source's standing shown in the status.

use hashsink_plantio::{SignalEvent, TripFlag};
use hashsink_signals::{Judge, SourceId, Standing, TrustConfig, Verdict};
use hashsink_units::Timestamp;
use tracing::{debug, info, warn};

use crate::status::{SignalStatus, Status};

/// What the loop does with a source's event.
#[derive(Debug, PartialEq)]
pub enum SignalAction {
    /// Nothing beyond what the desk did (logged, judged).
    None,
    /// A trusted reading: feed the verdict to the controller now, not at the next tick.
    FeedNow,
    /// The plant's protection changed (a trip asserted, cleared, or unreadable).
    Protection(Protection),
}

/// The plant's protection as the trip flags of every source give it. A trip is a held
/// inhibit, not an operator's command: it holds for as long as any source asserts it, and an
/// operator's resume does not lift it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    Clear,
    /// A trip point cannot be read (these sources): the fleet goes to its fail-safe load.
    Unknown(Vec<String>),
    /// Asserted by these sources: the whole fleet is shed and stays shed.
    Tripped(Vec<String>),
}

impl Protection {
    /// The sources that hold the fleet down, and how ("tripped by", "trip unreadable at").
    pub fn describe(&self) -> Option<String> {
        match self {
            Protection::Clear => None,
            Protection::Unknown(s) => Some(format!("trip unreadable at {}", s.join(", "))),
            Protection::Tripped(s) => Some(format!("tripped by {}", s.join(", "))),
        }
    }
}

/// The plant signals as the daemon's loop sees them: the judge, each source's name, the last
/// complaint logged per source (a steady fault is logged once, not per poll), each source's
/// trip flag as last reported and the protection they make together (acted on when it changes).
pub struct SignalDesk {
    judge: Judge,
    names: Vec<String>,
    complaints: Vec<Option<String>>,
    trips: Vec<TripFlag>,
    protection: Protection,
    /// Whether the last verdict had a reading (None before the first).
    had_verdict: Option<bool>,
}

impl SignalDesk {
    pub fn new(trust: TrustConfig) -> Self {
        let names: Vec<String> = trust.sources.iter().map(|s| s.name.clone()).collect();
        Self {
            judge: Judge::new(trust),
            complaints: vec![None; names.len()],
            trips: vec![TripFlag::Clear; names.len()],
            protection: Protection::Clear,
            names,
            had_verdict: None,
        }
    }

    pub fn verdict(&self, now: Timestamp) -> Verdict {
        self.judge.verdict(now)
    }

    /// Judges a source's event at `now`, logging a new complaint (or its end) once.
    pub fn on_event(&mut self, now: Timestamp, event: SignalEvent) -> SignalAction {
        let (id, complaint, action) = match event {
            SignalEvent::Reading(r) => match self.judge.observe(now, r) {
                Ok(()) => (r.source, None, SignalAction::FeedNow),
                Err(d) => {
                    let key = format!("{:?}", std::mem::discriminant(&d));
                    let complaint = (key, format!("reading rejected: {d}"));
                    (r.source, Some(complaint), SignalAction::None)
                }
            },
            SignalEvent::Trip(id, set) => return self.trip(id, set),
            SignalEvent::Failed(id, e) => {
                self.judge.failed(id, Some(e.clone()));
                let complaint = (format!("failed: {e}"), format!("source failed: {e}"));
                (id, Some(complaint), SignalAction::None)
            }
            SignalEvent::Rejected(id, e) => {
                self.judge.malformed(id, e.clone());
                let complaint = (format!("malformed: {e}"), format!("reading rejected: {e}"));
                (id, Some(complaint), SignalAction::None)
            }
        };
        let i = id.0 as usize;
        let key = complaint.as_ref().map(|c| c.0.clone());
        if key != self.complaints[i] {
            match &complaint {
                Some((_, message)) => warn!(source = %self.names[i], "{message}"),
                None => info!(source = %self.names[i], "source trusted again"),
            }
            self.complaints[i] = key;
        }
        action
    }

    /// A source's trip flag; acted on when the protection of all of them changes (a source
    /// that reports its flag on every poll changes nothing by it).
    fn trip(&mut self, id: SourceId, flag: TripFlag) -> SignalAction {
        let name = &self.names[id.0 as usize];
        if let TripFlag::Unknown(why) = &flag {
            warn!(source = %name, %why, "the plant's trip point cannot be read");
        }
        self.trips[id.0 as usize] = flag;
        let holding = |want: fn(&TripFlag) -> bool| -> Vec<String> {
            (self.names.iter().zip(&self.trips))
                .filter(|(_, f)| want(f))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let tripped = holding(|f| *f == TripFlag::Set);
        let unknown = holding(|f| matches!(f, TripFlag::Unknown(_)));
        let protection = if !tripped.is_empty() {
            Protection::Tripped(tripped)
        } else if !unknown.is_empty() {
            Protection::Unknown(unknown)
        } else {
            Protection::Clear
        };
        if protection == self.protection {
            return SignalAction::None;
        }
        match &protection {
            Protection::Tripped(s) => {
                warn!(sources = ?s, "emergency shed: the plant's trip flag is set")
            }
            Protection::Unknown(s) => warn!(sources = ?s,
                "a trip point cannot be read: the fleet goes to its fail-safe load until it can"),
            Protection::Clear => info!("trip flag cleared: the fleet may come back (staggered)"),
        }
        self.protection = protection.clone();
        SignalAction::Protection(protection)
    }

    /// Each source's standing for the status, and, when the combined verdict appears or goes
    /// away after the first, the event to record ("signal-back" or "signal-lost", with why).
    pub fn show(
        &mut self,
        verdict: &Verdict,
        status: &mut Status,
    ) -> Option<(&'static str, String)> {
        status.signals = self
            .names
            .iter()
            .cloned()
            .zip(&verdict.standings)
            .map(|(name, standing)| match standing {
                Standing::Trusted { watts, .. } => SignalStatus {
                    name,
                    trusted: true,
                    mw: Some(watts / 1e6),
                    reason: None,
                },
                Standing::Distrusted(d) => SignalStatus {
                    name,
                    trusted: false,
                    mw: None,
                    reason: Some(d.to_string()),
                },
            })
            .collect();
        if let Some((a, b, gap)) = verdict.disagreement {
            debug!(
                low = %self.names[a.0 as usize],
                high = %self.names[b.0 as usize],
                gap_mw = gap.mw(),
                "signal sources disagree"
            );
        }
        let has = verdict.available.is_some();
        let had = self.had_verdict.replace(has);
        if had == Some(has) {
            return None;
        }
        // Each source and why it is not trusted: for the log and the event alike.
        let why: Vec<String> = (status.signals.iter())
            .map(|s| format!("{}: {}", s.name, s.reason.as_deref().unwrap_or("trusted")))
            .collect();
        if has {
            info!(sources = ?why, "surplus signal trusted");
        } else {
            warn!(reasons = ?why, "no trusted surplus signal: the fleet goes to the fail-safe load");
        }
        // The first verdict of the run is logged, not recorded as a change.
        had?;
        let kind = if has { "signal-back" } else { "signal-lost" };
        Some((kind, why.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hashsink_signals::{Policy, Reading, SourceRules};
    use hashsink_units::Watts;

    use super::*;

    fn desk() -> SignalDesk {
        let rules = |name: &str| SourceRules {
            name: name.into(),
            max_age: Duration::from_secs(5),
            min: Watts::ZERO,
            max: Watts::from_mw(10.0),
            max_step: None,
            jump_confirmations: 1,
        };
        SignalDesk::new(TrustConfig {
            sources: vec![rules("meter"), rules("scada")],
            policy: Policy::Minimum,
            disagreement: None,
            max_future_skew: Duration::from_secs(2),
        })
    }

    fn reading(source: u16, at: Timestamp, mw: f64) -> SignalEvent {
        SignalEvent::Reading(Reading {
            source: SourceId(source),
            at,
            watts: mw * 1e6,
        })
    }

    #[test]
    fn trips_hold_while_any_source_asserts_one_and_an_unreadable_one_fails_safe() {
        let mut d = desk();
        let now = Timestamp::from_secs(1_000);
        let trip = |source: u16, flag: TripFlag| SignalEvent::Trip(SourceId(source), flag);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let act = |p| SignalAction::Protection(p);
        // A first clear lifts nothing; a set sheds; reported again on every poll, nothing new.
        assert_eq!(
            d.on_event(now, trip(1, TripFlag::Clear)),
            SignalAction::None
        );
        let scada = Protection::Tripped(names(&["scada"]));
        assert_eq!(d.on_event(now, trip(1, TripFlag::Set)), act(scada.clone()));
        assert_eq!(d.on_event(now, trip(1, TripFlag::Set)), SignalAction::None);
        // A second source trips, the first clears: still tripped, by the second.
        let both = Protection::Tripped(names(&["meter", "scada"]));
        assert_eq!(d.on_event(now, trip(0, TripFlag::Set)), act(both));
        let meter = Protection::Tripped(names(&["meter"]));
        assert_eq!(d.on_event(now, trip(1, TripFlag::Clear)), act(meter));
        // The first cannot be read any more: the second's trip still rules; once it clears,
        // the unreadable one holds the fleet at its fail-safe load.
        let unknown = TripFlag::Unknown("no reply".into());
        assert_eq!(
            d.on_event(now, trip(1, unknown.clone())),
            SignalAction::None
        );
        let unreadable = Protection::Unknown(names(&["scada"]));
        assert_eq!(
            d.on_event(now, trip(0, TripFlag::Clear)),
            act(unreadable.clone())
        );
        assert_eq!(d.on_event(now, trip(1, unknown)), SignalAction::None);
        assert_eq!(unreadable.describe().unwrap(), "trip unreadable at scada");
        // Read again, clear: the protection is lifted.
        assert_eq!(
            d.on_event(now, trip(1, TripFlag::Clear)),
            act(Protection::Clear)
        );
    }

    #[test]
    fn trusted_readings_are_fed_at_once_and_the_lowest_source_holds_the_fleet_down() {
        let mut d = desk();
        let now = Timestamp::from_secs(1_000);
        assert_eq!(d.on_event(now, reading(0, now, 4.0)), SignalAction::FeedNow);
        assert_eq!(d.on_event(now, reading(1, now, 3.0)), SignalAction::FeedNow);
        let available = d.verdict(now).available.map(|(_, w)| w);
        assert_eq!(available, Some(Watts::from_mw(3.0)));
        // Out of range: rejected, not fed; the source's older reading still stands.
        assert_eq!(d.on_event(now, reading(1, now, 50.0)), SignalAction::None);
        let failed = SignalEvent::Failed(SourceId(0), "connection refused".into());
        assert_eq!(d.on_event(now, failed), SignalAction::None);
        let mut status = Status::default();
        let verdict = d.verdict(now);
        // The first verdict of the run is shown, not recorded as a change.
        assert_eq!(d.show(&verdict, &mut status), None);
        assert!(!status.signals[0].trusted, "{:?}", status.signals);
        let later = now + Duration::from_secs(10);
        let stale = d.verdict(later);
        assert!(stale.available.is_none());
        let (kind, why) = d.show(&stale, &mut status).expect("the signal was lost");
        assert_eq!(kind, "signal-lost");
        assert!(why.contains("meter") && why.contains("scada"), "{why}");
    }
}
