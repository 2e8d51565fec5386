//! OperatorService.ConsultContact and EndConsultation over the wire, as the proto describes them:
//! each flow (hand-over, conference, cancel, the second ending it, the contact ending it) with
//! its replies, offers and events; each error with its status; the refusal that leaves the caller
//! with its operator; and a restart in the middle of a consultation (both operators talking):
//! what each desk holds, the repeats, and one cost record per leg.

mod support;

use smista_proto::v1 as pb;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::*;
use tonic::transport::Channel;
use tonic::Code;

use pb::consult_contact_request::Target;
use pb::consult_contact_response::State;

fn ask(op: &str, contact: &str, consultation: &str, queue: &str) -> pb::ConsultContactRequest {
    pb::ConsultContactRequest {
        operator_id: op.into(),
        contact_id: contact.into(),
        consultation_id: consultation.into(),
        target: Some(Target::Queue(queue.into())),
    }
}

fn end(op: &str, contact: &str, consultation: &str, action: pb::ConsultationAction) -> pb::EndConsultationRequest {
    pb::EndConsultationRequest {
        operator_id: op.into(),
        contact_id: contact.into(),
        consultation_id: consultation.into(),
        action: action as i32,
        ended_unix_ms: 0,
        wrap_up_ms: 0,
    }
}

fn accept(op: &str, contact: &str) -> pb::AcceptOfferRequest {
    pb::AcceptOfferRequest { operator_id: op.into(), contact_id: contact.into() }
}

fn complete_req(op: &str, contact: &str) -> pb::CompleteContactRequest {
    pb::CompleteContactRequest { operator_id: op.into(), contact_id: contact.into(), wrap_up_ms: 0, ended_unix_ms: 0 }
}

/// Offers `contact` on `queue` and has `op` (the only one free for it) accept it.
async fn in_service(srv: &Server, o: &mut OperatorServiceClient<Channel>, op: &str, contact: &str, queue: &str) {
    let d = srv.contacts().await.offer_contact(voice(contact, queue)).await.expect("offer").into_inner();
    assert_eq!(assigned(&d).as_deref(), Some(op), "{d:?}");
    o.accept_offer(accept(op, contact)).await.expect("accept");
}

fn offered_to(r: &pb::ConsultContactResponse) -> Option<&str> {
    match &r.state {
        Some(State::Assigned(a)) => Some(a.operator_id.as_str()),
        _ => None,
    }
}

