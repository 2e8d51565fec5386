//! `smista report intervals`: the interval report of a running server
//! (`AdminService.GetIntervalReport`, every page), as a table, CSV or JSON.

use std::process::ExitCode;

use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;

use super::ledger_report::Format;

/// `smista report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    #[command(subcommand)]
    cmd: ReportCmd,
}

/// The server a report asks, and with which credentials (every `smista report` subcommand).
#[derive(Debug, clap::Args)]
pub(crate) struct Server {
    /// The server, or the nodes of an active/standby group separated by commas.
    #[arg(long, env = "SMISTA_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    #[command(flatten)]
    creds: smista_client::connect::Credentials,
}

/// An admin client of the active node among the server's targets.
pub(crate) type Admin = AdminServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, smista_client::connect::Bearer>,
>;

impl Server {
    /// An admin client of the active node, with the bearer token if one is given.
    pub(crate) async fn admin(&self) -> Result<Admin, Box<dyn std::error::Error>> {
        let ch = smista_client::follow::active_channel(&self.creds, &self.target).await?;
        Ok(AdminServiceClient::with_interceptor(ch, self.creds.bearer()?))
    }
}

#[derive(Debug, clap::Subcommand)]
enum ReportCmd {
    /// Per interval and queue (and operator group): offered, answered, abandoned, diverted, ASA,
    /// AHT, service level. `--from 2026-03-29 --to 2026-03-30 --interval 30m`.
    Intervals {
        #[command(flatten)]
        server: Server,
        /// Start: a date (`2026-03-29`, its local midnight), a local time (`2026-03-29T10:00`),
        /// both on `--time-zone`'s clock, or an instant with its offset (RFC 3339).
        #[arg(long)]
        from: String,
        /// End (exclusive), in the same forms; at most 31 days after `--from`.
        #[arg(long)]
        to: String,
        /// Interval: `15m`, `30m`, `1h` (a divisor of a day); default: the server's.
        #[arg(long)]
        interval: Option<String>,
        /// The time zone of dates and local times in `--from` and `--to` (the server reports
        /// in its own `[history] time_zone`).
        #[arg(long, default_value = "Europe/Rome")]
        time_zone: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Print the operator groups' rows too.
        #[arg(long)]
        groups: bool,
    },
    /// Operator accounting per interval and group (supplier): logged in, available, on
    /// contacts per channel, wrap-up, paused per reason, handled, AHT, declined, timed out.
    /// `--per-operator` adds each operator's rows where the server allows them (WORKFORCE role,
    /// `[privacy] per_operator_reports`; every read audited, `--purpose` required).
    Operators {
        #[command(flatten)]
        server: Server,
        /// Start: a date, a local time on `--time-zone`'s clock, or an RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// End (exclusive), in the same forms; at most 31 days after `--from`.
        #[arg(long)]
        to: String,
        /// Interval: `15m`, `30m`, `1h` (a divisor of a day); default: the server's.
        #[arg(long)]
        interval: Option<String>,
        /// The time zone of dates and local times in `--from` and `--to`.
        #[arg(long, default_value = "Europe/Rome")]
        time_zone: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Each operator's rows too (refused unless the server enables them).
        #[arg(long)]
        per_operator: bool,
        /// With `--per-operator`: only this operator's rows (repeat for several).
        #[arg(long = "operator")]
        operators: Vec<String>,
        /// With `--per-operator`: why the rows are read (kept in the privacy audit).
        #[arg(long)]
        purpose: Option<String>,
    },
    /// The privacy audit: every read of per-operator rows (who, when, which operators, why).
    OperatorReads {
        #[command(flatten)]
        server: Server,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Spend per budget, period, queue, group and supplier from the ledger, through the server
    /// (`smista ledger report` reads the ledger itself).
    Spend {
        #[command(flatten)]
        server: Server,
        /// Only this budget.
        #[arg(long, default_value = "")]
        budget: String,
        /// Only this period (its label, e.g. 2026-12).
        #[arg(long, default_value = "")]
        period: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: crate::cmd::ledger_report::Format,
    },
    /// A budget's burn-down in its current period: spend per day against the pacing's
    /// allowance, and when the money runs out at the current rate.
    Budget {
        #[command(flatten)]
        server: Server,
        /// The budget.
        budget: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// `2026-03-29`, `2026-03-29T10:00[:00]` on `tz`'s clock, or an RFC 3339 instant: Unix ms.
pub(crate) fn instant(s: &str, tz: &jiff::tz::TimeZone) -> Result<u64, String> {
    let t = if let Ok(t) = s.parse::<jiff::Timestamp>() {
        t
    } else if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        dt.to_zoned(tz.clone()).map_err(|e| format!("`{s}`: {e}"))?.timestamp()
    } else if let Ok(d) = s.parse::<jiff::civil::Date>() {
        d.to_zoned(tz.clone()).map_err(|e| format!("`{s}`: {e}"))?.timestamp()
    } else {
        return Err(format!("`{s}` is neither a date, a local time nor an RFC 3339 instant"));
    };
    u64::try_from(t.as_millisecond()).map_err(|_| format!("`{s}` is before 1970"))
}

/// `30m`, `1h`, `90` (minutes).
pub(crate) fn minutes(s: &str) -> Result<u32, String> {
    let (n, unit) = match s.strip_suffix('h') {
        Some(n) => (n, 60),
        None => (s.strip_suffix('m').unwrap_or(s), 1),
    };
    n.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("bad interval `{s}`: e.g. 15m, 30m, 1h"))
}

pub(crate) fn run(args: ReportArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        match args.cmd {
            ReportCmd::Budget { server, budget, format } => burn(server, budget, format).await,
            ReportCmd::Spend { server, budget, period, format } => spend(server, budget, period, format).await,
            ReportCmd::Operators {
                server,
                from,
                to,
                interval,
                time_zone,
                format,
                per_operator,
                operators,
                purpose,
            } => {
                let ask = super::report_operators::Ask {
                    server,
                    from,
                    to,
                    interval,
                    time_zone,
                    format,
                    per_operator,
                    operators,
                    purpose,
                };
                super::report_operators::operators(ask).await
            }
            ReportCmd::OperatorReads { server, format } => super::report_operators::reads(server, format).await,
            cmd @ ReportCmd::Intervals { .. } => intervals(ReportArgs { cmd }).await,
        }
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn intervals(args: ReportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ReportCmd::Intervals { server, from, to, interval, time_zone, format, groups } = args.cmd else {
        return Err("not an interval report".into());
    };
    let tz = smista_server::clock::zone(&time_zone)?;
    let req = pb::GetIntervalReportRequest {
        from_unix_ms: instant(&from, &tz)?,
        to_unix_ms: instant(&to, &tz)?,
        interval_minutes: interval.as_deref().map(minutes).transpose()?.unwrap_or(0),
        page_size: 2000,
        page_token: String::new(),
    };
    let mut admin = server.admin().await?;
    let mut all = pb::GetIntervalReportResponse::default();
    let mut token = String::new();
    loop {
        let page = admin
            .get_interval_report(pb::GetIntervalReportRequest { page_token: token, ..req.clone() })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        all.queues.extend(page.queues);
        all.groups.extend(page.groups);
        all.time_zone = page.time_zone;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json(&all))?),
        Format::Csv => print!("{}", csv(&all, groups)),
        Format::Table => print!("{}", table(&all, groups)),
    }
    Ok(())
}

