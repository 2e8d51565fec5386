//! The contact history, server side: the trail of every live contact (arrival, overflows, each
//! offer and what came of it) kept beside the engine from the events it reports, turned into a
//! contact detail record when the contact ends and handed to the ledger's group commit
//! ([`Ledger::ended`](smista_ledger::Ledger::ended)); the purge after the retention; the time
//! zone of the interval reports.
//!
//! Nothing here runs inside the engine's critical sections: trails are updated in
//! `Shared::publish`, after the engine call that reported the events, one map entry per live
//! contact.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::history::HistorySection;
use dashmap::DashMap;
use smista_core::{DivertReason, Event, Fallback};
use smista_ledger::{ContactEnd, Detail, OfferOutcome, OfferRecord};

/// What is known of a live contact beyond the engine's own record.
#[derive(Debug, Clone)]
struct Trail {
    arrived_unix_ms: i64,
    received_unix_ms: i64,
    first_queue: Arc<str>,
    overflows: Vec<Arc<str>>,
    offers: Vec<(Arc<str>, Arc<str>, OfferOutcome)>,
    answered_unix_ms: i64,
    caller_key: Box<str>,
    /// (from, to) per transfer; `to` empty out of the centre.
    transfers: Vec<(Arc<str>, Arc<str>)>,
    /// A consultation: the contact it is about.
    consultation_of: Option<Arc<str>>,
}

/// The trails of live contacts and how to turn them into records.
#[derive(Debug, Default)]
pub struct History {
    enabled: bool,
    trails: DashMap<Arc<str>, Trail>,
    /// Group -> its supplier.
    pub(crate) suppliers: HashMap<String, String>,
    keep_caller_key: bool,
}

impl History {
    /// An empty history for groups `groups` (name, supplier).
    #[must_use]
    pub fn new(groups: &[smista_core::config::GroupConfig], cfg: &HistorySection) -> Self {
        let keep_caller_key = cfg.keep_caller_key;
        History {
            enabled: cfg.enabled,
            trails: DashMap::new(),
            suppliers: groups.iter().filter_map(|g| g.supplier.clone().map(|s| (g.name.clone(), s))).collect(),
            keep_caller_key,
        }
    }

    /// Notes in `contact`'s trail that its operator transferred it from `from` to `to` (""
    /// out of the centre): its detail record lists its transfers.
    pub fn transferred(&self, contact: &str, from: &str, to: &str) {
        if let Some(mut t) = self.trails.get_mut(contact) {
            t.transfers.push((Arc::from(from), Arc::from(to)));
        }
    }

    /// A contact offered to smista (before the engine routes it). A repeated offer of a live
    /// contact keeps its first trail.
    /// Returns whether this call started the trail.
    pub fn arrive(
        &self,
        contact: &str,
        queue: &str,
        arrived_unix_ms: i64,
        received_unix_ms: i64,
        caller_key: &str,
    ) -> bool {
        if !self.enabled || self.trails.contains_key(contact) {
            return false;
        }
        let mut created = false;
        self.trails.entry(Arc::from(contact)).or_insert_with(|| {
            created = true;
            Trail {
                arrived_unix_ms,
                received_unix_ms,
                first_queue: Arc::from(queue),
                overflows: Vec::new(),
                transfers: Vec::new(),
                consultation_of: None,
                offers: Vec::new(),
                answered_unix_ms: 0,
                caller_key: if self.keep_caller_key { caller_key.into() } else { Box::default() },
            }
        });
        created
    }

    /// Forgets a contact's trail (its offer was refused before it was routed).
    pub fn forget(&self, contact: &str) {
        self.trails.remove(contact);
    }

    fn mark(&self, contact: &str, operator: &str, outcome: OfferOutcome) {
        if let Some(mut t) = self.trails.get_mut(contact) {
            if let Some(o) = t.offers.iter_mut().rev().find(|o| &*o.0 == operator) {
                o.2 = outcome;
            }
        }
    }

