//! The budget admission interface the router consults, and simple implementations.
//!
//! Routing asks a [`BudgetGate`] before a contact may reach an operator paid from a capped budget.
//! A reservation granted here is later either released (the contact ended without being handled by
//! that budget's operators) or settled (completed by them). The gate owns the money; the router only
//! makes sure every grant is matched by exactly one release or settle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::Mutex;

use crate::model::{Channel, Outcome, Segment};
use crate::time::Millis;

/// What the router tells the gate about a contact it wants to fund.
#[derive(Clone, Copy, Debug)]
pub struct FundingRequest<'a> {
    /// The budget asked to pay.
    pub budget: &'a str,
    /// The contact.
    pub contact_id: &'a str,
    /// The queue it is routed through.
    pub queue: &'a str,
    /// Its channel.
    pub channel: Channel,
    /// Its effective business priority (queue + contact).
    pub priority: u32,
    /// Its segment.
    pub segment: Segment,
    /// When.
    pub now: Millis,
}

/// How a funded contact ended, for the gate to settle.
#[derive(Clone, Copy, Debug)]
pub struct Settlement<'a> {
    /// The budget that reserved.
    pub budget: &'a str,
    /// The contact.
    pub contact_id: &'a str,
    /// The queue it was handled in.
    pub queue: &'a str,
    /// The operator group that handled it.
    pub group: &'a str,
    /// The operator who handled it.
    pub operator: &'a str,
    /// Its channel.
    pub channel: Channel,
    /// Handle time in milliseconds.
    pub handle_ms: u64,
    /// When it was accepted.
    pub accepted_at: Millis,
    /// When it completed.
    pub now: Millis,
    /// How it ended: completed, the caller hung up in service, or (for one leg of a contact an
    /// operator moved on) transferred.
    pub outcome: Outcome,
    /// This budget already settled an earlier leg of the same contact (it was transferred from
    /// one of its operators to another): the per-contact fee applies as the budget's
    /// `leg_fee` says.
    pub repeat: bool,
}

/// A funded contact was accepted by an operator its budget pays: money starts being spent.
#[derive(Clone, Copy, Debug)]
pub struct Started<'a> {
    /// The budget that reserved.
    pub budget: &'a str,
    /// The contact.
    pub contact_id: &'a str,
    /// Its queue.
    pub queue: &'a str,
    /// The operator's group.
    pub group: &'a str,
    /// The operator.
    pub operator: &'a str,
    /// Its channel.
    pub channel: Channel,
    /// When it arrived (its original arrival when offered again after a failover).
    pub arrived: Millis,
    /// When it was accepted.
    pub now: Millis,
}

