//! What admins and bookings change at run time, written through at once (not through the group
//! commit: such changes are rare and their caller waits for them to be durable), read back at
//! start-up so they survive a restart or a failover to another node of the group: appointments
//! and the availability they are booked in; queue settings changed by admins, with their audit
//! trail.

use smista_core::appointments::{Appointment, AppointmentState, Availability};
use smista_core::Segment;
use sqlx::Row;

use crate::db::with_db;
use crate::{channel, Ledger, LedgerError};

fn segment(name: &str) -> Result<Segment, LedgerError> {
    Segment::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| LedgerError::Corrupt(format!("unknown segment `{name}`")))
}

impl Ledger {
    /// Writes an appointment as it stands (insert or replace), durably.
    pub async fn put_appointment(&self, a: &Appointment, now_unix_ms: i64) -> Result<(), LedgerError> {
        let sql = self.db.sql(
            "INSERT INTO appointments (id, queue, operator_id, display_name, start_unix_ms, end_unix_ms, channel,
                                       segment, recording, state, updated_unix_ms, for_contact)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, operator_id = excluded.operator_id,
               display_name = excluded.display_name, start_unix_ms = excluded.start_unix_ms,
               end_unix_ms = excluded.end_unix_ms, channel = excluded.channel, segment = excluded.segment,
               recording = excluded.recording, state = excluded.state, updated_unix_ms = excluded.updated_unix_ms,
               for_contact = excluded.for_contact",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(&a.id)
                .bind(&a.queue)
                .bind(&a.operator)
                .bind(&a.display_name)
                .bind(a.start_unix_ms)
                .bind(a.end_unix_ms)
                .bind(a.channel.as_str())
                .bind(a.segment.as_str())
                .bind(i64::from(a.recording))
                .bind(a.state.as_str())
                .bind(now_unix_ms)
                .bind(&a.for_contact)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Appointments ending at or after `from_unix_ms`, and every one still booked.
    pub async fn appointments(&self, from_unix_ms: i64) -> Result<Vec<Appointment>, LedgerError> {
        let sql = self.db.sql(
            "SELECT id, queue, operator_id, display_name, start_unix_ms, end_unix_ms, channel, segment, recording, state,
                    for_contact
             FROM appointments WHERE end_unix_ms >= ? OR state = 'booked' ORDER BY start_unix_ms, id",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(from_unix_ms)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    let state: String = r.try_get("state")?;
                    let recording: i64 = r.try_get("recording")?;
                    Ok(Appointment {
                        id: r.try_get("id")?,
                        queue: r.try_get("queue")?,
                        operator: r.try_get("operator_id")?,
                        display_name: r.try_get("display_name")?,
                        start_unix_ms: r.try_get("start_unix_ms")?,
                        end_unix_ms: r.try_get("end_unix_ms")?,
                        channel: channel(&r.try_get::<String, _>("channel")?)?,
                        segment: segment(&r.try_get::<String, _>("segment")?)?,
                        recording: recording != 0,
                        state: AppointmentState::parse(&state)
                            .ok_or_else(|| LedgerError::Corrupt(format!("unknown appointment state `{state}`")))?,
                        for_contact: r.try_get("for_contact")?,
                    })
                })
                .collect()
        })
    }

    /// Writes a block of availability (insert or replace), durably.
    pub async fn put_availability(&self, a: &Availability) -> Result<(), LedgerError> {
        let sql = self.db.sql(
            "INSERT INTO availability (operator_id, start_unix_ms, queue, end_unix_ms, display_name)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (operator_id, start_unix_ms) DO UPDATE SET queue = excluded.queue,
               end_unix_ms = excluded.end_unix_ms, display_name = excluded.display_name",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(&a.operator)
                .bind(a.start_unix_ms)
                .bind(&a.queue)
                .bind(a.end_unix_ms)
                .bind(&a.display_name)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Removes the block of `operator` starting at `start_unix_ms`.
    pub async fn delete_availability(&self, operator: &str, start_unix_ms: i64) -> Result<(), LedgerError> {
        let sql = self.db.sql("DELETE FROM availability WHERE operator_id = ? AND start_unix_ms = ?");
        with_db!(&self.db, p => {
            sqlx::query(&sql).bind(operator).bind(start_unix_ms).execute(p).await?;
            Ok(())
        })
    }

    /// Availability ending at or after `from_unix_ms`.
    pub async fn availability(&self, from_unix_ms: i64) -> Result<Vec<Availability>, LedgerError> {
        let sql = self.db.sql(
            "SELECT operator_id, queue, start_unix_ms, end_unix_ms, display_name FROM availability
             WHERE end_unix_ms >= ? ORDER BY operator_id, start_unix_ms",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(from_unix_ms)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok(Availability {
                        operator: r.try_get("operator_id")?,
                        queue: r.try_get("queue")?,
                        start_unix_ms: r.try_get("start_unix_ms")?,
                        end_unix_ms: r.try_get("end_unix_ms")?,
                        display_name: r.try_get("display_name")?,
                    })
                })
                .collect()
        })
    }

    /// Records an admin's change of a queue: its settings as they now stand (opaque text, the
    /// server's) and the change itself in the audit trail, with the settings before and after
    /// it, in one transaction.
    pub async fn record_queue_change(&self, c: &QueueChange<'_>) -> Result<(), LedgerError> {
        let upsert = self.db.sql(
            "INSERT INTO queue_settings (queue, settings, updated_unix_ms) VALUES (?, ?, ?)
             ON CONFLICT (queue) DO UPDATE SET settings = excluded.settings, updated_unix_ms = excluded.updated_unix_ms",
        );
        let audit = self.db.sql(
            "INSERT INTO queue_audit (queue, at_unix_ms, actor, change, old_settings, new_settings)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (queue, at_unix_ms, change) DO NOTHING",
        );
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query(&upsert).bind(c.queue).bind(c.settings).bind(c.at_unix_ms).execute(&mut *tx).await?;
            sqlx::query(&audit)
                .bind(c.queue)
                .bind(c.at_unix_ms)
                .bind(c.actor)
                .bind(c.change)
                .bind(c.old_settings)
                .bind(c.settings)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every queue's settings as admins last left them: (queue, settings).
    pub async fn queue_settings(&self) -> Result<Vec<(String, String)>, LedgerError> {
        let sql = self.db.sql("SELECT queue, settings FROM queue_settings ORDER BY queue");
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("queue")?, r.try_get("settings")?)))
                .collect()
        })
    }

    /// A queue's audit trail (all queues if empty), oldest first.
    pub async fn queue_audit(&self, queue: &str) -> Result<Vec<QueueAudit>, LedgerError> {
        let sql = self.db.sql(
            "SELECT queue, at_unix_ms, actor, change, old_settings, new_settings FROM queue_audit
             WHERE ? = '' OR queue = ? ORDER BY at_unix_ms, queue",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(queue)
                .bind(queue)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok(QueueAudit {
                        queue: r.try_get("queue")?,
                        at_unix_ms: r.try_get("at_unix_ms")?,
                        actor: r.try_get("actor")?,
                        change: r.try_get("change")?,
                        old_settings: r.try_get("old_settings")?,
                        new_settings: r.try_get("new_settings")?,
                    })
                })
                .collect()
        })
    }

    /// Writes a scheduled callback as it stands (`state` "booked" or "offered").
    pub async fn put_scheduled_callback(&self, c: &ScheduledCallback) -> Result<(), LedgerError> {
        let sql = self.db.sql(
            "INSERT INTO scheduled_callbacks (contact_id, queue, segment, due_unix_ms, created_unix_ms, state, tries)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (contact_id) DO UPDATE SET due_unix_ms = excluded.due_unix_ms, state = excluded.state,
               tries = excluded.tries",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(&c.contact_id)
                .bind(&c.queue)
                .bind(c.segment.as_str())
                .bind(c.due_unix_ms)
                .bind(c.created_unix_ms)
                .bind(if c.offered { "offered" } else { "booked" })
                .bind(i64::from(c.tries))
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Scheduled callbacks not offered yet.
    pub async fn scheduled_callbacks(&self) -> Result<Vec<ScheduledCallback>, LedgerError> {
        let sql = self.db.sql(
            "SELECT contact_id, queue, segment, due_unix_ms, created_unix_ms, tries FROM scheduled_callbacks
             WHERE state = 'booked' ORDER BY due_unix_ms",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    Ok(ScheduledCallback {
                        contact_id: r.try_get("contact_id")?,
                        queue: r.try_get("queue")?,
                        segment: segment(&r.try_get::<String, _>("segment")?)?,
                        due_unix_ms: r.try_get("due_unix_ms")?,
                        created_unix_ms: r.try_get("created_unix_ms")?,
                        offered: false,
                        tries: u32::try_from(r.try_get::<i64, _>("tries")?).unwrap_or(u32::MAX),
                    })
                })
                .collect()
        })
    }
}

