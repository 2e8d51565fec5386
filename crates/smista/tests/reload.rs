//! SIGHUP on a running `smista serve` over TLS: the rotated certificate is served to new
//! connections at once (the file poll is set to an hour, so only the signal can have done it),
//! while a stream opened before keeps delivering.

mod support;

use std::process::Command;
use std::time::Duration;

use smista_client::connect::Credentials;
use smista_client::mint;
use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use support::Smista;

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("smista-reload-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn with<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().expect("ascii"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_without_dropping_streams() {
    let first = mint::mint(&mint::Options::new(&dir("a")), smista_server::config::DEMO).expect("mint");
    // The minted configuration, its file poll raised to an hour (inserted under [tls]).
    let cfg = std::fs::read_to_string(&first.config).expect("config");
    let cfg = cfg.replacen("[tls]\n", "[tls]\nreload_poll_ms = 3600000\n", 1);
    let cfg_path = first.config.with_file_name("hup.toml");
    std::fs::write(&cfg_path, cfg).expect("write config");
    let data = dir("data");
    let smista = Smista::start(&["--config".as_ref(), cfg_path.as_os_str(), "--data-dir".as_ref(), data.as_os_str()]);
    let target = format!("https://{}", smista.grpc);
    let creds = |ca: &std::path::Path| Credentials {
        ca: Some(ca.to_owned()),
        tls_domain: Some("localhost".into()),
        ..Credentials::default()
    };
    let platform = std::fs::read_to_string(&first.platform_key_token).expect("key");
    let ch = creds(&first.ca).channel(&target).await.expect("TLS with the first CA");
    let mut events = ContactServiceClient::new(ch)
        .stream_events(with(pb::StreamEventsRequest::default(), &platform))
        .await
        .expect("stream")
        .into_inner();

    let next = mint::mint(&mint::Options::new(&dir("b")), smista_server::config::DEMO).expect("mint");
    std::fs::copy(&next.server_cert, &first.server_cert).expect("rotate cert");
    std::fs::copy(&next.server_key, &first.server_key).expect("rotate key");
    assert!(creds(&next.ca).channel(&target).await.is_err(), "nothing reloads before the signal");
    let hup = Command::new("kill").args(["-HUP", &smista.child.id().to_string()]).status().expect("kill");
    assert!(hup.success());
    let mut reloaded = None;
    for _ in 0..100 {
        if let Ok(c) = creds(&next.ca).channel(&target).await {
            reloaded = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ch = reloaded.expect("the rotated certificate is served after SIGHUP");
    ContactServiceClient::new(ch)
        .offer_contact(with(
            pb::OfferContactRequest {
                contact_id: "after-hup".into(),
                queue: "isee".into(),
                channel: pb::Channel::Voice as i32,
                ..Default::default()
            },
            &platform,
        ))
        .await
        .expect("offer");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("in time")
        .expect("the stream survived the reload")
        .expect("an event");
    assert_eq!(ev.contact_id, "after-hup");
    let _ = std::fs::remove_dir_all(&data);
}
