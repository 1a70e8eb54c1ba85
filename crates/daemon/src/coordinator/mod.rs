//! `hashsink coordinate`: a region's coordinator, the second shell around the same parts as
//! the daemon. One loop owns the allocation (`hashsink_core::region::Allocator`, sans I/O)
//! and a signal desk per surplus (the national one, each site's); the plant-signal sources
//! and the broker link (`hashsink_plantio::region::Link`) run as tasks and send what they
//! hear through channels. Every round it sends each reporting daemon its cap, and publishes
//! the allocation for operators; the rules (efficiency first, each site's limit, room for the
//! silent, adoption after a restart, break before make) are the allocator's.

mod region_file;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use hashsink_clock::ScaledClock;
use hashsink_core::region::{Allocation, Allocator, Standing};
use hashsink_plantio::region::{Link, LinkEvent, parse_report};
use hashsink_plantio::{FleetReport, SignalEvent};
use hashsink_units::{Timestamp, Watts};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use region_file::CoordinatorSetup;

use crate::signals::{Protection, SignalAction, SignalDesk, SignalsSetup, start_sources};

/// How often the allocation is summed up in the log.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// One surplus the coordinator follows: the national one, or a site's.
struct Surplus {
    /// None: the national surplus.
    site: Option<String>,
    desk: SignalDesk,
    protection: Protection,
}

impl Surplus {
    /// What may be shared at `now`: None while no source is trusted; 0 while the plant's
    /// protection holds (a trip, or a trip point that cannot be read).
    fn available(&self, now: Timestamp) -> Option<Watts> {
        if self.protection != Protection::Clear {
            return Some(Watts::ZERO);
        }
        self.desk.verdict(now).available.map(|(_, w)| w)
    }
}

/// The allocation as published on the allocation topic each round.
#[derive(Serialize)]
struct Published<'a> {
    at_ms: i64,
    /// True while the coordinator adopts what runs (no caps sent).
    holding: bool,
    surplus_w: Option<f64>,
    sites: BTreeMap<&'a str, Option<f64>>,
    shared_w: Option<f64>,
    daemons: Vec<PublishedDaemon<'a>>,
}

#[derive(Serialize)]
struct PublishedDaemon<'a> {
    id: &'a str,
    site: &'a str,
    /// "active", "silent" or "holding".
    standing: &'static str,
    cap_w: Option<f64>,
    /// Room kept for it while it is silent.
    assumed_w: Option<f64>,
    /// What its last good report said it draws, and whether it trusted its cap then.
    load_w: Option<f64>,
    healthy: Option<bool>,
}

/// The coordinator's loop and what it owns.
pub struct Coordinator {
    setup: CoordinatorSetup,
    clock: ScaledClock,
    allocator: Allocator,
    surpluses: Vec<Surplus>,
    /// Per daemon, the last reason its report was refused (logged once per change).
    refusals: Vec<Option<String>>,
    /// Per daemon, whether it was silent in the last round (a change is logged).
    silent: Vec<bool>,
    /// Whether the last round held (None before the first): a change is logged.
    holding: Option<bool>,
    /// Whether the broker link is up (its task logs the changes).
    link_up: bool,
    /// Each surplus as the last round took it (a fall below it is acted on at once).
    shared_last: Vec<Option<Watts>>,
}

impl Coordinator {
    pub fn new(setup: CoordinatorSetup, clock: ScaledClock) -> Result<Coordinator> {
        let allocator = Allocator::new(setup.region.clone(), clock.now())?;
        let national = setup.national.iter().map(|s| (None, s));
        let sites = (setup.sites.iter()).map(|(name, s)| (Some(name.clone()), s));
        let surpluses = national
            .chain(sites)
            .map(|(site, s)| Surplus {
                site,
                desk: SignalDesk::new(s.trust.clone()),
                protection: Protection::Clear,
            })
            .collect();
        let n = setup.region.shards.len();
        Ok(Coordinator {
            allocator,
            surpluses,
            refusals: vec![None; n],
            silent: vec![false; n],
            holding: None,
            link_up: false,
            shared_last: Vec::new(),
            setup,
            clock,
        })
    }

