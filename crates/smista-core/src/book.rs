//! Budget ceilings: the money side of routing, pure and in memory.
//!
//! A [`BudgetBook`] holds every capped budget of the contract: its ceiling for the current period,
//! tariffs per channel, an optional pacing profile and a protected reserve. It implements
//! [`BudgetGate`], so the engine consults it before a contact may reach an operator paid from a
//! budget.
//!
//! **Hard ceiling.** Admission is one compare-and-swap on the period's committed amount (settled +
//! reserved): a contact is admitted only if `committed + expected cost <= limit`, and the check and
//! the debit are the same atomic step, so concurrent offers can never overspend (no
//! check-then-debit race). A call that runs longer than reserved is not cut off: the overrun is
//! charged when it settles and reported.
//!
//! Money is integer euro cents (`i64`); per-second rates are in hundredths of a cent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::budget::{BudgetGate, FundingRequest, Settlement};
use crate::calendar;
use crate::config::valid_name;
use crate::model::{Channel, Segment};
use crate::time::Millis;

/// Price of handled contacts of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    /// Fee per handled contact, cents.
    #[serde(default)]
    pub fee_per_contact_cents: i64,
    /// Price per second of handle time, hundredths of a cent.
    #[serde(default)]
    pub rate_per_second_centicents: i64,
    /// Handle time is billed in increments of this many seconds, rounded up (at least 1).
    #[serde(default = "one")]
    pub billing_increment_seconds: u32,
}

fn one() -> u32 {
    1
}

impl Tariff {
    /// Cost in cents of a contact handled for `handle_ms`: the fee plus the rate applied to the
    /// handle time rounded up to whole billing increments; a fraction of a cent rounds up.
    #[must_use]
    pub fn cost_cents(&self, handle_ms: u64) -> i64 {
        let inc_ms = u64::from(self.billing_increment_seconds.max(1)) * 1000;
        let increments = handle_ms.div_ceil(inc_ms);
        let billed_s = i128::from(increments) * i128::from(self.billing_increment_seconds.max(1));
        let centicents = billed_s * i128::from(self.rate_per_second_centicents);
        let cents = (centicents + 99).div_euclid(100);
        i64::try_from(i128::from(self.fee_per_contact_cents) + cents).unwrap_or(i64::MAX)
    }
}

/// A tariff for one channel, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelTariff {
    /// The channel.
    pub channel: Channel,
    /// Its price.
    #[serde(flatten)]
    pub tariff: Tariff,
}

/// How the contract's periods run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeriodConfig {
    /// Calendar months (UTC); the ceiling applies to each month.
    Monthly,
    /// Periods of `length_ms` from `start_unix_ms` (for compressed tests and load scenarios).
    Fixed {
        /// Start of the first period, Unix ms.
        start_unix_ms: i64,
        /// Length of each period.
        length_ms: i64,
    },
}

/// How spend is paced over a period.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PacingConfig {
    /// No pacing: the whole ceiling is available from the first day.
    #[default]
    None,
    /// The allowance grows evenly with time, `lookahead_ms` ahead of the clock.
    Even {
        /// How far ahead of the clock the allowance runs (a burst margin).
        #[serde(default = "default_lookahead")]
        lookahead_ms: i64,
    },
    /// The allowance grows with hour-of-week weights (Monday 00-01 UTC first, 168 values), e.g.
    /// more on weekday mornings, nothing at night.
    Weekly {
        /// 168 non-negative weights.
        hour_weights: Vec<u32>,
        /// How far ahead of the clock the allowance runs.
        #[serde(default = "default_lookahead")]
        lookahead_ms: i64,
    },
}

fn default_lookahead() -> i64 {
    3_600_000
}

/// Expected handle time of one queue, for reservations.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueHandleTime {
    /// The queue.
    pub queue: String,
    /// Expected handle time.
    pub handle_ms: u64,
}

