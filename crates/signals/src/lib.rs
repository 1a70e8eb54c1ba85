//! Trust in plant signals: every reading of the power the fleet may use (a metered surplus, a
//! SCADA setpoint, a utility's cap) carries its source and the time it was taken; the [`Judge`]
//! rejects what cannot be trusted (not a number, out of the source's range, an implausible jump
//! that does not persist, stale, stamped in the future) and combines the trusted sources with a
//! policy (the minimum of all fresh values by default). When no source is trusted there is no
//! verdict, and the controller's own fail-safe takes the fleet down. Pure: time is passed in.

#![forbid(unsafe_code)]

pub mod schedule;

use std::time::Duration;

use hashsink_units::{Timestamp, Watts};

/// Index of a source in the judge's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceId(pub u16);

/// One value from one source: the power the fleet may use, W (NaN and infinities are possible
/// and rejected).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub source: SourceId,
    /// When the value was measured (or, if the source does not say, received).
    pub at: Timestamp,
    pub watts: f64,
}

/// What a source may say.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRules {
    pub name: String,
    /// Older than this, a reading is stale.
    pub max_age: Duration,
    pub min: Watts,
    pub max: Watts,
    /// A rise larger than this over the last trusted value is implausible until
    /// `jump_confirmations` readings in a row agree with the new level (a fall is taken at once:
    /// less power for the fleet is always safe).
    pub max_step: Option<Watts>,
    pub jump_confirmations: u8,
}

/// How trusted sources combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The lowest fresh value: any source can hold the fleet down (the safe default).
    #[default]
    Minimum,
    /// The median of the fresh values: one faulty meter among three is outvoted.
    Median,
    /// The first source (in configuration order) that is trusted; the others back it up.
    Priority,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrustConfig {
    pub sources: Vec<SourceRules>,
    pub policy: Policy,
    /// Two fresh sources further apart than this are reported as disagreeing.
    pub disagreement: Option<Watts>,
    /// Readings stamped further ahead of `now` than this are rejected.
    pub max_future_skew: Duration,
}

/// Why a reading or a source is not trusted.
#[derive(Clone, Debug, PartialEq)]
pub enum Distrust {
    NoReadingYet,
    NotANumber,
    OutOfRange {
        watts: f64,
    },
    Jump {
        from: f64,
        to: f64,
    },
    Stale {
        age: Duration,
    },
    FromTheFuture {
        ahead: Duration,
    },
    /// The source's transport reported an error (connection lost, malformed reply).
    Failed(String),
    /// The source sent something that is not a reading (a payload that does not parse).
    Malformed(String),
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distrust::NoReadingYet => write!(f, "no reading yet"),
            Distrust::NotANumber => write!(f, "not a number"),
            Distrust::OutOfRange { watts } => write!(f, "{:.3} MW is out of range", watts / 1e6),
            Distrust::Jump { from, to } => write!(
                f,
                "implausible jump from {:.3} MW to {:.3} MW (not yet confirmed)",
                from / 1e6,
                to / 1e6
            ),
            Distrust::Stale { age } => write!(
                f,
                "stale: last trusted reading {:.1} s old",
                age.as_secs_f64()
            ),
            Distrust::FromTheFuture { ahead } => {
                write!(f, "stamped {:.1} s in the future", ahead.as_secs_f64())
            }
            Distrust::Failed(e) => write!(f, "source failed: {e}"),
            Distrust::Malformed(e) => write!(f, "malformed: {e}"),
        }
    }
}

/// A source's standing at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Standing {
    Trusted { at: Timestamp, watts: f64 },
    Distrusted(Distrust),
}

/// What the judge concludes at `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The power the fleet may use and the time of the oldest reading it rests on; None when no
    /// source is trusted (fail safe).
    pub available: Option<(Timestamp, Watts)>,
    pub standings: Vec<Standing>,
    /// The two trusted sources furthest apart, if further than the configured tolerance.
    pub disagreement: Option<(SourceId, SourceId, Watts)>,
}

