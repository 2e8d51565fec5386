//! `smista report operators`: operator accounting of a running server
//! (`AdminService.GetOperatorReport`, every page) per interval and group, and per operator where
//! the server allows it; `smista report operator-reads`: the privacy audit of per-operator reads
//! (`ListOperatorReportReads`). Table, CSV or JSON.

use smista_proto::v1 as pb;

use super::ledger_report::Format;
use super::report_intervals::{instant, minutes, Server};

/// What `smista report operators` asks for.
#[derive(Debug)]
pub(crate) struct Ask {
    pub(crate) server: Server,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) interval: Option<String>,
    pub(crate) time_zone: String,
    pub(crate) format: Format,
    pub(crate) per_operator: bool,
    pub(crate) operators: Vec<String>,
    pub(crate) purpose: Option<String>,
}

const CHANNELS: [&str; 4] = ["voice", "video", "callback", "chat"];

pub(crate) async fn operators(a: Ask) -> Result<(), Box<dyn std::error::Error>> {
    let tz = smista_server::clock::zone(&a.time_zone)?;
    let req = pb::GetOperatorReportRequest {
        from_unix_ms: instant(&a.from, &tz)?,
        to_unix_ms: instant(&a.to, &tz)?,
        interval_minutes: a.interval.as_deref().map(minutes).transpose()?.unwrap_or(0),
        page_size: 2000,
        page_token: String::new(),
        per_operator: a.per_operator,
        operators: a.operators,
        purpose: a.purpose.unwrap_or_default(),
    };
    let mut admin = a.server.admin().await?;
    let mut all = pb::GetOperatorReportResponse::default();
    let mut token = String::new();
    loop {
        let page = admin
            .get_operator_report(pb::GetOperatorReportRequest { page_token: token, ..req.clone() })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        all.groups.extend(page.groups);
        all.operators.extend(page.operators);
        all.time_zone = page.time_zone;
        all.pause_reasons = page.pause_reasons;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json(&all))?),
        Format::Csv => print!("{}", csv(&all)),
        Format::Table => print!("{}", table(&all)),
    }
    Ok(())
}

fn row_json(r: &pb::OperatorIntervalRow) -> serde_json::Value {
    serde_json::json!({
        "start_unix_ms": r.start_unix_ms, "start_local": r.start_local, "group": r.group, "supplier": r.supplier,
        "operator_id": r.operator_id, "operators": r.operators, "logged_in_ms": r.logged_in_ms,
        "available_ms": r.available_ms, "on_contact_ms": r.on_contact_ms, "wrap_up_ms": r.wrap_up_ms,
        "paused_ms": r.paused_ms, "handled": r.handled, "average_handle_ms": r.average_handle_ms,
        "declined": r.declined, "timed_out": r.timed_out,
    })
}

fn json(r: &pb::GetOperatorReportResponse) -> serde_json::Value {
    let reasons: Vec<serde_json::Value> = r
        .pause_reasons
        .iter()
        .map(|p| serde_json::json!({"code": p.code, "label": p.label, "kind": kind(p.kind)}))
        .collect();
    serde_json::json!({
        "time_zone": r.time_zone,
        "pause_reasons": reasons,
        "groups": r.groups.iter().map(row_json).collect::<Vec<_>>(),
        "operators": r.operators.iter().map(row_json).collect::<Vec<_>>(),
    })
}

fn kind(k: i32) -> &'static str {
    match pb::PauseKind::try_from(k) {
        Ok(pb::PauseKind::Break) => "break",
        Ok(pb::PauseKind::Training) => "training",
        Ok(pb::PauseKind::Meeting) => "meeting",
        Ok(pb::PauseKind::Technical) => "technical",
        Ok(pb::PauseKind::AfterCallWork) => "after_call_work",
        _ => "",
    }
}

/// Every reason code the rows use, the server's list first.
fn codes(r: &pb::GetOperatorReportResponse) -> Vec<String> {
    let mut v: Vec<String> = r.pause_reasons.iter().map(|p| p.code.clone()).collect();
    for row in r.groups.iter().chain(&r.operators) {
        for c in row.paused_ms.keys() {
            if !v.contains(c) {
                v.push(c.clone());
            }
        }
    }
    v
}

fn csv(r: &pb::GetOperatorReportResponse) -> String {
    let codes = codes(r);
    let mut out =
        String::from("start_local,start_unix_ms,group,supplier,operator_id,operators,logged_in_ms,available_ms");
    for c in CHANNELS {
        out += &format!(",on_{c}_ms");
    }
    out += ",wrap_up_ms";
    for c in &codes {
        out += &format!(",paused_{c}_ms");
    }
    out += ",handled,average_handle_ms,declined,timed_out\n";
    for row in r.groups.iter().chain(&r.operators) {
        out += &format!(
            "{},{},{},{},{},{},{},{}",
            row.start_local,
            row.start_unix_ms,
            row.group,
            row.supplier,
            row.operator_id,
            row.operators,
            row.logged_in_ms,
            row.available_ms
        );
        for c in CHANNELS {
            out += &format!(",{}", row.on_contact_ms.get(c).copied().unwrap_or(0));
        }
        out += &format!(",{}", row.wrap_up_ms);
        for c in &codes {
            out += &format!(",{}", row.paused_ms.get(c).copied().unwrap_or(0));
        }
        out += &format!(",{},{:.0},{},{}\n", row.handled, row.average_handle_ms, row.declined, row.timed_out);
    }
    out
}

