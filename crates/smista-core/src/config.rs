//! Static configuration of the engine: queues (service lines) and operator groups.
//!
//! The server reads it from TOML (the types derive `serde::Deserialize`); [`EngineConfig::validate`]
//! reports the first problem with the offending key.

use serde::{Deserialize, Serialize};

use crate::appointments::AppointmentRules;
use crate::error::ConfigError;
use crate::hours::{Hours, HoursConfig};
use crate::model::{Fallback, Segment};

/// How a queue picks among several operators free to take a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The operator free for the longest time (fairest to operators; the default).
    #[default]
    LongestIdle,
    /// The highest level on the queue's skills, then longest idle.
    MostSkilled,
    /// Rotate through the queue's operators.
    RoundRobin,
    /// The fewest contacts in hand relative to capacity, then longest idle.
    LeastOccupied,
    /// The fewest contacts completed since login (Asterisk's `fewestcalls`), then longest idle:
    /// work shared out evenly over a shift.
    FewestContacts,
    /// The least talk time since login (FreeSWITCH's `agent-with-least-talk-time`), then longest
    /// idle: time on calls shared out evenly over a shift.
    LeastTalkTime,
}

impl Strategy {
    /// Every strategy, in index order.
    pub const ALL: [Strategy; 6] = [
        Strategy::LongestIdle,
        Strategy::MostSkilled,
        Strategy::RoundRobin,
        Strategy::LeastOccupied,
        Strategy::FewestContacts,
        Strategy::LeastTalkTime,
    ];

    /// Index in [`Strategy::ALL`].
    #[must_use]
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The strategy of an index (longest idle for an unknown one).
    #[must_use]
    pub fn from_index(i: u8) -> Strategy {
        Strategy::ALL.get(usize::from(i)).copied().unwrap_or_default()
    }
}

/// After a contact has waited `after_ms`, operators `level_drop` levels below the queue's minimum
/// are accepted too (skill expansion). The first step also drops the contact's language wish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpansionStep {
    /// Wait after which the step applies.
    pub after_ms: u64,
    /// Levels below the minimum now accepted (cumulative, not added to earlier steps).
    pub level_drop: u8,
}

/// A required skill with its minimum level.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillRequirement {
    /// Skill name.
    pub skill: String,
    /// Minimum level 1..=10.
    pub min_level: u8,
}

