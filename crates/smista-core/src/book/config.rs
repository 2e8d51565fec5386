//! The budgets' configuration: tariffs per channel, period calendars, pacing profiles, expected
//! handle times, and the checks a [`BudgetConfig`] passes before a book is built from it, with the
//! [`BudgetError`] a budget answers when it refuses an operation.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::valid_name;
use crate::model::{Channel, Segment};

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
    /// Calendar months on the centre's wall clock (`[engine] time_zone`; UTC only for a book
    /// built with `BudgetBook::new`); the ceiling applies to each month.
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
    /// The allowance grows with hour-of-week weights (168 values, Monday 00:00-01:00 on the
    /// centre's wall clock first; within an hour it grows by whole weight units), e.g.
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
    /// How the tariffs' per-contact fee applies to a contact that an operator transferred and
    /// that several legs of this budget's operators handled (the handle time of every leg is
    /// always charged, once).
    #[serde(default)]
    pub leg_fee: LegFee,
}

/// How the per-contact fee applies to the legs of one transferred contact (a budget's
/// `leg_fee`): a term of the supplier's contract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegFee {
    /// Once per contact: the first leg this budget pays carries the fee, later legs of the same
    /// budget only their handle time (the default: the supplier handled one contact).
    #[default]
    Once,
    /// On every leg: each leg is a handled contact for the fee.
    EveryLeg,
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

pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> BudgetError {
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
                        "needs 168 values (Monday 00-01 local time first)",
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

pub(super) fn validate_tariff(t: &Tariff, at: &str) -> Result<(), BudgetError> {
    if t.fee_per_contact_cents < 0 || t.rate_per_second_centicents < 0 {
        return Err(invalid(at, "fees and rates must not be negative"));
    }
    if t.billing_increment_seconds == 0 {
        return Err(invalid(format!("{at}.billing_increment_seconds"), "must be at least 1"));
    }
    Ok(())
}

/// The default `tail_sigmas`: near the ceiling a call is reserved at its queue's mean handle time
/// plus this many standard deviations, when the headroom left could not absorb the calls in
/// service running long (see `reserve`).
pub const TAIL_SIGMAS: f64 = 3.0;