/// Milliseconds as `h:mm:ss`.
fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn table(r: &pb::GetOperatorReportResponse) -> String {
    let header = format!(
        "{:<25} {:<12} {:<10} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>5} {:>5}  paused by reason\n",
        "interval",
        "group",
        "operator",
        "ops",
        "logged",
        "avail",
        "contacts",
        "wrap-up",
        "paused",
        "handled",
        "AHT s",
        "decl",
        "t/o"
    );
    let mut out = header;
    for row in r.groups.iter().chain(&r.operators) {
        let on: u64 = row.on_contact_ms.values().sum();
        let paused: u64 = row.paused_ms.values().sum();
        let reasons: Vec<String> = row.paused_ms.iter().map(|(c, ms)| format!("{c} {}", hms(*ms))).collect();
        out += &format!(
            "{:<25} {:<12} {:<10} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6.1} {:>5} {:>5}  {}\n",
            row.start_local,
            row.group,
            if row.operator_id.is_empty() { "(all)" } else { &row.operator_id },
            row.operators,
            hms(row.logged_in_ms),
            hms(row.available_ms),
            hms(on),
            hms(row.wrap_up_ms),
            hms(paused),
            row.handled,
            row.average_handle_ms / 1000.0,
            row.declined,
            row.timed_out,
            reasons.join(", ")
        );
    }
    out += &format!(
        "(time zone {}; avail + contacts + wrap-up + paused = logged in; AHT without wrap-up; decl = declined, t/o = timed out)\n",
        r.time_zone
    );
    out
}

pub(crate) async fn reads(server: Server, format: Format) -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = server.admin().await?;
    let mut reads = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_operator_report_reads(pb::ListOperatorReportReadsRequest { page_size: 1000, page_token: token })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        reads.extend(page.reads);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match format {
        Format::Json => {
            let v: Vec<serde_json::Value> = reads
                .iter()
                .map(|r| {
                    serde_json::json!({"at_unix_ms": r.at_unix_ms, "actor": r.actor, "operators": r.operators,
                        "from_unix_ms": r.from_unix_ms, "to_unix_ms": r.to_unix_ms, "purpose": r.purpose,
                        "node_id": r.node_id})
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Csv => {
            println!("at_unix_ms,actor,operators,from_unix_ms,to_unix_ms,purpose,node_id");
            for r in &reads {
                println!(
                    "{},{},{},{},{},\"{}\",{}",
                    r.at_unix_ms,
                    r.actor,
                    r.operators.join(" "),
                    r.from_unix_ms,
                    r.to_unix_ms,
                    r.purpose.replace('"', "\"\""),
                    r.node_id
                );
            }
        }
        Format::Table => {
            println!("{:<15} {:<24} {:<30} purpose", "at (unix ms)", "actor", "operators");
            for r in &reads {
                println!("{:<15} {:<24} {:<30} {}", r.at_unix_ms, r.actor, r.operators.join(" "), r.purpose);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_column_per_channel_and_reason_and_the_parts_in_each_row() {
        let row = pb::OperatorIntervalRow {
            start_local: "2026-10-25T02:30:00+01:00".into(),
            group: "supplier-a".into(),
            logged_in_ms: 1_800_000,
            available_ms: 600_000,
            on_contact_ms: [("voice".to_owned(), 600_000u64)].into(),
            paused_ms: [("lunch".to_owned(), 600_000u64)].into(),
            operators: 2,
            ..Default::default()
        };
        let r = pb::GetOperatorReportResponse {
            groups: vec![row],
            pause_reasons: vec![pb::PauseReason { code: "break".into(), label: "Break".into(), kind: 1 }],
            ..Default::default()
        };
        let out = csv(&r);
        let mut lines = out.lines();
        let head: Vec<&str> = lines.next().expect("header").split(',').collect();
        let row: Vec<&str> = lines.next().expect("row").split(',').collect();
        assert_eq!(head.len(), row.len());
        let col = |name: &str| row[head.iter().position(|h| *h == name).expect(name)];
        assert_eq!((col("on_voice_ms"), col("paused_break_ms"), col("paused_lunch_ms")), ("600000", "0", "600000"));
        assert_eq!(hms(3_723_000), "1:02:03");
    }
}
