//! Fuzzing the trust boundary's other half: arbitrary protobuf bytes decoded as every request
//! type of `smista.v1` and driven through the real service handlers (request conversion,
//! validation, the engine, event publishing), and mutated configuration files through the
//! parser. Nothing may panic; the engine's invariants hold at the end.
//!
//! Inputs are raw random bytes, byte-level mutations of valid encodings (the seeds in
//! `tests/fuzz-seeds/`, one hex-encoded request per line, `Method hex`), and well-formed
//! messages whose fields are hostile (empty, huge, control characters, u64::MAX, unknown enum
//! numbers), so most cases reach past the decoder into the handlers' own validation. CI runs 10,000 cases; the one-million-case run is
//! `SMISTA_FUZZ_CASES=1000000 cargo test --release -p smista-server --test fuzz -- --nocapture`.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use prost::Message;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_server::AdminService;
use smista_proto::v1::appointment_service_server::AppointmentService;
use smista_proto::v1::contact_service_server::ContactService;
use smista_proto::v1::operator_service_server::OperatorService;
use smista_server::app::Shared;
use smista_server::config::{Config, LedgerKind};
use smista_server::node::build::build_shared;
use smista_server::service::admin::AdminSvc;
use smista_server::service::appointment::AppointmentSvc;
use smista_server::service::contact::ContactSvc;
use smista_server::service::operator::OperatorSvc;
use tonic::Request;

/// Every method of `smista.v1` (`every_method_is_fuzzed` checks the list against the descriptor
/// set).
const METHODS: [&str; 39] = [
    "OfferContact",
    "CancelContact",
    "StreamEvents",
    "Login",
    "Logout",
    "SetState",
    "WatchOffers",
    "AcceptOffer",
    "DeclineOffer",
    "CompleteContact",
    "GetSnapshot",
    "ListBudgetAudit",
    "SetQueueOpen",
    "UpdateQueue",
    "UpdateBudget",
    "RequestCallback",
    "CallbackUnanswered",
    "ScheduleCallback",
    "ListQueueAudit",
    "UpdateOperator",
    "GetIntervalReport",
    "GetBudgetBurn",
    "PublishAvailability",
    "WithdrawAvailability",
    "ListSlots",
    "BookAppointment",
    "MoveAppointment",
    "CancelAppointment",
    "ListAppointments",
    "PutRosterOperator",
    "RetireRosterOperator",
    "ListRoster",
    "ListRosterAudit",
    "GetOperatorReport",
    "ListOperatorReportReads",
    "GetSpendReport",
    "TransferContact",
    "ConsultContact",
    "EndConsultation",
];

/// The recorded seeds, and for every method a well-formed request of plausible values (so the
/// methods without a recorded seed are mutated from a valid encoding too).
fn seeds() -> Vec<(usize, Vec<u8>)> {
    let text = include_str!("fuzz-seeds/requests.txt");
    let mut seeds: Vec<(usize, Vec<u8>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (m, hex) = l.split_once(' ').unwrap_or((l, ""));
            let i = METHODS.iter().position(|x| *x == m)?;
            Some((i, hex::decode(hex.trim()).ok()?))
        })
        .collect();
    let strs: Vec<String> =
        ["op-101", "pensions", "internal", "pensions", "isee", "s-1"].iter().map(|s| (*s).to_owned()).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let nums = [1, 5, now, now + 86_400_000, 2, 3, 7];
    for m in 0..METHODS.len() {
        seeds.push((m, structured(m, &strs, &nums)));
    }
    seeds
}

