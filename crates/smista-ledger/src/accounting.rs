//! Operator accounting: every operator state change (`operator_states`, through the group
//! commit, so a reply that reports a change is sent once it is durable), each node life's last
//! sign of life (`node_lives`: a node that stopped without logging its operators out counts
//! them logged in until then), and the privacy audit of per-operator reads
//! (`operator_report_reads`, written through before the rows are returned).

use smista_core::accounting::{Change, Fact, Recorded};
use sqlx::Row;

use crate::db::with_db;
use crate::writer::Op;
use crate::{Key, Ledger, LedgerError};

/// One read of per-operator rows, as the privacy audit keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRead {
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Who: the principal's name.
    pub actor: String,
    /// The operators whose rows were returned.
    pub operators: Vec<String>,
    /// The period asked for, Unix ms.
    pub from_unix_ms: i64,
    /// Its end (exclusive), Unix ms.
    pub to_unix_ms: i64,
    /// The purpose stated.
    pub purpose: String,
    /// The node that answered ("" alone; filled in when read back).
    pub node: String,
}

/// Where a page of the privacy audit ended: the last read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCursor {
    /// Its time.
    pub at_unix_ms: i64,
    /// Its node.
    pub node: String,
    /// Its node's life.
    pub epoch: i64,
    /// Its number in that life.
    pub seq: i64,
}

impl ReadCursor {
    /// As a page token.
    #[must_use]
    pub fn token(&self) -> String {
        format!("{},{},{},{}", self.at_unix_ms, self.epoch, self.seq, self.node)
    }

    /// A page token read back (`None`: not one [`token`](Self::token) gives).
    #[must_use]
    pub fn parse(token: &str) -> Option<ReadCursor> {
        let mut it = token.splitn(4, ',');
        Some(ReadCursor {
            at_unix_ms: it.next()?.parse().ok()?,
            epoch: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
            node: it.next()?.to_owned(),
        })
    }
}

const STATE_SELECT: &str = "SELECT s.operator_id AS operator_id, s.operator_group AS operator_group,
        s.at_unix_ms AS at_unix_ms, s.fact AS fact, s.detail AS detail, s.value_ms AS value_ms,
        s.node_id AS node_id, s.epoch AS epoch, s.seq AS seq,
        COALESCE(l.seen_unix_ms, s.at_unix_ms) AS seen
     FROM operator_states s LEFT JOIN node_lives l ON l.node_id = s.node_id AND l.epoch = s.epoch";

impl Ledger {
    /// Queues an operator's state change (see `smista_core::accounting`); the ticket waits for
    /// it alone ([`Ledger::durable_ticket`]), [`Ledger::durable`] of [`Key::Operator`] for it and
    /// any later one.
    pub fn operator_changed(&self, c: Change) -> crate::Ticket {
        let seq = i64::try_from(self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX);
        let key = Key::Operator(c.operator.clone());
        self.submit(key, Op::State(c, seq))
    }

    /// Records that this life of the node runs at `now_unix_ms`, and waits until that and
    /// everything queued before it is durable.
    pub async fn alive(&self, now_unix_ms: i64) -> Result<(), LedgerError> {
        let _ = self.submit(Key::Node, Op::Alive(now_unix_ms));
        self.durable(&Key::Node).await
    }

