//! Per-operator accounting: what each operator was doing while logged in, as a partition of
//! their logged-in time, and what came of the offers made to them; folded per interval of the
//! centre's wall clock, per operator and per operator group.
//!
//! **Activities.** At every instant a logged-in operator does exactly one [`Activity`], by
//! precedence: *on contacts* of a channel while a contact is in service (also when a pause was
//! asked for during it, which starts when the contact ends; an operator holds contacts of one
//! channel at a time, since voice, video and callbacks are exclusive: should several ever be in
//! hand, the first in [`Channel::ALL`] order counts), else *wrap-up*, else *paused* with the
//! pause's reason code, else *available* (offers ringing included). So in every row of a report
//! `available + on contacts (every channel) + wrap-up + paused (every reason) = logged in`.
//!
//! **Facts.** A [`Desk`] follows the engine's events about one operator and reports a
//! [`Fact`] for each change of activity and for each handled (completed), declined or timed-out
//! offer: the server writes them to the ledger as they happen ([`Change`]), and a report folds
//! them ([`Fold`]). A fact is counted in the interval in which it happened; handle times belong
//! to the interval of the completion.
//!
//! **Intervals** follow the wall clock of a [`Zone`], exactly as the contact interval reports
//! ([`crate::report::interval_start`]): 46 half hours on the day the clocks go forward, 50 on the
//! day they go back.
//!
//! **Writers that stop.** A server that crashes records no logout. Each fact read back comes with
//! the last instant its writer (the node's life that recorded it) was known to run, and a state
//! never lasts beyond it: an operator of a node that died is logged out from its last sign of
//! life.

use std::collections::BTreeMap;

use crate::event::Event;
use crate::model::{Channel, OperatorStatus, Outcome};
use crate::report::{interval_start, Zone};

/// What a logged-in operator is doing (see the module docs for the precedence).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Activity {
    /// Not logged in: no time is counted.
    LoggedOut,
    /// Ready for offers, or with an offer ringing.
    Available,
    /// With a contact of this channel in service.
    OnContact(Channel),
    /// After-call work.
    WrapUp,
    /// Paused, with the reason's code.
    Paused(String),
}

/// One fact of an operator's accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    /// From now on the operator does this.
    State(Activity),
    /// Completed a contact of `channel` after `handle_ms` in service.
    Handled {
        /// The contact's channel.
        channel: Channel,
        /// Its handle time, ms.
        handle_ms: u64,
    },
    /// Declined an offer.
    Declined,
    /// Let an offer time out.
    TimedOut,
}

impl Fact {
    /// As stored: (kind, detail, value): the activity or count's kind, the channel or reason
    /// code it concerns (empty if none), and the handle time of a handled contact.
    #[must_use]
    pub fn encode(&self) -> (&'static str, &str, i64) {
        match self {
            Fact::State(Activity::LoggedOut) => ("logged_out", "", 0),
            Fact::State(Activity::Available) => ("available", "", 0),
            Fact::State(Activity::OnContact(c)) => ("on_contact", c.as_str(), 0),
            Fact::State(Activity::WrapUp) => ("wrap_up", "", 0),
            Fact::State(Activity::Paused(code)) => ("paused", code.as_str(), 0),
            Fact::Handled { channel, handle_ms } => {
                ("handled", channel.as_str(), i64::try_from(*handle_ms).unwrap_or(i64::MAX))
            }
            Fact::Declined => ("declined", "", 0),
            Fact::TimedOut => ("timed_out", "", 0),
        }
    }

    /// The fact [`encode`](Self::encode) gave (`None`: not one it gives).
    #[must_use]
    pub fn decode(kind: &str, detail: &str, value: i64) -> Option<Fact> {
        Some(match kind {
            "logged_out" => Fact::State(Activity::LoggedOut),
            "available" => Fact::State(Activity::Available),
            "on_contact" => Fact::State(Activity::OnContact(Channel::parse(detail)?)),
            "wrap_up" => Fact::State(Activity::WrapUp),
            "paused" => Fact::State(Activity::Paused(detail.to_owned())),
            "handled" => {
                Fact::Handled { channel: Channel::parse(detail)?, handle_ms: u64::try_from(value).unwrap_or(0) }
            }
            "declined" => Fact::Declined,
            "timed_out" => Fact::TimedOut,
            _ => return None,
        })
    }
}

/// One fact about one operator at one instant, as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The operator.
    pub operator: String,
    /// Their group at the time.
    pub group: String,
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// What.
    pub fact: Fact,
}

