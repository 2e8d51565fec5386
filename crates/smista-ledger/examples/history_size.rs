//! Disk per contact detail record in SQLite: writes `n` realistic records (default 1,000,000)
//! through the group commit, checkpoints the WAL, and prints the file's bytes per record, with
//! and without the indexes' share, and the records written per second.
//!
//! Run: `cargo run --release -p smista-ledger --example history_size -- [n]`

use std::time::Instant;

use smista_core::{Channel, DivertReason, Fallback, Outcome};
use smista_ledger::{ContactEnd, Detail, Key, Ledger, OfferOutcome, OfferRecord, Target};

/// A record like a day of the centre makes: UUID contact ids, a few queues and groups, one offer
/// (sometimes two), some abandoned and diverted.
fn record(i: u64) -> ContactEnd {
    let queues = ["pensions", "naspi", "family-allowance", "isee", "disability"];
    let groups =
        [("supplier-a", "consorzio-alfa", "ccm-2026"), ("supplier-b", "beta-srl", "ccm-2026"), ("internal", "", "")];
    let q = queues[(i % 5) as usize];
    let (g, supplier, budget) = groups[(i % 3) as usize];
    let arrived = 1_790_000_000_000 + (i as i64) * 90;
    let kind = i % 10;
    let (outcome, diverted) = match kind {
        0 => (Outcome::Abandoned, None),
        1 => (Outcome::Diverted, Some((DivertReason::ExtraBudget, Fallback::CallbackBooking))),
        _ => (Outcome::Completed, None),
    };
    let answered = outcome == Outcome::Completed;
    let op = format!("op-{:04}", i % 3300);
    let mut offers = Vec::new();
    if answered {
        if i % 7 == 0 {
            offers.push(OfferRecord {
                operator: format!("op-{:04}", (i + 1) % 3300),
                group: g.into(),
                outcome: OfferOutcome::TimedOut,
            });
        }
        offers.push(OfferRecord { operator: op.clone(), group: g.into(), outcome: OfferOutcome::Accepted });
    }
    let wait = (i % 120) * 1000;
    ContactEnd {
        contact: format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            i as u32,
            (i >> 3) & 0xffff,
            i % 4096,
            (i * 7) % 4096,
            i * 2_654_435_761
        ),
        ended_unix_ms: arrived + wait as i64 + if answered { 240_000 } else { 0 },
        queue: q.into(),
        channel: Channel::Voice,
        outcome,
        waited_ms: wait,
        handle_ms: if answered { 240_000 } else { 0 },
        wrap_up_ms: if answered { 15_000 } else { 0 },
        operator: if answered { op } else { String::new() },
        diverted,
        detail: Detail {
            arrived_unix_ms: arrived,
            received_unix_ms: arrived,
            answered_unix_ms: if answered { arrived + wait as i64 } else { 0 },
            first_queue: q.into(),
            overflows: if i % 20 == 0 { vec!["general".into()] } else { Vec::new() },
            segment: "general".into(),
            offers,
            group: if answered { g.into() } else { String::new() },
            supplier: if answered { supplier.into() } else { String::new() },
            budget: if answered && !budget.is_empty() { budget.into() } else { String::new() },
            cost_cents: if answered && !budget.is_empty() { 270 } else { 0 },
            caller_key: String::new(),
            transfers: Vec::new(),
            consultation_of: String::new(),
        },
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("smista-history-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ledger.db");
    let empty = {
        let l = Ledger::connect(&Target::Sqlite { path: path.clone(), create: true }).await?;
        l.close().await;
        std::fs::metadata(&path)?.len()
    };
    let ledger = Ledger::connect(&Target::Sqlite { path: path.clone(), create: true }).await?;
    let start = Instant::now();
    let chunk = 2_000u64;
    let mut i = 0;
    while i < n {
        let end = (i + chunk).min(n);
        let mut last = None;
        for k in i..end {
            let r = record(k);
            last = Some(r.contact.clone());
            ledger.ended(r);
        }
        if let Some(c) = last {
            ledger.durable(&Key::Contact(c)).await?;
        }
        i = end;
    }
    let secs = start.elapsed().as_secs_f64();
    ledger.close().await;
    // Fold the WAL into the file and measure the table and its indexes.
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let pool = sqlx::SqlitePool::connect_with(opts).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
    let pages: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetch_all(&pool).await.unwrap_or_default();
    pool.close().await;
    let size = std::fs::metadata(&path)?.len();
    println!("{n} contact detail records in {secs:.1} s ({:.0} records/s through the group commit)", n as f64 / secs);
    println!(
        "file {:.1} MB, {:.0} bytes per record (the empty ledger is {} KB)",
        size as f64 / 1e6,
        (size - empty) as f64 / n as f64,
        empty / 1024
    );
    for (name, bytes) in pages.iter().filter(|(name, _)| name.contains("contact_ends")) {
        println!("  {name:<32} {:>6.0} bytes per record", *bytes as f64 / n as f64);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
