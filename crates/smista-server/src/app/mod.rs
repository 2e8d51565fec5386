//! The state the services share ([`Shared`]) and what it owns: the event hub, contact trails,
//! staffed time, booked callbacks, queue overrides, the roster and budget leases. Everything
//! above (the services, the background tasks, the node) takes an `Arc<Shared>`; nothing here
//! imports them.

pub mod accounting;
pub mod appointments;
pub mod callbacks;
pub mod history;
pub mod hub;
pub mod lease;
pub mod queues;
pub mod roster;
pub mod staffing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use smista_core::book::{BudgetBook, CostRecord, HoldRecord, RecoveredError};
use smista_core::{DivertReason, Engine, Event, Millis, Outcome};
use tokio::sync::watch;
use tonic::Status;

use smista_ledger::{ContactEnd, Key, Ledger};

use crate::app::hub::{EventLog, OfferBoard};
use crate::clock::Clock;

/// How a contact that ended before a restart ended, read back from the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Final outcome.
    pub outcome: Outcome,
    /// The operator who had it in service ("" if none did).
    pub operator: String,
    /// Handle time, ms.
    pub handle_ms: u64,
    /// Wrap-up applied, ms (0 when unknown: cost records do not keep it).
    pub wrap_up_ms: u64,
}

impl From<ContactEnd> for Ended {
    fn from(e: ContactEnd) -> Self {
        Ended { outcome: e.outcome, operator: e.operator, handle_ms: e.handle_ms, wrap_up_ms: e.wrap_up_ms }
    }
}

impl From<&CostRecord> for Ended {
    fn from(r: &CostRecord) -> Self {
        Ended { outcome: r.outcome, operator: r.operator.clone(), handle_ms: r.handle_ms, wrap_up_ms: 0 }
    }
}

/// What every service shares.
#[derive(Debug)]
pub struct Shared {
    /// The routing engine.
    pub engine: Arc<Engine>,
    /// The budgets the engine consults.
    pub book: Arc<BudgetBook>,
    /// The durable ledger behind the book (`None`: `[ledger] kind = "none"`).
    pub ledger: Option<Arc<Ledger>>,
    /// Queue -> the budget paying its operators.
    pub queue_budget: HashMap<String, String>,
    /// Extra-budget diversions per budget in its current period: (period label, count).
    pub extra_budget: Mutex<HashMap<String, (String, u64)>>,
    /// Engine time.
    pub clock: Clock,
    /// Contact events for `StreamEvents`.
    pub log: Arc<EventLog>,
    /// Offers for `WatchOffers`.
    pub board: OfferBoard,
    /// Set when shutting down: new offers get UNAVAILABLE.
    pub draining: AtomicBool,
    /// Flips to true at shutdown; streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Admission limit on offers, for the whole server.
    pub limiter: Option<DefaultDirectRateLimiter>,
    /// Credentials and quotas (the same the transport layer checks).
    pub gate: Arc<crate::edge::auth::Gate>,
    /// Bounds on values admins may set.
    pub bounds: crate::config::limits::LimitsSection,
    /// Operators logged in paused because a contact of theirs from before a restart is still in
    /// service; made available again when the last one ends.
    pub recovering: DashMap<String, ()>,
    /// Contacts in service before a restart or takeover with an operator no budget paid for
    /// them, from their service records: like recovered holds (see [`Shared::recovered`]) but
    /// with nothing to charge.
    pub serving: DashMap<String, HoldRecord>,
    /// The trails of live contacts, for their detail records.
    pub history: crate::app::history::History,
    /// Staffed time per group, for occupancy.
    pub staffing: crate::app::staffing::Staffing,
    /// Operator accounting (every state change to the ledger) and the pause reason codes.
    pub accounting: crate::app::accounting::Accounting,
    /// The privacy settings (`[privacy]`).
    pub privacy: crate::config::privacy::PrivacySection,
    /// The history's settings (`[history]`).
    pub history_cfg: crate::config::history::HistorySection,
    /// The queues' service-level thresholds, for reports.
    pub sl_thresholds: std::collections::BTreeMap<String, u64>,
    /// This node's id among several (empty: alone).
    pub node_id: String,
    /// This node's budget leases (empty unless `[cluster] node_id` with the PostgreSQL ledger).
    pub leases: crate::app::lease::Leases,
    /// Availability and bookings of the queues that take appointments.
    pub appointments: Arc<smista_core::appointments::AppointmentBook>,
    /// Queue settings admins changed (durable through the ledger).
    pub queue_overrides: crate::app::queues::Overrides,
    /// Callbacks booked for later.
    pub scheduled: crate::app::callbacks::Scheduled,
    /// Who each operator is: the roster every Login is bound to.
    pub roster: crate::app::roster::Roster,
    /// Engine calls and the publishing of their events, per contact (see [`Shared::about`]).
    pub sections: Sections,
    /// Contacts an operator transferred into a queue before this node's life began and that
    /// have not ended (from the ledger's transfer records): offered again, they go there.
    pub transfers: DashMap<String, smista_ledger::TransferRecord>,
}

