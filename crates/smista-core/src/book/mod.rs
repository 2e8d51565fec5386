//! Budget ceilings: the money side of routing, pure and in memory.
//!
//! A [`BudgetBook`] holds every capped budget of the contract: its ceiling for the current period,
//! tariffs per channel, an optional pacing profile and a protected reserve. It implements
//! [`BudgetGate`](crate::budget::BudgetGate), so the engine consults it before a contact may
//! reach an operator paid from a budget.
//!
//! **Hard ceiling.** Admission is one compare-and-swap on the period's committed amount (settled +
//! reserved): a contact is admitted only if `committed + expected cost <= limit`, and the check and
//! the debit are the same atomic step, so concurrent offers can never overspend (no
//! check-then-debit race). A call that runs longer than reserved is not cut off: the overrun is
//! charged when it settles and reported.
//!
//! Money is integer euro cents (`i64`); per-second rates are in hundredths of a cent.
//!
//! The book's state and its running (construction, limits and pacing, views, leases, amendments)
//! are here; its configuration types, the records it writes down, its admission gate and its
//! restart recovery each have a file of their own in this folder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::calendar::{self, Zone};
use crate::model::{Channel, Segment};
use crate::time::Millis;

mod config;
mod gate;
mod records;
mod restore;

use config::{invalid, validate_tariff};
pub use config::{
    BudgetConfig, BudgetError, ChannelTariff, LegFee, PacingConfig, PeriodConfig, QueueHandleTime, Tariff, TAIL_SIGMAS,
};
pub use records::{AmendedBy, AuditRecord, BudgetView, CostRecord, HoldRecord, LeaseNeed, SettlementSink};
pub use restore::{PeriodTotals, RecoveredError, Recovery, Restored};

/// One period of one budget, with its running totals.
#[derive(Debug)]
struct Period {
    label: String,
    start: i64,
    end: i64,
    /// Cumulative pacing weight at the start of each hour of the period (weekly pacing).
    cumulative: Option<Vec<u64>>,
    committed: AtomicI64,
    settled: AtomicI64,
    reserved: AtomicI64,
    overrun: AtomicI64,
    refusals: AtomicU64,
    /// What this node may commit in the period when several nodes share the budget: the lease
    /// granted by the shared ledger (`i64::MAX`: no lease, one node owns the whole ceiling).
    lease: AtomicI64,
    /// What calls in service cost by now beyond their reservations (refreshed on the tick).
    running_overrun: AtomicI64,
    /// Calls in service (refreshed on the tick).
    in_service: AtomicI64,
    /// Money kept back for calls in service running past what their reservations (and any
    /// running overrun) cover: expected excess plus three standard deviations (refreshed on the
    /// tick).
    tail_margin: AtomicI64,
    /// The expected excess and its variance behind `tail_margin`, as f64 bits: a call that stops
    /// takes its share out (see [`BudgetBook::uncount_running`]).
    excess_bits: AtomicU64,
    var_bits: AtomicU64,
}

#[derive(Debug)]
struct Budget {
    cfg: BudgetConfig,
    ceiling: AtomicI64,
    tariffs: RwLock<[Tariff; 4]>,
    current: RwLock<Arc<Period>>,
    /// Whether this node spends only what the shared ledger leases it (several nodes).
    leased: std::sync::atomic::AtomicBool,
    past: Mutex<Vec<Arc<Period>>>,
    learned_handle: DashMap<String, u64>,
    /// Exponential average of the squared handle time per queue (ms²), for its spread.
    learned_sq: DashMap<String, f64>,
    audit: Mutex<Vec<AuditRecord>>,
    /// The centre's time zone (month boundaries, hour of the week).
    zone: Arc<dyn Zone>,
}

