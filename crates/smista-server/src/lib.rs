//! # smista-server
//!
//! The `smista` service: the gRPC API of `smista.v1` over the routing engine of `smista-core`,
//! with health checking and reflection, Prometheus metrics, one TOML configuration and graceful
//! shutdown. Transport only: every routing decision is the engine's.
//!
//! - [`config`]: the TOML file and the embedded demo.
//! - [`connect`]: the client side: TLS roots, client certificates, bearer tokens.
//! - [`auth`]: principals, roles, credentials (API keys, JWTs, client certificates), the policy.
//! - [`logfmt`]: human log lines with control characters escaped.
//! - [`limits`]: quotas per principal, class and caller; stream caps; every configured bound.
//! - [`transport`]: accepted connections, the connection cap, TLS and its reload.
//! - [`mint`]: development credentials (a CA, certificates, a JWKS, tokens, API keys).
//! - [`service`]: the gRPC services (contacts, operators, admin, appointments).
//! - [`callbacks`]: callbacks booked for later (next opening, next budget period).
//! - [`queues`]: queue settings admins change at run time, made durable and audited.
//! - [`lease`]: this node's budget leases when several nodes share budgets.
//! - [`leadership`]: the active's leadership as its own clock counts it; no reply after it lapses.
//! - [`hub`]: event stream and operator offer fan-out.
//! - [`metrics`]: metric names, recording and the `/metrics` endpoint.
//! - [`error`]: the one mapping of routing errors to gRPC statuses.
//! - [`server`]: assembly, the routing tick and shutdown.

#![forbid(unsafe_code)]

pub mod auth;
pub mod callbacks;
pub mod config;
pub mod connect;
pub mod convert;
pub mod datadir;
pub mod error;
pub mod events_route;
pub mod failover;
pub mod history;
pub mod hub;
pub mod leadership;
pub mod lease;
pub mod limits;
pub mod logfmt;
pub mod metrics;
pub mod mint;
pub mod queues;
pub mod server;
pub mod service;
pub mod staffing;
pub mod transport;
