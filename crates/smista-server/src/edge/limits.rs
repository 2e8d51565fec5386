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
use tonic::Status;

use crate::config::limits::{LimitsSection, Rate, Rates};
use crate::edge::auth::{Method, Principal};

/// Quota classes of the RPCs (see [`crate::edge::auth::POLICY`]).
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

impl Rate {
    fn quota(self) -> Option<Quota> {
        let r = NonZeroU32::new(self.per_second)?;
        Some(Quota::per_second(r).allow_burst(NonZeroU32::new(self.burst.max(self.per_second)).unwrap_or(r)))
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