/// Decodes `bytes` as method `m`'s request and calls the handler. Decoding failures are fine
/// (the transport would answer INTERNAL/INVALID_ARGUMENT before a handler); every handler error
/// is a status, never a panic.
async fn drive(s: &Arc<Shared>, m: usize, bytes: &[u8]) -> u32 {
    let c = ContactSvc(s.clone());
    let o = OperatorSvc(s.clone());
    let a = AdminSvc(s.clone());
    let p = AppointmentSvc(s.clone());
    macro_rules! call {
        ($svc:expr, $method:ident, $ty:ty) => {{
            match <$ty>::decode(bytes) {
                Ok(req) => {
                    let _ = $svc.$method(Request::new(req)).await;
                    1
                }
                Err(_) => 0,
            }
        }};
    }
    match m {
        0 => call!(c, offer_contact, pb::OfferContactRequest),
        1 => call!(c, cancel_contact, pb::CancelContactRequest),
        2 => call!(c, stream_events, pb::StreamEventsRequest),
        3 => call!(o, login, pb::LoginRequest),
        4 => call!(o, logout, pb::LogoutRequest),
        5 => call!(o, set_state, pb::SetStateRequest),
        6 => call!(o, watch_offers, pb::WatchOffersRequest),
        7 => call!(o, accept_offer, pb::AcceptOfferRequest),
        8 => call!(o, decline_offer, pb::DeclineOfferRequest),
        9 => call!(o, complete_contact, pb::CompleteContactRequest),
        10 => call!(a, get_snapshot, pb::GetSnapshotRequest),
        11 => call!(a, list_budget_audit, pb::ListBudgetAuditRequest),
        12 => call!(a, set_queue_open, pb::SetQueueOpenRequest),
        13 => call!(a, update_queue, pb::UpdateQueueRequest),
        14 => call!(a, update_budget, pb::UpdateBudgetRequest),
        15 => call!(c, request_callback, pb::RequestCallbackRequest),
        16 => call!(c, callback_unanswered, pb::CallbackUnansweredRequest),
        17 => call!(c, schedule_callback, pb::ScheduleCallbackRequest),
        18 => call!(a, list_queue_audit, pb::ListQueueAuditRequest),
        19 => call!(a, update_operator, pb::UpdateOperatorRequest),
        20 => call!(a, get_interval_report, pb::GetIntervalReportRequest),
        21 => call!(a, get_budget_burn, pb::GetBudgetBurnRequest),
        22 => call!(p, publish_availability, pb::PublishAvailabilityRequest),
        23 => call!(p, withdraw_availability, pb::WithdrawAvailabilityRequest),
        24 => call!(p, list_slots, pb::ListSlotsRequest),
        25 => call!(p, book_appointment, pb::BookAppointmentRequest),
        26 => call!(p, move_appointment, pb::MoveAppointmentRequest),
        27 => call!(p, cancel_appointment, pb::CancelAppointmentRequest),
        28 => call!(p, list_appointments, pb::ListAppointmentsRequest),
        29 => call!(a, put_roster_operator, pb::PutRosterOperatorRequest),
        30 => call!(a, retire_roster_operator, pb::RetireRosterOperatorRequest),
        31 => call!(a, list_roster, pb::ListRosterRequest),
        32 => call!(a, list_roster_audit, pb::ListRosterAuditRequest),
        33 => call!(a, get_operator_report, pb::GetOperatorReportRequest),
        34 => call!(a, list_operator_report_reads, pb::ListOperatorReportReadsRequest),
        35 => call!(a, get_spend_report, pb::GetSpendReportRequest),
        36 => call!(o, transfer_contact, pb::TransferContactRequest),
        37 => call!(o, consult_contact, pb::ConsultContactRequest),
        _ => call!(o, end_consultation, pb::EndConsultationRequest),
    }
}

