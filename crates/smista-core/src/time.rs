//! Time as the engine sees it: milliseconds on a monotonic clock chosen by the caller.
//!
//! The core never reads a clock. Every operation takes `now: Millis`, so tests drive time
//! explicitly and the server passes `Instant`-based readings.

use std::fmt;

/// A point in time, in milliseconds since an arbitrary epoch fixed by the caller (the server uses
/// its start-up instant). Monotonic by contract: callers never pass a `now` smaller than a previous one
/// by more than clock jitter; the engine tolerates small regressions by saturating differences.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// Time zero.
    pub const ZERO: Millis = Millis(0);

    /// `self + ms`, saturating.
    #[must_use]
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
