//! Fan-out of what the engine reports: the sequenced contact-event log behind `StreamEvents`, and
//! the per-operator offer board behind `WatchOffers`.
//!
//! Routing never waits on a client: publishing appends to a bounded ring and marks who must be
//! woken. A `StreamEvents` reader is a stream polled by its connection (no task or channel of
//! its own) that, when woken, takes everything after its cursor from the ring in one batch; a
//! reader that falls further behind than the ring holds gets OUT_OF_RANGE and must resynchronise
//! with a snapshot.
//!
//! Readers wait on one notification channel per queue (and one for all): a stream filtered to
//! some queues is woken only by events of those queues, so idle wallboards of quiet queues cost a
//! publish nothing. With `[server] event_flush_ms` the wake-ups are sent by one flusher task at
//! most once per period, not by the publishing thread. Every stream holds a [`StreamGuard`] that
//! counts it under the stream caps.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::{Event, Millis};
use smista_proto::v1 as pb;
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

use crate::edge::limits::StreamGuard;
use crate::wire::bounds::MAX_FILTER_QUEUES;
use crate::wire::convert;

/// Highest `StreamEventsRequest.max_delay_ms`.
pub const MAX_DELAY_MS: u32 = 60_000;

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
#[derive(Debug)]
struct Stored {
    seq: u64,
    /// Index of the event's queue (`u32::MAX`: none or not configured), for filtered readers.
    queue: u32,
    event: Event,
    now: Millis,
    unix_ms: u64,
    /// The wire form (an encoded `ContactEvent`), made by the first reader and shared by all.
    wire: OnceLock<Option<Bytes>>,
}

impl Stored {
    fn to_pb(&self, epoch: u64) -> Option<pb::ContactEvent> {
        let mut ce = convert::contact_event(&self.event, self.now, self.unix_ms)?;
        ce.sequence = self.seq;
        ce.epoch = epoch;
        Some(ce)
    }

    /// The encoded event, converted and encoded once however many readers take it.
    fn wire(&self, epoch: u64) -> Option<Bytes> {
        self.wire.get_or_init(|| self.to_pb(epoch).map(|ce| Bytes::from(prost::Message::encode_to_vec(&ce)))).clone()
    }
}

#[derive(Debug)]
struct Ring {
    /// Sequence of the next event to publish (the first is 1).
    next: u64,
    buf: VecDeque<Arc<Stored>>,
    cap: usize,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.next - self.buf.len() as u64
    }
}

/// Wakes readers: who is woken, and when.
#[derive(Debug)]
struct Wakers {
    /// Unfiltered readers: the last sequence published.
    latest: watch::Sender<u64>,
    /// Readers filtered to a queue: the last sequence of an event of that queue.
    by_queue: Vec<watch::Sender<u64>>,
    /// With a flush period: the queues with events since the last flush (a bit per queue).
    touched: Vec<AtomicU64>,
    /// With a flush period: wakes the flusher.
    dirty: Notify,
    /// 0: readers are woken by `publish` itself; else at most once per this many ms.
    flush_ms: u64,
    flusher_started: AtomicBool,
}

impl Wakers {
    /// Wakes the readers of `queues` (indices) and the unfiltered ones, up to `seq`.
    fn wake(&self, queues: impl Iterator<Item = usize>, seq: u64) {
        for qi in queues {
            self.by_queue[qi].send_replace(seq);
        }
        self.latest.send_replace(seq);
    }
}

/// The sequenced contact-event log.
///
/// Publishing appends to the ring under its lock and then wakes readers. With a flush period
/// (`[server] event_flush_ms`), `publish` only marks the queues it touched and notifies one
/// flusher task, which wakes the readers at once after a quiet spell and then at most once per
/// period while events keep coming: 500 wallboards cost the routing path nothing, and each of
/// them one wake-up per period however many contacts flow. A reader marks its wake-up seen
/// before reading the ring, and the ring is written before anyone is woken, so no event is
/// ever left unread until the next one.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<Ring>,
    wakers: Arc<Wakers>,
    queue_idx: HashMap<Box<str>, usize>,
    /// The life of this stream (see `ContactEvent.epoch`).
    epoch: u64,
}

