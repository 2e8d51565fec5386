//! Fan-out of what the engine reports: the sequenced contact-event log behind `StreamEvents`, and
//! the per-operator offer board behind `WatchOffers`.
//!
//! Routing never waits on a client: publishing appends to a bounded ring and wakes readers. Each
//! stream has its own task copying from the ring into a bounded channel; a reader that falls
//! further behind than the ring holds gets OUT_OF_RANGE and must resynchronise with a snapshot.
//!
//! Readers wait on one notification channel per queue (and one for all): a stream filtered to
//! some queues is woken only by events of those queues, so idle wallboards of quiet queues cost a
//! publish nothing. Every stream holds a [`StreamGuard`] that counts it under the stream caps.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::{Event, Millis};
use smista_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

use crate::convert;
use crate::limits::StreamGuard;

/// Most queue names one StreamEvents filter may list.
pub const MAX_FILTER_QUEUES: usize = 64;

/// A response stream that holds its place under the stream caps until it is dropped, and ends
/// with ABORTED when `superseded` was set (a newer WatchOffers of the same operator).
#[derive(Debug)]
pub struct Guarded<T> {
    rx: ReceiverStream<Result<T, Status>>,
    superseded: Option<Arc<AtomicBool>>,
    done: bool,
    _guard: StreamGuard,
}

impl<T> Guarded<T> {
    fn new(rx: ReceiverStream<Result<T, Status>>, superseded: Option<Arc<AtomicBool>>, guard: StreamGuard) -> Self {
        Guarded { rx, superseded, done: false, _guard: guard }
    }
}