async fn spend(
    server: Server,
    budget_id: String,
    period: String,
    format: crate::cmd::ledger_report::Format,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = server.admin().await?;
    let r = admin
        .get_spend_report(pb::GetSpendReportRequest { budget_id, period })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let suppliers: std::collections::HashMap<&str, &str> =
        r.rows.iter().filter(|x| !x.supplier.is_empty()).map(|x| (x.group.as_str(), x.supplier.as_str())).collect();
    let rows = r
        .rows
        .iter()
        .map(|x| smista_ledger::ReportRow {
            budget: x.budget_id.clone(),
            period: x.period.clone(),
            queue: x.queue.clone(),
            operator_group: x.group.clone(),
            contacts: i64::try_from(x.contacts).unwrap_or(i64::MAX),
            hung_up: i64::try_from(x.hung_up).unwrap_or(i64::MAX),
            cost_cents: x.cost_cents,
            handle_ms: i64::try_from(x.handle_ms).unwrap_or(i64::MAX),
        })
        .collect();
    print!("{}", crate::cmd::ledger_report::render(rows, &suppliers, format)?);
    Ok(())
}

async fn burn(server: Server, budget: String, format: Format) -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = server.admin().await?;
    let b = admin
        .get_budget_burn(pb::GetBudgetBurnRequest { budget_id: budget })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let tz = smista_server::clock::Tz(smista_server::clock::zone(&b.time_zone)?);
    let runs_out = if b.projected_exhaustion_unix_ms == 0 {
        "lasts the period at the current rate".to_owned()
    } else {
        format!("runs out {} at the current rate", tz.format(b.projected_exhaustion_unix_ms as i64))
    };
    match format {
        Format::Json => {
            let days: Vec<serde_json::Value> = b
                .days
                .iter()
                .map(|d| {
                    serde_json::json!({"date": d.date, "start_unix_ms": d.start_unix_ms, "spent_cents": d.spent_cents,
                        "contacts": d.contacts, "cumulative_cents": d.cumulative_cents,
                        "paced_allowance_cents": d.paced_allowance_cents})
                })
                .collect();
            let v = serde_json::json!({"budget_id": b.budget_id, "period": b.period, "ceiling_cents": b.ceiling_cents,
                "time_zone": b.time_zone, "projected_exhaustion_unix_ms": b.projected_exhaustion_unix_ms, "days": days});
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Csv => {
            println!("date,start_unix_ms,spent_cents,contacts,cumulative_cents,paced_allowance_cents");
            for d in &b.days {
                println!(
                    "{},{},{},{},{},{}",
                    d.date, d.start_unix_ms, d.spent_cents, d.contacts, d.cumulative_cents, d.paced_allowance_cents
                );
            }
        }
        Format::Table => {
            println!(
                "budget {} period {} ceiling {} cents ({}; {})",
                b.budget_id, b.period, b.ceiling_cents, runs_out, b.time_zone
            );
            println!("{:<12} {:>12} {:>9} {:>14} {:>16}", "day", "spent", "contacts", "cumulative", "paced allowance");
            for d in &b.days {
                println!(
                    "{:<12} {:>12} {:>9} {:>14} {:>16}",
                    d.date, d.spent_cents, d.contacts, d.cumulative_cents, d.paced_allowance_cents
                );
            }
        }
    }
    Ok(())
}

