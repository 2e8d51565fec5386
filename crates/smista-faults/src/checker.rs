//! The checker: the history of a run against what the ledger holds after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{Kind, Op};

/// A row of `cost_records`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostRow {
    /// The contact.
    pub contact_id: String,
    /// Its budget.
    pub budget_id: String,
    /// The budget period.
    pub period: String,
    /// Who handled it.
    pub operator_id: String,
    /// When it was accepted (the life's key).
    pub accepted_unix_ms: i64,
    /// What it cost.
    pub cost_cents: i64,
    /// How it ended (`completed`, `cancelled_in_service`).
    pub outcome: String,
    /// Its arrival (0: unknown, or no detail record folded in).
    pub arrived_unix_ms: i64,
    /// Its detail record is folded in (first queue or arrival known).
    pub has_detail: bool,
}

/// A row of `contact_ends`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndRow {
    /// The contact.
    pub contact_id: String,
    /// How it ended.
    pub outcome: String,
    /// Its arrival.
    pub arrived_unix_ms: i64,
    /// Who handled it (empty if nobody).
    pub operator_id: String,
}

/// A row of `holds` (a budget's hold, or a service record with an empty budget).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldRow {
    /// The contact.
    pub contact_id: String,
    /// Its budget (empty: a service record).
    pub budget_id: String,
    /// Who has it.
    pub operator_id: String,
}

/// What the ledger holds after the run.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Every cost record.
    pub costs: Vec<CostRow>,
    /// Every end record.
    pub ends: Vec<EndRow>,
    /// Every hold and service record left.
    pub holds: Vec<HoldRow>,
}

