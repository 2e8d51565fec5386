//! # smista-server
//!
//! The `smista` service as a library: the gRPC API of `smista.v1` over the routing engine of
//! `smista-core`, with health checking and reflection, Prometheus metrics, one TOML
//! configuration and graceful shutdown. Transport only: every routing decision is the engine's.
//! The `smista` binary (crate `smista`) runs it; clients use crate `smista-client`.
//!
//! Modules in layers; each imports only the layers above it in this list (a test in
//! `tests/tests/layers.rs` fails on a cycle):
//!
//! 1. [`config`] (every section, defaults and errors), [`clock`], [`logfmt`], [`datadir`],
//!    [`metrics`] (names and recording).
//! 2. [`wire`]: conversions, the error edge, request bounds.
//! 3. [`edge`]: principals, the policy, JWTs, quotas, connections and TLS, the leadership fence,
//!    the `/metrics` listener.
//! 4. [`app`]: the state the services share (`app::Shared`) and what it owns: the event hub,
//!    contact trails, staffed time, booked callbacks, queue overrides, budget leases.
//! 5. [`service`] (one file per proto service, the report bodies) and [`tasks`] (tick, lease
//!    renewal, purge, certificate reload).
//! 6. [`node`]: serving, single or failover; the one place that assembles the services.

#![forbid(unsafe_code)]

pub mod app;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod edge;
pub mod logfmt;
pub mod metrics;
pub mod node;
pub mod service;
pub mod tasks;
pub mod wire;
