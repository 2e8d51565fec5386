//! Budget leases: several nodes spending one budget never overspend together.
//!
//! PostgreSQL keeps, per budget and period, a *pool* (the ceiling and the sum granted to nodes)
//! and each node's *lease* (its cumulative grant and when it expires). A node spends locally,
//! lock-free, only within its lease (settled + reserved <= lease), and asks for more before it
//! runs out. Invariant: `pool.granted = sum of leases <= min(ceiling, cap)` at every grant, so
//! the money all nodes may commit together never passes the ceiling (as Google's Doorman never
//! leases more than capacity).
//!
//! Every statement here locks the pool row first (`FOR UPDATE`, which every later part of the
//! statement depends on), so grants, returns and reclaims serialise on it and cannot deadlock.
//! A node that cannot renew stops admitting when its lease expires; a lease expired for longer
//! than the reclaim grace is cut back, by any other node, to what its node recorded (settled
//! cost records and holds of contacts in service), and the rest returns to the pool.
//!
//! **Fence.** Before taking a lease back, the reclaimer *fences* its node: it moves the node's
//! epoch in `node_epochs` on (committed on its own, before the reclaim reads what the node
//! recorded). The node's writer reads its epoch with a share lock in every transaction
//! (`writer.rs`), so each of its batches either committed before the fence (and is counted by
//! the reclaim) or is refused, as is every later one and every later grant: a node cut off from
//! PostgreSQL that comes back after its lease was taken back cannot record a hold or a cost out
//! of money already given to others. It must restart (a new epoch) to rejoin. Only a lease
//! renewed by the node's current epoch fences it, so a node restarted since is not fenced for
//! what its previous life left behind.

use sqlx::Row;

use crate::db::Db;
use crate::{Ledger, LedgerError};

/// A node's lease after a grant, renewal or return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What the node may have committed in the period, in all (cumulative grant).
    pub granted_cents: i64,
    /// Granted by this call (0 on a renewal that found no room, or a return).
    pub added_cents: i64,
    /// When the lease lapses unless renewed, Unix ms.
    pub expires_unix_ms: i64,
}

/// A budget's pool in one period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// The ceiling.
    pub ceiling_cents: i64,
    /// Sum of every node's lease.
    pub granted_cents: i64,
}

const ENSURE_POOL: &str = "INSERT INTO budget_pool (budget_id, period, ceiling_cents, granted_cents)
     VALUES ($1, $2, $3, 0) ON CONFLICT (budget_id, period) DO NOTHING";

/// Grants up to $4 more to node $5 of epoch $8, within min(ceiling, $3 cap), and extends its
/// lease to $6; nothing (no row) if the node's epoch has moved on (it was fenced).
const GRANT: &str = "WITH pool AS (
        SELECT GREATEST(0, LEAST(ceiling_cents, $3) - granted_cents) AS room FROM budget_pool
        WHERE budget_id = $1 AND period = $2 FOR UPDATE),
     me AS (SELECT 1 AS ok FROM node_epochs WHERE node_id = $5 AND epoch = $8),
     d AS (SELECT LEAST($4, room) AS amount FROM pool, me),
     up AS (UPDATE budget_pool SET granted_cents = granted_cents + (SELECT amount FROM d)
            WHERE budget_id = $1 AND period = $2 AND EXISTS (SELECT 1 FROM d) RETURNING granted_cents)
     INSERT INTO budget_leases (budget_id, period, node_id, granted_cents, expires_unix_ms, renewed_unix_ms, epoch)
     SELECT $1, $2, $5, amount, $6, $7, $8 FROM d WHERE EXISTS (SELECT 1 FROM up)
     ON CONFLICT (budget_id, period, node_id) DO UPDATE
        SET granted_cents = budget_leases.granted_cents + EXCLUDED.granted_cents,
            expires_unix_ms = EXCLUDED.expires_unix_ms,
            renewed_unix_ms = EXCLUDED.renewed_unix_ms,
            epoch = EXCLUDED.epoch
     RETURNING granted_cents, (SELECT amount FROM d) AS added, expires_unix_ms";