    /// Follows what an engine call reported; returns the records of the contacts that ended.
    /// `unix_ms` is when, and `to_unix` turns engine time into Unix ms.
    pub fn apply(
        &self,
        events: &[Event],
        unix_ms: i64,
        to_unix: impl Fn(smista_core::Millis) -> i64,
    ) -> Vec<ContactEnd> {
        let mut ended = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Offered { contact, operator, group, .. } => {
                    if let Some(mut t) = self.trails.get_mut(&**contact) {
                        t.offers.push((operator.clone(), group.clone(), OfferOutcome::Withdrawn));
                    }
                }
                Event::OfferDeclined { contact, operator, .. } => self.mark(contact, operator, OfferOutcome::Declined),
                Event::OfferTimedOut { contact, operator, .. } => self.mark(contact, operator, OfferOutcome::TimedOut),
                Event::Accepted { contact, operator, .. } => {
                    self.mark(contact, operator, OfferOutcome::Accepted);
                    // Answered once: a transferred contact's later legs keep its first answer.
                    if let Some(mut t) = self.trails.get_mut(&**contact).filter(|t| t.answered_unix_ms == 0) {
                        t.answered_unix_ms = unix_ms;
                    }
                }
                Event::Overflowed { contact, to, .. } => {
                    if let Some(mut t) = self.trails.get_mut(&**contact) {
                        t.overflows.push(to.clone());
                    }
                }
                Event::Transferred { contact, queue, to, .. } => {
                    self.transferred(contact, queue, to.as_deref().unwrap_or(""));
                }
                // A consultation's trail starts when it is asked for (it is no offer of the
                // platform's): its record says which contact it was about.
                Event::Consultation {
                    contact,
                    consultation,
                    to_queue,
                    step: smista_core::ConsultStep::Requested,
                    ..
                } if self.arrive(consultation, to_queue, unix_ms, unix_ms, "") => {
                    if let Some(mut t) = self.trails.get_mut(&**consultation) {
                        t.consultation_of = Some(contact.clone());
                    }
                }
                Event::Finished {
                    contact,
                    queue,
                    channel,
                    outcome,
                    waited_ms,
                    handle_ms,
                    operator,
                    group,
                    wrap_up_ms,
                    arrived,
                    segment,
                    charged,
                } => {
                    // A diversion is reported just before its end, in the same batch.
                    let diverted: Option<(DivertReason, Fallback)> = events[..i].iter().rev().find_map(|d| match d {
                        Event::Diverted { contact: c, reason, fallback, .. } if c == contact => {
                            Some((*reason, *fallback))
                        }
                        _ => None,
                    });
                    if !self.enabled && charged.is_some() {
                        continue; // its cost record tells how it ended
                    }
                    let trail = self.trails.remove(&**contact).map(|(_, t)| t);
                    let group = group.as_deref().unwrap_or_default().to_owned();
                    let detail = Detail {
                        arrived_unix_ms: trail.as_ref().map_or_else(|| to_unix(*arrived), |t| t.arrived_unix_ms),
                        received_unix_ms: trail.as_ref().map_or(0, |t| t.received_unix_ms),
                        answered_unix_ms: trail.as_ref().map_or(0, |t| t.answered_unix_ms),
                        first_queue: trail.as_ref().map_or_else(|| queue.to_string(), |t| t.first_queue.to_string()),
                        overflows: trail
                            .as_ref()
                            .map_or_else(Vec::new, |t| t.overflows.iter().map(|q| q.to_string()).collect()),
                        transfers: trail.as_ref().map_or_else(Vec::new, |t| {
                            t.transfers.iter().map(|(f, to)| (f.to_string(), to.to_string())).collect()
                        }),
                        segment: segment.as_str().to_owned(),
                        offers: trail.as_ref().map_or_else(Vec::new, |t| {
                            t.offers
                                .iter()
                                .map(|(op, g, o)| OfferRecord {
                                    operator: op.to_string(),
                                    group: g.to_string(),
                                    outcome: *o,
                                })
                                .collect()
                        }),
                        supplier: self.suppliers.get(&group).cloned().unwrap_or_default(),
                        group,
                        budget: charged.as_ref().map_or_else(String::new, |c| c.0.to_string()),
                        cost_cents: charged.as_ref().map_or(0, |c| c.1),
                        caller_key: trail.as_ref().map_or_else(String::new, |t| t.caller_key.to_string()),
                        consultation_of: trail
                            .as_ref()
                            .and_then(|t| t.consultation_of.as_deref())
                            .unwrap_or_default()
                            .to_owned(),
                    };
                    ended.push(ContactEnd {
                        contact: contact.to_string(),
                        ended_unix_ms: unix_ms,
                        queue: queue.to_string(),
                        channel: *channel,
                        outcome: *outcome,
                        waited_ms: *waited_ms,
                        handle_ms: *handle_ms,
                        wrap_up_ms: *wrap_up_ms,
                        operator: operator.as_deref().unwrap_or_default().to_owned(),
                        diverted,
                        detail,
                    });
                }
                _ => {}
            }
        }
        ended
    }

    /// The supplier of `group` ("" for internal staff or an unknown group).
    #[must_use]
    pub fn supplier_of(&self, group: &str) -> String {
        self.suppliers.get(group).cloned().unwrap_or_default()
    }

    /// The live contacts: (arrival, first queue), for the reports' *in progress*.
    #[must_use]
    pub fn in_progress(&self) -> Vec<(i64, String)> {
        // A consultation in progress is no citizen's contact in progress.
        self.trails
            .iter()
            .filter(|t| t.consultation_of.is_none())
            .map(|t| (t.arrived_unix_ms, t.first_queue.to_string()))
            .collect()
    }

    /// Live contacts followed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.trails.len()
    }

    /// Whether none is followed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.trails.is_empty()
    }
}

/// Writes the staffed time accounted so far to the ledger (what fails is kept for the next try).
pub async fn flush_staffing(
    s: &crate::app::Shared,
    ledger: &smista_ledger::Ledger,
) -> Result<(), smista_ledger::LedgerError> {
    let now = i64::try_from(s.clock.unix_ms(s.clock.now())).unwrap_or(i64::MAX);
    let rows: Vec<(i64, String, i64, i64, i64)> =
        s.staffing.take(now).into_iter().map(|(q, g, t)| (q, g, t.staffed_ms, t.paused_ms, t.busy_ms)).collect();
    if let Err(e) = ledger.add_staffing(&rows).await {
        s.staffing.put_back(rows);
        return Err(e);
    }
    Ok(())
}
