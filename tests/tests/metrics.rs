//! `/metrics` reflects what happened, with bounded labels only (its own process: one recorder).

mod support;

use smista_proto::v1 as pb;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_offers_diversions_and_operator_states() {
    let srv = Server::start().await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    o.login(login("op-1", "internal", &[("pensions", 7)])).await.expect("login");
    let r = c.offer_contact(voice("m-1", "pensions")).await.expect("offer").into_inner();
    assert_eq!(assigned(&r).as_deref(), Some("op-1"));
    c.offer_contact(voice("m-2", "pensions")).await.expect("offer");
    c.offer_contact(voice("m-3", "isee")).await.expect("offer"); // nobody serves ISEE: diverted
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-1".into(), contact_id: "m-1".into() })
        .await
        .expect("accept");
    c.cancel_contact(pb::CancelContactRequest { contact_id: "m-2".into() }).await.expect("cancel");
    // Gauges refresh about once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let m = srv.scrape().await;
    let has = |needle: &str| m.lines().any(|l| l.starts_with(needle));
    assert!(has(r#"smista_offers_total{queue="pensions",channel="voice",decision="assigned"} 1"#), "{m}");
    assert!(has(r#"smista_offers_total{queue="pensions",channel="voice",decision="queued"} 1"#), "{m}");
    assert!(has(r#"smista_offers_total{queue="isee",channel="voice",decision="diverted"} 1"#), "{m}");
    // Nobody serves ISEE nor its overflow line: diverted by the last queue of the chain.
    assert!(has(r#"smista_diversions_total{queue="general",reason="no_operators"} 1"#), "{m}");
    assert!(has(r#"smista_contacts_finished_total{queue="pensions",outcome="abandoned"} 1"#), "{m}");
    assert!(has(r#"smista_queue_in_service{queue="pensions"} 1"#), "{m}");
    assert!(has(r#"smista_operators{state="busy"} 1"#), "{m}");
    assert!(has(r#"smista_operators{state="idle"} 0"#), "{m}");
    assert!(has(r#"smista_wait_seconds_bucket{queue="pensions",le="1"} 1"#), "{m}");
    assert!(has(r#"smista_rpc_duration_seconds_bucket{method="OfferContact",le="0.00005"}"#), "{m}");
    assert!(m.contains("# HELP smista_offers_total"), "{m}");
    // No contact or operator ids in labels.
    assert!(!m.contains("m-1") && !m.contains("op-1"), "ids leaked into metrics");
    srv.stop().await;
}
