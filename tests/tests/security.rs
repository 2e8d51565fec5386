//! The trust boundary over real TLS: every RPC refuses callers without the right credential and
//! changes nothing; TLS and mutual TLS; certificate reload under open streams; quotas and caps
//! that keep one client from starving the others; bounds on what clients may send.

mod support;

use std::time::Duration;

use bytes::{Buf, BufMut};
use prost::Message;
use smista_client::connect::Credentials;
use smista_client::mint::{self, Minted};
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use smista_server::config::Config;
use support::{login, temp_dir, voice, Server};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A server on minted credentials: TLS, optional mutual TLS, JWTs, API keys.
struct Secure {
    srv: Server,
    m: Minted,
    signing_key: Vec<u8>,
    opts: mint::Options,
}

fn config(m: &Minted, tweak: impl FnOnce(&mut Config)) -> Config {
    let text = std::fs::read_to_string(&m.config).expect("minted config");
    let mut cfg = Config::parse(&text, "minted").expect("minted config parses");
    tweak(&mut cfg);
    cfg
}

impl Secure {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Secure {
        let dir = temp_dir("creds");
        let mut opts = mint::Options::new(&dir);
        opts.operators = vec!["op-101".into(), "op-102".into(), "op-201".into()];
        let m = mint::mint(&opts, smista_server::config::DEMO).expect("mint");
        let signing_key = std::fs::read(&m.signing_key).expect("key");
        let srv = Server::start_with(config(&m, tweak)).await;
        Secure { srv, m, signing_key, opts }
    }

    fn creds(&self, client_cert: bool) -> Credentials {
        Credentials {
            ca: Some(self.m.ca.clone()),
            cert: client_cert.then(|| self.m.platform_cert.clone()),
            key: client_cert.then(|| self.m.platform_key.clone()),
            token_file: None,
            tls_domain: Some("localhost".into()),
        }
    }

    async fn channel(&self, client_cert: bool) -> Channel {
        self.creds(client_cert).channel(&format!("https://{}", self.srv.grpc)).await.expect("TLS connect")
    }

    fn token(&self, name: &str) -> String {
        let f = match name {
            "admin" => self.m.admin_key.clone(),
            "platform" => self.m.platform_key_token.clone(),
            "supervisor" => self.m.supervisor_token.clone(),
            op => self.m.desk_tokens.iter().find(|(o, _)| o == op).expect("desk token").1.clone(),
        };
        std::fs::read_to_string(f).expect("token")
    }

    fn expired_desk_token(&self, op: &str) -> String {
        let mut o = self.opts.clone();
        o.token_ttl_s = -3600;
        mint::token(&self.signing_key, &o, "desk", &["desk"], Some(op), now_s()).expect("token")
    }

    fn foreign_token(&self, op: &str) -> String {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("key");
        mint::token(pkcs8.as_ref(), &self.opts, "desk", &["desk", "admin", "supervisor", "platform"], Some(op), now_s())
            .expect("token")
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if !token.is_empty() {
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    }
    r
}

/// A codec of raw bytes: calls any method by path with any body.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;
#[derive(Clone, Copy, Debug, Default)]
struct RawCoder;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

async fn raw_call(ch: &Channel, path: &str, body: Vec<u8>, token: &str) -> Result<Vec<u8>, Status> {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).expect("path");
    g.unary(with(body, token), path, Raw).await.map(tonic::Response::into_inner)
}

/// Every `smista.v1` method, from the descriptor set the server reflects.
fn every_method() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(smista_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = Vec::new();
    for f in &set.file {
        for s in &f.service {
            for m in &s.method {
                out.push((format!("/{}.{}/{}", f.package(), s.name(), m.name()), s.name().to_owned()));
            }
        }
    }
    out
}