    /// The operator state changes of `[from, to)`, and before them each operator's last change
    /// of activity in `[carry_from, from)` (the state they were in at `from`), by operator then
    /// time then as recorded; each with its writer's last sign of life (`i64::MAX` for this
    /// life of this node, which still runs).
    pub async fn operator_history(&self, from: i64, to: i64, carry_from: i64) -> Result<Vec<Recorded>, LedgerError> {
        let text = format!(
            "{STATE_SELECT} WHERE s.at_unix_ms >= ? AND s.at_unix_ms < ?
             UNION ALL
             {STATE_SELECT} JOIN (SELECT operator_id AS op, MAX(at_unix_ms) AS last FROM operator_states
                 WHERE at_unix_ms >= ? AND at_unix_ms < ? AND fact IN {STATE_FACTS} GROUP BY operator_id) m
               ON s.operator_id = m.op AND s.at_unix_ms = m.last
             WHERE s.fact IN {STATE_FACTS}
             ORDER BY operator_id, at_unix_ms, epoch, seq",
            STATE_FACTS = "('logged_out', 'available', 'on_contact', 'wrap_up', 'paused')",
        );
        let sql = self.db.sql(&text);
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql).bind(from).bind(to).bind(carry_from).bind(from).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    let (fact, detail): (String, String) = (r.try_get("fact")?, r.try_get("detail")?);
                    let fact = Fact::decode(&fact, &detail, r.try_get("value_ms")?)
                        .ok_or_else(|| LedgerError::Corrupt(format!("unknown operator fact `{fact}`")))?;
                    let (node, epoch): (String, i64) = (r.try_get("node_id")?, r.try_get("epoch")?);
                    let mine = node == self.node && epoch == self.epoch;
                    Ok(Recorded {
                        change: Change {
                            operator: r.try_get("operator_id")?,
                            group: r.try_get("operator_group")?,
                            at_unix_ms: r.try_get("at_unix_ms")?,
                            fact,
                        },
                        alive_until: if mine { i64::MAX } else { r.try_get("seen")? },
                    })
                })
                .collect()
        })
    }

    /// Deletes up to `limit` operator state changes from before `before_unix_ms`, and the
    /// signs of life of node lives last seen before it; returns how many changes. Call it until
    /// it returns less than `limit`.
    pub async fn purge_operator_states(&self, before_unix_ms: i64, limit: u32) -> Result<u64, LedgerError> {
        let states = self.db.sql(
            "DELETE FROM operator_states WHERE (node_id, epoch, seq) IN (
                SELECT node_id, epoch, seq FROM operator_states WHERE at_unix_ms < ? LIMIT ?)",
        );
        let lives = self.db.sql("DELETE FROM node_lives WHERE seen_unix_ms < ? AND NOT (node_id = ? AND epoch = ?)");
        with_db!(&self.db, p => {
            let n = sqlx::query(&states).bind(before_unix_ms).bind(i64::from(limit)).execute(p).await?.rows_affected();
            sqlx::query(&lives).bind(before_unix_ms).bind(&self.node).bind(self.epoch).execute(p).await?;
            Ok(n)
        })
    }

    /// Records a read of per-operator rows in the privacy audit, durably (written through).
    pub async fn record_report_read(&self, r: &ReportRead) -> Result<(), LedgerError> {
        let seq = i64::try_from(self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX);
        let sql = self.db.sql(
            "INSERT INTO operator_report_reads (node_id, epoch, seq, at_unix_ms, actor, operators, from_unix_ms,
                                                to_unix_ms, purpose)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(&self.node)
                .bind(self.epoch)
                .bind(seq)
                .bind(r.at_unix_ms)
                .bind(&r.actor)
                .bind(r.operators.join("\n"))
                .bind(r.from_unix_ms)
                .bind(r.to_unix_ms)
                .bind(&r.purpose)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// The privacy audit, oldest first: up to `limit` reads after `after` (from the start:
    /// `None`), with the cursor of the last one.
    pub async fn report_reads(
        &self,
        after: Option<&ReadCursor>,
        limit: u32,
    ) -> Result<Vec<(ReportRead, ReadCursor)>, LedgerError> {
        let start =
            after.cloned().unwrap_or(ReadCursor { at_unix_ms: i64::MIN, node: String::new(), epoch: 0, seq: 0 });
        let sql = self.db.sql(
            "SELECT node_id, epoch, seq, at_unix_ms, actor, operators, from_unix_ms, to_unix_ms, purpose
             FROM operator_report_reads
             WHERE at_unix_ms > ? OR (at_unix_ms = ? AND (node_id > ? OR (node_id = ? AND (epoch > ?
                   OR (epoch = ? AND seq > ?)))))
             ORDER BY at_unix_ms, node_id, epoch, seq LIMIT ?",
        );
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql)
                .bind(start.at_unix_ms)
                .bind(start.at_unix_ms)
                .bind(&start.node)
                .bind(&start.node)
                .bind(start.epoch)
                .bind(start.epoch)
                .bind(start.seq)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    let operators: String = r.try_get("operators")?;
                    let read = ReportRead {
                        at_unix_ms: r.try_get("at_unix_ms")?,
                        actor: r.try_get("actor")?,
                        operators: operators.split('\n').filter(|o| !o.is_empty()).map(str::to_owned).collect(),
                        from_unix_ms: r.try_get("from_unix_ms")?,
                        to_unix_ms: r.try_get("to_unix_ms")?,
                        purpose: r.try_get("purpose")?,
                        node: r.try_get("node_id")?,
                    };
                    let cursor = ReadCursor {
                        at_unix_ms: read.at_unix_ms,
                        node: read.node.clone(),
                        epoch: r.try_get("epoch")?,
                        seq: r.try_get("seq")?,
                    };
                    Ok((read, cursor))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_cursor_survives_its_token_with_commas_in_the_node() {
        let c = ReadCursor { at_unix_ms: 5, node: "group:a,b".into(), epoch: 2, seq: 9 };
        assert_eq!(ReadCursor::parse(&c.token()), Some(c));
        assert_eq!(ReadCursor::parse("x"), None);
    }
}
