//! Prometheus metrics: names, help and buckets in one place, and recording from engine events
//! (the `/metrics` endpoint that serves them is `edge::metrics_http`).
//!
//! Labels are bounded sets only — queue, channel, decision, outcome, reason, state, method, code —
//! never a contact, caller or operator id.

use std::sync::OnceLock;
use std::time::Instant;

use dashmap::DashMap;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use smista_core::{Channel, Decision, DivertReason, Engine, Event, Millis, Outcome};

/// Offer decisions, by queue, channel and decision (assigned, queued, diverted).
pub const OFFERS: &str = "smista_offers_total";
/// Diversions by queue and reason (extra_budget, queue_full, closed, no_operators, max_wait).
pub const DIVERSIONS: &str = "smista_diversions_total";
/// Contacts ended, by queue and outcome.
pub const FINISHED: &str = "smista_contacts_finished_total";
/// Offers not accepted in time, by queue.
pub const OFFER_TIMEOUTS: &str = "smista_offer_timeouts_total";
/// Wait from arrival to acceptance, by queue.
pub const WAIT: &str = "smista_wait_seconds";
/// Handle time of completed contacts, by queue.
pub const HANDLE: &str = "smista_handle_seconds";
/// Contacts waiting, by queue.
pub const QUEUE_WAITING: &str = "smista_queue_waiting";
/// Contacts in service, by queue.
pub const QUEUE_IN_SERVICE: &str = "smista_queue_in_service";
/// Longest current wait, by queue.
pub const QUEUE_OLDEST: &str = "smista_queue_oldest_wait_seconds";
/// Service level achieved since start, by queue.
pub const SERVICE_LEVEL: &str = "smista_service_level_ratio";
/// Service level target, by queue.
pub const SERVICE_LEVEL_TARGET: &str = "smista_service_level_target_ratio";
/// Contacts waiting, by queue and segment (queues with segment rules).
pub const SEGMENT_WAITING: &str = "smista_segment_waiting";
/// Service level over the sliding window, by queue and segment (queues with segment rules).
pub const SEGMENT_SERVICE_LEVEL: &str = "smista_segment_service_level_ratio";
/// Service-level target, by queue and segment (queues with segment rules).
pub const SEGMENT_SERVICE_LEVEL_TARGET: &str = "smista_segment_service_level_target_ratio";
/// CPU time the server process has used, user plus system, seconds (Linux).
pub const PROCESS_CPU: &str = "smista_process_cpu_seconds";
/// Resident memory of the server process, bytes (Linux).
pub const PROCESS_RSS: &str = "smista_process_resident_memory_bytes";
/// Logged-in operators by state: idle, busy, paused, wrap_up.
pub const OPERATORS: &str = "smista_operators";
/// Budget ceiling for the current period, by budget.
pub const BUDGET_CEILING: &str = "smista_budget_ceiling_cents";
/// Cost of completed contacts in the current period, by budget.
pub const BUDGET_SETTLED: &str = "smista_budget_settled_cents";
/// Expected cost reserved by admitted contacts not yet ended, by budget.
pub const BUDGET_RESERVED: &str = "smista_budget_reserved_cents";
/// What general contacts may commit by now under pacing, by budget.
pub const BUDGET_PACED: &str = "smista_budget_paced_allowance_cents";
/// Cost charged beyond reservations in the current period, by budget.
pub const BUDGET_OVERRUN: &str = "smista_budget_overrun_cents";
/// Admissions refused for lack of budget in the current period, by budget.
pub const BUDGET_REFUSALS: &str = "smista_budget_refused_admissions";
/// Contacts recovered in service at restart whose completion has not arrived yet.
pub const LEDGER_RECOVERED: &str = "smista_ledger_recovered_in_service";
/// Ledger transactions committed (each may hold many writes).
pub const LEDGER_COMMITS: &str = "smista_ledger_commits_total";
/// Ledger writes committed: cost records, holds, releases, amendments.
pub const LEDGER_WRITES: &str = "smista_ledger_writes_total";
/// Failed ledger commit attempts (retried); any increase needs attention.
pub const LEDGER_ERRORS: &str = "smista_ledger_commit_errors_total";
/// Ledger writes waiting for their commit.
pub const LEDGER_PENDING: &str = "smista_ledger_pending_writes";
/// RPC latency by method.
pub const RPC_DURATION: &str = "smista_rpc_duration_seconds";
/// RPC failures by method and gRPC code.
pub const RPC_ERRORS: &str = "smista_rpc_errors_total";
/// Requests refused at the trust boundary, by reason (missing, bad_token, expired, no_role,
/// wrong_operator, unknown_method, roster).
pub const AUTH_FAILURES: &str = "smista_auth_failures_total";
/// Requests refused by a quota, by class (offer, contact, stream, login, desk, read, admin, caller,
/// streams).
pub const RATE_LIMITED: &str = "smista_rate_limited_total";
/// Connections closed at once at a cap, by reason (cap, per_address, metrics_cap,
/// metrics_per_address).
pub const CONNECTIONS_REFUSED: &str = "smista_connections_refused_total";
/// Connections closed because they did not open (TLS, HTTP/2 preface, first SETTINGS) or finish
/// their metrics request in time, by listener (grpc, metrics).
pub const CONNECTIONS_TIMED_OUT: &str = "smista_connections_timed_out_total";
/// Failed accepts (out of file descriptors, and the like), by listener.
pub const ACCEPT_ERRORS: &str = "smista_accept_errors_total";
/// TLS handshakes that failed or timed out.
pub const TLS_HANDSHAKE_FAILURES: &str = "smista_tls_handshake_failures_total";
/// Certificate and key reloads, by result (ok, error).
pub const TLS_RELOADS: &str = "smista_tls_reloads_total";
/// Settled + reserved + what calls in service cost beyond their reservations, by budget.
pub const BUDGET_EXPOSURE: &str = "smista_budget_exposure_cents";
/// Projected spend at the end of the period at the rate so far, by budget.
pub const BUDGET_PROJECTED: &str = "smista_budget_projected_cents";
/// This node's lease on a budget's current period, cents, by budget.
pub const BUDGET_LEASE: &str = "smista_budget_lease_cents";
/// Seconds since this node last renewed its lease, by budget.
pub const BUDGET_LEASE_AGE: &str = "smista_budget_lease_age_seconds";
/// Lease renewals, by budget and result (ok, error).
pub const BUDGET_LEASE_RENEWALS: &str = "smista_budget_lease_renewals_total";
/// 1 while the server runs open or insecure (no TLS or no authentication on a non-loopback
/// address), else 0.
pub const INSECURE: &str = "smista_insecure";
/// 1 while this node is its group's active (routing) node, 0 while standby.
pub const LEADER: &str = "smista_leader";
/// The active's leadership epoch (0 on a standby).
pub const LEADER_EPOCH: &str = "smista_leader_epoch";
/// Seconds since the active last renewed its leadership lease.
pub const LEADER_RENEW_AGE: &str = "smista_leader_renew_age_seconds";

