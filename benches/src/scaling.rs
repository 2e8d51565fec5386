//! How the routing core scales with threads: the workloads of the `routing` criterion bench,
//! and [`compare`], which runs one workload on
//! one thread and on several in alternating rounds so that the ratio is measured in one run
//! (this machine's speed drifts by tens of percent within minutes; alternating rounds see the
//! same drift on both sides).
//!
//! Nothing in a timed loop is shared between threads but the engine (or the server's state):
//! each thread numbers its own contacts, keeps its own clock and draws its queues from its own
//! generator ([`Lane`]).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use smista_core::budget::Unlimited;
use smista_core::{Decision, Engine, Event, Millis, RequestedState};

use crate::{centre, voice_offer};

/// Queues of the routing workloads.
pub const QUEUES: usize = 40;
/// Operators of the routing workloads.
pub const OPERATORS: usize = 3_300;

/// One thread's contacts: its own numbering, clock and queue choice (splitmix64).
#[derive(Clone, Debug)]
pub struct Lane {
    /// The thread's number, part of its contact ids.
    pub thread: u64,
    /// The last contact number handed out (also the thread's clock, in engine ms).
    pub n: u64,
    rng: u64,
}

impl Lane {
    /// Lane of `thread`, numbering from `start + 1`.
    #[must_use]
    pub fn new(thread: u64, start: u64) -> Lane {
        Lane { thread, n: start, rng: 0x9E37_79B9_7F4A_7C15 ^ (thread + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ start }
    }

    /// The next contact's number and queue index (uniform over `queues`).
    pub fn next(&mut self, queues: usize) -> (u64, usize) {
        self.n += 1;
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (self.n, (z % queues.max(1) as u64) as usize)
    }
}

/// The routing workloads' engine: [`OPERATORS`] operators on [`QUEUES`] queues, all logged in,
/// all paused if `paused`. Offers time out after an hour of engine time: each lane keeps its
/// own clock (one millisecond per contact) and ticks at it, so a lane running ahead of another
/// by more than the default 15 s would time out the other's offers before its accept (the
/// accept then failed: the harness, not the engine, was wrong). A round is far shorter.
#[must_use]
pub fn engine(paused: bool) -> Arc<Engine> {
    let (mut cfg, logins) = centre(QUEUES, OPERATORS);
    for q in &mut cfg.queues {
        q.offer_timeout_ms = 3_600_000;
    }
    let e = Engine::new(&cfg, Arc::new(Unlimited)).expect("valid config");
    let mut ev = Vec::new();
    for l in &logins {
        e.login(l, Millis(0), &mut ev).expect("login");
        if paused {
            e.set_state(&l.operator_id, &RequestedState::Paused("bench".into()), Millis(0), &mut ev).expect("pause");
        }
    }
    Arc::new(e)
}

/// One offer decision, then whatever brings the engine back to its starting state: accept and
/// complete if assigned (`assign_cycle`), cancel if queued (`queue_cycle`, operators paused).
/// Ticks every 1,024 of the lane's cycles, as the server's tick would forget finished contacts.
pub fn cycle(e: &Engine, lane: &mut Lane, ev: &mut Vec<Event>, queues: &[String]) {
    let (n, qi) = lane.next(queues.len());
    let id = format!("t{}-c{n}", lane.thread);
    let now = Millis(n);
    let d = e.offer(&voice_offer(id.clone(), queues[qi].clone()), now, ev).expect("offer");
    match &d {
        Decision::Assigned { operator, .. } => {
            e.accept(operator, &id, now, ev).expect("accept");
            e.complete(operator, &id, 1, now, ev).expect("complete");
        }
        Decision::Queued { .. } => {
            e.cancel(&id, now, ev).expect("cancel");
        }
        Decision::Diverted { .. } => {}
    }
    black_box(&d);
    if n % 1024 == 0 {
        e.tick(now, ev);
    }
    ev.clear();
}

/// `per_thread` cycles on each of `lanes.len()` threads, started together; the wall time.
pub fn run_cycles(e: &Arc<Engine>, lanes: &mut [Lane], per_thread: u64) -> Duration {
    let queues: Arc<Vec<String>> = Arc::new(e.queue_names().map(str::to_owned).collect());
    let barrier = Arc::new(Barrier::new(lanes.len() + 1));
    let handles: Vec<_> = lanes
        .iter()
        .map(|lane| {
            let (e, queues, barrier, mut lane) = (e.clone(), queues.clone(), barrier.clone(), lane.clone());
            std::thread::spawn(move || {
                let mut ev = Vec::with_capacity(16);
                barrier.wait();
                for _ in 0..per_thread {
                    cycle(&e, &mut lane, &mut ev, &queues);
                }
                lane
            })
        })
        .collect();
    barrier.wait();
    let begun = Instant::now();
    for (slot, h) in lanes.iter_mut().zip(handles) {
        *slot = h.join().expect("bench thread");
    }
    begun.elapsed()
}

/// Offer decisions alone, `batches` batches of `per_batch` offers per thread on `lanes.len()`
/// threads that live through all the batches (starting threads per batch unmapped their stacks
/// while the other thread was timing: 9% of a profile went to the kernel's TLB shootdowns). In
/// each batch every thread builds its requests, then (timed, started together) offers them,
/// then (untimed) accepts and completes what was assigned and cancels what was queued; then one
/// thread ticks. The sum over batches of the slowest thread's offering time.
pub fn run_offers(e: &Arc<Engine>, lanes: &mut [Lane], batches: u64, per_batch: u64) -> Duration {
    let queues: Arc<Vec<String>> = Arc::new(e.queue_names().map(str::to_owned).collect());
    let start = Arc::new(Barrier::new(lanes.len()));
    let done = Arc::new(Barrier::new(lanes.len()));
    let handles: Vec<_> = lanes
        .iter()
        .map(|lane| {
            let (e, queues, start, done, mut lane) =
                (e.clone(), queues.clone(), start.clone(), done.clone(), lane.clone());
            std::thread::spawn(move || {
                let mut took = Vec::with_capacity(batches as usize);
                let mut ev = Vec::with_capacity(16 * per_batch as usize);
                let mut decided = Vec::with_capacity(per_batch as usize);
                for _ in 0..batches {
                    let reqs: Vec<_> = (0..per_batch)
                        .map(|_| {
                            let (n, qi) = lane.next(queues.len());
                            (n, voice_offer(format!("t{}-o{n}", lane.thread), queues[qi].clone()))
                        })
                        .collect();
                    start.wait();
                    let begun = Instant::now();
                    for (n, r) in &reqs {
                        decided.push(e.offer(r, Millis(*n), &mut ev).expect("offer"));
                    }
                    took.push(begun.elapsed());
                    for ((n, r), d) in reqs.iter().zip(decided.drain(..)) {
                        let now = Millis(*n);
                        match black_box(d) {
                            Decision::Assigned { operator, .. } => {
                                e.accept(&operator, &r.contact_id, now, &mut ev).expect("accept");
                                e.complete(&operator, &r.contact_id, 1, now, &mut ev).expect("complete");
                            }
                            Decision::Queued { .. } => {
                                let _ = e.cancel(&r.contact_id, now, &mut ev);
                            }
                            Decision::Diverted { .. } => {}
                        }
                        ev.clear();
                    }
                    if done.wait().is_leader() {
                        e.tick(Millis(lane.n), &mut ev);
                        ev.clear();
                    }
                }
                (took, lane)
            })
        })
        .collect();
    let mut per_batch_slowest = vec![Duration::ZERO; batches as usize];
    for (slot, h) in lanes.iter_mut().zip(handles) {
        let (took, lane) = h.join().expect("bench thread");
        for (s, t) in per_batch_slowest.iter_mut().zip(took) {
            *s = (*s).max(t);
        }
        *slot = lane;
    }
    per_batch_slowest.into_iter().sum()
}

/// One workload measured on one thread and on `threads`, alternating.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// The workload's name.
    pub name: String,
    /// Threads of the multi-threaded side.
    pub threads: usize,
    /// Operations per second of each one-thread round.
    pub one: Vec<f64>,
    /// Operations per second of each multi-thread round.
    pub many: Vec<f64>,
    /// Median of the ratios of each multi-thread round to the one-thread round before it, over
    /// the rounds whose control found the cores there (see `control`; all rounds if none did).
    pub ratio: f64,
    /// The same ratio for the control (threads sharing nothing: [`spin`]) run around each round:
    /// what the machine gave the threads at that moment (2.0 on two idle cores). A round whose
    /// control is below 0.9 of the thread count ran while the machine lent a core elsewhere.
    pub control: Vec<f64>,
    /// Rounds whose control found the cores there, out of all.
    pub rounds_counted: usize,
    /// Median operations per second on one thread.
    pub one_median: f64,
    /// Median operations per second on `threads` threads.
    pub many_median: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Iterations of [`spin`] per thread in a control round (about 30 ms here).
const SPIN: u64 = 20_000_000;

/// The control: `threads` threads each mixing `iters` numbers (splitmix64), sharing nothing, started
/// together; the wall time. Two threads take as long as one exactly when two cores are there.
#[must_use]
pub fn spin(threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut lane = Lane::new(t as u64, 0);
                barrier.wait();
                let mut acc = 0usize;
                for _ in 0..iters {
                    acc ^= lane.next(1 << 20).1;
                }
                black_box(acc)
            })
        })
        .collect();
    barrier.wait();
    let begun = Instant::now();
    for h in handles {
        h.join().expect("control thread");
    }
    begun.elapsed()
}

