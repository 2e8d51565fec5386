//! Interval reports: contact detail records folded into per-interval figures per queue (service
//! line) and per operator group, as the contract and the staffing plan read them.
//!
//! **Attribution.** A contact counts in the interval of its *arrival* (its original arrival when
//! it was offered again after a failover) and under the queue the platform offered it to (its
//! service line), wherever it overflowed to: each contact is *offered* exactly once, in exactly
//! one row, and ends in exactly one of *answered* (an operator accepted it: completed, the
//! caller hung up in service, or an operator sent it out of the centre), *abandoned* (the caller hung up while waiting), *diverted*
//! (queue full, no operators, maximum wait, extra budget...), or is still *in progress* when
//! the report is made. So `answered + abandoned + diverted + in_progress = offered` in every row.
//! Group rows count the contacts a group's operators answered, in the interval of arrival, and
//! the time its operators were logged in, paused and busy in the interval itself, whence
//! `occupancy = busy / (staffed - paused)`.
//!
//! **Intervals** follow the centre's wall clock: an interval starts where the local time is a
//! multiple of the interval since local midnight, so a 30-minute report has 46 rows on the day
//! the clocks go forward and 50 on the day they go back (the repeated hour's two intervals are
//! distinct instants, told apart by their UTC offset). The time zone is given as a [`Zone`] (the
//! server uses the IANA database; this module does no IO).
//!
//! **Service level**, the share of contacts answered within the service line's threshold, in
//! the two variants contracts use:
//! - `service_level_offered = answered_within / (offered - short_abandoned - in_progress)`: over
//!   every contact offered, diverted ones included, leaving out callers who hung up within the
//!   short-abandon threshold (they never really waited) and contacts not yet decided;
//! - `service_level_answered = answered_within / (answered + abandoned_after_threshold)`: over
//!   contacts answered plus those abandoned after the threshold (the live service level of the
//!   snapshot uses this one).
//!
//! Both are 1 when their denominator is 0 (nothing to miss).

use std::collections::BTreeMap;

use crate::model::{DivertReason, Outcome};

pub use crate::calendar::{FixedOffset, Zone};

/// The start of the interval of length `interval_ms` containing `unix_ms`, aligned on the local
/// wall clock of `zone` (see the module docs): the last instant at or before `unix_ms` whose
/// local time is a multiple of the interval since local midnight. Near a change of offset that
/// instant may lie under the other offset (a day-long interval on the change days starts at a
/// midnight of the offset before: 25 or 23 hours long), and a local time the clocks skipped
/// starts nothing (the interval before it runs on).
#[must_use]
pub fn interval_start(unix_ms: i64, interval_ms: i64, zone: &dyn Zone) -> i64 {
    let i = interval_ms.max(1);
    let off = zone.offset_ms(unix_ms);
    let local = unix_ms + off;
    let mut floor = local - local.rem_euclid(i);
    // Offsets change by an hour at most twice a year: a few steps back always find a start.
    for _ in 0..4 {
        let s = floor - off;
        let then = zone.offset_ms(s);
        if then == off {
            return s;
        }
        let s = floor - then;
        if zone.offset_ms(s) == then && s <= unix_ms {
            return s;
        }
        floor -= i;
    }
    local - local.rem_euclid(i) - off
}

/// What a report needs of one contact's detail record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Arrival (original arrival), Unix ms.
    pub arrived_unix_ms: i64,
    /// The queue the platform offered it to.
    pub first_queue: &'a str,
    /// Whether it overflowed to another queue.
    pub overflowed: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was diverted, if it was.
    pub diverted: Option<DivertReason>,
    /// Wait from arrival until acceptance or end, ms.
    pub waited_ms: u64,
    /// Handle time (completed contacts), ms.
    pub handle_ms: u64,
    /// Wrap-up after the completion, ms.
    pub wrap_up_ms: u64,
    /// The group of the operator who had it in service ("" if none).
    pub group: &'a str,
    /// That group's supplier ("" for internal staff).
    pub supplier: &'a str,
    /// Its operators' transfers: (the queue of the leg that ended, the queue the next leg
    /// waited in, "" out of the centre).
    pub transfers: &'a [(String, String)],
    /// A consultation between operators (the contact it was about), not a citizen's contact:
    /// counted in its queue's `consultations` only.
    pub consultation_of: &'a str,
}

