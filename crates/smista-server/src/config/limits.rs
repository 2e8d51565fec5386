//! `[limits]`: every bound the server keeps (connections, streams, time-outs, money bounds) and
//! the quota rates per principal and class.

use serde::Deserialize;

/// A rate: a sustained rate per second and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per second (0: unlimited).
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// `[limits.rates]`: per principal and class.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    /// OfferContact per platform principal.
    pub offer: Rate,
    /// CancelContact.
    pub contact: Rate,
    /// Stream opens.
    pub stream: Rate,
    /// Logins and logouts.
    pub login: Rate,
    /// Other desk calls.
    pub desk: Rate,
    /// Reads.
    pub read: Rate,
    /// Admin changes.
    pub admin: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            offer: Rate::new(20_000, 40_000),
            contact: Rate::new(20_000, 40_000),
            stream: Rate::new(20, 200),
            login: Rate::new(5, 50),
            desk: Rate::new(200, 400),
            read: Rate::new(50, 100),
            admin: Rate::new(5, 20),
        }
    }
}

/// `[limits]`: every bound the server keeps. All optional; the defaults suit a centre of a few
/// thousand desks on one node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Open TCP connections at most; further ones are closed at once.
    pub max_connections: u32,
    /// Open TCP connections from one remote IP address at most (desks behind one NAT share
    /// one; behind a proxy that hides clients' addresses, raise it to `max_connections`).
    pub max_connections_per_address: u32,
    /// HTTP/2 concurrent streams per connection.
    pub max_streams_per_connection: u32,
    /// Open WatchOffers + StreamEvents per principal.
    pub max_streams_per_principal: u32,
    /// Open WatchOffers + StreamEvents in all.
    pub max_streams_total: u32,
    /// HTTP/2 keepalive ping interval, ms (0: none).
    pub keepalive_interval_ms: u64,
    /// A connection whose ping is not answered within this is closed, ms.
    pub keepalive_timeout_ms: u64,
    /// Unary requests taking longer are cancelled (streams are not cut), ms.
    pub request_timeout_ms: u64,
    /// From accept, the TLS handshake, the client's HTTP/2 preface and its first SETTINGS frame
    /// must arrive within this, or the connection is closed, ms (plaintext too: the preface).
    pub handshake_timeout_ms: u64,
    /// Open connections to the metrics port at most; further ones are closed at once.
    pub metrics_max_connections: u32,
    /// Of those, from one remote IP address.
    pub metrics_max_connections_per_address: u32,
    /// A metrics request must be read and answered within this, ms (the whole request, not each
    /// read).
    pub metrics_request_timeout_ms: u64,
    /// OfferContact per `caller_key` per minute (0: no cap).
    pub offers_per_caller_per_minute: u32,
    /// Highest fee per contact a tariff may set, cents.
    pub max_fee_per_contact_cents: i64,
    /// Highest per-second rate a tariff may set, hundredths of a cent.
    pub max_rate_per_second_centicents: i64,
    /// Highest ceiling a budget may be set to, cents.
    pub max_ceiling_cents: i64,
    /// Rates per principal and class.
    pub rates: Rates,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 20_000,
            max_connections_per_address: 1_024,
            max_streams_per_connection: 4_096,
            max_streams_per_principal: 256,
            max_streams_total: 100_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
            metrics_max_connections: 64,
            metrics_max_connections_per_address: 16,
            metrics_request_timeout_ms: 5_000,
            offers_per_caller_per_minute: 20,
            max_fee_per_contact_cents: 100_000,
            max_rate_per_second_centicents: 100_000,
            max_ceiling_cents: 1_000_000_000_000,
            rates: Rates::default(),
        }
    }
}

impl LimitsSection {
    /// Checks the section: `Err((key, problem))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, p: &str| Err((format!("limits.{k}"), p.to_owned()));
        if self.max_connections == 0 {
            return bad("max_connections", "must be positive");
        }
        if self.max_connections_per_address == 0 {
            return bad("max_connections_per_address", "must be positive");
        }
        if self.metrics_max_connections == 0 || self.metrics_max_connections_per_address == 0 {
            return bad("metrics_max_connections", "metrics connection caps must be positive");
        }
        if self.metrics_request_timeout_ms == 0 {
            return bad("metrics_request_timeout_ms", "must be positive");
        }
        if self.max_streams_per_connection == 0 {
            return bad("max_streams_per_connection", "must be positive");
        }
        if self.max_streams_per_principal == 0 || self.max_streams_total == 0 {
            return bad("max_streams_per_principal", "stream caps must be positive");
        }
        if self.request_timeout_ms == 0 || self.handshake_timeout_ms == 0 {
            return bad("request_timeout_ms", "time-outs must be positive");
        }
        if self.max_fee_per_contact_cents <= 0
            || self.max_rate_per_second_centicents <= 0
            || self.max_ceiling_cents <= 0
        {
            return bad("max_ceiling_cents", "money bounds must be positive");
        }
        Ok(())
    }
}

impl Rate {
    /// `per_second` sustained, `burst` at once.
    pub(crate) const fn new(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }
}
