//! The real server on an ephemeral port, driven through the generated clients: a contact's whole
//! lifecycle, the event stream and its resumption, and the status codes of bad requests.

mod support;

use std::time::Duration;

use smista_proto::v1 as pb;
use support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_flow_through_offer_accept_decline_timeout_cancel_and_complete() {
    let srv = Server::start().await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    let mut a = srv.admin().await;
    let mut events = c.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();

    let r = o.login(login("op-a", "internal", &[("pensions", 7)])).await.expect("login").into_inner();
    assert_eq!(r.queues, vec!["pensions".to_string()]);
    o.login(login("op-b", "supplier-a", &[("pensions", 5)])).await.expect("login");
    let mut offers_a =
        o.watch_offers(pb::WatchOffersRequest { operator_id: "op-a".into() }).await.expect("watch").into_inner();

    // pensions prefers internal staff: op-a first although op-b is also free.
    let r1 = c.offer_contact(voice("call-1", "pensions")).await.expect("offer").into_inner();
    assert_eq!(assigned(&r1).as_deref(), Some("op-a"));
    let pushed = next(&mut offers_a, 5).await.expect("offer pushed");
    assert_eq!(pushed.contact_id, "call-1");
    let r2 = c.offer_contact(voice("call-2", "pensions")).await.expect("offer").into_inner();
    assert_eq!(assigned(&r2).as_deref(), Some("op-b"));
    let r3 = c.offer_contact(voice("call-3", "pensions")).await.expect("offer").into_inner();
    assert!(
        matches!(r3.decision, Some(pb::offer_contact_response::Decision::Queued(ref q)) if q.position == 1),
        "{r3:?}"
    );

    // Decline: call-2 goes back to the head and cannot return to op-b.
    o.decline_offer(pb::DeclineOfferRequest { operator_id: "op-b".into(), contact_id: "call-2".into() })
        .await
        .expect("decline");
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-a".into(), contact_id: "call-1".into() })
        .await
        .expect("accept");
    // Accepting twice is idempotent; accepting someone else's offer is refused.
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-a".into(), contact_id: "call-1".into() })
        .await
        .expect("accept again");
    // op-b is free again and gets call-3 (call-2 is excluded for it).
    let e = o
        .accept_offer(pb::AcceptOfferRequest { operator_id: "op-b".into(), contact_id: "call-2".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-b".into(), contact_id: "call-3".into() })
        .await
        .expect("op-b got call-3");

    // Complete with a short wrap-up: call-2 then goes to op-a.
    let done = o
        .complete_contact(pb::CompleteContactRequest {
            operator_id: "op-a".into(),
            contact_id: "call-1".into(),
            wrap_up_ms: 100,
            ended_unix_ms: 0,
        })
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(done.wrap_up_ms, 100);
    let pushed = next(&mut offers_a, 5).await.expect("second offer");
    assert_eq!(pushed.contact_id, "call-2");

    // An offer nobody accepts times out: op-a is paused "no answer", call-2 waits again.
    a.update_queue(pb::UpdateQueueRequest {
        queue: "pensions".into(),
        offer_timeout_ms: Some(200),
        ..Default::default()
    })
    .await
    .expect("update queue");
    // call-2 was offered under the old 15 s timeout; decline it so the next offer uses 200 ms.
    o.decline_offer(pb::DeclineOfferRequest { operator_id: "op-a".into(), contact_id: "call-2".into() })
        .await
        .expect("decline");
    o.login(login("op-c", "internal", &[("pensions", 4)])).await.expect("login op-c");
    let mut timed_out = false;
    let mut seen = Vec::new();
    for _ in 0..60 {
        let Some(ev) = next(&mut events, 5).await else { break };
        seen.push(ev.clone());
        if let Some(pb::contact_event::Kind::OfferTimedOut(t)) = &ev.kind {
            assert_eq!(ev.contact_id, "call-2");
            assert_eq!(t.operator_id, "op-c");
            timed_out = true;
            break;
        }
    }
    assert!(timed_out, "no time-out event in {seen:#?}");
    let snap = a.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
    let op_c = snap.operators.iter().find(|x| x.operator_id == "op-c").expect("op-c");
    assert_eq!(op_c.status(), pb::OperatorStatus::Paused);
    assert_eq!(op_c.pause_reason, "no answer");

    // The caller hangs up while waiting: abandoned, exactly once.
    let out =
        c.cancel_contact(pb::CancelContactRequest { contact_id: "call-2".into() }).await.expect("cancel").into_inner();
    assert_eq!(out.outcome(), pb::Outcome::Abandoned);
    let again = c
        .cancel_contact(pb::CancelContactRequest { contact_id: "call-2".into() })
        .await
        .expect("cancel again")
        .into_inner();
    assert_eq!(again.outcome(), pb::Outcome::Abandoned);

    // Sequence numbers on the stream are strictly increasing without gaps.
    for w in seen.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence + 1);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_resumes_after_reconnect_without_loss_or_duplicates() {
    let srv = Server::start().await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    o.login(login("op-1", "internal", &[("isee", 5)])).await.expect("login");
    o.set_state(pb::SetStateRequest {
        operator_id: "op-1".into(),
        status: pb::OperatorStatus::Paused as i32,
        reason: "break".into(),
    })
    .await
    .expect("pause");
    let mut first = c.stream_events(pb::StreamEventsRequest::default()).await.expect("stream").into_inner();
    for i in 0..5 {
        c.offer_contact(voice(&format!("r-{i}"), "isee")).await.expect("offer");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut first, 5).await.expect("event"));
    }
    drop(first);
    // Meanwhile more happens.
    for i in 0..5 {
        c.cancel_contact(pb::CancelContactRequest { contact_id: format!("r-{i}") }).await.expect("cancel");
    }
    let last = got.last().map(|e| e.sequence).expect("some");
    let mut resumed = c
        .stream_events(pb::StreamEventsRequest { after_sequence: last, ..Default::default() })
        .await
        .expect("resume")
        .into_inner();
    // 5 queued + 5 finished events in all; 3 already seen.
    for _ in 0..7 {
        got.push(next(&mut resumed, 5).await.expect("resumed event"));
    }
    let seqs: Vec<u64> = got.iter().map(|e| e.sequence).collect();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or duplicate in {seqs:?}");
    }
    let finished = got.iter().filter(|e| matches!(e.kind, Some(pb::contact_event::Kind::Finished(_)))).count();
    assert_eq!(finished, 5);
    // A position beyond the end is refused.
    let e = c
        .stream_events(pb::StreamEventsRequest { after_sequence: 1_000_000, ..Default::default() })
        .await
        .expect_err("beyond the end");
    assert_eq!(e.code(), Code::OutOfRange);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_status_codes() {
    let srv = Server::start().await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    let code = |r: Result<tonic::Response<pb::OfferContactResponse>, tonic::Status>| r.expect_err("refused").code();
    assert_eq!(code(c.offer_contact(voice("x", "no-such-queue")).await), Code::NotFound);
    assert_eq!(code(c.offer_contact(voice("", "pensions")).await), Code::InvalidArgument);
    let mut unspecified = voice("y", "pensions");
    unspecified.channel = 0;
    assert_eq!(code(c.offer_contact(unspecified).await), Code::InvalidArgument);
    let mut bad_priority = voice("z", "pensions");
    bad_priority.priority = 101;
    assert_eq!(code(c.offer_contact(bad_priority).await), Code::InvalidArgument);
    let mut bad_enum = voice("w", "pensions");
    bad_enum.segment = 99;
    assert_eq!(code(c.offer_contact(bad_enum).await), Code::InvalidArgument);
    // No operator can serve ISEE yet: diverted, which is a decision, not an error.
    let r = c.offer_contact(voice("v", "isee")).await.expect("decision").into_inner();
    assert!(
        matches!(r.decision, Some(pb::offer_contact_response::Decision::Diverted(ref d)) if d.reason() == pb::DivertReason::NoOperators)
    );

    o.login(login("op-1", "internal", &[("pensions", 5)])).await.expect("login");
    let mut other = login("op-1", "internal", &[("pensions", 5)]);
    other.session_id = "another-desk".into();
    assert_eq!(o.login(other).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(o.login(login("op-2", "ghost-group", &[])).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        o.login(login("op-3", "internal", &[("pensions", 11)])).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = o
        .accept_offer(pb::AcceptOfferRequest { operator_id: "nobody".into(), contact_id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = o
        .set_state(pb::SetStateRequest {
            operator_id: "op-1".into(),
            status: pb::OperatorStatus::WrapUp as i32,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = o
        .complete_contact(pb::CompleteContactRequest {
            operator_id: "op-1".into(),
            contact_id: "never".into(),
            wrap_up_ms: 0,
            ended_unix_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = o.watch_offers(pb::WatchOffersRequest { operator_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Bytes that are no request at all: the client's fault, INVALID_ARGUMENT (never INTERNAL).
    let ch = srv.channel().await;
    for (path, bytes) in [
        // contact_id (field 1) whose string is not UTF-8.
        ("/smista.v1.ContactService/OfferContact", vec![0x0a, 0x02, 0x6b, 0xff]),
        ("/smista.v1.OperatorService/ConsultContact", vec![0x1a, 0x03, 0x6b, 0xff, 0xfe]),
        // A varint that never ends; a message cut short.
        ("/smista.v1.OperatorService/Login", vec![0xff, 0xff, 0xff, 0xff]),
        ("/smista.v1.OperatorService/EndConsultation", vec![0x0a, 0x10, 0x61]),
    ] {
        let e = raw_call(ch.clone(), path, bytes).await.expect_err("undecodable");
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {e:?}");
    }
    srv.stop().await;
}

/// Sends `bytes` as the request message of `path`, as a client with a broken encoder would.
async fn raw_call(
    ch: tonic::transport::Channel,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<bytes::Bytes, tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = bytes::Bytes;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, tonic::Status> {
            let n = bytes::Buf::remaining(src);
            Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
        }
    }
    struct RawCodec;
    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = bytes::Bytes;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(bytes), path, RawCodec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_need_an_admin_key_when_credentials_are_configured() {
    let mut cfg = smista_server::config::Config::load(None).expect("demo");
    let admin = |name: &str, key: &str, roles| smista_server::config::auth::ApiKey {
        name: name.into(),
        sha256: smista_client::mint::api_key_hash(key),
        roles,
        operator: None,
    };
    use smista_server::config::auth::Role;
    cfg.auth.api_keys = vec![
        admin("console", "s3cret", vec![Role::Admin]),
        admin("wallboard", "w4ll", vec![Role::Supervisor]),
        admin("pbx", "pbx-key", vec![Role::Platform]),
    ];
    let srv = Server::start_with(cfg).await;
    let mut a = srv.admin().await;
    let req = || pb::SetQueueOpenRequest { queue: "pensions".into(), open: false };
    assert_eq!(a.set_queue_open(req()).await.unwrap_err().code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(req());
    wrong.metadata_mut().insert("authorization", "Bearer nope".parse().expect("ascii"));
    assert_eq!(a.set_queue_open(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut right = tonic::Request::new(req());
    right.metadata_mut().insert("authorization", "Bearer s3cret".parse().expect("ascii"));
    a.set_queue_open(right).await.expect("authorized");
    // Reading needs the supervisor role, which the admin key lacks; the closed queue diverts.
    let mut read = tonic::Request::new(pb::GetSnapshotRequest {});
    read.metadata_mut().insert("authorization", "Bearer s3cret".parse().expect("ascii"));
    assert_eq!(a.get_snapshot(read).await.unwrap_err().code(), Code::PermissionDenied);
    let mut read = tonic::Request::new(pb::GetSnapshotRequest {});
    read.metadata_mut().insert("authorization", "Bearer w4ll".parse().expect("ascii"));
    a.get_snapshot(read).await.expect("snapshot");
    let mut offer = tonic::Request::new(voice("c", "pensions"));
    offer.metadata_mut().insert("authorization", "Bearer pbx-key".parse().expect("ascii"));
    let r = srv.contacts().await.offer_contact(offer).await.expect("decision").into_inner();
    assert!(
        matches!(r.decision, Some(pb::offer_contact_response::Decision::Diverted(ref d)) if d.reason() == pb::DivertReason::Closed)
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let srv = Server::start().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(srv.channel().await);
    let r =
        h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health").into_inner();
    assert_eq!(r.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest { service: "smista.v1.ContactService".into() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(r.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    srv.stop().await;
}

/// Server reflection answers in both protocol versions clients speak (v1, and v1alpha for
/// Python's grpcio-reflection and older grpcurl), and describes the health protocol too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_speaks_v1_and_v1alpha_and_describes_health() {
    use tonic_reflection::pb::{v1, v1alpha};
    let srv = Server::start().await;
    let ch = srv.channel().await;

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let ask = |m| v1alpha::ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let reqs = vec![
        ask(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        ask(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into())),
    ];
    let mut replies = alpha.server_reflection_info(tokio_stream::iter(reqs)).await.expect("v1alpha").into_inner();
    let listed = replies.message().await.expect("reply").expect("one");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) = listed.message_response
    else {
        panic!("a service list: {listed:?}")
    };
    let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
    for want in ["smista.v1.ContactService", "smista.v1.OperatorService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let health = replies.message().await.expect("reply").expect("two");
    assert!(
        matches!(health.message_response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{health:?}"
    );

    let mut v1c = v1::server_reflection_client::ServerReflectionClient::new(ch);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "smista.v1.ContactService".into(),
        )),
    };
    let mut r = v1c.server_reflection_info(tokio_stream::iter(vec![req])).await.expect("v1").into_inner();
    let got = r.message().await.expect("reply").expect("one");
    assert!(
        matches!(got.message_response, Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{got:?}"
    );
    srv.stop().await;
}