#[derive(Debug)]
struct Reservation {
    budget: Arc<str>,
    period: Arc<Period>,
    amount: i64,
    /// In service with an operator the budget pays (and written down as a hold).
    started: bool,
    /// When it went into service, Unix ms (for the running cost of calls in progress).
    started_unix_ms: i64,
    channel: Channel,
    queue: Arc<str>,
    /// The [`BudgetBook::refresh_exposure`] that last counted it as in service (its instant,
    /// Unix ms; `i64::MIN`: none), and what it counted: running overrun, expected excess and
    /// variance (f64 bits).
    counted_at: AtomicI64,
    counted_overrun: AtomicI64,
    counted_excess: AtomicU64,
    counted_var: AtomicU64,
}

/// Standard deviations of the calls in service's possible excess kept back as margin.
const MARGIN_SIGMAS: f64 = 5.0;

/// The tail margin of calls in service whose expected excess and variance add up to these.
fn margin(excess: f64, var: f64) -> i64 {
    (excess + MARGIN_SIGMAS * var.sqrt()).ceil() as i64
}

/// Every capped budget of the contract. Implements [`BudgetGate`](crate::budget::BudgetGate).
#[derive(Debug)]
pub struct BudgetBook {
    budgets: HashMap<String, Budget>,
    epoch_unix_ms: i64,
    reservations: DashMap<Arc<str>, Vec<Reservation>, foldhash::fast::RandomState>,
    /// Holds read back at restart, whose contacts the engine does not know.
    recovered: DashMap<String, HoldRecord>,
    sink: Option<Arc<dyn SettlementSink>>,
    /// When the [`BudgetBook::refresh_exposure`] whose figures stand counted the calls in
    /// service, Unix ms (`i64::MIN` while a refresh is under way).
    refreshed_unix_ms: AtomicI64,
    /// Serialises a refresh's start and its figures' store with a stopping call taking its share
    /// out of them ([`BudgetBook::uncount_running`]).
    exposure: Mutex<()>,
}

impl BudgetBook {
    /// A book for `budgets` whose calendar is UTC; engine time `Millis(0)` is `epoch_unix_ms`
    /// on the wall clock.
    pub fn new(budgets: &[BudgetConfig], epoch_unix_ms: i64) -> Result<BudgetBook, BudgetError> {
        Self::new_in(budgets, epoch_unix_ms, Arc::new(crate::calendar::FixedOffset(0)))
    }

    /// A book for `budgets` whose monthly periods and hour-of-week pacing follow the wall clock
    /// of `zone` (the centre's time zone); engine time `Millis(0)` is `epoch_unix_ms`.
    pub fn new_in(
        budgets: &[BudgetConfig],
        epoch_unix_ms: i64,
        zone: Arc<dyn Zone>,
    ) -> Result<BudgetBook, BudgetError> {
        let mut map = HashMap::new();
        for (i, cfg) in budgets.iter().enumerate() {
            cfg.validate(&format!("budgets[{i}]"))?;
            if map.contains_key(&cfg.id) {
                return Err(invalid(format!("budgets[{i}].id"), format!("duplicate budget `{}`", cfg.id)));
            }
            let mut tariffs = [Tariff::default(); 4];
            for t in &cfg.tariffs {
                tariffs[t.channel.index()] = t.tariff;
            }
            let period = Arc::new(new_period(cfg, &*zone, epoch_unix_ms, false));
            map.insert(
                cfg.id.clone(),
                Budget {
                    cfg: cfg.clone(),
                    ceiling: AtomicI64::new(cfg.ceiling_cents),
                    tariffs: RwLock::new(tariffs),
                    current: RwLock::new(period),
                    leased: std::sync::atomic::AtomicBool::new(false),
                    past: Mutex::new(Vec::new()),
                    learned_handle: DashMap::new(),
                    learned_sq: DashMap::new(),
                    audit: Mutex::new(Vec::new()),
                    zone: zone.clone(),
                },
            );
        }
        Ok(BudgetBook {
            budgets: map,
            epoch_unix_ms,
            reservations: DashMap::default(),
            recovered: DashMap::new(),
            sink: None,
            refreshed_unix_ms: AtomicI64::new(i64::MIN),
            exposure: Mutex::new(()),
        })
    }

