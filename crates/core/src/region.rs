//! A region's allocation: how one surplus (or a national cap with each site's local surplus) is
//! shared out as caps among daemons, each a shard of a site or a whole site. Sans I/O: reports
//! and the time go in, caps come out; `hashsink coordinate` carries them over MQTT.
//!
//! The rules, each tested below:
//! - **Efficiency first.** Every daemon reports its capacity as tiers (watts at an efficiency in
//!   J/TH); the tiers of every daemon are filled most efficient first, ties by daemon order.
//! - **Each site's constraint.** A site's daemons together get no more than its local surplus,
//!   when one is given.
//! - **Never over the surplus.** The caps and the room left for silent daemons add up to the
//!   surplus at most, fleet-wide and per site.
//! - **Break before make.** While caps move, each daemon draws between its load and its cap;
//!   raises are trimmed so that the higher of the two, summed, stays within the surplus
//!   (fleet-wide and per site): a daemon sheds before another takes its place.
//! - **A silent daemon keeps drawing.** One that has not reported for `silent_after` is assumed
//!   to draw what it last reported (or the cap it last said it followed, or what a refused
//!   report since says, if higher: it may be ramping up) until its own fail-safe time has passed since that report, then its
//!   fail-safe load; room is left for that and it is sent no cap. One never heard from since
//!   the coordinator started is assumed at its configured capacity until its fail-safe time
//!   from the start has passed.
//! - **A restart adopts.** The allocation is a function of the surplus and the reports alone
//!   (no state carried between rounds), so a coordinator that restarts and hears the same
//!   reports gives the same caps: no bump. Until every daemon has reported once (or
//!   `adopt_for` has passed) it gives none, and each daemon holds the cap it has.
//! - **Unknown is nothing.** Once adopted, a surplus that is not known (its signal stale or
//!   tripped) is 0 W: every daemon gets a cap of 0. Before, the coordinator holds.
//! - **Bad reports are refused** with a reason, and the daemon's last good report stands: an
//!   unknown id, a capacity above what its site file declares, a report older than the last
//!   one, a non-finite or negative number, a second daemon under an id already in use. A
//!   daemon that restarts reports under a new run and is taken at once; the run it replaced
//!   is refused from then on, so two daemons configured alike show as soon as the older one
//!   speaks again.

use std::collections::BTreeMap;
use std::time::Duration;

use hashsink_units::{Timestamp, Watts};

/// One block of a daemon's capacity at one efficiency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tier {
    pub watts: Watts,
    pub j_per_th: f64,
}

/// What a daemon says of itself, every second or so.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// When it was made, by the daemon's clock.
    pub at: Timestamp,
    /// Which run of the daemon made it (a fresh number at every start): two runs reporting
    /// under one id at once are two daemons configured alike.
    pub run: u64,
    /// What it draws now.
    pub load: Watts,
    /// What it can draw, by efficiency (its miners that answer, at their top levels).
    pub tiers: Vec<Tier>,
    /// The cap it follows now, if it has one.
    pub cap: Option<Watts>,
    /// Whether it trusts its own readings and commands (false: it is in its fail-safe).
    pub healthy: bool,
}

impl Report {
    pub fn capacity(&self) -> Watts {
        Watts(self.tiers.iter().map(|t| t.watts.w()).sum())
    }
}

/// One daemon of the region, as the coordinator's file declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardConfig {
    pub id: String,
    pub site: String,
    /// The most its site file lets it draw; a report of more is refused.
    pub capacity: Watts,
    /// The load it goes to once it has lost the coordinator for `failsafe_after`.
    pub failsafe_load: Watts,
    pub failsafe_after: Duration,
}

/// The region: its daemons and how long a silence may last.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionConfig {
    pub shards: Vec<ShardConfig>,
    /// A daemon not heard from for this long is silent.
    pub silent_after: Duration,
    /// After a start, caps wait for every daemon's first report, or this long.
    pub adopt_for: Duration,
}

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReportRefused {
    #[error("no daemon {0:?} in the region's file")]
    UnknownShard(String),
    #[error(
        "{id} reports {reported:.0} W of capacity, above the {declared:.0} W its site file declares"
    )]
    AboveDeclared {
        id: String,
        reported: f64,
        declared: f64,
    },
    #[error("{id} reports a non-finite or negative number")]
    NotANumber { id: String },
    #[error("{id}'s report is older than its last one")]
    Stale { id: String },
    #[error("two daemons report as {id} (runs {first:x} and {second:x}): give each its own id")]
    Duplicate { id: String, first: u64, second: u64 },
}