/// One queue (service line).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Unique name, e.g. `pensions`.
    pub name: String,
    /// Skills an operator needs to serve the queue.
    #[serde(default)]
    pub skills: Vec<SkillRequirement>,
    /// Priority added to every contact of the queue (0..=100).
    #[serde(default)]
    pub priority: u32,
    /// Milliseconds of waiting worth one priority level (aging); 0 disables aging.
    #[serde(default = "default_aging_ms")]
    pub aging_ms_per_level: u64,
    /// Service-level target share, e.g. 0.8.
    #[serde(default = "default_sl_target")]
    pub service_level_target: f64,
    /// Service-level threshold in milliseconds, e.g. 20000.
    #[serde(default = "default_sl_threshold")]
    pub service_level_threshold_ms: u64,
    /// Most contacts that may wait, 1..=[`MAX_QUEUE_LENGTH`] (default [`DEFAULT_MAX_LENGTH`]).
    #[serde(default = "default_max_length")]
    pub max_length: u32,
    /// Longest wait before overflow or diversion (0: unbounded), at most [`MAX_DURATION_MS`].
    #[serde(default)]
    pub max_wait_ms: u64,
    /// Queues tried, in order, when this one is full or a contact reached its maximum wait.
    #[serde(default)]
    pub overflow: Vec<String>,
    /// Skill expansion steps, by increasing `after_ms`.
    #[serde(default)]
    pub expansion: Vec<ExpansionStep>,
    /// Whether the queue accepts new contacts at start-up.
    #[serde(default = "yes")]
    pub open: bool,
    /// After-call work given to operators after each contact of the queue.
    #[serde(default)]
    pub wrap_up_ms: u64,
    /// How long an operator has to accept an offer.
    #[serde(default = "default_offer_timeout")]
    pub offer_timeout_ms: u64,
    /// Operator selection strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Try operators not paid from a capped budget (internal staff) before budgeted suppliers.
    #[serde(default)]
    pub prefer_unbudgeted: bool,
    /// The budget that pays this queue's supplier operators, consulted when a contact arrives.
    #[serde(default)]
    pub budget: Option<String>,
    /// What diverted contacts of this queue should get.
    #[serde(default)]
    pub fallback: Fallback,
    /// Handle time assumed before any has been observed, for wait estimates.
    #[serde(default = "default_aht")]
    pub default_aht_ms: u64,
    /// Opening hours on the centre's wall clock (none: always open). A contact offered while
    /// the queue is closed is diverted CLOSED with the next opening time.
    #[serde(default)]
    pub hours: Option<HoursConfig>,
    /// Rules for segments the centre treats apart (vulnerable, urgent, intermediary contacts).
    #[serde(default)]
    pub segments: Vec<SegmentRule>,
    /// A caller who hangs up while waiting and calls again within this window (recognised by
    /// the offer's `caller_key`) gets their place back: the new contact keeps the old one's
    /// arrival time and priority. 0 (the default) turns the rule off; at most one hour.
    #[serde(default)]
    pub resume_window_ms: u64,
    /// Delays before each further attempt of a callback whose attempt went unanswered, e.g.
    /// `[120000, 600000]`: three attempts in all, the second 2 minutes after the first failed,
    /// the third 10 minutes after the second; a retry that falls outside the opening hours
    /// waits for the next opening. When they run out the callback ends UNREACHABLE.
    #[serde(default = "default_callback_retry")]
    pub callback_retry_ms: Vec<u64>,
    /// Consultancy by appointment on this queue (none: no appointments).
    #[serde(default)]
    pub appointments: Option<AppointmentRules>,
    /// The priority (0..=100) a contact transferred into this queue by an operator waits with,
    /// if higher than its own: a caller already served once is not sent to the back of a line
    /// (it keeps its original arrival too). 0 (the default): its own priority.
    #[serde(default)]
    pub transfer_priority: u32,
}

fn default_callback_retry() -> Vec<u64> {
    vec![120_000, 600_000]
}

/// The longest `resume_window_ms`.
pub const MAX_RESUME_WINDOW_MS: u64 = 3_600_000;
/// The most retries a callback may be given.
pub const MAX_CALLBACK_RETRIES: usize = 10;

/// How a queue treats one segment of its contacts (`[[queues.segments]]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// `vulnerable`, `urgent` or `intermediary`.
    pub segment: Segment,
    /// Priority levels added to the contact's own (0..=100): with the queue's aging of one level
    /// per `aging_ms_per_level`, a boost of 20 at 60 s per level puts a vulnerable caller ahead
    /// of ordinary callers who have waited up to 20 minutes.
    #[serde(default)]
    pub priority_boost: u32,
    /// A service-level threshold of the segment's own (default: the queue's).
    #[serde(default)]
    pub service_level_threshold_ms: Option<u64>,
    /// A service-level target of the segment's own (default: the queue's).
    #[serde(default)]
    pub service_level_target: Option<f64>,
    /// Route the segment's contacts to this queue instead (e.g. intermediaries to the
    /// patronati line served by their own operator group). One hop: that queue's own
    /// `route_to` does not apply again.
    #[serde(default)]
    pub route_to: Option<String>,
}

fn default_max_length() -> u32 {
    DEFAULT_MAX_LENGTH
}
fn default_aging_ms() -> u64 {
    60_000
}
fn default_sl_target() -> f64 {
    0.8
}
fn default_sl_threshold() -> u64 {
    20_000
}
fn default_offer_timeout() -> u64 {
    15_000
}
fn default_aht() -> u64 {
    300_000
}
fn yes() -> bool {
    true
}

