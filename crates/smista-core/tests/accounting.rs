//! Per-operator accounting folded per interval: in every row, operator's or group's, the time
//! parts (available, on contacts per channel, wrap-up, paused per reason) add up to the
//! logged-in time, for random state histories across the 2026 clock changes in Europe/Rome
//! (29 March and 25 October); every instant is counted once, in the wall-clock interval it falls
//! in (checked against a minute-by-minute walk); counts land in the interval they happened in;
//! group rows are the sums of their operators' rows.

use std::collections::BTreeMap;

use proptest::prelude::*;
use smista_core::accounting::{Activity, Change, Fact, Fold, Recorded};
use smista_core::calendar::CentralEurope;
use smista_core::report::{interval_start, Zone};
use smista_core::Channel;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// 2026-03-29T01:00:00Z and 2026-10-25T01:00:00Z, the EU's change instants.
const SPRING: i64 = 1_774_746_000_000;
const AUTUMN: i64 = 1_792_890_000_000;

fn fact() -> impl Strategy<Value = Fact> {
    prop_oneof![
        3 => Just(Fact::State(Activity::Available)),
        3 => prop::sample::select(Channel::ALL.to_vec()).prop_map(|c| Fact::State(Activity::OnContact(c))),
        2 => Just(Fact::State(Activity::WrapUp)),
        2 => prop::sample::select(vec!["break", "training", "meeting", "no_answer"])
            .prop_map(|r| Fact::State(Activity::Paused(r.to_owned()))),
        2 => Just(Fact::State(Activity::LoggedOut)),
        1 => (prop::sample::select(Channel::ALL.to_vec()), 0u64..900_000)
            .prop_map(|(channel, handle_ms)| Fact::Handled { channel, handle_ms }),
        1 => Just(Fact::Declined),
        1 => Just(Fact::TimedOut),
    ]
}

