//! The most entries each repeated field of a request may carry, checked first thing in the
//! handler, before any per-entry work (conversion, validation, a clone): a request's cost is
//! bounded by these numbers, not by what a client chose to send. Each maximum is written in the
//! field's comment in `proto/smista/v1` ("at most N"); `tests/bounds.rs` reads the comments from
//! the descriptor set and sends N + 1 entries to every repeated field of every request.

use smista_proto::v1 as pb;
use tonic::Status;

/// Skills of an operator (Login, UpdateOperator) or required by a queue (UpdateQueue).
pub const MAX_SKILLS: usize = smista_core::MAX_SKILLS;
/// Channel capacities: one per channel.
pub const MAX_CHANNELS: usize = 4;
/// Tariff changes in one amendment: one per channel.
pub const MAX_TARIFFS: usize = 4;
/// Queues in an overflow chain.
pub const MAX_OVERFLOW: usize = 16;
/// Skill expansion steps of a queue.
pub const MAX_EXPANSION_STEPS: usize = smista_core::MAX_EXPANSION_STEPS;
/// Weekly opening ranges of a queue.
pub const MAX_WEEKLY: usize = 32;
/// Closed dates, and extra openings, of a queue.
pub const MAX_DATES: usize = 400;
/// Queues in an event filter.
pub const MAX_FILTER_QUEUES: usize = 64;
/// Operators named in one operator report request.
pub const MAX_REPORT_OPERATORS: usize = 100;

/// Bytes of one entry of a repeated text field (a weekly range, a date, a queue name): the
/// parsers trim and skip, so without it a valid range padded with megabytes of spaces is kept,
/// audited and logged.
pub const MAX_ENTRY_BYTES: usize = 128;

/// INVALID_ARGUMENT when an entry of `field` is longer than [`MAX_ENTRY_BYTES`].
fn entries_short(field: &str, entries: &[String]) -> Result<(), Status> {
    match entries.iter().position(|e| e.len() > MAX_ENTRY_BYTES) {
        Some(i) => Err(Status::invalid_argument(format!(
            "{field}[{i}]: at most {MAX_ENTRY_BYTES} bytes ({} given)",
            entries[i].len()
        ))),
        None => Ok(()),
    }
}

/// INVALID_ARGUMENT when `field` has more than `max` entries.
fn at_most(field: &str, given: usize, max: usize) -> Result<(), Status> {
    if given > max {
        return Err(Status::invalid_argument(format!("{field}: at most {max} entries ({given} given)")));
    }
    Ok(())
}

/// A request whose repeated fields are bounded.
pub trait Bounded {
    /// INVALID_ARGUMENT naming the first field over its maximum.
    fn check_bounds(&self) -> Result<(), Status>;
}

impl Bounded for pb::LoginRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        at_most("skills", self.skills.len(), MAX_SKILLS)?;
        at_most("channels", self.channels.len(), MAX_CHANNELS)
    }
}

impl Bounded for pb::UpdateOperatorRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        if let Some(s) = &self.skills {
            at_most("skills.skills", s.skills.len(), MAX_SKILLS)?;
        }
        if let Some(c) = &self.channels {
            at_most("channels.channels", c.channels.len(), MAX_CHANNELS)?;
        }
        Ok(())
    }
}

impl Bounded for pb::PutRosterOperatorRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        if let Some(o) = &self.operator {
            at_most("operator.skills", o.skills.len(), MAX_SKILLS)?;
            at_most("operator.channels", o.channels.len(), MAX_CHANNELS)?;
        }
        Ok(())
    }
}

