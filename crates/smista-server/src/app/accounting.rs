//! Operator accounting, server side: every operator's [`Desk`] followed from what each engine
//! call reports (in `Shared::publish`, outside the engine's critical sections), each change of
//! activity and each handled, declined or timed-out offer handed to the ledger's group commit
//! as a [`Change`]; the pause reason codes desks may use, and the codes of the server's own
//! pauses.
//!
//! Operator ids appear here and in the ledger only: never in metrics, and in logs at debug
//! level at most (see docs/privacy.md).

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use smista_core::accounting::{Change, Desk, Fact};
use smista_core::snapshot::OperatorSnapshot;
use smista_core::{Event, OperatorStatus};
use smista_proto::v1 as pb;
use tonic::Status;

use crate::app::Shared;
use crate::config::pause::{PauseReason, NO_ANSWER, RECOVERING, ROSTER_CHANGE};

/// The desks and the reason codes.
#[derive(Debug)]
pub struct Accounting {
    /// Each operator's desk, and the time of its last change.
    desks: DashMap<Arc<str>, (Desk, i64)>,
    /// Every reason a report may show: the desks' (configured or built in), then the server's.
    pub reasons: Vec<PauseReason>,
    /// Code -> label.
    labels: HashMap<String, String>,
    /// How many of `reasons` desks may use (the first ones).
    desk_reasons: usize,
    /// Principal -> when its last reading of the live per-operator view was audited (Unix ms),
    /// and the operators the records of that quarter hour named.
    live_reads: DashMap<Arc<str>, (i64, std::collections::HashSet<String>)>,
}

impl Accounting {
    /// Accounting with the pause reasons `desk` (the configured ones, or the built-in set).
    #[must_use]
    pub fn new(desk: Vec<PauseReason>) -> Self {
        let desk_reasons = desk.len();
        let mut reasons = desk;
        reasons.extend(crate::config::pause::system());
        let labels = reasons.iter().map(|r| (r.code.clone(), r.label.clone())).collect();
        Accounting { desks: DashMap::new(), reasons, labels, desk_reasons, live_reads: DashMap::new() }
    }

    /// The reason code a desk's `SetState` names: one of the desks' codes, or the first of them
    /// for an empty one; INVALID_ARGUMENT for any other.
    pub fn desk_code(&self, requested: &str) -> Result<String, Status> {
        let desk = &self.reasons[..self.desk_reasons];
        if requested.is_empty() {
            return desk.first().map(|r| r.code.clone()).ok_or_else(|| Status::internal("no pause reason configured"));
        }
        if desk.iter().any(|r| r.code == requested) {
            return Ok(requested.to_owned());
        }
        let known: Vec<&str> = desk.iter().map(|r| r.code.as_str()).collect();
        Err(Status::invalid_argument(format!(
            "unknown pause reason code `{}` (known: {})",
            smista_core::error::clip(requested),
            known.join(", ")
        )))
    }

    /// The code a pause reason as the engine holds it is accounted under: a desk's code is its
    /// own; the engine's "no answer", the recovery pause at login and the roster's pause have
    /// the server's codes.
    #[must_use]
    pub fn code_of(&self, reason: &str) -> String {
        if reason == smista_core::model::NO_ANSWER {
            NO_ANSWER.to_owned()
        } else if reason == crate::app::RECOVERY_PAUSE {
            RECOVERING.to_owned()
        } else if reason == crate::app::roster::ROSTER_PAUSE {
            ROSTER_CHANGE.to_owned()
        } else {
            reason.to_owned()
        }
    }

    /// The label of a pause reason as the engine holds it ("" if it has none).
    #[must_use]
    pub fn label(&self, reason: &str) -> &str {
        self.labels.get(&self.code_of(reason)).map_or("", String::as_str)
    }

    /// How many operators have been followed since start-up.
    #[must_use]
    pub fn desks(&self) -> usize {
        self.desks.len()
    }

    /// Follows what an engine call reported at `unix_ms`: the changes to record. Two engine
    /// calls about one operator may publish in the other order than they ran (each publishes
    /// after its own call): a change is never dated before the operator's previous one, so the
    /// record keeps the order in which the desk changed.
    pub fn apply(&self, events: &[Event], unix_ms: i64) -> Vec<Change> {
        let mut out = Vec::new();
        for e in events {
            let Some(op) = Desk::operator_of(e) else { continue };
            out.extend(self.with_desk(op, unix_ms, |desk, facts| desk.apply(e, &|r| self.code_of(r), facts)));
        }
        out
    }

