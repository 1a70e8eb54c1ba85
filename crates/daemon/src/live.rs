//! What the daemon publishes for the API and the dashboard besides `Status`: every miner's
//! state (`MinersView`, at most once a second), the recent events (`RecentEvents`, kept in
//! memory whether or not the site keeps a ledger) and the surplus/load history of the last hour
//! and day (`History`, filled from the status stream).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hashsink_core::{ControlUse, FaultKind};
use serde::Serialize;
use tokio::sync::watch;

use super::Status;

/// A miner's fixed description.
#[derive(Clone, Debug, Serialize)]
pub struct MinerEntry {
    pub id: u32,
    pub address: String,
    pub model: String,
    pub firmware: String,
}

/// A miner's state as last read, and whether control routes around it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MinerLive {
    pub state: LiveState,
    pub power_w: f64,
    pub hashrate_ths: f64,
    pub fault: Option<FaultKind>,
    /// How the controller uses it: every level, on/off, or not at all.
    pub control: ControlUse,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LiveState {
    Mining,
    Booting,
    Asleep,
    Unreachable,
}

/// Every miner: the directory (fixed for the run) and their states at `at_ms`.
#[derive(Clone, Debug, Default)]
pub struct MinersView {
    pub at_ms: i64,
    pub directory: Arc<Vec<MinerEntry>>,
    pub live: Vec<MinerLive>,
    /// Each miner's last failed command, in the firmware's or the transport's words (until a
    /// command to it succeeds).
    pub refusals: Arc<std::collections::BTreeMap<u32, String>>,
    /// Why a miner is used on/off: the firmware's refusal of a power level.
    pub on_off_why: Arc<std::collections::BTreeMap<u32, String>>,
}

impl MinersView {
    /// Why miner `i` is used as it is (none for a miner used with every level).
    pub fn control_why(&self, i: usize) -> Option<String> {
        let id = self.directory.get(i)?.id;
        let live = self.live.get(i)?;
        match live.control {
            ControlUse::Levels => None,
            ControlUse::OnOff => Some(self.on_off_why.get(&id).cloned().unwrap_or_else(|| {
                "its firmware has one power level: it is slept and woken".into()
            })),
            ControlUse::None => Some(match (live.fault, self.refusals.get(&id)) {
                (Some(f), Some(r)) => format!("routed around ({f:?}); last refusal: {r}"),
                (Some(f), None) => format!("routed around ({f:?})"),
                (None, _) => "routed around".into(),
            }),
        }
    }
}

/// One thing that happened, as the event log and the dashboard show it.
#[derive(Clone, Debug, Serialize)]
pub struct RecentEvent {
    /// Increasing within a run: the dashboard asks for what came after the last it has.
    pub seq: u64,
    pub at_ms: i64,
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

/// The last `CAPACITY` events of this run.
#[derive(Debug, Default)]
pub struct RecentEvents {
    inner: Mutex<(u64, VecDeque<RecentEvent>)>,
}

impl RecentEvents {
    const CAPACITY: usize = 500;

    pub fn push(&self, at_ms: i64, kind: &str, actor: &str, detail: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let seq = g.0;
        if g.1.len() == Self::CAPACITY {
            g.1.pop_front();
        }
        g.1.push_back(RecentEvent {
            seq,
            at_ms,
            kind: kind.into(),
            actor: actor.into(),
            detail: detail.into(),
        });
    }

    /// Events after `seq`, oldest first, at most `limit`.
    pub fn after(&self, seq: u64, limit: usize) -> Vec<RecentEvent> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let newer: Vec<&RecentEvent> = g.1.iter().filter(|e| e.seq > seq).collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).cloned().collect()
    }
}

/// A point of the surplus/load chart: the mean over its bucket.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Point {
    pub t_ms: i64,
    pub surplus_w: Option<f64>,
    pub fleet_w: f64,
    pub allowed_w: f64,
}

/// A series of fixed-width buckets covering a fixed span, oldest dropped first.
#[derive(Debug)]
struct Series {
    bucket_ms: i64,
    span_ms: i64,
    points: VecDeque<Point>,
    /// The bucket being filled: its start, the sums and how many samples (and with a surplus).
    open: Option<(i64, f64, f64, f64, u32, u32)>,
}

impl Series {
    fn new(bucket_ms: i64, span_ms: i64) -> Self {
        Self {
            bucket_ms,
            span_ms,
            points: VecDeque::new(),
            open: None,
        }
    }