/// What a refused request must leave alone: queues, operators, budgets, the audit trail.
async fn state(ch: &Channel, supervisor: &str) -> String {
    let mut a = AdminServiceClient::new(ch.clone());
    let s = a.get_snapshot(with(pb::GetSnapshotRequest {}, supervisor)).await.expect("snapshot").into_inner();
    let queues: Vec<_> = s.queues.iter().map(|q| (&q.name, q.open, q.waiting, q.offered, q.in_service)).collect();
    let ops: Vec<_> = s.operators.iter().map(|o| (&o.operator_id, o.status, o.active_contacts)).collect();
    let budgets: Vec<_> =
        s.budgets.iter().map(|b| (&b.budget_id, b.ceiling_cents, b.settled_cents, b.reserved_cents)).collect();
    let audit = a
        .list_budget_audit(with(
            pb::ListBudgetAuditRequest { budget_id: "ccm-2026".into(), ..Default::default() },
            supervisor,
        ))
        .await
        .expect("audit")
        .into_inner()
        .records
        .len();
    format!("{queues:?}\n{ops:?}\n{budgets:?}\naudit={audit}")
}

/// A body every method can decode: field 1 (operator_id, contact_id, queue or budget_id) set.
fn body_naming(id: &str) -> Vec<u8> {
    let mut b = vec![0x0a, id.len() as u8];
    b.extend_from_slice(id.as_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_the_wrong_credentials_and_changes_nothing() {
    let s = Secure::start(|_| {}).await;
    let ch = s.channel(false).await;
    let sup = s.token("supervisor");
    // Something to protect: an operator logged in, a contact waiting.
    let mut ops = OperatorServiceClient::new(ch.clone());
    ops.login(with(login("op-101", "internal", &[("pensions", 7)]), &s.token("op-101"))).await.expect("desk login");
    let mut c = ContactServiceClient::new(ch.clone());
    c.offer_contact(with(voice("call-1", "isee"), &s.token("platform"))).await.expect("offer");
    let before = state(&ch, &sup).await;

    let methods = every_method();
    assert!(methods.len() >= 15, "{methods:?}");
    let wrong_role = |service: &str| match service {
        "ContactService" => s.token("op-102"),
        "OperatorService" => s.token("platform"),
        _ => s.token("op-102"),
    };
    let mut checked = 0;
    for (path, service) in &methods {
        let cases: Vec<(&str, String, &[Code])> = vec![
            ("no credentials", String::new(), &[Code::Unauthenticated]),
            ("garbage token", "not-a-token".into(), &[Code::Unauthenticated]),
            ("expired token", s.expired_desk_token("op-101"), &[Code::Unauthenticated]),
            ("token of an unknown key", s.foreign_token("op-101"), &[Code::Unauthenticated]),
            ("wrong role", wrong_role(service), &[Code::PermissionDenied]),
        ];
        for (what, token, codes) in cases {
            let e = raw_call(&ch, path, body_naming("op-101"), &token).await.expect_err(&format!("{path}: {what}"));
            assert!(codes.contains(&e.code()), "{path} with {what}: {:?} {}", e.code(), e.message());
            checked += 1;
        }
        if service == "OperatorService" {
            // A desk token for op-102 acting on op-101's desk.
            let e = raw_call(&ch, path, body_naming("op-101"), &s.token("op-102")).await.expect_err(path);
            assert_eq!(e.code(), Code::PermissionDenied, "{path}: {}", e.message());
            checked += 1;
        }
    }
    assert_eq!(state(&ch, &sup).await, before, "a refused request changed something");
    assert!(checked >= 5 * 15 + 7, "{checked}");
    // The desk's own token still works: the boundary refuses impostors, not the desk.
    ops.set_state(with(
        pb::SetStateRequest {
            operator_id: "op-101".into(),
            status: pb::OperatorStatus::Paused as i32,
            reason: "break".into(),
        },
        &s.token("op-101"),
    ))
    .await
    .expect("own desk");
    // A supervisor may force any operator out; a desk may not force out another.
    let e = ops
        .logout(with(pb::LogoutRequest { operator_id: "op-101".into(), force: true }, &s.token("op-102")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    ops.logout(with(pb::LogoutRequest { operator_id: "op-101".into(), force: true }, &sup)).await.expect("forced");
    // Health and reflection stay open.
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health is open");
    s.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plaintext_and_strangers_and_maps_client_certificates() {
    let s = Secure::start(|_| {}).await;
    // Plaintext on the TLS port.
    let plain = Channel::from_shared(format!("http://{}", s.srv.grpc)).expect("uri").connect().await;
    if let Ok(ch) = plain {
        let e = ContactServiceClient::new(ch).offer_contact(voice("p", "isee")).await.unwrap_err();
        assert!(matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal), "{e:?}");
    }
    // A CA the server's certificate does not chain to.
    let other = mint::mint(&mint::Options::new(&temp_dir("other-ca")), smista_server::config::DEMO).expect("mint");
    let wrong = Credentials { ca: Some(other.ca.clone()), tls_domain: Some("localhost".into()), ..Default::default() };
    assert!(wrong.channel(&format!("https://{}", s.srv.grpc)).await.is_err(), "a wrong CA must not connect");
    // Mutual TLS: the platform's certificate is its credential, no token needed.
    let mtls = s.channel(true).await;
    let d = ContactServiceClient::new(mtls.clone()).offer_contact(voice("m-1", "isee")).await.expect("mTLS principal");
    assert!(d.into_inner().decision.is_some());
    // The mapped roles are the certificate's, no more: no admin changes.
    let e = AdminServiceClient::new(mtls)
        .set_queue_open(pb::SetQueueOpenRequest { queue: "isee".into(), open: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A certificate the CA signed but no rule maps is no credential.
    let stranger = Credentials {
        ca: Some(s.m.ca.clone()),
        cert: Some(s.m.stranger_cert.clone()),
        key: Some(s.m.stranger_key.clone()),
        token_file: None,
        tls_domain: Some("localhost".into()),
    };
    let ch = stranger.channel(&format!("https://{}", s.srv.grpc)).await.expect("TLS with an unmapped certificate");
    let e = ContactServiceClient::new(ch).offer_contact(voice("s-1", "isee")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A certificate from another CA fails the handshake.
    let foreign = Credentials {
        ca: Some(s.m.ca.clone()),
        cert: Some(other.platform_cert.clone()),
        key: Some(other.platform_key.clone()),
        token_file: None,
        tls_domain: Some("localhost".into()),
    };
    if let Ok(ch) = foreign.channel(&format!("https://{}", s.srv.grpc)).await {
        let e = ContactServiceClient::new(ch).offer_contact(voice("f-1", "isee")).await.unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }
    s.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_reload_takes_effect_without_dropping_open_streams() {
    let s = Secure::start(|c| {
        if let Some(t) = c.tls.as_mut() {
            t.reload_poll_ms = 100;
        }
    })
    .await;
    let ch = s.channel(false).await;
    let platform = s.token("platform");
    let mut events = ContactServiceClient::new(ch.clone())
        .stream_events(with(pb::StreamEventsRequest::default(), &platform))
        .await
        .expect("stream")
        .into_inner();
    // New certificates from a new CA, written over the files the server reads.
    let next = mint::mint(&mint::Options::new(&temp_dir("rotated")), smista_server::config::DEMO).expect("mint");
    for (from, to) in [
        (&next.server_cert, &s.m.server_cert),
        (&next.server_key, &s.m.server_key),
        (&next.ca, &s.m.ca.with_file_name("ca-rotated.pem")),
    ] {
        std::fs::copy(from, to).expect("rotate");
    }
    let new_creds =
        Credentials { ca: Some(next.ca.clone()), tls_domain: Some("localhost".into()), ..Default::default() };
    let target = format!("https://{}", s.srv.grpc);
    let mut reloaded = None;
    for _ in 0..100 {
        if let Ok(c) = new_creds.channel(&target).await {
            reloaded = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_ch = reloaded.expect("the rotated certificate is served within 5 s");
    // The old stream is still open and still delivers.
    ContactServiceClient::new(new_ch)
        .offer_contact(with(voice("after-reload", "isee"), &platform))
        .await
        .expect("offer over the new certificate");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("event in time")
        .expect("the stream opened before the reload is not dropped")
        .expect("an event");
    assert_eq!(ev.contact_id, "after-reload");
    // New connections trusting only the old CA are now refused.
    assert!(s.creds(false).channel(&target).await.is_err(), "the old certificate is no longer served");
    s.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_over_its_quota_does_not_hold_back_another() {
    let s = Secure::start(|c| {
        c.limits.rates.offer = smista_server::config::limits::Rate { per_second: 20, burst: 20 };
        c.limits.offers_per_caller_per_minute = 3;
    })
    .await;
    let ch = s.channel(false).await;
    let mut c = ContactServiceClient::new(ch.clone());
    let key = s.token("platform");
    let mut refused = None;
    for i in 0..200 {
        match c.offer_contact(with(voice(&format!("k-{i}"), "isee"), &key)).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the API-key platform runs over its quota");
    assert_eq!(e.code(), Code::ResourceExhausted);
    let retry: u64 =
        e.metadata().get("retry-after-ms").expect("retry hint").to_str().expect("ascii").parse().expect("ms");
    assert!(retry > 0 && retry <= 1_000, "{retry}");
    // The other platform principal (mutual TLS) is not held back.
    let mut other = ContactServiceClient::new(s.channel(true).await);
    for i in 0..10 {
        other.offer_contact(voice(&format!("m-{i}"), "isee")).await.expect("another principal proceeds");
    }
    // A caller redialling in a loop is capped by its caller_key, whoever offers it.
    let redial = |i: u32| pb::OfferContactRequest { caller_key: "h:5e1f".into(), ..voice(&format!("r-{i}"), "isee") };
    for i in 0..3 {
        other.offer_contact(redial(i)).await.expect("within the caller's quota");
    }
    let e = other.offer_contact(redial(3)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    s.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_from_one_principal_are_capped() {
    let s = Secure::start(|c| {
        c.limits.rates.stream = smista_server::config::limits::Rate { per_second: 100_000, burst: 100_000 };
        c.limits.max_streams_per_principal = 64;
    })
    .await;
    let sup = s.token("supervisor");
    let ch = s.channel(false).await;
    let mut held = Vec::new();
    let mut capped = 0;
    for _ in 0..10_000 {
        match ContactServiceClient::new(ch.clone()).stream_events(with(pb::StreamEventsRequest::default(), &sup)).await
        {
            Ok(st) => held.push(st.into_inner()),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                capped += 1;
            }
        }
    }
    assert_eq!(held.len(), 64, "the cap holds");
    assert_eq!(capped, 10_000 - 64);
    // Another principal still gets a stream; and a closed stream frees its place.
    let platform = s.token("platform");
    ContactServiceClient::new(ch.clone())
        .stream_events(with(pb::StreamEventsRequest::default(), &platform))
        .await
        .expect("another principal");
    held.pop();
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if ContactServiceClient::new(ch.clone())
            .stream_events(with(pb::StreamEventsRequest::default(), &sup))
            .await
            .is_ok()
        {
            freed = true;
            break;
        }
    }
    assert!(freed, "a closed stream gives its place back");
    s.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_invented_logins_from_one_desk_leave_room_for_real_operators() {
    let s = Secure::start(|c| c.engine.max_operators = 100).await;
    let ch = s.channel(false).await;
    let desk = s.token("op-101");
    let mut tasks = Vec::new();
    for w in 0..32 {
        let ch = ch.clone();
        let desk = desk.clone();
        tasks.push(tokio::spawn(async move {
            let mut ops = OperatorServiceClient::new(ch);
            let (mut denied, mut limited, mut ok) = (0u32, 0u32, 0u32);
            for i in 0..50_000 / 32 + 1 {
                let id = format!("bogus-{w}-{i}");
                match ops.login(with(login(&id, "internal", &[("pensions", 5)]), &desk)).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.code() == Code::PermissionDenied => denied += 1,
                    Err(e) if e.code() == Code::ResourceExhausted => limited += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            (denied, limited, ok)
        }));
    }
    let (mut denied, mut limited) = (0, 0);
    for t in tasks {
        let (d, l, ok) = t.await.expect("task");
        assert_eq!(ok, 0, "a desk credential never logs in another operator");
        denied += d;
        limited += l;
    }
    assert!(denied + limited >= 50_000);
    assert!(limited > 40_000, "the login quota bites: {limited} limited, {denied} denied");
    // The real operators of the floor still log in (each in the group the roster gives them).
    let mut ops = OperatorServiceClient::new(ch.clone());
    for op in ["op-102", "op-201"] {
        let l = login(op, mint::dev_group(op), &[("pensions", 5)]);
        ops.login(with(l, &s.token(op))).await.expect("real operator logs in");
    }
    s.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_watch_ends_aborted_and_bad_input_gets_precise_statuses() {
    let srv = Server::start().await;
    let mut ops = srv.operators().await;
    ops.login(login("op-1", "internal", &[("pensions", 7)])).await.expect("login");
    let mut first =
        ops.watch_offers(pb::WatchOffersRequest { operator_id: "op-1".into() }).await.expect("watch").into_inner();
    let _second = ops.watch_offers(pb::WatchOffersRequest { operator_id: "op-1".into() }).await.expect("rewatch");
    let end = tokio::time::timeout(Duration::from_secs(5), first.message()).await.expect("first stream ends");
    assert_eq!(end.expect_err("ends with a status").code(), Code::Aborted);
    // A repeated login of the same session asking for another group is refused, not half applied.
    let e = ops.login(login("op-1", "supplier-a", &[("pensions", 7)])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let mut a = srv.admin().await;
    let e = a
        .update_queue(pb::UpdateQueueRequest {
            queue: "pensions".into(),
            offer_timeout_ms: Some(u64::MAX),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = a
        .update_budget(pb::UpdateBudgetRequest {
            budget_id: "ccm-2026".into(),
            tariffs: vec![pb::Tariff {
                channel: pb::Channel::Voice as i32,
                fee_per_contact_cents: i64::MAX,
                rate_per_second_centicents: 1,
                billing_increment_seconds: 1,
            }],
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = a
        .update_budget(pb::UpdateBudgetRequest {
            budget_id: "ccm-2026".into(),
            ceiling_cents: Some(i64::MAX),
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A 4 MB actor is refused; a note with a newline is kept on one line.
    let e = a
        .update_budget(pb::UpdateBudgetRequest {
            budget_id: "ccm-2026".into(),
            ceiling_cents: Some(1),
            actor: "x".repeat(3 << 20),
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for i in 0..250 {
        a.update_budget(pb::UpdateBudgetRequest {
            budget_id: "ccm-2026".into(),
            ceiling_cents: Some(1_000_000 + i),
            note: "M. Rossi\nINFO forged".into(),
            reason: format!("amendment {i}"),
            ..Default::default()
        })
        .await
        .expect("amend");
    }
    // The audit trail comes in pages.
    let mut token = String::new();
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let p = a
            .list_budget_audit(pb::ListBudgetAuditRequest {
                budget_id: "ccm-2026".into(),
                page_size: 100,
                page_token: token,
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        seen += p.records.len();
        assert!(p.records.iter().all(|r| r.note == "M. Rossi INFO forged" && r.actor == "anonymous"));
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!((seen, pages), (250, 3));
    let e = a
        .list_budget_audit(pb::ListBudgetAuditRequest {
            budget_id: "ccm-2026".into(),
            page_size: 0,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // An error quotes at most 128 bytes of what the client sent.
    let e = srv.contacts().await.offer_contact(voice("c", &"q".repeat(1 << 20))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().len() < 300, "{} bytes", e.message().len());
    let e = srv
        .contacts()
        .await
        .stream_events(pb::StreamEventsRequest { queues: vec!["nope".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_is_refused_beyond_loopback_and_state_is_owner_only() {
    use smista_server::node::{serve, Listeners, ServeError};
    let mut cfg = Config::load(None).expect("demo");
    cfg.server.data_dir = temp_dir("insecure");
    let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let lo = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let l = Listeners::bind(any, lo).await.expect("bind");
    let r = serve(&cfg, l, async {}, Duration::from_millis(10)).await;
    assert!(matches!(r, Err(ServeError::Insecure(_))), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("--insecure") && msg.contains("[tls]"), "{msg}");
    // With --insecure it serves (and says so).
    cfg.server.insecure = true;
    let l = Listeners::bind(any, lo).await.expect("bind");
    serve(&cfg, l, async {}, Duration::from_millis(10)).await.expect("serves when told to");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&cfg.server.data_dir), 0o700);
        let ledger = cfg.server.data_dir.join(smista_server::config::LEDGER_FILE);
        assert_eq!(mode(&ledger), 0o600);
    }
}

/// `[server] health_addr`: probes that cannot speak TLS (Kubernetes' gRPC probes) get the health
/// protocol in plaintext, without a credential, and nothing else; through the drain they read
/// NOT_SERVING before the listener goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_listener_answers_probes_in_plaintext_and_nothing_else() {
    use smista_server::node::{serve, Listeners};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let dir = temp_dir("health-creds");
    let m = mint::mint(&mint::Options::new(&dir), smista_server::config::DEMO).expect("mint");
    let mut cfg = config(&m, |_| {});
    cfg.server.data_dir = temp_dir("health");
    let lo = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut l = Listeners::bind(lo, lo).await.expect("bind");
    l.bind_health(lo, "test".into()).await.expect("bind health");
    let health_addr = l.health.as_ref().expect("bound").local_addr().expect("addr");
    let (grpc, _) = l.addrs().expect("addrs");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(
            &cfg,
            l,
            async {
                let _ = stop_rx.await;
            },
            Duration::from_millis(1500),
        )
        .await
    });
    let plain = |addr: std::net::SocketAddr| async move {
        for _ in 0..100 {
            if let Ok(ch) = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no plaintext connection to {addr}");
    };
    let ch = plain(health_addr).await;
    let mut health = HealthClient::new(ch.clone());
    for service in ["", "smista.v1.ContactService", "smista.v1.OperatorService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.expect("plaintext, no token");
        assert_eq!(r.into_inner().status, ServingStatus::Serving as i32, "{service}");
    }
    let e = health.check(HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Nothing but health there: no routing call, not even with a valid token.
    let admin = std::fs::read_to_string(&m.admin_key).expect("admin key");
    let e = ContactServiceClient::new(ch.clone()).offer_contact(with(voice("h-1", "isee"), &admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    let e = AdminServiceClient::new(ch)
        .set_queue_open(with(pb::SetQueueOpenRequest { queue: "isee".into(), open: false }, &admin))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    // The main port still wants TLS: plaintext gets no answer there (how the refusal shows,
    // a failed connect or a closed connection, depends on timing).
    if let Ok(ch) = Channel::from_shared(format!("http://{grpc}")).expect("uri").connect().await {
        let r = HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await;
        assert!(r.is_err(), "plaintext answered on the TLS port: {r:?}");
    }
    // A probe watching through the shutdown sees NOT_SERVING while the server drains.
    let mut watch = health
        .watch(HealthCheckRequest { service: "smista.v1.ContactService".into() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("first").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let _ = stop_tx.send(());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("in time").expect("message");
    assert_eq!(next.expect("status").status, ServingStatus::NotServing as i32);
    let r = health.check(HealthCheckRequest { service: String::new() }).await.expect("still answering in the drain");
    assert_eq!(r.into_inner().status, ServingStatus::NotServing as i32);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops").expect("task").expect("serve");
    // Then the listener is gone.
    assert!(tokio::net::TcpStream::connect(health_addr).await.is_err(), "the health port closes after the drain");
}
