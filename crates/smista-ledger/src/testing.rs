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