    /// Sends every settled contact to `sink` (the durable ledger).
    #[must_use]
    pub fn with_sink(mut self, sink: Arc<dyn SettlementSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Budget ids.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.budgets.keys().map(String::as_str)
    }

    fn unix(&self, now: Millis) -> i64 {
        self.epoch_unix_ms.saturating_add(i64::try_from(now.0).unwrap_or(i64::MAX))
    }

    fn budget(&self, id: &str) -> Result<&Budget, BudgetError> {
        self.budgets.get(id).ok_or_else(|| BudgetError::UnknownBudget(id.to_owned()))
    }

    /// The expected cost of a contact of `queue`/`channel` on `budget`.
    fn expected_cost(b: &Budget, queue: &str, channel: Channel) -> i64 {
        let handle = b
            .cfg
            .expected_handle
            .iter()
            .find(|q| q.queue == queue)
            .map(|q| q.handle_ms)
            .or_else(|| b.learned_handle.get(queue).map(|h| *h))
            .unwrap_or(b.cfg.default_handle_ms);
        b.tariffs.read()[channel.index()].cost_cents(handle)
    }

    /// The cost of a long call of `queue`/`channel`: mean handle time plus the budget's
    /// `tail_sigmas` standard deviations, learned from completed calls (before any, as if
    /// exponential: with the default 3, four times the mean, its 98th percentile).
    fn tail_cost(b: &Budget, queue: &str, channel: Channel) -> i64 {
        let configured = b.cfg.expected_handle.iter().find(|q| q.queue == queue).map(|q| q.handle_ms);
        let mean = configured.or_else(|| b.learned_handle.get(queue).map(|h| *h)).unwrap_or(b.cfg.default_handle_ms);
        let k = b.cfg.tail_sigmas;
        let tail = match b.learned_sq.get(queue) {
            Some(sq) => {
                let m = mean as f64;
                m + k * (*sq - m * m).max(0.0).sqrt()
            }
            // Before any completion: the spread of an exponential handle time (sigma = mean).
            None => (1.0 + k) * mean as f64,
        };
        b.tariffs.read()[channel.index()].cost_cents(tail as u64)
    }

    fn protected(b: &Budget, priority: u32, segment: Segment) -> bool {
        b.cfg.protected_min_priority.is_some_and(|p| priority >= p) || b.cfg.protected_segments.contains(&segment)
    }

    /// The most a contact may bring the committed amount to at `unix`.
    fn limit(b: &Budget, p: &Period, unix: i64, protected: bool) -> i64 {
        Self::rule_limit(b, p, unix, protected).min(p.lease.load(Ordering::Acquire))
    }

    /// [`limit`](Self::limit) by the budget's own rules (ceiling, pacing, reserve), without the
    /// node's lease.
    fn rule_limit(b: &Budget, p: &Period, unix: i64, protected: bool) -> i64 {
        let ceiling = b.ceiling.load(Ordering::Acquire);
        let reserve = i64::try_from(i128::from(ceiling) * i128::from(b.cfg.protected_reserve_bp) / 10_000).unwrap_or(0);
        let general = ceiling - reserve;
        let paced = match &b.cfg.pacing {
            PacingConfig::None => general,
            PacingConfig::Even { lookahead_ms } => {
                let len = (p.end - p.start).max(1);
                let done = (unix.saturating_add(*lookahead_ms) - p.start).clamp(0, len);
                i64::try_from(i128::from(general) * i128::from(done) / i128::from(len)).unwrap_or(general)
            }
            PacingConfig::Weekly { hour_weights, lookahead_ms } => {
                let cum = p.cumulative.as_deref().unwrap_or(&[]);
                let total = cum.last().copied().unwrap_or(0).max(1);
                let t = unix.saturating_add(*lookahead_ms).clamp(p.start, p.end);
                let h = ((t - p.start) / 3_600_000) as usize;
                let base = cum.get(h).copied().unwrap_or(total);
                let w = u64::from(hour_weights[calendar::hour_of_week(t, &*b.zone)]);
                let into_hour = ((t - p.start) % 3_600_000) as u64;
                let done = (base + w * into_hour / 3_600_000).min(total);
                i64::try_from(i128::from(general) * i128::from(done) / i128::from(total)).unwrap_or(general)
            }
        };
        if protected {
            (paced + reserve).min(ceiling)
        } else {
            paced
        }
    }