const WAIT_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0];
const HANDLE_BUCKETS: &[f64] = &[30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0];
const RPC_BUCKETS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The recorder [`install`] put in place (or why it could not).
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> Result<PrometheusHandle, String> {
    RECORDER
        .get_or_init(|| {
            let b = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(WAIT.into()), WAIT_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HANDLE.into()), HANDLE_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(RPC_DURATION.into()), RPC_BUCKETS))
                .map_err(|e| e.to_string())?;
            let handle = b.install_recorder().map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(OFFERS, Unit::Count, "Offer decisions by queue, channel and decision.");
    describe_counter!(DIVERSIONS, Unit::Count, "Contacts diverted, by queue and reason.");
    describe_counter!(FINISHED, Unit::Count, "Contacts ended, by queue and outcome.");
    describe_counter!(OFFER_TIMEOUTS, Unit::Count, "Offers not accepted before their deadline, by queue.");
    describe_histogram!(WAIT, Unit::Seconds, "Wait from arrival to acceptance by an operator.");
    describe_histogram!(HANDLE, Unit::Seconds, "Handle time of completed contacts.");
    describe_gauge!(QUEUE_WAITING, Unit::Count, "Contacts waiting in the queue.");
    describe_gauge!(QUEUE_IN_SERVICE, Unit::Count, "Contacts of the queue in service.");
    describe_gauge!(QUEUE_OLDEST, Unit::Seconds, "Longest current wait in the queue.");
    describe_gauge!(SERVICE_LEVEL, "Share of contacts answered within the threshold since start.");
    describe_gauge!(SERVICE_LEVEL_TARGET, "Service-level target share of the queue.");
    describe_gauge!(OPERATORS, Unit::Count, "Operators by state.");
    describe_gauge!(PROCESS_CPU, Unit::Seconds, "CPU time used by the server process, user plus system.");
    describe_gauge!(PROCESS_RSS, Unit::Bytes, "Resident memory of the server process.");
    describe_gauge!(SEGMENT_WAITING, Unit::Count, "Contacts of the segment waiting in the queue.");
    describe_gauge!(SEGMENT_SERVICE_LEVEL, "Share of the segment's contacts answered within its threshold.");
    describe_gauge!(SEGMENT_SERVICE_LEVEL_TARGET, "Service-level target of the segment in the queue.");
    describe_gauge!(BUDGET_CEILING, "Budget ceiling of the current period, in euro cents.");
    describe_gauge!(BUDGET_SETTLED, "Cost of completed contacts in the current period, in euro cents.");
    describe_gauge!(BUDGET_RESERVED, "Expected cost reserved by admitted contacts not yet ended, in euro cents.");
    describe_gauge!(BUDGET_PACED, "Spend general contacts may commit by now under pacing, in euro cents.");
    describe_gauge!(BUDGET_OVERRUN, "Cost charged beyond reservations in the current period, in euro cents.");
    describe_gauge!(BUDGET_REFUSALS, "Admissions refused for lack of budget in the current period.");
    describe_gauge!(LEDGER_RECOVERED, "Contacts found in service at restart whose completion has not arrived yet.");
    describe_counter!(LEDGER_COMMITS, Unit::Count, "Ledger transactions committed (group commit).");
    describe_counter!(
        LEDGER_WRITES,
        Unit::Count,
        "Ledger writes committed: cost records, holds, releases, amendments."
    );
    describe_counter!(LEDGER_ERRORS, Unit::Count, "Failed ledger commit attempts; each is retried.");
    describe_gauge!(LEDGER_PENDING, "Ledger writes waiting for their commit.");
    describe_histogram!(RPC_DURATION, Unit::Seconds, "gRPC handling time by method.");
    describe_counter!(RPC_ERRORS, Unit::Count, "gRPC requests that failed, by method and code.");
    describe_counter!(AUTH_FAILURES, Unit::Count, "Requests refused at the trust boundary, by reason.");
    describe_counter!(RATE_LIMITED, Unit::Count, "Requests refused by a quota, by class.");
    describe_counter!(CONNECTIONS_REFUSED, Unit::Count, "Connections closed at once at a connection cap, by reason.");
    describe_counter!(
        CONNECTIONS_TIMED_OUT,
        Unit::Count,
        "Connections closed for not opening (TLS, HTTP/2 preface) or not finishing a metrics request in time."
    );
    describe_counter!(ACCEPT_ERRORS, Unit::Count, "Failed accepts (e.g. out of file descriptors), by listener.");
    describe_counter!(TLS_HANDSHAKE_FAILURES, Unit::Count, "TLS handshakes that failed or timed out.");
    describe_counter!(TLS_RELOADS, Unit::Count, "Certificate, key and JWKS reloads, by result.");
    describe_gauge!(BUDGET_EXPOSURE, "Settled + reserved + running overrun of calls in service, by budget.");
    describe_gauge!(BUDGET_PROJECTED, "Projected end-of-period spend at the rate so far, by budget.");
    describe_gauge!(BUDGET_LEASE, "This node's lease on the budget's current period (several nodes).");
    describe_gauge!(BUDGET_LEASE_AGE, Unit::Seconds, "Time since this node last renewed its budget lease.");
    describe_counter!(BUDGET_LEASE_RENEWALS, Unit::Count, "Budget lease renewals, by result.");
    describe_gauge!(INSECURE, "1 while the server accepts unauthenticated or plaintext clients beyond loopback.");
    describe_gauge!(LEADER, "1 while this node is its active/standby group's active node, 0 on a standby.");
    describe_gauge!(LEADER_EPOCH, "The active node's leadership epoch (0 on a standby).");
    describe_gauge!(LEADER_RENEW_AGE, Unit::Seconds, "Time since the active last renewed its leadership lease.");
}