/// Why the region file is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RegionError {
    #[error("the region has no daemon")]
    Empty,
    #[error("daemon id {0:?} appears twice")]
    DuplicateId(String),
    #[error("daemon {0:?}: capacity, fail-safe load and times must be finite and 0 or more")]
    BadNumber(String),
}

/// A daemon's place in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Standing {
    /// Reporting: it gets a cap.
    Active,
    /// Silent: it gets no cap, and this much room is kept for it.
    Silent { assumed: Watts },
}

/// One round's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// Per daemon, in the file's order: its standing and, when active, its cap.
    pub shards: Vec<(Standing, Option<Watts>)>,
    /// What was shared out: the surplus less the room kept for silent daemons.
    pub shared: Watts,
}

impl Allocation {
    /// The caps and the room kept together: never above the surplus.
    pub fn committed(&self) -> Watts {
        Watts(
            self.shards
                .iter()
                .map(|(s, cap)| match s {
                    Standing::Active => cap.map_or(0.0, Watts::w),
                    Standing::Silent { assumed } => assumed.w(),
                })
                .sum(),
        )
    }
}

/// The coordinator's state: the region and every daemon's last good report.
#[derive(Clone, Debug)]
pub struct Allocator {
    config: RegionConfig,
    started: Timestamp,
    last: Vec<Option<(Timestamp, Report)>>,
    /// Per daemon, the run its newest run replaced: a report from it is a second daemon.
    replaced: Vec<Option<u64>>,
    /// Per daemon, the load its newest report said, refused or not, and when it came: a
    /// daemon whose reports are refused still draws what they say.
    said: Vec<Option<(Timestamp, Watts)>>,
}

impl Allocator {
    pub fn new(config: RegionConfig, started: Timestamp) -> Result<Self, RegionError> {
        if config.shards.is_empty() {
            return Err(RegionError::Empty);
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &config.shards {
            if !seen.insert(s.id.as_str()) {
                return Err(RegionError::DuplicateId(s.id.clone()));
            }
            let ok = |w: Watts| w.w().is_finite() && w.w() >= 0.0;
            if !(ok(s.capacity) && ok(s.failsafe_load)) {
                return Err(RegionError::BadNumber(s.id.clone()));
            }
        }
        let n = config.shards.len();
        Ok(Self {
            config,
            started,
            last: vec![None; n],
            replaced: vec![None; n],
            said: vec![None; n],
        })
    }

    pub fn config(&self) -> &RegionConfig {
        &self.config
    }

    /// Daemon `i`'s last good report.
    pub fn last_report(&self, i: usize) -> Option<&Report> {
        self.last.get(i)?.as_ref().map(|(_, report)| report)
    }

    /// The index of daemon `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.config.shards.iter().position(|s| s.id == id)
    }

    /// Takes a daemon's report, received at `now`; a refused one leaves its last good report.
    pub fn report(
        &mut self,
        id: &str,
        report: Report,
        now: Timestamp,
    ) -> Result<(), ReportRefused> {
        let i = self
            .index_of(id)
            .ok_or_else(|| ReportRefused::UnknownShard(id.to_string()))?;
        let shard = &self.config.shards[i];
        let finite = |w: Watts| w.w().is_finite() && w.w() >= 0.0;
        if finite(report.load) {
            self.said[i] = Some((now, report.load));
        }
        let numbers_ok = finite(report.load)
            && report.cap.is_none_or(finite)
            && report
                .tiers
                .iter()
                .all(|t| finite(t.watts) && t.j_per_th.is_finite() && t.j_per_th > 0.0);
        if !numbers_ok {
            return Err(ReportRefused::NotANumber { id: id.to_string() });
        }
        // A little over for rounding; more is a site file that says otherwise.
        if report.capacity().w() > shard.capacity.w() * 1.001 + 1.0 {
            return Err(ReportRefused::AboveDeclared {
                id: id.to_string(),
                reported: report.capacity().w(),
                declared: shard.capacity.w(),
            });
        }
        if let Some((_, last)) = &self.last[i] {
            if self.replaced[i] == Some(report.run) {
                return Err(ReportRefused::Duplicate {
                    id: id.to_string(),
                    first: last.run,
                    second: report.run,
                });
            }
            if last.run == report.run && report.at <= last.at {
                return Err(ReportRefused::Stale { id: id.to_string() });
            }
            if last.run != report.run {
                self.replaced[i] = Some(last.run);
            }
        }
        self.last[i] = Some((now, report));
        Ok(())
    }

