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

use crate::budget::{BudgetGate, FundingRequest, Settlement, Started};
use crate::calendar::{self, Zone};
use crate::config::valid_name;
use crate::model::{Channel, Outcome, Segment};
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

impl std::fmt::Display for Tariff {
    /// `fee_per_contact_cents=50 rate_per_second_centicents=150 billing_increment_seconds=10`:
    /// the form audit records use, read back by [`Tariff::parse`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fee_per_contact_cents={} rate_per_second_centicents={} billing_increment_seconds={}",
            self.fee_per_contact_cents, self.rate_per_second_centicents, self.billing_increment_seconds
        )
    }
}

impl Tariff {
    /// Reads the [`Display`](std::fmt::Display) form back; `None` if malformed.
    #[must_use]
    pub fn parse(text: &str) -> Option<Tariff> {
        let mut t = Tariff { fee_per_contact_cents: -1, rate_per_second_centicents: -1, billing_increment_seconds: 0 };
        for part in text.split_whitespace() {
            let (k, v) = part.split_once('=')?;
            match k {
                "fee_per_contact_cents" => t.fee_per_contact_cents = v.parse().ok()?,
                "rate_per_second_centicents" => t.rate_per_second_centicents = v.parse().ok()?,
                "billing_increment_seconds" => t.billing_increment_seconds = v.parse().ok()?,
                _ => return None,
            }
        }
        validate_tariff(&t, "tariff").ok().map(|()| t)
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
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
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
    /// Near the ceiling, a call is reserved at its queue's mean handle time plus this many
    /// standard deviations (learned from completed calls), so that the calls admitted can run
    /// long without taking the period's recorded total over the ceiling. 0 reserves the mean
    /// everywhere (overruns are then charged beyond the ceiling and reported).
    #[serde(default = "default_tail_sigmas")]
    pub tail_sigmas: f64,
}

fn default_tail_sigmas() -> f64 {
    TAIL_SIGMAS
}

fn default_handle() -> u64 {
    300_000
}

/// A budget refused an operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BudgetError {
    /// No budget of that id.
    #[error("unknown budget `{}`", crate::error::clip(.0))]
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
        if !(0.0..=10.0).contains(&self.tail_sigmas) {
            return Err(invalid(format!("{at}.tail_sigmas"), "must be between 0 and 10"));
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

/// Who changes a budget, and why (see [`BudgetBook::amend`]).
#[derive(Clone, Copy, Debug)]
pub struct AmendedBy<'a> {
    /// The authenticated principal.
    pub actor: &'a str,
    /// The client's free text.
    pub note: &'a str,
    /// The amendment's reference.
    pub reason: &'a str,
}

/// A change to a budget (contract amendment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Budget.
    pub budget: String,
    /// Who: the authenticated principal that made the change.
    pub actor: String,
    /// Free text the client gave with the change (e.g. the person's name at the admin console);
    /// never trusted as the actor.
    pub note: String,
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
    /// This node's lease on the period when several nodes share the budget (`None`: no lease).
    pub lease_cents: Option<i64>,
    /// What calls in service cost by now beyond their reservations.
    pub running_overrun_cents: i64,
    /// The live exposure: settled + reserved + running overrun. Admission keeps it within the
    /// limit.
    pub exposure_cents: i64,
    /// Projected spend at the end of the period: the exposure plus the settled spend's average
    /// rate since the period began over what is left of it (the exposure alone in its first
    /// minute). Admission stops at the ceiling, so a projection above it means extra-budget
    /// diversions ahead.
    pub projected_cents: i64,
    /// When the money runs out at the settled spend's average rate since the period began:
    /// the instant the exposure reaches the ceiling (now if it has), Unix ms; `None` if it lasts
    /// the period (or nothing has been settled yet).
    pub exhausted_at_unix_ms: Option<i64>,
    /// The period's bounds, Unix ms.
    pub period_start_unix_ms: i64,
    /// End of the period (exclusive), Unix ms.
    pub period_end_unix_ms: i64,
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
    /// The operator who handled it.
    pub operator: String,
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
    /// How the contact ended: completed, or the caller hung up while in service.
    pub outcome: Outcome,
}