/// The handles of one queue's per-event series, each registered on first use: afterwards an
/// event costs an atomic add or a histogram push, not a label allocation and a registry lookup
/// (which was about a tenth of the server's own CPU per contact, see `benches/README.md`).
#[derive(Default)]
struct QueueSeries {
    /// By channel, then decision (assigned, queued, diverted).
    offers: [[OnceLock<Counter>; 3]; 4],
    /// By reason, in [`reason_index`] order.
    diversions: [OnceLock<Counter>; 5],
    /// By outcome, in [`outcome_index`] order.
    finished: [OnceLock<Counter>; 6],
    timeouts: OnceLock<Counter>,
    wait: OnceLock<Histogram>,
    handle: OnceLock<Histogram>,
}

/// Series handles by a label value (a queue, an RPC method): read on every event by every
/// thread, written once per new value. An open-addressing table of write-once slots, so a lookup
/// is a few plain loads, with no lock word for the threads to pass between their caches (a
/// `DashMap`'s read lock was one more contended cache line per event). Keys are bounded
/// (configured queues, RPC methods); past [`CACHE_SLOTS`] of them a locked map takes the rest.
struct Cache<V: 'static> {
    slots: [OnceLock<(Box<str>, Box<V>)>; CACHE_SLOTS],
    add: parking_lot::Mutex<()>,
    overflow: OnceLock<DashMap<Box<str>, V>>,
}

