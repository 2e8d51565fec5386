//! Scheduled contacts: second-level consultancy by appointment, by voice or web meeting.
//!
//! Operators (consultants) publish **availability** on a service line: blocks of wall-clock time
//! with the display name they choose to show citizens (the only operator data a citizen sees).
//! A queue with an `appointments` rule cuts them into **slots** of `slot_ms`. A citizen, an
//! intermediary or the back office **books** a slot (with a given operator, or whoever is free);
//! bookings can be **moved** and **cancelled**. An operator never has two bookings that overlap,
//! and a booking lies within one of their availability blocks.
//!
//! Around the slot the engine does the rest (the server drives it from [`AppointmentBook::due`]
//! and [`AppointmentBook::holds`]): from `guard_ms` before the start the booked operator gets no
//! ordinary offers (`Engine::hold_operator`); at the start the appointment becomes a contact
//! (`Engine::offer_appointment`) at the head of its queue, offered to the booked operator first
//! and, after `grace_ms` without them (absent, or not free), to any operator with the skill.
//!
//! Video appointments carry `recording = false` unless the booking asks otherwise. Everything
//! here is pure: the server persists each change in the ledger before it answers, and restores
//! the book at start-up ([`AppointmentBook::restore`]).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{Channel, Segment};

/// A queue's appointment rules (`[queues.appointments]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentRules {
    /// Length of a slot, ms (e.g. 1800000: half an hour).
    pub slot_ms: u64,
    /// How long before a slot its operator stops getting ordinary offers, ms.
    #[serde(default = "default_guard")]
    pub guard_ms: u64,
    /// How long the appointment waits for its booked operator before any operator with the
    /// skill may take it, ms.
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
}

fn default_guard() -> u64 {
    300_000
}
fn default_grace() -> u64 {
    120_000
}

/// The furthest ahead availability or a booking may be, ms (a year).
pub const MAX_AHEAD_MS: i64 = 366 * 86_400_000;
/// Longest display name, bytes.
pub const MAX_DISPLAY_NAME: usize = 64;

/// A block of an operator's time open for appointments on a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// The operator (staff id).
    pub operator: String,
    /// The queue (service line).
    pub queue: String,
    /// Start, Unix ms.
    pub start_unix_ms: i64,
    /// End, Unix ms.
    pub end_unix_ms: i64,
    /// What citizens are shown of the operator.
    pub display_name: String,
}

/// Where an appointment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppointmentState {
    /// Booked, not started yet.
    Booked,
    /// Its slot started: it became a contact (whose life the contact events tell).
    Started,
    /// Cancelled.
    Cancelled,
}

impl AppointmentState {
    /// Lower-case name, as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentState::Booked => "booked",
            AppointmentState::Started => "started",
            AppointmentState::Cancelled => "cancelled",
        }
    }

    /// The state named by [`AppointmentState::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [AppointmentState::Booked, AppointmentState::Started, AppointmentState::Cancelled]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A booked consultation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appointment {
    /// Id chosen by the booking client (the idempotency key; also the contact id at its slot).
    pub id: String,
    /// The queue (service line).
    pub queue: String,
    /// The booked operator.
    pub operator: String,
    /// Their display name for the citizen.
    pub display_name: String,
    /// Slot start, Unix ms.
    pub start_unix_ms: i64,
    /// Slot end, Unix ms.
    pub end_unix_ms: i64,
    /// Voice or video (web meeting).
    pub channel: Channel,
    /// The citizen's segment.
    pub segment: Segment,
    /// Whether the meeting may be recorded (false unless asked for).
    pub recording: bool,
    /// Where it stands.
    pub state: AppointmentState,
    /// The contact in service whose operator booked it from the call (first level handing the
    /// citizen to the second); empty when booked otherwise. Only that contact's operator may
    /// move or cancel it from a desk.
    pub for_contact: String,
}

/// A free slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The operator.
    pub operator: String,
    /// Their display name.
    pub display_name: String,
    /// Start, Unix ms.
    pub start_unix_ms: i64,
    /// End, Unix ms.
    pub end_unix_ms: i64,
}