    /// The budget's current period at `unix`, rolling over if it has ended.
    fn period_at(b: &Budget, unix: i64) -> Arc<Period> {
        {
            let p = b.current.read();
            if unix >= p.start && unix < p.end {
                return p.clone();
            }
        }
        let mut cur = b.current.write();
        if !(unix >= cur.start && unix < cur.end) {
            let next = Arc::new(new_period(&b.cfg, &*b.zone, unix, b.leased.load(Ordering::Acquire)));
            let old = std::mem::replace(&mut *cur, next);
            let mut past = b.past.lock();
            past.push(old);
            if past.len() > 24 {
                past.remove(0);
            }
        }
        cur.clone()
    }

    /// The label of `budget`'s current period at `now` (`None`: no such budget).
    #[must_use]
    pub fn period_label(&self, budget: &str, now: Millis) -> Option<String> {
        let b = self.budgets.get(budget)?;
        Some(Self::period_at(b, self.unix(now)).label.clone())
    }

    /// Restores the refused admissions counted in `budget`'s `period` before a restart (saved
    /// by the server): counted on from there if `period` is still the current one at `now`.
    pub fn restore_refusals(&self, budget: &str, period: &str, refusals: u64, now: Millis) {
        let Some(b) = self.budgets.get(budget) else { return };
        let p = Self::period_at(b, self.unix(now));
        if p.label == period {
            p.refusals.fetch_max(refusals, Ordering::Relaxed);
        }
    }

