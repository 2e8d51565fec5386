//! The gRPC services of `smista.v1`, thin wrappers over the engine: validate and convert the
//! request, call the engine, publish its events, convert the answer. One file per proto service
//! ([`contact`], [`operator`], [`admin`], [`appointment`]), the event stream's route
//! ([`events`]), the report bodies ([`reports`], [`operator_report`]), the roster's RPCs
//! ([`roster`]), TransferContact's body ([`transfer`]) and the consultations' ([`consult`]). They
//! share `app::Shared` and are assembled by `node::routing`.

pub mod admin;
pub mod appointment;
pub mod consult;
pub mod contact;
pub mod events;
pub mod operator;
pub mod operator_report;
pub mod reports;
pub mod roster;
pub mod transfer;
