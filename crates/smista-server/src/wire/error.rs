//! The one place where routing errors become gRPC statuses. Every variant is matched without a
//! wildcard, so a new variant does not compile until someone picks its code.

use smista_core::book::{BudgetError, RecoveredError};
use smista_core::RoutingError;
use tonic::{Code, Status};

/// Maps a routing error to its gRPC status. Client errors are logged at debug level by the caller.
#[must_use]
pub fn status(e: RoutingError) -> Status {
    let code = match &e {
        RoutingError::InvalidArgument { .. } => Code::InvalidArgument,
        RoutingError::UnknownQueue(_)
        | RoutingError::UnknownGroup(_)
        | RoutingError::UnknownOperator(_)
        | RoutingError::UnknownContact(_) => Code::NotFound,
        RoutingError::AlreadyLoggedIn(_) | RoutingError::ContactFinished(_) => Code::AlreadyExists,
        RoutingError::WrongState(_) | RoutingError::TransferRefused { .. } => Code::FailedPrecondition,
        RoutingError::Busy(_) => Code::Aborted,
        RoutingError::OperatorCapacity(_) => Code::ResourceExhausted,
    };
    Status::new(code, e.to_string())
}

/// Maps a budget error to its gRPC status.
#[must_use]
pub fn budget_status(e: BudgetError) -> Status {
    let code = match &e {
        BudgetError::UnknownBudget(_) => Code::NotFound,
        BudgetError::Invalid { .. } => Code::InvalidArgument,
    };
    Status::new(code, e.to_string())
}

/// Maps a refused completion of a contact recovered at restart.
#[must_use]
pub fn recovered_status(e: RecoveredError) -> Status {
    let code = match &e {
        RecoveredError::Unknown(_) => Code::NotFound,
        RecoveredError::OtherOperator { .. } => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}

/// The ledger could not make a write durable (or read back): UNAVAILABLE, so the client retries
/// the (idempotent) request.
#[must_use]
pub fn ledger_status(e: smista_ledger::LedgerError) -> Status {
    tracing::error!(error = %e, "ledger unavailable");
    Status::unavailable(format!("{e}; the request may be retried"))
}

/// A client error, logged at debug level, counted, returned.
pub fn client_error(e: smista_core::RoutingError) -> Status {
    let s = status(e);
    tracing::debug!(code = ?s.code(), message = s.message(), "request refused");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_status_guide() {
        assert_eq!(status(RoutingError::UnknownQueue("x".into())).code(), Code::NotFound);
        assert_eq!(status(RoutingError::WrongState("x".into())).code(), Code::FailedPrecondition);
        assert_eq!(status(RoutingError::AlreadyLoggedIn("x".into())).code(), Code::AlreadyExists);
        assert_eq!(status(RoutingError::Busy("x".into())).code(), Code::Aborted);
        assert_eq!(
            status(RoutingError::InvalidArgument { field: "priority", problem: "too high".into() }).code(),
            Code::InvalidArgument
        );
    }
}
