//! After a restart: what the durable ledger reads back ([`Recovery`]), how
//! [`BudgetBook::restore`] re-applies it, and the contacts recovered in service, completed or
//! expired later.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use thiserror::Error;

use crate::budget::BudgetGate;
use crate::model::{Channel, Outcome};
use crate::time::Millis;

use super::gate::take_reservation;
use super::{new_period, AuditRecord, BudgetBook, CostRecord, HoldRecord, Reservation, Tariff};

/// Totals of one budget in one period, as derived from the durable records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodTotals {
    /// Budget.
    pub budget: String,
    /// Period label.
    pub period: String,
    /// Cost of settled contacts, cents.
    pub settled_cents: i64,
    /// Of which charged beyond their reservations, cents.
    pub overrun_cents: i64,
}

/// What a restart reads back from the durable ledger, applied by [`BudgetBook::restore`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Contract amendments, oldest first.
    pub amendments: Vec<AuditRecord>,
    /// Settled totals per budget and period.
    pub periods: Vec<PeriodTotals>,
    /// Contacts that were in service with a budgeted operator when the process stopped.
    pub holds: Vec<HoldRecord>,
}

/// What [`BudgetBook::restore`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Amendments re-applied.
    pub amendments: usize,
    /// Holds re-established (their money is committed again).
    pub holds: usize,
    /// Settled cents restored into current periods.
    pub settled_cents: i64,
    /// Records that name budgets no longer configured, or values that cannot be read: skipped.
    pub skipped: Vec<String>,
}

/// Why a completion of a contact recovered after a restart was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecoveredError {
    /// No recovered hold for that contact.
    #[error("no recovered contact `{}`", crate::error::clip(.0))]
    Unknown(String),
    /// Another operator had the contact.
    #[error("contact `{}` was in service with another operator", crate::error::clip(contact))]
    OtherOperator {
        /// The contact.
        contact: String,
    },
}

impl BudgetBook {
    /// Re-applies what the durable ledger holds after a restart, before any contact is routed:
    /// amendments (in order), the settled totals of current periods, and the holds of contacts
    /// that were in service, whose money is committed again until they complete or are expired.
    pub fn restore(&self, r: &Recovery, now: Millis) -> Restored {
        let unix = self.unix(now);
        let mut done = Restored::default();
        for a in &r.amendments {
            let Some(b) = self.budgets.get(&a.budget) else {
                done.skipped.push(format!("amendment of unknown budget `{}`", a.budget));
                continue;
            };
            let applied = match a.field.as_str() {
                "ceiling_cents" => a.new_value.parse::<i64>().ok().filter(|c| *c >= 0).map(|c| {
                    b.ceiling.store(c, Ordering::Release);
                }),
                f => f
                    .strip_prefix("tariff.")
                    .and_then(Channel::parse)
                    .zip(Tariff::parse(&a.new_value))
                    .map(|(ch, t)| b.tariffs.write()[ch.index()] = t),
            };
            match applied {
                Some(()) => {
                    b.audit.lock().push(a.clone());
                    done.amendments += 1;
                }
                None => done.skipped.push(format!("unreadable amendment of `{}`: {}", a.budget, a.field)),
            }
        }
        for t in &r.periods {
            let Some(b) = self.budgets.get(&t.budget) else {
                done.skipped.push(format!("spend of unknown budget `{}`", t.budget));
                continue;
            };
            let p = Self::period_at(b, unix);
            if p.label == t.period {
                p.settled.fetch_add(t.settled_cents, Ordering::AcqRel);
                p.overrun.fetch_add(t.overrun_cents, Ordering::AcqRel);
                p.committed.fetch_add(t.settled_cents, Ordering::AcqRel);
                done.settled_cents += t.settled_cents;
            }
        }
        for h in &r.holds {
            let Some(b) = self.budgets.get(&h.budget) else {
                done.skipped.push(format!("hold of contact on unknown budget `{}`", h.budget));
                continue;
            };
            let current = Self::period_at(b, unix);
            let period = if current.label == h.period {
                current
            } else {
                let mut past = b.past.lock();
                match past.iter().find(|p| p.label == h.period) {
                    Some(p) => p.clone(),
                    None => {
                        let p = Arc::new(new_period(
                            &b.cfg,
                            &*b.zone,
                            h.accepted_unix_ms,
                            b.leased.load(Ordering::Acquire),
                        ));
                        past.push(p.clone());
                        p
                    }
                }
            };
            let mut held = self.reservations.entry(Arc::from(h.contact.as_str())).or_default();
            if held.iter().any(|r| *r.budget == *h.budget) {
                continue;
            }
            period.reserved.fetch_add(h.amount_cents, Ordering::AcqRel);
            period.committed.fetch_add(h.amount_cents, Ordering::AcqRel);
            held.push(Reservation {
                budget: Arc::from(h.budget.as_str()),
                period,
                amount: h.amount_cents,
                started: true,
                started_unix_ms: h.accepted_unix_ms,
                channel: h.channel,
                queue: Arc::from(h.queue.as_str()),
                counted_at: std::sync::atomic::AtomicI64::new(i64::MIN),
                counted_overrun: std::sync::atomic::AtomicI64::new(0),
                counted_excess: std::sync::atomic::AtomicU64::new(0),
                counted_var: std::sync::atomic::AtomicU64::new(0),
            });
            drop(held);
            self.recovered.insert(h.contact.clone(), h.clone());
            done.holds += 1;
        }
        done
    }