    /// Totals of every budget in its current period at `now`.
    #[must_use]
    pub fn views(&self, now: Millis) -> Vec<BudgetView> {
        let mut v: Vec<BudgetView> = self.budgets.values().map(|b| Self::view(b, self.unix(now))).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn view(b: &Budget, unix: i64) -> BudgetView {
        let p = Self::period_at(b, unix);
        let settled = p.settled.load(Ordering::Acquire);
        let exposure = settled + p.reserved.load(Ordering::Acquire) + p.running_overrun.load(Ordering::Acquire);
        let elapsed = unix - p.start;
        let projected = if elapsed < 60_000 {
            exposure
        } else {
            let left = (p.end - unix).max(0);
            exposure.saturating_add(
                i64::try_from(i128::from(settled) * i128::from(left) / i128::from(elapsed)).unwrap_or(i64::MAX),
            )
        };
        let ceiling = b.ceiling.load(Ordering::Acquire);
        let exhausted_at = if exposure >= ceiling {
            Some(unix)
        } else if settled > 0 && elapsed > 0 {
            let left = i128::from(ceiling - exposure) * i128::from(elapsed) / i128::from(settled);
            let at = i64::try_from(i128::from(unix) + left).unwrap_or(i64::MAX);
            (at < p.end).then_some(at)
        } else {
            None
        };
        BudgetView {
            id: b.cfg.id.clone(),
            period: p.label.clone(),
            ceiling_cents: ceiling,
            settled_cents: p.settled.load(Ordering::Acquire),
            reserved_cents: p.reserved.load(Ordering::Acquire),
            paced_allowance_cents: Self::limit(b, &p, unix, false),
            overrun_cents: p.overrun.load(Ordering::Acquire),
            refusals: p.refusals.load(Ordering::Relaxed),
            lease_cents: Some(p.lease.load(Ordering::Acquire)).filter(|l| *l != i64::MAX),
            running_overrun_cents: p.running_overrun.load(Ordering::Acquire),
            exposure_cents: exposure,
            projected_cents: projected,
            exhausted_at_unix_ms: exhausted_at,
            period_start_unix_ms: p.start,
            period_end_unix_ms: p.end,
        }
    }

    /// What `budget`'s pacing allows committed in all by `unix_ms` of its current period (the
    /// ceiling less any protected reserve without pacing), for burn-down reports: `None` for an
    /// unknown budget or an instant outside the current period.
    #[must_use]
    pub fn allowance_at(&self, budget: &str, now: Millis, unix_ms: i64) -> Option<i64> {
        let b = self.budgets.get(budget)?;
        let p = Self::period_at(b, self.unix(now));
        (p.start..=p.end).contains(&unix_ms).then(|| Self::rule_limit(b, &p, unix_ms, false))
    }

    /// Recomputes, for every period, what calls in service cost by `now` beyond their
    /// reservations, and how many there are (run on the server's tick, about once a second).
    /// Admission counts that running overrun as spent.
    pub fn refresh_exposure(&self, now: Millis) {
        let unix = self.unix(now);
        // No call that stops from here until the figures below are stored takes its share out
        // (it may be counted once more by them, until the next refresh: erring high).
        {
            let _g = self.exposure.lock();
            self.refreshed_unix_ms.store(i64::MIN, Ordering::Release);
        }
        // Per period: running overrun, calls in service, expected excess, its variance.
        let mut per: HashMap<usize, (Arc<Period>, i64, i64, f64, f64)> = HashMap::new();
        for e in self.reservations.iter() {
            for r in e.value().iter().filter(|r| r.started) {
                let Some(b) = self.budgets.get(&*r.budget) else { continue };
                r.counted_at.store(unix, Ordering::Release);
                let tariff = b.tariffs.read()[r.channel.index()];
                let elapsed = u64::try_from(unix - r.started_unix_ms).unwrap_or(0);
                let running = tariff.cost_cents(elapsed);
                let slot =
                    per.entry(Arc::as_ptr(&r.period) as usize).or_insert_with(|| (r.period.clone(), 0, 0, 0.0, 0.0));
                slot.1 += (running - r.amount).max(0);
                slot.2 += 1;
                // What it may still cost beyond what is counted, taking the remaining handle
                // time as exponential with the queue's mean (memoryless: whatever has elapsed).
                let mean_ms = b.learned_handle.get(&*r.queue).map_or(b.cfg.default_handle_ms, |h| *h).max(1) as f64;
                let per_ms = tariff.rate_per_second_centicents as f64 / 100_000.0;
                let covered_ms =
                    ((r.amount - tariff.fee_per_contact_cents).max(0) as f64 / per_ms.max(1e-12)).max(elapsed as f64);
                let p_beyond = (-(covered_ms - elapsed as f64) / mean_ms).exp();
                let (excess, var) = (per_ms * mean_ms * p_beyond, 2.0 * (per_ms * mean_ms).powi(2) * p_beyond);
                slot.3 += excess;
                slot.4 += var;
                r.counted_overrun.store((running - r.amount).max(0), Ordering::Release);
                r.counted_excess.store(excess.to_bits(), Ordering::Release);
                r.counted_var.store(var.to_bits(), Ordering::Release);
            }
        }
        let _g = self.exposure.lock();
        let clear = |p: &Period| {
            p.running_overrun.store(0, Ordering::Release);
            p.in_service.store(0, Ordering::Release);
            p.tail_margin.store(0, Ordering::Release);
            p.excess_bits.store(0f64.to_bits(), Ordering::Release);
            p.var_bits.store(0f64.to_bits(), Ordering::Release);
        };
        for b in self.budgets.values() {
            let p = b.current.read().clone();
            if !per.contains_key(&(Arc::as_ptr(&p) as usize)) {
                clear(&p);
            }
            for old in b.past.lock().iter() {
                if !per.contains_key(&(Arc::as_ptr(old) as usize)) {
                    clear(old);
                }
            }
        }
        for (p, overrun, n, excess, var) in per.into_values() {
            p.running_overrun.store(overrun, Ordering::Release);
            p.in_service.store(n, Ordering::Release);
            p.excess_bits.store(excess.to_bits(), Ordering::Release);
            p.var_bits.store(var.to_bits(), Ordering::Release);
            p.tail_margin.store(margin(excess, var), Ordering::Release);
        }
        self.refreshed_unix_ms.store(unix, Ordering::Release);
    }

    /// Takes a call that stops being in service (settled or released) out of the figures the
    /// last [`refresh_exposure`](Self::refresh_exposure) stored, if they counted it: its running
    /// overrun then (its cost beyond its reservation, which a settlement now charges to the
    /// committed amount), its place among the calls in service, and its share of the tail
    /// margin. Without it the call counted twice until the next refresh, and admission refused
    /// calls the budget could pay for, for up to a second after every long call near the ceiling.
    /// A call the stored figures did not count (it started after them, or a refresh is under way)
    /// is left alone: the next refresh counts without it.
    fn uncount_running(&self, r: &Reservation) {
        if !r.started {
            return;
        }
        let _g = self.exposure.lock();
        let at = r.counted_at.load(Ordering::Acquire);
        if at == i64::MIN || at != self.refreshed_unix_ms.load(Ordering::Acquire) {
            return;
        }
        let p = &r.period;
        let down =
            |a: &AtomicI64, by: i64| a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some((v - by).max(0)));
        let _ = down(&p.running_overrun, r.counted_overrun.load(Ordering::Acquire));
        let _ = down(&p.in_service, 1);
        let less = |a: &AtomicU64, by: u64| {
            let v = (f64::from_bits(a.load(Ordering::Acquire)) - f64::from_bits(by)).max(0.0);
            a.store(v.to_bits(), Ordering::Release);
            v
        };
        let excess = less(&p.excess_bits, r.counted_excess.load(Ordering::Acquire));
        let var = less(&p.var_bits, r.counted_var.load(Ordering::Acquire));
        p.tail_margin.store(margin(excess, var), Ordering::Release);
    }