/// One capped budget.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Budget id, referenced by operator groups and queues.
    pub id: String,
    /// Ceiling per period, cents.
    pub ceiling_cents: i64,
    /// Period calendar.
    pub period: PeriodConfig,
    /// Tariffs by channel; a channel without a tariff costs nothing.
    #[serde(default)]
    pub tariffs: Vec<ChannelTariff>,
    /// Pacing profile.
    #[serde(default)]
    pub pacing: PacingConfig,
    /// Share of the ceiling, in basis points, that only protected contacts may use.
    #[serde(default)]
    pub protected_reserve_bp: u32,
    /// Contacts at or above this effective priority are protected.
    #[serde(default)]
    pub protected_min_priority: Option<u32>,
    /// Contacts of these segments are protected.
    #[serde(default)]
    pub protected_segments: Vec<Segment>,
    /// Handle time assumed for queues without an entry below, until one is learned.
    #[serde(default = "default_handle")]
    pub default_handle_ms: u64,
    /// Configured expected handle times per queue (not learned).
    #[serde(default)]
    pub expected_handle: Vec<QueueHandleTime>,
}

fn default_handle() -> u64 {
    300_000
}

/// A budget refused an operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BudgetError {
    /// No budget of that id.
    #[error("unknown budget `{0}`")]
    UnknownBudget(String),
    /// A value is out of range or malformed; names the key.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key.
        key: String,
        /// The problem.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> BudgetError {
    BudgetError::Invalid { key: key.into(), problem: problem.into() }
}

impl BudgetConfig {
    /// Checks the budget's values; `at` prefixes the keys in errors (e.g. `budgets[0]`).
    pub fn validate(&self, at: &str) -> Result<(), BudgetError> {
        if !valid_name(&self.id) {
            return Err(invalid(format!("{at}.id"), "must be 1 to 64 characters of [A-Za-z0-9_.-]"));
        }
        if self.ceiling_cents < 0 {
            return Err(invalid(format!("{at}.ceiling_cents"), "must not be negative"));
        }
        if let PeriodConfig::Fixed { length_ms, .. } = self.period {
            if length_ms <= 0 {
                return Err(invalid(format!("{at}.period.length_ms"), "must be positive"));
            }
        }
        for (i, t) in self.tariffs.iter().enumerate() {
            validate_tariff(&t.tariff, &format!("{at}.tariffs[{i}]"))?;
            if self.tariffs[..i].iter().any(|x| x.channel == t.channel) {
                return Err(invalid(format!("{at}.tariffs[{i}].channel"), "channel given twice"));
            }
        }
        match &self.pacing {
            PacingConfig::None => {}
            PacingConfig::Even { lookahead_ms } | PacingConfig::Weekly { lookahead_ms, .. } if *lookahead_ms < 0 => {
                return Err(invalid(format!("{at}.pacing.lookahead_ms"), "must not be negative"));
            }
            PacingConfig::Even { .. } => {}
            PacingConfig::Weekly { hour_weights, .. } => {
                if hour_weights.len() != 168 {
                    return Err(invalid(
                        format!("{at}.pacing.hour_weights"),
                        "needs 168 values (Monday 00-01 UTC first)",
                    ));
                }
                if hour_weights.iter().all(|w| *w == 0) {
                    return Err(invalid(format!("{at}.pacing.hour_weights"), "must not be all zero"));
                }
            }
        }
        if self.protected_reserve_bp > 10_000 {
            return Err(invalid(format!("{at}.protected_reserve_bp"), "must be 0..=10000 (basis points)"));
        }
        if self.default_handle_ms == 0 {
            return Err(invalid(format!("{at}.default_handle_ms"), "must be positive"));
        }
        Ok(())
    }
}

fn validate_tariff(t: &Tariff, at: &str) -> Result<(), BudgetError> {
    if t.fee_per_contact_cents < 0 || t.rate_per_second_centicents < 0 {
        return Err(invalid(at, "fees and rates must not be negative"));
    }
    if t.billing_increment_seconds == 0 {
        return Err(invalid(format!("{at}.billing_increment_seconds"), "must be at least 1"));
    }
    Ok(())
}

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
}

#[derive(Debug)]
struct Budget {
    cfg: BudgetConfig,
    ceiling: AtomicI64,
    tariffs: RwLock<[Tariff; 4]>,
    current: RwLock<Arc<Period>>,
    past: Mutex<Vec<Arc<Period>>>,
    learned_handle: DashMap<String, u64>,
    audit: Mutex<Vec<AuditRecord>>,
}

