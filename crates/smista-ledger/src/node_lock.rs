//! One process per node on a PostgreSQL ledger. A single server (no `[cluster]`) on PostgreSQL
//! has no lease to stop a second process started with the same configuration: both would admit
//! against the same ceiling from their own memory (two books, one ceiling). [`NodeLock::take`]
//! holds a session-level advisory lock on (schema, node id) on a connection of its own for the
//! life of the process; a second process is refused with the holder's pid and host, read from
//! the holder's `application_name`.
//!
//! The lock goes with its session: when the process dies its connection closes and PostgreSQL
//! releases it at once; a machine that vanishes without closing (power loss) is found by the
//! session's TCP keepalives (set here to about 15 s) instead of the kernel's default two hours.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::{LedgerError, Target};

/// A held node lock: released when dropped or when the process ends.
#[derive(Debug)]
pub struct NodeLock {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    pool: PgPool,
    key: i64,
}

/// The advisory lock's key: a stable 62-bit hash of the schema and the node id (non-negative, so
/// `pg_locks` shows it as `classid << 32 | objid`).
fn key(schema: &str, node: &str) -> i64 {
    // FNV-1a, 64 bits: stable across versions and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "smista-node\0".bytes().chain(schema.bytes()).chain([0]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 2) as i64
}

impl NodeLock {
    /// Takes the lock of `node` on `target` (PostgreSQL; `None` for SQLite, whose data directory
    /// has its own lock), or says who holds it.
    pub async fn take(target: &Target, node: &str) -> Result<Option<NodeLock>, LedgerError> {
        let Target::Postgres { url, schema } = target else { return Ok(None) };
        let schema = schema.as_deref().unwrap_or("public");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let me = format!("smista pid {} on {}", std::process::id(), host.trim());
        let opts = crate::db::pg_options(url)?.application_name(&me).options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "5"),
        ]);
        // A pool of one connection that never closes it on its own: the lock lives with it.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        let mut conn = pool.acquire().await?;
        let k = key(schema, node);
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(k).fetch_one(&mut *conn).await?;
        if got {
            return Ok(Some(NodeLock { conn, pool, key: k }));
        }
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND ((CAST(l.classid AS BIGINT) << 32) | CAST(l.objid AS BIGINT)) = $1
             LIMIT 1",
        )
        .bind(k)
        .fetch_optional(&mut *conn)
        .await?;
        let node = if node.is_empty() { "(single node)" } else { node };
        Err(LedgerError::InUse(format!(
            "node {node} of schema {schema} is already served by {}: one process per node (stop it, or give this one another node id)",
            holder.filter(|h| !h.is_empty()).unwrap_or_else(|| "another session".into())
        )))
    }
}

impl NodeLock {
    /// Unlocks and closes the session, returning once PostgreSQL has let the lock go (dropping
    /// the lock closes the session in the background instead).
    pub async fn release(self) {
        let NodeLock { mut conn, pool, key } = self;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *conn).await;
        drop(conn);
        pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_stable_non_negative_and_tell_schema_and_node_apart() {
        assert!(super::key("s", "n") >= 0);
        assert_eq!(super::key("s", "n"), super::key("s", "n"));
        assert_ne!(super::key("s", "n"), super::key("sn", ""));
        assert_ne!(super::key("s", "a"), super::key("s", "b"));
    }
}