fn json(r: &pb::GetIntervalReportResponse) -> serde_json::Value {
    let q: Vec<serde_json::Value> = r
        .queues
        .iter()
        .map(|q| {
            serde_json::json!({
                "start_unix_ms": q.start_unix_ms, "start_local": q.start_local, "queue": q.queue,
                "threshold_ms": q.threshold_ms, "offered": q.offered, "answered": q.answered,
                "answered_within": q.answered_within, "abandoned": q.abandoned,
                "short_abandoned": q.short_abandoned, "abandoned_after_threshold": q.abandoned_after_threshold,
                "diverted": q.diverted, "extra_budget_diverted": q.extra_budget_diverted,
                "diverted_by_reason": q.diverted_by_reason, "overflowed": q.overflowed,
                "in_progress": q.in_progress, "asa_ms": q.asa_ms, "average_wait_ms": q.average_wait_ms,
                "max_wait_ms": q.max_wait_ms, "handled": q.handled, "aht_ms": q.aht_ms,
                "average_wrap_up_ms": q.average_wrap_up_ms, "service_level_offered": q.service_level_offered,
                "service_level_answered": q.service_level_answered,
                "transferred_in": q.transferred_in, "transferred_out": q.transferred_out, "consultations": q.consultations,
            })
        })
        .collect();
    let g: Vec<serde_json::Value> = r
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "start_unix_ms": g.start_unix_ms, "start_local": g.start_local, "group": g.group,
                "supplier": g.supplier, "answered": g.answered, "handled": g.handled, "aht_ms": g.aht_ms,
                "average_wrap_up_ms": g.average_wrap_up_ms, "staffed_ms": g.staffed_ms, "paused_ms": g.paused_ms,
                "busy_ms": g.busy_ms, "occupancy": g.occupancy,
            })
        })
        .collect();
    serde_json::json!({ "time_zone": r.time_zone, "queues": q, "groups": g })
}

