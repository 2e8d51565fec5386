//! SIGTERM on a running `smista serve`: health turns NOT_SERVING, new offers get UNAVAILABLE,
//! streams end cleanly, and the process exits 0.

mod support;

use std::process::Command;
use std::time::Duration;

use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::Smista;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let data = std::env::temp_dir().join(format!("smista-shutdown-{}", std::process::id()));
    let mut smista = Smista::start(&["--drain-ms".as_ref(), "1500".as_ref(), "--data-dir".as_ref(), data.as_os_str()]);
    let mut log = std::mem::take(&mut smista.startup);
    let ch = smista.channel().await;
    let mut contacts = ContactServiceClient::new(ch.clone());
    let mut ops = OperatorServiceClient::new(ch.clone());
    let mut health = HealthClient::new(ch);
    ops.login(pb::LoginRequest {
        operator_id: "op-1".into(),
        group: "internal".into(),
        skills: vec![pb::Skill { name: "pensions".into(), level: 7 }],
        channels: vec![],
        session_id: "desk".into(),
    })
    .await
    .expect("login");
    let mut events = contacts.stream_events(pb::StreamEventsRequest::default()).await.expect("events").into_inner();
    let mut offers =
        ops.watch_offers(pb::WatchOffersRequest { operator_id: "op-1".into() }).await.expect("offers").into_inner();

    let status = Command::new("kill").args(["-TERM", &smista.child.id().to_string()]).status().expect("kill");
    assert!(status.success());

    // Health goes NOT_SERVING while the server still answers.
    let mut not_serving = false;
    for _ in 0..50 {
        let r =
            health.check(HealthCheckRequest { service: String::new() }).await.expect("health answers while draining");
        if r.into_inner().status() == ServingStatus::NotServing {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_serving, "health never went NOT_SERVING");
    let offer = pb::OfferContactRequest {
        contact_id: "late".into(),
        queue: "pensions".into(),
        channel: pb::Channel::Voice as i32,
        ..Default::default()
    };
    let e = contacts.offer_contact(offer).await.expect_err("offers are refused while draining");
    assert_eq!(e.code(), tonic::Code::Unavailable);
    // Streams end cleanly (end of stream, not an error).
    let end = tokio::time::timeout(Duration::from_secs(5), events.message()).await.expect("event stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), offers.message()).await.expect("offer stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");

    let exit = tokio::task::block_in_place(|| smista.child.wait()).expect("wait");
    while let Ok(l) = smista.log.try_recv() {
        log.push(l);
    }
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    let _ = std::fs::remove_dir_all(&data);
}
