//! Admission and settlement: [`BudgetBook`]'s implementation of [`BudgetGate`]. A contact's
//! reservation is checked and debited in one atomic step, released if the contact ends unserved,
//! and charged at its real cost when it settles.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dashmap::DashMap;

use crate::budget::{BudgetGate, FundingRequest, Settlement, Started};
use crate::model::{Channel, Outcome};

use super::{Budget, BudgetBook, CostRecord, HoldRecord, LegFee, Period, Reservation};

impl BudgetGate for BudgetBook {
    fn reserve(&self, req: &FundingRequest<'_>) -> bool {
        let Some(b) = self.budgets.get(req.budget) else { return false };
        let unix = self.unix(req.now);
        let p = Self::period_at(b, unix);
        let mut held = self.reservations.entry(Arc::from(req.contact_id)).or_default();
        if held.iter().any(|r| &*r.budget == req.budget) {
            return true; // already funded by this budget: nothing more to reserve
        }
        let Some(expected) = Self::admit(b, &p, req, unix, 0) else {
            if held.is_empty() {
                drop(held);
                self.reservations.remove_if(req.contact_id, |_, v| v.is_empty());
            }
            return false;
        };
        held.push(Reservation {
            budget: Arc::from(req.budget),
            period: p,
            amount: expected,
            started: false,
            started_unix_ms: 0,
            channel: req.channel,
            queue: Arc::from(req.queue),
            counted_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            counted_overrun: std::sync::atomic::AtomicI64::new(0),
            counted_excess: std::sync::atomic::AtomicU64::new(0),
            counted_var: std::sync::atomic::AtomicU64::new(0),
        });
        true
    }

    fn release(&self, budget: &str, contact_id: &str) {
        let Some(r) = take_reservation(&self.reservations, budget, contact_id) else { return };
        self.uncount_running(&r);
        r.period.reserved.fetch_sub(r.amount, Ordering::AcqRel);
        r.period.committed.fetch_sub(r.amount, Ordering::AcqRel);
        if r.started {
            if let Some(sink) = &self.sink {
                sink.release(budget, contact_id);
            }
        }
    }

    fn settle(&self, s: &Settlement<'_>) -> Option<i64> {
        let r = take_reservation(&self.reservations, s.budget, s.contact_id)?;
        let b = self.budgets.get(s.budget)?;
        let rec = self.charge(b, &r, &Self::leg_of(s), self.unix(s.accepted_at), self.unix(s.now), false);
        Some(rec.cost_cents)
    }

    fn settle_and_reserve(&self, leg: &Settlement<'_>, next: &FundingRequest<'_>) -> Option<Option<i64>> {
        let b = self.budgets.get(leg.budget)?;
        if next.budget != leg.budget {
            return None;
        }
        let unix = self.unix(next.now);
        let p = Self::period_at(b, unix);
        // Under the contact's entry: nobody else settles or reserves for it meanwhile.
        let mut held = self.reservations.get_mut(leg.contact_id)?;
        let i = held.iter().position(|r| &*r.budget == leg.budget)?;
        let charge = Self::leg_of(leg);
        let cost = Self::leg_cost(b, &charge);
        // In the same period the leg's charge and the next leg's admission are one update of
        // the committed amount: admitted only if both fit.
        let same = Arc::ptr_eq(&held[i].period, &p);
        let settling = if same { cost - held[i].amount } else { 0 };
        let expected = Self::admit(b, &p, next, unix, settling)?;
        let r = held.swap_remove(i);
        held.push(Reservation {
            budget: Arc::from(next.budget),
            period: p,
            amount: expected,
            started: false,
            started_unix_ms: 0,
            channel: next.channel,
            queue: Arc::from(next.queue),
            counted_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            counted_overrun: std::sync::atomic::AtomicI64::new(0),
            counted_excess: std::sync::atomic::AtomicU64::new(0),
            counted_var: std::sync::atomic::AtomicU64::new(0),
        });
        drop(held);
        let rec = self.charge(b, &r, &charge, self.unix(leg.accepted_at), self.unix(leg.now), same);
        Some(Some(rec.cost_cents))
    }