fn csv(r: &pb::GetIntervalReportResponse, groups: bool) -> String {
    let mut out = String::from(
        "start_local,start_unix_ms,queue,threshold_ms,offered,answered,answered_within,abandoned,short_abandoned,abandoned_after_threshold,diverted,extra_budget_diverted,overflowed,in_progress,asa_ms,average_wait_ms,max_wait_ms,handled,aht_ms,average_wrap_up_ms,service_level_offered,service_level_answered,transferred_in,transferred_out,consultations\n",
    );
    for q in &r.queues {
        out += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.0},{:.0},{},{},{:.0},{:.0},{:.4},{:.4},{},{},{}\n",
            q.start_local,
            q.start_unix_ms,
            q.queue,
            q.threshold_ms,
            q.offered,
            q.answered,
            q.answered_within,
            q.abandoned,
            q.short_abandoned,
            q.abandoned_after_threshold,
            q.diverted,
            q.extra_budget_diverted,
            q.overflowed,
            q.in_progress,
            q.asa_ms,
            q.average_wait_ms,
            q.max_wait_ms,
            q.handled,
            q.aht_ms,
            q.average_wrap_up_ms,
            q.service_level_offered,
            q.service_level_answered,
            q.transferred_in,
            q.transferred_out,
            q.consultations
        );
    }
    if groups {
        out += "\nstart_local,start_unix_ms,group,supplier,answered,handled,aht_ms,average_wrap_up_ms,staffed_ms,paused_ms,busy_ms,occupancy\n";
        for g in &r.groups {
            out += &format!(
                "{},{},{},{},{},{},{:.0},{:.0},{},{},{},{:.4}\n",
                g.start_local,
                g.start_unix_ms,
                g.group,
                g.supplier,
                g.answered,
                g.handled,
                g.aht_ms,
                g.average_wrap_up_ms,
                g.staffed_ms,
                g.paused_ms,
                g.busy_ms,
                g.occupancy
            );
        }
    }
    out
}

fn table(r: &pb::GetIntervalReportResponse, groups: bool) -> String {
    let mut out = format!(
        "{:<25} {:<18} {:>7} {:>7} {:>7} {:>9} {:>8} {:>6} {:>7} {:>7} {:>6} {:>6}\n",
        "interval",
        "queue",
        "offered",
        "answer",
        "within",
        "abandon",
        "divert",
        "live",
        "ASA s",
        "AHT s",
        "SL%",
        "SL2%"
    );
    for q in &r.queues {
        out += &format!(
            "{:<25} {:<18} {:>7} {:>7} {:>7} {:>5}({:>2}) {:>4}({:>2}) {:>6} {:>7.1} {:>7.1} {:>6.1} {:>6.1}\n",
            q.start_local,
            q.queue,
            q.offered,
            q.answered,
            q.answered_within,
            q.abandoned,
            q.short_abandoned,
            q.diverted,
            q.extra_budget_diverted,
            q.in_progress,
            q.asa_ms / 1000.0,
            q.aht_ms / 1000.0,
            q.service_level_offered * 100.0,
            q.service_level_answered * 100.0
        );
    }
    out += &format!(
        "(time zone {}; abandon(short), divert(extra budget); SL% = within / (offered - short - live), SL2% = within / (answered + abandoned after threshold))\n",
        r.time_zone
    );
    if groups {
        out += &format!(
            "\n{:<25} {:<18} {:<14} {:>7} {:>7} {:>7} {:>10}\n",
            "interval", "group", "supplier", "answer", "handled", "AHT s", "occupancy"
        );
        for g in &r.groups {
            out += &format!(
                "{:<25} {:<18} {:<14} {:>7} {:>7} {:>7.1} {:>9.1}%\n",
                g.start_local,
                g.group,
                g.supplier,
                g.answered,
                g.handled,
                g.aht_ms / 1000.0,
                g.occupancy * 100.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_intervals_parse_in_the_centres_zone() {
        let rome = smista_server::clock::zone("Europe/Rome").expect("zone");
        // Local midnight of 29 March 2026 is 23:00 UTC the day before (CET, +01:00).
        assert_eq!(instant("2026-03-29", &rome), Ok(1_774_738_800_000));
        assert_eq!(instant("2026-03-29T03:00", &rome), Ok(1_774_746_000_000), "03:00 CEST = 01:00 UTC");
        assert_eq!(instant("2026-03-29T01:00:00Z", &rome), Ok(1_774_746_000_000));
        assert!(instant("yesterday", &rome).is_err());
        assert_eq!(minutes("30m"), Ok(30));
        assert_eq!(minutes("1h"), Ok(60));
        assert_eq!(minutes("15"), Ok(15));
        assert!(minutes("x").is_err());
    }
}