    /// Makes this node spend only what the shared ledger leases it: from now on every period's
    /// limit is the lease [`set_lease`](Self::set_lease) gives it (0 until the first grant).
    #[must_use]
    pub fn leased(self) -> Self {
        for b in self.budgets.values() {
            b.leased.store(true, Ordering::Release);
            b.current.read().lease.store(0, Ordering::Release);
        }
        self
    }

    /// Sets this node's lease on `budget`'s period `period` (the amount the shared ledger granted
    /// it, cumulative over the period). Returns false if that period is not the current one (the
    /// grant came for a period that has ended).
    pub fn set_lease(&self, budget: &str, period: &str, now: Millis, granted_cents: i64) -> bool {
        let Some(b) = self.budgets.get(budget) else { return false };
        let p = Self::period_at(b, self.unix(now));
        if p.label != period {
            return false;
        }
        p.lease.store(granted_cents, Ordering::Release);
        true
    }

    /// Where each budget stands for its lease at `now`: (budget, period, committed by this node,
    /// current lease, ceiling, paced allowance for general contacts, with the protected reserve).
    #[must_use]
    pub fn lease_needs(&self, now: Millis) -> Vec<LeaseNeed> {
        let unix = self.unix(now);
        let mut v: Vec<LeaseNeed> = self
            .budgets
            .values()
            .map(|b| {
                let p = Self::period_at(b, unix);
                let ceiling = b.ceiling.load(Ordering::Acquire);
                // What the budget's own rules allow now, whatever this node's lease.
                let protected = Self::rule_limit(b, &p, unix, true);
                LeaseNeed {
                    budget: b.cfg.id.clone(),
                    period: p.label.clone(),
                    period_end_unix_ms: p.end,
                    committed_cents: p.committed.load(Ordering::Acquire) + p.running_overrun.load(Ordering::Acquire),
                    lease_cents: p.lease.load(Ordering::Acquire),
                    ceiling_cents: ceiling,
                    allowance_cents: protected,
                }
            })
            .collect();
        v.sort_by(|a, b| a.budget.cmp(&b.budget));
        v
    }

