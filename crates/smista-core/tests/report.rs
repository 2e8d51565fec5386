//! Interval reports: totals equal the records they fold, every contact is offered in exactly one
//! row, outcomes partition the offered, and intervals follow the wall clock of Europe/Rome across
//! the 2026 clock changes (29 March and 25 October).

use std::collections::BTreeMap;

use proptest::prelude::*;
use smista_core::report::{interval_start, Builder, Record, Zone};
use smista_core::{DivertReason, Outcome};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The last Sunday of a month, 01:00 UTC (the EU's change instant).
fn last_sunday_1utc(y: i64, m: i64) -> i64 {
    let next = if m == 12 { days(y + 1, 1, 1) } else { days(y, m + 1, 1) };
    let last = next - 1;
    // 1970-01-01 was a Thursday: weekday 0 = Sunday is (days + 4) mod 7.
    let back = (last + 4).rem_euclid(7);
    (last - back) * DAY + HOUR
}

/// Central European Time by the EU rule (Europe/Rome since 1996), written out independently of
/// the IANA database the server uses.
#[derive(Debug)]
struct Rome;

impl Zone for Rome {
    fn offset_ms(&self, t: i64) -> i64 {
        let mut y = 1970 + t.div_euclid(365 * DAY);
        while t < days(y, 1, 1) * DAY {
            y -= 1;
        }
        while t >= days(y + 1, 1, 1) * DAY {
            y += 1;
        }
        if t >= last_sunday_1utc(y, 3) && t < last_sunday_1utc(y, 10) {
            2 * HOUR
        } else {
            HOUR
        }
    }
}

fn builder(interval_ms: i64) -> Builder<'static> {
    let thresholds = BTreeMap::from([("naspi".to_owned(), 20_000u64), ("pensions".to_owned(), 30_000)]);
    Builder::new(interval_ms, &Rome, thresholds, 20_000, 5_000)
}

fn rec(arrived: i64, queue: &str, outcome: Outcome, waited_ms: u64) -> Record<'_> {
    Record {
        arrived_unix_ms: arrived,
        first_queue: queue,
        overflowed: false,
        outcome,
        diverted: (outcome == Outcome::Diverted).then_some(DivertReason::QueueFull),
        waited_ms,
        handle_ms: if matches!(outcome, Outcome::Completed | Outcome::Transferred) { 120_000 } else { 0 },
        wrap_up_ms: if matches!(outcome, Outcome::Completed | Outcome::Transferred) { 10_000 } else { 0 },
        group: if matches!(outcome, Outcome::Completed | Outcome::CancelledInService | Outcome::Transferred) {
            "supplier-a"
        } else {
            ""
        },
        supplier: "acme",
        transfers: &[],
        consultation_of: "",
    }
}

/// Every 30-minute interval of a day, one contact in each minute of it.
fn day_of_minutes(day_start_utc: i64) -> Vec<i64> {
    let (from, to) = (day_start_utc - 2 * HOUR, day_start_utc + DAY + 2 * HOUR);
    (0..).map(|i| from + i * 60_000).take_while(|t| *t < to).collect()
}

/// The local-midnight-to-midnight instants of a civil day in Rome.
fn local_day(y: i64, m: i64, d: i64) -> (i64, i64) {
    let guess = days(y, m, d) * DAY;
    let start = guess - Rome.offset_ms(guess - 3 * HOUR);
    let next = days(y, m, d + 1) * DAY;
    let end = next - Rome.offset_ms(next - 3 * HOUR);
    (start, end)
}

