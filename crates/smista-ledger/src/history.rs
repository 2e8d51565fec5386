//! The contact history: one *contact detail record* per life of every contact, budgeted or not,
//! written through the group commit as [`ContactEnd`]s, read back here by arrival for the
//! interval reports. A budgeted contact whose end is committed with its cost record has its
//! detail in the record's columns (one row, not two); every other end is a row of
//! `contact_ends`, purged after the retention (cost records are the money ledger: kept).
//!
//! Lists inside a record are stored as text: the overflow path as queue names separated by
//! commas, the offers as `operator/group/outcome` separated by commas (outcome `a` accepted, `d`
//! declined, `t` timed out, `w` withdrawn: the operator logged out or the caller hung up first).
//! `%`, `/` and `,` inside a name are written `%25`, `%2F` and `%2C`.

use sqlx::Row;

use crate::db::with_db;
use crate::{channel, diversion, outcome, ContactEnd, Ledger, LedgerError};

/// What an operator did with one offer of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    /// Accepted: the contact went into service with them.
    Accepted,
    /// Declined.
    Declined,
    /// Not answered in time.
    TimedOut,
    /// Taken back before an answer (the operator logged out, the caller hung up, or the offer
    /// was still pending when the record was written).
    Withdrawn,
}

impl OfferOutcome {
    fn code(self) -> char {
        match self {
            OfferOutcome::Accepted => 'a',
            OfferOutcome::Declined => 'd',
            OfferOutcome::TimedOut => 't',
            OfferOutcome::Withdrawn => 'w',
        }
    }

    fn from_code(c: &str) -> Option<Self> {
        Some(match c {
            "a" => OfferOutcome::Accepted,
            "d" => OfferOutcome::Declined,
            "t" => OfferOutcome::TimedOut,
            "w" => OfferOutcome::Withdrawn,
            _ => return None,
        })
    }

    /// Lower-case name, for reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OfferOutcome::Accepted => "accepted",
            OfferOutcome::Declined => "declined",
            OfferOutcome::TimedOut => "timed_out",
            OfferOutcome::Withdrawn => "withdrawn",
        }
    }
}

/// One offer of a contact to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRecord {
    /// The operator.
    pub operator: String,
    /// Their group.
    pub group: String,
    /// What came of it.
    pub outcome: OfferOutcome,
}

/// The detail of a contact's life beyond how it ended (see [`ContactEnd`]). Empty or zero where
/// unknown: a contact in service across a restart has no arrival or offers on record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// When the contact first arrived (its original arrival when offered again after a
    /// failover), Unix ms; 0 if unknown.
    pub arrived_unix_ms: i64,
    /// When this life was offered to smista, Unix ms; 0 if unknown.
    pub received_unix_ms: i64,
    /// When an operator accepted it, Unix ms; 0 if none did.
    pub answered_unix_ms: i64,
    /// The queue the platform offered it to (its service line).
    pub first_queue: String,
    /// The queues it overflowed into, in order.
    pub overflows: Vec<String>,
    /// The caller's segment (`general`, `vulnerable`, ...).
    pub segment: String,
    /// Every offer to an operator, in order.
    pub offers: Vec<OfferRecord>,
    /// The group of the operator who had it in service.
    pub group: String,
    /// That group's supplier ("" for internal staff).
    pub supplier: String,
    /// The budget charged ("" if none).
    pub budget: String,
    /// What it cost that budget, cents.
    pub cost_cents: i64,
    /// The keyed hash of the caller (only when `[history] keep_caller_key`), else "".
    pub caller_key: String,
    /// Its operators' transfers, in order: (the queue of the leg that ended, the queue the next
    /// leg waited in; "" when it left the centre).
    pub transfers: Vec<(String, String)>,
    /// A consultation (OperatorService.ConsultContact): the contact it was about; "" for a
    /// contact. Reports count consultations apart from the citizens' contacts.
    pub consultation_of: String,
}

fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F").replace(',', "%2C").replace('>', "%3E")
}

