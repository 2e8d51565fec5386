//! # smista-server
//!
//! The `smista` service: the gRPC API of `smista.v1` over the routing engine of `smista-core`,
//! with health checking and reflection, Prometheus metrics, one TOML configuration and graceful
//! shutdown. Transport only: every routing decision is the engine's.
//!
//! - [`config`]: the TOML file and the embedded demo.
//! - [`service`]: the three gRPC services.
//! - [`hub`]: event stream and operator offer fan-out.
//! - [`metrics`]: metric names, recording and the `/metrics` endpoint.
//! - [`error`]: the one mapping of routing errors to gRPC statuses.
//! - [`server`]: assembly, the routing tick and shutdown.

#![forbid(unsafe_code)]

pub mod config;
pub mod convert;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod service;
