//! Admission and settlement: [`BudgetBook`]'s implementation of [`BudgetGate`]. A contact's
//! reservation is checked and debited in one atomic step, released if the contact ends unserved,
//! and charged at its real cost when it settles.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dashmap::DashMap;

use crate::budget::{BudgetGate, FundingRequest, Settlement, Started};
use crate::model::{Channel, Outcome};

use super::{Budget, BudgetBook, CostRecord, HoldRecord, Reservation};

impl BudgetGate for BudgetBook {
    fn reserve(&self, req: &FundingRequest<'_>) -> bool {
        let Some(b) = self.budgets.get(req.budget) else { return false };
        let unix = self.unix(req.now);
        let p = Self::period_at(b, unix);
        let mean = Self::expected_cost(b, req.queue, req.channel);
        let limit = Self::limit(b, &p, unix, Self::protected(b, req.priority, req.segment));
        let mut held = self.reservations.entry(Arc::from(req.contact_id)).or_default();
        if held.iter().any(|r| &*r.budget == req.budget) {
            return true; // already funded by this budget: nothing more to reserve
        }
        // Calls in service running past their reservations already spend headroom. When what
        // is left could not absorb the calls in service running long, the new call is reserved
        // at its long-call cost, not the mean: near the ceiling, the money admitted must cover
        // what the calls will really cost, or the period's recorded total would pass it.
        let overrun = p.running_overrun.load(Ordering::Acquire).saturating_add(p.tail_margin.load(Ordering::Acquire));
        let tail = Self::tail_cost(b, req.queue, req.channel).max(mean);
        let room = limit - p.committed.load(Ordering::Acquire) - overrun;
        let at_risk = p.in_service.load(Ordering::Acquire).saturating_mul(tail - mean).saturating_add(tail);
        let expected = if room - mean < at_risk { tail } else { mean };
        // Check and debit in one atomic step.
        let admitted = p
            .committed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(expected).filter(|n| n.saturating_add(overrun) <= limit)
            })
            .is_ok();
        if !admitted {
            p.refusals.fetch_add(1, Ordering::Relaxed);
            if held.is_empty() {
                drop(held);
                self.reservations.remove_if(req.contact_id, |_, v| v.is_empty());
            }
            return false;
        }
        p.reserved.fetch_add(expected, Ordering::AcqRel);
        held.push(Reservation {
            budget: Arc::from(req.budget),
            period: p,
            amount: expected,
            started: false,
            started_unix_ms: 0,
            channel: req.channel,
            queue: Arc::from(req.queue),
        });
        true
    }

    fn release(&self, budget: &str, contact_id: &str) {
        let Some(r) = take_reservation(&self.reservations, budget, contact_id) else { return };
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
        let rec = self.charge(
            b,
            &r,
            s.contact_id,
            s.queue,
            s.group,
            s.operator,
            s.channel,
            s.handle_ms,
            self.unix(s.accepted_at),
            self.unix(s.now),
            s.outcome,
        );
        Some(rec.cost_cents)
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

impl BudgetBook {
    /// Charges a contact's actual cost against its reservation `r` (already taken out of the
    /// map), learns the queue's handle time and hands the record to the sink.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn charge(
        &self,
        b: &Budget,
        r: &Reservation,
        contact: &str,
        queue: &str,
        group: &str,
        operator: &str,
        channel: Channel,
        handle_ms: u64,
        accepted_unix_ms: i64,
        completed_unix_ms: i64,
        outcome: Outcome,
    ) -> CostRecord {
        let cost = b.tariffs.read()[channel.index()].cost_cents(handle_ms);
        let p = &r.period;
        p.reserved.fetch_sub(r.amount, Ordering::AcqRel);
        p.settled.fetch_add(cost, Ordering::AcqRel);
        // Charged whatever it cost: an overrun is taken from the remaining headroom.
        p.committed.fetch_add(cost - r.amount, Ordering::AcqRel);
        if cost > r.amount {
            p.overrun.fetch_add(cost - r.amount, Ordering::AcqRel);
        }
        // Learn the queue's handle time and its spread (exponential averages, weight 1/8).
        let mut h = b.learned_handle.entry(queue.to_owned()).or_insert(b.cfg.default_handle_ms);
        *h = (*h * 7 + handle_ms) / 8;
        drop(h);
        let d = b.cfg.default_handle_ms as f64;
        let mut sq = b.learned_sq.entry(queue.to_owned()).or_insert(2.0 * d * d);
        *sq = (*sq * 7.0 + (handle_ms as f64).powi(2)) / 8.0;
        drop(sq);
        let record = CostRecord {
            contact: contact.to_owned(),
            budget: b.cfg.id.clone(),
            period: p.label.clone(),
            queue: queue.to_owned(),
            group: group.to_owned(),
            operator: operator.to_owned(),
            channel,
            accepted_unix_ms,
            completed_unix_ms,
            handle_ms,
            cost_cents: cost,
            reserved_cents: r.amount,
            outcome,
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
