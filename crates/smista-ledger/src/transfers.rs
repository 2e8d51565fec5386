//! Transfer records: an operator moved a contact on (to a queue, to a named operator through a
//! queue, or out of the centre). Written before the transfer is acknowledged, in the same group
//! commit as the leg's cost record when a budget paid it, and with the leg's service row (a hold
//! of no budget) removed in the same transaction; read back by a restart or a takeover, so a
//! contact offered again goes to the queue it was sent to and a repeated transfer answers the same.

use sqlx::Row;

use crate::db::with_db;
pub use crate::writer::{ConsultRecord, TransferRecord};
use crate::{Key, Ledger, LedgerError};

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
        consultation: r.try_get("consultation_id")?,
        accepted_unix_ms: 0,
    })
}

fn consult_from_row<'r, R>(r: &'r R) -> Result<ConsultRecord, LedgerError>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ConsultRecord {
        consultation: r.try_get("consultation_id")?,
        contact: r.try_get("contact_id")?,
        from_operator: r.try_get("from_operator")?,
        to_queue: r.try_get("to_queue")?,
        to_operator: r.try_get("to_operator")?,
        asked_unix_ms: r.try_get("asked_unix_ms")?,
    })
}

impl Ledger {
    /// Queues a transfer record ([`Ledger::durable`] of the contact waits for it).
    pub fn transferred(&self, r: TransferRecord) {
        self.submit(Key::Contact(r.contact.clone()), crate::writer::Op::Transfer(r));
    }

    /// Queues a consultation's record ([`Ledger::durable`] of the consultation's id waits for it).
    pub fn consulted(&self, r: ConsultRecord) {
        self.submit(Key::Contact(r.consultation.clone()), crate::writer::Op::Consult(r));
    }

    /// The consultation `consultation`, if one was asked for under that id.
    pub async fn consultation(&self, consultation: &str) -> Result<Option<ConsultRecord>, LedgerError> {
        let sql = self.db.sql("SELECT * FROM consultations WHERE consultation_id = ?");
        with_db!(&self.db, p => {
            let row = sqlx::query(&sql).bind(consultation).fetch_optional(p).await?;
            row.as_ref().map(consult_from_row).transpose()
        })
    }

    /// The consultations asked for about `contact` (a contact that ends after a restart ends the
    /// ones carried with it).
    pub async fn consultations_of(&self, contact: &str) -> Result<Vec<ConsultRecord>, LedgerError> {
        let sql = self.db.sql("SELECT * FROM consultations WHERE contact_id = ? ORDER BY asked_unix_ms");
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql).bind(contact).fetch_all(p).await?;
            rows.iter().map(consult_from_row).collect()
        })
    }

    /// The hand-over that ended consultation `consultation`, if it was handed over.
    pub async fn handed_over(&self, consultation: &str) -> Result<Option<TransferRecord>, LedgerError> {
        let sql = self.db.sql("SELECT * FROM transfers WHERE consultation_id = ? LIMIT 1");
        with_db!(&self.db, p => {
            let row = sqlx::query(&sql).bind(consultation).fetch_optional(p).await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    /// Every transfer of `contact`, oldest first (the detail record of a contact that ends
    /// after a restart: its first queue and its transfers).
    pub async fn transfers_of(&self, contact: &str) -> Result<Vec<TransferRecord>, LedgerError> {
        let sql = self.db.sql("SELECT * FROM transfers WHERE contact_id = ? ORDER BY at_unix_ms");
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql).bind(contact).fetch_all(p).await?;
            rows.iter().map(from_row).collect()
        })
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
