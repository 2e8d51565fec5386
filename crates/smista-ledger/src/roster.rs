//! The roster: who each operator is (display name, group, skills, channel capacities, active or
//! retired), one versioned row per operator, and its audit trail with the old and new values of
//! every change. Written through at once, in one transaction with its audit record (a change is
//! rare and its caller waits for it to be durable), never through the group commit.
//!
//! **Versions.** Every row carries a version, one more at every change. A change names the
//! version it replaces (`None`: the operator must not be on the roster yet) and is refused
//! ([`RosterWrite::Conflict`]) if another change got there first, so two nodes sharing a
//! PostgreSQL ledger never overwrite each other unseen: each re-reads and retries, and every node
//! converges on the row with the highest version ([`Ledger::roster`]). On PostgreSQL under a node
//! id the write also checks the node's epoch (share-locked, as the group commit does): a fenced
//! node's change is refused.

use sqlx::Row;

use crate::db::with_db;
use crate::{Ledger, LedgerError};

/// One operator's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterRow {
    /// Staff id.
    pub operator_id: String,
    /// Display name.
    pub display_name: String,
    /// Operator group.
    pub group: String,
    /// Skills, `pensions:7;naspi:5` (see `smista_core::roster`).
    pub skills: String,
    /// Channel capacities, `voice:1;chat:3` (empty: one voice contact).
    pub channels: String,
    /// Retired: may not log in.
    pub retired: bool,
    /// Who last set it: `config` (the configuration or roster file) or `admin` (an RPC).
    pub source: String,
    /// One more at every change (1: created).
    pub version: i64,
    /// When last changed, Unix ms.
    pub updated_unix_ms: i64,
}

/// One change in the roster's audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterAudit {
    /// The operator.
    pub operator_id: String,
    /// The row's version after the change.
    pub version: i64,
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Who: the principal's name, or `configuration`.
    pub actor: String,
    /// What kind of change: `created`, `updated`, `retired`, `reinstated`.
    pub change: String,
    /// The entry before (empty: none), as the server wrote it.
    pub old_value: String,
    /// The entry after.
    pub new_value: String,
}

/// What a roster write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RosterWrite {
    /// Committed, with its audit record.
    Written,
    /// The row's version was not the one named (another change came first): nothing written.
    Conflict,
}

/// A row of `roster` read back (a macro: the row type differs per backend).
macro_rules! roster_row {
    ($r:expr) => {{
        let r = $r;
        let retired: i64 = r.try_get("retired")?;
        Ok(RosterRow {
            operator_id: r.try_get("operator_id")?,
            display_name: r.try_get("display_name")?,
            group: r.try_get("operator_group")?,
            skills: r.try_get("skills")?,
            channels: r.try_get("channels")?,
            retired: retired != 0,
            source: r.try_get("source")?,
            version: r.try_get("version")?,
            updated_unix_ms: r.try_get("updated_unix_ms")?,
        })
    }};
}

impl Ledger {
    /// Writes `row` (its `version` the new one) if the stored row's version is `replaces`
    /// (`None`: no row yet), with `audit` in the same transaction; returns once durable.
    pub async fn put_roster(
        &self,
        row: &RosterRow,
        replaces: Option<i64>,
        audit: &RosterAudit,
    ) -> Result<RosterWrite, LedgerError> {
        self.check_fence()?;
        let fence = self.is_postgres() && !self.node.is_empty();
        let fence_sql = self.db.sql("SELECT epoch FROM node_epochs WHERE node_id = ? FOR SHARE");
        let write = match replaces {
            None => self.db.sql(
                "INSERT INTO roster (operator_id, display_name, operator_group, skills, channels, retired, source,
                                     version, updated_unix_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (operator_id) DO NOTHING",
            ),
            Some(_) => self.db.sql(
                "UPDATE roster SET display_name = ?, operator_group = ?, skills = ?, channels = ?, retired = ?,
                                   source = ?, version = ?, updated_unix_ms = ?
                 WHERE operator_id = ? AND version = ?",
            ),
        };
        let audit_sql = self.db.sql(
            "INSERT INTO roster_audit (operator_id, version, at_unix_ms, actor, change, old_value, new_value)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            if fence {
                let now: i64 = sqlx::query(&fence_sql)
                    .bind(&self.node)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(-1);
                if now != self.epoch {
                    return Err(LedgerError::Fenced(self.node.clone()));
                }
            }
            let n = match replaces {
                None => sqlx::query(&write)
                    .bind(&row.operator_id)
                    .bind(&row.display_name)
                    .bind(&row.group)
                    .bind(&row.skills)
                    .bind(&row.channels)
                    .bind(i64::from(row.retired))
                    .bind(&row.source)
                    .bind(row.version)
                    .bind(row.updated_unix_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Some(v) => sqlx::query(&write)
                    .bind(&row.display_name)
                    .bind(&row.group)
                    .bind(&row.skills)
                    .bind(&row.channels)
                    .bind(i64::from(row.retired))
                    .bind(&row.source)
                    .bind(row.version)
                    .bind(row.updated_unix_ms)
                    .bind(&row.operator_id)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
            };
            if n != 1 {
                let _ = tx.rollback().await;
                return Ok(RosterWrite::Conflict);
            }
            sqlx::query(&audit_sql)
                .bind(&audit.operator_id)
                .bind(audit.version)
                .bind(audit.at_unix_ms)
                .bind(&audit.actor)
                .bind(&audit.change)
                .bind(&audit.old_value)
                .bind(&audit.new_value)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(RosterWrite::Written)
        })
    }

    /// Every operator's row as it now stands, by id.
    pub async fn roster(&self) -> Result<Vec<RosterRow>, LedgerError> {
        let sql = self.db.sql(
            "SELECT operator_id, display_name, operator_group, skills, channels, retired, source, version,
                    updated_unix_ms
             FROM roster ORDER BY operator_id",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql).fetch_all(p).await?.iter().map(|r| roster_row!(r)).collect()
        })
    }

    /// One operator's row.
    pub async fn roster_entry(&self, operator: &str) -> Result<Option<RosterRow>, LedgerError> {
        let sql = self.db.sql(
            "SELECT operator_id, display_name, operator_group, skills, channels, retired, source, version,
                    updated_unix_ms
             FROM roster WHERE operator_id = ?",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql).bind(operator).fetch_optional(p).await?.as_ref().map(|r| roster_row!(r)).transpose()
        })
    }

    /// The roster's audit trail (one operator's, or everyone's when `operator` is empty), oldest
    /// first, from position `offset`, at most `limit` records.
    pub async fn roster_audit(&self, operator: &str, offset: i64, limit: i64) -> Result<Vec<RosterAudit>, LedgerError> {
        let sql = self.db.sql(
            "SELECT operator_id, version, at_unix_ms, actor, change, old_value, new_value FROM roster_audit
             WHERE ? = '' OR operator_id = ? ORDER BY at_unix_ms, operator_id, version LIMIT ? OFFSET ?",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(operator)
                .bind(operator)
                .bind(limit)
                .bind(offset)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok(RosterAudit {
                        operator_id: r.try_get("operator_id")?,
                        version: r.try_get("version")?,
                        at_unix_ms: r.try_get("at_unix_ms")?,
                        actor: r.try_get("actor")?,
                        change: r.try_get("change")?,
                        old_value: r.try_get("old_value")?,
                        new_value: r.try_get("new_value")?,
                    })
                })
                .collect()
        })
    }
}
