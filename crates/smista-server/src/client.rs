//! `smista client`: one RPC per invocation, printed as text. For the quick tour, scripts and
//! smoke tests; the telephony platform and desktops use the gRPC API directly.

use std::process::ExitCode;

use clap::Subcommand;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;

/// `smista client`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// The server, or the nodes of an active/standby group separated by commas (the call goes to
    /// the one whose gRPC health says it routes: the active).
    #[arg(long, env = "SMISTA_TARGET", default_value = "http://127.0.0.1:50051", global = true)]
    target: String,
    #[command(flatten)]
    creds: smista_server::connect::Credentials,
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
    /// Print queues and operators.
    Snapshot,
    /// Print contact events: `events [--after 0] [--count 10]`.
    Events {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 10)]
        count: usize,
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
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A channel to the active node among `targets` (comma-separated): the first whose health says
/// `smista.v1.ContactService` is SERVING; failing that, the first reachable one (its answer says
/// why it does not route, e.g. UNAVAILABLE naming the active node).
pub(crate) async fn active_channel(
    creds: &smista_server::connect::Credentials,
    targets: &str,
) -> Result<tonic::transport::Channel, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let list: Vec<&str> = targets.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    if let [one] = list.as_slice() {
        return creds.channel(one).await;
    }
    let mut fallback = None;
    let mut last = format!("no target in `{targets}`");
    for t in list {
        match creds.channel(t).await {
            Ok(ch) => {
                let asked = HealthClient::new(ch.clone())
                    .check(HealthCheckRequest { service: "smista.v1.ContactService".into() })
                    .await;
                if asked.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                    return Ok(ch);
                }
                fallback.get_or_insert(ch);
            }
            Err(e) => last = e,
        }
    }
    fallback.ok_or(last)
}

async fn call(args: ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ch = active_channel(&args.creds, &args.target).await?;
    let bearer = args.creds.bearer()?;
    let mut contacts = ContactServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let mut ops = OperatorServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let mut admin = AdminServiceClient::with_interceptor(ch, bearer);
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
                .await?;
            println!("{:?}", r.into_inner().decision);
        }
        Call::Callback { contact } => {
            let r = contacts.request_callback(pb::RequestCallbackRequest { contact_id: contact }).await?.into_inner();
            let q = r.queued.unwrap_or_default();
            println!(
                "callback kept at position {} of {}, estimated wait {} ms",
                q.position, q.queue, q.estimated_wait_ms
            );
        }
        Call::Unanswered { contact } => {
            use pb::callback_unanswered_response::Next;
            let r =
                contacts.callback_unanswered(pb::CallbackUnansweredRequest { contact_id: contact }).await?.into_inner();
            match r.next {
                Some(Next::Retry(x)) => {
                    println!("attempt {} unanswered; next attempt at {} (Unix ms)", x.attempts, x.due_unix_ms)
                }
                Some(Next::Ended(o)) => println!("outcome: {:?}", pb::Outcome::try_from(o).unwrap_or_default()),
                None => println!("no answer"),
            }
        }
        Call::Cancel { contact } => {
            let r = contacts.cancel_contact(pb::CancelContactRequest { contact_id: contact }).await?.into_inner();
            println!("outcome: {:?}", r.outcome());
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
                .await?;
            println!("serves: {}", r.into_inner().queues.join(", "));
        }
        Call::Logout { operator, force } => {
            ops.logout(pb::LogoutRequest { operator_id: operator, force }).await?;
            println!("logged out");
        }
        Call::Available { operator } => {
            let r = ops
                .set_state(pb::SetStateRequest {
                    operator_id: operator,
                    status: pb::OperatorStatus::Available as i32,
                    reason: String::new(),
                })
                .await?;
            println!("status: {:?}", r.into_inner().status());
        }
        Call::Pause { operator, reason } => {
            let r = ops
                .set_state(pb::SetStateRequest {
                    operator_id: operator,
                    status: pb::OperatorStatus::Paused as i32,
                    reason,
                })
                .await?;
            println!("status: {:?}", r.into_inner().status());
        }
        Call::Accept { operator, contact } => {
            ops.accept_offer(pb::AcceptOfferRequest { operator_id: operator, contact_id: contact }).await?;
            println!("accepted");
        }
        Call::Decline { operator, contact } => {
            ops.decline_offer(pb::DeclineOfferRequest { operator_id: operator, contact_id: contact }).await?;
            println!("declined");
        }
        Call::Complete { operator, contact, wrap_up_ms } => {
            let r = ops
                .complete_contact(pb::CompleteContactRequest { operator_id: operator, contact_id: contact, wrap_up_ms })
                .await?
                .into_inner();
            println!("handle {} ms, wrap-up {} ms", r.handle_ms, r.wrap_up_ms);
        }
        Call::Snapshot => {
            let s = admin.get_snapshot(pb::GetSnapshotRequest {}).await?.into_inner();
            println!(
                "{:<18} {:>5} {:>7} {:>7} {:>10} {:>6}",
                "queue", "open", "waiting", "serving", "svc level", "ops"
            );
            for q in &s.queues {
                println!(
                    "{:<18} {:>5} {:>7} {:>7} {:>9.1}% {:>6}",
                    q.name,
                    q.open,
                    q.waiting,
                    q.in_service,
                    q.service_level * 100.0,
                    q.operators_logged_in
                );
            }
            for o in &s.operators {
                println!("operator {:<12} {:<12} {:?} {}", o.operator_id, o.group, o.status(), o.pause_reason);
            }
        }
        Call::Events { after, count } => {
            let mut s = contacts
                .stream_events(pb::StreamEventsRequest {
                    after_sequence: after,
                    queues: vec![],
                    after_epoch: 0,
                    max_delay_ms: 0,
                })
                .await?
                .into_inner();
            for _ in 0..count {
                match s.message().await? {
                    Some(e) => println!("#{} {} {} {:?}", e.sequence, e.contact_id, e.queue, e.kind),
                    None => break,
                }
            }
        }
        Call::Watch { operator, count } => {
            let mut s = ops.watch_offers(pb::WatchOffersRequest { operator_id: operator }).await?.into_inner();
            for _ in 0..count {
                match s.message().await? {
                    Some(o) => println!(
                        "offer {} from {} ({:?}), accept within {} ms",
                        o.contact_id,
                        o.queue,
                        o.channel(),
                        o.offer_deadline_ms
                    ),
                    None => break,
                }
            }
        }
    }
    Ok(())
}