    /// Whether caps may go out: every daemon has reported since the start, or `adopt_for` has
    /// passed (until then each holds the cap it has).
    pub fn adopted(&self, now: Timestamp) -> bool {
        self.last.iter().all(Option::is_some)
            || now.saturating_since(self.started) >= self.config.adopt_for
    }

    /// What daemon `i` is assumed to draw while it is silent, or None while it reports.
    fn silent_load(&self, i: usize, now: Timestamp) -> Option<Watts> {
        let shard = &self.config.shards[i];
        match &self.last[i] {
            None if now.saturating_since(self.started) < shard.failsafe_after => {
                Some(shard.capacity)
            }
            None => Some(shard.failsafe_load),
            Some((heard, _)) if now.saturating_since(*heard) < self.config.silent_after => None,
            Some((heard, _)) if now.saturating_since(*heard) >= shard.failsafe_after => {
                Some(shard.failsafe_load)
            }
            Some((heard, report)) => {
                let said = (self.said[i])
                    .filter(|(at, _)| at > heard)
                    .map_or(Watts::ZERO, |(_, w)| w);
                Some(report.load.max(report.cap.unwrap_or(Watts::ZERO)).max(said))
            }
        }
    }

    /// One round: the caps to send at `now`, or None to hold (each daemon keeps the cap it
    /// has) while the coordinator adopts what runs. `surplus` and each site's local surplus
    /// are None where their signal is not known; once `adopt_for` has passed since the start,
    /// not known is 0 W.
    pub fn decide(
        &self,
        now: Timestamp,
        surplus: Option<Watts>,
        sites: &BTreeMap<String, Option<Watts>>,
    ) -> Option<Allocation> {
        let starting = now.saturating_since(self.started) < self.config.adopt_for;
        let all_known = surplus.is_some() && sites.values().all(Option::is_some);
        if !self.adopted(now) || (starting && !all_known) {
            return None;
        }
        let sites = sites
            .iter()
            .map(|(site, w)| (site.clone(), w.unwrap_or(Watts::ZERO)))
            .collect();
        Some(self.allocate(now, surplus.unwrap_or(Watts::ZERO), &sites))
    }

    /// Shares `surplus` (and each site's local surplus, where `sites` has one) out among the
    /// daemons: room for the silent ones first, then every active daemon's tiers, most
    /// efficient first, within both limits.
    pub fn allocate(
        &self,
        now: Timestamp,
        surplus: Watts,
        sites: &BTreeMap<String, Watts>,
    ) -> Allocation {
        let n = self.config.shards.len();
        let standing: Vec<Standing> = (0..n)
            .map(|i| match self.silent_load(i, now) {
                Some(assumed) => Standing::Silent { assumed },
                None => Standing::Active,
            })
            .collect();
        let kept = |site: Option<&str>| -> f64 {
            (0..n)
                .filter(|&i| site.is_none_or(|s| self.config.shards[i].site == s))
                .map(|i| match standing[i] {
                    Standing::Silent { assumed } => assumed.w(),
                    Standing::Active => 0.0,
                })
                .sum()
        };
        let mut budget = (surplus.w().max(0.0) - kept(None)).max(0.0);
        let shared = Watts(budget);
        let mut site_budget: BTreeMap<&str, f64> = sites
            .iter()
            .map(|(site, w)| (site.as_str(), (w.w().max(0.0) - kept(Some(site))).max(0.0)))
            .collect();
        let mut tiers: Vec<(f64, usize, f64)> = Vec::new();
        for (i, s) in standing.iter().enumerate() {
            if let (Standing::Active, Some((_, report))) = (s, &self.last[i]) {
                tiers.extend(report.tiers.iter().map(|t| (t.j_per_th, i, t.watts.w())));
            }
        }
        tiers.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut caps = vec![0.0; n];
        for (_, i, watts) in tiers {
            let site = self.config.shards[i].site.as_str();
            let site_left = site_budget.get(site).copied().unwrap_or(f64::INFINITY);
            let give = watts.min(budget).min(site_left);
            if give <= 0.0 {
                continue;
            }
            caps[i] += give;
            budget -= give;
            if let Some(left) = site_budget.get_mut(site) {
                *left -= give;
            }
        }
        self.break_before_make(&standing, &mut caps, surplus, sites);
        let shards = standing
            .into_iter()
            .zip(caps)
            .map(|(s, cap)| match s {
                Standing::Active => (s, Some(Watts(cap))),
                Standing::Silent { .. } => (s, None),
            })
            .collect();
        Allocation { shards, shared }
    }
}