impl<T> Stream for Guarded<T> {
    type Item = Result<T, Status>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.rx).poll_next(cx) {
            Poll::Ready(None) => {
                this.done = true;
                if this.superseded.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                    return Poll::Ready(Some(Err(Status::aborted("superseded by another watch of this operator"))));
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

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
    /// Wakes unfiltered readers: the last sequence published.
    latest: watch::Sender<u64>,
    /// Wakes readers filtered to a queue: the last sequence of an event of that queue.
    by_queue: Vec<watch::Sender<u64>>,
    queue_idx: HashMap<Box<str>, usize>,
    /// The life of this stream (see `ContactEvent.epoch`).
    epoch: u64,
}

impl EventLog {
    /// A log retaining the last `cap` events of contacts in `queues`.
    #[must_use]
    pub fn new<'a>(cap: usize, queues: impl Iterator<Item = &'a str>, epoch: u64) -> Self {
        let queue_idx: HashMap<Box<str>, usize> = queues.enumerate().map(|(i, q)| (Box::from(q), i)).collect();
        EventLog {
            ring: Mutex::new(Ring { next: 1, buf: VecDeque::with_capacity(cap.min(1 << 16)), cap: cap.max(1) }),
            latest: watch::channel(0).0,
            by_queue: (0..queue_idx.len()).map(|_| watch::channel(0).0).collect(),
            queue_idx,
            epoch,
        }
    }

    /// Appends the contact events among `events`, giving each the next sequence number.
    pub fn publish(&self, events: &[Event], now: Millis, unix_ms: u64) {
        let mut last = None;
        // Few queues per batch: a small list, not a set.
        let mut touched: [(usize, u64); 8] = [(usize::MAX, 0); 8];
        let mut n_touched = 0;
        {
            let mut ring = self.ring.lock();
            for e in events.iter().filter(|e| e.contact().is_some()) {
                let seq = ring.next;
                last = Some(seq);
                ring.next += 1;
                if ring.buf.len() == ring.cap {
                    ring.buf.pop_front();
                }
                if let Some(&qi) = e.queue().and_then(|q| self.queue_idx.get(&**q)) {
                    match touched[..n_touched].iter_mut().find(|(q, _)| *q == qi) {
                        Some(t) => t.1 = seq,
                        None if n_touched < 8 => {
                            touched[n_touched] = (qi, seq);
                            n_touched += 1;
                        }
                        None => {
                            self.by_queue[qi].send_replace(seq);
                        }
                    }
                }
                ring.buf.push_back(Stored { seq, event: e.clone(), now, unix_ms });
            }
        }
        for (qi, seq) in &touched[..n_touched] {
            self.by_queue[*qi].send_replace(*seq);
        }
        if let Some(seq) = last {
            self.latest.send_replace(seq);
        }
    }

    /// Indices of `queues`, or NOT_FOUND naming the first unknown one.
    pub fn queue_indices(&self, queues: &[String]) -> Result<Vec<usize>, Status> {
        if queues.len() > MAX_FILTER_QUEUES {
            return Err(Status::invalid_argument(format!("at most {MAX_FILTER_QUEUES} queues in a filter")));
        }
        queues
            .iter()
            .map(|q| {
                self.queue_idx
                    .get(q.as_str())
                    .copied()
                    .ok_or_else(|| Status::not_found(format!("unknown queue `{}`", smista_core::error::clip(q))))
            })
            .collect()
    }

    /// The life of this stream.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// OUT_OF_RANGE with `message`, naming the current epoch in `smista-epoch` metadata.
    fn resync(&self, message: String) -> Status {
        let mut s = Status::out_of_range(message);
        if let Ok(v) = self.epoch.to_string().parse() {
            s.metadata_mut().insert("smista-epoch", v);
        }
        s
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

    /// A stream of events after `after` (0: from the next live event) in `queues` (empty: all;
    /// every name must be a configured queue), ending when `shutdown` flips to true. `guard`
    /// counts the stream under the caps while it lives.
    pub fn subscribe(
        self: &Arc<Self>,
        after_epoch: u64,
        after: u64,
        queues: Vec<String>,
        guard: StreamGuard,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Guarded<pb::ContactEvent>, Status> {
        let filter = self.queue_indices(&queues)?;
        if after_epoch != 0 && after_epoch != self.epoch {
            return Err(self.resync(format!(
                "after_epoch {after_epoch} is not this stream's epoch {}: the server restarted or failed over since, and the events in between are gone; resynchronise with GetSnapshot",
                self.epoch
            )));
        }
        let mut cursor = if after == 0 { self.latest() } else { after };
        if cursor > self.latest() {
            return Err(self.resync(format!("after_sequence {after} is beyond the last event {}", self.latest())));
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let log = self.clone();
        // What wakes this reader: every publish, or only its queues' events.
        let mut wakers: Vec<watch::Receiver<u64>> = if filter.is_empty() {
            vec![self.latest.subscribe()]
        } else {
            filter.iter().map(|&qi| self.by_queue[qi].subscribe()).collect()
        };
        let wanted: Vec<Box<str>> = queues.into_iter().map(String::into_boxed_str).collect();
        tokio::spawn(async move {
            loop {
                for w in &mut wakers {
                    w.borrow_and_update();
                }
                match log.read_after(cursor, STREAM_BUFFER) {
                    Err(first) => {
                        let _ = tx
                            .send(Err(log.resync(format!(
                                "events after {cursor} are no longer retained (oldest is {first}); resynchronise with GetSnapshot"
                            ))))
                            .await;
                        return;
                    }
                    Ok(batch) if batch.is_empty() => {
                        tokio::select! {
                            woke = wait_any(&mut wakers) => if !woke { return },
                            _ = shutdown.changed() => return,
                            _ = tx.closed() => return,
                        }
                    }
                    Ok(batch) => {
                        for stored in batch {
                            cursor = stored.seq;
                            if !wanted.is_empty()
                                && !stored.event.queue().is_some_and(|q| wanted.iter().any(|w| **w == **q))
                            {
                                continue;
                            }
                            let Some(mut ev) = stored.to_pb() else { continue };
                            ev.epoch = log.epoch;
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
        Ok(Guarded::new(ReceiverStream::new(rx), None, guard))
    }
}

/// Waits until one of `wakers` sees a new value; false if every sender is gone.
async fn wait_any(wakers: &mut [watch::Receiver<u64>]) -> bool {
    match wakers {
        [one] => one.changed().await.is_ok(),
        many => {
            let waits = many.iter_mut().map(|w| Box::pin(w.changed()));
            futures_util::future::select_all(waits).await.0.is_ok()
        }
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
    watchers: DashMap<String, Watcher>,
}

#[derive(Debug)]
struct Watcher {
    tx: mpsc::Sender<Result<pb::Offer, Status>>,
    /// Set when a newer watch replaces this one: its stream ends with ABORTED.
    superseded: Arc<AtomicBool>,
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
                    let _ = w.tx.try_send(Ok(offer.clone()));
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

    /// Opens the operator's offer stream, starting with the offers already pending. A stream
    /// already open for the operator ends with ABORTED.
    pub fn watch(&self, operator: &str, now: Millis, guard: StreamGuard) -> Guarded<pb::Offer> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if let Some(p) = self.pending.get(operator) {
            for x in p.iter() {
                let mut o = x.offer.clone();
                o.offer_deadline_ms = x.deadline.since(now);
                let _ = tx.try_send(Ok(o));
            }
        }
        let superseded = Arc::new(AtomicBool::new(false));
        let old = self.watchers.insert(operator.to_owned(), Watcher { tx, superseded: superseded.clone() });
        if let Some(old) = old {
            old.superseded.store(true, Ordering::Release);
        }
        Guarded::new(ReceiverStream::new(rx), Some(superseded), guard)
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
            operator: None,
            group: None,
            wrap_up_ms: 0,
            arrived: smista_core::Millis(0),
            segment: smista_core::Segment::General,
            charged: None,
        }
    }

    #[test]
    fn sequences_are_gapless_and_eviction_is_reported() {
        let log = EventLog::new(3, ["q"].into_iter(), 1);
        log.publish(&[finished("a"), finished("b")], Millis(0), 0);
        log.publish(&[finished("c"), finished("d")], Millis(0), 0);
        assert_eq!(log.latest(), 4);
        let got: Vec<u64> = log.read_after(1, 10).expect("retained").iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(log.read_after(0, 10).unwrap_err(), 2);
        assert!(log.read_after(4, 10).expect("empty").is_empty());
    }
}