impl QueueConfig {
    /// A queue named `name` with the given skills and every other setting at its default.
    #[must_use]
    pub fn new(name: &str, skills: &[(&str, u8)]) -> Self {
        QueueConfig {
            name: name.to_owned(),
            skills: skills.iter().map(|(s, l)| SkillRequirement { skill: (*s).to_owned(), min_level: *l }).collect(),
            priority: 0,
            aging_ms_per_level: default_aging_ms(),
            service_level_target: default_sl_target(),
            service_level_threshold_ms: default_sl_threshold(),
            max_length: DEFAULT_MAX_LENGTH,
            max_wait_ms: 0,
            overflow: Vec::new(),
            expansion: Vec::new(),
            open: true,
            wrap_up_ms: 0,
            offer_timeout_ms: default_offer_timeout(),
            strategy: Strategy::LongestIdle,
            prefer_unbudgeted: false,
            budget: None,
            fallback: Fallback::SelfServiceIvr,
            default_aht_ms: default_aht(),
            hours: None,
            segments: Vec::new(),
            resume_window_ms: 0,
            callback_retry_ms: default_callback_retry(),
            appointments: None,
            transfer_priority: 0,
        }
    }
}

/// A group of operators: a supplier's team paid from a budget, or internal staff.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique name, e.g. `supplier-a`.
    pub name: String,
    /// The supplier that employs the group (none for internal staff).
    #[serde(default)]
    pub supplier: Option<String>,
    /// The capped budget that pays the group's work (none: not paid from a capped budget).
    #[serde(default)]
    pub budget: Option<String>,
}

/// Everything the engine needs to start.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Queues.
    pub queues: Vec<QueueConfig>,
    /// Operator groups.
    pub groups: Vec<GroupConfig>,
    /// Most distinct operator ids the engine will ever see (slots are preallocated).
    #[serde(default = "default_max_operators")]
    pub max_operators: u32,
    /// How long finished contacts are remembered for idempotent retries.
    #[serde(default = "default_retention")]
    pub finished_retention_ms: u64,
    /// The window of the live service level (snapshot, metrics), ms.
    #[serde(default = "default_sl_window")]
    pub sl_window_ms: u64,
}

/// Checks a queue's required skills (names, levels 1..=10); the error names the entry's field
/// (`skills[1].min_level`) and the problem. Used by the configuration and by `UpdateQueue`.
pub(crate) fn check_skills(skills: &[SkillRequirement]) -> Result<(), (String, &'static str)> {
    for (j, s) in skills.iter().enumerate() {
        if !valid_name(&s.skill) {
            return Err((format!("skills[{j}].skill"), "must be 1 to 64 characters of [A-Za-z0-9_.-]"));
        }
        if !(1..=10).contains(&s.min_level) {
            return Err((format!("skills[{j}].min_level"), "must be 1..=10"));
        }
    }
    Ok(())
}

/// Checks skill expansion steps (at most 8, by increasing `after_ms`, level drops 0..=9); the
/// error names the step's field and the problem. Used by the configuration and by `UpdateQueue`.
pub(crate) fn check_expansion(steps: &[ExpansionStep]) -> Result<(), (String, &'static str)> {
    if steps.len() > MAX_EXPANSION_STEPS {
        return Err(("expansion".into(), "at most 8 steps"));
    }
    for (j, e) in steps.iter().enumerate() {
        if j > 0 && e.after_ms <= steps[j - 1].after_ms {
            return Err((format!("expansion[{j}].after_ms"), "steps must have increasing after_ms"));
        }
        if e.level_drop > 9 {
            return Err((format!("expansion[{j}].level_drop"), "must be 0..=9"));
        }
    }
    Ok(())
}

impl EngineConfig {
    /// The appointment rules of the queues that take appointments, by queue name.
    #[must_use]
    pub fn appointment_rules(&self) -> std::collections::HashMap<String, AppointmentRules> {
        self.queues.iter().filter_map(|q| q.appointments.clone().map(|a| (q.name.clone(), a))).collect()
    }
}