impl Allocator {
    /// Trims raises so that what may be drawn while caps move (each daemon between its load
    /// and its cap: the higher of the two) stays within the surplus, fleet-wide and per site,
    /// where the loads allow: a daemon sheds before another takes its place. Raises are
    /// trimmed in proportion, never below the daemon's load; a trimmed raise is given in a
    /// later round, once the others' loads have come down.
    fn break_before_make(
        &self,
        standing: &[Standing],
        caps: &mut [f64],
        surplus: Watts,
        sites: &BTreeMap<String, Watts>,
    ) {
        let load = |i: usize| match (&standing[i], &self.last[i]) {
            (Standing::Active, Some((_, report))) => report.load.w(),
            (Standing::Silent { assumed }, _) => assumed.w(),
            (Standing::Active, None) => 0.0,
        };
        let limits = std::iter::once((None, surplus))
            .chain(sites.iter().map(|(site, w)| (Some(site.as_str()), *w)));
        for (site, limit) in limits {
            let members: Vec<usize> = (0..caps.len())
                .filter(|&i| site.is_none_or(|s| self.config.shards[i].site == s))
                .collect();
            let drawn: f64 = members.iter().map(|&i| load(i).max(caps[i])).sum();
            let raises: f64 = members.iter().map(|&i| (caps[i] - load(i)).max(0.0)).sum();
            let excess = drawn - limit.w().max(0.0);
            if excess <= 0.0 || raises <= 0.0 {
                continue;
            }
            let keep = (1.0 - excess / raises).max(0.0);
            for &i in &members {
                if caps[i] > load(i) {
                    caps[i] = load(i) + (caps[i] - load(i)) * keep;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + s)
    }

    fn shard(id: &str, site: &str, mw: f64) -> ShardConfig {
        ShardConfig {
            id: id.into(),
            site: site.into(),
            capacity: Watts::from_mw(mw),
            failsafe_load: Watts::ZERO,
            failsafe_after: Duration::from_secs(30),
        }
    }

    fn region(shards: Vec<ShardConfig>) -> Allocator {
        let config = RegionConfig {
            shards,
            silent_after: Duration::from_secs(5),
            adopt_for: Duration::from_secs(10),
        };
        Allocator::new(config, t(0)).unwrap()
    }

    fn report(at: i64, load_mw: f64, tiers: &[(f64, f64)]) -> Report {
        Report {
            at: t(at),
            run: 1,
            load: Watts::from_mw(load_mw),
            tiers: tiers
                .iter()
                .map(|&(mw, j)| Tier {
                    watts: Watts::from_mw(mw),
                    j_per_th: j,
                })
                .collect(),
            cap: None,
            healthy: true,
        }
    }

    fn caps_mw(a: &Allocation) -> Vec<Option<f64>> {
        a.shards
            .iter()
            .map(|(_, c)| c.map(|c| (c.mw() * 1000.0).round() / 1000.0))
            .collect()
    }

    #[test]
    fn the_most_efficient_capacity_is_filled_first_and_the_sum_never_exceeds_the_surplus() {
        let mut r = region(vec![
            shard("a", "north", 40.0),
            shard("b", "north", 40.0),
            shard("c", "south", 40.0),
        ]);
        r.report("a", report(0, 10.0, &[(20.0, 17.0), (20.0, 21.5)]), t(0))
            .unwrap();
        r.report("b", report(0, 0.0, &[(40.0, 29.5)]), t(0))
            .unwrap();
        r.report("c", report(0, 10.0, &[(30.0, 15.0)]), t(0))
            .unwrap();
        let none = BTreeMap::new();
        // 60 MW: c (15 J/TH) 30, a's first tier (17) 20, a's second (21.5) the last 10.
        let a = r.allocate(t(1), Watts::from_mw(60.0), &none);
        assert_eq!(caps_mw(&a), [Some(30.0), Some(0.0), Some(30.0)]);
        for mw in [0.0, 5.0, 45.0, 60.0, 89.9, 200.0] {
            let a = r.allocate(t(1), Watts::from_mw(mw), &none);
            assert!(
                a.committed().w() <= Watts::from_mw(mw).w() + 1e-6,
                "{mw}: {a:?}"
            );
        }
        // More than all the capacity: each at its capacity, the rest unused.
        let a = r.allocate(t(1), Watts::from_mw(200.0), &none);
        assert_eq!(caps_mw(&a), [Some(40.0), Some(40.0), Some(30.0)]);
    }

    #[test]
    fn a_daemon_sheds_before_another_takes_its_place() {
        let mut r = region(vec![shard("a", "north", 40.0), shard("b", "south", 40.0)]);
        // b draws 30 MW; a, more efficient, comes up: it may take only what b has given back.
        r.report("a", report(0, 0.0, &[(40.0, 17.0)]), t(0))
            .unwrap();
        r.report("b", report(0, 30.0, &[(40.0, 25.0)]), t(0))
            .unwrap();
        let none = BTreeMap::new();
        let a = r.allocate(t(1), Watts::from_mw(40.0), &none);
        // The target is a 40, b 0; while b draws 30, a may have 10.
        assert_eq!(caps_mw(&a), [Some(10.0), Some(0.0)]);
        r.report("b", report(1, 12.0, &[(40.0, 25.0)]), t(1))
            .unwrap();
        let a = r.allocate(t(1), Watts::from_mw(40.0), &none);
        assert_eq!(caps_mw(&a), [Some(28.0), Some(0.0)]);
        r.report("b", report(2, 0.0, &[(40.0, 25.0)]), t(2))
            .unwrap();
        let a = r.allocate(t(2), Watts::from_mw(40.0), &none);
        assert_eq!(caps_mw(&a), [Some(40.0), Some(0.0)]);
        // A fall below what is drawn: every cap falls, none rises.
        r.report("a", report(3, 40.0, &[(40.0, 17.0)]), t(3))
            .unwrap();
        let a = r.allocate(t(3), Watts::from_mw(25.0), &none);
        assert_eq!(caps_mw(&a), [Some(25.0), Some(0.0)]);
    }

    #[test]
    fn a_site_never_gets_more_than_its_local_surplus() {
        let mut r = region(vec![
            shard("a", "north", 40.0),
            shard("b", "north", 40.0),
            shard("c", "south", 40.0),
        ]);
        r.report("a", report(0, 0.0, &[(40.0, 17.0)]), t(0))
            .unwrap();
        r.report("b", report(0, 0.0, &[(40.0, 18.0)]), t(0))
            .unwrap();
        r.report("c", report(0, 0.0, &[(40.0, 25.0)]), t(0))
            .unwrap();
        let sites = BTreeMap::from([("north".to_string(), Watts::from_mw(50.0))]);
        // North's 80 MW of better miners may take 50; south takes the rest of the 70.
        let a = r.allocate(t(1), Watts::from_mw(70.0), &sites);
        assert_eq!(caps_mw(&a), [Some(40.0), Some(10.0), Some(20.0)]);
    }

    #[test]
    fn a_silent_daemon_keeps_its_room_until_its_failsafe_time_then_its_failsafe_load() {
        let mut r = region(vec![shard("a", "north", 40.0), shard("b", "south", 40.0)]);
        let mut last_a = report(0, 30.0, &[(40.0, 17.0)]);
        last_a.cap = Some(Watts::from_mw(35.0));
        r.report("a", last_a, t(0)).unwrap();
        r.report("b", report(0, 0.0, &[(40.0, 25.0)]), t(0))
            .unwrap();
        let none = BTreeMap::new();
        for s in 1..60 {
            r.report("b", report(s, 0.0, &[(40.0, 25.0)]), t(s))
                .unwrap();
            let a = r.allocate(t(s), Watts::from_mw(60.0), &none);
            let expected_room = if s < 5 {
                None // still reporting as far as the coordinator knows
            } else if s < 30 {
                Some(35.0) // its last cap, above its last load: it may be ramping to it
            } else {
                Some(0.0) // past its fail-safe time: at its fail-safe load
            };
            match expected_room {
                None => assert_eq!(a.shards[0].0, Standing::Active, "{s}"),
                Some(mw) => {
                    assert_eq!(
                        a.shards[0],
                        (
                            Standing::Silent {
                                assumed: Watts::from_mw(mw)
                            },
                            None
                        ),
                        "{s}"
                    );
                    let b = a.shards[1].1.unwrap().mw();
                    assert!((b - (40.0f64).min(60.0 - mw)).abs() < 1e-9, "{s}: {b}");
                }
            }
            assert!(a.committed().w() <= Watts::from_mw(60.0).w() + 1e-6, "{s}");
        }
    }

    #[test]
    fn a_restarted_coordinator_waits_for_the_reports_and_gives_the_same_caps() {
        let shards = vec![shard("a", "north", 40.0), shard("b", "south", 40.0)];
        let mut before = region(shards.clone());
        before
            .report("a", report(100, 20.0, &[(40.0, 17.0)]), t(100))
            .unwrap();
        before
            .report("b", report(100, 20.0, &[(40.0, 25.0)]), t(100))
            .unwrap();
        let none = BTreeMap::new();
        let running = before.allocate(t(100), Watts::from_mw(55.0), &none);
        // A new coordinator at 101: no caps until both have reported (or 10 s have passed).
        let config = before.config().clone();
        let mut after = Allocator::new(config, t(101)).unwrap();
        assert!(!after.adopted(t(101)));
        after
            .report("a", report(101, 20.0, &[(40.0, 17.0)]), t(101))
            .unwrap();
        assert!(!after.adopted(t(102)));
        assert!(after.adopted(t(111)), "adopt_for has passed");
        after
            .report("b", report(101, 20.0, &[(40.0, 25.0)]), t(102))
            .unwrap();
        assert!(after.adopted(t(102)));
        assert_eq!(after.allocate(t(102), Watts::from_mw(55.0), &none), running);
    }

    #[test]
    fn a_daemon_never_heard_from_is_assumed_at_its_capacity_until_its_failsafe_time() {
        let mut r = region(vec![shard("a", "north", 40.0), shard("b", "south", 40.0)]);
        r.report("b", report(12, 0.0, &[(40.0, 25.0)]), t(12))
            .unwrap();
        let none = BTreeMap::new();
        let early = r.allocate(t(12), Watts::from_mw(60.0), &none);
        assert_eq!(caps_mw(&early), [None, Some(20.0)]);
        r.report("b", report(31, 0.0, &[(40.0, 25.0)]), t(31))
            .unwrap();
        let late = r.allocate(t(31), Watts::from_mw(60.0), &none);
        assert_eq!(caps_mw(&late), [None, Some(40.0)]);
    }

    #[test]
    fn bad_reports_are_refused_with_the_reason_and_the_last_good_one_stands() {
        let mut r = region(vec![shard("a", "north", 40.0)]);
        let good = report(10, 5.0, &[(40.0, 17.0)]);
        r.report("a", good.clone(), t(10)).unwrap();
        let refused = |r: &mut Allocator, id: &str, rep: Report| {
            r.report(id, rep, t(11)).unwrap_err().to_string()
        };
        assert!(refused(&mut r, "z", good.clone()).contains("no daemon \"z\""));
        let big = report(11, 5.0, &[(41.0, 17.0)]);
        assert!(refused(&mut r, "a", big).contains("above the 40000000 W"));
        let nan = report(11, f64::NAN, &[(40.0, 17.0)]);
        assert!(refused(&mut r, "a", nan).contains("non-finite"));
        let old = report(9, 5.0, &[(40.0, 17.0)]);
        assert!(refused(&mut r, "a", old).contains("older"));
        // The good report still stands: a is active with its capacity.
        let a = r.allocate(t(11), Watts::from_mw(100.0), &BTreeMap::new());
        assert_eq!(caps_mw(&a), [Some(40.0)]);
        // A daemon restarted at once (a new run) is taken; its old run speaking again is a
        // second daemon under the id, refused from then on, while the new one goes on.
        let mut restarted = report(12, 0.0, &[(40.0, 17.0)]);
        restarted.run = 3;
        r.report("a", restarted.clone(), t(12)).unwrap();
        let e = r.report("a", report(13, 5.0, &[(40.0, 17.0)]), t(13));
        let e = e.unwrap_err().to_string();
        assert!(e.contains("two daemons report as a (runs 3 and 1)"), "{e}");
        restarted.at = t(14);
        r.report("a", restarted, t(14)).unwrap();
    }

    #[test]
    fn a_daemon_whose_reports_are_refused_goes_silent_with_room_for_what_they_say() {
        let mut r = region(vec![shard("a", "north", 40.0), shard("b", "south", 40.0)]);
        r.report("a", report(0, 5.0, &[(40.0, 17.0)]), t(0))
            .unwrap();
        r.report("b", report(0, 0.0, &[(40.0, 25.0)]), t(0))
            .unwrap();
        for s in 1..10 {
            // a's fleet grew past its site file: refused, but it draws 30 MW.
            let e = r.report("a", report(s, 30.0, &[(45.0, 17.0)]), t(s));
            assert!(e.is_err());
            r.report("b", report(s, 0.0, &[(40.0, 25.0)]), t(s))
                .unwrap();
        }
        let a = r.allocate(t(9), Watts::from_mw(50.0), &BTreeMap::new());
        let room = Watts::from_mw(30.0);
        assert_eq!(a.shards[0], (Standing::Silent { assumed: room }, None));
        assert_eq!(caps_mw(&a)[1], Some(20.0));
    }

    #[test]
    fn a_round_holds_while_adopting_and_then_takes_an_unknown_surplus_as_nothing() {
        let mut r = region(vec![shard("a", "north", 40.0), shard("b", "south", 40.0)]);
        let sites = |north: Option<Watts>| BTreeMap::from([("north".to_string(), north)]);
        let mw = |w: f64| Some(Watts::from_mw(w));
        r.report("a", report(1, 10.0, &[(40.0, 17.0)]), t(1))
            .unwrap();
        // One daemon still to report: hold, whatever the surplus.
        assert_eq!(r.decide(t(1), mw(50.0), &sites(mw(30.0))), None);
        r.report("b", report(2, 10.0, &[(40.0, 25.0)]), t(2))
            .unwrap();
        // All reported, but a site's surplus not heard yet: hold until adopt_for has passed.
        assert_eq!(r.decide(t(2), mw(50.0), &sites(None)), None);
        assert_eq!(r.decide(t(2), None, &sites(mw(30.0))), None);
        let a = r.decide(t(2), mw(50.0), &sites(mw(30.0))).unwrap();
        assert_eq!(caps_mw(&a), [Some(30.0), Some(20.0)]);
        r.report("a", report(10, 10.0, &[(40.0, 17.0)]), t(10))
            .unwrap();
        r.report("b", report(10, 10.0, &[(40.0, 25.0)]), t(10))
            .unwrap();
        // Past adopt_for: a lost site signal is a site at 0, a lost national one all at 0.
        let a = r.decide(t(10), mw(50.0), &sites(None)).unwrap();
        assert_eq!(caps_mw(&a), [Some(0.0), Some(40.0)]);
        let a = r.decide(t(10), None, &sites(mw(30.0))).unwrap();
        assert_eq!(caps_mw(&a), [Some(0.0), Some(0.0)]);
    }

    #[test]
    fn the_region_file_is_checked() {
        let config = |shards| RegionConfig {
            shards,
            silent_after: Duration::from_secs(5),
            adopt_for: Duration::from_secs(10),
        };
        assert_eq!(
            Allocator::new(config(vec![]), t(0)).unwrap_err(),
            RegionError::Empty
        );
        let twice = vec![shard("a", "n", 1.0), shard("a", "s", 1.0)];
        assert_eq!(
            Allocator::new(config(twice), t(0)).unwrap_err(),
            RegionError::DuplicateId("a".into())
        );
    }
}