/// A [`Change`] read back, with the last instant its writer was known to run (`i64::MAX`: it
/// still runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The change.
    pub change: Change,
    /// Its writer's last sign of life, Unix ms.
    pub alive_until: i64,
}

/// One operator as the accounting follows them, from the engine's events.
#[derive(Clone, Debug)]
pub struct Desk {
    status: OperatorStatus,
    reason: String,
    in_service: [u32; 4],
    /// The group of the operator's last status event.
    pub group: String,
    reported: Activity,
}

impl Default for Desk {
    fn default() -> Self {
        Desk {
            status: OperatorStatus::LoggedOut,
            reason: String::new(),
            in_service: [0; 4],
            group: String::new(),
            reported: Activity::LoggedOut,
        }
    }
}

impl Desk {
    /// What the operator is doing now.
    #[must_use]
    pub fn activity(&self) -> Activity {
        if self.status == OperatorStatus::LoggedOut {
            return Activity::LoggedOut;
        }
        if let Some(c) = Channel::ALL.into_iter().find(|c| self.in_service[c.index()] > 0) {
            return Activity::OnContact(c);
        }
        match self.status {
            OperatorStatus::WrapUp => Activity::WrapUp,
            OperatorStatus::Paused => Activity::Paused(self.reason.clone()),
            _ => Activity::Available,
        }
    }

    /// Follows one event about this operator (events about others are the caller's to route);
    /// pushes the facts it implies: a new [`Fact::State`] only when the activity changed. `code`
    /// turns a pause reason as the engine reports it into the reason code to account it under.
    pub fn apply(&mut self, e: &Event, code: &dyn Fn(&str) -> String, out: &mut Vec<Fact>) {
        let count = match e {
            Event::OperatorStatus { group, to, reason, .. } => {
                self.group = group.to_string();
                self.status = *to;
                self.reason = if *to == OperatorStatus::Paused { code(reason) } else { String::new() };
                if *to == OperatorStatus::LoggedOut {
                    self.in_service = [0; 4];
                }
                None
            }
            Event::Accepted { channel, .. } => {
                self.in_service[channel.index()] += 1;
                None
            }
            // A leg ended by a transfer: handled work, as a completion is.
            Event::Transferred { channel, handle_ms, group, .. } => {
                let n = &mut self.in_service[channel.index()];
                *n = n.saturating_sub(1);
                self.group = group.to_string();
                Some(Fact::Handled { channel: *channel, handle_ms: *handle_ms })
            }
            // Out of the centre: the leg ended at its `Transferred`, just before.
            Event::Finished { outcome: Outcome::Transferred, .. } => return,
            Event::Finished { channel, outcome, handle_ms, group, .. } => {
                let n = &mut self.in_service[channel.index()];
                *n = n.saturating_sub(1);
                if let Some(g) = group {
                    self.group = g.to_string();
                }
                (*outcome == Outcome::Completed).then_some(Fact::Handled { channel: *channel, handle_ms: *handle_ms })
            }
            Event::OfferDeclined { .. } => Some(Fact::Declined),
            Event::OfferTimedOut { .. } => Some(Fact::TimedOut),
            _ => return,
        };
        self.report(out);
        out.extend(count);
    }

    /// A contact the engine does not know — carried over a restart, its operator logged in
    /// again — is in service with the operator on `channel`: they are on it until
    /// [`Desk::carried_ended`], whatever their status says meanwhile.
    pub fn carried(&mut self, channel: Channel, out: &mut Vec<Fact>) {
        self.in_service[channel.index()] += 1;
        self.report(out);
    }

    /// A carried contact ended: `handle_ms` when it was completed (it then counts as handled).
    pub fn carried_ended(&mut self, channel: Channel, handle_ms: Option<u64>, out: &mut Vec<Fact>) {
        let n = &mut self.in_service[channel.index()];
        *n = n.saturating_sub(1);
        self.report(out);
        out.extend(handle_ms.map(|handle_ms| Fact::Handled { channel, handle_ms }));
    }

    /// Pushes the activity if it changed since the last one pushed.
    fn report(&mut self, out: &mut Vec<Fact>) {
        let now = self.activity();
        if now != self.reported {
            self.reported = now.clone();
            out.push(Fact::State(now));
        }
    }

    /// The operator whose event `e` is, if it concerns one.
    #[must_use]
    pub fn operator_of(e: &Event) -> Option<&str> {
        match e {
            Event::OperatorStatus { operator, .. }
            | Event::Accepted { operator, .. }
            | Event::OfferDeclined { operator, .. }
            | Event::OfferTimedOut { operator, .. }
            | Event::Transferred { operator, .. } => Some(operator).filter(|o| !o.is_empty()).map(|o| &**o),
            Event::Finished { operator: Some(operator), .. } => Some(&**operator),
            _ => None,
        }
    }
}

