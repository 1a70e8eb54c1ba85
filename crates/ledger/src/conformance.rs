//! The ledger's behaviour, as checks that every backend must pass: run on SQLite by this
//! crate's tests, and on a real PostgreSQL server when one is configured (CI starts one).
//! Each check starts from an empty, migrated store given by `fresh`.

use hashsink_units::Timestamp;

use crate::{
    Batch, CommandRecord, EventRecord, Interval, MinerInfo, MinerInterval, Outcome, Payout, Sale,
    Store,
};

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + s * 1000)
}

/// A batch of two one-minute intervals of three miners, with commands, outcomes and events.
pub fn sample_batch() -> Batch {
    let interval = |start: i64, state: &str| Interval {
        start: t(start),
        end: t(start + 60),
        surplus_wh: Some(200.0),
        fleet_wh: 150.0,
        import_wh: 0.5,
        hashes_th: 3.0 * 60.0 * 140.0,
        expected_sat: 12.5,
        difficulty: Some(1.2e14),
        mining: 3,
        asleep: 0,
        faulted: 0,
        miners: (0..3)
            .map(|m| MinerInterval {
                miner: m,
                energy_wh: 50.0,
                hashes_th: 60.0 * 140.0,
                state: state.to_string(),
            })
            .collect(),
    };
    Batch {
        miners: (0..3)
            .map(|m| MinerInfo {
                miner: m,
                address: format!("10.0.0.{}", m + 1),
                model: "Antminer S21".into(),
                firmware: "luxos".into(),
            })
            .collect(),
        intervals: vec![interval(0, "mining"), interval(60, "asleep")],
        commands: vec![
            CommandRecord {
                id: 1,
                at: t(10),
                miner: Some(2),
                action: "sleep".into(),
                reason: "dispatch".into(),
                actor: "controller".into(),
            },
            CommandRecord {
                id: 2,
                at: t(70),
                miner: None,
                action: "shed".into(),
                reason: "operator".into(),
                actor: "operator:alice".into(),
            },
        ],
        outcomes: vec![Outcome {
            id: 1,
            at: t(11),
            result: "applied".into(),
        }],
        events: vec![EventRecord {
            seq: 1,
            at: t(70),
            kind: "shed".into(),
            actor: "operator:alice".into(),
            detail: "all miners told to sleep".into(),
        }],
    }
}

/// Runs every check; panics with what failed.
pub fn check_all(fresh: &mut dyn FnMut() -> Box<dyn Store>) {
    migrations_apply_once(fresh());
    a_batch_reads_back_whole(fresh());
    a_batch_written_twice_counts_once(fresh());
    payouts_and_sales_are_keyed_by_reference(fresh());
    sites_are_kept_apart(fresh());
    all_sites_add_up(fresh());
    daily_totals_agree_with_the_intervals(fresh());
}

fn daily_totals_agree_with_the_intervals(mut s: Box<dyn Store>) {
    // Three days of hourly intervals for two miners.
    let day0 = crate::schema::day_of(t(0).as_millis());
    let hour = 3_600_000;
    let intervals: Vec<Interval> = (0..72)
        .map(|h| {
            let start = Timestamp::from_millis(day0 + h * hour);
            Interval {
                start,
                end: Timestamp::from_millis(day0 + (h + 1) * hour),
                surplus_wh: None,
                fleet_wh: 2.0,
                import_wh: 0.0,
                hashes_th: 2.0,
                expected_sat: 0.0,
                difficulty: None,
                mining: 2,
                asleep: 0,
                faulted: 0,
                miners: (0..2)
                    .map(|m| MinerInterval {
                        miner: m,
                        energy_wh: 1.0,
                        hashes_th: 1.0,
                        state: "mining".into(),
                    })
                    .collect(),
            }
        })
        .collect();
    let batch = Batch {
        intervals,
        ..Batch::default()
    };
    s.write("plant", 1, &batch).unwrap();
    // Written again (a retried batch): counted once, daily totals too.
    s.write("plant", 1, &batch).unwrap();
    // From 10:00 on day 0 to 05:00 on day 2: 14 + 24 + 5 hours.
    let from = Timestamp::from_millis(day0 + 10 * hour);
    let to = Timestamp::from_millis(day0 + 53 * hour);
    let totals = s.miner_totals("plant", from, to).unwrap();
    assert_eq!(totals.len(), 2);
    assert_eq!(totals[0].energy_wh, 43.0, "{totals:?}");
    assert_eq!(totals[1].mining_intervals, 43);
    assert_eq!(s.miner_interval_totals("plant", from, to).unwrap(), totals);
    // Pruned up to day 2: whole days still come from the daily totals.
    let pruned = s
        .prune_miner_intervals("plant", Timestamp::from_millis(day0 + 48 * hour))
        .unwrap();
    assert_eq!(pruned, 2 * 48);
    let whole_days = s
        .miner_totals(
            "plant",
            Timestamp::from_millis(day0),
            Timestamp::from_millis(day0 + 72 * hour),
        )
        .unwrap();
    assert_eq!(whole_days[0].energy_wh, 72.0, "{whole_days:?}");
    assert_eq!(
        s.prune_miner_intervals("plant", Timestamp::from_millis(day0))
            .unwrap(),
        0
    );
}