/// A reservation of a contact in service with an operator its budget pays: written down so a
/// completion that arrives after a restart settles against it, and so the money stays committed
/// meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    /// Contact.
    pub contact: String,
    /// Budget.
    pub budget: String,
    /// Period label of the reservation.
    pub period: String,
    /// Amount reserved, cents.
    pub amount_cents: i64,
    /// Queue.
    pub queue: String,
    /// Operator group.
    pub group: String,
    /// The operator handling it.
    pub operator: String,
    /// Channel.
    pub channel: Channel,
    /// Accepted, Unix ms.
    pub accepted_unix_ms: i64,
    /// When the contact arrived (its original arrival after a failover), Unix ms; 0 only in a
    /// hold written by a version that did not record it.
    pub arrived_unix_ms: i64,
}

/// Receives what must outlive the process (the durable ledger implements it). Calls come from
/// inside routing operations and must not block: a durable sink queues the write and lets the
/// caller wait for it outside the engine.
pub trait SettlementSink: Send + Sync + std::fmt::Debug {
    /// One settled contact; it also ends the contact's hold, if any.
    fn record(&self, r: &CostRecord);
    /// A funded contact went into service with an operator its budget pays.
    fn hold(&self, _h: &HoldRecord) {}
    /// A hold ended without a settlement.
    fn release(&self, _budget: &str, _contact: &str) {}
    /// A contract amendment.
    fn amended(&self, _a: &AuditRecord) {}
}

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

/// A budget's lease position on this node (see [`BudgetBook::lease_needs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseNeed {
    /// Budget.
    pub budget: String,
    /// Current period.
    pub period: String,
    /// When it ends, Unix ms.
    pub period_end_unix_ms: i64,
    /// What this node has committed in it (settled + reserved + running overrun).
    pub committed_cents: i64,
    /// The lease this node holds (cumulative grant).
    pub lease_cents: i64,
    /// The ceiling.
    pub ceiling_cents: i64,
    /// What the budget's rules (pacing, protected reserve) allow committed in all by now: the
    /// cap a grant must respect across every node.
    pub allowance_cents: i64,
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

#[derive(Debug, Clone)]
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
}

/// The default `tail_sigmas`: near the ceiling a call is reserved at its queue's mean handle time
/// plus this many standard deviations, when the headroom left could not absorb the calls in
/// service running long (see `reserve`).
pub const TAIL_SIGMAS: f64 = 3.0;

/// Standard deviations of the calls in service's possible excess kept back as margin.
const MARGIN_SIGMAS: f64 = 5.0;

/// Every capped budget of the contract. Implements [`BudgetGate`].
#[derive(Debug)]
pub struct BudgetBook {
    budgets: HashMap<String, Budget>,
    epoch_unix_ms: i64,
    reservations: DashMap<Arc<str>, Vec<Reservation>, foldhash::fast::RandomState>,
    /// Holds read back at restart, whose contacts the engine does not know.
    recovered: DashMap<String, HoldRecord>,
    sink: Option<Arc<dyn SettlementSink>>,
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
        // Per period: running overrun, calls in service, expected excess, its variance.
        let mut per: HashMap<usize, (Arc<Period>, i64, i64, f64, f64)> = HashMap::new();
        for e in self.reservations.iter() {
            for r in e.value().iter().filter(|r| r.started) {
                let Some(b) = self.budgets.get(&*r.budget) else { continue };
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
                slot.3 += per_ms * mean_ms * p_beyond;
                slot.4 += 2.0 * (per_ms * mean_ms).powi(2) * p_beyond;
            }
        }
        let clear = |p: &Period| {
            p.running_overrun.store(0, Ordering::Release);
            p.in_service.store(0, Ordering::Release);
            p.tail_margin.store(0, Ordering::Release);
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
            p.tail_margin.store((excess + MARGIN_SIGMAS * var.sqrt()).ceil() as i64, Ordering::Release);
        }
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
        in_service: AtomicI64::new(0),
        tail_margin: AtomicI64::new(0),
    }
}

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
    fn charge(
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
        Ok(self.charge(
            b,
            &r,
            contact,
            &h.queue,
            &h.group,
            &h.operator,
            h.channel,
            handle_ms,
            h.accepted_unix_ms,
            completed,
            outcome,
        ))
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
