//! `--scenario citizen` (start smista with `benches/scenarios/citizen.toml`): callers who cannot
//! wait, and consultations by appointment.
//!
//! Callers arrive on `pensions` (Poisson, `--rate`) with a patience drawn from `--patience`
//! (exponential, 8 s when 0). A caller still waiting when their patience runs out either asks to
//! be called back (half of them: an *abandon avoided*) or hangs up. Desks (`--operators`) accept
//! every offer and hold it for a handle time; a callback's dial is answered with probability 0.7,
//! else the desk reports it unanswered (the queue retries it, then it ends UNREACHABLE).
//! Meanwhile consultants (a fifth of `--operators`, at least two) publish an hour of availability
//! on `consultancy` starting a few seconds after the run starts, a citizen books each one's first
//! slot by video, and the run checks that each appointment is offered to its consultant *on
//! time*: within [`ON_TIME_MS`] after its slot starts, never before.
//!
//! The run waits for every contact to end (up to the queue's retry schedule) before reporting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use smista_proto::v1 as pb;
use smista_proto::v1::appointment_service_client::AppointmentServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use tonic::Code;

use super::connect::Pool;
use super::open_loop::run_nonce;
use super::random::{draw_exp, stream_seed};
use super::{LoadConfig, LoadError, Report};

/// An appointment counts as kept on time if offered to its operator within this after its
/// slot's start (the server's tick is 100 ms; the slot is checked every tick).
pub const ON_TIME_MS: i64 = 2_000;
/// Share of callers out of patience who ask for a callback instead of hanging up.
const CALLBACK_SHARE: f64 = 0.5;
/// Probability that a callback's dial is answered.
const ANSWERED: f64 = 0.7;

/// What the citizen scenario counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CitizenFigures {
    /// Calls offered.
    pub calls: u64,
    /// Calls answered live by an operator.
    pub answered_live: u64,
    /// Callers who asked to be called back when out of patience: abandons avoided.
    pub callbacks_requested: u64,
    /// Callbacks that reached the citizen (dial answered, completed).
    pub callbacks_completed: u64,
    /// Dial attempts that went unanswered.
    pub callback_attempts_unanswered: u64,
    /// Callbacks that ended UNREACHABLE after their last attempt.
    pub callbacks_unreachable: u64,
    /// Callers who hung up while waiting.
    pub abandoned: u64,
    /// Callers whose hang-up came as an operator accepted them.
    pub hung_up_in_service: u64,
    /// Share of out-of-patience callers kept by a callback: requested / (requested + abandoned).
    pub abandon_avoided_share: f64,
    /// Appointments booked.
    pub appointments_booked: u64,
    /// Offered to the booked operator within [`ON_TIME_MS`] after the slot's start.
    pub appointments_on_time: u64,
    /// Offered before the slot's start (never acceptable).
    pub appointments_early: u64,
    /// Largest delay from a slot's start to its offer, ms.
    pub appointment_max_delay_ms: i64,
    /// Contacts not ended when the run gave up waiting.
    pub open_at_end: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    live: AtomicU64,
    requested: AtomicU64,
    completed_callbacks: AtomicU64,
    unanswered: AtomicU64,
    unreachable: AtomicU64,
    abandoned: AtomicU64,
    in_service_hangups: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn voice_channels() -> Vec<pb::ChannelCapacity> {
    vec![pb::ChannelCapacity { channel: pb::Channel::Voice as i32, max_concurrent: 1 }]
}