#[test]
fn a_transferred_contact_counts_once_in_its_first_queue_and_its_transfers_in_and_out() {
    let at = days(2026, 12, 7) * DAY + 9 * HOUR;
    let mut b = builder(30 * 60_000);
    // naspi -> consultancy, completed there; pensions -> out of the centre.
    let legs = [("naspi".to_owned(), "consultancy".to_owned())];
    let mut r = rec(at, "naspi", Outcome::Completed, 4_000);
    r.transfers = &legs;
    b.add(&r);
    let out = [("pensions".to_owned(), String::new())];
    let mut r = rec(at, "pensions", Outcome::Transferred, 1_000);
    r.transfers = &out;
    b.add(&r);
    // Two consultations asked of consultancy (one cancelled, one handed over): operators' work,
    // in no citizen's figure.
    for outcome in [Outcome::CancelledInService, Outcome::Transferred] {
        let mut k = rec(at, "consultancy", outcome, 2_000);
        k.consultation_of = "a-call";
        b.add(&k);
    }
    let (rows, _) = b.finish();
    let row = |q: &str| rows.iter().find(|r| r.queue == q).cloned().unwrap_or_else(|| panic!("a row for {q}"));
    let (naspi, consult, pensions) = (row("naspi"), row("consultancy"), row("pensions"));
    assert_eq!((naspi.offered, naspi.answered, naspi.transferred_out, naspi.transferred_in), (1, 1, 1, 0));
    assert_eq!(
        (consult.offered, consult.answered, consult.transferred_in, consult.consultations),
        (0, 0, 1, 2),
        "offered in its first queue only; consultations apart"
    );
    assert_eq!((pensions.offered, pensions.answered, pensions.handled, pensions.transferred_out), (1, 1, 1, 1));
    for r in &rows {
        assert_eq!(r.answered + r.abandoned + r.diverted + r.in_progress, r.offered, "{r:?}");
    }
}

#[test]
fn the_clocks_going_forward_make_a_day_of_46_half_hours_and_going_back_one_of_50() {
    for ((y, m, d), hours) in [((2026, 3, 29), 23), ((2026, 10, 25), 25), ((2026, 6, 10), 24)] {
        let (start, end) = local_day(y, m, d);
        assert_eq!(end - start, hours * HOUR, "{y}-{m}-{d} lasts {hours} h");
        let mut b = builder(30 * 60_000);
        let minutes: Vec<i64> = day_of_minutes(start).into_iter().filter(|t| *t >= start && *t < end).collect();
        for t in &minutes {
            b.add(&rec(*t, "naspi", Outcome::Completed, 1_000));
        }
        let (rows, _) = b.finish();
        assert_eq!(rows.len() as i64, hours * 2, "{y}-{m}-{d}: intervals");
        assert!(rows.iter().all(|r| r.offered == 30), "each half hour of the wall clock holds its 30 minutes");
        assert_eq!(rows.iter().map(|r| r.offered).sum::<u64>(), minutes.len() as u64, "none lost or doubled");
        // Every row starts on a local :00 or :30.
        for r in &rows {
            let local = r.start_unix_ms + Rome.offset_ms(r.start_unix_ms);
            assert_eq!(local.rem_euclid(30 * 60_000), 0);
        }
    }
}

#[test]
fn the_repeated_hour_of_october_is_two_intervals_with_different_offsets() {
    // 25 October 2026: 03:00 CEST (01:00 UTC) becomes 02:00 CET. Hourly intervals.
    let change = last_sunday_1utc(2026, 10);
    assert_eq!(change, days(2026, 10, 25) * DAY + HOUR);
    let a = interval_start(change - 30 * 60_000, HOUR, &Rome); // 02:30 CEST
    let b = interval_start(change + 30 * 60_000, HOUR, &Rome); // 02:30 CET
    assert_eq!(b - a, HOUR, "two distinct intervals");
    assert_eq!(a + Rome.offset_ms(a), b + Rome.offset_ms(b), "both labelled 02:00 on the wall clock");
    // 29 March 2026: 02:00 CET (01:00 UTC) becomes 03:00 CEST; there is no 02:00 interval.
    let spring = last_sunday_1utc(2026, 3);
    let before = interval_start(spring - 60_000, HOUR, &Rome);
    let after = interval_start(spring + 60_000, HOUR, &Rome);
    assert_eq!(after - before, HOUR);
    assert_eq!((before + Rome.offset_ms(before)).rem_euclid(DAY), HOUR, "01:00 local");
    assert_eq!((after + Rome.offset_ms(after)).rem_euclid(DAY), 3 * HOUR, "then 03:00 local");
}