/// Reads the ledger in `schema` directly.
///
/// # Errors
/// PostgreSQL cannot be reached or the tables are not there.
pub async fn read_ledger(url: &str, schema: &str) -> Result<Ledger, sqlx::Error> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await?;
    use sqlx::Row;
    let rows = sqlx::query(&format!(
        "SELECT contact_id, budget_id, period, operator_id, accepted_unix_ms, cost_cents, outcome, arrived_unix_ms,
                (first_queue <> '' OR arrived_unix_ms > 0 OR received_unix_ms > 0) AS has_detail
           FROM {schema}.cost_records"
    ))
    .fetch_all(&pool)
    .await?;
    let costs = rows
        .iter()
        .map(|r| {
            Ok(CostRow {
                contact_id: r.try_get("contact_id")?,
                budget_id: r.try_get("budget_id")?,
                period: r.try_get("period")?,
                operator_id: r.try_get("operator_id")?,
                accepted_unix_ms: r.try_get("accepted_unix_ms")?,
                cost_cents: r.try_get("cost_cents")?,
                outcome: r.try_get("outcome")?,
                arrived_unix_ms: r.try_get("arrived_unix_ms")?,
                has_detail: r.try_get("has_detail")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let ends: Vec<(String, String, i64, String)> =
        sqlx::query_as(&format!("SELECT contact_id, outcome, arrived_unix_ms, operator_id FROM {schema}.contact_ends"))
            .fetch_all(&pool)
            .await?;
    let holds: Vec<(String, String, String)> =
        sqlx::query_as(&format!("SELECT contact_id, budget_id, operator_id FROM {schema}.holds"))
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    Ok(Ledger {
        costs,
        ends: ends
            .into_iter()
            .map(|(contact_id, outcome, arrived_unix_ms, operator_id)| EndRow {
                contact_id,
                outcome,
                arrived_unix_ms,
                operator_id,
            })
            .collect(),
        holds: holds
            .into_iter()
            .map(|(contact_id, budget_id, operator_id)| HoldRow { contact_id, budget_id, operator_id })
            .collect(),
    })
}

/// What the checker needs besides the history and the ledger.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Every budget's ceiling for its period (one budget, one period in a run).
    pub ceiling_cents: i64,
    /// A node's reads may time out for this long after the fault healed (ms).
    pub frozen_grace_ms: u64,
    /// Time-outs of a live node's reads after the grace that make it frozen.
    pub frozen_reads: usize,
    /// The failover time counts an acceptance on the victim too (a single node restarted).
    pub same_node_ok: bool,
}

/// The verdict of one run: each violation with its evidence.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Contacts offered.
    pub offers: usize,
    /// CompleteContact acknowledged (OK).
    pub completions_acked: usize,
    /// Acknowledged completions without their completed end record.
    pub lost: Vec<String>,
    /// Contacts accepted by (or in service with) two operators.
    pub double_accept: Vec<String>,
    /// Contacts with more than one cost record.
    pub double_charge: Vec<String>,
    /// Budget periods whose recorded total passes the ceiling.
    pub over_ceiling: Vec<String>,
    /// Contacts ended more than once.
    pub unended: Vec<String>,
    /// Contacts the server said ended (diverted, ALREADY_EXISTS) without an end record.
    pub ends_unrecorded: Vec<String>,
    /// End records without an arrival time.
    pub arrival_zero: Vec<String>,
    /// Live nodes whose reads timed out after the fault healed.
    pub frozen: Vec<String>,
    /// Fault injected → first acceptance on another node (ms).
    pub failover_ms: Option<u64>,
    /// Contacts left open at the end, by reason (not violations).
    pub open: BTreeMap<String, usize>,
    /// Diversions acknowledged (EXTRA_BUDGET among them).
    pub diverted: BTreeMap<String, usize>,
    /// Observations that are not violations.
    pub notes: Vec<String>,
}

impl Verdict {
    /// No violation.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.violations() == 0
    }

    /// The number of violations.
    #[must_use]
    pub fn violations(&self) -> usize {
        self.lost.len()
            + self.double_accept.len()
            + self.double_charge.len()
            + self.over_ceiling.len()
            + self.unended.len()
            + self.ends_unrecorded.len()
            + self.arrival_zero.len()
            + self.frozen.len()
    }

    /// The markdown table's header.
    #[must_use]
    pub fn header() -> &'static str {
        "| fault | run | offers | completions acked | lost | double accept | double charge | over ceiling | unended | frozen | failover ms | ends unrecorded | arrival 0 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// The markdown table's row for this run.
    #[must_use]
    pub fn row(&self, fault: &str, run: usize) -> String {
        format!(
            "| {fault} | {run} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.offers,
            self.completions_acked,
            self.lost.len(),
            self.double_accept.len(),
            self.double_charge.len(),
            self.over_ceiling.len(),
            self.unended.len(),
            self.frozen.len(),
            self.failover_ms.map_or("-".to_owned(), |m| m.to_string()),
            self.ends_unrecorded.len(),
            self.arrival_zero.len(),
        )
    }

    /// One line: OK or the violations, each with its first examples.
    #[must_use]
    pub fn line(&self, fault: &str, run: usize) -> String {
        if self.ok() {
            return format!(
                "{fault} run {run}: OK ({} offers, {} completions acked, diverted {:?}, open {:?}, failover {} ms)",
                self.offers,
                self.completions_acked,
                self.diverted,
                self.open,
                self.failover_ms.map_or("-".to_owned(), |m| m.to_string())
            );
        }
        let mut parts = Vec::new();
        for (name, v) in [
            ("lost completion", &self.lost),
            ("double accept", &self.double_accept),
            ("double charge", &self.double_charge),
            ("over ceiling", &self.over_ceiling),
            ("ended twice", &self.unended),
            ("end unrecorded", &self.ends_unrecorded),
            ("arrival 0", &self.arrival_zero),
            ("frozen", &self.frozen),
        ] {
            if !v.is_empty() {
                let ex: Vec<&str> = v.iter().take(3).map(String::as_str).collect();
                parts.push(format!("{} {name} (e.g. {})", v.len(), ex.join("; ")));
            }
        }
        format!("{fault} run {run}: VIOLATION {}", parts.join(", "))
    }
}

