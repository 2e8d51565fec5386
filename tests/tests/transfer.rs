//! OperatorService.TransferContact over the wire, as the proto describes it: each flow (to a
//! queue, to a named operator, out of the centre, to a closed queue) with its reply and events,
//! each error with its status, the refusals that leave the caller with its operator, the money
//! (one cost record per leg a budget pays), and a restart between the transfer and its retry.

mod support;

use smista_proto::v1 as pb;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::*;
use tonic::transport::Channel;
use tonic::Code;

use pb::transfer_contact_request::Target;
use pb::transfer_contact_response::Next;

fn to_queue(op: &str, contact: &str, queue: &str) -> pb::TransferContactRequest {
    pb::TransferContactRequest {
        operator_id: op.into(),
        contact_id: contact.into(),
        target: Some(Target::Queue(queue.into())),
        ended_unix_ms: 0,
        wrap_up_ms: 0,
    }
}

/// `op` sends `contact` to `named` first, through `queue`, for `timeout_ms`.
fn to_operator(op: &str, contact: &str, named: &str, queue: &str, timeout_ms: u64) -> pb::TransferContactRequest {
    pb::TransferContactRequest {
        target: Some(Target::Operator(pb::TransferToOperator {
            operator_id: named.into(),
            queue: queue.into(),
            timeout_ms,
        })),
        ..to_queue(op, contact, "")
    }
}

/// Offers `contact` on `queue` and has `op` (the only one free for it) accept it.
async fn in_service(srv: &Server, o: &mut OperatorServiceClient<Channel>, op: &str, contact: &str, queue: &str) {
    let d = srv.contacts().await.offer_contact(voice(contact, queue)).await.expect("offer").into_inner();
    assert_eq!(assigned(&d).as_deref(), Some(op), "{d:?}");
    o.accept_offer(pb::AcceptOfferRequest { operator_id: op.into(), contact_id: contact.into() })
        .await
        .expect("accept");
}