/// One queue (service line) in one interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueInterval {
    /// Interval start, Unix ms.
    pub start_unix_ms: i64,
    /// The queue.
    pub queue: String,
    /// The service-level threshold applied, ms.
    pub threshold_ms: u64,
    /// Contacts that arrived in the interval.
    pub offered: u64,
    /// Of which accepted by an operator.
    pub answered: u64,
    /// Of which answered within the threshold.
    pub answered_within: u64,
    /// Of which the caller hung up while waiting.
    pub abandoned: u64,
    /// Of the abandoned, those who hung up within the short-abandon threshold.
    pub short_abandoned: u64,
    /// Of the abandoned, those who had waited longer than the threshold.
    pub abandoned_after_threshold: u64,
    /// Of which diverted.
    pub diverted: u64,
    /// Diversions by reason (`extra_budget`, `queue_full`, ...).
    pub diverted_by_reason: BTreeMap<String, u64>,
    /// Of the offered, those that overflowed to another queue (they count here still).
    pub overflowed: u64,
    /// Of which not ended when the report was made.
    pub in_progress: u64,
    /// Sum of the waits of answered contacts, ms (for ASA).
    pub answered_wait_ms: u64,
    /// Sum of the waits of answered and abandoned contacts, ms.
    pub wait_ms: u64,
    /// Longest wait of an answered or abandoned contact, ms.
    pub max_wait_ms: u64,
    /// Contacts completed (with a handle time).
    pub handled: u64,
    /// Sum of their handle times, ms.
    pub handle_ms: u64,
    /// Sum of their wrap-up times, ms.
    pub wrap_up_ms: u64,
    /// Transfers by an operator into this queue of contacts that arrived in the interval (they
    /// are offered and answered in their first queue's row, not here).
    pub transferred_in: u64,
    /// Transfers by an operator out of this queue (to another queue or out of the centre).
    pub transferred_out: u64,
    /// Consultations asked of this queue by operators (OperatorService.ConsultContact) that
    /// ended in the interval's arrivals: operators' work, not citizens' contacts, so in no other
    /// column of the row (a consultation handed over continues as its contact's leg).
    pub consultations: u64,
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

impl QueueInterval {
    /// Average speed of answer, ms.
    #[must_use]
    pub fn asa_ms(&self) -> f64 {
        ratio(self.answered_wait_ms, self.answered)
    }

    /// Average wait of answered and abandoned contacts, ms.
    #[must_use]
    pub fn average_wait_ms(&self) -> f64 {
        ratio(self.wait_ms, self.answered + self.abandoned)
    }

    /// Average handle time of completed contacts, ms.
    #[must_use]
    pub fn aht_ms(&self) -> f64 {
        ratio(self.handle_ms, self.handled)
    }

    /// Average wrap-up of completed contacts, ms.
    #[must_use]
    pub fn average_wrap_up_ms(&self) -> f64 {
        ratio(self.wrap_up_ms, self.handled)
    }

    /// Answered within the threshold over offered (less short abandons and contacts in
    /// progress); 1 with nothing to count.
    #[must_use]
    pub fn service_level_offered(&self) -> f64 {
        let d = self.offered.saturating_sub(self.short_abandoned + self.in_progress);
        if d == 0 {
            1.0
        } else {
            ratio(self.answered_within, d)
        }
    }

    /// Answered within the threshold over answered plus abandoned after it; 1 with nothing to
    /// count.
    #[must_use]
    pub fn service_level_answered(&self) -> f64 {
        let d = self.answered + self.abandoned_after_threshold;
        if d == 0 {
            1.0
        } else {
            ratio(self.answered_within, d)
        }
    }
}