/// Budget admission, consulted on the routing hot path: implementations must be cheap and must
/// make `reserve` atomic (no check-then-debit race between concurrent callers).
pub trait BudgetGate: Send + Sync + std::fmt::Debug {
    /// Reserve the contact's expected cost on `req.budget`; `false` when it cannot be funded
    /// (extra budget). A `true` must later be matched by exactly one `release` or `settle`.
    fn reserve(&self, req: &FundingRequest<'_>) -> bool;
    /// Give back a reservation: the contact ended unhandled by this budget's operators.
    fn release(&self, budget: &str, contact_id: &str);
    /// The contact was handled by this budget's operators: charge its actual cost. Returns the
    /// cents charged (`None` if the gate had no reservation to settle).
    fn settle(&self, s: &Settlement<'_>) -> Option<i64>;
    /// The contact was accepted by an operator this budget pays (its reservation will end in
    /// `settle`, or in `release` if the contact is taken away). A durable gate writes the
    /// reservation down here, so a completion arriving after a restart still finds it. Returns
    /// whether a reservation was there to start (the contact is *held*).
    fn started(&self, _s: &Started<'_>) -> bool {
        false
    }
    /// An operator moves a contact funded by `leg.budget` on to a leg that the same budget must
    /// fund (`next.budget == leg.budget`): settle the leg that ends and reserve the next one as
    /// one step, so that a refusal changes nothing — the leg keeps its reservation and the
    /// operator keeps the caller — and an admission never takes the period past its ceiling.
    /// `Some(charged)` when done (the cents the leg cost, as [`BudgetGate::settle`]), `None`
    /// when the next leg cannot be funded. The default refuses: a gate that cannot do both in
    /// one step must not do either.
    fn settle_and_reserve(&self, _leg: &Settlement<'_>, _next: &FundingRequest<'_>) -> Option<Option<i64>> {
        None
    }
    /// A consultation's reservation on `budget` becomes its contact's (the second operator
    /// carries on with the contact on the money admitted for the consultation): the reservation
    /// held for `from` is now held for `to`, started or not — its start dated `started` (after
    /// the first operator's leg, so the two legs' cost records never share a key) — and ends in
    /// `to`'s `settle` or `release`. Durable gates move the hold in memory; the ledger's record
    /// of the hand-over moves it on disk.
    fn rename(&self, budget: &str, from: &str, to: &str, started: Millis);
}

/// A gate for deployments without capped budgets: funds everything, records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl BudgetGate for Unlimited {
    fn reserve(&self, _req: &FundingRequest<'_>) -> bool {
        true
    }
    fn release(&self, _budget: &str, _contact_id: &str) {}
    fn settle(&self, _s: &Settlement<'_>) -> Option<i64> {
        None
    }
    fn rename(&self, _budget: &str, _from: &str, _to: &str, _started: Millis) {}
}

/// A test double that counts contacts instead of money: each budget may hold at most `limit`
/// reservations at once, and refuses everything while switched off. It tracks which contacts hold
/// reservations so tests can check every grant was released or settled exactly once.
#[derive(Debug, Default)]
pub struct CountingGate {
    limits: Mutex<HashMap<String, i64>>,
    held: Mutex<HashMap<(String, String), ()>>,
    in_use: AtomicI64,
    settled: AtomicI64,
    refuse_all: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl CountingGate {
    /// A gate where `budget` may hold `limit` reservations at once; unknown budgets are refused.
    #[must_use]
    pub fn with_limits(limits: &[(&str, i64)]) -> Self {
        let g = CountingGate::default();
        {
            let mut l = g.limits.lock();
            for (b, n) in limits {
                l.insert((*b).to_owned(), *n);
            }
        }
        g
    }

    /// Refuse (`true`) or allow (`false`) every new reservation.
    pub fn set_refuse_all(&self, refuse: bool) {
        self.refuse_all.store(refuse, Ordering::SeqCst);
    }

    /// Reservations currently held.
    #[must_use]
    pub fn held(&self) -> i64 {
        self.in_use.load(Ordering::SeqCst)
    }

    /// Contacts settled so far.
    #[must_use]
    pub fn settled(&self) -> i64 {
        self.settled.load(Ordering::SeqCst)
    }

    /// Whether `contact` holds a reservation on `budget`.
    #[must_use]
    pub fn holds(&self, budget: &str, contact: &str) -> bool {
        self.held.lock().contains_key(&(budget.to_owned(), contact.to_owned()))
    }

    /// Double releases, releases of unknown reservations and the like.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().clone()
    }

    fn drop_hold(&self, budget: &str, contact: &str, what: &str) {
        if self.held.lock().remove(&(budget.to_owned(), contact.to_owned())).is_some() {
            let mut l = self.limits.lock();
            if let Some(n) = l.get_mut(budget) {
                *n += 1;
            }
            self.in_use.fetch_sub(1, Ordering::SeqCst);
        } else {
            self.violations.lock().push(format!("{what} of {contact} on {budget} without reservation"));
        }
    }
}

impl BudgetGate for CountingGate {
    fn reserve(&self, req: &FundingRequest<'_>) -> bool {
        if self.refuse_all.load(Ordering::SeqCst) {
            return false;
        }
        let mut l = self.limits.lock();
        match l.get_mut(req.budget) {
            Some(n) if *n > 0 => {
                let mut held = self.held.lock();
                if held.insert((req.budget.to_owned(), req.contact_id.to_owned()), ()).is_some() {
                    self.violations.lock().push(format!("double reservation of {} on {}", req.contact_id, req.budget));
                    return true;
                }
                *n -= 1;
                self.in_use.fetch_add(1, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    fn release(&self, budget: &str, contact_id: &str) {
        self.drop_hold(budget, contact_id, "release");
    }

    fn rename(&self, budget: &str, from: &str, to: &str, _started: Millis) {
        let mut held = self.held.lock();
        if held.remove(&(budget.to_owned(), from.to_owned())).is_none() {
            self.violations.lock().push(format!("rename of {from} on {budget} without reservation"));
            return;
        }
        if held.insert((budget.to_owned(), to.to_owned()), ()).is_some() {
            self.violations.lock().push(format!("rename of {from} onto {to}, which holds {budget} already"));
        }
    }

    fn settle(&self, s: &Settlement<'_>) -> Option<i64> {
        self.drop_hold(s.budget, s.contact_id, "settle");
        self.settled.fetch_add(1, Ordering::SeqCst);
        Some(0)
    }

    fn settle_and_reserve(&self, leg: &Settlement<'_>, next: &FundingRequest<'_>) -> Option<Option<i64>> {
        if self.refuse_all.load(Ordering::SeqCst) {
            return None;
        }
        // The leg's slot is the next leg's: one reservation held throughout.
        let charged = self.settle(leg);
        if !self.reserve(next) {
            self.violations.lock().push(format!("{} lost its reservation across a transfer", leg.contact_id));
        }
        Some(charged)
    }
}
