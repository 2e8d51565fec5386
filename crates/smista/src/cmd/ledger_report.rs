//! `smista ledger report`: spend per budget, period, queue and supplier, read from the ledger
//! file (safe while the server runs: SQLite WAL readers do not block the writer).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use smista_ledger::{Ledger, ReportRow};
use smista_server::config::Config;

/// `smista ledger`.
#[derive(Debug, clap::Args)]
pub(crate) struct LedgerArgs {
    #[command(subcommand)]
    cmd: LedgerCmd,
}

#[derive(Debug, clap::Subcommand)]
enum LedgerCmd {
    /// Spend per budget, period, queue and supplier, with totals per budget and period.
    Report {
        /// Configuration of the server (for the data directory and the supplier of each group;
        /// default: the embedded demo).
        #[arg(long, env = "SMISTA_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory holding `ledger.db` (default: the configuration's).
        #[arg(long, env = "SMISTA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Serialize)]
struct Line {
    budget: String,
    period: String,
    queue: String,
    operator_group: String,
    supplier: String,
    contacts: i64,
    hung_up: i64,
    cost_cents: i64,
    handle_seconds: i64,
}

#[derive(Debug, Serialize)]
struct Total {
    budget: String,
    period: String,
    contacts: i64,
    cost_cents: i64,
}

#[derive(Debug, Serialize)]
struct Report {
    lines: Vec<Line>,
    totals: Vec<Total>,
}

pub(crate) fn run(args: LedgerArgs) -> ExitCode {
    let LedgerCmd::Report { config, data_dir, format } = args.cmd;
    let cfg = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ledger = cfg.ledger.clone();
    if let Ok(url) = std::env::var("SMISTA_LEDGER_URL") {
        ledger.url = url;
    }
    let target = match ledger.target(&data_dir.unwrap_or_else(|| cfg.server.data_dir.clone())) {
        // A report never creates a ledger.
        Some(smista_ledger::Target::Sqlite { path, .. }) => smista_ledger::Target::Sqlite { path, create: false },
        Some(t) => t,
        None => {
            eprintln!("error: [ledger] kind = \"none\": there is no ledger to report on");
            return ExitCode::FAILURE;
        }
    };
    let rows = match read(&target) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let suppliers: HashMap<&str, &str> =
        cfg.groups.iter().filter_map(|g| g.supplier.as_deref().map(|s| (g.name.as_str(), s))).collect();
    match render(rows, &suppliers, format) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The report of `rows` in `format`, with totals per budget and period (also `smista report
/// spend`'s, from the server's rows).
pub(crate) fn render(
    rows: Vec<ReportRow>,
    suppliers: &HashMap<&str, &str>,
    format: Format,
) -> Result<String, serde_json::Error> {
    let report = build(rows, suppliers);
    Ok(match format {
        Format::Table => table(&report),
        Format::Csv => csv(&report),
        Format::Json => serde_json::to_string(&report)? + "\n",
    })
}

fn read(target: &smista_ledger::Target) -> Result<Vec<ReportRow>, smista_ledger::LedgerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| smista_ledger::LedgerError::Storage(e.to_string()))?;
    rt.block_on(async {
        let ledger = Ledger::connect(target).await?;
        let rows = ledger.report().await;
        ledger.close().await;
        rows
    })
}

fn build(rows: Vec<ReportRow>, suppliers: &HashMap<&str, &str>) -> Report {
    let mut totals: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let lines = rows
        .into_iter()
        .map(|r| {
            let t = totals.entry((r.budget.clone(), r.period.clone())).or_default();
            t.0 += r.contacts;
            t.1 += r.cost_cents;
            Line {
                supplier: suppliers
                    .get(r.operator_group.as_str())
                    .map_or_else(|| r.operator_group.clone(), |s| (*s).to_owned()),
                budget: r.budget,
                period: r.period,
                queue: r.queue,
                operator_group: r.operator_group,
                contacts: r.contacts,
                hung_up: r.hung_up,
                cost_cents: r.cost_cents,
                handle_seconds: r.handle_ms / 1000,
            }
        })
        .collect();
    let totals = totals
        .into_iter()
        .map(|((budget, period), (contacts, cost_cents))| Total { budget, period, contacts, cost_cents })
        .collect();
    Report { lines, totals }
}

fn euros(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<14} {:<16} {:<18} {:<22} {:>9} {:>8} {:>14} {:>12}",
        "BUDGET", "PERIOD", "QUEUE", "GROUP", "SUPPLIER", "CONTACTS", "HUNG UP", "COST (EUR)", "HANDLE (h)"
    );
    for l in &r.lines {
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:<16} {:<18} {:<22} {:>9} {:>8} {:>14} {:>12.1}",
            l.budget,
            l.period,
            l.queue,
            l.operator_group,
            l.supplier,
            l.contacts,
            l.hung_up,
            euros(l.cost_cents),
            l.handle_seconds as f64 / 3600.0
        );
    }
    for t in &r.totals {
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:<16} {:<18} {:<22} {:>9} {:>8} {:>14}",
            t.budget,
            t.period,
            "TOTAL",
            "",
            "",
            t.contacts,
            "",
            euros(t.cost_cents)
        );
    }
    if r.lines.is_empty() {
        out.push_str("(no settled contacts)\n");
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(r: &Report) -> String {
    let mut out =
        String::from("budget,period,queue,operator_group,supplier,contacts,hung_up,cost_cents,handle_seconds\n");
    for l in &r.lines {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            csv_field(&l.budget),
            csv_field(&l.period),
            csv_field(&l.queue),
            csv_field(&l.operator_group),
            csv_field(&l.supplier),
            l.contacts,
            l.hung_up,
            l.cost_cents,
            l.handle_seconds
        );
    }
    out
}
