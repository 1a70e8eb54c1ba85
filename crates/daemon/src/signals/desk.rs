//! The plant signals as the daemon's loop sees them: every source's event judged as it arrives
//! (no lock shared with the sources), complaints logged once per change, trip flags acted on
//! when they change, and each source's standing shown in the status.

use hashsink_core::OperatorCommand;
use hashsink_plantio::SignalEvent;
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
    /// The plant's trip flag changed: an operator command, given by "plant:SOURCE".
    Operator(OperatorCommand, String),
}

/// The plant signals as the daemon's loop sees them: the judge, each source's name, the last
/// complaint logged per source (a steady fault is logged once, not per poll) and each source's
/// trip flag as last reported (acted on when it changes).
pub struct SignalDesk {
    judge: Judge,
    names: Vec<String>,
    complaints: Vec<Option<String>>,
    tripped: Vec<Option<bool>>,
    /// Whether the last verdict had a reading (None before the first).
    had_verdict: Option<bool>,
}

impl SignalDesk {
    pub fn new(trust: TrustConfig) -> Self {
        let names: Vec<String> = trust.sources.iter().map(|s| s.name.clone()).collect();
        Self {
            judge: Judge::new(trust),
            complaints: vec![None; names.len()],
            tripped: vec![None; names.len()],
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

    /// A trip flag is acted on when it changes: a source that reports the flag on every poll
    /// (an IEC 104 interrogation) must not resume the fleet every poll, and a flag first seen
    /// clear lifts nothing.
    fn trip(&mut self, id: SourceId, set: bool) -> SignalAction {
        let was = self.tripped[id.0 as usize].replace(set);
        if was == Some(set) || (!set && was.is_none()) {
            return SignalAction::None;
        }
        let name = &self.names[id.0 as usize];
        let command = if set {
            warn!(source = %name, "emergency shed: the plant's trip flag is set");
            OperatorCommand::ShedAll
        } else {
            info!(source = %name, "trip flag cleared: the fleet may come back (staggered)");
            OperatorCommand::Resume
        };
        SignalAction::Operator(command, format!("plant:{name}"))
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
    fn a_trip_acts_when_it_changes_and_a_first_clear_lifts_nothing() {
        let mut d = desk();
        let now = Timestamp::from_secs(1_000);
        let trip = |set| SignalEvent::Trip(SourceId(1), set);
        assert_eq!(d.on_event(now, trip(false)), SignalAction::None);
        let shed = SignalAction::Operator(OperatorCommand::ShedAll, "plant:scada".into());
        assert_eq!(d.on_event(now, trip(true)), shed);
        // Reported again on every poll: not a new shed.
        assert_eq!(d.on_event(now, trip(true)), SignalAction::None);
        let resume = SignalAction::Operator(OperatorCommand::Resume, "plant:scada".into());
        assert_eq!(d.on_event(now, trip(false)), resume);
        assert_eq!(d.on_event(now, trip(false)), SignalAction::None);
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