/// A booking request.
#[derive(Clone, Debug)]
pub struct Booking {
    /// Idempotency key.
    pub id: String,
    /// The queue.
    pub queue: String,
    /// A given operator, or whoever is free at `start_unix_ms`.
    pub operator: Option<String>,
    /// Slot start, Unix ms.
    pub start_unix_ms: i64,
    /// Voice or video.
    pub channel: Channel,
    /// The citizen's segment.
    pub segment: Segment,
    /// Recording allowed.
    pub recording: bool,
    /// The contact in service it is booked from (empty: none).
    pub for_contact: String,
}

/// Why an appointment operation was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AppointmentError {
    /// A malformed request (bad times, empty id...).
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The queue takes no appointments (or does not exist).
    #[error("queue `{}` takes no appointments", crate::error::clip(.0))]
    NoAppointments(String),
    /// The operator has published no availability on the queue.
    #[error("operator `{}` has no availability on this queue", crate::error::clip(.0))]
    UnknownOperator(String),
    /// No appointment with that id.
    #[error("unknown appointment `{}`", crate::error::clip(.0))]
    UnknownAppointment(String),
    /// The slot is not free: outside availability, or overlapping another booking.
    #[error("{0}")]
    Unavailable(String),
    /// The id is taken by a different booking, or the appointment can no longer change.
    #[error("{0}")]
    Conflict(String),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> AppointmentError {
    AppointmentError::Invalid { field, problem: problem.into() }
}

#[derive(Debug, Default)]
struct Inner {
    /// By (operator, start).
    availability: BTreeMap<(String, i64), Availability>,
    appointments: HashMap<String, Appointment>,
}

/// Every queue's availability and bookings. Not on the routing hot path: one mutex.
#[derive(Debug)]
pub struct AppointmentBook {
    rules: HashMap<String, AppointmentRules>,
    inner: Mutex<Inner>,
}

impl AppointmentBook {
    /// A book for the queues with appointment rules, by queue name.
    #[must_use]
    pub fn new(rules: HashMap<String, AppointmentRules>) -> AppointmentBook {
        AppointmentBook { rules, inner: Mutex::new(Inner::default()) }
    }

    /// The rules of `queue`, if it takes appointments.
    #[must_use]
    pub fn rules(&self, queue: &str) -> Option<&AppointmentRules> {
        self.rules.get(queue)
    }

    /// Loads what the ledger holds (at start-up).
    pub fn restore(&self, availability: Vec<Availability>, appointments: Vec<Appointment>) {
        let mut g = self.inner.lock();
        for a in availability {
            g.availability.insert((a.operator.clone(), a.start_unix_ms), a);
        }
        for a in appointments {
            g.appointments.insert(a.id.clone(), a);
        }
    }

    fn slot_ms(&self, queue: &str) -> Result<i64, AppointmentError> {
        self.rules
            .get(queue)
            .map(|r| i64::try_from(r.slot_ms).unwrap_or(i64::MAX))
            .ok_or_else(|| AppointmentError::NoAppointments(crate::error::clip(queue)))
    }

    /// Publishes a block of availability. Blocks of one operator may not overlap (on any
    /// queue); publishing the same block again changes nothing. Returns it as stored.
    pub fn publish(&self, a: Availability, now_unix_ms: i64) -> Result<Availability, AppointmentError> {
        self.slot_ms(&a.queue)?;
        crate::id::validate_id("operator_id", &a.operator)
            .map_err(|_| invalid("operator_id", "1 to 128 bytes, no control characters"))?;
        if a.end_unix_ms <= a.start_unix_ms {
            return Err(invalid("end_unix_ms", "must follow start_unix_ms"));
        }
        if a.end_unix_ms <= now_unix_ms {
            return Err(invalid("end_unix_ms", "the block is over already"));
        }
        if a.start_unix_ms > now_unix_ms + MAX_AHEAD_MS {
            return Err(invalid("start_unix_ms", "more than a year ahead"));
        }
        if a.display_name.trim().is_empty() || a.display_name.len() > MAX_DISPLAY_NAME {
            return Err(invalid("display_name", "1 to 64 bytes: the name citizens see"));
        }
        if a.display_name.chars().any(crate::error::is_hazard) {
            return Err(invalid(
                "display_name",
                "contains control, line-separator, bidirectional or invisible characters",
            ));
        }
        let mut g = self.inner.lock();
        if let Some(same) = g.availability.get(&(a.operator.clone(), a.start_unix_ms)) {
            if *same == a {
                return Ok(a);
            }
        }
        let clash = g
            .availability
            .range((a.operator.clone(), i64::MIN)..=(a.operator.clone(), i64::MAX))
            .map(|(_, b)| b)
            .find(|b| {
                b.start_unix_ms < a.end_unix_ms && a.start_unix_ms < b.end_unix_ms && b.start_unix_ms != a.start_unix_ms
            });
        if let Some(b) = clash {
            return Err(AppointmentError::Unavailable(format!(
                "overlaps the operator's block {}..{} on `{}`",
                b.start_unix_ms, b.end_unix_ms, b.queue
            )));
        }
        // A changed block must still hold the operator's bookings that lay in the old one.
        if let Some(old) = g.availability.get(&(a.operator.clone(), a.start_unix_ms)) {
            let stranded = g.appointments.values().any(|x| {
                x.state == AppointmentState::Booked
                    && x.operator == a.operator
                    && x.start_unix_ms >= old.start_unix_ms
                    && x.end_unix_ms <= old.end_unix_ms
                    && !(x.queue == a.queue && x.start_unix_ms >= a.start_unix_ms && x.end_unix_ms <= a.end_unix_ms)
            });
            if stranded {
                return Err(AppointmentError::Conflict("bookings lie in the block: move or cancel them first".into()));
            }
        }
        g.availability.insert((a.operator.clone(), a.start_unix_ms), a.clone());
        Ok(a)
    }