/// One operator, or one group, in one interval. The time parts add up to `logged_in_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorInterval {
    /// Interval start, Unix ms.
    pub start_unix_ms: i64,
    /// The group.
    pub group: String,
    /// The operator ("" in a group's row).
    pub operator: String,
    /// Operators with time or facts in the row (1 in an operator's row).
    pub operators: u64,
    /// Logged in, ms.
    pub logged_in_ms: u64,
    /// Available, ms.
    pub available_ms: u64,
    /// On contacts, per channel, ms.
    pub on_contact_ms: BTreeMap<Channel, u64>,
    /// In wrap-up, ms.
    pub wrap_up_ms: u64,
    /// Paused, per reason code, ms.
    pub paused_ms: BTreeMap<String, u64>,
    /// Contacts completed.
    pub handled: u64,
    /// Their handle time, ms.
    pub handle_ms: u64,
    /// Offers declined.
    pub declined: u64,
    /// Offers let time out.
    pub timed_out: u64,
}

impl OperatorInterval {
    /// The sum of the time parts (equal to `logged_in_ms`).
    #[must_use]
    pub fn parts_ms(&self) -> u64 {
        self.available_ms
            + self.on_contact_ms.values().sum::<u64>()
            + self.wrap_up_ms
            + self.paused_ms.values().sum::<u64>()
    }

    /// Average handle time of the completed, ms (0 with none).
    #[must_use]
    pub fn average_handle_ms(&self) -> f64 {
        if self.handled == 0 {
            0.0
        } else {
            self.handle_ms as f64 / self.handled as f64
        }
    }

    fn absorb(&mut self, o: &OperatorInterval) {
        self.operators += o.operators;
        self.logged_in_ms += o.logged_in_ms;
        self.available_ms += o.available_ms;
        for (c, ms) in &o.on_contact_ms {
            *self.on_contact_ms.entry(*c).or_default() += ms;
        }
        self.wrap_up_ms += o.wrap_up_ms;
        for (r, ms) in &o.paused_ms {
            *self.paused_ms.entry(r.clone()).or_default() += ms;
        }
        self.handled += o.handled;
        self.handle_ms += o.handle_ms;
        self.declined += o.declined;
        self.timed_out += o.timed_out;
    }
}

/// The first interval start after the one starting at `start`.
#[must_use]
pub fn next_interval(start: i64, interval_ms: i64, zone: &dyn Zone) -> i64 {
    let i = interval_ms.max(60_000);
    // An interval lasts `i`, or an hour less or more across a change of offset (a day-long one
    // on the day of 23 or 25 hours; one whose next start the clocks skipped).
    let mut probe = start + i;
    for _ in 0..3 {
        let n = interval_start(probe, i, zone);
        if n > start {
            return n;
        }
        probe += 3_600_000;
    }
    start + i
}

/// Folds operators' facts into per-interval rows over `[from, until)`.
#[derive(Debug)]
pub struct Fold<'z> {
    from: i64,
    until: i64,
    interval_ms: i64,
    zone: &'z dyn Zone,
    rows: BTreeMap<(i64, String, String), OperatorInterval>,
}

impl<'z> Fold<'z> {
    /// A fold of `[from, until)` in intervals of `interval_ms` on `zone`'s wall clock.
    #[must_use]
    pub fn new(from: i64, until: i64, interval_ms: i64, zone: &'z dyn Zone) -> Self {
        Fold { from, until, interval_ms: interval_ms.max(60_000), zone, rows: BTreeMap::new() }
    }

    fn row(&mut self, start: i64, group: &str, operator: &str) -> &mut OperatorInterval {
        self.rows.entry((start, group.to_owned(), operator.to_owned())).or_insert_with(|| OperatorInterval {
            start_unix_ms: start,
            group: group.to_owned(),
            operator: operator.to_owned(),
            operators: 1,
            ..OperatorInterval::default()
        })
    }