impl Bounded for pb::UpdateQueueRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        if let Some(s) = &self.skills {
            at_most("skills.skills", s.skills.len(), MAX_SKILLS)?;
        }
        if let Some(h) = &self.hours {
            at_most("hours.weekly", h.weekly.len(), MAX_WEEKLY)?;
            at_most("hours.closed", h.closed.len(), MAX_DATES)?;
            at_most("hours.open", h.open.len(), MAX_DATES)?;
            entries_short("hours.weekly", &h.weekly)?;
            entries_short("hours.closed", &h.closed)?;
            entries_short("hours.open", &h.open)?;
        }
        if let Some(o) = &self.overflow {
            at_most("overflow.queues", o.queues.len(), MAX_OVERFLOW)?;
            entries_short("overflow.queues", &o.queues)?;
        }
        if let Some(e) = &self.expansion {
            at_most("expansion.steps", e.steps.len(), MAX_EXPANSION_STEPS)?;
        }
        Ok(())
    }
}

impl Bounded for pb::UpdateBudgetRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        at_most("tariffs", self.tariffs.len(), MAX_TARIFFS)
    }
}

impl Bounded for pb::GetSpendReportRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        for (field, v) in [("budget_id", &self.budget_id), ("period", &self.period)] {
            if v.len() > MAX_ENTRY_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{field}: at most {MAX_ENTRY_BYTES} bytes ({} given)",
                    v.len()
                )));
            }
        }
        Ok(())
    }
}

impl Bounded for pb::GetOperatorReportRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        at_most("operators", self.operators.len(), MAX_REPORT_OPERATORS)?;
        entries_short("operators", &self.operators)
    }
}

impl Bounded for pb::StreamEventsRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        at_most("queues", self.queues.len(), MAX_FILTER_QUEUES)?;
        entries_short("queues", &self.queues)
    }
}

/// Longest free text (reasons, notes) a request may carry, in bytes.
pub const MAX_REASON: usize = 1024;

/// Free text a client sent, kept for humans: cut to [`MAX_REASON`] bytes, control characters
/// replaced by spaces and the other hazards (line separators, bidirectional and invisible
/// characters: [`smista_core::error::is_hazard`]) written as escapes, so it can neither forge a
/// log line, nor reorder an audit record, nor bloat one.
#[must_use]
pub fn sanitize_note(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_REASON));
    for c in s.chars() {
        let before = out.len();
        if c.is_control() {
            out.push(' ');
        } else if smista_core::error::is_hazard(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_REASON {
            out.truncate(before);
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_over_is_refused_naming_the_field() {
        let skill = pb::Skill { name: "pensions".into(), level: 5 };
        let mut req = pb::LoginRequest { skills: vec![skill; MAX_SKILLS], ..Default::default() };
        assert!(req.check_bounds().is_ok());
        req.skills.push(req.skills[0].clone());
        let e = req.check_bounds().unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.message(), format!("skills: at most {MAX_SKILLS} entries ({} given)", MAX_SKILLS + 1));
    }

    #[test]
    fn a_padded_entry_is_refused_however_valid_its_start() {
        let padded = format!("mon-fri 08:00-18:00{}", " ".repeat(MAX_ENTRY_BYTES));
        let req = pb::UpdateQueueRequest {
            hours: Some(pb::QueueHours { weekly: vec!["sat 09:00-12:00".into(), padded], ..Default::default() }),
            ..Default::default()
        };
        let e = req.check_bounds().unwrap_err();
        assert!(e.message().starts_with("hours.weekly[1]: at most 128 bytes"), "{}", e.message());
    }

    #[test]
    fn notes_lose_control_characters_and_excess() {
        assert_eq!(sanitize_note("M. Rossi\nINFO forged line\u{1b}[31m"), "M. Rossi INFO forged line [31m");
        assert_eq!(sanitize_note("ok\u{202E}gnp.exe\u{2028}x"), "ok\\u{202e}gnp.exe\\u{2028}x");
        let long = "è".repeat(4096);
        let n = sanitize_note(&long);
        assert!(n.len() <= MAX_REASON && n.chars().all(|c| c == 'è'));
        let check = |id: &str| smista_core::validate_id("operator_id", id).map_err(crate::wire::error::client_error);
        assert_eq!(check(&"x".repeat(129)).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(check("op\n1").unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(check("op-101").is_ok());
    }
}