/// Runs `round(threads, ops)` on 1 and on `threads` threads in `rounds` alternating pairs, each
/// side doing `ops` operations in all; `round` returns the wall time of the timed part.
pub fn compare(
    name: &str,
    threads: usize,
    rounds: usize,
    ops: u64,
    mut round: impl FnMut(usize, u64) -> Duration,
) -> Comparison {
    // Warm up both sides (allocator, caches, maps at their working size).
    round(1, ops / 4);
    round(threads, ops / 4);
    let (mut one, mut many, mut ratios, mut control, mut counted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let c1 = spin(1, SPIN);
        let a = ops as f64 / round(1, ops).as_secs_f64();
        let b = ops as f64 / round(threads, ops).as_secs_f64();
        let ck = spin(threads, SPIN);
        let c = c1.as_secs_f64() / ck.as_secs_f64() * threads as f64;
        one.push(a);
        many.push(b);
        ratios.push(b / a);
        control.push(c);
        if c >= 0.9 * threads as f64 {
            counted.push(b / a);
        }
    }
    Comparison {
        name: name.to_owned(),
        threads,
        ratio: median(if counted.is_empty() { &ratios } else { &counted }),
        rounds_counted: counted.len(),
        control,
        one_median: median(&one),
        many_median: median(&many),
        one,
        many,
    }
}