/// Cuts node $3's lease back to $4 (never below 0, never up), the difference back to the pool.
const GIVE_BACK: &str = "WITH pool AS (
        SELECT 1 AS locked FROM budget_pool WHERE budget_id = $1 AND period = $2 FOR UPDATE),
     l AS (SELECT granted_cents, GREATEST(0, granted_cents - GREATEST($4, 0)) AS back FROM budget_leases, pool
           WHERE budget_id = $1 AND period = $2 AND node_id = $3),
     up AS (UPDATE budget_pool SET granted_cents = granted_cents - (SELECT back FROM l)
            WHERE budget_id = $1 AND period = $2 AND EXISTS (SELECT 1 FROM l) RETURNING 1)
     UPDATE budget_leases SET granted_cents = granted_cents - (SELECT back FROM l)
     WHERE budget_id = $1 AND period = $2 AND node_id = $3 AND EXISTS (SELECT 1 FROM up)
     RETURNING granted_cents, expires_unix_ms";

/// Fences the nodes (other than $3) whose lease on $1/$2, renewed by their current epoch, expired
/// before $4: their epoch moves on. It waits for any batch of theirs in flight (share lock).
const FENCE_EXPIRED: &str = "UPDATE node_epochs n SET epoch = n.epoch + 1 FROM budget_leases l
     WHERE l.budget_id = $1 AND l.period = $2 AND l.node_id <> $3 AND l.expires_unix_ms < $4
       AND l.node_id = n.node_id AND l.epoch = n.epoch
     RETURNING n.node_id";

/// Leases of other nodes expired before $4 are cut back to what their node recorded.
const RECLAIM: &str = "WITH pool AS (
        SELECT 1 AS locked FROM budget_pool WHERE budget_id = $1 AND period = $2 FOR UPDATE),
     dead AS (
        SELECT l.node_id, l.granted_cents,
               COALESCE((SELECT SUM(c.cost_cents) FROM cost_records c
                         WHERE c.budget_id = $1 AND c.period = $2 AND c.node_id = l.node_id), 0)
             + COALESCE((SELECT SUM(h.amount_cents) FROM holds h
                         WHERE h.budget_id = $1 AND h.period = $2 AND h.node_id = l.node_id), 0) AS used
        FROM budget_leases l, pool
        WHERE l.budget_id = $1 AND l.period = $2 AND l.node_id <> $3 AND l.expires_unix_ms < $4),
     back AS (SELECT node_id, GREATEST(0, granted_cents - used) AS back FROM dead),
     upl AS (UPDATE budget_leases l SET granted_cents = l.granted_cents - b.back
             FROM back b WHERE l.budget_id = $1 AND l.period = $2 AND l.node_id = b.node_id AND b.back > 0
             RETURNING b.back)
     UPDATE budget_pool SET granted_cents = granted_cents - (SELECT COALESCE(SUM(back), 0) FROM upl)
     WHERE budget_id = $1 AND period = $2
     RETURNING CAST((SELECT COALESCE(SUM(back), 0) FROM upl) AS BIGINT) AS reclaimed";