fn unescape(s: &str) -> String {
    s.replace("%3E", ">").replace("%2C", ",").replace("%2F", "/").replace("%25", "%")
}

/// The overflow path as stored.
#[must_use]
pub fn encode_overflows(q: &[String]) -> String {
    q.iter().map(|x| escape(x)).collect::<Vec<_>>().join(",")
}

/// The transfers as stored: `from>to` (`to` empty out of the centre), comma-separated.
#[must_use]
pub fn encode_transfers(t: &[(String, String)]) -> String {
    t.iter().map(|(from, to)| format!("{}>{}", escape(from), escape(to))).collect::<Vec<_>>().join(",")
}

fn decode_transfers(s: &str) -> Vec<(String, String)> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',')
        .map(|x| {
            let (from, to) = x.split_once('>').unwrap_or((x, ""));
            (unescape(from), unescape(to))
        })
        .collect()
}

/// The offers as stored.
#[must_use]
pub fn encode_offers(o: &[OfferRecord]) -> String {
    o.iter()
        .map(|x| format!("{}/{}/{}", escape(&x.operator), escape(&x.group), x.outcome.code()))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_overflows(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(unescape).collect()
}

fn decode_offers(s: &str) -> Result<Vec<OfferRecord>, LedgerError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|o| {
            let mut p = o.split('/');
            match (p.next(), p.next(), p.next().and_then(OfferOutcome::from_code), p.next()) {
                (Some(op), Some(g), Some(outcome), None) => {
                    Ok(OfferRecord { operator: unescape(op), group: unescape(g), outcome })
                }
                _ => Err(LedgerError::Storage(format!("unreadable offer `{o}` in the history"))),
            }
        })
        .collect()
}

/// A `contact_ends` row.
pub(crate) fn end_from_row<'r, R>(r: &'r R) -> Result<ContactEnd, LedgerError>
where
    R: Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let ms = |c: &'static str| -> Result<u64, LedgerError> { Ok(u64::try_from(r.try_get::<i64, _>(c)?).unwrap_or(0)) };
    let ch: String = r.try_get("channel")?;
    let oc: String = r.try_get("outcome")?;
    Ok(ContactEnd {
        contact: r.try_get("contact_id")?,
        ended_unix_ms: r.try_get("ended_unix_ms")?,
        queue: r.try_get("queue")?,
        channel: channel(&ch)?,
        outcome: outcome(&oc)?,
        waited_ms: ms("waited_ms")?,
        handle_ms: ms("handle_ms")?,
        wrap_up_ms: ms("wrap_up_ms")?,
        operator: r.try_get("operator_id")?,
        diverted: diversion(&r.try_get::<String, _>("divert_reason")?, &r.try_get::<String, _>("fallback")?),
        detail: Detail {
            arrived_unix_ms: r.try_get("arrived_unix_ms")?,
            received_unix_ms: r.try_get("received_unix_ms")?,
            answered_unix_ms: r.try_get("answered_unix_ms")?,
            first_queue: r.try_get("first_queue")?,
            overflows: decode_overflows(&r.try_get::<String, _>("overflows")?),
            segment: r.try_get("segment")?,
            offers: decode_offers(&r.try_get::<String, _>("offers")?)?,
            group: r.try_get("operator_group")?,
            supplier: r.try_get("supplier")?,
            budget: r.try_get("budget_id")?,
            cost_cents: r.try_get("cost_cents")?,
            caller_key: r.try_get("caller_key")?,
            transfers: decode_transfers(&r.try_get::<String, _>("transfers")?),
            consultation_of: r.try_get("consultation_of")?,
        },
    })
}

/// The columns of a detail record, from `contact_ends`.
const END_SELECT: &str = "contact_id, ended_unix_ms, queue, channel, outcome, waited_ms, handle_ms, wrap_up_ms,
    operator_id, divert_reason, fallback, node_id, arrived_unix_ms, received_unix_ms, answered_unix_ms, first_queue,
    overflows, segment, offers, operator_group, supplier, budget_id, cost_cents, caller_key, transfers, consultation_of
    FROM contact_ends";