/// A callback booked for later (`ScheduleCallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledCallback {
    /// The contact it is for.
    pub contact_id: String,
    /// The queue.
    pub queue: String,
    /// The caller's segment.
    pub segment: Segment,
    /// When it is due, Unix ms.
    pub due_unix_ms: i64,
    /// When it was booked, Unix ms.
    pub created_unix_ms: i64,
    /// Whether it has been offered (it then lives as a contact).
    pub offered: bool,
    /// Times it was offered and diverted again (its next offer's id ends with this plus one).
    pub tries: u32,
}

/// An admin's change of a queue, as [`Ledger::record_queue_change`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueChange<'a> {
    /// The queue.
    pub queue: &'a str,
    /// Its settings before the change (opaque text, the server's; empty: as configured).
    pub old_settings: &'a str,
    /// Its settings as they now stand.
    pub settings: &'a str,
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Who: the principal's name.
    pub actor: &'a str,
    /// The change itself (the fields the request set).
    pub change: &'a str,
}

/// One record of a queue's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAudit {
    /// The queue.
    pub queue: String,
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Who: the principal's name.
    pub actor: String,
    /// The change (the fields the request set).
    pub change: String,
    /// The settings before (empty: as configured, or recorded before the column existed).
    pub old_settings: String,
    /// The settings after (empty: recorded before the column existed).
    pub new_settings: String,
}