    fn rename(&self, budget: &str, from: &str, to: &str, started_at: crate::time::Millis) {
        let Some(mut r) = take_reservation(&self.reservations, budget, from) else { return };
        let started = r.started;
        if started {
            r.started_unix_ms = self.unix(started_at);
        }
        let mut held = self.reservations.entry(Arc::from(to)).or_default();
        // A contact holds one reservation per budget: its own (its first operator's leg) was
        // settled or released before the hand-over.
        debug_assert!(!held.iter().any(|h| &*h.budget == budget), "{to} holds {budget} already");
        held.push(r);
        drop(held);
        if let (true, Some(sink)) = (started, &self.sink) {
            sink.renamed(budget, from, to, self.unix(started_at));
        }
    }

    fn started(&self, s: &Started<'_>) -> bool {
        let Some(mut held) = self.reservations.get_mut(s.contact_id) else { return false };
        let Some(r) = held.iter_mut().find(|r| &*r.budget == s.budget) else { return false };
        r.started = true;
        r.started_unix_ms = self.unix(s.now);
        let hold = HoldRecord {
            contact: s.contact_id.to_owned(),
            budget: s.budget.to_owned(),
            period: r.period.label.clone(),
            amount_cents: r.amount,
            queue: s.queue.to_owned(),
            group: s.group.to_owned(),
            operator: s.operator.to_owned(),
            channel: s.channel,
            accepted_unix_ms: self.unix(s.now),
            arrived_unix_ms: self.unix(s.arrived),
        };
        drop(held);
        if let Some(sink) = &self.sink {
            sink.hold(&hold);
        }
        true
    }
}

/// What a leg's charge needs to know beyond its reservation.
pub(super) struct Leg<'a> {
    pub(super) contact: &'a str,
    pub(super) queue: &'a str,
    pub(super) group: &'a str,
    pub(super) operator: &'a str,
    pub(super) channel: Channel,
    pub(super) handle_ms: u64,
    pub(super) outcome: Outcome,
    /// The budget settled an earlier leg of the contact.
    pub(super) repeat: bool,
}