    /// Runs until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut signals = self.start_signals();
        let (link, mut heard) = Link::connect(self.setup.link.clone());
        let mut round = tokio::time::interval(self.setup.publish_every);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_log = std::time::Instant::now();
        tokio::pin!(stop);
        info!(
            daemons = self.setup.region.shards.len(),
            surpluses = self.surpluses.len(),
            every_ms = self.setup.publish_every.as_millis() as u64,
            "coordinator started: holding caps until every daemon has reported (or {} s)",
            self.setup.region.adopt_for.as_secs_f64()
        );
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                Some((k, event)) = signals.recv() => {
                    if self.on_signal(k, event) {
                        self.round(&link, false);
                    }
                }
                Some(event) = heard.recv() => self.on_link(event),
                _ = round.tick() => {
                    let log = last_log.elapsed() >= LOG_EVERY;
                    if log {
                        last_log = std::time::Instant::now();
                    }
                    self.round(&link, log);
                }
            }
        }
    }

    /// Starts every surplus's sources; their events come back tagged with the surplus.
    fn start_signals(&self) -> mpsc::UnboundedReceiver<(usize, SignalEvent)> {
        let (merged, events) = mpsc::unbounded_channel();
        // The sources publish nothing for the coordinator (validated): an idle report.
        let (_report, idle) = watch::channel(FleetReport::default());
        let setups: Vec<&SignalsSetup> = (self.setup.national.iter())
            .chain(self.setup.sites.iter().map(|(_, s)| s))
            .collect();
        for (k, setup) in setups.into_iter().enumerate() {
            let (tx, mut rx) = mpsc::unbounded_channel();
            start_sources(setup, self.clock, idle.clone(), tx);
            let merged = merged.clone();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    if merged.send((k, event)).is_err() {
                        return;
                    }
                }
            });
        }
        events
    }

    /// Judges a source's event; true where surplus `k` is now below what the last round
    /// shared (a fall, a trip): the caps go out at once, not at the next round.
    fn on_signal(&mut self, k: usize, event: SignalEvent) -> bool {
        let now = self.clock.now();
        let surplus = &mut self.surpluses[k];
        match surplus.desk.on_event(now, event) {
            SignalAction::Protection(p) => {
                let whose = surplus.site.as_deref().unwrap_or("the national surplus");
                match &p {
                    Protection::Clear => info!(surplus = whose, "protection cleared"),
                    _ => warn!(surplus = whose, protection = ?p.describe(), "held at 0 W"),
                }
                surplus.protection = p;
                true
            }
            SignalAction::FeedNow => {
                let shared = self.shared_last.get(k).copied().flatten();
                let available = self.surpluses[k].available(now);
                matches!((shared, available), (Some(last), Some(now)) if now < last)
            }
            SignalAction::None => false,
        }
    }

    fn on_link(&mut self, event: LinkEvent) {
        let (daemon, body) = match event {
            LinkEvent::Report { daemon, body } => (daemon, body),
            // Caps wait for the link: queued behind a dead one they would go out late.
            LinkEvent::Connected => {
                self.link_up = true;
                return;
            }
            LinkEvent::Lost(_) => {
                self.link_up = false;
                return;
            }
        };
        let now = self.clock.now();
        let id = self.setup.region.shards[daemon].id.clone();
        let taken = parse_report(&body).and_then(|report| {
            (self.allocator.report(&id, report, now)).map_err(|e| e.to_string())
        });
        let reason = taken.err();
        if reason != self.refusals[daemon] {
            match &reason {
                Some(why) => {
                    warn!(daemon = %id, "report refused: {why}; its last good report stands")
                }
                None => info!(daemon = %id, "reports taken again"),
            }
            self.refusals[daemon] = reason;
        }
    }

    /// The national surplus and each site's, from each surplus's value (`available`, in the
    /// order of `self.surpluses`); without a national one, the sites' added up.
    fn combined(
        &self,
        available: &[Option<Watts>],
    ) -> (Option<Watts>, BTreeMap<String, Option<Watts>>) {
        let sites: BTreeMap<String, Option<Watts>> = (self.surpluses.iter().zip(available))
            .filter_map(|(s, w)| Some((s.site.clone()?, *w)))
            .collect();
        let national = match self.surpluses.first() {
            Some(s) if s.site.is_none() => available[0],
            // No national surplus: the sites' add up to it (an unknown one as nothing).
            _ => Some(Watts(sites.values().map(|w| w.map_or(0.0, Watts::w)).sum())),
        };
        (national, sites)
    }

    /// One round: decide, send each active daemon its cap, publish the allocation.
    fn round(&mut self, link: &Link, log: bool) {
        if !self.link_up {
            return;
        }
        let now = self.clock.now();
        self.shared_last = (self.surpluses.iter()).map(|s| s.available(now)).collect();
        let (national, sites) = self.combined(&self.shared_last);
        let decided = self.allocator.decide(now, national, &sites);
        let holding = decided.is_none();
        if self.holding.replace(holding) != Some(holding) {
            match holding {
                true => info!(
                    "adopting: no caps until every daemon has reported and the surplus is known"
                ),
                false => info!("adopted: caps go out"),
            }
        }
        if let Some(allocation) = &decided {
            self.send_caps(link, allocation, now);
            self.note_silences(allocation);
        }
        let published = self.published(now, national, &sites, decided.as_ref());
        if log {
            let caps: Vec<String> = (published.daemons.iter())
                .map(|d| match (d.cap_w, d.assumed_w) {
                    (Some(c), _) => format!("{} {:.3} MW", d.id, c / 1e6),
                    (None, Some(a)) => format!("{} silent ({:.3} MW kept)", d.id, a / 1e6),
                    _ => format!("{} holding", d.id),
                })
                .collect();
            info!(surplus_mw = ?national.map(Watts::mw), caps = %caps.join(", "), "allocation");
        }
        let body = serde_json::to_string(&published).unwrap_or_default();
        link.send_status(&self.setup.allocation_topic, body);
    }

    fn send_caps(&self, link: &Link, allocation: &Allocation, now: Timestamp) {
        for (i, (_, cap)) in allocation.shards.iter().enumerate() {
            if let Some(cap) = cap
                && !link.send_cap(&self.setup.cap_topics[i], *cap, now)
            {
                warn!(daemon = %self.setup.region.shards[i].id, "the broker link's queue is full: this round's cap is dropped");
            }
        }
    }

    fn note_silences(&mut self, allocation: &Allocation) {
        for (i, (standing, _)) in allocation.shards.iter().enumerate() {
            let id = &self.setup.region.shards[i].id;
            let silent = matches!(standing, Standing::Silent { .. });
            if silent != self.silent[i] {
                match standing {
                    Standing::Silent { assumed } => warn!(daemon = %id, room_mw = assumed.mw(),
                        "daemon silent: no cap, room kept for what it may still draw"),
                    Standing::Active => info!(daemon = %id, "daemon reporting again"),
                }
                self.silent[i] = silent;
            }
        }
    }

    fn published<'a>(
        &'a self,
        now: Timestamp,
        national: Option<Watts>,
        sites: &'a BTreeMap<String, Option<Watts>>,
        decided: Option<&Allocation>,
    ) -> Published<'a> {
        let daemons = (self.setup.region.shards.iter().enumerate())
            .map(|(i, shard)| {
                let (standing, cap_w, assumed_w) = match decided.map(|a| a.shards[i]) {
                    None => ("holding", None, None),
                    Some((Standing::Active, cap)) => ("active", cap.map(Watts::w), None),
                    Some((Standing::Silent { assumed }, _)) => ("silent", None, Some(assumed.w())),
                };
                let report = self.allocator.last_report(i);
                PublishedDaemon {
                    id: &shard.id,
                    site: &shard.site,
                    standing,
                    cap_w,
                    assumed_w,
                    load_w: report.map(|r| r.load.w()),
                    healthy: report.map(|r| r.healthy),
                }
            })
            .collect();
        Published {
            at_ms: now.as_millis(),
            holding: decided.is_none(),
            surplus_w: national.map(Watts::w),
            sites: (sites.iter())
                .map(|(s, w)| (s.as_str(), w.map(Watts::w)))
                .collect(),
            shared_w: decided.map(|a| a.shared.w()),
            daemons,
        }
    }
}