#[derive(Clone, Debug, Default)]
struct SourceState {
    trusted: Option<(Timestamp, f64)>,
    /// A jump waiting for confirmation: the new level and how many readings agreed.
    pending_jump: Option<(f64, u8)>,
    /// The last rejection, kept until a reading is trusted again.
    rejected: Option<Distrust>,
    failed: Option<String>,
}

/// Judges every source's readings and combines the trusted ones.
#[derive(Clone, Debug)]
pub struct Judge {
    cfg: TrustConfig,
    state: Vec<SourceState>,
}

impl Judge {
    pub fn new(cfg: TrustConfig) -> Self {
        let state = vec![SourceState::default(); cfg.sources.len()];
        Self { cfg, state }
    }

    pub fn config(&self) -> &TrustConfig {
        &self.cfg
    }

    /// Takes a reading; returns why it was rejected, if it was.
    pub fn observe(&mut self, now: Timestamp, r: Reading) -> Result<(), Distrust> {
        let i = r.source.0 as usize;
        let (Some(rules), Some(state)) = (self.cfg.sources.get(i), self.state.get_mut(i)) else {
            return Err(Distrust::Failed(format!("unknown source {}", r.source.0)));
        };
        let verdict = (|| {
            if !r.watts.is_finite() {
                return Err(Distrust::NotANumber);
            }
            if r.at > now + self.cfg.max_future_skew {
                return Err(Distrust::FromTheFuture {
                    ahead: r.at.saturating_since(now),
                });
            }
            if r.watts < rules.min.w() || r.watts > rules.max.w() {
                return Err(Distrust::OutOfRange { watts: r.watts });
            }
            if let (Some(step), Some((_, last))) = (rules.max_step, state.trusted) {
                if r.watts - last > step.w() {
                    // A new level must persist: count readings that agree with it.
                    let agreed = match state.pending_jump {
                        Some((level, n)) if (r.watts - level).abs() <= step.w() => n + 1,
                        _ => 1,
                    };
                    state.pending_jump = Some((r.watts, agreed));
                    if agreed < rules.jump_confirmations.max(1) {
                        return Err(Distrust::Jump {
                            from: last,
                            to: r.watts,
                        });
                    }
                }
            }
            Ok(())
        })();
        match verdict {
            Ok(()) => {
                // Out-of-order readings never replace a newer trusted one.
                if state.trusted.is_none_or(|(t, _)| r.at >= t) {
                    state.trusted = Some((r.at, r.watts));
                }
                state.pending_jump = None;
                state.rejected = None;
                state.failed = None;
                Ok(())
            }
            Err(d) => {
                state.rejected = Some(d.clone());
                Err(d)
            }
        }
    }

    /// The source sent something that is not a reading: noted (it explains a source with no
    /// trusted reading), nothing else changes.
    pub fn malformed(&mut self, source: SourceId, why: String) {
        if let Some(s) = self.state.get_mut(source.0 as usize) {
            s.rejected = Some(Distrust::Malformed(why));
        }
    }

    /// The source's transport failed (or recovered, with `None`).
    pub fn failed(&mut self, source: SourceId, error: Option<String>) {
        if let Some(s) = self.state.get_mut(source.0 as usize) {
            s.failed = error;
        }
    }