/// A change to a budget (contract amendment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Budget.
    pub budget: String,
    /// Who.
    pub actor: String,
    /// Which value, e.g. `ceiling_cents` or `tariff.voice`.
    pub field: String,
    /// Before.
    pub old_value: String,
    /// After.
    pub new_value: String,
    /// Why.
    pub reason: String,
}

/// A budget's totals in its current period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetView {
    /// Budget id.
    pub id: String,
    /// Period label (`2026-11`, or the start of a fixed period).
    pub period: String,
    /// Ceiling.
    pub ceiling_cents: i64,
    /// Cost of completed contacts.
    pub settled_cents: i64,
    /// Expected cost reserved by contacts admitted and not yet ended.
    pub reserved_cents: i64,
    /// What general (unprotected) contacts may commit by now under pacing.
    pub paced_allowance_cents: i64,
    /// Cost charged beyond reservations.
    pub overrun_cents: i64,
    /// Admissions refused (extra budget) this period.
    pub refusals: u64,
}

/// What a settled contact cost, for the durable ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostRecord {
    /// Contact.
    pub contact: String,
    /// Budget.
    pub budget: String,
    /// Period label.
    pub period: String,
    /// Queue.
    pub queue: String,
    /// Operator group.
    pub group: String,
    /// Channel.
    pub channel: Channel,
    /// Accepted, Unix ms.
    pub accepted_unix_ms: i64,
    /// Completed, Unix ms.
    pub completed_unix_ms: i64,
    /// Handle time.
    pub handle_ms: u64,
    /// Cost charged.
    pub cost_cents: i64,
    /// What had been reserved.
    pub reserved_cents: i64,
}

/// Receives every settled contact (the durable ledger implements it).
pub trait SettlementSink: Send + Sync + std::fmt::Debug {
    /// Records one settled contact.
    fn record(&self, r: &CostRecord);
}

#[derive(Debug, Clone)]
struct Reservation {
    budget: Arc<str>,
    period: Arc<Period>,
    amount: i64,
}

/// Every capped budget of the contract. Implements [`BudgetGate`].
#[derive(Debug)]
pub struct BudgetBook {
    budgets: HashMap<String, Budget>,
    epoch_unix_ms: i64,
    reservations: DashMap<Arc<str>, Vec<Reservation>, foldhash::fast::RandomState>,
    sink: Option<Arc<dyn SettlementSink>>,
}

impl BudgetBook {
    /// A book for `budgets`; engine time `Millis(0)` is `epoch_unix_ms` on the wall clock.
    pub fn new(budgets: &[BudgetConfig], epoch_unix_ms: i64) -> Result<BudgetBook, BudgetError> {
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
            let period = Arc::new(new_period(cfg, epoch_unix_ms));
            map.insert(
                cfg.id.clone(),
                Budget {
                    cfg: cfg.clone(),
                    ceiling: AtomicI64::new(cfg.ceiling_cents),
                    tariffs: RwLock::new(tariffs),
                    current: RwLock::new(period),
                    past: Mutex::new(Vec::new()),
                    learned_handle: DashMap::new(),
                    audit: Mutex::new(Vec::new()),
                },
            );
        }
        Ok(BudgetBook { budgets: map, epoch_unix_ms, reservations: DashMap::default(), sink: None })
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

    fn protected(b: &Budget, priority: u32, segment: Segment) -> bool {
        b.cfg.protected_min_priority.is_some_and(|p| priority >= p) || b.cfg.protected_segments.contains(&segment)
    }