/// One operator's history: facts at random instants around a change day (some before the
/// report's start, some after its end), in time order; each writer alive for ever or until some
/// instant (a node that died).
fn history(op: usize, day_start: i64) -> impl Strategy<Value = Vec<Recorded>> {
    let span = 28 * HOUR;
    prop::collection::vec((0..span, fact(), prop::option::of(0..span), 0..3usize), 0..40).prop_map(move |mut v| {
        v.sort_by_key(|x| x.0);
        v.into_iter()
            .map(|(at, fact, dies, group)| Recorded {
                change: Change {
                    operator: format!("op-{op}"),
                    group: ["internal", "supplier-a", "supplier-b"][group].to_owned(),
                    at_unix_ms: day_start - 2 * HOUR + at,
                    fact,
                },
                alive_until: dies.map_or(i64::MAX, |d| day_start - 2 * HOUR + d),
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = (i64, i64, i64, Vec<Vec<Recorded>>)> {
    // The local day of each change: from local midnight to local midnight.
    let days =
        prop::sample::select(vec![(SPRING - 2 * HOUR, SPRING + 21 * HOUR), (AUTUMN - 3 * HOUR, AUTUMN + 22 * HOUR)]);
    let interval = prop::sample::select(vec![5i64, 15, 30, 60, 1440]);
    (days, interval).prop_flat_map(|((from, until), minutes)| {
        let ops = (0..4usize).map(|op| history(op, from)).collect::<Vec<_>>();
        (Just(from), Just(until), Just(minutes * MINUTE), ops)
    })
}

/// The reference: each state from its fact to the operator's next state fact, its writer's last
/// sign of life or the end, clipped to the period, walked minute by minute (no interval starts
/// inside a minute) and counted in the interval of each piece.
fn walk(history: &[Recorded], from: i64, until: i64, interval_ms: i64) -> BTreeMap<(i64, String), (i64, String)> {
    let mut out: BTreeMap<(i64, String), (i64, String)> = BTreeMap::new();
    let states: Vec<&Recorded> =
        history.iter().filter(|r| matches!(r.change.fact, Fact::State(_)) && r.change.at_unix_ms < until).collect();
    for (i, r) in states.iter().enumerate() {
        let Fact::State(a) = &r.change.fact else { continue };
        if *a == Activity::LoggedOut {
            continue;
        }
        let next = states.get(i + 1).map_or(until, |n| n.change.at_unix_ms);
        let (mut t, end) = (r.change.at_unix_ms.max(from), next.min(r.alive_until).min(until));
        while t < end {
            let e = ((t.div_euclid(MINUTE) + 1) * MINUTE).min(end);
            let key = (interval_start(t, interval_ms, &CentralEurope), r.change.operator.clone());
            let slot = out.entry(key).or_insert((0, r.change.group.clone()));
            slot.0 += e - t;
            t = e;
        }
    }
    out
}

#[test]
fn the_zone_changes_on_the_2026_days() {
    assert_eq!(CentralEurope.offset_ms(SPRING - 1), HOUR);
    assert_eq!(CentralEurope.offset_ms(SPRING), 2 * HOUR);
    assert_eq!(CentralEurope.offset_ms(AUTUMN - 1), 2 * HOUR);
    assert_eq!(CentralEurope.offset_ms(AUTUMN), HOUR);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parts_add_up_to_the_logged_in_time_in_every_row((from, until, interval_ms, ops) in case()) {
        let mut fold = Fold::new(from, until, interval_ms, &CentralEurope);
        for h in &ops {
            fold.add(h);
        }
        let (rows, groups) = fold.finish();
        for r in rows.iter().chain(&groups) {
            prop_assert_eq!(r.parts_ms(), r.logged_in_ms, "row {:?}", r);
            prop_assert_eq!(interval_start(r.start_unix_ms, interval_ms, &CentralEurope), r.start_unix_ms);
            prop_assert!((from - interval_ms..until).contains(&r.start_unix_ms));
            let local = r.start_unix_ms + CentralEurope.offset_ms(r.start_unix_ms);
            prop_assert_eq!(local.rem_euclid(interval_ms), 0, "an interval starts on the wall clock");
        }
        // Every instant counted once, in its own interval (per operator: an operator's rows in
        // one interval may be under several groups when their group changed).
        let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
        for h in &ops {
            for ((start, op), (ms, _)) in walk(h, from, until, interval_ms) {
                *expected.entry((start, op)).or_default() += ms;
            }
        }
        let mut got: BTreeMap<(i64, String), i64> = BTreeMap::new();
        for r in &rows {
            if r.logged_in_ms > 0 {
                *got.entry((r.start_unix_ms, r.operator.clone())).or_default() +=
                    i64::try_from(r.logged_in_ms).unwrap_or(i64::MAX);
            }
        }
        prop_assert_eq!(got, expected);
        // Counts where they happened.
        let counted = |f: &dyn Fn(&Fact) -> bool| -> BTreeMap<(i64, String), u64> {
            let mut m = BTreeMap::new();
            for r in ops.iter().flatten() {
                let t = r.change.at_unix_ms;
                if (from..until).contains(&t) && f(&r.change.fact) {
                    *m.entry((interval_start(t, interval_ms, &CentralEurope), r.change.operator.clone())).or_default() += 1;
                }
            }
            m
        };
        let mut handled: BTreeMap<(i64, String), u64> = BTreeMap::new();
        let mut declined: BTreeMap<(i64, String), u64> = BTreeMap::new();
        let mut timed_out: BTreeMap<(i64, String), u64> = BTreeMap::new();
        for r in &rows {
            for (m, n) in [(&mut handled, r.handled), (&mut declined, r.declined), (&mut timed_out, r.timed_out)] {
                if n > 0 {
                    *m.entry((r.start_unix_ms, r.operator.clone())).or_default() += n;
                }
            }
        }
        prop_assert_eq!(handled, counted(&|f| matches!(f, Fact::Handled { .. })));
        prop_assert_eq!(declined, counted(&|f| matches!(f, Fact::Declined)));
        prop_assert_eq!(timed_out, counted(&|f| matches!(f, Fact::TimedOut)));
        // Group rows are their operators' sums.
        let mut sums: BTreeMap<(i64, String), (u64, u64, u64)> = BTreeMap::new();
        for r in &rows {
            let s = sums.entry((r.start_unix_ms, r.group.clone())).or_default();
            s.0 += r.logged_in_ms;
            s.1 += r.handled;
            s.2 += 1;
        }
        let groups: BTreeMap<(i64, String), (u64, u64, u64)> =
            groups.iter().map(|g| ((g.start_unix_ms, g.group.clone()), (g.logged_in_ms, g.handled, g.operators))).collect();
        prop_assert_eq!(groups, sums);
    }
}