    /// Changes `operator`'s desk (`f` pushes the facts it implies) and dates them at `unix_ms`,
    /// never before the operator's previous change. [`Accounting::apply`] for engine events;
    /// also by hand for what the engine does not report (contacts carried over a restart).
    pub fn with_desk(&self, operator: &str, unix_ms: i64, f: impl FnOnce(&mut Desk, &mut Vec<Fact>)) -> Vec<Change> {
        let mut facts = Vec::new();
        let mut entry = self.desks.entry(Arc::from(operator)).or_default();
        let (desk, last) = &mut *entry;
        f(desk, &mut facts);
        if facts.is_empty() {
            return Vec::new();
        }
        *last = (*last).max(unix_ms);
        let at = *last;
        facts
            .into_iter()
            .map(|fact| Change { operator: operator.to_owned(), group: desk.group.clone(), at_unix_ms: at, fact })
            .collect()
    }
}

/// How often one principal's reading of the live per-operator view is recorded in the privacy
/// audit (a wallboard reads every few seconds: one record per principal per quarter hour).
const LIVE_AUDIT_EVERY_MS: i64 = 15 * 60_000;

/// Logged-in operators per group and status: the snapshot's aggregate view.
#[must_use]
pub fn group_staffing(s: &Shared, operators: &[OperatorSnapshot]) -> Vec<pb::GroupStaffing> {
    let mut by_group: std::collections::BTreeMap<&str, pb::GroupStaffing> = std::collections::BTreeMap::new();
    for o in operators.iter().filter(|o| o.status != OperatorStatus::LoggedOut) {
        let g = by_group.entry(&o.group).or_insert_with(|| pb::GroupStaffing {
            group: o.group.clone(),
            supplier: s.history.supplier_of(&o.group),
            ..Default::default()
        });
        g.logged_in += 1;
        match o.status {
            OperatorStatus::Available if o.active_contacts == 0 => g.available += 1,
            OperatorStatus::Available => {}
            OperatorStatus::WrapUp => g.wrap_up += 1,
            OperatorStatus::Paused => g.paused += 1,
            OperatorStatus::LoggedOut => {}
        }
        g.with_contacts += u32::from(o.active_contacts > 0);
    }
    by_group.into_values().collect()
}

/// Whether the snapshot answering `request` may name operators: only where `[privacy]
/// live_operator_view` allows it, and once the principal's reading is in the privacy audit
/// (recorded before the answer: a record per quarter hour naming every operator shown, and one
/// more whenever a reading names an operator the quarter hour's records do not; UNAVAILABLE if
/// it cannot be). Without a ledger nothing can be audited: no names.
pub async fn live_view<T>(
    s: &Shared,
    request: &tonic::Request<T>,
    operators: &[OperatorSnapshot],
) -> Result<bool, Status> {
    let Some(ledger) = s.ledger.as_ref().filter(|_| s.privacy.live_operator_view) else { return Ok(false) };
    let principal = s.principal(request)?;
    let now = i64::try_from(s.clock.unix_ms(s.clock.now())).unwrap_or(i64::MAX);
    // Who this reading names that the principal's records of this quarter hour do not: all of
    // them once the quarter hour is over (the map's guard is dropped before any await).
    let unrecorded: Vec<String> = match s.accounting.live_reads.get(&*principal.name) {
        Some(r) if now - r.0 < LIVE_AUDIT_EVERY_MS => {
            operators.iter().filter(|o| !r.1.contains(&o.id)).map(|o| o.id.clone()).collect()
        }
        _ => operators.iter().map(|o| o.id.clone()).collect(),
    };
    if !unrecorded.is_empty() {
        let record = smista_ledger::ReportRead {
            at_unix_ms: now,
            actor: principal.name.to_string(),
            operators: unrecorded,
            from_unix_ms: now,
            to_unix_ms: now,
            purpose: LIVE_PURPOSE.to_owned(),
            node: String::new(),
        };
        ledger.record_report_read(&record).await.map_err(crate::wire::error::ledger_status)?;
        tracing::info!(actor = %principal.name, operators = record.operators.len(), "live operator view read (audited)");
        let mut entry =
            s.accounting.live_reads.entry(principal.name.clone()).or_insert_with(|| (now, Default::default()));
        if now - entry.0 >= LIVE_AUDIT_EVERY_MS {
            *entry = (now, Default::default());
        }
        entry.1.extend(record.operators);
    }
    Ok(true)
}

/// The purpose the privacy audit gives a reading of the live view.
pub const LIVE_PURPOSE: &str = "live operator view (GetSnapshot)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desks_may_use_only_their_codes_and_an_empty_one_is_the_first() {
        let a = Accounting::new(crate::config::pause::builtin());
        assert_eq!(a.desk_code("").expect("default"), "break");
        assert_eq!(a.desk_code("training").expect("known"), "training");
        assert_eq!(a.desk_code("coffee").unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(a.desk_code(NO_ANSWER).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(a.code_of(smista_core::model::NO_ANSWER), NO_ANSWER);
        assert_eq!(a.label("training"), "Training");
        assert_eq!(a.label(crate::app::RECOVERY_PAUSE), "Contact in service from before a restart");
    }
}
