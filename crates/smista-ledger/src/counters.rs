//! What a budget counts besides money, per period and node: admissions refused and contacts
//! diverted extra budget (`budget_counters`). The server saves them every few seconds and at
//! shutdown, and a restart counts on from them (after a crash, from the last save).

use sqlx::Row;

use crate::db::with_db;
use crate::{Ledger, LedgerError};

/// One budget period's counts on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounters {
    /// The budget.
    pub budget: String,
    /// Its period's label.
    pub period: String,
    /// Admissions refused.
    pub refusals: i64,
    /// Contacts diverted extra budget.
    pub extra_budget_diversions: i64,
}

impl Ledger {
    /// Saves this node's counts (each row replaces the one of its budget and period).
    pub async fn save_budget_counters(&self, rows: &[BudgetCounters]) -> Result<(), LedgerError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = self.db.sql(
            "INSERT INTO budget_counters (budget_id, period, node_id, refusals, extra_budget_diversions)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (budget_id, period, node_id) DO UPDATE SET
               refusals = excluded.refusals, extra_budget_diversions = excluded.extra_budget_diversions",
        );
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for r in rows {
                sqlx::query(&sql)
                    .bind(&r.budget)
                    .bind(&r.period)
                    .bind(&self.node)
                    .bind(r.refusals)
                    .bind(r.extra_budget_diversions)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// This node's saved counts, every budget and period.
    pub async fn budget_counters(&self) -> Result<Vec<BudgetCounters>, LedgerError> {
        let sql = self.db.sql(
            "SELECT budget_id, period, refusals, extra_budget_diversions FROM budget_counters WHERE node_id = ?
             ORDER BY budget_id, period",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(&self.node)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok(BudgetCounters {
                        budget: r.try_get("budget_id")?,
                        period: r.try_get("period")?,
                        refusals: r.try_get("refusals")?,
                        extra_budget_diversions: r.try_get("extra_budget_diversions")?,
                    })
                })
                .collect()
        })
    }
}