async fn complete(o: &mut OperatorServiceClient<Channel>, op: &str, contact: &str) -> pb::CompleteContactResponse {
    o.complete_contact(pb::CompleteContactRequest {
        operator_id: op.into(),
        contact_id: contact.into(),
        wrap_up_ms: 0,
        ended_unix_ms: 0,
    })
    .await
    .expect("complete")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transfer_flow_answers_as_the_proto_says() {
    let srv = Server::start().await;
    let mut o = srv.operators().await;
    o.login(login("op-201", "supplier-a", &[("naspi", 6), ("isee", 5)])).await.expect("login");
    let mut events =
        srv.contacts().await.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();

    // Not in the caller's hands, unknown queue, nobody there, no target: nothing changes.
    in_service(&srv, &mut o, "op-201", "t-1", "naspi").await;
    o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
    let e = o.transfer_contact(to_queue("op-202", "t-1", "isee")).await.expect_err("not in op-202's hands");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = o.transfer_contact(to_queue("op-201", "t-1", "nowhere")).await.expect_err("unknown queue");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = o.transfer_contact(to_queue("op-201", "t-1", "disability")).await.expect_err("nobody logged in there");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("no_operators"), "the reason is named: {e:?}");
    let mut no_target = to_queue("op-201", "t-1", "isee");
    no_target.target = None;
    let e = o.transfer_contact(no_target).await.expect_err("no target");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = o.transfer_contact(to_queue("op-201", "t-never", "isee")).await.expect_err("never offered");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // To a queue: op-202 (free, serving isee) gets it at once, never op-201 who sent it.
    let r = o.transfer_contact(to_queue("op-201", "t-1", "isee")).await.expect("transfer").into_inner();
    match &r.next {
        Some(Next::Assigned(a)) => assert_eq!((a.operator_id.as_str(), a.queue.as_str()), ("op-202", "isee")),
        other => panic!("expected an offer to op-202, got {other:?}"),
    }
    let again = o.transfer_contact(to_queue("op-201", "t-1", "isee")).await.expect("repeated").into_inner();
    assert_eq!((again.handle_ms, again.wrap_up_ms), (r.handle_ms, r.wrap_up_ms), "a retry answers the same leg");
    let mut kinds = Vec::new();
    while kinds.len() < 8 {
        let ev = next(&mut events, 5).await.expect("event");
        if ev.contact_id == "t-1" {
            let k = ev.kind.expect("kind");
            let done = matches!(k, pb::contact_event::Kind::Offered(ref x) if x.operator_id == "op-202");
            kinds.push(k);
            if done {
                break;
            }
        }
    }
    let transferred = kinds.iter().find_map(|k| match k {
        pb::contact_event::Kind::Transferred(t) => Some(t.clone()),
        _ => None,
    });
    let t = transferred.expect("a transferred event");
    assert_eq!((t.operator_id.as_str(), t.to_queue.as_str()), ("op-201", "isee"));
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-202".into(), contact_id: "t-1".into() })
        .await
        .expect("op-202 accepts the second leg");
    let e = o
        .complete_contact(pb::CompleteContactRequest {
            operator_id: "op-201".into(),
            contact_id: "t-1".into(),
            wrap_up_ms: 0,
            ended_unix_ms: 0,
        })
        .await
        .expect_err("op-201's leg is over");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    complete(&mut o, "op-202", "t-1").await;

    // Out of the centre: it ends TRANSFERRED, once, and a hang-up answers that.
    o.login(login("op-203", "supplier-a", &[("naspi", 9)])).await.expect("login");
    in_service(&srv, &mut o, "op-203", "t-2", "naspi").await;
    let out = pb::TransferContactRequest {
        target: Some(Target::External(pb::TransferOut { destination: "+39 06 0000".into() })),
        ..to_queue("op-203", "t-2", "")
    };
    let r = o.transfer_contact(out.clone()).await.expect("out").into_inner();
    assert_eq!(r.next, Some(Next::Ended(pb::Outcome::Transferred as i32)));
    let again = o.transfer_contact(out).await.expect("repeated").into_inner();
    assert_eq!(again.next, r.next);
    let c = srv
        .contacts()
        .await
        .cancel_contact(pb::CancelContactRequest { contact_id: "t-2".into() })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(c.outcome, pb::Outcome::Transferred as i32);

    // To a named operator: offered to them only.
    o.login(login("op-204", "supplier-a", &[("naspi", 8)])).await.expect("login");
    in_service(&srv, &mut o, "op-204", "t-3", "naspi").await;
    let named = to_operator("op-204", "t-3", "op-201", "isee", 60_000);
    // op-201 is still in wrap-up or free; either way only op-201 may take it for a minute.
    let r = o.transfer_contact(named).await.expect("named").into_inner();
    match &r.next {
        Some(Next::Assigned(a)) => assert_eq!(a.operator_id, "op-201", "{r:?}"),
        Some(Next::Queued(q)) => assert_eq!(q.queue, "isee", "{r:?}"),
        other => panic!("unexpected {other:?}"),
    }
    o.login(login("op-205", "supplier-a", &[("naspi", 7), ("isee", 5)])).await.expect("login");
    let named_self = to_operator("op-205", "t-4", "op-205", "isee", 0);
    in_service(&srv, &mut o, "op-205", "t-4", "naspi").await;
    let e = o.transfer_contact(named_self).await.expect_err("to oneself");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // To a closed queue: its fallback, and the contact ends diverted.
    srv.admin()
        .await
        .set_queue_open(pb::SetQueueOpenRequest { queue: "isee".into(), open: false })
        .await
        .expect("close isee");
    let r = o.transfer_contact(to_queue("op-205", "t-4", "isee")).await.expect("to a closed queue").into_inner();
    match &r.next {
        Some(Next::Diverted(d)) => {
            assert_eq!(d.reason, pb::DivertReason::Closed as i32);
            assert_eq!(d.fallback, pb::Fallback::SelfServiceIvr as i32);
        }
        other => panic!("expected the closed queue's fallback, got {other:?}"),
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_budget_transfer_is_refused_and_the_caller_stays() {
    let srv = Server::start_with(one_call_budget()).await;
    let mut o = srv.operators().await;
    o.login(login("op-101", "internal", &[("consultancy", 7)])).await.expect("login");
    o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
    // An internal operator serves the caller on the unbudgeted second level...
    in_service(&srv, &mut o, "op-101", "x-1", "consultancy").await;
    // ...and the only operators of naspi are the supplier's, whose budget cannot pay.
    let e = o.transfer_contact(to_queue("op-101", "x-1", "naspi")).await.expect_err("extra budget");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("extra_budget"), "{e:?}");
    // Nothing changed: op-101 still has the caller and completes it.
    complete(&mut o, "op-101", "x-1").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_survives_a_restart_and_each_leg_is_charged_once() {
    for pg in backends("transfer") {
        let data = temp_dir("transfer");
        let cfg = ledger_config(&data, pg.as_deref());
        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
        in_service(&srv, &mut o, "op-201", "r-1", "naspi").await;
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        // Into isee, where nobody is free yet: it waits there.
        o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
        o.set_state(pb::SetStateRequest {
            operator_id: "op-202".into(),
            status: pb::OperatorStatus::Paused as i32,
            reason: "break".into(),
        })
        .await
        .expect("pause");
        let first = o.transfer_contact(to_queue("op-201", "r-1", "isee")).await.expect("transfer").into_inner();
        assert!(matches!(&first.next, Some(Next::Queued(q)) if q.queue == "isee"), "{first:?}");
        assert!(first.handle_ms >= 1_000, "{first:?}");
        srv.stop().await;

        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        // The desk retries the transfer it never saw answered: the same leg.
        let again = o.transfer_contact(to_queue("op-201", "r-1", "isee")).await.expect("retry").into_inner();
        assert_eq!((again.handle_ms, again.wrap_up_ms), (first.handle_ms, first.wrap_up_ms));
        // The platform offers it again as the retry contract says (its original queue): it
        // goes where it was sent, to the operator there, not back to op-201.
        o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
        o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
        let d = srv.contacts().await.offer_contact(voice("r-1", "naspi")).await.expect("offer again").into_inner();
        match &d.decision {
            Some(pb::offer_contact_response::Decision::Assigned(a)) => {
                assert_eq!((a.operator_id.as_str(), a.queue.as_str()), ("op-202", "isee"), "{d:?}")
            }
            other => panic!("expected op-202 on isee, got {other:?}"),
        }
        o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-202".into(), contact_id: "r-1".into() })
            .await
            .expect("accept the second leg");
        complete(&mut o, "op-202", "r-1").await;
        srv.stop().await;

        // Two legs, two cost records, each once: op-201's TRANSFERRED, op-202's COMPLETED.
        let target = cfg.ledger.target(&data).expect("ledger");
        let l = smista_ledger::Ledger::connect(&target).await.expect("open");
        let recs = l.cost_records_of("r-1").await.expect("records");
        l.close().await;
        let legs: Vec<(&str, &str)> = recs.iter().map(|r| (r.operator.as_str(), r.outcome.as_str())).collect();
        assert_eq!(legs, vec![("op-201", "transferred"), ("op-202", "completed")], "{recs:?}");
        // The second leg pays no second per-contact fee (the budget's leg_fee = "once").
        let tariff = cfg.budgets[0].tariffs[0].tariff;
        assert_eq!(recs[1].cost_cents, tariff.cost_cents(recs[1].handle_ms) - tariff.fee_per_contact_cents, "{recs:?}");
        drop_backend(pg.as_deref()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_books_moves_and_cancels_the_consultancy_of_the_caller_it_serves() {
    use smista_proto::v1::appointment_service_client::AppointmentServiceClient;
    use smista_server::config::auth::Role;
    let mut cfg = smista_server::config::Config::load(None).expect("demo");
    cfg.auth.api_keys = vec![
        api_key("desk-1", "desk-1-secret", Role::Desk, Some("op-101")),
        api_key("desk-2", "desk-2-secret", Role::Desk, Some("op-102")),
        api_key("consultant", "anna-secret", Role::Desk, Some("op-anna")),
        api_key("platform", "platform-secret", Role::Platform, None),
    ];
    cfg.roster.mode = Some(smista_server::config::roster::RosterMode::Open);
    let srv = Server::start_with(cfg).await;
    let mut o = srv.operators().await;
    let mut appts = AppointmentServiceClient::new(srv.channel().await);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let start = (now / 3_600_000 + 24) * 3_600_000;
    appts
        .publish_availability(with(
            pb::PublishAvailabilityRequest {
                operator_id: "op-anna".into(),
                queue: "consultancy".into(),
                start_unix_ms: start,
                end_unix_ms: start + 2 * 3_600_000,
                display_name: "Dott.ssa Anna".into(),
            },
            "anna-secret",
        ))
        .await
        .expect("availability");
    o.login(with(login("op-101", "internal", &[("naspi", 6)]), "desk-1-secret")).await.expect("login");
    o.login(with(login("op-102", "internal", &[("isee", 6)]), "desk-2-secret")).await.expect("login");
    let offer = voice("call-1", "naspi");
    let d = srv.contacts().await.offer_contact(with(offer, "platform-secret")).await.expect("offer").into_inner();
    assert_eq!(assigned(&d).as_deref(), Some("op-101"));
    o.accept_offer(with(
        pb::AcceptOfferRequest { operator_id: "op-101".into(), contact_id: "call-1".into() },
        "desk-1-secret",
    ))
    .await
    .expect("accept");
    let book = |contact: &str, desk: &str| pb::BookAppointmentRequest {
        appointment_id: "appt-call-1".into(),
        queue: "consultancy".into(),
        start_unix_ms: start,
        operator_id: "op-anna".into(),
        channel: pb::Channel::Video as i32,
        segment: pb::Segment::General as i32,
        recording: false,
        serving_contact_id: contact.into(),
        desk_operator_id: desk.into(),
    };
    // A desk without a contact in its hands, or for another's, or acting as another: refused.
    let e = appts.book_appointment(with(book("", ""), "desk-1-secret")).await.expect_err("no contact named");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = appts.book_appointment(with(book("call-1", "op-102"), "desk-2-secret")).await.expect_err("not op-102's");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e =
        appts.book_appointment(with(book("call-1", "op-101"), "desk-2-secret")).await.expect_err("acting as another");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The operator serving the caller books it, from the call.
    let a = appts.book_appointment(with(book("call-1", "op-101"), "desk-1-secret")).await.expect("booked").into_inner();
    assert_eq!((a.for_contact_id.as_str(), a.operator_id.as_str()), ("call-1", "op-anna"));
    // Moves it to the next slot, and cancels it; another desk may not.
    let mv = pb::MoveAppointmentRequest {
        appointment_id: "appt-call-1".into(),
        start_unix_ms: start + 1_800_000,
        operator_id: String::new(),
        serving_contact_id: "call-1".into(),
        desk_operator_id: "op-101".into(),
    };
    let moved = appts.move_appointment(with(mv, "desk-1-secret")).await.expect("moved").into_inner();
    assert_eq!(moved.start_unix_ms, start + 1_800_000);
    let cancel = |contact: &str, desk: &str| pb::CancelAppointmentRequest {
        appointment_id: "appt-call-1".into(),
        serving_contact_id: contact.into(),
        desk_operator_id: desk.into(),
    };
    let e = appts.cancel_appointment(with(cancel("", ""), "desk-2-secret")).await.expect_err("another desk");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let c = appts.cancel_appointment(with(cancel("call-1", "op-101"), "desk-1-secret")).await.expect("cancelled");
    assert_eq!(c.into_inner().state, pb::AppointmentState::Cancelled as i32);
    // Once the call is over, the desk has no contact to act for.
    o.complete_contact(with(
        pb::CompleteContactRequest {
            operator_id: "op-101".into(),
            contact_id: "call-1".into(),
            wrap_up_ms: 0,
            ended_unix_ms: 0,
        },
        "desk-1-secret",
    ))
    .await
    .expect("complete");
    let e = appts.book_appointment(with(book("call-1", "op-101"), "desk-1-secret")).await.expect_err("call over");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    srv.stop().await;
}

/// What an independent client found (issue 30's adversary run): repeats after a restart answer
/// from the record wherever the contact went since, a contact carried across a restart can be
/// transferred, and a named operator who passes the contact on frees it for the queue at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_after_a_restart_and_carried_contacts_answer_as_the_proto_says() {
    for pg in backends("transfer-carried") {
        let data = temp_dir("transfer-carried");
        let cfg = ledger_config(&data, pg.as_deref());
        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
        o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
        // k-1: transferred, then accepted and completed by op-202 before the restart.
        in_service(&srv, &mut o, "op-201", "k-1", "naspi").await;
        let first = o.transfer_contact(to_queue("op-201", "k-1", "isee")).await.expect("transfer").into_inner();
        assert!(matches!(&first.next, Some(Next::Assigned(a)) if a.operator_id == "op-202"), "{first:?}");
        o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-202".into(), contact_id: "k-1".into() })
            .await
            .expect("accept");
        complete(&mut o, "op-202", "k-1").await;
        // k-2: in service with op-201 when the server stops, never transferred.
        o.login(login("op-203", "supplier-a", &[("naspi", 7)])).await.expect("login");
        in_service(&srv, &mut o, "op-203", "k-2", "naspi").await;
        // k-4: in service with op-205 across the restart, completed after it.
        o.login(login("op-205", "internal", &[("pensions", 7)])).await.expect("login");
        in_service(&srv, &mut o, "op-205", "k-4", "pensions").await;
        srv.stop().await;

        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        let mut events =
            srv.contacts().await.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();
        o.login(login("op-205", "internal", &[("pensions", 7)])).await.expect("login");
        complete(&mut o, "op-205", "k-4").await;
        // A contact carried across the restart ends on the stream as any other does.
        let ev = next(&mut events, 5).await.expect("an event");
        assert_eq!(ev.contact_id, "k-4", "{ev:?}");
        assert!(
            matches!(&ev.kind, Some(pb::contact_event::Kind::Finished(f)) if f.outcome == pb::Outcome::Completed as i32),
            "{ev:?}"
        );
        // The repeat of k-1's transfer: the same leg, and the contact has ended since.
        let again = o.transfer_contact(to_queue("op-201", "k-1", "isee")).await.expect("repeat").into_inner();
        assert_eq!((again.handle_ms, again.next), (first.handle_ms, Some(Next::Ended(pb::Outcome::Completed as i32))));
        // Another target than the first: refused, whatever the life.
        let e = o.transfer_contact(to_queue("op-201", "k-1", "naspi")).await.expect_err("another target");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // k-2 is carried across the restart with op-203, who logs in again and transfers it.
        let l = o.login(login("op-203", "supplier-a", &[("naspi", 7)])).await.expect("login").into_inner();
        assert_eq!(l.in_service, vec!["k-2".to_owned()]);
        o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
        let e = o.transfer_contact(to_queue("op-202", "k-2", "isee")).await.expect_err("not op-202's");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let t = o.transfer_contact(to_queue("op-203", "k-2", "isee")).await.expect("carried transfer").into_inner();
        match &t.next {
            Some(Next::Assigned(a)) => assert_eq!((a.operator_id.as_str(), a.queue.as_str()), ("op-202", "isee")),
            other => panic!("expected op-202 on isee, got {other:?}"),
        }
        // The platform's offer of it again (as after any restart) answers where it is.
        let d = srv.contacts().await.offer_contact(voice("k-2", "naspi")).await.expect("offer again").into_inner();
        assert_eq!(assigned(&d).as_deref(), Some("op-202"), "{d:?}");
        // After the repeat-contract re-offer the first operator's repeat still answers the leg.
        let again = o.transfer_contact(to_queue("op-203", "k-2", "isee")).await.expect("repeat").into_inner();
        assert_eq!(again.handle_ms, t.handle_ms);
        o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-202".into(), contact_id: "k-2".into() })
            .await
            .expect("accept");
        complete(&mut o, "op-202", "k-2").await;

        // Malformed targets and a queue nobody else serves: refused, nothing changed.
        o.login(login("op-204", "supplier-a", &[("family", 6)])).await.expect("login");
        in_service(&srv, &mut o, "op-204", "k-3", "family-allowance").await;
        let e = o.transfer_contact(to_queue("op-204", "k-3", "")).await.expect_err("empty queue");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let bad = pb::TransferContactRequest {
            target: Some(Target::External(pb::TransferOut { destination: "+39\n06".into() })),
            ..to_queue("op-204", "k-3", "")
        };
        let e = o.transfer_contact(bad).await.expect_err("a newline");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = o.transfer_contact(to_queue("op-204", "k-3", "family-allowance")).await.expect_err("only op-204 there");
        assert!(e.code() == Code::FailedPrecondition && e.message().contains("no_operators"), "{e:?}");
        complete(&mut o, "op-204", "k-3").await;

        // The interval report: k-1 and k-2 offered and answered once each, in naspi, their
        // transfers out of naspi and into isee (k-1's before the restart, k-2's carried one).
        let report = srv.hour_report().await;
        let sum = |q: &str, f: fn(&pb::QueueIntervalRow) -> u64| sum_of(&report.queues, q, f);
        assert_eq!(sum("naspi", |r| r.offered), 2, "{:?}", report.queues);
        assert_eq!(sum("naspi", |r| r.answered), 2, "{:?}", report.queues);
        assert_eq!(sum("naspi", |r| r.transferred_out), 2, "{:?}", report.queues);
        assert_eq!(sum("isee", |r| r.transferred_in), 2, "{:?}", report.queues);
        assert_eq!(sum("isee", |r| r.offered), 0, "{:?}", report.queues);
        srv.stop().await;

        let target = cfg.ledger.target(&data).expect("ledger");
        let l = smista_ledger::Ledger::connect(&target).await.expect("open");
        for c in ["k-1", "k-2"] {
            let recs = l.cost_records_of(c).await.expect("records");
            let legs: Vec<&str> = recs.iter().map(|r| r.outcome.as_str()).collect();
            assert_eq!(legs, vec!["transferred", "completed"], "{c}: {recs:?}");
        }
        l.close().await;
        drop_backend(pg.as_deref()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_operator_who_declines_frees_the_contact_for_the_queue() {
    let srv = Server::start().await;
    let mut o = srv.operators().await;
    o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
    o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
    in_service(&srv, &mut o, "op-201", "n-1", "naspi").await;
    // op-202 is named for ten minutes; op-203 of the same queue waits.
    let named = to_operator("op-201", "n-1", "op-202", "isee", 600_000);
    let r = o.transfer_contact(named).await.expect("named").into_inner();
    assert!(matches!(&r.next, Some(Next::Assigned(a)) if a.operator_id == "op-202"), "{r:?}");
    let too_long = to_operator("op-201", "n-1", "op-202", "isee", 3_600_001);
    let e = o.transfer_contact(too_long).await.expect_err("a head start above an hour");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    o.login(login("op-203", "supplier-a", &[("isee", 5)])).await.expect("login");
    o.decline_offer(pb::DeclineOfferRequest { operator_id: "op-202".into(), contact_id: "n-1".into() })
        .await
        .expect("decline");
    // Declined by the one it was kept for: op-203 gets it now, not in ten minutes.
    let mut watch =
        o.watch_offers(pb::WatchOffersRequest { operator_id: "op-203".into() }).await.expect("watch").into_inner();
    let offer = next(&mut watch, 5).await.expect("an offer to op-203");
    assert_eq!(offer.contact_id, "n-1");
    srv.stop().await;
}