/// Slots of a [`Cache`].
const CACHE_SLOTS: usize = 512;

impl<V: Default> Cache<V> {
    const fn new() -> Cache<V> {
        Cache {
            slots: [const { OnceLock::new() }; CACHE_SLOTS],
            add: parking_lot::Mutex::new(()),
            overflow: OnceLock::new(),
        }
    }

    /// FNV-1a: keys are configuration names, not chosen by callers.
    fn home(key: &str) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h as usize) % CACHE_SLOTS
    }

    fn with(&self, key: &str, f: impl FnOnce(&V)) {
        let home = Self::home(key);
        for i in 0..CACHE_SLOTS {
            let slot = &self.slots[(home + i) % CACHE_SLOTS];
            match slot.get() {
                Some((k, v)) if **k == *key => return f(v),
                Some(_) => continue,
                None => {
                    // Slots fill in probe order under `add`: an empty one ends the search.
                    {
                        let _one_writer = self.add.lock();
                        if slot.get().is_none() {
                            let _ = slot.set((key.into(), Box::default()));
                        }
                    }
                    match slot.get() {
                        Some((k, v)) if **k == *key => return f(v),
                        _ => continue,
                    }
                }
            }
        }
        let map = self.overflow.get_or_init(DashMap::new);
        if let Some(v) = map.get(key) {
            return f(&v);
        }
        f(&map.entry(key.into()).or_default());
    }
}

/// Per-queue series, by queue name.
static QUEUE_SERIES: Cache<QueueSeries> = Cache::new();
/// RPC latency histograms, by method.
static RPC_SERIES: Cache<OnceLock<Histogram>> = Cache::new();

/// Runs `f` on the handles cached for `key`, created empty on first use, if smista's recorder is
/// installed: there is nothing to record to otherwise, and a handle registered before the
/// recorder exists would stay a no-op for good.
fn with_cached<V: Default>(cache: &'static Cache<V>, key: &str, f: impl FnOnce(&V)) {
    if !matches!(RECORDER.get(), Some(Ok(_))) {
        return;
    }
    cache.with(key, f);
}

fn with_queue(queue: &str, f: impl FnOnce(&QueueSeries)) {
    with_cached(&QUEUE_SERIES, queue, f);
}

fn reason_index(r: DivertReason) -> usize {
    match r {
        DivertReason::ExtraBudget => 0,
        DivertReason::QueueFull => 1,
        DivertReason::Closed => 2,
        DivertReason::NoOperators => 3,
        DivertReason::MaxWait => 4,
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Completed => 0,
        Outcome::Diverted => 1,
        Outcome::Abandoned => 2,
        Outcome::CancelledInService => 3,
        Outcome::Unreachable => 4,
        Outcome::Transferred => 5,
    }
}