    /// Withdraws the block of `operator` starting at `start_unix_ms`; refused while bookings
    /// lie in it. Returns the block withdrawn (`None`: there was none, nothing to do).
    pub fn withdraw(&self, operator: &str, start_unix_ms: i64) -> Result<Option<Availability>, AppointmentError> {
        let mut g = self.inner.lock();
        let Some(b) = g.availability.get(&(operator.to_owned(), start_unix_ms)).cloned() else { return Ok(None) };
        if g.appointments.values().any(|x| {
            x.state == AppointmentState::Booked
                && x.operator == operator
                && x.start_unix_ms >= b.start_unix_ms
                && x.end_unix_ms <= b.end_unix_ms
        }) {
            return Err(AppointmentError::Conflict("bookings lie in the block: move or cancel them first".into()));
        }
        g.availability.remove(&(operator.to_owned(), start_unix_ms));
        Ok(Some(b))
    }

    /// Free slots of `queue` starting in `[from, to)` and not before `now` (of one operator, or
    /// of all), in time order.
    pub fn free_slots(
        &self,
        queue: &str,
        operator: Option<&str>,
        from_unix_ms: i64,
        to_unix_ms: i64,
        now_unix_ms: i64,
    ) -> Result<Vec<Slot>, AppointmentError> {
        let slot = self.slot_ms(queue)?;
        if to_unix_ms <= from_unix_ms || to_unix_ms - from_unix_ms > 31 * 86_400_000 {
            return Err(invalid("to_unix_ms", "must follow from_unix_ms, by at most 31 days"));
        }
        let g = self.inner.lock();
        let mut out = Vec::new();
        for b in g.availability.values() {
            if b.queue != queue || operator.is_some_and(|o| o != b.operator) {
                continue;
            }
            let mut s = b.start_unix_ms;
            while s + slot <= b.end_unix_ms {
                if s >= from_unix_ms
                    && s < to_unix_ms
                    && s >= now_unix_ms
                    && Self::free(&g, &b.operator, s, s + slot, None)
                {
                    out.push(Slot {
                        operator: b.operator.clone(),
                        display_name: b.display_name.clone(),
                        start_unix_ms: s,
                        end_unix_ms: s + slot,
                    });
                }
                s += slot;
            }
        }
        out.sort_by(|a, b| (a.start_unix_ms, &a.operator).cmp(&(b.start_unix_ms, &b.operator)));
        Ok(out)
    }

    /// Whether `operator` has no live booking overlapping `[start, end)` (other than `except`).
    fn free(g: &Inner, operator: &str, start: i64, end: i64, except: Option<&str>) -> bool {
        !g.appointments.values().any(|x| {
            x.state != AppointmentState::Cancelled
                && x.operator == operator
                && Some(x.id.as_str()) != except
                && x.start_unix_ms < end
                && start < x.end_unix_ms
        })
    }