#[test]
fn service_levels_follow_their_stated_formulas() {
    let mut b = builder(30 * 60_000);
    let t = days(2026, 6, 10) * DAY + 8 * HOUR; // 10:00 local
    b.add(&rec(t, "naspi", Outcome::Completed, 5_000)); // within 20 s
    b.add(&rec(t + 1, "naspi", Outcome::Completed, 25_000)); // late
    b.add(&rec(t + 2, "naspi", Outcome::Abandoned, 2_000)); // short abandon
    b.add(&rec(t + 3, "naspi", Outcome::Abandoned, 40_000)); // after the threshold
    b.add(&rec(t + 4, "naspi", Outcome::Diverted, 0));
    b.add_in_progress(t + 5, "naspi");
    let (rows, groups) = b.finish();
    let r = &rows[0];
    assert_eq!((r.offered, r.answered, r.abandoned, r.diverted, r.in_progress), (6, 2, 2, 1, 1));
    assert_eq!((r.answered_within, r.short_abandoned, r.abandoned_after_threshold), (1, 1, 1));
    // within / (offered - short - in progress) = 1 / 4; within / (answered + abandoned late) = 1 / 3.
    assert!((r.service_level_offered() - 0.25).abs() < 1e-12);
    assert!((r.service_level_answered() - 1.0 / 3.0).abs() < 1e-12);
    assert!((r.asa_ms() - 15_000.0).abs() < 1e-9);
    assert_eq!(r.max_wait_ms, 40_000);
    assert!((r.aht_ms() - 120_000.0).abs() < 1e-9);
    assert_eq!(r.diverted_by_reason.get("queue_full"), Some(&1));
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].answered, groups[0].handled), (2, 2));
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Completed),
        Just(Outcome::CancelledInService),
        Just(Outcome::Abandoned),
        Just(Outcome::Diverted),
        Just(Outcome::Transferred)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any sequence of contacts over a week around the October change: the report's totals
    /// equal the per-contact records, every contact is offered in exactly one row, and answered +
    /// abandoned + diverted + in progress = offered in every row.
    #[test]
    fn totals_equal_the_records_and_outcomes_partition_the_offered(
        contacts in prop::collection::vec(
            (0i64..7 * DAY, prop::sample::select(vec!["naspi", "pensions", "isee"]), outcome(), 0u64..120_000, any::<bool>(), any::<bool>()),
            0..400,
        ),
        interval in prop::sample::select(vec![15i64, 30, 60]),
    ) {
        let base = days(2026, 10, 21) * DAY;
        let mut b = builder(interval * 60_000);
        let (mut answered, mut abandoned, mut diverted, mut live, mut handle) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut by_queue: BTreeMap<&str, u64> = BTreeMap::new();
        for (at, q, o, wait, overflowed, in_progress) in &contacts {
            *by_queue.entry(q).or_default() += 1;
            if *in_progress {
                b.add_in_progress(base + at, q);
                live += 1;
                continue;
            }
            let mut r = rec(base + at, q, *o, *wait);
            r.overflowed = *overflowed;
            b.add(&r);
            match o {
                Outcome::Completed | Outcome::Transferred => { answered += 1; handle += r.handle_ms; }
                Outcome::CancelledInService => answered += 1,
                Outcome::Abandoned | Outcome::Unreachable => abandoned += 1,
                Outcome::Diverted => diverted += 1,
            }
        }
        let (rows, groups) = b.finish();
        let sum = |f: fn(&smista_core::report::QueueInterval) -> u64| rows.iter().map(f).sum::<u64>();
        prop_assert_eq!(sum(|r| r.offered), contacts.len() as u64);
        prop_assert_eq!(sum(|r| r.answered), answered);
        prop_assert_eq!(sum(|r| r.abandoned), abandoned);
        prop_assert_eq!(sum(|r| r.diverted), diverted);
        prop_assert_eq!(sum(|r| r.in_progress), live);
        prop_assert_eq!(sum(|r| r.handle_ms), handle);
        prop_assert_eq!(groups.iter().map(|g| g.answered).sum::<u64>(), answered);
        for r in &rows {
            prop_assert_eq!(r.answered + r.abandoned + r.diverted + r.in_progress, r.offered);
            prop_assert!(r.answered_within <= r.answered);
            prop_assert!(r.short_abandoned + r.abandoned_after_threshold <= r.abandoned);
            let sl = r.service_level_offered();
            prop_assert!((0.0..=1.0).contains(&sl), "{}", sl);
        }
        for (q, n) in by_queue {
            prop_assert_eq!(rows.iter().filter(|r| r.queue == q).map(|r| r.offered).sum::<u64>(), n);
        }
        // Each contact is in exactly one row: the row whose interval contains its arrival.
        for (at, q, ..) in &contacts {
            let start = interval_start(base + at, interval * 60_000, &Rome);
            let holding = rows.iter().filter(|r| r.queue == *q && r.start_unix_ms <= base + at && base + at < r.start_unix_ms + interval * 60_000).count();
            prop_assert_eq!(holding, 1);
            prop_assert!(rows.iter().any(|r| r.queue == *q && r.start_unix_ms == start));
        }
    }
}