/// The same columns from a cost record that carries its contact's detail (arrival set).
const RECORD_SELECT: &str = "contact_id, completed_unix_ms AS ended_unix_ms, queue, channel, outcome, waited_ms,
    handle_ms, wrap_up_ms, operator_id, '' AS divert_reason, '' AS fallback, node_id, arrived_unix_ms,
    received_unix_ms, answered_unix_ms, first_queue, overflows, segment, offers, operator_group, supplier, budget_id,
    cost_cents, caller_key, transfers, consultation_of FROM cost_records";

/// The latest detail record of one contact (bind the id twice).
pub(crate) fn latest_of_sql() -> String {
    format!(
        "SELECT * FROM (SELECT {END_SELECT} WHERE contact_id = ?
            UNION ALL SELECT {RECORD_SELECT} WHERE contact_id = ? AND arrived_unix_ms > 0) h
         ORDER BY ended_unix_ms DESC LIMIT 1"
    )
}

/// Where a page of the history ends: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryCursor {
    /// Arrival of the last record read, Unix ms.
    pub arrived_unix_ms: i64,
    /// Its contact id.
    pub contact: String,
    /// Its end, Unix ms.
    pub ended_unix_ms: i64,
}

impl Ledger {
    /// Up to `limit` contact detail records of contacts that arrived in `[from, to)` (Unix ms),
    /// in order of (arrival, contact, end), after `after` (a cursor from the previous page).
    /// Every node's records: the history is the centre's, not a node's.
    pub async fn history_page(
        &self,
        from_unix_ms: i64,
        to_unix_ms: i64,
        after: Option<&HistoryCursor>,
        limit: u32,
    ) -> Result<Vec<ContactEnd>, LedgerError> {
        let sql = self.db.sql(&format!(
            "SELECT * FROM (
                SELECT {END_SELECT} WHERE arrived_unix_ms >= ? AND arrived_unix_ms < ?
                UNION ALL
                SELECT {RECORD_SELECT} WHERE arrived_unix_ms >= ? AND arrived_unix_ms < ? AND arrived_unix_ms > 0
             ) h
             WHERE arrived_unix_ms > ? OR (arrived_unix_ms = ? AND (contact_id > ? OR (contact_id = ? AND ended_unix_ms > ?)))
             ORDER BY arrived_unix_ms, contact_id, ended_unix_ms LIMIT ?"
        ))
        .into_owned();
        let c = after.cloned().unwrap_or(HistoryCursor {
            arrived_unix_ms: from_unix_ms - 1,
            contact: String::new(),
            ended_unix_ms: i64::MIN,
        });
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(from_unix_ms)
                .bind(to_unix_ms)
                .bind(from_unix_ms)
                .bind(to_unix_ms)
                .bind(c.arrived_unix_ms)
                .bind(c.arrived_unix_ms)
                .bind(&c.contact)
                .bind(&c.contact)
                .bind(c.ended_unix_ms)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
                .iter()
                .map(end_from_row)
                .collect()
        })
    }

    /// This node's contact detail records of lives that ended since `since_unix_ms` (a restart
    /// rebuilds the live service level's window from them).
    pub async fn ended_since(&self, since_unix_ms: i64) -> Result<Vec<ContactEnd>, LedgerError> {
        let sql = self
            .db
            .sql(&format!(
                "SELECT {END_SELECT} WHERE ended_unix_ms >= ? AND node_id = ?
                 UNION ALL
                 SELECT {RECORD_SELECT} WHERE completed_unix_ms >= ? AND node_id = ? AND arrived_unix_ms > 0"
            ))
            .into_owned();
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(since_unix_ms)
                .bind(&self.node)
                .bind(since_unix_ms)
                .bind(&self.node)
                .fetch_all(p)
                .await?
                .iter()
                .map(end_from_row)
                .collect()
        })
    }

    /// Adds staffed time (quarter-hour start, group, staffed, paused, busy ms) to this node's
    /// `staffing` rows, in one transaction (not through the group commit: a few rows every few
    /// seconds, nobody waits on them).
    pub async fn add_staffing(&self, rows: &[(i64, String, i64, i64, i64)]) -> Result<(), LedgerError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = self.db.sql(
            "INSERT INTO staffing (quarter_unix_ms, operator_group, node_id, staffed_ms, paused_ms, busy_ms)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (quarter_unix_ms, operator_group, node_id) DO UPDATE SET
               staffed_ms = staffing.staffed_ms + excluded.staffed_ms,
               paused_ms = staffing.paused_ms + excluded.paused_ms,
               busy_ms = staffing.busy_ms + excluded.busy_ms",
        );
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for (q, g, staffed, paused, busy) in rows {
                sqlx::query(&sql)
                    .bind(q)
                    .bind(g)
                    .bind(&self.node)
                    .bind(staffed)
                    .bind(paused)
                    .bind(busy)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Staffed time of every node per quarter hour starting in `[from, to)` and group:
    /// (quarter-hour start, group, staffed, paused, busy ms).
    pub async fn staffing(
        &self,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<(i64, String, i64, i64, i64)>, LedgerError> {
        let sql = self.db.sql(
            "SELECT quarter_unix_ms, operator_group, CAST(SUM(staffed_ms) AS BIGINT) AS s,
                    CAST(SUM(paused_ms) AS BIGINT) AS p, CAST(SUM(busy_ms) AS BIGINT) AS b
             FROM staffing WHERE quarter_unix_ms >= ? AND quarter_unix_ms < ?
             GROUP BY quarter_unix_ms, operator_group ORDER BY quarter_unix_ms, operator_group",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(from_unix_ms)
                .bind(to_unix_ms)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("quarter_unix_ms")?,
                        r.try_get("operator_group")?,
                        r.try_get("s")?,
                        r.try_get("p")?,
                        r.try_get("b")?,
                    ))
                })
                .collect()
        })
    }

    /// Deletes staffed time of quarter hours before `before_unix_ms`; returns how many rows.
    pub async fn purge_staffing(&self, before_unix_ms: i64) -> Result<u64, LedgerError> {
        let sql = self.db.sql("DELETE FROM staffing WHERE quarter_unix_ms < ?");
        with_db!(&self.db, p => {
            Ok(sqlx::query(&sql).bind(before_unix_ms).execute(p).await?.rows_affected())
        })
    }

    /// Deletes up to `limit` contact detail records of contacts that ended before
    /// `before_unix_ms`; returns how many. Call it until it returns less than `limit`. By the
    /// end, not the arrival: a record whose arrival is unknown (0, as an older version wrote
    /// for contacts in service across a restart) is still a record of a contact that ended
    /// just now, and is kept for the whole retention.
    pub async fn purge_history(&self, before_unix_ms: i64, limit: u32) -> Result<u64, LedgerError> {
        let sql = self.db.sql(
            "DELETE FROM contact_ends WHERE (contact_id, ended_unix_ms) IN (
                SELECT contact_id, ended_unix_ms FROM contact_ends WHERE ended_unix_ms < ? LIMIT ?)",
        );
        with_db!(&self.db, p => {
            let done = sqlx::query(&sql).bind(before_unix_ms).bind(i64::from(limit)).execute(p).await?;
            Ok(done.rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_survive_names_with_separators() {
        let offers = vec![
            OfferRecord { operator: "op/1,x%".into(), group: "g,1".into(), outcome: OfferOutcome::TimedOut },
            OfferRecord { operator: "op-2".into(), group: "supplier-a".into(), outcome: OfferOutcome::Accepted },
        ];
        assert_eq!(decode_offers(&encode_offers(&offers)).expect("decode"), offers);
        let q = vec!["a,b".to_owned(), "c%2C".to_owned()];
        assert_eq!(decode_overflows(&encode_overflows(&q)), q);
        assert!(decode_offers("op/g/z").is_err());
        assert!(decode_offers("").expect("empty").is_empty());
    }
}