/// Takes the pool's row lock in a statement of its own, at the start of a transaction. A
/// statement that waits for that lock inside a CTE keeps the snapshot it started with, so two
/// nodes reclaiming the same expired lease at once both computed what to take back from the
/// lease as it was before the other's reclaim, and took it back twice (a lease cut below zero,
/// and the pool lending out money a node had recorded: the ledger passed the ceiling). Locked
/// first, the reclaim's own statement reads the leases as the previous holder left them.
async fn lock_pool(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    budget: &str,
    period: &str,
) -> Result<(), LedgerError> {
    sqlx::query("SELECT 1 FROM budget_pool WHERE budget_id = $1 AND period = $2 FOR UPDATE")
        .bind(budget)
        .bind(period)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Ledger {
    fn pg(&self) -> Result<&sqlx::PgPool, LedgerError> {
        match &self.db {
            Db::Postgres(p) => Ok(p),
            Db::Sqlite(_) => Err(LedgerError::Storage("budget leases need the PostgreSQL ledger".into())),
        }
    }

    /// This node's id.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Asks for `want_cents` more of `budget` in `period` (0: renew only) and extends this node's
    /// lease to `expires_unix_ms`. Grants what fits under `min(ceiling, cap_cents)`, possibly
    /// less than asked or nothing. `ceiling_cents` creates the pool if this is the period's first
    /// grant.
    #[allow(clippy::too_many_arguments)]
    pub async fn acquire_lease(
        &self,
        budget: &str,
        period: &str,
        ceiling_cents: i64,
        cap_cents: i64,
        want_cents: i64,
        expires_unix_ms: i64,
        now_unix_ms: i64,
    ) -> Result<Lease, LedgerError> {
        let p = self.pg()?;
        self.check_fence()?;
        sqlx::query(ENSURE_POOL).bind(budget).bind(period).bind(ceiling_cents).execute(p).await?;
        let row = sqlx::query(GRANT)
            .bind(budget)
            .bind(period)
            .bind(cap_cents)
            .bind(want_cents.max(0))
            .bind(&self.node)
            .bind(expires_unix_ms)
            .bind(now_unix_ms)
            .bind(self.epoch)
            .fetch_optional(p)
            .await?;
        let Some(row) = row else {
            // The pool exists (just ensured): only a moved epoch refuses a grant.
            self.fenced.send_replace(true);
            return Err(LedgerError::Fenced(self.node.clone()));
        };
        Ok(Lease { granted_cents: row.try_get(0)?, added_cents: row.try_get(1)?, expires_unix_ms: row.try_get(2)? })
    }

    /// Gives back what this node's lease holds beyond `keep_cents` (what it has committed).
    /// `None` if it holds no lease on that period.
    pub async fn give_back_lease(
        &self,
        budget: &str,
        period: &str,
        keep_cents: i64,
    ) -> Result<Option<Lease>, LedgerError> {
        let p = self.pg()?;
        let mut tx = p.begin().await?;
        lock_pool(&mut tx, budget, period).await?;
        let row = sqlx::query(GIVE_BACK)
            .bind(budget)
            .bind(period)
            .bind(&self.node)
            .bind(keep_cents)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| Ok(Lease { granted_cents: r.try_get(0)?, added_cents: 0, expires_unix_ms: r.try_get(1)? }))
            .transpose()
    }

    /// Cuts back every other node's lease on `budget`/`period` that expired before
    /// `expired_before_unix_ms` to what that node recorded, after fencing that node; returns the
    /// cents back in the pool.
    pub async fn reclaim_expired_leases(
        &self,
        budget: &str,
        period: &str,
        expired_before_unix_ms: i64,
    ) -> Result<i64, LedgerError> {
        let p = self.pg()?;
        // Two statements, each its own transaction: the reclaim must read what the fenced node
        // recorded with a snapshot taken after the fence (in one statement it would not see a
        // batch that committed while the fence waited for its lock).
        sqlx::query(FENCE_EXPIRED)
            .bind(budget)
            .bind(period)
            .bind(&self.node)
            .bind(expired_before_unix_ms)
            .fetch_all(p)
            .await?;
        let mut tx = p.begin().await?;
        lock_pool(&mut tx, budget, period).await?;
        let row = sqlx::query(RECLAIM)
            .bind(budget)
            .bind(period)
            .bind(&self.node)
            .bind(expired_before_unix_ms)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0))
    }

    /// The pool of `budget` in `period`, if any node took a lease on it.
    pub async fn pool(&self, budget: &str, period: &str) -> Result<Option<Pool>, LedgerError> {
        let p = self.pg()?;
        let row =
            sqlx::query("SELECT ceiling_cents, granted_cents FROM budget_pool WHERE budget_id = $1 AND period = $2")
                .bind(budget)
                .bind(period)
                .fetch_optional(p)
                .await?;
        row.map(|r| Ok(Pool { ceiling_cents: r.try_get(0)?, granted_cents: r.try_get(1)? })).transpose()
    }

    /// Every node's lease on `budget` in `period`: (node, granted, expires).
    pub async fn leases(&self, budget: &str, period: &str) -> Result<Vec<(String, i64, i64)>, LedgerError> {
        let p = self.pg()?;
        let rows = sqlx::query(
            "SELECT node_id, granted_cents, expires_unix_ms FROM budget_leases
             WHERE budget_id = $1 AND period = $2 ORDER BY node_id",
        )
        .bind(budget)
        .bind(period)
        .fetch_all(p)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Every node's current epoch: (node, epoch). A node whose epoch differs from the one it
    /// registered with ([`Ledger::epoch`]) has been fenced.
    pub async fn node_epochs(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        let p = self.pg()?;
        let rows = sqlx::query("SELECT node_id, epoch FROM node_epochs ORDER BY node_id").fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Sets the pool's ceiling (a contract amendment made on any node reaches every node's
    /// grants).
    pub async fn set_pool_ceiling(&self, budget: &str, period: &str, ceiling_cents: i64) -> Result<(), LedgerError> {
        let p = self.pg()?;
        sqlx::query(
            "INSERT INTO budget_pool (budget_id, period, ceiling_cents, granted_cents) VALUES ($1, $2, $3, 0)
             ON CONFLICT (budget_id, period) DO UPDATE SET ceiling_cents = EXCLUDED.ceiling_cents",
        )
        .bind(budget)
        .bind(period)
        .bind(ceiling_cents)
        .execute(p)
        .await?;
        Ok(())
    }
}