/// Makes "the change is made" and "its writes are queued" one step for every request that can
/// see it. An engine call changes a contact at once, but the records its events carry (a
/// service record, an end record) are handed to the ledger afterwards, by
/// [`Shared::publish`]. A retried request that found the change already made would otherwise
/// find nothing pending in the ledger in that gap and answer before the change was durable.
/// So requests about one contact run their engine call and its publishing under that
/// contact's stripe, and the tick, which changes contacts nobody asked about, under `global`;
/// a request that changed nothing itself waits for both before it asks the ledger
/// ([`Shared::acknowledge`]). Never held across an `.await`.
#[derive(Debug)]
pub struct Sections {
    stripes: Box<[Stripe]>,
    hasher: foldhash::fast::RandomState,
    global: Mutex<()>,
}

/// One stripe, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(Mutex<()>);

impl Default for Sections {
    fn default() -> Self {
        Sections {
            stripes: (0..64).map(|_| Stripe::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            global: Mutex::new(()),
        }
    }
}

impl Sections {
    /// The section of requests about `contact`.
    pub fn contact(&self, contact: &str) -> parking_lot::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(contact) as usize) % self.stripes.len();
        self.stripes[i].0.lock()
    }

    /// The sections of several contacts at once (a hand-over changes a contact and its
    /// consultation; a logout what the operator holds), taken in one order so that two such
    /// requests never wait for each other.
    pub fn contacts(&self, contacts: &[&str]) -> Vec<parking_lot::MutexGuard<'_, ()>> {
        use std::hash::BuildHasher;
        let mut stripes: Vec<usize> =
            contacts.iter().map(|c| (self.hasher.hash_one(*c) as usize) % self.stripes.len()).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|i| self.stripes[i].0.lock()).collect()
    }

    /// The section of the tick (and of anything else that changes contacts nobody asked about).
    pub fn global(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.global.lock()
    }
}

/// What an engine call reported, as published: its events, and the tickets of the operator
/// state changes the ledger was given for them.
#[derive(Debug, Default)]
pub struct Published {
    /// The events.
    pub events: Vec<Event>,
    /// One per operator state change queued.
    pub tickets: Vec<smista_ledger::Ticket>,
}

/// Why an operator is paused at login after a restart.
pub const RECOVERY_PAUSE: &str = "contact in service from before a restart";

