//! For tests that need PostgreSQL, in every crate of the workspace: where to find it, and how to
//! drop a test's schema. One place for the rule that such tests fail, never skip, under CI.

/// The test server's URL from `SMISTA_TEST_PG_URL`. `None` (and a line on stderr naming `what`)
/// when it is not set outside CI; under `CI=true` a missing URL fails the test: the PostgreSQL run
/// cannot be skipped there.
#[must_use]
pub fn pg_url(what: &str) -> Option<String> {
    match std::env::var("SMISTA_TEST_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must set SMISTA_TEST_PG_URL: the PostgreSQL run of {what} cannot be skipped there"
            );
            eprintln!("SMISTA_TEST_PG_URL is not set: PostgreSQL run of {what} skipped");
            None
        }
    }
}

/// Drops a test's schema (and everything in it); errors are ignored.
pub async fn drop_schema(url: &str, schema: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(url).await {
        let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await;
        pool.close().await;
    }
}

/// A schema name for one test run: `t_<tag>_<pid>_<time>`, unique even when a process id is
/// reused (a run that failed before its cleanup leaves its schema behind, and a later process with
/// the same id must not find that schema's rows).
#[must_use]
pub fn schema_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // PostgreSQL cuts identifiers at 63 bytes: cut the tag, never the unique part.
    let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(30).collect();
    format!("t_{tag}_{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

/// A PostgreSQL pool whose sessions are set up exactly as the ledger's own (in `schema`), for a
/// test that plays one of a node's sessions, e.g. a writer stopped in the middle of its
/// transaction.
pub async fn ledger_session(url: &str, schema: &str) -> Result<sqlx::PgPool, crate::LedgerError> {
    let opts = crate::db::pg_options(url)?.options([("search_path", schema)]);
    Ok(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(opts).await?)
}