fn migrations_apply_once(mut s: Box<dyn Store>) {
    // `fresh` migrated it already.
    assert_eq!(s.version().unwrap(), crate::schema::latest());
    assert_eq!(
        s.migrate(t(0)).unwrap(),
        Vec::<u32>::new(),
        "migrated twice"
    );
}

fn a_batch_reads_back_whole(mut s: Box<dyn Store>) {
    let b = sample_batch();
    s.write("plant", 7, &b).unwrap();
    let rows = s.intervals("plant", t(0), t(120)).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].start, t(0));
    assert_eq!(rows[0].surplus_wh, Some(200.0));
    assert_eq!(rows[1].fleet_wh, 150.0);
    assert_eq!(rows[1].expected_sat, 12.5);
    assert_eq!(
        s.intervals("plant", t(60), t(61)).unwrap().len(),
        1,
        "[from, to)"
    );
    let totals = s.miner_totals("plant", t(0), t(120)).unwrap();
    assert_eq!(totals.len(), 3);
    assert_eq!(totals[1].energy_wh, 100.0);
    assert_eq!(totals[1].mining_intervals, 1);
    assert_eq!(s.miners("plant").unwrap(), b.miners);
    let audit = s.audit("plant", t(0), t(120)).unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].command, b.commands[0]);
    assert_eq!(audit[0].run_ms, 7);
    assert_eq!(audit[0].outcome, Some((t(11), "applied".to_string())));
    assert_eq!(audit[1].outcome, None, "no outcome yet");
    assert_eq!(audit[1].command.actor, "operator:alice");
    assert_eq!(s.events("plant", t(0), t(120)).unwrap(), b.events);
}

fn a_batch_written_twice_counts_once(mut s: Box<dyn Store>) {
    let b = sample_batch();
    s.write("plant", 7, &b).unwrap();
    s.write("plant", 7, &b).unwrap();
    assert_eq!(s.intervals("plant", t(0), t(120)).unwrap().len(), 2);
    assert_eq!(
        s.miner_totals("plant", t(0), t(120)).unwrap()[0].energy_wh,
        100.0
    );
    assert_eq!(s.audit("plant", t(0), t(120)).unwrap().len(), 2);
    // The same command ids in another daemon run are other commands.
    s.write("plant", 8, &b).unwrap();
    assert_eq!(s.audit("plant", t(0), t(120)).unwrap().len(), 4);
}

fn payouts_and_sales_are_keyed_by_reference(mut s: Box<dyn Store>) {
    let payouts = vec![
        Payout {
            reference: "pool-1".into(),
            at: t(100),
            sat: 120_000,
            source: "ocean".into(),
        },
        Payout {
            reference: "pool-2".into(),
            at: t(200),
            sat: 80_000,
            source: "ocean".into(),
        },
    ];
    assert_eq!(s.add_payouts("plant", &payouts).unwrap(), 2);
    assert_eq!(
        s.add_payouts("plant", &payouts).unwrap(),
        0,
        "imported twice"
    );
    assert_eq!(s.payouts("plant", t(0), t(300)).unwrap(), payouts);
    let sales = vec![Sale {
        reference: "otc-9".into(),
        at: t(250),
        sat: 150_000,
        fiat_minor: 1_350_000,
        currency: "USD".into(),
    }];
    assert_eq!(s.add_sales("plant", &sales).unwrap(), 1);
    assert_eq!(s.add_sales("plant", &sales).unwrap(), 0);
    assert_eq!(s.sales("plant", t(0), t(300)).unwrap(), sales);
}

fn all_sites_add_up(mut s: Box<dyn Store>) {
    s.write("north", 1, &sample_batch()).unwrap();
    s.write("east", 7, &sample_batch()).unwrap();
    let all = crate::statement::all_sites(s.as_mut(), t(0), t(600)).unwrap();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["east", "north", crate::statement::ALL_SITES]);
    let total = |k: usize| all[k].1.last().unwrap().clone();
    assert_eq!(total(0).period, "total");
    assert!(total(0).energy_mwh > 0.0);
    assert_eq!(total(2).intervals, total(0).intervals + total(1).intervals);
    assert!((total(2).energy_mwh - total(0).energy_mwh - total(1).energy_mwh).abs() < 1e-12);
    assert!((total(2).hashes_eh - 2.0 * total(1).hashes_eh).abs() < 1e-12);
}

fn sites_are_kept_apart(mut s: Box<dyn Store>) {
    assert!(s.sites().unwrap().is_empty());
    s.write("north", 1, &sample_batch()).unwrap();
    s.write("east", 1, &sample_batch()).unwrap();
    assert_eq!(s.sites().unwrap(), ["east", "north"]);
    assert!(s.intervals("south", t(0), t(120)).unwrap().is_empty());
    assert!(s.miners("south").unwrap().is_empty());
    assert_eq!(s.intervals("north", t(0), t(120)).unwrap().len(), 2);
}