impl Shared {
    /// Shared state around `engine`.
    #[must_use]
    pub fn new(
        engine: Arc<Engine>,
        book: Arc<BudgetBook>,
        ledger: Option<Arc<Ledger>>,
        clock: Clock,
        cfg: &crate::config::Config,
        gate: Arc<crate::edge::auth::Gate>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let limiter = std::num::NonZeroU32::new(cfg.server.max_offers_per_second)
            .map(|n| RateLimiter::direct(Quota::per_second(n)));
        // The stream's epoch: this life's number in the ledger, or without one the wall time of
        // start-up, so that it grows with every restart either way.
        let epoch = ledger
            .as_ref()
            .map(|l| u64::try_from(l.epoch()).unwrap_or(0))
            .filter(|e| *e > 0)
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64));
        let log = Arc::new(EventLog::new(100_000, engine.queue_names(), epoch, cfg.server.event_flush_ms));
        let queue_budget = cfg.queues.iter().filter_map(|q| q.budget.clone().map(|b| (q.name.clone(), b))).collect();
        Shared {
            engine,
            book,
            ledger,
            queue_budget,
            extra_budget: Mutex::new(HashMap::new()),
            clock,
            log,
            board: OfferBoard::default(),
            draining: AtomicBool::new(false),
            shutdown,
            limiter,
            gate,
            bounds: cfg.limits.clone(),
            recovering: DashMap::new(),
            transfers: DashMap::new(),
            serving: DashMap::new(),
            history: crate::app::history::History::new(&cfg.groups, &cfg.history),
            history_cfg: cfg.history.clone(),
            staffing: crate::app::staffing::Staffing::default(),
            accounting: crate::app::accounting::Accounting::new(cfg.desk_pause_reasons()),
            privacy: cfg.privacy.clone(),
            sl_thresholds: cfg.queues.iter().map(|q| (q.name.clone(), q.service_level_threshold_ms)).collect(),
            node_id: cfg.cluster.node_id.clone(),
            leases: DashMap::new(),
            appointments: Arc::new(smista_core::appointments::AppointmentBook::new(
                cfg.engine_config().appointment_rules(),
            )),
            queue_overrides: crate::app::queues::Overrides::default(),
            scheduled: crate::app::callbacks::Scheduled::default(),
            roster: crate::app::roster::Roster::new(
                cfg.roster.mode(cfg.auth.configured()),
                cfg.auth.jwt.as_ref().is_some_and(|j| j.group_claim.is_some()),
                cfg.groups.clone(),
            ),
            sections: Sections::default(),
        }
    }

    /// Calls the engine about `contact` (`f` gets the events vector) and publishes what it
    /// reported, in the contact's section (see [`Sections`]); returns `f`'s result and the
    /// events, for [`Shared::acknowledge`].
    pub fn about<T>(&self, contact: &str, now: Millis, f: impl FnOnce(&mut Vec<Event>) -> T) -> (T, Published) {
        let _section = self.sections.contact(contact);
        let mut events = Vec::new();
        let r = f(&mut events);
        let tickets = self.publish(&events, now);
        (r, Published { events, tickets })
    }

    /// [`Shared::about`] for a call that changes several contacts (`contacts`, the first is the
    /// one the reply is about): their events are published in the order the engine made them
    /// before any other request about one of them publishes its own.
    pub fn about_all<T>(&self, contacts: &[&str], now: Millis, f: impl FnOnce(&mut Vec<Event>) -> T) -> (T, Published) {
        let _sections = self.sections.contacts(contacts);
        let mut events = Vec::new();
        let r = f(&mut events);
        let tickets = self.publish(&events, now);
        (r, Published { events, tickets })
    }

    /// Waits until the state of `contact` that a reply is about to report is durable: what this
    /// request changed (its `events`), and also what an earlier request or the tick changed and
    /// this one only found (a retry: the engine's idempotent path reports nothing). Every reply
    /// that says a contact was accepted, completed, cancelled or diverted passes here, first
    /// try or retry. Fails (UNAVAILABLE, or what the ledger says) when the ledger cannot make
    /// it durable: fenced, closing.
    pub async fn acknowledge(&self, contact: &str, published: &Published) -> Result<(), Status> {
        let Some(ledger) = &self.ledger else { return Ok(()) };
        let events = &published.events;
        if !events.iter().any(|e| e.contact().is_some_and(|c| **c == *contact)) {
            // Changed before this request: by a request about the same contact (its section
            // ended before ours began, so its writes are queued) or by the tick, whose section
            // may still be publishing: wait for it to end.
            drop(self.sections.global());
        }
        ledger.durable(&Key::Contact(contact.to_owned())).await.map_err(crate::wire::error::ledger_status)?;
        self.persist_beside(published, Some(contact)).await
    }

    /// Publishes what an engine call reported: metrics, offer board, event log. Returns the
    /// tickets of the operator state changes it queued for the ledger (a reply about them
    /// waits for those, see [`Shared::persist`]).
    pub fn publish(&self, events: &[Event], now: Millis) -> Vec<smista_ledger::Ticket> {
        let mut tickets = Vec::new();
        if events.is_empty() {
            return tickets;
        }
        crate::metrics::record_events(events);
        for e in events {
            if let Event::Diverted { queue, reason: DivertReason::ExtraBudget, .. } = e {
                if let Some(b) = self.queue_budget.get(&**queue) {
                    let period = self.book.period_label(b, now).unwrap_or_default();
                    let mut m = self.extra_budget.lock();
                    let entry = m.entry(b.clone()).or_insert_with(|| (period.clone(), 0));
                    if entry.0 != period {
                        *entry = (period, 0);
                    }
                    entry.1 += 1;
                }
            }
        }
        let unix = self.clock.unix_ms(now);
        // Numbered on the stream before any desk can see an offer on the board: a desk that
        // accepts at once publishes its acceptance (under the contact's section) after the
        // offer's number, even when the offer came from another contact's request or the tick.
        self.log.publish(events, now, unix);
        self.board.apply(events, now);
        let unix_ms = i64::try_from(unix).unwrap_or(i64::MAX);
        let clock = &self.clock;
        let ended = self.history.apply(events, unix_ms, |m| i64::try_from(clock.unix_ms(m)).unwrap_or(i64::MAX));
        if self.history_cfg.enabled {
            self.staffing.apply(events, unix_ms);
        }
        if let Some(ledger) = &self.ledger {
            if self.history_cfg.enabled {
                // Before the contacts' records: a reply waiting for those finds these durable.
                for c in self.accounting.apply(events, unix_ms) {
                    tickets.push(ledger.operator_changed(c));
                }
            }
            for e in events {
                if let Event::Accepted { contact, queue, operator, channel, waited_ms, held: false } = e {
                    ledger.serving(HoldRecord {
                        contact: contact.to_string(),
                        budget: String::new(),
                        period: String::new(),
                        amount_cents: 0,
                        queue: queue.to_string(),
                        group: String::new(),
                        operator: operator.to_string(),
                        channel: *channel,
                        accepted_unix_ms: unix_ms,
                        arrived_unix_ms: unix_ms.saturating_sub(i64::try_from(*waited_ms).unwrap_or(0)),
                    });
                }
            }
            for e in events {
                if let Event::Transferred {
                    contact,
                    queue,
                    operator,
                    to,
                    to_operator,
                    accepted,
                    arrived,
                    pinned_until,
                    handle_ms,
                    wrap_up_ms,
                    charged,
                    ..
                } = e
                {
                    let unix = |m: Millis| i64::try_from(clock.unix_ms(m)).unwrap_or(i64::MAX);
                    // A hand-over at the end of a consultation (its step follows in the batch).
                    let consultation = events.iter().find_map(|x| match x {
                        Event::Consultation {
                            contact: c,
                            consultation,
                            step: smista_core::ConsultStep::HandedOver,
                            ..
                        } if c == contact => Some(consultation.to_string()),
                        _ => None,
                    });
                    ledger.transferred(smista_ledger::TransferRecord {
                        contact: contact.to_string(),
                        at_unix_ms: unix_ms,
                        from_operator: operator.to_string(),
                        from_queue: queue.to_string(),
                        to_queue: to.as_deref().unwrap_or("").to_owned(),
                        to_operator: to_operator.as_deref().unwrap_or("").to_owned(),
                        pinned_until_unix_ms: pinned_until.map_or(0, unix),
                        handle_ms: *handle_ms,
                        wrap_up_ms: *wrap_up_ms,
                        arrived_unix_ms: unix(*arrived),
                        paid: charged.iter().map(|(b, _)| b.to_string()).collect(),
                        consultation: consultation.unwrap_or_default(),
                        accepted_unix_ms: unix(*accepted),
                    });
                }
            }
            for end in ended {
                ledger.ended(end);
            }
        }
        tickets
    }

    /// Waits until what the engine call that reported `events` gave the ledger is durable: the
    /// holds of accepted contacts and the cost records of finished ones. An RPC that changed
    /// money is acknowledged only after this; if the ledger has stopped it gets UNAVAILABLE and
    /// the client retries (every such RPC is idempotent).
    pub async fn persist(&self, published: &Published) -> Result<(), Status> {
        self.persist_beside(published, None).await
    }

    /// [`persist`](Self::persist), but for the contacts other than `done`, already waited for.
    /// The operators' state changes the events made (their accounting) too: each by its own
    /// ticket, so that an operator's next change, made meanwhile, does not hold this reply for
    /// another commit.
    async fn persist_beside(&self, published: &Published, done: Option<&str>) -> Result<(), Status> {
        let Some(ledger) = &self.ledger else { return Ok(()) };
        for t in &published.tickets {
            ledger.durable_ticket(t.clone()).await.map_err(crate::wire::error::ledger_status)?;
        }
        for e in &published.events {
            if let Event::Accepted { contact, .. } | Event::Finished { contact, .. } = e {
                if done != Some(&**contact) {
                    ledger
                        .durable(&Key::Contact(contact.to_string()))
                        .await
                        .map_err(crate::wire::error::ledger_status)?;
                }
            }
        }
        Ok(())
    }

    /// Ends a contact the engine does not know, after a restart: one that was in service with a
    /// budgeted operator when the process stopped (its recovered hold is settled now; `operator`
    /// must be the one it was with and completes it, `None` when the caller hung up), or one
    /// that ended before the restart (a replayed request: nothing is charged again; its cost
    /// record, or its end record if it had no cost, tells how it ended). `None` if neither. The
    /// handle time runs to `ended` (the desk's stated end, at most `now`).
    /// With an `operator`, a contact that ended otherwise than completed by that operator is
    /// FAILED_PRECONDITION, as it was before the restart.
    pub async fn end_after_restart(
        &self,
        contact: &str,
        operator: Option<&str>,
        ended: Millis,
        now: Millis,
    ) -> Result<Option<Ended>, Status> {
        let ended = ended.min(now);
        let Some(ledger) = &self.ledger else { return Ok(None) };
        let key = Key::Contact(contact.to_owned());
        let outcome = if operator.is_some() { Outcome::Completed } else { Outcome::CancelledInService };
        if let Some(end) = self.end_carried(contact, operator, outcome, ended, now, true, &[]).await? {
            self.end_carried_consultations(contact, now).await?;
            return Ok(Some(end));
        }
        ledger.durable(&key).await.map_err(crate::wire::error::ledger_status)?;
        let end = match ledger.settled(contact).await.map_err(crate::wire::error::ledger_status)? {
            Some(rec) => Ended::from(&rec),
            None => match ledger.end_of(contact).await.map_err(crate::wire::error::ledger_status)? {
                Some(e) => Ended::from(e),
                None => return Ok(None),
            },
        };
        match operator {
            Some(o) if end.operator != o || end.outcome != Outcome::Completed => {
                Err(Status::failed_precondition(format!("contact `{contact}` ended without being completed by `{o}`")))
            }
            _ => Ok(Some(end)),
        }
    }

    /// Ends a contact carried across a restart or a takeover (its recovered hold, or its service
    /// record) with `outcome`: completed or transferred out by `operator` (who must be the one
    /// it was with), or, with no operator, hung up in service. Its end is durable before this
    /// returns. `None` if it is not such a contact (or a concurrent request ended it first).
    /// With `ends` false only this leg ends (a transfer into a queue: the contact goes on, and
    /// the caller records the transfer): no end record, not remembered as ended. When it ends,
    /// the stream gets `prelude` and its `finished`.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_carried(
        &self,
        contact: &str,
        operator: Option<&str>,
        outcome: Outcome,
        ended: Millis,
        now: Millis,
        ends: bool,
        prelude: &[Event],
    ) -> Result<Option<Ended>, Status> {
        let ended = ended.min(now);
        let Some(ledger) = &self.ledger else { return Ok(None) };
        let key = Key::Contact(contact.to_owned());
        // A consultation's record says which contact it was about (reports count it apart); a
        // transferred contact's records, its first queue and its transfers.
        let (consultation_of, transfers) = if ends && self.recovered(contact).is_some() {
            let c = ledger.consultation(contact).await.map_err(crate::wire::error::ledger_status)?;
            let t = ledger.transfers_of(contact).await.map_err(crate::wire::error::ledger_status)?;
            (c.map(|r| r.contact).unwrap_or_default(), t)
        } else {
            (String::new(), Vec::new())
        };
        let detail_of = |h: &HoldRecord, cost: Option<i64>| {
            let mut d = self.recovered_detail(h, cost, consultation_of.clone());
            if let Some(first) = transfers.first() {
                d.first_queue = first.from_queue.clone();
                d.arrived_unix_ms = first.arrived_unix_ms;
                d.received_unix_ms = first.arrived_unix_ms;
            }
            d.transfers = transfers.iter().map(|t| (t.from_queue.clone(), t.to_queue.clone())).collect();
            d
        };
        if let Some(h) = self.serving.get(contact).map(|h| h.clone()) {
            if operator.is_some_and(|o| o != h.operator) {
                return Err(crate::wire::error::recovered_status(RecoveredError::OtherOperator {
                    contact: contact.to_owned(),
                }));
            }
            // Remembered as ended before it stops being in service: an offer racing this end
            // finds one or the other, and never routes it again.
            if ends {
                self.engine.remember_ended(contact, &h.queue, outcome, None);
            }
            if self.serving.remove(contact).is_some() {
                let ended = i64::try_from(self.clock.unix_ms(ended)).unwrap_or(i64::MAX).max(h.accepted_unix_ms);
                let end = ContactEnd {
                    contact: contact.to_owned(),
                    ended_unix_ms: ended,
                    queue: h.queue.clone(),
                    channel: h.channel,
                    outcome,
                    waited_ms: 0,
                    handle_ms: u64::try_from(ended - h.accepted_unix_ms).unwrap_or(0),
                    wrap_up_ms: 0,
                    operator: h.operator.clone(),
                    diverted: None,
                    detail: detail_of(&h, None),
                };
                tracing::info!(queue = %h.queue, handle_ms = end.handle_ms, "unbudgeted contact in service at restart ended");
                let handled = (outcome != Outcome::CancelledInService).then_some(end.handle_ms);
                self.account_carried_end(&h.operator, h.channel, handled, now);
                if ends {
                    ledger.ended(end.clone());
                }
                ledger.durable(&key).await.map_err(crate::wire::error::ledger_status)?;
                if ends {
                    self.announce_carried_end(&h, outcome, end.handle_ms, None, prelude, now);
                }
                self.release_recovering(&h.operator, now);
                return Ok(Some(Ended::from(end)));
            }
            // Ended meanwhile by a concurrent request: fall through to its end record.
        }
        if let Some(h) = self.book.recovered(contact) {
            // A later leg of a contact (transferred, or handed over after a consultation) whose
            // budget settled an earlier one: the per-contact fee follows the budget's `leg_fee`.
            let repeat = ledger
                .cost_records_of(contact)
                .await
                .map_err(crate::wire::error::ledger_status)?
                .iter()
                .any(|r| r.budget == h.budget && r.accepted_unix_ms < h.accepted_unix_ms);
            if ends && operator.is_none_or(|o| o == h.operator) {
                // Remembered as ended before it stops being recovered: an offer of it racing
                // this settlement finds one or the other, and never routes it again.
                self.engine.remember_ended(contact, &h.queue, outcome, None);
            }
            match self.book.end_recovered(contact, operator, outcome, ended, repeat) {
                Ok(rec) => {
                    tracing::info!(budget = %rec.budget, cost_cents = rec.cost_cents, handle_ms = rec.handle_ms, "contact recovered at restart settled");
                    let handled = (rec.outcome != Outcome::CancelledInService).then_some(rec.handle_ms);
                    self.account_carried_end(&rec.operator, rec.channel, handled, now);
                    if ends {
                        ledger.ended(ContactEnd {
                            contact: contact.to_owned(),
                            ended_unix_ms: rec.completed_unix_ms,
                            queue: rec.queue.clone(),
                            channel: rec.channel,
                            outcome: rec.outcome,
                            waited_ms: 0,
                            handle_ms: rec.handle_ms,
                            wrap_up_ms: 0,
                            operator: rec.operator.clone(),
                            diverted: None,
                            detail: detail_of(&h, Some(rec.cost_cents)),
                        });
                    }
                    ledger.durable(&key).await.map_err(crate::wire::error::ledger_status)?;
                    if ends {
                        let charged = Some((Arc::from(rec.budget.as_str()), rec.cost_cents));
                        self.announce_carried_end(&h, rec.outcome, rec.handle_ms, charged, prelude, now);
                    }
                    self.release_recovering(&rec.operator, now);
                    return Ok(Some(Ended::from(&rec)));
                }
                // Settled meanwhile by a concurrent request: fall through to the record.
                Err(RecoveredError::Unknown(_)) => {}
                Err(e) => return Err(crate::wire::error::recovered_status(e)),
            }
        }
        Ok(None)
    }

    /// A contact carried across a restart ended: so do its consultations carried with it (their
    /// operators are freed, their time charged once), as the engine ends a live contact's.
    async fn end_carried_consultations(&self, contact: &str, now: Millis) -> Result<(), Status> {
        let Some(ledger) = &self.ledger else { return Ok(()) };
        for k in ledger.consultations_of(contact).await.map_err(crate::wire::error::ledger_status)? {
            let Some(h) = self.recovered(&k.consultation) else { continue };
            let ended = Event::Consultation {
                contact: Arc::from(contact),
                consultation: Arc::from(k.consultation.as_str()),
                operator: Arc::from(k.from_operator.as_str()),
                queue: Arc::from(h.queue.as_str()),
                to_queue: Arc::from(h.queue.as_str()),
                to_operator: Some(Arc::from(h.operator.as_str())),
                step: smista_core::ConsultStep::Ended,
            };
            let done =
                Box::pin(self.end_carried(&k.consultation, None, Outcome::CancelledInService, now, now, true, &[]))
                    .await?;
            if done.is_some() {
                self.log.publish(&[ended], now, self.clock.unix_ms(now));
            }
        }
        Ok(())
    }

    /// Tells the event stream (and the metrics) that a contact carried across a restart ended:
    /// its `finished`, as for a contact this life routed. Its accounting and records are done by
    /// the caller.
    fn announce_carried_end(
        &self,
        h: &HoldRecord,
        outcome: Outcome,
        handle_ms: u64,
        charged: Option<(Arc<str>, i64)>,
        prelude: &[Event],
        now: Millis,
    ) {
        let arrived = if h.arrived_unix_ms > 0 { h.arrived_unix_ms } else { h.accepted_unix_ms };
        let waited_ms = u64::try_from(h.accepted_unix_ms.saturating_sub(arrived)).unwrap_or(0);
        let finished = Event::Finished {
            contact: Arc::from(h.contact.as_str()),
            queue: Arc::from(h.queue.as_str()),
            channel: h.channel,
            outcome,
            waited_ms,
            handle_ms: if outcome == Outcome::CancelledInService { 0 } else { handle_ms },
            operator: Some(Arc::from(h.operator.as_str())),
            group: Some(Arc::from(h.group.as_str())),
            wrap_up_ms: 0,
            arrived: self.clock.from_unix(arrived).unwrap_or(now),
            segment: smista_core::Segment::General,
            charged,
        };
        let mut events = prelude.to_vec();
        events.push(finished);
        crate::metrics::record_events(&events);
        self.log.publish(&events, now, self.clock.unix_ms(now));
    }

    /// The detail record of a contact in service across a restart: what its hold or service
    /// record tells (its offers before the restart are not on record). Its arrival is the one
    /// the hold recorded; a hold written by a version that did not record it gives its
    /// acceptance instead, never 0 (the history's retention and reports read arrivals).
    pub(crate) fn recovered_detail(
        &self,
        h: &HoldRecord,
        cost_cents: Option<i64>,
        consultation_of: String,
    ) -> smista_ledger::Detail {
        let arrived = if h.arrived_unix_ms > 0 { h.arrived_unix_ms } else { h.accepted_unix_ms };
        smista_ledger::Detail {
            arrived_unix_ms: arrived,
            received_unix_ms: arrived,
            answered_unix_ms: h.accepted_unix_ms,
            first_queue: h.queue.clone(),
            group: h.group.clone(),
            supplier: self.history.supplier_of(&h.group),
            budget: h.budget.clone(),
            cost_cents: cost_cents.unwrap_or(0),
            consultation_of,
            ..smista_ledger::Detail::default()
        }
    }

    /// A contact in service before a restart or takeover and not ended since: its recovered
    /// hold, or its service record (a hold of no budget) if no budget paid its operator.
    #[must_use]
    pub fn recovered(&self, contact: &str) -> Option<HoldRecord> {
        self.book.recovered(contact).or_else(|| self.serving.get(contact).map(|h| h.clone()))
    }

    /// Takes a contact carried across a restart (a consultation about to be handed over) out of
    /// the contacts in service, so nobody else ends it meanwhile; see
    /// [`Shared::hand_over_carried`] and [`Shared::put_back_carried`].
    pub fn take_carried(&self, contact: &str) -> Option<HoldRecord> {
        self.book.take_recovered(contact).or_else(|| self.serving.remove(contact).map(|(_, h)| h))
    }

    /// Undoes [`Shared::take_carried`].
    pub fn put_back_carried(&self, h: HoldRecord) {
        if h.budget.is_empty() {
            self.serving.insert(h.contact.clone(), h);
        } else {
            self.book.put_back_recovered(h);
        }
    }

    /// The carried consultation `h` (taken) was handed over: its operator carries on with
    /// contact `to`, accepted after `after_unix_ms` (the first operator's acceptance), as the
    /// hand-over's transfer record moves its rows on disk.
    pub fn hand_over_carried(&self, mut h: HoldRecord, to: &str, after_unix_ms: i64) {
        if h.budget.is_empty() {
            h.contact = to.to_owned();
            h.accepted_unix_ms = h.accepted_unix_ms.max(after_unix_ms.saturating_add(1));
            self.serving.insert(to.to_owned(), h);
        } else {
            self.book.hand_over_recovered(h, to, after_unix_ms);
        }
    }

    /// How many contacts from before a restart `operator` still has in service.
    #[must_use]
    pub fn recovered_with(&self, operator: &str) -> usize {
        let unbudgeted =
            if self.serving.is_empty() { 0 } else { self.serving.iter().filter(|h| h.operator == operator).count() };
        self.book.recovered_with(operator) + unbudgeted
    }

    /// The contacts from before a restart `operator` still has in service, by id.
    #[must_use]
    pub fn recovered_of(&self, operator: &str) -> Vec<String> {
        let mut v = self.book.recovered_of(operator);
        if !self.serving.is_empty() {
            v.extend(self.serving.iter().filter(|h| h.operator == operator).map(|h| h.contact.clone()));
            v.sort();
        }
        v
    }

    /// Forgets service records accepted more than `max_age_ms` before `now` (contacts whose
    /// completion will never come) and deletes them from the ledger; returns them.
    pub fn expire_serving(&self, now: Millis, max_age_ms: i64) -> Vec<HoldRecord> {
        if self.serving.is_empty() {
            return Vec::new();
        }
        let cutoff = i64::try_from(self.clock.unix_ms(now)).unwrap_or(i64::MAX).saturating_sub(max_age_ms);
        let old: Vec<String> =
            self.serving.iter().filter(|h| h.accepted_unix_ms < cutoff).map(|h| h.key().clone()).collect();
        let mut out = Vec::new();
        for c in old {
            if let Some((_, h)) = self.serving.remove(&c) {
                if let Some(l) = &self.ledger {
                    smista_core::book::SettlementSink::release(&**l, "", &c);
                }
                out.push(h);
            }
        }
        out
    }

    /// Accounts, at `operator`'s login, the contacts from before a restart they still have in
    /// service (the engine does not know them): on contacts until each ends, not paused.
    pub(crate) fn account_carried(&self, operator: &str, now: Millis) {
        let Some(ledger) = self.ledger.as_ref().filter(|_| self.history_cfg.enabled) else { return };
        let mut channels: Vec<smista_core::Channel> =
            self.book.recovered_of(operator).iter().filter_map(|c| self.book.recovered(c)).map(|h| h.channel).collect();
        if !self.serving.is_empty() {
            channels.extend(self.serving.iter().filter(|h| h.operator == operator).map(|h| h.channel));
        }
        let unix_ms = i64::try_from(self.clock.unix_ms(now)).unwrap_or(i64::MAX);
        for c in
            self.accounting.with_desk(operator, unix_ms, |d, out| channels.iter().for_each(|ch| d.carried(*ch, out)))
        {
            ledger.operator_changed(c);
        }
    }

    /// Accounts the end of a contact from before a restart: `handle_ms` when completed.
    pub(crate) fn account_carried_end(
        &self,
        operator: &str,
        channel: smista_core::Channel,
        handle_ms: Option<u64>,
        now: Millis,
    ) {
        let Some(ledger) = self.ledger.as_ref().filter(|_| self.history_cfg.enabled) else { return };
        let unix_ms = i64::try_from(self.clock.unix_ms(now)).unwrap_or(i64::MAX);
        for c in self.accounting.with_desk(operator, unix_ms, |d, out| d.carried_ended(channel, handle_ms, out)) {
            ledger.operator_changed(c);
        }
    }

    /// Makes `operator` available again if the server paused them at login for contacts from
    /// before a restart and the last of those has ended.
    pub(crate) fn release_recovering(&self, operator: &str, now: Millis) {
        if self.recovered_with(operator) > 0 || self.recovering.remove(operator).is_none() {
            return;
        }
        let mut ev = Vec::new();
        match self.engine.set_state(operator, &smista_core::RequestedState::Available, now, &mut ev) {
            Ok(_) => {
                self.publish(&ev, now);
            }
            Err(e) => tracing::debug!(error = %e, "operator paused for recovery not made available"),
        }
    }

    /// Each budget's counts in its current period (refused admissions, extra-budget diversions),
    /// as the ledger keeps them across restarts.
    pub fn budget_counters(&self, now: Millis) -> Vec<smista_ledger::BudgetCounters> {
        self.book
            .views(now)
            .into_iter()
            .map(|v| smista_ledger::BudgetCounters {
                extra_budget_diversions: i64::try_from(self.extra_budget_diversions(&v.id, &v.period))
                    .unwrap_or(i64::MAX),
                refusals: i64::try_from(v.refusals).unwrap_or(i64::MAX),
                budget: v.id,
                period: v.period,
            })
            .collect()
    }

    /// Counts on from the counts saved before a restart (those of periods still current).
    pub fn restore_budget_counters(&self, saved: Vec<smista_ledger::BudgetCounters>, now: Millis) {
        for c in saved {
            self.book.restore_refusals(&c.budget, &c.period, u64::try_from(c.refusals).unwrap_or(0), now);
            if self.book.period_label(&c.budget, now).as_deref() == Some(c.period.as_str()) {
                let n = u64::try_from(c.extra_budget_diversions).unwrap_or(0);
                let mut m = self.extra_budget.lock();
                let entry = m.entry(c.budget.clone()).or_insert_with(|| (c.period.clone(), 0));
                if entry.0 == c.period {
                    entry.1 = entry.1.max(n);
                }
            }
        }
    }

    /// Extra-budget diversions of `budget` in `period`.
    pub fn extra_budget_diversions(&self, budget: &str, period: &str) -> u64 {
        self.extra_budget.lock().get(budget).filter(|(p, _)| p == period).map_or(0, |(_, n)| *n)
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The authenticated caller of `req` (see [`crate::edge::auth::principal_of`]).
    pub fn principal<T>(&self, req: &tonic::Request<T>) -> Result<Arc<crate::edge::auth::Principal>, Status> {
        crate::edge::auth::principal_of(req, self.gate.auth.is_open())
    }
}