impl EventLog {
    /// A log retaining the last `cap` events of contacts in `queues`, waking its readers at most
    /// once per `flush_ms` (0: at every publish).
    #[must_use]
    pub fn new<'a>(cap: usize, queues: impl Iterator<Item = &'a str>, epoch: u64, flush_ms: u64) -> Self {
        let queue_idx: HashMap<Box<str>, usize> = queues.enumerate().map(|(i, q)| (Box::from(q), i)).collect();
        let n = queue_idx.len();
        EventLog {
            ring: Mutex::new(Ring { next: 1, buf: VecDeque::with_capacity(cap.min(1 << 16)), cap: cap.max(1) }),
            wakers: Arc::new(Wakers {
                latest: watch::channel(0).0,
                by_queue: (0..n).map(|_| watch::channel(0).0).collect(),
                touched: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
                dirty: Notify::new(),
                flush_ms,
                flusher_started: AtomicBool::new(false),
            }),
            queue_idx,
            epoch,
        }
    }

    /// Appends the contact events among `events`, giving each the next sequence number.
    ///
    /// Only the sequence numbers and the ring's own push and pop happen under its lock: the
    /// entries are built (allocated, the event cloned, its queue looked up) before it, and the
    /// entries pushed out of a full ring are dropped after it. Every RPC of every core comes
    /// through here; the allocation and the event's clone and drop under the lock were most of
    /// the time two cores waited on each other.
    pub fn publish(&self, events: &[Event], now: Millis, unix_ms: u64) {
        let mut stored: Vec<Arc<Stored>> = events
            .iter()
            .filter(|e| e.contact().is_some())
            .map(|e| {
                let qi = e.queue().and_then(|q| self.queue_idx.get(&**q)).copied();
                let queue = qi.and_then(|q| u32::try_from(q).ok()).unwrap_or(u32::MAX);
                Arc::new(Stored { seq: 0, queue, event: e.clone(), now, unix_ms, wire: OnceLock::new() })
            })
            .collect();
        if stored.is_empty() {
            return;
        }
        // Few queues per batch: a small list, not a set.
        let mut touched: [usize; 8] = [usize::MAX; 8];
        let mut n_touched = 0;
        let w = &*self.wakers;
        let mut last = None;
        {
            let mut ring = self.ring.lock();
            for entry in &mut stored {
                let seq = ring.next;
                last = Some(seq);
                ring.next += 1;
                // Built just above and shared with no one yet, so always unique.
                if let Some(s) = Arc::get_mut(entry) {
                    s.seq = seq;
                }
                let qi = entry.queue as usize;
                if entry.queue != u32::MAX && !touched[..n_touched].contains(&qi) {
                    if n_touched < touched.len() {
                        touched[n_touched] = qi;
                        n_touched += 1;
                    } else if w.flush_ms == 0 {
                        // Woken now: it takes the lock to read, after this event is in.
                        w.by_queue[qi].send_replace(seq);
                    } else {
                        w.touched[qi / 64].fetch_or(1 << (qi % 64), Ordering::Relaxed);
                    }
                }
                let evicted = if ring.buf.len() == ring.cap { ring.buf.pop_front() } else { None };
                ring.buf.push_back(entry.clone());
                // The entry pushed out takes the new one's place in `stored`, to be dropped
                // after the lock.
                if let Some(old) = evicted {
                    *entry = old;
                }
            }
        }
        drop(stored);
        let Some(seq) = last else { return };
        if w.flush_ms == 0 {
            w.wake(touched[..n_touched].iter().copied(), seq);
        } else {
            for &qi in &touched[..n_touched] {
                w.touched[qi / 64].fetch_or(1 << (qi % 64), Ordering::Relaxed);
            }
            w.dirty.notify_one();
        }
    }

    /// Starts the flusher on first use (it needs the runtime; a log nobody reads needs none).
    fn start_flusher(self: &Arc<Self>) {
        let w = &self.wakers;
        if w.flush_ms == 0 || w.flusher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (weak, period) = (Arc::downgrade(self), Duration::from_millis(w.flush_ms));
        // Events published before the flusher started left a permit in `dirty`.
        tokio::spawn(async move {
            loop {
                let Some(log) = weak.upgrade() else { return };
                let w = log.wakers.clone();
                drop(log);
                // A dropped log cannot wake its flusher: it looks again every second.
                if tokio::time::timeout(Duration::from_secs(1), w.dirty.notified()).await.is_err() {
                    continue;
                }
                let Some(log) = weak.upgrade() else { return };
                let mut queues = Vec::new();
                for (word, bits) in w.touched.iter().enumerate() {
                    let mut b = bits.swap(0, Ordering::AcqRel);
                    while b != 0 {
                        queues.push(word * 64 + b.trailing_zeros() as usize);
                        b &= b - 1;
                    }
                }
                w.wake(queues.into_iter(), log.latest());
                drop(log);
                tokio::time::sleep(period).await;
            }
        });
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
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<Arc<Stored>>, u64> {
        let ring = self.ring.lock();
        let first = ring.first_seq();
        if after + 1 < first {
            return Err(first);
        }
        let skip = (after + 1 - first) as usize;
        Ok(ring.buf.iter().skip(skip).take(max).cloned().collect())
    }

    /// A stream of the events `req` asks for: after `after_sequence` (0: from the next live
    /// event) in `queues` (empty: all; every name must be a configured queue), in batches at most
    /// every `max_delay_ms`, ending when `shutdown` flips to true. `guard` counts the stream
    /// under the caps while it lives.
    pub fn subscribe(
        self: &Arc<Self>,
        req: pb::StreamEventsRequest,
        guard: StreamGuard,
        shutdown: watch::Receiver<bool>,
    ) -> Result<EventStream, Status> {
        let pb::StreamEventsRequest { after_sequence: after, queues, after_epoch, max_delay_ms } = req;
        if max_delay_ms > MAX_DELAY_MS {
            return Err(Status::invalid_argument(format!("max_delay_ms above {MAX_DELAY_MS}")));
        }
        let filter = self.queue_indices(&queues)?;
        if after_epoch != 0 && after_epoch != self.epoch {
            return Err(self.resync(format!(
                "after_epoch {after_epoch} is not this stream's epoch {}: the server restarted or failed over since, and the events in between are gone; resynchronise with GetSnapshot",
                self.epoch
            )));
        }
        let latest = self.latest();
        let cursor = if after == 0 { latest } else { after };
        if cursor > latest {
            return Err(self.resync(format!("after_sequence {after} is beyond the last event {latest}")));
        }
        self.start_flusher();
        // What wakes this reader: any publish, or only its queues' events. Subscribing marks
        // the current value seen; the first read below takes everything after `cursor`.
        let wakes: Vec<Wait<u64>> = if filter.is_empty() {
            vec![Wait::new(self.wakers.latest.subscribe())]
        } else {
            filter.iter().map(|&qi| Wait::new(self.wakers.by_queue[qi].subscribe())).collect()
        };
        let mut wanted = vec![0u64; self.queue_idx.len().div_ceil(64)];
        for qi in &filter {
            wanted[qi / 64] |= 1 << (qi % 64);
        }
        let stopping = *shutdown.borrow();
        Ok(EventStream {
            log: self.clone(),
            cursor,
            wanted: (!filter.is_empty()).then_some(wanted),
            ready: VecDeque::new(),
            wakes,
            shutdown: Wait::new(shutdown),
            linger: Duration::from_millis(u64::from(max_delay_ms)),
            pause: None,
            done: stopping,
            _guard: guard,
        })
    }
}

