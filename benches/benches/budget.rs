//! Budget admissions per second: one reservation and its release, on a book alone (the gate the
//! engine consults on every funded offer), without a lease and with one (several nodes sharing
//! the budget: the limit is then min(rules, lease), one more atomic load).
//!
//! Run: `cargo bench -p smista-benches --bench budget`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smista_core::book::{BudgetBook, BudgetConfig, ChannelTariff, PacingConfig, PeriodConfig, Tariff};
use smista_core::budget::{BudgetGate, FundingRequest};
use smista_core::{Channel, Millis, Segment};

fn book(leased: bool) -> BudgetBook {
    let cfg = BudgetConfig {
        id: "ccm".into(),
        ceiling_cents: i64::MAX / 4,
        period: PeriodConfig::Fixed { start_unix_ms: 0, length_ms: 365 * 86_400_000 },
        tariffs: vec![ChannelTariff {
            channel: Channel::Voice,
            tariff: Tariff {
                fee_per_contact_cents: 50,
                rate_per_second_centicents: 120,
                billing_increment_seconds: 10,
            },
        }],
        pacing: PacingConfig::Even { lookahead_ms: 3_600_000 },
        protected_reserve_bp: 500,
        protected_min_priority: None,
        protected_segments: vec![Segment::Vulnerable],
        default_handle_ms: 300_000,
        expected_handle: vec![],
        tail_sigmas: smista_core::book::TAIL_SIGMAS,
        leg_fee: Default::default(),
    };
    let b = BudgetBook::new(&[cfg], 0).expect("valid budget");
    if leased {
        let b = b.leased();
        assert!(b.set_lease("ccm", "P0", Millis(0), i64::MAX / 8));
        b
    } else {
        b
    }
}

fn bench(c: &mut Criterion) {
    let ids: Vec<String> = (0..1024).map(|i| format!("c{i}")).collect();
    let mut g = c.benchmark_group("budget");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for (name, leased) in [("admit_release", false), ("admit_release_leased", true)] {
        let b = book(leased);
        let mut i = 0usize;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                i = (i + 1) & 1023;
                let req = FundingRequest {
                    budget: "ccm",
                    contact_id: &ids[i],
                    queue: "pensions",
                    channel: Channel::Voice,
                    priority: 0,
                    segment: Segment::General,
                    now: Millis(1_000),
                };
                assert!(b.reserve(black_box(&req)));
                b.release("ccm", &ids[i]);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
