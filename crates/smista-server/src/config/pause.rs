//! `[[pause_reasons]]`: the codes a desk pauses with (`SetState`), each with a label and how
//! it counts. Without any configured, a built-in set ([`builtin`]) applies. The server's own
//! pauses (an offer left to time out, a contact in service from before a restart, a roster
//! change) have codes
//! of their own ([`NO_ANSWER`], [`RECOVERING`], [`ROSTER_CHANGE`]) that no desk may use.

use serde::Deserialize;

/// How a pause counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// A rest break.
    Break,
    /// Training.
    Training,
    /// A meeting or briefing.
    Meeting,
    /// A technical problem (and the server's own pauses).
    Technical,
    /// After-call work beyond the queue's wrap-up.
    AfterCallWork,
}

impl PauseKind {
    /// The name in configuration files and reports.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            PauseKind::Break => "break",
            PauseKind::Training => "training",
            PauseKind::Meeting => "meeting",
            PauseKind::Technical => "technical",
            PauseKind::AfterCallWork => "after_call_work",
        }
    }
}

/// `[[pause_reasons]]`: one reason code.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseReason {
    /// The code desks send (`SetStateRequest.reason`): 1..=32 of `a-z`, `0-9`, `_`, `-`.
    pub code: String,
    /// For people (wallboards, reports); at most 64 printable characters.
    pub label: String,
    /// How it counts.
    pub kind: PauseKind,
}

/// The server's code for the pause after an offer timed out (the engine's "no answer").
pub const NO_ANSWER: &str = "no_answer";
/// The server's code for the pause at a login while a contact from before a restart is still
/// in service.
pub const RECOVERING: &str = "recovering";
/// The server's code for the pause of an operator whose roster entry changed, until they hold
/// no contact and are logged out.
pub const ROSTER_CHANGE: &str = "roster_change";

/// The reasons that apply without `[[pause_reasons]]`.
#[must_use]
pub fn builtin() -> Vec<PauseReason> {
    [
        ("break", "Break", PauseKind::Break),
        ("training", "Training", PauseKind::Training),
        ("meeting", "Meeting or briefing", PauseKind::Meeting),
        ("technical", "Technical problem", PauseKind::Technical),
        ("after_call_work", "After-call work", PauseKind::AfterCallWork),
    ]
    .into_iter()
    .map(|(code, label, kind)| PauseReason { code: code.into(), label: label.into(), kind })
    .collect()
}

/// The server's own reasons, beside any configured.
#[must_use]
pub fn system() -> Vec<PauseReason> {
    vec![
        PauseReason { code: NO_ANSWER.into(), label: "Did not answer an offer".into(), kind: PauseKind::Technical },
        PauseReason {
            code: RECOVERING.into(),
            label: "Contact in service from before a restart".into(),
            kind: PauseKind::Technical,
        },
        PauseReason {
            code: ROSTER_CHANGE.into(),
            label: "Roster entry changed: log in again".into(),
            kind: PauseKind::Technical,
        },
    ]
}

/// Checks the configured reasons: `Err((key, problem))`.
pub fn validate(reasons: &[PauseReason]) -> Result<(), (String, String)> {
    for (i, r) in reasons.iter().enumerate() {
        let key = |f: &str| format!("pause_reasons[{i}].{f}");
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if r.code.is_empty() || r.code.len() > 32 || !r.code.chars().all(ok) {
            return Err((key("code"), "1 to 32 characters of a-z, 0-9, `_` and `-`".into()));
        }
        if system().iter().any(|s| s.code == r.code) {
            return Err((key("code"), format!("`{}` is the server's own", r.code)));
        }
        if reasons[..i].iter().any(|x| x.code == r.code) {
            return Err((key("code"), format!("duplicate code `{}`", r.code)));
        }
        if r.label.is_empty() || r.label.chars().count() > 64 || r.label.chars().any(smista_core::error::is_hazard) {
            return Err((key("label"), "1 to 64 printable characters".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked() {
        assert!(validate(&builtin()).is_ok());
        let mut r = builtin();
        r.push(r[0].clone());
        assert_eq!(validate(&r).unwrap_err().0, "pause_reasons[5].code");
        let bad = PauseReason { code: "Coffee Break".into(), label: "x".into(), kind: PauseKind::Break };
        assert_eq!(validate(&[bad]).unwrap_err().0, "pause_reasons[0].code");
        let own = PauseReason { code: NO_ANSWER.into(), label: "x".into(), kind: PauseKind::Break };
        assert!(validate(&[own]).is_err());
    }
}
