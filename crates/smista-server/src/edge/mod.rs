//! The trust boundary and the transport, between the network and the services: who a caller
//! is and what it may call ([`auth`]), its quotas ([`limits`]), accepted connections and TLS
//! ([`transport`]), the leadership fence that stops a lapsed active answering
//! ([`leadership`]), the status of an undecodable request ([`decode`]), and the `/metrics`
//! listener ([`metrics_http`]). Imports only the layers below (configuration, clock, metrics,
//! wire).

pub mod auth;
pub mod decode;
pub mod leadership;
pub mod limits;
pub mod metrics_http;
pub mod transport;
