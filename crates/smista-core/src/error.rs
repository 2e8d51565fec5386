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
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    /// No operator group of that name.
    #[error("unknown operator group `{0}`")]
    UnknownGroup(String),
    /// The operator is not logged in (or never was).
    #[error("operator `{0}` is not logged in")]
    UnknownOperator(String),
    /// No live or recently finished contact with that id.
    #[error("unknown contact `{0}`")]
    UnknownContact(String),
    /// The operator is already logged in from another desktop session.
    #[error("operator `{0}` is already logged in from another session")]
    AlreadyLoggedIn(String),
    /// The contact id was already used for a contact that has finished.
    #[error("contact `{0}` already finished")]
    ContactFinished(String),
    /// The operation does not fit the current state (e.g. accepting an offer that expired).
    #[error("{0}")]
    WrongState(String),
    /// Another request is changing the same contact or operator right now; retry.
    #[error("`{0}` is being changed by a concurrent request; retry")]
    Busy(String),
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

/// `s` cut to at most [`MAX_QUOTED`] bytes (on a character boundary, marked with `…`), so that an
/// error never echoes a huge or hostile input back to the client or into a log.
#[must_use]
pub fn clip(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