fn default_sl_window() -> u64 {
    900_000
}

fn default_max_operators() -> u32 {
    20_000
}
fn default_retention() -> u64 {
    600_000
}

/// Upper bound of `max_operators` (slot indices must fit the candidate tables).
pub const MAX_OPERATORS: u32 = 1 << 20;
/// Upper bound of a contact's or a queue's priority.
pub const MAX_PRIORITY: u32 = 100;
/// The most expansion steps a queue may have.
pub const MAX_EXPANSION_STEPS: usize = 8;

/// Contacts a queue holds when its configuration says nothing.
pub const DEFAULT_MAX_LENGTH: u32 = 10_000;
/// The longest a queue may be configured to hold.
pub const MAX_QUEUE_LENGTH: u32 = 1_000_000;
/// The longest duration any wait, patience or time-out may be given: one day.
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// The longest offer time-out or wrap-up: one hour.
pub const MAX_SHORT_DURATION_MS: u64 = 3_600_000;

/// Checks the bounds every queue length and duration must keep, wherever it comes from (the
/// configuration file or an admin's update): `Err((field, problem))`.
pub fn check_queue_bounds(
    max_length: Option<u32>,
    max_wait_ms: Option<u64>,
    wrap_up_ms: Option<u64>,
    offer_timeout_ms: Option<u64>,
) -> Result<(), (&'static str, String)> {
    if let Some(n) = max_length {
        if n == 0 || n > MAX_QUEUE_LENGTH {
            return Err(("max_length", format!("{n} is not 1..={MAX_QUEUE_LENGTH}")));
        }
    }
    if let Some(ms) = max_wait_ms {
        if ms > MAX_DURATION_MS {
            return Err(("max_wait_ms", format!("{ms} is above one day ({MAX_DURATION_MS})")));
        }
    }
    if let Some(ms) = wrap_up_ms {
        if ms > MAX_SHORT_DURATION_MS {
            return Err(("wrap_up_ms", format!("{ms} is above one hour ({MAX_SHORT_DURATION_MS})")));
        }
    }
    if let Some(ms) = offer_timeout_ms {
        if ms == 0 || ms > MAX_SHORT_DURATION_MS {
            return Err(("offer_timeout_ms", format!("{ms} is not 1..={MAX_SHORT_DURATION_MS}")));
        }
    }
    Ok(())
}