/// A wait for the next change of a watched value, polled in place.
struct Wait<T> {
    fut: Pin<Box<dyn Future<Output = Option<watch::Receiver<T>>> + Send>>,
}

impl<T: Send + Sync + 'static> Wait<T> {
    fn new(mut rx: watch::Receiver<T>) -> Self {
        Wait { fut: Box::pin(async move { rx.changed().await.ok().map(|()| rx) }) }
    }

    /// `Ready(Some(rx))` when the value changed (the wait re-armed by the caller with `rx`),
    /// `Ready(None)` when the sender is gone.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<watch::Receiver<T>>> {
        self.fut.as_mut().poll(cx)
    }
}

/// One `StreamEvents` reader: polled by the connection's stream itself (no task, no channel of
/// its own). When woken it takes every event since its cursor (up to 256 at a
/// time) from the ring and hands on those of its queues together, so one wake-up and one write
/// carry a whole batch. Items are encoded `ContactEvent`s, each encoded once for all readers
/// (served by [`crate::service::events`]).
pub struct EventStream {
    log: Arc<EventLog>,
    /// The last sequence read from the ring.
    cursor: u64,
    /// Bit per queue index wanted (None: all).
    wanted: Option<Vec<u64>>,
    ready: VecDeque<Bytes>,
    wakes: Vec<Wait<u64>>,
    shutdown: Wait<bool>,
    /// `max_delay_ms`: after a batch, the next is read no sooner than this.
    linger: Duration,
    /// Running after a batch while `linger` lasts.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    _guard: StreamGuard,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("cursor", &self.cursor).field("done", &self.done).finish_non_exhaustive()
    }
}

