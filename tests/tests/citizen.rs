//! The citizen's side over gRPC: callbacks, a redial that resumes its place, segments in the
//! snapshot, a queue closed by its hours answering its next opening, and the precise statuses
//! of bad requests and bad hours.

mod support;

use smista_core::calendar::{to_local, to_unix, weekday, CentralEurope};
use smista_proto::v1 as pb;
use smista_server::config::Config;
use support::*;
use tonic::Code;

const DAY: i64 = 86_400_000;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn now_unix() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
        .expect("fits")
}

/// A queue open one hour a week, on the weekday three days from today in Rome, and when it
/// opens next (Europe/Rome follows the EU rule `CentralEurope` computes).
fn closed_line() -> (String, i64) {
    let today = to_local(now_unix(), &CentralEurope).div_euclid(DAY);
    let day = today + 3;
    let opens = to_unix(day * DAY + 10 * 3_600_000, &CentralEurope);
    let toml = format!(
        "[[queues]]\nname = \"closed-line\"\nskills = [{{ skill = \"pensions\", min_level = 4 }}]\nfallback = \"announcement\"\nhours = {{ weekly = [\"{} 10:00-11:00\"], national_holidays = false }}\n",
        DAYS[weekday(day) as usize]
    );
    (toml, opens)
}

fn config() -> Config {
    let (closed, _) = closed_line();
    let text = format!(
        r#"
[engine]
time_zone = "Europe/Rome"

[[groups]]
name = "internal"

[[queues]]
name = "pensions"
skills = [{{ skill = "pensions", min_level = 4 }}]
callback_retry_ms = [60000]
resume_window_ms = 60000
segments = [{{ segment = "vulnerable", priority_boost = 20, service_level_threshold_ms = 10000 }}]

[[queues]]
name = "consultancy"
skills = [{{ skill = "pensions", min_level = 4 }}]
appointments = {{ slot_ms = 60000, guard_ms = 30000, grace_ms = 60000 }}

{closed}
"#
    );
    Config::parse(&text, "citizen test").expect("valid config")
}