impl BudgetBook {
    fn leg_of<'a>(s: &Settlement<'a>) -> Leg<'a> {
        Leg {
            contact: s.contact_id,
            queue: s.queue,
            group: s.group,
            operator: s.operator,
            channel: s.channel,
            handle_ms: s.handle_ms,
            outcome: s.outcome,
            repeat: s.repeat,
        }
    }

    /// What a leg costs: its handle time at the channel's tariff, and the per-contact fee unless
    /// the budget charged an earlier leg of the contact and charges the fee [`LegFee::Once`].
    fn leg_cost(b: &Budget, leg: &Leg<'_>) -> i64 {
        let t = b.tariffs.read()[leg.channel.index()];
        let cost = t.cost_cents(leg.handle_ms);
        if leg.repeat && b.cfg.leg_fee == LegFee::Once {
            cost - t.fee_per_contact_cents
        } else {
            cost
        }
    }

    /// Admits a contact's reservation on period `p` in one atomic step: its expected cost (near
    /// the ceiling its long-call cost) is added to the committed amount, with `settling` (a leg
    /// settled in the same step: its cost less its reservation) if it all fits under the limit.
    /// Returns the amount reserved; `None` (and a refusal counted) when it does not fit.
    fn admit(b: &Budget, p: &Arc<Period>, req: &FundingRequest<'_>, unix: i64, settling: i64) -> Option<i64> {
        let mean = Self::expected_cost(b, req.queue, req.channel);
        let limit = Self::limit(b, p, unix, Self::protected(b, req.priority, req.segment));
        // Calls in service running past their reservations already spend headroom. When what
        // is left could not absorb the calls in service running long, the new call is reserved
        // at its long-call cost, not the mean: near the ceiling, the money admitted must cover
        // what the calls will really cost, or the period's recorded total would pass it.
        let overrun = p.running_overrun.load(Ordering::Acquire).saturating_add(p.tail_margin.load(Ordering::Acquire));
        let tail = Self::tail_cost(b, req.queue, req.channel).max(mean);
        let room = limit - p.committed.load(Ordering::Acquire) - settling - overrun;
        let at_risk = p.in_service.load(Ordering::Acquire).saturating_mul(tail - mean).saturating_add(tail);
        let expected = if room - mean < at_risk { tail } else { mean };
        // Check and debit in one atomic step.
        let admitted = p
            .committed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(settling)
                    .and_then(|c| c.checked_add(expected))
                    .filter(|n| n.saturating_add(overrun) <= limit)
            })
            .is_ok();
        if !admitted {
            p.refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        p.reserved.fetch_add(expected, Ordering::AcqRel);
        Some(expected)
    }

    /// Charges a leg's actual cost against its reservation `r` (already taken out of the map),
    /// learns the queue's handle time and hands the record to the sink. `committed` says the
    /// caller already moved the period's committed amount from the reservation to the cost
    /// (see [`BudgetBook::admit`]).
    pub(super) fn charge(
        &self,
        b: &Budget,
        r: &Reservation,
        leg: &Leg<'_>,
        accepted_unix_ms: i64,
        completed_unix_ms: i64,
        committed: bool,
    ) -> CostRecord {
        let cost = Self::leg_cost(b, leg);
        self.uncount_running(r);
        let p = &r.period;
        p.reserved.fetch_sub(r.amount, Ordering::AcqRel);
        p.settled.fetch_add(cost, Ordering::AcqRel);
        // Charged whatever it cost: an overrun is taken from the remaining headroom.
        if !committed {
            p.committed.fetch_add(cost - r.amount, Ordering::AcqRel);
        }
        if cost > r.amount {
            p.overrun.fetch_add(cost - r.amount, Ordering::AcqRel);
        }
        // Learn the queue's handle time and its spread (exponential averages, weight 1/8).
        let handle_ms = leg.handle_ms;
        let mut h = b.learned_handle.entry(leg.queue.to_owned()).or_insert(b.cfg.default_handle_ms);
        *h = (*h * 7 + handle_ms) / 8;
        drop(h);
        let d = b.cfg.default_handle_ms as f64;
        let mut sq = b.learned_sq.entry(leg.queue.to_owned()).or_insert(2.0 * d * d);
        *sq = (*sq * 7.0 + (handle_ms as f64).powi(2)) / 8.0;
        drop(sq);
        let record = CostRecord {
            contact: leg.contact.to_owned(),
            budget: b.cfg.id.clone(),
            period: p.label.clone(),
            queue: leg.queue.to_owned(),
            group: leg.group.to_owned(),
            operator: leg.operator.to_owned(),
            channel: leg.channel,
            accepted_unix_ms,
            completed_unix_ms,
            handle_ms,
            cost_cents: cost,
            reserved_cents: r.amount,
            outcome: leg.outcome,
        };
        if let Some(sink) = &self.sink {
            sink.record(&record);
        }
        record
    }
}

pub(super) fn take_reservation(
    map: &DashMap<Arc<str>, Vec<Reservation>, foldhash::fast::RandomState>,
    budget: &str,
    contact: &str,
) -> Option<Reservation> {
    let mut entry = map.get_mut(contact)?;
    let i = entry.iter().position(|r| &*r.budget == budget)?;
    let r = entry.swap_remove(i);
    let empty = entry.is_empty();
    drop(entry);
    if empty {
        map.remove_if(contact, |_, v| v.is_empty());
    }
    Some(r)
}