/// Checks a run's history against its ledger.
#[must_use]
pub fn check(history: &[Op], ledger: &Ledger, p: &Params) -> Verdict {
    let mut v = Verdict::default();
    let calls = || history.iter().filter(|o| o.kind == Kind::Call);

    let mut costs: HashMap<&str, Vec<&CostRow>> = HashMap::new();
    for c in &ledger.costs {
        costs.entry(&c.contact_id).or_default().push(c);
    }
    let mut ends: HashMap<&str, Vec<&EndRow>> = HashMap::new();
    for e in &ledger.ends {
        ends.entry(&e.contact_id).or_default().push(e);
    }
    let holds: HashMap<&str, &HoldRow> = ledger.holds.iter().map(|h| (h.contact_id.as_str(), h)).collect();
    // End records of a contact: its contact_ends rows and its cost records carrying their detail
    // (a cost record alone, without any detail anywhere, stands for its end).
    let end_count = |c: &str| -> usize {
        let e = ends.get(c).map_or(0, Vec::len);
        let detailed = costs.get(c).map_or(0, |v| v.iter().filter(|r| r.has_detail).count());
        if e + detailed == 0 {
            costs.get(c).map_or(0, Vec::len)
        } else {
            e + detailed
        }
    };
    let completed_count = |c: &str| -> usize {
        match costs.get(c) {
            Some(rows) => rows.iter().filter(|r| r.outcome == "completed").count(),
            None => ends.get(c).map_or(0, |e| e.iter().filter(|r| r.outcome == "completed").count()),
        }
    };

    // Offers and what the platform was told.
    let mut offered: BTreeSet<&str> = BTreeSet::new();
    let mut told_ended: BTreeMap<&str, &Op> = BTreeMap::new();
    let mut answered: BTreeSet<&str> = BTreeSet::new();
    for o in calls().filter(|o| o.is("OfferContact")) {
        offered.insert(&o.contact);
        if o.ok() {
            answered.insert(&o.contact);
            if o.decision == "diverted" {
                *v.diverted.entry(o.detail.clone()).or_default() += 1;
                told_ended.entry(&o.contact).or_insert(o);
            }
        } else if o.status == "ALREADY_EXISTS" {
            told_ended.entry(&o.contact).or_insert(o);
        }
    }
    v.offers = offered.len();

    // Acknowledged completions.
    let mut completed: BTreeMap<&str, &Op> = BTreeMap::new();
    for o in calls().filter(|o| o.is("CompleteContact") && o.ok()) {
        completed.entry(&o.contact).or_insert(o);
    }
    v.completions_acked = completed.len();
    for (c, o) in &completed {
        if completed_count(c) == 0 {
            v.lost.push(format!(
                "{c} completed by {} on node-{} at {} (OK), ledger: {} cost records, end records {:?}",
                o.operator,
                o.node,
                o.end_ms,
                costs.get(c).map_or(0, Vec::len),
                ends.get(c).map(|e| e.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>()).unwrap_or_default()
            ));
        }
    }

    // One operator per contact: acceptances acknowledged, logins listing it in service, and
    // the ledger's records and holds.
    let mut operators: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in calls().filter(|o| o.ok()) {
        if o.rpc == "AcceptOffer" {
            operators.entry(&o.contact).or_default().insert(&o.operator);
        } else if o.rpc == "Login" {
            for c in &o.in_service {
                operators.entry(c).or_default().insert(&o.operator);
            }
        }
    }
    for c in &ledger.costs {
        operators.entry(&c.contact_id).or_default().insert(&c.operator_id);
    }
    for h in &ledger.holds {
        operators.entry(&h.contact_id).or_default().insert(&h.operator_id);
    }
    for e in &ledger.ends {
        if !e.operator_id.is_empty() {
            operators.entry(&e.contact_id).or_default().insert(&e.operator_id);
        }
    }
    for (c, ops) in &operators {
        if ops.len() > 1 {
            v.double_accept.push(format!("{c} with {ops:?}"));
        }
    }

    // Charged once per life (ids are unique per run: one life each).
    for (c, rows) in &costs {
        if rows.len() > 1 {
            let lives: Vec<String> =
                rows.iter().map(|r| format!("{}@{} {}c", r.operator_id, r.accepted_unix_ms, r.cost_cents)).collect();
            v.double_charge.push(format!("{c}: {}", lives.join(", ")));
        }
    }
    let mut v_double: Vec<String> = std::mem::take(&mut v.double_charge);
    v_double.sort();
    v.double_charge = v_double;

    // The ceiling.
    let mut totals: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for c in &ledger.costs {
        *totals.entry((&c.budget_id, &c.period)).or_default() += c.cost_cents;
    }
    for ((b, per), t) in totals {
        if t > p.ceiling_cents {
            v.over_ceiling.push(format!("{b}/{per}: {t} > {}", p.ceiling_cents));
        }
    }

    // Every contact ends at most once; those told ended have their record; the rest are open
    // for a reason.
    let mut all: BTreeSet<&str> = offered.clone();
    all.extend(ledger.ends.iter().map(|e| e.contact_id.as_str()));
    all.extend(ledger.costs.iter().map(|e| e.contact_id.as_str()));
    for c in all {
        let n = end_count(c);
        if n > 1 {
            let outs: Vec<&str> = ends
                .get(c)
                .into_iter()
                .flatten()
                .map(|e| e.outcome.as_str())
                .chain(costs.get(c).into_iter().flatten().filter(|r| r.has_detail).map(|r| r.outcome.as_str()))
                .collect();
            v.unended.push(format!("{c} ended {n} times {outs:?}"));
        } else if n == 0 {
            if let Some(o) = told_ended.get(c) {
                v.ends_unrecorded.push(format!(
                    "{c}: {} {} {} on node-{} at {}, no end record",
                    o.rpc, o.status, o.detail, o.node, o.end_ms
                ));
            } else if !completed.contains_key(c) {
                let reason = if holds.contains_key(c) {
                    "in service (hold)"
                } else if operators.contains_key(c) {
                    "in service (accepted)"
                } else if answered.contains(c) {
                    "waiting at the end"
                } else {
                    "never answered definitively"
                };
                *v.open.entry(reason.to_owned()).or_default() += 1;
            }
        } else if let Some(o) = told_ended.get(c) {
            if o.decision == "diverted" {
                let diverted = ends.get(c).is_some_and(|e| e.iter().any(|r| r.outcome == "diverted"));
                if !diverted {
                    v.ends_unrecorded.push(format!("{c}: diverted {} but its end record says otherwise", o.detail));
                }
            }
        }
    }

    // Arrival on every end record (a cost record counts when it is the contact's only end).
    for e in &ledger.ends {
        if e.arrived_unix_ms == 0 {
            v.arrival_zero.push(format!("{} contact_ends {} arrived 0", e.contact_id, e.outcome));
        }
    }
    for c in &ledger.costs {
        if c.arrived_unix_ms == 0 && !ends.contains_key(c.contact_id.as_str()) {
            v.arrival_zero.push(format!("{} cost record {} arrived 0", c.contact_id, c.outcome));
        }
    }

    // Frozen nodes: a live node's reads timing out after the fault healed (plus grace).
    let healed = history.iter().filter(|o| o.kind == Kind::Heal).map(|o| o.end_ms).max();
    let run_start = history.iter().map(|o| o.start_ms).filter(|t| *t > 0).min().unwrap_or(0);
    let from = healed.unwrap_or(run_start) + p.frozen_grace_ms;
    let mut stuck: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for o in calls().filter(|o| o.is("GetSnapshot") && o.status == "DEADLINE_EXCEEDED" && o.alive && o.start_ms >= from)
    {
        stuck.entry(o.node).or_default().push(o);
    }
    for (n, reads) in stuck {
        if reads.len() >= p.frozen_reads.max(1) {
            let first = reads.first().map_or(0, |o| o.start_ms);
            let last = reads.last().map_or(0, |o| o.end_ms);
            v.frozen.push(format!(
                "node-{n}: {} reads timed out from {first} to {last} ({} ms after the heal)",
                reads.len(),
                first.saturating_sub(healed.unwrap_or(run_start))
            ));
        }
    }

    // Failover time: the fault → the first acceptance on another node.
    if let Some(f) = history.iter().find(|o| o.kind == Kind::Fault) {
        v.failover_ms = calls()
            .filter(|o| {
                o.is("AcceptOffer") && o.ok() && o.start_ms >= f.start_ms && (p.same_node_ok || o.node != f.node)
            })
            .map(|o| o.end_ms.saturating_sub(f.start_ms))
            .min();
        if v.failover_ms.is_none() {
            v.notes.push("no acceptance after the fault".into());
        }
    }
    let refused = calls().filter(|o| o.is("CompleteContact") && o.status == "FAILED_PRECONDITION").count();
    if refused > 0 {
        v.notes.push(format!("{refused} completions refused FAILED_PRECONDITION after an accepted offer"));
    }
    v.lost.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(rpc: &str, contact: &str, operator: &str, node: usize, t: u64, status: &str) -> Op {
        Op {
            kind: Kind::Call,
            client: "test".into(),
            node,
            rpc: rpc.into(),
            contact: contact.into(),
            operator: operator.into(),
            start_ms: t,
            end_ms: t + 5,
            status: status.into(),
            alive: true,
            ..Op::default()
        }
    }

    fn offer(contact: &str, t: u64, decision: &str) -> Op {
        Op { decision: decision.into(), arrived_unix_ms: t, ..call("OfferContact", contact, "", 0, t, "OK") }
    }

    fn cost(contact: &str, operator: &str, accepted: i64) -> CostRow {
        CostRow {
            contact_id: contact.into(),
            budget_id: "contract".into(),
            period: "p".into(),
            operator_id: operator.into(),
            accepted_unix_ms: accepted,
            cost_cents: 460,
            outcome: "completed".into(),
            arrived_unix_ms: 1,
            has_detail: true,
        }
    }

    fn params() -> Params {
        Params { ceiling_cents: 460 * 10, frozen_grace_ms: 5_000, frozen_reads: 3, same_node_ok: false }
    }

    /// A clean history: c1 budgeted, accepted and completed, c2 internal, c3 diverted.
    fn clean() -> (Vec<Op>, Ledger) {
        let h = vec![
            offer("c1", 100, "assigned"),
            call("AcceptOffer", "c1", "op1", 0, 110, "OK"),
            call("CompleteContact", "c1", "op1", 0, 200, "OK"),
            offer("c2", 120, "queued"),
            call("AcceptOffer", "c2", "op2", 0, 130, "OK"),
            call("CompleteContact", "c2", "op2", 0, 210, "OK"),
            Op { detail: "DIVERT_REASON_EXTRA_BUDGET".into(), ..offer("c3", 150, "diverted") },
        ];
        let l = Ledger {
            costs: vec![cost("c1", "op1", 110)],
            ends: vec![
                EndRow {
                    contact_id: "c2".into(),
                    outcome: "completed".into(),
                    arrived_unix_ms: 120,
                    operator_id: "op2".into(),
                },
                EndRow {
                    contact_id: "c3".into(),
                    outcome: "diverted".into(),
                    arrived_unix_ms: 150,
                    operator_id: String::new(),
                },
            ],
            holds: vec![],
        };
        (h, l)
    }

    #[test]
    fn a_clean_run_passes() {
        let (h, l) = clean();
        let v = check(&h, &l, &params());
        assert!(v.ok(), "{}", v.line("test", 0));
        assert_eq!((v.offers, v.completions_acked), (3, 2));
        assert_eq!(v.diverted.get("DIVERT_REASON_EXTRA_BUDGET"), Some(&1));
    }

    #[test]
    fn a_lost_completion_is_caught() {
        let (h, mut l) = clean();
        l.ends.retain(|e| e.contact_id != "c2");
        let v = check(&h, &l, &params());
        assert_eq!(v.lost.len(), 1, "{v:?}");
        assert!(v.lost[0].starts_with("c2 "));
        assert!(!v.ok());
        // A budgeted one whose cost record is missing too.
        let (h, mut l) = clean();
        l.costs.clear();
        let v = check(&h, &l, &params());
        assert_eq!(v.lost.len(), 1);
        assert!(v.lost[0].starts_with("c1 "));
    }

    #[test]
    fn a_double_accept_is_caught() {
        let (mut h, l) = clean();
        h.push(call("AcceptOffer", "c1", "op7", 1, 300, "OK"));
        let v = check(&h, &l, &params());
        assert_eq!(v.double_accept.len(), 1, "{v:?}");
        // Or seen only in a login's in_service list.
        let (mut h, l) = clean();
        h.push(Op { in_service: vec!["c2".into()], ..call("Login", "", "op9", 1, 300, "OK") });
        assert_eq!(check(&h, &l, &params()).double_accept.len(), 1);
    }

    #[test]
    fn a_double_charge_is_caught() {
        let (h, mut l) = clean();
        l.costs.push(CostRow { has_detail: false, arrived_unix_ms: 0, ..cost("c1", "op1", 400) });
        let v = check(&h, &l, &params());
        assert_eq!(v.double_charge.len(), 1, "{v:?}");
        assert!(!v.ok());
    }

    #[test]
    fn over_the_ceiling_is_caught() {
        let (h, mut l) = clean();
        for i in 0..10 {
            l.costs.push(cost(&format!("x{i}"), "op1", i));
        }
        let v = check(&h, &l, &params());
        assert_eq!(v.over_ceiling.len(), 1, "{v:?}");
    }

    #[test]
    fn ended_twice_unrecorded_diversion_and_zero_arrival_are_caught() {
        let (h, mut l) = clean();
        l.ends.push(EndRow {
            contact_id: "c2".into(),
            outcome: "abandoned".into(),
            arrived_unix_ms: 120,
            ..EndRow::default()
        });
        assert_eq!(check(&h, &l, &params()).unended.len(), 1);
        let (h, mut l) = clean();
        l.ends.retain(|e| e.contact_id != "c3");
        assert_eq!(check(&h, &l, &params()).ends_unrecorded.len(), 1);
        let (h, mut l) = clean();
        l.ends[0].arrived_unix_ms = 0;
        assert_eq!(check(&h, &l, &params()).arrival_zero.len(), 1);
    }

    #[test]
    fn open_contacts_with_a_reason_are_not_violations() {
        let (mut h, l) = clean();
        h.push(offer("c4", 400, "queued"));
        h.push(call("OfferContact", "c5", "", 0, 410, "DEADLINE_EXCEEDED"));
        let v = check(&h, &l, &params());
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.open.get("waiting at the end"), Some(&1));
        assert_eq!(v.open.get("never answered definitively"), Some(&1));
    }

    #[test]
    fn a_frozen_node_and_the_failover_time() {
        let (mut h, l) = clean();
        h.push(Op { kind: Kind::Fault, node: 0, rpc: "kill9".into(), start_ms: 1_000, end_ms: 1_000, ..Op::default() });
        h.push(Op { kind: Kind::Heal, node: 0, rpc: "kill9".into(), start_ms: 4_000, end_ms: 4_000, ..Op::default() });
        h.push(call("AcceptOffer", "c9", "op1", 1, 2_400, "OK"));
        for t in [9_500, 10_600, 11_700] {
            h.push(call("GetSnapshot", "", "", 2, t, "DEADLINE_EXCEEDED"));
        }
        // Before the grace, or of a dead node: not frozen.
        h.push(call("GetSnapshot", "", "", 1, 5_000, "DEADLINE_EXCEEDED"));
        h.push(Op { alive: false, ..call("GetSnapshot", "", "", 1, 12_000, "DEADLINE_EXCEEDED") });
        let v = check(&h, &l, &params());
        assert_eq!(v.frozen.len(), 1, "{v:?}");
        assert!(v.frozen[0].starts_with("node-2"));
        assert_eq!(v.failover_ms, Some(1_405));
    }
}
