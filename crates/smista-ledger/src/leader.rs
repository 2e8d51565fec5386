//! Leadership of an active/standby group on PostgreSQL: exactly one node of a group routes at a
//! time, by a lease row in `leaders` whose *epoch* grows with every change of holder.
//!
//! - A standby calls [`Elector::try_acquire`] every few hundred milliseconds: it takes the lease
//!   only if it has expired (or was released), and the epoch moves on.
//! - The active calls [`Elector::renew`] well within the lease's time to live; `false` means
//!   another node holds it now. It must stop routing before the lease it last renewed can expire
//!   elsewhere: it counts the time to live from *before* it sent the renewal, on its own
//!   monotonic clock, so neither network delay nor clock skew can make it late.
//! - Expiry is judged on the database's clock (`clock_timestamp()`), never on a node's.
//! - A planned handover [`release`s](Elector::release) the lease: a standby takes it at its next
//!   attempt instead of waiting for expiry.
//!
//! The lease says who may route; the ledger's own fence (`node_epochs`, see `writer.rs`) says
//! whose writes count. The group's active opens the ledger under the group's name, which moves
//! that name's epoch on and so refuses every later write of the previous active, even one that
//! was paused or partitioned and does not know yet that it lost the lease.

use sqlx::Row;

use crate::db::{self, Db};
use crate::{LedgerError, Target};

/// The database's clock, Unix ms.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// Who holds a group's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The holder's node id.
    pub node: String,
    /// The lease's epoch: one more at every change of holder.
    pub epoch: i64,
    /// Where clients reach the holder (its advertised gRPC address).
    pub address: String,
    /// Whether the lease is still valid (not expired, not released).
    pub live: bool,
}

/// One node's view of its group's leadership.
#[derive(Debug, Clone)]
pub struct Elector {
    db: sqlx::PgPool,
    group: String,
    node: String,
    address: String,
}

impl Elector {
    /// Connects to the group's database (creating the tables if needed) as `node`, reachable by
    /// clients at `address`. PostgreSQL only.
    pub async fn connect(target: &Target, group: &str, node: &str, address: &str) -> Result<Elector, LedgerError> {
        let (db, _) = db::open_small(target).await?;
        let Db::Postgres(db) = db else {
            return Err(LedgerError::Storage("active/standby needs the PostgreSQL ledger".into()));
        };
        Ok(Elector { db, group: group.to_owned(), node: node.to_owned(), address: address.to_owned() })
    }

    /// Takes the lease for `ttl_ms` if nobody holds a valid one: `Some(epoch)` when this node is
    /// now the active one (a new epoch), `None` when another node holds it.
    pub async fn try_acquire(&self, ttl_ms: i64) -> Result<Option<i64>, LedgerError> {
        let sql = format!(
            "INSERT INTO leaders (grp, node_id, epoch, expires_unix_ms, address) VALUES ($1, $2, 1, {NOW_MS} + $3, $4)
             ON CONFLICT (grp) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = leaders.epoch + 1,
                expires_unix_ms = EXCLUDED.expires_unix_ms, address = EXCLUDED.address
             WHERE leaders.expires_unix_ms < {NOW_MS}
             RETURNING epoch"
        );
        let row = sqlx::query(&sql)
            .bind(&self.group)
            .bind(&self.node)
            .bind(ttl_ms)
            .bind(&self.address)
            .fetch_optional(&self.db)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Extends the lease of `epoch` by `ttl_ms` from now: `false` if this node no longer holds it.
    pub async fn renew(&self, epoch: i64, ttl_ms: i64) -> Result<bool, LedgerError> {
        let sql = format!(
            "UPDATE leaders SET expires_unix_ms = {NOW_MS} + $4
             WHERE grp = $1 AND node_id = $2 AND epoch = $3 AND expires_unix_ms >= {NOW_MS}"
        );
        let done =
            sqlx::query(&sql).bind(&self.group).bind(&self.node).bind(epoch).bind(ttl_ms).execute(&self.db).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease of `epoch` up at once (a planned handover).
    pub async fn release(&self, epoch: i64) -> Result<(), LedgerError> {
        sqlx::query("UPDATE leaders SET expires_unix_ms = 0 WHERE grp = $1 AND node_id = $2 AND epoch = $3")
            .bind(&self.group)
            .bind(&self.node)
            .bind(epoch)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Who holds the group's lease, if anyone ever did.
    pub async fn current(&self) -> Result<Option<Leadership>, LedgerError> {
        let sql =
            format!("SELECT node_id, epoch, address, expires_unix_ms >= {NOW_MS} AS live FROM leaders WHERE grp = $1");
        let row = sqlx::query(&sql).bind(&self.group).fetch_optional(&self.db).await?;
        row.map(|r| {
            Ok(Leadership {
                node: r.try_get("node_id")?,
                epoch: r.try_get("epoch")?,
                address: r.try_get("address")?,
                live: r.try_get("live")?,
            })
        })
        .transpose()
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