/// One operator group in one interval: the contacts its operators answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInterval {
    /// Interval start, Unix ms.
    pub start_unix_ms: i64,
    /// The group.
    pub group: String,
    /// Its supplier ("" for internal staff).
    pub supplier: String,
    /// Contacts answered.
    pub answered: u64,
    /// Of which completed.
    pub handled: u64,
    /// Sum of handle times, ms.
    pub handle_ms: u64,
    /// Sum of wrap-up times, ms.
    pub wrap_up_ms: u64,
    /// Time its operators were logged in during the interval, ms.
    pub staffed_ms: u64,
    /// Of which paused, ms.
    pub paused_ms: u64,
    /// Of which with a contact in service or in wrap-up, ms.
    pub busy_ms: u64,
}

impl GroupInterval {
    /// Average handle time, ms.
    #[must_use]
    pub fn aht_ms(&self) -> f64 {
        ratio(self.handle_ms, self.handled)
    }

    /// Occupancy: busy / (staffed - paused), the share of the time ready for work spent
    /// working (0 with no such time).
    #[must_use]
    pub fn occupancy(&self) -> f64 {
        ratio(self.busy_ms, self.staffed_ms.saturating_sub(self.paused_ms))
    }
}

/// Folds records into interval rows; memory grows with intervals x queues, not with records.
pub struct Builder<'z> {
    interval_ms: i64,
    zone: &'z dyn Zone,
    thresholds: BTreeMap<String, u64>,
    default_threshold_ms: u64,
    short_abandon_ms: u64,
    queues: BTreeMap<(i64, String), QueueInterval>,
    groups: BTreeMap<(i64, String), GroupInterval>,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("interval_ms", &self.interval_ms).field("rows", &self.queues.len()).finish()
    }
}