/// A well-formed request of method `m` whose fields come from `s` (strings) and `n` (numbers):
/// reaches the handler's own validation with hostile values.
fn structured(m: usize, s: &[String], n: &[u64]) -> Vec<u8> {
    let st = |i: usize| s[i % s.len()].clone();
    let u = |i: usize| n[i % n.len()];
    let i32_ = |i: usize| u(i) as i32;
    // Repeated fields from one entry to well past their maxima (`service/bounds.rs`): 1, 2, 65,
    // 300 or 5,000 entries.
    let many = [1usize, 2, 65, 300, 5_000][(u(5) % 5) as usize];
    let skills: Vec<pb::Skill> = (0..many)
        .map(|i| pb::Skill { name: if i % 2 == 0 { st(3) } else { st(4) }, level: u(3 + i % 2) as u32 })
        .collect();
    let channels: Vec<pb::ChannelCapacity> = (0..many.min(300))
        .map(|i| pb::ChannelCapacity { channel: i32_(5 + i % 2), max_concurrent: u(6) as u32 })
        .collect();
    match m {
        0 => pb::OfferContactRequest {
            contact_id: st(0),
            queue: st(1),
            channel: i32_(0),
            priority: u(1) as u32,
            language: st(2),
            segment: i32_(2),
            caller_key: st(3),
            max_patience_ms: u(3),
            arrived_unix_ms: u(4),
        }
        .encode_to_vec(),
        1 => pb::CancelContactRequest { contact_id: st(0) }.encode_to_vec(),
        2 => pb::StreamEventsRequest {
            after_sequence: u(0),
            queues: (0..many).map(|i| st(1 + i % 2)).collect(),
            after_epoch: u(1),
            max_delay_ms: u(2) as u32,
        }
        .encode_to_vec(),
        3 => pb::LoginRequest {
            operator_id: st(0),
            group: st(1),
            skills: skills.clone(),
            channels: channels.clone(),
            session_id: st(2),
        }
        .encode_to_vec(),
        4 => pb::LogoutRequest { operator_id: st(0), force: u(0) % 2 == 0 }.encode_to_vec(),
        5 => pb::SetStateRequest { operator_id: st(0), status: i32_(0), reason: st(1) }.encode_to_vec(),
        6 => pb::WatchOffersRequest { operator_id: st(0) }.encode_to_vec(),
        7 => pb::AcceptOfferRequest { operator_id: st(0), contact_id: st(1) }.encode_to_vec(),
        8 => pb::DeclineOfferRequest { operator_id: st(0), contact_id: st(1) }.encode_to_vec(),
        9 => pb::CompleteContactRequest { operator_id: st(0), contact_id: st(1), wrap_up_ms: u(0), ended_unix_ms: 0 }
            .encode_to_vec(),
        10 => pb::GetSnapshotRequest {}.encode_to_vec(),
        11 => {
            pb::ListBudgetAuditRequest { budget_id: st(0), page_size: u(0) as u32, page_token: st(1) }.encode_to_vec()
        }
        12 => pb::SetQueueOpenRequest { queue: st(0), open: u(0) % 2 == 0 }.encode_to_vec(),
        13 => pb::UpdateQueueRequest {
            queue: st(0),
            max_length: Some(u(0) as u32),
            max_wait_ms: Some(u(1)),
            wrap_up_ms: Some(u(2)),
            offer_timeout_ms: Some(u(3)),
            fallback: i32_(4),
            priority: Some(u(4) as u32),
            strategy: i32_(5),
            skills: Some(pb::SkillRequirements { skills: vec![pb::Skill { name: st(1), level: u(5) as u32 }] }),
            hours: Some(pb::QueueHours {
                weekly: (0..many).map(|_| st(2)).collect(),
                national_holidays: true,
                closed: vec![st(3)],
                open: vec![],
            }),
            clear_hours: false,
            overflow: Some(pb::OverflowChain { queues: (0..many).map(|_| st(3)).collect() }),
            expansion: Some(pb::ExpansionSteps {
                steps: vec![pb::ExpansionStep { after_ms: u(6), level_drop: u(7) as u32 }],
            }),
        }
        .encode_to_vec(),
        15 => pb::RequestCallbackRequest { contact_id: st(0) }.encode_to_vec(),
        16 => pb::CallbackUnansweredRequest { contact_id: st(0) }.encode_to_vec(),
        17 => {
            pb::ScheduleCallbackRequest { contact_id: st(0), queue: st(1), segment: i32_(0), not_before_unix_ms: u(1) }
                .encode_to_vec()
        }
        18 => pb::ListQueueAuditRequest { queue: st(0) }.encode_to_vec(),
        19 => pb::UpdateOperatorRequest {
            operator_id: st(0),
            group: (u(0) % 2 == 0).then(|| st(1)),
            skills: Some(pb::SkillSet { skills: skills.clone() }),
            channels: Some(pb::ChannelSet { channels: channels.clone() }),
        }
        .encode_to_vec(),
        20 => pb::GetIntervalReportRequest {
            from_unix_ms: u(0),
            to_unix_ms: u(1),
            interval_minutes: u(2) as u32,
            page_size: u(3) as u32,
            page_token: st(0),
        }
        .encode_to_vec(),
        21 => pb::GetBudgetBurnRequest { budget_id: st(0) }.encode_to_vec(),
        22 => pb::PublishAvailabilityRequest {
            operator_id: st(0),
            queue: st(1),
            start_unix_ms: u(0),
            end_unix_ms: u(1),
            display_name: st(2),
        }
        .encode_to_vec(),
        23 => pb::WithdrawAvailabilityRequest { operator_id: st(0), start_unix_ms: u(0) }.encode_to_vec(),
        24 => pb::ListSlotsRequest { queue: st(0), operator_id: st(1), from_unix_ms: u(0), to_unix_ms: u(1) }
            .encode_to_vec(),
        25 => pb::BookAppointmentRequest {
            appointment_id: st(0),
            queue: st(1),
            start_unix_ms: u(0),
            operator_id: st(2),
            channel: i32_(1),
            segment: i32_(2),
            recording: u(3) % 2 == 0,
            serving_contact_id: st(3),
            desk_operator_id: st(4),
        }
        .encode_to_vec(),
        26 => pb::MoveAppointmentRequest {
            appointment_id: st(0),
            start_unix_ms: u(0),
            operator_id: st(1),
            serving_contact_id: st(2),
            desk_operator_id: st(3),
        }
        .encode_to_vec(),
        27 => {
            pb::CancelAppointmentRequest { appointment_id: st(0), serving_contact_id: st(1), desk_operator_id: st(2) }
                .encode_to_vec()
        }
        28 => pb::ListAppointmentsRequest { queue: st(0), from_unix_ms: u(0), to_unix_ms: u(1) }.encode_to_vec(),
        29 => pb::PutRosterOperatorRequest {
            operator: Some(pb::RosterOperator {
                operator_id: st(0),
                display_name: st(3),
                group: st(2),
                skills: skills.clone(),
                channels: channels.clone(),
                retired: u(0) % 2 == 0,
                version: u(1),
                updated_unix_ms: u(2),
                source: st(1),
            }),
            expected_version: (u(3) % 2 == 0).then(|| u(4)),
        }
        .encode_to_vec(),
        30 => pb::RetireRosterOperatorRequest { operator_id: st(0) }.encode_to_vec(),
        31 => pb::ListRosterRequest { page_size: u(0) as u32, page_token: st(1), include_retired: u(1) % 2 == 0 }
            .encode_to_vec(),
        32 => {
            pb::ListRosterAuditRequest { operator_id: st(0), page_size: u(0) as u32, page_token: st(1) }.encode_to_vec()
        }
        33 => pb::GetOperatorReportRequest {
            from_unix_ms: u(0),
            to_unix_ms: u(1),
            interval_minutes: u(2) as u32,
            page_size: u(3) as u32,
            page_token: st(0),
            per_operator: u(4) % 2 == 0,
            operators: (0..many.min(300)).map(&st).collect(),
            purpose: st(2),
        }
        .encode_to_vec(),
        34 => pb::ListOperatorReportReadsRequest { page_size: u(0) as u32, page_token: st(1) }.encode_to_vec(),
        35 => pb::GetSpendReportRequest { budget_id: st(0), period: st(1) }.encode_to_vec(),
        36 => pb::TransferContactRequest {
            operator_id: st(0),
            contact_id: st(1),
            target: Some(match u(0) % 3 {
                0 => pb::transfer_contact_request::Target::Queue(st(2)),
                1 => pb::transfer_contact_request::Target::Operator(pb::TransferToOperator {
                    operator_id: st(3),
                    queue: st(2),
                    timeout_ms: u(1),
                }),
                _ => pb::transfer_contact_request::Target::External(pb::TransferOut { destination: st(3) }),
            }),
            ended_unix_ms: u(2),
            wrap_up_ms: u(3),
        }
        .encode_to_vec(),
        37 => pb::ConsultContactRequest {
            operator_id: st(0),
            contact_id: st(1),
            consultation_id: st(4),
            target: Some(match u(0) % 2 {
                0 => pb::consult_contact_request::Target::Queue(st(2)),
                _ => pb::consult_contact_request::Target::Operator(pb::TransferToOperator {
                    operator_id: st(3),
                    queue: st(2),
                    timeout_ms: u(1),
                }),
            }),
        }
        .encode_to_vec(),
        38 => pb::EndConsultationRequest {
            operator_id: st(0),
            contact_id: st(1),
            consultation_id: st(4),
            action: i32_(0) % 5,
            ended_unix_ms: u(2),
            wrap_up_ms: u(3),
        }
        .encode_to_vec(),
        _ => pb::UpdateBudgetRequest {
            budget_id: st(0),
            ceiling_cents: Some(u(0) as i64),
            tariffs: (0..many.min(300))
                .map(|i| pb::Tariff {
                    channel: i32_(1 + i % 2),
                    fee_per_contact_cents: u(2) as i64,
                    rate_per_second_centicents: u(3) as i64,
                    billing_increment_seconds: u(4) as u32,
                })
                .collect(),
            actor: st(1),
            reason: st(2),
            note: st(3),
        }
        .encode_to_vec(),
    }
}

