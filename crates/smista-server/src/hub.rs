//! Fan-out of what the engine reports: the sequenced contact-event log behind `StreamEvents`, and
//! the per-operator offer board behind `WatchOffers`.
//!
//! Routing never waits on a client: publishing appends to a bounded ring and wakes readers. Each
//! stream has its own task copying from the ring into a bounded channel; a reader that falls
//! further behind than the ring holds gets OUT_OF_RANGE and must resynchronise with a snapshot.

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::{Event, Millis};
use smista_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::convert;

/// Events buffered per stream between the ring and the network.
const STREAM_BUFFER: usize = 256;

/// An engine event as published: converted to the wire form only when a stream reads it, so
/// publishing on the routing path copies no strings.
#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    event: Event,
    now: Millis,
    unix_ms: u64,
}

impl Stored {
    fn to_pb(&self) -> Option<pb::ContactEvent> {
        let mut ce = convert::contact_event(&self.event, self.now, self.unix_ms)?;
        ce.sequence = self.seq;
        Some(ce)
    }
}

#[derive(Debug)]
struct Ring {
    /// Sequence of the next event to publish (the first is 1).
    next: u64,
    buf: VecDeque<Stored>,
    cap: usize,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.next - self.buf.len() as u64
    }
}

/// The sequenced contact-event log.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<Ring>,
    latest: watch::Sender<u64>,
}

