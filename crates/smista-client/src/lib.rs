//! # smista-client
//!
//! The client side of smista's trust boundary, for everything that calls the gRPC API from
//! Rust: the `smista` command line, the load generator and the tests. It never depends on the
//! server.
//!
//! - [`connect`]: a channel with TLS roots and an optional client certificate, and bearer tokens
//!   read from files or the environment.
//! - [`follow`]: the active node of an active/standby group.
//! - `mint` (feature `mint`): development credentials, never for production.

#![forbid(unsafe_code)]

pub mod connect;
pub mod follow;
#[cfg(feature = "mint")]
pub mod mint;