    /// Each source's standing and the combined value at `now`.
    pub fn verdict(&self, now: Timestamp) -> Verdict {
        let standings: Vec<Standing> = self
            .cfg
            .sources
            .iter()
            .zip(&self.state)
            .map(|(rules, s)| {
                if let Some(e) = &s.failed {
                    return Standing::Distrusted(Distrust::Failed(e.clone()));
                }
                match s.trusted {
                    None => {
                        Standing::Distrusted(s.rejected.clone().unwrap_or(Distrust::NoReadingYet))
                    }
                    Some((at, watts)) => {
                        let age = now.saturating_since(at);
                        if age > rules.max_age {
                            Standing::Distrusted(Distrust::Stale { age })
                        } else {
                            Standing::Trusted { at, watts }
                        }
                    }
                }
            })
            .collect();
        let trusted: Vec<(SourceId, Timestamp, f64)> = standings
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Standing::Trusted { at, watts } => Some((SourceId(i as u16), *at, *watts)),
                Standing::Distrusted(_) => None,
            })
            .collect();
        let available = match self.cfg.policy {
            _ if trusted.is_empty() => None,
            Policy::Minimum => trusted
                .iter()
                .min_by(|a, b| a.2.total_cmp(&b.2))
                .map(|&(_, at, w)| (oldest(&trusted).min(at), Watts(w))),
            Policy::Median => {
                let mut v: Vec<f64> = trusted.iter().map(|t| t.2).collect();
                v.sort_by(f64::total_cmp);
                let mid = if v.len() % 2 == 1 {
                    v[v.len() / 2]
                } else {
                    // Of the two middle values, the lower (the safe side).
                    v[v.len() / 2 - 1]
                };
                Some((oldest(&trusted), Watts(mid)))
            }
            Policy::Priority => trusted.first().map(|&(_, at, w)| (at, Watts(w))),
        };
        let disagreement = self.cfg.disagreement.and_then(|tol| {
            let lo = trusted.iter().min_by(|a, b| a.2.total_cmp(&b.2))?;
            let hi = trusted.iter().max_by(|a, b| a.2.total_cmp(&b.2))?;
            (hi.2 - lo.2 > tol.w()).then_some((lo.0, hi.0, Watts(hi.2 - lo.2)))
        });
        Verdict {
            available,
            standings,
            disagreement,
        }
    }
}