    /// Counts `activity` from `a` to `b`, split at interval starts.
    fn spell(&mut self, operator: &str, group: &str, activity: &Activity, a: i64, b: i64) {
        if *activity == Activity::LoggedOut {
            return;
        }
        let (mut a, b) = (a.max(self.from), b.min(self.until));
        while a < b {
            let start = interval_start(a, self.interval_ms, self.zone);
            let next = next_interval(start, self.interval_ms, self.zone);
            // Always forward (a zone whose offsets change other than by the hour could
            // otherwise leave `a` where it is).
            let end = if next > a { next.min(b) } else { b };
            let ms = u64::try_from(end - a).unwrap_or(0);
            let r = self.row(start, group, operator);
            r.logged_in_ms += ms;
            match activity {
                Activity::LoggedOut => {}
                Activity::Available => r.available_ms += ms,
                Activity::OnContact(c) => *r.on_contact_ms.entry(*c).or_default() += ms,
                Activity::WrapUp => r.wrap_up_ms += ms,
                Activity::Paused(code) => *r.paused_ms.entry(code.clone()).or_default() += ms,
            }
            a = end;
        }
    }

    /// Adds one operator's history: their facts in the order they happened (by time, then as
    /// recorded). Facts before `from` only tell the state the operator was in at `from` (pass
    /// the last state fact before it); facts at or after `until` are ignored. A state lasts
    /// until the operator's next state fact or their writer's last sign of life.
    pub fn add(&mut self, history: &[Recorded]) {
        let mut state: Option<(&Recorded, &Activity)> = None;
        for r in history {
            let t = r.change.at_unix_ms;
            if t >= self.until {
                break;
            }
            match &r.change.fact {
                Fact::State(a) => {
                    if let Some((p, pa)) = state.take() {
                        let end = t.min(p.alive_until);
                        self.spell(&p.change.operator, &p.change.group, pa, p.change.at_unix_ms, end);
                    }
                    state = Some((r, a));
                }
                f if t >= self.from => {
                    let start = interval_start(t, self.interval_ms, self.zone);
                    let row = self.row(start, &r.change.group, &r.change.operator);
                    match f {
                        Fact::Handled { handle_ms, .. } => {
                            row.handled += 1;
                            row.handle_ms += handle_ms;
                        }
                        Fact::Declined => row.declined += 1,
                        Fact::TimedOut => row.timed_out += 1,
                        Fact::State(_) => {}
                    }
                }
                _ => {}
            }
        }
        if let Some((p, pa)) = state {
            let end = self.until.min(p.alive_until);
            self.spell(&p.change.operator, &p.change.group, pa, p.change.at_unix_ms, end);
        }
    }