    /// The most a contact may bring the committed amount to at `unix`.
    fn limit(b: &Budget, p: &Period, unix: i64, protected: bool) -> i64 {
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
                let w = u64::from(hour_weights[calendar::hour_of_week(t)]);
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
            let next = Arc::new(new_period(&b.cfg, unix));
            let old = std::mem::replace(&mut *cur, next);
            let mut past = b.past.lock();
            past.push(old);
            if past.len() > 24 {
                past.remove(0);
            }
        }
        cur.clone()
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
        BudgetView {
            id: b.cfg.id.clone(),
            period: p.label.clone(),
            ceiling_cents: b.ceiling.load(Ordering::Acquire),
            settled_cents: p.settled.load(Ordering::Acquire),
            reserved_cents: p.reserved.load(Ordering::Acquire),
            paced_allowance_cents: Self::limit(b, &p, unix, false),
            overrun_cents: p.overrun.load(Ordering::Acquire),
            refusals: p.refusals.load(Ordering::Relaxed),
        }
    }

    /// Changes a ceiling and/or tariffs (a contract amendment), recording who, when and why.
    /// Lowering the ceiling below what is committed stops new admissions; nothing in progress is
    /// cancelled.
    pub fn amend(
        &self,
        id: &str,
        ceiling_cents: Option<i64>,
        tariffs: &[ChannelTariff],
        actor: &str,
        reason: &str,
        now: Millis,
    ) -> Result<BudgetView, BudgetError> {
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
        let mut record = |field: String, old: String, new: String| {
            audit.push(AuditRecord {
                at_unix_ms: unix,
                budget: id.to_owned(),
                actor: actor.to_owned(),
                field,
                old_value: old,
                new_value: new,
                reason: reason.to_owned(),
            });
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
                record(format!("tariff.{}", ct.channel.as_str()), format!("{old:?}"), format!("{:?}", ct.tariff));
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

fn new_period(cfg: &BudgetConfig, unix: i64) -> Period {
    let (start, end, label) = match &cfg.period {
        PeriodConfig::Monthly => calendar::month_of(unix),
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
                acc += u64::from(hour_weights[calendar::hour_of_week(t)]) * span / 3_600_000;
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
    }
}

impl BudgetGate for BudgetBook {
    fn reserve(&self, req: &FundingRequest<'_>) -> bool {
        let Some(b) = self.budgets.get(req.budget) else { return false };
        let unix = self.unix(req.now);
        let p = Self::period_at(b, unix);
        let expected = Self::expected_cost(b, req.queue, req.channel);
        let limit = Self::limit(b, &p, unix, Self::protected(b, req.priority, req.segment));
        let mut held = self.reservations.entry(Arc::from(req.contact_id)).or_default();
        if held.iter().any(|r| &*r.budget == req.budget) {
            return true; // already funded by this budget: nothing more to reserve
        }
        // Check and debit in one atomic step.
        let admitted = p
            .committed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(expected).filter(|n| *n <= limit))
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
        held.push(Reservation { budget: Arc::from(req.budget), period: p, amount: expected });
        true
    }

    fn release(&self, budget: &str, contact_id: &str) {
        let Some(r) = take_reservation(&self.reservations, budget, contact_id) else { return };
        r.period.reserved.fetch_sub(r.amount, Ordering::AcqRel);
        r.period.committed.fetch_sub(r.amount, Ordering::AcqRel);
    }

    fn settle(&self, s: &Settlement<'_>) {
        let Some(r) = take_reservation(&self.reservations, s.budget, s.contact_id) else { return };
        let Some(b) = self.budgets.get(s.budget) else { return };
        let cost = b.tariffs.read()[s.channel.index()].cost_cents(s.handle_ms);
        let p = &r.period;
        p.reserved.fetch_sub(r.amount, Ordering::AcqRel);
        p.settled.fetch_add(cost, Ordering::AcqRel);
        // Charged whatever it cost: an overrun is taken from the remaining headroom.
        p.committed.fetch_add(cost - r.amount, Ordering::AcqRel);
        if cost > r.amount {
            p.overrun.fetch_add(cost - r.amount, Ordering::AcqRel);
        }
        // Learn the queue's handle time (exponential average, weight 1/8).
        let mut h = b.learned_handle.entry(s.queue.to_owned()).or_insert(b.cfg.default_handle_ms);
        *h = (*h * 7 + s.handle_ms) / 8;
        drop(h);
        if let Some(sink) = &self.sink {
            sink.record(&CostRecord {
                contact: s.contact_id.to_owned(),
                budget: s.budget.to_owned(),
                period: p.label.clone(),
                queue: s.queue.to_owned(),
                group: s.group.to_owned(),
                channel: s.channel,
                accepted_unix_ms: self.unix(s.accepted_at),
                completed_unix_ms: self.unix(s.now),
                handle_ms: s.handle_ms,
                cost_cents: cost,
                reserved_cents: r.amount,
            });
        }
    }
}

fn take_reservation(
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
