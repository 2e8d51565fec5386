//! What crosses the wire, checked and converted: the proto's messages to and from the core's
//! types ([`convert`]), the one mapping of errors to gRPC statuses ([`error`]), and the bounds
//! every request meets before any per-entry work ([`bounds`]). Imports only the configuration
//! layer and the clock.

pub mod bounds;
pub mod convert;
pub mod error;
