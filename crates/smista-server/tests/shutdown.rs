//! SIGTERM on a running `smista serve`: health turns NOT_SERVING, new offers get UNAVAILABLE,
//! streams end cleanly, and the process exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let data = std::env::temp_dir().join(format!("smista-shutdown-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_smista"))
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--drain-ms", "1500"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smista serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let grpc = loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("start-up line");
        log.push(line.clone());
        if let Some(rest) = line.split("grpc=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    let ch = Channel::from_shared(format!("http://{grpc}")).expect("uri").connect().await.expect("connect");
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

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
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

    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    while let Ok(l) = rx.try_recv() {
        log.push(l);
    }
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    let _ = std::fs::remove_dir_all(&data);
}
