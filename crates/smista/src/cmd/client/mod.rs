//! `smista client`: one RPC per invocation, printed as readable lines (or JSON with `--json`, see
//! `show.rs`). For the quick tour, scripts and smoke tests; the telephony platform and desktops
//! use the gRPC API directly.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::appointment_service_client::AppointmentServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;

use smista_client::follow::{active_channel, serving_status, target_list};

mod show;

/// `smista client`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// The server, or the nodes of an active/standby group separated by commas (the call goes to
    /// the one whose gRPC health says it routes: the active).
    #[arg(long, env = "SMISTA_TARGET", default_value = "http://127.0.0.1:50051", global = true)]
    target: String,
    /// Print each answer as one JSON object per line, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    creds: smista_client::connect::Credentials,
    #[command(subcommand)]
    call: Call,
}

#[derive(Debug, Subcommand)]
enum Call {
    /// Offer a contact: `offer CONTACT QUEUE [--channel chat] [--priority 10]`.
    Offer {
        contact: String,
        queue: String,
        #[arg(long, default_value = "voice")]
        channel: String,
        #[arg(long, default_value_t = 0)]
        priority: u32,
    },
    /// Cancel a contact (the caller hung up).
    Cancel { contact: String },
    /// A waiting caller chose to be called back: the contact keeps its place.
    Callback { contact: String },
    /// The dial of an accepted callback went unanswered: retry later or end UNREACHABLE.
    Unanswered { contact: String },
    /// Log an operator in: `login OPERATOR GROUP --skill pensions=7 [--chats 3]`.
    Login {
        operator: String,
        group: String,
        #[arg(long = "skill", value_parser = parse_skill)]
        skills: Vec<(String, u32)>,
        #[arg(long, default_value_t = 0)]
        chats: u32,
    },
    /// Log an operator out.
    Logout {
        operator: String,
        #[arg(long)]
        force: bool,
    },
    /// Make an operator available.
    Available { operator: String },
    /// Pause an operator.
    Pause {
        operator: String,
        #[arg(long, default_value = "break")]
        reason: String,
    },
    /// Accept an offer.
    Accept { operator: String, contact: String },
    /// Decline an offer.
    Decline { operator: String, contact: String },
    /// Complete a contact in service.
    Complete {
        operator: String,
        contact: String,
        #[arg(long, default_value_t = 0)]
        wrap_up_ms: u64,
    },
    /// Move a contact in service on (a blind transfer): `transfer OPERATOR CONTACT --queue Q`,
    /// `--queue Q --to-operator OP [--timeout-ms 60000]` (that operator first), or
    /// `--external DESTINATION` (out of the centre; the platform dials it).
    Transfer {
        operator: String,
        contact: String,
        /// The queue its next leg waits in.
        #[arg(long)]
        queue: Option<String>,
        /// An operator of `--queue` who gets it first.
        #[arg(long, requires = "queue")]
        to_operator: Option<String>,
        /// How long only `--to-operator` may take it.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        /// Out of the centre, to this destination.
        #[arg(long, conflicts_with_all = ["queue", "to_operator"])]
        external: Option<String>,
        #[arg(long, default_value_t = 0)]
        wrap_up_ms: u64,
    },
    /// Ask a colleague first (a consultation): `consult OPERATOR CONTACT CONSULTATION --queue Q
    /// [--to-operator OP --timeout-ms 60000]`; the operator keeps the caller meanwhile.
    Consult {
        operator: String,
        contact: String,
        /// The consultation's own id (unused, as a contact id).
        consultation: String,
        /// The queue whose operators are asked.
        #[arg(long)]
        queue: String,
        /// An operator of `--queue` asked first.
        #[arg(long)]
        to_operator: Option<String>,
        /// How long only `--to-operator` may take it.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// End a consultation: `end-consultation OPERATOR CONTACT CONSULTATION transfer|conference|cancel`
    /// (transfer: the colleague carries on with the caller; conference: the three talk).
    EndConsultation {
        operator: String,
        contact: String,
        consultation: String,
        /// transfer, conference or cancel.
        action: String,
        #[arg(long, default_value_t = 0)]
        wrap_up_ms: u64,
    },
    /// Book an appointment: `book ID QUEUE START_UNIX_MS [--operator OP] [--channel video]`; a
    /// desk books for the caller it serves with `--for-contact CONTACT --desk OPERATOR`.
    Book {
        appointment: String,
        queue: String,
        start_unix_ms: u64,
        #[arg(long, default_value = "")]
        operator: String,
        #[arg(long, default_value = "video")]
        channel: String,
        /// The contact in service it is booked from.
        #[arg(long = "for-contact", default_value = "")]
        for_contact: String,
        /// The operator serving `--for-contact`.
        #[arg(long, default_value = "")]
        desk: String,
    },
    /// Move an appointment: `move-appointment ID START_UNIX_MS [--operator OP]`.
    MoveAppointment {
        appointment: String,
        start_unix_ms: u64,
        #[arg(long, default_value = "")]
        operator: String,
        #[arg(long = "for-contact", default_value = "")]
        for_contact: String,
        #[arg(long, default_value = "")]
        desk: String,
    },
    /// Cancel an appointment: `cancel-appointment ID`.
    CancelAppointment {
        appointment: String,
        #[arg(long = "for-contact", default_value = "")]
        for_contact: String,
        #[arg(long, default_value = "")]
        desk: String,
    },
    /// Print queues and operators.
    Snapshot,
    /// Print the contact events after a sequence number (`--after 0`: from now on) that have
    /// happened, then stop; `--follow` keeps printing new ones; `--count` stops after that many.
    Events {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        count: Option<usize>,
        #[arg(long)]
        follow: bool,
    },
    /// Ask gRPC health whether the server (or `--service`) is SERVING, at every target; exits 0
    /// only if each answers SERVING. For container health checks and scripts.
    Health {
        /// The service to ask about, e.g. `smista.v1.ContactService` (default: the server).
        #[arg(long, default_value = "")]
        service: String,
        /// Give up on a target after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Ask again every 200 ms, for up to this many milliseconds, until a target answers
        /// SERVING (a server starting, a standby taking over); 0: ask once.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
    /// Print offers for an operator: `watch OPERATOR [--count 1]`.
    Watch {
        operator: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

fn parse_skill(s: &str) -> Result<(String, u32), String> {
    let (name, level) = s.split_once('=').ok_or("expected NAME=LEVEL")?;
    Ok((name.to_owned(), level.parse().map_err(|_| format!("bad level in `{s}`"))?))
}

fn channel(s: &str) -> Result<pb::Channel, String> {
    Ok(match s {
        "voice" => pb::Channel::Voice,
        "video" => pb::Channel::Video,
        "callback" => pb::Channel::Callback,
        "chat" => pb::Channel::Chat,
        other => return Err(format!("unknown channel `{other}`")),
    })
}

pub(crate) fn run(args: ClientArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(call(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(s) => eprintln!("error: {}", show::status(s)),
                None => eprintln!("error: {}", smista_client::connect::causes(&*e)),
            }
            ExitCode::FAILURE
        }
    }
}

/// `smista client health`: each target's answer, one line each; an error unless all are SERVING.
/// With `wait`, a target is asked again until it answers SERVING or `wait` has passed; only its
/// last answer is shown.
async fn health(
    args: &ClientArgs,
    service: &str,
    timeout: std::time::Duration,
    wait: std::time::Duration,
) -> Result<(), String> {
    let targets = target_list(&args.target);
    let mut failed = Vec::new();
    for t in &targets {
        let until = tokio::time::Instant::now() + wait;
        let asked = loop {
            let asked = tokio::time::timeout(timeout, async {
                let ch = args.creds.channel(t).await?;
                serving_status(ch, service).await.map_err(|s| show::status(&s))
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer from {t} within {} ms", timeout.as_millis())));
            let serving = matches!(&asked, Ok(s) if s.as_str_name() == "SERVING");
            if serving || tokio::time::Instant::now() >= until {
                break asked;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let status = match asked {
            Ok(s) => s.as_str_name(),
            Err(e) => {
                failed.push(format!("{t}: {e}"));
                continue;
            }
        };
        if status != "SERVING" {
            failed.push(format!("{t}: {status}"));
        }
        let shown = if service.is_empty() { "the server" } else { service };
        if args.json {
            println!("{}", json!({"target": t, "service": service, "status": status}));
        } else if targets.len() == 1 {
            println!("{status}");
        } else {
            println!("{t}: {shown} {status}");
        }
    }
    match failed.as_slice() {
        [] if !targets.is_empty() => Ok(()),
        [] => Err(format!("no target in `{}`", args.target)),
        _ => Err(format!("not serving: {}", failed.join("; "))),
    }
}

async fn call(args: ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    if let Call::Health { service, timeout_ms, wait_ms } = &args.call {
        let (timeout, wait) =
            (std::time::Duration::from_millis(*timeout_ms), std::time::Duration::from_millis(*wait_ms));
        return Ok(health(&args, service, timeout, wait).await?);
    }
    let ch = active_channel(&args.creds, &args.target).await?;
    let bearer = args.creds.bearer()?;
    let mut contacts = ContactServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let mut ops = OperatorServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let mut appointments = AppointmentServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let mut admin = AdminServiceClient::with_interceptor(ch, bearer);
    let json = args.json;
    let print = |(line, value): (String, Value)| {
        if json {
            println!("{value}");
        } else {
            println!("{line}");
        }
    };
    match args.call {
        Call::Offer { contact, queue, channel: c, priority } => {
            let r = contacts
                .offer_contact(pb::OfferContactRequest {
                    contact_id: contact,
                    queue,
                    channel: channel(&c)? as i32,
                    priority,
                    ..Default::default()
                })
                .await?
                .into_inner();
            print(show::decision(r.decision.as_ref()));
        }
        Call::Callback { contact } => {
            let r = contacts.request_callback(pb::RequestCallbackRequest { contact_id: contact }).await?.into_inner();
            let q = r.queued.unwrap_or_default();
            print((
                format!(
                    "callback kept at position {} of {}, {}",
                    q.position,
                    q.queue,
                    show::estimated_wait(q.estimated_wait_ms)
                ),
                json!({"queue": q.queue, "position": q.position, "estimated_wait_ms": q.estimated_wait_ms}),
            ));
        }
        Call::Unanswered { contact } => {
            use pb::callback_unanswered_response::Next;
            let r =
                contacts.callback_unanswered(pb::CallbackUnansweredRequest { contact_id: contact }).await?.into_inner();
            match r.next {
                Some(Next::Retry(x)) => print((
                    format!("attempt {} unanswered; next attempt at {} (Unix ms)", x.attempts, x.due_unix_ms),
                    json!({"attempts": x.attempts, "due_unix_ms": x.due_unix_ms}),
                )),
                Some(Next::Ended(o)) => print(show::outcome_line(o)),
                None => print(("no answer".into(), json!({}))),
            }
        }
        Call::Cancel { contact } => {
            let r = contacts.cancel_contact(pb::CancelContactRequest { contact_id: contact }).await?.into_inner();
            print(show::outcome_line(r.outcome));
        }
        Call::Login { operator, group, skills, chats } => {
            let mut channels = vec![pb::ChannelCapacity { channel: pb::Channel::Voice as i32, max_concurrent: 1 }];
            if chats > 0 {
                channels.push(pb::ChannelCapacity { channel: pb::Channel::Chat as i32, max_concurrent: chats });
            }
            let r = ops
                .login(pb::LoginRequest {
                    session_id: format!("cli-{operator}"),
                    operator_id: operator,
                    group,
                    skills: skills.into_iter().map(|(name, level)| pb::Skill { name, level }).collect(),
                    channels,
                })
                .await?
                .into_inner();
            print((format!("serves: {}", r.queues.join(", ")), json!({"queues": r.queues})));
        }
        Call::Logout { operator, force } => {
            ops.logout(pb::LogoutRequest { operator_id: operator, force }).await?;
            print(("logged out".into(), json!({"logged_out": true})));
        }
        Call::Available { operator } => {
            let r = ops
                .set_state(pb::SetStateRequest {
                    operator_id: operator,
                    status: pb::OperatorStatus::Available as i32,
                    reason: String::new(),
                })
                .await?
                .into_inner();
            let st = show::operator_status(r.status);
            print((format!("status: {st}"), json!({"status": st})));
        }
        Call::Pause { operator, reason } => {
            let r = ops
                .set_state(pb::SetStateRequest {
                    operator_id: operator,
                    status: pb::OperatorStatus::Paused as i32,
                    reason,
                })
                .await?
                .into_inner();
            let st = show::operator_status(r.status);
            print((format!("status: {st}"), json!({"status": st})));
        }
        Call::Accept { operator, contact } => {
            ops.accept_offer(pb::AcceptOfferRequest { operator_id: operator, contact_id: contact }).await?;
            print(("accepted".into(), json!({"accepted": true})));
        }
        Call::Decline { operator, contact } => {
            ops.decline_offer(pb::DeclineOfferRequest { operator_id: operator, contact_id: contact }).await?;
            print(("declined".into(), json!({"declined": true})));
        }
        Call::Complete { operator, contact, wrap_up_ms } => {
            let r = ops
                .complete_contact(pb::CompleteContactRequest {
                    operator_id: operator,
                    contact_id: contact,
                    wrap_up_ms,
                    ended_unix_ms: 0,
                })
                .await?
                .into_inner();
            print((
                format!(
                    "completed: handled in {}, wrap-up {}",
                    show::duration(r.handle_ms),
                    show::duration(r.wrap_up_ms)
                ),
                json!({"handle_ms": r.handle_ms, "wrap_up_ms": r.wrap_up_ms}),
            ));
        }
        Call::Transfer { operator, contact, queue, to_operator, timeout_ms, external, wrap_up_ms } => {
            use pb::transfer_contact_request::Target;
            let target = match (queue, to_operator, external) {
                (Some(queue), Some(operator_id), None) => {
                    Target::Operator(pb::TransferToOperator { operator_id, queue, timeout_ms })
                }
                (Some(queue), None, None) => Target::Queue(queue),
                (None, None, Some(destination)) => Target::External(pb::TransferOut { destination }),
                _ => return Err("name --queue (with --to-operator for a colleague first) or --external".into()),
            };
            let r = ops
                .transfer_contact(pb::TransferContactRequest {
                    operator_id: operator,
                    contact_id: contact,
                    target: Some(target),
                    ended_unix_ms: 0,
                    wrap_up_ms,
                })
                .await?
                .into_inner();
            print(show::transferred(&r));
        }
        Call::Consult { operator, contact, consultation, queue, to_operator, timeout_ms } => {
            use pb::consult_contact_request::Target;
            let target = match to_operator {
                Some(operator_id) => Target::Operator(pb::TransferToOperator { operator_id, queue, timeout_ms }),
                None => Target::Queue(queue),
            };
            let r = ops
                .consult_contact(pb::ConsultContactRequest {
                    operator_id: operator,
                    contact_id: contact,
                    consultation_id: consultation,
                    target: Some(target),
                })
                .await?
                .into_inner();
            print(show::consulting(&r));
        }
        Call::EndConsultation { operator, contact, consultation, action, wrap_up_ms } => {
            let action = match action.as_str() {
                "transfer" => pb::ConsultationAction::Transfer,
                "conference" => pb::ConsultationAction::Conference,
                "cancel" => pb::ConsultationAction::Cancel,
                other => return Err(format!("action `{other}`: transfer, conference or cancel").into()),
            };
            let r = ops
                .end_consultation(pb::EndConsultationRequest {
                    operator_id: operator,
                    contact_id: contact,
                    consultation_id: consultation,
                    action: action as i32,
                    ended_unix_ms: 0,
                    wrap_up_ms,
                })
                .await?
                .into_inner();
            let second = &r.second_operator_id;
            let line = match action {
                pb::ConsultationAction::Transfer => format!(
                    "handed over to {second}; your leg {} (wrap-up {})",
                    show::duration(r.handle_ms),
                    show::duration(r.wrap_up_ms)
                ),
                pb::ConsultationAction::Conference => format!("in conference with {second}"),
                _ if second.is_empty() => "consultation cancelled (nobody had taken it)".to_owned(),
                _ => format!("consultation cancelled ({second} is free)"),
            };
            print((
                line,
                json!({"action": show::words(action.as_str_name(), "CONSULTATION_ACTION_"), "second_operator_id": r.second_operator_id,
                       "handle_ms": r.handle_ms, "wrap_up_ms": r.wrap_up_ms}),
            ));
        }
        Call::Book { appointment, queue, start_unix_ms, operator, channel: c, for_contact, desk } => {
            let a = appointments
                .book_appointment(pb::BookAppointmentRequest {
                    appointment_id: appointment,
                    queue,
                    start_unix_ms,
                    operator_id: operator,
                    channel: channel(&c)? as i32,
                    segment: pb::Segment::General as i32,
                    recording: false,
                    serving_contact_id: for_contact,
                    desk_operator_id: desk,
                })
                .await?
                .into_inner();
            print(show::appointment(&a));
        }
        Call::MoveAppointment { appointment, start_unix_ms, operator, for_contact, desk } => {
            let a = appointments
                .move_appointment(pb::MoveAppointmentRequest {
                    appointment_id: appointment,
                    start_unix_ms,
                    operator_id: operator,
                    serving_contact_id: for_contact,
                    desk_operator_id: desk,
                })
                .await?
                .into_inner();
            print(show::appointment(&a));
        }
        Call::CancelAppointment { appointment, for_contact, desk } => {
            let a = appointments
                .cancel_appointment(pb::CancelAppointmentRequest {
                    appointment_id: appointment,
                    serving_contact_id: for_contact,
                    desk_operator_id: desk,
                })
                .await?
                .into_inner();
            print(show::appointment(&a));
        }
        Call::Snapshot => {
            let s = admin.get_snapshot(pb::GetSnapshotRequest {}).await?.into_inner();
            if json {
                let queues: Vec<Value> = s
                    .queues
                    .iter()
                    .map(|q| json!({"queue": q.name, "open": q.open, "waiting": q.waiting, "in_service": q.in_service, "service_level": q.service_level, "operators_logged_in": q.operators_logged_in}))
                    .collect();
                let operators: Vec<Value> = s
                    .operators
                    .iter()
                    .map(|o| json!({"operator_id": o.operator_id, "group": o.group, "status": show::operator_status(o.status), "pause_reason": o.pause_reason}))
                    .collect();
                let groups: Vec<Value> = s
                    .operator_groups
                    .iter()
                    .map(|g| json!({"group": g.group, "supplier": g.supplier, "logged_in": g.logged_in, "available": g.available, "wrap_up": g.wrap_up, "paused": g.paused, "with_contacts": g.with_contacts}))
                    .collect();
                println!("{}", json!({"queues": queues, "operator_groups": groups, "operators": operators}));
                return Ok(());
            }
            println!(
                "{:<18} {:>5} {:>7} {:>7} {:>10} {:>6}",
                "queue", "open", "waiting", "serving", "svc level", "ops"
            );
            for q in &s.queues {
                println!(
                    "{:<18} {:>5} {:>7} {:>7} {:>9.1}% {:>6}",
                    q.name,
                    if q.open { "yes" } else { "no" },
                    q.waiting,
                    q.in_service,
                    q.service_level * 100.0,
                    q.operators_logged_in
                );
            }
            if !s.operator_groups.is_empty() {
                println!(
                    "\n{:<12} {:<22} {:>9} {:>9} {:>7} {:>6} {:>8}",
                    "group", "supplier", "logged in", "available", "wrap up", "paused", "contacts"
                );
            }
            for g in &s.operator_groups {
                println!(
                    "{:<12} {:<22} {:>9} {:>9} {:>7} {:>6} {:>8}",
                    g.group, g.supplier, g.logged_in, g.available, g.wrap_up, g.paused, g.with_contacts
                );
            }
            if !s.operators.is_empty() {
                println!("\n{:<18} {:<12} {:<10} pause reason", "operator", "group", "status");
            }
            for o in &s.operators {
                println!(
                    "{:<18} {:<12} {:<10} {}",
                    o.operator_id,
                    o.group,
                    show::operator_status(o.status),
                    o.pause_reason
                );
            }
        }
        Call::Events { after, count, follow } => {
            let mut s = contacts
                .stream_events(pb::StreamEventsRequest {
                    after_sequence: after,
                    queues: vec![],
                    after_epoch: 0,
                    max_delay_ms: 0,
                })
                .await?
                .into_inner();
            // Without --follow: what has happened, i.e. until the stream stays quiet for a
            // moment (events already published arrive within the server's flush period).
            let quiet = std::time::Duration::from_millis(500);
            let mut printed = 0;
            while count.is_none_or(|c| printed < c) {
                let next = if follow {
                    s.message().await?
                } else {
                    match tokio::time::timeout(quiet, s.message()).await {
                        Ok(m) => m?,
                        Err(_) => break,
                    }
                };
                let Some(e) = next else { break };
                print(show::event(&e));
                printed += 1;
            }
        }
        Call::Watch { operator, count } => {
            let mut s = ops.watch_offers(pb::WatchOffersRequest { operator_id: operator }).await?.into_inner();
            for _ in 0..count {
                match s.message().await? {
                    Some(o) => print(show::offer(&o)),
                    None => break,
                }
            }
        }
        // Answered before choosing the active node (every target is asked).
        Call::Health { .. } => {}
    }
    Ok(())
}
