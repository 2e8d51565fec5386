//! Durable completions per second with group commit: `writers` concurrent tasks record cost
//! records for 5 seconds; each `record` returns only once its transaction is committed with
//! synchronous=FULL. Prints records per second and records per commit (per fsync).
//!
//! Run: `cargo run --release -p smista-ledger --example group_commit -- [writers] [postgres-url]`
//! (default 64 writers on a SQLite file; with a URL, on PostgreSQL in a fresh schema, dropped
//! after).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smista_core::book::CostRecord;
use smista_core::Channel;
use smista_ledger::{Ledger, Target};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let writers: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let dir = std::env::temp_dir().join(format!("smista-group-commit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pg = std::env::args().nth(2);
    let schema = format!("bench_group_commit_{}", std::process::id());
    let target = match &pg {
        Some(url) => Target::Postgres { url: url.clone(), schema: Some(schema.clone()) },
        None => Target::Sqlite { path: dir.join("ledger.db"), create: true },
    };
    let ledger = Arc::new(Ledger::connect(&target).await?);
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(5);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (ledger, done) = (ledger.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                let r = CostRecord {
                    contact: format!("w{w}-c{i}"),
                    budget: "ccm-2026".into(),
                    period: "2026-11".into(),
                    queue: "pensions".into(),
                    group: "supplier-a".into(),
                    operator: "op-1".into(),
                    channel: Channel::Voice,
                    accepted_unix_ms: 0,
                    completed_unix_ms: 180_000,
                    handle_ms: 180_000,
                    cost_cents: 266,
                    reserved_cents: 410,
                    outcome: smista_core::Outcome::Completed,
                };
                if ledger.record(r).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let commits = ledger.commits().max(1);
    println!(
        "{} {writers} writers: {:.0} durable completions/s, {:.1} records per commit ({} commits in {:.1} s)",
        if pg.is_some() { "postgres" } else { "sqlite" },
        n as f64 / secs,
        n as f64 / commits as f64,
        commits,
        secs
    );
    if let Ok(l) = Arc::try_unwrap(ledger) {
        l.close().await;
    }
    std::fs::remove_dir_all(&dir)?;
    if let Some(url) = &pg {
        let pool = sqlx::PgPool::connect(url).await?;
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await?;
    }
    Ok(())
}