fn oldest(trusted: &[(SourceId, Timestamp, f64)]) -> Timestamp {
    trusted.iter().map(|t| t.1).min().unwrap_or(Timestamp(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_700_000_000 + s)
    }

    fn rules(name: &str) -> SourceRules {
        SourceRules {
            name: name.into(),
            max_age: Duration::from_secs(5),
            min: Watts(0.0),
            max: Watts::from_mw(100.0),
            max_step: Some(Watts::from_mw(20.0)),
            jump_confirmations: 3,
        }
    }

    fn judge(n: usize, policy: Policy) -> Judge {
        Judge::new(TrustConfig {
            sources: (0..n).map(|i| rules(&format!("s{i}"))).collect(),
            policy,
            disagreement: Some(Watts::from_mw(5.0)),
            max_future_skew: Duration::from_secs(2),
        })
    }

    fn read(j: &mut Judge, now: i64, source: u16, mw: f64) -> Result<(), Distrust> {
        j.observe(
            t(now),
            Reading {
                source: SourceId(source),
                at: t(now),
                watts: mw * 1e6,
            },
        )
    }

    fn mw(v: &Verdict) -> Option<f64> {
        v.available.map(|(_, w)| w.mw())
    }

    #[test]
    fn bad_values_are_rejected_and_change_nothing() {
        let mut j = judge(1, Policy::Minimum);
        read(&mut j, 0, 0, 40.0).unwrap();
        assert_eq!(read(&mut j, 1, 0, f64::NAN), Err(Distrust::NotANumber));
        assert!(matches!(
            read(&mut j, 1, 0, -1.0),
            Err(Distrust::OutOfRange { .. })
        ));
        assert!(matches!(
            read(&mut j, 1, 0, 150.0),
            Err(Distrust::OutOfRange { .. })
        ));
        let ahead = j.observe(
            t(1),
            Reading {
                source: SourceId(0),
                at: t(10),
                watts: 1e6,
            },
        );
        assert!(matches!(ahead, Err(Distrust::FromTheFuture { .. })));
        assert_eq!(mw(&j.verdict(t(1))), Some(40.0));
    }

    #[test]
    fn a_stale_source_gives_no_verdict_so_the_fleet_fails_safe() {
        let mut j = judge(1, Policy::Minimum);
        assert_eq!(j.verdict(t(0)).available, None);
        read(&mut j, 0, 0, 40.0).unwrap();
        assert_eq!(mw(&j.verdict(t(5))), Some(40.0));
        let v = j.verdict(t(6));
        assert_eq!(v.available, None);
        assert!(matches!(
            v.standings[0],
            Standing::Distrusted(Distrust::Stale { .. })
        ));
        j.failed(SourceId(0), Some("connection refused".into()));
        read(&mut j, 7, 0, 41.0).unwrap();
        assert_eq!(
            mw(&j.verdict(t(7))),
            Some(41.0),
            "a good reading clears the failure"
        );
    }

    #[test]
    fn a_rise_waits_for_confirmation_and_a_fall_does_not() {
        let mut j = judge(1, Policy::Minimum);
        read(&mut j, 0, 0, 40.0).unwrap();
        // Up 50 MW: not trusted at once; the old value stands.
        assert!(matches!(
            read(&mut j, 1, 0, 90.0),
            Err(Distrust::Jump { .. })
        ));
        assert_eq!(mw(&j.verdict(t(1))), Some(40.0));
        assert!(read(&mut j, 2, 0, 91.0).is_err());
        read(&mut j, 3, 0, 90.5).unwrap();
        assert_eq!(mw(&j.verdict(t(3))), Some(90.5));
        // Down 80 MW: taken at once.
        read(&mut j, 4, 0, 10.0).unwrap();
        assert_eq!(mw(&j.verdict(t(4))), Some(10.0));
        // A single spike that does not persist is dropped.
        read(&mut j, 5, 0, 90.0).unwrap_err();
        assert_eq!(mw(&j.verdict(t(5))), Some(10.0));
        read(&mut j, 6, 0, 11.0).unwrap();
        read(&mut j, 7, 0, 90.0).unwrap_err();
        read(&mut j, 8, 0, 12.0).unwrap();
        assert_eq!(
            mw(&j.verdict(t(8))),
            Some(12.0),
            "non-consecutive spikes never confirm"
        );
    }

    #[test]
    fn policies_combine_fresh_sources() {
        for (policy, want) in [
            (Policy::Minimum, 30.0),
            (Policy::Median, 40.0),
            (Policy::Priority, 50.0),
        ] {
            let mut j = judge(3, policy);
            read(&mut j, 0, 0, 50.0).unwrap();
            read(&mut j, 0, 1, 30.0).unwrap();
            read(&mut j, 0, 2, 40.0).unwrap();
            let v = j.verdict(t(1));
            assert_eq!(mw(&v), Some(want), "{policy:?}");
            let (lo, hi, gap) = v.disagreement.expect("20 MW apart");
            assert_eq!((lo, hi), (SourceId(1), SourceId(0)));
            assert!((gap.mw() - 20.0).abs() < 1e-9);
        }
        // The lowest source goes stale: the minimum moves to the next one.
        let mut j = judge(2, Policy::Minimum);
        read(&mut j, 0, 0, 50.0).unwrap();
        read(&mut j, 0, 1, 30.0).unwrap();
        read(&mut j, 4, 0, 50.0).unwrap();
        assert_eq!(mw(&j.verdict(t(8))), Some(50.0));
        // Priority falls back to the next source.
        let mut j = judge(2, Policy::Priority);
        read(&mut j, 0, 0, 50.0).unwrap();
        read(&mut j, 4, 1, 30.0).unwrap();
        assert_eq!(mw(&j.verdict(t(8))), Some(30.0));
    }

    #[test]
    fn the_verdict_is_as_old_as_its_oldest_reading() {
        let mut j = judge(2, Policy::Minimum);
        read(&mut j, 0, 0, 50.0).unwrap();
        read(&mut j, 3, 1, 60.0).unwrap();
        assert_eq!(j.verdict(t(4)).available.map(|a| a.0), Some(t(0)));
    }
}