    /// The availability block of `operator` on `queue` holding `[start, end)`.
    fn block<'a>(g: &'a Inner, operator: &str, queue: &str, start: i64, end: i64) -> Option<&'a Availability> {
        g.availability
            .range((operator.to_owned(), i64::MIN)..=(operator.to_owned(), start))
            .map(|(_, b)| b)
            .rev()
            .find(|b| b.queue == queue && b.start_unix_ms <= start && end <= b.end_unix_ms)
    }

    /// Places `[start, start + slot)` for `operator` (or the first free operator), checking
    /// alignment, availability and overlaps. Returns (operator, display name).
    fn place(
        &self,
        g: &Inner,
        queue: &str,
        operator: Option<&str>,
        start: i64,
        except: Option<&str>,
    ) -> Result<(String, String, i64), AppointmentError> {
        let slot = self.slot_ms(queue)?;
        let end = start + slot;
        let fits = |op: &str| -> Result<String, AppointmentError> {
            let b =
                Self::block(g, op, queue, start, end).filter(|b| (start - b.start_unix_ms) % slot == 0).ok_or_else(
                    || AppointmentError::Unavailable(format!("`{op}` has no slot starting at {start} on `{queue}`")),
                )?;
            if !Self::free(g, op, start, end, except) {
                return Err(AppointmentError::Unavailable(format!(
                    "`{op}` is already booked between {start} and {end}"
                )));
            }
            Ok(b.display_name.clone())
        };
        match operator {
            Some(op) => {
                if !g.availability.values().any(|b| b.operator == op && b.queue == queue) {
                    return Err(AppointmentError::UnknownOperator(crate::error::clip(op)));
                }
                fits(op).map(|name| (op.to_owned(), name, end))
            }
            None => {
                let mut ops: Vec<&str> =
                    g.availability.values().filter(|b| b.queue == queue).map(|b| b.operator.as_str()).collect();
                ops.dedup();
                ops.into_iter().find_map(|op| fits(op).ok().map(|name| (op.to_owned(), name, end))).ok_or_else(|| {
                    AppointmentError::Unavailable(format!("no operator is free at {start} on `{queue}`"))
                })
            }
        }
    }

    /// Books a slot. Idempotent on the id: the same booking again answers the appointment as it
    /// stands; a different one under a used id is a conflict.
    pub fn book(&self, b: &Booking, now_unix_ms: i64) -> Result<Appointment, AppointmentError> {
        crate::id::validate_id("appointment_id", &b.id)
            .map_err(|_| invalid("appointment_id", "1 to 128 bytes, no control characters"))?;
        if !matches!(b.channel, Channel::Voice | Channel::Video) {
            return Err(invalid("channel", "appointments are by voice or video"));
        }
        let mut g = self.inner.lock();
        if let Some(x) = g.appointments.get(&b.id) {
            let same = x.queue == b.queue
                && x.start_unix_ms == b.start_unix_ms
                && b.operator.as_deref().is_none_or(|o| o == x.operator)
                && x.channel == b.channel
                && x.for_contact == b.for_contact;
            return if same {
                Ok(x.clone())
            } else {
                Err(AppointmentError::Conflict(format!("appointment `{}` exists with other details", b.id)))
            };
        }
        if b.start_unix_ms < now_unix_ms {
            return Err(invalid("start_unix_ms", "the slot is in the past"));
        }
        if b.start_unix_ms > now_unix_ms + MAX_AHEAD_MS {
            return Err(invalid("start_unix_ms", "more than a year ahead"));
        }
        let (operator, display_name, end) = self.place(&g, &b.queue, b.operator.as_deref(), b.start_unix_ms, None)?;
        let a = Appointment {
            id: b.id.clone(),
            queue: b.queue.clone(),
            operator,
            display_name,
            start_unix_ms: b.start_unix_ms,
            end_unix_ms: end,
            channel: b.channel,
            segment: b.segment,
            recording: b.recording,
            state: AppointmentState::Booked,
            for_contact: b.for_contact.clone(),
        };
        g.appointments.insert(a.id.clone(), a.clone());
        Ok(a)
    }

    /// Moves a booked appointment to another slot (and operator, if given). Moving it where it
    /// is changes nothing.
    pub fn move_to(
        &self,
        id: &str,
        start_unix_ms: i64,
        operator: Option<&str>,
        now_unix_ms: i64,
    ) -> Result<Appointment, AppointmentError> {
        let mut g = self.inner.lock();
        let x = g
            .appointments
            .get(id)
            .cloned()
            .ok_or_else(|| AppointmentError::UnknownAppointment(crate::error::clip(id)))?;
        if x.start_unix_ms == start_unix_ms && operator.is_none_or(|o| o == x.operator) {
            return Ok(x);
        }
        if x.state != AppointmentState::Booked {
            return Err(AppointmentError::Conflict(format!("appointment `{id}` is {}", x.state.as_str())));
        }
        if start_unix_ms < now_unix_ms {
            return Err(invalid("start_unix_ms", "the slot is in the past"));
        }
        let (op, name, end) =
            self.place(&g, &x.queue, Some(operator.unwrap_or(&x.operator)), start_unix_ms, Some(id))?;
        let moved = Appointment { operator: op, display_name: name, start_unix_ms, end_unix_ms: end, ..x };
        g.appointments.insert(id.to_owned(), moved.clone());
        Ok(moved)
    }

    /// Cancels a booked appointment (idempotent: a cancelled one answers as it is).
    pub fn cancel(&self, id: &str) -> Result<Appointment, AppointmentError> {
        let mut g = self.inner.lock();
        let x =
            g.appointments.get_mut(id).ok_or_else(|| AppointmentError::UnknownAppointment(crate::error::clip(id)))?;
        match x.state {
            AppointmentState::Booked => x.state = AppointmentState::Cancelled,
            AppointmentState::Cancelled => {}
            AppointmentState::Started => {
                return Err(AppointmentError::Conflict(format!(
                    "appointment `{id}` has started: cancel its contact instead"
                )))
            }
        }
        Ok(x.clone())
    }

    /// The appointment `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Appointment> {
        self.inner.lock().appointments.get(id).cloned()
    }

    /// Appointments of `queue` (all queues if empty) starting in `[from, to)`, in time order.
    #[must_use]
    pub fn list(&self, queue: &str, from_unix_ms: i64, to_unix_ms: i64) -> Vec<Appointment> {
        let g = self.inner.lock();
        let mut v: Vec<Appointment> = g
            .appointments
            .values()
            .filter(|a| {
                (queue.is_empty() || a.queue == queue)
                    && a.start_unix_ms >= from_unix_ms
                    && a.start_unix_ms < to_unix_ms
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.start_unix_ms, &a.id).cmp(&(b.start_unix_ms, &b.id)));
        v
    }

    /// Booked appointments whose slot has started by `now`, now marked started: each is to
    /// become a contact.
    pub fn due(&self, now_unix_ms: i64) -> Vec<Appointment> {
        let mut g = self.inner.lock();
        let mut v: Vec<Appointment> = g
            .appointments
            .values_mut()
            .filter(|a| a.state == AppointmentState::Booked && a.start_unix_ms <= now_unix_ms)
            .map(|a| {
                a.state = AppointmentState::Started;
                a.clone()
            })
            .collect();
        v.sort_by_key(|a| a.start_unix_ms);
        v
    }

    /// Operators to keep from ordinary offers at `now`, with until when (Unix ms): those with a
    /// booked appointment starting within its queue's `guard_ms`, until its start plus
    /// `grace_ms`.
    #[must_use]
    pub fn holds(&self, now_unix_ms: i64) -> Vec<(String, i64)> {
        let g = self.inner.lock();
        g.appointments
            .values()
            .filter(|a| a.state == AppointmentState::Booked)
            .filter_map(|a| {
                let r = self.rules.get(&a.queue)?;
                let guard = i64::try_from(r.guard_ms).unwrap_or(i64::MAX);
                let grace = i64::try_from(r.grace_ms).unwrap_or(i64::MAX);
                (a.start_unix_ms - guard <= now_unix_ms).then(|| (a.operator.clone(), a.start_unix_ms + grace))
            })
            .collect()
    }

    /// Forgets availability and appointments that ended before `before_unix_ms` (the ledger
    /// keeps them).
    pub fn forget_before(&self, before_unix_ms: i64) {
        let mut g = self.inner.lock();
        g.availability.retain(|_, b| b.end_unix_ms >= before_unix_ms);
        g.appointments.retain(|_, a| a.end_unix_ms >= before_unix_ms || a.state == AppointmentState::Booked);
    }
}
