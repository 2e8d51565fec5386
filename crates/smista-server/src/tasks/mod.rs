//! The background loops a serving node runs beside its RPCs, each stopping when the shutdown
//! signal flips: the routing [`tick`] (with the
//! [`appointments`] coming due), budget [`lease`] renewal, the [`history`] purge and
//! staffed-time flush, certificate [`reload`], the [`roster`] refresh, and the [`insecure`] reminder. They take the
//! shared state (`app::Shared`) and never the services.

pub mod appointments;
pub mod history;
pub mod insecure;
pub mod lease;
pub mod reload;
pub mod roster;
pub mod tick;
