//! Quotas that keep one client from starving the others: request rates per principal and RPC
//! class, offers per caller, and open streams per principal and in all; plus `[limits]`, the
//! configuration of every bound the server keeps (transport included).
//!
//! Rates are `governor` keyed limiters (GCRA, lock-free per key). Over a quota the answer is
//! RESOURCE_EXHAUSTED with `retry-after-ms` metadata, and `smista_rate_limited_total{class}`
//! counts it. The open demo server's single anonymous principal is not rate-limited per
//! principal (every caller is the same one there); the caller and stream caps still apply.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tonic::Status;

use crate::auth::{Method, Principal};

/// Quota classes of the RPCs (see [`crate::auth::POLICY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// OfferContact.
    Offer,
    /// CancelContact.
    Contact,
    /// Opening WatchOffers or StreamEvents.
    Stream,
    /// Login and Logout.
    Login,
    /// The other desk calls (accept, decline, complete, state).
    Desk,
    /// Snapshot and audit reads.
    Read,
    /// Changes to queues and budgets.
    Admin,
}

impl Class {
    const ALL: [Class; 7] =
        [Class::Offer, Class::Contact, Class::Stream, Class::Login, Class::Desk, Class::Read, Class::Admin];

    /// Metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Offer => "offer",
            Class::Contact => "contact",
            Class::Stream => "stream",
            Class::Login => "login",
            Class::Desk => "desk",
            Class::Read => "read",
            Class::Admin => "admin",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A rate: a sustained rate per second and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per second (0: unlimited).
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Rate {
    const fn new(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    fn quota(self) -> Option<Quota> {
        let r = NonZeroU32::new(self.per_second)?;
        Some(Quota::per_second(r).allow_burst(NonZeroU32::new(self.burst.max(self.per_second)).unwrap_or(r)))
    }
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

impl Rates {
    fn get(&self, c: Class) -> Rate {
        match c {
            Class::Offer => self.offer,
            Class::Contact => self.contact,
            Class::Stream => self.stream,
            Class::Login => self.login,
            Class::Desk => self.desk,
            Class::Read => self.read,
            Class::Admin => self.admin,
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

/// The live quotas.
#[derive(Debug)]
pub struct Limits {
    rates: Vec<Option<DefaultKeyedRateLimiter<Arc<str>>>>,
    caller: Option<DefaultKeyedRateLimiter<Box<str>>>,
    streams: DashMap<Arc<str>, usize>,
    total_streams: AtomicUsize,
    max_per_principal: usize,
    max_total: usize,
    clock: DefaultClock,
}

fn exhausted(what: &str, wait_ms: u64) -> Status {
    let mut s = Status::resource_exhausted(format!("{what}; retry after {wait_ms} ms"));
    if let Ok(v) = wait_ms.to_string().parse() {
        s.metadata_mut().insert("retry-after-ms", v);
    }
    s
}

impl Limits {
    /// Quotas from the configuration.
    #[must_use]
    pub fn new(cfg: &LimitsSection) -> Limits {
        let rates = Class::ALL.iter().map(|c| cfg.rates.get(*c).quota().map(RateLimiter::keyed)).collect();
        let caller =
            NonZeroU32::new(cfg.offers_per_caller_per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Limits {
            rates,
            caller,
            streams: DashMap::new(),
            total_streams: AtomicUsize::new(0),
            max_per_principal: cfg.max_streams_per_principal as usize,
            max_total: cfg.max_streams_total as usize,
            clock: DefaultClock::default(),
        }
    }

    /// Counts a request of `class` against `p`'s quota.
    pub fn check_rate(&self, p: &Principal, class: Class) -> Result<(), Status> {
        if p.method == Method::Open {
            return Ok(());
        }
        let Some(l) = &self.rates[class.index()] else { return Ok(()) };
        l.check_key(&p.name).map_err(|not_until| {
            crate::metrics::rate_limited(class.as_str());
            let wait = not_until.wait_time_from(self.clock.now());
            exhausted(&format!("`{}` is over its {} quota", p.name, class.as_str()), wait.as_millis() as u64 + 1)
        })
    }

    /// Counts an offer against its caller's quota (no caller key: nothing to count).
    pub fn check_caller(&self, caller_key: &str) -> Result<(), Status> {
        let Some(l) = &self.caller else { return Ok(()) };
        if caller_key.is_empty() {
            return Ok(());
        }
        l.check_key(&Box::<str>::from(caller_key)).map_err(|not_until| {
            crate::metrics::rate_limited("caller");
            let wait = not_until.wait_time_from(self.clock.now());
            exhausted("this caller is over its offers per minute", wait.as_millis() as u64 + 1)
        })
    }

    /// Reserves one open stream for `p`; the stream is counted until the guard drops.
    pub fn open_stream(self: &Arc<Self>, p: &Principal) -> Result<StreamGuard, Status> {
        let total = self.total_streams.fetch_add(1, Ordering::AcqRel) + 1;
        if total > self.max_total {
            self.total_streams.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::rate_limited("streams");
            return Err(Status::resource_exhausted(format!(
                "the server holds its maximum of {} streams",
                self.max_total
            )));
        }
        let per_principal = p.method != Method::Open;
        if per_principal {
            let mut n = self.streams.entry(p.name.clone()).or_insert(0);
            if *n >= self.max_per_principal {
                drop(n);
                self.total_streams.fetch_sub(1, Ordering::AcqRel);
                crate::metrics::rate_limited("streams");
                return Err(Status::resource_exhausted(format!(
                    "`{}` holds its maximum of {} streams",
                    p.name, self.max_per_principal
                )));
            }
            *n += 1;
        }
        Ok(StreamGuard { limits: self.clone(), principal: per_principal.then(|| p.name.clone()) })
    }

    fn close_stream(&self, principal: &Arc<str>) {
        if let dashmap::Entry::Occupied(mut e) = self.streams.entry(principal.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Streams open now.
    #[must_use]
    pub fn open_streams(&self) -> usize {
        self.total_streams.load(Ordering::Acquire)
    }

    /// Forgets limiter state of keys idle long enough to be full again (run every minute).
    pub fn housekeeping(&self) {
        for l in self.rates.iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.caller {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// An open stream's place in the caps; freed on drop.
#[derive(Debug)]
pub struct StreamGuard {
    limits: Arc<Limits>,
    principal: Option<Arc<str>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.principal {
            self.limits.close_stream(p);
        }
        self.limits.total_streams.fetch_sub(1, Ordering::AcqRel);
    }
}