    /// The hold of a contact that was in service when the process stopped, if any.
    #[must_use]
    pub fn recovered(&self, contact: &str) -> Option<HoldRecord> {
        self.recovered.get(contact).map(|h| h.clone())
    }

    /// Takes the recovered hold of `contact` out of the contacts in service (a consultation
    /// carried across a restart, about to be handed over): nobody else ends it meanwhile. Its
    /// reservation stays; [`BudgetBook::hand_over_recovered`] or [`BudgetBook::put_back_recovered`]
    /// follows.
    pub fn take_recovered(&self, contact: &str) -> Option<HoldRecord> {
        self.recovered.remove(contact).map(|(_, h)| h)
    }

    /// Undoes [`BudgetBook::take_recovered`].
    pub fn put_back_recovered(&self, h: HoldRecord) {
        self.recovered.insert(h.contact.clone(), h);
    }

    /// The consultation whose hold `h` was taken is handed over to contact `to` (see
    /// [`crate::budget::BudgetGate::rename`]): its hold and reservation are `to`'s now, their
    /// acceptance dated after `after_unix_ms` (the first operator's), as the ledger's record of
    /// the hand-over dates them.
    pub fn hand_over_recovered(&self, mut h: HoldRecord, to: &str, after_unix_ms: i64) {
        let accepted = h.accepted_unix_ms.max(after_unix_ms.saturating_add(1));
        if let Some(mut r) = take_reservation(&self.reservations, &h.budget, &h.contact) {
            r.started_unix_ms = accepted;
            self.reservations.entry(Arc::from(to)).or_default().push(r);
        }
        h.contact = to.to_owned();
        h.accepted_unix_ms = accepted;
        self.recovered.insert(to.to_owned(), h);
    }

    /// Contacts recovered at restart still in service with `operator`.
    #[must_use]
    pub fn recovered_with(&self, operator: &str) -> usize {
        if self.recovered.is_empty() {
            return 0;
        }
        self.recovered.iter().filter(|h| h.operator == operator).count()
    }

    /// The contacts `operator` had in service before the restart that are still in service
    /// (recovered holds), by id.
    #[must_use]
    pub fn recovered_of(&self, operator: &str) -> Vec<String> {
        if self.recovered.is_empty() {
            return Vec::new();
        }
        let mut v: Vec<String> =
            self.recovered.iter().filter(|h| h.operator == operator).map(|h| h.contact.clone()).collect();
        v.sort();
        v
    }

    /// Holds recovered at restart and not yet completed.
    #[must_use]
    pub fn recovered_count(&self) -> usize {
        self.recovered.len()
    }

    /// Ends a contact recovered at restart with `outcome` (completed by `operator`, who must be
    /// the one it was with, or `None` when the caller hung up): its handle time runs from its
    /// recorded acceptance to `now`, its cost is settled against the recovered reservation.
    pub fn complete_recovered(
        &self,
        contact: &str,
        operator: Option<&str>,
        outcome: Outcome,
        now: Millis,
    ) -> Result<CostRecord, RecoveredError> {
        self.end_recovered(contact, operator, outcome, now, false)
    }

    /// [`complete_recovered`](Self::complete_recovered) of a leg: `outcome` is TRANSFERRED when
    /// its operator moved it on, and `repeat` says the budget settled an earlier leg of the
    /// contact (its `leg_fee`).
    pub fn end_recovered(
        &self,
        contact: &str,
        operator: Option<&str>,
        outcome: Outcome,
        now: Millis,
        repeat: bool,
    ) -> Result<CostRecord, RecoveredError> {
        let unknown = || RecoveredError::Unknown(contact.to_owned());
        let h = self.recovered.get(contact).map(|h| h.clone()).ok_or_else(unknown)?;
        if operator.is_some_and(|o| o != h.operator) {
            return Err(RecoveredError::OtherOperator { contact: contact.to_owned() });
        }
        let (_, h) = self.recovered.remove(contact).ok_or_else(unknown)?;
        let b = self.budgets.get(&h.budget).ok_or_else(unknown)?;
        let r = take_reservation(&self.reservations, &h.budget, contact).ok_or_else(unknown)?;
        let completed = self.unix(now);
        let handle_ms = u64::try_from(completed - h.accepted_unix_ms).unwrap_or(0);
        let leg = super::gate::Leg {
            contact,
            queue: &h.queue,
            group: &h.group,
            operator: &h.operator,
            channel: h.channel,
            handle_ms,
            outcome,
            repeat,
        };
        Ok(self.charge(b, &r, &leg, h.accepted_unix_ms, completed, false))
    }

    /// Releases recovered holds accepted more than `max_age_ms` before `now` (contacts whose
    /// completion will never come); returns them.
    pub fn expire_recovered(&self, now: Millis, max_age_ms: i64) -> Vec<HoldRecord> {
        let cutoff = self.unix(now).saturating_sub(max_age_ms);
        let old: Vec<String> =
            self.recovered.iter().filter(|h| h.accepted_unix_ms < cutoff).map(|h| h.key().clone()).collect();
        let mut out = Vec::new();
        for c in old {
            if let Some((_, h)) = self.recovered.remove(&c) {
                self.release(&h.budget, &c);
                out.push(h);
            }
        }
        out
    }
}
