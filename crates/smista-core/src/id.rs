//! Identifiers the API receives (contact, operator, session, appointment ids): the one rule they
//! follow, shared by the engine, the appointment book and the server. It sits below them all, so
//! none of them has to reach into another for it.

use crate::error::RoutingError;

/// Longest accepted identifier, in bytes.
const MAX_ID_LEN: usize = 128;

/// Checks an id the API receives (contact, operator, session): non-empty, at most 128 bytes, no
/// control characters. The one rule, used by the engine and by the server before it quotes an id.
pub fn validate_id(field: &'static str, s: &str) -> Result<(), RoutingError> {
    if s.is_empty() {
        return Err(RoutingError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(RoutingError::invalid(field, format!("longer than {MAX_ID_LEN} bytes")));
    }
    if s.chars().any(crate::error::is_hazard) {
        return Err(RoutingError::invalid(
            field,
            "contains control, line-separator, bidirectional or invisible characters",
        ));
    }
    Ok(())
}