impl EventStream {
    /// Reads the ring after the cursor into `ready`: Ok(true) when it read up to the last event
    /// published, Ok(false) when more remain; Err(OUT_OF_RANGE) when events were lost.
    fn refill(&mut self) -> Result<bool, Status> {
        let batch = self.log.read_after(self.cursor, STREAM_BUFFER).map_err(|first| {
            self.log.resync(format!(
                "events after {} are no longer retained (oldest is {first}); resynchronise with GetSnapshot",
                self.cursor
            ))
        })?;
        let caught_up = batch.len() < STREAM_BUFFER;
        for stored in batch {
            self.cursor = stored.seq;
            if let Some(w) = &self.wanted {
                let q = stored.queue as usize;
                if stored.queue == u32::MAX || w[q / 64] & (1 << (q % 64)) == 0 {
                    continue;
                }
            }
            if let Some(ev) = stored.wire(self.log.epoch) {
                self.ready.push_back(ev);
            }
        }
        Ok(caught_up)
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(ev) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.shutdown.poll(cx) {
                Poll::Ready(Some(rx)) if !*rx.borrow() => this.shutdown = Wait::new(rx),
                Poll::Ready(_) => {
                    this.done = true;
                    continue;
                }
                Poll::Pending => {}
            }
            if let Some(p) = &mut this.pause {
                if p.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.pause = None;
            }
            let caught_up = match this.refill() {
                Ok(c) => c,
                Err(s) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(s)));
                }
            };
            if !caught_up {
                // A backlog (a reader resuming, or one that lingered): read on without a pause.
                continue;
            }
            if !this.ready.is_empty() {
                if !this.linger.is_zero() {
                    this.pause = Some(Box::pin(tokio::time::sleep(this.linger)));
                }
                continue;
            }
            // Nothing new: wait for a wake-up. A wake that already happened re-arms and reads
            // again (it may announce events the read above already took: harmless).
            let mut woke = false;
            for w in &mut this.wakes {
                match w.poll(cx) {
                    Poll::Ready(Some(rx)) => {
                        *w = Wait::new(rx);
                        woke = true;
                    }
                    Poll::Ready(None) => this.done = true,
                    Poll::Pending => {}
                }
            }
            if !woke && !this.done {
                return Poll::Pending;
            }
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
        finished_in(c, "q")
    }

    fn finished_in(c: &str, q: &str) -> Event {
        Event::Finished {
            contact: c.into(),
            queue: q.into(),
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
        let log = EventLog::new(3, ["q"].into_iter(), 1, 0);
        log.publish(&[finished("a"), finished("b")], Millis(0), 0);
        log.publish(&[finished("c"), finished("d")], Millis(0), 0);
        assert_eq!(log.latest(), 4);
        let got: Vec<u64> = log.read_after(1, 10).expect("retained").iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(log.read_after(0, 10).unwrap_err(), 2);
        assert!(log.read_after(4, 10).expect("empty").is_empty());
    }

    fn guard() -> StreamGuard {
        let limits = Arc::new(crate::edge::limits::Limits::new(&crate::config::limits::LimitsSection::default()));
        limits.open_stream(&crate::edge::auth::Principal::anonymous()).expect("under the cap")
    }

    fn req(after_epoch: u64, after_sequence: u64, queues: &[&str]) -> pb::StreamEventsRequest {
        let queues = queues.iter().map(|q| (*q).to_owned()).collect();
        pb::StreamEventsRequest { after_sequence, queues, after_epoch, max_delay_ms: 0 }
    }

    /// Reads `n` events from `s`, failing after 5 s without one.
    async fn take(s: &mut EventStream, n: usize) -> Vec<pb::ContactEvent> {
        use tokio_stream::StreamExt;
        let mut got = Vec::new();
        while got.len() < n {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), s.next()).await;
            let wire = next.expect("an event within 5 s").expect("open").expect("no error");
            got.push(prost::Message::decode(wire).expect("a ContactEvent"));
        }
        got
    }

    /// Readers woken by the flusher (and, with a period of 0, by `publish` itself) get every
    /// event of their queues, in order and without a gap, however the publishes fall against
    /// the flushes: bursts, single events after a quiet spell, more than eight queues in one
    /// publish, a reader of one queue among many.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_get_every_event_of_their_queues_whatever_the_flush_period() {
        let queues: Vec<String> = (0..70).map(|i| format!("q{i}")).collect();
        for flush_ms in [0, 5] {
            let log = Arc::new(EventLog::new(100_000, queues.iter().map(String::as_str), 7, flush_ms));
            let (_stop, shutdown) = watch::channel(false);
            let mut all = log.subscribe(req(0, 0, &[]), guard(), shutdown.clone()).expect("all");
            let mut q3 = log.subscribe(req(7, 0, &["q3"]), guard(), shutdown.clone()).expect("q3");
            let mut q69 = log.subscribe(req(7, 0, &["q69", "q1"]), guard(), shutdown.clone()).expect("q69");
            let publisher = {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    for round in 0..200 {
                        // A publish touching twelve queues (beyond the eight tracked inline).
                        let batch: Vec<Event> = (0..12)
                            .map(|k| {
                                n += 1;
                                finished_in(&format!("c{n}"), &format!("q{}", (round + k * 6) % 70))
                            })
                            .collect();
                        log.publish(&batch, Millis(0), 0);
                        if round % 50 == 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(12)).await;
                        }
                    }
                })
            };
            publisher.await.expect("published");
            let every = take(&mut all, 2_400).await;
            let seqs: Vec<u64> = every.iter().map(|e| e.sequence).collect();
            assert_eq!(seqs, (1..=2_400).collect::<Vec<u64>>(), "flush {flush_ms}: gapless, in order");
            assert!(every.iter().all(|e| e.epoch == 7));
            let want = |q: &[&str]| every.iter().filter(|e| q.contains(&e.queue.as_str())).count();
            let got3 = take(&mut q3, want(&["q3"])).await;
            assert!(got3.iter().all(|e| e.queue == "q3"));
            let got69 = take(&mut q69, want(&["q69", "q1"])).await;
            assert!(got69.iter().all(|e| e.queue == "q69" || e.queue == "q1"));
            assert!(got69.windows(2).all(|w| w[0].sequence < w[1].sequence));
            // A lone event after a quiet spell reaches a reader too.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            log.publish(&[finished_in("late", "q3")], Millis(0), 0);
            assert_eq!(take(&mut q3, 1).await[0].contact_id, "late");
            assert_eq!(take(&mut all, 1).await[0].contact_id, "late");
        }
    }

    /// Shutdown ends a reader's stream; a reader that fell behind the ring gets OUT_OF_RANGE.
    #[tokio::test]
    async fn shutdown_ends_streams_and_a_reader_behind_the_ring_must_resync() {
        use tokio_stream::StreamExt;
        let log = Arc::new(EventLog::new(4, ["q"].into_iter(), 1, 5));
        let (stop, shutdown) = watch::channel(false);
        let mut s = log.subscribe(req(0, 0, &[]), guard(), shutdown.clone()).expect("subscribed");
        log.publish(&[finished("a")], Millis(0), 0);
        assert_eq!(take(&mut s, 1).await[0].contact_id, "a");
        stop.send_replace(true);
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), s.next()).await.expect("ends");
        assert!(end.is_none());
        let (_stop2, shutdown2) = watch::channel(false);
        let mut late = log.subscribe(req(0, 1, &[]), guard(), shutdown2).expect("subscribed");
        for c in ["b", "c", "d", "e", "f"] {
            log.publish(&[finished(c)], Millis(0), 0);
        }
        let e = late.next().await.expect("an item").expect_err("evicted");
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(late.next().await.is_none());
    }

    /// A reader that asked for `max_delay_ms` is sent a batch at most that often, and each
    /// batch holds everything published since: a backlog longer than one read is read at once,
    /// not one read per pause (time is the runtime's paused clock, not the wall's).
    #[tokio::test(start_paused = true)]
    async fn a_lingering_reader_gets_batches_at_most_that_often_and_never_falls_behind() {
        use tokio_stream::StreamExt;
        let log = Arc::new(EventLog::new(100_000, ["q"].into_iter(), 1, 0));
        let (_stop, shutdown) = watch::channel(false);
        let mut r = req(0, 0, &[]);
        r.max_delay_ms = 1_000;
        let mut s = log.subscribe(r, guard(), shutdown).expect("subscribed");
        let names: Vec<String> = (0..2_400).map(|i| format!("c{i}")).collect();
        let batch: Vec<Event> = names.iter().map(|c| finished(c)).collect();
        log.publish(&batch, Millis(0), 0);
        let start = tokio::time::Instant::now();
        let got = take(&mut s, 2_400).await;
        assert_eq!(got.last().map(|e| e.sequence), Some(2_400));
        assert!(start.elapsed() < std::time::Duration::from_millis(1_000), "a backlog is read without pauses");
        // Just read a batch: the next event waits for the pause to end, then comes.
        log.publish(&[finished("next")], Millis(0), 0);
        let early = tokio::time::timeout(std::time::Duration::from_millis(500), s.next()).await;
        assert!(early.is_err(), "not within half the delay");
        assert_eq!(take(&mut s, 1).await[0].contact_id, "next");
        assert!(start.elapsed() >= std::time::Duration::from_millis(1_000));
        let mut too_late = req(0, 0, &[]);
        too_late.max_delay_ms = MAX_DELAY_MS + 1;
        let (_stop2, shutdown2) = watch::channel(false);
        let e = log.subscribe(too_late, guard(), shutdown2).expect_err("above the bound");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