impl EngineConfig {
    /// Checks names, references and ranges; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, problem: &str| ConfigError { key, problem: problem.to_owned() };
        if self.queues.is_empty() {
            return Err(bad("queues".into(), "at least one queue is required"));
        }
        if self.max_operators == 0 || self.max_operators > MAX_OPERATORS {
            return Err(bad("max_operators".into(), &format!("must be between 1 and {MAX_OPERATORS}")));
        }
        let mut names = std::collections::HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            if !valid_name(&g.name) {
                return Err(bad(format!("groups[{i}].name"), "must be 1 to 64 characters of [A-Za-z0-9_.-]"));
            }
            if !names.insert(g.name.as_str()) {
                return Err(bad(format!("groups[{i}].name"), &format!("duplicate group `{}`", g.name)));
            }
        }
        names.clear();
        for (i, q) in self.queues.iter().enumerate() {
            if !valid_name(&q.name) {
                return Err(bad(format!("queues[{i}].name"), "must be 1 to 64 characters of [A-Za-z0-9_.-]"));
            }
            if !names.insert(q.name.as_str()) {
                return Err(bad(format!("queues[{i}].name"), &format!("duplicate queue `{}`", q.name)));
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            let key = |k: &str| format!("queues[{i}].{k}");
            if q.priority > MAX_PRIORITY {
                return Err(bad(key("priority"), "must be 0..=100"));
            }
            if q.transfer_priority > MAX_PRIORITY {
                return Err(bad(key("transfer_priority"), "must be 0..=100"));
            }
            if !(0.0..=1.0).contains(&q.service_level_target) || q.service_level_target.is_nan() {
                return Err(bad(key("service_level_target"), "must be between 0 and 1"));
            }
            if q.service_level_threshold_ms == 0 {
                return Err(bad(key("service_level_threshold_ms"), "must be positive"));
            }
            check_queue_bounds(Some(q.max_length), Some(q.max_wait_ms), Some(q.wrap_up_ms), Some(q.offer_timeout_ms))
                .map_err(|(field, problem)| bad(key(field), &problem))?;
            if q.default_aht_ms == 0 {
                return Err(bad(key("default_aht_ms"), "must be positive"));
            }
            check_skills(&q.skills).map_err(|(field, problem)| bad(key(&field), problem))?;
            check_expansion(&q.expansion).map_err(|(field, problem)| bad(key(&field), problem))?;
            for (j, o) in q.overflow.iter().enumerate() {
                if o == &q.name {
                    return Err(bad(key(&format!("overflow[{j}]")), "a queue cannot overflow to itself"));
                }
                if !self.queues.iter().any(|x| &x.name == o) {
                    return Err(bad(key(&format!("overflow[{j}]")), &format!("unknown queue `{o}`")));
                }
            }
            if let Some(b) = &q.budget {
                if !valid_name(b) {
                    return Err(bad(key("budget"), "must be 1 to 64 characters of [A-Za-z0-9_.-]"));
                }
            }
            if let Some(h) = &q.hours {
                Hours::parse(h).map_err(|e| bad(key("hours"), &e))?;
            }
            if q.resume_window_ms > MAX_RESUME_WINDOW_MS {
                return Err(bad(key("resume_window_ms"), "at most one hour (3600000)"));
            }
            if q.callback_retry_ms.len() > MAX_CALLBACK_RETRIES {
                return Err(bad(key("callback_retry_ms"), "at most 10 retries"));
            }
            if let Some(j) = q.callback_retry_ms.iter().position(|&d| d == 0 || d > MAX_DURATION_MS) {
                return Err(bad(key(&format!("callback_retry_ms[{j}]")), "must be 1 ms to one day"));
            }
            if let Some(a) = &q.appointments {
                if !(60_000..=MAX_DURATION_MS).contains(&a.slot_ms) {
                    return Err(bad(key("appointments.slot_ms"), "must be one minute to one day"));
                }
                if a.guard_ms > MAX_DURATION_MS {
                    return Err(bad(key("appointments.guard_ms"), "at most one day"));
                }
                if a.grace_ms > MAX_DURATION_MS {
                    return Err(bad(key("appointments.grace_ms"), "at most one day"));
                }
            }
            for (j, r) in q.segments.iter().enumerate() {
                let key = |k: &str| key(&format!("segments[{j}].{k}"));
                if r.segment == Segment::General {
                    return Err(bad(key("segment"), "general contacts follow the queue's own settings"));
                }
                if q.segments[..j].iter().any(|o| o.segment == r.segment) {
                    return Err(bad(key("segment"), &format!("`{}` has two rules", r.segment.as_str())));
                }
                if r.priority_boost > MAX_PRIORITY {
                    return Err(bad(key("priority_boost"), "must be 0..=100"));
                }
                if r.service_level_threshold_ms == Some(0) {
                    return Err(bad(key("service_level_threshold_ms"), "must be positive"));
                }
                if r.service_level_target.is_some_and(|t| !(0.0..=1.0).contains(&t) || t.is_nan()) {
                    return Err(bad(key("service_level_target"), "must be between 0 and 1"));
                }
                if let Some(to) = &r.route_to {
                    if to == &q.name || !self.queues.iter().any(|x| &x.name == to) {
                        return Err(bad(key("route_to"), &format!("`{to}` is not another configured queue")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Names of queues, groups, skills and budgets: 1 to 64 characters of `[A-Za-z0-9_.-]`.
#[must_use]
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}
