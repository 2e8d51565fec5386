//! A queue's live service level over a sliding window: answered, answered within the
//! threshold and abandoned after it, counted in [`BUCKETS`] buckets of `window / BUCKETS` each.
//!
//! Lock-free: each bucket is one `AtomicU64` packing three 16-bit counts and the low 16 bits of
//! the bucket's index; a record that finds a bucket of an older index resets it to its own in
//! the same compare-and-swap, so no count is lost to a concurrent reset. A count saturates at
//! 65,535 per bucket (a queue answering more than that in a fifteenth of the window reads
//! slightly low). Index tags repeat after 65,536 buckets (45 days with the default window): a
//! bucket untouched for exactly that long would be read as current, which needs a queue silent
//! for 45 days and then read within one bucket of the same phase.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::Millis;

/// Buckets per window.
pub const BUCKETS: u64 = 15;

const FIELD: u64 = 0xFFFF;

/// What one bucket, or the whole window, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlCounts {
    /// Contacts accepted by an operator.
    pub answered: u64,
    /// Of those, accepted within the threshold.
    pub within: u64,
    /// Contacts abandoned after waiting longer than the threshold.
    pub abandoned_late: u64,
}

impl SlCounts {
    /// Answered within the threshold over answered plus abandoned after it (1 with neither).
    #[must_use]
    pub fn service_level(&self) -> f64 {
        let d = self.answered + self.abandoned_late;
        if d == 0 {
            1.0
        } else {
            self.within as f64 / d as f64
        }
    }
}

/// The sliding window.
#[derive(Debug)]
pub(crate) struct SlWindow {
    bucket_ms: u64,
    buckets: [AtomicU64; BUCKETS as usize],
}

fn pack(tag: u64, c: SlCounts) -> u64 {
    c.answered.min(FIELD) | (c.within.min(FIELD) << 16) | (c.abandoned_late.min(FIELD) << 32) | ((tag & FIELD) << 48)
}

fn unpack(w: u64) -> (u64, SlCounts) {
    (w >> 48, SlCounts { answered: w & FIELD, within: (w >> 16) & FIELD, abandoned_late: (w >> 32) & FIELD })
}

impl SlWindow {
    /// A window of `window_ms` (at least one millisecond per bucket).
    pub(crate) fn new(window_ms: u64) -> Self {
        SlWindow { bucket_ms: (window_ms / BUCKETS).max(1), buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// Counts `add` at `at`. A record older than the window at `now` is ignored.
    pub(crate) fn record(&self, at: Millis, now: Millis, add: SlCounts) {
        let idx = at.0 / self.bucket_ms;
        if now.0 / self.bucket_ms >= idx + BUCKETS {
            return;
        }
        let b = &self.buckets[(idx % BUCKETS) as usize];
        let mut cur = b.load(Ordering::Acquire);
        loop {
            let (tag, c) = unpack(cur);
            let base = if tag == idx & FIELD { c } else { SlCounts::default() };
            let next = pack(
                idx,
                SlCounts {
                    answered: base.answered + add.answered,
                    within: base.within + add.within,
                    abandoned_late: base.abandoned_late + add.abandoned_late,
                },
            );
            match b.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// What the window ending at `now` counted.
    pub(crate) fn totals(&self, now: Millis) -> SlCounts {
        let cur = now.0 / self.bucket_ms;
        let mut sum = SlCounts::default();
        for k in 0..BUCKETS.min(cur + 1) {
            let idx = cur - k;
            let (tag, c) = unpack(self.buckets[(idx % BUCKETS) as usize].load(Ordering::Acquire));
            if tag == idx & FIELD {
                sum.answered += c.answered;
                sum.within += c.within;
                sum.abandoned_late += c.abandoned_late;
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWERED_IN: SlCounts = SlCounts { answered: 1, within: 1, abandoned_late: 0 };
    const ANSWERED_LATE: SlCounts = SlCounts { answered: 1, within: 0, abandoned_late: 0 };
    const ABANDONED: SlCounts = SlCounts { answered: 0, within: 0, abandoned_late: 1 };

    #[test]
    fn old_answers_leave_the_window() {
        let w = SlWindow::new(900_000); // 60 s buckets
        let t = |s: u64| Millis(s * 1000);
        w.record(t(10), t(10), ANSWERED_LATE);
        w.record(t(100), t(100), ANSWERED_IN);
        w.record(t(200), t(200), ABANDONED);
        let c = w.totals(t(200));
        assert_eq!(c, SlCounts { answered: 2, within: 1, abandoned_late: 1 });
        assert!((c.service_level() - 1.0 / 3.0).abs() < 1e-12);
        // 15 minutes after the first bucket it is gone; the others stay until theirs end.
        assert_eq!(w.totals(t(900)), SlCounts { answered: 1, within: 1, abandoned_late: 1 });
        assert_eq!(w.totals(t(2_000)), SlCounts::default());
        assert!((w.totals(t(2_000)).service_level() - 1.0).abs() < 1e-12, "nothing to miss");
        // A bucket re-used a window later starts from zero.
        w.record(t(910), t(910), ANSWERED_IN);
        assert_eq!(w.totals(t(910)).answered, 2);
        // Records older than the window are ignored.
        w.record(t(10), t(2_000), ANSWERED_IN);
        assert_eq!(w.totals(t(2_000)).answered, 0);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let w = std::sync::Arc::new(SlWindow::new(900_000));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for k in 0..10_000u64 {
                        // Crossing bucket boundaries while others write.
                        let at = Millis(k * 10 + i);
                        w.record(at, at, ANSWERED_IN);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // All 40,000 within the window ending at 100 s (buckets of 60 s).
        assert_eq!(w.totals(Millis(100_000)).answered, 40_000);
    }
}