    /// Changes a ceiling and/or tariffs (a contract amendment), recording who (`actor`, the
    /// authenticated principal), when and why, with the client's free-text `note`.
    /// Lowering the ceiling below what is committed stops new admissions; nothing in progress is
    /// cancelled.
    pub fn amend(
        &self,
        id: &str,
        ceiling_cents: Option<i64>,
        tariffs: &[ChannelTariff],
        by: &AmendedBy<'_>,
        now: Millis,
    ) -> Result<BudgetView, BudgetError> {
        let AmendedBy { actor, note, reason } = *by;
        let b = self.budget(id)?;
        if actor.trim().is_empty() {
            return Err(invalid("actor", "who makes the change must be recorded"));
        }
        if let Some(c) = ceiling_cents {
            if c < 0 {
                return Err(invalid("ceiling_cents", "must not be negative"));
            }
        }
        for (i, t) in tariffs.iter().enumerate() {
            validate_tariff(&t.tariff, &format!("tariffs[{i}]"))?;
        }
        let unix = self.unix(now);
        let mut audit = b.audit.lock();
        let sink = self.sink.as_deref();
        let mut record = |field: String, old: String, new: String| {
            let a = AuditRecord {
                at_unix_ms: unix,
                budget: id.to_owned(),
                actor: actor.to_owned(),
                note: note.to_owned(),
                field,
                old_value: old,
                new_value: new,
                reason: reason.to_owned(),
            };
            if let Some(sink) = sink {
                sink.amended(&a);
            }
            audit.push(a);
        };
        if let Some(c) = ceiling_cents {
            let old = b.ceiling.swap(c, Ordering::AcqRel);
            record("ceiling_cents".into(), old.to_string(), c.to_string());
        }
        if !tariffs.is_empty() {
            let mut t = b.tariffs.write();
            for ct in tariffs {
                let old = t[ct.channel.index()];
                t[ct.channel.index()] = ct.tariff;
                record(format!("tariff.{}", ct.channel.as_str()), old.to_string(), ct.tariff.to_string());
            }
        }
        drop(audit);
        Ok(Self::view(b, unix))
    }

    /// The audit trail of a budget, oldest first.
    pub fn audit(&self, id: &str) -> Result<Vec<AuditRecord>, BudgetError> {
        Ok(self.budget(id)?.audit.lock().clone())
    }

    /// Reservations currently held, across budgets (for tests and conservation checks).
    #[must_use]
    pub fn open_reservations(&self) -> usize {
        self.reservations.iter().map(|r| r.value().len()).sum()
    }
}

fn new_period(cfg: &BudgetConfig, zone: &dyn Zone, unix: i64, leased: bool) -> Period {
    let (start, end, label) = match &cfg.period {
        PeriodConfig::Monthly => calendar::month_of(unix, zone),
        PeriodConfig::Fixed { start_unix_ms, length_ms } => {
            let k = (unix - start_unix_ms).div_euclid(*length_ms);
            let s = start_unix_ms + k * length_ms;
            (s, s + length_ms, format!("P{k}"))
        }
    };
    let cumulative = match &cfg.pacing {
        PacingConfig::Weekly { hour_weights, .. } => {
            let hours = ((end - start) as u64).div_ceil(3_600_000) as usize;
            let mut cum = Vec::with_capacity(hours + 1);
            let mut acc = 0u64;
            cum.push(0);
            for h in 0..hours {
                let t = start + h as i64 * 3_600_000;
                let span = (end - t).min(3_600_000) as u64;
                acc += u64::from(hour_weights[calendar::hour_of_week(t, zone)]) * span / 3_600_000;
                cum.push(acc);
            }
            Some(cum)
        }
        _ => None,
    };
    Period {
        label,
        start,
        end,
        cumulative,
        committed: AtomicI64::new(0),
        settled: AtomicI64::new(0),
        reserved: AtomicI64::new(0),
        overrun: AtomicI64::new(0),
        refusals: AtomicU64::new(0),
        lease: AtomicI64::new(if leased { 0 } else { i64::MAX }),
        running_overrun: AtomicI64::new(0),
        excess_bits: AtomicU64::new(0),
        var_bits: AtomicU64::new(0),
        in_service: AtomicI64::new(0),
        tail_margin: AtomicI64::new(0),
    }
}