impl<'z> Builder<'z> {
    /// A report of `interval_ms` intervals in `zone`; `thresholds` are the queues' service-level
    /// thresholds (others get `default_threshold_ms`); abandons within `short_abandon_ms` are
    /// short.
    #[must_use]
    pub fn new(
        interval_ms: i64,
        zone: &'z dyn Zone,
        thresholds: BTreeMap<String, u64>,
        default_threshold_ms: u64,
        short_abandon_ms: u64,
    ) -> Self {
        Builder {
            interval_ms: interval_ms.max(1),
            zone,
            thresholds,
            default_threshold_ms,
            short_abandon_ms,
            queues: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    fn row(&mut self, arrived_unix_ms: i64, queue: &str) -> &mut QueueInterval {
        let start = interval_start(arrived_unix_ms, self.interval_ms, self.zone);
        let threshold_ms = self.thresholds.get(queue).copied().unwrap_or(self.default_threshold_ms);
        self.queues.entry((start, queue.to_owned())).or_insert_with(|| QueueInterval {
            start_unix_ms: start,
            queue: queue.to_owned(),
            threshold_ms,
            ..QueueInterval::default()
        })
    }

    /// Adds one ended contact.
    pub fn add(&mut self, r: &Record<'_>) {
        let short = self.short_abandon_ms;
        let row = self.row(r.arrived_unix_ms, r.first_queue);
        if !r.consultation_of.is_empty() {
            row.consultations += 1;
            return;
        }
        let threshold = row.threshold_ms;
        row.offered += 1;
        row.overflowed += u64::from(r.overflowed);
        match r.outcome {
            Outcome::Completed | Outcome::CancelledInService | Outcome::Transferred => {
                row.answered += 1;
                row.answered_wait_ms += r.waited_ms;
                row.wait_ms += r.waited_ms;
                row.max_wait_ms = row.max_wait_ms.max(r.waited_ms);
                if r.waited_ms <= threshold {
                    row.answered_within += 1;
                }
                if matches!(r.outcome, Outcome::Completed | Outcome::Transferred) {
                    row.handled += 1;
                    row.handle_ms += r.handle_ms;
                    row.wrap_up_ms += r.wrap_up_ms;
                }
            }
            // A callback nobody answered: the citizen was lost, without hanging up in line (it
            // counts as abandoned, and neither as short nor in the service level).
            Outcome::Unreachable => {
                row.abandoned += 1;
                row.wait_ms += r.waited_ms;
                row.max_wait_ms = row.max_wait_ms.max(r.waited_ms);
            }
            Outcome::Abandoned => {
                row.abandoned += 1;
                row.wait_ms += r.waited_ms;
                row.max_wait_ms = row.max_wait_ms.max(r.waited_ms);
                if r.waited_ms < short {
                    row.short_abandoned += 1;
                }
                if r.waited_ms > threshold {
                    row.abandoned_after_threshold += 1;
                }
            }
            Outcome::Diverted => {
                row.diverted += 1;
                let reason = r.diverted.map_or("unknown", DivertReason::as_str);
                *row.diverted_by_reason.entry(reason.to_owned()).or_default() += 1;
            }
        }
        for (from, to) in r.transfers {
            self.row(r.arrived_unix_ms, from).transferred_out += 1;
            if !to.is_empty() {
                self.row(r.arrived_unix_ms, to).transferred_in += 1;
            }
        }
        let answered = matches!(r.outcome, Outcome::Completed | Outcome::CancelledInService | Outcome::Transferred);
        if answered && !r.group.is_empty() {
            let start = interval_start(r.arrived_unix_ms, self.interval_ms, self.zone);
            let g = self.group_row(start, r.group, r.supplier);
            g.answered += 1;
            if matches!(r.outcome, Outcome::Completed | Outcome::Transferred) {
                g.handled += 1;
                g.handle_ms += r.handle_ms;
                g.wrap_up_ms += r.wrap_up_ms;
            }
        }
    }

    fn group_row(&mut self, start: i64, group: &str, supplier: &str) -> &mut GroupInterval {
        self.groups.entry((start, group.to_owned())).or_insert_with(|| GroupInterval {
            start_unix_ms: start,
            group: group.to_owned(),
            supplier: supplier.to_owned(),
            ..GroupInterval::default()
        })
    }

    /// Adds a group's staffed time measured from `at` (a quarter hour, which lies within one
    /// interval of 15 minutes or more): staffed, paused and busy ms.
    pub fn add_staffing(&mut self, at: i64, group: &str, supplier: &str, time: (u64, u64, u64)) {
        let start = interval_start(at, self.interval_ms, self.zone);
        let g = self.group_row(start, group, supplier);
        g.staffed_ms += time.0;
        g.paused_ms += time.1;
        g.busy_ms += time.2;
    }

    /// Adds a contact that has not ended yet (waiting, offered or in service).
    pub fn add_in_progress(&mut self, arrived_unix_ms: i64, first_queue: &str) {
        let row = self.row(arrived_unix_ms, first_queue);
        row.offered += 1;
        row.in_progress += 1;
    }

    /// The rows, by interval then queue / group.
    #[must_use]
    pub fn finish(self) -> (Vec<QueueInterval>, Vec<GroupInterval>) {
        (self.queues.into_values().collect(), self.groups.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_align_on_the_local_clock() {
        // UTC+1: 10:17 local is in the 10:00 local interval, which starts at 09:00 UTC.
        let z = FixedOffset(3_600_000);
        let t = 9 * 3_600_000 + 17 * 60_000;
        assert_eq!(interval_start(t, 1_800_000, &z), 9 * 3_600_000);
        // UTC+5:30 with hourly intervals: 10:17 local starts at 10:00 local = 04:30 UTC.
        let z = FixedOffset(5 * 3_600_000 + 1_800_000);
        let t = 4 * 3_600_000 + 47 * 60_000;
        assert_eq!(interval_start(t, 3_600_000, &z), 4 * 3_600_000 + 1_800_000);
    }
}
