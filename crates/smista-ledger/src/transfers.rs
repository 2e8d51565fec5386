//! Transfer records: an operator moved a contact on (to a queue, to a named operator through a
//! queue, or out of the centre). Written before the transfer is acknowledged, in the same group
//! commit as the leg's cost record when a budget paid it, and with the leg's service row (a hold
//! of no budget) removed in the same transaction; read back by a restart or a takeover, so a
//! contact offered again goes to the queue it was sent to and a repeated transfer answers the same.

use sqlx::Row;

use crate::db::with_db;
use crate::{Key, Ledger, LedgerError};

/// One transfer of a contact, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferRecord {
    /// The contact.
    pub contact: String,
    /// When the leg ended, Unix ms.
    pub at_unix_ms: i64,
    /// The operator whose leg ended.
    pub from_operator: String,
    /// The queue of that leg.
    pub from_queue: String,
    /// The queue the next leg waits in; empty: out of the centre.
    pub to_queue: String,
    /// The operator named for the next leg, if any.
    pub to_operator: String,
    /// Until when only `to_operator` may take it, Unix ms (0: no one named).
    pub pinned_until_unix_ms: i64,
    /// The leg's handle time.
    pub handle_ms: u64,
    /// The wrap-up that started.
    pub wrap_up_ms: u64,
    /// When the contact first arrived, Unix ms (it keeps its place).
    pub arrived_unix_ms: i64,
    /// The budgets that settled its legs so far (the per-contact fee across legs).
    pub paid: Vec<String>,
}

pub(crate) const INSERT_TRANSFER: &str = "INSERT INTO transfers (contact_id, at_unix_ms, from_operator, from_queue,
     to_queue, to_operator, pinned_until_unix_ms, handle_ms, wrap_up_ms, arrived_unix_ms, paid, node_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (contact_id, at_unix_ms) DO NOTHING";
/// The leg's service row (a hold of no budget) ends with the leg.
pub(crate) const END_SERVICE: &str = "DELETE FROM holds WHERE budget_id = '' AND contact_id = ?";

fn from_row<'r, R>(r: &'r R) -> Result<TransferRecord, LedgerError>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let paid: String = r.try_get("paid")?;
    Ok(TransferRecord {
        contact: r.try_get("contact_id")?,
        at_unix_ms: r.try_get("at_unix_ms")?,
        from_operator: r.try_get("from_operator")?,
        from_queue: r.try_get("from_queue")?,
        to_queue: r.try_get("to_queue")?,
        to_operator: r.try_get("to_operator")?,
        pinned_until_unix_ms: r.try_get("pinned_until_unix_ms")?,
        handle_ms: u64::try_from(r.try_get::<i64, _>("handle_ms")?).unwrap_or(0),
        wrap_up_ms: u64::try_from(r.try_get::<i64, _>("wrap_up_ms")?).unwrap_or(0),
        arrived_unix_ms: r.try_get("arrived_unix_ms")?,
        paid: paid.split(',').filter(|b| !b.is_empty()).map(str::to_owned).collect(),
    })
}

impl Ledger {
    /// Queues a transfer record ([`Ledger::durable`] of the contact waits for it).
    pub fn transferred(&self, r: TransferRecord) {
        self.submit(Key::Contact(r.contact.clone()), crate::writer::Op::Transfer(r));
    }

    /// The latest transfer of `contact` by `operator` (a repeated transfer after a restart).
    pub async fn transfer_of(&self, contact: &str, operator: &str) -> Result<Option<TransferRecord>, LedgerError> {
        let sql = self
            .db
            .sql("SELECT * FROM transfers WHERE contact_id = ? AND from_operator = ? ORDER BY at_unix_ms DESC LIMIT 1");
        with_db!(&self.db, p => {
            let row = sqlx::query(&sql).bind(contact).bind(operator).fetch_optional(p).await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    /// The latest transfer of each contact transferred since `since_unix_ms` into a queue (not
    /// out of the centre): after a restart, such a contact offered again goes to that queue.
    pub async fn transfers_since(&self, since_unix_ms: i64) -> Result<Vec<TransferRecord>, LedgerError> {
        let sql = self.db.sql(
            "SELECT t.* FROM transfers t WHERE t.at_unix_ms >= ? AND t.to_queue <> ''
             AND t.at_unix_ms = (SELECT MAX(u.at_unix_ms) FROM transfers u WHERE u.contact_id = t.contact_id)",
        );
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql).bind(since_unix_ms).fetch_all(p).await?;
            rows.iter().map(from_row).collect()
        })
    }
}