    fn add(&mut self, s: &Status) {
        let start = s.now_ms - s.now_ms.rem_euclid(self.bucket_ms);
        if let Some(open) = self.open {
            if open.0 != start {
                self.close();
            }
        }
        let o = self.open.get_or_insert((start, 0.0, 0.0, 0.0, 0, 0));
        if let Some(w) = s.surplus_w {
            o.1 += w;
            o.5 += 1;
        }
        o.2 += s.fleet_w;
        o.3 += s.allowed_w;
        o.4 += 1;
    }

    fn close(&mut self) {
        if let Some((start, surplus, fleet, allowed, n, with_surplus)) = self.open.take() {
            let n_f = f64::from(n.max(1));
            self.points.push_back(Point {
                t_ms: start,
                surplus_w: (with_surplus > 0).then(|| surplus / f64::from(with_surplus)),
                fleet_w: fleet / n_f,
                allowed_w: allowed / n_f,
            });
            while self
                .points
                .front()
                .is_some_and(|p| p.t_ms < start - self.span_ms)
            {
                self.points.pop_front();
            }
        }
    }

    /// The closed points and the open bucket's mean so far.
    fn snapshot(&self) -> Vec<Point> {
        let mut out: Vec<Point> = self.points.iter().copied().collect();
        if let Some((start, surplus, fleet, allowed, n, with_surplus)) = self.open {
            let n_f = f64::from(n.max(1));
            out.push(Point {
                t_ms: start,
                surplus_w: (with_surplus > 0).then(|| surplus / f64::from(with_surplus)),
                fleet_w: fleet / n_f,
                allowed_w: allowed / n_f,
            });
        }
        out
    }
}

/// The last hour in 5 s buckets and the last day in 1 min buckets, of the daemon's clock.
#[derive(Debug)]
pub struct History {
    hour: Mutex<Series>,
    day: Mutex<Series>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            hour: Mutex::new(Series::new(5_000, 3_600_000)),
            day: Mutex::new(Series::new(60_000, 86_400_000)),
        }
    }
}

impl History {
    /// Follows the status stream until the daemon stops.
    pub fn follow(self: &Arc<Self>, mut status: watch::Receiver<Status>) {
        let history = self.clone();
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let s = status.borrow_and_update().clone();
                if s.now_ms > 0 {
                    history.add(&s);
                }
            }
        });
    }

    pub fn add(&self, s: &Status) {
        self.hour.lock().unwrap_or_else(|p| p.into_inner()).add(s);
        self.day.lock().unwrap_or_else(|p| p.into_inner()).add(s);
    }

    /// `hour` or `day`.
    pub fn points(&self, day: bool) -> Vec<Point> {
        let series = if day { &self.day } else { &self.hour };
        series.lock().unwrap_or_else(|p| p.into_inner()).snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(now_ms: i64, surplus: Option<f64>, fleet: f64) -> Status {
        Status {
            now_ms,
            surplus_w: surplus,
            fleet_w: fleet,
            ..Default::default()
        }
    }

    #[test]
    fn buckets_average_and_old_points_drop() {
        let h = History::default();
        // Two samples in the first 5 s bucket, one in the next.
        h.add(&status(1_000, Some(100.0), 10.0));
        h.add(&status(3_000, Some(300.0), 30.0));
        h.add(&status(6_000, None, 50.0));
        let p = h.points(false);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].t_ms, 0);
        assert_eq!(p[0].surplus_w, Some(200.0));
        assert_eq!(p[0].fleet_w, 20.0);
        assert_eq!(p[1].surplus_w, None, "no reading in the bucket");
        // Two hours on, the hour series keeps only the last hour.
        for t in (10_000..7_200_000).step_by(5_000) {
            h.add(&status(t, Some(1.0), 1.0));
        }
        let hour = h.points(false);
        assert!(hour.len() <= 722, "{}", hour.len());
        assert!(hour[0].t_ms >= 7_195_000 - 3_600_000 - 5_000);
        assert!(h.points(true).len() >= 119);
    }

    #[test]
    fn recent_events_keep_the_newest() {
        let r = RecentEvents::default();
        for i in 0..600 {
            r.push(i, "shed", "test", "");
        }
        let all = r.after(0, 1000);
        assert_eq!(all.len(), RecentEvents::CAPACITY);
        assert_eq!(all.last().unwrap().seq, 600);
        let newest = r.after(590, 5);
        assert_eq!(
            newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![596, 597, 598, 599, 600]
        );
    }
}