use pb::ConsultationAction::{Cancel, Conference, Transfer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_consultation_flow_answers_as_the_proto_says() {
    let srv = Server::start().await;
    let mut o = srv.operators().await;
    o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
    o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
    let mut offers =
        o.watch_offers(pb::WatchOffersRequest { operator_id: "op-202".into() }).await.expect("watch").into_inner();
    let mut events =
        srv.contacts().await.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();
    in_service(&srv, &mut o, "op-201", "c-1", "naspi").await;

    // Errors, each changing nothing.
    let e = o.consult_contact(ask("op-202", "c-1", "k-1", "isee")).await.expect_err("not op-202's contact");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = o.consult_contact(ask("op-201", "c-1", "k-1", "nowhere")).await.expect_err("unknown queue");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = o.consult_contact(ask("op-201", "c-1", "k-1", "disability")).await.expect_err("nobody there");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("no_operators"), "the reason is named: {e:?}");
    let e = o.consult_contact(ask("op-201", "c-1", "c-1", "isee")).await.expect_err("its own id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut no_target = ask("op-201", "c-1", "k-1", "isee");
    no_target.target = None;
    let e = o.consult_contact(no_target).await.expect_err("no target");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = o.consult_contact(ask("op-201", "c-never", "k-1", "isee")).await.expect_err("never offered");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = o.end_consultation(end("op-201", "c-1", "k-1", Cancel)).await.expect_err("no such consultation");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Asked of isee: op-202 gets an offer marked as a consultation about c-1 from op-201.
    let r = o.consult_contact(ask("op-201", "c-1", "k-1", "isee")).await.expect("consult").into_inner();
    assert_eq!(offered_to(&r), Some("op-202"), "{r:?}");
    let again = o.consult_contact(ask("op-201", "c-1", "k-1", "isee")).await.expect("repeat").into_inner();
    assert_eq!(offered_to(&again), Some("op-202"), "a repeat answers where it stands: {again:?}");
    let offer = next(&mut offers, 5).await.expect("the consultation's offer");
    assert_eq!(offer.contact_id, "k-1");
    let of = offer.consultation.expect("marked as a consultation");
    assert_eq!((of.contact_id.as_str(), of.from_operator_id.as_str()), ("c-1", "op-201"));
    // One consultation at a time, and none of a consultation.
    let e = o.consult_contact(ask("op-201", "c-1", "k-9", "isee")).await.expect_err("a second one");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Not accepted yet: no hand-over, no conference; a blind transfer waits too.
    let e = o.end_consultation(end("op-201", "c-1", "k-1", Transfer)).await.expect_err("not accepted");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = o.end_consultation(end("op-201", "c-1", "k-1", Conference)).await.expect_err("not accepted");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let blind = pb::TransferContactRequest {
        operator_id: "op-201".into(),
        contact_id: "c-1".into(),
        target: Some(pb::transfer_contact_request::Target::Queue("isee".into())),
        ended_unix_ms: 0,
        wrap_up_ms: 0,
    };
    let e = o.transfer_contact(blind).await.expect_err("consulting");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Accepted: both busy; a conference; then the hand-over.
    o.accept_offer(accept("op-202", "k-1")).await.expect("op-202 accepts the consultation");
    let e = o.consult_contact(ask("op-202", "k-1", "k-2", "naspi")).await.expect_err("a consultation's consultation");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let c = o.end_consultation(end("op-201", "c-1", "k-1", Conference)).await.expect("conference").into_inner();
    assert_eq!(c.second_operator_id, "op-202");
    let h = o.end_consultation(end("op-201", "c-1", "k-1", Transfer)).await.expect("hand over").into_inner();
    assert_eq!(h.second_operator_id, "op-202");
    let again = o.end_consultation(end("op-201", "c-1", "k-1", Transfer)).await.expect("repeat").into_inner();
    assert_eq!(again, h, "a repeated hand-over answers the same");
    let e = o.end_consultation(end("op-201", "c-1", "k-1", Cancel)).await.expect_err("handed over");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let r = o.consult_contact(ask("op-201", "c-1", "k-1", "isee")).await.expect("repeat after").into_inner();
    assert_eq!(r.state, Some(State::Ended(pb::Outcome::Transferred as i32)), "{r:?}");
    // op-201's leg is over; op-202 carries on under the contact's own id.
    let e = o.complete_contact(complete_req("op-201", "c-1")).await.expect_err("op-201's leg is over");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = o.complete_contact(complete_req("op-202", "k-1")).await.expect_err("the consultation was handed over");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    o.complete_contact(complete_req("op-202", "c-1")).await.expect("op-202 completes the caller");

    // The stream told it: requested, accepted, conference, the transfer, the hand-over.
    let mut steps = Vec::new();
    let mut finished = Vec::new();
    while !finished.contains(&"c-1".to_owned()) {
        let ev = next(&mut events, 5).await.expect("event");
        match ev.kind {
            Some(pb::contact_event::Kind::Consultation(c)) => {
                assert_eq!((ev.contact_id.as_str(), c.consultation_id.as_str()), ("c-1", "k-1"));
                steps.push(pb::ConsultationStep::try_from(c.step).expect("step"));
            }
            Some(pb::contact_event::Kind::Transferred(t)) => {
                assert_eq!((t.operator_id.as_str(), t.to_operator_id.as_str()), ("op-201", "op-202"));
                steps.push(pb::ConsultationStep::Unspecified);
            }
            Some(pb::contact_event::Kind::Finished(f)) => {
                if ev.contact_id == "k-1" {
                    assert_eq!(f.outcome, pb::Outcome::Transferred as i32, "merged into its contact");
                }
                finished.push(ev.contact_id.clone());
            }
            _ => {}
        }
    }
    use pb::ConsultationStep as S;
    assert_eq!(steps, vec![S::Requested, S::Accepted, S::Conference, S::Unspecified, S::HandedOver], "{steps:?}");
    assert_eq!(finished, vec!["k-1".to_owned(), "c-1".to_owned()], "each ends once");

    // Cancelled while waiting: withdrawn; the caller stays with its operator.
    o.login(login("op-203", "supplier-a", &[("naspi", 7)])).await.expect("login");
    in_service(&srv, &mut o, "op-203", "c-2", "naspi").await;
    o.set_state(pb::SetStateRequest {
        operator_id: "op-202".into(),
        status: pb::OperatorStatus::Paused as i32,
        reason: "break".into(),
    })
    .await
    .expect("pause");
    let r = o.consult_contact(ask("op-203", "c-2", "k-2", "isee")).await.expect("consult").into_inner();
    assert!(matches!(r.state, Some(State::Queued(_))), "nobody free there: {r:?}");
    let c = o.end_consultation(end("op-203", "c-2", "k-2", Cancel)).await.expect("cancel").into_inner();
    assert_eq!(c.second_operator_id, "", "nobody had taken it");
    o.end_consultation(end("op-203", "c-2", "k-2", Cancel)).await.expect("a repeated cancel");
    let e = o.end_consultation(end("op-203", "c-2", "k-2", Transfer)).await.expect_err("it ended");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The contact ending ends its consultation: op-205 is free again.
    o.login(login("op-205", "supplier-a", &[("isee", 5)])).await.expect("login");
    let r = o.consult_contact(ask("op-203", "c-2", "k-3", "isee")).await.expect("consult").into_inner();
    assert_eq!(offered_to(&r), Some("op-205"), "{r:?}");
    o.accept_offer(accept("op-205", "k-3")).await.expect("accept");
    o.complete_contact(complete_req("op-203", "c-2")).await.expect("the caller's call ends");
    let e = o.complete_contact(complete_req("op-205", "k-3")).await.expect_err("ended with its contact");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let c = o.end_consultation(end("op-203", "c-2", "k-3", Cancel)).await.expect("already ended").into_inner();
    assert_eq!(c.second_operator_id, "op-205");
    let l = o.logout(pb::LogoutRequest { operator_id: "op-205".into(), force: false }).await;
    assert!(l.is_ok(), "op-205 holds nothing any more: {l:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_budget_consultation_is_refused_and_the_caller_stays() {
    let srv = Server::start_with(one_call_budget()).await;
    let mut o = srv.operators().await;
    o.login(login("op-101", "internal", &[("consultancy", 7)])).await.expect("login");
    o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
    in_service(&srv, &mut o, "op-101", "x-1", "consultancy").await;
    // naspi's only operator is the supplier's, whose budget cannot pay.
    let e = o.consult_contact(ask("op-101", "x-1", "kx-1", "naspi")).await.expect_err("extra budget");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("extra_budget"), "{e:?}");
    // Nothing changed: the id is unused, op-101 still has the caller.
    let e = o.end_consultation(end("op-101", "x-1", "kx-1", Cancel)).await.expect_err("never asked");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    o.complete_contact(complete_req("op-101", "x-1")).await.expect("op-101 completes");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_consultation_loses_nothing_and_charges_each_leg_once() {
    for pg in backends("consult") {
        let data = temp_dir("consult");
        let cfg = ledger_config(&data, pg.as_deref());
        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login");
        o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login");
        // r-1: both talking when the node stops; r-2: the same, cancelled after the restart.
        in_service(&srv, &mut o, "op-201", "r-1", "naspi").await;
        let r = o.consult_contact(ask("op-201", "r-1", "kr-1", "isee")).await.expect("consult").into_inner();
        assert_eq!(offered_to(&r), Some("op-202"), "{r:?}");
        o.accept_offer(accept("op-202", "kr-1")).await.expect("accept");
        o.login(login("op-203", "supplier-a", &[("naspi", 7)])).await.expect("login");
        o.login(login("op-204", "supplier-a", &[("isee", 5)])).await.expect("login");
        in_service(&srv, &mut o, "op-203", "r-2", "naspi").await;
        let r = o.consult_contact(ask("op-203", "r-2", "kr-2", "isee")).await.expect("consult").into_inner();
        assert_eq!(offered_to(&r), Some("op-204"), "{r:?}");
        o.accept_offer(accept("op-204", "kr-2")).await.expect("accept");
        // r-3: the same; after the restart the caller hangs up, which ends the consultation too.
        o.login(login("op-205", "supplier-a", &[("naspi", 8)])).await.expect("login");
        o.login(login("op-206", "supplier-a", &[("isee", 5)])).await.expect("login");
        in_service(&srv, &mut o, "op-205", "r-3", "naspi").await;
        let r = o.consult_contact(ask("op-205", "r-3", "kr-3", "isee")).await.expect("consult").into_inner();
        assert_eq!(offered_to(&r), Some("op-206"), "{r:?}");
        o.accept_offer(accept("op-206", "kr-3")).await.expect("accept");
        // r-4: the same; after the restart its first operator is forced out.
        o.login(login("op-207", "supplier-a", &[("naspi", 9)])).await.expect("login");
        o.login(login("op-208", "supplier-a", &[("isee", 5)])).await.expect("login");
        in_service(&srv, &mut o, "op-207", "r-4", "naspi").await;
        let r = o.consult_contact(ask("op-207", "r-4", "kr-4", "isee")).await.expect("consult").into_inner();
        assert_eq!(offered_to(&r), Some("op-208"), "{r:?}");
        o.accept_offer(accept("op-208", "kr-4")).await.expect("accept");
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        srv.stop().await;

        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        // Each desk's in_service says what it holds.
        let l1 = o.login(login("op-201", "supplier-a", &[("naspi", 6)])).await.expect("login").into_inner();
        assert_eq!(l1.in_service, vec!["r-1".to_owned()]);
        let l2 = o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login").into_inner();
        assert_eq!(l2.in_service, vec!["kr-1".to_owned()]);
        // A repeated ConsultContact answers where it stands: with op-202.
        let r = o.consult_contact(ask("op-201", "r-1", "kr-1", "isee")).await.expect("repeat").into_inner();
        assert_eq!(offered_to(&r), Some("op-202"), "{r:?}");
        let e = o.consult_contact(ask("op-201", "r-1", "kr-1", "naspi")).await.expect_err("another queue");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // The hand-over of the carried consultation, and its repeat.
        let h = o.end_consultation(end("op-201", "r-1", "kr-1", Transfer)).await.expect("hand over").into_inner();
        assert_eq!(h.second_operator_id, "op-202");
        assert!(h.handle_ms >= 1_000, "op-201's leg ran across the restart: {h:?}");
        let again = o.end_consultation(end("op-201", "r-1", "kr-1", Transfer)).await.expect("repeat").into_inner();
        assert_eq!((again.handle_ms, again.second_operator_id.as_str()), (h.handle_ms, "op-202"));
        // op-202 holds the caller now, under its own id.
        let l2 = o.login(login("op-202", "supplier-a", &[("isee", 5)])).await.expect("login").into_inner();
        assert_eq!(l2.in_service, vec!["r-1".to_owned()]);
        let e = o.complete_contact(complete_req("op-201", "r-1")).await.expect_err("op-201's leg is over");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        o.complete_contact(complete_req("op-202", "r-1")).await.expect("op-202 completes");
        // r-2: the consultation cancelled after the restart; the first operator keeps the caller.
        o.login(login("op-203", "supplier-a", &[("naspi", 7)])).await.expect("login");
        o.login(login("op-204", "supplier-a", &[("isee", 5)])).await.expect("login");
        let c = o.end_consultation(end("op-203", "r-2", "kr-2", Cancel)).await.expect("cancel").into_inner();
        assert_eq!(c.second_operator_id, "op-204");
        o.end_consultation(end("op-203", "r-2", "kr-2", Cancel)).await.expect("a repeated cancel");
        let e = o.complete_contact(complete_req("op-204", "kr-2")).await.expect_err("cancelled");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        o.complete_contact(complete_req("op-203", "r-2")).await.expect("op-203 completes");
        // r-3: the platform's hang-up of the carried contact ends its carried consultation.
        srv.contacts()
            .await
            .cancel_contact(pb::CancelContactRequest { contact_id: "r-3".into() })
            .await
            .expect("hang-up");
        let l6 = o.login(login("op-206", "supplier-a", &[("isee", 5)])).await.expect("login").into_inner();
        assert!(l6.in_service.is_empty(), "the consultation ended with its contact: {l6:?}");
        let e = o.complete_contact(complete_req("op-206", "kr-3")).await.expect_err("ended with its contact");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // r-4: a plain logout is refused while a carried contact is in service; a forced one
        // cancels it in service, and its consultation with it.
        let l7 = o.login(login("op-207", "supplier-a", &[("naspi", 9)])).await.expect("login").into_inner();
        assert_eq!(l7.in_service, vec!["r-4".to_owned()]);
        let e = o
            .logout(pb::LogoutRequest { operator_id: "op-207".into(), force: false })
            .await
            .expect_err("a carried contact in service");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        o.logout(pb::LogoutRequest { operator_id: "op-207".into(), force: true }).await.expect("forced out");
        let e = o.complete_contact(complete_req("op-207", "r-4")).await.expect_err("cancelled in service");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let l8 = o.login(login("op-208", "supplier-a", &[("isee", 5)])).await.expect("login").into_inner();
        assert!(l8.in_service.is_empty(), "the consultation ended with its contact: {l8:?}");

        // The interval report: the four callers offered and answered in naspi, once each; the
        // four consultations counted apart in isee, in no citizen's figure.
        let report = srv.hour_report().await;
        let sum = |q: &str, f: fn(&pb::QueueIntervalRow) -> u64| sum_of(&report.queues, q, f);
        assert_eq!((sum("naspi", |r| r.offered), sum("naspi", |r| r.answered)), (4, 4), "{:?}", report.queues);
        assert_eq!(sum("isee", |r| r.offered), 0, "{:?}", report.queues);
        assert_eq!(sum("isee", |r| r.consultations), 4, "{:?}", report.queues);
        assert_eq!(sum("isee", |r| r.transferred_in), 1, "r-1 handed over into isee: {:?}", report.queues);
        srv.stop().await;

        // One cost record per leg, each once; nothing held any more.
        let target = cfg.ledger.target(&data).expect("ledger");
        let l = smista_ledger::Ledger::connect(&target).await.expect("open");
        let r1 = l.cost_records_of("r-1").await.expect("records");
        let kr1 = l.cost_records_of("kr-1").await.expect("records");
        let r2 = l.cost_records_of("r-2").await.expect("records");
        let kr2 = l.cost_records_of("kr-2").await.expect("records");
        let holds = l.recovery().await.expect("recovery").holds;
        l.close().await;
        let legs: Vec<(&str, &str)> = r1.iter().map(|r| (r.operator.as_str(), r.outcome.as_str())).collect();
        assert_eq!(legs, vec![("op-201", "transferred"), ("op-202", "completed")], "{r1:?}");
        assert!(kr1.is_empty(), "a consultation handed over is its contact's leg: {kr1:?}");
        // op-202's leg ran from the consultation's acceptance (before the restart) to the end.
        assert!(r1[1].handle_ms >= 1_000, "{r1:?}");
        let tariff = cfg.budgets[0].tariffs[0].tariff;
        assert_eq!(r1[1].cost_cents, tariff.cost_cents(r1[1].handle_ms) - tariff.fee_per_contact_cents, "{r1:?}");
        assert_eq!(r2.len(), 1, "{r2:?}");
        let kr2: Vec<(&str, &str)> = kr2.iter().map(|r| (r.operator.as_str(), r.outcome.as_str())).collect();
        assert_eq!(kr2, vec![("op-204", "cancelled_in_service")], "the consultation's time is paid once");
        assert!(holds.is_empty(), "{holds:?}");
        drop_backend(pg.as_deref()).await;
    }
}

/// A hand-over racing a forced logout of the consultation's operator, over the wire, many
/// times: every contact and consultation ends exactly once on the stream, nobody is left logged
/// out holding a call, and after a restart the ledger holds nothing and brings nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_racing_a_forced_logout_ends_everything_once() {
    let data = temp_dir("consult-race");
    let cfg = ledger_config(&data, None);
    let srv = Server::start_in(cfg.clone()).await;
    let mut events =
        srv.contacts().await.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();
    const ROUNDS: usize = 150;
    for i in 0..ROUNDS {
        let (a, b, c, k) = (format!("ra-{i}"), format!("rb-{i}"), format!("rc-{i}"), format!("rk-{i}"));
        let mut o = srv.operators().await;
        o.login(login(&a, "supplier-a", &[("naspi", 6)])).await.expect("login");
        in_service(&srv, &mut o, &a, &c, "naspi").await;
        o.login(login(&b, "supplier-a", &[("isee", 5)])).await.expect("login");
        let r = o.consult_contact(ask(&a, &c, &k, "isee")).await.expect("consult").into_inner();
        assert_eq!(offered_to(&r), Some(b.as_str()), "{r:?}");
        o.accept_offer(accept(&b, &k)).await.expect("accept");
        let mut o1 = srv.operators().await;
        let mut o2 = srv.operators().await;
        let (h, l) = tokio::join!(
            o1.end_consultation(end(&a, &c, &k, Transfer)),
            o2.logout(pb::LogoutRequest { operator_id: b.clone(), force: true })
        );
        l.expect("the forced logout");
        // Either the hand-over came first (the logout then cancelled the caller in b's hands) or
        // the logout did (the consultation ended, a keeps the caller): a completes or it ended.
        let done = o.complete_contact(complete_req(&a, &c)).await;
        match (&h, &done) {
            (Ok(_), Err(e)) => assert_eq!(e.code(), Code::FailedPrecondition, "round {i}: {e:?}"),
            (Err(e), Ok(_)) => assert_eq!(e.code(), Code::FailedPrecondition, "round {i}: {e:?}"),
            other => panic!("round {i}: {other:?}"),
        }
        o.logout(pb::LogoutRequest { operator_id: a.clone(), force: true }).await.expect("logout");
    }
    let mut finished: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    while finished.len() < 2 * ROUNDS {
        let ev = next(&mut events, 5).await.expect("event");
        if let Some(pb::contact_event::Kind::Finished(_)) = ev.kind {
            *finished.entry(ev.contact_id).or_default() += 1;
        }
    }
    assert!(finished.values().all(|n| *n == 1), "each ends once: {finished:?}");
    srv.stop().await;
    let target = cfg.ledger.target(&data).expect("ledger");
    let l = smista_ledger::Ledger::connect(&target).await.expect("open");
    let holds = l.recovery().await.expect("recovery").holds;
    l.close().await;
    assert!(holds.is_empty(), "nothing held after every contact ended: {holds:?}");
    // A restart brings nothing back.
    let srv = Server::start_in(cfg.clone()).await;
    let mut o = srv.operators().await;
    for i in 0..ROUNDS {
        let l = o.login(login(&format!("rb-{i}"), "supplier-a", &[("isee", 5)])).await.expect("login").into_inner();
        assert!(l.in_service.is_empty(), "round {i}: {l:?}");
    }
    srv.stop().await;
}