/// Counts an offer decision.
pub fn record_decision(queue: &str, channel: Channel, d: &Decision) {
    let (i, decision) = match d {
        Decision::Assigned { .. } => (0, "assigned"),
        Decision::Queued { .. } => (1, "queued"),
        Decision::Diverted { .. } => (2, "diverted"),
    };
    with_queue(queue, |s| {
        s.offers[channel.index()][i]
            .get_or_init(
                || counter!(OFFERS, "queue" => queue.to_owned(), "channel" => channel.as_str(), "decision" => decision),
            )
            .increment(1);
    });
}

/// Records what the engine reported.
pub fn record_events(events: &[Event]) {
    for e in events {
        match e {
            Event::Diverted { queue, reason, .. } => with_queue(queue, |s| {
                s.diversions[reason_index(*reason)]
                    .get_or_init(|| counter!(DIVERSIONS, "queue" => queue.to_string(), "reason" => reason.as_str()))
                    .increment(1);
            }),
            Event::Finished { queue, outcome, handle_ms, .. } => with_queue(queue, |s| {
                s.finished[outcome_index(*outcome)]
                    .get_or_init(|| counter!(FINISHED, "queue" => queue.to_string(), "outcome" => outcome.as_str()))
                    .increment(1);
                if *outcome == Outcome::Completed {
                    s.handle
                        .get_or_init(|| histogram!(HANDLE, "queue" => queue.to_string()))
                        .record(*handle_ms as f64 / 1000.0);
                }
            }),
            Event::OfferTimedOut { queue, .. } => with_queue(queue, |s| {
                s.timeouts.get_or_init(|| counter!(OFFER_TIMEOUTS, "queue" => queue.to_string())).increment(1);
            }),
            Event::Accepted { queue, waited_ms, .. } => with_queue(queue, |s| {
                s.wait
                    .get_or_init(|| histogram!(WAIT, "queue" => queue.to_string()))
                    .record(*waited_ms as f64 / 1000.0);
            }),
            _ => {}
        }
    }
}

/// Refreshes the gauges from the engine (called on the tick, about once a second).
pub fn refresh_gauges(engine: &Engine, now: Millis) {
    if let Some((cpu, rss)) = process_usage() {
        gauge!(PROCESS_CPU).set(cpu);
        gauge!(PROCESS_RSS).set(rss);
    }
    // Queues only: a snapshot of every operator would cost the gauges one entry per desk.
    for q in &engine.queue_views(now) {
        gauge!(QUEUE_WAITING, "queue" => q.name.clone()).set(f64::from(q.waiting));
        gauge!(QUEUE_IN_SERVICE, "queue" => q.name.clone()).set(f64::from(q.in_service));
        gauge!(QUEUE_OLDEST, "queue" => q.name.clone()).set(q.oldest_wait_ms as f64 / 1000.0);
        gauge!(SERVICE_LEVEL, "queue" => q.name.clone()).set(q.service_level);
        gauge!(SERVICE_LEVEL_TARGET, "queue" => q.name.clone()).set(q.service_level_target);
        for s in &q.segments {
            let labels = [("queue", q.name.clone()), ("segment", s.segment.as_str().to_owned())];
            gauge!(SEGMENT_WAITING, &labels).set(f64::from(s.waiting));
            gauge!(SEGMENT_SERVICE_LEVEL, &labels).set(s.service_level);
            gauge!(SEGMENT_SERVICE_LEVEL_TARGET, &labels).set(s.service_level_target);
        }
    }
    for (state, n) in engine.operator_counts() {
        gauge!(OPERATORS, "state" => state).set(f64::from(n));
    }
}

/// Refreshes the per-budget gauges.
pub fn refresh_budget_gauges(book: &smista_core::book::BudgetBook, now: Millis) {
    for v in book.views(now) {
        gauge!(BUDGET_CEILING, "budget" => v.id.clone()).set(v.ceiling_cents as f64);
        gauge!(BUDGET_SETTLED, "budget" => v.id.clone()).set(v.settled_cents as f64);
        gauge!(BUDGET_RESERVED, "budget" => v.id.clone()).set(v.reserved_cents as f64);
        gauge!(BUDGET_PACED, "budget" => v.id.clone()).set(v.paced_allowance_cents as f64);
        gauge!(BUDGET_OVERRUN, "budget" => v.id.clone()).set(v.overrun_cents as f64);
        gauge!(BUDGET_REFUSALS, "budget" => v.id.clone()).set(v.refusals as f64);
        gauge!(BUDGET_EXPOSURE, "budget" => v.id.clone()).set(v.exposure_cents as f64);
        gauge!(BUDGET_PROJECTED, "budget" => v.id.clone()).set(v.projected_cents as f64);
    }
}