fn queued(r: &pb::OfferContactResponse) -> Option<&pb::Queued> {
    match &r.decision {
        Some(pb::offer_contact_response::Decision::Queued(q)) => Some(q),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_keeps_its_place_is_retried_and_ends_unreachable() {
    let srv = Server::start_with(config()).await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    let mut events = c.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();
    o.login(login("op-a", "internal", &[("pensions", 5)])).await.expect("login");
    let mut offers =
        o.watch_offers(pb::WatchOffersRequest { operator_id: "op-a".into() }).await.expect("watch").into_inner();
    assert_eq!(
        assigned(&c.offer_contact(voice("busy", "pensions")).await.expect("offer").into_inner()).as_deref(),
        Some("op-a")
    );
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-a".into(), contact_id: "busy".into() })
        .await
        .expect("accept");
    let r = c.offer_contact(voice("anna", "pensions")).await.expect("offer").into_inner();
    assert_eq!(queued(&r).map(|q| q.position), Some(1));
    c.offer_contact(voice("later", "pensions")).await.expect("offer");

    // Anna chooses to be called back: she keeps position 1.
    let r = c
        .request_callback(pb::RequestCallbackRequest { contact_id: "anna".into() })
        .await
        .expect("callback")
        .into_inner();
    assert_eq!(r.queued.as_ref().map(|q| q.position), Some(1));
    // Bad requests, with precise statuses.
    let e = c.request_callback(pb::RequestCallbackRequest { contact_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.request_callback(pb::RequestCallbackRequest { contact_id: "busy".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "in service: answered live");
    let e = c.request_callback(pb::RequestCallbackRequest { contact_id: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c.callback_unanswered(pb::CallbackUnansweredRequest { contact_id: "later".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "not a callback");
    let e = c.callback_unanswered(pb::CallbackUnansweredRequest { contact_id: "anna".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "not accepted yet: nobody dialled");

    // The operator finishes and is offered Anna as a callback, ahead of the later caller.
    o.complete_contact(pb::CompleteContactRequest {
        operator_id: "op-a".into(),
        contact_id: "busy".into(),
        ..Default::default()
    })
    .await
    .expect("complete");
    let offer = loop {
        let x = next(&mut offers, 5).await.expect("offer pushed");
        if x.contact_id == "anna" {
            break x;
        }
    };
    assert!(offer.callback, "offered as an outbound callback: {offer:?}");
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-a".into(), contact_id: "anna".into() })
        .await
        .expect("accept");
    let before = now_unix();
    let r = c
        .callback_unanswered(pb::CallbackUnansweredRequest { contact_id: "anna".into() })
        .await
        .expect("report")
        .into_inner();
    let Some(pb::callback_unanswered_response::Next::Retry(retry)) = r.next else { panic!("{r:?}") };
    assert_eq!(retry.attempts, 1);
    let due = i64::try_from(retry.due_unix_ms).expect("fits");
    // (The server's wall clock is its start time plus a monotonic clock: allow a second.)
    assert!(due >= before + 59_000 && due <= now_unix() + 61_000, "due one minute later: {due}");
    // op-a is free at once: the later caller is offered.
    let x = next(&mut offers, 5).await.expect("offer pushed");
    assert_eq!(x.contact_id, "later");
    // Between attempts the callback answers position 0.
    let again = c.offer_contact(voice("anna", "pensions")).await.expect("offer").into_inner();
    assert_eq!(queued(&again).map(|q| q.position), Some(0), "{again:?}");
    let r2 = c.callback_unanswered(pb::CallbackUnansweredRequest { contact_id: "anna".into() }).await.expect("repeat");
    assert_eq!(r2.into_inner().next, Some(pb::callback_unanswered_response::Next::Retry(retry)));
    // The citizen withdraws: the callback ends abandoned, once.
    let out =
        c.cancel_contact(pb::CancelContactRequest { contact_id: "anna".into() }).await.expect("cancel").into_inner();
    assert_eq!(out.outcome, pb::Outcome::Abandoned as i32);
    // The stream told the story.
    let mut kinds = Vec::new();
    while let Some(e) = next(&mut events, 2).await {
        if e.contact_id == "anna" {
            kinds.push(match e.kind {
                Some(pb::contact_event::Kind::CallbackRequested(_)) => "callback_requested",
                Some(pb::contact_event::Kind::Offered(ref x)) if x.callback => "offered_callback",
                Some(pb::contact_event::Kind::CallbackScheduled(_)) => "callback_scheduled",
                Some(pb::contact_event::Kind::Finished(_)) => "finished",
                _ => "other",
            });
        }
        if kinds.last() == Some(&"finished") {
            break;
        }
    }
    kinds.retain(|k| *k != "other");
    assert_eq!(kinds, ["callback_requested", "offered_callback", "callback_scheduled", "finished"]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redial_resumes_its_place_and_a_closed_line_names_its_opening() {
    let srv = Server::start_with(config()).await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    let mut a = srv.admin().await;
    o.login(login("op-a", "internal", &[("pensions", 5)])).await.expect("login");
    c.offer_contact(voice("busy", "pensions")).await.expect("offer");
    let keyed = |id: &str| pb::OfferContactRequest { caller_key: "k-7f3a".into(), ..voice(id, "pensions") };
    c.offer_contact(keyed("first-try")).await.expect("offer");
    // (Arrival times are in milliseconds: let `other` arrive strictly later.)
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    c.offer_contact(voice("other", "pensions")).await.expect("offer");
    let vulnerable = pb::OfferContactRequest { segment: pb::Segment::Vulnerable as i32, ..voice("vuln", "pensions") };
    c.offer_contact(vulnerable).await.expect("offer");
    c.cancel_contact(pb::CancelContactRequest { contact_id: "first-try".into() }).await.expect("hang up");
    let r = c.offer_contact(keyed("second-try")).await.expect("redial").into_inner();
    // Behind the vulnerable caller (boosted), ahead of `other`, who arrived after the first try.
    assert_eq!(queued(&r).map(|q| q.position), Some(2), "{r:?}");
    let snap = a.get_snapshot(pb::GetSnapshotRequest::default()).await.expect("snapshot").into_inner();
    let q = snap.queues.iter().find(|q| q.name == "pensions").expect("pensions");
    let seg = |s: pb::Segment| q.segments.iter().find(|x| x.segment == s as i32).expect("segment row");
    assert_eq!((seg(pb::Segment::Vulnerable).waiting, seg(pb::Segment::General).waiting), (1, 2));
    assert_eq!(seg(pb::Segment::Vulnerable).service_level_threshold_ms, 10_000);
    // Gauges are refreshed on the server's gauge interval: wait for one.
    let mut metrics = srv.scrape().await;
    for _ in 0..50 {
        if metrics.contains("smista_segment_waiting{queue=\"pensions\",segment=\"vulnerable\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        metrics = srv.scrape().await;
    }
    assert!(
        metrics.contains("smista_segment_waiting{queue=\"pensions\",segment=\"vulnerable\"} 1"),
        "segment gauge missing: {}",
        metrics.lines().filter(|l| l.contains("segment")).collect::<Vec<_>>().join("\n")
    );
    assert!(!metrics.contains("k-7f3a"), "the caller key never reaches the metrics");

    let (_, opens) = closed_line();
    let r = c.offer_contact(voice("late", "closed-line")).await.expect("offer").into_inner();
    match r.decision {
        Some(pb::offer_contact_response::Decision::Diverted(d)) => {
            assert_eq!(d.reason, pb::DivertReason::Closed as i32);
            assert_eq!(d.fallback, pb::Fallback::Announcement as i32);
            assert_eq!(i64::try_from(d.reopens_unix_ms).expect("fits"), opens, "the next opening, 10:00 in Rome");
        }
        other => panic!("{other:?}"),
    }
    // An admin closure announces no opening.
    a.set_queue_open(pb::SetQueueOpenRequest { queue: "pensions".into(), open: false }).await.expect("close");
    let r = c.offer_contact(voice("closed", "pensions")).await.expect("offer").into_inner();
    assert!(
        matches!(r.decision, Some(pb::offer_contact_response::Decision::Diverted(ref d)) if d.reopens_unix_ms == 0),
        "{r:?}"
    );
    srv.stop().await;
}

#[test]
fn hours_that_do_not_parse_are_refused_at_start_naming_the_key() {
    let bad = |hours: &str| {
        let text = format!("[[groups]]\nname = \"internal\"\n[[queues]]\nname = \"pensions\"\nhours = {hours}\n");
        Config::parse(&text, "bad hours").expect_err("must be refused").to_string()
    };
    let e = bad("{ weekly = [\"mon-fri 8-18\"] }");
    assert!(e.contains("queues[0].hours") && e.contains("`8` is not a time HH:MM"), "{e}");
    let e = bad("{ closed = [\"2027-02-30\"] }");
    assert!(e.contains("not a date"), "{e}");
    let e = bad("{ weekly = [\"mon 22:00-02:00\"] }");
    assert!(e.contains("cross midnight"), "{e}");
    let text =
        "[engine]\ntime_zone = \"Europe/Nowhere\"\n[[groups]]\nname = \"internal\"\n[[queues]]\nname = \"pensions\"\n";
    let e = Config::parse(text, "bad zone").expect_err("must be refused").to_string();
    assert!(e.contains("engine.time_zone"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appointments_are_booked_kept_across_a_restart_and_offered_at_their_slot() {
    use smista_proto::v1::appointment_service_client::AppointmentServiceClient;
    let mut cfg = config();
    cfg.server.data_dir = temp_dir("appointments");
    let srv = Server::start_in(cfg.clone()).await;
    let mut ap = AppointmentServiceClient::new(srv.channel().await);
    let now = u64::try_from(now_unix()).expect("after 1970");
    let start = now + 3_000;
    let publish = |op: &str, from: u64, to: u64| pb::PublishAvailabilityRequest {
        operator_id: op.into(),
        queue: "consultancy".into(),
        start_unix_ms: from,
        end_unix_ms: to,
        display_name: format!("Dott. {op}"),
    };
    ap.publish_availability(publish("op-anna", start, start + 180_000)).await.expect("publish");
    let slots = ap
        .list_slots(pb::ListSlotsRequest {
            queue: "consultancy".into(),
            from_unix_ms: now,
            to_unix_ms: now + 3_600_000,
            ..Default::default()
        })
        .await
        .expect("slots")
        .into_inner()
        .slots;
    assert_eq!(slots.len(), 3);
    assert_eq!((slots[0].display_name.as_str(), slots[0].start_unix_ms), ("Dott. op-anna", start));
    let booking = |id: &str, op: &str, at: u64| pb::BookAppointmentRequest {
        appointment_id: id.into(),
        queue: "consultancy".into(),
        start_unix_ms: at,
        operator_id: op.into(),
        channel: pb::Channel::Video as i32,
        segment: pb::Segment::Intermediary as i32,
        recording: false,
        ..Default::default()
    };
    let a = ap.book_appointment(booking("appt-1", "op-anna", start + 60_000)).await.expect("book").into_inner();
    assert_eq!(
        (a.state, a.recording, a.display_name.as_str()),
        (pb::AppointmentState::Booked as i32, false, "Dott. op-anna")
    );
    // Bad input, with precise statuses.
    let code = |r: Result<tonic::Response<pb::Appointment>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(ap.book_appointment(booking("appt-2", "op-anna", start + 60_000)).await),
        Code::FailedPrecondition,
        "overlapping"
    );
    assert_eq!(
        code(ap.book_appointment(booking("appt-3", "op-zeno", start)).await),
        Code::NotFound,
        "unknown operator"
    );
    assert_eq!(
        code(ap.book_appointment(booking("appt-4", "op-anna", now - 120_000)).await),
        Code::InvalidArgument,
        "in the past"
    );
    assert_eq!(
        code(ap.book_appointment(booking("appt-5", "op-anna", start + 1)).await),
        Code::FailedPrecondition,
        "no slot there"
    );
    let mut chat = booking("appt-6", "op-anna", start);
    chat.channel = pb::Channel::Chat as i32;
    assert_eq!(code(ap.book_appointment(chat).await), Code::InvalidArgument, "chat");
    let mut elsewhere = booking("appt-7", "", start);
    elsewhere.queue = "pensions".into();
    assert_eq!(code(ap.book_appointment(elsewhere).await), Code::NotFound, "the queue takes no appointments");
    assert_eq!(code(ap.book_appointment(booking("appt-1", "op-anna", start)).await), Code::AlreadyExists, "id reused");
    let e = ap.publish_availability(publish("op-anna", start + 60_000, start + 240_000)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "overlapping availability");
    let e = ap.publish_availability(publish("op-anna", start + 500_000, start + 400_000)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Move appt-1 to the first slot; book and cancel another.
    let moved = ap
        .move_appointment(pb::MoveAppointmentRequest {
            appointment_id: "appt-1".into(),
            start_unix_ms: start,
            ..Default::default()
        })
        .await
        .expect("move")
        .into_inner();
    assert_eq!(moved.start_unix_ms, start);
    ap.book_appointment(booking("appt-8", "", start + 120_000)).await.expect("anyone free");
    let c = ap
        .cancel_appointment(pb::CancelAppointmentRequest { appointment_id: "appt-8".into(), ..Default::default() })
        .await
        .expect("cancel");
    assert_eq!(c.into_inner().state, pb::AppointmentState::Cancelled as i32);

    // A restart keeps the bookings and the availability.
    srv.stop().await;
    let srv = Server::start_in(cfg).await;
    let mut ap = AppointmentServiceClient::new(srv.channel().await);
    let list = ap
        .list_appointments(pb::ListAppointmentsRequest {
            queue: "consultancy".into(),
            from_unix_ms: now,
            to_unix_ms: now + 3_600_000,
        })
        .await
        .expect("list")
        .into_inner()
        .appointments;
    let states: Vec<_> = list.iter().map(|a| (a.appointment_id.as_str(), a.state, a.start_unix_ms)).collect();
    assert_eq!(
        states,
        [
            ("appt-1", pb::AppointmentState::Booked as i32, start),
            ("appt-8", pb::AppointmentState::Cancelled as i32, start + 120_000)
        ]
    );
    // At its slot the appointment is offered to op-anna, on video, ahead of a caller waiting.
    let mut o = srv.operators().await;
    let mut c = srv.contacts().await;
    let mut desk = login("op-anna", "internal", &[("pensions", 8)]);
    desk.channels = vec![
        pb::ChannelCapacity { channel: pb::Channel::Voice as i32, max_concurrent: 1 },
        pb::ChannelCapacity { channel: pb::Channel::Video as i32, max_concurrent: 1 },
    ];
    o.login(desk).await.expect("login");
    let mut offers =
        o.watch_offers(pb::WatchOffersRequest { operator_id: "op-anna".into() }).await.expect("watch").into_inner();
    // Within the guard op-anna gets no ordinary call.
    let r = c.offer_contact(voice("walk-in", "consultancy")).await.expect("offer").into_inner();
    assert!(queued(&r).is_some(), "op-anna is kept for her appointment: {r:?}");
    let x = next(&mut offers, 10).await.expect("the appointment is offered at its slot");
    assert_eq!((x.contact_id.as_str(), x.channel), ("appt-1", pb::Channel::Video as i32));
    assert!(u64::try_from(now_unix()).expect("fits") >= start, "not before its slot");
    let list = ap
        .list_appointments(pb::ListAppointmentsRequest {
            queue: String::new(),
            from_unix_ms: now,
            to_unix_ms: now + 3_600_000,
        })
        .await
        .expect("list")
        .into_inner()
        .appointments;
    assert_eq!(list[0].state, pb::AppointmentState::Started as i32);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_edits_survive_a_restart_with_their_audit_and_operators_change_skills_live() {
    let mut cfg = config();
    cfg.server.data_dir = temp_dir("queue-edits");
    let srv = Server::start_in(cfg.clone()).await;
    let mut a = srv.admin().await;
    let bad = pb::UpdateQueueRequest {
        queue: "pensions".into(),
        hours: Some(pb::QueueHours { weekly: vec!["mon 9-17".into()], ..Default::default() }),
        ..Default::default()
    };
    let e = a.update_queue(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("`9` is not a time"), "{}", e.message());
    let e = a
        .update_queue(pb::UpdateQueueRequest { queue: "nope".into(), priority: Some(1), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = a
        .update_queue(pb::UpdateQueueRequest { queue: "pensions".into(), priority: Some(101), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Closed hours for pensions (one minute on a day three days away), a priority, a strategy.
    let (closed, _) = closed_line();
    let weekly = closed.split("weekly = [\"").nth(1).and_then(|x| x.split('"').next()).expect("weekly").to_owned();
    a.update_queue(pb::UpdateQueueRequest {
        queue: "pensions".into(),
        priority: Some(7),
        strategy: pb::SelectionStrategy::MostSkilled as i32,
        hours: Some(pb::QueueHours { weekly: vec![weekly], national_holidays: false, ..Default::default() }),
        ..Default::default()
    })
    .await
    .expect("update");
    a.set_queue_open(pb::SetQueueOpenRequest { queue: "consultancy".into(), open: false }).await.expect("close");
    srv.stop().await;

    // After a restart the queue is still closed by its new hours, and consultancy by the admin.
    let srv = Server::start_in(cfg).await;
    let mut c = srv.contacts().await;
    let mut a = srv.admin().await;
    let r = c.offer_contact(voice("after-restart", "pensions")).await.expect("offer").into_inner();
    assert!(
        matches!(r.decision, Some(pb::offer_contact_response::Decision::Diverted(ref d)) if d.reason == pb::DivertReason::Closed as i32 && d.reopens_unix_ms > 0),
        "{r:?}"
    );
    let r = c.offer_contact(voice("closed-by-admin", "consultancy")).await.expect("offer").into_inner();
    assert!(
        matches!(r.decision, Some(pb::offer_contact_response::Decision::Diverted(ref d)) if d.reason == pb::DivertReason::Closed as i32 && d.reopens_unix_ms == 0),
        "{r:?}"
    );
    let audit = a.list_queue_audit(pb::ListQueueAuditRequest::default()).await.expect("audit").into_inner().records;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!((audit[0].queue.as_str(), audit[0].actor.as_str()), ("pensions", "anonymous"));
    assert!(
        audit[0].change.contains("priority = 7") && audit[0].change.contains("most_skilled"),
        "{}",
        audit[0].change
    );
    assert!(audit[1].change.contains("open = false"), "{}", audit[1].change);
    // Clearing the hours opens pensions again.
    a.update_queue(pb::UpdateQueueRequest { queue: "pensions".into(), clear_hours: true, ..Default::default() })
        .await
        .expect("clear hours");

    // An operator gains a skill without logging out.
    let mut o = srv.operators().await;
    o.login(login("op-b", "internal", &[("naspi", 5)])).await.expect("login");
    let r = a
        .update_operator(pb::UpdateOperatorRequest {
            operator_id: "op-b".into(),
            skills: Some(pb::SkillSet { skills: vec![pb::Skill { name: "pensions".into(), level: 6 }] }),
            ..Default::default()
        })
        .await
        .expect("update operator")
        .into_inner();
    assert_eq!(r.queues, ["pensions", "consultancy", "closed-line"]);
    let r = c.offer_contact(voice("served", "pensions")).await.expect("offer").into_inner();
    assert_eq!(assigned(&r).as_deref(), Some("op-b"));
    let e = a
        .update_operator(pb::UpdateOperatorRequest {
            operator_id: "op-b".into(),
            group: Some("nowhere".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = a
        .update_operator(pb::UpdateOperatorRequest { operator_id: "ghost".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_budget_callback_is_booked_into_the_next_period_and_offered_then() {
    const PERIOD: u64 = 6_000;
    let text = format!(
        r#"
[[budgets]]
id = "contract"
ceiling_cents = 600
period = {{ kind = "fixed", start_unix_ms = 0, length_ms = {PERIOD} }}
default_handle_ms = 300000
tariffs = [
  {{ channel = "voice", fee_per_contact_cents = 100, rate_per_second_centicents = 10, billing_increment_seconds = 3600 }},
  {{ channel = "callback", fee_per_contact_cents = 100, rate_per_second_centicents = 10, billing_increment_seconds = 3600 }},
]

[[groups]]
name = "supplier"
supplier = "acme"
budget = "contract"

[[queues]]
name = "money"
skills = [{{ skill = "money", min_level = 1 }}]
budget = "contract"
fallback = "callback_booking"
"#
    );
    let mut cfg = Config::parse(&text, "extra budget").expect("valid");
    cfg.server.data_dir = temp_dir("scheduled-callback");
    // Start just after a period boundary, so the first two calls fall in one period.
    let into = u64::try_from(now_unix()).expect("fits") % PERIOD;
    tokio::time::sleep(std::time::Duration::from_millis((PERIOD - into + 200) % PERIOD)).await;
    let srv = Server::start_in(cfg).await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    let mut desk = login("op-s", "supplier", &[("money", 5)]);
    desk.channels = vec![
        pb::ChannelCapacity { channel: pb::Channel::Voice as i32, max_concurrent: 1 },
        pb::ChannelCapacity { channel: pb::Channel::Callback as i32, max_concurrent: 1 },
    ];
    o.login(desk).await.expect("login");
    let mut offers =
        o.watch_offers(pb::WatchOffersRequest { operator_id: "op-s".into() }).await.expect("watch").into_inner();
    assert_eq!(
        assigned(&c.offer_contact(voice("c1", "money")).await.expect("offer").into_inner()).as_deref(),
        Some("op-s")
    );
    let r = c.offer_contact(voice("c2", "money")).await.expect("offer").into_inner();
    match r.decision {
        Some(pb::offer_contact_response::Decision::Diverted(d)) => {
            assert_eq!(
                (d.reason, d.fallback),
                (pb::DivertReason::ExtraBudget as i32, pb::Fallback::CallbackBooking as i32)
            );
        }
        other => panic!("the money for this period is committed: {other:?}"),
    }
    let booked = c
        .schedule_callback(pb::ScheduleCallbackRequest {
            contact_id: "c2".into(),
            queue: "money".into(),
            ..Default::default()
        })
        .await
        .expect("book")
        .into_inner();
    let period_end = (u64::try_from(now_unix()).expect("fits") / PERIOD + 1) * PERIOD;
    assert_eq!(booked.callback_contact_id, "c2~cb1");
    assert_eq!(booked.due_unix_ms, period_end, "not before the budget's next period");
    let again = c
        .schedule_callback(pb::ScheduleCallbackRequest {
            contact_id: "c2".into(),
            queue: "money".into(),
            ..Default::default()
        })
        .await
        .expect("book again")
        .into_inner();
    assert_eq!(again, booked, "idempotent");
    let e = c
        .schedule_callback(pb::ScheduleCallbackRequest {
            contact_id: "c1".into(),
            queue: "money".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "c1 is live");
    let e = c
        .schedule_callback(pb::ScheduleCallbackRequest {
            contact_id: "c3".into(),
            queue: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // c1 is answered and completed; the callback comes in the next period, as a callback.
    let first = next(&mut offers, 5).await.expect("c1 offered");
    assert_eq!(first.contact_id, "c1");
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-s".into(), contact_id: "c1".into() })
        .await
        .expect("accept");
    o.complete_contact(pb::CompleteContactRequest {
        operator_id: "op-s".into(),
        contact_id: "c1".into(),
        wrap_up_ms: 1,
        ended_unix_ms: 0,
    })
    .await
    .expect("complete");
    let cb = next(&mut offers, 15).await.expect("the booked callback is offered");
    assert_eq!((cb.contact_id.as_str(), cb.channel), ("c2~cb1", pb::Channel::Callback as i32));
    assert!(u64::try_from(now_unix()).expect("fits") >= period_end, "not before the next period");
    srv.stop().await;
}

/// A booking whose guard window has begun holds the consultant at once, not from the next tick:
/// an ordinary call offered right after the booking waits instead of reaching the consultant
/// just before the slot. Four consultants, booked and called in turn, with the routing tick every
/// 10 s: a hold left to the tick lets these calls through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_inside_the_guard_window_holds_the_consultant_at_once() {
    use smista_proto::v1::appointment_service_client::AppointmentServiceClient;
    let mut cfg = config();
    cfg.server.data_dir = temp_dir("guard");
    let srv = Server::start_ticking(cfg, 10_000).await;
    let mut ap = AppointmentServiceClient::new(srv.channel().await);
    let mut o = srv.operators().await;
    let mut c = srv.contacts().await;
    let now = u64::try_from(now_unix()).expect("after 1970");
    // 10 s from now: inside the 30 s guard window of `consultancy` already.
    let start = now + 10_000;
    for i in 0..4 {
        let op = format!("op-cons-{i}");
        ap.publish_availability(pb::PublishAvailabilityRequest {
            operator_id: op.clone(),
            queue: "consultancy".into(),
            start_unix_ms: start,
            end_unix_ms: start + 60_000,
            display_name: format!("Dott. {i}"),
        })
        .await
        .expect("publish");
        o.login(login(&op, "internal", &[("pensions", 6)])).await.expect("login");
        ap.book_appointment(pb::BookAppointmentRequest {
            appointment_id: format!("appt-guard-{i}"),
            queue: "consultancy".into(),
            start_unix_ms: start,
            operator_id: op.clone(),
            channel: pb::Channel::Voice as i32,
            segment: pb::Segment::General as i32,
            recording: false,
            ..Default::default()
        })
        .await
        .expect("book");
        let r = c.offer_contact(voice(&format!("walk-in-{i}"), "consultancy")).await.expect("offer").into_inner();
        assert_eq!(assigned(&r), None, "{op} is held for its appointment from the booking on: {r:?}");
    }
    srv.stop().await;
}
