//! # smista-core
//!
//! The domain model and routing engine of smista, a contact-centre call router. Pure: no IO, no
//! async runtime, no clock — time comes in as [`Millis`] arguments, and side effects go out as
//! [`Event`]s the caller publishes.
//!
//! - [`Engine`] routes contacts to operators: queues with skills, priorities and aging, overflow,
//!   skill expansion, offer time-outs, wrap-up, multichannel capacity, four selection strategies.
//! - [`budget::BudgetGate`] is the budget admission interface consulted before a contact reaches an
//!   operator paid from a capped budget; [`book::BudgetBook`] implements it with ceilings,
//!   tariffs, pacing and a protected reserve.
//! - [`config::EngineConfig`] describes queues and operator groups; [`hours`] their opening
//!   hours on the centre's [`calendar`]; [`appointments`] the consultancy slots operators
//!   publish and citizens book.
//! - [`accounting`] what each operator did while logged in, per interval (a partition of their
//!   logged-in time: available, on contacts, wrap-up, paused by reason).
//! - [`roster`] the rules binding an operator's login to the roster (group, narrowing).
//!
//! Invariants the engine guarantees (and its tests check under random interleavings and threads):
//! an operator never holds two exclusive (voice/video/callback) contacts or more than its capacity;
//! an operator paused, in wrap-up or logged out is never offered a contact; a contact is in exactly
//! one place at a time and ends in exactly one [`Outcome`]; every claim on an operator ends.

#![forbid(unsafe_code)]

pub mod accounting;
pub mod appointments;
pub mod book;
pub mod budget;
pub mod calendar;
pub mod config;
mod engine;
pub mod error;
pub mod event;
pub mod hours;
mod id;
mod idle;
pub mod model;
mod operator;
mod queue;
pub mod report;
pub mod roster;
pub mod sl_window;
pub mod snapshot;
pub mod time;

pub use config::MAX_EXPANSION_STEPS;
pub use engine::callback::CallbackNext;
pub use engine::consult::{ConsultAction, ConsultEnd, ConsultStep};
pub use engine::operators::{OperatorUpdate, MAX_SKILLS};
pub use engine::transfer::{Next, Transfer, TransferTarget, MAX_PIN_MS};
pub use engine::Engine;
pub use error::{ConfigError, RoutingError};
pub use event::Event;
pub use id::validate_id;
pub use model::{
    Channel, Completion, Decision, DivertReason, Fallback, LoginRequest, OfferRequest, OperatorStatus, Outcome,
    RequestedState, Segment, Skill,
};
pub use time::Millis;