    /// The rows: per interval, group and operator (by interval, group, operator), and per
    /// interval and group (by interval, group; `operator` empty, `operators` counting them).
    #[must_use]
    pub fn finish(self) -> (Vec<OperatorInterval>, Vec<OperatorInterval>) {
        let mut groups: BTreeMap<(i64, String), OperatorInterval> = BTreeMap::new();
        for ((start, group, _), r) in &self.rows {
            groups
                .entry((*start, group.clone()))
                .or_insert_with(|| OperatorInterval {
                    start_unix_ms: *start,
                    group: group.clone(),
                    ..OperatorInterval::default()
                })
                .absorb(r);
        }
        (self.rows.into_values().collect(), groups.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::FixedOffset;
    use crate::model::Segment;
    use crate::time::Millis;
    use std::sync::Arc;

    fn status(to: OperatorStatus, reason: &str) -> Event {
        Event::OperatorStatus {
            operator: "op".into(),
            group: "supplier-a".into(),
            from: OperatorStatus::Available,
            to,
            reason: reason.into(),
        }
    }

    fn accepted() -> Event {
        Event::Accepted {
            contact: "c".into(),
            queue: "q".into(),
            operator: "op".into(),
            channel: Channel::Voice,
            waited_ms: 0,
            held: false,
        }
    }

    fn finished(outcome: Outcome) -> Event {
        Event::Finished {
            contact: "c".into(),
            queue: "q".into(),
            channel: Channel::Voice,
            outcome,
            waited_ms: 0,
            handle_ms: 60_000,
            operator: Some("op".into()),
            group: Some("supplier-a".into()),
            wrap_up_ms: 0,
            arrived: Millis(0),
            segment: Segment::General,
            charged: None,
        }
    }

    #[test]
    fn a_desk_reports_each_change_of_activity_once_and_counts_what_came_of_offers() {
        let mut d = Desk::default();
        let code = |r: &str| if r == "no answer" { "no_answer".to_owned() } else { r.to_owned() };
        let mut out = Vec::new();
        d.apply(&status(OperatorStatus::Available, ""), &code, &mut out);
        d.apply(&accepted(), &code, &mut out);
        // A pause asked for during the call starts when it ends.
        d.apply(&status(OperatorStatus::Paused, "break"), &code, &mut out);
        d.apply(&finished(Outcome::Completed), &code, &mut out);
        d.apply(&status(OperatorStatus::Paused, "no answer"), &code, &mut out);
        d.apply(
            &Event::OfferDeclined { contact: "c".into(), queue: "q".into(), operator: Arc::from("op") },
            &code,
            &mut out,
        );
        d.apply(&status(OperatorStatus::LoggedOut, ""), &code, &mut out);
        assert_eq!(
            out,
            vec![
                Fact::State(Activity::Available),
                Fact::State(Activity::OnContact(Channel::Voice)),
                Fact::State(Activity::Paused("break".into())),
                Fact::Handled { channel: Channel::Voice, handle_ms: 60_000 },
                Fact::State(Activity::Paused("no_answer".into())),
                Fact::Declined,
                Fact::State(Activity::LoggedOut),
            ]
        );
    }

    #[test]
    fn a_transferred_leg_ends_the_operators_contact_once_and_counts_as_handled() {
        let mut d = Desk::default();
        let code = |r: &str| r.to_owned();
        let mut out = Vec::new();
        let transferred = |to: Option<&str>| Event::Transferred {
            contact: "c".into(),
            queue: "q".into(),
            channel: Channel::Voice,
            operator: "op".into(),
            group: "supplier-a".into(),
            to: to.map(Arc::from),
            to_operator: None,
            accepted: Millis(0),
            arrived: Millis(0),
            pinned_until: None,
            handle_ms: 30_000,
            wrap_up_ms: 0,
            charged: None,
        };
        d.apply(&status(OperatorStatus::Available, ""), &code, &mut out);
        d.apply(&accepted(), &code, &mut out);
        d.apply(&transferred(Some("consultancy")), &code, &mut out);
        // Out of the centre: the contact's end right after its transfer is not a second end.
        d.apply(&accepted(), &code, &mut out);
        d.apply(&transferred(None), &code, &mut out);
        d.apply(&finished(Outcome::Transferred), &code, &mut out);
        assert_eq!(Desk::operator_of(&transferred(None)), Some("op"));
        let handled = Fact::Handled { channel: Channel::Voice, handle_ms: 30_000 };
        assert_eq!(
            out,
            vec![
                Fact::State(Activity::Available),
                Fact::State(Activity::OnContact(Channel::Voice)),
                Fact::State(Activity::Available),
                handled.clone(),
                Fact::State(Activity::OnContact(Channel::Voice)),
                Fact::State(Activity::Available),
                handled,
            ]
        );
    }

    #[test]
    fn every_fact_survives_its_encoding() {
        for f in [
            Fact::State(Activity::LoggedOut),
            Fact::State(Activity::Available),
            Fact::State(Activity::OnContact(Channel::Chat)),
            Fact::State(Activity::WrapUp),
            Fact::State(Activity::Paused("training".into())),
            Fact::Handled { channel: Channel::Video, handle_ms: 42 },
            Fact::Declined,
            Fact::TimedOut,
        ] {
            let (k, d, v) = f.encode();
            assert_eq!(Fact::decode(k, d, v), Some(f.clone()));
        }
        assert_eq!(Fact::decode("dancing", "", 0), None);
    }

    fn rec(at: i64, fact: Fact, alive_until: i64) -> Recorded {
        Recorded { change: Change { operator: "op".into(), group: "g".into(), at_unix_ms: at, fact }, alive_until }
    }

    #[test]
    fn a_state_is_cut_at_its_writers_last_sign_of_life_and_at_the_period() {
        const M: i64 = 60_000;
        let mut f = Fold::new(30 * M, 120 * M, 30 * M, &FixedOffset(0));
        f.add(&[
            // Before the period: only the state at its start.
            rec(0, Fact::State(Activity::Available), i64::MAX),
            rec(10 * M, Fact::Declined, i64::MAX),
            // This writer died at 70 minutes: no logout was recorded.
            rec(40 * M, Fact::State(Activity::Paused("break".into())), 70 * M),
        ]);
        let (ops, groups) = f.finish();
        assert_eq!(ops.len(), 2);
        assert_eq!(
            (ops[0].start_unix_ms, ops[0].available_ms, ops[0].paused_ms["break"]),
            (30 * M, 600_000, 1_200_000)
        );
        assert_eq!((ops[1].start_unix_ms, ops[1].logged_in_ms, ops[1].paused_ms["break"]), (60 * M, 600_000, 600_000));
        assert_eq!(ops[0].declined, 0, "a count before the period is not in it");
        assert!(groups.iter().zip(&ops).all(|(g, o)| g.logged_in_ms == o.logged_in_ms && g.operators == 1));
    }
}