impl EventLog {
    /// A log retaining the last `cap` events.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        EventLog {
            ring: Mutex::new(Ring { next: 1, buf: VecDeque::with_capacity(cap.min(1 << 16)), cap: cap.max(1) }),
            latest: watch::channel(0).0,
        }
    }

    /// Appends the contact events among `events`, giving each the next sequence number.
    pub fn publish(&self, events: &[Event], now: Millis, unix_ms: u64) {
        let mut last = None;
        {
            let mut ring = self.ring.lock();
            for e in events.iter().filter(|e| e.contact().is_some()) {
                let seq = ring.next;
                last = Some(seq);
                ring.next += 1;
                if ring.buf.len() == ring.cap {
                    ring.buf.pop_front();
                }
                ring.buf.push_back(Stored { seq, event: e.clone(), now, unix_ms });
            }
        }
        if let Some(seq) = last {
            self.latest.send_replace(seq);
        }
    }

    /// The sequence of the last published event (0 before any).
    #[must_use]
    pub fn latest(&self) -> u64 {
        self.ring.lock().next - 1
    }

    /// Events after `after`, at most `max`; `Err(first retained)` if some were evicted.
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<Stored>, u64> {
        let ring = self.ring.lock();
        let first = ring.first_seq();
        if after + 1 < first {
            return Err(first);
        }
        let skip = (after + 1 - first) as usize;
        Ok(ring.buf.iter().skip(skip).take(max).cloned().collect())
    }

    /// A stream of events after `after` (0: from the next live event) in `queues` (empty: all),
    /// ending when `shutdown` flips to true.
    pub fn subscribe(
        self: &Arc<Self>,
        after: u64,
        queues: Vec<String>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<ReceiverStream<Result<pb::ContactEvent, Status>>, Status> {
        let mut cursor = if after == 0 { self.latest() } else { after };
        if cursor > self.latest() {
            return Err(Status::out_of_range(format!(
                "after_sequence {after} is beyond the last event {}",
                self.latest()
            )));
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let log = self.clone();
        let mut latest = self.latest.subscribe();
        tokio::spawn(async move {
            loop {
                match log.read_after(cursor, STREAM_BUFFER) {
                    Err(first) => {
                        let _ = tx
                            .send(Err(Status::out_of_range(format!(
                                "events after {cursor} are no longer retained (oldest is {first}); resynchronise with GetSnapshot"
                            ))))
                            .await;
                        return;
                    }
                    Ok(batch) if batch.is_empty() => {
                        tokio::select! {
                            changed = latest.changed() => if changed.is_err() { return },
                            _ = shutdown.changed() => return,
                            _ = tx.closed() => return,
                        }
                    }
                    Ok(batch) => {
                        for stored in batch {
                            cursor = stored.seq;
                            let Some(ev) = stored.to_pb() else { continue };
                            if !queues.is_empty() && !queues.contains(&ev.queue) {
                                continue;
                            }
                            tokio::select! {
                                sent = tx.send(Ok(ev)) => if sent.is_err() { return },
                                _ = shutdown.changed() => return,
                            }
                        }
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

#[derive(Debug, Clone)]
struct Pending {
    deadline: Millis,
    offer: pb::Offer,
}

/// Offers waiting for each operator's answer, and the operators' live `WatchOffers` streams.
#[derive(Debug, Default)]
pub struct OfferBoard {
    pending: DashMap<String, Vec<Pending>>,
    by_contact: DashMap<String, String>,
    watchers: DashMap<String, mpsc::Sender<Result<pb::Offer, Status>>>,
}

impl OfferBoard {
    /// Applies engine events: new offers are pushed to the operator's stream (never blocking:
    /// a desktop that does not read loses the push, keeps the offer in its pending list, and the
    /// offer times out as usual), and offers that ended are forgotten.
    pub fn apply(&self, events: &[Event], now: Millis) {
        for e in events {
            if let Some((operator, deadline, offer)) = convert::offer(e, now) {
                self.by_contact.insert(offer.contact_id.clone(), operator.clone());
                if let Some(w) = self.watchers.get(&operator) {
                    let _ = w.try_send(Ok(offer.clone()));
                }
                self.pending.entry(operator).or_default().push(Pending { deadline, offer });
                continue;
            }
            match e {
                Event::Accepted { contact, .. }
                | Event::OfferTimedOut { contact, .. }
                | Event::OfferDeclined { contact, .. }
                | Event::Finished { contact, .. } => {
                    if let Some((_, op)) = self.by_contact.remove(&**contact) {
                        if let Some(mut p) = self.pending.get_mut(&op) {
                            p.retain(|x| x.offer.contact_id != **contact);
                        }
                    }
                }
                Event::OperatorStatus { operator, to: smista_core::OperatorStatus::LoggedOut, .. } => {
                    // Ends the operator's stream.
                    self.watchers.remove(&**operator);
                }
                _ => {}
            }
        }
    }

    /// Opens the operator's offer stream, starting with the offers already pending.
    pub fn watch(&self, operator: &str, now: Millis) -> ReceiverStream<Result<pb::Offer, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if let Some(p) = self.pending.get(operator) {
            for x in p.iter() {
                let mut o = x.offer.clone();
                o.offer_deadline_ms = x.deadline.since(now);
                let _ = tx.try_send(Ok(o));
            }
        }
        self.watchers.insert(operator.to_owned(), tx);
        ReceiverStream::new(rx)
    }

    /// Ends every offer stream (shutdown).
    pub fn close_all(&self) {
        self.watchers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smista_core::{Channel, Outcome};

    fn finished(c: &str) -> Event {
        Event::Finished {
            contact: c.into(),
            queue: "q".into(),
            channel: Channel::Voice,
            outcome: Outcome::Abandoned,
            waited_ms: 0,
            handle_ms: 0,
        }
    }

    #[test]
    fn sequences_are_gapless_and_eviction_is_reported() {
        let log = EventLog::new(3);
        log.publish(&[finished("a"), finished("b")], Millis(0), 0);
        log.publish(&[finished("c"), finished("d")], Millis(0), 0);
        assert_eq!(log.latest(), 4);
        let got: Vec<u64> = log.read_after(1, 10).expect("retained").iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(log.read_after(0, 10).unwrap_err(), 2);
        assert!(log.read_after(4, 10).expect("empty").is_empty());
    }
}