/// Sets the ledger's counters and gauges.
pub fn refresh_ledger(ledger: Option<&smista_ledger::Ledger>, recovered: usize) {
    gauge!(LEDGER_RECOVERED).set(recovered as f64);
    if let Some(l) = ledger {
        let st = l.stats();
        counter!(LEDGER_COMMITS).absolute(st.commits);
        counter!(LEDGER_WRITES).absolute(st.writes);
        counter!(LEDGER_ERRORS).absolute(st.errors);
        gauge!(LEDGER_PENDING).set(l.pending() as f64);
    }
}

/// Times one RPC; records latency (and the error code, if any) when finished.
#[derive(Debug)]
pub struct RpcTimer {
    method: &'static str,
    start: Instant,
}

impl RpcTimer {
    /// Starts timing `method`.
    #[must_use]
    pub fn start(method: &'static str) -> Self {
        RpcTimer { method, start: Instant::now() }
    }

    /// Records the outcome.
    pub fn finish<T>(self, r: &Result<T, tonic::Status>) {
        let elapsed = self.start.elapsed().as_secs_f64();
        with_cached(&RPC_SERIES, self.method, |h| {
            h.get_or_init(|| histogram!(RPC_DURATION, "method" => self.method)).record(elapsed);
        });
        if let Err(s) = r {
            counter!(RPC_ERRORS, "method" => self.method, "code" => code_name(s.code())).increment(1);
        }
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code;
    match c {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Counts a request refused at the trust boundary.
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// Counts a request refused by a quota.
pub fn rate_limited(class: &'static str) {
    counter!(RATE_LIMITED, "class" => class).increment(1);
}

/// Counts a connection closed at a cap (`reason`: cap, per_address, metrics_cap, ...).
pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// Counts a connection closed at its deadline.
pub fn connection_timed_out(listener: &'static str) {
    counter!(CONNECTIONS_TIMED_OUT, "listener" => listener).increment(1);
}

/// Counts a failed accept.
pub fn accept_failed(listener: &'static str) {
    counter!(ACCEPT_ERRORS, "listener" => listener).increment(1);
}

/// Counts a failed TLS handshake.
pub fn tls_handshake_failed() {
    counter!(TLS_HANDSHAKE_FAILURES).increment(1);
}

/// Counts a reload of the certificates and keys.
pub fn tls_reloaded(ok: bool) {
    counter!(TLS_RELOADS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// Sets the insecure gauge.
pub fn set_insecure(insecure: bool) {
    gauge!(INSECURE).set(if insecure { 1.0 } else { 0.0 });
}

/// This node's role in its active/standby group.
pub fn set_leader(group: &str, epoch: Option<i64>) {
    gauge!(LEADER, "group" => group.to_owned()).set(if epoch.is_some() { 1.0 } else { 0.0 });
    gauge!(LEADER_EPOCH, "group" => group.to_owned()).set(epoch.unwrap_or(0) as f64);
}

/// Time since the active's last successful leadership renewal.
pub fn leader_renew_age(group: &str, age: std::time::Duration) {
    gauge!(LEADER_RENEW_AGE, "group" => group.to_owned()).set(age.as_secs_f64());
}

/// Counts a lease renewal.
pub fn lease_renewed(budget: &str, ok: bool) {
    counter!(BUDGET_LEASE_RENEWALS, "budget" => budget.to_owned(), "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

/// Sets a budget's lease gauges.
pub fn lease_state(budget: &str, granted_cents: i64, age_ms: i64) {
    gauge!(BUDGET_LEASE, "budget" => budget.to_owned()).set(granted_cents as f64);
    gauge!(BUDGET_LEASE_AGE, "budget" => budget.to_owned()).set(age_ms.max(0) as f64 / 1000.0);
}

/// This process's CPU time (seconds, user plus system) and resident memory (bytes), from
/// `/proc/self` (`None` elsewhere than Linux).
#[must_use]
pub fn process_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), itself in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Clock ticks and page size as on every Linux this runs on (100 Hz, 4 KiB).
    Some(((utime + stime) / 100.0, pages * 4096.0))
}