/// Runs the scenario.
pub(super) async fn run(cfg: &LoadConfig, pool: &Pool, stop: &Arc<AtomicBool>) -> Result<Report, LoadError> {
    let nonce = run_nonce();
    let prefix = format!("{}-{nonce}", cfg.prefix);
    let counters = Arc::new(Counters::default());
    // Contacts an operator accepted (a caller does not hang up on those), and open contacts.
    let answered: Arc<Mutex<HashMap<String, bool>>> = Arc::new(Mutex::new(HashMap::new()));
    let open = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Appointment offers seen: id -> (operator, Unix ms).
    let appt_offers: Arc<Mutex<HashMap<String, (String, i64)>>> = Arc::new(Mutex::new(HashMap::new()));

    // Desks on pensions.
    let mut desks = Vec::new();
    for i in 0..cfg.operators {
        let op = format!("{prefix}-op{i}");
        let mut o = pool.desk(&op);
        o.login(pb::LoginRequest {
            operator_id: op.clone(),
            group: "internal".into(),
            skills: vec![pb::Skill { name: "pensions".into(), level: 6 }],
            channels: voice_channels(),
            session_id: format!("{op}-s"),
        })
        .await
        .map_err(|s| {
            LoadError::Usage(format!("desk login refused ({s}); start smista with benches/scenarios/citizen.toml"))
        })?;
        desks.push(tokio::spawn(desk(
            pool.clone(),
            op,
            cfg.aht,
            stream_seed(cfg.seed, u64::from(i) + 1),
            counters.clone(),
            answered.clone(),
            open.clone(),
            done.clone(),
            appt_offers.clone(),
        )));
    }
    // Consultants, their availability, and one booking each.
    let consultants = (cfg.operators / 5).max(2);
    let slot_start = now_ms() + 4_000;
    let mut ap = AppointmentServiceClient::with_interceptor(pool.get(), pool.id.admin.clone());
    let mut booked: Vec<(String, String, i64)> = Vec::new();
    for i in 0..consultants {
        let op = format!("{prefix}-consultant{i}");
        let mut o = pool.desk(&op);
        o.login(pb::LoginRequest {
            operator_id: op.clone(),
            group: "internal".into(),
            skills: vec![pb::Skill { name: "consultancy".into(), level: 8 }],
            channels: vec![
                pb::ChannelCapacity { channel: pb::Channel::Voice as i32, max_concurrent: 1 },
                pb::ChannelCapacity { channel: pb::Channel::Video as i32, max_concurrent: 1 },
            ],
            session_id: format!("{op}-s"),
        })
        .await
        .map_err(|s| LoadError::Usage(format!("consultant login refused: {s}")))?;
        desks.push(tokio::spawn(desk(
            pool.clone(),
            op.clone(),
            cfg.aht,
            stream_seed(cfg.seed, 1_000 + u64::from(i)),
            counters.clone(),
            answered.clone(),
            open.clone(),
            done.clone(),
            appt_offers.clone(),
        )));
        let start = u64::try_from(slot_start).unwrap_or(0);
        ap.publish_availability(pb::PublishAvailabilityRequest {
            operator_id: op.clone(),
            queue: "consultancy".into(),
            start_unix_ms: start,
            end_unix_ms: start + 3_600_000,
            display_name: format!("Consultant {i}"),
        })
        .await
        .map_err(|s| {
            LoadError::Usage(format!("availability refused ({s}); start smista with benches/scenarios/citizen.toml"))
        })?;
        let id = format!("{prefix}-appt{i}");
        ap.book_appointment(pb::BookAppointmentRequest {
            appointment_id: id.clone(),
            queue: "consultancy".into(),
            start_unix_ms: start,
            operator_id: op.clone(),
            channel: pb::Channel::Video as i32,
            segment: pb::Segment::General as i32,
            recording: false,
            ..Default::default()
        })
        .await
        .map_err(|s| LoadError::Usage(format!("booking refused: {s}")))?;
        open.fetch_add(1, Ordering::Relaxed);
        booked.push((id, op, slot_start));
    }

    // Callers.
    let mut rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, 0));
    let patience = if cfg.patience > 0.0 { cfg.patience } else { 8.0 };
    let started = Instant::now();
    let mut callers = Vec::new();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < cfg.duration && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs_f64(draw_exp(&mut rng, 1.0 / cfg.rate))).await;
        let id = format!("{prefix}-c{n}");
        n += 1;
        let wait = Duration::from_secs_f64(draw_exp(&mut rng, patience));
        let wants_callback = rng.random_bool(CALLBACK_SHARE);
        let (pool, counters, answered, open) = (pool.clone(), counters.clone(), answered.clone(), open.clone());
        callers.push(tokio::spawn(async move {
            let mut c = pool.contacts();
            let r = c
                .offer_contact(pb::OfferContactRequest {
                    contact_id: id.clone(),
                    queue: "pensions".into(),
                    channel: pb::Channel::Voice as i32,
                    ..Default::default()
                })
                .await;
            let Ok(r) = r else { return };
            counters.calls.fetch_add(1, Ordering::Relaxed);
            match r.into_inner().decision {
                Some(Decision::Queued(_)) | Some(Decision::Assigned(_)) => {
                    open.fetch_add(1, Ordering::Relaxed);
                }
                _ => return,
            }
            tokio::time::sleep(wait).await;
            if answered.lock().contains_key(&id) {
                return;
            }
            if wants_callback {
                match c.request_callback(pb::RequestCallbackRequest { contact_id: id.clone() }).await {
                    Ok(_) => {
                        counters.requested.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) if s.code() == Code::FailedPrecondition => {} // being answered
                    Err(_) => {}
                }
            } else if let Ok(r) = c.cancel_contact(pb::CancelContactRequest { contact_id: id.clone() }).await {
                match r.into_inner().outcome() {
                    pb::Outcome::Abandoned => {
                        counters.abandoned.fetch_add(1, Ordering::Relaxed);
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    pb::Outcome::CancelledInService => {
                        counters.in_service_hangups.fetch_add(1, Ordering::Relaxed);
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    for c in callers {
        let _ = c.await;
    }
    // Wait for the open contacts to end: the callbacks' retries and the appointments.
    let deadline = Instant::now() + Duration::from_secs(30).max(Duration::from_secs_f64(cfg.aht * 10.0));
    while open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    for d in desks {
        d.abort();
    }
    let mut f = CitizenFigures {
        calls: counters.calls.load(Ordering::Relaxed),
        answered_live: counters.live.load(Ordering::Relaxed),
        callbacks_requested: counters.requested.load(Ordering::Relaxed),
        callbacks_completed: counters.completed_callbacks.load(Ordering::Relaxed),
        callback_attempts_unanswered: counters.unanswered.load(Ordering::Relaxed),
        callbacks_unreachable: counters.unreachable.load(Ordering::Relaxed),
        abandoned: counters.abandoned.load(Ordering::Relaxed),
        hung_up_in_service: counters.in_service_hangups.load(Ordering::Relaxed),
        appointments_booked: booked.len() as u64,
        open_at_end: open.load(Ordering::Relaxed),
        ..CitizenFigures::default()
    };
    let out = f.callbacks_requested + f.abandoned;
    f.abandon_avoided_share = if out > 0 { f.callbacks_requested as f64 / out as f64 } else { 0.0 };
    let offers = appt_offers.lock();
    for (id, op, start) in &booked {
        if let Some((to, at)) = offers.get(id) {
            let delay = at - start;
            f.appointment_max_delay_ms = f.appointment_max_delay_ms.max(delay);
            if delay < 0 {
                f.appointments_early += 1;
            } else if to == op && delay <= ON_TIME_MS {
                f.appointments_on_time += 1;
            }
        }
    }
    Ok(Report { scenario: "citizen".into(), target_rate: cfg.rate, citizen: Some(f), ..Report::default() })
}

/// One desk: accepts every offer, holds it for a handle time; a callback's dial is answered
/// with probability [`ANSWERED`], else reported unanswered.
#[allow(clippy::too_many_arguments)]
async fn desk(
    pool: Pool,
    op: String,
    aht: f64,
    seed: u64,
    counters: Arc<Counters>,
    answered: Arc<Mutex<HashMap<String, bool>>>,
    open: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    appt_offers: Arc<Mutex<HashMap<String, (String, i64)>>>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut o = pool.desk(&op);
    let Ok(stream) = o.watch_offers(pb::WatchOffersRequest { operator_id: op.clone() }).await else { return };
    let mut stream = stream.into_inner();
    let mut c = pool.contacts();
    while let Ok(Some(offer)) = stream.message().await {
        if done.load(Ordering::Relaxed) {
            return;
        }
        let id = offer.contact_id.clone();
        if id.contains("-appt") {
            appt_offers.lock().entry(id.clone()).or_insert((op.clone(), now_ms()));
        }
        answered.lock().insert(id.clone(), true);
        if o.accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: id.clone() }).await.is_err() {
            continue;
        }
        let hold = Duration::from_secs_f64(draw_exp(&mut rng, aht).min(aht * 8.0));
        if offer.callback && !rng.random_bool(ANSWERED) {
            // The dial went unanswered after a few rings.
            tokio::time::sleep(hold / 4).await;
            counters.unanswered.fetch_add(1, Ordering::Relaxed);
            answered.lock().remove(&id);
            if let Ok(r) = c.callback_unanswered(pb::CallbackUnansweredRequest { contact_id: id.clone() }).await {
                if let Some(pb::callback_unanswered_response::Next::Ended(_)) = r.into_inner().next {
                    counters.unreachable.fetch_add(1, Ordering::Relaxed);
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        tokio::time::sleep(hold).await;
        let r = o
            .complete_contact(pb::CompleteContactRequest {
                operator_id: op.clone(),
                contact_id: id.clone(),
                wrap_up_ms: 1,
                ended_unix_ms: 0,
            })
            .await;
        if r.is_ok() {
            open.fetch_sub(1, Ordering::Relaxed);
            if offer.callback {
                counters.completed_callbacks.fetch_add(1, Ordering::Relaxed);
            } else if !id.contains("-appt") {
                counters.live.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