fn strings() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "pensions",
            "naspi",
            "isee",
            "general",
            "internal",
            "supplier-a",
            "op-101",
            "op-201",
            "call-1",
            "ccm-2026",
            "desk-1",
            ""
        ])
        .prop_map(str::to_owned),
        "[a-z0-9-]{1,16}",
        ".{0,64}",
        (1usize..5000).prop_map(|n| "x".repeat(n)),
        "[\\x00-\\x1f]{1,8}",
    ]
}

fn numbers() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..20, any::<u64>(), Just(u64::MAX), Just(i64::MAX as u64), Just(86_400_001), 0u64..100_000]
}

fn cases(default: u32) -> u32 {
    std::env::var("SMISTA_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A mutation of `seed`: flip, insert, delete or overwrite a few bytes.
fn mutate(seed: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(kind, at, byte) in ops {
        let at = if v.is_empty() { 0 } else { at % (v.len() + 1) };
        match kind % 4 {
            0 if at < v.len() => v[at] ^= byte | 1,
            1 => v.insert(at, byte),
            2 if at < v.len() => {
                v.remove(at);
            }
            _ if at < v.len() => v[at] = byte,
            _ => v.push(byte),
        }
    }
    v
}

#[test]
fn arbitrary_requests_through_every_handler_never_panic() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut cfg = Config::load(None).expect("demo");
    cfg.ledger.kind = LedgerKind::None;
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let shared = rt.block_on(build_shared(&cfg, stop_rx)).expect("shared");
    let seeds = seeds();
    assert!(seeds.len() >= METHODS.len(), "a seed per method at least");
    let n = cases(10_000);
    let mut runner = TestRunner::new(PtConfig { cases: n, failure_persistence: None, ..PtConfig::default() });
    let decoded = std::cell::Cell::new(0u64);
    let strategy = (
        0..METHODS.len(),
        0..4u8,
        prop::collection::vec(any::<u8>(), 0..256),
        any::<prop::sample::Index>(),
        prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
        prop::collection::vec(strings(), 6),
        prop::collection::vec(numbers(), 7),
    );
    let r = runner.run(&strategy, |(m, how, bytes, pick, ops, strs, nums)| {
        let (m, input) = match how {
            // Raw bytes: mostly refused by the decoder, which must not panic either.
            0 => (m, bytes),
            // A valid seed, mutated at the byte level.
            1 => {
                let (sm, seed) = &seeds[pick.index(seeds.len())];
                (*sm, mutate(seed, &ops))
            }
            // Well-formed messages with hostile field values.
            _ => (m, structured(m, &strs, &nums)),
        };
        let got = rt.block_on(drive(&shared, m, &input));
        decoded.set(decoded.get() + u64::from(got));
        Ok::<(), TestCaseError>(())
    });
    r.expect("no case may fail or panic");
    let now = shared.clock.now();
    let bad = shared.engine.audit(now);
    assert!(bad.is_empty(), "engine invariants after fuzzing: {bad:?}");
    println!("fuzz: {n} cases through the handlers, {} decoded into a request, 0 panics", decoded.get());
    assert!(decoded.get() > u64::from(n) / 4, "most cases must reach a handler: {}", decoded.get());
}

#[test]
fn mutated_configuration_files_parse_or_fail_with_a_message() {
    let demo = smista_server::config::DEMO;
    let n = cases(10_000) / 4;
    let mut runner = TestRunner::new(PtConfig { cases: n, failure_persistence: None, ..PtConfig::default() });
    let values = ["0", "-1", "18446744073709551615", "9223372036854775807", "\"\"", "1e308", "[]", "{}", "nan"];
    let strategy = prop::collection::vec((any::<prop::sample::Index>(), 0..4u8, any::<prop::sample::Index>()), 1..5);
    runner
        .run(&strategy, |edits| {
            let mut lines: Vec<String> = demo.lines().map(str::to_owned).collect();
            for (at, kind, v) in edits {
                let i = at.index(lines.len());
                match kind {
                    0 => {
                        lines.remove(i);
                    }
                    1 => lines.insert(i, lines[i].clone()),
                    _ => {
                        if let Some((k, _)) = lines[i].split_once('=') {
                            lines[i] = format!("{k}= {}", values[v.index(values.len())]);
                        }
                    }
                }
            }
            let text = lines.join("\n");
            if let Err(e) = Config::parse(&text, "fuzzed") {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .expect("the parser never panics");
}

#[test]
fn every_method_is_fuzzed() {
    let set =
        <prost_types::FileDescriptorSet as Message>::decode(smista_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut all: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
        .collect();
    all.sort();
    let mut ours: Vec<String> = METHODS.iter().map(|m| (*m).to_owned()).collect();
    ours.sort();
    assert_eq!(ours, all, "METHODS lists every method of smista.v1, once");
}
