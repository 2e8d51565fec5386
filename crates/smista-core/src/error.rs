//! Errors of the routing core. The server maps each variant to a gRPC status in one place.

use thiserror::Error;

/// A configuration problem, naming the offending key (e.g. `queues[2].overflow[0]`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// Dotted path of the offending key.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Why an engine operation was refused. "No operator free" is not an error: it is a decision.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RoutingError {
    /// A request field is malformed (empty id, out-of-range value...).
    #[error("invalid {field}: {problem}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// No queue of that name.
    #[error("unknown queue `{}`", clip(.0))]
    UnknownQueue(String),
    /// No operator group of that name.
    #[error("unknown operator group `{}`", clip(.0))]
    UnknownGroup(String),
    /// The operator is not logged in (or never was).
    #[error("operator `{}` is not logged in", clip(.0))]
    UnknownOperator(String),
    /// No live or recently finished contact with that id.
    #[error("unknown contact `{}`", clip(.0))]
    UnknownContact(String),
    /// The operator is already logged in from another desktop session.
    #[error("operator `{}` is already logged in from another session", clip(.0))]
    AlreadyLoggedIn(String),
    /// The contact id was already used for a contact that has finished.
    #[error("contact `{}` already finished", clip(.0))]
    ContactFinished(String),
    /// The operation does not fit the current state (e.g. accepting an offer that expired).
    #[error("{0}")]
    WrongState(String),
    /// Another request is changing the same contact or operator right now; retry.
    #[error("`{}` is being changed by a concurrent request; retry", clip(.0))]
    Busy(String),
    /// A transfer the target cannot take now (extra budget, no operator logged in, full): the
    /// operator keeps the contact, nothing changed.
    #[error("transfer to queue `{}` refused ({}): the contact stays with its operator", clip(queue), reason.as_str())]
    TransferRefused {
        /// Why, as a diversion would say.
        reason: crate::model::DivertReason,
        /// The target queue.
        queue: String,
    },
    /// Every operator slot is taken (`max_operators`).
    #[error("operator capacity of {0} reached")]
    OperatorCapacity(u32),
}

impl RoutingError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        RoutingError::InvalidArgument { field, problem: problem.into() }
    }
}

/// Most bytes of a client-supplied string quoted in an error message.
pub const MAX_QUOTED: usize = 128;

/// A character that must never reach a log line, an audit record or an identifier raw: control
/// characters; the line and paragraph separators (U+2028, U+2029: a line break to many log
/// viewers and JavaScript); and every default-ignorable or format code point of Unicode 15
/// (`Default_Ignorable_Code_Point` and general category `Cf`): the bidirectional controls (they
/// reorder what a reader sees), the zero-width and invisible ones, soft hyphens, variation
/// selectors, Hangul fillers, tag characters, interlinear annotations (two ids that print the
/// same, or text that hides in a log). Lists from the Unicode Character Database; a code point
/// assigned to these classes later is not known here.
#[must_use]
pub fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// `s` with every [`is_hazard`] character written as its escape (`\n`, `\u{202e}`), so quoted
/// input can neither break a line nor reorder one.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_hazard(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The one helper every error or log line that quotes client input goes through: `s` escaped
/// (see [`escape`]) and cut to at most [`MAX_QUOTED`] bytes on a character boundary, marked with
/// `…`. Work is bounded by [`MAX_QUOTED`], whatever the input's size.
#[must_use]
pub fn clip(s: &str) -> String {
    let mut out = String::with_capacity(MAX_QUOTED + 4);
    for c in s.chars() {
        let before = out.len();
        if is_hazard(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_QUOTED {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bounds_and_escapes_what_it_quotes() {
        assert_eq!(clip("pensions"), "pensions");
        let huge = "Z".repeat(100_000);
        let c = clip(&huge);
        assert_eq!(c, format!("{}…", "Z".repeat(MAX_QUOTED)));
        let c = clip(&"è".repeat(100));
        assert!(c.len() <= MAX_QUOTED + '…'.len_utf8() && c.ends_with('…'));
        assert_eq!(clip("a\u{202E}b\u{2028}c\nd"), "a\\u{202e}b\\u{2028}c\\nd");
        // An escape is never cut in half.
        let c = clip(&format!("{}\u{202E}", "x".repeat(MAX_QUOTED - 3)));
        assert_eq!(c, format!("{}…", "x".repeat(MAX_QUOTED - 3)));
        for c in [
            '\u{200B}',
            '\u{200E}',
            '\u{2029}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{061C}',
            '\u{7f}',
            '\u{85}',
            '\u{AD}',
            '\u{180E}',
            '\u{2061}',
            '\u{206A}',
            '\u{0600}',
            '\u{FFF9}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{3164}',
            '\u{FFA0}',
            '\u{115F}',
            '\u{034F}',
            '\u{17B4}',
            '\u{FE0F}',
            '\u{E0100}',
        ] {
            assert!(is_hazard(c), "{c:?}");
        }
        for c in ['a', 'è', '€', ' ', '\u{2030}', 'ß', '中', '\u{1F600}', '\u{05D0}'] {
            assert!(!is_hazard(c), "{c:?}");
        }
    }
}
