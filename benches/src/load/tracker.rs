//! What an open-loop run counts as its contacts flow: offer latency, decisions, answers, final
//! outcomes, the operators' busy time.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use dashmap::DashMap;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub(super) struct Tracker {
    pub(super) latency: Mutex<Option<Histogram<u64>>>,
    /// Contacts of this run (inserted before their offer is sent).
    pub(super) mine: DashMap<String, Box<str>>,
    /// (queue offered to, final outcome) -> contacts, for `--check-report`.
    pub(super) by_queue: Mutex<BTreeMap<(String, String), u64>>,
    pub(super) decided: DashMap<String, u8>,
    pub(super) finished: DashMap<String, u32>,
    pub(super) waiting_for_answer: DashMap<String, oneshot::Sender<u64>>,
    pub(super) outcomes: Mutex<BTreeMap<String, u64>>,
    pub(super) reasons: Mutex<BTreeMap<String, u64>>,
    pub(super) answered: AtomicU64,
    pub(super) answered_after_queue: AtomicU64,
    /// Desks that were offered at least one contact.
    pub(super) desks_offered: AtomicU64,
    pub(super) answered_in_sl: AtomicU64,
    pub(super) waited_ms_sum: AtomicU64,
    pub(super) abandoned: AtomicU64,
    pub(super) abandoned_after_sl: AtomicU64,
    /// The first level's (the `--operators`') handled legs: completed or transferred.
    pub(super) first: Level,
    /// The second level's (`--second-operators`, `--transfer-share`).
    pub(super) second: Level,
    /// Transfers to the second level the desks made.
    pub(super) transfers: AtomicU64,
    /// Contacts transferred whose second leg has not been accepted yet: when the transfer's
    /// event was stamped, Unix ms (the second level's wait runs from there).
    pub(super) second_waiting: DashMap<String, u64>,
    /// The longest wrap-up a completion's reply gave (the desks ask for none: any is the queue's).
    pub(super) wrap_up_ms_max: AtomicU64,
    pub(super) offers: AtomicU64,
    /// Offer RPCs sent and not yet answered.
    pub(super) in_flight: AtomicU64,
    /// Each contact answered after queuing: (queue, the estimated wait its offer was told, ms,
    /// the wait it then had to acceptance, ms). An estimate of 0 is "no estimate".
    pub(super) estimates: Mutex<Vec<(Box<str>, u64, u64)>>,
    /// The desks' time as this run saw it (for `--check-operators`).
    pub(super) desks: super::operator_check::DeskClock,
}

impl Tracker {
    pub(super) fn count(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
        *map.lock().entry(key.to_owned()).or_default() += 1;
    }
}

pub(super) fn unfinished(t: &Tracker) -> usize {
    t.decided.iter().filter(|e| !t.finished.contains_key(e.key())).count()
}

/// One level's desks: what they handled, and (the second level only) the waits of its legs.
#[derive(Debug, Default)]
pub(super) struct Level {
    /// Handle time of the legs handled, ms.
    pub(super) busy_ms: AtomicU64,
    /// Legs handled (completed, or at the first level transferred).
    pub(super) handled: AtomicU64,
    /// Each handled leg's time with its virtual operator: (accepted, ended).
    pub(super) busy: Mutex<Vec<(Instant, Instant)>>,
    /// Legs accepted, the sum of their waits (from the transfer), and those within the threshold.
    pub(super) answered: AtomicU64,
    pub(super) waited_ms_sum: AtomicU64,
    pub(super) answered_in_sl: AtomicU64,
    /// Legs that had to queue (the transfer's reply said queued, not offered).
    pub(super) waited: AtomicU64,
}
